//! Requests and tokens per minute across routers sharing one PostgreSQL database.
//!
//! The admission check stays in memory: a router admits against its own sliding window plus
//! what the other routers counted, as of its last exchange. Every `SYNC_INTERVAL` a task adds
//! this router's new counts to its row per (key, minute) in PostgreSQL and reads back the
//! others' (`Store::exchange_rates`). The others' counts come in whole minutes; the previous
//! minute is weighted by the part of it still inside the sliding 60 s window.
//!
//! A request this router admitted is unknown to the others until it was sent and they read
//! it: up to two exchange intervals. Admitting freely meanwhile would let each of n routers
//! take the whole remaining limit in a burst (n × the limit in all). So each router takes,
//! of what is left of the limit, at most its share (1/n, rounded up) in requests the
//! others may not know of yet ("unconfirmed"); past its share a request waits for the next
//! exchange (see `Usage::admit`). A request is confirmed once every other live router has
//! exchanged since it was sent (by the database's clock: their exchange read it). A router
//! admits only while the count it knows is under the limit, and what it does not know is
//! the others' unconfirmed requests, at most ⌈limit ÷ routers⌉ each: the overshoot is at
//! most (routers − 1) × ⌈limit ÷ routers⌉ requests. (A share taken early stays unconfirmed
//! while another router, its own requests confirmed, takes a new share on a count that does
//! not include it yet; so the shares alone do not bound it to the rounding.) With the
//! database unreachable
//! there is no exchange to wait for: each router admits on its own count plus the others'
//! counts as last read.

use crate::store::{RateCount, RateDelta, RateExchange, Store};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);

const MINUTE_MS: i64 = 60_000;

/// Requests and tokens.
type Counts = (i64, i64);

pub(super) struct FleetRate {
    /// This process's id in the shared counters (router names need not be unique).
    instance: i64,
    /// (key id, minute) → counted here since the last exchange.
    pending: Mutex<HashMap<(String, i64), Counts>>,
    /// key id → (minute, the other routers' counts) for the last two minutes.
    others: Mutex<HashMap<String, Vec<(i64, Counts)>>>,
    /// This router's requests the others may not have read yet.
    unconfirmed: Mutex<InTransit>,
    /// Routers sharing the limits as of the last exchange, this one included.
    routers: AtomicU32,
    /// The last exchange went through (else no share is waited for).
    exchanging: AtomicBool,
    /// Bumped after every exchange, for requests waiting for their share.
    exchanged: watch::Sender<u64>,
}

/// This router's requests on their way to the other routers, per key.
#[derive(Debug, Default)]
struct InTransit {
    /// Admitted since the last exchange began.
    pending: HashMap<String, i64>,
    /// Sent by the exchange under way.
    sending: HashMap<String, i64>,
    /// Sent by earlier exchanges, with the database time (µs) from which they were readable:
    /// confirmed once every other live router has exchanged after that.
    sent: VecDeque<(i64, HashMap<String, i64>)>,
}

impl InTransit {
    fn of(&self, key_id: &str) -> i64 {
        let batch = |b: &HashMap<String, i64>| b.get(key_id).copied().unwrap_or(0);
        batch(&self.pending) + batch(&self.sending) + self.sent.iter().map(|(_, b)| batch(b)).sum::<i64>()
    }
}

impl FleetRate {
    pub(super) fn new() -> FleetRate {
        FleetRate {
            instance: rand::random(),
            pending: Mutex::default(),
            others: Mutex::default(),
            unconfirmed: Mutex::default(),
            routers: AtomicU32::new(1),
            exchanging: AtomicBool::new(false),
            exchanged: watch::channel(0).0,
        }
    }

