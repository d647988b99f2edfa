//! Usage rows (one per request, never prompt or completion text) and the price table.

use super::tables::{PRICES, USAGE};
use super::{decode, encode, Store, StoreError};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub at_ms: i64,
    pub api_key_id: Option<String>,
    pub agent: Option<String>,
    /// `gpu`, `cli`, `cloud`; `None` when the request never reached a target.
    pub tier: Option<String>,
    /// Provider or worker name.
    pub route: Option<String>,
    /// As the client asked for it (an alias, `agent:NAME`, a model).
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// No usage came back; the counts are estimated from sizes.
    pub tokens_estimated: bool,
    pub cost_usd: f64,
    /// What the same tokens would have cost on the cloud (GPU/CLI rows), for "saved".
    pub cloud_equivalent_usd: f64,
    pub ms_to_first_byte: Option<u64>,
    pub ms_total: u64,
    /// `ok`, `cancelled`, or `error:<code>`.
    pub outcome: String,
    pub status: u16,
    pub stream: bool,
}

/// USD per million tokens for a model id, or for every id starting with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceRecord {
    pub model: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// The seeded price table: public list prices (USD per million tokens) of current OpenAI and
/// Anthropic models, matched by longest prefix (`gpt-4o-2024-08-06` → `gpt-4o`). Edit via
/// `/api/prices`; documented in docs/usage.md.
pub fn default_prices() -> Vec<PriceRecord> {
    let table: &[(&str, f64, f64)] = &[
        ("gpt-5", 1.25, 10.0),
        ("gpt-5-mini", 0.25, 2.0),
        ("gpt-5-nano", 0.05, 0.4),
        ("gpt-4.1", 2.0, 8.0),
        ("gpt-4.1-mini", 0.4, 1.6),
        ("gpt-4.1-nano", 0.1, 0.4),
        ("gpt-4o", 2.5, 10.0),
        ("gpt-4o-mini", 0.15, 0.6),
        ("o1", 15.0, 60.0),
        ("o3", 2.0, 8.0),
        ("o3-mini", 1.1, 4.4),
        ("o4-mini", 1.1, 4.4),
        ("claude-opus-4", 15.0, 75.0),
        ("claude-sonnet-4", 3.0, 15.0),
        ("claude-3-7-sonnet", 3.0, 15.0),
        ("claude-3-5-sonnet", 3.0, 15.0),
        ("claude-haiku-4-5", 1.0, 5.0),
        ("claude-3-5-haiku", 0.8, 4.0),
    ];
    table
        .iter()
        .map(|(model, input, output)| PriceRecord {
            model: model.to_string(),
            input_per_mtok: *input,
            output_per_mtok: *output,
        })
        .collect()
}

impl Store {
    /// One transaction for a whole batch: the hot path never waits on an fsync.
    pub async fn insert_usage(&self, rows: Vec<(u128, UsageRecord)>) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(USAGE)?;
            for (key, row) in &rows {
                table.insert(*key, encode("usage", row)?.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    /// Rows with `from_ms <= at_ms < to_ms`, oldest first.
    pub async fn usage_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRecord>, StoreError> {
        let from = (from_ms.max(0) as u128) << 32;
        let to = (to_ms.max(0) as u128) << 32;
        self.read(move |txn| {
            let table = txn.open_table(USAGE)?;
            let mut out = Vec::new();
            for row in table.range(from..to)? {
                let (_, value) = row?;
                out.push(decode("usage", value.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// Deletes rows older than `before_ms`; returns how many.
    pub async fn prune_usage(&self, before_ms: i64) -> Result<usize, StoreError> {
        let before = (before_ms.max(0) as u128) << 32;
        self.write(move |txn| {
            let mut table = txn.open_table(USAGE)?;
            let removed = table.extract_from_if(..before, |_, _| true)?.count();
            Ok(removed)
        })
        .await
    }

    pub async fn list_prices(&self) -> Result<Vec<PriceRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(PRICES)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, value) = row?;
                out.push(decode("price", value.value())?);
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
