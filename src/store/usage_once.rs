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

use super::tables::{USAGE, USAGE_INDEX, USAGE_SPEND};
use super::usage::{add_spend, add_to_index};
use super::{decode, encode, key_time_ms, usage_key, Store, StoreError, UsageRecord};
use std::sync::Arc;

/// A row and the key picked for it before it was first written.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedUsage {
    pub key: u128,
    pub row: UsageRecord,
}

/// The key after `key` in the same millisecond.
fn next_key(key: u128) -> u128 {
    usage_key(key_time_ms(key), (key as u32).wrapping_add(1))
}

impl Store {
    /// Writes each row once (see the module comment) in one transaction, with its index
    /// entries and spend. Returns how many rows were new.
    pub async fn insert_usage_once(&self, rows: Arc<Vec<PlacedUsage>>) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(USAGE)?;
            let mut index = txn.open_table(USAGE_INDEX)?;
            let mut spend = txn.open_table(USAGE_SPEND)?;
            let mut written = 0;
            'rows: for placed in rows.iter() {
                let mut key = placed.key;
                while let Some(stored) = table.get(key)? {
                    let stored: UsageRecord = decode("usage", &stored)?;
                    if placed.row.id.is_some() && stored.id == placed.row.id {
                        continue 'rows;
                    }
                    key = next_key(key);
                }
                table.insert(key, encode("usage", &placed.row)?.as_slice())?;
                add_to_index(&mut index, key, &placed.row)?;
                add_spend(&mut spend, &placed.row)?;
                written += 1;
            }
            Ok(written)
        })
        .await
    }
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
}
