//! `GET /api/requests`: the request log, newest first, cursor-paginated and filtered.
//! Rows carry where each request went, what it cost and how long it took; never its text.

use super::admin::reply;
use super::error::{json_response, ApiError};
use super::usage::parse_time;
use crate::store::{LogField, LogQuery, UsageRecord};
use crate::AppState;
use serde_json::json;
use std::collections::HashMap;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
/// Rows a sparse filter combination looks at before the page ends early (with a cursor).
const MAX_SCAN: usize = 20_000;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let admin = super::filters::admin(state);
    warp::path!("api" / "requests")
        .and(warp::get())
        .and(admin)
        .and(warp::query::<HashMap<String, String>>())
        .then(|state, query| reply(list(state, query)))
        .boxed()
}

/// The cursor is the row's key, as 32 hex digits: opaque to clients.
fn cursor_text(key: u128) -> String {
    format!("{key:032x}")
}

fn parse_cursor(text: &str) -> Result<u128, ApiError> {
    u128::from_str_radix(text, 16)
        .ok()
        .filter(|_| text.len() == 32)
        .ok_or_else(|| ApiError::bad_request("cursor is not one this server gave out (use next_cursor as is)"))
}

/// Unix millis as RFC 3339 with milliseconds, UTC.
fn time_text(unix_ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

async fn list(state: AppState, query: HashMap<String, String>) -> Result<Response, ApiError> {
    // An empty value is no filter: a form that sends every field works as is.
    let given = |name: &str| query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let known = [
        "limit", "cursor", "from", "to", "tier", "route", "model", "api_key", "agent", "session", "outcome", "status",
    ];
    if let Some(unknown) = query.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{}'; use {}",
            unknown.chars().take(64).collect::<String>(),
            known.join(", ")
        )));
    }
    let limit = match given("limit") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be a whole number from 1 to {MAX_LIMIT}")))?,
        None => DEFAULT_LIMIT,
    };
    let to = match given("to") {
        Some(text) => parse_time("to", text)?,
        None => crate::clock::now_unix_ms() + 1,
    };
    let from = match given("from") {
        Some(text) => parse_time("from", text)?,
        None => 0,
    };
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    if let Some(tier) = given("tier") {
        if !["gpu", "cli", "cloud"].contains(&tier) {
            return Err(ApiError::bad_request("tier must be gpu, cli or cloud"));
        }
    }
    if let Some(status) = given("status") {
        if status.parse::<u16>().ok().filter(|s| (100..=599).contains(s)).is_none() {
            return Err(ApiError::bad_request("status must be an HTTP status code (100 to 599)"));
        }
    }
    let keys = state.auth.list_api_keys().await?;
    let mut filters = Vec::new();
    for field in LogField::ALL {
        let Some(value) = given(field.name()) else { continue };
        // An API key by id, or by its name.
        let value = match field {
            LogField::ApiKey => keys
                .iter()
                .find(|k| k.id == value)
                .or_else(|| keys.iter().find(|k| k.name == value))
                .map_or(value, |k| k.id.as_str()),
            _ => value,
        };
        filters.push((field, value.to_string()));
    }
    let before = given("cursor").map(parse_cursor).transpose()?;
    let page = state
        .usage
        .request_log(LogQuery {
            from_ms: from,
            to_ms: to,
            before,
            filters,
            limit,
            max_scan: MAX_SCAN,
        })
        .await?;
    let names: HashMap<&str, &str> = keys.iter().map(|k| (k.id.as_str(), k.name.as_str())).collect();
    let requests: Vec<serde_json::Value> = page.rows.iter().map(|(key, row)| row_json(*key, row, &names)).collect();
    Ok(json_response(
        200,
        &json!({"requests": requests, "next_cursor": page.next.map(cursor_text)}),
    ))
}

fn row_json(key: u128, row: &UsageRecord, key_names: &HashMap<&str, &str>) -> serde_json::Value {
    let attempts: Vec<serde_json::Value> = row
        .attempts
        .iter()
        .map(|a| json!({"tier": a.tier, "route": a.route, "error": a.error}))
        .collect();
    json!({
        "id": cursor_text(key),
        "time": time_text(row.at_ms),
        "api_key_id": row.api_key_id,
        "api_key_name": row.api_key_id.as_deref().and_then(|id| key_names.get(id)),
        "agent": row.agent,
        "session": row.session,
        "model_asked": row.model,
        "model_served": row.model_served,
        "tier": row.tier,
        "route": row.route,
        "router": row.router,
        "status": row.status,
        "outcome": row.outcome,
        "stream": row.stream,
        "estimated": row.tokens_estimated,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cache_read_tokens": row.cache_read_tokens,
        "cache_write_5m_tokens": row.cache_write_5m_tokens,
        "cache_write_1h_tokens": row.cache_write_1h_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost_usd": row.cost_usd,
        "cloud_equivalent_usd": row.cloud_equivalent_usd,
        "cloud_equivalent_model": row.cloud_equivalent_model,
        "cloud_equivalent_source": row.cloud_equivalent_source,
        "ttfb_ms": row.ms_to_first_byte,
        "total_ms": row.ms_total,
        "queue_ms": row.ms_queue,
        "attempts": attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let key = crate::store::usage_key(1_700_000_000_123, 7);
        assert_eq!(parse_cursor(&cursor_text(key)).ok(), Some(key));
        assert!(parse_cursor("12").is_err());
        assert!(parse_cursor(&"z".repeat(32)).is_err());
    }

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(time_text(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
