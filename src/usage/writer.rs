//! The usage writer: rows arrive on a channel and are committed in groups, one transaction
//! (one fsync) for whatever is queued when the previous commit ends. Rows come journaled
//! (`journal.rs`: already safe from a crash; the writer settles their journal ticket once the
//! row is committed) or, when the journal could not take them, with an acknowledgement the
//! request waits for before its last byte goes out.
//!
//! On PostgreSQL a commit can fail because the database is out of reach. The rows then go to
//! the disk buffer (`buffer.rs`), synced before the acknowledgements go out, and a replay task
//! writes them to the database, oldest first, once it answers again. While the database is
//! known to be unreachable and rows wait in the buffer, new rows go straight to the buffer
//! instead of waiting on a connection attempt each; as soon as a replay succeeds, new rows go
//! to the database directly again while the replay catches up, so the backlog always drains.
//! Every row gets its key and a random id before its first attempt, so a row whose commit
//! outcome was unknown is written once however often it is replayed (`store/usage_once.rs`).

use super::buffer::{BufferError, Chunk, UsageBuffer};
use super::journal::Ticket;
use crate::store::{PlacedUsage, Store, StoreError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

/// Rows per transaction at most, so one commit stays short under a flood.
const BATCH_ROWS: usize = 2000;
/// Journaled rows wait at most this long after the previous commit for company (see `run`).
/// What a power cut (not a crash) can lose is about this much of answered rows.
const GATHER: Duration = Duration::from_millis(20);
/// A batch of fewer journaled rows than this, which no request or read waits on, commits
/// on the low-priority commit thread (`store/idle_lane.rs`) so it yields the CPU to requests.
/// A larger one means the rows arrive faster than the idle CPU commits them (a flood): it
/// commits at normal priority, so the backlog cannot grow without bound.
const IDLE_ROWS_MAX: usize = 500;
/// A low-priority commit that took longer than this means the CPU had no idle time for it
/// (a flood, or other processes busy): commits then run at normal priority for
/// `BUSY_BACKOFF`. Otherwise the starved commit would hold the write lock while rows pile
/// up into larger batches, whose commits are longer bursts competing with requests.
const IDLE_COMMIT_SLOW: Duration = Duration::from_millis(100);
const BUSY_BACKOFF: Duration = Duration::from_secs(5);
/// Rows per replay transaction: each holds the fleet's write lock, so it stays short.
const REPLAY_ROWS: usize = 500;
/// A commit to PostgreSQL that takes longer is given up on and its rows buffered (the
/// commit may still land: the replay then finds the rows and skips them).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The replay's first wait after a failure, doubled up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub(super) enum Job {
    /// A row with its key and id, and what to do once it is settled.
    Row(Box<PlacedUsage>, Settle),
    /// Answered once every row queued before it is committed: a read sees them all.
    Barrier(oneshot::Sender<()>),
}

/// What is told once a row's fate is decided (committed, buffered on disk, or counted lost).
pub(super) enum Settle {
    /// The row is in the journal: its segment may go once the row is committed.
    Journaled(Ticket),
    /// The journal could not take the row: a request waits for its commit.
    Wait(oneshot::Sender<()>),
    /// Nobody waits (a row the journal could not take, of a request not answered).
    Nothing,
}

/// The disk buffer of a router on PostgreSQL, and what `/healthz` and `/metrics` say of it.
pub struct Backlog {
    buffer: Mutex<UsageBuffer>,
    /// The buffer's count of rows waiting, readable without its lock.
    pending: AtomicU64,
    /// Unix ms since which the database has not answered a write; 0 while it does.
    unreachable_since: AtomicI64,
    /// Rows are being turned away (the buffer is full or cannot be written): logged once
    /// per burst, cleared when the buffer drains.
    refusing: AtomicBool,
    max_bytes: u64,
    /// Rows were appended: the replay task has work.
    wake: Notify,
}

/// The backlog as `/healthz` and `/metrics` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogStatus {
    pub rows_buffered: u64,
    /// Since when PostgreSQL has not answered a usage write (unix ms).
    pub unreachable_since_ms: Option<i64>,
    /// Rows were dropped at the size bound in this outage.
    pub full: bool,
}

