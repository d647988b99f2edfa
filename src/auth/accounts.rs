//! Several admin accounts: create, list, remove, change roles and passwords. A `viewer`
//! reads everything an admin reads and changes nothing.

use super::{validate_name, Auth, AuthError, MIN_PASSWORD_LEN};
use crate::crypto::{random_token, token_hash, Secret};
use crate::store::{AdminRecord, AdminRole, SessionRecord, StoreError};
use serde::Serialize;

/// An account as listed: never its hash.
#[derive(Debug, Clone, Serialize)]
pub struct AdminView {
    pub username: String,
    pub role: AdminRole,
    pub created_at: String,
}

impl From<&AdminRecord> for AdminView {
    fn from(r: &AdminRecord) -> Self {
        AdminView {
            username: r.username.clone(),
            role: r.role,
            created_at: crate::clock::rfc3339(r.created_at),
        }
    }
}

fn check_password_rules(password: &Secret) -> Result<(), AuthError> {
    let length = password.expose().chars().count();
    if length < MIN_PASSWORD_LEN {
        return Err(AuthError::InvalidInput(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if length > 1024 {
        return Err(AuthError::InvalidInput(
            "password must be at most 1024 characters".into(),
        ));
    }
    Ok(())
}

impl Auth {
    pub async fn list_admins(&self) -> Result<Vec<AdminView>, AuthError> {
        let mut admins = self.store.list_admins().await?;
        admins.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.username.cmp(&b.username))
        });
        Ok(admins.iter().map(AdminView::from).collect())
    }

    /// Adds an account; a username already taken (any case) is refused with 409.
    pub async fn create_admin(
        &self,
        username: &str,
        password: &Secret,
        role: AdminRole,
    ) -> Result<AdminView, AuthError> {
        let username = validate_name("username", username)?;
        check_password_rules(password)?;
        let record = AdminRecord {
            username,
            password_hash: self.hasher.hash(password.clone()).await?,
            created_at: crate::clock::now_unix(),
            role,
        };
        self.store.insert_admin(record.clone()).await?;
        Ok(AdminView::from(&record))
    }

    /// Removes an account and ends its sessions. Nobody removes their own account here
    /// (another admin does), and the last admin stays.
    pub async fn remove_admin(&self, acting: &str, username: &str) -> Result<(), AuthError> {
        if acting.eq_ignore_ascii_case(username.trim()) {
            return Err(AuthError::InvalidInput(
                "you cannot remove your own account; another admin can".into(),
            ));
        }
        match self.store.delete_admin(username).await {
            Err(StoreError::NotFound(_)) => Err(AuthError::AccountNotFound),
            other => Ok(other.map(|_| ())?),
        }
    }

    /// Changes another account's role; the last admin cannot become a viewer. A lowered
    /// role ends the account's sessions.
    pub async fn set_admin_role(&self, username: &str, role: AdminRole) -> Result<AdminView, AuthError> {
        let mut record = self
            .store
            .get_admin(username)
            .await?
            .ok_or(AuthError::AccountNotFound)?;
        if record.role == role {
            return Ok(AdminView::from(&record));
        }
        if record.role == AdminRole::Admin && self.store.count_admin_role().await? <= 1 {
            return Err(AuthError::Store(StoreError::Conflict(
                "this is the last account with the admin role; make another admin first".into(),
            )));
        }
        let lowered = role == AdminRole::Viewer;
        record.role = role;
        match self.store.update_admin(record.clone(), lowered).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::AccountNotFound),
            other => other?,
        };
        Ok(AdminView::from(&record))
    }

    /// Sets a new password for an account (an admin resetting another's, or `auxot admin
    /// reset-password`); every session of that account ends.
    pub async fn reset_password(&self, username: &str, password: &Secret) -> Result<AdminView, AuthError> {
        check_password_rules(password)?;
        let mut record = self
            .store
            .get_admin(username)
            .await?
            .ok_or(AuthError::AccountNotFound)?;
        record.password_hash = self.hasher.hash(password.clone()).await?;
        match self.store.update_admin(record.clone(), true).await {
            Err(StoreError::NotFound(_)) => return Err(AuthError::AccountNotFound),
            other => other?,
        };
        Ok(AdminView::from(&record))
    }

    /// Changes the caller's own password after checking the current one. Every session of
    /// the account ends (a stolen cookie stops working) and a new one is returned for the
    /// caller's cookie.
    pub async fn change_own_password(
        &self,
        username: &str,
        current: &Secret,
        new: &Secret,
    ) -> Result<Secret, AuthError> {
        check_password_rules(new)?;
        let record = self
            .store
            .get_admin(username)
            .await?
            .ok_or(AuthError::AccountNotFound)?;
        if !self
            .hasher
            .verify(current.clone(), Some(record.password_hash.clone()))
            .await?
        {
            return Err(AuthError::InvalidInput("the current password is wrong".into()));
        }
        self.reset_password(&record.username, new).await?;
        let token = random_token();
        let now = crate::clock::now_unix();
        let session = SessionRecord {
            username: record.username,
            created_at: now,
            expires_at: now + self.session_ttl.as_secs() as i64,
        };
        self.store.insert_session(token_hash(token.expose()), session).await?;
        Ok(token)
    }
}
