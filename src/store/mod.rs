//! The embedded redb store. Only this module touches redb; every call runs on the blocking
//! pool so no request task ever waits on disk I/O while holding the async runtime.

mod admins;
mod agents;
mod aliases;
mod api_keys;
mod conversations;
mod meta;
pub mod offline;
mod providers;
mod readonly;
pub mod rekey;
mod sessions;
mod settings;
pub mod snapshot;
pub mod tables;
mod usage;
mod usage_log;
mod usage_settings;
mod worker_tokens;

pub use admins::{AdminRecord, AdminRole};
pub use agents::AgentRecord;
pub use aliases::{AliasRecord, AUTO as AUTO_ALIAS};
pub use api_keys::{ApiKeyRecord, KeyLimits, Role};
pub use conversations::{ConversationRecord, ConversationSummary};
pub use meta::KeyState;
pub use providers::{CachedModel, ModelCache, ProviderKind, ProviderRecord};
pub use sessions::SessionRecord;
pub use settings::{AdminAgentSettings, PhaseTimeouts, RoutingSettings, TierTimeouts, DEFAULT_CONNECT_MS};
pub use usage::{
    default_prices as usage_default_prices, key_time_ms, month_number, usage_key, Attempt, LogField, PriceRecord,
    UsageRecord,
};
pub use usage_log::{DailyRollup, LogPage, LogQuery, Pruned, Rollup, RollupGroup};
pub use usage_settings::EquivalentSettings;
pub use worker_tokens::{WorkerKind, WorkerTokenRecord};

use redb::{Database, ReadTransaction, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::Arc;

pub const DB_FILE: &str = "auxot.redb";

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
    db: Arc<Database>,
}

impl Store {
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
        let db = Database::builder().create_file(file)?;
        Ok(Store { db: Arc::new(db) })
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
        Store { db: Arc::new(db) }.key_state()
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read()?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` in one write transaction: committed when it returns Ok, rolled back
    /// (nothing written) when it returns Err.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || write_now(&db, f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Db(Box::new(redb::Error::Io(e)))
}

fn write_now<T, F>(db: &Database, f: F) -> Result<T, StoreError>
where
    F: FnOnce(&WriteTransaction) -> Result<T, StoreError>,
{
    let txn = db.begin_write()?;
    match f(&txn) {
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
            StoreError::Conflict(_) => 409,
            StoreError::Db(_) | StoreError::Corrupt(..) | StoreError::SchemaTooNew { .. } | StoreError::Task(_) => 500,
        }
    }
}
