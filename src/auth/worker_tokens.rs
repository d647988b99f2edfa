//! Worker tokens: created, listed without the token, priced, limited to models, revoked;
//! checked from memory when a worker connects.

use super::{validate_allowed, validate_name, Auth, AuthError, WORKER_TOKEN_PREFIX};
use crate::crypto::{random_token, token_hash, Secret};
use crate::store::{StoreError, WorkerTokenRecord};
use crate::workers::protocol::WorkerKind;
use serde::Serialize;
use std::sync::Arc;

/// A worker token as listed: never the token itself.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerTokenView {
    pub id: String,
    pub name: String,
    pub kind: WorkerKind,
    pub prefix: String,
    pub created_at: String,
    pub monthly_price_usd: Option<f64>,
    /// `null`: any model no cloud provider serves; a list: exactly these (`prefix*`, `*`).
    pub allowed_models: Option<Vec<String>>,
}

impl From<&WorkerTokenRecord> for WorkerTokenView {
    fn from(r: &WorkerTokenRecord) -> Self {
        WorkerTokenView {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind,
            prefix: r.prefix.clone(),
            created_at: crate::clock::rfc3339(r.created_at),
            monthly_price_usd: r.monthly_price_usd,
            allowed_models: r.allowed_models.clone(),
        }
    }
}

/// Who a connecting worker is, by its token.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub token_id: String,
    pub token_name: String,
    pub kind: WorkerKind,
    /// The token's model allow-list (see `workers::policy`).
    pub allowed_models: Option<Arc<[String]>>,
}

impl From<&WorkerTokenRecord> for WorkerIdentity {
    fn from(r: &WorkerTokenRecord) -> Self {
        WorkerIdentity {
            token_id: r.id.clone(),
            token_name: r.name.clone(),
            kind: r.kind,
            allowed_models: r.allowed_models.as_deref().map(Arc::from),
        }
    }
}

impl Auth {
    /// Creates a worker token with no allow-list; the plaintext is returned here once.
    pub async fn create_worker_token(
        &self,
        name: &str,
        kind: WorkerKind,
    ) -> Result<(WorkerTokenView, Secret), AuthError> {
        self.create_worker_token_allowing(name, kind, None).await
    }

    /// Creates a worker token; the plaintext is returned here once and never again.
    pub async fn create_worker_token_allowing(
        &self,
        name: &str,
        kind: WorkerKind,
        allowed_models: Option<Vec<String>>,
    ) -> Result<(WorkerTokenView, Secret), AuthError> {
        let name = validate_name("name", name)?;
        let allowed_models = allowed_models.map(validate_allowed).transpose()?;
        let token = Secret::new(format!("{WORKER_TOKEN_PREFIX}{}", random_token().expose()));
        let record = WorkerTokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            kind,
            token_hash: token_hash(token.expose()),
            prefix: token.expose().chars().take(WORKER_TOKEN_PREFIX.len() + 4).collect(),
            created_at: crate::clock::now_unix(),
            monthly_price_usd: None,
            allowed_models,
        };
        self.store.insert_worker_token(record.clone()).await?;
        self.edit_credentials(|| {
            self.worker_tokens
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(record.token_hash.clone(), WorkerIdentity::from(&record));
        });
        Ok((WorkerTokenView::from(&record), token))
    }

    pub async fn list_worker_tokens(&self) -> Result<Vec<WorkerTokenView>, AuthError> {
        let mut tokens = self.store.list_worker_tokens().await?;
        tokens.sort_by_key(|t| t.created_at);
        Ok(tokens.iter().map(WorkerTokenView::from).collect())
    }

    /// Sets (or with `None` clears) the monthly subscription price of a worker token.
    pub async fn set_worker_price(&self, id: &str, price: Option<f64>) -> Result<WorkerTokenView, AuthError> {
        self.update_worker_token(id, Some(price), None).await
    }

    /// Changes a worker token's price and/or allow-list (`None`: leave as is; `Some(None)`:
    /// clear). A changed allow-list applies to the token's next connection: the caller
    /// disconnects its live worker so it reconnects under the new list.
    pub async fn update_worker_token(
        &self,
        id: &str,
        price: Option<Option<f64>>,
        allowed_models: Option<Option<Vec<String>>>,
    ) -> Result<WorkerTokenView, AuthError> {
        if price.flatten().is_some_and(|p| !p.is_finite() || p < 0.0) {
            return Err(AuthError::InvalidInput(
                "monthly_price_usd must be a non-negative number (or null)".into(),
            ));
        }
        let allowed_models = allowed_models
            .map(|list| list.map(validate_allowed).transpose())
            .transpose()?;
        let mut record = self
            .store
            .list_worker_tokens()
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or(AuthError::WorkerTokenNotFound)?;
        if let Some(price) = price {
            record.monthly_price_usd = price;
        }
        if let Some(allowed) = allowed_models {
            record.allowed_models = allowed;
        }
        match self.store.update_worker_token(record.clone()).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::WorkerTokenNotFound),
            other => other?,
        }
        self.edit_credentials(|| {
            self.worker_tokens
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(record.token_hash.clone(), WorkerIdentity::from(&record));
        });
        Ok(WorkerTokenView::from(&record))
    }

    /// Revokes the token; the caller disconnects its live worker.
    pub async fn revoke_worker_token(&self, id: &str) -> Result<(), AuthError> {
        let record = match self.store.delete_worker_token(id).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::WorkerTokenNotFound),
            other => other?,
        };
        self.edit_credentials(|| {
            self.worker_tokens
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&record.token_hash);
        });
        Ok(())
    }

    /// A connecting worker's token. No I/O.
    pub fn authenticate_worker(&self, token: Option<&str>) -> Result<WorkerIdentity, AuthError> {
        let token = token.ok_or(AuthError::MissingCredentials)?;
        let tokens = self.worker_tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(&token_hash(token.trim()))
            .cloned()
            .ok_or(AuthError::InvalidCredentials)
    }

    /// The token with this id as this router knows it now (`None`: revoked or deleted). No I/O.
    pub fn worker_token(&self, token_id: &str) -> Option<WorkerIdentity> {
        let tokens = self.worker_tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens.values().find(|t| t.token_id == token_id).cloned()
    }
}
