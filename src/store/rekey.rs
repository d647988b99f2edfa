//! Secret rotation at the storage level: every sealed value re-sealed under a new key in one
//! write transaction, together with the new key's canary (and salt, for a passphrase). redb
//! and PostgreSQL commit a transaction atomically, so a crash at any moment leaves the data
//! entirely under the old key or entirely under the new one.

use super::providers::ProviderRecord;
use super::tables::{META, META_KDF_SALT, META_KEY_CANARY, PROVIDERS};
use super::{decode, encode, ReadTxn, Store, StoreError, WriteTxn};
use crate::crypto::{CryptoError, MasterKey, Sealed};
use std::sync::Arc;

/// The record kind provider keys are sealed for (the AAD binds it; `providers` uses the same).
pub const PROVIDER_KEY_SEAL_KIND: &str = "provider";

#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error("the database has no key canary yet: start the server once before rotating")]
    NoCanary,
    #[error("the current key does not open this data (it is sealed with key id {sealed_with}, the key given has id {given})")]
    WrongOldKey { sealed_with: String, given: String },
    #[error("the new key is the same as the current one")]
    SameKey,
    #[error("the sealed key of provider '{name}' does not open with the current key ({error}); nothing was changed")]
    Unopenable { name: String, error: CryptoError },
    #[error("sealing under the new key failed: {0}")]
    Seal(CryptoError),
    #[error("routers are running on this database: stop every router first (a running router keeps the old key in memory and could no longer open the secrets), rotate, then start each router with the new key")]
    RoutersRunning,
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RekeyError {
    /// Through a store transaction, whose closures answer `StoreError`: a refusal travels
    /// as a conflict carrying its message, and [`RekeyError::from_store`] turns it back.
    fn into_store(self) -> StoreError {
        match self {
            RekeyError::Store(e) => e,
            other => StoreError::Conflict(other.to_string()),
        }
    }

    fn from_store(e: StoreError) -> RekeyError {
        match e {
            StoreError::Conflict(message) => RekeyError::Refused(message),
            other => RekeyError::Store(other),
        }
    }
}

/// What a rotation re-sealed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resealed {
    pub provider_keys: usize,
}

/// Which key every sealed value opens with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedUnder {
    /// The canary and every sealed value open with this key; `values` counts them.
    Key { values: usize },
    /// The canary is not this key's.
    OtherKey,
}

impl Store {
    /// Re-seals every sealed value from `old` to `new` in one transaction. `old` must open
    /// the stored canary first; `new_salt` replaces the passphrase salt (when `new` was
    /// stretched from a passphrase over a fresh salt).
    pub fn reseal_all(
        &self,
        old: &MasterKey,
        new: &MasterKey,
        new_salt: Option<Vec<u8>>,
    ) -> Result<Resealed, RekeyError> {
        if old.id_hex() == new.id_hex() {
            return Err(RekeyError::SameKey);
        }
        let txn = self.redb("rotate-secret")?.begin_write().map_err(StoreError::from)?;
        match reseal_in(&WriteTxn::Redb(&txn), old, new, new_salt) {
            Ok(done) => {
                txn.commit().map_err(StoreError::from)?;
                Ok(done)
            }
            Err(e) => {
                txn.abort().map_err(StoreError::from)?;
                Err(e)
            }
        }
    }

    /// `reseal_all` on PostgreSQL: one transaction, refused while any router runs on the
    /// database (a running router keeps the old key in memory and could no longer open what
    /// it reads).
    pub async fn reseal_all_shared(
        &self,
        old: Arc<MasterKey>,
        new: Arc<MasterKey>,
        new_salt: Option<Vec<u8>>,
    ) -> Result<Resealed, RekeyError> {
        if old.id_hex() == new.id_hex() {
            return Err(RekeyError::SameKey);
        }
        // The transaction's error is a `StoreError`; the rotation's own reasons ride in it
        // as their message, and everything is rolled back.
        let outcome = self
            .write(move |txn| {
                if let WriteTxn::Pg(pg) = txn {
                    if !pg.no_router_running()? {
                        return Err(StoreError::Conflict(RekeyError::RoutersRunning.to_string()));
                    }
                }
                reseal_in(txn, &old, &new, new_salt).map_err(RekeyError::into_store)
            })
            .await;
        outcome.map_err(RekeyError::from_store)
    }

