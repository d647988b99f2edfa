//! In-process metrics, rendered in the Prometheus text exposition format (version 0.0.4).
//!
//! Updated once per finished request from every runtime thread at once, so the request path
//! takes no exclusive lock and allocates nothing: each label value owns a series of atomic
//! counters, found under a shared (read) lock. Only the first request with a new label value
//! takes a write lock, with the new series built before it. Rendering copies the counters into
//! `BTreeMap`s keyed by label values, so the output is in label order and deterministic.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Upper bounds (seconds) of the duration histograms; `+Inf` is implied. Spans a cached
/// cloud reply (milliseconds) to a long local generation (minutes).
pub const DURATION_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The label value used when a request never reached a target, so it had no tier or route.
const ABSENT: &str = "none";

/// Content type of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One finished request. tier/route are None when the request never reached a target (auth
/// error, bad input, no route).
#[derive(Debug, Clone, Copy)]
pub struct RequestObservation<'a> {
    pub tier: Option<&'a str>,
    pub route: Option<&'a str>,
    /// "ok" | "error" | "cancelled"
    pub outcome: &'a str,
    pub to_first_byte: Option<Duration>,
    pub total: Duration,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub overflowed_to_cloud: bool,
}

/// The cap on client connections (`--max-connections`) and its permits: the accept loop
/// takes one per connection, and `/metrics` reads how many are out.
#[derive(Debug)]
pub struct Connections {
    pub permits: Arc<Semaphore>,
    pub max: usize,
}

impl Connections {
    pub fn new(max: usize) -> Connections {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Connections {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Connections open now: the permits taken.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// Point-in-time values the caller reads from the live registries when rendering.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub workers: Vec<WorkerGauge>,
    pub queue_depth: usize,
    pub usage_rows_dropped: u64,
    /// Usage rows in the disk buffer waiting for PostgreSQL (0 on redb).
    pub usage_rows_buffered: u64,
    /// Providers and workers in cooldown or over a usage limit right now.
    pub targets_cooling: usize,
    pub connections_open: usize,
    pub connections_max: usize,
}

#[derive(Debug, Clone, Default)]
pub struct WorkerGauge {
    pub name: String,
    pub kind: String,
    pub slots_in_use: u32,
    pub slots_total: u32,
    pub online: bool,
}

#[derive(Debug, Default)]
pub struct Metrics {
    tiers: Labeled<TierSeries>,
    rate_limited: Labeled<AtomicU64>,
    cloud_overflow: AtomicU64,
}

/// Series keyed by one label value. Lookups borrow the caller's `&str`; a value seen for
/// the first time is inserted under the write lock, built (allocated) before taking it.
#[derive(Debug)]
struct Labeled<T> {
    by_value: RwLock<HashMap<String, T>>,
}

impl<T> Default for Labeled<T> {
    fn default() -> Self {
        Labeled {
            by_value: RwLock::new(HashMap::new()),
        }
    }
}

impl<T: Default> Labeled<T> {
    fn with<R>(&self, value: &str, update: impl FnOnce(&T) -> R) -> R {
        // Every update is atomic, so a panic elsewhere cannot leave a series half-written:
        // the data behind a poisoned lock is still good.
        {
            let map = self.by_value.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = map.get(value) {
                return update(series);
            }
        }
        let (key, fresh) = (value.to_owned(), T::default());
        let mut map = self.by_value.write().unwrap_or_else(PoisonError::into_inner);
        update(map.entry(key).or_insert(fresh))
    }

    /// Copies every series out (in label order) and formats after: a scrape never holds
    /// the lock while it writes text.
    fn snapshot<S>(&self, copy: impl Fn(&T) -> S) -> BTreeMap<String, S> {
        let map = self.by_value.read().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(value, series)| (value.clone(), copy(series)))
            .collect()
    }
}

/// Everything recorded for one tier.
#[derive(Debug, Default)]
struct TierSeries {
    /// route → outcome → finished requests.
    requests: Labeled<Labeled<AtomicU64>>,
    duration: AtomicHistogram,
    first_byte: AtomicHistogram,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cost_usd: AtomicF64,
}

/// An `f64` counter: the bits of the float, added to by compare-and-swap.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn add(&self, value: f64) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Acquire))
    }
}

