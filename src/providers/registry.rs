//! The provider registry: the admin operations on providers (the same functions serve the
//! admin API and, later, the admin agent) and the routing snapshot the hot path reads.
//!
//! The snapshot is rebuilt after each change, never per request: a request clones one `Arc`.

use super::routing::RoutingTable;
use super::{list_models, CachedModel, HttpClient, ProviderError, ProviderKind};
use crate::clock::now_unix;
use crate::crypto::{CryptoError, MasterKey, Secret};
use crate::edits::Edits;
use crate::store::{ModelCache, ProviderRecord, Store, StoreError};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde::Serialize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Sealed provider keys are bound to this record kind (and the provider id).
pub const SEAL_KIND: &str = "provider";
const MAX_NAME_LEN: usize = 64;
const MAX_KEY_LEN: usize = 4096;
/// A model list bigger than this is not a model list.
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_PRIORITY: i32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("a provider named '{0}' already exists")]
    NameTaken(String),
    #[error("provider not found")]
    NotFound,
    #[error("the provider rejected the API key: {0}")]
    KeyRejected(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    UpstreamFailed(String),
    #[error("a stored provider key cannot be opened: {0}")]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => RegistryError::NotFound,
            other => RegistryError::Store(other),
        }
    }
}

impl RegistryError {
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::Invalid(_) => 400,
            RegistryError::NameTaken(_) => 409,
            RegistryError::NotFound => 404,
            RegistryError::KeyRejected(_) => 422,
            RegistryError::Unreachable(_) | RegistryError::UpstreamFailed(_) => 502,
            RegistryError::Crypto(_) => 500,
            RegistryError::Store(e) => e.status(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::Invalid(_) => "invalid_request",
            RegistryError::NameTaken(_) => "name_taken",
            RegistryError::NotFound => "not_found",
            RegistryError::KeyRejected(_) => "key_rejected",
            RegistryError::Unreachable(_) => "provider_unreachable",
            RegistryError::UpstreamFailed(_) => "provider_error",
            RegistryError::Crypto(_) | RegistryError::Store(_) => "internal_error",
        }
    }

    /// A failed key check while adding or rotating: the caller's key or base_url is wrong.
    fn from_validation(e: ProviderError) -> Self {
        match e {
            ProviderError::KeyRejected { message, .. } => RegistryError::KeyRejected(message),
            ProviderError::Status { status: 404, message } => RegistryError::KeyRejected(format!(
                "the model list endpoint was not found (404: {message}); check base_url — OpenAI's includes /v1, Anthropic's does not"
            )),
            ProviderError::Unreachable(_) | ProviderError::Exhausted(_) | ProviderError::Timeout(_) => {
                RegistryError::Unreachable(e.to_string())
            }
            other => RegistryError::UpstreamFailed(other.to_string()),
        }
    }
}

/// A new provider as the admin API and the admin agent describe it.
#[derive(Debug)]
pub struct NewProvider {
    pub name: String,
    pub kind: ProviderKind,
    pub api_key: Option<Secret>,
    pub base_url: Option<String>,
    pub priority: Option<i32>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default)]
pub struct ProviderPatch {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub priority: Option<i32>,
    pub api_key: Option<Secret>,
    pub base_url: Option<String>,
}

/// A provider as shown: never the key, only its hint.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    pub base_url: String,
    pub key_hint: String,
    pub model_count: usize,
    pub models_fetched_at: Option<String>,
    pub enabled: bool,
    pub priority: i32,
    pub created_at: String,
    pub updated_at: String,
}

