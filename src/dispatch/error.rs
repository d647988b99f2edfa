//! Why a target failed (`Why`, one `TargetFailure` per candidate tried) and why a whole
//! dispatch failed (`DispatchError`), with the status and code each maps to.

use super::health::{retry_after_until, Fault};
use super::plan::{PlanError, Tier};
use crate::providers::{ProviderError, UpstreamFailure};
use std::time::{Duration, SystemTime};

#[derive(Debug)]
pub enum Why {
    Provider(ProviderError),
    Status(UpstreamFailure),
    /// The request cannot be put in this target's dialect (the reason names the field).
    Untranslatable(String),
    KeyUnreadable,
    Worker {
        message: String,
        status: Option<u16>,
        /// The worker's upstream `Retry-After`, when it sent one.
        retry_after: Option<String>,
    },
    /// A CLI worker's subscription hit its usage limit; it is usable again at `until`.
    Limited {
        message: String,
        until: SystemTime,
    },
    WorkerGone,
    /// A worker shared with other routers did not take the job (every slot busy): the
    /// walk moves on as if it had found the worker full. Never a fault, never shown.
    Refused,
    /// A per-phase timeout: which phase, and its limit.
    Timeout {
        phase: &'static str,
        limit: Duration,
    },
    BadChunk(String),
}

impl Why {
    /// What this failure says about the target's health: `None` when it is the request's
    /// fault (it says nothing about the target).
    pub fn fault(&self, now: SystemTime) -> Option<Fault> {
        let fault = |reason: String, until: Option<SystemTime>| Fault {
            reason,
            until,
            limited: false,
        };
        match self {
            Why::Untranslatable(_) | Why::KeyUnreadable | Why::Refused => None,
            // The router's own shortage says nothing about the target.
            Why::Provider(ProviderError::Exhausted(_)) => None,
            Why::Status(s) => {
                let until = s.retry_after.as_deref().and_then(|v| retry_after_until(v, now));
                Some(fault(format!("answered {}", s.status), until))
            }
            Why::Worker {
                status, retry_after, ..
            } => {
                let until = retry_after.as_deref().and_then(|v| retry_after_until(v, now));
                let reason = match status {
                    Some(s) => format!("worker error {s}"),
                    None => "worker error".into(),
                };
                Some(fault(reason, until))
            }
            Why::Limited { message, until } => Some(Fault {
                reason: message.clone(),
                until: Some(*until),
                limited: true,
            }),
            Why::Provider(e) => Some(fault(provider_reason(e), None)),
            Why::WorkerGone => Some(fault("the worker disconnected".into(), None)),
            Why::Timeout { phase, .. } => Some(fault(format!("{phase} timeout"), None)),
            Why::BadChunk(_) => Some(fault("sent output auxot cannot read".into(), None)),
        }
    }

    fn retry_after(&self) -> Option<&str> {
        match self {
            Why::Status(s) => s.retry_after.as_deref(),
            Why::Worker { retry_after, .. } => retry_after.as_deref(),
            _ => None,
        }
    }

    /// The router itself was short of resources (see `ProviderError::Exhausted`).
    pub fn is_exhausted(&self) -> bool {
        matches!(self, Why::Provider(ProviderError::Exhausted(_)))
    }

    fn is_timeout(&self) -> bool {
        matches!(self, Why::Provider(ProviderError::Timeout(_)) | Why::Timeout { .. })
    }
}

