//! Usage rows (one per request, never prompt or completion text), their request-log index,
//! per-key monthly spend, and the price table.

use super::kv::Table;
use super::tables::{PRICES, USAGE, USAGE_POSTINGS, USAGE_SPEND};
use super::usage_postings::NewPostings;
use super::{decode, encode, Store, StoreError, WriteTxn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One target that was tried and failed before the one that answered (or before giving up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub tier: String,
    pub route: String,
    pub error: String,
}

/// Stored as JSON. Fields at their default (no value, zero, empty) are left out of it: a row
/// is a third smaller, and every version reads a missing one as its default (`Option`s are
/// `None` when missing; the others say `default`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The client's session (`X-Claude-Code-Session-Id` and the like), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// `gpu`, `cli`, `cloud`; `None` when the request never reached a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Provider or worker name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// As the client asked for it (an alias, `agent:NAME`, a model).
    pub model: String,
    /// The model the target ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_served: Option<String>,
    /// Prompt tokens billed at the plain input rate: cache reads and writes are apart.
    pub input_tokens: u64,
    /// Completion tokens, reasoning included.
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_5m_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_1h_tokens: u64,
    /// The part of `output_tokens` spent reasoning.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// No upstream reported counts; they are estimated from sizes (and never billed).
    pub tokens_estimated: bool,
    pub cost_usd: f64,
    /// What the same tokens would have cost on the cloud (GPU/CLI rows), for "saved".
    pub cloud_equivalent_usd: f64,
    /// The cloud model whose prices valued a GPU/CLI row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_equivalent_model: Option<String>,
    /// Why that model: `alias`, `worker`, `model`, `same_model` or `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_equivalent_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_to_first_byte: Option<u64>,
    pub ms_total: u64,
    /// Time spent waiting for capacity before the answering target was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_queue: Option<u64>,
    /// `ok`, `cancelled`, or `error:<code>`.
    pub outcome: String,
    pub status: u16,
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// The router that served it (`--router-name`): several routers share one database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// A random id given before the first attempt to write the row to PostgreSQL, so a row
    /// written again after a failure whose outcome was unknown (see `usage_once.rs`) is
    /// recognised and not counted twice. `None` on redb, whose commits do not fail that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// The request-log filters a row can be found by, each backed by `USAGE_INDEX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogField {
    Session,
    ApiKey,
    Agent,
    Model,
    Route,
    Status,
    Outcome,
    Tier,
}

impl LogField {
    /// Most selective first: the first filter given in this order drives the scan.
    pub const ALL: [LogField; 8] = [
        LogField::Session,
        LogField::ApiKey,
        LogField::Agent,
        LogField::Model,
        LogField::Route,
        LogField::Status,
        LogField::Outcome,
        LogField::Tier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LogField::Session => "session",
            LogField::ApiKey => "api_key",
            LogField::Agent => "agent",
            LogField::Model => "model",
            LogField::Route => "route",
            LogField::Status => "status",
            LogField::Outcome => "outcome",
            LogField::Tier => "tier",
        }
    }
}

/// Index values are cut here (on a char boundary), the same way for rows and filters.
const MAX_INDEXED_VALUE: usize = 256;

