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

use crate::AppState;
use error::{json_response, rejection_response};
use std::convert::Infallible;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

/// `ok`, or `degraded` with the reason while a router on PostgreSQL cannot hear the others
/// (the database is unreachable): it keeps serving with what it last loaded, so the status
/// stays 200 and a load balancer keeps it.
fn health(shared_db_live: Option<&std::sync::atomic::AtomicBool>) -> serde_json::Value {
    match shared_db_live {
        Some(live) if !live.load(std::sync::atomic::Ordering::Relaxed) => serde_json::json!({
            "status": "degraded",
            "reason": "PostgreSQL is unreachable: serving with the configuration last loaded; changes made on other routers apply once it reconnects",
        }),
        _ => serde_json::json!({"status": "ok"}),
    }
}

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let live = state.shared_db_live.clone();
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(move || json_response(200, &health(live.as_deref())));
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
