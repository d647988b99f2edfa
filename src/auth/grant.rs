//! What an API key may ask for: models (aliases, `agent:NAME`, `prefix*` families) and
//! tiers. Checked on every client request from memory.

/// The tier names a grant may list (the dispatcher's tiers; kept as names so `auth` does
/// not depend on `dispatch`).
pub const TIER_NAMES: [&str; 3] = ["gpu", "cli", "cloud"];

/// An API key's allow-lists; empty lists allow everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyGrant {
    pub models: Vec<String>,
    /// Lower-case tier names from `TIER_NAMES`.
    pub tiers: Vec<String>,
}

impl KeyGrant {
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|pattern| model_matches(pattern, model))
    }

    pub fn allows_tier(&self, tier: &str) -> bool {
        self.tiers.is_empty() || self.tiers.iter().any(|t| t == tier)
    }

    pub fn restricts_tiers(&self) -> bool {
        !self.tiers.is_empty()
    }
}

/// Cleans a tier allow-list: known names only, lower-cased, in cascade order.
pub fn clean_tiers(tiers: Vec<String>) -> Result<Vec<String>, String> {
    let wanted: Vec<String> = tiers.iter().map(|t| t.trim().to_ascii_lowercase()).collect();
    if let Some(bad) = wanted.iter().find(|t| !TIER_NAMES.contains(&t.as_str())) {
        return Err(format!("unknown tier '{bad}': use gpu, cli or cloud"));
    }
    Ok(TIER_NAMES
        .iter()
        .filter(|name| wanted.iter().any(|t| t == *name))
        .map(|name| name.to_string())
        .collect())
}

/// `pattern` is a model name, or a prefix ending in `*`. Case-insensitive, as model names
/// are matched elsewhere.
fn model_matches(pattern: &str, model: &str) -> bool {
    let model = model.to_lowercase();
    let pattern = pattern.to_lowercase();
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => model == pattern,
    }
}

/// Cleans an allow-list as an admin typed it: trimmed, no blanks, no duplicates.
pub fn clean_models(models: Vec<String>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for model in models {
        let model = model.trim().to_string();
        if model.is_empty() {
            continue;
        }
        if model.len() > 256 || model.chars().any(char::is_control) {
            return Err("each allowed model must be 1 to 256 printable characters".into());
        }
        if model.trim_end_matches('*').is_empty() {
            return Err("'*' alone is not a model pattern; leave the list empty to allow every model".into());
        }
        if !out.iter().any(|m| m.eq_ignore_ascii_case(&model)) {
            out.push(model);
        }
    }
    if out.len() > 100 {
        return Err("at most 100 allowed models".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_grant_allows_every_model_and_tier() {
        let grant = KeyGrant::default();
        assert!(grant.allows_model("anything"));
        assert!(TIER_NAMES.iter().all(|t| grant.allows_tier(t)));
    }

    #[test]
    fn models_match_exactly_or_by_family_regardless_of_case() {
        let grant = KeyGrant {
            models: vec!["auto".into(), "claude-*".into()],
            tiers: vec![],
        };
        assert!(grant.allows_model("auto"));
        assert!(grant.allows_model("AUTO"));
        assert!(grant.allows_model("claude-sonnet-4-5"));
        assert!(!grant.allows_model("gpt-4o"));
        assert!(!grant.allows_model("auto-2"));
    }

    #[test]
    fn tier_lists_keep_known_names_in_cascade_order() {
        assert_eq!(
            clean_tiers(vec!["Cloud".into(), " gpu".into(), "cloud".into()]).unwrap(),
            vec!["gpu".to_string(), "cloud".to_string()]
        );
        assert!(clean_tiers(vec!["tpu".into()]).is_err());
        let grant = KeyGrant {
            models: vec![],
            tiers: vec!["cloud".into()],
        };
        assert!(grant.allows_tier("cloud") && !grant.allows_tier("gpu"));
    }

    #[test]
    fn allow_lists_are_cleaned_and_bad_entries_refused() {
        assert_eq!(
            clean_models(vec![" auto ".into(), "".into(), "Auto".into(), "gpt-*".into()]).unwrap(),
            vec!["auto".to_string(), "gpt-*".to_string()]
        );
        assert!(clean_models(vec!["*".into()]).is_err());
        assert!(clean_models(vec!["a\nb".into()]).is_err());
    }
}
