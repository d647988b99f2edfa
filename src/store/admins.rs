//! Admin accounts: username, argon2id password hash (PHC string) and role.

use super::kv::Table;
use super::tables::{ADMINS, SESSIONS};
use super::{decode, encode, SessionRecord, Store, StoreError, WriteTxn};
use serde::{Deserialize, Serialize};

/// What an admin account may do: `admin` changes anything, `viewer` only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminRole {
    #[default]
    Admin,
    Viewer,
}

impl AdminRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Admin => "admin",
            AdminRole::Viewer => "viewer",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminRecord {
    pub username: String,
    pub password_hash: String,
    pub created_at: i64,
    /// Accounts made before roles existed are admins.
    #[serde(default)]
    pub role: AdminRole,
}

/// Usernames are unique whatever their case: the table is keyed by the lower-cased name.
fn key_of(username: &str) -> String {
    username.trim().to_lowercase()
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
            admins.insert(key_of(&record.username).as_str(), encode("admin", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Adds another account; an existing username (any case) is a conflict.
    pub async fn insert_admin(&self, record: AdminRecord) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut admins = txn.open_table(ADMINS)?;
            let key = key_of(&record.username);
            if admins.get(key.as_str())?.is_some() || legacy_key(&admins, &key)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "an account named '{}' already exists",
                    record.username
                )));
            }
            admins.insert(key.as_str(), encode("admin", &record)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn get_admin(&self, username: &str) -> Result<Option<AdminRecord>, StoreError> {
        let key = key_of(username);
        self.read(move |txn| {
            let admins = txn.open_table(ADMINS)?;
            let found = match admins.get(key.as_str())? {
                Some(row) => Some(row),
                None => match legacy_key(&admins, &key)? {
                    Some(legacy) => admins.get(legacy.as_str())?,
                    None => None,
                },
            };
            found.map(|bytes| decode("admin", &bytes)).transpose()
        })
        .await
    }

    pub async fn list_admins(&self) -> Result<Vec<AdminRecord>, StoreError> {
        self.read(|txn| {
            let mut out = Vec::new();
            for row in txn.open_table(ADMINS)?.iter()? {
                let (_, value) = row?;
                out.push(decode("admin", &value)?);
            }
            Ok(out)
        })
        .await
    }

    /// Replaces an account's hash and role. When `end_sessions` is set, the account's open
    /// sessions end in the same transaction (a reset password or a lowered role must not
    /// leave an old session behind). Returns how many sessions ended.
    pub async fn update_admin(&self, record: AdminRecord, end_sessions: bool) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut admins = txn.open_table(ADMINS)?;
            let wanted = key_of(&record.username);
            let key = match admins.get(wanted.as_str())? {
                Some(_) => wanted,
                None => legacy_key(&admins, &wanted)?.ok_or(StoreError::NotFound("admin account"))?,
            };
            admins.insert(key.as_str(), encode("admin", &record)?.as_slice())?;
            if end_sessions {
                return end_sessions_of(txn, &record.username);
            }
            Ok(0)
        })
        .await
    }

    /// Removes an account and its sessions. The last account with the admin role cannot
    /// be removed (nobody could change anything any more): that is a conflict.
    pub async fn delete_admin(&self, username: &str) -> Result<AdminRecord, StoreError> {
        let wanted = key_of(username);
        self.write(move |txn| {
            let mut admins = txn.open_table(ADMINS)?;
            let key = match admins.get(wanted.as_str())? {
                Some(_) => wanted,
                None => legacy_key(&admins, &wanted)?.ok_or(StoreError::NotFound("admin account"))?,
            };
            let mut records = Vec::new();
            for row in admins.iter()? {
                let (k, value) = row?;
                records.push((k, decode::<AdminRecord>("admin", &value)?));
            }
            let Some((_, target)) = records.iter().find(|(k, _)| *k == key).cloned() else {
                return Err(StoreError::NotFound("admin account"));
            };
            let admins_left = records
                .iter()
                .filter(|(k, r)| *k != key && r.role == AdminRole::Admin)
                .count();
            if target.role == AdminRole::Admin && admins_left == 0 {
                return Err(StoreError::Conflict(
                    "this is the last account with the admin role; make another admin first".into(),
                ));
            }
            admins.remove(key.as_str())?;
            end_sessions_of(txn, &target.username)?;
            Ok(target)
        })
        .await
    }

    /// How many accounts have the admin role.
    pub async fn count_admin_role(&self) -> Result<usize, StoreError> {
        Ok(self
            .list_admins()
            .await?
            .iter()
            .filter(|a| a.role == AdminRole::Admin)
            .count())
    }
}

/// The first admin used to be keyed by the name as typed; find such a row by its name.
fn legacy_key(admins: &Table<'_, &'static str, &'static [u8]>, wanted: &str) -> Result<Option<String>, StoreError> {
    for row in admins.iter()? {
        let (k, _) = row?;
        if k.to_lowercase() == wanted && k != wanted {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

fn end_sessions_of(txn: &WriteTxn<'_>, username: &str) -> Result<usize, StoreError> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut ended = Vec::new();
    for row in sessions.iter()? {
        let (key, value) = row?;
        let record: SessionRecord = decode("session", &value)?;
        if record.username.eq_ignore_ascii_case(username) {
            ended.push(key);
        }
    }
    for key in &ended {
        sessions.remove(key.as_str())?;
    }
    Ok(ended.len())
}
