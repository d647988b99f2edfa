//! Who is calling: admin accounts (argon2id), UI sessions, and API keys.
//!
//! API keys are checked on every client request, so their hashes live in memory (loaded at
//! start, updated on create/revoke) and the hot path never touches the disk.

mod accounts;
mod api_keys;
mod grant;
mod hash_child;
mod passwords;
pub mod throttle;
mod worker_tokens;

pub use accounts::AdminView;
use api_keys::KnownKey;
pub use api_keys::{ApiKeyView, KeyPolicy};
pub use grant::KeyGrant;
pub use worker_tokens::{WorkerIdentity, WorkerTokenView};

use crate::crypto::{random_token, token_hash, Secret};
use crate::edits::Edits;
use crate::store::KeyLimits;
use crate::store::{AdminRecord, AdminRole, Role, SessionRecord, Store, StoreError};
pub use hash_child::{hash_in_child_processes, serve_child as serve_hash_child};
pub use passwords::Hasher;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
pub use throttle::{LoginThrottle, Source};

pub const API_KEY_PREFIX: &str = "aux_";
pub const WORKER_TOKEN_PREFIX: &str = "auxw_";
pub const MIN_PASSWORD_LEN: usize = 8;
const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send an API key as 'Authorization: Bearer <key>' or 'x-api-key'")]
    MissingCredentials,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("wrong username or password")]
    WrongPassword,
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("the server is busy checking other logins; try again in a moment")]
    Busy,
    #[error("this endpoint needs an admin key or an admin session; a client key cannot use it")]
    NotAdmin,
    #[error("setup is already done: an admin account exists")]
    AlreadySetUp,
    #[error("{0}")]
    InvalidInput(String),
    /// `key_id` names the key on its refused request's usage row; it is not shown.
    #[error("this API key expired at {at}; ask an admin for a new key or a later expiry")]
    KeyExpired { at: String, key_id: String },
    #[error("this account can look but not change anything (role viewer); ask an admin")]
    ReadOnly,
    #[error("admin account not found")]
    AccountNotFound,
    #[error("api key not found")]
    KeyNotFound,
    #[error("worker token not found")]
    WorkerTokenNotFound,
    #[error("password hashing failed")]
    Hashing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::MissingCredentials
            | AuthError::InvalidCredentials
            | AuthError::WrongPassword
            | AuthError::KeyExpired { .. } => 401,
            AuthError::NotAdmin | AuthError::ReadOnly => 403,
            AuthError::AlreadySetUp => 409,
            AuthError::TooManyAttempts { .. } => 429,
            AuthError::InvalidInput(_) => 400,
            AuthError::KeyNotFound | AuthError::WorkerTokenNotFound | AuthError::AccountNotFound => 404,
            AuthError::Busy => 503,
            AuthError::Hashing => 500,
            AuthError::Store(e) => e.status(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "missing_api_key",
            AuthError::InvalidCredentials => "invalid_api_key",
            AuthError::KeyExpired { .. } => "expired_api_key",
            AuthError::ReadOnly => "read_only",
            AuthError::WrongPassword => "invalid_login",
            AuthError::NotAdmin => "forbidden",
            AuthError::AlreadySetUp => "already_set_up",
            AuthError::TooManyAttempts { .. } => "too_many_attempts",
            AuthError::Busy => "busy",
            AuthError::InvalidInput(_) => "invalid_request",
            AuthError::KeyNotFound | AuthError::WorkerTokenNotFound | AuthError::AccountNotFound => "not_found",
            AuthError::Store(StoreError::Conflict(_)) => "conflict",
            AuthError::Store(StoreError::NotFound(_)) => "not_found",
            AuthError::Hashing | AuthError::Store(_) => "internal_error",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// Logged in through the UI.
    AdminSession { username: String, role: AdminRole },
    ApiKey {
        id: String,
        role: Role,
        limits: KeyLimits,
        grant: Arc<KeyGrant>,
    },
}

impl Principal {
    /// May read the admin API: any admin account (viewers too) or an admin key.
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::AdminSession { .. } => true,
            Principal::ApiKey { role, .. } => *role == Role::Admin,
        }
    }

    /// May change things through the admin API: not a viewer.
    pub fn can_change(&self) -> bool {
        match self {
            Principal::AdminSession { role, .. } => *role == AdminRole::Admin,
            Principal::ApiKey { role, .. } => *role == Role::Admin,
        }
    }
}

