//! Accounting: `/api/usage` (aggregates, latency percentiles, CSV export), `/api/prices`,
//! `/api/usage/equivalents` (how local answers are valued), and `/metrics`.

use super::admin::{no_content, reply, require_admin};
use super::error::{bytes_response, json_response, ApiError};
use super::request::{api_key, parse_json, read_body};
use crate::metrics::{Gauges, WorkerGauge, CONTENT_TYPE};
use crate::store::{EquivalentSettings, PriceRecord};
use crate::usage::{to_csv, GroupBy};
use crate::AppState;
use bytes::{Buf, Bytes};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::Filter;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let admin = super::filters::admin(state.clone());
    let with_state = warp::any().map(move || state.clone());
    let headers = warp::header::headers_cloned;
    let usage = warp::path!("api" / "usage")
        .and(warp::get())
        .and(admin.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(|state, query| reply(usage(state, query)));
    let prices = warp::path!("api" / "prices")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(list_prices(state)));
    let put_price = warp::path!("api" / "prices" / String)
        .and(warp::put())
        .and(admin.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|model, state, headers, body| reply(put_price(state, headers, model, body)));
    let delete_price = warp::path!("api" / "prices" / String)
        .and(warp::delete())
        .and(admin.clone())
        .then(|model, state| reply(delete_price(state, model)));
    let equivalents = warp::path!("api" / "usage" / "equivalents")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(get_equivalents(state)));
    let put_equivalents = warp::path!("api" / "usage" / "equivalents")
        .and(warp::put())
        .and(admin.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|state, headers, body| reply(put_equivalents(state, headers, body)));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state)
        .and(headers())
        .then(|state, headers| reply(metrics(state, headers)));
    usage
        .or(prices)
        .unify()
        .or(put_price)
        .unify()
        .or(delete_price)
        .unify()
        .or(equivalents)
        .unify()
        .or(put_equivalents)
        .unify()
        .or(metrics)
        .unify()
        .boxed()
}

/// `2026-11-01` or an RFC 3339 time, as unix milliseconds.
pub(super) fn parse_time(field: &str, text: &str) -> Result<i64, ApiError> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &date_format)
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
        .map_err(|_| ApiError::bad_request(format!("{field} must be a date (2026-11-01) or an RFC 3339 time")))
}

/// `GET /api/usage?from&to&group_by=tier|provider|model|api_key|agent|day&format=json|csv`.
/// Defaults: the last 30 days, by tier. `to` is exclusive.
async fn usage(state: AppState, query: HashMap<String, String>) -> Result<Response, ApiError> {
    let now = crate::clock::now_unix_ms();
    let to = match query.get("to") {
        Some(t) => parse_time("to", t)?,
        None => now + 1,
    };
    let from = match query.get("from") {
        Some(f) => parse_time("from", f)?,
        None => to - 30 * 86_400_000,
    };
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    let group_by_text = query.get("group_by").map_or("tier", String::as_str);
    let group_by = GroupBy::parse(group_by_text).ok_or_else(|| {
        ApiError::bad_request("group_by must be one of tier, provider, model, api_key, agent, day, day_tier")
    })?;
    let summary = state.usage.summary(from, to, group_by).await?;
    let groups = summary.groups;
    match query.get("format").map(String::as_str) {
        Some("csv") => {
            let mut response = bytes_response(200, "text/csv; charset=utf-8", Bytes::from(to_csv(&groups)));
            response.headers_mut().insert(
                warp::http::header::CONTENT_DISPOSITION,
                warp::http::HeaderValue::from_static("attachment; filename=\"auxot-usage.csv\""),
            );
            Ok(response)
        }
        None | Some("json") => {
            // Subscriptions (fixed monthly prices of CLI workers), beside the usage of the
            // workers that run on them.
            let tokens = state.auth.list_worker_tokens().await?;
            let by_worker: HashMap<String, f64> = state
                .workers
                .views()
                .into_iter()
                .filter_map(|w| {
                    let price = tokens.iter().find(|t| t.id == w.token_id)?.monthly_price_usd?;
                    Some((w.name, price))
                })
                .collect();
            let mut groups =
                serde_json::to_value(&groups).map_err(|e| ApiError::new(500, "internal_error", e.to_string()))?;
            if group_by == GroupBy::Provider {
                for g in groups.as_array_mut().into_iter().flatten() {
                    if let Some(price) = g["key"].as_str().and_then(|k| by_worker.get(k)) {
                        g["subscription_usd_per_month"] = json!(price);
                    }
                }
            }
            let subscriptions: Vec<serde_json::Value> = tokens
                .iter()
                .filter_map(|t| {
                    let price = t.monthly_price_usd?;
                    Some(json!({"worker_token_id": t.id, "name": t.name, "kind": t.kind, "monthly_price_usd": price}))
                })
                .collect();
            Ok(json_response(
                200,
                &json!({"from": crate::clock::rfc3339(from / 1000), "to": crate::clock::rfc3339(to / 1000), "group_by": group_by_text,
                    "groups": groups, "totals": summary.totals, "subscriptions": subscriptions,
                    "latency": summary.latency, "latency_by_day": summary.latency_by_day,
                    "pruned_before": summary.pruned_before.map(|ms| crate::clock::rfc3339(ms / 1000))}),
            ))
        }
        Some(_) => Err(ApiError::bad_request("format must be json or csv")),
    }
}

