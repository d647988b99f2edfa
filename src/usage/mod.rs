//! What every request cost. One usage row per request, written in batches off the request
//! path (a bounded channel drained every 250 ms or 1 000 rows into one transaction); prices
//! per cloud model; what the cheap tiers saved; per-key limits; aggregates.

mod meter;
pub mod tap;

pub use meter::{Meter, MeterStart, RouteInfo};

use crate::metrics::Metrics;
use crate::store::{PriceRecord, Store, StoreError, UsageRecord};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const CHANNEL_CAPACITY: usize = 65_536;
const BATCH_ROWS: usize = 1000;
const BATCH_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0}")]
    Invalid(String),
    #[error("price not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UsageError {
    pub fn status(&self) -> u16 {
        match self {
            UsageError::Invalid(_) => 400,
            UsageError::NotFound => 404,
            UsageError::Store(e) => e.status(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            UsageError::Invalid(_) => "invalid_request",
            UsageError::NotFound => "not_found",
            UsageError::Store(_) => "internal_error",
        }
    }
}

/// An API key's limits, as its record holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyLimits {
    pub rpm: Option<u32>,
    /// Input + output tokens per minute.
    pub tpm: Option<u32>,
    pub monthly_spend_cap_usd: Option<f64>,
}

/// An API key's activity this calendar month (UTC), for the keys list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KeyMonth {
    pub spent_this_month_usd: f64,
    pub requests_this_month: u64,
    /// Unix millis of its last request since the router started or this month began.
    #[serde(skip)]
    pub last_used_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LimitExceeded {
    pub reason: &'static str,
    pub message: String,
    pub retry_after_secs: u64,
}

#[derive(Default)]
struct Limits {
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// key id → (month number, what it did in it)
    spend: Mutex<HashMap<String, (i64, KeyMonth)>>,
    /// key id → tokens used in the last minute, by when
    tokens: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
}

fn month_of(unix_ms: i64) -> (i64, i64) {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let month = i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1;
    let (year, m) = ((month + 1) / 12, (month + 1) % 12 + 1);
    let next = time::Date::from_calendar_date(
        year as i32,
        time::Month::try_from(m as u8).unwrap_or(time::Month::January),
        1,
    )
    .map(|d| d.midnight().assume_utc().unix_timestamp())
    .unwrap_or(unix_ms / 1000 + 86_400);
    (month, next)
}

pub struct Usage {
    store: Store,
    metrics: Arc<Metrics>,
    prices: RwLock<Arc<Vec<PriceRecord>>>,
    tx: Mutex<Option<mpsc::Sender<UsageRecord>>>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    dropped: AtomicU64,
    limits: Limits,
    retention: Duration,
}

