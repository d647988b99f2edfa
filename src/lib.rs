//! auxot: one binary that routes OpenAI/Anthropic API requests to the cheapest tier.

pub mod agents;
pub mod api;
mod app;
mod changes;
pub mod edits;

pub mod auth;
pub mod bounded;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dispatch;
pub mod exchange;
#[cfg(test)]
mod fuzz;
pub mod log_buffer;
pub mod log_fields;
pub mod metrics;
pub mod ops;
pub mod presence;
pub mod providers;
pub mod store;
pub mod translate;
pub mod usage;
pub mod workers;

use crate::agents::admin::AdminAgent;
use crate::agents::AgentBook;
use crate::auth::Auth;
use crate::config::{read_secret_key, ConfigError, SecretKeySource, ServeConfig};
use crate::crypto::{CryptoError, KeyMaterial, MasterKey};
use crate::dispatch::attempt::DispatcherParts;
use crate::dispatch::rules::RoutingRules;
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::providers::{ProviderRegistry, RegistryError};
use crate::store::{Store, StoreError};
use crate::usage::Usage;
use crate::workers::registry::WorkerRegistry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use app::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot write the generated secret key to {path}: {source}")]
    WriteKey { path: String, source: std::io::Error },
    #[error("invalid secret key from {source_name}: {error}")]
    BadKey { source_name: String, error: CryptoError },
    #[error("the secret key from {source_name} (key id {configured}) is not the key this data was sealed with (key id {sealed_with}); refusing to start. Nothing was changed: start again with the original key")]
    WrongKey {
        source_name: String,
        configured: String,
        sealed_with: String,
    },
    #[error("the data in {data_dir} is sealed with a secret key (key id {sealed_with}), but no key was given and {missing} does not exist; set AUXOT_SECRET_KEY or AUXOT_SECRET_KEY_FILE to the original key")]
    MissingKey {
        data_dir: String,
        sealed_with: String,
        missing: String,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("routers on a shared PostgreSQL database need one secret key, given to each: set {missing} (or AUXOT_SECRET_KEY); `auxot keygen` prints one")]
    SharedKeyRequired { missing: String },
    #[error("cannot load: {0}")]
    Load(String),
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(String),
}

