//! The PostgreSQL backend: several routers share one database.
//!
//! Each logical table is `auxot_<name> (k bytea primary key, v bytea)` (see `kv.rs` for the
//! key encoding). Records stay the JSON they are on redb, and sealed provider keys stay
//! sealed: PostgreSQL never sees a plaintext secret.
//!
//! Transactions keep redb's semantics across routers. A read transaction is one
//! `REPEATABLE READ READ ONLY` snapshot. A write transaction first takes one transaction-level
//! advisory lock, so write transactions run one at a time across the whole fleet, exactly as
//! redb's single writer runs them on one box: every read-check-write in `store/` (a unique
//! name, the last admin, a usage key) holds without retries. Writes are short (the usage
//! writer batches rows), so one lock costs little; a write names the tables it changed and
//! `pg_notify` tells every router at commit.
//!
//! The closures of `Store::read`/`write` are synchronous; they run on the blocking pool, and
//! each statement is driven there with `Handle::block_on` on a connection taken from the pool
//! beforehand (asynchronously, so no runtime thread waits for a connection).

use super::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;

/// The channel change notices go out on; the payload names the changed tables, comma-separated.
pub const CHANGES_CHANNEL: &str = "auxot_changes";

/// Advisory lock keys (`pg_advisory_*` takes one bigint): "auxot" in ASCII, plus a role byte.
const WRITE_LOCK: i64 = 0x6175_786f_7401;
const MIGRATE_LOCK: i64 = 0x6175_786f_7402;
/// Held shared by each running router (on its change-listener connection) for as long as it
/// runs; a tool that must not run beside routers (`rotate-secret`) tries it exclusively.
pub(crate) const ROUTER_LOCK: i64 = 0x6175_786f_7403;

/// Every logical table, as `TableDefinition` names them; `auxot_` + name in SQL.
pub const TABLES: &[&str] = &[
    "meta",
    "providers",
    "provider_names",
    "models",
    "admins",
    "sessions",
    "api_keys",
    "worker_tokens",
    "aliases",
    "agents",
    "settings",
    "usage",
    "usage_index",
    "usage_postings",
    "usage_spend",
    "usage_daily",
    "prices",
    "conversations",
];

/// The logical name as a `'static` str from `TABLES` (an unknown one fails loudly in SQL).
pub(crate) fn table_name(name: &str) -> &'static str {
    TABLES.iter().find(|t| **t == name).copied().unwrap_or("unknown_table")
}

/// Versioned schema steps, applied in order at start under `MIGRATE_LOCK`; a step is never
/// edited once released: a change is a new step.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE auxot_meta (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_providers (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_provider_names (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_models (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_admins (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_sessions (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_api_keys (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_worker_tokens (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_aliases (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_agents (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_settings (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_usage (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_usage_index (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_usage_spend (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_usage_daily (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_prices (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE auxot_conversations (k bytea PRIMARY KEY, v bytea NOT NULL);",
    ),
    (
        2,
        // Per-minute request and token counts per key, one row per router process
        // (`instance`), so each router reads what the others counted (see `rate.rs`).
        "CREATE TABLE auxot_rate (
             key_id text NOT NULL,
             minute bigint NOT NULL,
             instance bigint NOT NULL,
             requests bigint NOT NULL,
             tokens bigint NOT NULL,
             PRIMARY KEY (key_id, minute, instance));",
    ),
    (
        3,
        // Which router holds which worker connection, refreshed every few seconds by the
        // router holding it (see `presence.rs`).
        "CREATE TABLE auxot_worker_presence (
             router_instance text NOT NULL,
             worker_id text NOT NULL,
             router text NOT NULL,
             v bytea NOT NULL,
             seen_at timestamptz NOT NULL,
             PRIMARY KEY (router_instance, worker_id));",
    ),
    (
        4,
        // Each router process exchanging rate counters, by when it last did: how many
        // routers share a key's limit (see `rate.rs`).
        "CREATE TABLE auxot_rate_routers (
             instance bigint PRIMARY KEY,
             seen_at timestamptz NOT NULL);",
    ),
    (
        5,
        // The request-log index as chunks of keys per filter (`usage_postings.rs`); the
        // store's step to schema 6 fills it and empties `auxot_usage_index`.
        "CREATE TABLE auxot_usage_postings (k bytea PRIMARY KEY, v bytea NOT NULL);",
    ),
];

