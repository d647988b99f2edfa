//! Schema version, the passphrase salt and the key-check canary, with the migration hook.

use super::tables::*;
use super::{write_now, ReadTxn, Store, StoreError, WriteTxn};
use crate::crypto::Sealed;

/// What start-up needs to know about the data's key before anything is written.
#[derive(Debug, Default)]
pub struct KeyState {
    pub schema_version: Option<u32>,
    pub kdf_salt: Option<Vec<u8>>,
    pub canary: Option<Sealed>,
}

impl Store {
    /// Reads the key state of a redb file without writing; a database that was never
    /// initialised has none.
    pub fn key_state(&self) -> Result<KeyState, StoreError> {
        let txn = self.redb("reading the key state offline")?.begin_read()?;
        key_state_in(&ReadTxn::Redb(&txn))
    }

    /// The key state, from either backend.
    pub async fn load_key_state(&self) -> Result<KeyState, StoreError> {
        self.read(key_state_in).await
    }

    /// First start: records the salt (for passphrase keys) and the canary, creates every table.
    /// Later starts: runs the migrations from the stored schema version.
    pub fn initialize(&self, kdf_salt: Option<&[u8]>, canary: Option<&Sealed>) -> Result<(), StoreError> {
        let salt = kdf_salt.map(<[u8]>::to_vec);
        let canary = canary.cloned();
        write_now(self.redb("initializing offline")?, move |txn| {
            initialize_in(txn, salt.as_deref(), canary.as_ref())
        })
    }

    /// `initialize`, from either backend. On PostgreSQL the write lock makes two routers
    /// starting at once run the data steps once: the second finds the version current.
    pub async fn initialize_shared(&self, kdf_salt: Option<Vec<u8>>, canary: Option<Sealed>) -> Result<(), StoreError> {
        self.write(move |txn| initialize_in(txn, kdf_salt.as_deref(), canary.as_ref()))
            .await
    }
}

fn key_state_in(txn: &ReadTxn<'_>) -> Result<KeyState, StoreError> {
    if let ReadTxn::Redb(redb_txn) = txn {
        match redb_txn.open_table(META) {
            Ok(_) => {}
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(KeyState::default()),
            Err(e) => return Err(e.into()),
        }
    }
    let table = txn.open_table(META)?;
    let schema_version = match table.get(META_SCHEMA_VERSION)? {
        Some(bytes) => {
            Some(u32::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt("schema version", format!("{} bytes", bytes.len()))
            })?))
        }
        None => None,
    };
    Ok(KeyState {
        schema_version,
        kdf_salt: table.get(META_KDF_SALT)?,
        canary: table.get(META_KEY_CANARY)?.map(Sealed::from_bytes),
    })
}

fn initialize_in(txn: &WriteTxn<'_>, salt: Option<&[u8]>, canary: Option<&Sealed>) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let stored = meta
        .get(META_SCHEMA_VERSION)?
        .and_then(|b| b.as_slice().try_into().ok().map(u32::from_be_bytes))
        .unwrap_or(0);
    if stored > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: stored,
            supported: SCHEMA_VERSION,
        });
    }
    if let Some(salt) = salt {
        if !meta.contains(META_KDF_SALT)? {
            meta.insert(META_KDF_SALT, salt)?;
        }
    }
    if let Some(canary) = canary {
        if !meta.contains(META_KEY_CANARY)? {
            meta.insert(META_KEY_CANARY, canary.as_bytes())?;
        }
    }
    drop(meta);
    migrate(txn, stored)?;
    if stored != SCHEMA_VERSION {
        txn.open_table(META)?
            .insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_be_bytes().as_slice())?;
    }
    Ok(())
}

/// The migration hook: each step takes the schema from version `n` to `n + 1`.
fn migrate(txn: &WriteTxn<'_>, from: u32) -> Result<(), StoreError> {
    for version in from..SCHEMA_VERSION {
        match version {
            0 => {
                txn.open_table(PROVIDERS)?;
                txn.open_table(PROVIDER_NAMES)?;
                txn.open_table(MODELS)?;
                txn.open_table(ADMINS)?;
                txn.open_table(SESSIONS)?;
                txn.open_table(API_KEYS)?;
            }
            1 => {
                txn.open_table(WORKER_TOKENS)?;
                txn.open_table(AGENTS)?;
                txn.open_table(SETTINGS)?;
                let mut aliases = txn.open_table(ALIASES)?;
                let auto = super::AliasRecord::auto();
                aliases.insert(auto.name.as_str(), super::encode("alias", &auto)?.as_slice())?;
            }
            2 => {
                txn.open_table(USAGE)?;
                let mut prices = txn.open_table(PRICES)?;
                for price in super::usage::default_prices() {
                    prices.insert(price.model.as_str(), super::encode("price", &price)?.as_slice())?;
                }
            }
            3 => {
                txn.open_table(CONVERSATIONS)?;
            }
            4 => {
                txn.open_table(USAGE_SPEND)?;
                txn.open_table(USAGE_DAILY)?;
                super::usage::migrate_to_v5(txn)?;
            }
            5 => {
                txn.drop_table(LEGACY_USAGE_INDEX)?;
                txn.open_table(USAGE_POSTINGS)?;
                super::usage::index_every_row(txn)?;
            }
            _ => unreachable_version(version)?,
        }
    }
    Ok(())
}

fn unreachable_version(version: u32) -> Result<(), StoreError> {
    Err(StoreError::Corrupt(
        "schema version",
        format!("no migration from {version}"),
    ))
}
