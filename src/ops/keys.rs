//! The configured key, resolved offline the way `serve` resolves it: same sources, same
//! order, the passphrase stretched over the data's salt.

use super::DataArgs;
use crate::config::{locate_secret_key, read_secret_key, ConfigError, SecretKeySource, SECRET_KEY_ENV};
use crate::crypto::{CryptoError, KeyMaterial, MasterKey, Secret};
use crate::store::KeyState;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no secret key: {0} does not exist; set AUXOT_SECRET_KEY or AUXOT_SECRET_KEY_FILE")]
    Missing(String),
    #[error("invalid secret key from {source_name}: {error}")]
    Invalid { source_name: String, error: CryptoError },
    #[error("the key from {source_name} is a passphrase, but the data has no salt for it")]
    NoSalt { source_name: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

/// The key's source for these args, as `serve` would pick it.
pub fn source_of(args: &DataArgs) -> SecretKeySource {
    locate_secret_key(
        std::env::var_os(SECRET_KEY_ENV).is_some(),
        args.secret_key_file.clone(),
        std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        &args.data_dir,
    )
}

/// The configured key for data in `state` (its salt, for a passphrase).
pub fn configured_key(args: &DataArgs, state: &KeyState) -> Result<(MasterKey, SecretKeySource), KeyError> {
    let source = source_of(args);
    let text = read_secret_key(&source)?.ok_or_else(|| KeyError::Missing(source.describe()))?;
    let key = derive(&text, &source.describe(), state.kdf_salt.as_deref())?;
    Ok((key, source))
}

/// Turns key text into the master key; a passphrase needs the data's salt.
pub fn derive(text: &Secret, source_name: &str, salt: Option<&[u8]>) -> Result<MasterKey, KeyError> {
    let invalid = |error| KeyError::Invalid {
        source_name: source_name.to_string(),
        error,
    };
    match KeyMaterial::parse(text).map_err(invalid)? {
        KeyMaterial::Raw(bytes) => Ok(MasterKey::from_bytes(&bytes)),
        KeyMaterial::Passphrase(passphrase) => {
            let salt = salt.ok_or_else(|| KeyError::NoSalt {
                source_name: source_name.to_string(),
            })?;
            MasterKey::from_passphrase(&passphrase, salt).map_err(invalid)
        }
    }
}

/// Reads a key file's text (trimmed); an empty file is an error.
pub fn read_key_file(path: &Path) -> Result<Secret, KeyError> {
    let source = SecretKeySource::File(path.to_path_buf());
    match read_secret_key(&source)? {
        Some(text) => Ok(text),
        None => Err(KeyError::Read {
            path: path.display().to_string(),
            reason: "missing".into(),
        }),
    }
}

/// Whether key text is a passphrase (needs a salt) rather than a raw key.
pub fn is_passphrase(text: &Secret) -> bool {
    matches!(KeyMaterial::parse(text), Ok(KeyMaterial::Passphrase(_)))
}
