//! Keeps keys away from the model: key-like strings in the operator's text are swapped for
//! placeholders (`[[secret:1]]`) before anything is sent or stored, and swapped back only
//! inside a tool's `api_key` argument when the server runs the tool.
//!
//! The vault is memory only, per conversation: a restart forgets the values (the stored
//! conversation keeps its placeholders, which then no longer resolve).

use crate::crypto::Secret;
use std::collections::HashMap;
use std::sync::Mutex;

const PREFIXES: [&str; 3] = ["sk-", "aux_", "auxw_"];
/// A prefixed token shorter than this is a word (`sk-learn`), not a key.
const MIN_PREFIXED_LEN: usize = 12;
/// An unprefixed token this long, mixing letters and digits, is treated as a key.
const MIN_OPAQUE_LEN: usize = 24;

#[derive(Default)]
pub struct SecretVault {
    by_conversation: Mutex<HashMap<String, Vec<Secret>>>,
}

pub fn placeholder(n: usize) -> String {
    format!("[[secret:{n}]]")
}

impl SecretVault {
    /// Replaces every key-like token in `text` with a placeholder, remembering the value
    /// for `conversation`. The same value twice gets the same placeholder.
    pub fn redact(&self, conversation: &str, text: &str) -> String {
        let mut vault = self.by_conversation.lock().unwrap_or_else(|p| p.into_inner());
        let secrets = vault.entry(conversation.to_string()).or_default();
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(is_token_char) {
            out.push_str(&rest[..start]);
            let token_len = rest[start..].find(|c| !is_token_char(c)).unwrap_or(rest.len() - start);
            let token = &rest[start..start + token_len];
            if looks_like_key(token) {
                let index = match secrets.iter().position(|s| s.expose() == token) {
                    Some(i) => i,
                    None => {
                        secrets.push(Secret::new(token.to_string()));
                        secrets.len() - 1
                    }
                };
                out.push_str(&placeholder(index + 1));
            } else {
                out.push_str(token);
            }
            rest = &rest[start + token_len..];
        }
        out.push_str(rest);
        out
    }

    /// The value behind `[[secret:N]]` (the whole argument must be the placeholder);
    /// anything else comes back as given.
    pub fn resolve(&self, conversation: &str, value: &str) -> Result<Secret, String> {
        let trimmed = value.trim();
        let Some(n) = trimmed
            .strip_prefix("[[secret:")
            .and_then(|r| r.strip_suffix("]]"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return Ok(Secret::new(trimmed.to_string()));
        };
        let vault = self.by_conversation.lock().unwrap_or_else(|p| p.into_inner());
        vault
            .get(conversation)
            .and_then(|s| s.get(n.wrapping_sub(1)))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{} is unknown: secrets are kept in memory only and are forgotten on restart; ask the operator to paste the key again",
                    placeholder(n)
                )
            })
    }

    /// Puts placeholders back over any remembered value in `text` (a tool result or error
    /// that echoed a key), so it can go to the model and the store.
    pub fn scrub(&self, conversation: &str, text: &str) -> String {
        let vault = self.by_conversation.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_string();
        for (i, secret) in vault.get(conversation).into_iter().flatten().enumerate() {
            if !secret.expose().is_empty() {
                out = out.replace(secret.expose(), &placeholder(i + 1));
            }
        }
        out
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn looks_like_key(token: &str) -> bool {
    if PREFIXES.iter().any(|p| token.starts_with(p)) && token.len() >= MIN_PREFIXED_LEN {
        return true;
    }
    token.len() >= MIN_OPAQUE_LEN
        && token.chars().any(|c| c.is_ascii_alphabetic())
        && token.chars().any(|c| c.is_ascii_digit())
        && !is_uuid(token)
}

/// Provider and key ids are UUIDs the operator may quote: they are not secrets.
fn is_uuid(token: &str) -> bool {
    let parts: Vec<&str> = token.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_placeholders_and_resolve_back() {
        let vault = SecretVault::default();
        let text =
            "Add OpenAI with sk-proj-abc123def456, then anthropic sk-ant-api03-XYZ789abc. Again: sk-proj-abc123def456";
        let redacted = vault.redact("c1", text);
        assert_eq!(
            redacted,
            "Add OpenAI with [[secret:1]], then anthropic [[secret:2]]. Again: [[secret:1]]"
        );
        assert_eq!(
            vault.resolve("c1", "[[secret:2]]").unwrap().expose(),
            "sk-ant-api03-XYZ789abc"
        );
        assert!(vault.resolve("c2", "[[secret:1]]").is_err());
        assert_eq!(
            vault.scrub("c1", "bad key sk-proj-abc123def456"),
            "bad key [[secret:1]]"
        );
    }

    #[test]
    fn opaque_tokens_are_caught_but_words_and_ids_are_not() {
        let vault = SecretVault::default();
        let text = "use aux_0123456789abcdef and Zx8kQ2mN7pL4vB9cR1tY6wE3 for 3f2b8c1e-1a2b-4c3d-9e8f-0123456789ab on sk-learn scikit-learn-is-a-library-name";
        let redacted = vault.redact("c", text);
        assert_eq!(
            redacted,
            "use [[secret:1]] and [[secret:2]] for 3f2b8c1e-1a2b-4c3d-9e8f-0123456789ab on sk-learn scikit-learn-is-a-library-name"
        );
    }
}