impl ProviderView {
    fn new(record: &ProviderRecord, cache: &ModelCache) -> Self {
        ProviderView {
            id: record.id.clone(),
            name: record.name.clone(),
            kind: record.kind,
            base_url: record.base_url.clone(),
            key_hint: record.key_hint.clone(),
            model_count: cache.models.len(),
            models_fetched_at: (cache.fetched_at > 0).then(|| crate::clock::rfc3339(cache.fetched_at)),
            enabled: record.enabled,
            priority: record.priority,
            created_at: crate::clock::rfc3339(record.created_at),
            updated_at: crate::clock::rfc3339(record.updated_at),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub provider_id: String,
    pub provider: String,
    pub provider_type: ProviderKind,
    pub provider_enabled: bool,
    pub fetched_at: String,
}

pub struct ProviderRegistry {
    store: Store,
    master: Arc<MasterKey>,
    http: HttpClient,
    validation_timeout: Duration,
    routing: RwLock<Arc<RoutingTable>>,
    /// Orders rebuilds so an older snapshot never replaces a newer one (see `edits`).
    edits: Edits,
}

impl ProviderRegistry {
    pub async fn load(
        store: Store,
        master: Arc<MasterKey>,
        http: HttpClient,
        upstream_timeout: Duration,
    ) -> Result<ProviderRegistry, RegistryError> {
        let registry = ProviderRegistry {
            store,
            master,
            http,
            validation_timeout: upstream_timeout.min(Duration::from_secs(30)),
            routing: RwLock::new(Arc::new(RoutingTable::default())),
            edits: Edits::default(),
        };
        registry.reload().await?;
        Ok(registry)
    }

    /// The current snapshot; cheap (one `Arc` clone), for the request path.
    pub fn routing(&self) -> Arc<RoutingTable> {
        self.routing.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rebuilds the routing table from the store (another router added, changed or removed
    /// a provider, or refreshed its models).
    pub async fn reload(&self) -> Result<(), RegistryError> {
        self.edits
            .reload(|| self.read_table(), |table| self.install(table))
            .await
    }

    /// Rebuilds the routing table after this router's own write committed.
    async fn rebuild(&self) -> Result<(), RegistryError> {
        self.edits
            .reload_own(|| self.read_table(), |table| self.install(table))
            .await
    }

    async fn read_table(&self) -> Result<Arc<RoutingTable>, RegistryError> {
        let rows = self.store.providers_with_models().await?;
        Ok(Arc::new(RoutingTable::build(rows)))
    }

    fn install(&self, table: Arc<RoutingTable>) {
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    pub async fn list(&self) -> Result<Vec<ProviderView>, RegistryError> {
        let mut rows = self.store.providers_with_models().await?;
        rows.sort_by(|(a, _), (b, _)| a.priority.cmp(&b.priority).then_with(|| a.name.cmp(&b.name)));
        Ok(rows.iter().map(|(r, c)| ProviderView::new(r, c)).collect())
    }

    pub async fn get(&self, id: &str) -> Result<ProviderView, RegistryError> {
        let rows = self.store.providers_with_models().await?;
        rows.iter()
            .find(|(r, _)| r.id == id)
            .map(|(r, c)| ProviderView::new(r, c))
            .ok_or(RegistryError::NotFound)
    }

    /// Validates the key against the provider's model list, caches the models, seals the
    /// key and stores everything in one transaction. Nothing is stored on any failure.
    pub async fn add(&self, new: NewProvider) -> Result<ProviderView, RegistryError> {
        let name = validate_provider_name(&new.name)?;
        let base_url = match new.base_url.as_deref() {
            Some(url) => normalize_base_url(url)?,
            None => default_base_url(new.kind)?.to_string(),
        };
        let key = validate_key(new.kind, new.api_key)?;
        if self.store.provider_name_taken(&name, None).await? {
            return Err(RegistryError::NameTaken(name));
        }
        let models = self.validate(new.kind, &base_url, key.as_ref()).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_unix();
        let record = ProviderRecord {
            sealed_key: key
                .as_ref()
                .map(|k| self.master.seal_secret(SEAL_KIND, &id, k))
                .transpose()?,
            key_hint: key.as_ref().map(Secret::hint).unwrap_or_default(),
            id,
            name,
            kind: new.kind,
            base_url,
            priority: new.priority.unwrap_or(DEFAULT_PRIORITY),
            enabled: new.enabled.unwrap_or(true),
            created_at: now,
            updated_at: now,
        };
        let cache = ModelCache {
            models,
            fetched_at: now,
        };
        let view = ProviderView::new(&record, &cache);
        match self.store.insert_provider(record.clone(), cache).await {
            Err(StoreError::Conflict(_)) => return Err(RegistryError::NameTaken(record.name)),
            other => other?,
        }
        self.rebuild().await?;
        tracing::info!(provider = %view.name, provider_id = %view.id, kind = view.kind.as_str(), models = view.model_count, "provider added");
        Ok(view)
    }

    /// Renames, enables/disables, re-prioritises, or rotates the key. A new key is validated
    /// first; a rejected one leaves the old key in place. A new `base_url` needs a new key
    /// in the same call, so a stored key is never sent to a new host.
    pub async fn update(&self, id: &str, patch: ProviderPatch) -> Result<ProviderView, RegistryError> {
        if patch.base_url.is_some() && patch.api_key.is_none() {
            return Err(RegistryError::Invalid(
                "changing base_url requires api_key in the same request: a stored key is never sent to a new host"
                    .into(),
            ));
        }
        if patch.name.is_none() && patch.enabled.is_none() && patch.priority.is_none() && patch.api_key.is_none() {
            return Err(RegistryError::Invalid(
                "nothing to change: give one of name, enabled, priority, api_key (with base_url)".into(),
            ));
        }
        let mut record = self.store.get_provider(id).await?;
        if let Some(name) = &patch.name {
            let name = validate_provider_name(name)?;
            if self.store.provider_name_taken(&name, Some(id)).await? {
                return Err(RegistryError::NameTaken(name));
            }
            record.name = name;
        }
        let base_url = match patch.base_url.as_deref() {
            Some(url) => normalize_base_url(url)?,
            None => record.base_url.clone(),
        };
        let mut models = None;
        if let Some(new_key) = patch.api_key {
            let key = validate_key(record.kind, Some(new_key))?;
            let listed = self.validate(record.kind, &base_url, key.as_ref()).await?;
            record.sealed_key = key
                .as_ref()
                .map(|k| self.master.seal_secret(SEAL_KIND, &record.id, k))
                .transpose()?;
            record.key_hint = key.as_ref().map(Secret::hint).unwrap_or_default();
            record.base_url = base_url;
            models = Some(ModelCache {
                models: listed,
                fetched_at: now_unix(),
            });
        }
        if let Some(enabled) = patch.enabled {
            record.enabled = enabled;
        }
        if let Some(priority) = patch.priority {
            record.priority = priority;
        }
        record.updated_at = now_unix();
        let name = record.name.clone();
        match self.store.update_provider(record, models).await {
            Err(StoreError::Conflict(_)) => return Err(RegistryError::NameTaken(name)),
            other => other?,
        }
        self.rebuild().await?;
        tracing::info!(provider = %name, provider_id = %id, "provider updated");
        self.get(id).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), RegistryError> {
        let record = self.store.delete_provider(id).await?;
        self.rebuild().await?;
        tracing::info!(provider = %record.name, provider_id = %id, "provider deleted");
        Ok(())
    }

    /// Re-reads the provider's model list with its stored key.
    pub async fn refresh_models(&self, id: &str) -> Result<ProviderView, RegistryError> {
        let record = self.store.get_provider(id).await?;
        let key = record
            .sealed_key
            .as_ref()
            .map(|s| self.master.open_secret(SEAL_KIND, &record.id, s))
            .transpose()?;
        let models = list_models(
            &self.http,
            record.kind,
            &record.base_url,
            key.as_ref(),
            self.validation_timeout,
        )
        .await
        .map_err(|e| match e {
            ProviderError::Unreachable(_) | ProviderError::Exhausted(_) | ProviderError::Timeout(_) => {
                RegistryError::Unreachable(e.to_string())
            }
            other => RegistryError::UpstreamFailed(format!("refreshing models failed: {other}")),
        })?;
        let cache = ModelCache {
            models,
            fetched_at: now_unix(),
        };
        self.store.put_models(id, cache).await?;
        self.rebuild().await?;
        self.get(id).await
    }

    /// The background refresh: every enabled provider; failures are logged and the old
    /// list kept.
    pub async fn refresh_all(&self) {
        let providers = match self.store.list_providers().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "model refresh: cannot list providers");
                return;
            }
        };
        for provider in providers.into_iter().filter(|p| p.enabled) {
            match self.refresh_models(&provider.id).await {
                Ok(view) => tracing::debug!(provider = %view.name, models = view.model_count, "models refreshed"),
                Err(e) => {
                    tracing::warn!(provider = %provider.name, error = %e, "model refresh failed; keeping the cached list")
                }
            }
        }
    }

    pub async fn list_models(&self) -> Result<Vec<ModelView>, RegistryError> {
        let rows = self.store.providers_with_models().await?;
        let mut out: Vec<ModelView> = rows
            .iter()
            .flat_map(|(record, cache)| {
                cache.models.iter().map(move |m| ModelView {
                    id: m.id.clone(),
                    display_name: m.display_name.clone(),
                    provider_id: record.id.clone(),
                    provider: record.name.clone(),
                    provider_type: record.kind,
                    provider_enabled: record.enabled,
                    fetched_at: crate::clock::rfc3339(cache.fetched_at),
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.provider.cmp(&b.provider)));
        Ok(out)
    }

    async fn validate(
        &self,
        kind: ProviderKind,
        base_url: &str,
        key: Option<&Secret>,
    ) -> Result<Vec<CachedModel>, RegistryError> {
        list_models(&self.http, kind, base_url, key, self.validation_timeout)
            .await
            .map_err(RegistryError::from_validation)
    }
}

/// Letters, digits, `.`, `_`, `-`: the name is used in `name/model` and `X-Auxot-Provider`.
pub fn validate_provider_name(name: &str) -> Result<String, RegistryError> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(RegistryError::Invalid(format!(
            "name must be 1 to {MAX_NAME_LEN} characters of letters, digits, '.', '_' or '-'"
        )))
    }
}

fn default_base_url(kind: ProviderKind) -> Result<&'static str, RegistryError> {
    match kind {
        ProviderKind::Openai => Ok(super::openai::DEFAULT_BASE_URL),
        ProviderKind::Anthropic => Ok(super::anthropic::DEFAULT_BASE_URL),
        ProviderKind::OpenaiCompatible => Err(RegistryError::Invalid(
            "base_url is required for an openai-compatible provider (e.g. http://127.0.0.1:8000/v1)".into(),
        )),
    }
}

/// http(s) only, no credentials, query or fragment; trailing `/` dropped.
pub fn normalize_base_url(raw: &str) -> Result<String, RegistryError> {
    let invalid = |why: &str| RegistryError::Invalid(format!("base_url {why}"));
    let url = url::Url::parse(raw.trim()).map_err(|e| invalid(&format!("is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain credentials; give the key as api_key"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn validate_key(kind: ProviderKind, key: Option<Secret>) -> Result<Option<Secret>, RegistryError> {
    match key {
        Some(key) if !key.is_empty() => {
            let text = key.expose();
            if text.len() > MAX_KEY_LEN || text.chars().any(|c| c.is_control() || c == ' ') {
                return Err(RegistryError::Invalid(
                    "api_key must be a single token without spaces or control characters".into(),
                ));
            }
            Ok(Some(Secret::new(text.trim().to_string())))
        }
        _ if kind == ProviderKind::OpenaiCompatible => Ok(None),
        _ => Err(RegistryError::Invalid(format!(
            "api_key is required for a {} provider",
            kind.as_str()
        ))),
    }
}

/// Reads a listing body whole, refusing one beyond any sane size.
pub(crate) async fn collect(body: BoxStream<'static, Result<Bytes, ProviderError>>) -> Result<Bytes, ProviderError> {
    super::collect_body(body, MAX_LISTING_BYTES, "model list").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_normalised() {
        assert_eq!(
            normalize_base_url("https://api.openai.com/v1/").unwrap(),
            "https://api.openai.com/v1"
        );
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8000/v1").unwrap(),
            "http://127.0.0.1:8000/v1"
        );
        for bad in [
            "ftp://x",
            "not a url",
            "https://user:pw@host/v1",
            "https://host/v1?x=1",
            "http://",
            "https://host/v1#frag",
        ] {
            assert!(normalize_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn provider_names_are_safe_for_model_pins() {
        assert!(validate_provider_name("openai-main_2.eu").is_ok());
        for bad in ["", "has space", "a/b", "ünïcode", &"x".repeat(65)] {
            assert!(validate_provider_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_required_except_for_compatible_servers() {
        assert!(validate_key(ProviderKind::Openai, None).is_err());
        assert!(validate_key(ProviderKind::Anthropic, Some(Secret::new("  ".into()))).is_err());
        assert!(validate_key(ProviderKind::OpenaiCompatible, None).unwrap().is_none());
        assert!(validate_key(ProviderKind::Openai, Some(Secret::new("sk a".into()))).is_err());
    }
}
