//! The request log (newest first, cursor-paginated, filtered through `USAGE_POSTINGS`),
//! incremental pruning, and the daily rollups that keep pruned ranges countable.

use super::tables::{META, META_USAGE_PRUNED_BEFORE, USAGE, USAGE_DAILY, USAGE_POSTINGS};
use super::usage::{index_key, key_time_ms, usage_key, worth_indexing, LogField, UsageRecord};
use super::usage_postings::{filter_hash, newest_first, remove_through};
use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};

/// One page of the log: `before` (exclusive) is the cursor of the previous page.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub before: Option<u128>,
    pub filters: Vec<(LogField, String)>,
    pub limit: usize,
    /// Rows looked at before a sparse filter gives up on filling the page; the page then
    /// ends early with a cursor to go on from.
    pub max_scan: usize,
}

#[derive(Debug, Clone, Default)]
pub struct LogPage {
    pub rows: Vec<(u128, UsageRecord)>,
    /// Where the next page starts; `None` when nothing older matches.
    pub next: Option<u128>,
}

/// Sums of a day's pruned rows for one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    pub requests: u64,
    pub errors: u64,
    pub cancelled: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_5m_tokens: u64,
    #[serde(default)]
    pub cache_write_1h_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
    pub cost_usd: f64,
    pub cloud_equivalent_usd: f64,
}

impl Rollup {
    pub fn add(&mut self, row: &UsageRecord) {
        self.requests += 1;
        match row.outcome_class() {
            "error" => self.errors += 1,
            "cancelled" => self.cancelled += 1,
            _ => {}
        }
        self.input_tokens += row.input_tokens;
        self.output_tokens += row.output_tokens;
        self.cache_read_tokens += row.cache_read_tokens;
        self.cache_write_5m_tokens += row.cache_write_5m_tokens;
        self.cache_write_1h_tokens += row.cache_write_1h_tokens;
        self.reasoning_tokens += row.reasoning_tokens;
        self.cost_usd += row.cost_usd;
        self.cloud_equivalent_usd += row.cloud_equivalent_usd;
    }

    pub fn merge(&mut self, other: &Rollup) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.cancelled += other.cancelled;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_5m_tokens += other.cache_write_5m_tokens;
        self.cache_write_1h_tokens += other.cache_write_1h_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cost_usd += other.cost_usd;
        self.cloud_equivalent_usd += other.cloud_equivalent_usd;
    }
}

/// What a rollup is grouped by: every dimension `/api/usage` can group on besides the day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RollupGroup {
    pub tier: Option<String>,
    pub route: Option<String>,
    pub model: String,
    pub api_key_id: Option<String>,
    pub agent: Option<String>,
}

impl RollupGroup {
    fn of(row: &UsageRecord) -> RollupGroup {
        RollupGroup {
            tier: row.tier.clone(),
            route: row.route.clone(),
            model: row.model.clone(),
            api_key_id: row.api_key_id.clone(),
            agent: row.agent.clone(),
        }
    }
}

/// A pruned day's totals for one group.
#[derive(Debug, Clone)]
pub struct DailyRollup {
    pub day_ms: i64,
    pub group: RollupGroup,
    pub totals: Rollup,
}

const DAY_MS: i64 = 86_400_000;

/// What one prune step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    /// More rows are due: call again (after letting other writers in).
    pub more: bool,
}

