//! One request's usage row, filled in as the request goes. An answered request's row is
//! made durable before the client's last byte (`finish_durably`); any other meter writes
//! its row when it drops — so a client that goes away still leaves a `cancelled` row.

use super::equivalent;
use super::estimate::{TextCounter, BYTES_PER_TOKEN};
use super::prices;
use super::tap::{Tokens, UsageTap};
use super::Usage;
use crate::metrics::RequestObservation;
use crate::store::{Attempt, UsageRecord};
use crate::translate::Format;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// When no upstream reports counts: `estimate` (text bytes / 4). Only a reply with no text
/// the counter knows falls back to its size: twelve bytes of SSE or four of JSON a token.
const SSE_BYTES_PER_TOKEN: u64 = 12;
/// Model names and sessions are stored up to this length.
const MAX_NAME: usize = 256;

fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_NAME);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

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
    Recorded,
}

/// Boxed: a meter is moved down the request's whole call chain (handler, answer, body),
/// and each async function holding it kept its own ~1 KB copy in its state, so the boxed
/// handler future of a chat request was 10 KB, copied on every move.
pub struct Meter {
    m: Box<MeterState>,
}

struct MeterState {
    usage: Arc<Usage>,
    row: UsageRecord,
    started: Instant,
    first_byte: Option<Duration>,
    /// What the client receives: errors that end a stream, and usage when no upstream tap.
    tap: Option<UsageTap>,
    /// Generated text in what the client receives, for the estimate.
    text: TextCounter,
    /// The upstream's own bytes when the client gets a translation (which may drop detail).
    upstream: Option<Arc<Mutex<UsageTap>>>,
    request_bytes: usize,
    /// The model the target ran (priced for cloud rows).
    target_model: Option<String>,
    /// The alias's cloud model, priced for the cloud-equivalent of GPU/CLI rows.
    cloud_model: Option<String>,
    overflow: bool,
    /// Counts the handler read from a whole answer itself (embeddings), and whether they
    /// are estimated.
    given: Option<(Tokens, bool)>,
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
            m: Box::new(MeterState {
                usage: self.clone(),
                row: UsageRecord {
                    at_ms: crate::clock::now_unix_ms(),
                    api_key_id: start.api_key_id,
                    agent,
                    model: clip(&start.model),
                    outcome: "ok".into(),
                    status: 200,
                    stream: start.stream,
                    ..Default::default()
                },
                started: Instant::now(),
                first_byte: None,
                tap: None,
                text: TextCounter::default(),
                upstream: None,
                request_bytes: start.request_bytes,
                target_model: None,
                cloud_model: None,
                overflow: false,
                given: None,
                state: State::Open,
            }),
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
        self.m.row.api_key_id = id;
    }

    pub fn api_key_id(&self) -> Option<&str> {
        self.m.row.api_key_id.as_deref()
    }

    pub fn set_request(&mut self, model: &str, stream: bool, request_bytes: usize) {
        self.m.row.model = clip(model);
        self.m.row.agent = model.strip_prefix(crate::agents::MODEL_PREFIX).map(clip);
        self.m.row.stream = stream;
        self.m.request_bytes = request_bytes;
    }

    /// The client's session id (e.g. `X-Claude-Code-Session-Id`).
    pub fn set_session(&mut self, session: Option<&str>) {
        self.m.row.session = session.filter(|s| !s.is_empty()).map(clip);
    }

    /// How long the request waited for capacity before its answering target was tried.
    pub fn set_queue_wait(&mut self, waited: Duration) {
        self.m.row.ms_queue = Some(waited.as_millis() as u64);
    }

    /// A target that was tried and failed (nothing from it reached the client).
    pub fn add_attempt(&mut self, tier: &str, route: &str, error: &str) {
        self.m.row.attempts.push(Attempt {
            tier: tier.to_string(),
            route: route.to_string(),
            error: error.chars().take(512).collect(),
        });
    }

    pub fn routed(&mut self, info: RouteInfo<'_>) {
        self.m.row.tier = Some(info.tier.to_string());
        self.m.row.route = Some(info.route.to_string());
        self.m.row.model_served = Some(clip(info.target_model));
        self.m.target_model = Some(info.target_model.to_string());
        self.m.cloud_model = info.cloud_model.map(str::to_string);
        self.m.overflow = info.overflow;
        self.m.first_byte = Some(self.m.started.elapsed());
        self.m.tap = Some(UsageTap::new(info.client_format, info.sse));
    }

    /// Reads usage from the upstream's own body as it passes, for a reply the client gets
    /// translated into its dialect: the upstream's report is the complete one.
    pub fn watch_upstream<E: Send + 'static>(
        &mut self,
        body: BoxStream<'static, Result<Bytes, E>>,
        format: Format,
        sse: bool,
    ) -> BoxStream<'static, Result<Bytes, E>> {
        let tap = Arc::new(Mutex::new(UsageTap::new(format, sse)));
        self.m.upstream = Some(tap.clone());
        body.inspect(move |item| {
            if let Ok(bytes) = item {
                tap.lock().unwrap_or_else(PoisonError::into_inner).observe_bytes(bytes);
            }
        })
        .boxed()
    }

    /// The counts of an answer the handler read whole; `estimated` when the target
    /// reported none (estimated counts are never billed).
    pub fn set_tokens(&mut self, tokens: Tokens, estimated: bool) {
        self.m.given = Some((tokens, estimated));
    }

    /// The request failed at this target (nothing reached the client from it).
    pub fn tried(&mut self, tier: &str, route: &str) {
        self.m.row.tier = Some(tier.to_string());
        self.m.row.route = Some(route.to_string());
    }

    /// Bytes on their way to the client (never stored: only usage is read from them).
    pub fn observe(&mut self, bytes: &Bytes) {
        if let Some(tap) = self.m.tap.as_mut() {
            tap.observe_bytes(bytes);
            if !tap.is_stream() {
                // A JSON body's text is counted at the end, and only if it reports no usage.
                return;
            }
        }
        self.m.text.observe(bytes);
    }

    pub fn completed(&mut self) {
        if matches!(self.m.state, State::Open) {
            self.m.state = State::Completed;
        }
    }

    pub fn failed(&mut self, code: &str, status: u16) {
        if matches!(self.m.state, State::Recorded) {
            return;
        }
        self.m.state = State::Failed;
        self.m.row.outcome = format!("error:{code}");
        self.m.row.status = status;
    }

    /// Writes the row so that a crash cannot lose it (the journal; see `record_durably`):
    /// called before the last byte of an answer goes out, so no answered request is missing
    /// from the books after a crash.
    pub async fn finish_durably(&mut self) {
        if let Some(row) = self.finalize() {
            self.m.usage.record_durably(row).await;
        }
    }

    /// The counts an upstream reported. A report of nothing at all is no report: an answer
    /// translated into Anthropic's format must carry a usage block, and it says 0 and 0
    /// when the upstream reported none (no real request has an empty prompt).
    fn tokens(&mut self) -> Option<Tokens> {
        let reported = |tokens: &Tokens| *tokens != Tokens::default();
        let upstream = self
            .m
            .upstream
            .as_ref()
            .and_then(|tap| tap.lock().unwrap_or_else(PoisonError::into_inner).tokens())
            .filter(reported);
        upstream.or_else(|| self.m.tap.as_mut().and_then(UsageTap::tokens).filter(reported))
    }

    /// Completes the row once; `None` if it was already written.
    fn finalize(&mut self) -> Option<UsageRecord> {
        match self.m.state {
            State::Recorded => return None,
            State::Open => {
                self.m.row.outcome = "cancelled".into();
                self.m.row.status = 499;
            }
            State::Completed => {
                // A stream that ended on an error event is not an answer, whatever its status.
                if self.m.tap.as_ref().is_some_and(|t| t.error.is_some()) {
                    self.m.row.outcome = "error:stream_error".into();
                }
            }
            State::Failed => {}
        }
        self.m.state = State::Recorded;
        let tokens = match (self.m.given.take(), self.tokens(), &self.m.tap) {
            (Some((tokens, estimated)), _, _) => {
                self.m.row.tokens_estimated = estimated;
                tokens
            }
            (None, Some(tokens), _) => tokens,
            (None, None, Some(tap)) => {
                self.m.row.tokens_estimated = true;
                let per_token = if tap.bytes_seen > 0 && self.m.row.stream {
                    SSE_BYTES_PER_TOKEN
                } else {
                    BYTES_PER_TOKEN
                };
                Tokens {
                    input: self.m.request_bytes as u64 / BYTES_PER_TOKEN,
                    output: tap
                        .body_text_tokens()
                        .or(self.m.text.output_tokens())
                        .unwrap_or(tap.bytes_seen / per_token),
                    ..Tokens::default()
                }
            }
            (None, None, None) => Tokens::default(),
        };
        self.m.row.input_tokens = tokens.input;
        self.m.row.output_tokens = tokens.output;
        self.m.row.cache_read_tokens = tokens.cache_read;
        self.m.row.cache_write_5m_tokens = tokens.cache_write_5m;
        self.m.row.cache_write_1h_tokens = tokens.cache_write_1h;
        self.m.row.reasoning_tokens = tokens.reasoning;
        let total = self.m.started.elapsed();
        self.m.row.ms_total = total.as_millis() as u64;
        self.m.row.ms_to_first_byte = self.m.first_byte.map(|d| d.as_millis() as u64);
        self.price(&tokens);
        if let Some(key) = &self.m.row.api_key_id {
            self.m
                .usage
                .add_spend(key, self.m.row.at_ms, self.m.row.cost_usd, tokens.input + tokens.output);
        }
        let is_cloud = self.m.row.tier.as_deref() == Some("cloud");
        self.m.usage.metrics().observe(&RequestObservation {
            tier: self.m.row.tier.as_deref(),
            route: self.m.row.route.as_deref(),
            outcome: self.m.row.outcome_class(),
            to_first_byte: self.m.first_byte,
            total,
            input_tokens: tokens.prompt(),
            output_tokens: tokens.output,
            cost_usd: self.m.row.cost_usd,
            overflowed_to_cloud: self.m.overflow && is_cloud,
        });
        // The one log line per request: where it went and what it cost, never its text.
        tracing::info!(
            api_key = self.m.row.api_key_id.as_deref().unwrap_or("-"),
            agent = self.m.row.agent.as_deref().unwrap_or("-"),
            model = %self.m.row.model,
            tier = self.m.row.tier.as_deref().unwrap_or("-"),
            route = self.m.row.route.as_deref().unwrap_or("-"),
            status = self.m.row.status,
            outcome = %self.m.row.outcome,
            input_tokens = tokens.input,
            cache_read_tokens = tokens.cache_read,
            output_tokens = tokens.output,
            estimated = self.m.row.tokens_estimated,
            cost_usd = self.m.row.cost_usd,
            ms_to_first_byte = self.m.row.ms_to_first_byte.unwrap_or(0),
            ms_total = self.m.row.ms_total,
            "request"
        );
        // Nothing reads the row once it is recorded: it goes to the books as it is.
        Some(std::mem::take(&mut self.m.row))
    }

    /// Cloud rows cost their model's price; GPU/CLI rows are valued at a cloud model's
    /// (`equivalent::resolve`). Estimated counts are never billed as spend.
    fn price(&mut self, tokens: &Tokens) {
        let Some(tier) = self.m.row.tier.as_deref() else {
            return;
        };
        let table = self.m.usage.price_table();
        if tier == "cloud" {
            let priced = self
                .m
                .target_model
                .as_deref()
                .and_then(|m| prices::find(&table, m))
                .map_or(0.0, |p| prices::cost(p, tokens));
            if !self.m.row.tokens_estimated {
                self.m.row.cost_usd = priced;
                self.m.row.cloud_equivalent_usd = priced;
            }
            return;
        }
        let settings = self.m.usage.equivalent_table();
        let enabled_cloud = self.m.usage.enabled_cloud_models();
        let local = equivalent::Local {
            alias_cloud_model: self.m.cloud_model.as_deref(),
            worker: self.m.row.route.as_deref(),
            served: self.m.target_model.as_deref(),
            asked: &self.m.row.model,
            enabled_cloud: &enabled_cloud,
        };
        let chosen = equivalent::resolve(&settings, &table, &local);
        self.m.row.cloud_equivalent_usd = prices::find(&table, &chosen.model).map_or(0.0, |p| prices::cost(p, tokens));
        self.m.row.cloud_equivalent_model = Some(chosen.model);
        self.m.row.cloud_equivalent_source = Some(chosen.source.to_string());
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(row) = self.finalize() {
            self.m.usage.record(row);
        }
    }
}
