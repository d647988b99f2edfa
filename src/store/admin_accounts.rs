//! Admin accounts as the offline recovery tool (`auxot admin`) manages them: list, add,
//! change a password (ending that admin's sessions), remove (never the last one).

use super::tables::{ADMINS, SESSIONS};
use super::{decode, encode, AdminRecord, SessionRecord, Store, StoreError};
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

impl Store {
    pub async fn list_admins(&self) -> Result<Vec<AdminRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(ADMINS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, value) = row?;
                out.push(decode("admin", value.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// Adds an admin; a taken username writes nothing.
    pub async fn insert_admin(&self, record: AdminRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut admins = txn.open_table(ADMINS)?;
            if admins.get(record.username.as_str())?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "an admin named '{}' already exists",
                    record.username
                )));
            }
            admins.insert(record.username.as_str(), encode("admin", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Replaces an admin's password hash and ends every session of that admin, in one
    /// transaction; returns how many sessions ended.
    pub async fn set_admin_password(&self, username: &str, password_hash: String) -> Result<usize, StoreError> {
        let username = username.to_string();
        self.write(move |txn| {
            let mut admins = txn.open_table(ADMINS)?;
            let mut record: AdminRecord = match admins.get(username.as_str())? {
                Some(row) => decode("admin", row.value())?,
                None => return Err(StoreError::NotFound("admin")),
            };
            record.password_hash = password_hash;
            admins.insert(username.as_str(), encode("admin", &record)?.as_slice())?;
            drop(admins);
            end_sessions_of(txn, &username)
        })
        .await
    }

    /// Removes an admin and its sessions; refuses to remove the last admin.
    pub async fn remove_admin(&self, username: &str) -> Result<usize, StoreError> {
        let username = username.to_string();
        self.write(move |txn| {
            let mut admins = txn.open_table(ADMINS)?;
            if admins.get(username.as_str())?.is_none() {
                return Err(StoreError::NotFound("admin"));
            }
            if admins.len()? <= 1 {
                return Err(StoreError::Conflict(
                    "this is the last admin account: create another one first, or reset its password".into(),
                ));
            }
            admins.remove(username.as_str())?;
            drop(admins);
            end_sessions_of(txn, &username)
        })
        .await
    }
}

fn end_sessions_of(txn: &WriteTransaction, username: &str) -> Result<usize, StoreError> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut ended = Vec::new();
    for row in sessions.iter()? {
        let (key, value) = row?;
        let record: SessionRecord = decode("session", value.value())?;
        if record.username == username {
            ended.push(key.value().to_string());
        }
    }
    for key in &ended {
        sessions.remove(key.as_str())?;
    }
    Ok(ended.len())
}