impl Store {
    /// One page of the request log. Without filters: a reverse range over the rows. With
    /// filters: a reverse range over the most selective filter's index, each row checked
    /// against the others.
    pub async fn request_log(&self, query: LogQuery) -> Result<LogPage, StoreError> {
        self.read(move |txn| {
            let rows = txn.open_table(USAGE)?;
            let lower = usage_key(query.from_ms, 0);
            let mut upper = usage_key(query.to_ms, 0);
            if let Some(before) = query.before {
                upper = upper.min(before);
            }
            let mut page = LogPage::default();
            if lower >= upper || query.limit == 0 {
                return Ok(page);
            }
            let wanted: Vec<String> = query.filters.iter().map(|(f, v)| index_key(*f, v)).collect();
            let driver = LogField::ALL
                .iter()
                .flat_map(|field| query.filters.iter().filter(move |(f, _)| f == field))
                .find(|(f, v)| worth_indexing(*f, v))
                .map(|(f, v)| filter_hash(*f, v));
            let mut scanned = 0usize;
            let mut take = |key: u128, row: UsageRecord, page: &mut LogPage| -> bool {
                scanned += 1;
                let keys = row.filter_keys();
                if wanted.iter().all(|w| keys.contains(w)) {
                    if page.rows.len() == query.limit {
                        // One more match exists beyond the page.
                        page.next = page.rows.last().map(|(k, _)| *k);
                        return false;
                    }
                    page.rows.push((key, row));
                }
                if scanned >= query.max_scan.max(query.limit) {
                    page.next = Some(key);
                    return false;
                }
                true
            };
            match driver {
                None => {
                    for entry in rows.range(lower, upper, true)? {
                        let (key, value) = entry?;
                        let row: UsageRecord = decode("usage", &value)?;
                        if !take(key, row, &mut page) {
                            break;
                        }
                    }
                }
                Some(driver) => {
                    let postings = txn.open_table(USAGE_POSTINGS)?;
                    for id in newest_first(&postings, driver, lower, upper)? {
                        let id = id?;
                        let Some(value) = rows.get(id)? else { continue };
                        let row: UsageRecord = decode("usage", &value)?;
                        if !take(id, row, &mut page) {
                            break;
                        }
                    }
                }
            }
            Ok(page)
        })
        .await
    }

    /// Removes up to `batch` of the oldest rows that are older than `before_ms` or beyond
    /// the newest `max_rows`, in one short transaction, folding each into its day's rollup.
    pub async fn prune_usage_step(&self, before_ms: i64, max_rows: u64, batch: usize) -> Result<Pruned, StoreError> {
        self.write(move |txn| {
            let mut rows = txn.open_table(USAGE)?;
            let mut daily = txn.open_table(USAGE_DAILY)?;
            let total = rows.len()?;
            let over_cap = total.saturating_sub(max_rows) as usize;
            let cutoff = usage_key(before_ms, 0);
            let mut doomed: Vec<(u128, UsageRecord)> = Vec::new();
            for (i, entry) in rows.iter()?.enumerate() {
                let (key, value) = entry?;
                if (key >= cutoff && i >= over_cap) || doomed.len() >= batch {
                    break;
                }
                doomed.push((key, decode("usage", &value)?));
            }
            let more = doomed.len() >= batch;
            let mut sums: std::collections::BTreeMap<(i64, String), Rollup> = std::collections::BTreeMap::new();
            let mut newest = None;
            let mut filters = std::collections::BTreeSet::new();
            for (key, row) in &doomed {
                rows.remove(*key)?;
                filters.extend(row.index_hashes());
                let day = key_time_ms(*key).div_euclid(DAY_MS) * DAY_MS;
                let group = encode("rollup group", &RollupGroup::of(row))?;
                let group = String::from_utf8(group).map_err(|e| StoreError::Corrupt("rollup group", e.to_string()))?;
                sums.entry((day, group)).or_default().add(row);
                newest = Some(key_time_ms(*key));
            }
            for ((day, group), sum) in sums {
                let mut total: Rollup = match daily.get((day, group.as_str()))? {
                    Some(value) => decode("rollup", &value)?,
                    None => Rollup::default(),
                };
                total.merge(&sum);
                daily.insert((day, group.as_str()), encode("rollup", &total)?.as_slice())?;
            }
            if let Some((through, _)) = doomed.last() {
                remove_through(&mut txn.open_table(USAGE_POSTINGS)?, &filters, *through)?;
            }
            if let Some(newest) = newest {
                let mut meta = txn.open_table(META)?;
                let before = meta
                    .get(META_USAGE_PRUNED_BEFORE)?
                    .and_then(|v| v.as_slice().try_into().ok().map(i64::from_be_bytes))
                    .unwrap_or(i64::MIN);
                let now = before.max(newest + 1);
                meta.insert(META_USAGE_PRUNED_BEFORE, now.to_be_bytes().as_slice())?;
            }
            Ok(Pruned {
                removed: doomed.len(),
                more,
            })
        })
        .await
    }

