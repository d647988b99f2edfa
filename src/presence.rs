//! The fleet's workers list. Each router on a shared database publishes the workers
//! connected to it (presence rows, see `store::presence`): every `BEAT`, and soon after a
//! worker connects, leaves or reports a change. `GET /api/workers` on any router merges the
//! other routers' fresh rows with its own live view: each worker once, with every router it
//! is connected to. A router that is killed stops refreshing its rows; they are left out
//! after `FRESH_WITHIN` (three missed beats) and deleted after `PRUNE_AFTER`.
//!
//! Nothing here runs on the request path: the rows are written by one background task,
//! which takes the registry's views (short locks, no await) and then writes.

use crate::store::{PresenceLink, RouterPresence, Store, StoreError, WorkerPresence};
use crate::workers::protocol::RouterLink;
use crate::workers::registry::{WorkerRegistry, WorkerView};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often a router refreshes its rows even when nothing changed.
pub const BEAT: Duration = Duration::from_secs(2);
/// Rows older than this belong to a router that missed three beats: it is gone.
pub const FRESH_WITHIN: Duration = Duration::from_secs(7);
/// Changes that come together (a worker's status after each job) go out as one write…
const COALESCE: Duration = Duration::from_millis(100);
/// …and one router writes at most this often.
const MIN_GAP: Duration = Duration::from_millis(500);
/// Rows of gone routers are deleted once this old, by whichever router prunes next.
const PRUNE_AFTER: Duration = Duration::from_secs(60);
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// This router's part in the fleet's workers list (PostgreSQL only).
pub struct Presence {
    store: Store,
    /// `--router-name`, shown beside each connection.
    router: Arc<str>,
    /// This process's id in the rows (router names need not be unique).
    instance: String,
}

impl Presence {
    /// `None` on redb: one router, whose own workers are the whole list.
    pub fn new(store: Store, router: Arc<str>) -> Option<Arc<Presence>> {
        store.shares_presence().then(|| {
            Arc::new(Presence {
                store,
                router,
                instance: uuid::Uuid::new_v4().to_string(),
            })
        })
    }

    /// Publishes this router's workers until aborted: every `BEAT`, and after each change.
    pub async fn run(self: Arc<Self>, workers: Arc<WorkerRegistry>) {
        let changed = workers.changes();
        let mut last_prune = Instant::now();
        let mut failing = false;
        loop {
            let rows: Vec<WorkerPresence> = workers.views().iter().filter_map(presence_of).collect();
            let prune = last_prune.elapsed() >= PRUNE_EVERY;
            match self
                .store
                .publish_presence(&self.instance, &self.router, &rows, prune.then_some(PRUNE_AFTER))
                .await
            {
                Ok(()) => {
                    if prune {
                        last_prune = Instant::now();
                    }
                    if std::mem::take(&mut failing) {
                        tracing::info!("this router's workers are published to the fleet again");
                    }
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "cannot publish this router's workers to the fleet; the other routers will not list them until it works again");
                    }
                }
            }
            let last_write = Instant::now();
            tokio::select! {
                () = tokio::time::sleep_until(last_write + BEAT) => {}
                () = changed.notified() => {
                    let at = (Instant::now() + COALESCE).max(last_write + MIN_GAP);
                    tokio::time::sleep_until(at).await;
                }
            }
        }
    }

    /// Deletes this router's rows: it is stopping, its workers are disconnected.
    pub async fn withdraw(&self) {
        if let Err(e) = self.store.withdraw_presence(&self.instance).await {
            tracing::warn!(error = %e, "cannot withdraw this router's workers from the fleet list; they expire in a few seconds");
        }
    }

    /// The workers of the other routers, as their fresh rows say.
    pub async fn others(&self) -> Result<Vec<RouterPresence>, StoreError> {
        self.store.fleet_presence(&self.instance, FRESH_WITHIN).await
    }
}

/// A live worker's row (offline ones are this router's history, not the fleet's).
fn presence_of(view: &WorkerView) -> Option<WorkerPresence> {
    (view.status != "offline").then(|| WorkerPresence {
        worker_id: view.id.clone(),
        instance_id: view.instance_id.clone(),
        token_id: view.token_id.clone(),
        kind: view.kind,
        name: view.name.clone(),
        version: view.version.clone(),
        models: view.models.clone(),
        embedding_models: view.embedding_models.clone(),
        slots_total: view.slots_total,
        slots_in_use: view.slots_in_use,
        slots_in_use_here: view.slots_in_use_here,
        jobs_served: view.jobs_served,
        connected_at: view.connected_at.clone(),
        last_heartbeat: view.last_heartbeat.clone(),
        status: view.status.to_string(),
        links: view
            .routers
            .iter()
            .map(|l| PresenceLink {
                url: l.url.clone(),
                connected: l.connected,
            })
            .collect(),
    })
}

