//! Orders a cache's reloads against this router's own edits.
//!
//! Each in-memory cache of shared tables (credentials, providers, aliases and settings,
//! agents, prices and cloud-equivalent settings) changes two ways: this router applies its
//! own admin change once the write committed, and a reload after a change notice (another
//! router's write, or the periodic safety net) reads the tables and swaps what it read in.
//! A reload whose read began before this router's own change committed, and whose swap comes
//! after that change was applied, would undo it until the next notice. The same holds between
//! two reloads: a read taken after this router's own write may still predate another
//! router's change that a concurrent reload (after its notice) already swapped in.
//!
//! `Edits` counts every change to the cache: this router's own edits and every swap. A
//! reload swaps only if nothing was counted since its read began, and otherwise reads again
//! (the new read sees every committed change counted before it). So whatever is swapped in
//! last was read after everything applied before it.
//!
//! The count's lock is held only to read it, or to apply an edit or swap a read in (no
//! await), never across the read itself.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct Edits {
    count: Mutex<u64>,
}

impl Edits {
    /// Applies this router's own change to the cache, after its write committed.
    pub fn apply<R>(&self, edit: impl FnOnce() -> R) -> R {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        let out = edit();
        *count += 1;
        out
    }

    /// Reads with `read` and installs what it read with `install`, unless an edit was
    /// applied or another read installed since this read began: that read may predate
    /// them, so it reads again.
    pub async fn reload<T, E, Fut>(&self, mut read: impl FnMut() -> Fut, install: impl FnOnce(T)) -> Result<(), E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        loop {
            let seen = *self.count.lock().unwrap_or_else(PoisonError::into_inner);
            let value = read().await?;
            let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
            if *count == seen {
                install(value);
                *count += 1;
                return Ok(());
            }
        }
    }

    /// `reload` after this router's own write committed (a cache refreshed by reading the
    /// tables back rather than edited in place): counted as an edit first, so a reload that
    /// read before the write does not swap its older read in after this one.
    pub async fn reload_own<T, E, Fut>(&self, read: impl FnMut() -> Fut, install: impl FnOnce(T)) -> Result<(), E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.apply(|| ());
        self.reload(read, install).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::sync::oneshot;

    /// A reload reads the table (0), then stalls; meanwhile this router writes 1 and applies
    /// it to the cache. Without the count, the stalled reload would swap 0 back in.
    #[tokio::test]
    async fn a_reload_that_read_before_an_own_edit_reads_again_instead_of_undoing_it() {
        let edits = Edits::default();
        let table = Mutex::new(0);
        let cache = Mutex::new(0);
        let reads = AtomicU32::new(0);
        let (release, released) = oneshot::channel::<()>();
        let stall = Mutex::new(Some(released));
        let (table, cache, reads, stall) = (&table, &cache, &reads, &stall);
        let reload = edits.reload(
            || async move {
                let value = *table.lock().unwrap();
                reads.fetch_add(1, Ordering::SeqCst);
                let first = stall.lock().unwrap().take();
                if let Some(wait) = first {
                    let _ = wait.await;
                }
                Ok::<_, ()>(value)
            },
            |value| *cache.lock().unwrap() = value,
        );
        let edit = async {
            tokio::task::yield_now().await;
            *table.lock().unwrap() = 1;
            edits.apply(|| *cache.lock().unwrap() = 1);
            let _ = release.send(());
        };
        let (reloaded, ()) = tokio::join!(reload, edit);
        assert_eq!(reloaded, Ok(()));
        assert_eq!(*cache.lock().unwrap(), 1, "the stale read undid the edit");
        assert_eq!(reads.load(Ordering::SeqCst), 2, "the stale read was read again");
    }

    #[tokio::test]
    async fn a_reload_with_no_edit_meanwhile_installs_its_read_once() {
        let edits = Edits::default();
        let cache = Mutex::new(0);
        let reads = AtomicU32::new(0);
        let reads = &reads;
        let result = edits
            .reload(
                || async move {
                    reads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(7)
                },
                |value| *cache.lock().unwrap() = value,
            )
            .await;
        assert_eq!(result, Ok(()));
        assert_eq!((*cache.lock().unwrap(), reads.load(Ordering::SeqCst)), (7, 1));
        let failed = edits
            .reload(|| async { Err::<u32, _>("down") }, |_| unreachable!())
            .await;
        assert_eq!(failed, Err("down"));
    }
}
