//! Target health: a provider or worker that keeps failing is put in cooldown, skipped by
//! the router while it cools, then probed back in with a single request. A `Retry-After`
//! (or a CLI subscription's "limited until") sets the cooldown's end directly; otherwise
//! it grows exponentially from `BASE_COOLDOWN` to `MAX_COOLDOWN`.
//!
//! Keys are `provider:<id>` and `worker:<token id>` (a worker that reconnects is the same
//! machine with the same limits).

use crate::clock::rfc3339_at;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Consecutive failures before a target cools down (a `Retry-After` cools at once).
pub const FAILURES_BEFORE_COOLDOWN: u32 = 3;
pub const BASE_COOLDOWN: Duration = Duration::from_secs(5);
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);
/// A `Retry-After` longer than this is capped: a provider is re-probed at least this often.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Healthy: any number of requests.
    Open,
    /// Its cooldown ended: this request is the one probe; the outcome decides.
    Probe,
    /// Cooling (or another request is probing it): skip it.
    Closed,
}

/// What a failure says about the target's health.
#[derive(Debug, Clone)]
pub struct Fault {
    pub reason: String,
    /// The target said when to come back (`Retry-After`, a usage-limit reset).
    pub until: Option<SystemTime>,
    /// A subscription limit rather than a fault: shown as `limited_until`.
    pub limited: bool,
}

#[derive(Debug, Default, Clone)]
struct Entry {
    consecutive: u32,
    /// Cooldowns served in a row, for the exponential backoff.
    strikes: u32,
    until: Option<SystemTime>,
    reason: Option<String>,
    limited: bool,
    probing: bool,
}

/// A target's health as the admin API shows it (`null`s when healthy).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HealthView {
    /// RFC 3339: skipped by the router until then (failures or its `Retry-After`).
    pub cooldown_until: Option<String>,
    pub cooldown_reason: Option<String>,
    /// RFC 3339: a CLI subscription's usage limit resets then; routed around until then.
    pub limited_until: Option<String>,
    pub consecutive_failures: u32,
}

impl HealthView {
    /// Adds these fields to a JSON object (a provider or worker view).
    pub fn merge_into(&self, value: &mut serde_json::Value) {
        if let (Some(object), Ok(serde_json::Value::Object(fields))) =
            (value.as_object_mut(), serde_json::to_value(self))
        {
            object.extend(fields);
        }
    }
}

#[derive(Default)]
pub struct Health {
    entries: Mutex<HashMap<String, Entry>>,
}

pub fn provider_key(id: &str) -> String {
    format!("provider:{id}")
}

pub fn worker_key(token_id: &str) -> String {
    format!("worker:{token_id}")
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request may use `key` now, without taking the probe.
    pub fn is_cooling(&self, key: &str, now: SystemTime) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|e| e.probing || e.until.is_some_and(|until| now < until))
    }

    /// Whether a request may use `key` now; a `Probe` answer makes this request the probe.
    pub fn admit(&self, key: &str, now: SystemTime) -> Access {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(key) else {
            return Access::Open;
        };
        match entry.until {
            None => Access::Open,
            Some(_) if entry.probing => Access::Closed,
            Some(until) if now < until => Access::Closed,
            Some(_) => {
                entry.probing = true;
                Access::Probe
            }
        }
    }

    pub fn succeeded(&self, key: &str) {
        let mut entries = self.lock();
        if entries.contains_key(key) {
            entries.remove(key);
            tracing::info!(target_key = key, "target healthy again");
        }
    }

    /// A failure that is the target's (not the request's). Returns when it cools until.
    pub fn failed(&self, key: &str, fault: Fault, now: SystemTime) -> Option<SystemTime> {
        let mut entries = self.lock();
        let entry = entries.entry(key.to_string()).or_default();
        entry.consecutive += 1;
        let was_probe = std::mem::take(&mut entry.probing);
        // A request let through before the cooldown began, failing only now, is the same
        // incident: a burst of them would otherwise double the cooldown per request (a
        // second's blip seen by 50 requests in flight: five minutes out) and log each. An
        // end the target itself named (`Retry-After`) still counts if it is later.
        if let Some(cooling) = entry.until.filter(|until| !was_probe && now < *until) {
            if let Some(told) = fault.until.map(|told| told.min(now + MAX_RETRY_AFTER)) {
                if told > cooling {
                    entry.until = Some(told);
                    entry.limited = fault.limited;
                    entry.reason = Some(fault.reason);
                }
            }
            return entry.until;
        }
        let cool = fault.until.is_some() || was_probe || entry.consecutive >= FAILURES_BEFORE_COOLDOWN;
        if !cool {
            return None;
        }
        let until = match fault.until {
            Some(until) => until.min(now + MAX_RETRY_AFTER),
            None => {
                let factor = 2u32.saturating_pow(entry.strikes.min(16));
                now + BASE_COOLDOWN.saturating_mul(factor).min(MAX_COOLDOWN)
            }
        };
        entry.strikes += 1;
        entry.until = Some(until);
        entry.limited = fault.limited;
        entry.reason = Some(fault.reason);
        tracing::warn!(target_key = key, reason = ?entry.reason, until = %rfc3339_at(until), "target cooling down");
        Some(until)
    }

    /// A probe whose request ended without a verdict (the client went away): let the next
    /// request probe.
    pub fn probe_abandoned(&self, key: &str) {
        if let Some(entry) = self.lock().get_mut(key) {
            entry.probing = false;
        }
    }

    /// When `key`'s cooldown (or limit) ends, if it is cooling.
    pub fn until(&self, key: &str) -> Option<SystemTime> {
        self.lock().get(key).and_then(|e| e.until)
    }

    pub fn view(&self, key: &str, now: SystemTime) -> HealthView {
        let entries = self.lock();
        let Some(entry) = entries.get(key) else {
            return HealthView::default();
        };
        let until = entry.until.filter(|until| now < *until || entry.probing);
        HealthView {
            cooldown_until: until.filter(|_| !entry.limited).map(rfc3339_at),
            cooldown_reason: until.and(entry.reason.clone()),
            limited_until: until.filter(|_| entry.limited).map(rfc3339_at),
            consecutive_failures: entry.consecutive,
        }
    }

    /// Targets cooling right now, for the metrics.
    pub fn cooling_count(&self, now: SystemTime) -> usize {
        self.lock()
            .values()
            .filter(|e| e.until.is_some_and(|until| now < until))
            .count()
    }
}

