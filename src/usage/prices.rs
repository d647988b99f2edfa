//! What tokens cost: the price of a model (longest matching prefix) and the sum over every
//! kind of token at its own rate.

use super::tap::Tokens;
use crate::store::PriceRecord;

/// The entry for `model`: its exact id, else the longest id `model` starts with.
pub fn find<'a>(prices: &'a [PriceRecord], model: &str) -> Option<&'a PriceRecord> {
    prices
        .iter()
        .filter(|p| model == p.model || model.starts_with(&p.model))
        .max_by_key(|p| p.model.len())
}

/// USD for `tokens` at `price`. Cache reads and writes and reasoning use their own rates;
/// a rate the entry lacks falls back to the input (cache) or output (reasoning) rate.
pub fn cost(price: &PriceRecord, tokens: &Tokens) -> f64 {
    let input = price.input_per_mtok;
    let output = price.output_per_mtok;
    let reasoning = tokens.reasoning.min(tokens.output);
    let micro_usd = tokens.input as f64 * input
        + tokens.cache_read as f64 * price.cache_read_per_mtok.unwrap_or(input)
        + tokens.cache_write_5m as f64 * price.cache_write_5m_per_mtok.unwrap_or(input)
        + tokens.cache_write_1h as f64 * price.cache_write_1h_per_mtok.unwrap_or(input)
        + (tokens.output - reasoning) as f64 * output
        + reasoning as f64 * price.reasoning_per_mtok.unwrap_or(output);
    micro_usd / 1_000_000.0
}

/// Checks an entry from the API: a sane model id and non-negative, finite rates.
pub fn validate(price: &PriceRecord) -> Result<(), String> {
    let model = price.model.trim();
    if model.is_empty() || model.len() > 256 {
        return Err("model must be 1 to 256 characters".into());
    }
    let rates = [
        ("input_per_mtok", Some(price.input_per_mtok)),
        ("output_per_mtok", Some(price.output_per_mtok)),
        ("cache_read_per_mtok", price.cache_read_per_mtok),
        ("cache_write_5m_per_mtok", price.cache_write_5m_per_mtok),
        ("cache_write_1h_per_mtok", price.cache_write_1h_per_mtok),
        ("reasoning_per_mtok", price.reasoning_per_mtok),
    ];
    for (name, value) in rates {
        if let Some(value) = value {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("{name} must be a non-negative number (USD per million tokens)"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage_default_prices as defaults;

    fn price_of(model: &str) -> PriceRecord {
        find(&defaults(), model).cloned().unwrap()
    }

    fn micro(usd: f64) -> i64 {
        (usd * 1e6).round() as i64
    }

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(price_of("gpt-4o-mini-2024-07-18").model, "gpt-4o-mini");
        assert_eq!(price_of("gpt-4o-2024-08-06").model, "gpt-4o");
        assert_eq!(price_of("claude-opus-4-5-20251101").model, "claude-opus-4-5");
        assert_eq!(price_of("claude-opus-4-1-20250805").model, "claude-opus-4");
        assert!(find(&defaults(), "llama-3").is_none());
    }

    #[test]
    fn claude_code_turn_is_mostly_cache_reads() {
        // claude-sonnet-4-5: $3 in, $15 out, $0.30 cache read, $3.75 5m write, $6 1h write.
        let tokens = Tokens {
            input: 3,
            output: 512,
            cache_read: 48_000,
            cache_write_5m: 1_200,
            cache_write_1h: 800,
            reasoning: 0,
        };
        let usd = cost(&price_of("claude-sonnet-4-5-20250929"), &tokens);
        // 3*3 + 48000*0.3 + 1200*3.75 + 800*6 + 512*15 = 9 + 14400 + 4500 + 4800 + 7680
        assert_eq!(micro(usd), 31_389);
    }

    #[test]
    fn openai_cached_input_and_reasoning() {
        // o4-mini: $1.10 in, $0.275 cached, $4.40 out (reasoning billed as output).
        let tokens = Tokens {
            input: 86,
            output: 300,
            cache_read: 1920,
            reasoning: 256,
            ..Tokens::default()
        };
        let usd = cost(&price_of("o4-mini-2025-04-16"), &tokens);
        // 86*1.1 + 1920*0.275 + 300*4.4 = 94.6 + 528 + 1320 = 1942.6 micro-USD
        assert_eq!((usd * 1e7).round() as i64, 19_426);
    }

    #[test]
    fn missing_rates_fall_back() {
        let bare = PriceRecord {
            model: "m".into(),
            input_per_mtok: 2.0,
            output_per_mtok: 8.0,
            cache_read_per_mtok: None,
            cache_write_5m_per_mtok: None,
            cache_write_1h_per_mtok: None,
            reasoning_per_mtok: None,
        };
        let tokens = Tokens {
            input: 1_000_000,
            output: 1_000_000,
            cache_read: 1_000_000,
            cache_write_5m: 0,
            cache_write_1h: 0,
            reasoning: 500_000,
        };
        assert_eq!(micro(cost(&bare, &tokens)), 12_000_000);
    }

    #[test]
    fn validation_names_the_bad_rate() {
        let mut p = price_of("gpt-4o");
        p.cache_write_1h_per_mtok = Some(-1.0);
        assert!(validate(&p).unwrap_err().contains("cache_write_1h_per_mtok"));
        p.cache_write_1h_per_mtok = Some(f64::NAN);
        assert!(validate(&p).is_err());
    }
}