impl Backlog {
    /// Opens the buffer in `dir` (on the blocking pool: it is scanned once).
    pub(super) async fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Backlog>, BufferError> {
        let dir = dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || UsageBuffer::open(&dir, max_bytes))
            .await
            .map_err(|e| BufferError::Io {
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let (buffer, found) = opened;
        if found.torn_bytes > 0 {
            tracing::warn!(
                bytes = found.torn_bytes,
                "cut off a usage row torn by a crash from the disk buffer (its request was never answered)"
            );
        }
        if found.pending > 0 {
            tracing::info!(
                rows = found.pending,
                "usage rows buffered on disk by an earlier run: writing them to PostgreSQL"
            );
        }
        Ok(Arc::new(Backlog {
            pending: AtomicU64::new(buffer.pending()),
            buffer: Mutex::new(buffer),
            unreachable_since: AtomicI64::new(0),
            refusing: AtomicBool::new(false),
            max_bytes,
            wake: Notify::new(),
        }))
    }

    pub fn status(&self) -> BacklogStatus {
        let since = self.unreachable_since.load(Ordering::Relaxed);
        BacklogStatus {
            rows_buffered: self.pending.load(Ordering::Relaxed),
            unreachable_since_ms: (since != 0).then_some(since),
            full: self.refusing.load(Ordering::Relaxed),
        }
    }

    /// Rows wait in the buffer and the database did not answer the last write: new rows
    /// join them rather than wait for another failed connection.
    fn waiting_for_database(&self) -> bool {
        self.pending.load(Ordering::Relaxed) > 0 && self.unreachable_since.load(Ordering::Relaxed) != 0
    }

    fn unreachable(&self, reason: &str) {
        let now = crate::clock::now_unix_ms().max(1);
        if self
            .unreachable_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                error = reason,
                "PostgreSQL cannot take usage rows: they go to the disk buffer until it is back"
            );
        }
    }

    fn reachable(&self) {
        if self.unreachable_since.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!("PostgreSQL takes usage rows again");
        }
        if self.pending.load(Ordering::Relaxed) == 0 {
            self.refusing.store(false, Ordering::Relaxed);
        }
    }

    /// Appends rows to the buffer, synced; rows it cannot take are counted in `lost`.
    async fn spill(self: &Arc<Self>, rows: Arc<Vec<PlacedUsage>>, lost: &AtomicU64) {
        let count = rows.len();
        let backlog = self.clone();
        let appended = tokio::task::spawn_blocking(move || {
            let mut buffer = backlog.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            let stored = buffer.append(&rows);
            backlog.pending.store(buffer.pending(), Ordering::Relaxed);
            stored
        })
        .await;
        let (stored, failure) = match appended {
            Ok(Ok(stored)) => (stored, None),
            Ok(Err(e)) => (0, Some(e.to_string())),
            Err(e) => (0, Some(e.to_string())),
        };
        let dropped = count - stored;
        if dropped > 0 {
            lost.fetch_add(dropped as u64, Ordering::Relaxed);
            if !self.refusing.swap(true, Ordering::Relaxed) {
                match failure {
                    Some(error) => tracing::error!(
                        error = %error,
                        "cannot write usage rows to the disk buffer: they are dropped (auxot_usage_rows_dropped_total) until it drains"
                    ),
                    None => tracing::error!(
                        max_mib = self.max_bytes as f64 / (1024.0 * 1024.0),
                        "the usage buffer is full (--usage-buffer-mib): usage rows are dropped (auxot_usage_rows_dropped_total) until PostgreSQL is back and the buffer drains"
                    ),
                }
            }
        }
        if stored > 0 {
            self.wake.notify_one();
        }
    }

    async fn next_chunk(self: &Arc<Self>) -> Result<Chunk, String> {
        let backlog = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut buffer = backlog.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            let chunk = buffer.next_chunk(REPLAY_ROWS);
            if matches!(&chunk, Ok(chunk) if chunk.is_empty()) {
                backlog.pending.store(buffer.pending(), Ordering::Relaxed);
            }
            chunk
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    async fn mark_written(self: &Arc<Self>, chunk: Chunk) -> Result<u64, String> {
        let backlog = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut buffer = backlog.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            let result = buffer.mark_written(&chunk);
            backlog.pending.store(buffer.pending(), Ordering::Relaxed);
            result.map(|()| buffer.pending())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

/// What the writer task needs.
pub(super) struct Writer {
    pub store: Store,
    pub lost: Arc<AtomicU64>,
    /// PostgreSQL only.
    pub backlog: Option<Arc<Backlog>>,
}

/// At which CPU priority a redb commit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Someone waits for it, or rows pile up: at normal priority.
    Now,
    /// Nobody waits: when the CPU has nothing else to do.
    WhenIdle,
}

impl Lane {
    /// `idle_ok`: no low-priority commit was found starved lately.
    fn for_batch(batch: &Batch, idle_ok: bool) -> Lane {
        if idle_ok && batch.waiting.is_empty() && batch.rows.len() < IDLE_ROWS_MAX {
            Lane::WhenIdle
        } else {
            Lane::Now
        }
    }
}

/// One transaction's worth of jobs.
#[derive(Default)]
struct Batch {
    rows: Vec<PlacedUsage>,
    tickets: Vec<Ticket>,
    waiting: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn add(&mut self, job: Job) {
        match job {
            Job::Row(row, settle) => {
                self.rows.push(*row);
                match settle {
                    Settle::Journaled(ticket) => self.tickets.push(ticket),
                    Settle::Wait(ack) => self.waiting.push(ack),
                    Settle::Nothing => {}
                }
            }
            Job::Barrier(ack) => self.waiting.push(ack),
        }
    }

    fn full(&self) -> bool {
        self.rows.len() >= BATCH_ROWS
    }

    /// Takes whatever is queued, up to a full batch.
    fn drain(&mut self, rx: &mut mpsc::Receiver<Job>) {
        while !self.full() {
            match rx.try_recv() {
                Ok(job) => self.add(job),
                Err(_) => break,
            }
        }
    }
}

pub(super) async fn run(writer: Writer, mut rx: mpsc::Receiver<Job>) {
    let mut last_commit = Instant::now();
    let mut busy_until = last_commit;
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::default();
        batch.add(first);
        batch.drain(&mut rx);
        // Journaled rows are safe already: gather them for up to `GATHER` after the last
        // commit, so that one commit (and each B-tree page it copies) serves many rows. A
        // row or read that waits for its commit ends the gathering at once.
        let deadline = last_commit + GATHER;
        while batch.waiting.is_empty() && !batch.full() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => {
                    batch.add(job);
                    batch.drain(&mut rx);
                }
                Ok(None) | Err(_) => break,
            }
        }
        last_commit = Instant::now();
        let lane = Lane::for_batch(&batch, last_commit >= busy_until);
        let committed = write(&writer, batch.rows, lane).await;
        if lane == Lane::WhenIdle && last_commit.elapsed() > IDLE_COMMIT_SLOW {
            busy_until = Instant::now() + BUSY_BACKOFF;
        }
        if committed {
            batch.tickets.into_iter().for_each(Ticket::settle);
        }
        for ack in batch.waiting {
            let _ = ack.send(());
        }
    }
}

