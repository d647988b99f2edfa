//! Who is calling: admin accounts (argon2id), UI sessions, and API keys.
//!
//! API keys are checked on every client request, so their hashes live in memory (loaded at
//! start, updated on create/revoke) and the hot path never touches the disk.

mod accounts;
mod grant;
mod passwords;
pub mod throttle;

pub use accounts::AdminView;
pub use grant::KeyGrant;

use crate::crypto::{random_token, token_hash, Secret};
use crate::store::KeyLimits;
use crate::store::{AdminRecord, AdminRole, ApiKeyRecord, Role, SessionRecord, Store, StoreError, WorkerTokenRecord};
use crate::workers::protocol::WorkerKind;
pub use passwords::Hasher;
use serde::Serialize;
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

/// An API key as listed: never the key itself.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub prefix: String,
    pub created_at: String,
    pub rpm_limit: Option<u32>,
    pub tpm_limit: Option<u32>,
    pub monthly_spend_cap_usd: Option<f64>,
    /// Empty: every model.
    pub allowed_models: Vec<String>,
    /// Empty: every tier.
    pub allowed_tiers: Vec<String>,
    pub expires_at: Option<String>,
    pub expired: bool,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(r: &ApiKeyRecord) -> Self {
        ApiKeyView {
            id: r.id.clone(),
            name: r.name.clone(),
            role: r.role,
            prefix: r.prefix.clone(),
            created_at: crate::clock::rfc3339(r.created_at),
            rpm_limit: r.rpm_limit,
            tpm_limit: r.tpm_limit,
            monthly_spend_cap_usd: r.monthly_spend_cap_usd,
            allowed_models: r.allowed_models.clone(),
            allowed_tiers: r.allowed_tiers.clone(),
            expires_at: r.expires_at.map(crate::clock::rfc3339),
            expired: r.expires_at.is_some_and(|at| at <= crate::clock::now_unix()),
        }
    }
}

/// An API key's governance as an admin sets it; on update, an absent field (`None`) stays
/// as it is and `Some(None)` removes the limit.
#[derive(Debug, Clone, Default)]
pub struct KeyPolicy {
    pub rpm_limit: Option<Option<u32>>,
    pub tpm_limit: Option<Option<u32>>,
    pub monthly_spend_cap_usd: Option<Option<f64>>,
    pub allowed_models: Option<Vec<String>>,
    pub allowed_tiers: Option<Vec<String>>,
    /// Unix seconds.
    pub expires_at: Option<Option<i64>>,
}

impl KeyPolicy {
    /// Checks every field and writes the present ones into `record`.
    fn apply(self, record: &mut ApiKeyRecord) -> Result<(), AuthError> {
        let invalid = |m: &str| AuthError::InvalidInput(m.to_string());
        if let Some(rpm) = self.rpm_limit {
            if rpm == Some(0) {
                return Err(invalid("rpm_limit must be at least 1 (or null for none)"));
            }
            record.rpm_limit = rpm;
        }
        if let Some(tpm) = self.tpm_limit {
            if tpm == Some(0) {
                return Err(invalid("tpm_limit must be at least 1 (or null for none)"));
            }
            record.tpm_limit = tpm;
        }
        if let Some(cap) = self.monthly_spend_cap_usd {
            if cap.is_some_and(|c| !c.is_finite() || c < 0.0) {
                return Err(invalid(
                    "monthly_spend_cap_usd must be a non-negative number (or null for none)",
                ));
            }
            record.monthly_spend_cap_usd = cap;
        }
        if let Some(models) = self.allowed_models {
            record.allowed_models =
                grant::clean_models(models).map_err(|e| AuthError::InvalidInput(format!("allowed_models: {e}")))?;
        }
        if let Some(tiers) = self.allowed_tiers {
            record.allowed_tiers =
                grant::clean_tiers(tiers).map_err(|e| AuthError::InvalidInput(format!("allowed_tiers: {e}")))?;
        }
        if let Some(expires_at) = self.expires_at {
            record.expires_at = expires_at;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct KnownKey {
    role: Role,
    limits: KeyLimits,
    grant: Arc<KeyGrant>,
    expires_at: Option<i64>,
}

impl KnownKey {
    fn of(record: &ApiKeyRecord) -> KnownKey {
        KnownKey {
            role: record.role,
            limits: KeyLimits {
                rpm: record.rpm_limit,
                tpm: record.tpm_limit,
                monthly_spend_cap_usd: record.monthly_spend_cap_usd,
            },
            grant: Arc::new(KeyGrant {
                models: record.allowed_models.clone(),
                tiers: record.allowed_tiers.clone(),
            }),
            expires_at: record.expires_at,
        }
    }
}

/// A worker token as listed: never the token itself.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerTokenView {
    pub id: String,
    pub name: String,
    pub kind: WorkerKind,
    pub prefix: String,
    pub created_at: String,
    pub monthly_price_usd: Option<f64>,
    /// `null`: any model no cloud provider serves; a list: exactly these (`prefix*`, `*`).
    pub allowed_models: Option<Vec<String>>,
}

impl From<&WorkerTokenRecord> for WorkerTokenView {
    fn from(r: &WorkerTokenRecord) -> Self {
        WorkerTokenView {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind,
            prefix: r.prefix.clone(),
            created_at: crate::clock::rfc3339(r.created_at),
            monthly_price_usd: r.monthly_price_usd,
            allowed_models: r.allowed_models.clone(),
        }
    }
}

/// Who a connecting worker is, by its token.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub token_id: String,
    pub token_name: String,
    pub kind: WorkerKind,
    /// The token's model allow-list (see `workers::policy`).
    pub allowed_models: Option<Arc<[String]>>,
}

impl From<&WorkerTokenRecord> for WorkerIdentity {
    fn from(r: &WorkerTokenRecord) -> Self {
        WorkerIdentity {
            token_id: r.id.clone(),
            token_name: r.name.clone(),
            kind: r.kind,
            allowed_models: r.allowed_models.as_deref().map(Arc::from),
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
        })
    }

