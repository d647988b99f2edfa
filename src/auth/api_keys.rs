//! API keys: created with their policy, listed without the key, limited, revoked; their
//! hashes and grants kept in memory for the request path.

use super::{grant, validate_name, Auth, AuthError, KeyGrant, API_KEY_PREFIX};
use crate::crypto::{random_token, token_hash, Secret};
use crate::store::{ApiKeyRecord, KeyLimits, Role, StoreError};
use serde::Serialize;
use std::sync::Arc;

/// An API key as listed: never the key itself.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub prefix: String,
    pub created_at: String,
    pub rpm_limit: Option<u32>,
    pub tpm_limit: Option<u32>,
    pub monthly_spend_cap_usd: Option<f64>,
    /// Empty: every model.
    pub allowed_models: Vec<String>,
    /// Empty: every tier.
    pub allowed_tiers: Vec<String>,
    pub expires_at: Option<String>,
    pub expired: bool,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(r: &ApiKeyRecord) -> Self {
        ApiKeyView {
            id: r.id.clone(),
            name: r.name.clone(),
            role: r.role,
            prefix: r.prefix.clone(),
            created_at: crate::clock::rfc3339(r.created_at),
            rpm_limit: r.rpm_limit,
            tpm_limit: r.tpm_limit,
            monthly_spend_cap_usd: r.monthly_spend_cap_usd,
            allowed_models: r.allowed_models.clone(),
            allowed_tiers: r.allowed_tiers.clone(),
            expires_at: r.expires_at.map(crate::clock::rfc3339),
            expired: r.expires_at.is_some_and(|at| at <= crate::clock::now_unix()),
        }
    }
}

/// An API key's governance as an admin sets it; on update, an absent field (`None`) stays
/// as it is and `Some(None)` removes the limit.
#[derive(Debug, Clone, Default)]
pub struct KeyPolicy {
    pub rpm_limit: Option<Option<u32>>,
    pub tpm_limit: Option<Option<u32>>,
    pub monthly_spend_cap_usd: Option<Option<f64>>,
    pub allowed_models: Option<Vec<String>>,
    pub allowed_tiers: Option<Vec<String>>,
    /// Unix seconds.
    pub expires_at: Option<Option<i64>>,
}

impl KeyPolicy {
    /// Checks every field and writes the present ones into `record`.
    fn apply(self, record: &mut ApiKeyRecord) -> Result<(), AuthError> {
        let invalid = |m: &str| AuthError::InvalidInput(m.to_string());
        if let Some(rpm) = self.rpm_limit {
            if rpm == Some(0) {
                return Err(invalid("rpm_limit must be at least 1 (or null for none)"));
            }
            record.rpm_limit = rpm;
        }
        if let Some(tpm) = self.tpm_limit {
            if tpm == Some(0) {
                return Err(invalid("tpm_limit must be at least 1 (or null for none)"));
            }
            record.tpm_limit = tpm;
        }
        if let Some(cap) = self.monthly_spend_cap_usd {
            if cap.is_some_and(|c| !c.is_finite() || c < 0.0) {
                return Err(invalid(
                    "monthly_spend_cap_usd must be a non-negative number (or null for none)",
                ));
            }
            record.monthly_spend_cap_usd = cap;
        }
        if let Some(models) = self.allowed_models {
            record.allowed_models =
                grant::clean_models(models).map_err(|e| AuthError::InvalidInput(format!("allowed_models: {e}")))?;
        }
        if let Some(tiers) = self.allowed_tiers {
            record.allowed_tiers =
                grant::clean_tiers(tiers).map_err(|e| AuthError::InvalidInput(format!("allowed_tiers: {e}")))?;
        }
        if let Some(expires_at) = self.expires_at {
            record.expires_at = expires_at;
        }
        Ok(())
    }
}

/// What the request path needs of a key, kept in memory.
#[derive(Clone)]
pub(super) struct KnownKey {
    pub(super) role: Role,
    pub(super) limits: KeyLimits,
    pub(super) grant: Arc<KeyGrant>,
    pub(super) expires_at: Option<i64>,
}

