//! Settings, one JSON record per group.

use super::tables::SETTINGS;
use super::{decode, encode, Store, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const ROUTING: &str = "routing";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingSettings {
    /// Tier names in the order the cascade tries them.
    pub default_order: Vec<String>,
    /// How long a request waits for a free slot when every eligible target is full.
    pub queue_timeout_ms: u64,
    /// Per-phase clocks of one attempt, per tier.
    #[serde(default)]
    pub timeouts: TierTimeouts,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            default_order: vec!["gpu".into(), "cli".into(), "cloud".into()],
            queue_timeout_ms: 60_000,
            timeouts: TierTimeouts::default(),
        }
    }
}

/// The clocks on one attempt, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTimeouts {
    /// Until a TCP (and TLS) connection to the upstream is up: the router's to a cloud
    /// provider, a GPU worker's to its model server. A CLI worker connects to nothing.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// Until the response headers (a worker: its first event).
    pub headers_ms: u64,
    /// Until the first content or tool-call delta, from the start.
    pub first_content_ms: u64,
    /// The longest silence between two chunks.
    pub idle_ms: u64,
    /// The whole request.
    pub total_ms: u64,
}

/// Also the worker's own default, so a worker is told only when the setting differs.
pub const DEFAULT_CONNECT_MS: u64 = 10_000;

fn default_connect_ms() -> u64 {
    DEFAULT_CONNECT_MS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierTimeouts {
    #[serde(default = "TierTimeouts::gpu_default")]
    pub gpu: PhaseTimeouts,
    #[serde(default = "TierTimeouts::cli_default")]
    pub cli: PhaseTimeouts,
    #[serde(default = "TierTimeouts::cloud_default")]
    pub cloud: PhaseTimeouts,
}

impl TierTimeouts {
    fn gpu_default() -> PhaseTimeouts {
        PhaseTimeouts {
            connect_ms: default_connect_ms(),
            headers_ms: 120_000,
            first_content_ms: 300_000,
            idle_ms: 60_000,
            total_ms: 1_800_000,
        }
    }

    /// A coding CLI thinks and runs tools before it says anything: longer clocks.
    fn cli_default() -> PhaseTimeouts {
        PhaseTimeouts {
            connect_ms: default_connect_ms(),
            headers_ms: 120_000,
            first_content_ms: 600_000,
            idle_ms: 300_000,
            total_ms: 3_600_000,
        }
    }

    fn cloud_default() -> PhaseTimeouts {
        PhaseTimeouts {
            connect_ms: default_connect_ms(),
            headers_ms: 120_000,
            first_content_ms: 300_000,
            idle_ms: 60_000,
            total_ms: 1_800_000,
        }
    }
}

impl Default for TierTimeouts {
    fn default() -> Self {
        TierTimeouts {
            gpu: Self::gpu_default(),
            cli: Self::cli_default(),
            cloud: Self::cloud_default(),
        }
    }
}

impl Store {
    /// The settings group stored under `key`, or its defaults while none is stored.
    pub(super) async fn settings_group<T>(&self, key: &'static str) -> Result<T, StoreError>
    where
        T: DeserializeOwned + Default + Send + 'static,
    {
        self.read(move |txn| match txn.open_table(SETTINGS)?.get(key)? {
            Some(row) => decode("settings", &row),
            None => Ok(T::default()),
        })
        .await
    }

    /// Stores the settings group `key` whole.
    pub(super) async fn put_settings_group<T>(&self, key: &'static str, settings: T) -> Result<(), StoreError>
    where
        T: Serialize + Send + 'static,
    {
        self.write(move |txn| {
            txn.open_table(SETTINGS)?
                .insert(key, encode("settings", &settings)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn routing_settings(&self) -> Result<RoutingSettings, StoreError> {
        self.settings_group(ROUTING).await
    }

    /// Changes the routing settings as stored now, read and written in one transaction, so a
    /// change another router made a moment ago is kept (a write transaction is serialised
    /// fleet-wide). `change` refusing the result writes nothing.
    pub async fn update_routing_settings<E: Send + 'static>(
        &self,
        change: impl FnOnce(RoutingSettings) -> Result<RoutingSettings, E> + Send + 'static,
    ) -> Result<Result<RoutingSettings, E>, StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(SETTINGS)?;
            let current = match table.get(ROUTING)? {
                Some(row) => decode("settings", &row)?,
                None => RoutingSettings::default(),
            };
            let changed = match change(current) {
                Ok(changed) => changed,
                Err(e) => return Ok(Err(e)),
            };
            table.insert(ROUTING, encode("settings", &changed)?.as_slice())?;
            Ok(Ok(changed))
        })
        .await
    }

    pub async fn put_routing_settings(&self, settings: RoutingSettings) -> Result<(), StoreError> {
        self.put_settings_group(ROUTING, settings).await
    }
}

const ADMIN_AGENT: &str = "admin_agent";

/// The admin agent's settings: which model (or alias) it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAgentSettings {
    #[serde(default = "default_admin_agent_model")]
    pub model: String,
}

fn default_admin_agent_model() -> String {
    super::AUTO_ALIAS.to_string()
}

impl Default for AdminAgentSettings {
    fn default() -> Self {
        AdminAgentSettings {
            model: default_admin_agent_model(),
        }
    }
}

impl Store {
    pub async fn admin_agent_settings(&self) -> Result<AdminAgentSettings, StoreError> {
        self.settings_group(ADMIN_AGENT).await
    }

    pub async fn put_admin_agent_settings(&self, settings: AdminAgentSettings) -> Result<(), StoreError> {
        self.put_settings_group(ADMIN_AGENT, settings).await
    }
}
