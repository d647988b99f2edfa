//! The disk buffer of a router on PostgreSQL (`<data-dir>/usage-buffer.bin`). Rows that
//! cannot be written to the database (it is unreachable, a commit failed or timed out) are
//! appended here and synced to disk before the requests that made them are acknowledged;
//! once the database answers again they are written to it in file order and the file is
//! emptied.
//!
//! An append-only file of checksummed records rather than a second redb file: the buffer is
//! only ever appended to and then read once from front to back. An append and one
//! `fdatasync` is the cheapest durable write there is (a redb commit rewrites B-tree pages
//! and syncs twice), the size bound is simply the file's length, and truncation gives the
//! space back at once, which a redb file does not.
//!
//! Layout, integers little-endian:
//! - a header of 24 bytes: the magic `AUXUSGB1`; `replayed_to`, the offset of the first
//!   record not yet known to be in PostgreSQL (moved on after each commit, so a restart does
//!   not write the whole backlog again); a CRC-32 of those 8 bytes; 4 zero bytes;
//! - records: the magic `AXUR`, the payload's length (u32), its CRC-32, the payload: the
//!   row's usage key (u128, big-endian), then the row as JSON with its `id`.
//!
//! A crash in the middle of an append leaves a torn record at the end: it was never
//! acknowledged, and opening the file cuts it off. A record whose checksum does not match
//! anywhere else (a damaged disk) is skipped up to the next valid record and reported.
//! An exclusive `flock` keeps a second router from sharing the file.

use super::records::{decode_payload, encode_record, walk, walk_all, walk_all_up_to};
use crate::store::PlacedUsage;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "usage-buffer.bin";

const FILE_MAGIC: &[u8; 8] = b"AUXUSGB1";
const HEADER_LEN: u64 = 24;
/// Bytes read at a time when scanning; more than the largest record, so a scan always moves.
const WINDOW: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error(
        "the usage buffer {0} is held by another auxot process: give each router on this machine its own --data-dir"
    )]
    InUse(PathBuf),
    #[error("{0} is not an auxot usage buffer (unknown header); move it away to start")]
    NotABuffer(PathBuf),
    #[error("the usage buffer {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What opening found, for the start-up log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Rows waiting to be written to the database.
    pub pending: u64,
    /// Bytes of a record torn by a crash, cut off the end.
    pub torn_bytes: u64,
    /// Bytes of damaged records skipped.
    pub damaged_bytes: u64,
}

/// The next rows to write to the database, in file order.
#[derive(Debug, Default)]
pub struct Chunk {
    pub rows: Vec<PlacedUsage>,
    /// Records whose payload no longer reads as a row (written by another version, damaged
    /// past their checksum): they are passed over and counted lost.
    pub unreadable: u64,
    /// Records this chunk covers (rows and unreadable ones).
    records: u64,
    /// Where the records after this chunk start.
    end: u64,
}

pub struct UsageBuffer {
    path: PathBuf,
    file: File,
    /// Bytes in the file: the header and every whole record.
    len: u64,
    replayed_to: u64,
    pending: u64,
    max_bytes: u64,
}

impl Chunk {
    /// No records at all: nothing was pending.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
}

impl UsageBuffer {
    /// Opens (or creates, mode 0600) the buffer in `dir`, locks it, cuts off a torn tail and
    /// counts the rows still to write.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(UsageBuffer, Opened), BufferError> {
        let path = dir.join(FILE_NAME);
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(io)?;
        lock(&file, &path)?;
        let len = file.metadata().map_err(io)?.len();
        let mut buffer = UsageBuffer {
            path: path.clone(),
            file,
            len,
            replayed_to: HEADER_LEN,
            pending: 0,
            max_bytes,
        };
        if len == 0 {
            buffer.write_header(HEADER_LEN)?;
            buffer.len = HEADER_LEN;
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
            return Ok((buffer, Opened::default()));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        let whole = buffer.read_at(0, &mut header).map_err(io)?;
        if whole < header.len() || &header[..8] != FILE_MAGIC {
            return Err(BufferError::NotABuffer(path));
        }
        // A header torn by a crash: replay from the start (rows already written are known by
        // their ids and skipped).
        buffer.replayed_to = replayed_to(&header).unwrap_or(HEADER_LEN).clamp(HEADER_LEN, len);
        let opened = buffer.scan()?;
        Ok((buffer, opened))
    }

