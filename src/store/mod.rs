//! The store: one interface (`kv.rs`), two backends — the embedded redb file (the default)
//! and PostgreSQL (several routers on one database). Only this module touches either; every
//! call runs on the blocking pool so no request task ever waits on I/O while holding the
//! async runtime.

mod admins;
mod agents;
mod aliases;
mod api_keys;
mod conversations;
mod idle_lane;
pub mod kv;
mod meta;
pub mod notify;
pub mod offline;
pub mod postgres;
mod presence;
mod providers;
mod rate;
mod readonly;
pub mod rekey;
mod sessions;
mod settings;
pub mod snapshot;
pub mod tables;
pub mod transfer;
mod usage;
mod usage_log;
mod usage_once;
mod usage_postings;
mod usage_settings;
mod worker_tokens;

pub use admins::{AdminRecord, AdminRole};
pub use agents::AgentRecord;
pub use aliases::{AliasRecord, AUTO as AUTO_ALIAS};
pub use api_keys::{ApiKeyRecord, KeyLimits, Role};
pub use conversations::{ConversationRecord, ConversationSummary};
pub use meta::KeyState;
pub use presence::{PresenceLink, RouterPresence, WorkerPresence};
pub use providers::{CachedModel, ModelCache, ProviderKind, ProviderRecord};
pub use rate::{RateCount, RateDelta, RateExchange};
pub use sessions::SessionRecord;
pub use settings::{AdminAgentSettings, PhaseTimeouts, RoutingSettings, TierTimeouts, DEFAULT_CONNECT_MS};
pub use usage::{
    default_prices as usage_default_prices, key_time_ms, month_number, usage_key, Attempt, LogField, PriceRecord,
    UsageRecord,
};
pub use usage_log::{DailyRollup, LogPage, LogQuery, Pruned, Rollup, RollupGroup};
pub use usage_once::PlacedUsage;
pub use usage_settings::EquivalentSettings;
pub use worker_tokens::{WorkerKind, WorkerTokenRecord};

pub use kv::{ReadTxn, WriteTxn};

use postgres::PgStore;
use redb::Database;
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::Arc;

pub const DB_FILE: &str = "auxot.redb";

/// redb's page cache. Its default (1 GiB) grows with every usage row written until the
/// process holds hundreds of MB it never reads again; the pages a router touches (the
/// config tables and the right edge of the usage tables and their index) fit in far less,
/// and the OS page cache keeps the file's hot pages anyway. 4 MiB served a flood as fast
/// as 16 MiB did and left the router 12 MB smaller after it; since the request-log index
/// is chunks per commit, 1 MiB serves it as fast again and keeps 3–6 MB less after a flood,
/// with request-log pages still under a millisecond at a million rows (BENCHMARKS.md).
const CACHE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Boxed: redb's error is large, and every `Result` in the store carries this enum.
    #[error("database error: {0}")]
    Db(Box<redb::Error>),
    #[error("record {0} is corrupt: {1}")]
    Corrupt(&'static str, String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the database schema version {found} is newer than this auxot supports ({supported}); upgrade auxot")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("a database task failed: {0}")]
    Task(String),
    #[error("PostgreSQL error: {0}")]
    Postgres(String),
    /// The database cannot be reached right now (PostgreSQL down, pool exhausted).
    #[error("{0}")]
    Unavailable(String),
    /// An operation on the redb file (backup, offline tools) asked of a PostgreSQL store.
    #[error("{0} works on the redb store only; on PostgreSQL use its own tools (pg_dump)")]
    RedbOnly(&'static str),
}

macro_rules! redb_error_into_store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(Box::new(e.into())) }
        }
    )*};
}
redb_error_into_store_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Redb(Arc<Database>),
    Postgres(Arc<PgStore>),
}

impl Store {
    fn from_redb(db: Database) -> Store {
        Store {
            backend: Backend::Redb(Arc::new(db)),
        }
    }

