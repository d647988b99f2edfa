//! Which router holds which worker connection, for the fleet's workers list (PostgreSQL
//! only). Each router rewrites its own rows, one per worker connected to it, every beat and
//! on every change, stamped with the database's clock (`seen_at`), so routers' clocks never
//! need to agree. Rows a router stopped refreshing (it was killed) are left out of reads
//! once stale, and deleted later by whichever router prunes. Like the rate counters, these
//! writes bypass the write lock and send no change notice: readers query them when asked.
//! On redb there is one router, whose own workers are the whole list.

use super::postgres::{pg_error, PgStore};
use super::{decode, encode, Backend, Store, StoreError, WorkerKind};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A router a worker says it dials, as the worker names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceLink {
    pub url: String,
    pub connected: bool,
}

/// One worker connection as the router holding it sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerPresence {
    /// That router's id for the connection.
    pub worker_id: String,
    /// The worker process's id, the same on every router (absent for older workers).
    pub instance_id: Option<String>,
    pub token_id: String,
    pub kind: WorkerKind,
    pub name: String,
    pub version: String,
    pub models: Vec<String>,
    #[serde(default)]
    pub embedding_models: Vec<String>,
    pub slots_total: u32,
    /// Slots busy as that router sees them (its jobs and the others').
    pub slots_in_use: u32,
    /// Of those, that router's jobs.
    pub slots_in_use_here: u32,
    pub jobs_served: u64,
    pub connected_at: String,
    pub last_heartbeat: String,
    /// `idle` or `busy` as that router sees it.
    pub status: String,
    #[serde(default)]
    pub links: Vec<PresenceLink>,
}

/// A worker connection of another router, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterPresence {
    /// The router process's id (router names need not be unique).
    pub router_instance: String,
    /// Its `--router-name`.
    pub router: String,
    pub worker: WorkerPresence,
}

impl Store {
    /// Whether routers share their workers' presence (several routers on PostgreSQL).
    pub fn shares_presence(&self) -> bool {
        self.is_postgres()
    }

    /// Replaces this router's rows with `workers`, stamped now; with `prune_after`, also
    /// deletes every router's rows not refreshed for that long.
    pub async fn publish_presence(
        &self,
        instance: &str,
        router: &str,
        workers: &[WorkerPresence],
        prune_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(()),
            Backend::Postgres(pg) => pg.publish_presence(instance, router, workers, prune_after).await,
        }
    }

    /// Deletes this router's rows (it is stopping).
    pub async fn withdraw_presence(&self, instance: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(()),
            Backend::Postgres(pg) => pg.publish_presence(instance, "", &[], None).await,
        }
    }

    /// The other routers' rows refreshed within `fresh_within`.
    pub async fn fleet_presence(
        &self,
        except_instance: &str,
        fresh_within: Duration,
    ) -> Result<Vec<RouterPresence>, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(Vec::new()),
            Backend::Postgres(pg) => pg.fleet_presence(except_instance, fresh_within).await,
        }
    }
}

impl PgStore {
    async fn publish_presence(
        &self,
        instance: &str,
        router: &str,
        workers: &[WorkerPresence],
        prune_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = workers.iter().map(|w| w.worker_id.as_str()).collect();
        let records = workers
            .iter()
            .map(|w| encode("worker presence", w))
            .collect::<Result<Vec<Vec<u8>>, _>>()?;
        let client = self.connection().await?;
        client
            .execute(
                "DELETE FROM auxot_worker_presence WHERE router_instance = $1 AND NOT (worker_id = ANY($2))",
                &[&instance, &ids],
            )
            .await
            .map_err(pg_error)?;
        if let Some(after) = prune_after {
            client
                .execute(
                    "DELETE FROM auxot_worker_presence WHERE seen_at < now() - $1::float8 * interval '1 second'",
                    &[&after.as_secs_f64()],
                )
                .await
                .map_err(pg_error)?;
        }
        if !workers.is_empty() {
            client
                .execute(
                    "INSERT INTO auxot_worker_presence (router_instance, worker_id, router, v, seen_at)
                     SELECT $1, w, $3, v, now() FROM unnest($2::text[], $4::bytea[]) AS d(w, v)
                     ON CONFLICT (router_instance, worker_id) DO UPDATE
                     SET router = excluded.router, v = excluded.v, seen_at = excluded.seen_at",
                    &[&instance, &ids, &router, &records],
                )
                .await
                .map_err(pg_error)?;
        }
        Ok(())
    }

    async fn fleet_presence(
        &self,
        except_instance: &str,
        fresh_within: Duration,
    ) -> Result<Vec<RouterPresence>, StoreError> {
        let client = self.connection().await?;
        let rows = client
            .query(
                "SELECT router_instance, router, v FROM auxot_worker_presence
                 WHERE router_instance <> $1 AND seen_at > now() - $2::float8 * interval '1 second'
                 ORDER BY router, router_instance, worker_id",
                &[&except_instance, &fresh_within.as_secs_f64()],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                let bytes: Vec<u8> = row.get(2);
                Ok(RouterPresence {
                    router_instance: row.get(0),
                    router: row.get(1),
                    worker: decode("worker presence", &bytes)?,
                })
            })
            .collect()
    }
}
