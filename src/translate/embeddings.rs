//! The OpenAI embeddings API (`POST /v1/embeddings`): what a request must hold, the usage an
//! answer reports, and its vectors in the encoding the client asked for.
//!
//! The body goes upstream as the client sent it; only an answer whose vectors come back in
//! the other encoding (a model server that ignores `encoding_format`) is re-encoded.

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Inputs per request, as OpenAI allows.
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbeddingsError {
    #[error("the request body is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the upstream's embeddings answer cannot be read: {0}")]
    BadAnswer(String),
}

/// How the client wants its vectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Float,
    Base64,
}

/// What routing and metering need from a valid request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub encoding: Encoding,
    /// The documented estimate of the input's tokens, for when no upstream reports them:
    /// about four bytes of text per token, one per token id.
    pub estimated_tokens: u64,
}

/// Checks a request body as OpenAI would: `model`; `input` as a string, strings, a token
/// array or token arrays (non-empty, at most 2048 entries); `encoding_format` float or
/// base64; `dimensions` a positive integer; `user` a string. Other fields pass on untouched.
pub fn read_request(body: &[u8]) -> Result<EmbeddingsRequest, EmbeddingsError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| EmbeddingsError::NotJson(e.to_string()))?;
    let invalid = |m: &str| EmbeddingsError::Invalid(m.to_string());
    let object = value
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let model = match object.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(Value::String(_)) | None => return Err(invalid("'model' is required")),
        Some(_) => return Err(invalid("'model' must be a string")),
    };
    let estimated_tokens = match object.get("input") {
        None | Some(Value::Null) => return Err(invalid("'input' is required")),
        Some(input) => input_tokens(input)?,
    };
    let encoding = match object.get("encoding_format") {
        None | Some(Value::Null) => Encoding::Float,
        Some(Value::String(f)) if f == "float" => Encoding::Float,
        Some(Value::String(f)) if f == "base64" => Encoding::Base64,
        Some(_) => return Err(invalid("'encoding_format' must be 'float' or 'base64'")),
    };
    match object.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|d| d > 0) => {}
        Some(_) => return Err(invalid("'dimensions' must be a positive integer")),
    }
    match object.get("user") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => return Err(invalid("'user' must be a string")),
    }
    Ok(EmbeddingsRequest {
        model,
        encoding,
        estimated_tokens,
    })
}

/// The estimated token count of a valid `input`, or why it is not one.
fn input_tokens(input: &Value) -> Result<u64, EmbeddingsError> {
    let invalid = |m: &str| EmbeddingsError::Invalid(m.to_string());
    let text_tokens = |s: &str| (s.len() as u64).div_ceil(4).max(1);
    let token_ids = |items: &[Value]| -> Result<u64, EmbeddingsError> {
        if items.is_empty() {
            return Err(invalid("'input' must not contain an empty token array"));
        }
        if !items
            .iter()
            .all(|t| t.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)))
        {
            return Err(invalid("a token array in 'input' must hold non-negative integers"));
        }
        Ok(items.len() as u64)
    };
    match input {
        Value::String(s) if s.is_empty() => Err(invalid("'input' must not be an empty string")),
        Value::String(s) => Ok(text_tokens(s)),
        Value::Array(items) if items.is_empty() => Err(invalid("'input' must not be an empty array")),
        Value::Array(items) if items.len() > MAX_INPUTS => Err(EmbeddingsError::Invalid(format!(
            "'input' holds {} entries; at most {MAX_INPUTS} are allowed",
            items.len()
        ))),
        Value::Array(items) => match &items[0] {
            Value::String(_) => items.iter().try_fold(0u64, |sum, item| match item {
                Value::String(s) if s.is_empty() => Err(invalid("'input' must not contain an empty string")),
                Value::String(s) => Ok(sum + text_tokens(s)),
                _ => Err(invalid("'input' must not mix strings with other values")),
            }),
            Value::Number(_) => token_ids(items),
            Value::Array(_) => items.iter().try_fold(0u64, |sum, item| match item {
                Value::Array(ids) => Ok(sum + token_ids(ids)?),
                _ => Err(invalid("'input' must not mix token arrays with other values")),
            }),
            _ => Err(invalid(
                "'input' must be a string, an array of strings, or an array of token arrays",
            )),
        },
        _ => Err(invalid(
            "'input' must be a string, an array of strings, or an array of token arrays",
        )),
    }
}

