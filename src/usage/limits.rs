//! Per-key limits checked before dispatch, from memory: requests and tokens per minute
//! (on a fleet, with the other routers' counts, see `fleet_rate`) and the monthly spend
//! cap (this router's count, raised to the shared database's on every change notice).

use super::{fleet_rate, KeyLimits, Usage, UsageError};
use crate::store::month_number;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An API key's activity this calendar month (UTC), for the keys list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KeyMonth {
    pub spent_this_month_usd: f64,
    pub requests_this_month: u64,
    /// Unix millis of its last request since the router started or this month began.
    #[serde(skip)]
    pub last_used_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LimitExceeded {
    pub reason: &'static str,
    pub message: String,
    pub retry_after_secs: u64,
}

/// Why a request is not admitted right now.
pub(super) enum Hold {
    Refused(LimitExceeded),
    /// This router's share of the key's requests per minute is taken by requests the other
    /// routers have not heard of yet.
    AwaitExchange {
        rpm: u32,
    },
}

/// How long a request waits for this router's share of its key's requests per minute
/// (a few exchanges) before it is refused with `Retry-After: 1`.
const MAX_SHARE_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(super) struct Limits {
    pub(super) windows: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// key id → (month number, what it did in it)
    pub(super) spend: Mutex<HashMap<String, (i64, KeyMonth)>>,
    /// key id → tokens used in the last minute
    pub(super) tokens: Mutex<HashMap<String, MinuteTokens>>,
}

/// The tokens a key used in the last minute, in one-second buckets. A key's memory is the
/// same whatever its rate: a list of every request's tokens grew by 24 bytes a request,
/// tens of MB under a flood, and was summed whole on every check.
pub(super) struct MinuteTokens {
    buckets: [u64; 60],
    /// The second (since `MinuteTokens::now`'s start) of the newest bucket.
    second: u64,
}

impl Default for MinuteTokens {
    fn default() -> Self {
        MinuteTokens {
            buckets: [0; 60],
            second: 0,
        }
    }
}

impl MinuteTokens {
    /// Seconds on a monotonic clock.
    fn now() -> u64 {
        static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
        START.elapsed().as_secs()
    }

    /// Empties the buckets of the seconds that went by since the last call.
    fn advance(&mut self, now: u64) {
        if now <= self.second {
            return;
        }
        if now - self.second >= 60 {
            self.buckets = [0; 60];
        } else {
            for second in self.second + 1..=now {
                self.buckets[(second % 60) as usize] = 0;
            }
        }
        self.second = now;
    }

    fn add(&mut self, now: u64, tokens: u64) {
        self.advance(now);
        let bucket = &mut self.buckets[(now % 60) as usize];
        *bucket = bucket.saturating_add(tokens);
    }

    /// Tokens used in the minute up to `now`.
    fn used(&mut self, now: u64) -> u64 {
        self.advance(now);
        self.buckets.iter().fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    /// Seconds until this key's use falls below `limit` (at least 1).
    fn secs_until_below(&mut self, now: u64, limit: u64) -> u64 {
        let mut used = self.used(now);
        // The oldest bucket leaves the window first: in 1 s, then the next in 2 s…
        for age in 1..=60u64 {
            if used < limit {
                return age.saturating_sub(1).max(1);
            }
            used -= self.buckets[((now + age) % 60) as usize];
        }
        60
    }
}

/// The month number of `unix_ms` and the unix second the next month starts.
fn month_of(unix_ms: i64) -> (i64, i64) {
    let month = month_number(unix_ms);
    let (year, m) = ((month + 1).div_euclid(12), (month + 1).rem_euclid(12) + 1);
    let next = time::Date::from_calendar_date(
        year as i32,
        time::Month::try_from(m as u8).unwrap_or(time::Month::January),
        1,
    )
    .map(|d| d.midnight().assume_utc().unix_timestamp())
    .unwrap_or(unix_ms / 1000 + 86_400);
    (month, next)
}

impl Usage {
    /// Admits a request of `key_id` or refuses it (before dispatch) when its key is over a
    /// limit. On a fleet, a request past this router's share of what is left of the key's
    /// requests per minute waits for the next exchange with the other routers (see
    /// `fleet_rate`), up to `MAX_SHARE_WAIT`.
    pub async fn admit(&self, key_id: &str, limits: KeyLimits) -> Result<(), LimitExceeded> {
        let mut exchanges = self.fleet.as_ref().map(|f| f.exchanges());
        let deadline = tokio::time::Instant::now() + MAX_SHARE_WAIT;
        loop {
            if let Some(exchanges) = &mut exchanges {
                exchanges.borrow_and_update();
            }
            let rpm = match self.check_limits(key_id, limits) {
                Ok(()) => return Ok(()),
                Err(Hold::Refused(e)) => return Err(e),
                Err(Hold::AwaitExchange { rpm }) => rpm,
            };
            let exchanged = match &mut exchanges {
                Some(exchanges) => tokio::time::timeout_at(deadline, exchanges.changed())
                    .await
                    .is_ok_and(|r| r.is_ok()),
                None => false,
            };
            if !exchanged {
                self.metrics.rate_limited("rpm");
                return Err(LimitExceeded {
                    reason: "rpm",
                    message: format!(
                        "this API key is limited to {rpm} requests per minute across the routers, and this router's share of it is in use until the others' counts arrive"
                    ),
                    retry_after_secs: 1,
                });
            }
        }
    }

