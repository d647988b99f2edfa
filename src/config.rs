//! Configuration: flags beat `AUXOT_*` environment variables beat defaults.
//!
//! Config says WHERE the secret key is, never what it is: the key's value is read from the
//! first of `AUXOT_SECRET_KEY`, `AUXOT_SECRET_KEY_FILE`, `$CREDENTIALS_DIRECTORY/auxot-secret-key`
//! or (generated on first start) `<data-dir>/secret.key`.

use crate::crypto::Secret;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SECRET_KEY_ENV: &str = "AUXOT_SECRET_KEY";
pub const CREDENTIAL_NAME: &str = "auxot-secret-key";
pub const GENERATED_KEY_FILE: &str = "secret.key";
pub const DATABASE_URL_ENV: &str = "AUXOT_DATABASE_URL";
/// The systemd credential holding the PostgreSQL URL (`LoadCredential=auxot-database-url:…`).
pub const DATABASE_CREDENTIAL_NAME: &str = "auxot-database-url";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `auxot serve`; each also reads its `AUXOT_*` variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Where the database and a generated secret key live.
    #[arg(long, env = "AUXOT_DATA_DIR", default_value = "./auxot-data")]
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free one; the bound address is logged).
    #[arg(long, env = "AUXOT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File holding the secret key (used when AUXOT_SECRET_KEY is not set).
    #[arg(long, env = "AUXOT_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "AUXOT_BODY_LIMIT", default_value_t = 10 * 1024 * 1024)]
    pub body_limit: u64,
    /// Seconds between background refreshes of every provider's model list.
    #[arg(long, env = "AUXOT_MODELS_REFRESH_SECS", default_value_t = 6 * 3600)]
    pub models_refresh_secs: u64,
    /// Seconds a client has to send its request head, at most between two pieces of its
    /// request body, and at most while it takes nothing of its answer; past it the
    /// connection is dropped (a slow-loris, a client gone silent mid-upload or mid-answer).
    #[arg(long, env = "AUXOT_CLIENT_TIMEOUT_SECS", default_value_t = 30)]
    pub client_timeout_secs: u64,
    /// Seconds to wait for an upstream's response headers before failing over.
    #[arg(long, env = "AUXOT_UPSTREAM_TIMEOUT_SECS", default_value_t = 600)]
    pub upstream_timeout_secs: u64,
    /// Seconds an admin UI session stays valid.
    #[arg(long, env = "AUXOT_SESSION_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub session_ttl_secs: u64,
    /// Seconds a worker may stay silent before it is offline and its jobs fail over.
    #[arg(long, env = "AUXOT_WORKER_HEARTBEAT_TIMEOUT_SECS", default_value_t = 15)]
    pub worker_heartbeat_timeout_secs: u64,
    /// Days usage rows are kept before pruning.
    #[arg(long, env = "AUXOT_USAGE_RETENTION_DAYS", default_value_t = 90)]
    pub usage_retention_days: u64,
    /// Usage rows kept at most; the oldest beyond it are pruned (their totals stay in
    /// daily rollups).
    #[arg(long, env = "AUXOT_USAGE_MAX_ROWS", default_value_t = 5_000_000)]
    pub usage_max_rows: u64,
    /// MiB the usage rows (with their index entries) may take at most; the oldest beyond it
    /// are pruned into daily rollups. 0: no size cap.
    #[arg(long, env = "AUXOT_USAGE_MAX_MIB", default_value_t = 4096)]
    pub usage_max_mib: u64,
    /// On PostgreSQL: MiB of usage rows kept on disk (in the data dir) while the database is
    /// unreachable, written to it once it is back; rows beyond are dropped and counted.
    /// Fractions are allowed; 0 keeps none.
    #[arg(long, env = "AUXOT_USAGE_BUFFER_MIB", default_value_t = 256.0)]
    pub usage_buffer_mib: f64,
    /// Token that may read /metrics besides admin keys (for a Prometheus scraper).
    #[arg(long, env = "AUXOT_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Seconds a stop (SIGTERM) waits for requests and streams in flight before exiting.
    #[arg(long, env = "AUXOT_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Log line format.
    #[arg(long, env = "AUXOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Reverse proxies (addresses or CIDRs, comma-separated or repeated) whose
    /// `X-Forwarded-For` is believed, so the login throttle counts the client's address and
    /// not the proxy's. Empty: the header is ignored.
    #[arg(long = "trusted-proxy", env = "AUXOT_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// PostgreSQL instead of the redb file: `postgres://user:password@host/db?sslmode=require`.
    /// Several routers on one database serve as one. Prefer `--database-file` or the
    /// `auxot-database-url` credential: a password in a flag or env var is visible to others.
    #[arg(long, env = DATABASE_URL_ENV, hide_env_values = true)]
    pub database: Option<String>,
    /// File holding the PostgreSQL URL (used when --database / AUXOT_DATABASE_URL is not set).
    #[arg(long, env = "AUXOT_DATABASE_URL_FILE")]
    pub database_file: Option<PathBuf>,
    /// This router's name in usage rows and the request log (default: the host name).
    #[arg(long, env = "AUXOT_ROUTER_NAME")]
    pub router_name: Option<String>,
    /// Threads that serve requests. 0: one per CPU this process may use (its affinity and
    /// cgroup quota). With one, the router runs a single-threaded scheduler.
    #[arg(long, env = "AUXOT_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub threads: u16,
    /// Client connections (HTTP and worker sockets) served at once; more wait in the listen
    /// backlog until one closes. 0: half of the open-file limit left after the router's own
    /// files, so a flood of clients cannot take the descriptors its upstream connections,
    /// database and usage journal need.
    #[arg(long, env = "AUXOT_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: u32,
}