pub(super) fn clip(value: &str) -> &str {
    if value.len() <= MAX_INDEXED_VALUE {
        return value;
    }
    let mut end = MAX_INDEXED_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Whether `field = value` (an index key) gets index entries. A 2xx status and the `ok`
/// outcome are what nearly every row carries: an entry for them would be written with every
/// row (a third of the index's writes) and narrow nothing, since a filter on one finds its
/// rows densely by scanning rows by time. Rows written before this rule kept such entries;
/// they are removed with their rows and no query reads them.
pub fn worth_indexing(field: LogField, value: &str) -> bool {
    !match field {
        LogField::Status => value.starts_with('2'),
        LogField::Outcome => value == "ok",
        _ => false,
    }
}

/// The index key of `field = value`.
pub fn index_key(field: LogField, value: &str) -> String {
    format!("{}\0{}", field.name(), clip(value))
}

impl UsageRecord {
    /// The filters this row is indexed under (`usage_postings.rs`): its `filter_keys` but
    /// those most rows share (`worth_indexing`), hashed without building the keys.
    pub fn index_hashes(&self) -> Vec<u64> {
        let mut hashes = Vec::with_capacity(8);
        self.each_filter(|field, value| {
            if worth_indexing(field, value) {
                let hash = super::usage_postings::filter_hash(field, value);
                if !hashes.contains(&hash) {
                    hashes.push(hash);
                }
            }
        });
        hashes
    }

    /// Every `field = value` filter this row matches, as index keys. A model matches what
    /// was asked and what ran; an outcome matches its class (`error`) and its exact value
    /// (`error:timeout`).
    pub fn filter_keys(&self) -> Vec<String> {
        let mut keys = Vec::with_capacity(10);
        self.each_filter(|field, value| {
            let key = index_key(field, value);
            if !keys.contains(&key) {
                keys.push(key);
            }
        });
        keys
    }

    /// Calls `visit` with every `field = value` filter this row matches (a value may come
    /// twice: a model asked and served under one name).
    fn each_filter(&self, mut visit: impl FnMut(LogField, &str)) {
        let mut some = |field: LogField, value: Option<&str>| {
            if let Some(value) = value {
                visit(field, value);
            }
        };
        some(LogField::Session, self.session.as_deref());
        some(LogField::ApiKey, self.api_key_id.as_deref());
        some(LogField::Agent, self.agent.as_deref());
        some(LogField::Model, Some(&self.model));
        some(LogField::Model, self.model_served.as_deref());
        some(LogField::Route, self.route.as_deref());
        some(LogField::Status, Some(itoa::Buffer::new().format(self.status)));
        some(LogField::Outcome, Some(self.outcome_class()));
        some(LogField::Outcome, Some(&self.outcome));
        some(LogField::Tier, self.tier.as_deref());
    }

    /// `ok`, `error` or `cancelled`.
    pub fn outcome_class(&self) -> &str {
        if self.outcome.starts_with("error") {
            "error"
        } else {
            &self.outcome
        }
    }
}

/// `(year * 12 + month - 1)` of a unix-millis time: the key of a month's spend.
pub fn month_number(unix_ms: i64) -> i64 {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1
}

/// The usage key of a row: its time in the high bits, a sequence number below, so a period
/// is one range and the log reads newest first.
pub fn usage_key(at_ms: i64, seq: u32) -> u128 {
    ((at_ms.max(0) as u128) << 32) | u128::from(seq)
}

pub fn key_time_ms(key: u128) -> i64 {
    (key >> 32) as i64
}

/// USD per million tokens for a model id, or for every id starting with it. The cache and
/// reasoning rates are optional: a missing one falls back to the input (cache) or output
/// (reasoning) rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceRecord {
    pub model: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_5m_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_per_mtok: Option<f64>,
}

