//! Provider records (sealed key and hint only) and each provider's cached model list.

use super::tables::{MODELS, PROVIDERS, PROVIDER_NAMES};
use super::{decode, encode, Store, StoreError, WriteTxn};
use crate::crypto::Sealed;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    OpenaiCompatible,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenaiCompatible => "openai-compatible",
        }
    }

    /// Whether it speaks the OpenAI wire format (`/chat/completions`).
    pub fn speaks_openai(self) -> bool {
        matches!(self, ProviderKind::Openai | ProviderKind::OpenaiCompatible)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderRecord {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// `None` only for an OpenAI-compatible server that takes no key.
    pub sealed_key: Option<Sealed>,
    pub key_hint: String,
    pub priority: i32,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedModel {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCache {
    pub models: Vec<CachedModel>,
    pub fetched_at: i64,
}

fn name_key(name: &str) -> String {
    name.to_lowercase()
}

fn claim_name(txn: &WriteTxn<'_>, name: &str, id: &str) -> Result<(), StoreError> {
    let mut names = txn.open_table(PROVIDER_NAMES)?;
    let key = name_key(name);
    if let Some(owner) = names.get(key.as_str())? {
        if owner != id {
            return Err(StoreError::Conflict(format!(
                "a provider named '{name}' already exists"
            )));
        }
    }
    names.insert(key.as_str(), id)?;
    Ok(())
}

impl Store {
    pub async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(PROVIDERS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, value) = row?;
                out.push(decode("provider", &value)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn get_provider(&self, id: &str) -> Result<ProviderRecord, StoreError> {
        let id = id.to_string();
        self.read(move |txn| {
            let table = txn.open_table(PROVIDERS)?;
            let row = table.get(id.as_str())?.ok_or(StoreError::NotFound("provider"))?;
            decode("provider", &row)
        })
        .await
    }

    pub async fn provider_name_taken(&self, name: &str, except_id: Option<&str>) -> Result<bool, StoreError> {
        let key = name_key(name);
        let except = except_id.map(str::to_string);
        self.read(move |txn| {
            let names = txn.open_table(PROVIDER_NAMES)?;
            Ok(match names.get(key.as_str())? {
                Some(owner) => Some(owner.as_str()) != except.as_deref(),
                None => false,
            })
        })
        .await
    }

    /// Inserts the provider and its models in one transaction; a taken name writes nothing.
    pub async fn insert_provider(&self, record: ProviderRecord, models: ModelCache) -> Result<(), StoreError> {
        self.write(move |txn| {
            claim_name(txn, &record.name, &record.id)?;
            txn.open_table(PROVIDERS)?
                .insert(record.id.as_str(), encode("provider", &record)?.as_slice())?;
            txn.open_table(MODELS)?
                .insert(record.id.as_str(), encode("models", &models)?.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Replaces a provider (and its models, when given) in one transaction, moving the name
    /// index when the name changed.
    pub async fn update_provider(&self, record: ProviderRecord, models: Option<ModelCache>) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut providers = txn.open_table(PROVIDERS)?;
            let old: ProviderRecord = match providers.get(record.id.as_str())? {
                Some(row) => decode("provider", &row)?,
                None => return Err(StoreError::NotFound("provider")),
            };
            if name_key(&old.name) != name_key(&record.name) {
                claim_name(txn, &record.name, &record.id)?;
                txn.open_table(PROVIDER_NAMES)?.remove(name_key(&old.name).as_str())?;
            }
            providers.insert(record.id.as_str(), encode("provider", &record)?.as_slice())?;
            if let Some(models) = &models {
                txn.open_table(MODELS)?
                    .insert(record.id.as_str(), encode("models", models)?.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    pub async fn delete_provider(&self, id: &str) -> Result<ProviderRecord, StoreError> {
        let id = id.to_string();
        self.write(move |txn| {
            let removed = txn.open_table(PROVIDERS)?.remove(id.as_str())?;
            let record: ProviderRecord = match removed {
                Some(bytes) => decode("provider", &bytes)?,
                None => return Err(StoreError::NotFound("provider")),
            };
            txn.open_table(PROVIDER_NAMES)?
                .remove(name_key(&record.name).as_str())?;
            txn.open_table(MODELS)?.remove(id.as_str())?;
            Ok(record)
        })
        .await
    }

    /// Stores a refreshed model list, unless the provider was deleted meanwhile.
    pub async fn put_models(&self, provider_id: &str, models: ModelCache) -> Result<(), StoreError> {
        let id = provider_id.to_string();
        self.write(move |txn| {
            if !txn.open_table(PROVIDERS)?.contains(id.as_str())? {
                return Err(StoreError::NotFound("provider"));
            }
            txn.open_table(MODELS)?
                .insert(id.as_str(), encode("models", &models)?.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Every provider with its cached models, read in one snapshot.
    pub async fn providers_with_models(&self) -> Result<Vec<(ProviderRecord, ModelCache)>, StoreError> {
        self.read(|txn| {
            let providers = txn.open_table(PROVIDERS)?;
            let models = txn.open_table(MODELS)?;
            let mut out = Vec::new();
            for row in providers.iter()? {
                let (id, value) = row?;
                let record: ProviderRecord = decode("provider", &value)?;
                let cache = match models.get(id.as_str())? {
                    Some(m) => decode("models", &m)?,
                    None => ModelCache {
                        models: Vec::new(),
                        fetched_at: 0,
                    },
                };
                out.push((record, cache));
            }
            Ok(out)
        })
        .await
    }
}
