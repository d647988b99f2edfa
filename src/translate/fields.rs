//! A JSON object's top-level fields set, added or removed in its raw bytes: every other byte
//! of the body — nested values, numbers as written, escapes, whitespace — passes unchanged.
//! What a pass-through body needs (the model a target knows, `stream`, an agent's prompt)
//! without parsing it into values and printing it again.
//!
//! The body is checked by serde_json (a whole, valid object), which also hands each value's
//! exact text; keys are compared decoded, so `"mod\u0065l"` is `model` as any JSON reader
//! sees it. A field given more than once is set (or removed) everywhere it appears, so the
//! upstream reads the new value whichever duplicate it honours.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The body is not one whole JSON object.
#[derive(Debug, thiserror::Error)]
#[error("not a JSON object: {0}")]
pub struct NotAnObject(String);

/// One change to a top-level field.
#[derive(Debug, Clone, Copy)]
pub enum Edit<'v> {
    /// The field's value becomes this JSON text (added at the object's start if missing).
    Set(&'v str),
    Remove,
}

#[derive(Debug)]
struct Member<'a> {
    key: String,
    value: &'a str,
    /// Where the member's key starts and its value ends in the body.
    start: usize,
    end: usize,
}

/// A parsed view of a JSON object's top level over its raw bytes.
#[derive(Debug)]
pub struct RawObject<'a> {
    text: &'a [u8],
    /// Just after the opening `{`.
    open: usize,
    members: Vec<Member<'a>>,
}

impl<'a> RawObject<'a> {
    pub fn parse(text: &'a [u8]) -> Result<RawObject<'a>, NotAnObject> {
        let Members(found) = serde_json::from_slice(text).map_err(|e| NotAnObject(e.to_string()))?;
        let base = text.as_ptr() as usize;
        let open = skip_ws(text, 0) + 1;
        let mut members = Vec::with_capacity(found.len());
        let mut after = open;
        for (key, value) in found {
            let value = value.get();
            // serde_json hands the value's own bytes from the body: its offset is exact.
            let value_start = (value.as_ptr() as usize).wrapping_sub(base);
            let end = value_start + value.len();
            if text.get(value_start..end) != Some(value.as_bytes()) {
                return Err(NotAnObject("unexpected value position".into()));
            }
            let mut start = skip_ws(text, after);
            if text.get(start) == Some(&b',') {
                start = skip_ws(text, start + 1);
            }
            members.push(Member { key, value, start, end });
            after = end;
        }
        Ok(RawObject { text, open, members })
    }

    /// The raw value of `key`; its last occurrence, as JSON readers take a duplicate.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.members.iter().rev().find(|m| m.key == key).map(|m| m.value)
    }

    /// The body with `edits` made. Setting a field replaces only its value's bytes; a new
    /// field goes first; a removal rejoins the remaining members with commas.
    pub fn edit(&self, edits: &[(&str, Edit<'_>)]) -> Vec<u8> {
        let edit_of = |key: &str| edits.iter().rev().find(|(k, _)| *k == key).map(|(_, e)| *e);
        let mut added = String::new();
        for (i, (key, _)) in edits.iter().enumerate() {
            let first_mention = !edits[..i].iter().any(|(k, _)| k == key);
            let missing = !self.members.iter().any(|m| m.key == *key);
            if let (true, true, Some(Edit::Set(value))) = (first_mention, missing, edit_of(key)) {
                if !added.is_empty() {
                    added.push(',');
                }
                added.push_str(&serde_json::Value::from(*key).to_string());
                added.push(':');
                added.push_str(value);
            }
        }
        let removes = self
            .members
            .iter()
            .any(|m| matches!(edit_of(m.key.as_str()), Some(Edit::Remove)));
        let set_bytes: usize = edits
            .iter()
            .map(|(_, e)| if let Edit::Set(v) = e { v.len() } else { 0 })
            .sum();
        let mut out = Vec::with_capacity(self.text.len() + added.len() + set_bytes + 1);
        out.extend_from_slice(&self.text[..self.open]);
        out.extend_from_slice(added.as_bytes());
        if !removes {
            // Splices: the text between values stays as it was.
            let mut at = self.open;
            for (i, member) in self.members.iter().enumerate() {
                if i == 0 && !added.is_empty() {
                    out.push(b',');
                }
                if let Some(Edit::Set(value)) = edit_of(member.key.as_str()) {
                    let value_start = member.end - member.value.len();
                    out.extend_from_slice(&self.text[at..value_start]);
                    out.extend_from_slice(value.as_bytes());
                    at = member.end;
                }
            }
            out.extend_from_slice(&self.text[at..]);
            return out;
        }
        let mut first = added.is_empty();
        for member in &self.members {
            let value_start = member.end - member.value.len();
            match edit_of(member.key.as_str()) {
                Some(Edit::Remove) => continue,
                Some(Edit::Set(value)) => {
                    if !std::mem::replace(&mut first, false) {
                        out.push(b',');
                    }
                    out.extend_from_slice(&self.text[member.start..value_start]);
                    out.extend_from_slice(value.as_bytes());
                }
                None => {
                    if !std::mem::replace(&mut first, false) {
                        out.push(b',');
                    }
                    out.extend_from_slice(&self.text[member.start..member.end]);
                }
            }
        }
        let close = self.members.last().map_or(self.open, |m| m.end);
        out.extend_from_slice(&self.text[close..]);
        out
    }
}

/// The body with `edits` made (see [`RawObject::edit`]).
pub fn edit_fields(body: &[u8], edits: &[(&str, Edit<'_>)]) -> Result<Vec<u8>, NotAnObject> {
    Ok(RawObject::parse(body)?.edit(edits))
}

/// `array`'s raw text with `first` as its new first element.
pub fn prepend_to_array(array: &str, first: &str) -> Option<String> {
    let inner = array.trim_start().strip_prefix('[')?;
    let empty = inner.trim_start().starts_with(']');
    let mut out = String::with_capacity(array.len() + first.len() + 2);
    out.push('[');
    out.push_str(first);
    if !empty {
        out.push(',');
    }
    out.push_str(inner);
    Some(out)
}

fn skip_ws(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// A JSON object's members in their order, each value as its exact text in the body.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests;
