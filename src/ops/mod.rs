//! The operator's commands beside `serve`: secret rotation, backup and restore, admin
//! recovery and the installation check. Each works on a data dir (offline, refusing one a
//! running server holds) or, where the issue is a running server, through its admin API.

pub mod admins;
pub mod backup;
pub mod client;
pub mod doctor;
pub mod keys;
pub mod migrate;
pub mod rotate;
pub mod snapshot;

use crate::config::SecretKeySource;
use crate::store::offline::OfflineError;
use crate::store::rekey::RekeyError;
use crate::store::StoreError;
use std::path::PathBuf;

/// Where the data and its key are: the same flags and variables as `auxot serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// The data directory (holds auxot.redb).
    #[arg(long, env = "AUXOT_DATA_DIR", default_value = "./auxot-data")]
    pub data_dir: PathBuf,
    /// File holding the secret key (used when AUXOT_SECRET_KEY is not set); with systemd the
    /// key is /etc/auxot/secret.key.
    #[arg(long, env = "AUXOT_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
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
