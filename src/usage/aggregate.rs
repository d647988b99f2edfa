//! `/api/usage` aggregates: rows (and the daily rollups of pruned rows) folded by a
//! dimension, the CSV export, and latency percentiles per tier and route.

use crate::store::{DailyRollup, Rollup, RollupGroup, UsageRecord};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Tier,
    Provider,
    Model,
    ApiKey,
    Agent,
    Day,
    /// `2026-11-29/gpu`: per UTC day and tier, failed requests as `failed`, for the stacked
    /// daily chart.
    DayTier,
}

fn day_of(unix_ms: i64) -> String {
    crate::clock::rfc3339(unix_ms.div_euclid(1000))
        .chars()
        .take(10)
        .collect()
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<GroupBy> {
        Some(match text {
            "tier" => GroupBy::Tier,
            "provider" | "route" => GroupBy::Provider,
            "model" => GroupBy::Model,
            "api_key" => GroupBy::ApiKey,
            "agent" => GroupBy::Agent,
            "day" => GroupBy::Day,
            "day_tier" => GroupBy::DayTier,
            _ => return None,
        })
    }

    fn pick(self, group: &RollupGroup, at_ms: i64) -> String {
        let none = || "none".to_string();
        match self {
            GroupBy::Tier => group.tier.clone().unwrap_or_else(none),
            GroupBy::Provider => group.route.clone().unwrap_or_else(none),
            GroupBy::Model => group.model.clone(),
            GroupBy::ApiKey => group.api_key_id.clone().unwrap_or_else(none),
            GroupBy::Agent => group.agent.clone().unwrap_or_else(none),
            GroupBy::Day => day_of(at_ms),
            // A rollup keeps no outcome per request: a pruned day's failures stay under
            // their tier.
            GroupBy::DayTier => format!("{}/{}", day_of(at_ms), group.tier.as_deref().unwrap_or("none")),
        }
    }

    fn key(self, row: &UsageRecord) -> String {
        let none = || "none".to_string();
        match self {
            GroupBy::Tier => row.tier.clone().unwrap_or_else(none),
            GroupBy::Provider => row.route.clone().unwrap_or_else(none),
            GroupBy::Model => row.model.clone(),
            GroupBy::ApiKey => row.api_key_id.clone().unwrap_or_else(none),
            GroupBy::Agent => row.agent.clone().unwrap_or_else(none),
            GroupBy::Day => day_of(row.at_ms),
            GroupBy::DayTier => {
                let tier = if row.outcome.starts_with("error") {
                    "failed"
                } else {
                    row.tier.as_deref().unwrap_or("none")
                };
                format!("{}/{tier}", day_of(row.at_ms))
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub cancelled: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub reasoning_tokens: u64,
    /// Rows whose counts were estimated (no upstream reported any).
    pub estimated: u64,
    pub cost_usd: f64,
    pub cloud_equivalent_usd: f64,
    /// What the GPU/CLI tiers avoided: cloud-equivalent minus what was paid.
    pub saved_usd: f64,
}

impl Totals {
    fn add_rollup(&mut self, r: &Rollup) {
        self.requests += r.requests;
        self.errors += r.errors;
        self.cancelled += r.cancelled;
        self.input_tokens += r.input_tokens;
        self.output_tokens += r.output_tokens;
        self.cache_read_tokens += r.cache_read_tokens;
        self.cache_write_5m_tokens += r.cache_write_5m_tokens;
        self.cache_write_1h_tokens += r.cache_write_1h_tokens;
        self.reasoning_tokens += r.reasoning_tokens;
        self.cost_usd += r.cost_usd;
        self.cloud_equivalent_usd += r.cloud_equivalent_usd;
        self.saved_usd = self.cloud_equivalent_usd - self.cost_usd;
    }

    fn add(&mut self, row: &UsageRecord) {
        let mut one = Rollup::default();
        one.add(row);
        self.add_rollup(&one);
        if row.tokens_estimated {
            self.estimated += 1;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Rows and pruned days folded by `group_by`, sorted by key, and the grand total.
pub fn aggregate(rows: &[UsageRecord], pruned: &[DailyRollup], group_by: GroupBy) -> (Vec<Group>, Totals) {
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for day in pruned {
        groups
            .entry(group_by.pick(&day.group, day.day_ms))
            .or_default()
            .add_rollup(&day.totals);
        total.add_rollup(&day.totals);
    }
    for row in rows {
        groups.entry(group_by.key(row)).or_default().add(row);
        total.add(row);
    }
    let groups = groups.into_iter().map(|(key, totals)| Group { key, totals }).collect();
    (groups, total)
}

/// The groups as CSV (RFC 4180 quoting), one header line.
pub fn to_csv(groups: &[Group]) -> String {
    let mut out = String::from(
        "key,requests,errors,cancelled,input_tokens,output_tokens,cache_read_tokens,cache_write_5m_tokens,cache_write_1h_tokens,reasoning_tokens,estimated,cost_usd,cloud_equivalent_usd,saved_usd\n",
    );
    for g in groups {
        let t = &g.totals;
        let key = if g.key.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", g.key.replace('"', "\"\""))
        } else {
            g.key.clone()
        };
        out.push_str(&format!(
            "{key},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6}\n",
            t.requests,
            t.errors,
            t.cancelled,
            t.input_tokens,
            t.output_tokens,
            t.cache_read_tokens,
            t.cache_write_5m_tokens,
            t.cache_write_1h_tokens,
            t.reasoning_tokens,
            t.estimated,
            t.cost_usd,
            t.cloud_equivalent_usd,
            t.saved_usd
        ));
    }
    out
}

/// Latency percentiles of one tier and route over the rows that reached it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub tier: String,
    pub route: String,
    pub ttfb_p50_ms: Option<u64>,
    pub ttfb_p95_ms: Option<u64>,
    pub ttfb_p99_ms: Option<u64>,
    pub total_p50_ms: Option<u64>,
    pub total_p95_ms: Option<u64>,
    pub total_p99_ms: Option<u64>,
    pub requests: u64,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// p50/p95/p99 of time to first byte and total time per (tier, route), over rows that
/// reached a target. Time to first byte counts answered rows only.
pub fn latency(rows: &[UsageRecord]) -> Vec<Latency> {
    let mut by: BTreeMap<(String, String), (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for row in rows {
        let (Some(tier), Some(route)) = (&row.tier, &row.route) else {
            continue;
        };
        let entry = by.entry((tier.clone(), route.clone())).or_default();
        if let Some(ttfb) = row.ms_to_first_byte {
            entry.0.push(ttfb);
        }
        entry.1.push(row.ms_total);
    }
    by.into_iter()
        .map(|((tier, route), (mut ttfb, mut total))| {
            ttfb.sort_unstable();
            total.sort_unstable();
            Latency {
                tier,
                route,
                ttfb_p50_ms: percentile(&ttfb, 50.0),
                ttfb_p95_ms: percentile(&ttfb, 95.0),
                ttfb_p99_ms: percentile(&ttfb, 99.0),
                total_p50_ms: percentile(&total, 50.0),
                total_p95_ms: percentile(&total, 95.0),
                total_p99_ms: percentile(&total, 99.0),
                requests: total.len() as u64,
            }
        })
        .collect()
}

/// Latency of one tier on one UTC day, for the latency-over-time chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayLatency {
    pub day: String,
    pub tier: String,
    pub ttfb_p95_ms: Option<u64>,
    pub total_p50_ms: Option<u64>,
    pub total_p95_ms: Option<u64>,
    pub requests: u64,
}

/// p50/p95 per UTC day and tier (all routes of the tier together), over rows that reached
/// a target; ordered by day, then tier.
pub fn latency_by_day(rows: &[UsageRecord]) -> Vec<DayLatency> {
    let mut by: BTreeMap<(String, String), (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for row in rows {
        let (Some(tier), Some(_)) = (&row.tier, &row.route) else {
            continue;
        };
        let entry = by.entry((day_of(row.at_ms), tier.clone())).or_default();
        if let Some(ttfb) = row.ms_to_first_byte {
            entry.0.push(ttfb);
        }
        entry.1.push(row.ms_total);
    }
    by.into_iter()
        .map(|((day, tier), (mut ttfb, mut total))| {
            ttfb.sort_unstable();
            total.sort_unstable();
            DayLatency {
                day,
                tier,
                ttfb_p95_ms: percentile(&ttfb, 95.0),
                total_p50_ms: percentile(&total, 50.0),
                total_p95_ms: percentile(&total, 95.0),
                requests: total.len() as u64,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn row(
        tier: &str,
        model: &str,
        input: u64,
        output: u64,
        cost: f64,
        equivalent: f64,
        outcome: &str,
    ) -> UsageRecord {
        UsageRecord {
            at_ms: 1_700_000_000_000,
            api_key_id: Some("k1".into()),
            tier: Some(tier.into()),
            route: Some(format!("{tier}-route")),
            model: model.into(),
            input_tokens: input,
            output_tokens: output,
            cost_usd: cost,
            cloud_equivalent_usd: equivalent,
            ms_to_first_byte: Some(5),
            ms_total: 10,
            outcome: outcome.into(),
            status: 200,
            ..Default::default()
        }
    }

    #[test]
    fn day_tier_groups_put_failures_apart_from_their_tier() {
        let rows = vec![
            row("gpu", "qwen", 100, 50, 0.0, 0.002, "ok"),
            row("cloud", "gpt-4o", 1000, 500, 0.0075, 0.0075, "ok"),
            row("cloud", "gpt-4o", 0, 0, 0.0, 0.0, "error:upstream_error"),
        ];
        let (groups, _) = aggregate(&rows, &[], GroupBy::DayTier);
        let keys: Vec<&str> = groups.iter().map(|g| g.key.split_once('/').unwrap().1).collect();
        assert_eq!(keys, ["cloud", "failed", "gpu"]);
        assert!(groups
            .iter()
            .all(|g| g.key.len() == "2026-11-29/".len() + g.key.split_once('/').unwrap().1.len()));
    }

    #[test]
    fn aggregates_by_tier_with_savings_and_pruned_days() {
        let rows = vec![
            row("gpu", "qwen", 100, 50, 0.0, 0.002, "ok"),
            row("gpu", "qwen", 10, 5, 0.0, 0.0002, "cancelled"),
            row("cloud", "gpt-4o", 1000, 500, 0.0075, 0.0075, "ok"),
            row("cloud", "gpt-4o", 0, 0, 0.0, 0.0, "error:upstream_error"),
        ];
        let pruned = vec![DailyRollup {
            day_ms: 1_690_000_000_000,
            group: RollupGroup {
                tier: Some("gpu".into()),
                model: "qwen".into(),
                ..RollupGroup::default()
            },
            totals: Rollup {
                requests: 3,
                input_tokens: 30,
                cloud_equivalent_usd: 0.001,
                ..Rollup::default()
            },
        }];
        let (groups, total) = aggregate(&rows, &pruned, GroupBy::Tier);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].key, "cloud");
        assert_eq!(groups[0].totals.requests, 2);
        assert_eq!(groups[0].totals.errors, 1);
        assert!((groups[0].totals.saved_usd).abs() < 1e-12);
        assert_eq!(groups[1].key, "gpu");
        assert_eq!(groups[1].totals.requests, 5);
        assert_eq!(groups[1].totals.input_tokens, 140);
        assert_eq!(groups[1].totals.cancelled, 1);
        assert!((groups[1].totals.saved_usd - 0.0032).abs() < 1e-12);
        assert_eq!(total.requests, 7);
        let csv = to_csv(&groups);
        assert!(csv.starts_with("key,requests"));
        assert!(csv.contains("\ngpu,5,0,1,140,55,0,0,0,0,0,"), "{csv}");
    }

    #[test]
    fn percentiles_by_nearest_rank_per_tier_and_route() {
        let mut rows = Vec::new();
        for ms in 1..=100u64 {
            let mut r = row("gpu", "m", 0, 0, 0.0, 0.0, "ok");
            r.ms_total = ms * 10;
            r.ms_to_first_byte = Some(ms);
            rows.push(r);
        }
        let mut never = row("cloud", "m", 0, 0, 0.0, 0.0, "error:x");
        never.ms_to_first_byte = None;
        rows.push(never);
        let lat = latency(&rows);
        assert_eq!(lat.len(), 2);
        assert_eq!(lat[0].tier, "cloud");
        assert_eq!(lat[0].ttfb_p50_ms, None);
        let gpu = &lat[1];
        assert_eq!(
            (gpu.ttfb_p50_ms, gpu.ttfb_p95_ms, gpu.ttfb_p99_ms),
            (Some(50), Some(95), Some(99))
        );
        assert_eq!(gpu.total_p99_ms, Some(990));
        assert_eq!(gpu.requests, 100);
    }

    #[test]
    fn latency_by_day_is_per_utc_day_and_tier_across_routes() {
        let day = 86_400_000;
        let mut rows = Vec::new();
        for (offset, tier, route, ms) in [
            (0, "gpu", "box-1", 100),
            (0, "gpu", "box-2", 300),
            (0, "cloud", "openai", 900),
            (day, "gpu", "box-1", 50),
        ] {
            let mut r = row(tier, "m", 0, 0, 0.0, 0.0, "ok");
            r.at_ms += offset;
            r.route = Some(route.into());
            r.ms_total = ms;
            rows.push(r);
        }
        let mut refused = row("gpu", "m", 0, 0, 0.0, 0.0, "error:x");
        refused.route = None;
        rows.push(refused);
        let days = latency_by_day(&rows);
        let summary: Vec<String> = days
            .iter()
            .map(|d| {
                format!(
                    "{} {} {:?} {:?} {}",
                    d.day, d.tier, d.total_p50_ms, d.total_p95_ms, d.requests
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                "2023-11-14 cloud Some(900) Some(900) 1",
                "2023-11-14 gpu Some(100) Some(300) 2",
                "2023-11-15 gpu Some(50) Some(50) 1",
            ]
        );
    }
}