/// The prompt tokens an embeddings answer reports, if it reports them.
pub fn reported_tokens(answer: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Answer {
        usage: Option<Reported>,
    }
    #[derive(Deserialize)]
    struct Reported {
        prompt_tokens: Option<u64>,
        total_tokens: Option<u64>,
    }
    let usage = serde_json::from_slice::<Answer>(answer).ok()?.usage?;
    usage.prompt_tokens.or(usage.total_tokens)
}

/// The answer with its vectors in `wanted`: the bytes untouched when they already are
/// (the common case), else each `embedding` re-encoded (float ⇄ little-endian f32 base64).
pub fn conform_encoding(answer: &[u8], wanted: Encoding) -> Result<Option<Vec<u8>>, EmbeddingsError> {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        data: Vec<PeekItem<'a>>,
    }
    #[derive(Deserialize)]
    struct PeekItem<'a> {
        #[serde(borrow)]
        embedding: &'a RawValue,
    }
    let bad = |e: String| EmbeddingsError::BadAnswer(e);
    let peek: Peek<'_> = serde_json::from_slice(answer).map_err(|e| bad(e.to_string()))?;
    let is_base64 = |raw: &RawValue| raw.get().starts_with('"');
    let conforms = peek.data.iter().all(|item| match wanted {
        Encoding::Base64 => is_base64(item.embedding),
        Encoding::Float => !is_base64(item.embedding),
    });
    if conforms {
        return Ok(None);
    }
    let mut value: Value = serde_json::from_slice(answer).map_err(|e| bad(e.to_string()))?;
    let items = value
        .get_mut("data")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("no 'data' array".into()))?;
    for item in items {
        let Some(embedding) = item.get_mut("embedding") else {
            continue;
        };
        *embedding = match (wanted, &*embedding) {
            (Encoding::Base64, Value::Array(numbers)) => Value::String(floats_to_base64(numbers)?),
            (Encoding::Float, Value::String(text)) => Value::Array(base64_to_floats(text)?),
            _ => continue,
        };
    }
    serde_json::to_vec(&value).map(Some).map_err(|e| bad(e.to_string()))
}