    /// Counts what this router admitted (requests) or spent (tokens) for a key.
    pub(super) fn count(&self, key_id: &str, now_ms: i64, requests: i64, tokens: i64) {
        // Both under the `pending` lock (always taken before `unconfirmed`), as in
        // `take_pending`: a request counted between its two steps would be marked sent by
        // an exchange that does not carry it, and confirmed before the others could read it.
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending
            .entry((key_id.to_string(), now_ms.div_euclid(MINUTE_MS)))
            .or_default();
        entry.0 += requests;
        entry.1 += tokens;
        if requests > 0 {
            let mut unconfirmed = self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
            *unconfirmed.pending.entry(key_id.to_string()).or_default() += requests;
        }
    }

    /// Whether one more request for a key fits this router's share of what is left of
    /// `limit`, `used` being the whole fleet's count as this router knows it. Always true
    /// for a router alone, or while exchanges fail.
    pub(super) fn within_share(&self, key_id: &str, limit: u64, used: u64) -> bool {
        let routers = u64::from(self.routers.load(Ordering::Acquire));
        if routers <= 1 || !self.exchanging.load(Ordering::Acquire) {
            return true;
        }
        let unconfirmed = self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner()).of(key_id);
        let unconfirmed = u64::try_from(unconfirmed).unwrap_or(0);
        unconfirmed < share(limit.saturating_sub(used), routers)
    }

    /// A receiver that sees every later exchange.
    pub(super) fn exchanges(&self) -> watch::Receiver<u64> {
        self.exchanged.subscribe()
    }

    /// What the other routers did with a key in the 60 s before `now_ms`, as last read.
    pub(super) fn others(&self, key_id: &str, now_ms: i64) -> (u64, u64) {
        let others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        let Some(minutes) = others.get(key_id) else {
            return (0, 0);
        };
        window_estimate(minutes, now_ms)
    }

    fn take_pending(&self) -> Vec<RateDelta> {
        let pending = {
            let mut counts = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // The requests marked as sending are exactly those in the counts taken here.
            let mut unconfirmed = self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
            for (key, n) in std::mem::take(&mut unconfirmed.pending) {
                *unconfirmed.sending.entry(key).or_default() += n;
            }
            std::mem::take(&mut *counts)
        };
        pending
            .into_iter()
            .map(|((key_id, minute), (requests, tokens))| RateDelta {
                key_id,
                minute,
                requests,
                tokens,
            })
            .collect()
    }

    /// Puts back counts an exchange failed to send, but none too old to matter any more.
    fn restore(&self, deltas: Vec<RateDelta>, oldest_minute: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for d in deltas.into_iter().filter(|d| d.minute >= oldest_minute) {
            let entry = pending.entry((d.key_id, d.minute)).or_default();
            entry.0 += d.requests;
            entry.1 += d.tokens;
        }
    }

    /// The exchange went through: what it sent is readable from `exchange.at_us`; what every
    /// other live router has exchanged since being sent is known to all of them.
    fn exchange_done(&self, exchange: RateExchange) {
        {
            let mut unconfirmed = self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
            let sent = std::mem::take(&mut unconfirmed.sending);
            if !sent.is_empty() {
                unconfirmed.sent.push_back((exchange.at_us, sent));
            }
            let read_by_all = exchange.others_seen_us.unwrap_or(i64::MAX);
            unconfirmed.sent.retain(|(at, _)| *at >= read_by_all);
        }
        self.set_others(exchange.counts);
        self.routers.store(exchange.routers.max(1), Ordering::Release);
        self.exchanging.store(true, Ordering::Release);
        self.exchanged.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The exchange failed: what it was to send goes with the next one.
    fn exchange_failed(&self) {
        {
            let mut unconfirmed = self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
            let sending = std::mem::take(&mut unconfirmed.sending);
            for (key, n) in sending {
                *unconfirmed.pending.entry(key).or_default() += n;
            }
        }
        self.exchanging.store(false, Ordering::Release);
        self.exchanged.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn set_others(&self, counts: Vec<RateCount>) {
        let mut others: HashMap<String, Vec<(i64, Counts)>> = HashMap::new();
        for c in counts {
            others
                .entry(c.key_id)
                .or_default()
                .push((c.minute, (c.requests, c.tokens)));
        }
        *self.others.lock().unwrap_or_else(|p| p.into_inner()) = others;
    }
}

/// The current minute's counts in full, plus the previous minute's weighted by how much of
/// it is still inside the sliding window.
fn window_estimate(minutes: &[(i64, Counts)], now_ms: i64) -> (u64, u64) {
    let current = now_ms.div_euclid(MINUTE_MS);
    let left_of_previous = 1.0 - now_ms.rem_euclid(MINUTE_MS) as f64 / MINUTE_MS as f64;
    let (mut requests, mut tokens) = (0.0, 0.0);
    for (minute, (r, t)) in minutes {
        let weight = match current - minute {
            0 => 1.0,
            1 => left_of_previous,
            _ => 0.0,
        };
        requests += *r as f64 * weight;
        tokens += *t as f64 * weight;
    }
    (requests.ceil().max(0.0) as u64, tokens.ceil().max(0.0) as u64)
}

/// A router's share of `left` among `routers`: rounded up, so one of them can always take
/// the last request.
fn share(left: u64, routers: u64) -> u64 {
    left.div_ceil(routers.max(1))
}

/// Seconds until the current minute ends: when the other routers' counts start to weigh less.
pub(super) fn secs_to_next_minute(now_ms: i64) -> u64 {
    ((MINUTE_MS - now_ms.rem_euclid(MINUTE_MS)) / 1000).max(1) as u64
}

/// Exchanges counts with the other routers every `SYNC_INTERVAL` until aborted. While the
/// database is unreachable the last known counts stay in force and new counts wait.
pub(super) async fn run(fleet: Arc<FleetRate>, store: Store) {
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_minute = 0;
    let mut failing = false;
    loop {
        tick.tick().await;
        let minute = crate::clock::now_unix_ms().div_euclid(MINUTE_MS);
        let deltas = fleet.take_pending();
        let prune = minute != pruned_minute;
        match store.exchange_rates(fleet.instance, minute - 1, &deltas, prune).await {
            Ok(exchange) => {
                fleet.exchange_done(exchange);
                pruned_minute = minute;
                if std::mem::take(&mut failing) {
                    tracing::info!("fleet rate counters are shared again");
                }
            }
            Err(e) => {
                fleet.restore(deltas, minute - 1);
                fleet.exchange_failed();
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "cannot share rate counters; admitting on the last known fleet counts");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_minute_weighs_what_is_left_of_it_in_the_window() {
        let minutes = [(10, (100, 1000)), (11, (20, 0))];
        // 15 s into minute 11: three quarters of minute 10 are still inside the window.
        assert_eq!(window_estimate(&minutes, 11 * MINUTE_MS + 15_000), (95, 750));
        // At the start of minute 12, minute 11 counts in full and minute 10 not at all.
        assert_eq!(window_estimate(&minutes, 12 * MINUTE_MS), (20, 0));
        assert_eq!(window_estimate(&minutes, 13 * MINUTE_MS), (0, 0));
    }

    #[test]
    fn counts_an_exchange_failed_to_send_go_out_with_the_next_but_not_stale_ones() {
        let fleet = FleetRate::new();
        fleet.count("k", 5 * MINUTE_MS, 2, 10);
        fleet.count("k", 5 * MINUTE_MS + 1, 1, 0);
        let deltas = fleet.take_pending();
        assert_eq!(deltas.len(), 1);
        assert_eq!((deltas[0].requests, deltas[0].tokens), (3, 10));
        let mut with_stale = deltas.clone();
        with_stale.push(RateDelta {
            key_id: "k".into(),
            minute: 1,
            requests: 9,
            tokens: 9,
        });
        fleet.restore(with_stale, 4);
        fleet.count("k", 5 * MINUTE_MS + 2, 1, 0);
        let again = fleet.take_pending();
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!((again[0].minute, again[0].requests), (5, 4));
    }

    #[test]
    fn others_are_what_the_last_exchange_read() {
        let fleet = FleetRate::new();
        assert_eq!(fleet.others("k", 5 * MINUTE_MS), (0, 0));
        fleet.set_others(vec![RateCount {
            key_id: "k".into(),
            minute: 5,
            requests: 7,
            tokens: 70,
        }]);
        assert_eq!(fleet.others("k", 5 * MINUTE_MS + 1), (7, 70));
        assert_eq!(fleet.others("other", 5 * MINUTE_MS + 1), (0, 0));
    }

    /// An exchange at database time `at_us`, after which the other routers last exchanged
    /// at `others_us`.
    fn exchanged_at(fleet: &FleetRate, routers: u32, at_us: i64, others_us: i64) {
        fleet.take_pending();
        fleet.exchange_done(RateExchange {
            counts: Vec::new(),
            routers,
            at_us,
            others_seen_us: Some(others_us),
        });
    }

    fn exchanged(fleet: &FleetRate, routers: u32) {
        exchanged_at(fleet, routers, 0, 0);
    }

    #[test]
    fn a_router_takes_its_share_of_what_is_left_until_the_others_have_read_its_requests() {
        let fleet = FleetRate::new();
        // Alone (or before any exchange) a router needs no share.
        fleet.count("k", 0, 5, 0);
        assert!(fleet.within_share("k", 6, 5));
        let fleet = FleetRate::new();
        exchanged(&fleet, 2);
        // Two routers, a limit of 6, nothing used: this one takes 2 of the 6 unconfirmed
        // (the second router, doing the same meanwhile, takes 2: 4 of 6 in all).
        let mut admitted = 0;
        while fleet.within_share("k", 6, admitted) {
            fleet.count("k", 0, 1, 0);
            admitted += 1;
        }
        assert_eq!(admitted, 2);
        // Sent by the next exchange, they are on their way to the other router…
        exchanged_at(&fleet, 2, 100, 90);
        assert!(!fleet.within_share("k", 6, admitted));
        // …still, while the other router has not exchanged since (it is slow)…
        exchanged_at(&fleet, 2, 200, 100);
        assert!(!fleet.within_share("k", 6, admitted));
        // …and known to it once it has: this router's share is free again.
        exchanged_at(&fleet, 2, 300, 101);
        assert!(fleet.within_share("k", 6, admitted + 2));
        assert!(fleet.within_share("other", 6, 0), "shares are per key");
    }

    #[test]
    fn shares_of_routers_bursting_at_once_add_up_to_at_most_the_limit_plus_the_rounding() {
        for routers in 2..=4u32 {
            for limit in 1..=40u64 {
                let fleets: Vec<FleetRate> = (0..routers).map(|_| FleetRate::new()).collect();
                for fleet in &fleets {
                    exchanged(fleet, routers);
                }
                // Each router bursts knowing only its own requests.
                let mut total = 0;
                for fleet in &fleets {
                    let mut mine = 0;
                    while fleet.within_share("k", limit, mine) {
                        fleet.count("k", 0, 1, 0);
                        mine += 1;
                    }
                    total += mine;
                }
                assert!(
                    total < limit + u64::from(routers),
                    "{routers} routers admitted {total} on a limit of {limit}"
                );
                assert!(total >= 1, "nobody admitted anything on {limit}");
            }
        }
    }

    #[test]
    fn while_exchanges_fail_no_share_is_waited_for() {
        let fleet = FleetRate::new();
        exchanged(&fleet, 3);
        fleet.count("k", 0, 2, 0);
        assert!(!fleet.within_share("k", 6, 2));
        fleet.take_pending();
        fleet.exchange_failed();
        assert!(fleet.within_share("k", 6, 2));
    }
}
