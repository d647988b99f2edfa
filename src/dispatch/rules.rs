//! The routing rules an admin sets: the default tier order, the queue timeout, and model
//! aliases. Stored in redb, held in memory as snapshots the request path reads for free.

use super::plan::Tier;
use super::stream::Phases;
use crate::edits::Edits;
use crate::providers::connect::ConnectTimeout;
use crate::store::{
    AdminAgentSettings, AliasRecord, PhaseTimeouts, RoutingSettings, Store, StoreError, TierTimeouts, AUTO_ALIAS,
};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// A queue wait longer than this is a misconfiguration, not a wish.
pub const MAX_QUEUE_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// Phase timeouts are between these (a day at most: a request that long is stuck).
pub const MIN_PHASE_MS: u64 = 100;
pub const MAX_PHASE_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RulesError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => RulesError::NotFound(what),
            StoreError::Conflict(message) => RulesError::Conflict(message),
            other => RulesError::Store(other),
        }
    }
}

impl RulesError {
    pub fn status(&self) -> u16 {
        match self {
            RulesError::Invalid(_) => 400,
            RulesError::NotFound(_) => 404,
            RulesError::Conflict(_) => 409,
            RulesError::Store(e) => e.status(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            RulesError::Invalid(_) => "invalid_request",
            RulesError::NotFound(_) => "not_found",
            RulesError::Conflict(_) => "conflict",
            RulesError::Store(_) => "internal_error",
        }
    }
}

/// Some phases of one tier's clocks; the rest stay as they are.
#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhasePatch {
    pub connect_ms: Option<u64>,
    pub headers_ms: Option<u64>,
    pub first_content_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsPatch {
    pub gpu: Option<PhasePatch>,
    pub cli: Option<PhasePatch>,
    pub cloud: Option<PhasePatch>,
}

#[derive(Debug, Default)]
pub struct SettingsPatch {
    pub default_order: Option<Vec<String>>,
    pub queue_timeout_ms: Option<u64>,
    pub timeouts: Option<TimeoutsPatch>,
    /// The model (or alias) the admin agent runs on.
    pub admin_agent_model: Option<String>,
}

pub struct RoutingRules {
    store: Store,
    settings: RwLock<Arc<(RoutingSettings, Vec<Tier>)>>,
    admin_agent: RwLock<AdminAgentSettings>,
    aliases: RwLock<Arc<HashMap<String, AliasRecord>>>,
    /// The cloud tier's connect timeout, read by the provider client's connector.
    cloud_connect: ConnectTimeout,
    /// The GPU tier's connect timeout in ms; worker sessions pass each change on.
    gpu_connect: watch::Sender<u64>,
    /// Order this router's own changes with reloads (see `edits`): the settings (routing
    /// and admin agent), and the aliases.
    settings_edits: Edits,
    alias_edits: Edits,
}

impl RoutingRules {
    pub async fn load(store: Store) -> Result<RoutingRules, RulesError> {
        let settings = store.routing_settings().await?;
        let order = Tier::parse_order(&settings.default_order).unwrap_or_else(|_| Tier::ALL.to_vec());
        let aliases = store
            .list_aliases()
            .await?
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect();
        let admin_agent = store.admin_agent_settings().await?;
        let cloud_connect = ConnectTimeout::new(Duration::from_millis(settings.timeouts.cloud.connect_ms));
        let (gpu_connect, _) = watch::channel(settings.timeouts.gpu.connect_ms);
        Ok(RoutingRules {
            store,
            cloud_connect,
            gpu_connect,
            settings: RwLock::new(Arc::new((settings, order))),
            admin_agent: RwLock::new(admin_agent),
            aliases: RwLock::new(Arc::new(aliases)),
            settings_edits: Edits::default(),
            alias_edits: Edits::default(),
        })
    }

