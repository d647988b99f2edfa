//! Change notices from the shared database: every write transaction on PostgreSQL names the
//! tables it changed in a `pg_notify` delivered at commit (see `postgres.rs`); each router
//! listens on its own connection and reloads the caches of those tables.
//!
//! A notice sent while a router was not listening is lost, so on every (re)connect, and
//! every `resync` besides, the feed says `All`: the safety net re-reads everything.

use super::postgres::{tls, PgStore, CHANGES_CHANNEL, ROUTER_LOCK};
use super::Store;
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// These tables changed (logical names, as `tables.rs` declares them).
    Tables(BTreeSet<String>),
    /// Anything may have changed: re-read every cache.
    All,
}

impl Changed {
    pub fn touches(&self, table: &str) -> bool {
        match self {
            Changed::Tables(tables) => tables.contains(table),
            Changed::All => true,
        }
    }

    /// Folds a later notice into this one.
    pub fn merge(&mut self, other: Changed) {
        match (self, other) {
            (Changed::Tables(mine), Changed::Tables(theirs)) => mine.extend(theirs),
            (me, _) => *me = Changed::All,
        }
    }
}

/// The feed of changes, and whether it is live right now (for `/healthz`).
pub struct ChangeFeed {
    pub changes: mpsc::Receiver<Changed>,
    pub listening: Arc<AtomicBool>,
}

impl Store {
    /// Starts listening for other routers' changes; `None` on redb (one router, nothing to
    /// hear). The listener stops when the feed is dropped.
    pub fn watch_changes(&self, resync: Duration) -> Option<ChangeFeed> {
        let pg = match &self.backend {
            super::Backend::Postgres(pg) => pg.clone(),
            super::Backend::Redb(_) => return None,
        };
        let (tx, rx) = mpsc::channel(64);
        let listening = Arc::new(AtomicBool::new(false));
        tokio::spawn(listen(pg, tx, listening.clone(), resync));
        Some(ChangeFeed { changes: rx, listening })
    }
}

async fn listen(pg: Arc<PgStore>, tx: mpsc::Sender<Changed>, listening: Arc<AtomicBool>, resync: Duration) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match listen_once(&pg, &tx, &listening, resync).await {
            Ok(Stop::FeedDropped) => return,
            Ok(Stop::Lost) => tracing::warn!("lost the PostgreSQL change listener; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "cannot listen for PostgreSQL changes; retrying"),
        }
        listening.store(false, Ordering::Relaxed);
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

enum Stop {
    FeedDropped,
    Lost,
}

async fn listen_once(
    pg: &PgStore,
    tx: &mpsc::Sender<Changed>,
    listening: &AtomicBool,
    resync: Duration,
) -> Result<Stop, String> {
    let tls = tls().map_err(|e| e.to_string())?;
    let (client, mut connection) = pg.config.connect(tls).await.map_err(|e| e.to_string())?;
    let (notices_tx, mut notices) = mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notices_tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the PostgreSQL change listener's connection failed");
                    return;
                }
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
            .await
            .map_err(|e| e.to_string())?;
        // Says "a router runs here" to the tools that must not run beside one; released
        // when this connection closes.
        client
            .execute("SELECT pg_advisory_lock_shared($1)", &[&ROUTER_LOCK])
            .await
            .map_err(|e| e.to_string())?;
        listening.store(true, Ordering::Relaxed);
        // Whatever changed while nobody listened.
        if tx.send(Changed::All).await.is_err() {
            return Ok(Stop::FeedDropped);
        }
        let mut resync_timer = tokio::time::interval_at(tokio::time::Instant::now() + resync, resync);
        loop {
            let change = tokio::select! {
                notice = notices.recv() => match notice {
                    Some(payload) => Changed::Tables(payload.split(',').map(str::to_string).collect()),
                    None => return Ok(Stop::Lost),
                },
                _ = resync_timer.tick() => Changed::All,
            };
            if tx.send(change).await.is_err() {
                return Ok(Stop::FeedDropped);
            }
        }
    }
    .await;
    driver.abort();
    result
}
