//! Which models a worker may serve: what it advertises, checked for shape, then narrowed to
//! what the operator allows its token.
//!
//! A worker token can only be trusted to run a model, not to be honest about which model it
//! is. A worker advertising `gpt-4o-mini` would receive the prompts meant for the cloud model
//! and answer in its name. So, by default, a worker may not take a model name that a cloud
//! provider serves; the token's allow-list (set by an admin) can permit it deliberately
//! (a GPU-first override), and when present it is the complete list of what the worker may
//! serve.

/// Most models one worker may advertise.
pub const MAX_MODELS: usize = 1000;
/// Longest model name, in bytes.
pub const MAX_MODEL_NAME: usize = 256;
/// Most entries in a token's allow-list.
pub const MAX_ALLOWED: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("at most {MAX_MODELS} models may be advertised (got {0})")]
    TooManyModels(usize),
    #[error("model names must be 1 to {MAX_MODEL_NAME} bytes of printable characters without spaces (got {0:?})")]
    BadModelName(String),
    #[error("allowed_models holds at most {MAX_ALLOWED} entries (got {0})")]
    TooManyAllowed(usize),
    #[error("allowed_models entries must be model names of 1 to {MAX_MODEL_NAME} bytes without spaces, optionally ending in '*' (got {0:?})")]
    BadAllowed(String),
}

/// A name as shown in an error: a bounded prefix, whatever the input.
fn shown(name: &str) -> String {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    if end < name.len() {
        format!("{}…", &name[..end])
    } else {
        name.to_string()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_MODEL_NAME && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Checks an advertised model list's shape; duplicates are dropped, order kept.
pub fn validate_models(models: Vec<String>) -> Result<Vec<String>, PolicyError> {
    if models.len() > MAX_MODELS {
        return Err(PolicyError::TooManyModels(models.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(models.len());
    for model in models {
        let model = model.trim().to_string();
        if !valid_name(&model) {
            return Err(PolicyError::BadModelName(shown(&model)));
        }
        if !out.contains(&model) {
            out.push(model);
        }
    }
    Ok(out)
}

/// Checks an allow-list an admin sets on a worker token: exact names, or a prefix ending in
/// `*` (`qwen*`; `*` alone allows every name, cloud-served ones included).
pub fn validate_allowed(allowed: Vec<String>) -> Result<Vec<String>, PolicyError> {
    if allowed.len() > MAX_ALLOWED {
        return Err(PolicyError::TooManyAllowed(allowed.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(allowed.len());
    for entry in allowed {
        let entry = entry.trim().to_string();
        let stem = entry.strip_suffix('*').unwrap_or(&entry);
        let ok = (entry == "*" || valid_name(stem)) && !stem.contains('*');
        if !ok || entry.len() > MAX_MODEL_NAME {
            return Err(PolicyError::BadAllowed(shown(&entry)));
        }
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

fn allowed_by(list: &[String], model: &str) -> bool {
    list.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => entry == model,
    })
}

/// Splits advertised models into those the worker may serve and those it may not.
/// `cloud_serves` says whether an enabled cloud provider serves a name.
pub fn permitted(
    advertised: &[String],
    allowed: Option<&[String]>,
    cloud_serves: impl Fn(&str) -> bool,
) -> (Vec<String>, Vec<String>) {
    advertised.iter().cloned().partition(|model| match allowed {
        Some(list) => allowed_by(list, model),
        None => !cloud_serves(model),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn by_default_cloud_names_are_refused() {
        let cloud = |m: &str| m == "gpt-4o-mini";
        let (kept, refused) = permitted(&names(&["qwen", "gpt-4o-mini"]), None, cloud);
        assert_eq!(kept, ["qwen"]);
        assert_eq!(refused, ["gpt-4o-mini"]);
    }

    #[test]
    fn an_allow_list_is_complete_and_may_override_the_cloud() {
        let cloud = |m: &str| m == "gpt-4o-mini";
        let allowed = names(&["gpt-4o-mini", "llama*"]);
        let (kept, refused) = permitted(&names(&["qwen", "gpt-4o-mini", "llama3:8b"]), Some(&allowed), cloud);
        assert_eq!(kept, ["gpt-4o-mini", "llama3:8b"]);
        assert_eq!(refused, ["qwen"]);
        let everything = names(&["*"]);
        let (kept, _) = permitted(&names(&["gpt-4o-mini"]), Some(&everything), cloud);
        assert_eq!(kept, ["gpt-4o-mini"]);
        let (kept, refused) = permitted(&names(&["qwen"]), Some(&[]), cloud);
        assert!(kept.is_empty() && refused == ["qwen"]);
    }

    #[test]
    fn model_lists_are_bounded_and_names_checked() {
        assert!(validate_models(vec!["m".into(); MAX_MODELS + 1]).is_err());
        let long = "x".repeat(1_000_000);
        match validate_models(vec![long]) {
            Err(PolicyError::BadModelName(shown)) => assert!(shown.len() < 100, "{shown}"),
            other => panic!("{other:?}"),
        }
        assert!(validate_models(names(&["a b"])).is_err());
        assert!(validate_models(names(&[""])).is_err());
        assert!(validate_models(names(&["bad\u{0}"])).is_err());
        assert_eq!(
            validate_models(names(&[" qwen ", "qwen", "/models/Qwen2.5-7B"])).unwrap(),
            ["qwen", "/models/Qwen2.5-7B"]
        );
        assert!(validate_allowed(names(&["q*w*"])).is_err());
        assert!(validate_allowed(names(&["**"])).is_err());
        assert_eq!(
            validate_allowed(names(&["*", "qwen*", "gpt-4o"])).unwrap(),
            ["*", "qwen*", "gpt-4o"]
        );
    }

    proptest! {
        #[test]
        fn validation_never_panics_and_keeps_only_valid_names(models in proptest::collection::vec(".{0,300}", 0..20)) {
            if let Ok(kept) = validate_models(models) {
                prop_assert!(kept.iter().all(|m| valid_name(m)));
            }
        }

        #[test]
        fn what_is_kept_is_allowed(models in proptest::collection::vec("[a-z*]{1,8}", 0..10), allowed in proptest::collection::vec("[a-z]{0,4}\\*?", 0..5)) {
            let (kept, refused) = permitted(&models, Some(&allowed), |_| true);
            prop_assert_eq!(kept.len() + refused.len(), models.len());
            prop_assert!(kept.iter().all(|m| allowed_by(&allowed, m)));
            prop_assert!(refused.iter().all(|m| !allowed_by(&allowed, m)));
        }
    }
}