    pub fn settings(&self) -> RoutingSettings {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// The connect timeout the provider client must use (see `providers::build_http_client`).
    pub fn cloud_connect(&self) -> &ConnectTimeout {
        &self.cloud_connect
    }

    /// The GPU tier's connect timeout in ms, now and as it changes.
    pub fn gpu_connect(&self) -> watch::Receiver<u64> {
        self.gpu_connect.subscribe()
    }

    pub fn admin_agent_settings(&self) -> AdminAgentSettings {
        self.admin_agent.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn default_order(&self) -> Vec<Tier> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(
            self.settings
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .queue_timeout_ms,
        )
    }

    /// The clocks of one attempt on `tier`.
    pub fn phases(&self, tier: Tier) -> Phases {
        let settings = self.settings.read().unwrap_or_else(|p| p.into_inner()).clone();
        let t = &settings.0.timeouts;
        let p = match tier {
            Tier::Gpu => t.gpu,
            Tier::Cli => t.cli,
            Tier::Cloud => t.cloud,
        };
        Phases {
            headers: Duration::from_millis(p.headers_ms),
            first_content: Duration::from_millis(p.first_content_ms),
            idle: Duration::from_millis(p.idle_ms),
            total: Duration::from_millis(p.total_ms),
        }
    }

    pub async fn update_settings(&self, patch: SettingsPatch) -> Result<RoutingSettings, RulesError> {
        let SettingsPatch {
            default_order,
            queue_timeout_ms,
            timeouts,
            admin_agent_model,
        } = patch;
        if let Some(model) = admin_agent_model {
            let model = model.trim().to_string();
            if model.is_empty() || model.len() > 256 {
                return Err(RulesError::Invalid(
                    "admin_agent.model must be a model, alias or agent name of 1 to 256 characters".into(),
                ));
            }
            let agent = AdminAgentSettings { model };
            self.store.put_admin_agent_settings(agent.clone()).await?;
            self.settings_edits
                .apply(|| *self.admin_agent.write().unwrap_or_else(|p| p.into_inner()) = agent);
        }
        // Applied to the settings as stored, not to this router's copy: another router's
        // change whose notice has not arrived yet is kept.
        let settings = self
            .store
            .update_routing_settings(move |mut settings| {
                if let Some(order) = default_order {
                    let tiers = Tier::parse_order(&order)
                        .map_err(|e| RulesError::Invalid(format!("routing.default_order: {e}")))?;
                    settings.default_order = tiers.iter().map(|t| t.as_str().to_string()).collect();
                }
                if let Some(ms) = queue_timeout_ms {
                    settings.queue_timeout_ms = validate_queue_timeout(ms)?;
                }
                if let Some(timeouts) = timeouts {
                    settings.timeouts = apply_timeouts(settings.timeouts, timeouts)?;
                }
                Ok::<_, RulesError>(settings)
            })
            .await??;
        let order = Tier::parse_order(&settings.default_order).map_err(RulesError::Invalid)?;
        self.settings_edits
            .apply(|| self.install_settings(settings.clone(), order));
        Ok(settings)
    }

    /// The alias named `name`, else the one whose client model names match it (the most
    /// specific pattern wins: the longest, then the alias name).
    pub fn alias(&self, name: &str) -> Option<AliasRecord> {
        let aliases = self.aliases.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(alias) = aliases.get(name) {
            return Some(alias.clone());
        }
        aliases
            .values()
            .filter_map(|a| {
                a.client_models
                    .iter()
                    .filter(|pattern| client_model_matches(pattern, name))
                    .map(|pattern| (pattern.len(), a))
                    .max_by_key(|(len, _)| *len)
            })
            .max_by(|(la, a), (lb, b)| la.cmp(lb).then_with(|| b.name.cmp(&a.name)))
            .map(|(_, a)| a.clone())
    }

    pub fn aliases(&self) -> Vec<AliasRecord> {
        let mut out: Vec<AliasRecord> = self
            .aliases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// `create`: a new name (409 if taken); else an existing one (404 if missing).
    pub async fn put_alias(&self, alias: AliasRecord, create: bool) -> Result<AliasRecord, RulesError> {
        let alias = validate_alias(alias)?;
        self.store.put_alias(alias.clone(), create).await?;
        self.reload_own_aliases().await?;
        Ok(alias)
    }

    pub async fn delete_alias(&self, name: &str) -> Result<(), RulesError> {
        if name == AUTO_ALIAS {
            return Err(RulesError::Invalid(
                "the 'auto' alias cannot be deleted; set its models instead".into(),
            ));
        }
        self.store.delete_alias(name).await?;
        self.reload_own_aliases().await
    }

    /// Re-reads the routing and admin-agent settings (changed by another router).
    pub async fn reload_settings(&self) -> Result<(), RulesError> {
        let store = &self.store;
        self.settings_edits
            .reload(
                || async move {
                    let settings = store.routing_settings().await?;
                    let agent = store.admin_agent_settings().await?;
                    Ok::<_, RulesError>((settings, agent))
                },
                |(settings, agent)| {
                    let order = Tier::parse_order(&settings.default_order).unwrap_or_else(|_| Tier::ALL.to_vec());
                    *self.admin_agent.write().unwrap_or_else(|p| p.into_inner()) = agent;
                    self.install_settings(settings, order);
                },
            )
            .await
    }

    /// The settings in force from now on, the connect timeouts passed on.
    fn install_settings(&self, settings: RoutingSettings, order: Vec<Tier>) {
        self.cloud_connect
            .set(Duration::from_millis(settings.timeouts.cloud.connect_ms));
        self.gpu_connect.send_if_modified(|ms| {
            let changed = *ms != settings.timeouts.gpu.connect_ms;
            *ms = settings.timeouts.gpu.connect_ms;
            changed
        });
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new((settings, order));
    }

    /// Re-reads the aliases (changed by another router).
    pub async fn reload_aliases(&self) -> Result<(), RulesError> {
        self.alias_edits
            .reload(|| self.read_aliases(), |aliases| self.install_aliases(aliases))
            .await
    }

    async fn read_aliases(&self) -> Result<HashMap<String, AliasRecord>, RulesError> {
        Ok(self
            .store
            .list_aliases()
            .await?
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect())
    }

    fn install_aliases(&self, aliases: HashMap<String, AliasRecord>) {
        *self.aliases.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(aliases);
    }

    /// Re-reads the aliases after this router's own write committed.
    async fn reload_own_aliases(&self) -> Result<(), RulesError> {
        self.alias_edits
            .reload_own(|| self.read_aliases(), |aliases| self.install_aliases(aliases))
            .await
    }
}

pub fn validate_queue_timeout(ms: u64) -> Result<u64, RulesError> {
    if ms > MAX_QUEUE_TIMEOUT_MS {
        return Err(RulesError::Invalid(format!(
            "queue timeout must be at most {MAX_QUEUE_TIMEOUT_MS} ms"
        )));
    }
    Ok(ms)
}

fn apply_timeouts(mut all: TierTimeouts, patch: TimeoutsPatch) -> Result<TierTimeouts, RulesError> {
    let tiers = [
        ("gpu", &mut all.gpu, patch.gpu),
        ("cli", &mut all.cli, patch.cli),
        ("cloud", &mut all.cloud, patch.cloud),
    ];
    for (tier, phases, patch) in tiers {
        let Some(patch) = patch else { continue };
        let fields: [(&str, &mut u64, Option<u64>); 5] = [
            ("connect_ms", &mut phases.connect_ms, patch.connect_ms),
            ("headers_ms", &mut phases.headers_ms, patch.headers_ms),
            ("first_content_ms", &mut phases.first_content_ms, patch.first_content_ms),
            ("idle_ms", &mut phases.idle_ms, patch.idle_ms),
            ("total_ms", &mut phases.total_ms, patch.total_ms),
        ];
        for (name, slot, value) in fields {
            let Some(ms) = value else { continue };
            if !(MIN_PHASE_MS..=MAX_PHASE_MS).contains(&ms) {
                return Err(RulesError::Invalid(format!(
                    "routing.timeouts.{tier}.{name} must be between {MIN_PHASE_MS} and {MAX_PHASE_MS} ms"
                )));
            }
            *slot = ms;
        }
        check_phase_order(tier, phases)?;
    }
    Ok(all)
}

fn check_phase_order(tier: &str, p: &PhaseTimeouts) -> Result<(), RulesError> {
    if p.headers_ms > p.total_ms || p.first_content_ms > p.total_ms || p.idle_ms > p.total_ms {
        return Err(RulesError::Invalid(format!(
            "routing.timeouts.{tier}: headers_ms, first_content_ms and idle_ms must not exceed total_ms"
        )));
    }
    Ok(())
}

/// Model names coding agents offer their users; a `client_models` pattern lists those it
/// matches in `GET /v1/models`, so a client's model discovery shows them.
const AGENT_MODEL_NAMES: &[&str] = &[
    "claude-opus-4-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "claude-opus-4-0",
    "claude-sonnet-4-0",
    "claude-3-7-sonnet-latest",
    "claude-3-5-haiku-latest",
    "gpt-5-codex",
    "gpt-5",
    "gpt-5-mini",
];

impl RoutingRules {
    /// Client model names the aliases' `client_models` send somewhere, with the alias:
    /// exact entries as they are, patterns as the well-known agent model names they match.
    pub fn client_model_names(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for alias in self.aliases() {
            for pattern in &alias.client_models {
                if !pattern.contains('*') {
                    out.push((pattern.clone(), alias.name.clone()));
                    continue;
                }
                for name in AGENT_MODEL_NAMES.iter().filter(|n| client_model_matches(pattern, n)) {
                    out.push((name.to_string(), alias.name.clone()));
                }
            }
        }
        out
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn client_model_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn validate_alias(alias: AliasRecord) -> Result<AliasRecord, RulesError> {
    let name = alias.name.trim().to_string();
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with("agent:")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(RulesError::Invalid(
            "alias name must be 1 to 64 characters of letters, digits, '.', '_' or '-'".into(),
        ));
    }
    let clean = |tier: &str, model: Option<String>| -> Result<Option<String>, RulesError> {
        match model.map(|m| m.trim().to_string()) {
            Some(m) if m.is_empty() => Err(RulesError::Invalid(format!("{tier} must be a model name or null"))),
            Some(m) if m.len() > 256 => Err(RulesError::Invalid(format!("{tier} is too long"))),
            other => Ok(other),
        }
    };
    let mut client_models = Vec::new();
    for pattern in alias.client_models {
        let pattern = pattern.trim().to_string();
        if pattern.is_empty() || pattern.len() > 128 || pattern.chars().any(char::is_whitespace) {
            return Err(RulesError::Invalid(
                "client_models entries must be model names or `*` patterns of 1 to 128 characters without spaces"
                    .into(),
            ));
        }
        if pattern == name {
            return Err(RulesError::Invalid(
                "client_models must not name the alias itself".into(),
            ));
        }
        if !client_models.contains(&pattern) {
            client_models.push(pattern);
        }
    }
    Ok(AliasRecord {
        client_models,
        gpu: clean("gpu", alias.gpu)?,
        cli: clean("cli", alias.cli)?,
        cloud: clean("cloud", alias.cloud)?,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_settings_change_keeps_a_change_this_router_has_not_heard_of_yet() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.initialize(None, None).unwrap();
        let rules = RoutingRules::load(store.clone()).await.unwrap();
        // Another router changes the queue timeout; its notice has not reached this one.
        let mut elsewhere = store.routing_settings().await.unwrap();
        elsewhere.queue_timeout_ms = 4_321;
        store.put_routing_settings(elsewhere).await.unwrap();
        assert_ne!(rules.settings().queue_timeout_ms, 4_321);

        let patch = SettingsPatch {
            default_order: Some(vec!["cloud".into(), "gpu".into()]),
            queue_timeout_ms: None,
            timeouts: None,
            admin_agent_model: None,
        };
        let updated = rules.update_settings(patch).await.unwrap();
        assert_eq!(updated.queue_timeout_ms, 4_321);
        assert_eq!(updated.default_order, vec!["cloud", "gpu"]);
        let stored = store.routing_settings().await.unwrap();
        assert_eq!(stored.queue_timeout_ms, 4_321);
        assert_eq!(rules.settings().queue_timeout_ms, 4_321);

        // A refused patch writes nothing.
        let bad = SettingsPatch {
            default_order: None,
            queue_timeout_ms: Some(u64::MAX),
            timeouts: None,
            admin_agent_model: None,
        };
        assert!(matches!(rules.update_settings(bad).await, Err(RulesError::Invalid(_))));
        assert_eq!(store.routing_settings().await.unwrap(), stored);
    }

    #[test]
    fn client_model_patterns_match_whole_names() {
        let cases = [
            ("claude-*", "claude-sonnet-4-5", true),
            ("claude-*", "claude-", true),
            ("claude-*", "anthropic/claude-x", false),
            ("*-mini", "gpt-4o-mini", true),
            ("*-mini", "gpt-4o-mini-x", false),
            ("gpt-*-mini", "gpt-4o-mini", true),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "a-c-b", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "anything", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(client_model_matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn client_model_entries_are_cleaned_and_checked() {
        let alias = |patterns: &[&str]| AliasRecord {
            name: "coder".into(),
            gpu: None,
            cli: None,
            cloud: None,
            client_models: patterns.iter().map(|p| p.to_string()).collect(),
        };
        let ok = validate_alias(alias(&[" claude-* ", "claude-*", "gpt-5"])).unwrap();
        assert_eq!(ok.client_models, ["claude-*", "gpt-5"]);
        for bad in [&[""][..], &["a b"], &["coder"]] {
            assert!(validate_alias(alias(bad)).is_err(), "{bad:?}");
        }
    }
}
