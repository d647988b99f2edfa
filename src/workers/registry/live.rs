//! One connected worker as this router sees it: what it serves, how many of its slots are
//! taken (by this router's jobs and, for a worker shared by a fleet, by the others'), and
//! the `SlotGuard` that holds one of them.
//!
//! Slots are taken with `try_reserve` (a compare-and-swap, never past `slots`) and given
//! back by dropping the `SlotGuard`, so no error path can leak one. A freed slot goes
//! through the `SlotExchange` the dispatcher installs: it may hand the slot straight to a
//! queued request (the count never drops, so no newcomer can take it in between).

use super::job::Inbox;
use crate::workers::protocol::{JobKind, RouterLink, RouterMessage, WorkerKind};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Where freed and new slots go: the dispatcher's wait queue. Called from `SlotGuard::drop`
/// and on capacity changes, so implementations must not block on I/O or await.
pub trait SlotExchange: Send + Sync {
    /// One slot of `worker` is no longer used by its holder: hand it on (`SlotGuard::adopt`
    /// by the receiver) or give it back with `LiveWorker::return_slot`.
    fn release(&self, worker: &Arc<LiveWorker>);
    /// `worker` joined or changed its models: its free slots may serve waiting requests.
    fn capacity_added(&self, worker: &Arc<LiveWorker>);
}

pub(super) type ExchangeCell = Arc<OnceLock<Arc<dyn SlotExchange>>>;

/// A worker as the hello described it, once its token is checked.
pub struct Hello {
    pub token_id: String,
    pub kind: WorkerKind,
    pub name: String,
    pub version: String,
    pub models: Vec<String>,
    /// Those of `models` it also serves for embeddings jobs.
    pub embedding_models: Vec<String>,
    pub slots: u32,
    /// The worker process's id, the same on every router of a fleet.
    pub instance: Option<String>,
    /// It answers each job with `job_accepted`/`job_refused`.
    pub acks_jobs: bool,
    /// Its token's model allow-list when it connected: a later change reconnects it.
    pub allowed_models: Option<Arc<[String]>>,
}

pub struct LiveWorker {
    pub id: String,
    /// The worker process's id (from its hello), the same on every router it serves.
    pub instance: Option<String>,
    /// It answers each job at once with accepted or refused.
    pub acks_jobs: bool,
    pub(super) ack_timeout: Duration,
    pub token_id: String,
    /// Its token's model allow-list when it connected.
    pub allowed_models: Option<Arc<[String]>>,
    pub kind: WorkerKind,
    pub name: String,
    pub version: String,
    pub slots: u32,
    pub connected_at: i64,
    pub(super) models: RwLock<Arc<Vec<String>>>,
    pub(super) embedding_models: RwLock<Arc<Vec<String>>>,
    /// Slots this router's jobs hold.
    pub(super) in_use: AtomicU32,
    /// Slots other routers' jobs held at the worker's last status.
    pub(super) elsewhere: AtomicU32,
    /// The worker refused a job: no reservation until its next status.
    pub(super) marked_full: AtomicBool,
    /// The routers it said it is connected to, as it names them.
    pub(super) routers: RwLock<Arc<Vec<RouterLink>>>,
    pub(super) jobs_served: AtomicU64,
    pub(super) last_seen_ms: AtomicU64,
    pub(super) outbox: mpsc::UnboundedSender<RouterMessage>,
    pub(super) jobs: Mutex<HashMap<String, Inbox>>,
    pub(super) kicked: Notify,
    pub(super) gone: AtomicBool,
    pub(super) exchange: ExchangeCell,
    /// The registry's signal that its workers changed (for the fleet's presence records).
    pub(super) changed: Arc<Notify>,
}

pub(super) fn now_ms() -> u64 {
    u64::try_from(crate::clock::now_unix_ms()).unwrap_or(0)
}