    /// Counts the pending records, and cuts off a torn tail.
    fn scan(&mut self) -> Result<Opened, BufferError> {
        let mut opened = Opened::default();
        let mut at = self.replayed_to;
        loop {
            let (window, eof) = self.window(at)?;
            let mut walk = walk(&window, eof, usize::MAX);
            if walk.trouble {
                let (rest, _) = self.rest(at)?;
                walk = walk_all(&rest);
            }
            opened.pending += walk.payloads.len() as u64;
            opened.damaged_bytes += walk.skipped.iter().map(|r| r.len() as u64).sum::<u64>();
            at += walk.end as u64;
            if walk.torn {
                opened.torn_bytes = self.len - at;
                self.cut(at)?;
                break;
            }
            if at >= self.len {
                break;
            }
        }
        self.pending = opened.pending;
        if opened.damaged_bytes > 0 {
            tracing::error!(
                path = %self.path.display(),
                bytes = opened.damaged_bytes,
                "the usage buffer has damaged records (checksum mismatch); they are skipped"
            );
        }
        Ok(opened)
    }

    /// Rows waiting to be written to the database.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Appends rows and syncs them to disk; rows past the size bound are not stored.
    /// Returns how many were stored (the first ones, in order).
    pub fn append(&mut self, rows: &[PlacedUsage]) -> Result<usize, BufferError> {
        let mut bytes = Vec::new();
        let mut stored = 0;
        for placed in rows {
            let Some(record) = encode_record(placed) else { continue };
            if self.len + (bytes.len() + record.len()) as u64 > self.max_bytes {
                break;
            }
            bytes.extend_from_slice(&record);
            stored += 1;
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        let written = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&bytes))
            .and_then(|_| self.file.sync_data());
        if let Err(source) = written {
            // Nothing half-written stays behind to be mistaken for a torn tail later.
            let _ = self.file.set_len(self.len);
            return Err(BufferError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.len += bytes.len() as u64;
        self.pending += stored as u64;
        Ok(stored)
    }

    /// Up to `max_rows` of the oldest rows not yet written to the database.
    pub fn next_chunk(&mut self, max_rows: usize) -> Result<Chunk, BufferError> {
        let at = self.replayed_to;
        if at >= self.len {
            return Ok(Chunk {
                end: at,
                ..Chunk::default()
            });
        }
        let (mut window, eof) = self.window(at)?;
        let mut walk = walk(&window, eof, max_rows);
        if walk.trouble {
            window = self.rest(at)?.0;
            walk = walk_all_up_to(&window, max_rows);
        }
        if walk.torn {
            // Only a failed append could leave this, and it cuts itself off; be safe anyway.
            self.cut(at + walk.end as u64)?;
        }
        let mut chunk = Chunk {
            records: walk.payloads.len() as u64,
            end: at + walk.end as u64,
            ..Chunk::default()
        };
        for payload in walk.payloads {
            match decode_payload(&window[payload]) {
                Some(placed) => chunk.rows.push(placed),
                None => chunk.unreadable += 1,
            }
        }
        Ok(chunk)
    }

    /// Records that `chunk` is in the database: the header moves past it, and a buffer with
    /// nothing left is emptied.
    pub fn mark_written(&mut self, chunk: &Chunk) -> Result<(), BufferError> {
        self.pending = self.pending.saturating_sub(chunk.records);
        if chunk.end >= self.len {
            self.pending = 0;
            self.cut(HEADER_LEN)?;
            return self.write_header(HEADER_LEN);
        }
        self.write_header(chunk.end)
    }

    fn write_header(&mut self, replayed_to: u64) -> Result<(), BufferError> {
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(FILE_MAGIC);
        header[8..16].copy_from_slice(&replayed_to.to_le_bytes());
        header[16..20].copy_from_slice(&crc32fast::hash(&replayed_to.to_le_bytes()).to_le_bytes());
        let result = self
            .file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(&header))
            .and_then(|_| self.file.sync_data());
        result.map_err(|source| BufferError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.replayed_to = replayed_to;
        Ok(())
    }

    /// Truncates the file to `len` bytes.
    fn cut(&mut self, len: u64) -> Result<(), BufferError> {
        let result = self.file.set_len(len).and_then(|_| self.file.sync_data());
        result.map_err(|source| BufferError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.len = len;
        self.replayed_to = self.replayed_to.min(len);
        Ok(())
    }

    fn read_at(&mut self, at: u64, into: &mut [u8]) -> std::io::Result<usize> {
        self.file.seek(SeekFrom::Start(at))?;
        let mut filled = 0;
        while filled < into.len() {
            match self.file.read(&mut into[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }

    /// Up to `WINDOW` bytes from `at`, and whether they reach the end of the file.
    fn window(&mut self, at: u64) -> Result<(Vec<u8>, bool), BufferError> {
        let want = (self.len.saturating_sub(at)).min(WINDOW as u64) as usize;
        self.read_exactly(at, want)
    }

    /// Everything from `at` to the end (only when a damaged record needs a look further on).
    fn rest(&mut self, at: u64) -> Result<(Vec<u8>, bool), BufferError> {
        let want = self.len.saturating_sub(at) as usize;
        self.read_exactly(at, want)
    }

    fn read_exactly(&mut self, at: u64, want: usize) -> Result<(Vec<u8>, bool), BufferError> {
        let mut bytes = vec![0u8; want];
        let got = self.read_at(at, &mut bytes).map_err(|source| BufferError::Io {
            path: self.path.clone(),
            source,
        })?;
        bytes.truncate(got);
        Ok((bytes, at + got as u64 >= self.len))
    }
}

#[cfg(unix)]
fn lock(file: &File, path: &Path) -> Result<(), BufferError> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(BufferError::InUse(path.to_path_buf())),
        Err(e) => Err(BufferError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

#[cfg(not(unix))]
fn lock(_file: &File, _path: &Path) -> Result<(), BufferError> {
    Ok(())
}

fn replayed_to(header: &[u8]) -> Option<u64> {
    let offset: [u8; 8] = header.get(8..16)?.try_into().ok()?;
    let crc: [u8; 4] = header.get(16..20)?.try_into().ok()?;
    (crc32fast::hash(&offset) == u32::from_le_bytes(crc)).then(|| u64::from_le_bytes(offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UsageRecord;
    use crate::usage::records::{record_at, walk, Next, KEY_LEN, RECORD_HEAD};
    use std::ops::Range;

    fn row(i: u64) -> PlacedUsage {
        PlacedUsage::new(
            crate::store::usage_key(1_700_000_000_000 + i as i64, i as u32),
            UsageRecord {
                at_ms: 1_700_000_000_000 + i as i64,
                api_key_id: Some(format!("key-{i}")),
                tier: Some("cloud".into()),
                route: Some("openai".into()),
                model: "gpt-4o".into(),
                model_served: Some("gpt-4o".into()),
                input_tokens: i,
                output_tokens: 2 * i,
                cost_usd: 0.1 * i as f64,
                ms_to_first_byte: Some(5),
                ms_total: 10,
                outcome: "ok".into(),
                status: 200,
                router: Some("r1".into()),
                id: Some(1000 + i),
                ..Default::default()
            },
        )
    }

    fn rows(range: Range<u64>) -> Vec<PlacedUsage> {
        range.map(row).collect()
    }

    fn read_all(buffer: &mut UsageBuffer) -> Vec<PlacedUsage> {
        buffer.next_chunk(usize::MAX).unwrap().rows
    }

    #[test]
    fn rows_come_back_in_order_and_a_written_buffer_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let (mut buffer, opened) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(opened, Opened::default());
        assert_eq!(buffer.append(&rows(0..3)).unwrap(), 3);
        assert_eq!(buffer.append(&rows(3..5)).unwrap(), 2);
        assert_eq!(buffer.pending(), 5);
        let first = buffer.next_chunk(2).unwrap();
        assert_eq!(first.rows, rows(0..2));
        buffer.mark_written(&first).unwrap();
        assert_eq!(buffer.pending(), 3);
        let rest = buffer.next_chunk(10).unwrap();
        assert_eq!(rest.rows, rows(2..5));
        buffer.mark_written(&rest).unwrap();
        assert_eq!(buffer.pending(), 0);
        assert_eq!(std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(), HEADER_LEN);
        assert!(buffer.next_chunk(10).unwrap().rows.is_empty());
    }

    #[test]
    fn a_reopened_buffer_resumes_after_the_rows_already_written() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut buffer, _) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
            buffer.append(&rows(0..4)).unwrap();
            let chunk = buffer.next_chunk(1).unwrap();
            buffer.mark_written(&chunk).unwrap();
        }
        let (mut buffer, opened) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(opened.pending, 3);
        assert_eq!(read_all(&mut buffer), rows(1..4));
    }

    #[test]
    fn a_torn_tail_after_a_crash_is_cut_off_and_the_whole_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let (mut buffer, _) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
            buffer.append(&rows(0..3)).unwrap();
        }
        let whole = std::fs::metadata(&path).unwrap().len();
        // The crash hit in the middle of a fourth record.
        let torn = encode_record(&row(3)).unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(file);
        let (mut buffer, opened) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(opened.pending, 3);
        assert_eq!(opened.torn_bytes, (torn.len() / 2) as u64);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            whole,
            "the torn tail is cut off"
        );
        assert_eq!(read_all(&mut buffer), rows(0..3));
        // Appends go on after the last whole record.
        buffer.append(&rows(3..4)).unwrap();
        drop(buffer);
        let (mut buffer, _) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(read_all(&mut buffer), rows(0..4));
    }

    #[test]
    fn a_checksum_mismatch_is_detected_and_only_that_record_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let (mut buffer, _) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
            buffer.append(&rows(0..3)).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte inside the second record's payload.
        let second = HEADER_LEN as usize + encode_record(&row(0)).unwrap().len();
        bytes[second + RECORD_HEAD + KEY_LEN + 3] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (mut buffer, opened) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(opened.pending, 2);
        assert_eq!(opened.damaged_bytes, encode_record(&row(1)).unwrap().len() as u64);
        assert_eq!(read_all(&mut buffer), vec![row(0), row(2)]);
    }

