//! Password hashes in a short-lived child process (`auxot hash-password-child`, hidden).
//!
//! An argon2id hash fills 19 MiB. Freed in the router, those pages stay mapped (the allocator
//! keeps them for the thread that used them), so one login left the router ~20 MB larger for
//! the rest of its life. A child process gives them back when it exits; starting it costs a
//! few milliseconds against the hash's ~50. The hasher pool still bounds how many run at once.
//!
//! The password goes over a pipe, never on the command line or in the environment, and the
//! child starts with an empty environment (it needs nothing of the router's secrets). When a
//! child cannot be started, the hash is done in the router as before, logged once.

use super::passwords::{work, Outcome, Task};
use super::AuthError;
use crate::crypto::Secret;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The subcommand the child runs.
pub const CHILD_COMMAND: &str = "hash-password-child";
/// A request is a password and a PHC string: far below this.
const MAX_REQUEST: u64 = 64 * 1024;

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
static SPAWN_FAILED: AtomicBool = AtomicBool::new(false);

/// Hash in child processes of `program` (this binary) from now on. The server calls this at
/// start; tests and offline commands hash in-process.
pub fn hash_in_child_processes(program: PathBuf) {
    let _ = PROGRAM.set(program);
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Request {
    password: String,
    /// Verify against this hash (`None` with `verify`: the unknown-user dummy).
    stored: Option<String>,
    verify: bool,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Hashed(String),
    Verified(bool),
    Failed,
}

/// Runs `task` in a child process; `None` when hashing in-process (not set up, or the child
/// could not be run: logged once).
pub(super) fn run(task: &Task) -> Option<Result<Outcome, AuthError>> {
    let program = PROGRAM.get()?;
    let request = match task {
        Task::Hash(password) => Request {
            password: password.expose().to_string(),
            stored: None,
            verify: false,
        },
        Task::Verify(password, stored) => Request {
            password: password.expose().to_string(),
            stored: stored.clone(),
            verify: true,
        },
    };
    match in_child(program, &request) {
        Ok(reply) => {
            if SPAWN_FAILED.swap(false, Ordering::Relaxed) {
                tracing::info!("password hashes run in child processes again");
            }
            Some(match reply {
                Reply::Hashed(phc) => Ok(Outcome::Hashed(phc)),
                Reply::Verified(ok) => Ok(Outcome::Verified(ok)),
                Reply::Failed => Err(AuthError::Hashing),
            })
        }
        Err(e) => {
            if !SPAWN_FAILED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, program = %program.display(), "cannot hash a password in a child process: hashing in the router instead");
            }
            None
        }
    }
}

fn in_child(program: &Path, request: &Request) -> std::io::Result<Reply> {
    let mut child = Command::new(program)
        .arg(CHILD_COMMAND)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut body = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(&body),
        None => Err(std::io::Error::other("no stdin")),
    };
    body.zeroize();
    let mut out = Vec::new();
    let read = match child.stdout.take() {
        Some(stdout) => stdout.take(MAX_REQUEST).read_to_end(&mut out).map(|_| ()),
        None => Err(std::io::Error::other("no stdout")),
    };
    let status = child.wait()?;
    written?;
    read?;
    if !status.success() {
        return Err(std::io::Error::other(format!("the child exited with {status}")));
    }
    serde_json::from_slice(&out).map_err(std::io::Error::other)
}

/// The child's side: one request on stdin, its reply on stdout.
pub fn serve_child() -> ExitCode {
    let mut input = Vec::new();
    if std::io::stdin().take(MAX_REQUEST).read_to_end(&mut input).is_err() {
        return ExitCode::FAILURE;
    }
    let parsed = serde_json::from_slice::<Request>(&input);
    input.zeroize();
    let Ok(mut request) = parsed else {
        return ExitCode::FAILURE;
    };
    let password = Secret::new(std::mem::take(&mut request.password));
    let task = if request.verify {
        Task::Verify(password, request.stored.take())
    } else {
        Task::Hash(password)
    };
    let reply = match work(task, &mut Vec::new()) {
        Ok(Outcome::Hashed(phc)) => Reply::Hashed(phc),
        Ok(Outcome::Verified(ok)) => Reply::Verified(ok),
        Err(_) => Reply::Failed,
    };
    let Ok(out) = serde_json::to_vec(&reply) else {
        return ExitCode::FAILURE;
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
