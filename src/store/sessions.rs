//! Admin UI sessions, keyed by the SHA-256 of the cookie's token.

use super::tables::SESSIONS;
use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub username: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Store {
    pub async fn insert_session(&self, token_hash: String, record: SessionRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.open_table(SESSIONS)?
                .insert(token_hash.as_str(), encode("session", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn get_session(&self, token_hash: String) -> Result<Option<SessionRecord>, StoreError> {
        self.read(move |txn| match txn.open_table(SESSIONS)?.get(token_hash.as_str())? {
            Some(row) => Ok(Some(decode("session", &row)?)),
            None => Ok(None),
        })
        .await
    }

    pub async fn delete_session(&self, token_hash: String) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.open_table(SESSIONS)?.remove(token_hash.as_str())?;
            Ok(())
        })
        .await
    }

    /// Drops every session that expired before `now`; returns how many.
    pub async fn prune_sessions(&self, now: i64) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(SESSIONS)?;
            let mut expired = Vec::new();
            for row in table.iter()? {
                let (key, value) = row?;
                let record: SessionRecord = decode("session", &value)?;
                if record.expires_at <= now {
                    expired.push(key);
                }
            }
            for key in &expired {
                table.remove(key.as_str())?;
            }
            Ok(expired.len())
        })
        .await
    }
}