impl LiveWorker {
    pub fn models(&self) -> Arc<Vec<String>> {
        self.models.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The models it serves for jobs of `kind`.
    pub fn models_for(&self, kind: JobKind) -> Arc<Vec<String>> {
        match kind {
            JobKind::ChatCompletions => self.models(),
            JobKind::Embeddings => self.embedding_models.read().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    pub fn set_models(self: &Arc<Self>, models: Vec<String>, embedding_models: Vec<String>) {
        *self.models.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(models);
        *self.embedding_models.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(embedding_models);
        self.changed.notify_one();
        // A newly served model may let a queued request through.
        if let Some(exchange) = self.exchange.get() {
            exchange.capacity_added(self);
        }
    }

    /// Slots taken as this router sees them: by its own jobs and, for a worker shared with
    /// other routers, by theirs (all of them while it is marked full after a refusal).
    pub fn in_use(&self) -> u32 {
        if self.marked_full.load(Ordering::Acquire) {
            return self.slots;
        }
        self.in_use_here()
            .saturating_add(self.elsewhere.load(Ordering::Acquire))
            .min(self.slots)
    }

    /// Slots this router's own jobs hold.
    pub fn in_use_here(&self) -> u32 {
        self.in_use.load(Ordering::Acquire)
    }

    /// The routers the worker says it is connected to (empty: it does not say).
    pub fn routers(&self) -> Arc<Vec<RouterLink>> {
        self.routers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The worker's `status`: `busy` slots in all, `busy_here` of them this router's. Ends
    /// a mark of full; slots it shows free may go to waiting requests at once.
    pub fn apply_status(self: &Arc<Self>, busy: u32, busy_here: u32, routers: Vec<RouterLink>) {
        self.elsewhere
            .store(busy.saturating_sub(busy_here).min(self.slots), Ordering::Release);
        self.marked_full.store(false, Ordering::Release);
        let changed = *self.routers() != routers;
        if changed {
            *self.routers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routers);
        }
        // Its slots as this router sees them changed: the fleet's view follows.
        self.changed.notify_one();
        if self.in_use() < self.slots {
            if let Some(exchange) = self.exchange.get() {
                exchange.capacity_added(self);
            }
        }
    }

    /// The worker refused a job: take nothing more from it until it reports its slots.
    pub fn mark_full(&self) {
        self.marked_full.store(true, Ordering::Release);
    }

    /// A slot this router frees now is one the worker gives another router's job first:
    /// handing it to a waiting request here would only be refused.
    pub(super) fn freed_slot_is_taken(&self) -> bool {
        self.marked_full.load(Ordering::Acquire)
            || self
                .in_use_here()
                .saturating_sub(1)
                .saturating_add(self.elsewhere.load(Ordering::Acquire))
                >= self.slots
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Takes a slot if one is free; the guard gives it back on drop.
    pub fn try_reserve(self: &Arc<Self>) -> Option<SlotGuard> {
        self.take_slot().then(|| SlotGuard { worker: self.clone() })
    }

    /// Counts one more slot in use if one is free. A `SlotExchange` that takes a slot this
    /// way hands it on with `SlotGuard::adopt` or gives it back with `return_slot`.
    pub fn take_slot(&self) -> bool {
        if self.is_gone() || self.marked_full.load(Ordering::Acquire) {
            return false;
        }
        let free_here = self.slots.saturating_sub(self.elsewhere.load(Ordering::Acquire));
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < free_here).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a slot back to the free count. Only a `SlotExchange` calls this, for a slot
    /// it was handed by `release` and has no waiter for.
    pub fn return_slot(&self) {
        let _ = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn touch(&self) {
        self.last_seen_ms.store(now_ms(), Ordering::Release);
    }

    pub fn silent_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_seen_ms.load(Ordering::Acquire)))
    }
    /// Closes the worker's connection (token revoked, replaced, or heartbeats missed).
    pub fn kick(&self) {
        self.kicked.notify_one();
    }

    pub async fn kicked(&self) {
        self.kicked.notified().await;
    }
    pub(super) fn view(&self, status: &'static str, last_seen_ms: u64) -> WorkerView {
        let offline = status == "offline";
        WorkerView {
            id: self.id.clone(),
            instance_id: self.instance.clone(),
            routers: if offline {
                Vec::new()
            } else {
                self.routers().as_ref().clone()
            },
            slots_in_use_here: if offline { 0 } else { self.in_use_here() },
            token_id: self.token_id.clone(),
            kind: self.kind,
            name: self.name.clone(),
            version: self.version.clone(),
            models: self.models().as_ref().clone(),
            embedding_models: self.models_for(JobKind::Embeddings).as_ref().clone(),
            slots_total: self.slots,
            slots_in_use: if offline { 0 } else { self.in_use() },
            jobs_served: self.jobs_served.load(Ordering::Relaxed),
            connected_at: crate::clock::rfc3339(self.connected_at),
            last_heartbeat: crate::clock::rfc3339((last_seen_ms / 1000) as i64),
            status,
        }
    }
}

/// A taken slot; dropping it hands the slot to the next queued request that can use it,
/// or frees it.
pub struct SlotGuard {
    worker: Arc<LiveWorker>,
}

impl SlotGuard {
    /// Takes ownership of a slot that is already counted as in use: one a `SlotExchange`
    /// got from `release` (or reserved itself) and hands to a waiting request.
    pub fn adopt(worker: Arc<LiveWorker>) -> SlotGuard {
        SlotGuard { worker }
    }

    pub fn worker(&self) -> &Arc<LiveWorker> {
        &self.worker
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        match self.worker.exchange.get() {
            Some(exchange) if !self.worker.freed_slot_is_taken() => exchange.release(&self.worker),
            // The worker's next status hands the slot on once it is really free.
            _ => self.worker.return_slot(),
        }
    }
}

/// A worker as `GET /api/workers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: String,
    /// The worker process's id: the same worker has the same one on every router.
    pub instance_id: Option<String>,
    /// The routers of the fleet it is connected to, by the URL it dials (empty for a
    /// worker that does not report them).
    pub routers: Vec<RouterLink>,
    /// Of `slots_in_use`, those this router's jobs hold.
    pub slots_in_use_here: u32,
    pub token_id: String,
    pub kind: WorkerKind,
    pub name: String,
    pub version: String,
    pub models: Vec<String>,
    /// Those of `models` it serves for embeddings too.
    pub embedding_models: Vec<String>,
    pub slots_total: u32,
    pub slots_in_use: u32,
    pub jobs_served: u64,
    pub connected_at: String,
    pub last_heartbeat: String,
    /// `idle` (a slot is free), `busy` (every slot taken) or `offline`.
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::super::testing::hello;
    use super::super::WorkerRegistry;
    use std::time::Duration;

    #[test]
    fn slots_never_exceed_capacity_and_come_back_on_drop() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, _rx) = registry.register(hello("t1", 2));
        let a = worker.try_reserve().unwrap();
        let b = worker.try_reserve().unwrap();
        assert!(worker.try_reserve().is_none());
        assert_eq!(worker.in_use(), 2);
        drop(a);
        assert_eq!(worker.in_use(), 1);
        let c = worker.try_reserve().unwrap();
        drop((b, c));
        assert_eq!(worker.in_use(), 0);
    }

    #[test]
    fn concurrent_reservations_never_overbook() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, _rx) = registry.register(hello("t1", 3));
        let taken = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        if let Some(slot) = worker.try_reserve() {
                            assert!(worker.in_use() <= 3);
                            taken.lock().unwrap().push(slot);
                            let mut t = taken.lock().unwrap();
                            if t.len() > 1 {
                                t.pop();
                            }
                        }
                    }
                });
            }
        });
        assert!(worker.in_use() <= 3);
        taken.lock().unwrap().clear();
        assert_eq!(worker.in_use(), 0);
    }
}
