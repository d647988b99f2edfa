//! Admin accounts: username and argon2id password hash (PHC string).

use super::tables::ADMINS;
use super::{decode, encode, Store, StoreError};
use redb::ReadableTableMetadata;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminRecord {
    pub username: String,
    pub password_hash: String,
    pub created_at: i64,
}

impl Store {
    pub async fn admin_exists(&self) -> Result<bool, StoreError> {
        self.read(|txn| Ok(!txn.open_table(ADMINS)?.is_empty()?)).await
    }

    /// Creates the first admin; the emptiness check and the insert share one transaction,
    /// so two racing setups cannot both succeed.
    pub async fn create_first_admin(&self, record: AdminRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut admins = txn.open_table(ADMINS)?;
            if admins.len()? > 0 {
                return Err(StoreError::Conflict("an admin account already exists".into()));
            }
            admins.insert(record.username.as_str(), encode("admin", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn get_admin(&self, username: &str) -> Result<Option<AdminRecord>, StoreError> {
        let username = username.to_string();
        self.read(move |txn| match txn.open_table(ADMINS)?.get(username.as_str())? {
            Some(row) => Ok(Some(decode("admin", row.value())?)),
            None => Ok(None),
        })
        .await
    }
}