/// An address (a single host) or a CIDR.
fn parse_proxy(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("'{text}' is not an IP address or CIDR (e.g. 127.0.0.1 or 10.0.0.0/8)"))
}

/// The resolved configuration of a running server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub body_limit: u64,
    pub client_timeout: Duration,
    pub models_refresh: Duration,
    pub upstream_timeout: Duration,
    pub session_ttl: Duration,
    pub worker_heartbeat_timeout: Duration,
    pub usage_retention: Duration,
    pub usage_max_rows: u64,
    /// `None`: no size cap.
    pub usage_max_bytes: Option<u64>,
    /// The bound of the disk buffer of usage rows (PostgreSQL only).
    pub usage_buffer_bytes: u64,
    pub metrics_token: Option<Secret>,
    pub secret_key: SecretKeySource,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The PostgreSQL URL (it may hold a password); `None`: the redb file in `data_dir`.
    pub database: Option<Secret>,
    /// Names this router in the usage rows it writes.
    pub router_name: String,
    /// Client connections served at once (`--max-connections`, resolved).
    pub max_connections: usize,
}

/// Where the secret key comes from, in the documented order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretKeySource {
    Env,
    File(PathBuf),
    Credential(PathBuf),
    /// `<data-dir>/secret.key`: generated on first start when nothing else is given.
    DataDir(PathBuf),
}

impl SecretKeySource {
    pub fn describe(&self) -> String {
        match self {
            SecretKeySource::Env => format!("${SECRET_KEY_ENV}"),
            SecretKeySource::File(p) => format!("key file {}", p.display()),
            SecretKeySource::Credential(p) => format!("systemd credential {}", p.display()),
            SecretKeySource::DataDir(p) => format!("generated key file {}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the secret key from {source_name}: {reason}")]
    ReadKey { source_name: String, reason: String },
    #[error("the secret key in {0} is empty")]
    EmptyKey(String),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("cannot read the database URL from {source_name}: {reason}")]
    ReadDatabase { source_name: String, reason: String },
    #[error("the database URL from {0} must start with postgres:// or postgresql://")]
    BadDatabase(String),
    #[error("--router-name must be 1 to 64 printable characters")]
    BadRouterName,
    #[error("--usage-buffer-mib must be a number of MiB, 0 or more")]
    BadBufferSize,
}