/// The seeded price table: public list prices (USD per million tokens, as published by
/// OpenAI and Anthropic in 2025) of current models, matched by longest prefix
/// (`gpt-4o-2024-08-06` → `gpt-4o`). OpenAI bills cached input at its own rate and has no
/// cache-write charge; Anthropic bills cache reads at 0.1×, 5-minute writes at 1.25× and
/// 1-hour writes at 2× the input rate. Edit via `/api/prices`; documented in docs/usage.md.
pub fn default_prices() -> Vec<PriceRecord> {
    // (model, input, cached input, output)
    let openai: &[(&str, f64, f64, f64)] = &[
        ("gpt-5", 1.25, 0.125, 10.0),
        ("gpt-5-mini", 0.25, 0.025, 2.0),
        ("gpt-5-nano", 0.05, 0.005, 0.4),
        ("gpt-4.1", 2.0, 0.5, 8.0),
        ("gpt-4.1-mini", 0.4, 0.1, 1.6),
        ("gpt-4.1-nano", 0.1, 0.025, 0.4),
        ("gpt-4o", 2.5, 1.25, 10.0),
        ("gpt-4o-mini", 0.15, 0.075, 0.6),
        ("o1", 15.0, 7.5, 60.0),
        ("o3", 2.0, 0.5, 8.0),
        ("o3-mini", 1.1, 0.55, 4.4),
        ("o4-mini", 1.1, 0.275, 4.4),
    ];
    // (model, input, output)
    let anthropic: &[(&str, f64, f64)] = &[
        ("claude-opus-4", 15.0, 75.0),
        ("claude-opus-4-5", 5.0, 25.0),
        ("claude-sonnet-4", 3.0, 15.0),
        ("claude-3-7-sonnet", 3.0, 15.0),
        ("claude-3-5-sonnet", 3.0, 15.0),
        ("claude-haiku-4-5", 1.0, 5.0),
        ("claude-3-5-haiku", 0.8, 4.0),
    ];
    let round = |usd: f64| (usd * 1e6).round() / 1e6;
    let openai = openai.iter().map(|(model, input, cached, output)| PriceRecord {
        model: model.to_string(),
        input_per_mtok: *input,
        output_per_mtok: *output,
        cache_read_per_mtok: Some(*cached),
        cache_write_5m_per_mtok: Some(*input),
        cache_write_1h_per_mtok: Some(*input),
        reasoning_per_mtok: Some(*output),
    });
    let anthropic = anthropic.iter().map(|(model, input, output)| PriceRecord {
        model: model.to_string(),
        input_per_mtok: *input,
        output_per_mtok: *output,
        cache_read_per_mtok: Some(round(input * 0.1)),
        cache_write_5m_per_mtok: Some(round(input * 1.25)),
        cache_write_1h_per_mtok: Some(round(input * 2.0)),
        reasoning_per_mtok: Some(*output),
    });
    openai.chain(anthropic).collect()
}

/// Schema 4 → 5: the seeded prices gain their cache and reasoning rates (an operator's own
/// input/output prices are kept), the request-log index and the spend table are built.
pub(super) fn migrate_to_v5(txn: &WriteTxn<'_>) -> Result<(), StoreError> {
    let mut prices = txn.open_table(PRICES)?;
    for seed in default_prices() {
        let stored: Option<PriceRecord> = match prices.get(seed.model.as_str())? {
            Some(row) => Some(decode("price", &row)?),
            None => None,
        };
        let price = match stored {
            Some(stored) if stored.cache_read_per_mtok.is_some() => continue,
            Some(stored) if stored.input_per_mtok == seed.input_per_mtok => PriceRecord {
                output_per_mtok: stored.output_per_mtok,
                ..seed
            },
            // The operator changed the input price: keep it, and leave cache rates to
            // fall back to it rather than guess.
            Some(_) => continue,
            None => seed,
        };
        prices.insert(price.model.as_str(), encode("price", &price)?.as_slice())?;
    }
    drop(prices);
    let usage = txn.open_table(USAGE)?;
    let mut spend = txn.open_table(USAGE_SPEND)?;
    for entry in usage.iter()? {
        let (_, value) = entry?;
        let row: UsageRecord = decode("usage", &value)?;
        let mut one = NewSpend::default();
        one.add(&row);
        one.write(&mut spend)?;
    }
    Ok(())
}

/// The step to schema 6: the request-log index of every stored row, written a few thousand
/// rows at a time (keys come in order, so the chunks of one step never overlap the next),
/// each step sent on at once on PostgreSQL rather than held to the commit.
pub(super) fn index_every_row(txn: &WriteTxn<'_>) -> Result<(), StoreError> {
    const ROWS_PER_STEP: usize = 8_192;
    let usage = txn.open_table(USAGE)?;
    let rows = usage.len()?;
    if rows > 0 {
        // This start takes longer than usual, in proportion to the rows kept: say why.
        tracing::info!(
            rows,
            "rebuilding the request-log index of the stored usage rows (schema 6)"
        );
    }
    let started = std::time::Instant::now();
    let mut postings = txn.open_table(USAGE_POSTINGS)?;
    let mut batch = NewPostings::default();
    for (i, entry) in usage.iter()?.enumerate() {
        let (key, value) = entry?;
        batch.add(key, &decode("usage", &value)?);
        if (i + 1) % ROWS_PER_STEP == 0 {
            std::mem::take(&mut batch).write(&mut postings)?;
            postings.send_pending()?;
        }
    }
    batch.write(&mut postings)?;
    if rows > 0 {
        tracing::info!(
            rows,
            ms = started.elapsed().as_millis() as u64,
            "request-log index rebuilt"
        );
    }
    Ok(())
}

