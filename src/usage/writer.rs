//! The usage writer: rows arrive on a channel and are committed in groups, one redb
//! transaction (one fsync) for whatever is queued when the previous commit ends. A row
//! sent with an acknowledgement is durable once that acknowledgement arrives, which is how
//! an answered request's row is on disk before the client reads its last byte. Each row is
//! stamped with the router that wrote it.

use crate::store::{Store, UsageRecord};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Rows per transaction at most, so one commit stays short under a flood.
const BATCH_ROWS: usize = 2000;

pub(super) enum Job {
    /// A row, and who waits for it to be durable.
    Row(Box<UsageRecord>, Option<oneshot::Sender<()>>),
    /// Answered once every row queued before it is committed: a read sees them all.
    Barrier(oneshot::Sender<()>),
}

pub(super) async fn run(store: Store, mut rx: mpsc::Receiver<Job>, lost: Arc<AtomicU64>, router: Arc<str>) {
    // Keys are time-based; a random start keeps rows of two processes in the same
    // millisecond (a restart) apart, and the store skips any key already taken.
    let mut seq: u32 = rand::random();
    while let Some(first) = rx.recv().await {
        let mut rows = Vec::new();
        let mut waiting = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Row(mut row, ack) => {
                    row.router.get_or_insert_with(|| router.to_string());
                    rows.push(*row);
                    waiting.extend(ack);
                }
                Job::Barrier(ack) => waiting.push(ack),
            }
            if rows.len() < BATCH_ROWS {
                next = rx.try_recv().ok();
            }
        }
        if !rows.is_empty() {
            let count = rows.len();
            match store.insert_usage(rows, seq).await {
                Ok(next) => seq = next,
                Err(e) => {
                    lost.fetch_add(count as u64, Ordering::Relaxed);
                    tracing::error!(error = %e, rows = count, "writing usage rows failed");
                }
            }
        }
        for ack in waiting {
            let _ = ack.send(());
        }
    }
}
