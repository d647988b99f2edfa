//! The failover loop: plan, reserve, try; on a failure the next candidate (each at most
//! once); when every usable worker slot is taken, wait in the `SlotQueue` for one.
//!
//! What a target does with the request is behind `Runner`, so the loop, the queue and
//! the health bookkeeping run in-process against fake targets in the tests.

use super::error::{all_failed, client_error, DispatchError, TargetFailure, Why};
use super::health::{provider_key, worker_key, Access, Health};
use super::plan::{plan, PlanError, PlanInput, Target, Tier, WorkerSnapshot};
use super::queue::{SlotQueue, WaitKey};
use crate::providers::{LiveProvider, RoutingTable};
use crate::store::AliasRecord;
use crate::workers::protocol::{JobKind, WorkerKind};
use crate::workers::registry::{LiveWorker, SlotGuard, WorkerRegistry};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Runs the request on one target. A failure before the client saw any content is
/// returned as `Why` so the loop can move on.
pub(crate) trait Runner {
    type Reply;
    async fn run_worker(&self, slot: SlotGuard, tier: Tier, model: &str) -> Result<Self::Reply, Why>;
    async fn run_cloud(&self, provider: &Arc<LiveProvider>, model: &str) -> Result<Self::Reply, Why>;
}

/// One request's walk: the live state it plans from and what it asked for.
pub(crate) struct Walk<'a> {
    pub queue: &'a SlotQueue,
    pub workers: &'a WorkerRegistry,
    pub table: &'a RoutingTable,
    pub health: &'a Health,
    pub model: &'a str,
    pub provider: Option<&'a str>,
    pub order: &'a [Tier],
    pub alias: Option<&'a AliasRecord>,
    pub turn: usize,
    /// How long it may wait for a slot in all.
    pub wait: Duration,
    /// Chat or embeddings: which of the workers' models count.
    pub job: JobKind,
}

pub(crate) struct Walked<R> {
    pub tier: Tier,
    pub route: String,
    pub model: String,
    pub reply: R,
    pub queue_wait: Duration,
    /// The candidates that failed before this one answered.
    pub failures: Vec<TargetFailure>,
}

pub(crate) fn worker_tier(kind: WorkerKind) -> Tier {
    match kind {
        WorkerKind::Gpu => Tier::Gpu,
        WorkerKind::Cli => Tier::Cli,
    }
}

/// A probe admitted by `Health::admit` that must end with a verdict; a request dropped
/// half-way (the client left) lets the next request probe.
struct ProbeGuard<'a> {
    health: &'a Health,
    key: String,
    pending: bool,
}

impl ProbeGuard<'_> {
    fn settle(mut self) {
        self.pending = false;
    }

    /// Settles, unless the target was never reached (the router was out of descriptors):
    /// then the next request probes.
    fn settle_unless_untried<R>(self, step: &Step<R>) {
        if !matches!(step, Step::Failed(failure) if failure.why.is_exhausted()) {
            self.settle();
        }
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.pending {
            self.health.probe_abandoned(&self.key);
        }
    }
}

enum Step<R> {
    Answered(Walked<R>),
    Failed(TargetFailure),
    /// The worker (shared with other routers) had no slot after all: like finding it
    /// full, not a failure. The request moves on, and may wait for it.
    Refused,
    /// The request's own error: the answer.
    Final(DispatchError),
}

struct State {
    failures: Vec<TargetFailure>,
    tried_workers: Vec<String>,
    tried_providers: Vec<String>,
    /// Targets skipped because they cool down, and the earliest end of those cooldowns.
    cooling: Vec<String>,
    cooling_until: Option<SystemTime>,
    queue_wait: Duration,
}

