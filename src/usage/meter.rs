//! One request's usage row, filled in as the request goes and written when the meter
//! drops — so a client that goes away still leaves a `cancelled` row.

use super::tap::{Tokens, UsageTap};
use super::Usage;
use crate::metrics::RequestObservation;
use crate::store::UsageRecord;
use crate::translate::Format;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A rough size-based estimate when no usage came back (about four bytes per token).
const BYTES_PER_TOKEN: u64 = 4;

/// What is known when a request arrives; the handler fills in the rest as it learns it.
#[derive(Default)]
pub struct MeterStart {
    pub api_key_id: Option<String>,
    /// Set for internal callers (the admin agent); client requests derive it from `agent:NAME`.
    pub agent: Option<String>,
    pub model: String,
    pub stream: bool,
    pub request_bytes: usize,
}

enum State {
    Open,
    Completed,
    Failed,
}

pub struct Meter {
    usage: Arc<Usage>,
    row: UsageRecord,
    started: Instant,
    first_byte: Option<Duration>,
    tap: Option<UsageTap>,
    request_bytes: usize,
    /// The model the target ran (priced for cloud rows).
    target_model: Option<String>,
    /// The alias's cloud model, priced for the cloud-equivalent of GPU/CLI rows.
    cloud_model: Option<String>,
    overflow: bool,
    state: State,
}

impl Usage {
    pub fn meter(self: &Arc<Self>, start: MeterStart) -> Meter {
        let agent = start.agent.or_else(|| {
            start
                .model
                .strip_prefix(crate::agents::MODEL_PREFIX)
                .map(str::to_string)
        });
        Meter {
            usage: self.clone(),
            row: UsageRecord {
                at_ms: crate::store::now_unix() * 1000,
                api_key_id: start.api_key_id,
                agent,
                tier: None,
                route: None,
                model: start.model,
                input_tokens: 0,
                output_tokens: 0,
                tokens_estimated: false,
                cost_usd: 0.0,
                cloud_equivalent_usd: 0.0,
                ms_to_first_byte: None,
                ms_total: 0,
                outcome: "ok".into(),
                status: 200,
                stream: start.stream,
            },
            started: Instant::now(),
            first_byte: None,
            tap: None,
            request_bytes: start.request_bytes,
            target_model: None,
            cloud_model: None,
            overflow: false,
            state: State::Open,
        }
    }
}

/// Where the request went, for the row.
pub struct RouteInfo<'a> {
    pub tier: &'a str,
    pub route: &'a str,
    pub target_model: &'a str,
    pub cloud_model: Option<&'a str>,
    pub overflow: bool,
    /// The dialect and shape of what the client receives, to read usage from it.
    pub client_format: Format,
    pub sse: bool,
}

impl Meter {
    pub fn set_api_key(&mut self, id: Option<String>) {
        self.row.api_key_id = id;
    }

    pub fn api_key_id(&self) -> Option<&str> {
        self.row.api_key_id.as_deref()
    }

    pub fn set_request(&mut self, model: &str, stream: bool, request_bytes: usize) {
        self.row.model = model.to_string();
        self.row.agent = model.strip_prefix(crate::agents::MODEL_PREFIX).map(str::to_string);
        self.row.stream = stream;
        self.request_bytes = request_bytes;
    }

    pub fn routed(&mut self, info: RouteInfo<'_>) {
        self.row.tier = Some(info.tier.to_string());
        self.row.route = Some(info.route.to_string());
        self.target_model = Some(info.target_model.to_string());
        self.cloud_model = info.cloud_model.map(str::to_string);
        self.overflow = info.overflow;
        self.first_byte = Some(self.started.elapsed());
        self.tap = Some(UsageTap::new(info.client_format, info.sse));
    }

    /// The request failed at this target (nothing reached the client from it).
    pub fn tried(&mut self, tier: &str, route: &str) {
        self.row.tier = Some(tier.to_string());
        self.row.route = Some(route.to_string());
    }

    /// Bytes on their way to the client (never stored: only usage is read from them).
    pub fn observe(&mut self, bytes: &[u8]) {
        if let Some(tap) = self.tap.as_mut() {
            tap.observe(bytes);
        }
    }

    pub fn completed(&mut self) {
        self.state = State::Completed;
    }

    pub fn failed(&mut self, code: &str, status: u16) {
        self.state = State::Failed;
        self.row.outcome = format!("error:{code}");
        self.row.status = status;
    }

    fn finalize(&mut self) {
        match self.state {
            State::Open => {
                self.row.outcome = "cancelled".into();
                self.row.status = 499;
            }
            State::Completed | State::Failed => {}
        }
        let reached_target = self.tap.is_some();
        let tokens = self.tap.as_mut().and_then(UsageTap::tokens);
        let tokens = match (tokens, &self.tap) {
            (Some(tokens), _) => tokens,
            (None, Some(tap)) if reached_target => {
                self.row.tokens_estimated = true;
                Tokens {
                    input: self.request_bytes as u64 / BYTES_PER_TOKEN,
                    output: tap.bytes_seen / (BYTES_PER_TOKEN * 3),
                }
            }
            _ => Tokens::default(),
        };
        self.row.input_tokens = tokens.input;
        self.row.output_tokens = tokens.output;
        let total = self.started.elapsed();
        self.row.ms_total = total.as_millis() as u64;
        self.row.ms_to_first_byte = self.first_byte.map(|d| d.as_millis() as u64);
        let is_cloud = self.row.tier.as_deref() == Some("cloud");
        let priced_model = if is_cloud {
            self.target_model.clone()
        } else {
            // GPU/CLI: what the alias's cloud model would have cost, else the same model.
            self.cloud_model
                .as_ref()
                .map(|m| m.rsplit('/').next().unwrap_or(m).to_string())
                .or_else(|| self.target_model.clone())
        };
        let priced = priced_model.map_or(0.0, |m| self.usage.cost(&m, tokens.input, tokens.output));
        if is_cloud {
            self.row.cost_usd = priced;
        }
        self.row.cloud_equivalent_usd = priced;
        if let Some(key) = &self.row.api_key_id {
            self.usage
                .add_spend(key, self.row.at_ms, self.row.cost_usd, tokens.input + tokens.output);
        }
        let outcome = if self.row.outcome.starts_with("error") {
            "error"
        } else {
            self.row.outcome.as_str()
        };
        self.usage.metrics().observe(&RequestObservation {
            tier: self.row.tier.as_deref(),
            route: self.row.route.as_deref(),
            outcome,
            to_first_byte: self.first_byte,
            total,
            input_tokens: tokens.input,
            output_tokens: tokens.output,
            cost_usd: self.row.cost_usd,
            overflowed_to_cloud: self.overflow && is_cloud,
        });
        // The one log line per request: where it went and what it cost, never its text.
        tracing::info!(
            api_key = self.row.api_key_id.as_deref().unwrap_or("-"),
            agent = self.row.agent.as_deref().unwrap_or("-"),
            model = %self.row.model,
            tier = self.row.tier.as_deref().unwrap_or("-"),
            route = self.row.route.as_deref().unwrap_or("-"),
            status = self.row.status,
            outcome = %self.row.outcome,
            input_tokens = tokens.input,
            output_tokens = tokens.output,
            estimated = self.row.tokens_estimated,
            cost_usd = self.row.cost_usd,
            ms_to_first_byte = self.row.ms_to_first_byte.unwrap_or(0),
            ms_total = self.row.ms_total,
            "request"
        );
        self.usage.record(self.row.clone());
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finalize();
    }
}
