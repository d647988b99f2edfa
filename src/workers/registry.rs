//! The router's view of connected workers: who is live, what each serves, how many of its
//! slots are taken, and the channel each in-flight job's events arrive on.
//!
//! Slots are taken with `try_reserve` (a compare-and-swap, never past `slots`) and given
//! back by dropping the `SlotGuard`, so no error path can leak one. A freed slot goes
//! through the `SlotExchange` the dispatcher installs: it may hand the slot straight to a
//! queued request (the count never drops, so no newcomer can take it in between). A `WorkerJob` that is
//! dropped before its worker said `done` sends `cancel`: a client that goes away stops the
//! work on the worker.
//!
//! A worker shared by several routers (a fleet) is the authority on its slots: this router
//! counts its own jobs, learns from the worker's `status` how many slots jobs of other
//! routers hold, and reserves only what both leave free. A job the worker refuses anyway
//! (another router won the race) ends as `JobEvent::Refused`, and this router's view of the
//! worker is full until its next status.

use super::protocol::{JobKind, RouterLink, RouterMessage, Usage, WorkerKind};
use serde::Serialize;
use serde_json::value::RawValue;
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

type ExchangeCell = Arc<OnceLock<Arc<dyn SlotExchange>>>;

/// How long a router waits for a worker that acks jobs to accept or refuse one. A worker
/// answers at once; silence this long means the job is not running: the router tries
/// elsewhere (and cancels it, in case the acceptance is merely late).
pub const JOB_ACK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an offline worker stays in the list.
const OFFLINE_KEPT_SECS: i64 = 3600;
const OFFLINE_KEPT_MAX: usize = 200;

/// What a worker said about one job.
#[derive(Debug)]
pub enum JobEvent {
    Chunk(Box<RawValue>),
    Done(Option<Usage>),
    Failed {
        message: String,
        status: Option<u16>,
        /// The upstream's `Retry-After`, passed on when the request finally fails.
        retry_after: Option<String>,
        /// A CLI worker's subscription is limited until then: route around it.
        limited_until: Option<std::time::SystemTime>,
    },
    /// The worker's connection ended (or it missed its heartbeats) mid-job.
    Disconnected,
    /// The worker did not take the job: every slot is busy (with another router's jobs),
    /// or it did not answer within `JOB_ACK_TIMEOUT`. Not a failure of the worker.
    Refused,
}

/// What arrives on a job's channel: its events, and the worker's ack (`job_ack`), which
/// `WorkerJob` reads itself.
enum Wire {
    Event(JobEvent),
    Accepted,
    Refused,
}

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
}

pub struct LiveWorker {
    pub id: String,
    /// The worker process's id (from its hello), the same on every router it serves.
    pub instance: Option<String>,
    /// It answers each job at once with accepted or refused.
    pub acks_jobs: bool,
    ack_timeout: Duration,
    pub token_id: String,
    pub kind: WorkerKind,
    pub name: String,
    pub version: String,
    pub slots: u32,
    pub connected_at: i64,
    models: RwLock<Arc<Vec<String>>>,
    embedding_models: RwLock<Arc<Vec<String>>>,
    /// Slots this router's jobs hold.
    in_use: AtomicU32,
    /// Slots other routers' jobs held at the worker's last status.
    elsewhere: AtomicU32,
    /// The worker refused a job: no reservation until its next status.
    marked_full: AtomicBool,
    /// The routers it said it is connected to, as it names them.
    routers: RwLock<Arc<Vec<RouterLink>>>,
    jobs_served: AtomicU64,
    last_seen_ms: AtomicU64,
    outbox: mpsc::UnboundedSender<RouterMessage>,
    jobs: Mutex<HashMap<String, mpsc::UnboundedSender<Wire>>>,
    kicked: Notify,
    gone: AtomicBool,
    exchange: ExchangeCell,
}