    /// Connects to PostgreSQL and brings its schema up to date (see `postgres.rs`).
    pub async fn connect_postgres(url: &str) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(Arc::new(PgStore::connect(url).await?)),
        })
    }

    /// Connects to a PostgreSQL database a router set up, without changing its schema (for
    /// the operator's tools; see `PgStore::connect_existing`).
    pub async fn connect_postgres_existing(url: &str) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(Arc::new(PgStore::connect_existing(url).await?)),
        })
    }

    /// Row count of every table of a PostgreSQL store, as `table_rows` gives for redb.
    pub async fn shared_table_rows(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|txn| match txn {
            ReadTxn::Pg(pg) => postgres::TABLES
                .iter()
                .map(|table| Ok((table.to_string(), pg.count(table)?)))
                .collect(),
            ReadTxn::Redb(_) => Err(StoreError::Conflict("not a PostgreSQL store".into())),
        })
        .await
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The redb database, for what only a redb file has (snapshots, offline tools).
    pub(crate) fn redb(&self, what: &'static str) -> Result<&Database, StoreError> {
        match &self.backend {
            Backend::Redb(db) => Ok(db),
            Backend::Postgres(_) => Err(StoreError::RedbOnly(what)),
        }
    }

    /// Opens (or creates, readable by its owner only) `auxot.redb` in `data_dir`. Tables are
    /// created by `initialize`; call `peek_key_state` first to check the key without writing.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(0o600);
            // A file made by an older auxot (or copied in) may be readable by others.
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io_error)?;
                }
            }
        }
        let file = options.open(&path).map_err(io_error)?;
        let db = Database::builder().set_cache_size(CACHE_BYTES).create_file(file)?;
        Ok(Store::from_redb(db))
    }

    /// The key state of the database in `data_dir`, read without writing a byte to it (nor
    /// touching its mtime); a missing file has none.
    pub fn peek_key_state(data_dir: &Path) -> Result<KeyState, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Ok(KeyState::default());
        }
        let backend = readonly::CopyOnWrite::open(&path).map_err(io_error)?;
        let db = Database::builder().create_with_backend(backend)?;
        Store::from_redb(db).key_state()
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTxn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let task = match &self.backend {
            Backend::Redb(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let txn = db.begin_read()?;
                    f(&ReadTxn::Redb(&txn))
                })
            }
            Backend::Postgres(pg) => {
                let client = pg.connection().await?;
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || postgres::read_with(client, runtime, |txn| f(&ReadTxn::Pg(txn))))
            }
        };
        task.await.map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// `write`, but on redb on the low-priority commit thread (`idle_lane.rs`): for commits
    /// no request waits on, which then yield the CPU to requests.
    pub(crate) async fn write_when_idle<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTxn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.backend {
            Backend::Redb(db) => {
                let db = db.clone();
                idle_lane::run(move || write_now(&db, f)).await?
            }
            Backend::Postgres(_) => self.write(f).await,
        }
    }

    /// Runs `f` in one write transaction: committed when it returns Ok, rolled back
    /// (nothing written) when it returns Err.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTxn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let task = match &self.backend {
            Backend::Redb(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || write_now(&db, f))
            }
            Backend::Postgres(pg) => {
                let client = pg.connection().await?;
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || postgres::write_with(client, runtime, |txn| f(&WriteTxn::Pg(txn))))
            }
        };
        task.await.map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Db(Box::new(redb::Error::Io(e)))
}

fn write_now<T, F>(db: &Database, f: F) -> Result<T, StoreError>
where
    F: FnOnce(&WriteTxn<'_>) -> Result<T, StoreError>,
{
    let txn = db.begin_write()?;
    match f(&WriteTxn::Redb(&txn)) {
        Ok(value) => {
            txn.commit()?;
            Ok(value)
        }
        Err(e) => {
            txn.abort()?;
            Err(e)
        }
    }
}

pub(crate) fn encode<T: Serialize>(what: &'static str, record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(what, e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(what, e.to_string()))
}

impl StoreError {
    pub fn status(&self) -> u16 {
        match self {
            StoreError::NotFound(_) => 404,
            StoreError::Conflict(_) | StoreError::RedbOnly(_) => 409,
            StoreError::Unavailable(_) => 503,
            StoreError::Db(_)
            | StoreError::Corrupt(..)
            | StoreError::SchemaTooNew { .. }
            | StoreError::Task(_)
            | StoreError::Postgres(_) => 500,
        }
    }
}

/// A fresh, initialised redb store in a temporary directory (removed when the `TempDir`
/// goes), with a runtime to drive it from a plain `#[test]`.
#[cfg(test)]
pub(crate) fn scratch_store() -> (tempfile::TempDir, Store, tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.initialize(None, None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (dir, store, runtime)
}