#[derive(Debug, Default)]
struct AtomicHistogram {
    per_bucket: [AtomicU64; DURATION_BUCKETS.len()],
    sum: AtomicF64,
    count: AtomicU64,
}

impl AtomicHistogram {
    fn observe(&self, seconds: f64) {
        // `count` goes up before the bucket and is read after the buckets, so a scrape
        // never sees the `+Inf` bucket (the count) below a finite one.
        self.count.fetch_add(1, Ordering::AcqRel);
        if let Some(index) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.per_bucket[index].fetch_add(1, Ordering::AcqRel);
        }
        self.sum.add(seconds);
    }

    fn snapshot(&self) -> Histogram {
        let mut per_bucket = [0; DURATION_BUCKETS.len()];
        for (copy, bucket) in per_bucket.iter_mut().zip(&self.per_bucket) {
            *copy = bucket.load(Ordering::Acquire);
        }
        Histogram {
            per_bucket,
            sum: self.sum.get(),
            count: self.count.load(Ordering::Acquire),
        }
    }
}

/// What a scrape renders: the counters copied out, keyed by label values in label order.
#[derive(Debug, Default)]
struct Recorded {
    /// (tier, route, outcome)
    requests: BTreeMap<(String, String, String), u64>,
    duration: BTreeMap<String, Histogram>,
    first_byte: BTreeMap<String, Histogram>,
    /// (tier, direction)
    tokens: BTreeMap<(String, &'static str), u64>,
    cost_usd: BTreeMap<String, f64>,
    rate_limited: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations per bucket, not cumulative; made cumulative when rendered.
    per_bucket: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Metrics {
    pub fn observe(&self, o: &RequestObservation<'_>) {
        let tier = o.tier.unwrap_or(ABSENT);
        let route = o.route.unwrap_or(ABSENT);
        if o.overflowed_to_cloud {
            self.cloud_overflow.fetch_add(1, Ordering::Relaxed);
        }
        // A counter never goes down: a negative or non-finite cost is a pricing bug that must
        // not poison the total.
        let cost = if o.cost_usd.is_finite() && o.cost_usd > 0.0 {
            o.cost_usd
        } else {
            0.0
        };
        self.tiers.with(tier, |series| {
            series.requests.with(route, |outcomes| {
                outcomes.with(o.outcome, |count| count.fetch_add(1, Ordering::Relaxed));
            });
            series.duration.observe(o.total.as_secs_f64());
            if let Some(first_byte) = o.to_first_byte {
                series.first_byte.observe(first_byte.as_secs_f64());
            }
            series.input_tokens.fetch_add(o.input_tokens, Ordering::Relaxed);
            series.output_tokens.fetch_add(o.output_tokens, Ordering::Relaxed);
            series.cost_usd.add(cost);
        });
    }

    /// `reason`: "rpm" | "tpm" | "spend_cap".
    pub fn rate_limited(&self, reason: &str) {
        self.rate_limited
            .with(reason, |count| count.fetch_add(1, Ordering::Relaxed));
    }

    fn recorded(&self) -> Recorded {
        let mut recorded = Recorded::default();
        let tiers = self.tiers.snapshot(|series| {
            let requests = series
                .requests
                .snapshot(|outcomes| outcomes.snapshot(|count| count.load(Ordering::Relaxed)));
            (
                requests,
                series.duration.snapshot(),
                series.first_byte.snapshot(),
                series.input_tokens.load(Ordering::Relaxed),
                series.output_tokens.load(Ordering::Relaxed),
                series.cost_usd.get(),
            )
        });
        for (tier, (requests, duration, first_byte, input, output, cost)) in tiers {
            for (route, outcomes) in requests {
                for (outcome, count) in outcomes {
                    recorded.requests.insert((tier.clone(), route.clone(), outcome), count);
                }
            }
            recorded.duration.insert(tier.clone(), duration);
            // A tier whose requests never got a first byte has no such histogram.
            if first_byte.count > 0 {
                recorded.first_byte.insert(tier.clone(), first_byte);
            }
            recorded.tokens.insert((tier.clone(), "input"), input);
            recorded.tokens.insert((tier.clone(), "output"), output);
            recorded.cost_usd.insert(tier, cost);
        }
        recorded.rate_limited = self.rate_limited.snapshot(|count| count.load(Ordering::Relaxed));
        recorded
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let recorded = self.recorded();
        let mut out = Exposition::default();

        out.family("auxot_requests_total", "counter", "Finished requests.");
        for ((tier, route, outcome), count) in &recorded.requests {
            out.sample(
                "auxot_requests_total",
                &[("tier", tier), ("route", route), ("outcome", outcome)],
                count,
            );
        }
        out.histogram(
            "auxot_request_duration_seconds",
            "Time from request received to the last byte sent.",
            &recorded.duration,
        );
        out.histogram(
            "auxot_time_to_first_byte_seconds",
            "Time from request received to the first byte of the reply.",
            &recorded.first_byte,
        );
        out.family("auxot_tokens_total", "counter", "Tokens processed, by direction.");
        for ((tier, direction), count) in &recorded.tokens {
            out.sample("auxot_tokens_total", &[("tier", tier), ("direction", direction)], count);
        }
        out.family(
            "auxot_cost_usd_total",
            "counter",
            "Estimated upstream cost in US dollars.",
        );
        for (tier, cost) in &recorded.cost_usd {
            out.sample("auxot_cost_usd_total", &[("tier", tier)], Float(*cost));
        }
        out.family(
            "auxot_cloud_overflow_total",
            "counter",
            "Requests that overflowed from a local tier to the cloud.",
        );
        out.sample(
            "auxot_cloud_overflow_total",
            &[],
            self.cloud_overflow.load(Ordering::Relaxed),
        );
        out.family(
            "auxot_rate_limited_total",
            "counter",
            "Requests refused by a rate limit.",
        );
        for (reason, count) in &recorded.rate_limited {
            out.sample("auxot_rate_limited_total", &[("reason", reason)], count);
        }
        render_workers(&mut out, &gauges.workers);
        out.family("auxot_queue_depth", "gauge", "Requests waiting for a worker slot.");
        out.sample("auxot_queue_depth", &[], gauges.queue_depth);
        out.family(
            "auxot_targets_cooling",
            "gauge",
            "Providers and workers skipped by the router: cooling down after failures or over a usage limit.",
        );
        out.sample("auxot_targets_cooling", &[], gauges.targets_cooling);
        out.family(
            "auxot_usage_rows_dropped_total",
            "counter",
            "Usage records never written: the writer could not keep up, or the disk buffer was full while PostgreSQL was unreachable.",
        );
        out.sample("auxot_usage_rows_dropped_total", &[], gauges.usage_rows_dropped);
        out.family(
            "auxot_usage_rows_buffered",
            "gauge",
            "Usage records in the disk buffer, waiting to be written to PostgreSQL.",
        );
        out.sample("auxot_usage_rows_buffered", &[], gauges.usage_rows_buffered);
        out.family(
            "auxot_connections_open",
            "gauge",
            "Client connections (HTTP and worker sockets) open now.",
        );
        out.sample("auxot_connections_open", &[], gauges.connections_open);
        out.family(
            "auxot_connections_max",
            "gauge",
            "Client connections served at once at most (--max-connections); more wait in the listen backlog.",
        );
        out.sample("auxot_connections_max", &[], gauges.connections_max);
        out.text
    }
}

fn render_workers(out: &mut Exposition, workers: &[WorkerGauge]) {
    // Keyed by (worker, kind): sorted output, and a name reported twice still yields one
    // valid series instead of a duplicate the scraper would reject.
    let mut slots: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    let mut online: BTreeMap<&str, u64> = BTreeMap::new();
    for worker in workers {
        let entry = slots.entry((&worker.name, &worker.kind)).or_default();
        entry.0 += u64::from(worker.slots_in_use);
        entry.1 += u64::from(worker.slots_total);
        // Every kind seen gets a series, so "all offline" reads 0 rather than vanishing.
        *online.entry(&worker.kind).or_default() += u64::from(worker.online);
    }
    out.family(
        "auxot_worker_slots_in_use",
        "gauge",
        "Generation slots busy on a worker.",
    );
    for ((worker, kind), (in_use, _)) in &slots {
        out.sample(
            "auxot_worker_slots_in_use",
            &[("worker", worker), ("kind", kind)],
            in_use,
        );
    }
    out.family("auxot_worker_slots_total", "gauge", "Generation slots a worker offers.");
    for ((worker, kind), (_, total)) in &slots {
        out.sample("auxot_worker_slots_total", &[("worker", worker), ("kind", kind)], total);
    }
    out.family(
        "auxot_workers_online",
        "gauge",
        "Workers connected and healthy, by kind.",
    );
    for (kind, count) in &online {
        out.sample("auxot_workers_online", &[("kind", kind)], count);
    }
}

/// Builds the exposition text; writing to a `String` cannot fail, so results are ignored.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", EscapedHelp(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, label_value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", EscapedLabel(label_value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, by_tier: &BTreeMap<String, Histogram>) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (tier, histogram) in by_tier {
            let mut cumulative = 0;
            for (bound, in_bucket) in DURATION_BUCKETS.iter().zip(histogram.per_bucket) {
                cumulative += in_bucket;
                let le = Float(*bound).to_string();
                self.sample(&bucket, &[("tier", tier), ("le", &le)], cumulative);
            }
            self.sample(&bucket, &[("tier", tier), ("le", "+Inf")], histogram.count);
            self.sample(&format!("{name}_sum"), &[("tier", tier)], Float(histogram.sum));
            self.sample(&format!("{name}_count"), &[("tier", tier)], histogram.count);
        }
    }
}