impl KnownKey {
    pub(super) fn of(record: &ApiKeyRecord) -> KnownKey {
        KnownKey {
            role: record.role,
            limits: KeyLimits {
                rpm: record.rpm_limit,
                tpm: record.tpm_limit,
                monthly_spend_cap_usd: record.monthly_spend_cap_usd,
            },
            grant: Arc::new(KeyGrant {
                models: record.allowed_models.clone(),
                tiers: record.allowed_tiers.clone(),
            }),
            expires_at: record.expires_at,
        }
    }
}

impl Auth {
    /// Creates a key; the plaintext is returned here once and never again.
    pub async fn create_api_key(&self, name: &str, role: Role) -> Result<(ApiKeyView, Secret), AuthError> {
        self.create_governed_api_key(name, role, KeyPolicy::default()).await
    }

    /// Creates a key with its limits and allow-lists; a name already used (any case) is
    /// refused with 409.
    pub async fn create_governed_api_key(
        &self,
        name: &str,
        role: Role,
        policy: KeyPolicy,
    ) -> Result<(ApiKeyView, Secret), AuthError> {
        let name = validate_name("name", name)?;
        let key = Secret::new(format!("{API_KEY_PREFIX}{}", random_token().expose()));
        let mut record = ApiKeyRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            role,
            key_hash: token_hash(key.expose()),
            prefix: key.expose().chars().take(API_KEY_PREFIX.len() + 4).collect(),
            created_at: crate::clock::now_unix(),
            rpm_limit: None,
            monthly_spend_cap_usd: None,
            tpm_limit: None,
            allowed_models: Vec::new(),
            allowed_tiers: Vec::new(),
            expires_at: None,
        };
        policy.apply(&mut record)?;
        self.store.insert_api_key(record.clone()).await?;
        self.remember_key(&record);
        Ok((ApiKeyView::from(&record), key))
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyView>, AuthError> {
        let mut keys = self.store.list_api_keys().await?;
        // Creation time is whole seconds: the name orders keys made in the same second.
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.name.cmp(&b.name)));
        Ok(keys.iter().map(ApiKeyView::from).collect())
    }

    /// Sets a key's limits (`None` removes one); effective for its next request.
    pub async fn set_api_key_limits(
        &self,
        id: &str,
        rpm: Option<Option<u32>>,
        cap: Option<Option<f64>>,
    ) -> Result<ApiKeyView, AuthError> {
        let policy = KeyPolicy {
            rpm_limit: rpm,
            monthly_spend_cap_usd: cap,
            ..KeyPolicy::default()
        };
        self.set_api_key_policy(id, policy).await
    }

    /// Changes a key's limits and allow-lists; effective for its next request.
    pub async fn set_api_key_policy(&self, id: &str, policy: KeyPolicy) -> Result<ApiKeyView, AuthError> {
        let mut record = self
            .store
            .list_api_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or(AuthError::KeyNotFound)?;
        policy.apply(&mut record)?;
        match self.store.update_api_key(record.clone()).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::KeyNotFound),
            other => other?,
        }
        self.remember_key(&record);
        Ok(ApiKeyView::from(&record))
    }

    /// Revokes at once: the in-memory set forgets the key in the same call.
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), AuthError> {
        let record = match self.store.delete_api_key(id).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::KeyNotFound),
            other => other?,
        };
        self.keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&record.key_hash);
        self.grants
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&record.id);
        Ok(())
    }

    fn remember_key(&self, record: &ApiKeyRecord) {
        let known = KnownKey::of(record);
        self.grants
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(record.id.clone(), known.grant.clone());
        self.keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(record.key_hash.clone(), (Arc::from(record.id.as_str()), known));
    }

    /// The allow-lists of the key with this id; `None` once the key is revoked.
    pub fn grant_of(&self, key_id: &str) -> Option<Arc<KeyGrant>> {
        self.grants
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key_id)
            .cloned()
    }
}
