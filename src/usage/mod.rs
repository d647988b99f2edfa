//! What every request cost. One usage row per request, safe from a crash before an answer's
//! last byte goes out and committed in groups by a writer task: on redb the row is appended to
//! the journal (`journal.rs`) and committed just after; on PostgreSQL the answer waits for the
//! commit, or for a local disk buffer while the database is unreachable (written to it once
//! back). Prices per cloud model, cache and reasoning tokens included; what the cheap tiers
//! saved; per-key limits; aggregates; the request log; retention with daily rollups.

mod aggregate;
pub mod buffer;
pub mod equivalent;
pub mod estimate;
mod fleet_rate;
mod journal;
mod limits;
mod meter;
pub mod prices;
mod records;
pub mod tap;
mod writer;

/// Limits live with the key's record; re-exported for the limit checks here.
pub use crate::store::KeyLimits;
pub use aggregate::{aggregate, latency, latency_by_day, to_csv, DayLatency, Group, GroupBy, Latency, Totals};
pub use limits::{KeyMonth, LimitExceeded};
pub use meter::{Meter, MeterStart, RouteInfo};
pub use writer::BacklogStatus;

use limits::Limits;

use crate::edits::Edits;
use crate::metrics::Metrics;
use crate::store::{
    month_number, usage_key, DailyRollup, EquivalentSettings, LogPage, LogQuery, PlacedUsage, PriceRecord, Store,
    StoreError, UsageRecord,
};
use journal::Journal;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use writer::{Backlog, Job, Settle, Writer};

/// Commits the rows a crashed router left in `data_dir`'s usage journal into `store`, each
/// once, and empties the journal; returns how many rows it held. For the offline tools
/// (backup, restore, migrate) on a stopped router's redb file: without this a backup taken
/// after a crash would miss answered requests until the next start committed them. A data
/// dir without a journal is left as it is.
pub async fn commit_leftover_journal(store: &Store, data_dir: &std::path::Path) -> Result<usize, UsageError> {
    if !data_dir.join(journal::DIR_NAME).is_dir() {
        return Ok(0);
    }
    let (_journal, leftover) = Journal::open(data_dir)?;
    let committed = leftover
        .commit_with(|rows| async move { store.insert_usage_once(Arc::new(rows)).await.map(drop) })
        .await?;
    Ok(committed)
}

const CHANNEL_CAPACITY: usize = 65_536;
/// Rows removed per prune transaction: short enough that request rows never wait long.
const PRUNE_BATCH: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0}")]
    Invalid(String),
    #[error("price not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Buffer(#[from] buffer::BufferError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

impl UsageError {
    pub fn status(&self) -> u16 {
        match self {
            UsageError::Invalid(_) => 400,
            UsageError::NotFound => 404,
            UsageError::Store(e) => e.status(),
            UsageError::Buffer(_) | UsageError::Journal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            UsageError::Invalid(_) => "invalid_request",
            UsageError::NotFound => "not_found",
            UsageError::Store(_) | UsageError::Buffer(_) | UsageError::Journal(_) => "internal_error",
        }
    }
}

/// How long usage rows are kept, how many at most, and how much disk they may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_rows: u64,
    /// Bytes the rows with their index entries may take; `None`: no size cap.
    pub max_bytes: Option<u64>,
}

/// Where a router on PostgreSQL keeps usage rows while the database is unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferConfig {
    /// The directory of the buffer file (the data dir).
    pub dir: std::path::PathBuf,
    /// The file's size bound; 0 buffers nothing (rows are dropped while the database is
    /// unreachable), though rows left by an earlier run are still written.
    pub max_bytes: u64,
}

/// Rows sampled (the oldest) to measure what one row takes on disk.
const SIZE_SAMPLE: usize = 256;

impl Retention {
    /// The row cap in force: `max_rows`, or fewer when rows of `bytes_per_row` would
    /// outgrow `max_bytes`.
    pub fn row_cap(&self, bytes_per_row: Option<u64>) -> u64 {
        match (self.max_bytes, bytes_per_row) {
            (Some(max), Some(per_row)) if per_row > 0 => self.max_rows.min(max / per_row).max(1),
            _ => self.max_rows,
        }
    }
}

