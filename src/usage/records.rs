//! The record format of the usage files (the PostgreSQL disk buffer, `buffer.rs`, and the
//! journal, `journal.rs`): an append-only run of checksummed records, each the magic `AXUR`,
//! the payload's length (u32, little-endian), its CRC-32, and the payload: the row's usage key
//! (u128, big-endian), then the row as JSON with its `id`.
//!
//! Reading tells three things apart: whole records; a torn last record (a crash in the middle
//! of an append: it was never acknowledged); and damage in the middle (a checksum mismatch),
//! skipped up to the next valid record and reported.

use crate::store::PlacedUsage;
use std::ops::Range;

const RECORD_MAGIC: &[u8; 4] = b"AXUR";
/// Magic, length, checksum.
pub(super) const RECORD_HEAD: usize = 12;
pub(super) const KEY_LEN: usize = 16;
/// A usage row is about a kilobyte; anything near this is damage, not a row.
const MAX_PAYLOAD: usize = 1024 * 1024;

/// One record's bytes; `None` for a row too large to be a usage row.
pub(super) fn encode_record(placed: &PlacedUsage) -> Option<Vec<u8>> {
    let mut record = Vec::new();
    append_record(placed, &mut record).then_some(record)
}

/// Appends one record to `out`; `false`, with nothing appended, for a row too large to be a
/// usage row.
pub(super) fn append_record(placed: &PlacedUsage, out: &mut Vec<u8>) -> bool {
    let Ok(json) = placed.encoded() else {
        return false;
    };
    let len = KEY_LEN + json.len();
    if len > MAX_PAYLOAD {
        return false;
    }
    let start = out.len();
    out.reserve(RECORD_HEAD + len);
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&placed.key.to_be_bytes());
    out.extend_from_slice(json);
    let crc = crc32fast::hash(&out[start + RECORD_HEAD..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    true
}

pub(super) fn decode_payload(payload: &[u8]) -> Option<PlacedUsage> {
    let key: [u8; KEY_LEN] = payload.get(..KEY_LEN)?.try_into().ok()?;
    let row = serde_json::from_slice(&payload[KEY_LEN..]).ok()?;
    Some(PlacedUsage::new(u128::from_be_bytes(key), row))
}

#[derive(Debug, PartialEq)]
pub(super) enum Next {
    /// A whole record with a matching checksum.
    Record { payload: Range<usize>, end: usize },
    /// The bytes end before the record does.
    Short,
    /// Not a record: wrong magic, impossible length, or a checksum mismatch.
    Bad,
}

pub(super) fn record_at(buf: &[u8], at: usize) -> Next {
    let Some(head) = buf.get(at..at + RECORD_HEAD) else {
        return Next::Short;
    };
    if &head[..4] != RECORD_MAGIC {
        return Next::Bad;
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if !(KEY_LEN..=MAX_PAYLOAD).contains(&len) {
        return Next::Bad;
    }
    let start = at + RECORD_HEAD;
    let Some(payload) = buf.get(start..start + len) else {
        return Next::Short;
    };
    if crc32fast::hash(payload) != u32::from_le_bytes([head[8], head[9], head[10], head[11]]) {
        return Next::Bad;
    }
    Next::Record {
        payload: start..start + len,
        end: start + len,
    }
}

/// Where the first whole, valid record after `from` starts.
pub(super) fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < buf.len() {
        let found = at + memchr::memmem::find(&buf[at..], RECORD_MAGIC)?;
        if matches!(record_at(buf, found), Next::Record { .. }) {
            return Some(found);
        }
        at = found + 1;
    }
    None
}

#[derive(Debug, Default, PartialEq)]
pub(super) struct Walk {
    pub payloads: Vec<Range<usize>>,
    /// Offset after the last record taken (or damage skipped).
    pub end: usize,
    /// Damaged bytes passed over.
    pub skipped: Vec<Range<usize>>,
    /// From `end` on, the bytes are a torn last record: nothing valid follows.
    pub torn: bool,
    /// A bad record in a window that does not reach the end of the file: the caller must
    /// look at everything after it to tell damage from a torn tail.
    pub trouble: bool,
}

/// Reads up to `max` records from the start of `buf`; `eof` when `buf` ends where the file
/// does.
pub(super) fn walk(buf: &[u8], eof: bool, max: usize) -> Walk {
    let mut walk = Walk::default();
    let mut at = 0;
    while walk.payloads.len() < max {
        match record_at(buf, at) {
            Next::Record { payload, end } => {
                walk.payloads.push(payload);
                at = end;
            }
            Next::Short if at == buf.len() || !eof => break,
            Next::Bad if !eof => {
                walk.trouble = true;
                break;
            }
            Next::Short | Next::Bad => match resync(buf, at + 1) {
                Some(next) => {
                    walk.skipped.push(at..next);
                    at = next;
                }
                None => {
                    walk.torn = true;
                    break;
                }
            },
        }
    }
    walk.end = at;
    walk
}

pub(super) fn walk_all(buf: &[u8]) -> Walk {
    walk(buf, true, usize::MAX)
}

pub(super) fn walk_all_up_to(buf: &[u8], max: usize) -> Walk {
    walk(buf, true, max)
}
