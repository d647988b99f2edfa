//! The request log's filter index: for each `field = value` worth indexing, the keys of
//! the rows that match it, stored as chunks of one write batch's keys.
//!
//! One entry per filter per batch, not one per row: a usage commit of a hundred rows
//! writes a handful of entries where it wrote four hundred, and an entry's key is two
//! integers (the filter's hash, the chunk's first row key), compared without decoding
//! text. A chunk holds keys less than a second apart (`CHUNK_SPAN`), so reading a filter
//! newest first only has to look a second of chunks ahead to put the keys of overlapping
//! batches (rows finish out of order, several routers share PostgreSQL) back in order.
//!
//! Two filters whose hashes collide share entries; the request log checks every row it
//! reads against the filters asked, so a collision costs a few rows read, never a wrong
//! answer.

use super::kv::Table;
use super::usage::{LogField, UsageRecord};
use super::StoreError;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::Hasher;

pub(super) type PostingsTable<'t> = Table<'t, (u64, u128), &'static [u8]>;

/// The widest spread of row keys in one chunk: one second (keys are millis << 32).
const CHUNK_SPAN: u128 = 1_000 << 32;
/// Keys per chunk at most, so a flood's batch is not one huge value.
const CHUNK_KEYS: usize = 4_096;
const KEY_BYTES: usize = 16;

/// The hash a filter's entries are stored under: FNV-1a (stable across builds and
/// machines, unlike std's) of `field\0value`, the value clipped as the index clips it.
pub fn filter_hash(field: LogField, value: &str) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(field.name().as_bytes());
    hasher.write(&[0]);
    hasher.write(super::usage::clip(value).as_bytes());
    hasher.finish()
}

/// The postings of one write batch, gathered as rows are written and stored at its end.
#[derive(Debug, Default)]
pub(super) struct NewPostings {
    by_filter: BTreeMap<u64, Vec<u128>>,
}

impl NewPostings {
    pub fn add(&mut self, key: u128, row: &UsageRecord) {
        for hash in row.index_hashes() {
            self.by_filter.entry(hash).or_default().push(key);
        }
    }

    /// Each filter the batch's rows match gets one chunk per second of their keys (more
    /// for a very dense one); a filter no row matches gets nothing.
    pub fn write(self, table: &mut PostingsTable<'_>) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        for (hash, mut keys) in self.by_filter {
            keys.sort_unstable();
            keys.dedup();
            for chunk in chunks(&keys) {
                bytes.clear();
                chunk.iter().for_each(|key| bytes.extend_from_slice(&key.to_be_bytes()));
                table.insert((hash, chunk[0]), bytes.as_slice())?;
            }
        }
        Ok(())
    }
}

/// `keys` (sorted) cut where a chunk would span `CHUNK_SPAN` or hold `CHUNK_KEYS`.
fn chunks(keys: &[u128]) -> impl Iterator<Item = &[u128]> {
    let mut rest = keys;
    std::iter::from_fn(move || {
        let first = *rest.first()?;
        let len = rest
            .iter()
            .take(CHUNK_KEYS)
            .position(|key| key - first >= CHUNK_SPAN)
            .unwrap_or(rest.len().min(CHUNK_KEYS));
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

fn decode_keys(bytes: &[u8]) -> Result<impl Iterator<Item = u128> + '_, StoreError> {
    if bytes.len() % KEY_BYTES != 0 {
        return Err(StoreError::Corrupt(
            "request-log index",
            format!("a chunk of {} bytes", bytes.len()),
        ));
    }
    Ok(bytes.chunks_exact(KEY_BYTES).map(|key| {
        let mut be = [0u8; KEY_BYTES];
        be.copy_from_slice(key);
        u128::from_be_bytes(be)
    }))
}

/// The keys of the rows matching filter `hash` with `lower <= key < upper`, newest first.
pub(super) fn newest_first<'t>(
    table: &'t PostingsTable<'_>,
    hash: u64,
    lower: u128,
    upper: u128,
) -> Result<NewestFirst<'t>, StoreError> {
    // A chunk that starts up to a span below `lower` may still hold keys above it.
    let from = lower.saturating_sub(CHUNK_SPAN - 1);
    Ok(NewestFirst {
        chunks: table.range((hash, from), (hash, upper), true)?,
        pending: BinaryHeap::new(),
        oldest_first: None,
        lower,
        upper,
        read_all: false,
    })
}

/// Merges chunks read newest first: a key is handed out once no chunk still unread can
/// hold a newer one.
pub(super) struct NewestFirst<'t> {
    chunks: super::kv::Rows<'t, (u64, u128), &'static [u8]>,
    pending: BinaryHeap<u128>,
    /// The first key of the last chunk read: every chunk after it starts lower.
    oldest_first: Option<u128>,
    lower: u128,
    upper: u128,
    read_all: bool,
}