/// Writes placed rows: on redb in one transaction; on PostgreSQL to the database or, while
/// it is out of reach, to the disk buffer. Returns whether the rows' fate is settled, which
/// is not the case only when redb failed to commit them: their journal then keeps them for
/// the next start.
pub(super) async fn write(writer: &Writer, rows: Vec<PlacedUsage>, lane: Lane) -> bool {
    if rows.is_empty() {
        return true;
    }
    let count = rows.len();
    match &writer.backlog {
        None => {
            let rows = Arc::new(rows);
            let committed = match lane {
                Lane::Now => writer.store.insert_usage_once(rows).await,
                Lane::WhenIdle => writer.store.insert_usage_once_when_idle(rows).await,
            };
            match committed {
                Ok(_) => true,
                Err(e) => {
                    writer.lost.fetch_add(count as u64, Ordering::Relaxed);
                    tracing::error!(error = %e, rows = count, "writing usage rows failed");
                    false
                }
            }
        }
        Some(backlog) => {
            write_or_buffer(&writer.store, backlog, rows, &writer.lost).await;
            true
        }
    }
}

async fn write_or_buffer(store: &Store, backlog: &Arc<Backlog>, rows: Vec<PlacedUsage>, lost: &AtomicU64) {
    let rows = Arc::new(rows);
    if !backlog.waiting_for_database() {
        match commit(store, rows.clone()).await {
            Ok(_) => {
                backlog.reachable();
                return;
            }
            Err(Failure::Refused(e)) => {
                lost.fetch_add(rows.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, rows = rows.len(), "writing usage rows failed");
                return;
            }
            Err(Failure::Unreachable(reason)) => backlog.unreachable(&reason),
        }
    }
    backlog.spill(rows, lost).await;
}