    #[test]
    fn a_checksum_mismatch_in_the_last_record_is_a_torn_tail() {
        let record = encode_record(&row(0)).unwrap();
        let mut damaged = record.clone();
        damaged[RECORD_HEAD + 1] ^= 1;
        assert_eq!(record_at(&damaged, 0), Next::Bad);
        let mut buf = record.clone();
        buf.extend_from_slice(&damaged);
        let walk = walk_all(&buf);
        assert_eq!(walk.payloads.len(), 1);
        assert!(walk.torn);
        assert_eq!(walk.end, record.len());
    }

    #[test]
    fn a_bad_record_in_a_partial_window_asks_for_the_rest() {
        let mut buf = encode_record(&row(0)).unwrap();
        buf.extend_from_slice(b"garbage!garbage!");
        let walk = walk(&buf, false, usize::MAX);
        assert!(walk.trouble);
        assert_eq!(walk.payloads.len(), 1);
    }

    #[test]
    fn rows_past_the_size_bound_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode_record(&row(0)).unwrap().len() as u64;
        let (mut buffer, _) = UsageBuffer::open(dir.path(), HEADER_LEN + 2 * one + one / 2).unwrap();
        assert_eq!(buffer.append(&rows(0..5)).unwrap(), 2);
        assert_eq!(buffer.append(&rows(5..6)).unwrap(), 0);
        assert_eq!(buffer.pending(), 2);
        let chunk = buffer.next_chunk(10).unwrap();
        buffer.mark_written(&chunk).unwrap();
        assert_eq!(buffer.append(&rows(5..6)).unwrap(), 1, "room again once written");
    }

    #[test]
    fn a_second_process_cannot_open_a_held_buffer_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_held, _) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
        // flock locks are per open file description: a second open conflicts like a second
        // process would.
        assert!(matches!(
            UsageBuffer::open(dir.path(), 1 << 20),
            Err(BufferError::InUse(_))
        ));
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(FILE_NAME), b"something else entirely, not ours").unwrap();
        assert!(matches!(
            UsageBuffer::open(other.path(), 1 << 20),
            Err(BufferError::NotABuffer(_))
        ));
    }

    #[test]
    fn a_torn_header_replays_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let (mut buffer, _) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
            buffer.append(&rows(0..3)).unwrap();
            let chunk = buffer.next_chunk(2).unwrap();
            buffer.mark_written(&chunk).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let (mut buffer, opened) = UsageBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(opened.pending, 3);
        assert_eq!(read_all(&mut buffer), rows(0..3));
    }
}