impl Usage {
    pub async fn load(store: Store, metrics: Arc<Metrics>, retention: Duration) -> Result<Arc<Usage>, UsageError> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let usage = Arc::new(Usage {
            store: store.clone(),
            metrics,
            prices: RwLock::new(Arc::new(Vec::new())),
            tx: Mutex::new(Some(tx)),
            writer: tokio::sync::Mutex::new(None),
            dropped: AtomicU64::new(0),
            limits: Limits::default(),
            retention,
        });
        usage.reload_prices().await?;
        // This month's spend per key, so a cap holds across restarts.
        let now = crate::store::now_unix() * 1000;
        let (month, _) = month_of(now);
        let month_start = {
            let (year, m) = (month / 12, month % 12 + 1);
            time::Date::from_calendar_date(
                year as i32,
                time::Month::try_from(m as u8).unwrap_or(time::Month::January),
                1,
            )
            .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
            .unwrap_or(0)
        };
        let mut spend: HashMap<String, (i64, KeyMonth)> = HashMap::new();
        for row in store.usage_between(month_start, now + 1).await? {
            if let Some(key) = row.api_key_id {
                let entry = &mut spend.entry(key).or_insert((month, KeyMonth::default())).1;
                entry.spent_this_month_usd += row.cost_usd;
                entry.requests_this_month += 1;
                entry.last_used_ms = entry.last_used_ms.max(Some(row.at_ms));
            }
        }
        *usage.limits.spend.lock().unwrap_or_else(|p| p.into_inner()) = spend;
        let writer = tokio::spawn(write_batches(store, rx));
        *usage.writer.lock().await = Some(writer);
        Ok(usage)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn rows_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues a row; never waits. A full channel (the disk far behind) drops the row and
    /// counts it, rather than slowing requests.
    fn record(&self, row: UsageRecord) {
        let sent = match self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(tx) => tx.try_send(row).is_ok(),
            None => false,
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("usage row dropped: the writer is behind or stopped");
        }
    }

    /// Writes every queued row and stops the writer: the last step of a clean shutdown.
    pub async fn flush(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.await;
        }
    }

    /// Refuses the request before dispatch when its key is over a limit.
    pub fn check_limits(&self, key_id: &str, limits: KeyLimits) -> Result<(), LimitExceeded> {
        let now_ms = crate::store::now_unix() * 1000;
        if let Some(cap) = limits.monthly_spend_cap_usd {
            let (month, next_month) = month_of(now_ms);
            let spent = self
                .limits
                .spend
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key_id)
                .filter(|(m, _)| *m == month)
                .map_or(0.0, |(_, k)| k.spent_this_month_usd);
            if spent >= cap {
                self.metrics.rate_limited("spend_cap");
                return Err(LimitExceeded {
                    reason: "spend_cap",
                    message: format!("this API key reached its monthly spend cap of ${cap:.2} (spent ${spent:.4})"),
                    retry_after_secs: (next_month - now_ms / 1000).max(1) as u64,
                });
            }
        }
        if let Some(tpm) = limits.tpm {
            let mut tokens = self.limits.tokens.lock().unwrap_or_else(|p| p.into_inner());
            let window = tokens.entry(key_id.to_string()).or_default();
            let now = Instant::now();
            while window
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= Duration::from_secs(60))
            {
                window.pop_front();
            }
            let used: u64 = window.iter().map(|(_, n)| n).sum();
            if used >= u64::from(tpm) {
                let oldest = window.front().map_or(now, |(t, _)| *t);
                let wait = Duration::from_secs(60).saturating_sub(now.duration_since(oldest));
                self.metrics.rate_limited("tpm");
                return Err(LimitExceeded {
                    reason: "tpm",
                    message: format!("this API key is limited to {tpm} tokens per minute (used {used})"),
                    retry_after_secs: wait.as_secs().max(1),
                });
            }
        }
        if let Some(rpm) = limits.rpm {
            let mut windows = self.limits.windows.lock().unwrap_or_else(|p| p.into_inner());
            let window = windows.entry(key_id.to_string()).or_default();
            let now = Instant::now();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
            {
                window.pop_front();
            }
            if window.len() >= rpm as usize {
                let oldest = window.front().copied().unwrap_or(now);
                let wait = Duration::from_secs(60).saturating_sub(now.duration_since(oldest));
                self.metrics.rate_limited("rpm");
                return Err(LimitExceeded {
                    reason: "rpm",
                    message: format!("this API key is limited to {rpm} requests per minute"),
                    retry_after_secs: wait.as_secs().max(1),
                });
            }
            window.push_back(now);
        }
        Ok(())
    }

    /// Counts a finished request against its key: spend, requests, tokens per minute.
    fn add_spend(&self, key_id: &str, at_ms: i64, usd: f64, tokens: u64) {
        let (month, _) = month_of(at_ms);
        {
            let mut spend = self.limits.spend.lock().unwrap_or_else(|p| p.into_inner());
            let entry = spend.entry(key_id.to_string()).or_insert((month, KeyMonth::default()));
            if entry.0 != month {
                *entry = (month, KeyMonth::default());
            }
            entry.1.spent_this_month_usd += usd.max(0.0);
            entry.1.requests_this_month += 1;
            entry.1.last_used_ms = entry.1.last_used_ms.max(Some(at_ms));
        }
        if tokens > 0 {
            let mut windows = self.limits.tokens.lock().unwrap_or_else(|p| p.into_inner());
            let window = windows.entry(key_id.to_string()).or_default();
            let now = Instant::now();
            while window
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= Duration::from_secs(60))
            {
                window.pop_front();
            }
            window.push_back((now, tokens));
        }
    }

    /// What a key did this month (zeros when nothing yet).
    pub fn key_month(&self, key_id: &str) -> KeyMonth {
        let (month, _) = month_of(crate::store::now_unix() * 1000);
        self.limits
            .spend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key_id)
            .filter(|(m, _)| *m == month)
            .map(|(_, k)| *k)
            .unwrap_or_default()
    }

    /// USD per million tokens for `model`: exact id, else the longest matching prefix.
    pub fn price(&self, model: &str) -> Option<PriceRecord> {
        let prices = self.prices.read().unwrap_or_else(|p| p.into_inner()).clone();
        prices
            .iter()
            .filter(|p| model == p.model || model.starts_with(&p.model))
            .max_by_key(|p| p.model.len())
            .cloned()
    }

    pub fn cost(&self, model: &str, input: u64, output: u64) -> f64 {
        self.price(model).map_or(0.0, |p| {
            (input as f64 * p.input_per_mtok + output as f64 * p.output_per_mtok) / 1_000_000.0
        })
    }

    async fn reload_prices(&self) -> Result<(), UsageError> {
        let mut prices = self.store.list_prices().await?;
        prices.sort_by(|a, b| a.model.cmp(&b.model));
        *self.prices.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(prices);
        Ok(())
    }

    pub fn prices(&self) -> Vec<PriceRecord> {
        self.prices.read().unwrap_or_else(|p| p.into_inner()).as_ref().clone()
    }

    pub async fn put_price(&self, price: PriceRecord) -> Result<PriceRecord, UsageError> {
        let model = price.model.trim().to_string();
        if model.is_empty() || model.len() > 256 {
            return Err(UsageError::Invalid("model must be 1 to 256 characters".into()));
        }
        for (name, value) in [
            ("input_per_mtok", price.input_per_mtok),
            ("output_per_mtok", price.output_per_mtok),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(UsageError::Invalid(format!(
                    "{name} must be a non-negative number (USD per million tokens)"
                )));
            }
        }
        let price = PriceRecord { model, ..price };
        self.store.put_price(price.clone()).await?;
        self.reload_prices().await?;
        Ok(price)
    }

    pub async fn delete_price(&self, model: &str) -> Result<(), UsageError> {
        match self.store.delete_price(model).await {
            Err(StoreError::NotFound(_)) => return Err(UsageError::NotFound),
            other => other?,
        }
        self.reload_prices().await
    }

    /// Deletes rows past the retention period.
    pub async fn prune(&self) -> Result<usize, UsageError> {
        let cutoff = crate::store::now_unix() * 1000 - self.retention.as_millis() as i64;
        Ok(self.store.prune_usage(cutoff).await?)
    }

    pub async fn rows(&self, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRecord>, UsageError> {
        Ok(self.store.usage_between(from_ms, to_ms).await?)
    }
}

