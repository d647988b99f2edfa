//! argon2id password hashing, off the async runtime (each hash takes tens of milliseconds).

use super::AuthError;
use crate::crypto::Secret;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Verified against when the username does not exist, so both paths cost the same.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3p4VQ6kKxRzh7T7cq4mGv2n9m0zX2A0GQ3cU9Qy9l0A";

pub async fn hash(password: Secret) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| AuthError::Hashing)
    })
    .await
    .map_err(|_| AuthError::Hashing)?
}

pub async fn verify(password: Secret, stored: Option<String>) -> Result<bool, AuthError> {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| DUMMY_HASH.to_string());
        let parsed = PasswordHash::new(&phc).map_err(|_| AuthError::Hashing)?;
        let ok = Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok();
        Ok(ok && known)
    })
    .await
    .map_err(|_| AuthError::Hashing)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash(Secret::new("hunter2hunter2".into())).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(Secret::new("hunter2hunter2".into()), Some(h.clone()))
            .await
            .unwrap());
        assert!(!verify(Secret::new("wrong-password".into()), Some(h)).await.unwrap());
        assert!(!verify(Secret::new("anything".into()), None).await.unwrap());
    }
}