    /// Checks that the canary and every sealed value open with `key`: the proof a rotation
    /// (or a restore) needs, and what `auxot doctor` reports.
    pub fn sealed_under(&self, key: &MasterKey) -> Result<SealedUnder, RekeyError> {
        self.key_state()?.canary.ok_or(RekeyError::NoCanary)?;
        let txn = self
            .redb("checking sealed values")?
            .begin_read()
            .map_err(StoreError::from)?;
        sealed_in(&ReadTxn::Redb(&txn), key)
    }

    /// `sealed_under`, from either backend.
    pub async fn sealed_under_shared(&self, key: Arc<MasterKey>) -> Result<SealedUnder, RekeyError> {
        let outcome = self
            .read(move |txn| sealed_in(txn, &key).map_err(RekeyError::into_store))
            .await;
        outcome.map_err(RekeyError::from_store)
    }
}

fn sealed_in(txn: &ReadTxn<'_>, key: &MasterKey) -> Result<SealedUnder, RekeyError> {
    let canary = txn
        .open_table(META)?
        .get(META_KEY_CANARY)?
        .map(Sealed::from_bytes)
        .ok_or(RekeyError::NoCanary)?;
    if key.check_canary(&canary).is_err() {
        return Ok(SealedUnder::OtherKey);
    }
    let table = txn.open_table(PROVIDERS)?;
    let mut values = 0;
    for row in table.iter()? {
        let (_, value) = row?;
        let record: ProviderRecord = decode("provider", &value)?;
        if let Some(sealed) = &record.sealed_key {
            key.open(PROVIDER_KEY_SEAL_KIND, &record.id, sealed)
                .map_err(|error| RekeyError::Unopenable {
                    name: record.name.clone(),
                    error,
                })?;
            values += 1;
        }
    }
    Ok(SealedUnder::Key { values })
}

