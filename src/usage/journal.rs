//! The usage journal (`<data-dir>/usage-journal/`) of a router on redb (on PostgreSQL answers
//! wait for the shared database instead; see `Usage`): every usage row is appended here,
//! without an fsync, before the answer's last byte goes out, and is then committed to the
//! store in groups by the writer. An answer's row is appended with the rows of the other
//! requests that finish in the same turn of the runtime, in one `write` (`gather`). A row in
//! the journal survives the router being killed (the kernel holds the written bytes); a
//! restart writes what the journal still holds to the store before serving. An answered
//! request thus never waits for a disk sync: the window a power cut could lose is the rows
//! not yet committed by the writer, which commits whatever is queued as soon as its previous
//! commit ends (milliseconds).
//!
//! The journal is a series of segment files, `<number>.journal`, in the record format of
//! `records.rs`. Appends go to the newest; it is sealed and a new one begun once it holds
//! `SEGMENT_BYTES` or is `SEGMENT_AGE` old. A segment deletes itself once sealed and every row
//! appended to it is settled by the writer (committed, or buffered on disk while PostgreSQL is
//! away). A row whose fate the writer never decided (the process stopped first, a commit to
//! redb failed) keeps its segment for the next start. Rows carry their key and id, so a row
//! that was committed before the crash is recognised and written once (`store/usage_once.rs`).

use super::records::{append_record, decode_payload, encode_record, walk_all};
use crate::store::PlacedUsage;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const DIR_NAME: &str = "usage-journal";
const SUFFIX: &str = ".journal";
/// A segment is sealed past this size…
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// …or this age, so a restart after a quiet hour finds little to read.
const SEGMENT_AGE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the usage journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("a usage row too large to journal")]
    TooLarge,
    #[error("the usage journal's grouped write did not run (the runtime is stopping)")]
    NotWritten,
}

/// One segment file. Deleted when the last reference goes, unless a row in it was never
/// settled.
pub struct Segment {
    path: PathBuf,
    keep: AtomicBool,
}

impl Segment {
    /// Keeps the file for the next start: a row in it was not settled.
    pub fn keep(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::Relaxed) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a settled usage journal segment");
                }
            }
        }
    }
}

/// A journaled row's claim on its segment: `settle` it once the row's fate is decided;
/// dropped unsettled, it keeps the segment for the next start.
pub struct Ticket {
    segment: Arc<Segment>,
    settled: bool,
}

impl Ticket {
    pub fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            self.segment.keep();
        }
    }
}

struct Open {
    segment: Arc<Segment>,
    file: File,
    bytes: u64,
    opened: Instant,
}

struct Appender {
    open: Option<Open>,
    next_number: u64,
}

pub struct Journal {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    appender: Mutex<Appender>,
    group: Mutex<Group>,
    /// `write`s made, for the tests of grouping.
    writes: AtomicU64,
}

/// How a grouped write went: the segment the rows are in, or why they are not.
type Written = Result<Arc<Segment>, Arc<JournalError>>;

/// Rows gathered for the next grouped write.
#[derive(Default)]
struct Group {
    records: Vec<u8>,
    /// Where the rows gathered so far learn how their write went; `None` while none is.
    written: Option<watch::Receiver<Option<Written>>>,
}

/// A row gathered for a grouped write (`Journal::gather`).
pub struct Gathered(watch::Receiver<Option<Written>>);

impl Gathered {
    /// Waits for the row's write.
    pub async fn written(mut self) -> Result<Ticket, Arc<JournalError>> {
        let outcome = match self.0.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            Err(_) => None,
        };
        outcome
            .unwrap_or_else(|| Err(Arc::new(JournalError::NotWritten)))
            .map(|segment| Ticket {
                segment,
                settled: false,
            })
    }
}

/// Rows an earlier run left in the journal, with the segments that hold them (dropping
/// these deletes the files, so drop them once the rows are settled).
#[derive(Default)]
pub struct Leftover {
    pub rows: Vec<PlacedUsage>,
    pub segments: Vec<Arc<Segment>>,
    /// Bytes of a torn last record (never acknowledged) and of damaged records.
    pub torn_bytes: u64,
    pub damaged_bytes: u64,
}