type Credentials = (
    HashMap<String, (Arc<str>, KnownKey)>,
    HashMap<String, Arc<KeyGrant>>,
    HashMap<String, WorkerIdentity>,
);

async fn load_credentials(store: &Store) -> Result<Credentials, AuthError> {
    let keys: HashMap<String, (Arc<str>, KnownKey)> = store
        .list_api_keys()
        .await?
        .into_iter()
        .map(|r| {
            let known = KnownKey::of(&r);
            (r.key_hash, (Arc::from(r.id.as_str()), known))
        })
        .collect();
    let grants = keys
        .values()
        .map(|(id, known)| (id.to_string(), known.grant.clone()))
        .collect();
    let worker_tokens = store
        .list_worker_tokens()
        .await?
        .into_iter()
        .map(|r| (r.token_hash.clone(), WorkerIdentity::from(&r)))
        .collect();
    Ok((keys, grants, worker_tokens))
}

pub struct Auth {
    store: Store,
    session_ttl: Duration,
    /// key hash → (id, role)
    keys: RwLock<HashMap<String, (Arc<str>, KnownKey)>>,
    /// key id → its allow-lists, for the request path once the key is known
    grants: RwLock<HashMap<String, Arc<KeyGrant>>>,
    /// token hash → identity
    worker_tokens: RwLock<HashMap<String, WorkerIdentity>>,
    throttle: LoginThrottle,
    hasher: Hasher,
    /// Orders this router's own edits of the maps above with reloads.
    edits: Edits,
}

impl Auth {
    pub async fn load(store: Store, session_ttl: Duration) -> Result<Auth, AuthError> {
        let (keys, grants, worker_tokens) = load_credentials(&store).await?;
        Ok(Auth {
            store,
            session_ttl,
            keys: RwLock::new(keys),
            grants: RwLock::new(grants),
            worker_tokens: RwLock::new(worker_tokens),
            throttle: LoginThrottle::default(),
            hasher: Hasher::new(),
            edits: Edits::default(),
        })
    }

    /// Re-reads API keys and worker tokens (another router on the shared database changed
    /// them): a key revoked there is refused here from now on. A read that began before one
    /// of this router's own changes is read again rather than swapped in (see `edits`).
    pub async fn reload_credentials(&self) -> Result<(), AuthError> {
        self.edits
            .reload(
                || load_credentials(&self.store),
                |(keys, grants, worker_tokens)| {
                    *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
                    *self.grants.write().unwrap_or_else(|p| p.into_inner()) = grants;
                    *self.worker_tokens.write().unwrap_or_else(|p| p.into_inner()) = worker_tokens;
                },
            )
            .await
    }

    /// Applies a change this router just wrote to the in-memory credentials, ordered with
    /// `reload_credentials` so a reload that read the tables earlier cannot undo it.
    fn edit_credentials(&self, edit: impl FnOnce()) {
        self.edits.apply(edit);
    }

    pub async fn admin_exists(&self) -> Result<bool, AuthError> {
        Ok(self.store.admin_exists().await?)
    }

    pub async fn setup(&self, username: &str, password: &Secret) -> Result<(), AuthError> {
        let username = validate_name("username", username)?;
        if password.expose().chars().count() < MIN_PASSWORD_LEN {
            return Err(AuthError::InvalidInput(format!(
                "password must be at least {MIN_PASSWORD_LEN} characters"
            )));
        }
        if self.store.admin_exists().await? {
            return Err(AuthError::AlreadySetUp);
        }
        let password_hash = self.hasher.hash(password.clone()).await?;
        let record = AdminRecord {
            username,
            password_hash,
            created_at: crate::clock::now_unix(),
            role: AdminRole::Admin,
        };
        match self.store.create_first_admin(record).await {
            Err(StoreError::Conflict(_)) => Err(AuthError::AlreadySetUp),
            other => Ok(other?),
        }
    }

    /// Checks the password and opens a session; returns the session token for the cookie.
    /// `source` is where the attempt comes from (see `throttle` for the policy).
    pub async fn login(&self, source: Source, username: &str, password: &Secret) -> Result<Secret, AuthError> {
        // Counted before the (costly) check, so a flood is refused without hashing.
        let attempt = self
            .throttle
            .admit(source, username)
            .map_err(|retry_after_secs| AuthError::TooManyAttempts { retry_after_secs })?;
        let result = self.check_password(username, password).await;
        match &result {
            Err(AuthError::WrongPassword) => attempt.failed(),
            Ok(_) => attempt.succeeded(),
            // Busy hasher or a store error: no verdict, no miss (the attempt refunds itself).
            Err(_) => drop(attempt),
        }
        result
    }

