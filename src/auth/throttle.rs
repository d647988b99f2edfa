//! Failed-login accounting: stops password guessing without handing attackers a lockout tool.
//!
//! - Per **source** (the client's IP address; IPv6 by /64, which one host usually owns):
//!   `FREE_FAILURES` misses are free, then every further attempt must wait a backoff that
//!   doubles with each miss (1 s, 2 s, 4 s … capped at `MAX_BACKOFF`). Attempts during the
//!   backoff are refused at once (429 + Retry-After) and cost no hashing.
//! - Per **account**: past `ACCOUNT_FAILURES` misses within `ACCOUNT_WINDOW` from all sources
//!   together (a distributed guess), a source that has missed even once may not try that
//!   account again until the window ends. A source with no misses still may: the owner's
//!   correct password from their own machine logs in during an attack.
//! - A success clears its source. A source silent for `FORGET_AFTER` is forgotten.
//!
//! Accounting is atomic: an attempt is counted as a miss when it is *admitted*, under one
//! lock, before its password is checked, and refunded if it turns out right (or was never
//! judged). So concurrent guesses cannot race past the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const FREE_FAILURES: u32 = 5;
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
pub const ACCOUNT_FAILURES: u32 = 50;
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(15 * 60);
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Bounds the tables an address-spraying attacker could grow.
const MAX_SOURCES: usize = 100_000;
const MAX_ACCOUNTS: usize = 10_000;
const MAX_ACCOUNT_KEY: usize = 64;

/// Where an attempt comes from: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(u128);

