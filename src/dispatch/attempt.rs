//! Walks a plan: one candidate after another until one answers. A failure before the first
//! byte (unreachable, timeout, 5xx, 429, a provider refusing its key) moves on to the next
//! candidate; a client error (400, 422…) is the answer. Every failure is kept so the final
//! error names them all.

use super::plan::{plan, PlanError, RouteRequest, Target, Tier};
use crate::crypto::MasterKey;
use crate::providers::{openai, ChatOutcome, ProviderError, ProviderRegistry, UpstreamFailure, UpstreamReply};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A chat request as the client sent it, with what routing needs already read out.
pub struct ChatRequest {
    pub body: Bytes,
    pub model: String,
    /// `X-Auxot-Provider`.
    pub provider: Option<String>,
}

/// Where a request went and the reply, its body not yet read.
pub struct Routed {
    pub tier: Tier,
    pub route: String,
    pub reply: UpstreamReply,
}

#[derive(Debug)]
pub enum Why {
    Provider(ProviderError),
    Status(UpstreamFailure),
    /// The provider speaks a format this request cannot be translated to yet.
    Untranslatable,
    KeyUnreadable,
}

#[derive(Debug)]
pub struct TargetFailure {
    pub tier: Tier,
    pub route: String,
    pub why: Why,
}