/// The unix ms the month of `unix_ms` starts.
fn month_start_ms(unix_ms: i64) -> i64 {
    let month = month_number(unix_ms);
    time::Date::from_calendar_date(
        month.div_euclid(12) as i32,
        time::Month::try_from((month.rem_euclid(12) + 1) as u8).unwrap_or(time::Month::January),
        1,
    )
    .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
    .unwrap_or(0)
}

/// What `/api/usage` answers for a range.
pub struct Summary {
    pub groups: Vec<Group>,
    pub totals: Totals,
    pub latency: Vec<Latency>,
    /// Per UTC day and tier, for latency over time.
    pub latency_by_day: Vec<DayLatency>,
    /// Rows before this time were pruned; their totals come from daily rollups.
    pub pruned_before: Option<i64>,
}

/// The models the enabled cloud providers serve right now, for valuing local answers
/// (`equivalent::resolve`); installed by the composition root, which knows the providers.
pub type CloudCatalogue = Box<dyn Fn() -> Arc<Vec<String>> + Send + Sync>;

pub struct Usage {
    store: Store,
    cloud_catalogue: RwLock<Option<CloudCatalogue>>,
    metrics: Arc<Metrics>,
    prices: RwLock<Arc<Vec<PriceRecord>>>,
    equivalents: RwLock<Arc<EquivalentSettings>>,
    /// Order this router's own changes of the two caches above with reloads (see `edits`).
    price_edits: Edits,
    equivalent_edits: Edits,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Rows never written: dropped at a full queue, or their commit failed.
    lost: Arc<AtomicU64>,
    limits: Limits,
    /// Per-minute counts shared with the other routers (PostgreSQL only).
    fleet: Option<Arc<fleet_rate::FleetRate>>,
    fleet_sync: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The disk buffer (PostgreSQL only) and the task that writes it to the database.
    backlog: Option<Arc<Backlog>>,
    replay: Mutex<Option<tokio::task::JoinHandle<()>>>,
    retention: Retention,
    /// On redb, where the router's own disk is the books, rows are journaled and answers do
    /// not wait for their commit. On PostgreSQL an answer waits for its row to be in the
    /// shared database (or this router's disk buffer): a router killed for good must not take
    /// answered rows with it. The journal is still read at start there, for rows an earlier
    /// run on redb left.
    journal: Journal,
    journal_live: bool,
    /// The journal could not take a row: logged once until it takes one again.
    journal_failing: std::sync::atomic::AtomicBool,
    /// Stamped on every row: several routers share one database.
    router: Arc<str>,
    /// The low half of the next row's key. Keys are time-based; a random start keeps rows of
    /// two processes in the same millisecond (a restart) apart, and the store walks past any
    /// key already taken.
    seq: AtomicU32,
}