impl ServeConfig {
    pub fn load(args: ServeArgs) -> Result<ServeConfig, ConfigError> {
        if args.models_refresh_secs == 0 {
            return Err(ConfigError::Zero("--models-refresh-secs"));
        }
        if args.upstream_timeout_secs == 0 {
            return Err(ConfigError::Zero("--upstream-timeout-secs"));
        }
        if args.client_timeout_secs == 0 {
            return Err(ConfigError::Zero("--client-timeout-secs"));
        }
        if args.worker_heartbeat_timeout_secs == 0 {
            return Err(ConfigError::Zero("--worker-heartbeat-timeout-secs"));
        }
        if args.body_limit == 0 {
            return Err(ConfigError::Zero("--body-limit"));
        }
        if !args.usage_buffer_mib.is_finite() || args.usage_buffer_mib < 0.0 {
            return Err(ConfigError::BadBufferSize);
        }
        let secret_key = locate_secret_key(
            std::env::var_os(SECRET_KEY_ENV).is_some(),
            args.secret_key_file.clone(),
            std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            &args.data_dir,
        );
        let database = locate_database(
            args.database,
            args.database_file,
            std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        )?;
        let router_name = match args.router_name {
            Some(name) => {
                let name = name.trim().to_string();
                if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                    return Err(ConfigError::BadRouterName);
                }
                name
            }
            None => host_name(),
        };
        Ok(ServeConfig {
            router_name,
            database,
            data_dir: args.data_dir,
            listen: args.listen,
            body_limit: args.body_limit,
            client_timeout: Duration::from_secs(args.client_timeout_secs),
            models_refresh: Duration::from_secs(args.models_refresh_secs),
            upstream_timeout: Duration::from_secs(args.upstream_timeout_secs),
            session_ttl: Duration::from_secs(args.session_ttl_secs.max(60)),
            worker_heartbeat_timeout: Duration::from_secs(args.worker_heartbeat_timeout_secs),
            usage_retention: Duration::from_secs(args.usage_retention_days.max(1) * 86_400),
            usage_max_rows: args.usage_max_rows.max(1),
            usage_max_bytes: (args.usage_max_mib > 0).then(|| args.usage_max_mib.saturating_mul(1024 * 1024)),
            usage_buffer_bytes: (args.usage_buffer_mib * 1024.0 * 1024.0) as u64,
            metrics_token: args.metrics_token.map(Secret::new).filter(|t| !t.is_empty()),
            secret_key,
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
            trusted_proxies: args.trusted_proxies,
            max_connections: match args.max_connections {
                0 => max_connections_for(open_file_limit()),
                n => n as usize,
            },
        })
    }
}

/// Descriptors kept for the router's own files: the database, the usage journal's
/// segments, the log, the password hasher's pipes, the listening socket.
const RESERVED_FILES: u64 = 128;
/// Fewer is never chosen for the router: a tight limit then runs out of descriptors under
/// load instead of serving almost no one.
const MIN_CONNECTIONS: u64 = 16;
/// More than this is as good as no cap.
const MAX_CONNECTIONS: u64 = 1 << 20;

/// The default cap for an open-file limit (`None`: unlimited). Each client's request may
/// hold an upstream connection as well, so clients get half of what is left.
pub fn max_connections_for(open_files: Option<u64>) -> usize {
    let cap = match open_files {
        Some(limit) => (limit.saturating_sub(RESERVED_FILES) / 2).clamp(MIN_CONNECTIONS, MAX_CONNECTIONS),
        None => MAX_CONNECTIONS,
    };
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// This process's soft open-file limit (`None`: unlimited).
fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The documented order: env, key file, systemd credential (only when it exists), data dir.
pub fn locate_secret_key(
    env_set: bool,
    key_file: Option<PathBuf>,
    credentials_dir: Option<PathBuf>,
    data_dir: &Path,
) -> SecretKeySource {
    if env_set {
        return SecretKeySource::Env;
    }
    if let Some(file) = key_file {
        return SecretKeySource::File(file);
    }
    if let Some(dir) = credentials_dir {
        let path = dir.join(CREDENTIAL_NAME);
        if path.exists() {
            return SecretKeySource::Credential(path);
        }
    }
    SecretKeySource::DataDir(data_dir.join(GENERATED_KEY_FILE))
}

/// The machine's host name, the default router name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty() && name.len() <= 64)
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|n| !n.is_empty() && n.len() <= 64)
        })
        .unwrap_or_else(|| "auxot".into())
}

/// The PostgreSQL URL, from the first of: the flag or `AUXOT_DATABASE_URL`, the file, the
/// systemd credential (only when it exists). `None`: the redb store.
pub fn locate_database(
    value: Option<String>,
    file: Option<PathBuf>,
    credentials_dir: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    let (text, source_name) = match (value, file) {
        (Some(value), _) => (value, format!("--database (${DATABASE_URL_ENV})")),
        (None, Some(path)) => (
            read_database_file(&path, "database URL file")?,
            format!("file {}", path.display()),
        ),
        (None, None) => match credentials_dir.map(|dir| dir.join(DATABASE_CREDENTIAL_NAME)) {
            Some(path) if path.exists() => (
                read_database_file(&path, "systemd credential")?,
                format!("systemd credential {}", path.display()),
            ),
            _ => return Ok(None),
        },
    };
    let url = Secret::new(text.trim().to_string());
    if url.is_empty() {
        return Ok(None);
    }
    let scheme_ok = ["postgres://", "postgresql://"].iter().any(|scheme| {
        url.expose()
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    });
    if !scheme_ok {
        return Err(ConfigError::BadDatabase(source_name));
    }
    Ok(Some(url))
}

