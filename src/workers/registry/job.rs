//! One job on one worker, from the router's side: the channel its events arrive on, the
//! worker's ack (`job_accepted`/`job_refused`) for a worker that sends one, the clocks that
//! end a silent or overlong job, and the `cancel` sent when the job is dropped unfinished
//! (a client that goes away stops the work on the worker).

use super::live::{LiveWorker, SlotGuard};
use crate::workers::protocol::{JobKind, RouterMessage, Usage};
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a router waits for a worker that acks jobs to accept or refuse one. A worker
/// answers at once; silence this long means the job is not running: the router tries
/// elsewhere (and cancels it, in case the acceptance is merely late).
pub const JOB_ACK_TIMEOUT: Duration = Duration::from_secs(3);

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
    pub(super) fn fail_all_jobs(&self) {
        let jobs = std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, sender) in jobs {
            let _ = sender.send(Wire::Event(JobEvent::Disconnected));
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