fn provider_reason(e: &ProviderError) -> String {
    match e {
        ProviderError::KeyRejected { status, .. } => format!("rejected the key ({status})"),
        ProviderError::Unreachable(_) => "unreachable".into(),
        ProviderError::Exhausted(_) => "auxot out of resources".into(),
        ProviderError::Timeout(_) => "timed out".into(),
        ProviderError::Status { status, .. } => format!("answered {status}"),
        ProviderError::BadResponse(_) => "sent a response auxot cannot read".into(),
        ProviderError::Stream(_) => "its stream broke".into(),
    }
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
            Why::Untranslatable(why) => write!(f, "the request cannot be translated for it: {why}"),
            Why::KeyUnreadable => f.write_str("its stored key cannot be opened"),
            Why::Worker {
                message,
                status: Some(s),
                ..
            } => write!(f, "worker error {s}: {message}"),
            Why::Worker {
                message, status: None, ..
            } => write!(f, "worker error: {message}"),
            Why::Limited { message, until } => {
                write!(
                    f,
                    "usage limit reached until {}: {message}",
                    crate::clock::rfc3339_at(*until)
                )
            }
            Why::WorkerGone => f.write_str("the worker disconnected"),
            Why::Refused => f.write_str("the worker had no free slot (taken by another router)"),
            Why::Timeout { phase, limit } => write!(f, "{phase} timeout after {}ms", limit.as_millis()),
            Why::BadChunk(e) => write!(f, "sent output that is not a valid answer: {e}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("no agent is named '{0}'")]
    UnknownAgent(String),
    /// The target's own answer: a client error, or the last retryable one when every
    /// candidate failed. Status and body are passed on (the body already scrubbed).
    #[error("{route} answered {}", failure.status)]
    Upstream {
        tier: Tier,
        route: String,
        failure: Box<UpstreamFailure>,
        tried: Vec<TargetFailure>,
    },
    #[error("{}", describe_all(.0))]
    AllFailed(Vec<TargetFailure>),
    /// Every candidate is cooling down after failures (or limited): none was tried.
    #[error("every candidate is cooling down after failures: {}", notes.join("; "))]
    Cooling {
        notes: Vec<String>,
        until: SystemTime,
        tried: Vec<TargetFailure>,
    },
    #[error("no capacity for this request after waiting {}ms: {}", waited.as_millis(), notes.join("; "))]
    QueueTimeout {
        waited: Duration,
        notes: Vec<String>,
        tried: Vec<TargetFailure>,
    },
    #[error("the request body is not a JSON object with a messages array")]
    BodyNotObject,
}

fn describe_all(failures: &[TargetFailure]) -> String {
    let parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    format!("every candidate failed: {}", parts.join("; "))
}

/// A router short of file descriptors or memory tells clients to come back this soon: a
/// flood's connections close within moments.
const EXHAUSTED_RETRY_AFTER_SECS: u64 = 1;
/// A queue timeout tells clients to come back after about this long.
const QUEUE_RETRY_AFTER_SECS: u64 = 5;

impl DispatchError {
    /// The last target the request reached before failing, for its usage row.
    pub fn last_target(&self) -> Option<(Tier, &str)> {
        match self {
            DispatchError::Upstream { tier, route, .. } => Some((*tier, route.as_str())),
            _ => self.tried().last().map(|f| (f.tier, f.route.as_str())),
        }
    }

    /// Every candidate tried and how each failed, in order.
    pub fn tried(&self) -> &[TargetFailure] {
        match self {
            DispatchError::Upstream { tried, .. }
            | DispatchError::Cooling { tried, .. }
            | DispatchError::QueueTimeout { tried, .. } => tried,
            DispatchError::AllFailed(failures) => failures,
            _ => &[],
        }
    }

    /// Every candidate failed only because the router was out of descriptors or memory.
    fn router_short(&self) -> bool {
        matches!(self, DispatchError::AllFailed(failures) if failures.iter().all(|f| f.why.is_exhausted()))
    }

    /// How long the request waited in the queue before failing.
    pub fn queue_wait(&self) -> Duration {
        match self {
            DispatchError::QueueTimeout { waited, .. } => *waited,
            _ => Duration::ZERO,
        }
    }

    /// `Retry-After` for the client: the upstream's own on a final 429/503, a queue
    /// timeout's or a cooldown's end.
    pub fn retry_after(&self) -> Option<String> {
        match self {
            DispatchError::Upstream { failure, .. } => failure.retry_after.clone(),
            DispatchError::QueueTimeout { .. } => Some(QUEUE_RETRY_AFTER_SECS.to_string()),
            DispatchError::Cooling { until, .. } => {
                let secs = until
                    .duration_since(SystemTime::now())
                    .map(|d| d.as_secs_f64().ceil() as u64)
                    .unwrap_or(0);
                Some(secs.max(1).to_string())
            }
            DispatchError::AllFailed(_) if self.router_short() => Some(EXHAUSTED_RETRY_AFTER_SECS.to_string()),
            DispatchError::AllFailed(failures) if matches!(self.status(), 429 | 503) => failures
                .iter()
                .rev()
                .find_map(|f| f.why.retry_after().map(str::to_string)),
            _ => None,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            DispatchError::Plan(PlanError::ConflictingPins { .. } | PlanError::PinWithoutCloud(_))
            | DispatchError::BodyNotObject => 400,
            DispatchError::Plan(_) | DispatchError::UnknownAgent(_) => 404,
            DispatchError::Upstream { failure, .. } => failure.status,
            DispatchError::QueueTimeout { .. } | DispatchError::Cooling { .. } => 503,
            DispatchError::AllFailed(failures) => {
                if failures.iter().all(|f| matches!(f.why, Why::Untranslatable(_))) {
                    400
                } else if self.router_short() {
                    503
                } else if failures.iter().all(|f| f.why.is_timeout()) {
                    504
                } else {
                    last_worker_status(failures).unwrap_or(502)
                }
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            DispatchError::Plan(PlanError::NoRoute { .. } | PlanError::NotServedBy { .. }) => "model_not_found",
            DispatchError::Plan(PlanError::UnknownProvider(_)) => "provider_not_found",
            DispatchError::UnknownAgent(_) => "agent_not_found",
            DispatchError::Plan(_) | DispatchError::BodyNotObject => "invalid_request",
            DispatchError::Upstream { .. } => "upstream_error",
            DispatchError::QueueTimeout { .. } => "no_capacity",
            DispatchError::Cooling { .. } => "targets_cooling_down",
            DispatchError::AllFailed(_) if self.router_short() => "router_out_of_resources",
            DispatchError::AllFailed(_) => match self.status() {
                400 => "untranslatable_request",
                504 => "upstream_timeout",
                429 => "rate_limited",
                503 => "upstream_overloaded",
                _ => "upstream_unavailable",
            },
        }
    }
}

/// Every candidate was a worker and the last one's upstream said 429 or 503: the client
/// gets that (with its `Retry-After`), so SDKs back off as they would against the upstream.
fn last_worker_status(failures: &[TargetFailure]) -> Option<u16> {
    match failures.last().map(|f| &f.why) {
        Some(Why::Worker {
            status: Some(s @ (429 | 503)),
            ..
        }) => Some(*s),
        _ => None,
    }
}

/// Worth trying the next candidate: the failure is this target's, not the request's.
pub fn worth_failing_over(status: u16) -> bool {
    status >= 500 || matches!(status, 401 | 403 | 404 | 408 | 429)
}

/// Only a real 4xx/5xx is an upstream's error status; anything else that is not a 2xx
/// success (1xx, 3xx, a 2xx carried in an error frame, garbage) is a broken upstream: 502.
pub fn sane_error_status(status: u16) -> u16 {
    if (400..=599).contains(&status) {
        status
    } else {
        502
    }
}

/// A failure that is the request's fault, answered as is rather than failed over.
pub fn client_error(failure: &TargetFailure) -> Option<UpstreamFailure> {
    match &failure.why {
        Why::Status(status) if (400..500).contains(&status.status) && !worth_failing_over(status.status) => {
            Some(status.clone())
        }
        Why::Worker {
            message,
            status: Some(status),
            ..
        } if (400..500).contains(status) && !worth_failing_over(*status) => Some(UpstreamFailure {
            status: *status,
            content_type: Some("application/json".into()),
            body: bytes::Bytes::from(serde_json::json!({"error": {"message": message}}).to_string()),
            retry_after: None,
        }),
        _ => None,
    }
}

/// Prefer the upstream's own last answer: its status class and message say most.
pub fn all_failed(failures: Vec<TargetFailure>) -> DispatchError {
    let last_status = failures.iter().rev().find_map(|f| match &f.why {
        Why::Status(s) => Some((f.tier, f.route.clone(), s.clone())),
        _ => None,
    });
    match last_status {
        Some((tier, route, failure))
            if failures
                .iter()
                .all(|f| matches!(&f.why, Why::Status(s) if sane_error_status(s.status) == s.status)) =>
        {
            DispatchError::Upstream {
                tier,
                route,
                failure: Box::new(failure),
                tried: failures,
            }
        }
        _ => DispatchError::AllFailed(failures),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_statuses_fail_over() {
        for s in [500, 502, 503, 429, 401, 404] {
            assert!(worth_failing_over(s), "{s}");
        }
        for s in [400, 413, 422] {
            assert!(!worth_failing_over(s), "{s}");
        }
    }

    #[test]
    fn only_real_error_statuses_pass() {
        for s in [101, 200, 204, 302, 399, 600, 0] {
            assert_eq!(sane_error_status(s), 502, "{s}");
        }
        for s in [400, 429, 503, 599] {
            assert_eq!(sane_error_status(s), s);
        }
    }

    #[test]
    fn a_queue_timeout_says_when_to_retry() {
        let e = DispatchError::QueueTimeout {
            waited: Duration::from_secs(1),
            notes: vec![],
            tried: vec![],
        };
        assert_eq!(e.status(), 503);
        assert_eq!(e.retry_after().as_deref(), Some("5"));
    }
}