    /// Re-reads API keys and worker tokens (another router on the shared database changed
    /// them): a key revoked there is refused here from now on.
    pub async fn reload_credentials(&self) -> Result<(), AuthError> {
        let (keys, grants, worker_tokens) = load_credentials(&self.store).await?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        *self.grants.write().unwrap_or_else(|p| p.into_inner()) = grants;
        *self.worker_tokens.write().unwrap_or_else(|p| p.into_inner()) = worker_tokens;
        Ok(())
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
                id: id.to_string(),
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

    /// Creates a key; the plaintext is returned here once and never again.
    pub async fn create_api_key(&self, name: &str, role: Role) -> Result<(ApiKeyView, Secret), AuthError> {
        self.create_governed_api_key(name, role, KeyPolicy::default()).await
    }

    /// Creates a key with its limits and allow-lists; a name already used (any case) is
    /// refused with 409.
    pub async fn create_governed_api_key(
        &self,
        name: &str,
        role: Role,
        policy: KeyPolicy,
    ) -> Result<(ApiKeyView, Secret), AuthError> {
        let name = validate_name("name", name)?;
        let key = Secret::new(format!("{API_KEY_PREFIX}{}", random_token().expose()));
        let mut record = ApiKeyRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            role,
            key_hash: token_hash(key.expose()),
            prefix: key.expose().chars().take(API_KEY_PREFIX.len() + 4).collect(),
            created_at: crate::clock::now_unix(),
            rpm_limit: None,
            monthly_spend_cap_usd: None,
            tpm_limit: None,
            allowed_models: Vec::new(),
            allowed_tiers: Vec::new(),
            expires_at: None,
        };
        policy.apply(&mut record)?;
        self.store.insert_api_key(record.clone()).await?;
        self.remember_key(&record);
        Ok((ApiKeyView::from(&record), key))
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyView>, AuthError> {
        let mut keys = self.store.list_api_keys().await?;
        // Creation time is whole seconds: the name orders keys made in the same second.
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.name.cmp(&b.name)));
        Ok(keys.iter().map(ApiKeyView::from).collect())
    }

    /// Sets a key's limits (`None` removes one); effective for its next request.
    pub async fn set_api_key_limits(
        &self,
        id: &str,
        rpm: Option<Option<u32>>,
        cap: Option<Option<f64>>,
    ) -> Result<ApiKeyView, AuthError> {
        let policy = KeyPolicy {
            rpm_limit: rpm,
            monthly_spend_cap_usd: cap,
            ..KeyPolicy::default()
        };
        self.set_api_key_policy(id, policy).await
    }

    /// Changes a key's limits and allow-lists; effective for its next request.
    pub async fn set_api_key_policy(&self, id: &str, policy: KeyPolicy) -> Result<ApiKeyView, AuthError> {
        let mut record = self
            .store
            .list_api_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or(AuthError::KeyNotFound)?;
        policy.apply(&mut record)?;
        match self.store.update_api_key(record.clone()).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::KeyNotFound),
            other => other?,
        }
        self.remember_key(&record);
        Ok(ApiKeyView::from(&record))
    }

    /// Revokes at once: the in-memory set forgets the key in the same call.
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), AuthError> {
        let record = match self.store.delete_api_key(id).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::KeyNotFound),
            other => other?,
        };
        self.keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&record.key_hash);
        self.grants
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&record.id);
        Ok(())
    }

    fn remember_key(&self, record: &ApiKeyRecord) {
        let known = KnownKey::of(record);
        self.grants
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(record.id.clone(), known.grant.clone());
        self.keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(record.key_hash.clone(), (Arc::from(record.id.as_str()), known));
    }

    /// The allow-lists of the key with this id; `None` once the key is revoked.
    pub fn grant_of(&self, key_id: &str) -> Option<Arc<KeyGrant>> {
        self.grants
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key_id)
            .cloned()
    }

    /// Creates a worker token with no allow-list; the plaintext is returned here once.
    pub async fn create_worker_token(
        &self,
        name: &str,
        kind: WorkerKind,
    ) -> Result<(WorkerTokenView, Secret), AuthError> {
        self.create_worker_token_allowing(name, kind, None).await
    }

    /// Creates a worker token; the plaintext is returned here once and never again.
    pub async fn create_worker_token_allowing(
        &self,
        name: &str,
        kind: WorkerKind,
        allowed_models: Option<Vec<String>>,
    ) -> Result<(WorkerTokenView, Secret), AuthError> {
        let name = validate_name("name", name)?;
        let allowed_models = allowed_models.map(validate_allowed).transpose()?;
        let token = Secret::new(format!("{WORKER_TOKEN_PREFIX}{}", random_token().expose()));
        let record = WorkerTokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            kind,
            token_hash: token_hash(token.expose()),
            prefix: token.expose().chars().take(WORKER_TOKEN_PREFIX.len() + 4).collect(),
            created_at: crate::clock::now_unix(),
            monthly_price_usd: None,
            allowed_models,
        };
        self.store.insert_worker_token(record.clone()).await?;
        self.worker_tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(record.token_hash.clone(), WorkerIdentity::from(&record));
        Ok((WorkerTokenView::from(&record), token))
    }

    pub async fn list_worker_tokens(&self) -> Result<Vec<WorkerTokenView>, AuthError> {
        let mut tokens = self.store.list_worker_tokens().await?;
        tokens.sort_by_key(|t| t.created_at);
        Ok(tokens.iter().map(WorkerTokenView::from).collect())
    }

    /// Sets (or with `None` clears) the monthly subscription price of a worker token.
    pub async fn set_worker_price(&self, id: &str, price: Option<f64>) -> Result<WorkerTokenView, AuthError> {
        self.update_worker_token(id, Some(price), None).await
    }

    /// Changes a worker token's price and/or allow-list (`None`: leave as is; `Some(None)`:
    /// clear). A changed allow-list applies to the token's next connection: the caller
    /// disconnects its live worker so it reconnects under the new list.
    pub async fn update_worker_token(
        &self,
        id: &str,
        price: Option<Option<f64>>,
        allowed_models: Option<Option<Vec<String>>>,
    ) -> Result<WorkerTokenView, AuthError> {
        if price.flatten().is_some_and(|p| !p.is_finite() || p < 0.0) {
            return Err(AuthError::InvalidInput(
                "monthly_price_usd must be a non-negative number (or null)".into(),
            ));
        }
        let allowed_models = allowed_models
            .map(|list| list.map(validate_allowed).transpose())
            .transpose()?;
        let mut record = self
            .store
            .list_worker_tokens()
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or(AuthError::WorkerTokenNotFound)?;
        if let Some(price) = price {
            record.monthly_price_usd = price;
        }
        if let Some(allowed) = allowed_models {
            record.allowed_models = allowed;
        }
        match self.store.update_worker_token(record.clone()).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::WorkerTokenNotFound),
            other => other?,
        }
        self.worker_tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(record.token_hash.clone(), WorkerIdentity::from(&record));
        Ok(WorkerTokenView::from(&record))
    }

    /// Revokes the token; the caller disconnects its live worker.
    pub async fn revoke_worker_token(&self, id: &str) -> Result<(), AuthError> {
        let record = match self.store.delete_worker_token(id).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::WorkerTokenNotFound),
            other => other?,
        };
        self.worker_tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&record.token_hash);
        Ok(())
    }

    /// A connecting worker's token. No I/O.
    pub fn authenticate_worker(&self, token: Option<&str>) -> Result<WorkerIdentity, AuthError> {
        let token = token.ok_or(AuthError::MissingCredentials)?;
        let tokens = self.worker_tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(&token_hash(token.trim()))
            .cloned()
            .ok_or(AuthError::InvalidCredentials)
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
