//! A coding CLI's subscription limit, read from its error text: Claude Code says
//! `Claude AI usage limit reached|<unix time of the reset>` (or "… limit reached ∙ resets
//! 3pm"), Codex "You've hit your usage limit … try again in 2 days 3 hours 4 minutes".
//! The worker reports the reset time and the router routes around it until then.

/// When no reset time can be read, the router tries the worker again after this long.
const UNKNOWN_RESET_SECS: i64 = 15 * 60;

/// The Unix time the subscription is usable again, if `message` reports a usage limit.
pub(super) fn usage_limit(message: &str, now: i64) -> Option<i64> {
    let lower = message.to_ascii_lowercase();
    let limited = [
        "usage limit",
        "limit reached",
        "rate limit",
        "hit your limit",
        "quota exceeded",
    ]
    .iter()
    .any(|phrase| lower.contains(phrase));
    if !limited {
        return None;
    }
    if let Some((_, tail)) = message.rsplit_once('|') {
        if let Ok(at) = tail.trim().parse::<i64>() {
            if at > now {
                return Some(at);
            }
        }
    }
    if let Some(index) = lower.find("try again in ") {
        let secs = duration_words(&lower[index + "try again in ".len()..]);
        if secs > 0 {
            return Some(now + secs);
        }
    }
    Some(now + UNKNOWN_RESET_SECS)
}

/// "2 days 3 hours 4 minutes" (or "5h 30m", "45 seconds") in seconds.
fn duration_words(text: &str) -> i64 {
    let mut total = 0i64;
    let mut number: Option<i64> = None;
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { ' ' })
        .collect();
    for word in cleaned.split_whitespace() {
        let split = word.find(|c: char| !c.is_ascii_digit()).unwrap_or(word.len());
        let (digits, unit) = word.split_at(split);
        if !digits.is_empty() {
            number = digits.parse().ok();
        }
        if unit.is_empty() {
            continue;
        }
        let Some(n) = number.take() else {
            break;
        };
        let scale = match unit {
            u if u.starts_with("d") => 86_400,
            u if u.starts_with("h") => 3_600,
            u if u.starts_with("m") && !u.starts_with("mo") => 60,
            u if u.starts_with("s") => 1,
            _ => break,
        };
        total += n * scale;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_and_codex_limits_give_the_reset_time() {
        let now = 1_700_000_000;
        assert_eq!(
            usage_limit("Claude AI usage limit reached|1700003600", now),
            Some(1_700_003_600)
        );
        assert_eq!(
            usage_limit(
                "You've hit your usage limit. Upgrade to Pro or try again in 2 days 3 hours 4 minutes.",
                now
            ),
            Some(now + 2 * 86_400 + 3 * 3_600 + 4 * 60)
        );
        assert_eq!(
            usage_limit("5-hour limit reached ∙ resets 3pm", now),
            Some(now + UNKNOWN_RESET_SECS)
        );
        assert_eq!(usage_limit("not logged in", now), None);
        assert_eq!(usage_limit("claude failed: error_max_turns", now), None);
    }
}