    async fn check_password(&self, username: &str, password: &Secret) -> Result<Secret, AuthError> {
        let admin = self.store.get_admin(username.trim()).await?;
        // Verify against a dummy hash for unknown users too, so timing does not tell which
        // usernames exist.
        let stored_hash = admin.as_ref().map(|a| a.password_hash.clone());
        let ok = self.hasher.verify(password.clone(), stored_hash).await?;
        let admin = match (ok, admin) {
            (true, Some(admin)) => admin,
            _ => return Err(AuthError::WrongPassword),
        };
        let token = random_token();
        let now = crate::clock::now_unix();
        let record = SessionRecord {
            username: admin.username,
            created_at: now,
            expires_at: now + self.session_ttl.as_secs() as i64,
        };
        self.store.insert_session(token_hash(token.expose()), record).await?;
        Ok(token)
    }

    pub async fn logout(&self, session_token: &str) -> Result<(), AuthError> {
        Ok(self.store.delete_session(token_hash(session_token)).await?)
    }

    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }

    /// An API key from `Authorization: Bearer` or `x-api-key`. No I/O: safe on the hot path.
    pub fn authenticate_key(&self, key: &str) -> Result<Principal, AuthError> {
        let hash = token_hash(key.trim());
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match keys.get(&hash) {
            Some((id, known)) if known.expires_at.is_some_and(|at| at <= crate::clock::now_unix()) => {
                Err(AuthError::KeyExpired {
                    at: crate::clock::rfc3339(known.expires_at.unwrap_or_default()),
                    key_id: id.to_string(),
                })
            }
            Some((id, known)) => Ok(Principal::ApiKey {
                id: String::from(&**id),
                role: known.role,
                limits: known.limits,
                grant: known.grant.clone(),
            }),
            None => Err(AuthError::InvalidCredentials),
        }
    }

    pub async fn authenticate_session(&self, session_token: &str) -> Result<Principal, AuthError> {
        let session = match self.store.get_session(token_hash(session_token)).await? {
            Some(s) if s.expires_at > crate::clock::now_unix() => s,
            _ => return Err(AuthError::InvalidCredentials),
        };
        // The role is read each time, so a removed or demoted account loses its rights at once.
        match self.store.get_admin(&session.username).await? {
            Some(admin) => Ok(Principal::AdminSession {
                username: admin.username,
                role: admin.role,
            }),
            None => Err(AuthError::InvalidCredentials),
        }
    }

    /// Admin endpoints: a session cookie or an admin API key; a client key is refused (403).
    pub async fn authorize_admin(
        &self,
        api_key: Option<&str>,
        session_token: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let principal = match (api_key, session_token) {
            (Some(key), _) => self.authenticate_key(key)?,
            (None, Some(token)) => self.authenticate_session(token).await?,
            (None, None) => return Err(AuthError::MissingCredentials),
        };
        if principal.is_admin() {
            Ok(principal)
        } else {
            Err(AuthError::NotAdmin)
        }
    }

    /// Client API: a client or admin key.
    pub fn authorize_client(&self, api_key: Option<&str>) -> Result<Principal, AuthError> {
        match api_key {
            Some(key) => self.authenticate_key(key),
            None => Err(AuthError::MissingCredentials),
        }
    }

    pub async fn prune_sessions(&self) -> Result<usize, AuthError> {
        Ok(self.store.prune_sessions(crate::clock::now_unix()).await?)
    }
}

fn validate_allowed(list: Vec<String>) -> Result<Vec<String>, AuthError> {
    crate::workers::policy::validate_allowed(list).map_err(|e| AuthError::InvalidInput(e.to_string()))
}

/// Names and usernames: 1–64 printable characters, trimmed.
pub fn validate_name(field: &str, value: &str) -> Result<String, AuthError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > MAX_NAME_LEN || value.chars().any(char::is_control) {
        return Err(AuthError::InvalidInput(format!(
            "{field} must be 1 to {MAX_NAME_LEN} printable characters"
        )));
    }
    Ok(value.to_string())
}
