//! The operator's commands beside `serve`: secret rotation, backup and restore, admin
//! recovery and the installation check. Each works on a data dir (offline, refusing one a
//! running server holds), on the routers' PostgreSQL database (`--database`, where doing so
//! beside running routers is safe or refused with the reason), or, where the issue is a
//! running server, through its admin API.

pub mod admins;
pub mod backup;
pub mod client;
pub mod doctor;
pub mod keys;
pub mod migrate;
pub mod rotate;
pub mod snapshot;

use crate::config::{locate_database, SecretKeySource, DATABASE_URL_ENV};
use crate::crypto::Secret;
use crate::store::offline::OfflineError;
use crate::store::rekey::RekeyError;
use crate::store::{Store, StoreError};
use std::path::PathBuf;

/// Where the data and its key are: the same flags and variables as `auxot serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// The data directory (holds auxot.redb).
    #[arg(long, env = "AUXOT_DATA_DIR", default_value = "./auxot-data")]
    pub data_dir: PathBuf,
    /// The routers' PostgreSQL database instead of the redb file
    /// (postgres://user:password@host/db); prefer --database-file for a password.
    #[arg(long, env = DATABASE_URL_ENV, hide_env_values = true)]
    pub database: Option<String>,
    /// File holding the PostgreSQL URL (used when --database / AUXOT_DATABASE_URL is not set).
    #[arg(long, env = "AUXOT_DATABASE_URL_FILE")]
    pub database_file: Option<PathBuf>,
    /// File holding the secret key (used when AUXOT_SECRET_KEY is not set); with systemd the
    /// key is /etc/auxot/secret.key.
    #[arg(long, env = "AUXOT_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

impl DataArgs {
    /// The PostgreSQL URL, found as `auxot serve` finds it (flag, file, systemd credential);
    /// `None`: the redb file in the data dir.
    pub fn database_url(&self) -> Result<Option<Secret>, OpsError> {
        locate_database(
            self.database.clone(),
            self.database_file.clone(),
            std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        )
        .map_err(|e| OpsError::Refused(e.to_string()))
    }

    /// Opens the data a tool works on: the redb file (a server on it stopped), or the
    /// routers' PostgreSQL database, which must hold auxot data already and whose schema a
    /// tool never changes.
    pub async fn open_store(&self) -> Result<Store, OpsError> {
        let Some(url) = self.database_url()? else {
            return Ok(Store::open_offline(&self.data_dir)?);
        };
        let store = Store::connect_postgres_existing(url.expose()).await?;
        if store.load_key_state().await?.canary.is_none() {
            return Err(OpsError::Refused(
                "the database holds no auxot data yet: start a router on it first".into(),
            ));
        }
        Ok(store)
    }
}

/// How to reach a running server's admin API.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Base URL of the running server.
    #[arg(long, env = "AUXOT_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// File holding an admin API key (else $AUXOT_ADMIN_KEY). Never given on the command
    /// line, where other users could read it.
    #[arg(long, env = "AUXOT_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Offline(#[from] OfflineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rekey(#[from] RekeyError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the server at {url}: {message}")]
    Server { url: String, message: String },
}

impl OpsError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpsError {
        let what = what.into();
        move |source| OpsError::Io { what, source }
    }
}

/// Where the key was found, in words for a report.
pub fn describe_source(source: &SecretKeySource) -> String {
    source.describe()
}

/// Writes `bytes` to a new file with mode 0600 (refusing to overwrite), synced to disk.
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), OpsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let what = format!("cannot write {}", path.display());
    let mut file = options.open(path).map_err(OpsError::io(what.clone()))?;
    file.write_all(bytes).map_err(OpsError::io(what.clone()))?;
    file.sync_all().map_err(OpsError::io(what))
}

/// Commits what a crashed router left in the usage journal into `store` (a stopped router's
/// redb file) before a tool reads or replaces it.
pub(crate) async fn commit_journal(store: &Store, data_dir: &std::path::Path) -> Result<(), OpsError> {
    crate::usage::commit_leftover_journal(store, data_dir)
        .await
        .map(|_| ())
        .map_err(|e| {
            OpsError::Refused(format!(
                "cannot commit the usage journal in {}: {e}",
                data_dir.display()
            ))
        })
}