/// One router a worker is connected to, and the worker as that router sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connection {
    /// The router's `--router-name`.
    pub router: String,
    /// It is the router that answered this list.
    pub here: bool,
    /// That router's id for the connection.
    pub worker_id: String,
    /// `idle` or `busy`, as that router sees it.
    pub status: String,
    pub slots_in_use: u32,
    /// Of `slots_in_use`, that router's jobs.
    pub slots_in_use_here: u32,
    /// Jobs it served for that router.
    pub jobs_served: u64,
    pub connected_at: String,
    pub last_heartbeat: String,
}

/// A worker of the fleet, once: as this router sees it when connected here, else as the
/// routers it is connected to see it; with each of its connections.
#[derive(Debug, Clone, Serialize)]
pub struct FleetWorker {
    #[serde(flatten)]
    pub view: WorkerView,
    /// Connected to the router that answered (`slots_in_use_here` and `jobs_served` are
    /// this router's; zero when not connected here).
    pub connected_here: bool,
    /// Every router it is connected to (empty when offline), by router name.
    pub connections: Vec<Connection>,
}

fn connection(router: &str, here: bool, view: &WorkerView) -> Connection {
    Connection {
        router: router.to_string(),
        here,
        worker_id: view.id.clone(),
        status: view.status.to_string(),
        slots_in_use: view.slots_in_use,
        slots_in_use_here: view.slots_in_use_here,
        jobs_served: view.jobs_served,
        connected_at: view.connected_at.clone(),
        last_heartbeat: view.last_heartbeat.clone(),
    }
}

/// A connection of another router, as that router sees it (its jobs, its count).
fn remote_connection(row: &RouterPresence) -> Connection {
    let w = &row.worker;
    Connection {
        router: row.router.clone(),
        here: false,
        worker_id: w.worker_id.clone(),
        status: w.status.clone(),
        slots_in_use: w.slots_in_use,
        slots_in_use_here: w.slots_in_use_here,
        jobs_served: w.jobs_served,
        connected_at: w.connected_at.clone(),
        last_heartbeat: w.last_heartbeat.clone(),
    }
}

/// A connection of another router as a view of this one: its jobs there are not this
/// router's.
fn remote_view(w: &WorkerPresence) -> WorkerView {
    WorkerView {
        id: w.worker_id.clone(),
        instance_id: w.instance_id.clone(),
        routers: w
            .links
            .iter()
            .map(|l| RouterLink {
                url: l.url.clone(),
                connected: l.connected,
            })
            .collect(),
        slots_in_use_here: 0,
        token_id: w.token_id.clone(),
        kind: w.kind,
        name: w.name.clone(),
        version: w.version.clone(),
        models: w.models.clone(),
        embedding_models: w.embedding_models.clone(),
        slots_total: w.slots_total,
        slots_in_use: w.slots_in_use,
        jobs_served: 0,
        connected_at: w.connected_at.clone(),
        last_heartbeat: w.last_heartbeat.clone(),
        status: if w.status == "busy" { "busy" } else { "idle" },
    }
}

/// Each worker once: this router's live workers with their connections elsewhere, the
/// workers connected only to other routers, then this router's recently gone workers that
/// are not live anywhere. One worker is recognised across routers by its instance id; a
/// worker too old to send one is listed once per router.
pub fn merge(here: &str, local: Vec<WorkerView>, others: Vec<RouterPresence>) -> Vec<FleetWorker> {
    let key = |router_instance: &str, view_id: &str, instance: &Option<String>| match instance {
        Some(instance) => format!("instance:{instance}"),
        None => format!("connection:{router_instance}/{view_id}"),
    };
    let (live, offline): (Vec<WorkerView>, Vec<WorkerView>) = local.into_iter().partition(|v| v.status != "offline");
    let mut order: Vec<String> = Vec::new();
    let mut merged: HashMap<String, FleetWorker> = HashMap::new();
    for view in live {
        let k = key("", &view.id, &view.instance_id);
        let entry = FleetWorker {
            connections: vec![connection(here, true, &view)],
            connected_here: true,
            view,
        };
        if merged.insert(k.clone(), entry).is_none() {
            order.push(k);
        }
    }
    for row in others {
        let view = remote_view(&row.worker);
        let k = key(&row.router_instance, &view.id, &view.instance_id);
        let link = remote_connection(&row);
        match merged.get_mut(&k) {
            Some(known) => {
                known.connections.push(link);
                if !known.connected_here {
                    fold_remote(&mut known.view, &view);
                }
            }
            None => {
                order.push(k.clone());
                merged.insert(
                    k,
                    FleetWorker {
                        view,
                        connected_here: false,
                        connections: vec![link],
                    },
                );
            }
        }
    }
    let mut out: Vec<FleetWorker> = order.into_iter().filter_map(|k| merged.remove(&k)).collect();
    for worker in &mut out {
        worker
            .connections
            .sort_by(|a, b| b.here.cmp(&a.here).then_with(|| a.router.cmp(&b.router)));
    }
    out.sort_by(|a, b| a.view.name.cmp(&b.view.name).then_with(|| a.view.id.cmp(&b.view.id)));
    let live_instances: Vec<String> = out.iter().filter_map(|w| w.view.instance_id.clone()).collect();
    out.extend(
        offline
            .into_iter()
            .filter(|v| !v.instance_id.as_ref().is_some_and(|i| live_instances.contains(i)))
            .map(|view| FleetWorker {
                view,
                connected_here: false,
                connections: Vec::new(),
            }),
    );
    out
}

