//! The chat request as each target's body: an OpenAI body (as sent, rewritten where needed,
//! or translated from Anthropic) or an Anthropic Messages body.

use super::attempt::ChatRequest;
use super::body::{rewrite, rewrite_anthropic, Rewrite};
use super::dispatcher::Resolved;
use super::error::Why;
use crate::translate::anthropic::{anthropic_to_openai_request, openai_to_anthropic_request};
use crate::translate::Format;
use bytes::Bytes;

/// An OpenAI client gave no `max_tokens`, and Anthropic needs one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The request as an OpenAI body for `model`: as sent (rewritten only where needed) from an
/// OpenAI client, translated from an Anthropic one. `for_worker`: a worker gets the
/// client's `stream` choice, so a GPU worker asks its model server for a whole answer (with
/// exact usage) when the client wants one.
pub(super) fn openai_body(
    request: &ChatRequest,
    resolved: &Resolved,
    model: &str,
    for_worker: bool,
) -> Result<Bytes, Why> {
    let system_prompt = resolved.system_prompt.as_deref();
    match request.format {
        Format::OpenAi => {
            let spec = Rewrite {
                model: (for_worker || model != request.model).then_some(model),
                force_stream: for_worker && request.stream,
                system_prompt,
                // Streams are priced from the upstream's usage: always ask for it (the
                // usage-only chunk is dropped for clients that did not).
                ask_usage: !for_worker && request.stream && !request.include_usage,
            };
            if spec.is_noop() {
                return Ok(request.body.clone());
            }
            rewrite(&request.body, spec).map_err(|e| Why::Untranslatable(e.to_string()))
        }
        Format::Anthropic => {
            let mut body =
                anthropic_to_openai_request(&request.body).map_err(|e| Why::Untranslatable(e.to_string()))?;
            body["model"] = serde_json::json!(model);
            if for_worker {
                body["stream"] = serde_json::json!(request.stream);
                crate::translate::late_system::fold_late_system_messages(&mut body);
            }
            if body["stream"] == serde_json::json!(true) && !for_worker {
                // The Anthropic stream reports output tokens at its end: ask for them.
                body["stream_options"] = serde_json::json!({"include_usage": true});
            }
            if let (Some(prompt), Some(messages)) = (system_prompt, body["messages"].as_array_mut()) {
                messages.insert(0, serde_json::json!({"role": "system", "content": prompt}));
            }
            serde_json::to_vec(&body)
                .map(Bytes::from)
                .map_err(|e| Why::Untranslatable(e.to_string()))
        }
    }
}

/// OpenAI's reasoning models refuse `max_tokens` and want `max_completion_tokens`. A
/// translated request always says `max_tokens` (what OpenAI-compatible servers accept), so
/// it is renamed for those models on OpenAI itself.
pub(super) fn with_reasoning_token_field(body: Bytes, model: &str) -> Bytes {
    let reasoning = ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|prefix| model == *prefix || model.starts_with(&format!("{prefix}-")));
    if !reasoning {
        return body;
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    let Some(object) = value.as_object_mut() else {
        return body;
    };
    if let Some(max) = object.remove("max_tokens") {
        object.insert("max_completion_tokens".into(), max);
    }
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
}

/// The request as an Anthropic Messages body for `model`.
pub(super) fn anthropic_body(request: &ChatRequest, resolved: &Resolved, model: &str) -> Result<Bytes, Why> {
    let system_prompt = resolved.system_prompt.as_deref();
    match request.format {
        Format::Anthropic => {
            let model = (model != request.model).then_some(model);
            rewrite_anthropic(&request.body, model, system_prompt).map_err(|e| Why::Untranslatable(e.to_string()))
        }
        Format::OpenAi => {
            let with_prompt = match system_prompt {
                Some(_) => rewrite(
                    &request.body,
                    Rewrite {
                        system_prompt,
                        ..Rewrite::default()
                    },
                )
                .map_err(|e| Why::Untranslatable(e.to_string()))?,
                None => request.body.clone(),
            };
            let mut body = openai_to_anthropic_request(&with_prompt, DEFAULT_MAX_TOKENS)
                .map_err(|e| Why::Untranslatable(e.to_string()))?;
            body["model"] = serde_json::json!(model);
            serde_json::to_vec(&body)
                .map(Bytes::from)
                .map_err(|e| Why::Untranslatable(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_models_get_max_completion_tokens() {
        let body = Bytes::from_static(br#"{"model":"o3-mini","max_tokens":100,"messages":[]}"#);
        let out: serde_json::Value = serde_json::from_slice(&with_reasoning_token_field(body, "o3-mini")).unwrap();
        assert_eq!(out["max_completion_tokens"], 100);
        assert!(out.get("max_tokens").is_none());
        for model in ["gpt-4o", "o3x", "gpt-5x"] {
            let body = Bytes::from_static(br#"{"max_tokens":100}"#);
            assert_eq!(with_reasoning_token_field(body.clone(), model), body, "{model}");
        }
        let out: serde_json::Value = serde_json::from_slice(&with_reasoning_token_field(
            Bytes::from_static(br#"{"max_tokens":5}"#),
            "gpt-5",
        ))
        .unwrap();
        assert_eq!(out["max_completion_tokens"], 5);
    }
}
