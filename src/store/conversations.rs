//! The admin agent's conversations. Messages are OpenAI chat messages exactly as the model
//! saw them, so they hold secret placeholders (`[[secret:1]]`), never a key.

use super::tables::CONVERSATIONS;
use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub id: String,
    pub title: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// OpenAI-format messages (user, assistant with tool_calls, tool), without the system prompt.
    #[serde(default)]
    pub messages: Vec<serde_json::Value>,
    /// A provider id whose deletion the agent asked the operator to confirm; only the
    /// operator's very next message can confirm it.
    #[serde(default)]
    pub pending_delete: Option<String>,
}

/// A conversation as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationSummary {
    pub id: String,
    pub title: String,
    pub updated_at: i64,
}

impl Store {
    pub async fn get_conversation(&self, id: &str) -> Result<ConversationRecord, StoreError> {
        let id = id.to_string();
        self.read(move |txn| match txn.open_table(CONVERSATIONS)?.get(id.as_str())? {
            Some(row) => decode("conversation", &row),
            None => Err(StoreError::NotFound("conversation")),
        })
        .await
    }

    pub async fn put_conversation(&self, record: ConversationRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.open_table(CONVERSATIONS)?
                .insert(record.id.as_str(), encode("conversation", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Newest first.
    pub async fn list_conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        let mut out = self
            .read(|txn| {
                let table = txn.open_table(CONVERSATIONS)?;
                let mut out = Vec::new();
                for row in table.iter()? {
                    let (_, value) = row?;
                    let record: ConversationRecord = decode("conversation", &value)?;
                    out.push(ConversationSummary {
                        id: record.id,
                        title: record.title,
                        updated_at: record.updated_at,
                    });
                }
                Ok(out)
            })
            .await?;
        out.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }
}
