//! Wall-clock time as auxot stores and shows it: Unix seconds or milliseconds, and RFC 3339
//! (UTC) in every API response. The one home of these helpers, below every module.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in seconds.
pub fn now_unix() -> i64 {
    unix_at(SystemTime::now())
}

/// Unix time in milliseconds.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `at` in Unix seconds (0 before 1970, which a clock set wrong can give).
pub fn unix_at(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 (UTC), as every API response shows times.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// `at` as RFC 3339 (UTC), to the second.
pub fn rfc3339_at(at: SystemTime) -> String {
    rfc3339(unix_at(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_to_the_second() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339_at(UNIX_EPOCH + Duration::from_millis(1_700_000_000_900)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339(i64::MAX),
            "",
            "out of range shows nothing rather than panicking"
        );
    }

    #[test]
    fn now_in_seconds_and_milliseconds_agree() {
        let ms = now_unix_ms();
        let secs = now_unix();
        assert!(secs >= 1_700_000_000, "{secs}");
        assert!((ms / 1000 - secs).abs() <= 1, "{ms} vs {secs}");
        assert_eq!(unix_at(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
