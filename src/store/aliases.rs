//! Model aliases: one name (`auto`, `coder`) → a model per tier.

use super::tables::ALIASES;
use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};

pub const AUTO: &str = "auto";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub name: String,
    /// Model on GPU workers; `None`: any model a GPU worker serves (or, for aliases other
    /// than `auto`, the tier is skipped).
    pub gpu: Option<String>,
    pub cli: Option<String>,
    /// `provider/model` or a plain model; `None`: the cloud tier is skipped.
    pub cloud: Option<String>,
    /// Client model names sent to this alias: exact names or `*` patterns (`claude-*`),
    /// so a client that picks its own model (Claude Code) runs where the operator says.
    #[serde(default)]
    pub client_models: Vec<String>,
}

impl AliasRecord {
    pub fn auto() -> AliasRecord {
        AliasRecord {
            name: AUTO.into(),
            gpu: None,
            cli: None,
            cloud: None,
            client_models: Vec::new(),
        }
    }
}

impl Store {
    pub async fn list_aliases(&self) -> Result<Vec<AliasRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(ALIASES)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, value) = row?;
                out.push(decode("alias", &value)?);
            }
            Ok(out)
        })
        .await
    }

    /// `create`: refuse an existing name (409); otherwise refuse a missing one (404).
    pub async fn put_alias(&self, record: AliasRecord, create: bool) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(ALIASES)?;
            let exists = table.contains(record.name.as_str())?;
            if create && exists {
                return Err(StoreError::Conflict(format!(
                    "an alias named '{}' already exists",
                    record.name
                )));
            }
            if !create && !exists {
                return Err(StoreError::NotFound("alias"));
            }
            table.insert(record.name.as_str(), encode("alias", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn delete_alias(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(move |txn| match txn.open_table(ALIASES)?.remove(name.as_str())? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound("alias")),
        })
        .await
    }
}