fn now_ms() -> u64 {
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
    fn freed_slot_is_taken(&self) -> bool {
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

    /// Sends the job; the returned handle yields its events and cancels it if dropped early.
    pub fn start_job(
        self: &Arc<Self>,
        slot: SlotGuard,
        endpoint: JobKind,
        request: Box<RawValue>,
    ) -> Option<WorkerJob> {
        let job_id = uuid::Uuid::new_v4().to_string();
        let (events_tx, events) = mpsc::unbounded_channel();
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.clone(), events_tx);
        let job = WorkerJob {
            worker: self.clone(),
            job_id: job_id.clone(),
            events,
            _slot: slot,
            finished: false,
            awaiting_ack: self.acks_jobs,
            pushed_back: None,
            clock: None,
        };
        let frame = RouterMessage::Job {
            job_id,
            endpoint,
            request,
        };
        if self.outbox.send(frame).is_err() {
            return None;
        }
        Some(job)
    }

    /// Routes a worker's message about a job to whoever waits for it; a job nobody waits
    /// for any more (cancelled) is ignored.
    pub fn deliver(&self, job_id: &str, event: JobEvent) {
        let ends = matches!(event, JobEvent::Done(_) | JobEvent::Failed { .. } | JobEvent::Refused);
        self.send_wire(job_id, Wire::Event(event), ends);
    }

    /// The worker's answer to a job (`job_accepted` or `job_refused`).
    pub fn deliver_ack(&self, job_id: &str, accepted: bool) {
        if !accepted {
            // Marked here, in frame order: a status the worker sent after the refusal
            // (read next on this socket) then rightly ends the mark.
            self.mark_full();
        }
        let wire = if accepted { Wire::Accepted } else { Wire::Refused };
        self.send_wire(job_id, wire, !accepted);
    }

    fn send_wire(&self, job_id: &str, wire: Wire, ends: bool) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = jobs.get(job_id) {
            let _ = sender.send(wire);
        }
        if ends {
            jobs.remove(job_id);
        }
    }

    /// Closes the worker's connection (token revoked, replaced, or heartbeats missed).
    pub fn kick(&self) {
        self.kicked.notify_one();
    }

    pub async fn kicked(&self) {
        self.kicked.notified().await;
    }

    fn fail_all_jobs(&self) {
        let jobs = std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, sender) in jobs {
            let _ = sender.send(Wire::Event(JobEvent::Disconnected));
        }
    }

    fn view(&self, status: &'static str, last_seen_ms: u64) -> WorkerView {
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

/// One job on one worker, from the router's side.
pub struct WorkerJob {
    worker: Arc<LiveWorker>,
    job_id: String,
    events: mpsc::UnboundedReceiver<Wire>,
    _slot: SlotGuard,
    finished: bool,
    /// The worker acks jobs and has not yet said whether it took this one.
    awaiting_ack: bool,
    pushed_back: Option<JobEvent>,
    /// Once the client streams: the longest silence between events, and the deadline.
    clock: Option<(Duration, tokio::time::Instant)>,
}

impl WorkerJob {
    pub fn worker(&self) -> &Arc<LiveWorker> {
        &self.worker
    }

    /// Puts an event back to be read again first (the dispatcher peeked at it).
    pub fn push_back(&mut self, event: JobEvent) {
        self.pushed_back = Some(event);
    }

    /// From now on, a silence longer than `idle` or running past `deadline` ends the job
    /// with a `Failed` event (and cancels it on the worker, freeing the slot).
    pub fn set_clock(&mut self, idle: Duration, deadline: tokio::time::Instant) {
        self.clock = Some((idle, deadline));
    }

    /// The next event; `Disconnected` once the worker is gone; first of all `Refused` if
    /// the worker did not take the job (its slot is given back on drop, with no cancel).
    pub async fn next_event(&mut self) -> JobEvent {
        if let Some(event) = self.pushed_back.take() {
            return event;
        }
        let event = match self.await_ack().await {
            Some(event) => event,
            None => match self.receive().await {
                Ok(event) => event,
                // Not finished on the worker: dropping the job sends `cancel`.
                Err(timeout) => return timeout,
            },
        };
        match &event {
            JobEvent::Done(_) => {
                self.finished = true;
                self.worker.jobs_served.fetch_add(1, Ordering::Relaxed);
            }
            JobEvent::Failed { .. } | JobEvent::Disconnected => self.finished = true,
            JobEvent::Chunk(_) | JobEvent::Refused => {}
        }
        event
    }

    /// For a worker that acks jobs, once: `None` when it took the job, else the event
    /// that answers instead (`Refused`, or an end that came before any ack).
    async fn await_ack(&mut self) -> Option<JobEvent> {
        if !std::mem::take(&mut self.awaiting_ack) {
            return None;
        }
        let limit = self.worker.ack_timeout;
        match tokio::time::timeout(limit, self.events.recv()).await {
            Ok(Some(Wire::Accepted)) => None,
            Ok(Some(Wire::Refused)) => {
                // It never ran: nothing to cancel. `deliver_ack` marked the worker full.
                self.finished = true;
                Some(JobEvent::Refused)
            }
            // An answer before any ack: the worker took the job after all.
            Ok(Some(Wire::Event(event))) => Some(event),
            Ok(None) => Some(JobEvent::Disconnected),
            Err(_) => {
                tracing::warn!(worker = %self.worker.name, job_id = %self.job_id, "the worker neither accepted nor refused the job within {}ms; trying elsewhere", limit.as_millis());
                self.worker.mark_full();
                Some(JobEvent::Refused)
            }
        }
    }

    /// The next event under the clock; `Err` is a timeout's `Failed`.
    async fn receive(&mut self) -> Result<JobEvent, JobEvent> {
        loop {
            match self.receive_wire().await? {
                Some(Wire::Event(event)) => return Ok(event),
                // A late ack says nothing new: the job already runs (or ended).
                Some(Wire::Accepted | Wire::Refused) => continue,
                None => return Ok(JobEvent::Disconnected),
            }
        }
    }

    async fn receive_wire(&mut self) -> Result<Option<Wire>, JobEvent> {
        let wire = match self.clock {
            None => self.events.recv().await,
            Some((idle, deadline)) => {
                let idle_at = tokio::time::Instant::now() + idle;
                let (at, what, limit) = if idle_at <= deadline {
                    (idle_at, "idle", idle)
                } else {
                    (
                        deadline,
                        "total",
                        deadline.saturating_duration_since(tokio::time::Instant::now()),
                    )
                };
                match tokio::time::timeout_at(at, self.events.recv()).await {
                    Ok(wire) => wire,
                    Err(_) => {
                        return Err(JobEvent::Failed {
                            message: match what {
                                "idle" => format!("the worker sent nothing for {}ms (idle timeout)", limit.as_millis()),
                                _ => "the request ran past its total time limit".to_string(),
                            },
                            status: Some(504),
                            retry_after: None,
                            limited_until: None,
                        })
                    }
                }
            }
        };
        Ok(wire)
    }
}

impl Drop for WorkerJob {
    fn drop(&mut self) {
        self.worker
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.job_id);
        if !self.finished {
            let _ = self.worker.outbox.send(RouterMessage::Cancel {
                job_id: self.job_id.clone(),
            });
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
}

impl WorkerRegistry {
    pub fn new(heartbeat_timeout: Duration) -> Self {
        WorkerRegistry {
            live: RwLock::new(HashMap::new()),
            offline: Mutex::new(Vec::new()),
            exchange: Arc::new(OnceLock::new()),
            heartbeat_timeout,
            job_ack_timeout: JOB_ACK_TIMEOUT,
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

    /// Adds a worker; an earlier connection with the same token is closed (a reconnect
    /// whose old socket has not timed out yet must not count twice).
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
        });
        let replaced: Vec<Arc<LiveWorker>> = {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            let old: Vec<String> = live
                .values()
                .filter(|w| w.token_id == worker.token_id)
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
        let workers: Vec<Arc<LiveWorker>> = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|w| w.token_id == token_id)
            .cloned()
            .collect();
        for worker in &workers {
            worker.kick();
        }
        workers.len()
    }

    /// Asks every live worker's connection to close (the router is stopping) and waits,
    /// up to `within`, for them to be gone.
    pub async fn close_all(&self, within: Duration) {
        for worker in self.live() {
            worker.kick();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(token: &str, slots: u32) -> Hello {
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
        }
    }

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

    #[tokio::test]
    async fn dropping_an_unfinished_job_cancels_it_and_frees_the_slot() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, mut outbox) = registry.register(hello("t1", 1));
        let slot = worker.try_reserve().unwrap();
        let job = worker
            .start_job(
                slot,
                JobKind::ChatCompletions,
                RawValue::from_string("{}".into()).unwrap(),
            )
            .unwrap();
        let job_id = match outbox.recv().await.unwrap() {
            RouterMessage::Job { job_id, .. } => job_id,
            other => panic!("{other:?}"),
        };
        drop(job);
        match outbox.recv().await.unwrap() {
            RouterMessage::Cancel { job_id: cancelled } => assert_eq!(cancelled, job_id),
            other => panic!("{other:?}"),
        }
        assert_eq!(worker.in_use(), 0);
    }

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

    fn acking(token: &str, slots: u32) -> Hello {
        Hello {
            acks_jobs: true,
            instance: Some("inst-1".into()),
            ..hello(token, slots)
        }
    }

    fn job_on(worker: &Arc<LiveWorker>) -> WorkerJob {
        let slot = worker.try_reserve().unwrap();
        worker
            .start_job(
                slot,
                JobKind::ChatCompletions,
                RawValue::from_string("{}".into()).unwrap(),
            )
            .unwrap()
    }

    async fn sent_job_id(outbox: &mut mpsc::UnboundedReceiver<RouterMessage>) -> String {
        match outbox.recv().await.unwrap() {
            RouterMessage::Job { job_id, .. } => job_id,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_accepted_job_runs_and_a_refused_one_marks_the_worker_full_until_its_status() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, mut outbox) = registry.register(acking("t1", 2));
        let mut accepted = job_on(&worker);
        let id = sent_job_id(&mut outbox).await;
        worker.deliver_ack(&id, true);
        worker.deliver(&id, JobEvent::Done(None));
        assert!(matches!(accepted.next_event().await, JobEvent::Done(None)));
        drop(accepted);

        let mut refused = job_on(&worker);
        let id = sent_job_id(&mut outbox).await;
        worker.deliver_ack(&id, false);
        assert!(matches!(refused.next_event().await, JobEvent::Refused));
        drop(refused);
        assert!(outbox.try_recv().is_err(), "a refused job needs no cancel");
        assert_eq!(worker.in_use_here(), 0);
        assert_eq!(worker.in_use(), 2, "full in this router's view");
        assert!(worker.try_reserve().is_none());

        // The status: one slot busy with another router's job, one free.
        let link = RouterLink {
            url: "http://a".into(),
            connected: true,
        };
        worker.apply_status(1, 0, vec![link.clone()]);
        assert_eq!(worker.in_use(), 1);
        let slot = worker.try_reserve().unwrap();
        assert!(
            worker.try_reserve().is_none(),
            "the other router's job holds the other slot"
        );
        drop(slot);
        let view = &registry.views()[0];
        assert_eq!(view.instance_id.as_deref(), Some("inst-1"));
        assert_eq!(view.routers, vec![link]);
        assert_eq!((view.slots_in_use, view.slots_in_use_here), (1, 0));
    }

    #[tokio::test]
    async fn a_job_the_worker_never_acks_counts_as_refused_and_is_cancelled() {
        let registry = WorkerRegistry::new(Duration::from_secs(15)).with_job_ack_timeout(Duration::from_millis(50));
        let (worker, mut outbox) = registry.register(acking("t1", 1));
        let mut job = job_on(&worker);
        let id = sent_job_id(&mut outbox).await;
        assert!(matches!(job.next_event().await, JobEvent::Refused));
        drop(job);
        match outbox.recv().await.unwrap() {
            RouterMessage::Cancel { job_id } => assert_eq!(job_id, id),
            other => panic!("{other:?}"),
        }
        assert!(worker.try_reserve().is_none(), "full until the next status");
        worker.apply_status(0, 0, Vec::new());
        assert!(worker.try_reserve().is_some());
    }

    #[tokio::test]
    async fn a_worker_without_acks_starts_jobs_as_before() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, mut outbox) = registry.register(hello("t1", 1));
        let mut job = job_on(&worker);
        let id = sent_job_id(&mut outbox).await;
        worker.deliver(&id, JobEvent::Done(None));
        assert!(matches!(job.next_event().await, JobEvent::Done(None)));
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
}
