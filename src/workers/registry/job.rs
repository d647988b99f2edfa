//! One job on one worker, from the router's side: the channel its events arrive on, the
//! worker's ack (`job_accepted`/`job_refused`) for a worker that sends one, the clocks that
//! end a silent or overlong job, and the `cancel` sent when the job is dropped unfinished
//! (a client that goes away stops the work on the worker).
//!
//! The channel cannot push back on the worker: one WebSocket carries all its jobs, so a
//! job whose reader falls behind would stall the others. Instead the bytes of chunks not yet
//! read are counted, and a job whose reader stopped reading (a client that no longer reads
//! its stream) is cancelled on the worker and ends with a failure, which bounds what such a
//! client holds of the router's memory: more than `BEHIND_BYTES` behind and nothing read for
//! `STALLED_FOR`, or more than `MAX_UNREAD_BYTES` behind at all. A reader that merely waits
//! for its turn on the CPU while a fast worker bursts is not cut off.
//!
//! The job's slot is held by its entry in the worker's job table, so it is free as soon as
//! the job ends on the worker, not when a slow client has read its last chunks.

use super::live::{LiveWorker, SlotGuard};
use crate::workers::protocol::{JobKind, RouterMessage, Usage};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a router waits for a worker that acks jobs to accept or refuse one. A worker
/// answers at once; silence this long means the job is not running: the router tries
/// elsewhere (and cancels it, in case the acceptance is merely late).
pub const JOB_ACK_TIMEOUT: Duration = Duration::from_secs(3);

/// A reader this far behind (JSON bytes of chunks waiting) that reads nothing for
/// `STALLED_FOR` has stopped: a client that keeps up has a few chunks waiting at most, and
/// the socket's buffers hold more before any wait here.
pub const BEHIND_BYTES: usize = 4 * 1024 * 1024;
pub const STALLED_FOR: Duration = Duration::from_secs(2);
/// The most that may wait unread however the reader fares: above the largest whole answer
/// (`dispatch::attempt::MAX_ANSWER_BYTES`), which is read as it comes.
pub const MAX_UNREAD_BYTES: usize = 48 * 1024 * 1024;

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
pub(super) enum Wire {
    Event(JobEvent),
    Accepted,
    Refused,
}

/// How far a job's reader is: shared by the job's `Inbox` and its `WorkerJob`.
#[derive(Default)]
struct Progress {
    /// Bytes of chunks queued and not yet read.
    unread: AtomicUsize,
    /// Chunks read so far.
    taken: AtomicU64,
}

/// A running job's entry in its worker's job table: where its events go, and its slot.
pub(super) struct Inbox {
    events: mpsc::UnboundedSender<Wire>,
    progress: Arc<Progress>,
    /// Since when the reader is more than `BEHIND_BYTES` behind, and how many chunks it
    /// had read then.
    behind_since: Option<(Instant, u64)>,
    /// Given back when the entry goes: the job ended on the worker, or it was dropped.
    _slot: SlotGuard,
}

impl Inbox {
    /// Queues `wire`; `false` if the reader has stopped reading (see the module comment),
    /// in which case a failure is queued instead and the job must be cancelled.
    fn send(&mut self, wire: Wire) -> bool {
        if let Wire::Event(JobEvent::Chunk(chunk)) = &wire {
            let len = chunk.get().len();
            let unread = self.progress.unread.fetch_add(len, Ordering::AcqRel) + len;
            if self.stalled(unread) {
                let _ = self.events.send(Wire::Event(JobEvent::Failed {
                    message: format!(
                        "the client stopped reading: {} MiB of the answer went unread, so the job was cancelled",
                        unread / (1024 * 1024)
                    ),
                    status: Some(502),
                    retry_after: None,
                    limited_until: None,
                }));
                return false;
            }
        }
        let _ = self.events.send(wire);
        true
    }

    fn stalled(&mut self, unread: usize) -> bool {
        if unread <= BEHIND_BYTES {
            self.behind_since = None;
            return false;
        }
        if unread > MAX_UNREAD_BYTES {
            return true;
        }
        let taken = self.progress.taken.load(Ordering::Acquire);
        match self.behind_since {
            Some((since, then)) if then == taken => since.elapsed() >= STALLED_FOR,
            _ => {
                self.behind_since = Some((Instant::now(), taken));
                false
            }
        }
    }
}