    /// The limits checked now, in memory: admitted (and counted), refused, or to wait for
    /// the next exchange of counts with the other routers.
    fn check_limits(&self, key_id: &str, limits: KeyLimits) -> Result<(), Hold> {
        let now_ms = crate::clock::now_unix_ms();
        if let Some(cap) = limits.monthly_spend_cap_usd {
            let (month, next_month) = month_of(now_ms);
            let spent = self
                .limits
                .spend
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key_id)
                .filter(|(m, _)| *m == month)
                .map_or(0.0, |(_, k)| k.spent_this_month_usd);
            if spent >= cap {
                self.metrics.rate_limited("spend_cap");
                return Err(Hold::Refused(LimitExceeded {
                    reason: "spend_cap",
                    message: format!("this API key reached its monthly spend cap of ${cap:.2} (spent ${spent:.4})"),
                    retry_after_secs: (next_month - now_ms / 1000).max(1) as u64,
                }));
            }
        }
        if let Some(tpm) = limits.tpm {
            let mut tokens = self.limits.tokens.lock().unwrap_or_else(|p| p.into_inner());
            let window = tokens.entry(key_id.to_string()).or_default();
            let now = MinuteTokens::now();
            let here = window.used(now);
            let used = here + self.fleet.as_ref().map_or(0, |f| f.others(key_id, now_ms).1);
            if used >= u64::from(tpm) {
                let wait = if here >= u64::from(tpm) {
                    window.secs_until_below(now, u64::from(tpm))
                } else {
                    fleet_rate::secs_to_next_minute(now_ms)
                };
                self.metrics.rate_limited("tpm");
                return Err(Hold::Refused(LimitExceeded {
                    reason: "tpm",
                    message: format!("this API key is limited to {tpm} tokens per minute (used {used})"),
                    retry_after_secs: wait.max(1),
                }));
            }
        }
        if let Some(rpm) = limits.rpm {
            let mut windows = self.limits.windows.lock().unwrap_or_else(|p| p.into_inner());
            let window = windows.entry(key_id.to_string()).or_default();
            let now = Instant::now();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
            {
                window.pop_front();
            }
            let others = self.fleet.as_ref().map_or(0, |f| f.others(key_id, now_ms).0);
            let used = window.len() as u64 + others;
            if used >= u64::from(rpm) {
                let oldest = window.front().copied().unwrap_or(now);
                let wait = if window.len() >= rpm as usize {
                    Duration::from_secs(60).saturating_sub(now.duration_since(oldest))
                } else {
                    Duration::from_secs(fleet_rate::secs_to_next_minute(now_ms))
                };
                self.metrics.rate_limited("rpm");
                return Err(Hold::Refused(LimitExceeded {
                    reason: "rpm",
                    message: format!("this API key is limited to {rpm} requests per minute"),
                    retry_after_secs: wait.as_secs().max(1),
                }));
            }
            if let Some(fleet) = &self.fleet {
                if !fleet.within_share(key_id, u64::from(rpm), used) {
                    return Err(Hold::AwaitExchange { rpm });
                }
                fleet.count(key_id, now_ms, 1, 0);
            }
            window.push_back(now);
        }
        Ok(())
    }