/// How often a router on a shared database re-reads every cache even without a notice: the
/// safety net under LISTEN/NOTIFY.
const CHANGES_RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens the data dir, checks the secret key against the data's canary, loads the routing
/// state. A wrong key fails here, before any port is bound and before anything is written.
pub async fn start(config: ServeConfig) -> Result<AppState, StartError> {
    prepare_data_dir(&config.data_dir)?;
    let key_text = read_secret_key(&config.secret_key)?;
    let parsed = key_text
        .as_ref()
        .map(KeyMaterial::parse)
        .transpose()
        .map_err(|error| StartError::BadKey {
            source_name: config.secret_key.describe(),
            error,
        })?;
    // The key is checked against the data before the database is opened for writing: a
    // refused start leaves the file untouched.
    let shared = match &config.database {
        Some(url) => Some(Store::connect_postgres(url.expose()).await?),
        None => None,
    };
    let state = match &shared {
        Some(store) => store.load_key_state().await?,
        None => Store::peek_key_state(&config.data_dir)?,
    };
    let (material, generated) = match (parsed, &state.canary) {
        (Some(material), _) => (material, None),
        // Routers sharing a database must share the key: none may invent its own.
        (None, None) if shared.is_some() => {
            return Err(StartError::SharedKeyRequired {
                missing: config.secret_key.describe(),
            })
        }
        (None, Some(canary)) => {
            return Err(StartError::MissingKey {
                data_dir: config.data_dir.display().to_string(),
                sealed_with: canary.key_id().unwrap_or_default(),
                missing: config.secret_key.describe(),
            })
        }
        (None, None) => {
            let fresh = MasterKey::generate_hex();
            let material = KeyMaterial::parse(&fresh).map_err(|error| StartError::BadKey {
                source_name: "a generated key".into(),
                error,
            })?;
            (material, Some(fresh))
        }
    };
    let mut new_salt = None;
    let master = match material {
        KeyMaterial::Raw(bytes) => MasterKey::from_bytes(&bytes),
        KeyMaterial::Passphrase(passphrase) => {
            tracing::warn!(
                "the secret key is a passphrase, stretched with argon2id; a random key from `auxot keygen` is stronger"
            );
            let salt = match &state.kdf_salt {
                Some(salt) => salt.clone(),
                None => {
                    let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
                    new_salt = Some(salt.clone());
                    salt
                }
            };
            MasterKey::from_passphrase(&passphrase, &salt).map_err(|error| StartError::BadKey {
                source_name: config.secret_key.describe(),
                error,
            })?
        }
    };
    let new_canary = match &state.canary {
        Some(canary) => {
            master.check_canary(canary).map_err(|_| StartError::WrongKey {
                source_name: config.secret_key.describe(),
                configured: master.id_hex(),
                sealed_with: canary.key_id().unwrap_or_default(),
            })?;
            None
        }
        None => Some(master.seal_canary().map_err(|error| StartError::BadKey {
            source_name: config.secret_key.describe(),
            error,
        })?),
    };
    if let (Some(fresh), SecretKeySource::DataDir(path)) = (&generated, &config.secret_key) {
        write_generated_key(path, fresh.expose())?;
        tracing::warn!(
            path = %path.display(),
            "no secret key was configured: generated one into this file. Move it into a credential (AUXOT_SECRET_KEY_FILE, or systemd LoadCredential=auxot-secret-key) and back it up: without it the stored provider keys cannot be opened"
        );
    }
    let store = match shared {
        Some(store) => {
            store.initialize_shared(new_salt, new_canary).await?;
            // Two first starts at once: the canary (and passphrase salt) stored is whichever
            // committed first; this router's key must open it.
            if let Some(canary) = store.load_key_state().await?.canary {
                master.check_canary(&canary).map_err(|_| StartError::WrongKey {
                    source_name: config.secret_key.describe(),
                    configured: master.id_hex(),
                    sealed_with: canary.key_id().unwrap_or_default(),
                })?;
            }
            store
        }
        None => {
            let store = Store::open(&config.data_dir)?;
            store.initialize(new_salt.as_deref(), new_canary.as_ref())?;
            store
        }
    };

    let master = Arc::new(master);
    let rules = Arc::new(
        RoutingRules::load(store.clone())
            .await
            .map_err(|e| StartError::Load(e.to_string()))?,
    );
    let http = providers::HttpClient::new(rules.cloud_connect()).map_err(|e| StartError::Http(e.to_string()))?;
    let auth = Auth::load(store.clone(), config.session_ttl)
        .await
        .map_err(|e| StartError::Load(e.to_string()))?;
    let registry = ProviderRegistry::load(store.clone(), master.clone(), http.clone(), config.upstream_timeout)
        .await
        .map_err(|e: RegistryError| StartError::Load(e.to_string()))?;
    let registry = Arc::new(registry);
    let agents = Arc::new(
        AgentBook::load(store.clone())
            .await
            .map_err(|e| StartError::Load(e.to_string()))?,
    );
    let admin_agent = Arc::new(AdminAgent::new(store.clone()));
    let backups = Arc::new(ops::snapshot::Backups::new(store.clone(), config.data_dir.clone()));
    let workers = Arc::new(WorkerRegistry::new(config.worker_heartbeat_timeout));
    let usage = Usage::load(
        store.clone(),
        Arc::new(Metrics::default()),
        crate::usage::Retention {
            max_age: config.usage_retention,
            max_rows: config.usage_max_rows,
            max_bytes: config.usage_max_bytes,
        },
        Arc::from(config.router_name.as_str()),
        crate::usage::BufferConfig {
            dir: config.data_dir.clone(),
            max_bytes: config.usage_buffer_bytes,
        },
    )
    .await
    .map_err(|e| StartError::Load(e.to_string()))?;
    usage.set_cloud_catalogue(cloud_catalogue(registry.clone()));
    let dispatcher = Dispatcher::new(DispatcherParts {
        providers: registry.clone(),
        workers: workers.clone(),
        rules: rules.clone(),
        agents: agents.clone(),
        master,
        http,
        upstream_timeout: config.upstream_timeout,
    });
    let feed = store.watch_changes(CHANGES_RESYNC);
    let presence = presence::Presence::new(store.clone(), Arc::from(config.router_name.as_str()));
    let connections = Arc::new(metrics::Connections::new(config.max_connections));
    let state = AppState::new(app::Handles {
        config: Arc::new(config),
        auth: Arc::new(auth),
        providers: registry,
        workers,
        rules,
        agents,
        dispatcher: Arc::new(dispatcher),
        usage,
        admin_agent,
        backups,
        shared_db_live: feed.as_ref().map(|f| f.listening.clone()),
        presence,
        connections,
    });
    if let Some(feed) = feed {
        tokio::spawn(changes::follow(state.clone(), feed.changes));
    }
    Ok(state)
}

