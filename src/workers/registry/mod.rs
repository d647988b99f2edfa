//! The router's view of connected workers: who is live (`live.rs`: what each serves and how
//! many of its slots are taken), the jobs running on them (`job.rs`), and the recently
//! gone, for `GET /api/workers`.
//!
//! A worker shared by several routers (a fleet) is the authority on its slots: this router
//! counts its own jobs, learns from the worker's `status` how many slots jobs of other
//! routers hold, and reserves only what both leave free. A job the worker refuses anyway
//! (another router won the race) ends as `JobEvent::Refused`, and this router's view of the
//! worker is full until its next status.

mod job;
mod live;

pub use job::{JobEvent, WorkerJob, JOB_ACK_TIMEOUT};
pub use live::{Hello, LiveWorker, SlotExchange, SlotGuard, WorkerView};

use crate::workers::protocol::RouterMessage;
use live::{now_ms, ExchangeCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// How long an offline worker stays in the list.
const OFFLINE_KEPT_SECS: i64 = 3600;
const OFFLINE_KEPT_MAX: usize = 200;

struct Offline {
    view: WorkerView,
    since: i64,
}

pub struct WorkerRegistry {
    live: RwLock<HashMap<String, Arc<LiveWorker>>>,
    offline: Mutex<Vec<Offline>>,
    exchange: ExchangeCell,
    pub heartbeat_timeout: Duration,
    job_ack_timeout: Duration,
    /// Signalled when a worker connects, leaves, or reports a change (see `changes`).
    changed: Arc<Notify>,
}

impl WorkerRegistry {
    pub fn new(heartbeat_timeout: Duration) -> Self {
        WorkerRegistry {
            live: RwLock::new(HashMap::new()),
            offline: Mutex::new(Vec::new()),
            exchange: Arc::new(OnceLock::new()),
            heartbeat_timeout,
            job_ack_timeout: JOB_ACK_TIMEOUT,
            changed: Arc::new(Notify::new()),
        }
    }

    /// How long a worker that acks jobs has to accept or refuse one.
    pub fn with_job_ack_timeout(mut self, limit: Duration) -> Self {
        self.job_ack_timeout = limit;
        self
    }

    /// Installs where freed slots go (once; the dispatcher does it when it is built).
    pub fn set_exchange(&self, exchange: Arc<dyn SlotExchange>) {
        if self.exchange.set(exchange).is_err() {
            tracing::warn!("a slot exchange was already installed; keeping the first");
        }
    }

    /// Adds a worker. An earlier connection of the same worker is closed: a reconnect whose
    /// old socket has not timed out yet must not count twice. "The same worker" is the same
    /// token and the same `instance` (made once per worker process); a worker that sends no
    /// instance is told apart by its token alone. Two processes with one token (machines
    /// provisioned alike) both stay connected: replacing each other, they would take turns
    /// kicking each other off every few hundred milliseconds and fail each other's jobs.
    pub fn register(&self, hello: Hello) -> (Arc<LiveWorker>, mpsc::UnboundedReceiver<RouterMessage>) {
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let worker = Arc::new(LiveWorker {
            id: uuid::Uuid::new_v4().to_string(),
            token_id: hello.token_id,
            kind: hello.kind,
            name: hello.name,
            version: hello.version,
            slots: hello.slots,
            instance: hello.instance,
            acks_jobs: hello.acks_jobs,
            allowed_models: hello.allowed_models,
            ack_timeout: self.job_ack_timeout,
            connected_at: crate::clock::now_unix(),
            models: RwLock::new(Arc::new(hello.models)),
            embedding_models: RwLock::new(Arc::new(hello.embedding_models)),
            in_use: AtomicU32::new(0),
            elsewhere: AtomicU32::new(0),
            marked_full: AtomicBool::new(false),
            routers: RwLock::new(Arc::new(Vec::new())),
            jobs_served: AtomicU64::new(0),
            last_seen_ms: AtomicU64::new(now_ms()),
            outbox,
            jobs: Mutex::new(HashMap::new()),
            kicked: Notify::new(),
            gone: AtomicBool::new(false),
            exchange: self.exchange.clone(),
            changed: self.changed.clone(),
        });
        let replaced: Vec<Arc<LiveWorker>> = {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            let old: Vec<String> = live
                .values()
                .filter(|w| w.token_id == worker.token_id && same_process(&w.instance, &worker.instance))
                .map(|w| w.id.clone())
                .collect();
            let removed = old.iter().filter_map(|id| live.remove(id)).collect();
            live.insert(worker.id.clone(), worker.clone());
            removed
        };
        for old in replaced {
            self.retire(&old);
            old.kick();
        }
        if let Some(exchange) = self.exchange.get() {
            exchange.capacity_added(&worker);
        }
        self.changed.notify_one();
        (worker, outbox_rx)
    }

    /// The worker's connection ended: it leaves the live set and its jobs end.
    pub fn unregister(&self, worker: &Arc<LiveWorker>) {
        let removed = {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            match live.get(&worker.id) {
                Some(current) if Arc::ptr_eq(current, worker) => live.remove(&worker.id).is_some(),
                _ => false,
            }
        };
        if removed {
            self.retire(worker);
        }
        worker.gone.store(true, Ordering::Release);
        worker.fail_all_jobs();
        self.changed.notify_one();
    }

    fn retire(&self, worker: &Arc<LiveWorker>) {
        worker.gone.store(true, Ordering::Release);
        worker.fail_all_jobs();
        let now = crate::clock::now_unix();
        let mut offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        offline.retain(|o| o.view.id != worker.id && now - o.since < OFFLINE_KEPT_SECS);
        offline.push(Offline {
            view: worker.view("offline", worker.last_seen_ms.load(Ordering::Acquire)),
            since: now,
        });
        if offline.len() > OFFLINE_KEPT_MAX {
            let excess = offline.len() - OFFLINE_KEPT_MAX;
            offline.drain(..excess);
        }
    }

    /// Disconnects every live worker using this token (it was revoked).
    pub fn kick_token(&self, token_id: &str) -> usize {
        self.kick_unless(|w| w.token_id != token_id)
    }

    /// Disconnects every live worker for which `keep` says no (its token was revoked or
    /// changed, on this router or another of the fleet); returns how many.
    pub fn kick_unless(&self, keep: impl Fn(&LiveWorker) -> bool) -> usize {
        let workers: Vec<Arc<LiveWorker>> = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|w| !keep(w))
            .cloned()
            .collect();
        for worker in &workers {
            worker.kick();
        }
        workers.len()
    }

    /// Signalled whenever a worker connects, leaves or reports a change of its slots or
    /// models: one waiter (the fleet presence task) learns of it, however many came.
    pub fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Asks every live worker's connection to close (the router is stopping) and waits,
    /// up to `within`, for them to be gone.
    pub async fn close_all(&self, within: Duration) {
        self.kick_unless(|_| false);
        let deadline = tokio::time::Instant::now() + within;
        while !self.live().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn live(&self) -> Vec<Arc<LiveWorker>> {
        let mut workers: Vec<_> = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        workers.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        workers
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveWorker>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Live workers, then those seen in the last hour.
    pub fn views(&self) -> Vec<WorkerView> {
        let mut out: Vec<WorkerView> = self
            .live()
            .iter()
            .map(|w| {
                let status = if w.in_use() >= w.slots { "busy" } else { "idle" };
                w.view(status, w.last_seen_ms.load(Ordering::Acquire))
            })
            .collect();
        let now = crate::clock::now_unix();
        let offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        let live_ids: Vec<&str> = out.iter().map(|v| v.id.as_str()).collect::<Vec<_>>();
        let recent: Vec<WorkerView> = offline
            .iter()
            .rev()
            .filter(|o| now - o.since < OFFLINE_KEPT_SECS && !live_ids.contains(&o.view.id.as_str()))
            .map(|o| o.view.clone())
            .collect();
        out.extend(recent);
        out
    }
}

/// Whether two connections with one token come from the same worker process, as far as
/// their hellos tell: the same instance, or either sent none.
fn same_process(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Hellos for the tests of this module's parts.
#[cfg(test)]
pub(crate) mod testing {
    use super::Hello;
    use crate::workers::protocol::WorkerKind;

    pub fn hello(token: &str, slots: u32) -> Hello {
        Hello {
            token_id: token.into(),
            kind: WorkerKind::Gpu,
            name: format!("w-{token}"),
            version: "test".into(),
            models: vec!["m".into()],
            embedding_models: Vec::new(),
            slots,
            instance: None,
            acks_jobs: false,
            allowed_models: None,
        }
    }

    pub fn acking(token: &str, slots: u32) -> Hello {
        Hello {
            acks_jobs: true,
            instance: Some("inst-1".into()),
            ..hello(token, slots)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::hello;
    use super::*;
    use crate::workers::protocol::JobKind;
    use serde_json::value::RawValue;

    #[tokio::test]
    async fn a_disconnect_ends_in_flight_jobs_and_lists_the_worker_offline() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, _outbox) = registry.register(hello("t1", 1));
        let slot = worker.try_reserve().unwrap();
        let mut job = worker
            .start_job(
                slot,
                JobKind::ChatCompletions,
                RawValue::from_string("{}".into()).unwrap(),
            )
            .unwrap();
        registry.unregister(&worker);
        assert!(matches!(job.next_event().await, JobEvent::Disconnected));
        drop(job);
        assert_eq!(worker.in_use(), 0);
        assert!(worker.try_reserve().is_none(), "a gone worker takes no jobs");
        let views = registry.views();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].status, "offline");
    }

    #[test]
    fn two_worker_processes_with_one_token_both_stay_and_each_replaces_only_its_own_reconnect() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let of = |instance: &str| Hello {
            instance: Some(instance.into()),
            ..hello("t1", 1)
        };
        let (a, _a) = registry.register(of("box-a"));
        let (b, _b) = registry.register(of("box-b"));
        assert!(!a.is_gone() && !b.is_gone(), "neither machine kicks the other off");
        assert_eq!(registry.live().len(), 2);
        let (a2, _a2) = registry.register(of("box-a"));
        assert!(a.is_gone(), "box-a's reconnect replaces its old connection");
        assert!(!b.is_gone());
        let mut live: Vec<String> = registry.live().iter().map(|w| w.id.clone()).collect();
        live.sort();
        let mut expected = vec![a2.id.clone(), b.id.clone()];
        expected.sort();
        assert_eq!(live, expected);
        // A worker that names no instance cannot be told apart: it replaces every one.
        let (c, _c) = registry.register(hello("t1", 1));
        assert!(a2.is_gone() && b.is_gone());
        assert_eq!(registry.live().len(), 1);
        assert_eq!(registry.live()[0].id, c.id);
    }

    #[test]
    fn a_reconnect_with_the_same_token_replaces_the_old_connection() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (old, _a) = registry.register(hello("t1", 1));
        let (new, _b) = registry.register(hello("t1", 1));
        assert!(old.is_gone());
        assert_eq!(registry.live().len(), 1);
        assert_eq!(registry.live()[0].id, new.id);
    }

    #[tokio::test]
    async fn kick_unless_closes_only_the_connections_it_does_not_keep() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (kept, _a) = registry.register(hello("t1", 1));
        let (dropped, _b) = registry.register(hello("t2", 1));
        assert_eq!(registry.kick_unless(|w| w.token_id == "t1"), 1);
        tokio::time::timeout(Duration::from_secs(1), dropped.kicked())
            .await
            .expect("the t2 worker was asked to close");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), kept.kicked())
                .await
                .is_err(),
            "the t1 worker was kept"
        );
    }

    #[tokio::test]
    async fn connecting_and_leaving_signal_a_change() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let changes = registry.changes();
        let (worker, _outbox) = registry.register(hello("t1", 1));
        tokio::time::timeout(Duration::from_secs(1), changes.notified())
            .await
            .expect("a connect is a change");
        worker.apply_status(0, 0, Vec::new());
        tokio::time::timeout(Duration::from_secs(1), changes.notified())
            .await
            .expect("a status is a change");
        registry.unregister(&worker);
        tokio::time::timeout(Duration::from_secs(1), changes.notified())
            .await
            .expect("leaving is a change");
    }
}
