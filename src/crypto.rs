//! Secrets at rest: the `Secret` type, the master key and the sealed envelope.
//!
//! Envelope (version 1): `0x01 ‖ key id (8) ‖ nonce (12) ‖ ciphertext+tag`.
//! AAD: `"auxot" ‖ len(kind) ‖ kind ‖ len(id) ‖ id ‖ key id`, so a ciphertext only opens
//! for the record it was sealed for, under the key it names.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

const ENVELOPE_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// What the key-check canary seals; opening it proves the configured key is the data's key.
const CANARY_PLAINTEXT: &[u8] = b"auxot key check v1";
const CANARY_KIND: &str = "canary";
const CANARY_ID: &str = "key-check";
/// Passphrases shorter than this are refused outright: too weak to stretch into a key.
pub const MIN_PASSPHRASE_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("sealed data is malformed or of an unknown version")]
    Malformed,
    #[error("sealed with key id {sealed_with}, but the configured key has id {configured}")]
    WrongKey { sealed_with: String, configured: String },
    #[error("sealed data failed authentication (tampered, or moved to another record)")]
    Unauthentic,
    #[error("the secret key is too short: give 32 bytes as 64 hex chars or base64 (see `auxot keygen`), or a passphrase of at least {MIN_PASSPHRASE_LEN} characters")]
    KeyTooShort,
    #[error("could not stretch the passphrase into a key")]
    Kdf,
    #[error("encryption failed")]
    Encrypt,
}

/// A secret string (provider key, password, token). Its value never shows in Debug or
/// Display, is never serialised, and is wiped from memory when dropped.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The plaintext, for the one place that must send it (an upstream header) or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// A hint safe to show: the last four characters, and only when the secret is long
    /// enough that four characters give nothing useful away.
    pub fn hint(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() < 16 {
            return "…".to_string();
        }
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("…{tail}")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// A sealed value as stored: the envelope bytes, serialised as base64 in records.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(Vec<u8>);

impl Sealed {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Sealed(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The id of the key this was sealed under, as hex.
    pub fn key_id(&self) -> Option<String> {
        self.0.get(1..1 + KEY_ID_LEN).map(hex::encode)
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Sealed)
            .map_err(serde::de::Error::custom)
    }
}

/// How a configured key string is to be turned into the 32-byte master key.
pub enum KeyMaterial {
    Raw(Zeroizing<[u8; 32]>),
    /// Needs the data dir's salt before it becomes a key.
    Passphrase(Secret),
}

impl KeyMaterial {
    /// 64 hex chars or base64 of 32 bytes is a raw key; any other string of 16+ chars is a
    /// passphrase; anything shorter is refused.
    pub fn parse(text: &Secret) -> Result<KeyMaterial, CryptoError> {
        let trimmed = text.expose().trim();
        if trimmed.len() == 64 {
            if let Ok(bytes) = hex::decode(trimmed) {
                return Ok(KeyMaterial::Raw(to_key_array(&bytes)));
            }
        }
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE,
        ] {
            if let Ok(bytes) = engine.decode(trimmed) {
                let bytes = Zeroizing::new(bytes);
                if bytes.len() == 32 {
                    return Ok(KeyMaterial::Raw(to_key_array(&bytes)));
                }
            }
        }
        if trimmed.chars().count() >= MIN_PASSPHRASE_LEN {
            return Ok(KeyMaterial::Passphrase(Secret::new(trimmed.to_string())));
        }
        Err(CryptoError::KeyTooShort)
    }
}

fn to_key_array(bytes: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes[..32]);
    key
}

