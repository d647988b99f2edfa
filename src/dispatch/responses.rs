//! A `/v1/responses` request on a cloud target. OpenAI providers get the client's body as
//! it came (only `model` swapped, an agent's prompt put before `instructions`), so items
//! auxot does not know — encrypted reasoning, hosted tools, new item types — reach OpenAI
//! byte for byte. A provider whose server has no `/responses` (an OpenAI-compatible server
//! answering 404 or 405) is remembered and gets the Chat translation from then on.
//! Anthropic providers get the Messages form translated at the edge.

use super::attempt::{held_reply, ChatRequest, Dispatcher, RoutedReply};
use super::body::{json_string, with_fields};
use super::error::Why;
use super::stream::Clock;
use crate::crypto::Secret;
use crate::providers::{openai, ChatOutcome, LiveProvider, UpstreamFailure};
use crate::translate::fields::RawObject;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;

/// A Responses request in the forms its targets take besides the chat body every tier
/// understands.
pub struct ResponsesForms {
    /// As the client sent it.
    pub raw: Bytes,
    /// As Anthropic Messages, translated at the edge; the error says why Anthropic cannot
    /// express the request.
    pub messages: Result<Bytes, String>,
    /// Why the Chat translation (the request's `body`) could not be made, if it could not:
    /// then only targets that take one of the forms above can answer.
    pub chat_refusal: Option<String>,
}

/// Refuses a chat-speaking target a Responses request that has no Chat form.
pub fn chat_form(forms: Option<&ResponsesForms>) -> Result<(), Why> {
    match forms.and_then(|f| f.chat_refusal.as_ref()) {
        Some(why) => Err(Why::Untranslatable(why.clone())),
        None => Ok(()),
    }
}

impl Dispatcher {
    /// Sends a Responses request to an OpenAI provider's own `/responses` and reads its
    /// reply up to the first content. `None`: not a Responses request, not an OpenAI
    /// provider, or one without the endpoint (then remembered) — the caller goes through
    /// Chat Completions instead.
    pub(super) async fn pass_responses(
        &self,
        provider: &Arc<LiveProvider>,
        key: Option<&Secret>,
        model: &str,
        request: &ChatRequest,
        system_prompt: Option<&str>,
        clock: Clock,
    ) -> Result<Option<RoutedReply>, Why> {
        let Some(forms) = request.responses.as_ref() else {
            return Ok(None);
        };
        if !provider.kind.speaks_openai() || self.chat_only.is_chat_only(&provider.id, &provider.base_url) {
            return Ok(None);
        }
        let (_, phase, limit) = clock.headers_deadline();
        let changed = (model != request.model).then_some(model);
        let body = responses_body(&forms.raw, changed, system_prompt)?;
        let outcome = openai::post(&self.http, &provider.base_url, key, "/responses", body, limit).await;
        match outcome {
            Ok(ChatOutcome::Failed(failure)) if lacks_responses_endpoint(&failure) => {
                tracing::info!(provider = %provider.name, status = failure.status,
                    "the provider has no Responses endpoint: its Responses requests go through Chat Completions");
                self.chat_only.remember(&provider.id, &provider.base_url);
                Ok(None)
            }
            outcome => {
                let reply = held_reply(outcome, phase, limit, clock, None).await?;
                Ok(Some(RoutedReply::Responses(reply)))
            }
        }
    }
}

/// Providers known to lack `/responses`, by id and base URL (a new URL is asked again).
#[derive(Default)]
pub struct ChatOnlyProviders {
    known: Mutex<HashSet<String>>,
}

impl ChatOnlyProviders {
    fn key(provider_id: &str, base_url: &str) -> String {
        format!("{provider_id} {base_url}")
    }

    pub fn is_chat_only(&self, provider_id: &str, base_url: &str) -> bool {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&Self::key(provider_id, base_url))
    }

    pub fn remember(&self, provider_id: &str, base_url: &str) {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(Self::key(provider_id, base_url));
    }
}

