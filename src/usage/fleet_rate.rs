//! Requests and tokens per minute across routers sharing one PostgreSQL database.
//!
//! The admission check stays in memory: a router admits against its own sliding window plus
//! what the other routers counted, as of its last exchange. Every `SYNC_INTERVAL` a task adds
//! this router's new counts to its row per (key, minute) in PostgreSQL and reads back the
//! others' (`Store::exchange_rates`). The others' counts come in whole minutes; the previous
//! minute is weighted by the part of it still inside the sliding 60 s window.
//!
//! Maximum overshoot: what the other routers admitted in the last exchange interval or two
//! (a count waits up to one interval to be sent, the others read it up to one interval
//! later), so about (routers − 1) × the key's rate per router × 2 × `SYNC_INTERVAL`.

use crate::store::{RateCount, RateDelta, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl FleetRate {
    pub(super) fn new() -> FleetRate {
        FleetRate {
            instance: rand::random(),
            pending: Mutex::default(),
            others: Mutex::default(),
        }
    }

    /// Counts what this router admitted (requests) or spent (tokens) for a key.
    pub(super) fn count(&self, key_id: &str, now_ms: i64, requests: i64, tokens: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending
            .entry((key_id.to_string(), now_ms.div_euclid(MINUTE_MS)))
            .or_default();
        entry.0 += requests;
        entry.1 += tokens;
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
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
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
            Ok(counts) => {
                fleet.set_others(counts);
                pruned_minute = minute;
                if std::mem::take(&mut failing) {
                    tracing::info!("fleet rate counters are shared again");
                }
            }
            Err(e) => {
                fleet.restore(deltas, minute - 1);
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
}