impl LiveWorker {
    /// Sends the job; the returned handle yields its events and cancels it if dropped early.
    pub fn start_job(
        self: &Arc<Self>,
        slot: SlotGuard,
        endpoint: JobKind,
        request: Box<RawValue>,
    ) -> Option<WorkerJob> {
        let job_id = uuid::Uuid::new_v4().to_string();
        let (events_tx, events) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        let inbox = Inbox {
            events: events_tx,
            progress: progress.clone(),
            behind_since: None,
            _slot: slot,
        };
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.clone(), inbox);
        let job = WorkerJob {
            worker: self.clone(),
            job_id: job_id.clone(),
            events,
            progress,
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
        // The entry leaves the table under the lock but is dropped after it: dropping it
        // frees the slot, which may hand it to a waiting request that starts a job here.
        let (gone, overflowed) = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let Some(inbox) = jobs.get_mut(job_id) else {
                return;
            };
            let overflowed = !inbox.send(wire);
            let gone = if ends || overflowed { jobs.remove(job_id) } else { None };
            (gone, overflowed)
        };
        if overflowed {
            tracing::warn!(worker = %self.name, job_id, "a client stopped reading a worker's stream; its job was cancelled");
            let _ = self.outbox.send(RouterMessage::Cancel {
                job_id: job_id.to_string(),
            });
        }
        drop(gone);
    }

    pub(super) fn fail_all_jobs(&self) {
        let jobs = std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, inbox) in jobs {
            let _ = inbox.events.send(Wire::Event(JobEvent::Disconnected));
        }
    }
}