pub(crate) async fn walk<R: Runner>(walk: Walk<'_>, runner: &R) -> Result<Walked<R::Reply>, DispatchError> {
    let started = Instant::now();
    let deadline = started + walk.wait;
    let mut state = State {
        failures: Vec::new(),
        tried_workers: Vec::new(),
        tried_providers: Vec::new(),
        cooling: Vec::new(),
        cooling_until: None,
        queue_wait: Duration::ZERO,
    };
    let mut position = None;
    loop {
        note_cooling_workers(&walk, &mut state);
        let live = usable_workers(&walk, &state);
        let snapshot: Vec<WorkerSnapshot> = live.iter().map(|w| WorkerSnapshot::for_job(w, walk.job)).collect();
        let input = PlanInput {
            model: walk.model,
            provider: walk.provider,
            order: walk.order,
            alias: walk.alias,
            table: walk.table,
            workers: &snapshot,
            turn: walk.turn,
            job: walk.job,
        };
        let plan = match plan(&input) {
            Ok(plan) => plan,
            Err(e) if state.failures.is_empty() && state.cooling.is_empty() => return Err(e.into()),
            Err(_) => return Err(give_up(walk.model, state, Vec::new())),
        };
        // Cooling providers, tried only if nothing else can take the request: a cooldown
        // steers traffic to healthy targets, it does not turn away a request that has no
        // other way to go.
        let mut last_resort: Vec<(Arc<LiveProvider>, String)> = Vec::new();
        let failed_before = state.failures.len();
        for target in &plan.targets {
            let step = match target {
                Target::Worker { index, model, tier } => {
                    let worker = &live[*index];
                    let Some(slot) = worker.try_reserve() else {
                        // Taken since the snapshot: the queue step below looks again.
                        continue;
                    };
                    try_worker(&walk, &mut state, runner, slot, *tier, model).await
                }
                Target::Cloud { provider, model } => {
                    if state.tried_providers.contains(&provider.id) {
                        continue;
                    }
                    let key = provider_key(&provider.id);
                    let access = walk.health.admit(&key, SystemTime::now());
                    if access == Access::Closed {
                        note_cooling(&walk, &mut state, &key, &provider.name);
                        last_resort.push((provider.clone(), model.clone()));
                        continue;
                    }
                    state.tried_providers.push(provider.id.clone());
                    let probe = ProbeGuard {
                        health: walk.health,
                        key: key.clone(),
                        pending: access == Access::Probe,
                    };
                    let result = runner.run_cloud(provider, model).await;
                    let step = judge(
                        walk.health,
                        &key,
                        Tier::Cloud,
                        &provider.name,
                        model,
                        result,
                        &mut state,
                    );
                    probe.settle_unless_untried(&step);
                    step
                }
            };
            match step {
                Step::Answered(walked) => return Ok(walked),
                Step::Final(e) => return Err(e),
                Step::Failed(failure) => state.failures.push(failure),
                Step::Refused => {}
            }
        }
        if state.failures.len() > failed_before && !plan.waits.is_empty() {
            // This plan's capacity was counted with the targets that just failed: plan
            // again without them before deciding whether waiting can help.
            continue;
        }
        if plan.waits.is_empty() {
            for (provider, model) in last_resort {
                state.tried_providers.push(provider.id.clone());
                let key = provider_key(&provider.id);
                let result = runner.run_cloud(&provider, &model).await;
                match judge(
                    walk.health,
                    &key,
                    Tier::Cloud,
                    &provider.name,
                    &model,
                    result,
                    &mut state,
                ) {
                    Step::Answered(walked) => return Ok(walked),
                    Step::Final(e) => return Err(e),
                    Step::Failed(failure) => state.failures.push(failure),
                    Step::Refused => {}
                }
            }
            return Err(give_up(walk.model, state, plan.notes));
        }
        // Every usable slot is taken (or went while we looked): wait for one.
        let wait_started = Instant::now();
        let grant = walk
            .queue
            .reserve_or_wait(position, plan.waits.clone(), state.tried_workers.clone(), || {
                reserve_free(&walk, &state, &plan.waits)
            });
        let (slot, model) = match grant {
            Ok(found) => found,
            Err(ticket) => {
                position = Some(ticket.position());
                match tokio::time::timeout_at(deadline, ticket.granted()).await {
                    Ok(grant) => (grant.slot, grant.model),
                    Err(_) => {
                        state.queue_wait += wait_started.elapsed();
                        let mut notes = plan.notes;
                        notes.extend(state.failures.iter().map(ToString::to_string));
                        return Err(DispatchError::QueueTimeout {
                            waited: state.queue_wait,
                            notes,
                            tried: state.failures,
                        });
                    }
                }
            }
        };
        state.queue_wait += wait_started.elapsed();
        let tier = worker_tier(slot.worker().kind);
        match try_worker(&walk, &mut state, runner, slot, tier, &model).await {
            Step::Answered(walked) => return Ok(walked),
            Step::Final(e) => return Err(e),
            Step::Failed(failure) => state.failures.push(failure),
            // Planned again: the worker now counts as full until its next status.
            Step::Refused => {}
        }
    }
}