fn read_database_file(path: &Path, what: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::ReadDatabase {
        source_name: format!("{what} {}", path.display()),
        reason: e.to_string(),
    })
}

/// Reads the key's text. `Ok(None)` only for a data-dir key file that does not exist yet.
pub fn read_secret_key(source: &SecretKeySource) -> Result<Option<Secret>, ConfigError> {
    let text = match source {
        SecretKeySource::Env => std::env::var(SECRET_KEY_ENV).map_err(|_| ConfigError::ReadKey {
            source_name: source.describe(),
            reason: "not valid UTF-8".into(),
        })?,
        SecretKeySource::File(path) | SecretKeySource::Credential(path) => {
            std::fs::read_to_string(path).map_err(|e| ConfigError::ReadKey {
                source_name: source.describe(),
                reason: e.to_string(),
            })?
        }
        SecretKeySource::DataDir(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ConfigError::ReadKey {
                    source_name: source.describe(),
                    reason: e.to_string(),
                })
            }
        },
    };
    let secret = Secret::new(text.trim().to_string());
    if secret.is_empty() {
        return Err(ConfigError::EmptyKey(source.describe()));
    }
    Ok(Some(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_url_comes_from_the_flag_then_the_file_then_the_credential() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "postgres://a@127.0.0.1/file\n").unwrap();
        std::fs::write(
            dir.path().join(DATABASE_CREDENTIAL_NAME),
            "postgresql://a@127.0.0.1/cred",
        )
        .unwrap();
        let cred = Some(dir.path().to_path_buf());
        let flag = locate_database(
            Some("postgres://a@127.0.0.1/flag".into()),
            Some(file.clone()),
            cred.clone(),
        );
        assert_eq!(flag.unwrap().unwrap().expose(), "postgres://a@127.0.0.1/flag");
        let from_file = locate_database(None, Some(file), cred.clone()).unwrap().unwrap();
        assert_eq!(from_file.expose(), "postgres://a@127.0.0.1/file");
        let from_cred = locate_database(None, None, cred).unwrap().unwrap();
        assert_eq!(from_cred.expose(), "postgresql://a@127.0.0.1/cred");
        assert!(locate_database(None, None, None).unwrap().is_none());
        let wrong = locate_database(Some("mysql://x".into()), None, None).unwrap_err();
        assert!(wrong.to_string().contains("postgres://"), "{wrong}");
    }

    #[test]
    fn env_beats_file_beats_credential_beats_data_dir() {
        let data = Path::new("/data");
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join(CREDENTIAL_NAME), "x").unwrap();
        let file = Some(PathBuf::from("/k"));
        let cred_dir = Some(creds.path().to_path_buf());
        assert_eq!(
            locate_secret_key(true, file.clone(), cred_dir.clone(), data),
            SecretKeySource::Env
        );
        assert_eq!(
            locate_secret_key(false, file, cred_dir.clone(), data),
            SecretKeySource::File("/k".into())
        );
        assert_eq!(
            locate_secret_key(false, None, cred_dir, data),
            SecretKeySource::Credential(creds.path().join(CREDENTIAL_NAME))
        );
        assert_eq!(
            locate_secret_key(false, None, Some("/nonexistent".into()), data),
            SecretKeySource::DataDir("/data/secret.key".into())
        );
    }

    #[test]
    fn missing_generated_key_is_none_but_missing_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(read_secret_key(&SecretKeySource::DataDir(missing.clone()))
            .unwrap()
            .is_none());
        assert!(read_secret_key(&SecretKeySource::File(missing)).is_err());
    }

    #[test]
    fn the_default_connection_cap_leaves_half_the_spare_descriptors_to_upstreams() {
        // The systemd unit's LimitNOFILE.
        assert_eq!(max_connections_for(Some(65_536)), 32_704);
        // A tight limit still serves a few clients; an unlimited one is as good as uncapped.
        assert_eq!(max_connections_for(Some(64)), 16);
        assert_eq!(max_connections_for(Some(1024)), 448);
        assert_eq!(max_connections_for(None), 1 << 20);
        assert_eq!(max_connections_for(Some(u64::MAX)), 1 << 20);
    }
}