    /// What one usage row takes on disk, measured over the `sample` oldest rows: its key and
    /// encoded value, and each of its index entries, times what the file holds beyond its
    /// entries. `None` when there are no rows.
    pub async fn usage_bytes_per_row(&self, sample: usize) -> Result<Option<u64>, StoreError> {
        /// A redb entry's own bookkeeping beside its key and value.
        const ENTRY_OVERHEAD: u64 = 8;
        /// Partly filled B-tree pages and the pages copy-on-write leaves free: calibrated
        /// with bench/request_log.rs, where the file took 2.0–3.2 times the entries' bytes
        /// (1.35 KB a row at 200,000 rows; 2.2 KB at 1,000,000, just after redb doubled the
        /// file).
        const FILE_PER_ENTRY_BYTES_PERCENT: u64 = 300;
        self.read(move |txn| {
            let rows = txn.open_table(USAGE)?;
            let mut bytes = 0u64;
            let mut seen = 0u64;
            for entry in rows.iter()?.take(sample) {
                let (_, value) = entry?;
                let row: UsageRecord = decode("usage", &value)?;
                bytes += 16 + value.len() as u64 + ENTRY_OVERHEAD;
                // A key in a chunk of the index: the chunk's own key and bookkeeping are
                // shared by the batch.
                bytes += row.index_hashes().len() as u64 * 16;
                seen += 1;
            }
            Ok((seen > 0).then(|| (bytes / seen) * FILE_PER_ENTRY_BYTES_PERCENT / 100))
        })
        .await
    }

