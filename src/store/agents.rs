//! Named agents: a system prompt, a model (or alias), a tier order and a queue timeout,
//! called with model `agent:NAME`.

use super::tables::AGENTS;
use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    #[serde(default)]
    pub system_prompt: Option<String>,
    pub model: String,
    /// Tier names in order (`gpu`, `cli`, `cloud`); `None`: the default order.
    #[serde(default)]
    pub tier_order: Option<Vec<String>>,
    #[serde(default)]
    pub queue_timeout_ms: Option<u64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    pub async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(AGENTS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, value) = row?;
                out.push(decode("agent", &value)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn put_agent(&self, record: AgentRecord, create: bool) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(AGENTS)?;
            let key = record.name.to_lowercase();
            let exists = table.contains(key.as_str())?;
            if create && exists {
                return Err(StoreError::Conflict(format!(
                    "an agent named '{}' already exists",
                    record.name
                )));
            }
            if !create && !exists {
                return Err(StoreError::NotFound("agent"));
            }
            table.insert(key.as_str(), encode("agent", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn delete_agent(&self, name: &str) -> Result<(), StoreError> {
        let key = name.to_lowercase();
        self.write(move |txn| match txn.open_table(AGENTS)?.remove(key.as_str())? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound("agent")),
        })
        .await
    }
}
