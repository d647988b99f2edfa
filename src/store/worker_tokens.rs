//! Worker tokens: what a GPU or CLI worker presents when it connects. Stored as SHA-256.

use super::tables::WORKER_TOKENS;
use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};

/// What a worker token lets its holder serve as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerKind {
    Gpu,
    Cli,
}

impl WorkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Gpu => "gpu",
            WorkerKind::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerTokenRecord {
    pub id: String,
    pub name: String,
    pub kind: WorkerKind,
    pub token_hash: String,
    pub prefix: String,
    pub created_at: i64,
    /// A CLI subscription's monthly price (USD), shown beside the worker's usage.
    #[serde(default)]
    pub monthly_price_usd: Option<f64>,
    /// The models a worker with this token may serve (exact names or `prefix*`); `None`:
    /// any name no cloud provider serves. See `workers::policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
}

impl Store {
    pub async fn insert_worker_token(&self, record: WorkerTokenRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.open_table(WORKER_TOKENS)?
                .insert(record.id.as_str(), encode("worker token", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn list_worker_tokens(&self) -> Result<Vec<WorkerTokenRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(WORKER_TOKENS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, value) = row?;
                out.push(decode("worker token", &value)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn update_worker_token(&self, record: WorkerTokenRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(WORKER_TOKENS)?;
            if !table.contains(record.id.as_str())? {
                return Err(StoreError::NotFound("worker token"));
            }
            table.insert(record.id.as_str(), encode("worker token", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn delete_worker_token(&self, id: &str) -> Result<WorkerTokenRecord, StoreError> {
        let id = id.to_string();
        self.write(move |txn| {
            let removed = txn.open_table(WORKER_TOKENS)?.remove(id.as_str())?;
            match removed {
                Some(bytes) => decode("worker token", &bytes),
                None => Err(StoreError::NotFound("worker token")),
            }
        })
        .await
    }
}