impl Source {
    pub fn of(address: Option<IpAddr>) -> Source {
        match address.map(canonical) {
            Some(IpAddr::V4(v4)) => Source(u128::from(u32::from(v4))),
            Some(IpAddr::V6(v6)) => Source((u128::from(v6) & !0xFFFF_FFFF_FFFF_FFFFu128) | 1),
            // No address (not a TCP connection: in-process callers): one shared source.
            None => Source(u128::MAX),
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[derive(Debug, Default)]
struct SourceEntry {
    failures: u32,
    blocked_until: Option<Instant>,
    last_attempt: Option<Instant>,
}

#[derive(Debug)]
struct AccountEntry {
    failures: u32,
    window_start: Instant,
}

#[derive(Default)]
struct Tables {
    sources: HashMap<Source, SourceEntry>,
    accounts: HashMap<String, AccountEntry>,
}

#[derive(Default, Clone)]
pub struct LoginThrottle {
    tables: Arc<Mutex<Tables>>,
}

/// An admitted attempt. Tell it the verdict; dropped without one, it is refunded.
pub struct Attempt {
    throttle: LoginThrottle,
    source: Source,
    account: Option<String>,
    settled: bool,
}

fn backoff(failures: u32) -> Duration {
    let over = failures.saturating_sub(FREE_FAILURES).min(20);
    Duration::from_secs(1u64 << over).min(MAX_BACKOFF)
}

fn account_key(username: &str) -> String {
    username.trim().to_lowercase().chars().take(MAX_ACCOUNT_KEY).collect()
}

impl LoginThrottle {
    /// Admits an attempt and counts it as a miss until told otherwise, or says how many
    /// seconds the source must wait.
    pub fn admit(&self, source: Source, username: &str) -> Result<Attempt, u64> {
        let now = Instant::now();
        let account = account_key(username);
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let tables = &mut *tables;
        if tables.sources.len() >= MAX_SOURCES && !tables.sources.contains_key(&source) {
            tables.sources.retain(|_, e| !forgettable(e, now));
            if tables.sources.len() >= MAX_SOURCES {
                return Err(1);
            }
        }
        let entry = tables.sources.entry(source).or_default();
        if forgettable(entry, now) {
            *entry = SourceEntry::default();
        }
        if let Some(until) = entry.blocked_until.filter(|until| *until > now) {
            return Err(seconds_until(until, now));
        }
        let account_entry = tables.accounts.get_mut(&account);
        if let Some(acc) = account_entry {
            if now.duration_since(acc.window_start) >= ACCOUNT_WINDOW {
                acc.failures = 0;
                acc.window_start = now;
            }
            if acc.failures >= ACCOUNT_FAILURES && entry.failures > 0 {
                return Err(seconds_until(acc.window_start + ACCOUNT_WINDOW, now));
            }
        }
        entry.failures += 1;
        entry.last_attempt = Some(now);
        if entry.failures >= FREE_FAILURES {
            entry.blocked_until = Some(now + backoff(entry.failures));
        }
        let tracked = if tables.accounts.contains_key(&account) || tables.accounts.len() < MAX_ACCOUNTS {
            true
        } else {
            tables
                .accounts
                .retain(|_, a| now.duration_since(a.window_start) < ACCOUNT_WINDOW);
            tables.accounts.len() < MAX_ACCOUNTS
        };
        if tracked {
            let acc = tables.accounts.entry(account.clone()).or_insert(AccountEntry {
                failures: 0,
                window_start: now,
            });
            acc.failures += 1;
        }
        Ok(Attempt {
            throttle: self.clone(),
            source,
            account: tracked.then_some(account),
            settled: false,
        })
    }
}

fn forgettable(entry: &SourceEntry, now: Instant) -> bool {
    let blocked = entry.blocked_until.is_some_and(|until| until > now);
    !blocked
        && entry
            .last_attempt
            .is_none_or(|at| now.duration_since(at) >= FORGET_AFTER)
}

fn seconds_until(when: Instant, now: Instant) -> u64 {
    let wait = when.saturating_duration_since(now);
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl Attempt {
    /// The password was wrong: the miss stays counted.
    pub fn failed(mut self) {
        self.settled = true;
    }

    /// The password was right: the source starts clean.
    pub fn succeeded(mut self) {
        self.settled = true;
        let mut tables = self.throttle.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.sources.remove(&self.source);
        refund_account(&mut tables, self.account.as_deref());
    }
}

fn refund_account(tables: &mut Tables, account: Option<&str>) {
    if let Some(acc) = account.and_then(|a| tables.accounts.get_mut(a)) {
        acc.failures = acc.failures.saturating_sub(1);
    }
}

impl Drop for Attempt {
    /// Never judged (the hasher was busy, the store failed): not a miss.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut tables = self.throttle.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = tables.sources.get_mut(&self.source) {
            entry.failures = entry.failures.saturating_sub(1);
            if entry.failures < FREE_FAILURES {
                entry.blocked_until = None;
            }
        }
        refund_account(&mut tables, self.account.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> Source {
        Source::of(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))))
    }

    #[test]
    fn free_misses_then_a_refusal_without_a_check() {
        let t = LoginThrottle::default();
        for _ in 0..FREE_FAILURES {
            t.admit(ip(1), "admin").unwrap().failed();
        }
        let wait = t.admit(ip(1), "admin").err().unwrap();
        assert!((1..=2).contains(&wait), "{wait}");
        // Another source, even for the same account, is not held back.
        t.admit(ip(2), "admin").unwrap().succeeded();
    }

    #[test]
    fn concurrent_attempts_cannot_race_past_the_limit() {
        let t = LoginThrottle::default();
        // All admitted before any verdict: only the free ones get through.
        let admitted: Vec<Attempt> = (0..60).filter_map(|_| t.admit(ip(1), "admin").ok()).collect();
        assert_eq!(admitted.len() as u32, FREE_FAILURES);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(FREE_FAILURES), Duration::from_secs(1));
        assert_eq!(backoff(FREE_FAILURES + 1), Duration::from_secs(2));
        assert_eq!(backoff(FREE_FAILURES + 3), Duration::from_secs(8));
        assert_eq!(backoff(FREE_FAILURES + 40), MAX_BACKOFF);
    }

    #[test]
    fn a_success_clears_the_source_and_an_unjudged_attempt_is_refunded() {
        let t = LoginThrottle::default();
        for _ in 0..FREE_FAILURES - 1 {
            t.admit(ip(1), "admin").unwrap().failed();
        }
        drop(t.admit(ip(1), "admin").unwrap());
        t.admit(ip(1), "admin").unwrap().succeeded();
        for _ in 0..FREE_FAILURES {
            t.admit(ip(1), "admin").unwrap().failed();
        }
        assert!(t.admit(ip(1), "admin").is_err());
    }

    #[test]
    fn a_distributed_guess_stops_failing_sources_but_not_clean_ones() {
        let t = LoginThrottle::default();
        let mut source = 0u32;
        for _ in 0..ACCOUNT_FAILURES {
            source += 1;
            let s = Source::of(Some(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + source))));
            t.admit(s, "Admin").unwrap().failed();
        }
        let s1 = Source::of(Some(IpAddr::V4(Ipv4Addr::from(0x0A00_0001))));
        assert!(t.admit(s1, "admin").is_err(), "a source that missed is held back");
        t.admit(ip(200), "admin").unwrap().succeeded();
        // Other accounts are not affected.
        t.admit(s1, "someone-else").unwrap().failed();
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let c: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert_eq!(Source::of(Some(a)), Source::of(Some(b)));
        assert_ne!(Source::of(Some(a)), Source::of(Some(c)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::of(Some(mapped)), ip(1));
    }
}