pub(super) type SpendTable<'t> = Table<'t, (&'static str, i64), f64>;

/// The spend a batch of rows adds, per API key and month: each stored total is read and
/// written once per batch rather than once per row (two B-tree walks a row otherwise). The
/// costs are added to the stored total one by one, in row order, so the total is the same
/// to the last bit as when each row was added on its own.
#[derive(Debug, Default)]
pub(super) struct NewSpend<'r> {
    by_month: BTreeMap<(&'r str, i64), Vec<f64>>,
}

impl<'r> NewSpend<'r> {
    pub fn add(&mut self, row: &'r UsageRecord) {
        let Some(key_id) = row.api_key_id.as_deref() else {
            return;
        };
        if row.cost_usd <= 0.0 {
            return;
        }
        self.by_month
            .entry((key_id, month_number(row.at_ms)))
            .or_default()
            .push(row.cost_usd);
    }

    pub fn write(self, spend: &mut SpendTable<'_>) -> Result<(), StoreError> {
        for (key, costs) in self.by_month {
            let before = spend.get(key)?.unwrap_or(0.0);
            spend.insert(key, costs.into_iter().fold(before, |total, cost| total + cost))?;
        }
        Ok(())
    }
}

impl Store {
    /// One transaction (one fsync) for a whole batch of rows, their index entries and the
    /// spend they add. Keys are `usage_key(at_ms, seq)`, `seq` counting up from `next_seq`
    /// past any key already taken; returns the next free sequence number.
    pub async fn insert_usage(&self, rows: Vec<UsageRecord>, next_seq: u32) -> Result<u32, StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(USAGE)?;
            let mut spend = txn.open_table(USAGE_SPEND)?;
            let mut postings = NewPostings::default();
            let mut added = NewSpend::default();
            let mut seq = next_seq;
            for row in &rows {
                let mut key = usage_key(row.at_ms, seq);
                while table.contains(key)? {
                    seq = seq.wrapping_add(1);
                    key = usage_key(row.at_ms, seq);
                }
                seq = seq.wrapping_add(1);
                table.insert(key, encode("usage", row)?.as_slice())?;
                postings.add(key, row);
                added.add(row);
            }
            added.write(&mut spend)?;
            postings.write(&mut txn.open_table(USAGE_POSTINGS)?)?;
            Ok(seq)
        })
        .await
    }

    /// Rows with `from_ms <= at_ms < to_ms`, oldest first.
    pub async fn usage_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRecord>, StoreError> {
        let from = usage_key(from_ms, 0);
        let to = usage_key(to_ms, 0);
        if from >= to {
            return Ok(Vec::new());
        }
        self.read(move |txn| {
            let table = txn.open_table(USAGE)?;
            let mut out = Vec::new();
            for row in table.range(from, to, false)? {
                let (_, value) = row?;
                out.push(decode("usage", &value)?);
            }
            Ok(out)
        })
        .await
    }

    /// What each API key spent in `month` (see `month_number`).
    pub async fn spend_in_month(&self, month: i64) -> Result<Vec<(String, f64)>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(USAGE_SPEND)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let ((key_id, m), value) = entry?;
                if m == month {
                    out.push((key_id, value));
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn usage_row_count(&self) -> Result<u64, StoreError> {
        self.read(|txn| txn.open_table(USAGE)?.len()).await
    }

    pub async fn list_prices(&self) -> Result<Vec<PriceRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(PRICES)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, value) = row?;
                out.push(decode("price", &value)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn put_price(&self, price: PriceRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.open_table(PRICES)?
                .insert(price.model.as_str(), encode("price", &price)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn delete_price(&self, model: &str) -> Result<(), StoreError> {
        let model = model.to_string();
        self.write(move |txn| match txn.open_table(PRICES)?.remove(model.as_str())? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound("price")),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch adds to each key's monthly total exactly what its rows added one at a time:
    /// same bits, across keys, months and rows of no key or no cost.
    #[test]
    fn a_batch_adds_the_same_spend_to_the_bit_as_its_rows_one_by_one() {
        let costs = [0.1, 0.2, 0.3, 1e-7, 0.7, 0.0, 3.3e-5, 0.1];
        let rows: Vec<UsageRecord> = (0..40)
            .map(|i| UsageRecord {
                // Two months: rows 0-19 in one, 20-39 in the next.
                at_ms: 1_700_000_000_000 + if i < 20 { i } else { 40 * 86_400_000 + i },
                api_key_id: (i % 5 != 4).then(|| format!("key-{}", i % 3)),
                cost_usd: costs[i as usize % costs.len()],
                ..Default::default()
            })
            .collect();
        let months = [month_number(rows[0].at_ms), month_number(rows[39].at_ms)];
        assert_ne!(months[0], months[1]);
        let spent = |one_by_one: bool| {
            let (_dir, store, runtime) = crate::store::scratch_store();
            runtime.block_on(async {
                // A stored total the batch adds to.
                store.insert_usage(vec![rows[1].clone()], 0).await.unwrap();
                if one_by_one {
                    for (i, row) in rows.iter().enumerate() {
                        store.insert_usage(vec![row.clone()], 1 + i as u32).await.unwrap();
                    }
                } else {
                    store.insert_usage(rows.clone(), 1).await.unwrap();
                }
                let mut all = Vec::new();
                for month in months {
                    let mut spent = store.spend_in_month(month).await.unwrap();
                    spent.sort_by(|a, b| a.0.cmp(&b.0));
                    all.extend(spent.into_iter().map(|(key, usd)| (month, key, usd.to_bits())));
                }
                all
            })
        };
        let batched = spent(false);
        assert_eq!(batched.len(), 6, "three keys in each of two months: {batched:?}");
        assert_eq!(batched, spent(true));
    }

    #[test]
    fn a_row_is_stored_without_its_default_fields_and_reads_back_the_same() {
        let plain = UsageRecord {
            at_ms: 1_700_000_000_000,
            model: "gpt-4o".into(),
            input_tokens: 3,
            outcome: "ok".into(),
            status: 200,
            ..UsageRecord::default()
        };
        let stored = String::from_utf8(encode("usage", &plain).unwrap()).unwrap();
        assert_eq!(
            stored,
            r#"{"at_ms":1700000000000,"model":"gpt-4o","input_tokens":3,"output_tokens":0,"tokens_estimated":false,"cost_usd":0.0,"cloud_equivalent_usd":0.0,"ms_total":0,"outcome":"ok","status":200,"stream":false}"#
        );
        assert_eq!(decode::<UsageRecord>("usage", stored.as_bytes()).unwrap(), plain);
        let full = UsageRecord {
            api_key_id: Some("k1".into()),
            agent: Some("coder".into()),
            session: Some("s1".into()),
            tier: Some("gpu".into()),
            route: Some("box".into()),
            model_served: Some("qwen".into()),
            cache_read_tokens: 1,
            cache_write_5m_tokens: 2,
            cache_write_1h_tokens: 3,
            reasoning_tokens: 4,
            cloud_equivalent_model: Some("gpt-4o".into()),
            cloud_equivalent_source: Some("model".into()),
            ms_to_first_byte: Some(5),
            ms_queue: Some(6),
            attempts: vec![Attempt {
                tier: "cloud".into(),
                route: "openai".into(),
                error: "timeout".into(),
            }],
            router: Some("r1".into()),
            id: Some(7),
            ..plain.clone()
        };
        assert_eq!(
            decode::<UsageRecord>("usage", &encode("usage", &full).unwrap()).unwrap(),
            full
        );
        // A row as earlier versions stored it, every field written out.
        let earlier = r#"{"at_ms":1700000000000,"api_key_id":null,"agent":null,"session":null,"tier":null,"route":null,"model":"gpt-4o","model_served":null,"input_tokens":3,"output_tokens":0,"cache_read_tokens":0,"cache_write_5m_tokens":0,"cache_write_1h_tokens":0,"reasoning_tokens":0,"tokens_estimated":false,"cost_usd":0.0,"cloud_equivalent_usd":0.0,"cloud_equivalent_model":null,"cloud_equivalent_source":null,"ms_to_first_byte":null,"ms_total":0,"ms_queue":null,"outcome":"ok","status":200,"stream":false,"attempts":[]}"#;
        assert_eq!(decode::<UsageRecord>("usage", earlier.as_bytes()).unwrap(), plain);
    }

    /// A row of key `k1` to model `gpt-4o` on route `main` of the cloud tier.
    fn record(outcome: &str, status: u16) -> UsageRecord {
        UsageRecord {
            at_ms: 1,
            api_key_id: Some("k1".into()),
            tier: Some("cloud".into()),
            route: Some("main".into()),
            model: "gpt-4o".into(),
            outcome: outcome.into(),
            status,
            ..Default::default()
        }
    }

    #[test]
    fn a_row_is_indexed_under_both_models_and_both_outcome_forms_once() {
        let mut row = record("error:timeout", 504);
        row.session = Some("s1".into());
        row.tier = Some("gpu".into());
        row.route = Some("box".into());
        row.model = "auto".into();
        row.model_served = Some("auto".into());
        let hashes = row.index_hashes();
        let hash = super::super::usage_postings::filter_hash;
        assert_eq!(
            hashes,
            vec![
                hash(LogField::Session, "s1"),
                hash(LogField::ApiKey, "k1"),
                hash(LogField::Model, "auto"),
                hash(LogField::Route, "box"),
                hash(LogField::Status, "504"),
                hash(LogField::Outcome, "error"),
                hash(LogField::Outcome, "error:timeout"),
                hash(LogField::Tier, "gpu"),
            ]
        );
    }

    #[test]
    fn a_2xx_status_and_the_ok_outcome_are_matched_but_not_indexed() {
        let mut row = record("ok", 200);
        let filters = row.filter_keys();
        assert!(filters.contains(&"status\u{0}200".to_string()));
        assert!(filters.contains(&"outcome\u{0}ok".to_string()));
        let hash = super::super::usage_postings::filter_hash;
        assert_eq!(
            row.index_hashes(),
            vec![
                hash(LogField::ApiKey, "k1"),
                hash(LogField::Model, "gpt-4o"),
                hash(LogField::Route, "main"),
                hash(LogField::Tier, "cloud"),
            ]
        );
        row.status = 429;
        row.outcome = "cancelled".into();
        assert!(row.index_hashes().contains(&hash(LogField::Status, "429")));
        assert!(row.index_hashes().contains(&hash(LogField::Outcome, "cancelled")));
        assert!(worth_indexing(LogField::Status, "502") && !worth_indexing(LogField::Status, "204"));
    }

    #[test]
    fn long_values_are_clipped_on_a_char_boundary() {
        let long = "é".repeat(300);
        let key = index_key(LogField::Model, &long);
        assert!(key.len() <= "model\0".len() + MAX_INDEXED_VALUE);
        assert_eq!(index_key(LogField::Model, &long), key);
    }

    #[test]
    fn months_number_consecutively_across_a_year() {
        let dec = month_number(1_733_011_200_000); // 2024-12-01
        let jan = month_number(1_735_689_600_000); // 2025-01-01
        assert_eq!(jan, dec + 1);
    }
}
