//! Usage rows that may be written more than once: a router on PostgreSQL that could not
//! tell whether a commit went through (the connection dropped during it, a timeout) keeps
//! the rows in its disk buffer and writes them again later, maybe after a crash.
//!
//! Each row comes with the key picked for it before the first attempt (its time and the
//! writer's sequence number) and a random `id`. The row goes to the first free key from that
//! one on, as every usage write does; a row met on the way that carries the same `id` is this
//! row, written before, and the row is skipped, its spend not added again. The walk from the
//! same start meets the earlier copy before any free key, because keys are never freed in
//! between (pruning removes only rows past retention, far older than an outage's backlog).

use super::kv::WriteTxn;
use super::tables::{USAGE, USAGE_POSTINGS, USAGE_SPEND};
use super::usage::NewSpend;
use super::usage_postings::NewPostings;
use super::{decode, encode, key_time_ms, usage_key, Store, StoreError, UsageRecord};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// A row and the key picked for it before it was first written.
#[derive(Debug, Clone)]
pub struct PlacedUsage {
    pub key: u128,
    /// Not changed once encoded (`encoded` keeps the first encoding).
    pub row: UsageRecord,
    /// The row's stored form, made once: a journaled row's record and its commit share it,
    /// rather than each encoding the row on a request's path.
    encoded: OnceLock<Vec<u8>>,
}

impl PlacedUsage {
    pub fn new(key: u128, row: UsageRecord) -> Self {
        PlacedUsage {
            key,
            row,
            encoded: OnceLock::new(),
        }
    }

    /// The row as it is stored (its JSON), encoded on first use.
    pub fn encoded(&self) -> Result<&[u8], StoreError> {
        if let Some(bytes) = self.encoded.get() {
            return Ok(bytes);
        }
        let bytes = encode("usage", &self.row)?;
        Ok(self.encoded.get_or_init(|| bytes))
    }
}

/// Two placed rows are the same row at the same key, whether or not either was encoded yet.
impl PartialEq for PlacedUsage {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.row == other.row
    }
}

/// A batch whose keys span at most this much time has its stored neighbours read in one go.
const PREFETCH_SPAN_MS: i64 = 10_000;

/// The key after `key` in the same millisecond.
fn next_key(key: u128) -> u128 {
    usage_key(key_time_ms(key), (key as u32).wrapping_add(1))
}

impl Store {
    /// Writes each row once (see the module comment) in one transaction, with its index
    /// entries and spend. Returns how many rows were new.
    pub async fn insert_usage_once(&self, rows: Arc<Vec<PlacedUsage>>) -> Result<usize, StoreError> {
        self.write(move |txn| insert_once(txn, &rows)).await
    }

    /// `insert_usage_once` for rows no request waits on: on redb the commit runs on the
    /// low-priority commit thread (`idle_lane.rs`), yielding the CPU to requests.
    pub async fn insert_usage_once_when_idle(&self, rows: Arc<Vec<PlacedUsage>>) -> Result<usize, StoreError> {
        self.write_when_idle(move |txn| insert_once(txn, &rows)).await
    }
}

fn insert_once(txn: &WriteTxn<'_>, rows: &[PlacedUsage]) -> Result<usize, StoreError> {
    let mut table = txn.open_table(USAGE)?;
    let mut spend = txn.open_table(USAGE_SPEND)?;
    let mut postings = NewPostings::default();
    let mut added = NewSpend::default();
    // The rows already stored across the batch's keys, read in one range rather than
    // one lookup per row (on PostgreSQL a lookup is a round trip). Only for a batch
    // of a few seconds (a live one): a replayed backlog may span hours of other
    // routers' rows, and is looked up key by key, as is a walk past the range.
    let (Some(low), Some(high)) = (rows.iter().map(|p| p.key).min(), rows.iter().map(|p| p.key).max()) else {
        return Ok(0);
    };
    // The last key read in that one range (0: none was).
    let covered = if key_time_ms(high) - key_time_ms(low) <= PREFETCH_SPAN_MS {
        high
    } else {
        0
    };
    let mut taken: BTreeMap<u128, Cow<'_, [u8]>> = BTreeMap::new();
    if covered != 0 {
        for stored in table.range(low, covered.saturating_add(1), false)? {
            let (key, value) = stored?;
            taken.insert(key, Cow::Owned(value));
        }
    }
    let mut written = 0;
    'rows: for placed in rows {
        let mut key = placed.key;
        loop {
            let stored = match taken.get(&key) {
                Some(value) => Some(decode::<UsageRecord>("usage", value)?),
                None if key <= covered => None,
                None => table
                    .get(key)?
                    .map(|value| decode::<UsageRecord>("usage", &value))
                    .transpose()?,
            };
            let Some(stored) = stored else { break };
            if placed.row.id.is_some() && stored.id == placed.row.id {
                continue 'rows;
            }
            key = next_key(key);
        }
        let encoded = placed.encoded()?;
        table.insert(key, encoded)?;
        taken.insert(key, Cow::Borrowed(encoded));
        postings.add(key, &placed.row);
        added.add(&placed.row);
        written += 1;
    }
    added.write(&mut spend)?;
    postings.write(&mut txn.open_table(USAGE_POSTINGS)?)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_key_stays_in_the_same_millisecond() {
        let key = usage_key(1_000, u32::MAX);
        assert_eq!(key_time_ms(next_key(key)), 1_000);
        assert_eq!(next_key(usage_key(5, 7)), usage_key(5, 8));
    }

    #[test]
    fn a_placed_row_is_encoded_once_as_the_store_encodes_it() {
        let row = UsageRecord {
            at_ms: 1_700_000_000_000,
            model: "gpt-4o \"quoted\"".into(),
            id: Some(7),
            ..Default::default()
        };
        let placed = PlacedUsage::new(usage_key(row.at_ms, 1), row.clone());
        let first = placed.encoded().unwrap().as_ptr();
        assert_eq!(placed.encoded().unwrap(), encode("usage", &row).unwrap().as_slice());
        assert_eq!(placed.encoded().unwrap().as_ptr(), first, "encoded again");
        // Encoded or not, it is the same row.
        assert_eq!(placed, PlacedUsage::new(placed.key, row));
    }
}