    /// Counts a finished request against its key: spend, requests, tokens per minute.
    pub(super) fn add_spend(&self, key_id: &str, at_ms: i64, usd: f64, tokens: u64) {
        let (month, _) = month_of(at_ms);
        {
            let mut spend = self.limits.spend.lock().unwrap_or_else(|p| p.into_inner());
            let entry = spend.entry(key_id.to_string()).or_insert((month, KeyMonth::default()));
            if entry.0 != month {
                *entry = (month, KeyMonth::default());
            }
            entry.1.spent_this_month_usd += usd.max(0.0);
            entry.1.requests_this_month += 1;
            entry.1.last_used_ms = entry.1.last_used_ms.max(Some(at_ms));
        }
        if tokens > 0 {
            if let Some(fleet) = &self.fleet {
                fleet.count(key_id, crate::clock::now_unix_ms(), 0, tokens as i64);
            }
            let mut windows = self.limits.tokens.lock().unwrap_or_else(|p| p.into_inner());
            match windows.get_mut(key_id) {
                Some(window) => window.add(MinuteTokens::now(), tokens),
                None => {
                    let mut window = MinuteTokens::default();
                    window.add(MinuteTokens::now(), tokens);
                    windows.insert(key_id.to_string(), window);
                }
            }
        }
    }

    /// What a key did this month (zeros when nothing yet).
    pub fn key_month(&self, key_id: &str) -> KeyMonth {
        let (month, _) = month_of(crate::clock::now_unix() * 1000);
        self.limits
            .spend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key_id)
            .filter(|(m, _)| *m == month)
            .map(|(_, k)| *k)
            .unwrap_or_default()
    }

    /// Takes this month's spend per key from the store, where the rows of every router on a
    /// shared database add up, so a monthly cap holds for the fleet. A key's figure only
    /// grows here: spend this router counted but has not written yet stays counted.
    pub async fn reload_spend(&self) -> Result<(), UsageError> {
        let month = month_number(crate::clock::now_unix_ms());
        let stored = self.store.spend_in_month(month).await?;
        let mut spend = self.limits.spend.lock().unwrap_or_else(|p| p.into_inner());
        for (key, usd) in stored {
            let entry = spend.entry(key).or_insert((month, KeyMonth::default()));
            if entry.0 != month {
                *entry = (month, KeyMonth::default());
            }
            entry.1.spent_this_month_usd = entry.1.spent_this_month_usd.max(usd);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_boundaries() {
        // 2026-11-25T00:00:00Z → next month starts 2026-12-01.
        let (_, next) = month_of(1_795_564_800_000);
        assert_eq!(crate::clock::rfc3339(next), "2026-12-01T00:00:00Z");
        let (_, next) = month_of(1_797_811_200_000); // 2026-12-21
        assert_eq!(crate::clock::rfc3339(next), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn a_minute_of_tokens_forgets_each_second_as_it_leaves_the_window() {
        let mut window = MinuteTokens::default();
        window.add(100, 10);
        window.add(100, 5);
        window.add(130, 20);
        assert_eq!(window.used(130), 35);
        assert_eq!(window.used(159), 35);
        assert_eq!(window.used(160), 20, "second 100 is a minute old");
        assert_eq!(window.used(189), 20);
        assert_eq!(window.used(190), 0);
        window.add(500, 7);
        assert_eq!(window.used(500), 7, "a gap longer than a minute empties it");
    }

    #[test]
    fn the_wait_is_until_enough_old_seconds_leave_to_go_below_the_limit() {
        let mut window = MinuteTokens::default();
        window.add(100, 10);
        window.add(110, 10);
        window.add(120, 10);
        // At 120 the key used 30. Below 25 once second 100 leaves (at 160: 40 s away).
        assert_eq!(window.secs_until_below(120, 25), 40);
        // Below 15 once 100 and 110 have left (at 170).
        assert_eq!(window.secs_until_below(120, 15), 50);
        assert_eq!(window.secs_until_below(120, 31), 1, "already below");
    }

    #[test]
    fn a_keys_minute_of_tokens_takes_the_same_memory_at_any_rate() {
        let mut window = MinuteTokens::default();
        for i in 0..1_000_000u64 {
            window.add(1_000 + i / 20_000, 3);
        }
        assert_eq!(window.used(1_049), 3_000_000);
        assert_eq!(std::mem::size_of::<MinuteTokens>(), 61 * 8);
    }
}