impl Usage {
    pub async fn load(
        store: Store,
        metrics: Arc<Metrics>,
        retention: Retention,
        router: Arc<str>,
        buffer: BufferConfig,
    ) -> Result<Arc<Usage>, UsageError> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let lost = Arc::new(AtomicU64::new(0));
        // Opened before anything else: a buffer held by another process refuses the start.
        let backlog = if store.is_postgres() {
            Some(Backlog::open(&buffer.dir, buffer.max_bytes).await?)
        } else {
            None
        };
        let (journal, leftover) = {
            let dir = buffer.dir.clone();
            let path = dir.join(journal::DIR_NAME);
            tokio::task::spawn_blocking(move || Journal::open(&dir))
                .await
                .map_err(|e| journal::JournalError::Io {
                    path,
                    source: std::io::Error::other(e.to_string()),
                })??
        };
        let writer = Writer {
            store: store.clone(),
            lost: lost.clone(),
            backlog: backlog.clone(),
        };
        // Rows of requests answered before a crash, not yet committed then: written (once)
        // before this start counts the month's spend.
        let _ = leftover
            .commit_with(|rows| async {
                tracing::info!(rows = rows.len(), "writing the usage rows journaled by an earlier run");
                // A failure is logged by the writer; the rows stay journaled for the next start.
                match writer::write(&writer, rows, writer::Lane::Now).await {
                    true => Ok(()),
                    false => Err(()),
                }
            })
            .await;
        let usage = Arc::new(Usage {
            store: store.clone(),
            cloud_catalogue: RwLock::new(None),
            metrics,
            prices: RwLock::new(Arc::new(Vec::new())),
            equivalents: RwLock::new(Arc::new(store.equivalent_settings().await?)),
            price_edits: Edits::default(),
            equivalent_edits: Edits::default(),
            tx: Mutex::new(Some(tx)),
            writer: tokio::sync::Mutex::new(None),
            lost: lost.clone(),
            limits: Limits::default(),
            fleet: store.shares_rates().then(|| Arc::new(fleet_rate::FleetRate::new())),
            fleet_sync: Mutex::new(None),
            backlog: backlog.clone(),
            replay: Mutex::new(None),
            retention,
            journal,
            journal_live: !store.is_postgres(),
            journal_failing: std::sync::atomic::AtomicBool::new(false),
            router,
            seq: AtomicU32::new(rand::random()),
        });
        usage.reload_prices().await?;
        // This month's spend per key, kept by the store as rows are written, so a cap
        // holds across restarts (and crashes: the rows of answered requests are durable);
        // requests and last use this month are counted from the month's rows.
        let now = crate::clock::now_unix_ms();
        let month = month_number(now);
        let month_start = month_start_ms(now);
        let mut spend: HashMap<String, (i64, KeyMonth)> = HashMap::new();
        for (key, usd) in store.spend_in_month(month).await? {
            spend
                .entry(key)
                .or_insert((month, KeyMonth::default()))
                .1
                .spent_this_month_usd = usd;
        }
        for row in store.usage_between(month_start, now + 1).await? {
            if let Some(key) = row.api_key_id {
                let entry = &mut spend.entry(key).or_insert((month, KeyMonth::default())).1;
                entry.requests_this_month += 1;
                entry.last_used_ms = entry.last_used_ms.max(Some(row.at_ms));
            }
        }
        *usage.limits.spend.lock().unwrap_or_else(|p| p.into_inner()) = spend;
        // Rows a crash left in the buffer are written now, while new ones flow.
        if let Some(backlog) = &backlog {
            let replay = tokio::spawn(writer::replay(store.clone(), backlog.clone(), lost.clone()));
            *usage.replay.lock().unwrap_or_else(|p| p.into_inner()) = Some(replay);
        }
        let writer = tokio::spawn(writer::run(writer, rx));
        *usage.writer.lock().await = Some(writer);
        if let Some(fleet) = &usage.fleet {
            let sync = tokio::spawn(fleet_rate::run(fleet.clone(), usage.store.clone()));
            *usage.fleet_sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(sync);
        }
        Ok(usage)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn rows_dropped(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// The disk buffer's state; `None` on redb, which has none.
    pub fn backlog(&self) -> Option<BacklogStatus> {
        self.backlog.as_ref().map(|b| b.status())
    }

    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Gives a row its key, id and router before anything is written of it.
    fn place(&self, mut row: UsageRecord) -> PlacedUsage {
        row.router.get_or_insert_with(|| self.router.to_string());
        row.id = Some(rand::random());
        let key = usage_key(row.at_ms, self.seq.fetch_add(1, Ordering::Relaxed));
        PlacedUsage::new(key, row)
    }

    /// Appends a row to the journal; `None` if it cannot (logged once until it can again) or
    /// rows are not journaled (PostgreSQL).
    fn journal(&self, placed: &PlacedUsage) -> Option<journal::Ticket> {
        if !self.journal_live {
            return None;
        }
        self.journaled(self.journal.append(placed))
    }

    /// The ticket of a journaled row; a failure logged once until the journal takes a row
    /// again.
    fn journaled<E: std::fmt::Display>(&self, appended: Result<journal::Ticket, E>) -> Option<journal::Ticket> {
        match appended {
            Ok(ticket) => {
                if self.journal_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the usage journal takes rows again");
                }
                Some(ticket)
            }
            Err(e) => {
                if !self.journal_failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "cannot append to the usage journal: answers wait for their usage row's commit until it can");
                }
                None
            }
        }
    }

    /// The writer's queue; `None` (the row counted lost) once the writer has stopped.
    fn queue_for_row(&self) -> Option<mpsc::Sender<Job>> {
        let tx = self.sender();
        if tx.is_none() {
            self.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("usage row dropped: the writer is stopped");
        }
        tx
    }

    /// Records a row of a request that was not answered; never waits. A full channel (the
    /// disk far behind) hands the row to a task that waits for room.
    fn record(&self, row: UsageRecord) {
        let Some(tx) = self.queue_for_row() else {
            return;
        };
        self.hand_over(tx, self.place(row));
    }

    /// Journals a placed row on its own and queues it for the writer, without waiting.
    fn hand_over(&self, tx: mpsc::Sender<Job>, placed: PlacedUsage) {
        let settle = self.journal(&placed).map_or(Settle::Nothing, Settle::Journaled);
        self.queue(tx, Job::Row(Box::new(placed), settle));
    }

    /// Queues a job for the writer without waiting.
    fn queue(&self, tx: mpsc::Sender<Job>, job: Job) {
        match tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        let _ = tx.send(job).await;
                    });
                }
                Err(_) => {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records the row of an answered request so that a crash cannot lose it: appended to
    /// the journal (no disk sync to wait for; in one `write` with the rows of the requests
    /// finishing alongside) and queued for the writer. On PostgreSQL, or when the journal
    /// cannot take it, this waits for the row's commit.
    async fn record_durably(&self, row: UsageRecord) {
        let Some(tx) = self.queue_for_row() else {
            return;
        };
        let placed = self.place(row);
        let (placed, ticket) = if self.journal_live {
            let gathered = self.journal.gather(&placed);
            // Dropped while it waits (the client went), the row still goes to the writer.
            let held = Held {
                usage: self,
                tx: &tx,
                placed: Some(placed),
            };
            let appended = match gathered {
                Ok(gathered) => gathered.written().await,
                Err(e) => Err(Arc::new(e)),
            };
            let Some(placed) = held.release() else { return };
            (placed, self.journaled(appended))
        } else {
            (placed, None)
        };
        if let Some(ticket) = ticket {
            // Waits only while the channel is full; the row is safe in the journal already.
            if tx
                .send(Job::Row(Box::new(placed), Settle::Journaled(ticket)))
                .await
                .is_err()
            {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let (ack, done) = oneshot::channel();
        if tx.send(Job::Row(Box::new(placed), Settle::Wait(ack))).await.is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _ = done.await;
    }

    /// Waits until every row queued so far is committed, so a read includes requests
    /// answered up to this moment.
    pub async fn sync(&self) {
        let Some(tx) = self.sender() else { return };
        let (ack, done) = oneshot::channel();
        if tx.send(Job::Barrier(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Writes every queued row and stops the writer: the last step of a clean shutdown.
    pub async fn flush(&self) {
        if let Some(sync) = self.fleet_sync.lock().unwrap_or_else(|p| p.into_inner()).take() {
            sync.abort();
        }
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.await;
        }
        // Every row is settled: the open segment goes too.
        self.journal.close();
        // What is still in the disk buffer is written by the next start.
        if let Some(replay) = self.replay.lock().unwrap_or_else(|p| p.into_inner()).take() {
            replay.abort();
        }
    }

    fn price_table(&self) -> Arc<Vec<PriceRecord>> {
        self.prices.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_cloud_catalogue(&self, catalogue: CloudCatalogue) {
        *self.cloud_catalogue.write().unwrap_or_else(|p| p.into_inner()) = Some(catalogue);
    }

    fn enabled_cloud_models(&self) -> Arc<Vec<String>> {
        let catalogue = self.cloud_catalogue.read().unwrap_or_else(|p| p.into_inner());
        catalogue.as_ref().map_or_else(|| Arc::new(Vec::new()), |list| list())
    }

    fn equivalent_table(&self) -> Arc<EquivalentSettings> {
        self.equivalents.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The price entry for `model`: exact id, else the longest matching prefix.
    pub fn price(&self, model: &str) -> Option<PriceRecord> {
        prices::find(&self.price_table(), model).cloned()
    }

    /// Re-reads the cloud-equivalent settings (changed by another router).
    pub async fn reload_equivalents(&self) -> Result<(), UsageError> {
        let store = &self.store;
        self.equivalent_edits
            .reload(
                || async move { Ok::<_, UsageError>(store.equivalent_settings().await?) },
                |settings| *self.equivalents.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings),
            )
            .await
    }

    /// Re-reads the prices (changed by another router).
    pub async fn reload_prices(&self) -> Result<(), UsageError> {
        self.price_edits
            .reload(|| self.read_prices(), |prices| self.install_prices(prices))
            .await
    }

    async fn read_prices(&self) -> Result<Vec<PriceRecord>, UsageError> {
        let mut prices = self.store.list_prices().await?;
        prices.sort_by(|a, b| a.model.cmp(&b.model));
        Ok(prices)
    }

    fn install_prices(&self, prices: Vec<PriceRecord>) {
        *self.prices.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(prices);
    }

    /// Re-reads the prices after this router's own write committed.
    async fn reload_own_prices(&self) -> Result<(), UsageError> {
        self.price_edits
            .reload_own(|| self.read_prices(), |prices| self.install_prices(prices))
            .await
    }

    pub fn prices(&self) -> Vec<PriceRecord> {
        self.price_table().as_ref().clone()
    }

    pub async fn put_price(&self, price: PriceRecord) -> Result<PriceRecord, UsageError> {
        let price = PriceRecord {
            model: price.model.trim().to_string(),
            ..price
        };
        prices::validate(&price).map_err(UsageError::Invalid)?;
        self.store.put_price(price.clone()).await?;
        self.reload_own_prices().await?;
        Ok(price)
    }

    pub async fn delete_price(&self, model: &str) -> Result<(), UsageError> {
        match self.store.delete_price(model).await {
            Err(StoreError::NotFound(_)) => return Err(UsageError::NotFound),
            other => other?,
        }
        self.reload_own_prices().await
    }

    pub fn equivalents(&self) -> EquivalentSettings {
        self.equivalent_table().as_ref().clone()
    }

    pub async fn put_equivalents(&self, settings: EquivalentSettings) -> Result<EquivalentSettings, UsageError> {
        equivalent::validate(&settings, &self.price_table()).map_err(UsageError::Invalid)?;
        self.store.put_equivalent_settings(settings.clone()).await?;
        self.equivalent_edits
            .apply(|| *self.equivalents.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings.clone()));
        Ok(settings)
    }

    /// Deletes rows past the retention age or beyond the row cap, a short transaction at a
    /// time (folding each into its day's rollup), yielding between them.
    pub async fn prune(&self) -> Result<usize, UsageError> {
        let cutoff = crate::clock::now_unix_ms() - self.retention.max_age.as_millis() as i64;
        let per_row = match self.retention.max_bytes {
            Some(_) => self.store.usage_bytes_per_row(SIZE_SAMPLE).await?,
            None => None,
        };
        let max_rows = self.retention.row_cap(per_row);
        let mut removed = 0;
        loop {
            let step = self.store.prune_usage_step(cutoff, max_rows, PRUNE_BATCH).await?;
            removed += step.removed;
            if !step.more {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Rows of `from_ms..to_ms`, every row answered so far included.
    pub async fn rows(&self, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRecord>, UsageError> {
        self.sync().await;
        Ok(self.store.usage_between(from_ms, to_ms).await?)
    }

    /// Totals of pruned rows for the days overlapping `from_ms..to_ms`.
    pub async fn pruned_days(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DailyRollup>, UsageError> {
        Ok(self.store.daily_rollups(from_ms, to_ms).await?)
    }

    /// `from_ms..to_ms` folded by `group_by`: the rows still kept, and the daily rollups of
    /// pruned ones (at day granularity); with latency percentiles of the kept rows.
    pub async fn summary(&self, from_ms: i64, to_ms: i64, group_by: GroupBy) -> Result<Summary, UsageError> {
        let rows = self.rows(from_ms, to_ms).await?;
        let pruned = self.pruned_days(from_ms, to_ms).await?;
        let (groups, totals) = aggregate(&rows, &pruned, group_by);
        Ok(Summary {
            groups,
            totals,
            latency: latency(&rows),
            latency_by_day: latency_by_day(&rows),
            pruned_before: self.pruned_before().await?,
        })
    }

    pub async fn pruned_before(&self) -> Result<Option<i64>, UsageError> {
        Ok(self.store.usage_pruned_before().await?)
    }

    /// One page of the request log, every row answered so far included.
    pub async fn request_log(&self, query: LogQuery) -> Result<LogPage, UsageError> {
        self.sync().await;
        Ok(self.store.request_log(query).await?)
    }
}

/// A row waiting for its grouped journal write. If the wait is dropped (the request's client
/// went away), the row is journaled on its own and queued for the writer all the same: in the
/// journal twice, perhaps, it is still written once (`store/usage_once.rs`).
struct Held<'a> {
    usage: &'a Usage,
    tx: &'a mpsc::Sender<Job>,
    placed: Option<PlacedUsage>,
}

impl Held<'_> {
    /// The row back, for its caller to queue (always `Some`: only this takes it).
    fn release(mut self) -> Option<PlacedUsage> {
        self.placed.take()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(placed) = self.placed.take() {
            self.usage.hand_over(self.tx.clone(), placed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_cap_lowers_the_row_cap_only_when_it_binds() {
        let retention = Retention {
            max_age: Duration::from_secs(86_400),
            max_rows: 5_000,
            max_bytes: Some(2_000 * 1_000),
        };
        assert_eq!(retention.row_cap(Some(2_000)), 1_000);
        assert_eq!(retention.row_cap(Some(100)), 5_000, "the row cap binds first");
        assert_eq!(retention.row_cap(None), 5_000, "nothing measured yet");
        assert_eq!(retention.row_cap(Some(u64::MAX)), 1, "never below one row");
        let unbounded = Retention {
            max_bytes: None,
            ..retention
        };
        assert_eq!(unbounded.row_cap(Some(1_000_000)), 5_000);
    }

    fn placed(i: u64) -> PlacedUsage {
        let row: UsageRecord = serde_json::from_value(serde_json::json!({
            "at_ms": crate::clock::now_unix_ms() - 1_000 + i as i64,
            "api_key_id": "key-1",
            "model": "gpt-4o",
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_read_tokens": 0,
            "cache_write_5m_tokens": 0,
            "cache_write_1h_tokens": 0,
            "reasoning_tokens": 0,
            "tokens_estimated": false,
            "cost_usd": 0.25,
            "cloud_equivalent_usd": 0.25,
            "ms_total": 12,
            "stream": false,
            "attempts": [],
            "outcome": "ok",
            "status": 200,
            "id": 4242 + i,
        }))
        .unwrap();
        PlacedUsage::new(usage_key(row.at_ms, i as u32), row)
    }

    /// The usage book of a router named `r1` on `store`, its journal in `data`.
    async fn load(store: &Store, data: &std::path::Path) -> Arc<Usage> {
        Usage::load(
            store.clone(),
            Arc::new(Metrics::default()),
            Retention {
                max_age: Duration::from_secs(86_400),
                max_rows: 1_000,
                max_bytes: None,
            },
            Arc::from("r1"),
            BufferConfig {
                dir: data.to_path_buf(),
                max_bytes: 0,
            },
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn rows_a_crash_left_in_the_journal_are_written_once_at_the_next_start() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path()).unwrap();
        store.initialize(None, None).unwrap();
        let rows = vec![placed(1), placed(2)];
        // The first row's commit went through before the crash; the second's did not.
        store.insert_usage_once(Arc::new(vec![rows[0].clone()])).await.unwrap();
        let (journal, _) = Journal::open(data.path()).unwrap();
        for row in &rows {
            std::mem::forget(journal.append(row).unwrap());
        }
        std::mem::forget(journal);

        let usage = load(&store, data.path()).await;
        let stored = store.usage_between(0, i64::MAX).await.unwrap();
        assert_eq!(
            stored.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![Some(4243), Some(4244)]
        );
        let month = usage.key_month("key-1");
        assert_eq!(
            (month.spent_this_month_usd, month.requests_this_month),
            (0.5, 2),
            "the start counted the journaled row"
        );
        usage.flush().await;
        let left = std::fs::read_dir(data.path().join(journal::DIR_NAME)).unwrap().count();
        assert_eq!(left, 0, "the journal is emptied once its rows are written");
        let again = load(&store, data.path()).await;
        assert_eq!(store.usage_between(0, i64::MAX).await.unwrap().len(), 2);
        again.flush().await;
    }

    #[tokio::test]
    async fn an_answered_row_whose_wait_is_dropped_is_still_written_once() {
        use futures_util::FutureExt;
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path()).unwrap();
        store.initialize(None, None).unwrap();
        let usage = load(&store, data.path()).await;
        // Polled once, the wait is for the journal's grouped write; then the client goes.
        assert!(usage.record_durably(placed(1).row).now_or_never().is_none());
        // Waited for, as an answer does.
        usage.record_durably(placed(2).row).await;
        usage.sync().await;
        let stored = store.usage_between(0, i64::MAX).await.unwrap();
        assert_eq!(stored.len(), 2, "{stored:?}");
        usage.flush().await;
        assert_eq!(store.usage_between(0, i64::MAX).await.unwrap().len(), 2);
        let left = std::fs::read_dir(data.path().join(journal::DIR_NAME)).unwrap().count();
        assert_eq!(left, 0, "the journal is emptied once its rows are written");
    }
}