/// One job on one worker, from the router's side.
pub struct WorkerJob {
    worker: Arc<LiveWorker>,
    job_id: String,
    events: mpsc::UnboundedReceiver<Wire>,
    /// Shared with the job's `Inbox`.
    progress: Arc<Progress>,
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
        match tokio::time::timeout(limit, self.recv()).await {
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

    /// The next thing on the job's channel, its bytes no longer counted as unread.
    async fn recv(&mut self) -> Option<Wire> {
        let wire = self.events.recv().await;
        if let Some(Wire::Event(JobEvent::Chunk(chunk))) = &wire {
            self.progress.unread.fetch_sub(chunk.get().len(), Ordering::AcqRel);
            self.progress.taken.fetch_add(1, Ordering::AcqRel);
        }
        wire
    }

    async fn receive_wire(&mut self) -> Result<Option<Wire>, JobEvent> {
        let wire = match self.clock {
            None => self.recv().await,
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
                match tokio::time::timeout_at(at, self.recv()).await {
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
        let entry = self
            .worker
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.job_id);
        if !self.finished {
            let _ = self.worker.outbox.send(RouterMessage::Cancel {
                job_id: self.job_id.clone(),
            });
        }
        // The slot goes after the lock is released (see `send_wire`) and after the cancel:
        // a waiting request it is handed to sends its job behind the cancel, so the worker
        // has the slot free when the job arrives.
        drop(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{acking, hello};
    use super::super::WorkerRegistry;
    use super::*;
    use crate::workers::protocol::RouterLink;

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

    fn chunk_of(len: usize) -> JobEvent {
        JobEvent::Chunk(RawValue::from_string(format!("\"{}\"", "x".repeat(len - 2))).unwrap())
    }

    /// Delivers chunks of `size` bytes until more than `bytes` wait unread.
    fn flood(worker: &LiveWorker, id: &str, size: usize, bytes: usize) -> usize {
        let count = bytes / size + 1;
        for _ in 0..count {
            worker.deliver(id, chunk_of(size));
        }
        count
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_reading_far_behind_gets_its_job_cancelled_and_its_slot_freed() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, mut outbox) = registry.register(hello("t1", 1));
        let mut job = job_on(&worker);
        let id = sent_job_id(&mut outbox).await;
        let size = 64 * 1024;
        let sent = flood(&worker, &id, size, BEHIND_BYTES);
        tokio::time::advance(STALLED_FOR / 2).await;
        worker.deliver(&id, chunk_of(size));
        assert!(outbox.try_recv().is_err(), "far behind, but not for long yet");
        assert_eq!(worker.in_use(), 1);
        tokio::time::advance(STALLED_FOR / 2).await;
        worker.deliver(&id, chunk_of(size));
        match outbox.try_recv() {
            Ok(RouterMessage::Cancel { job_id }) => assert_eq!(job_id, id),
            other => panic!("{other:?}"),
        }
        assert_eq!(worker.in_use(), 0, "the cancelled job's slot is free");
        // Chunks after the cancel are dropped; the reader gets what was queued, then why.
        worker.deliver(&id, chunk_of(size));
        for _ in 0..=sent {
            assert!(matches!(job.next_event().await, JobEvent::Chunk(_)));
        }
        match job.next_event().await {
            JobEvent::Failed { message, .. } => assert!(message.contains("stopped reading"), "{message}"),
            other => panic!("{other:?}"),
        }
        drop(job);
        assert!(outbox.try_recv().is_err(), "cancelled once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_far_behind_that_still_reads_is_not_cut_off_below_the_hard_limit() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, mut outbox) = registry.register(hello("t1", 1));
        let mut job = job_on(&worker);
        let id = sent_job_id(&mut outbox).await;
        flood(&worker, &id, 64 * 1024, BEHIND_BYTES);
        for _ in 0..4 {
            tokio::time::advance(STALLED_FOR * 3 / 4).await;
            assert!(matches!(job.next_event().await, JobEvent::Chunk(_)));
            worker.deliver(&id, chunk_of(64 * 1024));
        }
        assert!(outbox.try_recv().is_err(), "a slow reader is still a reader");
        // But nothing may pile up past the hard limit, however recently it read.
        flood(&worker, &id, 1024 * 1024, MAX_UNREAD_BYTES);
        assert!(matches!(outbox.try_recv(), Ok(RouterMessage::Cancel { .. })));
        assert_eq!(worker.in_use(), 0);
    }

    #[tokio::test]
    async fn a_reader_that_keeps_up_is_never_cut_off() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, mut outbox) = registry.register(hello("t1", 1));
        let mut job = job_on(&worker);
        let id = sent_job_id(&mut outbox).await;
        for _ in 0..(3 * BEHIND_BYTES / 4096) {
            worker.deliver(&id, chunk_of(4096));
            assert!(matches!(job.next_event().await, JobEvent::Chunk(_)));
        }
        worker.deliver(&id, JobEvent::Done(None));
        assert!(matches!(job.next_event().await, JobEvent::Done(None)));
        assert!(outbox.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_job_gives_its_slot_back_when_the_worker_finishes_not_when_it_is_read() {
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        let (worker, mut outbox) = registry.register(hello("t1", 1));
        let mut job = job_on(&worker);
        let id = sent_job_id(&mut outbox).await;
        worker.deliver(&id, chunk_of(100));
        assert!(worker.try_reserve().is_none(), "the job runs on the only slot");
        worker.deliver(&id, JobEvent::Done(None));
        let next = worker.try_reserve();
        assert!(next.is_some(), "the worker is done with the job: its slot is free");
        assert!(matches!(job.next_event().await, JobEvent::Chunk(_)));
        assert!(matches!(job.next_event().await, JobEvent::Done(None)));
        drop(job);
        assert!(outbox.try_recv().is_err(), "a finished job needs no cancel");
    }

    #[tokio::test]
    async fn a_dropped_job_is_cancelled_before_its_slot_is_free_again() {
        /// As the dispatcher's queue does: a freed slot goes to a waiting request, which
        /// starts its job at once.
        struct HandOn;
        impl super::super::live::SlotExchange for HandOn {
            fn release(&self, worker: &Arc<LiveWorker>) {
                let slot = SlotGuard::adopt(worker.clone());
                let next = worker.start_job(
                    slot,
                    JobKind::ChatCompletions,
                    RawValue::from_string("{}".into()).unwrap(),
                );
                std::mem::forget(next);
            }
            fn capacity_added(&self, _: &Arc<LiveWorker>) {}
        }
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        registry.set_exchange(Arc::new(HandOn));
        let (worker, mut outbox) = registry.register(hello("t1", 1));
        let job = job_on(&worker);
        let id = sent_job_id(&mut outbox).await;
        drop(job);
        match outbox.recv().await.unwrap() {
            RouterMessage::Cancel { job_id } => assert_eq!(job_id, id),
            other => panic!("the next job went out before the cancel: {other:?}"),
        }
        assert!(matches!(outbox.recv().await.unwrap(), RouterMessage::Job { .. }));
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
}