    /// The rollups of pruned rows for every day overlapping `from_ms..to_ms`.
    pub async fn daily_rollups(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DailyRollup>, StoreError> {
        let first_day = from_ms.div_euclid(DAY_MS) * DAY_MS;
        self.read(move |txn| {
            let table = txn.open_table(USAGE_DAILY)?;
            let mut out = Vec::new();
            for entry in table.range((first_day, ""), (to_ms, ""), false)? {
                let ((day_ms, group), value) = entry?;
                out.push(DailyRollup {
                    day_ms,
                    group: decode("rollup group", group.as_bytes())?,
                    totals: decode("rollup", &value)?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Unix millis before which rows were pruned, if any were.
    pub async fn usage_pruned_before(&self) -> Result<Option<i64>, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(META)?;
            let value = meta.get(META_USAGE_PRUNED_BEFORE)?;
            Ok(value.and_then(|v| v.as_slice().try_into().ok().map(i64::from_be_bytes)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u64) -> UsageRecord {
        UsageRecord {
            at_ms: 1_767_225_600_000 + i as i64,
            api_key_id: Some(format!("key-{}", i % 20)),
            session: Some(format!("session-{}", i / 50)),
            tier: Some("gpu".into()),
            route: Some("box-1".into()),
            model: "auto".into(),
            model_served: Some("qwen3-8b".into()),
            input_tokens: 1000,
            output_tokens: 200,
            cloud_equivalent_usd: 0.001,
            cloud_equivalent_model: Some("gpt-4o-mini".into()),
            cloud_equivalent_source: Some("builtin_default".into()),
            ms_to_first_byte: Some(120),
            ms_total: 900,
            ms_queue: Some(0),
            outcome: "ok".into(),
            status: 200,
            stream: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_size_cap_prunes_to_what_fits_and_the_totals_survive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.initialize(None, None).unwrap();
        let file = dir.path().join("auxot.redb");
        let empty = std::fs::metadata(&file).unwrap().len();
        assert_eq!(store.usage_bytes_per_row(256).await.unwrap(), None);
        let rows = 4_000;
        store.insert_usage((0..rows).map(row).collect(), 0).await.unwrap();
        let per_row = store.usage_bytes_per_row(256).await.unwrap().unwrap();
        // The measure is near what the file grew by per row (redb grows in whole regions).
        let grown = (std::fs::metadata(&file).unwrap().len() - empty) / rows;
        assert!(
            per_row * 3 >= grown && per_row <= grown * 3,
            "measured {per_row} bytes a row, the file grew {grown} a row"
        );
        let retention = crate::usage::Retention {
            max_age: std::time::Duration::from_secs(86_400 * 365 * 100),
            max_rows: 1_000_000,
            max_bytes: Some(per_row * 1_000),
        };
        let cap = retention.row_cap(Some(per_row));
        assert_eq!(cap, 1_000);
        let mut removed = 0;
        loop {
            let step = store.prune_usage_step(0, cap, 700).await.unwrap();
            removed += step.removed;
            if !step.more {
                break;
            }
        }
        assert_eq!(removed as u64, rows - 1_000);
        let rollups = store.daily_rollups(0, i64::MAX / 4).await.unwrap();
        let pruned: u64 = rollups.iter().map(|d| d.totals.requests).sum();
        assert_eq!(pruned, rows - 1_000, "every pruned row is in a daily rollup");
        assert!(store.usage_pruned_before().await.unwrap().is_some());
    }

    #[tokio::test]
    async fn pruning_every_row_leaves_no_index_chunk_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.initialize(None, None).unwrap();
        store.insert_usage((0..10).map(row).collect(), 0).await.unwrap();
        store.insert_usage((10..30).map(row).collect(), 100).await.unwrap();
        let chunks = || store.read(|txn| txn.open_table(USAGE_POSTINGS)?.len());
        assert!(chunks().await.unwrap() > 0);
        let step = store.prune_usage_step(i64::MAX / 4, 1_000_000, 100).await.unwrap();
        assert_eq!(step.removed, 30);
        assert_eq!(chunks().await.unwrap(), 0, "index chunks outlived their rows");
    }

    #[test]
    fn the_step_to_schema_6_indexes_every_row_and_drops_the_old_index() {
        use crate::store::tables::{LEGACY_USAGE_INDEX, META_SCHEMA_VERSION, SCHEMA_VERSION};
        let (dir, store, runtime) = crate::store::scratch_store();
        runtime.block_on(async {
            store.insert_usage((0..20_000).map(row).collect(), 0).await.unwrap();
            // What schema 5 left: the same rows, an entry per row and filter, no chunks.
            store
                .write(|txn| {
                    txn.drop_table(USAGE_POSTINGS)?;
                    let mut legacy = txn.open_table(LEGACY_USAGE_INDEX)?;
                    legacy.insert(("tier\0gpu", 1), ())?;
                    txn.open_table(META)?
                        .insert(META_SCHEMA_VERSION, 5u32.to_be_bytes().as_slice())?;
                    Ok(())
                })
                .await
                .unwrap();
        });
        let store = {
            drop(store);
            Store::open(dir.path()).unwrap()
        };
        store.initialize(None, None).unwrap();
        assert_eq!(store.key_state().unwrap().schema_version, Some(SCHEMA_VERSION));
        runtime.block_on(async {
            let page = store
                .request_log(LogQuery {
                    from_ms: 0,
                    to_ms: i64::MAX / 4,
                    filters: vec![(LogField::Session, "session-7".into())],
                    limit: 100,
                    max_scan: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            let times: Vec<i64> = page.rows.iter().map(|(_, r)| r.at_ms - row(0).at_ms).collect();
            assert_eq!(times, (350..400).rev().collect::<Vec<_>>());
            let legacy_left = store
                .read(|txn| match txn {
                    crate::store::ReadTxn::Redb(txn) => {
                        Ok(txn.list_tables()?.any(|t| redb::TableHandle::name(&t) == "usage_index"))
                    }
                    crate::store::ReadTxn::Pg(_) => unreachable!(),
                })
                .await
                .unwrap();
            assert!(!legacy_left, "the old index table is gone");
        });
    }
}