/// A float as Prometheus writes it: `+Inf`, `-Inf`, `NaN`, otherwise Rust's shortest
/// round-trip decimal (`0.005`, `2.5`, `1`), which never uses an exponent.
struct Float(f64);

impl Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value.is_nan() {
            f.write_str("NaN")
        } else if value == f64::INFINITY {
            f.write_str("+Inf")
        } else if value == f64::NEG_INFINITY {
            f.write_str("-Inf")
        } else {
            write!(f, "{value}")
        }
    }
}

/// Label values escape backslash, double quote and newline.
struct EscapedLabel<'a>(&'a str);

impl Display for EscapedLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// HELP text escapes backslash and newline only.
struct EscapedHelp<'a>(&'a str);

impl Display for EscapedHelp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// One sample line, parsed back: name, label pairs with escapes undone, value.
    #[derive(Debug, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line.find(['{', ' ']).ok_or_else(|| format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            return Err(format!("bad metric name in {line:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after_brace) = rest.strip_prefix('{') {
            let mut chars = after_brace.char_indices().peekable();
            loop {
                let (start, _) = *chars.peek().ok_or_else(|| format!("unclosed labels in {line:?}"))?;
                if after_brace[start..].starts_with('}') {
                    rest = &after_brace[start + 1..];
                    break;
                }
                let eq = after_brace[start..]
                    .find("=\"")
                    .ok_or_else(|| format!("label without =\" in {line:?}"))?;
                let label = after_brace[start..start + eq].to_owned();
                if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("bad label name {label:?} in {line:?}"));
                }
                // Skip past `label="`.
                while chars.peek().is_some_and(|(i, _)| *i < start + eq + 2) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    let (_, c) = chars.next().ok_or_else(|| format!("unterminated value in {line:?}"))?;
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(format!("bad escape {other:?} in {line:?}")),
                        },
                        '\n' => return Err(format!("raw newline in {line:?}")),
                        c => value.push(c),
                    }
                }
                labels.push((label, value));
                if chars.peek().is_some_and(|(_, c)| *c == ',') {
                    chars.next();
                }
            }
        }
        let value_text = rest
            .strip_prefix(' ')
            .ok_or_else(|| format!("no space before the value in {line:?}"))?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            text => text.parse().map_err(|_| format!("bad value {text:?} in {line:?}"))?,
        };
        Ok(Sample {
            name: name.to_owned(),
            labels,
            value,
        })
    }

    /// Parses every line and checks the exposition's structure: each family has one HELP and
    /// one TYPE before its samples, every sample belongs to the family last declared, no
    /// series appears twice.
    fn parse(text: &str) -> Vec<Sample> {
        let mut samples = Vec::new();
        let mut declared = HashSet::new();
        let mut current: Option<(String, String)> = None;
        let mut series = HashSet::new();
        assert!(text.ends_with('\n'), "exposition must end with a newline:\n{text}");
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let name = help.split(' ').next().unwrap_or_default().to_owned();
                assert!(declared.insert(name.clone()), "{name} declared twice:\n{text}");
                continue;
            }
            if let Some(type_line) = line.strip_prefix("# TYPE ") {
                let mut parts = type_line.split(' ');
                let name = parts.next().unwrap_or_default().to_owned();
                let kind = parts.next().unwrap_or_default().to_owned();
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind.as_str()),
                    "bad type in {line:?}"
                );
                assert!(declared.contains(&name), "TYPE before HELP for {name}");
                current = Some((name, kind));
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let sample = parse_sample(line).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
            let (family, kind) = current
                .as_ref()
                .unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
            let belongs = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| sample.name == format!("{family}{suffix}")),
                _ => sample.name == *family,
            };
            assert!(belongs, "{line:?} is not part of family {family}");
            assert!(
                series.insert((sample.name.clone(), sample.labels.clone())),
                "duplicate series {line:?}"
            );
            samples.push(sample);
        }
        samples
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && s.labels.iter().zip(labels).all(|((k, v), (lk, lv))| k == lk && v == lv)
            })
            .map(|s| s.value)
    }

    fn request<'a>(tier: Option<&'a str>, route: Option<&'a str>, outcome: &'a str) -> RequestObservation<'a> {
        RequestObservation {
            tier,
            route,
            outcome,
            to_first_byte: None,
            total: Duration::from_millis(100),
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            overflowed_to_cloud: false,
        }
    }

    #[test]
    fn counters_count_per_label_set() {
        let metrics = Metrics::default();
        let ok = request(Some("local"), Some("default"), "ok");
        metrics.observe(&ok);
        metrics.observe(&ok);
        metrics.observe(&request(Some("cloud"), Some("default"), "error"));
        metrics.observe(&request(None, None, "error"));
        metrics.observe(&RequestObservation {
            input_tokens: 10,
            output_tokens: 32,
            cost_usd: 0.25,
            overflowed_to_cloud: true,
            ..request(Some("cloud"), Some("big"), "ok")
        });
        metrics.observe(&RequestObservation {
            input_tokens: 5,
            output_tokens: 8,
            cost_usd: 0.5,
            overflowed_to_cloud: true,
            ..request(Some("cloud"), Some("big"), "cancelled")
        });
        metrics.rate_limited("rpm");
        metrics.rate_limited("rpm");
        metrics.rate_limited("spend_cap");

        let samples = parse(&metrics.render(&Gauges::default()));
        let requests = |tier, route, outcome| {
            value(
                &samples,
                "auxot_requests_total",
                &[("tier", tier), ("route", route), ("outcome", outcome)],
            )
        };
        assert_eq!(requests("local", "default", "ok"), Some(2.0));
        assert_eq!(requests("cloud", "default", "error"), Some(1.0));
        assert_eq!(requests("none", "none", "error"), Some(1.0));
        assert_eq!(requests("cloud", "big", "ok"), Some(1.0));
        assert_eq!(requests("cloud", "big", "cancelled"), Some(1.0));
        assert_eq!(requests("local", "default", "error"), None);
        let tokens = |direction| {
            value(
                &samples,
                "auxot_tokens_total",
                &[("tier", "cloud"), ("direction", direction)],
            )
        };
        assert_eq!(tokens("input"), Some(15.0));
        assert_eq!(tokens("output"), Some(40.0));
        assert_eq!(
            value(&samples, "auxot_cost_usd_total", &[("tier", "cloud")]),
            Some(0.75)
        );
        assert_eq!(value(&samples, "auxot_cost_usd_total", &[("tier", "local")]), Some(0.0));
        assert_eq!(value(&samples, "auxot_cloud_overflow_total", &[]), Some(2.0));
        assert_eq!(
            value(&samples, "auxot_rate_limited_total", &[("reason", "rpm")]),
            Some(2.0)
        );
        assert_eq!(
            value(&samples, "auxot_rate_limited_total", &[("reason", "spend_cap")]),
            Some(1.0)
        );
    }

    #[test]
    fn concurrent_updates_are_all_counted() {
        let metrics = Metrics::default();
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let metrics = &metrics;
                scope.spawn(move || {
                    let route = if thread % 2 == 0 { "even" } else { "odd" };
                    for _ in 0..1000 {
                        metrics.observe(&RequestObservation {
                            to_first_byte: Some(Duration::from_millis(3)),
                            input_tokens: 2,
                            cost_usd: 0.5,
                            ..request(Some("gpu"), Some(route), "ok")
                        });
                        metrics.rate_limited("rpm");
                    }
                });
            }
        });
        let samples = parse(&metrics.render(&Gauges::default()));
        let requests = |route| {
            value(
                &samples,
                "auxot_requests_total",
                &[("tier", "gpu"), ("route", route), ("outcome", "ok")],
            )
        };
        assert_eq!(requests("even"), Some(4000.0));
        assert_eq!(requests("odd"), Some(4000.0));
        let tier = [("tier", "gpu")];
        assert_eq!(
            value(&samples, "auxot_request_duration_seconds_count", &tier),
            Some(8000.0)
        );
        assert_eq!(
            value(
                &samples,
                "auxot_time_to_first_byte_seconds_bucket",
                &[("tier", "gpu"), ("le", "0.005")]
            ),
            Some(8000.0)
        );
        assert_eq!(
            value(
                &samples,
                "auxot_tokens_total",
                &[("tier", "gpu"), ("direction", "input")]
            ),
            Some(16000.0)
        );
        assert_eq!(value(&samples, "auxot_cost_usd_total", &tier), Some(4000.0));
        assert_eq!(
            value(&samples, "auxot_rate_limited_total", &[("reason", "rpm")]),
            Some(8000.0)
        );
    }

    #[test]
    fn a_bad_cost_never_lowers_the_total() {
        let metrics = Metrics::default();
        for cost in [0.5, -3.0, f64::NAN, f64::INFINITY] {
            metrics.observe(&RequestObservation {
                cost_usd: cost,
                ..request(Some("cloud"), Some("r"), "ok")
            });
        }
        let samples = parse(&metrics.render(&Gauges::default()));
        assert_eq!(value(&samples, "auxot_cost_usd_total", &[("tier", "cloud")]), Some(0.5));
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let metrics = Metrics::default();
        for (total_ms, first_byte_ms) in [(250, Some(5)), (2000, Some(500)), (500, None), (400_000, Some(400_000))] {
            metrics.observe(&RequestObservation {
                total: Duration::from_millis(total_ms),
                to_first_byte: first_byte_ms.map(Duration::from_millis),
                ..request(Some("local"), Some("r"), "ok")
            });
        }
        let samples = parse(&metrics.render(&Gauges::default()));
        let bucket = |name: &str, le: &str| value(&samples, name, &[("tier", "local"), ("le", le)]);

        let duration = "auxot_request_duration_seconds_bucket";
        assert_eq!(bucket(duration, "0.1"), Some(0.0));
        assert_eq!(
            bucket(duration, "0.25"),
            Some(1.0),
            "a value on a bound falls in that bucket"
        );
        assert_eq!(bucket(duration, "0.5"), Some(2.0));
        assert_eq!(bucket(duration, "1"), Some(2.0));
        assert_eq!(bucket(duration, "2.5"), Some(3.0));
        assert_eq!(bucket(duration, "300"), Some(3.0));
        assert_eq!(bucket(duration, "+Inf"), Some(4.0));
        let tier = [("tier", "local")];
        assert_eq!(
            value(&samples, "auxot_request_duration_seconds_count", &tier),
            Some(4.0)
        );
        assert_eq!(
            value(&samples, "auxot_request_duration_seconds_sum", &tier),
            Some(402.75)
        );

        let first_byte = "auxot_time_to_first_byte_seconds_bucket";
        assert_eq!(bucket(first_byte, "0.005"), Some(1.0));
        assert_eq!(bucket(first_byte, "0.5"), Some(2.0));
        assert_eq!(
            bucket(first_byte, "+Inf"),
            Some(3.0),
            "only requests with a first byte count"
        );
        assert_eq!(
            value(&samples, "auxot_time_to_first_byte_seconds_count", &tier),
            Some(3.0)
        );
        let first_byte_sum = value(&samples, "auxot_time_to_first_byte_seconds_sum", &tier).unwrap_or_default();
        assert!((first_byte_sum - 400.505).abs() < 1e-9, "sum {first_byte_sum}");

        let mut les: Vec<&str> = samples
            .iter()
            .filter(|s| s.name == duration)
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == "le").map(|(_, v)| v.as_str()))
            .collect();
        les.dedup();
        assert_eq!(
            les,
            [
                "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "120",
                "300", "+Inf"
            ]
        );
        let counts: Vec<f64> = samples.iter().filter(|s| s.name == duration).map(|s| s.value).collect();
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "buckets must not decrease: {counts:?}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        let awkward = "a\\b\"c\nd";
        metrics.observe(&request(Some(awkward), Some("r"), "ok"));
        metrics.rate_limited(awkward);
        let text = metrics.render(&Gauges {
            workers: vec![WorkerGauge {
                name: awkward.into(),
                kind: "gpu".into(),
                slots_in_use: 1,
                slots_total: 2,
                online: true,
            }],
            ..Gauges::default()
        });
        assert!(
            text.contains(r#"auxot_rate_limited_total{reason="a\\b\"c\nd"} 1"#),
            "escaped label missing:\n{text}"
        );
        let samples = parse(&text);
        assert_eq!(
            value(&samples, "auxot_rate_limited_total", &[("reason", awkward)]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                "auxot_worker_slots_in_use",
                &[("worker", awkward), ("kind", "gpu")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                "auxot_requests_total",
                &[("tier", awkward), ("route", "r"), ("outcome", "ok")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn gauges_come_from_the_caller() {
        let worker = |name: &str, kind: &str, in_use, total, online| WorkerGauge {
            name: name.into(),
            kind: kind.into(),
            slots_in_use: in_use,
            slots_total: total,
            online,
        };
        let gauges = Gauges {
            workers: vec![
                worker("zeta", "gpu", 2, 4, true),
                worker("alpha", "gpu", 0, 1, true),
                worker("claude", "cli", 1, 1, true),
                worker("old", "cli", 0, 1, false),
                worker("down", "cpu", 0, 2, false),
            ],
            queue_depth: 3,
            usage_rows_dropped: 7,
            usage_rows_buffered: 12,
            targets_cooling: 0,
            connections_open: 5,
            connections_max: 32_704,
        };
        let text = Metrics::default().render(&gauges);
        let samples = parse(&text);
        let slots = |name, worker, kind| value(&samples, name, &[("worker", worker), ("kind", kind)]);
        assert_eq!(slots("auxot_worker_slots_in_use", "zeta", "gpu"), Some(2.0));
        assert_eq!(slots("auxot_worker_slots_total", "zeta", "gpu"), Some(4.0));
        assert_eq!(slots("auxot_worker_slots_total", "down", "cpu"), Some(2.0));
        let online = |kind| value(&samples, "auxot_workers_online", &[("kind", kind)]);
        assert_eq!(online("gpu"), Some(2.0));
        assert_eq!(online("cli"), Some(1.0));
        assert_eq!(
            online("cpu"),
            Some(0.0),
            "a kind with every worker offline still reads 0"
        );
        assert_eq!(value(&samples, "auxot_queue_depth", &[]), Some(3.0));
        assert_eq!(value(&samples, "auxot_usage_rows_dropped_total", &[]), Some(7.0));
        assert_eq!(value(&samples, "auxot_usage_rows_buffered", &[]), Some(12.0));
        assert_eq!(value(&samples, "auxot_connections_open", &[]), Some(5.0));
        assert_eq!(value(&samples, "auxot_connections_max", &[]), Some(32_704.0));
        let workers: Vec<&str> = samples
            .iter()
            .filter(|s| s.name == "auxot_worker_slots_in_use")
            .map(|s| s.labels[0].1.as_str())
            .collect();
        assert_eq!(workers, ["alpha", "claude", "down", "old", "zeta"], "sorted by worker");
    }

    #[test]
    fn render_is_deterministic_whatever_the_order_of_updates() {
        let gauges = |names: &[&str]| Gauges {
            workers: names
                .iter()
                .map(|name| WorkerGauge {
                    name: (*name).into(),
                    kind: "gpu".into(),
                    slots_in_use: 0,
                    slots_total: 1,
                    online: true,
                })
                .collect(),
            ..Gauges::default()
        };
        let forward = Metrics::default();
        let backward = Metrics::default();
        let observations = [
            request(Some("b"), Some("x"), "ok"),
            request(Some("a"), Some("y"), "error"),
            request(None, None, "error"),
        ];
        for o in &observations {
            forward.observe(o);
        }
        for o in observations.iter().rev() {
            backward.observe(o);
        }
        forward.rate_limited("spend_cap");
        forward.rate_limited("rpm");
        backward.rate_limited("rpm");
        backward.rate_limited("spend_cap");
        assert_eq!(
            forward.render(&gauges(&["w2", "w1"])),
            backward.render(&gauges(&["w1", "w2"]))
        );
    }

    #[test]
    fn empty_metrics_render_every_family() {
        let text = Metrics::default().render(&Gauges::default());
        parse(&text);
        for family in [
            "auxot_requests_total counter",
            "auxot_request_duration_seconds histogram",
            "auxot_time_to_first_byte_seconds histogram",
            "auxot_tokens_total counter",
            "auxot_cost_usd_total counter",
            "auxot_cloud_overflow_total counter",
            "auxot_rate_limited_total counter",
            "auxot_worker_slots_in_use gauge",
            "auxot_worker_slots_total gauge",
            "auxot_workers_online gauge",
            "auxot_queue_depth gauge",
            "auxot_usage_rows_dropped_total counter",
            "auxot_usage_rows_buffered gauge",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "missing {family}:\n{text}"
            );
        }
        assert!(text.contains("\nauxot_cloud_overflow_total 0\n"), "{text}");
        assert!(text.contains("\nauxot_queue_depth 0\n"), "{text}");
    }

    #[test]
    fn floats_render_the_prometheus_way() {
        assert_eq!(Float(0.005).to_string(), "0.005");
        assert_eq!(Float(1.0).to_string(), "1");
        assert_eq!(Float(300.0).to_string(), "300");
        assert_eq!(Float(1e-7).to_string(), "0.0000001");
        assert_eq!(Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Float(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(Float(f64::NAN).to_string(), "NaN");
    }

    #[test]
    fn help_text_is_escaped() {
        let mut out = Exposition::default();
        out.family("auxot_x", "gauge", "line\\one\nline two");
        assert_eq!(
            out.text,
            "# HELP auxot_x line\\\\one\\nline two\n# TYPE auxot_x gauge\n"
        );
    }
}