/// The newest schema step this auxot knows.
pub const PG_SCHEMA_VERSION: i32 = 5;

/// Connections each router keeps at most.
const POOL_SIZE: usize = 16;

pub struct PgStore {
    pool: Pool,
    /// For the change listener's own (unpooled) connection.
    pub(crate) config: tokio_postgres::Config,
}

pub(crate) fn pg_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Postgres(e.to_string())
}

pub(crate) fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(pg_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PgStore {
    /// Connects (TLS as the URL's `sslmode` says, verified against the public roots) and
    /// brings the schema up to date.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore::pool(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to a database a router already set up, for an operator's tool: the schema
    /// is checked, never changed (a newer tool must not upgrade a database under older
    /// routers).
    pub async fn connect_existing(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore::pool(url)?;
        let client = store.connection().await?;
        let row = client
            .query_one("SELECT to_regclass('auxot_schema_migrations') IS NOT NULL", &[])
            .await
            .map_err(pg_error)?;
        if !row.get::<_, bool>(0) {
            return Err(StoreError::Conflict(
                "the database holds no auxot data: start a router on it first, or fill it with `auxot migrate` or `auxot restore`".into(),
            ));
        }
        let current = schema_step(&client).await?;
        if current < PG_SCHEMA_VERSION {
            return Err(StoreError::Conflict(format!(
                "the database schema is at step {current}, this auxot expects {PG_SCHEMA_VERSION}: start a router of this version on it first (it upgrades the schema), then run the tool"
            )));
        }
        drop(client);
        Ok(store)
    }

    fn pool(url: &str) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Postgres(format!("the database URL is not valid: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("auxot");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let manager = Manager::from_config(
            config.clone(),
            tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(pg_error)?;
        Ok(PgStore { pool, config })
    }

    /// Applies the pending schema steps, one transaction each, under a session advisory lock:
    /// two routers starting at once apply each step once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.connection().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
            .await
            .map_err(pg_error)?;
        let result = self.apply_migrations(&mut client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
            .await
            .map_err(pg_error);
        result.and(unlocked.map(|_| ()))
    }

    async fn apply_migrations(&self, client: &mut Object) -> Result<(), StoreError> {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS auxot_schema_migrations (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(pg_error)?;
        let current = schema_step(client).await?;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let txn = client.transaction().await.map_err(pg_error)?;
            txn.batch_execute(sql).await.map_err(pg_error)?;
            txn.execute("INSERT INTO auxot_schema_migrations (version) VALUES ($1)", &[version])
                .await
                .map_err(pg_error)?;
            txn.commit().await.map_err(pg_error)?;
            tracing::info!(version, "applied a PostgreSQL schema step");
        }
        Ok(())
    }

    pub(crate) async fn connection(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot reach PostgreSQL: {e}")))
    }
}

/// Key → value of the upserts of one table not sent yet.
type PendingRows = BTreeMap<Vec<u8>, Vec<u8>>;

/// One transaction on one pooled connection, driven from a blocking-pool thread.
pub struct PgTxn {
    client: RefCell<Option<Object>>,
    runtime: Handle,
    changed: RefCell<BTreeSet<&'static str>>,
    /// Upserts not sent yet, per table (the last value per key): sent as one statement
    /// before anything reads that table, and at commit. A usage batch's index entries go
    /// out together instead of one round trip each.
    pending: RefCell<BTreeMap<&'static str, PendingRows>>,
    finished: Cell<bool>,
}

impl PgTxn {
    fn begin(client: Object, runtime: Handle, write: bool) -> Result<PgTxn, StoreError> {
        let txn = PgTxn {
            client: RefCell::new(Some(client)),
            runtime,
            changed: RefCell::new(BTreeSet::new()),
            pending: RefCell::new(BTreeMap::new()),
            finished: Cell::new(false),
        };
        if write {
            txn.batch("BEGIN")?;
            txn.query("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
        } else {
            txn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        }
        Ok(txn)
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        let client = self.client.borrow();
        let client = client.as_ref().ok_or_else(gone)?;
        self.runtime.block_on(client.batch_execute(sql)).map_err(pg_error)
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client.borrow();
        let client = client.as_ref().ok_or_else(gone)?;
        self.runtime
            .block_on(async {
                let statement = client.prepare_cached(sql).await?;
                client.query(&statement, params).await
            })
            .map_err(pg_error)
    }

    /// Sends the pending upserts of `table`.
    pub(crate) fn flush(&self, table: &str) -> Result<(), StoreError> {
        let Some(rows) = self.pending.borrow_mut().remove(table) else {
            return Ok(());
        };
        let keys: Vec<&[u8]> = rows.keys().map(Vec::as_slice).collect();
        let values: Vec<&[u8]> = rows.values().map(Vec::as_slice).collect();
        self.query(
            &format!(
                "INSERT INTO auxot_{table} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
            &[&keys, &values],
        )?;
        Ok(())
    }

    fn flush_all(&self) -> Result<(), StoreError> {
        let tables: Vec<&'static str> = self.pending.borrow().keys().copied().collect();
        tables.into_iter().try_for_each(|table| self.flush(table))
    }

    /// One key's row: a pending upsert of it is the answer, and the others need not be sent
    /// first (they are other keys), so a read-then-write loop costs one round trip per read.
    pub(crate) fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.pending.borrow().get(table).and_then(|rows| rows.get(key)) {
            return Ok(Some(value.clone()));
        }
        let rows = self.query(&format!("SELECT v FROM auxot_{table} WHERE k = $1"), &[&key])?;
        Ok(rows.first().map(|row| row.get(0)))
    }

    pub(crate) fn count(&self, table: &str) -> Result<u64, StoreError> {
        self.flush(table)?;
        let rows = self.query(&format!("SELECT count(*) FROM auxot_{table}"), &[])?;
        let count: i64 = rows.first().map_or(0, |row| row.get(0));
        Ok(count.max(0) as u64)
    }

    pub(crate) fn upsert(&self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.pending
            .borrow_mut()
            .entry(table)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        self.changed(table);
        Ok(())
    }

    /// Inserts many rows in one statement (a migration's bulk copy).
    pub(crate) fn insert_many(&self, table: &'static str, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.flush(table)?;
        let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
        let values: Vec<&[u8]> = rows.iter().map(|(_, v)| v.as_slice()).collect();
        self.query(
            &format!("INSERT INTO auxot_{table} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[])"),
            &[&keys, &values],
        )?;
        self.changed(table);
        Ok(())
    }

    pub(crate) fn delete(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // A pending upsert of this key is dropped unsent; it is also the newest value.
        let unsent = self
            .pending
            .borrow_mut()
            .get_mut(table)
            .and_then(|rows| rows.remove(key));
        let rows = self.query(&format!("DELETE FROM auxot_{table} WHERE k = $1 RETURNING v"), &[&key])?;
        let removed = unsent.or_else(|| rows.first().map(|row| row.get(0)));
        if removed.is_some() {
            self.changed(table);
        }
        Ok(removed)
    }

    /// Up to `limit` rows of `[from, to)` in key order (descending when `reverse`), and
    /// whether that was the last of them.
    #[allow(clippy::type_complexity)]
    pub(crate) fn scan(
        &self,
        table: &str,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        reverse: bool,
        limit: i64,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, bool), StoreError> {
        self.flush(table)?;
        let order = if reverse { "DESC" } else { "ASC" };
        // One statement per bound shape: a plain `k >= $1 AND k < $2` lets the planner walk
        // the primary key, which an `$1 IS NULL OR …` form would hide from it.
        let rows = match (from, to) {
            (Some(from), Some(to)) => self.query(
                &format!("SELECT k, v FROM auxot_{table} WHERE k >= $1 AND k < $2 ORDER BY k {order} LIMIT $3"),
                &[&from, &to, &limit],
            )?,
            (Some(from), None) => self.query(
                &format!("SELECT k, v FROM auxot_{table} WHERE k >= $1 ORDER BY k {order} LIMIT $2"),
                &[&from, &limit],
            )?,
            (None, Some(to)) => self.query(
                &format!("SELECT k, v FROM auxot_{table} WHERE k < $1 ORDER BY k {order} LIMIT $2"),
                &[&to, &limit],
            )?,
            (None, None) => self.query(
                &format!("SELECT k, v FROM auxot_{table} ORDER BY k {order} LIMIT $1"),
                &[&limit],
            )?,
        };
        let exhausted = (rows.len() as i64) < limit;
        Ok((rows.iter().map(|row| (row.get(0), row.get(1))).collect(), exhausted))
    }

    /// Deletes every row of `table`, unsent upserts included.
    pub(crate) fn clear(&self, table: &'static str) -> Result<(), StoreError> {
        self.pending.borrow_mut().remove(table);
        self.batch(&format!("DELETE FROM auxot_{table}"))?;
        self.changed(table);
        Ok(())
    }

    /// Whether no router runs on the database: takes the router lock exclusively until the
    /// transaction ends (a router that connects meanwhile waits for it).
    pub(crate) fn no_router_running(&self) -> Result<bool, StoreError> {
        let rows = self.query("SELECT pg_try_advisory_xact_lock($1)", &[&ROUTER_LOCK])?;
        Ok(rows.first().is_some_and(|row| row.get::<_, bool>(0)))
    }

    /// Names a changed table in the commit's notice.
    pub(crate) fn changed(&self, table: &str) {
        self.changed.borrow_mut().insert(table_name(table));
    }

    fn commit(&self) -> Result<(), StoreError> {
        self.flush_all()?;
        let changed: Vec<&str> = self.changed.borrow().iter().copied().collect();
        if !changed.is_empty() {
            // Delivered to every listener when (and only if) the transaction commits.
            let payload = changed.join(",");
            self.query("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &payload])?;
        }
        self.batch("COMMIT")?;
        self.finished.set(true);
        Ok(())
    }

    fn rollback(&self) {
        if self.batch("ROLLBACK").is_ok() {
            self.finished.set(true);
        }
    }
}

impl Drop for PgTxn {
    /// A connection whose transaction did not end cleanly (a failed ROLLBACK, a panic in a
    /// closure) must not go back to the pool mid-transaction: it is closed instead.
    fn drop(&mut self) {
        if !self.finished.get() {
            if let Some(client) = self.client.borrow_mut().take() {
                drop(Object::take(client));
            }
        }
    }
}

fn gone() -> StoreError {
    StoreError::Postgres("the connection was closed".into())
}

/// Runs `f` in a read snapshot (on the blocking pool).
pub(crate) fn read_with<T>(
    client: Object,
    runtime: Handle,
    f: impl FnOnce(&PgTxn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let txn = PgTxn::begin(client, runtime, false)?;
    let result = f(&txn);
    // Nothing was written: ending the snapshot either way is the same.
    txn.rollback();
    result
}

/// Runs `f` in a write transaction (on the blocking pool): committed on Ok, rolled back on Err.
pub(crate) fn write_with<T>(
    client: Object,
    runtime: Handle,
    f: impl FnOnce(&PgTxn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let txn = PgTxn::begin(client, runtime, true)?;
    match f(&txn) {
        Ok(value) => {
            txn.commit()?;
            Ok(value)
        }
        Err(e) => {
            txn.rollback();
            Err(e)
        }
    }
}

/// The last schema step applied; a database from a newer auxot is refused.
async fn schema_step(client: &Object) -> Result<i32, StoreError> {
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM auxot_schema_migrations", &[])
        .await
        .map_err(pg_error)?;
    let current: i32 = row.get(0);
    if current > PG_SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current as u32,
            supported: PG_SCHEMA_VERSION as u32,
        });
    }
    Ok(current)
}
