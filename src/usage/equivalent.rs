//! Which cloud model values a GPU/CLI answer ("spend avoided"), and why that one.

use super::prices;
use crate::store::{EquivalentSettings, PriceRecord};

/// Priced when nothing more specific applies: a cheap, widely used cloud model, so spend
/// avoided is never overstated. Operators set their own default in the settings.
pub const BUILTIN_DEFAULT: &str = "gpt-4o-mini";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivalent {
    pub model: String,
    /// `alias`, `worker`, `model`, `same_model`, `default` or `builtin_default`.
    pub source: &'static str,
}

/// What a local answer is valued at, most specific first: the alias's cloud model, the
/// worker's setting, the served (then asked) model's setting, the served model itself when
/// it has a cloud price (a CLI running `claude-sonnet-4-5`), the operator's default, and
/// last `BUILTIN_DEFAULT`.
pub fn resolve(
    settings: &EquivalentSettings,
    prices: &[PriceRecord],
    alias_cloud_model: Option<&str>,
    worker: Option<&str>,
    served: Option<&str>,
    asked: &str,
) -> Equivalent {
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
        let resolve_now =
            |s: &EquivalentSettings, alias| resolve(s, &prices, alias, Some("box-1"), Some("qwen3-8b"), "auto");
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
        let e = resolve(
            &EquivalentSettings::default(),
            &prices,
            None,
            Some("cli-1"),
            Some("claude-sonnet-4-5"),
            "claude-sonnet-4-5",
        );
        assert_eq!(
            e,
            Equivalent {
                model: "claude-sonnet-4-5".into(),
                source: "same_model"
            }
        );
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