/// When a `Retry-After` value (seconds or an HTTP date) says to come back.
pub fn retry_after_until(value: &str, now: SystemTime) -> Option<SystemTime> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(now + Duration::from_secs(secs));
    }
    let format = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(value, &format).ok()?;
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(until: Option<SystemTime>) -> Fault {
        Fault {
            reason: "answered 503".into(),
            until,
            limited: false,
        }
    }

    #[test]
    fn repeated_failures_cool_a_target_then_one_probe_brings_it_back() {
        let health = Health::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for _ in 1..FAILURES_BEFORE_COOLDOWN {
            assert_eq!(health.failed("p", fault(None), t0), None);
            assert_eq!(health.admit("p", t0), Access::Open);
        }
        let until = health.failed("p", fault(None), t0).unwrap();
        assert_eq!(until, t0 + BASE_COOLDOWN);
        assert_eq!(health.admit("p", t0), Access::Closed);
        assert!(health.view("p", t0).cooldown_until.is_some());
        let later = until + Duration::from_millis(1);
        assert_eq!(health.admit("p", later), Access::Probe);
        assert_eq!(health.admit("p", later), Access::Closed, "one probe at a time");
        // The probe fails: twice as long.
        let until = health.failed("p", fault(None), later).unwrap();
        assert_eq!(until, later + BASE_COOLDOWN * 2);
        let later = until + Duration::from_millis(1);
        assert_eq!(health.admit("p", later), Access::Probe);
        health.succeeded("p");
        assert_eq!(health.admit("p", later), Access::Open);
        assert_eq!(health.view("p", later), HealthView::default());
    }

    #[test]
    fn retry_after_cools_at_once_and_sets_the_end() {
        let health = Health::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let until = retry_after_until("30", now).unwrap();
        assert_eq!(health.failed("p", fault(Some(until)), now), Some(until));
        assert_eq!(health.admit("p", now + Duration::from_secs(29)), Access::Closed);
        assert_eq!(health.admit("p", now + Duration::from_secs(31)), Access::Probe);
        assert_eq!(
            retry_after_until("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480))
        );
        assert_eq!(retry_after_until("soon", now), None);
    }

    #[test]
    fn requests_in_flight_failing_during_a_cooldown_neither_lengthen_nor_escalate_it() {
        let health = Health::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut until = None;
        for _ in 0..FAILURES_BEFORE_COOLDOWN {
            until = health.failed("p", fault(None), t0);
        }
        let until = until.unwrap();
        assert_eq!(until, t0 + BASE_COOLDOWN);
        // Fifty requests admitted before it began fail over the next second.
        for i in 0..50 {
            let now = t0 + Duration::from_millis(20 * i);
            assert_eq!(health.failed("p", fault(None), now), Some(until));
        }
        assert_eq!(health.view("p", t0).consecutive_failures, FAILURES_BEFORE_COOLDOWN + 50);
        // One of them was told to come back later: that end holds.
        let told = t0 + Duration::from_secs(30);
        assert_eq!(health.failed("p", fault(Some(told)), t0), Some(told));
        let after = told + Duration::from_millis(1);
        assert_eq!(health.admit("p", after), Access::Probe);
        // The failed probe is the second strike: twice the base, not 2^50 times.
        assert_eq!(health.failed("p", fault(None), after), Some(after + BASE_COOLDOWN * 2));
    }

    #[test]
    fn backoff_is_capped() {
        let health = Health::default();
        let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut last = Duration::ZERO;
        for _ in 0..30 {
            if let Some(until) = health.failed("p", fault(None), now) {
                last = until.duration_since(now).unwrap();
                now = until + Duration::from_millis(1);
                assert_eq!(health.admit("p", now), Access::Probe);
            }
        }
        assert_eq!(last, MAX_COOLDOWN);
    }
}
