//! The CLI's process: its command line split without a shell, the program found on PATH,
//! its stderr's tail for error messages, and its process group killed whenever the job ends.

use super::KILL_GRACE;
use crate::workers::client::WorkerError;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Splits a command template into words: whitespace separates, single quotes keep
/// everything literal, double quotes allow `\"` and `\\`, a backslash outside quotes
/// escapes the next character. No shell runs, so no globbing, variables or pipes.
pub fn split_command(template: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in the command template {template:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in the command template {template:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in the command template {template:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Finds an executable: a name with a `/` is taken as a path, anything else is searched on
/// PATH, as a shell would.
pub(super) fn find_program(program: &str) -> Result<PathBuf, WorkerError> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(WorkerError::CliNotFound {
                program: program.to_string(),
                place: format!("at {program} (not an executable file)"),
            })
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| WorkerError::CliNotFound {
            program: program.to_string(),
            place: "on PATH".to_string(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last `limit` characters of a stream (a CLI's stderr), trimmed.
pub(super) async fn read_tail(mut stream: impl AsyncRead + Unpin, limit: usize) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        tail.extend_from_slice(&buffer[..read]);
        // Bytes, not characters, are kept: four per character covers any UTF-8.
        if tail.len() > limit * 8 {
            tail.drain(..tail.len() - limit * 4);
        }
    }
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim();
    let skip = text.chars().count().saturating_sub(limit);
    text.chars().skip(skip).collect()
}

/// Kills a job's whole process group when the job ends for any reason, including its
/// future being dropped on cancel, timeout or a lost connection: the CLI's own children
/// (shells, MCP servers, tool processes) go too.
pub(super) struct ProcessGroupGuard {
    pgid: u32,
    /// Once the leader is reaped only stragglers can remain: they get SIGTERM and no
    /// delayed SIGKILL, because the group id may be free for reuse by then.
    leader_reaped: bool,
}

impl ProcessGroupGuard {
    pub(super) fn new(pgid: u32) -> Self {
        ProcessGroupGuard {
            pgid,
            leader_reaped: false,
        }
    }

    pub(super) fn leader_reaped(&mut self) {
        self.leader_reaped = true;
    }
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        let pgid = self.pgid;
        let escalate = !self.leader_reaped;
        // Drop cannot await; a short-lived thread waits out the grace period instead.
        let spawned = std::thread::Builder::new()
            .name(format!("kill-pgid-{pgid}"))
            .spawn(move || kill_group(pgid, escalate));
        if let Err(e) = spawned {
            tracing::warn!(pgid, error = %e, "cannot start the thread that kills a job's processes");
            kill_group(pgid, false);
        }
    }
}

/// SIGTERM to the group, then SIGKILL after [`KILL_GRACE`] if any member is left. Uses the
/// `kill` command because this crate has no unsafe code to call kill(2) with.
fn kill_group(pgid: u32, escalate: bool) {
    let target = format!("-{pgid}");
    let signal = |signal: &str| {
        std::process::Command::new("kill")
            .args([signal, "--", &target])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !signal("-TERM") || !escalate {
        return;
    }
    std::thread::sleep(KILL_GRACE);
    if signal("-0") {
        tracing::debug!(pgid, "job processes ignored SIGTERM; sending SIGKILL");
        signal("-KILL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_templates_split_like_a_shell_without_one() {
        assert_eq!(
            split_command(r#"  llm  -m 'gpt 4' "say \"{prompt}\"" a\ b --x="" "#).unwrap(),
            ["llm", "-m", "gpt 4", "say \"{prompt}\"", "a b", "--x="]
        );
        assert_eq!(
            split_command(r#"echo '' "$HOME" 'it''s'"#).unwrap(),
            ["echo", "", "$HOME", "its"]
        );
        assert_eq!(split_command(r#""a\nb""#).unwrap(), ["a\\nb"]);
        assert!(split_command("echo 'open").is_err());
        assert!(split_command("echo \"open").is_err());
        assert!(split_command("   ").unwrap().is_empty());
    }

    #[test]
    fn missing_programs_fail_clearly() {
        let err = find_program("auxot-no-such-cli-xyz").unwrap_err().to_string();
        assert!(
            err.contains("cannot find the `auxot-no-such-cli-xyz` CLI on PATH"),
            "{err}"
        );
        assert!(find_program("/nonexistent/claude").is_err());
        assert!(find_program("sh").is_ok());
    }

    #[tokio::test]
    async fn stderr_tail_keeps_the_end() {
        let text = format!("{}END", "x".repeat(5000));
        let tail = read_tail(text.as_bytes(), 10).await;
        assert_eq!(tail, "xxxxxxxEND");
    }
}