/// Whether a refusal from `/responses` means the server has no such endpoint (rather than
/// refusing this request): 404, 405 or 501, unless OpenAI says the model is unknown.
pub fn lacks_responses_endpoint(failure: &UpstreamFailure) -> bool {
    if !matches!(failure.status, 404 | 405 | 501) {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(default)]
        code: Option<String>,
    }
    let code = serde_json::from_slice::<Envelope>(&failure.body)
        .ok()
        .and_then(|e| e.error.code);
    code.as_deref() != Some("model_not_found")
}

/// The client's Responses body for `model`, with an agent's prompt before its own
/// `instructions`. Only those fields' bytes change (`translate::fields`); an unchanged body
/// is shared, not copied.
pub fn responses_body(raw: &Bytes, model: Option<&str>, system_prompt: Option<&str>) -> Result<Bytes, Why> {
    if model.is_none() && system_prompt.is_none() {
        return Ok(raw.clone());
    }
    let bad = |what: &str| Why::Untranslatable(format!("the Responses body cannot be rewritten: {what}"));
    let object = RawObject::parse(raw).map_err(|e| bad(&e.to_string()))?;
    let mut more = Vec::with_capacity(1);
    if let Some(prompt) = system_prompt {
        let own = object
            .get("instructions")
            .map(serde_json::from_str::<Option<String>>)
            .transpose()
            .map_err(|e| bad(&e.to_string()))?
            .flatten();
        let joined = match own {
            Some(own) if !own.is_empty() => format!("{prompt}\n\n{own}"),
            _ => prompt.to_string(),
        };
        more.push(("instructions", json_string(&joined)));
    }
    Ok(with_fields(&object, model, &more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn only_the_model_and_instructions_change_and_nested_items_stay_byte_exact() {
        let item = r#"{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAA\u00e9+/=="}"#;
        let body = Bytes::from(format!(
            r#"{{"model":"auto","instructions":"Own.","input":[{item}],"include":["reasoning.encrypted_content"]}}"#
        ));
        let only_model = responses_body(&body, Some("gpt-5"), None).unwrap();
        assert_eq!(
            std::str::from_utf8(&only_model).unwrap(),
            std::str::from_utf8(&body)
                .unwrap()
                .replace(r#""model":"auto""#, r#""model":"gpt-5""#),
            "only the model's bytes change"
        );
        let out = responses_body(&body, Some("gpt-5"), Some("Agent.")).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains(item), "{text}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "gpt-5");
        assert_eq!(v["instructions"], "Agent.\n\nOwn.");
        let same = responses_body(&body, None, None).unwrap();
        assert_eq!(same.as_ptr(), body.as_ptr(), "an unchanged body is shared, not copied");
        let bare = responses_body(&Bytes::from_static(br#"{"model":"m","input":"hi"}"#), None, Some("A.")).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&bare).unwrap()["instructions"], "A.");
    }

    #[test]
    fn a_missing_endpoint_is_told_apart_from_an_unknown_model() {
        let failure = |status: u16, body: &str| UpstreamFailure {
            status,
            content_type: Some("application/json".into()),
            body: Bytes::from(body.to_string()),
            retry_after: None,
        };
        assert!(lacks_responses_endpoint(&failure(404, "404 page not found")));
        assert!(lacks_responses_endpoint(&failure(405, "")));
        assert!(lacks_responses_endpoint(&failure(
            404,
            r#"{"error":{"message":"no route","code":null}}"#
        )));
        assert!(!lacks_responses_endpoint(&failure(
            404,
            r#"{"error":{"message":"The model `x` does not exist","code":"model_not_found"}}"#
        )));
        assert!(!lacks_responses_endpoint(&failure(400, "bad")));
        assert!(!lacks_responses_endpoint(&failure(500, "")));
    }
}