impl std::fmt::Display for TargetFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): ", self.route, self.tier.as_str())?;
        match &self.why {
            Why::Provider(e) => write!(f, "{e}"),
            Why::Status(s) => write!(f, "answered {}: {}", s.status, s.message()),
            Why::Untranslatable => {
                f.write_str("an Anthropic provider cannot serve OpenAI chat requests until translation lands")
            }
            Why::KeyUnreadable => f.write_str("its stored key cannot be opened"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The upstream's own answer: a client error, or the last retryable one when every
    /// candidate failed. Status and body are passed on (the body already scrubbed).
    #[error("{route} answered {}", failure.status)]
    Upstream {
        route: String,
        failure: Box<UpstreamFailure>,
        tried: Vec<TargetFailure>,
    },
    #[error("{}", describe_all(.0))]
    AllFailed(Vec<TargetFailure>),
    #[error("the request body is not a JSON object")]
    BodyNotObject,
}

fn describe_all(failures: &[TargetFailure]) -> String {
    let parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    format!("every candidate failed: {}", parts.join("; "))
}

impl DispatchError {
    pub fn status(&self) -> u16 {
        match self {
            DispatchError::Plan(PlanError::ConflictingPins { .. }) | DispatchError::BodyNotObject => 400,
            DispatchError::Plan(_) => 404,
            DispatchError::Upstream { failure, .. } => failure.status,
            DispatchError::AllFailed(failures) => {
                if failures.iter().all(|f| matches!(f.why, Why::Untranslatable)) {
                    501
                } else if failures
                    .iter()
                    .all(|f| matches!(f.why, Why::Provider(ProviderError::Timeout(_))))
                {
                    504
                } else {
                    502
                }
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            DispatchError::Plan(PlanError::UnknownModel(_)) | DispatchError::Plan(PlanError::NotServedBy { .. }) => {
                "model_not_found"
            }
            DispatchError::Plan(PlanError::UnknownProvider(_)) => "provider_not_found",
            DispatchError::Plan(PlanError::ConflictingPins { .. }) | DispatchError::BodyNotObject => "invalid_request",
            DispatchError::Upstream { .. } => "upstream_error",
            DispatchError::AllFailed(_) => match self.status() {
                501 => "not_implemented",
                504 => "upstream_timeout",
                _ => "upstream_unavailable",
            },
        }
    }
}

/// Worth trying the next candidate: the failure is this upstream's, not the request's.
fn worth_failing_over(status: u16) -> bool {
    status >= 500 || matches!(status, 401 | 403 | 404 | 408 | 429)
}

pub struct Dispatcher {
    registry: Arc<ProviderRegistry>,
    master: Arc<MasterKey>,
    http: reqwest::Client,
    upstream_timeout: Duration,
    turn: AtomicUsize,
}

impl Dispatcher {
    pub fn new(
        registry: Arc<ProviderRegistry>,
        master: Arc<MasterKey>,
        http: reqwest::Client,
        upstream_timeout: Duration,
    ) -> Self {
        Dispatcher {
            registry,
            master,
            http,
            upstream_timeout,
            turn: AtomicUsize::new(0),
        }
    }

    pub async fn chat(&self, request: ChatRequest) -> Result<Routed, DispatchError> {
        let table = self.registry.routing();
        let route_request = RouteRequest {
            model: &request.model,
            provider: request.provider.as_deref(),
        };
        let targets = plan(&route_request, &table, self.turn.fetch_add(1, Ordering::Relaxed))?;
        let mut failures = Vec::new();
        for target in targets {
            match self.try_target(&target, &request).await {
                Ok(reply) => {
                    if !failures.is_empty() {
                        tracing::info!(route = %target.provider.name, failed_over = failures.len(), "served after failover");
                    }
                    return Ok(Routed {
                        tier: target.tier,
                        route: target.provider.name.clone(),
                        reply,
                    });
                }
                Err(why) => {
                    let failure = TargetFailure {
                        tier: target.tier,
                        route: target.provider.name.clone(),
                        why,
                    };
                    tracing::warn!(failure = %failure, "candidate failed");
                    if let Why::Status(status) = &failure.why {
                        if !worth_failing_over(status.status) {
                            return Err(DispatchError::Upstream {
                                route: failure.route.clone(),
                                failure: Box::new(status.clone()),
                                tried: failures,
                            });
                        }
                    }
                    failures.push(failure);
                }
            }
        }
        // Prefer the upstream's own last answer: its status class and message say most.
        let last_status = failures.iter().rev().find_map(|f| match &f.why {
            Why::Status(s) => Some((f.route.clone(), s.clone())),
            _ => None,
        });
        match last_status {
            Some((route, failure)) => Err(DispatchError::Upstream {
                route,
                failure: Box::new(failure),
                tried: failures,
            }),
            None => Err(DispatchError::AllFailed(failures)),
        }
    }

    async fn try_target(&self, target: &Target, request: &ChatRequest) -> Result<UpstreamReply, Why> {
        let provider = &target.provider;
        if !provider.kind.speaks_openai() {
            return Err(Why::Untranslatable);
        }
        let key = provider.open_key(&self.master).map_err(|e| {
            tracing::error!(provider = %provider.name, error = %e, "cannot open a stored provider key");
            Why::KeyUnreadable
        })?;
        let body = if target.model == request.model {
            request.body.clone()
        } else {
            with_model(&request.body, &target.model)
                .map_err(|_| Why::Provider(ProviderError::BadResponse("body rewrite failed".into())))?
        };
        let outcome = openai::chat(
            &self.http,
            &provider.base_url,
            key.as_ref(),
            body,
            self.upstream_timeout,
        )
        .await
        .map_err(Why::Provider)?;
        match outcome {
            ChatOutcome::Reply(reply) => Ok(reply),
            ChatOutcome::Failed(failure) => Err(Why::Status(failure)),
        }
    }
}

/// The body with `model` replaced (a `provider/` pin stripped). Nested values stay raw:
/// only the top level is re-written.
pub fn with_model(body: &[u8], model: &str) -> Result<Bytes, DispatchError> {
    let mut fields: BTreeMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|_| DispatchError::BodyNotObject)?;
    let model_json = serde_json::to_string(model).map_err(|_| DispatchError::BodyNotObject)?;
    let raw = RawValue::from_string(model_json).map_err(|_| DispatchError::BodyNotObject)?;
    fields.insert("model".into(), &raw);
    serde_json::to_vec(&fields)
        .map(Bytes::from)
        .map_err(|_| DispatchError::BodyNotObject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_model_replaces_only_the_model() {
        let body = br#"{"model":"acme/gpt-4o","messages":[{"role":"user","content":"hi \"there\""}],"stream":true}"#;
        let out = with_model(body, "gpt-4o").unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["model"], "gpt-4o");
        assert_eq!(value["messages"][0]["content"], "hi \"there\"");
        assert_eq!(value["stream"], true);
    }

    #[test]
    fn which_statuses_fail_over() {
        for s in [500, 502, 503, 429, 401, 404] {
            assert!(worth_failing_over(s), "{s}");
        }
        for s in [400, 413, 422] {
            assert!(!worth_failing_over(s), "{s}");
        }
    }
}