impl Leftover {
    /// Hands the rows to `commit`, and removes their segments once it succeeded; after a
    /// failure they stay for the next try. Returns how many rows there were.
    pub async fn commit_with<F, Fut, E>(self, commit: F) -> Result<usize, E>
    where
        F: FnOnce(Vec<PlacedUsage>) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        self.warn_if_damaged();
        let count = self.rows.len();
        if count > 0 {
            if let Err(e) = commit(self.rows).await {
                self.segments.iter().for_each(|s| s.keep());
                return Err(e);
            }
        }
        drop(self.segments);
        Ok(count)
    }

    fn warn_if_damaged(&self) {
        if self.torn_bytes > 0 || self.damaged_bytes > 0 {
            tracing::warn!(
                torn_bytes = self.torn_bytes,
                damaged_bytes = self.damaged_bytes,
                "the usage journal had a torn or damaged record: skipped (a torn last record was never acknowledged)"
            );
        }
    }
}

impl Journal {
    /// Opens the journal in `data_dir`, and reads what an earlier run left in it.
    pub fn open(data_dir: &Path) -> Result<(Journal, Leftover), JournalError> {
        let dir = data_dir.join(DIR_NAME);
        let io = |source| JournalError::Io {
            path: dir.clone(),
            source,
        };
        create_private_dir(&dir).map_err(io)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((number, entry.path()));
        }
        found.sort();
        let mut leftover = Leftover::default();
        for (_, path) in &found {
            let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
            let walk = walk_all(&bytes);
            if walk.torn {
                leftover.torn_bytes += (bytes.len() - walk.end) as u64;
            }
            leftover.damaged_bytes += walk.skipped.iter().map(|r| r.len() as u64).sum::<u64>();
            leftover
                .rows
                .extend(walk.payloads.into_iter().filter_map(|p| decode_payload(&bytes[p])));
            leftover.segments.push(Arc::new(Segment {
                path: path.clone(),
                keep: AtomicBool::new(false),
            }));
        }
        let next_number = found.last().map_or(0, |(n, _)| n + 1);
        let journal = Journal {
            shared: Arc::new(Shared {
                dir,
                appender: Mutex::new(Appender {
                    open: None,
                    next_number,
                }),
                group: Mutex::new(Group::default()),
                writes: AtomicU64::new(0),
            }),
        };
        Ok((journal, leftover))
    }

    /// Appends one row: a single `write` to the open segment, no sync.
    pub fn append(&self, placed: &PlacedUsage) -> Result<Ticket, JournalError> {
        let record = encode_record(placed).ok_or(JournalError::TooLarge)?;
        let segment = self.shared.write(&record)?;
        Ok(Ticket {
            segment,
            settled: false,
        })
    }

    /// Gathers one row for a grouped write: the rows of every request that finishes in the
    /// same turn of the runtime go out in one `write`, once each has had its turn, rather
    /// than a `write` each (under load a turn finishes a dozen or more). `Gathered::written`
    /// waits for it; the row is not in the journal before that.
    pub fn gather(&self, placed: &PlacedUsage) -> Result<Gathered, JournalError> {
        // Encoded before the lock (the encoding is kept): only the record's copy is made
        // under it, straight into the group's bytes.
        placed.encoded().map_err(|_| JournalError::TooLarge)?;
        let mut group = self.shared.group.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = match &group.written {
            // `has_changed` fails once the write's task is gone unrun (its runtime stopped):
            // its rows were told so, and its records are not to be written.
            Some(written) if written.has_changed().is_ok() => Some(written.clone()),
            Some(_) => {
                group.records.clear();
                None
            }
            None => None,
        };
        if !append_record(placed, &mut group.records) {
            return Err(JournalError::TooLarge);
        }
        if let Some(written) = pending {
            return Ok(Gathered(written));
        }
        let (done, written) = watch::channel(None);
        group.written = Some(written.clone());
        drop(group);
        let shared = self.shared.clone();
        // A task of its own, so that a request dropped while it waits (its client gone)
        // takes no one else's write with it; the sender dropped unsent tells the waiters.
        tokio::spawn(async move {
            // The requests ready to run in this turn gather their rows first: a yielded
            // task runs again only after the others and a look at the sockets.
            tokio::task::yield_now().await;
            let records = {
                let mut group = shared.group.lock().unwrap_or_else(PoisonError::into_inner);
                group.written = None;
                std::mem::take(&mut group.records)
            };
            let _ = done.send(Some(shared.write(&records).map_err(Arc::new)));
        });
        Ok(Gathered(written))
    }

    /// Seals the open segment (a clean stop, once the writer has settled every row): it is
    /// deleted if nothing in it is left unsettled.
    pub fn close(&self) {
        self.shared.appender.lock().unwrap_or_else(PoisonError::into_inner).open = None;
    }

    /// How many `write`s went to the journal so far.
    #[cfg(test)]
    fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Writes whole records to the open segment in one `write`, no sync; returns the segment.
    fn write(&self, records: &[u8]) -> Result<Arc<Segment>, JournalError> {
        let mut appender = self.appender.lock().unwrap_or_else(PoisonError::into_inner);
        let Appender { open, next_number } = &mut *appender;
        let open = match open {
            Some(current)
                if current.bytes == 0 || (current.bytes < SEGMENT_BYTES && current.opened.elapsed() < SEGMENT_AGE) =>
            {
                current
            }
            slot => {
                // The sealed segment goes as soon as its last row is settled.
                *slot = None;
                let number = *next_number;
                *next_number += 1;
                slot.insert(self.begin(number)?)
            }
        };
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let Err(source) = open.file.write_all(records) {
            // Nothing half-written stays to be read as a torn record ahead of later ones.
            let _ = open.file.set_len(open.bytes);
            return Err(JournalError::Io {
                path: open.segment.path.clone(),
                source,
            });
        }
        open.bytes += records.len() as u64;
        Ok(open.segment.clone())
    }

    fn begin(&self, number: u64) -> Result<Open, JournalError> {
        let path = self.dir.join(format!("{number:020}{SUFFIX}"));
        let mut options = OpenOptions::new();
        options.append(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Open {
            segment: Arc::new(Segment {
                path,
                keep: AtomicBool::new(false),
            }),
            file,
            bytes: 0,
            opened: Instant::now(),
        })
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{usage_key, UsageRecord};

    fn row(i: u64) -> PlacedUsage {
        let row: UsageRecord = serde_json::from_value(serde_json::json!({
            "at_ms": 1_700_000_000_000u64 + i,
            "model": format!("model-{i}"),
            "input_tokens": i,
            "output_tokens": 2 * i,
            "cache_read_tokens": 0,
            "cache_write_5m_tokens": 0,
            "cache_write_1h_tokens": 0,
            "reasoning_tokens": 0,
            "tokens_estimated": false,
            "cost_usd": 0.5,
            "cloud_equivalent_usd": 0.5,
            "ms_total": 12,
            "stream": false,
            "attempts": [],
            "outcome": "ok",
            "status": 200,
            "id": 9000 + i,
        }))
        .unwrap();
        PlacedUsage::new(usage_key(row.at_ms, i as u32), row)
    }

    fn segment_files(data: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(data.join(DIR_NAME))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rows_left_unsettled_by_a_crash_are_read_back_in_order() {
        let data = tempfile::tempdir().unwrap();
        let (journal, leftover) = Journal::open(data.path()).unwrap();
        assert!(leftover.rows.is_empty());
        let tickets: Vec<Ticket> = (0..5).map(|i| journal.append(&row(i)).unwrap()).collect();
        tickets.into_iter().take(2).for_each(Ticket::settle);
        // A crash: nothing is dropped, so nothing is deleted.
        std::mem::forget(journal);
        let (_journal, leftover) = Journal::open(data.path()).unwrap();
        assert_eq!(leftover.rows, (0..5).map(row).collect::<Vec<_>>());
        assert_eq!((leftover.torn_bytes, leftover.damaged_bytes), (0, 0));
    }

    #[test]
    fn a_sealed_segment_goes_once_every_row_in_it_is_settled() {
        let data = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(data.path()).unwrap();
        let first = journal.append(&row(1)).unwrap();
        let second = journal.append(&row(2)).unwrap();
        assert_eq!(segment_files(data.path()).len(), 1);
        first.settle();
        journal.close();
        assert_eq!(segment_files(data.path()).len(), 1, "a row in it is not settled yet");
        second.settle();
        assert!(segment_files(data.path()).is_empty());
    }

    #[test]
    fn an_unsettled_row_keeps_its_segment_for_the_next_start() {
        let data = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(data.path()).unwrap();
        let ticket = journal.append(&row(7)).unwrap();
        drop(ticket);
        journal.close();
        let (journal, leftover) = Journal::open(data.path()).unwrap();
        assert_eq!(leftover.rows, vec![row(7)]);
        // Settled at this start (the caller dropped the segments after writing the rows).
        drop(leftover.segments);
        journal.close();
        assert!(segment_files(data.path()).is_empty());
    }

    #[test]
    fn a_new_start_appends_to_a_new_segment_after_the_old_ones() {
        let data = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(data.path()).unwrap();
        std::mem::forget(journal.append(&row(1)).unwrap());
        std::mem::forget(journal);
        let (journal, leftover) = Journal::open(data.path()).unwrap();
        std::mem::forget(leftover.segments);
        std::mem::forget(journal.append(&row(2)).unwrap());
        assert_eq!(
            segment_files(data.path()),
            vec![format!("{:020}{SUFFIX}", 0), format!("{:020}{SUFFIX}", 1)]
        );
        let (_, leftover) = Journal::open(data.path()).unwrap();
        assert_eq!(leftover.rows, vec![row(1), row(2)]);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_counted() {
        let data = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(data.path()).unwrap();
        std::mem::forget(journal.append(&row(1)).unwrap());
        std::mem::forget(journal.append(&row(2)).unwrap());
        std::mem::forget(journal);
        let path = data.path().join(DIR_NAME).join(&segment_files(data.path())[0]);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 10).unwrap();
        let (_, leftover) = Journal::open(data.path()).unwrap();
        assert_eq!(leftover.rows, vec![row(1)]);
        assert!(leftover.torn_bytes > 0);
    }

    #[test]
    fn a_full_or_old_segment_is_sealed_and_a_new_one_begun() {
        let data = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(data.path()).unwrap();
        let kept = journal.append(&row(1)).unwrap();
        journal.shared.appender.lock().unwrap().open.as_mut().unwrap().opened -= SEGMENT_AGE;
        let newer = journal.append(&row(2)).unwrap();
        assert_eq!(segment_files(data.path()).len(), 2);
        kept.settle();
        assert_eq!(
            segment_files(data.path()).len(),
            1,
            "the sealed segment went with its last row"
        );
        newer.settle();
        journal.close();
        assert!(segment_files(data.path()).is_empty());
    }

    #[tokio::test]
    async fn rows_gathered_in_one_turn_go_out_in_one_write() {
        let data = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(data.path()).unwrap();
        let journal = Arc::new(journal);
        let waits: Vec<_> = (0..20)
            .map(|i| {
                let journal = journal.clone();
                tokio::spawn(async move { journal.gather(&row(i)).unwrap().written().await.unwrap() })
            })
            .collect();
        let mut tickets = Vec::new();
        for wait in waits {
            tickets.push(wait.await.unwrap());
        }
        assert_eq!(journal.writes(), 1, "one write for the whole turn");
        // A later turn is a new write, to the same segment.
        let later = journal.gather(&row(20)).unwrap().written().await.unwrap();
        assert_eq!(journal.writes(), 2);
        assert_eq!(segment_files(data.path()).len(), 1);
        let (_, leftover) = Journal::open(data.path()).unwrap();
        let mut ids: Vec<_> = leftover.rows.iter().map(|p| p.row.id).collect();
        ids.sort();
        assert_eq!(ids, (0..21).map(|i| Some(9000 + i)).collect::<Vec<_>>());
        std::mem::forget(leftover.segments);
        tickets.into_iter().for_each(Ticket::settle);
        later.settle();
        journal.close();
        assert!(segment_files(data.path()).is_empty());
    }

    #[tokio::test]
    async fn a_gathered_row_is_written_even_if_its_waiter_is_gone() {
        let data = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(data.path()).unwrap();
        let kept = journal.gather(&row(1)).unwrap();
        drop(journal.gather(&row(2)).unwrap());
        let ticket = kept.written().await.unwrap();
        std::mem::forget(ticket);
        std::mem::forget(journal);
        let (_, leftover) = Journal::open(data.path()).unwrap();
        assert_eq!(leftover.rows, vec![row(1), row(2)]);
    }

    #[tokio::test]
    async fn a_grouped_write_that_never_ran_is_reported_to_its_rows() {
        let data = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(data.path()).unwrap();
        // A runtime that stops before the write's task gets its turn.
        let gathered = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                    runtime.block_on(async { journal.gather(&row(1)).unwrap() })
                })
                .join()
                .unwrap()
        });
        assert!(matches!(
            gathered.written().await.map(drop).unwrap_err().as_ref(),
            JournalError::NotWritten
        ));
        // The next row starts a new group, without the rows of the one that never ran.
        let ticket = journal.gather(&row(2)).unwrap().written().await.unwrap();
        std::mem::forget(ticket);
        std::mem::forget(journal);
        let (_, leftover) = Journal::open(data.path()).unwrap();
        assert_eq!(leftover.rows, vec![row(2)]);
    }
}