async fn list_prices(state: AppState) -> Result<Response, ApiError> {
    Ok(json_response(200, &json!({"data": state.usage.prices()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    input_per_mtok: f64,
    output_per_mtok: f64,
    #[serde(default)]
    cache_read_per_mtok: Option<f64>,
    #[serde(default)]
    cache_write_5m_per_mtok: Option<f64>,
    #[serde(default)]
    cache_write_1h_per_mtok: Option<f64>,
    #[serde(default)]
    reasoning_per_mtok: Option<f64>,
}

async fn put_price<S, B>(state: AppState, headers: HeaderMap, model: String, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let input: PriceBody = parse_json(&body)?;
    let price = state
        .usage
        .put_price(PriceRecord {
            model,
            input_per_mtok: input.input_per_mtok,
            output_per_mtok: input.output_per_mtok,
            cache_read_per_mtok: input.cache_read_per_mtok,
            cache_write_5m_per_mtok: input.cache_write_5m_per_mtok,
            cache_write_1h_per_mtok: input.cache_write_1h_per_mtok,
            reasoning_per_mtok: input.reasoning_per_mtok,
        })
        .await?;
    Ok(json_response(200, &json!(price)))
}

async fn delete_price(state: AppState, model: String) -> Result<Response, ApiError> {
    state.usage.delete_price(&model).await?;
    Ok(no_content())
}

async fn get_equivalents(state: AppState) -> Result<Response, ApiError> {
    Ok(equivalents_reply(state.usage.equivalents()))
}

/// `PUT /api/usage/equivalents`: the whole setting at once (every model named must have a
/// price).
async fn put_equivalents<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let settings: EquivalentSettings = parse_json(&body)?;
    Ok(equivalents_reply(state.usage.put_equivalents(settings).await?))
}

fn equivalents_reply(settings: EquivalentSettings) -> Response {
    json_response(
        200,
        &json!({"default_model": settings.default_model, "by_worker": settings.by_worker,
            "by_model": settings.by_model, "builtin_default": crate::usage::equivalent::BUILTIN_DEFAULT}),
    )
}

/// Prometheus text. An admin key, or the metrics token (`AUXOT_METRICS_TOKEN`) for a
/// scraper that should not hold an admin key.
async fn metrics(state: AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    let token_ok = match (&state.config.metrics_token, api_key(&headers)) {
        (Some(token), Some(given)) => constant_time_eq(token.expose().as_bytes(), given.as_bytes()),
        _ => false,
    };
    if !token_ok {
        require_admin(&state, &headers).await?;
    }
    let gauges = Gauges {
        workers: state
            .workers
            .views()
            .into_iter()
            .map(|w| WorkerGauge {
                online: w.status != "offline",
                name: w.name,
                kind: w.kind.as_str().to_string(),
                slots_in_use: w.slots_in_use,
                slots_total: w.slots_total,
            })
            .collect(),
        queue_depth: state.dispatcher.queue_depth(),
        usage_rows_dropped: state.usage.rows_dropped(),
        usage_rows_buffered: state.usage.backlog().map_or(0, |b| b.rows_buffered),
        targets_cooling: state.dispatcher.cooling_targets(),
        connections_open: state.connections.open(),
        connections_max: state.connections.max,
    };
    let text = state.usage.metrics().render(&gauges);
    Ok(bytes_response(200, CONTENT_TYPE, Bytes::from(text)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
