//! The HTTP surface. Every route is composed here, in one place, and ends in one `.recover`.
//! Handlers parse, authorise, call the domain and shape the reply; they never touch redb or
//! an upstream directly.

mod admin;
mod admin_agent;
mod admins;
mod admit;
mod anthropic;
mod backup;
pub mod body;
pub mod conn;
mod embeddings;
pub mod error;
pub mod filters;
#[cfg(test)]
mod handler_tests;
mod key_grant;
mod models;
mod openai;
mod providers;
pub mod request;
mod requests;
mod responses;
mod routing;
mod ui;
mod usage;
mod worker_socket;
mod workers;

use crate::usage::BacklogStatus;
use crate::AppState;
use error::{json_response, rejection_response};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

/// `ok`, or `degraded` with the reasons: a router on PostgreSQL that cannot hear the others
/// (the database is unreachable), or that holds usage rows on disk for the database. It
/// keeps serving with what it last loaded, so the status stays 200 and a load balancer
/// keeps it.
fn health(shared_db_live: Option<&AtomicBool>, backlog: Option<BacklogStatus>) -> serde_json::Value {
    let mut reasons = Vec::new();
    if shared_db_live.is_some_and(|live| !live.load(Ordering::Relaxed)) {
        reasons.push("PostgreSQL is unreachable: serving with the configuration last loaded; changes made on other routers apply once it reconnects".to_string());
    }
    let backlog = backlog.filter(|b| b.rows_buffered > 0 || b.full);
    if let Some(b) = backlog {
        let cause = match b.unreachable_since_ms {
            Some(since) => format!("database unreachable since {}", crate::clock::rfc3339(since / 1000)),
            None => "being written to PostgreSQL".to_string(),
        };
        reasons.push(format!("usage rows buffered on disk: {} ({cause})", b.rows_buffered));
        if b.full {
            reasons.push(
                "the usage buffer is full (--usage-buffer-mib): new usage rows are dropped until it drains".to_string(),
            );
        }
    }
    if reasons.is_empty() {
        return serde_json::json!({"status": "ok"});
    }
    serde_json::json!({
        "status": "degraded",
        "reason": reasons.join("; "),
        "usage_rows_buffered": backlog.map_or(0, |b| b.rows_buffered),
    })
}

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let live = state.shared_db_live.clone();
    let usage = state.usage.clone();
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(move || json_response(200, &health(live.as_deref(), usage.backlog())));
    // The admin API, behind the viewers' read-only rule.
    let admin_api = admin::routes(state.clone())
        .or(admins::routes(state.clone()))
        .unify()
        .or(admin_agent::routes(state.clone()))
        .unify()
        .or(providers::routes(state.clone()))
        .unify()
        .or(workers::routes(state.clone()))
        .unify()
        .or(routing::routes(state.clone()))
        .unify()
        .or(backup::routes(state.clone()))
        .unify()
        .or(requests::routes(state.clone()))
        .unify()
        .or(usage::routes(state.clone()))
        .unify();
    // Cross-site writes are refused before any route sees them.
    filters::csrf_guard()
        .or(health)
        .unify()
        .or(openai::routes(state.clone()))
        .unify()
        .or(anthropic::routes(state.clone()))
        .unify()
        .or(models::routes(state.clone()))
        .unify()
        .or(responses::routes(state.clone()))
        .unify()
        .or(embeddings::routes(state.clone()))
        .unify()
        .or(admin_api)
        .unify()
        .or(ui::routes())
        .unify()
        .recover(reject_as_json)
        .unify()
        .boxed()
}

/// Only "no route matched" reaches here: handlers answer their own errors.
async fn reject_as_json(rejection: Rejection) -> Result<Response, Infallible> {
    let response = if let Some(filters::Refused(error)) = rejection.find::<filters::Refused>() {
        error.clone().into_response(error::Dialect::Admin)
    } else if rejection.is_not_found() {
        rejection_response(404, "not_found", "no such endpoint")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        rejection_response(405, "method_not_allowed", "this endpoint does not accept that method")
    } else {
        tracing::debug!(?rejection, "unmatched request");
        rejection_response(400, "bad_request", "the request could not be read")
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_says_degraded_with_the_reason_while_usage_rows_wait_on_disk() {
        assert_eq!(health(None, None)["status"], "ok");
        let live = AtomicBool::new(true);
        let empty = BacklogStatus {
            rows_buffered: 0,
            unreachable_since_ms: None,
            full: false,
        };
        assert_eq!(health(Some(&live), Some(empty))["status"], "ok");
        let waiting = BacklogStatus {
            rows_buffered: 12,
            unreachable_since_ms: Some(1_795_564_800_000),
            full: false,
        };
        let degraded = health(Some(&live), Some(waiting));
        assert_eq!(degraded["status"], "degraded");
        assert_eq!(
            degraded["reason"],
            "usage rows buffered on disk: 12 (database unreachable since 2026-11-25T00:00:00Z)"
        );
        assert_eq!(degraded["usage_rows_buffered"], 12);
        live.store(false, Ordering::Relaxed);
        let full = BacklogStatus { full: true, ..waiting };
        let reason = health(Some(&live), Some(full))["reason"].as_str().unwrap().to_string();
        assert!(reason.starts_with("PostgreSQL is unreachable"), "{reason}");
        assert!(reason.contains("usage rows buffered on disk: 12"), "{reason}");
        assert!(reason.contains("the usage buffer is full"), "{reason}");
    }
}
