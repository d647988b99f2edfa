//! `auxot admin create|list|reset-password|remove`: admin accounts edited offline, for an
//! operator locked out of the UI. On redb the server must be stopped (it caches nothing
//! about admins, but redb lets one process at a time have the file). On PostgreSQL
//! (`--database`) the routers may keep running: they read admins and sessions from the
//! database at each login and request, and writes are serialised across the fleet.

use super::{DataArgs, OpsError};
use crate::auth::{validate_name, Hasher, MIN_PASSWORD_LEN};
use crate::crypto::{random_token, Secret};
use crate::store::{AdminRecord, AdminRole, Store, StoreError};
use std::io::{BufRead, IsTerminal};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Add an admin account. The password is read from stdin (one line); on a terminal a
    /// random one is generated and printed once.
    Create {
        username: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List the admin accounts.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Set a new password (from stdin, or generated on a terminal) and end that admin's
    /// sessions.
    ResetPassword {
        username: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Remove an admin account and its sessions (never the last one).
    Remove {
        username: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

pub async fn run(command: &AdminCommand) -> Result<String, OpsError> {
    match command {
        AdminCommand::Create { username, data } => {
            let store = open(data).await?;
            let username = valid_username(username)?;
            let (password, generated) = new_password()?;
            let record = AdminRecord {
                username: username.clone(),
                password_hash: hash(password.clone()).await?,
                created_at: crate::clock::now_unix(),
                role: AdminRole::Admin,
            };
            store.insert_admin(record).await.map_err(named(&username))?;
            Ok(format!("created admin '{username}'.{}", shown(&password, generated)))
        }
        AdminCommand::List { data } => {
            let store = open(data).await?;
            let admins = store.list_admins().await?;
            if admins.is_empty() {
                return Ok("no admin accounts: open the UI to set one up, or `auxot admin create NAME`".into());
            }
            let lines: Vec<String> = admins
                .iter()
                .map(|a| {
                    format!(
                        "{}\t{}\tcreated {}",
                        a.username,
                        a.role.as_str(),
                        crate::clock::rfc3339(a.created_at)
                    )
                })
                .collect();
            Ok(lines.join("\n"))
        }
        AdminCommand::ResetPassword { username, data } => {
            let store = open(data).await?;
            let (password, generated) = new_password()?;
            let mut record = store
                .get_admin(username.trim())
                .await?
                .ok_or_else(|| named(username)(StoreError::NotFound("admin")))?;
            record.password_hash = hash(password.clone()).await?;
            let ended = store.update_admin(record, true).await.map_err(named(username))?;
            Ok(format!(
                "new password set for '{}'; {ended} session(s) ended.{}",
                username.trim(),
                shown(&password, generated)
            ))
        }
        AdminCommand::Remove { username, data } => {
            let store = open(data).await?;
            store.delete_admin(username.trim()).await.map_err(named(username))?;
            Ok(format!("removed admin '{}'; its sessions ended.", username.trim()))
        }
    }
}

async fn open(data: &DataArgs) -> Result<Store, OpsError> {
    data.open_store().await
}

fn valid_username(username: &str) -> Result<String, OpsError> {
    validate_name("username", username).map_err(|e| OpsError::Refused(e.to_string()))
}

fn named(username: &str) -> impl FnOnce(StoreError) -> OpsError + '_ {
    move |e| match e {
        StoreError::NotFound(_) => OpsError::Refused(format!("no admin named '{}'", username.trim())),
        StoreError::Conflict(message) => OpsError::Refused(message),
        other => other.into(),
    }
}

async fn hash(password: Secret) -> Result<String, OpsError> {
    Hasher::with_threads(1)
        .hash(password)
        .await
        .map_err(|e| OpsError::Refused(e.to_string()))
}

/// A password from stdin's first line, or a generated one when stdin is a terminal (so it
/// never sits in shell history or on the command line).
fn new_password() -> Result<(Secret, bool), OpsError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok((random_token(), true));
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(OpsError::io("cannot read the password from stdin"))?;
    let password = Secret::new(line.trim_end_matches(['\r', '\n']).to_string());
    if password.expose().chars().count() < MIN_PASSWORD_LEN {
        return Err(OpsError::Refused(format!(
            "the password (read from stdin) must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok((password, false))
}

fn shown(password: &Secret, generated: bool) -> String {
    if generated {
        format!("\nPassword (shown once): {}", password.expose())
    } else {
        String::new()
    }
}