/// The enabled providers' model names, rebuilt only when the routing table changes (not per
/// request).
fn cloud_catalogue(providers: Arc<ProviderRegistry>) -> crate::usage::CloudCatalogue {
    type Cached = Option<(Arc<crate::providers::RoutingTable>, Arc<Vec<String>>)>;
    let cache: std::sync::Mutex<Cached> = std::sync::Mutex::new(None);
    Box::new(move || {
        let table = providers.routing();
        let mut cached = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match cached.as_ref() {
            Some((seen, names)) if Arc::ptr_eq(seen, &table) => names.clone(),
            _ => {
                let names: Arc<Vec<String>> =
                    Arc::new(table.models().into_iter().map(|(m, _)| m.to_string()).collect());
                *cached = Some((table, names.clone()));
                names
            }
        }
    })
}

fn prepare_data_dir(path: &std::path::Path) -> Result<(), StartError> {
    let fail = |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    };
    // The directory holds the database and maybe the secret key: its owner's only.
    if !path.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(path).map_err(fail)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
        }
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(fail)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o7777), "the data directory is readable by other users; make it private with `chmod 700`");
            }
        }
    }
    Ok(())
}

fn write_generated_key(path: &std::path::Path, key: &str) -> Result<(), StartError> {
    use std::io::Write;
    let fail = |source| StartError::WriteKey {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(format!("{key}\n").as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Serves `state` on an already-bound listener until `shutdown` resolves (tests bind port 0).
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) {
    let background = spawn_background_tasks(&state);
    let workers = state.workers.clone();
    let usage = state.usage.clone();
    let presence = state.presence.clone();
    let grace = state.config.shutdown_grace;
    let client_timeout = state.config.client_timeout;
    let connections = state.connections.clone();
    let service = warp::service(api::routes(state));
    // Built on hyper directly (not `warp::serve`) to know each connection's peer address,
    // which the login throttle keys on, and to bound how long a client may take to send
    // its headers.
    let protocols = Arc::new(api::conn::Protocols::with_header_timeout(client_timeout));
    let (shutdown_connections, stop) = api::conn::Shutdown::new();
    let mut cap = api::conn::ConnectionCap::new(connections);
    let accepting = async {
        loop {
            // At the cap, new clients wait in the listen backlog (as with nginx's
            // worker_connections) rather than take descriptors the open ones need.
            let permit = cap.permit().await;
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of stopping.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Tokens are small writes: never let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr().ok();
            let service = service.clone();
            let per_request = hyper::service::service_fn(move |request| {
                api::filters::serve_request(service.clone(), peer, client_timeout, request)
            });
            let protocols = protocols.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                api::conn::serve(stream, &protocols, per_request, stop).await;
                drop(permit);
            });
            // Let the new connection's task run before the next accept. Otherwise a burst of
            // clients is accepted 128 at a time, each batch is taken through every step before
            // any request finishes, and all their transient allocations are live at once.
            // With 1,000 streams opened together this cut the router's RSS by about 5 MB on one
            // thread, and the time per request did not change.
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        _ = accepting => {}
        _ = shutdown => {}
    }
    drop(listener);
    drop(stop);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "stopped accepting; letting requests in flight finish"
    );
    // Past the grace period, requests still in flight are cut: a stuck stream must not hold
    // a restart forever (systemd's TimeoutStopSec is longer, so this exit stays clean).
    tokio::select! {
        _ = shutdown_connections.finish() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over: cutting the requests still in flight"),
    }
    // Worker sockets are upgraded connections the HTTP shutdown does not wait for: close
    // them properly so workers see a goodbye, not a reset (and reconnect to the next process).
    workers.close_all(Duration::from_secs(2)).await;
    for task in background {
        task.abort();
    }
    // The other routers stop listing this one's workers at once, not when its rows expire.
    if let Some(presence) = presence {
        let _ = tokio::time::timeout(Duration::from_secs(2), presence.withdraw()).await;
    }
    // Nothing is lost on a clean stop: every queued usage row is written before exit.
    usage.flush().await;
}

fn spawn_background_tasks(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let registry = state.providers.clone();
    let every = state.config.models_refresh;
    let refresh = tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            registry.refresh_all().await;
        }
    });
    let auth = state.auth.clone();
    let prune = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(3600));
        loop {
            ticker.tick().await;
            if let Err(e) = auth.prune_sessions().await {
                tracing::warn!(error = %e, "pruning expired sessions failed");
            }
        }
    });
    let usage = state.usage.clone();
    let retention = tokio::spawn(async move {
        // Often enough that the row cap holds within minutes; each step is a short write.
        let mut ticker = tokio::time::interval(Duration::from_secs(300));
        loop {
            ticker.tick().await;
            match usage.prune().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "pruned usage rows past retention"),
                Err(e) => tracing::warn!(error = %e, "pruning usage rows failed"),
            }
        }
    });
    let mut tasks = vec![refresh, prune, retention];
    if let Some(presence) = &state.presence {
        tasks.push(tokio::spawn(presence.clone().run(state.workers.clone())));
    }
    tasks
}