/// The master key every secret is sealed under.
pub struct MasterKey {
    cipher: Aes256Gcm,
    id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id={})", self.id_hex())
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"auxot key id v1");
        hasher.update(bytes);
        let digest = hasher.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        MasterKey {
            cipher: Aes256Gcm::new(bytes.into()),
            id,
        }
    }

    /// Stretch a passphrase with argon2id over the data dir's salt.
    pub fn from_passphrase(passphrase: &Secret, salt: &[u8]) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        argon2::Argon2::default()
            .hash_password_into(passphrase.expose().as_bytes(), salt, key.as_mut())
            .map_err(|_| CryptoError::Kdf)?;
        Ok(Self::from_bytes(&key))
    }

    /// A fresh random key, printed by `auxot keygen` as 64 hex chars.
    pub fn generate_hex() -> Secret {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Secret::new(hex::encode(bytes.as_ref()))
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    pub fn seal(&self, kind: &str, id: &str, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = self.aad(kind, id);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(Sealed(out))
    }

    pub fn open(&self, kind: &str, id: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let bytes = &sealed.0;
        if bytes.len() < HEADER_LEN + 16 || bytes[0] != ENVELOPE_VERSION {
            return Err(CryptoError::Malformed);
        }
        let key_id = &bytes[1..1 + KEY_ID_LEN];
        if key_id != self.id {
            return Err(CryptoError::WrongKey {
                sealed_with: hex::encode(key_id),
                configured: self.id_hex(),
            });
        }
        let nonce = &bytes[1 + KEY_ID_LEN..HEADER_LEN];
        let aad = self.aad(kind, id);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &bytes[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unauthentic)
    }

    pub fn seal_secret(&self, kind: &str, id: &str, secret: &Secret) -> Result<Sealed, CryptoError> {
        self.seal(kind, id, secret.expose().as_bytes())
    }

    pub fn open_secret(&self, kind: &str, id: &str, sealed: &Sealed) -> Result<Secret, CryptoError> {
        let bytes = self.open(kind, id, sealed)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| CryptoError::Malformed)?;
        Ok(Secret::new(text.to_string()))
    }

    pub fn seal_canary(&self) -> Result<Sealed, CryptoError> {
        self.seal(CANARY_KIND, CANARY_ID, CANARY_PLAINTEXT)
    }

    /// Opens the canary stored with the data; any failure means this is not the data's key.
    pub fn check_canary(&self, canary: &Sealed) -> Result<(), CryptoError> {
        let plain = self.open(CANARY_KIND, CANARY_ID, canary)?;
        if plain.as_slice() == CANARY_PLAINTEXT {
            Ok(())
        } else {
            Err(CryptoError::Unauthentic)
        }
    }

    fn aad(&self, kind: &str, id: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(5 + 4 + kind.len() + id.len() + KEY_ID_LEN);
        aad.extend_from_slice(b"auxot");
        for part in [kind.as_bytes(), id.as_bytes()] {
            aad.extend_from_slice(&(part.len() as u16).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(&self.id);
        aad
    }
}

/// A random 32-byte token, URL-safe base64 without padding (43 chars).
pub fn random_token() -> Secret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// SHA-256 of a token, hex: how API keys, worker tokens and sessions are stored.
pub fn token_hash(token: &str) -> String {
    // Into a fixed buffer: `hex::encode` builds its string a char at a time, and every
    // API request hashes its key.
    let mut text = [0u8; 64];
    if hex::encode_to_slice(Sha256::digest(token.as_bytes()), &mut text).is_err() {
        return hex::encode(Sha256::digest(token.as_bytes()));
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn token_hash_is_sha256_in_lowercase_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(token_hash("abc"), hex::encode(Sha256::digest(b"abc")));
    }

    #[test]
    fn round_trip_opens_what_was_sealed() {
        let k = key(7);
        let sealed = k.seal("provider", "p1", b"sk-test-123").unwrap();
        assert_eq!(k.open("provider", "p1", &sealed).unwrap().as_slice(), b"sk-test-123");
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let k = key(7);
        let a = k.seal("provider", "p1", b"same").unwrap();
        let b = k.seal("provider", "p1", b"same").unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let k = key(7);
        let sealed = k.seal("provider", "p1", b"secret").unwrap();
        for position in [HEADER_LEN - 1, HEADER_LEN, sealed.as_bytes().len() - 1] {
            let mut bytes = sealed.as_bytes().to_vec();
            bytes[position] ^= 0x01;
            let result = k.open("provider", "p1", &Sealed(bytes));
            assert!(matches!(result, Err(CryptoError::Unauthentic)), "flip at {position}");
        }
    }

    #[test]
    fn ciphertext_moved_to_another_record_is_rejected() {
        let k = key(7);
        let sealed = k.seal("provider", "p1", b"secret").unwrap();
        assert!(matches!(
            k.open("provider", "p2", &sealed),
            Err(CryptoError::Unauthentic)
        ));
        assert!(matches!(k.open("worker", "p1", &sealed), Err(CryptoError::Unauthentic)));
    }

    #[test]
    fn wrong_key_is_named_as_such() {
        let sealed = key(7).seal("provider", "p1", b"secret").unwrap();
        assert!(matches!(
            key(8).open("provider", "p1", &sealed),
            Err(CryptoError::WrongKey { .. })
        ));
    }

    #[test]
    fn truncated_or_unknown_version_is_malformed() {
        let k = key(7);
        let sealed = k.seal("provider", "p1", b"secret").unwrap();
        let mut bytes = sealed.as_bytes().to_vec();
        bytes[0] = 9;
        assert!(matches!(
            k.open("provider", "p1", &Sealed(bytes)),
            Err(CryptoError::Malformed)
        ));
        assert!(matches!(
            k.open("provider", "p1", &Sealed(vec![1, 2, 3])),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn canary_opens_only_under_its_key() {
        let canary = key(1).seal_canary().unwrap();
        assert!(key(1).check_canary(&canary).is_ok());
        assert!(key(2).check_canary(&canary).is_err());
    }

    #[test]
    fn key_material_formats() {
        let hex_key = Secret::new("ab".repeat(32));
        assert!(matches!(KeyMaterial::parse(&hex_key), Ok(KeyMaterial::Raw(_))));
        let b64 = Secret::new(base64::engine::general_purpose::STANDARD.encode([3u8; 32]));
        assert!(matches!(KeyMaterial::parse(&b64), Ok(KeyMaterial::Raw(_))));
        let pass = Secret::new("correct horse battery staple".into());
        assert!(matches!(KeyMaterial::parse(&pass), Ok(KeyMaterial::Passphrase(_))));
        assert!(matches!(
            KeyMaterial::parse(&Secret::new("short".into())),
            Err(CryptoError::KeyTooShort)
        ));
    }

    #[test]
    fn passphrase_key_depends_on_salt() {
        let pass = Secret::new("correct horse battery staple".into());
        let a = MasterKey::from_passphrase(&pass, b"salt-one-16bytes").unwrap();
        let b = MasterKey::from_passphrase(&pass, b"salt-two-16bytes").unwrap();
        let again = MasterKey::from_passphrase(&pass, b"salt-one-16bytes").unwrap();
        assert_ne!(a.id_hex(), b.id_hex());
        assert_eq!(a.id_hex(), again.id_hex());
    }

    #[test]
    fn secret_never_shows_its_value() {
        let s = Secret::new("sk-live-verysecretvalue1234".into());
        assert!(!format!("{s:?}").contains("verysecret"));
        assert!(!format!("{s}").contains("verysecret"));
        assert_eq!(s.hint(), "…1234");
        assert_eq!(Secret::new("short".into()).hint(), "…");
    }
}
