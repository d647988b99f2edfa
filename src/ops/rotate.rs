//! `auxot rotate-secret`: every sealed value moves from the configured key to a new one in
//! one transaction. Offline only: a running server holds the old key in memory. On
//! PostgreSQL (`--database`) the rotation is refused while any router runs on the database
//! (each holds a shared lock while it runs); afterwards every router must be started with
//! the new key.

use super::keys::{configured_key, derive, is_passphrase, read_key_file};
use super::{write_private_file, DataArgs, OpsError};
use crate::crypto::MasterKey;
use crate::store::rekey::{RekeyError, SealedUnder};
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The new key. A file that does not exist yet is created with a fresh random key
    /// (mode 0600) before anything else happens; an existing one is used as it is.
    #[arg(long)]
    pub new_key_file: PathBuf,
}

/// Runs the rotation and returns the report to print.
pub async fn run(args: &RotateArgs) -> Result<String, OpsError> {
    let store = args.data.open_store().await?;
    let state = store.load_key_state().await?;
    if state.canary.is_none() {
        return Err(RekeyError::NoCanary.into());
    }
    let (old, source) = configured_key(&args.data, &state)?;

    // The new key is on disk before the data depends on it: a crash after the commit can
    // never leave data sealed under a key that exists nowhere.
    if !args.new_key_file.exists() {
        let fresh = MasterKey::generate_hex();
        write_private_file(&args.new_key_file, format!("{}\n", fresh.expose()).as_bytes())?;
    }
    let new_text = read_key_file(&args.new_key_file)?;
    let new_name = format!("key file {}", args.new_key_file.display());
    let new_salt = is_passphrase(&new_text).then(|| uuid::Uuid::new_v4().as_bytes().to_vec());
    let new = match &new_salt {
        Some(salt) => derive(&new_text, &new_name, Some(salt))?,
        // A raw key ignores the salt.
        None => derive(&new_text, &new_name, None)?,
    };

    let old = Arc::new(old);
    let new = Arc::new(new);
    if sealed_under(&store, &old).await? == SealedUnder::OtherKey {
        // A rotation that was interrupted after its commit, run again: say so, change nothing.
        let existing = derive(&new_text, &new_name, state.kdf_salt.as_deref())
            .ok()
            .map(Arc::new);
        if let Some(existing) = existing {
            if let SealedUnder::Key { values } = sealed_under(&store, &existing).await? {
                return Ok(format!(
                    "the data is already sealed under the new key (key id {}, {values} sealed values); nothing to do.\nNext: make {} the configured key (replace {}), then start auxot.",
                    existing.id_hex(),
                    args.new_key_file.display(),
                    source.describe()
                ));
            }
        }
        let canary = state.canary.as_ref().and_then(|c| c.key_id()).unwrap_or_default();
        return Err(RekeyError::WrongOldKey {
            sealed_with: canary,
            given: old.id_hex(),
        }
        .into());
    }

    let done = if store.is_postgres() {
        store.reseal_all_shared(old.clone(), new.clone(), new_salt).await?
    } else {
        store.reseal_all(&old, &new, new_salt)?
    };
    // Prove the result before reporting success: the new key opens all, the old key nothing.
    let under_new = sealed_under(&store, &new).await?;
    let under_old = sealed_under(&store, &old).await?;
    if under_new
        != (SealedUnder::Key {
            values: done.provider_keys,
        })
        || under_old != SealedUnder::OtherKey
    {
        return Err(OpsError::Refused(format!(
            "the rotation committed but does not check out (new: {under_new:?}, old: {under_old:?}); restore the last backup"
        )));
    }
    let next = if store.is_postgres() {
        "then start every router with it (each needs the new key: one still on the old key refuses to start)"
    } else {
        "then start auxot"
    };
    Ok(format!(
        "re-sealed {} provider key(s) and the key canary under key id {} (was {}).\nThe old key ({}) opens nothing any more.\nNext: make {} the configured key (replace {}), {next}.",
        done.provider_keys,
        new.id_hex(),
        old.id_hex(),
        source.describe(),
        args.new_key_file.display(),
        source.describe(),
    ))
}

/// Which key the data is sealed under, read the way its backend allows.
async fn sealed_under(store: &Store, key: &Arc<MasterKey>) -> Result<SealedUnder, OpsError> {
    if store.is_postgres() {
        Ok(store.sealed_under_shared(key.clone()).await?)
    } else {
        Ok(store.sealed_under(key)?)
    }
}