enum Failure {
    /// The database did not answer, or the connection failed: worth trying again later.
    Unreachable(String),
    /// The database answered no: trying again would fail the same way.
    Refused(StoreError),
}

async fn commit(store: &Store, rows: Arc<Vec<PlacedUsage>>) -> Result<usize, Failure> {
    match tokio::time::timeout(COMMIT_TIMEOUT, store.insert_usage_once(rows)).await {
        Ok(Ok(written)) => Ok(written),
        Ok(Err(e @ (StoreError::Unavailable(_) | StoreError::Postgres(_) | StoreError::Task(_)))) => {
            Err(Failure::Unreachable(e.to_string()))
        }
        Ok(Err(e)) => Err(Failure::Refused(e)),
        Err(_) => Err(Failure::Unreachable(format!(
            "no answer within {} s",
            COMMIT_TIMEOUT.as_secs()
        ))),
    }
}

/// Writes the buffered rows to the database, oldest first, whenever there are some,
/// retrying with backoff while it does not answer. Runs for the life of the router.
pub(super) async fn replay(store: Store, backlog: Arc<Backlog>, lost: Arc<AtomicU64>) {
    let mut retry = RETRY_FIRST;
    let mut caught_up = 0u64;
    loop {
        if backlog.pending.load(Ordering::Relaxed) == 0 {
            backlog.wake.notified().await;
            continue;
        }
        let mut chunk = match backlog.next_chunk().await {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the usage buffer; retrying");
                tokio::time::sleep(RETRY_MAX).await;
                continue;
            }
        };
        if chunk.is_empty() {
            continue;
        }
        if chunk.unreadable > 0 {
            lost.fetch_add(chunk.unreadable, Ordering::Relaxed);
            tracing::error!(
                rows = chunk.unreadable,
                "usage rows in the disk buffer no longer read as rows: skipped"
            );
        }
        let rows = std::mem::take(&mut chunk.rows);
        let count = rows.len() as u64;
        let result = if rows.is_empty() {
            Ok(0)
        } else {
            commit(&store, Arc::new(rows)).await
        };
        match result {
            Ok(_) => {
                backlog.reachable();
                retry = RETRY_FIRST;
            }
            Err(Failure::Unreachable(reason)) => {
                backlog.unreachable(&reason);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
            Err(Failure::Refused(e)) => {
                lost.fetch_add(count, Ordering::Relaxed);
                tracing::error!(error = %e, rows = count, "usage rows from the disk buffer were refused by PostgreSQL: dropped");
            }
        }
        caught_up += count;
        match backlog.mark_written(chunk).await {
            Ok(0) => {
                backlog.refusing.store(false, Ordering::Relaxed);
                tracing::info!(
                    rows = caught_up,
                    "caught up: the usage rows buffered on disk are in PostgreSQL, and the buffer is empty"
                );
                caught_up = 0;
            }
            Ok(_) => {}
            Err(e) => {
                // The rows are in the database; the buffer still lists them, and a replay
                // of them writes nothing (their ids are found). Try again later.
                tracing::error!(error = %e, "cannot update the usage buffer; retrying");
                tokio::time::sleep(RETRY_MAX).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: usize, waiting: bool) -> Batch {
        let mut batch = Batch::default();
        for i in 0..rows {
            let row = crate::usage::aggregate::tests::row("cloud", "gpt-4o", 1, 1, 0.0, 0.0, "ok");
            batch.rows.push(PlacedUsage::new(i as u128, row));
        }
        if waiting {
            batch.waiting.push(oneshot::channel().0);
        }
        batch
    }

    #[test]
    fn only_small_batches_nobody_waits_on_commit_at_low_priority_and_not_while_it_starves() {
        assert_eq!(Lane::for_batch(&batch(3, false), true), Lane::WhenIdle);
        assert_eq!(Lane::for_batch(&batch(IDLE_ROWS_MAX - 1, false), true), Lane::WhenIdle);
        assert_eq!(
            Lane::for_batch(&batch(IDLE_ROWS_MAX, false), true),
            Lane::Now,
            "rows pile up"
        );
        assert_eq!(
            Lane::for_batch(&batch(3, true), true),
            Lane::Now,
            "a request or read waits"
        );
        assert_eq!(Lane::for_batch(&batch(3, false), false), Lane::Now, "starved lately");
    }
}