/// OpenAI's base64 encoding: the vector's f32 values, little-endian, one after another.
fn floats_to_base64(numbers: &[Value]) -> Result<String, EmbeddingsError> {
    let mut bytes = Vec::with_capacity(numbers.len() * 4);
    for number in numbers {
        let f = number
            .as_f64()
            .ok_or_else(|| EmbeddingsError::BadAnswer("an embedding holds a value that is not a number".into()))?;
        bytes.extend_from_slice(&(f as f32).to_le_bytes());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn base64_to_floats(text: &str) -> Result<Vec<Value>, EmbeddingsError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| EmbeddingsError::BadAnswer(format!("an embedding is not base64: {e}")))?;
    if bytes.len() % 4 != 0 {
        return Err(EmbeddingsError::BadAnswer(
            "a base64 embedding is not a whole number of f32 values".into(),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| {
            let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn read(body: Value) -> Result<EmbeddingsRequest, EmbeddingsError> {
        read_request(body.to_string().as_bytes())
    }

    #[test]
    fn every_input_shape_openai_accepts_is_read() {
        let ok = [
            (json!("hello world!"), 3),
            (json!(["a", "bcdefgh"]), 3),
            (json!([1, 2, 3]), 3),
            (json!([[1, 2], [3]]), 3),
        ];
        for (input, tokens) in ok {
            let read = read(json!({"model": "e", "input": input})).unwrap();
            assert_eq!(read.estimated_tokens, tokens, "{input}");
            assert_eq!(read.encoding, Encoding::Float);
        }
        let b64 = read(json!({"model": "e", "input": "x", "encoding_format": "base64", "dimensions": 8, "user": "u"}));
        assert_eq!(b64.unwrap().encoding, Encoding::Base64);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            (json!({"input": "x"}), "'model' is required"),
            (json!({"model": 5, "input": "x"}), "'model' must be a string"),
            (json!({"model": "e"}), "'input' is required"),
            (json!({"model": "e", "input": ""}), "empty string"),
            (json!({"model": "e", "input": []}), "empty array"),
            (json!({"model": "e", "input": [[]]}), "empty token array"),
            (json!({"model": "e", "input": ["a", 1]}), "mix strings"),
            (json!({"model": "e", "input": [1, -1]}), "non-negative integers"),
            (json!({"model": "e", "input": {"a": 1}}), "must be a string"),
            (
                json!({"model": "e", "input": "x", "encoding_format": "int8"}),
                "'encoding_format'",
            ),
            (json!({"model": "e", "input": "x", "dimensions": 0}), "'dimensions'"),
            (json!({"model": "e", "input": "x", "dimensions": "8"}), "'dimensions'"),
            (json!({"model": "e", "input": "x", "user": 1}), "'user'"),
            (json!([1]), "JSON object"),
        ];
        for (body, expected) in cases {
            let error = read(body.clone()).unwrap_err().to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
        let many: Vec<&str> = vec!["x"; MAX_INPUTS + 1];
        assert!(read(json!({"model": "e", "input": many})).is_err());
        assert!(matches!(read_request(b"{"), Err(EmbeddingsError::NotJson(_))));
    }

    #[test]
    fn answers_in_the_wanted_encoding_pass_untouched() {
        let floats = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-1.0]}],"model":"e","usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        assert_eq!(conform_encoding(floats, Encoding::Float).unwrap(), None);
        assert_eq!(reported_tokens(floats), Some(3));
        let converted = conform_encoding(floats, Encoding::Base64).unwrap().unwrap();
        let value: Value = serde_json::from_slice(&converted).unwrap();
        // 0.5f32 and -1.0f32, little-endian.
        assert_eq!(value["data"][0]["embedding"], "AAAAPwAAgL8=");
        assert_eq!(value["usage"]["prompt_tokens"], 3);
        assert_eq!(conform_encoding(&converted, Encoding::Base64).unwrap(), None);
        let back: Value =
            serde_json::from_slice(&conform_encoding(&converted, Encoding::Float).unwrap().unwrap()).unwrap();
        assert_eq!(back["data"][0]["embedding"], json!([0.5, -1.0]));
        assert_eq!(reported_tokens(br#"{"data":[]}"#), None);
        assert!(conform_encoding(b"[]", Encoding::Float).is_err());
    }

    proptest! {
        #[test]
        fn base64_round_trips_any_f32_vector(values in prop::collection::vec(-1.0e6f32..1.0e6, 0..64)) {
            let numbers: Vec<Value> = values.iter().map(|f| json!(f64::from(*f))).collect();
            let encoded = floats_to_base64(&numbers).unwrap();
            let decoded = base64_to_floats(&encoded).unwrap();
            let back: Vec<f32> = decoded.iter().map(|v| v.as_f64().unwrap() as f32).collect();
            prop_assert_eq!(back, values);
        }

        #[test]
        fn any_string_input_is_read_or_refused_without_panicking(input in ".{0,64}") {
            let body = json!({"model": "e", "input": input.clone()});
            let read = read_request(body.to_string().as_bytes());
            prop_assert_eq!(read.is_ok(), !input.is_empty());
        }
    }
}