/// Live workers this request may still use: not failed for it, not cooling.
fn usable_workers(walk: &Walk<'_>, state: &State) -> Vec<Arc<LiveWorker>> {
    let now = SystemTime::now();
    walk.workers
        .live()
        .into_iter()
        .filter(|w| !state.tried_workers.contains(&w.id) && !walk.health.is_cooling(&worker_key(&w.token_id), now))
        .collect()
}

/// Notes the cooling (or limited) workers, so a request with nowhere else to go is told
/// why and when to come back.
fn note_cooling_workers(walk: &Walk<'_>, state: &mut State) {
    let now = SystemTime::now();
    for worker in walk.workers.live() {
        let key = worker_key(&worker.token_id);
        if !state.tried_workers.contains(&worker.id) && walk.health.is_cooling(&key, now) {
            let name = format!("worker {}", worker.name);
            if !state.cooling.iter().any(|n| n.starts_with(&name)) {
                note_cooling(walk, state, &key, &name);
            }
        }
    }
}

/// The last look before waiting, under the queue's lock: a free slot on a usable worker,
/// tiers in order, least loaded first.
fn reserve_free(walk: &Walk<'_>, state: &State, waits: &[WaitKey]) -> Option<(SlotGuard, String)> {
    let live = usable_workers(walk, state);
    for key in waits {
        let mut fitting: Vec<(&Arc<LiveWorker>, String)> = live
            .iter()
            .filter_map(|w| key.model_on(w).map(|model| (w, model)))
            .collect();
        fitting.sort_by_key(|(w, _)| (u64::from(w.in_use()) * 1_000_000) / u64::from(w.slots.max(1)));
        for (worker, model) in fitting {
            if let Some(slot) = worker.try_reserve() {
                return Some((slot, model));
            }
        }
    }
    None
}

async fn try_worker<R: Runner>(
    walk: &Walk<'_>,
    state: &mut State,
    runner: &R,
    slot: SlotGuard,
    tier: Tier,
    model: &str,
) -> Step<R::Reply> {
    let worker = slot.worker().clone();
    state.tried_workers.push(worker.id.clone());
    let key = worker_key(&worker.token_id);
    let access = walk.health.admit(&key, SystemTime::now());
    if access == Access::Closed {
        // Cooled since the plan was made; the slot goes back (or to a waiter).
        drop(slot);
        note_cooling(walk, state, &key, &worker.name);
        return Step::Failed(TargetFailure {
            tier,
            route: worker.name.clone(),
            why: Why::Worker {
                message: "cooling down after failures".into(),
                status: None,
                retry_after: None,
            },
        });
    }
    let probe = ProbeGuard {
        health: walk.health,
        key: key.clone(),
        pending: access == Access::Probe,
    };
    let result = runner.run_worker(slot, tier, model).await;
    if matches!(result, Err(Why::Refused)) {
        // Neither a failure nor a verdict on its health: the request may still get a slot
        // of this worker (a probe not settled lets the next request probe).
        state.tried_workers.retain(|id| *id != worker.id);
        tracing::debug!(worker = %worker.name, "worker refused the job (no free slot); trying the next candidate");
        return Step::Refused;
    }
    let step = judge(walk.health, &key, tier, &worker.name, model, result, state);
    probe.settle();
    step
}

