//! `AppState`: the handles the HTTP layer reaches, built by `start` in lib.rs.

use crate::agents::admin::AdminAgent;
use crate::agents::AgentBook;
use crate::auth::Auth;
use crate::config::ServeConfig;
use crate::dispatch::rules::RoutingRules;
use crate::dispatch::Dispatcher;
use crate::ops::snapshot::Backups;
use crate::providers::ProviderRegistry;
use crate::usage::Usage;
use crate::workers::registry::WorkerRegistry;
use std::sync::Arc;

/// Everything a request handler may reach, behind one `Arc`: the routes clone it per
/// request, and one reference count is cheaper to bump and drop than a dozen.
#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl AppState {
    pub fn new(handles: Handles) -> AppState {
        AppState(Arc::new(handles))
    }
}

impl std::ops::Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// The handles themselves (`AppState` derefs to them).
pub struct Handles {
    pub config: Arc<ServeConfig>,
    pub auth: Arc<Auth>,
    pub providers: Arc<ProviderRegistry>,
    pub workers: Arc<WorkerRegistry>,
    pub rules: Arc<RoutingRules>,
    pub agents: Arc<AgentBook>,
    pub dispatcher: Arc<Dispatcher>,
    pub usage: Arc<Usage>,
    pub admin_agent: Arc<AdminAgent>,
    pub backups: Arc<Backups>,
    /// On a shared PostgreSQL database: whether this router hears the other routers'
    /// changes right now (`/healthz` says "degraded" while it does not). `None` on redb.
    pub shared_db_live: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// On a shared PostgreSQL database: this router's workers published to the fleet, and
    /// the other routers' read back for the workers list. `None` on redb.
    pub presence: Option<Arc<crate::presence::Presence>>,
    /// Client connections open and their cap (the accept loop counts them).
    pub connections: Arc<crate::metrics::Connections>,
}
