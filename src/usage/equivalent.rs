//! Which cloud model values a GPU/CLI answer ("spend avoided"), and why that one.

use super::prices;
use crate::store::{EquivalentSettings, PriceRecord};

/// Priced when nothing more specific applies and no cloud provider is enabled: a cheap,
/// widely used cloud model, so spend avoided is never overstated. Operators set their own
/// default in the settings.
pub const BUILTIN_DEFAULT: &str = "gpt-4o-mini";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivalent {
    pub model: String,
    /// `alias`, `worker`, `model`, `same_model`, `default`, `cheapest_enabled` or
    /// `builtin_default`.
    pub source: &'static str,
}

/// What a local answer may be compared with: the request, and the models the enabled
/// cloud providers serve right now.
pub struct Local<'a> {
    pub alias_cloud_model: Option<&'a str>,
    pub worker: Option<&'a str>,
    pub served: Option<&'a str>,
    pub asked: &'a str,
    pub enabled_cloud: &'a [String],
}

/// A model's family: its name up to the first digit, `-`, `.` or `:` (`claude-…` →
/// `claude`, `gpt-4o` → `gpt`, `qwen2.5-7b` → `qwen`).
fn family(model: &str) -> &str {
    let bare = model.rsplit('/').next().unwrap_or(model);
    let end = bare
        .find(|c: char| c.is_ascii_digit() || matches!(c, '-' | '.' | ':'))
        .unwrap_or(bare.len());
    &bare[..end]
}

/// The cheapest priced model the enabled providers serve (input + output rate), of the
/// local model's family when the cloud has that family, else of any.
fn cheapest_enabled<'a>(prices: &[PriceRecord], enabled: &'a [String], local: &[&str]) -> Option<&'a str> {
    let priced: Vec<(&'a str, f64)> = enabled
        .iter()
        .filter_map(|m| prices::find(prices, m).map(|p| (m.as_str(), p.input_per_mtok + p.output_per_mtok)))
        .collect();
    let cheapest = |of: &mut dyn Iterator<Item = &(&'a str, f64)>| {
        of.min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)))
            .map(|(m, _)| *m)
    };
    let families: Vec<&str> = local.iter().map(|m| family(m)).filter(|f| !f.is_empty()).collect();
    cheapest(&mut priced.iter().filter(|(m, _)| families.contains(&family(m)))).or_else(|| cheapest(&mut priced.iter()))
}

/// What a local answer is valued at, most specific first: the alias's cloud model, the
/// worker's setting, the served (then asked) model's setting, the served model itself when
/// it has a cloud price (a CLI running `claude-sonnet-4-5`), the operator's default, the
/// cheapest enabled cloud model of the same family (else of any), and last
/// `BUILTIN_DEFAULT`.
pub fn resolve(settings: &EquivalentSettings, prices: &[PriceRecord], local: &Local<'_>) -> Equivalent {
    let Local {
        alias_cloud_model,
        worker,
        served,
        asked,
        enabled_cloud,
    } = *local;
    let pick = |model: &str, source| Equivalent {
        // `provider/model` pins a provider; the price is the model's.
        model: model.rsplit('/').next().unwrap_or(model).to_string(),
        source,
    };
    if let Some(model) = alias_cloud_model {
        return pick(model, "alias");
    }
    if let Some(model) = worker.and_then(|w| settings.by_worker.get(w)) {
        return pick(model, "worker");
    }
    if let Some(model) = [served, Some(asked)]
        .into_iter()
        .flatten()
        .find_map(|m| settings.by_model.get(m))
    {
        return pick(model, "model");
    }
    if let Some(served) = served.filter(|m| prices::find(prices, m).is_some()) {
        return pick(served, "same_model");
    }
    if let Some(model) = &settings.default_model {
        return pick(model, "default");
    }
    let named: Vec<&str> = served.into_iter().chain([asked]).collect();
    if let Some(model) = cheapest_enabled(prices, enabled_cloud, &named) {
        return pick(model, "cheapest_enabled");
    }
    pick(BUILTIN_DEFAULT, "builtin_default")
}