impl Iterator for NewestFirst<'_> {
    type Item = Result<u128, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(&newest) = self.pending.peek() {
                // Chunks still unread start below `oldest_first`, so hold keys below
                // `oldest_first + CHUNK_SPAN`.
                let settled = self.read_all || self.oldest_first.is_some_and(|first| newest >= first + CHUNK_SPAN);
                if settled {
                    return self.pending.pop().map(Ok);
                }
            } else if self.read_all {
                return None;
            }
            match self.chunks.next() {
                None => self.read_all = true,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(((_, first), bytes))) => {
                    let keys = match decode_keys(&bytes) {
                        Ok(keys) => keys,
                        Err(e) => return Some(Err(e)),
                    };
                    self.pending
                        .extend(keys.filter(|key| (self.lower..self.upper).contains(key)));
                    self.oldest_first = Some(first);
                }
            }
        }
    }
}

/// Removes every key up to `through` from the chunks of `hashes`. Pruning removes the
/// oldest rows, all of them up to a key, so a chunk starting at or before it keeps only
/// its newer keys.
pub(super) fn remove_through(
    table: &mut PostingsTable<'_>,
    hashes: &BTreeSet<u64>,
    through: u128,
) -> Result<(), StoreError> {
    for &hash in hashes {
        let mut affected = Vec::new();
        for entry in table.range((hash, 0), (hash, through.saturating_add(1)), false)? {
            let ((_, first), bytes) = entry?;
            let kept: Vec<u128> = decode_keys(&bytes)?.filter(|key| *key > through).collect();
            affected.push((first, kept));
        }
        for (first, kept) in affected {
            table.remove((hash, first))?;
            if let Some(&new_first) = kept.first() {
                let bytes: Vec<u8> = kept.iter().flat_map(|key| key.to_be_bytes()).collect();
                table.insert((hash, new_first), bytes.as_slice())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::USAGE_POSTINGS;
    use crate::store::{scratch_store, usage_key};
    use proptest::prelude::*;

    /// Writes each batch's keys as one write's postings of filter 7 (and every third key
    /// under filter 8 too), then reads filter 7 in `[lower, upper)`.
    fn written_then_read(batches: Vec<Vec<u128>>, lower: u128, upper: u128, through: Option<u128>) -> Vec<u128> {
        let (_dir, store, runtime) = scratch_store();
        runtime.block_on(async {
            for batch in batches {
                store
                    .write(move |txn| {
                        let mut postings = NewPostings::default();
                        for (i, key) in batch.into_iter().enumerate() {
                            postings.by_filter.entry(7).or_default().push(key);
                            if i % 3 == 0 {
                                postings.by_filter.entry(8).or_default().push(key);
                            }
                        }
                        postings.write(&mut txn.open_table(USAGE_POSTINGS)?)
                    })
                    .await
                    .unwrap();
            }
            if let Some(through) = through {
                store
                    .write(move |txn| {
                        remove_through(&mut txn.open_table(USAGE_POSTINGS)?, &BTreeSet::from([7, 8]), through)
                    })
                    .await
                    .unwrap();
            }
            store
                .read(move |txn| newest_first(&txn.open_table(USAGE_POSTINGS)?, 7, lower, upper)?.collect())
                .await
                .unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn overlapping_batches_read_back_newest_first_exactly_once(
            batches in prop::collection::vec(
                (0i64..6_000, prop::collection::vec((0i64..2_500, 0u32..3), 1..40)),
                1..8,
            ),
            lower_ms in 0i64..6_000,
            width_ms in 0i64..9_000,
            pruned_ms in prop::option::of(0i64..9_000),
        ) {
            let mut all = std::collections::BTreeSet::new();
            let batches: Vec<Vec<u128>> = batches
                .into_iter()
                .map(|(start, rows)| {
                    rows.into_iter()
                        .map(|(ms, seq)| usage_key(start + ms, seq))
                        .filter(|key| all.insert(*key))
                        .collect()
                })
                .collect();
            let (lower, upper) = (usage_key(lower_ms, 0), usage_key(lower_ms + width_ms, 0));
            let through = pruned_ms.map(|ms| usage_key(ms, 0));
            let expected: Vec<u128> = all
                .iter()
                .rev()
                .copied()
                .filter(|key| (lower..upper).contains(key) && through.is_none_or(|t| *key > t))
                .collect();
            prop_assert_eq!(written_then_read(batches, lower, upper, through), expected);
        }
    }

    #[test]
    fn a_batch_is_cut_into_chunks_a_second_wide_at_most() {
        let keys: Vec<u128> = [0, 10, 999, 1_000, 1_500, 5_000]
            .iter()
            .map(|ms| usage_key(1_000_000 + ms, 0))
            .collect();
        let cut: Vec<usize> = chunks(&keys).map(<[u128]>::len).collect();
        assert_eq!(cut, vec![3, 2, 1]);
        let dense: Vec<u128> = (0..10_000).map(|seq| usage_key(5, seq)).collect();
        let cut: Vec<usize> = chunks(&dense).map(<[u128]>::len).collect();
        assert_eq!(cut, vec![4_096, 4_096, 1_808]);
    }

    #[test]
    fn the_hash_is_stable_and_tells_fields_apart() {
        // Stored on disk: a change of algorithm would orphan every entry written before.
        assert_eq!(filter_hash(LogField::Model, "gpt-4o"), 0x280a_3652_d182_1d5b);
        assert_ne!(filter_hash(LogField::Model, "x"), filter_hash(LogField::Route, "x"));
        let long = "é".repeat(300);
        assert_eq!(
            filter_hash(LogField::Model, &long),
            filter_hash(LogField::Model, &long[..512])
        );
    }
}