fn note_cooling(walk: &Walk<'_>, state: &mut State, key: &str, name: &str) {
    let view = walk.health.view(key, SystemTime::now());
    let until = view.cooldown_until.or(view.limited_until);
    let note = match until {
        Some(until) => format!("{name} is cooling down until {until}"),
        None => format!("{name} is being probed after failures"),
    };
    // The loop plans again after each wait; one note per target is enough.
    if !state.cooling.contains(&note) {
        state.cooling.push(note);
    }
    let end = walk.health.until(key);
    state.cooling_until = match (state.cooling_until, end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

/// Records the outcome in the target's health and turns it into the loop's next step.
fn judge<R>(
    health: &Health,
    key: &str,
    tier: Tier,
    route: &str,
    model: &str,
    result: Result<R, Why>,
    state: &mut State,
) -> Step<R> {
    match result {
        Ok(reply) => {
            health.succeeded(key);
            if !state.failures.is_empty() {
                // The failures behind a failover are logged here, once; a request that fails
                // everywhere is logged once by the API with every failure in its error.
                let failures: Vec<String> = state.failures.iter().map(ToString::to_string).collect();
                tracing::info!(route, failed_over = state.failures.len(), failures = %failures.join("; "), "served after failover");
            }
            Step::Answered(Walked {
                tier,
                route: route.to_string(),
                model: model.to_string(),
                reply,
                queue_wait: state.queue_wait,
                failures: std::mem::take(&mut state.failures),
            })
        }
        Err(why) => {
            let failure = TargetFailure {
                tier,
                route: route.to_string(),
                why,
            };
            tracing::debug!(failure = %failure, "candidate failed");
            if let Some(answer) = client_error(&failure) {
                return Step::Final(DispatchError::Upstream {
                    tier,
                    route: failure.route.clone(),
                    failure: Box::new(answer),
                    tried: std::mem::take(&mut state.failures),
                });
            }
            let now = SystemTime::now();
            match failure.why.fault(now) {
                Some(fault) => {
                    health.failed(key, fault, now);
                }
                // The router could not even reach out (it ran short of descriptors): the
                // target was not tried, so this tells nothing either way (a probe is
                // abandoned, `ProbeGuard::settle_unless_untried`).
                None if failure.why.is_exhausted() => {}
                None => health.succeeded(key),
            }
            Step::Failed(failure)
        }
    }
}

fn give_up(model: &str, state: State, mut notes: Vec<String>) -> DispatchError {
    if state.failures.is_empty() {
        notes.extend(state.cooling);
        return match state.cooling_until {
            Some(until) => DispatchError::Cooling {
                notes,
                until,
                tried: Vec::new(),
            },
            None => DispatchError::Plan(PlanError::NoRoute {
                model: model.to_string(),
                notes,
            }),
        };
    }
    all_failed(state.failures)
}

#[cfg(test)]
mod tests {
    //! The loop, the queue and health against fake targets, in-process.
    use super::*;
    use crate::store::{CachedModel, ModelCache, ProviderKind, ProviderRecord};
    use crate::workers::registry::Hello;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Serves each attempt after `service`; fails the attempts listed in `faults` (by
    /// global attempt number). Counts what runs on each worker at once.
    struct Fake {
        service: Duration,
        faults: Vec<usize>,
        attempts: AtomicUsize,
        running: Mutex<HashMap<String, u32>>,
        overfilled: AtomicU32,
        /// (worker name, request) in the order service started.
        starts: Mutex<Vec<String>>,
        cloud_calls: AtomicUsize,
        /// Attempts the worker refuses (its slot taken by another router), as `faults`.
        refusals: Vec<usize>,
        /// Cloud calls still to fail for want of the router's own descriptors.
        cloud_short: AtomicUsize,
    }

    impl Fake {
        fn new(service: Duration, faults: Vec<usize>) -> Fake {
            Fake {
                service,
                faults,
                attempts: AtomicUsize::new(0),
                running: Mutex::new(HashMap::new()),
                overfilled: AtomicU32::new(0),
                starts: Mutex::new(Vec::new()),
                cloud_calls: AtomicUsize::new(0),
                refusals: Vec::new(),
                cloud_short: AtomicUsize::new(0),
            }
        }

        fn refusing(mut self, attempts: Vec<usize>) -> Fake {
            self.refusals = attempts;
            self
        }
    }

    struct Request<'a> {
        fake: &'a Fake,
        id: String,
    }

    impl Runner for Request<'_> {
        type Reply = String;

        async fn run_worker(&self, slot: SlotGuard, _tier: Tier, _model: &str) -> Result<String, Why> {
            let worker = slot.worker().clone();
            let n = self.fake.attempts.fetch_add(1, Ordering::SeqCst);
            if self.fake.refusals.contains(&n) {
                // As `WorkerJob` does on `job_refused`.
                worker.mark_full();
                drop(slot);
                return Err(Why::Refused);
            }
            {
                let mut running = self.fake.running.lock().unwrap();
                let count = running.entry(worker.name.clone()).or_default();
                *count += 1;
                if *count > worker.slots {
                    self.fake.overfilled.fetch_add(1, Ordering::SeqCst);
                }
            }
            self.fake.starts.lock().unwrap().push(self.id.clone());
            let fail = self.fake.faults.contains(&n);
            if !fail {
                tokio::time::sleep(self.fake.service).await;
            }
            *self.fake.running.lock().unwrap().get_mut(&worker.name).unwrap() -= 1;
            drop(slot);
            if fail {
                return Err(Why::Worker {
                    message: "injected".into(),
                    status: Some(500),
                    retry_after: None,
                });
            }
            Ok(worker.name.clone())
        }

        async fn run_cloud(&self, provider: &Arc<LiveProvider>, _model: &str) -> Result<String, Why> {
            self.fake.cloud_calls.fetch_add(1, Ordering::SeqCst);
            let short = self
                .fake
                .cloud_short
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if short.is_ok() {
                return Err(Why::Provider(crate::providers::ProviderError::Exhausted(
                    "tcp open error: Too many open files (os error 24)".into(),
                )));
            }
            Ok(provider.name.clone())
        }
    }

    struct World {
        queue: Arc<SlotQueue>,
        workers: WorkerRegistry,
        table: RoutingTable,
        health: Health,
        _outboxes: Vec<tokio::sync::mpsc::UnboundedReceiver<crate::workers::protocol::RouterMessage>>,
    }

    fn world(workers: &[(&str, &[&str], u32)], cloud_models: &[&str]) -> World {
        let queue = Arc::new(SlotQueue::new());
        let registry = WorkerRegistry::new(Duration::from_secs(15));
        registry.set_exchange(queue.clone());
        let mut outboxes = Vec::new();
        for (name, models, slots) in workers {
            let (_, rx) = registry.register(Hello {
                token_id: format!("t-{name}"),
                kind: WorkerKind::Gpu,
                name: name.to_string(),
                version: "test".into(),
                models: models.iter().map(|m| m.to_string()).collect(),
                embedding_models: Vec::new(),
                slots: *slots,
                instance: None,
                acks_jobs: true,
                allowed_models: None,
            });
            outboxes.push(rx);
        }
        let rows = if cloud_models.is_empty() {
            Vec::new()
        } else {
            vec![(
                ProviderRecord {
                    id: "p1".into(),
                    name: "cloud".into(),
                    kind: ProviderKind::Openai,
                    base_url: "http://127.0.0.1:1".into(),
                    sealed_key: None,
                    key_hint: String::new(),
                    priority: 100,
                    enabled: true,
                    created_at: 0,
                    updated_at: 0,
                },
                ModelCache {
                    models: cloud_models
                        .iter()
                        .map(|m| CachedModel {
                            id: m.to_string(),
                            display_name: None,
                            created: None,
                        })
                        .collect(),
                    fetched_at: 0,
                },
            )]
        };
        World {
            queue,
            workers: registry,
            table: RoutingTable::build(rows),
            health: Health::default(),
            _outboxes: outboxes,
        }
    }

    impl World {
        /// A chat walk over this world for `model`, through `order`, waiting up to `wait`.
        fn walk<'a>(&'a self, model: &'a str, order: &'a [Tier], wait: Duration) -> Walk<'a> {
            Walk {
                queue: &self.queue,
                workers: &self.workers,
                table: &self.table,
                health: &self.health,
                model,
                provider: None,
                order,
                alias: None,
                turn: 0,
                wait,
                job: JobKind::ChatCompletions,
            }
        }
    }

    async fn send(
        world: &World,
        fake: &Fake,
        id: String,
        model: &str,
        order: &[Tier],
        wait: Duration,
    ) -> Result<String, String> {
        let request = Request { fake, id };
        walk(world.walk(model, order, wait), &request)
            .await
            .map(|w| w.reply)
            .map_err(|e| e.to_string())
    }

    fn assert_no_leak(world: &World) {
        for worker in world.workers.live() {
            assert_eq!(worker.in_use(), 0, "{} leaked a slot", worker.name);
        }
        assert!(world.queue.is_empty(), "a waiter was left in the queue");
    }

    #[tokio::test]
    async fn a_refused_job_moves_on_at_once_without_a_failure_or_a_cooldown() {
        let world = world(&[("gpu", &["m"], 1)], &["m"]);
        let fake = Fake::new(Duration::from_millis(10), vec![]).refusing(vec![0]);
        let order = [Tier::Gpu, Tier::Cloud];
        let request = Request {
            fake: &fake,
            id: "a".into(),
        };
        let walked = walk(world.walk("m", &order, Duration::from_secs(5)), &request)
            .await
            .unwrap();
        assert_eq!(walked.reply, "cloud");
        assert!(walked.failures.is_empty(), "{:?}", walked.failures);
        let worker = world.workers.live().remove(0);
        assert!(!world
            .health
            .is_cooling(&worker_key(&worker.token_id), SystemTime::now()));
        // Full in this router's view until the worker's next status, which frees it.
        assert_eq!(worker.in_use(), 1);
        assert!(worker.try_reserve().is_none());
        worker.apply_status(0, 0, Vec::new());
        assert_eq!(worker.in_use(), 0);
        assert_no_leak(&world);
    }

    #[tokio::test]
    async fn a_refused_request_waits_for_the_worker_and_its_status_lets_it_in() {
        let world = world(&[("gpu", &["m"], 1)], &[]);
        let fake = Fake::new(Duration::from_millis(10), vec![]).refusing(vec![0]);
        let order = [Tier::Gpu];
        let worker = world.workers.live().remove(0);
        let status = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Another router's job held the slot; now the worker reports it free.
            worker.apply_status(0, 0, Vec::new());
        };
        let (reply, ()) = tokio::join!(
            send(&world, &fake, "a".into(), "m", &order, Duration::from_secs(5)),
            status
        );
        assert_eq!(reply.unwrap(), "gpu");
        assert_eq!(fake.attempts.load(Ordering::SeqCst), 2);
        assert_no_leak(&world);
    }

    #[tokio::test]
    async fn a_request_another_target_can_take_never_waits_behind_a_queued_one() {
        let world = world(&[("gpu", &["local"], 1)], &["cloud-model"]);
        let fake = Fake::new(Duration::from_millis(300), vec![]);
        let order = [Tier::Gpu, Tier::Cli, Tier::Cloud];
        let busy = send(&world, &fake, "a".into(), "local", &order, Duration::from_secs(5));
        let queued = send(&world, &fake, "b".into(), "local", &order, Duration::from_secs(5));
        let other = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = Instant::now();
            let reply = send(&world, &fake, "c".into(), "cloud-model", &order, Duration::from_secs(5)).await;
            (reply, started.elapsed())
        };
        let (a, b, (c, took)) = tokio::join!(busy, queued, other);
        assert_eq!(a.unwrap(), "gpu");
        assert_eq!(b.unwrap(), "gpu");
        assert_eq!(c.unwrap(), "cloud");
        assert!(took < Duration::from_millis(100), "the cloud request waited {took:?}");
        assert_no_leak(&world);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue_at_once_and_passes_its_turn() {
        let world = world(&[("gpu", &["m"], 1)], &[]);
        // Wide margins between the steps so a loaded machine cannot reorder them.
        let fake = Fake::new(Duration::from_millis(600), vec![]);
        let order = [Tier::Gpu];
        let first = send(&world, &fake, "a".into(), "m", &order, Duration::from_secs(5));
        let cancelled = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = tokio::time::timeout(
                Duration::from_millis(100),
                send(&world, &fake, "b".into(), "m", &order, Duration::from_secs(5)),
            )
            .await;
            assert!(r.is_err(), "b should still have been waiting");
            assert!(world.queue.is_empty(), "b left the queue when dropped");
        };
        let third = async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            send(&world, &fake, "c".into(), "m", &order, Duration::from_secs(5)).await
        };
        let (a, (), c) = tokio::join!(first, cancelled, third);
        assert!(a.is_ok() && c.is_ok());
        assert_eq!(*fake.starts.lock().unwrap(), vec!["a".to_string(), "c".to_string()]);
        assert_no_leak(&world);
    }

    #[tokio::test]
    async fn a_queue_timeout_is_a_503_with_retry_after() {
        let world = world(&[("gpu", &["m"], 1)], &[]);
        let fake = Fake::new(Duration::from_millis(300), vec![]);
        let order = [Tier::Gpu];
        let hold = send(&world, &fake, "a".into(), "m", &order, Duration::from_secs(5));
        let late = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let request = Request {
                fake: &fake,
                id: "b".into(),
            };
            walk(world.walk("m", &order, Duration::from_millis(50)), &request).await
        };
        let (_, b) = tokio::join!(hold, late);
        let e = b.err().unwrap();
        assert_eq!(e.status(), 503);
        assert!(e.retry_after().is_some());
        assert!(e.queue_wait() >= Duration::from_millis(40), "{:?}", e.queue_wait());
        assert_no_leak(&world);
    }

    fn cool(health: &Health, key: &str) {
        for _ in 0..super::super::health::FAILURES_BEFORE_COOLDOWN {
            let fault = super::super::health::Fault {
                reason: "answered 503".into(),
                until: None,
                limited: false,
            };
            health.failed(key, fault, SystemTime::now());
        }
    }

    #[tokio::test]
    async fn a_cooling_worker_is_skipped_for_a_healthy_target_and_named_when_none_is_left() {
        let world = world(&[("gpu", &["m"], 1)], &["m"]);
        cool(&world.health, &worker_key("t-gpu"));
        let fake = Fake::new(Duration::ZERO, vec![]);
        let order = [Tier::Gpu, Tier::Cloud];
        let served = send(&world, &fake, "a".into(), "m", &order, Duration::from_secs(1)).await;
        assert_eq!(served.unwrap(), "cloud");
        let request = Request {
            fake: &fake,
            id: "b".into(),
        };
        let e = walk(world.walk("m", &[Tier::Gpu], Duration::from_secs(1)), &request)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status(), 503, "{e}");
        assert!(e.to_string().contains("cooling down"), "{e}");
        assert!(e.retry_after().is_some());
        assert_eq!(fake.attempts.load(Ordering::SeqCst), 0, "the cooling worker got no job");
    }

    #[tokio::test]
    async fn a_failure_on_the_only_worker_fails_at_once_instead_of_waiting_for_it() {
        let world = world(&[("gpu", &["m"], 2)], &[]);
        let fake = Fake::new(Duration::ZERO, vec![0]);
        let started = Instant::now();
        let e = send(&world, &fake, "a".into(), "m", &[Tier::Gpu], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.contains("injected"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert_no_leak(&world);
    }

    #[tokio::test]
    async fn a_router_short_of_descriptors_neither_cools_nor_clears_the_provider() {
        let world = world(&[], &["m"]);
        let key = provider_key("p1");
        let fake = Fake::new(Duration::ZERO, vec![]);
        fake.cloud_short.store(5, Ordering::SeqCst);
        for i in 0..5 {
            let e = send(
                &world,
                &fake,
                format!("r{i}"),
                "m",
                &[Tier::Cloud],
                Duration::from_secs(1),
            )
            .await
            .unwrap_err();
            assert!(e.contains("out of system resources"), "{e}");
        }
        assert!(!world.health.is_cooling(&key, SystemTime::now()));
        assert_eq!(world.health.view(&key, SystemTime::now()).consecutive_failures, 0);
        // Two real failures, then the router's shortage: the count of real ones stands,
        // and the next real failure cools the provider.
        let fault = || super::super::health::Fault {
            reason: "answered 503".into(),
            until: None,
            limited: false,
        };
        for _ in 1..super::super::health::FAILURES_BEFORE_COOLDOWN {
            world.health.failed(&key, fault(), SystemTime::now());
        }
        fake.cloud_short.store(1, Ordering::SeqCst);
        send(
            &world,
            &fake,
            "short".into(),
            "m",
            &[Tier::Cloud],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(world.health.failed(&key, fault(), SystemTime::now()).is_some());
    }

    #[tokio::test]
    async fn a_cooling_provider_is_still_the_last_resort() {
        let world = world(&[], &["m"]);
        cool(&world.health, &provider_key("p1"));
        let fake = Fake::new(Duration::ZERO, vec![]);
        let served = send(&world, &fake, "a".into(), "m", &[Tier::Cloud], Duration::from_secs(1)).await;
        assert_eq!(served.unwrap(), "cloud");
        assert_eq!(fake.cloud_calls.load(Ordering::SeqCst), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

        /// Random arrivals, service and faults over workers of mixed models: no slot is
        /// ever overfilled, none leaks, every request ends, and waiters for the same
        /// capacity are served in arrival order.
        #[test]
        fn the_queue_never_overfills_leaks_or_overtakes(
            arrivals in proptest::collection::vec((0u64..15, 0usize..3), 1..24),
            slots in proptest::collection::vec(1u32..3, 3),
            service_ms in 1u64..6,
            faults in proptest::collection::vec(0usize..40, 0..4),
        ) {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async {
                let world = world(
                    &[("w-a", &["a"], slots[0]), ("w-b", &["b"], slots[1]), ("w-ab", &["a", "b"], slots[2])],
                    &[],
                );
                let fake = Fake::new(Duration::from_millis(service_ms), faults.clone());
                let models = ["a", "b", "a"];
                let order = [Tier::Gpu];
                let requests = arrivals.iter().enumerate().map(|(i, (delay, m))| {
                    let world = &world;
                    let fake = &fake;
                    async move {
                        tokio::time::sleep(Duration::from_millis(*delay)).await;
                        send(world, fake, format!("r{i}"), models[*m], &order, Duration::from_secs(20)).await
                    }
                });
                let results = futures_util::future::join_all(requests).await;
                for r in &results {
                    // Only injected faults may fail a request, and only after it tried
                    // everything it could use.
                    if let Err(e) = r {
                        assert!(e.contains("injected"), "{e}");
                    }
                }
                assert_eq!(fake.overfilled.load(Ordering::SeqCst), 0, "a worker ran more jobs than it has slots");
                assert_no_leak(&world);
                if faults.is_empty() {
                    assert!(results.iter().all(Result::is_ok));
                }
            });
        }

        /// One capacity class: whoever joined the queue first gets the next slot first.
        #[test]
        fn waiters_for_one_capacity_are_served_in_arrival_order(
            count in 3usize..16,
            slots in 1u32..3,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let world = world(&[("w", &["m"], slots)], &[]);
                let fake = Fake::new(Duration::from_millis(5), vec![]);
                let order = [Tier::Gpu];
                // Staggered by 1 ms: arrival order is the index order.
                let requests = (0..count).map(|i| {
                    let world = &world;
                    let fake = &fake;
                    async move {
                        tokio::time::sleep(Duration::from_millis(i as u64)).await;
                        send(world, fake, format!("{i:02}"), "m", &order, Duration::from_secs(20)).await
                    }
                });
                let results = futures_util::future::join_all(requests).await;
                assert!(results.iter().all(Result::is_ok));
                let starts = fake.starts.lock().unwrap().clone();
                let mut sorted = starts.clone();
                sorted.sort();
                assert_eq!(starts, sorted, "served out of arrival order");
                assert_no_leak(&world);
            });
        }
    }
}