/// Checks settings from the API: every named model must have a price, or it would value
/// answers at $0 without saying so.
pub fn validate(settings: &EquivalentSettings, prices: &[PriceRecord]) -> Result<(), String> {
    let named = settings
        .default_model
        .iter()
        .map(|m| ("default_model", "", m))
        .chain(settings.by_worker.iter().map(|(k, m)| ("by_worker", k.as_str(), m)))
        .chain(settings.by_model.iter().map(|(k, m)| ("by_model", k.as_str(), m)));
    for (field, key, model) in named {
        if key.len() > 256 || model.is_empty() || model.len() > 256 {
            return Err(format!("{field}: names and models must be 1 to 256 characters"));
        }
        let bare = model.rsplit('/').next().unwrap_or(model);
        if prices::find(prices, bare).is_none() {
            return Err(format!(
                "{field}: '{model}' has no price; add it with PUT /api/prices/{bare} first"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage_default_prices;

    #[test]
    fn most_specific_setting_wins_and_says_so() {
        let prices = usage_default_prices();
        let mut settings = EquivalentSettings::default();
        let resolve_now = |s: &EquivalentSettings, alias| {
            let local = Local {
                alias_cloud_model: alias,
                worker: Some("box-1"),
                served: Some("qwen3-8b"),
                asked: "auto",
                enabled_cloud: &[],
            };
            resolve(s, &prices, &local)
        };
        assert_eq!(resolve_now(&settings, None).source, "builtin_default");
        settings.default_model = Some("gpt-4.1-mini".into());
        assert_eq!(
            resolve_now(&settings, None),
            Equivalent {
                model: "gpt-4.1-mini".into(),
                source: "default"
            }
        );
        settings.by_model.insert("qwen3-8b".into(), "gpt-5-mini".into());
        assert_eq!(resolve_now(&settings, None).source, "model");
        settings.by_worker.insert("box-1".into(), "gpt-4o".into());
        assert_eq!(resolve_now(&settings, None).model, "gpt-4o");
        assert_eq!(
            resolve_now(&settings, Some("openai/gpt-4.1")),
            Equivalent {
                model: "gpt-4.1".into(),
                source: "alias"
            }
        );
    }

    #[test]
    fn a_priced_served_model_values_itself() {
        let prices = usage_default_prices();
        let local = Local {
            alias_cloud_model: None,
            worker: Some("cli-1"),
            served: Some("claude-sonnet-4-5"),
            asked: "claude-sonnet-4-5",
            enabled_cloud: &[],
        };
        let e = resolve(&EquivalentSettings::default(), &prices, &local);
        assert_eq!(
            e,
            Equivalent {
                model: "claude-sonnet-4-5".into(),
                source: "same_model"
            }
        );
    }

    #[test]
    fn without_settings_the_cheapest_enabled_model_of_the_family_values_it() {
        let prices = usage_default_prices();
        let enabled: Vec<String> = [
            "gpt-4o",
            "gpt-4.1-mini",
            "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5-20251001",
            "text-embedding-unpriced",
        ]
        .map(String::from)
        .to_vec();
        let value = |served: &'static str, asked: &'static str, enabled: &[String]| {
            let local = Local {
                alias_cloud_model: None,
                worker: Some("box-1"),
                served: Some(served),
                asked,
                enabled_cloud: enabled,
            };
            resolve(&EquivalentSettings::default(), &prices, &local)
        };
        // A local Claude-family model: the cheapest enabled Claude.
        assert_eq!(
            value("claude-local-distill", "auto", &enabled),
            Equivalent {
                model: "claude-haiku-4-5-20251001".into(),
                source: "cheapest_enabled"
            }
        );
        // No cloud family in common: the cheapest enabled model of all (gpt-4.1-mini, $2).
        assert_eq!(value("qwen3-8b", "auto", &enabled).model, "gpt-4.1-mini");
        assert_eq!(value("qwen3-8b", "qwen3-8b", &enabled).source, "cheapest_enabled");
        // No cloud provider enabled: the built-in default.
        assert_eq!(value("qwen3-8b", "auto", &[]).source, "builtin_default");
        assert_eq!(family("openai/gpt-4o"), "gpt");
        assert_eq!(family("qwen2.5-7b"), "qwen");
    }

    #[test]
    fn unpriced_settings_are_refused() {
        let prices = usage_default_prices();
        let mut settings = EquivalentSettings::default();
        settings.by_model.insert("llama".into(), "no-such-model".into());
        assert!(validate(&settings, &prices).unwrap_err().contains("no-such-model"));
        settings.by_model.insert("llama".into(), "gpt-4o".into());
        assert!(validate(&settings, &prices).is_ok());
    }
}
