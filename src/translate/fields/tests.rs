use super::*;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn edited(body: &str, edits: &[(&str, Edit<'_>)]) -> String {
    String::from_utf8(edit_fields(body.as_bytes(), edits).unwrap()).unwrap()
}

#[test]
fn setting_a_field_replaces_only_its_value() {
    let body = "{ \"temperature\" : 0.70,\n  \"model\" :\t\"agent:x\", \"messages\":[{\"model\":\"nested\",\"content\":\"a\\\"b\\u00e9\"}] }";
    assert_eq!(
        edited(body, &[("model", Edit::Set("\"qwen\""))]),
        "{ \"temperature\" : 0.70,\n  \"model\" :\t\"qwen\", \"messages\":[{\"model\":\"nested\",\"content\":\"a\\\"b\\u00e9\"}] }"
    );
}

#[test]
fn a_missing_field_goes_first_and_an_empty_object_takes_it() {
    assert_eq!(
        edited(
            "{\"a\":1}",
            &[("stream", Edit::Set("true")), ("model", Edit::Set("\"m\""))]
        ),
        "{\"stream\":true,\"model\":\"m\",\"a\":1}"
    );
    assert_eq!(
        edited(" { } ", &[("stream", Edit::Set("true"))]),
        " {\"stream\":true } "
    );
    assert_eq!(edited("{}", &[("gone", Edit::Remove)]), "{}");
}

#[test]
fn escaped_and_duplicate_keys_are_set_everywhere_they_appear() {
    assert_eq!(
        edited(
            "{\"mod\\u0065l\":\"a\",\"model\":\"b\"}",
            &[("model", Edit::Set("\"c\""))]
        ),
        "{\"mod\\u0065l\":\"c\",\"model\":\"c\"}"
    );
    let object = RawObject::parse(b"{\"model\":\"a\",\"model\":\"b\"}").unwrap();
    assert_eq!(object.get("model"), Some("\"b\""), "the last duplicate is the one read");
}

#[test]
fn removing_fields_rejoins_the_rest() {
    let body = "{\"stream\":true, \"stream_options\" : {\"include_usage\":true} ,\"model\":\"m\"}";
    assert_eq!(
        edited(
            body,
            &[("stream", Edit::Set("false")), ("stream_options", Edit::Remove)]
        ),
        "{\"stream\":false,\"model\":\"m\"}"
    );
    assert_eq!(
        edited("{\"a\":1,\"b\":2,\"c\":3}", &[("a", Edit::Remove), ("b", Edit::Remove)]),
        "{\"c\":3}"
    );
    assert_eq!(
        edited("{\"a\":1}", &[("a", Edit::Remove), ("z", Edit::Set("0"))]),
        "{\"z\":0}"
    );
}

#[test]
fn anything_but_one_json_object_is_refused() {
    for body in ["[1]", "\"x\"", "{\"a\":1", "{\"a\":1} x", "", "{\"a\":01}"] {
        assert!(edit_fields(body.as_bytes(), &[("a", Edit::Remove)]).is_err(), "{body}");
    }
}

#[test]
fn arrays_take_a_first_element() {
    assert_eq!(prepend_to_array("[ ]", "1").as_deref(), Some("[1 ]"));
    assert_eq!(prepend_to_array("[2,3]", "1").as_deref(), Some("[1,2,3]"));
    assert_eq!(prepend_to_array("{}", "1"), None);
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", " ", "\n  ", "\t", "\r\n"])
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "\"model\"",
        "\"mod\\u0065l\"",
        "\"stream\"",
        "\"stream_options\"",
        "\"messages\"",
        "\"a\"",
        "\"b\\\"c\"",
        "\"\\u00e9\"",
    ])
}

fn value() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "1",
        "0.70",
        "-1.5e3",
        "\"x\\\"y\\\\\"",
        "\"\\u00e9\\n\"",
        "{\"model\":\"inner\",\"stream\":{}}",
        "[1,{\"model\":2},[]]",
        "null",
        "true",
        "\"}\"",
    ])
}

/// An object written out by hand: any whitespace, escaped and duplicate keys.
fn object() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
    prop::collection::vec((ws(), key(), ws(), ws(), value(), ws()), 0..7).prop_map(|members| {
        let mut text = String::from("{");
        let mut raw = Vec::new();
        for (i, (before, key, around, after, value, trail)) in members.into_iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let member = format!("{key}{around}:{after}{value}");
            text.push_str(before);
            text.push_str(&member);
            text.push_str(trail);
            raw.push((member, key.to_string()));
        }
        text.push('}');
        (text, raw)
    })
}

fn edit_list() -> impl Strategy<Value = Vec<(&'static str, Option<&'static str>)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["model", "stream", "stream_options", "new", "a"]),
            prop::option::of(value()),
        ),
        0..4,
    )
}

proptest! {
    #[test]
    fn edits_mean_what_they_say_and_keep_every_other_byte((text, members) in object(), edits in edit_list()) {
        let edits: Vec<(&str, Edit<'_>)> = edits
            .iter()
            .map(|(k, v)| (*k, v.map_or(Edit::Remove, Edit::Set)))
            .collect();
        let out = edit_fields(text.as_bytes(), &edits).unwrap();
        let out = String::from_utf8(out).unwrap();
        let got: Value = serde_json::from_str(&out).unwrap();
        let mut expected: Map<String, Value> = serde_json::from_str(&text).unwrap();
        for (key, edit) in &edits {
            match edit {
                Edit::Set(v) => {
                    expected.insert(key.to_string(), serde_json::from_str(v).unwrap());
                }
                Edit::Remove => {
                    expected.remove(*key);
                }
            }
        }
        prop_assert_eq!(got, Value::Object(expected));
        // A member no edit names passes byte for byte.
        for (member, key) in &members {
            let decoded: String = serde_json::from_str(key).unwrap();
            if !edits.iter().any(|(k, _)| *k == decoded) {
                prop_assert!(out.contains(member.as_str()), "{} lost {}", out, member);
            }
        }
        if edits.is_empty() {
            prop_assert_eq!(out, text);
        }
    }
}
