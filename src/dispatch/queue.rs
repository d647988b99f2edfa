//! The wait queue: requests that found every worker slot they could use taken.
//!
//! A waiter names the capacity it can use (worker kind + model, `WaitKey`) and the workers
//! it must not be given (already failed for it). A freed slot is handed straight to the
//! earliest waiter that can use it — its count never drops, so a newcomer cannot take it
//! in between — and only returns to the free count when nobody waiting can use it. So:
//! - a request waits only for capacity it can use, and one that can go now never waits
//!   behind one that cannot (arrivals that find a free slot never look at the queue);
//! - waiters for the same capacity are served in arrival order;
//! - no waiter waits while a slot it can use is free (the hand-off, the check before
//!   waiting and a worker's arrival all happen under one lock).
//!
//! The lock is a plain mutex held only for these bookkeeping steps: never across I/O or
//! an await, and the wait itself is on a per-waiter `Notify`.

use crate::workers::protocol::{JobKind, WorkerKind};
use crate::workers::registry::{LiveWorker, SlotExchange, SlotGuard};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Capacity a waiting request can use: a worker of `kind` serving `model` (`None`: any
/// model, what `auto` runs on a worker tier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitKey {
    pub kind: WorkerKind,
    pub job: JobKind,
    pub model: Option<String>,
}

impl WaitKey {
    /// The model this key runs on `worker`, if the worker serves it.
    pub fn model_on(&self, worker: &LiveWorker) -> Option<String> {
        if worker.kind != self.kind {
            return None;
        }
        let models = worker.models_for(self.job);
        match &self.model {
            Some(model) => models.iter().any(|m| m == model).then(|| model.clone()),
            None => models.first().cloned(),
        }
    }
}

/// A slot handed to a waiter, and the model it is to run there.
pub struct Grant {
    pub slot: SlotGuard,
    pub model: String,
}

struct Waiter {
    wants: Vec<WaitKey>,
    /// Worker ids this request already failed on.
    excluded: Vec<String>,
    grant: Option<Grant>,
    wake: Arc<Notify>,
}

impl Waiter {
    fn model_on(&self, worker: &LiveWorker) -> Option<String> {
        if self.grant.is_some() || self.excluded.contains(&worker.id) {
            return None;
        }
        self.wants.iter().find_map(|key| key.model_on(worker))
    }
}

#[derive(Default)]
struct QueueState {
    next_seq: u64,
    /// Keyed by arrival order: the first entry that can use a slot gets it.
    waiters: BTreeMap<u64, Waiter>,
}

impl QueueState {
    /// Gives one counted slot of `worker` to the earliest waiter that can use it.
    fn hand_to_waiter(&mut self, worker: &Arc<LiveWorker>) -> bool {
        if worker.is_gone() {
            return false;
        }
        for waiter in self.waiters.values_mut() {
            if let Some(model) = waiter.model_on(worker) {
                waiter.grant = Some(Grant {
                    slot: SlotGuard::adopt(worker.clone()),
                    model,
                });
                waiter.wake.notify_one();
                return true;
            }
        }
        false
    }
}

#[derive(Default)]
pub struct SlotQueue {
    state: Mutex<QueueState>,
}

impl SlotQueue {
    pub fn new() -> SlotQueue {
        SlotQueue::default()
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting right now (granted ones not yet picked up included).
    pub fn len(&self) -> usize {
        self.lock().waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `reserve` (a last look for a free slot) under the queue's lock; if it finds
    /// nothing, the request joins the queue in the same step, so a slot freed meanwhile
    /// cannot be missed. `position` keeps a request's place when it comes back after a
    /// granted slot failed. `reserve` must not drop a `SlotGuard` (that re-enters the lock).
    pub fn reserve_or_wait<T>(
        &self,
        position: Option<u64>,
        wants: Vec<WaitKey>,
        excluded: Vec<String>,
        reserve: impl FnOnce() -> Option<T>,
    ) -> Result<T, Ticket<'_>> {
        let mut state = self.lock();
        if let Some(found) = reserve() {
            return Ok(found);
        }
        let seq = position.unwrap_or_else(|| {
            state.next_seq += 1;
            state.next_seq
        });
        let wake = Arc::new(Notify::new());
        state.waiters.insert(
            seq,
            Waiter {
                wants,
                excluded,
                grant: None,
                wake: wake.clone(),
            },
        );
        Err(Ticket { queue: self, seq, wake })
    }
}

impl SlotExchange for SlotQueue {
    fn release(&self, worker: &Arc<LiveWorker>) {
        let mut state = self.lock();
        if !state.hand_to_waiter(worker) {
            worker.return_slot();
        }
    }

    fn capacity_added(&self, worker: &Arc<LiveWorker>) {
        let mut state = self.lock();
        while state.waiters.values().any(|w| w.model_on(worker).is_some()) {
            if !worker.take_slot() {
                break;
            }
            if !state.hand_to_waiter(worker) {
                worker.return_slot();
                break;
            }
        }
    }
}

/// A request's place in the queue. Dropping it (the client went away, the wait timed
/// out) leaves the queue at once; a slot granted but not picked up goes to the next
/// waiter.
pub struct Ticket<'q> {
    queue: &'q SlotQueue,
    seq: u64,
    wake: Arc<Notify>,
}

impl Ticket<'_> {
    /// Its arrival order, to keep its place when it has to wait again.
    pub fn position(&self) -> u64 {
        self.seq
    }

    /// Waits until a slot is handed over; the ticket then has left the queue.
    pub async fn granted(&self) -> Grant {
        loop {
            if let Some(grant) = self.take_grant() {
                return grant;
            }
            self.wake.notified().await;
        }
    }

    fn take_grant(&self) -> Option<Grant> {
        let mut state = self.queue.lock();
        let grant = state.waiters.get_mut(&self.seq)?.grant.take()?;
        state.waiters.remove(&self.seq);
        Some(grant)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let left = self.queue.lock().waiters.remove(&self.seq);
        // Outside the lock: dropping an unclaimed grant hands its slot on.
        drop(left.and_then(|w| w.grant));
    }
}