async fn write_batches(store: Store, mut rx: mpsc::Receiver<UsageRecord>) {
    let mut seq: u32 = 0;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_EVERY;
        while batch.len() < BATCH_ROWS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(row)) => batch.push(row),
                Ok(None) | Err(_) => break,
            }
        }
        let rows: Vec<(u128, UsageRecord)> = batch
            .into_iter()
            .map(|row| {
                seq = seq.wrapping_add(1);
                (((row.at_ms.max(0) as u128) << 32) | u128::from(seq), row)
            })
            .collect();
        let count = rows.len();
        if let Err(e) = store.insert_usage(rows).await {
            tracing::error!(error = %e, rows = count, "writing usage rows failed");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Tier,
    Provider,
    Model,
    ApiKey,
    Agent,
    Day,
    /// `2026-11-29/gpu`: per UTC day and tier, failed requests as `failed`, for the stacked
    /// daily chart.
    DayTier,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<GroupBy> {
        Some(match text {
            "tier" => GroupBy::Tier,
            "provider" | "route" => GroupBy::Provider,
            "model" => GroupBy::Model,
            "api_key" => GroupBy::ApiKey,
            "agent" => GroupBy::Agent,
            "day" => GroupBy::Day,
            "day_tier" => GroupBy::DayTier,
            _ => return None,
        })
    }

    fn key(self, row: &UsageRecord) -> String {
        let none = || "none".to_string();
        match self {
            GroupBy::Tier => row.tier.clone().unwrap_or_else(none),
            GroupBy::Provider => row.route.clone().unwrap_or_else(none),
            GroupBy::Model => row.model.clone(),
            GroupBy::ApiKey => row.api_key_id.clone().unwrap_or_else(none),
            GroupBy::Agent => row.agent.clone().unwrap_or_else(none),
            GroupBy::Day => crate::rfc3339(row.at_ms / 1000).chars().take(10).collect(),
            GroupBy::DayTier => {
                let day: String = crate::rfc3339(row.at_ms / 1000).chars().take(10).collect();
                let tier = if row.outcome.starts_with("error") {
                    "failed"
                } else {
                    row.tier.as_deref().unwrap_or("none")
                };
                format!("{day}/{tier}")
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub cancelled: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub cloud_equivalent_usd: f64,
    /// What the GPU/CLI tiers avoided: cloud-equivalent minus what was paid.
    pub saved_usd: f64,
}

impl Totals {
    fn add(&mut self, row: &UsageRecord) {
        self.requests += 1;
        if row.outcome.starts_with("error") {
            self.errors += 1;
        }
        if row.outcome == "cancelled" {
            self.cancelled += 1;
        }
        self.input_tokens += row.input_tokens;
        self.output_tokens += row.output_tokens;
        self.cost_usd += row.cost_usd;
        self.cloud_equivalent_usd += row.cloud_equivalent_usd;
        self.saved_usd = self.cloud_equivalent_usd - self.cost_usd;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Rows folded by `group_by`, sorted by key, and the grand total.
pub fn aggregate(rows: &[UsageRecord], group_by: GroupBy) -> (Vec<Group>, Totals) {
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for row in rows {
        groups.entry(group_by.key(row)).or_default().add(row);
        total.add(row);
    }
    let groups = groups.into_iter().map(|(key, totals)| Group { key, totals }).collect();
    (groups, total)
}

/// The groups as CSV (RFC 4180 quoting), one header line.
pub fn to_csv(groups: &[Group]) -> String {
    let mut out = String::from(
        "key,requests,errors,cancelled,input_tokens,output_tokens,cost_usd,cloud_equivalent_usd,saved_usd\n",
    );
    for g in groups {
        let t = &g.totals;
        let key = if g.key.contains([',', '"', '\n']) {
            format!("\"{}\"", g.key.replace('"', "\"\""))
        } else {
            g.key.clone()
        };
        out.push_str(&format!(
            "{key},{},{},{},{},{},{:.6},{:.6},{:.6}\n",
            t.requests,
            t.errors,
            t.cancelled,
            t.input_tokens,
            t.output_tokens,
            t.cost_usd,
            t.cloud_equivalent_usd,
            t.saved_usd
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tier: &str, model: &str, input: u64, output: u64, cost: f64, equivalent: f64, outcome: &str) -> UsageRecord {
        UsageRecord {
            at_ms: 1_700_000_000_000,
            api_key_id: Some("k1".into()),
            agent: None,
            tier: Some(tier.into()),
            route: Some(format!("{tier}-route")),
            model: model.into(),
            input_tokens: input,
            output_tokens: output,
            tokens_estimated: false,
            cost_usd: cost,
            cloud_equivalent_usd: equivalent,
            ms_to_first_byte: Some(5),
            ms_total: 10,
            outcome: outcome.into(),
            status: 200,
            stream: false,
        }
    }

    #[test]
    fn aggregates_by_tier_with_savings() {
        let rows = vec![
            row("gpu", "qwen", 100, 50, 0.0, 0.002, "ok"),
            row("gpu", "qwen", 10, 5, 0.0, 0.0002, "cancelled"),
            row("cloud", "gpt-4o", 1000, 500, 0.0075, 0.0075, "ok"),
            row("cloud", "gpt-4o", 0, 0, 0.0, 0.0, "error:upstream_error"),
        ];
        let (groups, total) = aggregate(&rows, GroupBy::Tier);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].key, "cloud");
        assert_eq!(groups[0].totals.requests, 2);
        assert_eq!(groups[0].totals.errors, 1);
        assert!((groups[0].totals.saved_usd).abs() < 1e-12);
        assert_eq!(groups[1].key, "gpu");
        assert_eq!(groups[1].totals.input_tokens, 110);
        assert_eq!(groups[1].totals.cancelled, 1);
        assert!((groups[1].totals.saved_usd - 0.0022).abs() < 1e-12);
        assert_eq!(total.requests, 4);
        assert!((total.saved_usd - 0.0022).abs() < 1e-12);
        let csv = to_csv(&groups);
        assert!(csv.starts_with("key,requests"));
        assert!(csv.contains("\ngpu,2,0,1,110,55,"));
    }

    #[test]
    fn day_tier_groups_put_failures_apart_from_their_tier() {
        let rows = vec![
            row("gpu", "qwen", 100, 50, 0.0, 0.002, "ok"),
            row("cloud", "gpt-4o", 1000, 500, 0.0075, 0.0075, "ok"),
            row("cloud", "gpt-4o", 0, 0, 0.0, 0.0, "error:upstream_error"),
        ];
        let (groups, _) = aggregate(&rows, GroupBy::DayTier);
        let keys: Vec<&str> = groups.iter().map(|g| g.key.split_once('/').unwrap().1).collect();
        assert_eq!(keys, ["cloud", "failed", "gpu"]);
        assert!(groups
            .iter()
            .all(|g| g.key.len() == "2026-11-29/".len() + g.key.split_once('/').unwrap().1.len()));
    }

    #[test]
    fn month_boundaries() {
        // 2026-11-25T00:00:00Z → next month starts 2026-12-01.
        let (_, next) = month_of(1_795_564_800_000);
        assert_eq!(crate::rfc3339(next), "2026-12-01T00:00:00Z");
        let (_, next) = month_of(1_797_811_200_000); // 2026-12-21
        assert_eq!(crate::rfc3339(next), "2027-01-01T00:00:00Z");
    }
}
