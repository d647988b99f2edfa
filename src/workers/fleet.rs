//! A worker's fleet: one connection per router given with `--server`, each reconnecting with
//! its own backoff, all drawing on one slot pool (`pool.rs`). What one connection does is
//! `session::Session`.

use super::client::{connect_url, ConnectionConfig, JobHandler, WorkerError};
use super::pool::SlotPool;
use super::session::{Offer, Session, SessionEnd};
use rand::Rng;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection that lived this long was healthy: the next failure starts backing off afresh.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);

/// Each `--server` once (the same router given twice would be dialled twice and counted
/// twice), with its WebSocket URL. An empty list or a bad URL is a configuration error.
fn fleet_targets(servers: &[String]) -> Result<Vec<(String, String)>, WorkerError> {
    let mut targets: Vec<(String, String)> = Vec::new();
    for server in servers.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let url = connect_url(server)?;
        if targets.iter().any(|(_, known)| *known == url) {
            tracing::warn!(server, "--server lists this router twice; connecting once");
            continue;
        }
        targets.push((server.trim_end_matches('/').to_string(), url));
    }
    if targets.is_empty() {
        return Err(WorkerError::InvalidConfig(
            "give at least one router with --server (or AUXOT_SERVER)".into(),
        ));
    }
    Ok(targets)
}

/// Runs the worker until `shutdown` completes: one connection per router, each of which
/// connects, serves and on any failure reconnects with its own jittered exponential
/// backoff, all drawing on one slot pool. Returns an error only for what retrying cannot fix.
pub async fn run_worker<H: JobHandler>(
    conn: ConnectionConfig,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    let targets = fleet_targets(&conn.servers)?;
    let servers: Vec<String> = targets.iter().map(|(server, _)| server.clone()).collect();
    let pool = SlotPool::new(conn.slots, &servers);
    let instance = uuid::Uuid::new_v4().to_string();
    tracing::info!(instance = %instance, routers = ?servers, slots = conn.slots, "worker starting");
    let conn = Arc::new(conn);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut links = JoinSet::new();
    for (index, (_, url)) in targets.into_iter().enumerate() {
        let link = Link {
            index,
            url,
            conn: conn.clone(),
            handler: handler.clone(),
            pool: pool.clone(),
            instance: instance.clone(),
        };
        let mut stop = stop_rx.clone();
        links.spawn(link.run(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        Some(ended) = links.join_next() => match ended {
            Ok(result) => result,
            Err(e) => Err(WorkerError::InvalidConfig(format!("a router connection stopped unexpectedly: {e}"))),
        },
    };
    // Every other connection says goodbye (bounded by SHUTDOWN_FLUSH each, in parallel).
    let _ = stop_tx.send(true);
    while links.join_next().await.is_some() {}
    result
}

/// One router of the fleet, as one worker serves it.
struct Link<H> {
    index: usize,
    url: String,
    conn: Arc<ConnectionConfig>,
    handler: Arc<H>,
    pool: Arc<SlotPool>,
    instance: String,
}

impl<H: JobHandler> Link<H> {
    async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WorkerError> {
        let Link {
            index,
            url,
            conn,
            handler,
            pool,
            instance,
        } = self;
        let url = url.as_str();
        let conn = conn.as_ref();
        let handler = &handler;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::default();
        let mut last_offer = Offer::default();
        loop {
            let models = tokio::select! {
                () = &mut shutdown => return Ok(()),
                models = handler.models() => models,
            };
            let offer = match models {
                Ok(models) => {
                    last_offer = Offer {
                        embedding_models: handler.embedding_models(),
                        models,
                    };
                    last_offer.clone()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot re-read the models; advertising the last known list");
                    last_offer.clone()
                }
            };
            let session = Session {
                conn,
                url,
                handler,
                offer,
                pool: &pool,
                index,
                instance: &instance,
            };
            match session.run(&mut shutdown).await {
                SessionEnd::Shutdown => return Ok(()),
                SessionEnd::Lost { error, served_for } => {
                    if error.is_fatal() {
                        return Err(error);
                    }
                    if served_for.is_some_and(|d| d >= BACKOFF_RESET_AFTER) {
                        backoff = Backoff::default();
                    }
                    let delay = backoff.next_delay();
                    match error {
                        WorkerError::TokenRejected { .. } | WorkerError::Refused(_) => {
                            tracing::error!(router = %url, error = %error, retry_in_ms = delay.as_millis() as u64, "router refused the worker")
                        }
                        _ => {
                            tracing::warn!(router = %url, error = %error, retry_in_ms = delay.as_millis() as u64, "not connected to the router")
                        }
                    }
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// Exponential backoff with ±50% jitter, so a fleet of workers does not reconnect in step
/// after a router restart.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_START }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        base.mul_f64(rand::thread_rng().gen_range(0.5..=1.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::default();
        let mut base = BACKOFF_START;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(
                delay >= base.mul_f64(0.5) && delay <= base.mul_f64(1.5),
                "{delay:?} vs {base:?}"
            );
            base = (base * 2).min(BACKOFF_CAP);
        }
        assert_eq!(backoff.next, BACKOFF_CAP);
    }

    #[test]
    fn each_router_is_dialled_once_and_one_is_needed() {
        let servers = vec![
            "http://a:8080".to_string(),
            " http://a:8080/ ".to_string(),
            "https://b".to_string(),
            String::new(),
        ];
        let targets = fleet_targets(&servers).unwrap();
        assert_eq!(
            targets,
            vec![
                (
                    "http://a:8080".to_string(),
                    "ws://a:8080/api/workers/connect".to_string()
                ),
                ("https://b".to_string(), "wss://b/api/workers/connect".to_string()),
            ]
        );
        assert!(matches!(fleet_targets(&[]), Err(WorkerError::InvalidConfig(_))));
        assert!(matches!(
            fleet_targets(&["ftp://x".to_string()]),
            Err(WorkerError::ServerUrl { .. })
        ));
    }
}
