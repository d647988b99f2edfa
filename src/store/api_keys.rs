//! API keys for clients and admins: stored as SHA-256, never as the key.

use super::tables::API_KEYS;
use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Client,
}

/// An API key's limits, as its record holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyLimits {
    pub rpm: Option<u32>,
    /// Input + output tokens per minute.
    pub tpm: Option<u32>,
    pub monthly_spend_cap_usd: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub key_hash: String,
    /// The first characters of the key (`aux_AbCd`), enough to recognise it in a list.
    pub prefix: String,
    pub created_at: i64,
    /// Requests per minute this key may make; `None`: no limit.
    #[serde(default)]
    pub rpm_limit: Option<u32>,
    /// Cloud spend this key may cause per calendar month (UTC), in USD; `None`: no cap.
    #[serde(default)]
    pub monthly_spend_cap_usd: Option<f64>,
    /// Tokens (input + output) per minute this key may use; `None`: no limit.
    #[serde(default)]
    pub tpm_limit: Option<u32>,
    /// Models, aliases or `agent:NAME` this key may ask for (`prefix*` matches a family);
    /// empty: any.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Tiers (`gpu`, `cli`, `cloud`) this key's requests may run on; empty: any.
    #[serde(default)]
    pub allowed_tiers: Vec<String>,
    /// Unix seconds after which the key stops working; `None`: never.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl Store {
    /// Inserts a key; a key with the same name (any case) is a conflict. The check and the
    /// insert share one transaction, so two racing creates cannot both pass.
    pub async fn insert_api_key(&self, record: ApiKeyRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(API_KEYS)?;
            let wanted = record.name.to_lowercase();
            for row in table.iter()? {
                let (_, value) = row?;
                let existing: ApiKeyRecord = decode("api key", &value)?;
                if existing.name.to_lowercase() == wanted {
                    return Err(StoreError::Conflict(format!(
                        "an API key named '{}' already exists; choose another name",
                        existing.name
                    )));
                }
            }
            table.insert(record.id.as_str(), encode("api key", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(API_KEYS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, value) = row?;
                out.push(decode("api key", &value)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn update_api_key(&self, record: ApiKeyRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(API_KEYS)?;
            if !table.contains(record.id.as_str())? {
                return Err(StoreError::NotFound("api key"));
            }
            table.insert(record.id.as_str(), encode("api key", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn delete_api_key(&self, id: &str) -> Result<ApiKeyRecord, StoreError> {
        let id = id.to_string();
        self.write(move |txn| {
            let removed = txn.open_table(API_KEYS)?.remove(id.as_str())?;
            match removed {
                Some(bytes) => decode("api key", &bytes),
                None => Err(StoreError::NotFound("api key")),
            }
        })
        .await
    }
}