/// A worker seen only through other routers: idle if any of them has a slot free, its
/// slots as busy as the busiest report says, heard from as the latest one.
fn fold_remote(into: &mut WorkerView, other: &WorkerView) {
    if other.status == "idle" {
        into.status = "idle";
    }
    into.slots_in_use = into.slots_in_use.max(other.slots_in_use);
    if other.last_heartbeat > into.last_heartbeat {
        into.last_heartbeat = other.last_heartbeat.clone();
    }
    if other.connected_at < into.connected_at {
        into.connected_at = other.connected_at.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::protocol::WorkerKind;

    fn view(id: &str, instance: Option<&str>, name: &str, status: &'static str, busy: u32) -> WorkerView {
        WorkerView {
            id: id.into(),
            instance_id: instance.map(str::to_string),
            routers: Vec::new(),
            slots_in_use_here: busy.min(1),
            token_id: "t".into(),
            kind: WorkerKind::Gpu,
            name: name.into(),
            version: "1".into(),
            models: vec!["m".into()],
            embedding_models: Vec::new(),
            slots_total: 2,
            slots_in_use: busy,
            jobs_served: 5,
            connected_at: "2026-11-30T07:00:00Z".into(),
            last_heartbeat: "2026-11-30T07:10:00Z".into(),
            status,
        }
    }

    fn remote(router: &str, v: &WorkerView) -> RouterPresence {
        RouterPresence {
            router_instance: format!("{router}-process"),
            router: router.into(),
            worker: presence_of(v).unwrap(),
        }
    }

    #[test]
    fn a_worker_on_several_routers_is_listed_once_with_each_connection() {
        let here = view("a1", Some("w1"), "gpu-1", "idle", 1);
        let on_b = view("b1", Some("w1"), "gpu-1", "busy", 2);
        let merged = merge("a", vec![here.clone()], vec![remote("b", &on_b)]);
        assert_eq!(merged.len(), 1);
        let w = &merged[0];
        assert!(w.connected_here);
        assert_eq!(w.view.id, "a1", "this router's own view comes first");
        assert_eq!((w.view.slots_in_use, w.view.jobs_served), (1, 5));
        let routers: Vec<(&str, bool, &str)> = w
            .connections
            .iter()
            .map(|c| (c.router.as_str(), c.here, c.status.as_str()))
            .collect();
        assert_eq!(routers, vec![("a", true, "idle"), ("b", false, "busy")]);
        assert_eq!(w.connections[1].slots_in_use_here, 1);
        assert_eq!(w.connections[1].jobs_served, 5);
    }

    #[test]
    fn a_worker_connected_only_elsewhere_is_listed_with_none_of_this_routers_jobs() {
        let on_b = view("b1", Some("w1"), "gpu-1", "busy", 2);
        let on_c = view("c1", Some("w1"), "gpu-1", "idle", 1);
        let merged = merge("a", Vec::new(), vec![remote("c", &on_c), remote("b", &on_b)]);
        assert_eq!(merged.len(), 1);
        let w = &merged[0];
        assert!(!w.connected_here);
        assert_eq!(w.view.status, "idle", "a slot is free through one of its routers");
        assert_eq!(
            (w.view.slots_in_use, w.view.slots_in_use_here, w.view.jobs_served),
            (2, 0, 0)
        );
        let routers: Vec<&str> = w.connections.iter().map(|c| c.router.as_str()).collect();
        assert_eq!(routers, vec!["b", "c"]);
    }

    #[test]
    fn workers_without_an_instance_id_and_gone_workers_are_kept_apart() {
        let old_here = view("a1", None, "old", "idle", 0);
        let old_on_b = view("b1", None, "old", "idle", 0);
        let gone_here = view("a0", Some("w2"), "gpu-2", "offline", 0);
        let back_on_b = view("b2", Some("w2"), "gpu-2", "idle", 0);
        let really_gone = view("a9", Some("w3"), "gpu-3", "offline", 0);
        let merged = merge(
            "a",
            vec![old_here, gone_here, really_gone],
            vec![remote("b", &old_on_b), remote("b", &back_on_b)],
        );
        let listed: Vec<(&str, &str, bool)> = merged
            .iter()
            .map(|w| (w.view.id.as_str(), w.view.status, w.connected_here))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("b2", "idle", false),
                ("a1", "idle", true),
                ("b1", "idle", false),
                ("a9", "offline", false)
            ],
            "an old worker once per router; a worker live elsewhere is not listed offline"
        );
        assert!(merged[3].connections.is_empty());
    }
}