fn reseal_in(
    txn: &WriteTxn<'_>,
    old: &MasterKey,
    new: &MasterKey,
    new_salt: Option<Vec<u8>>,
) -> Result<Resealed, RekeyError> {
    let mut meta = txn.open_table(META)?;
    let canary = meta
        .get(META_KEY_CANARY)?
        .map(Sealed::from_bytes)
        .ok_or(RekeyError::NoCanary)?;
    old.check_canary(&canary).map_err(|_| RekeyError::WrongOldKey {
        sealed_with: canary.key_id().unwrap_or_default(),
        given: old.id_hex(),
    })?;
    let new_canary = new.seal_canary().map_err(RekeyError::Seal)?;
    meta.insert(META_KEY_CANARY, new_canary.as_bytes())?;
    if let Some(salt) = &new_salt {
        meta.insert(META_KDF_SALT, salt.as_slice())?;
    }
    drop(meta);

    let mut providers = txn.open_table(PROVIDERS)?;
    let mut records: Vec<ProviderRecord> = Vec::new();
    for row in providers.iter()? {
        let (_, value) = row?;
        records.push(decode("provider", &value)?);
    }
    let mut done = Resealed::default();
    for mut record in records {
        let Some(sealed) = &record.sealed_key else { continue };
        let plain = old
            .open(PROVIDER_KEY_SEAL_KIND, &record.id, sealed)
            .map_err(|error| RekeyError::Unopenable {
                name: record.name.clone(),
                error,
            })?;
        record.sealed_key = Some(
            new.seal(PROVIDER_KEY_SEAL_KIND, &record.id, &plain)
                .map_err(RekeyError::Seal)?,
        );
        providers.insert(record.id.as_str(), encode("provider", &record)?.as_slice())?;
        done.provider_keys += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ModelCache, ProviderKind};

    fn provider(id: &str, key: &MasterKey, secret: &[u8]) -> ProviderRecord {
        ProviderRecord {
            id: id.into(),
            name: format!("p-{id}"),
            kind: ProviderKind::Openai,
            base_url: "http://127.0.0.1:9".into(),
            sealed_key: Some(key.seal(PROVIDER_KEY_SEAL_KIND, id, secret).unwrap()),
            key_hint: "…".into(),
            priority: 0,
            enabled: true,
            created_at: 0,
            updated_at: 0,
        }
    }

    async fn store_under(key: &MasterKey) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.initialize(None, Some(&key.seal_canary().unwrap())).unwrap();
        for id in ["a", "b"] {
            let cache = ModelCache {
                models: vec![],
                fetched_at: 0,
            };
            store
                .insert_provider(provider(id, key, b"sk-secret"), cache)
                .await
                .unwrap();
        }
        (dir, store)
    }

    #[test]
    fn the_kind_matches_what_providers_seal_for() {
        assert_eq!(PROVIDER_KEY_SEAL_KIND, crate::providers::registry::SEAL_KIND);
    }

    #[tokio::test]
    async fn rotation_moves_everything_to_the_new_key_and_the_old_opens_nothing() {
        let old = MasterKey::from_bytes(&[1; 32]);
        let new = MasterKey::from_bytes(&[2; 32]);
        let (_dir, store) = store_under(&old).await;
        let done = store.reseal_all(&old, &new, None).unwrap();
        assert_eq!(done.provider_keys, 2);
        assert_eq!(store.sealed_under(&new).unwrap(), SealedUnder::Key { values: 2 });
        assert_eq!(store.sealed_under(&old).unwrap(), SealedUnder::OtherKey);
        let record = store.get_provider("a").await.unwrap();
        assert_eq!(
            new.open(PROVIDER_KEY_SEAL_KIND, "a", record.sealed_key.as_ref().unwrap())
                .unwrap()
                .as_slice(),
            b"sk-secret"
        );
        assert!(old
            .open(PROVIDER_KEY_SEAL_KIND, "a", record.sealed_key.as_ref().unwrap())
            .is_err());
    }

    #[tokio::test]
    async fn a_wrong_old_key_changes_nothing() {
        let old = MasterKey::from_bytes(&[1; 32]);
        let (_dir, store) = store_under(&old).await;
        let wrong = MasterKey::from_bytes(&[3; 32]);
        let new = MasterKey::from_bytes(&[2; 32]);
        assert!(matches!(
            store.reseal_all(&wrong, &new, None),
            Err(RekeyError::WrongOldKey { .. })
        ));
        assert_eq!(store.sealed_under(&old).unwrap(), SealedUnder::Key { values: 2 });
        assert!(matches!(store.reseal_all(&old, &old, None), Err(RekeyError::SameKey)));
    }

    #[tokio::test]
    async fn one_unopenable_value_aborts_the_whole_rotation() {
        let old = MasterKey::from_bytes(&[1; 32]);
        let (_dir, store) = store_under(&old).await;
        let stranger = MasterKey::from_bytes(&[9; 32]);
        let cache = ModelCache {
            models: vec![],
            fetched_at: 0,
        };
        store
            .insert_provider(provider("z", &stranger, b"x"), cache)
            .await
            .unwrap();
        let new = MasterKey::from_bytes(&[2; 32]);
        assert!(matches!(
            store.reseal_all(&old, &new, None),
            Err(RekeyError::Unopenable { .. })
        ));
        let canary = store.key_state().unwrap().canary.unwrap();
        assert!(old.check_canary(&canary).is_ok(), "the canary moved without the values");
    }
}
