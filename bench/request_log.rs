//! Request-log benchmark: fills a fresh store with BENCH_ROWS usage rows (default
//! 1,000,000) and times `GET /api/requests`'s store query for the newest page and for
//! filtered pages. `cargo run --release --example request_log_bench`; BENCHMARKS.md
//! reports it. Prints a Markdown table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use auxot::store::{LogField, LogQuery, Store, UsageRecord};
use std::time::{Duration, Instant};

const BATCH: usize = 20_000;
const RUNS: usize = 25;

fn row(i: u64, start_ms: i64) -> UsageRecord {
    let tiers = ["gpu", "gpu", "gpu", "cli", "cloud"];
    let tier = tiers[(i % 5) as usize];
    UsageRecord {
        at_ms: start_ms + i as i64 * 2,
        api_key_id: Some(format!("key-{}", i % 20)),
        agent: (i % 7 == 0).then(|| "coder".to_string()),
        session: Some(format!("session-{}", i / 50)),
        tier: Some(tier.into()),
        route: Some(format!("{tier}-{}", i % 3)),
        model: ["auto", "coder", "gpt-4o", "claude-sonnet-4-5"][(i % 4) as usize].into(),
        model_served: Some(["qwen3-8b", "gpt-4o", "claude-sonnet-4-5-20250929"][(i % 3) as usize].into()),
        input_tokens: 1000 + i % 500,
        output_tokens: 200 + i % 100,
        cache_read_tokens: 30_000,
        cache_write_5m_tokens: 500,
        cache_write_1h_tokens: 0,
        reasoning_tokens: 0,
        tokens_estimated: false,
        cost_usd: 0.01,
        cloud_equivalent_usd: 0.01,
        cloud_equivalent_model: Some("gpt-4o".into()),
        cloud_equivalent_source: Some("alias".into()),
        ms_to_first_byte: Some(120 + i % 300),
        ms_total: 900 + i % 4000,
        ms_queue: Some(0),
        // One request in 1,000 fails: a sparse filter.
        outcome: if i % 1000 == 7 {
            "error:upstream_error".into()
        } else {
            "ok".into()
        },
        status: if i % 1000 == 7 { 502 } else { 200 },
        stream: i % 2 == 0,
        attempts: Vec::new(),
        router: None,
        id: None,
    }
}

async fn time(store: &Store, query: &LogQuery) -> (Duration, Duration, usize) {
    let mut took = Vec::with_capacity(RUNS);
    let mut rows = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let page = store.request_log(query.clone()).await.unwrap();
        took.push(started.elapsed());
        rows = page.rows.len();
    }
    took.sort();
    (took[RUNS / 2], took[RUNS * 95 / 100], rows)
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile_dir();
    let store = Store::open(&dir).unwrap();
    store.initialize(None, None).unwrap();
    let start_ms = auxot::clock::now_unix_ms() - rows as i64 * 2;
    let filling = Instant::now();
    let mut seq = 0;
    for first in (0..rows).step_by(BATCH) {
        let batch: Vec<UsageRecord> = (first..(first + BATCH as u64).min(rows))
            .map(|i| row(i, start_ms))
            .collect();
        seq = store.insert_usage(batch, seq).await.unwrap();
    }
    let fill = filling.elapsed();
    let size = std::fs::metadata(dir.join("auxot.redb")).map(|m| m.len()).unwrap_or(0);
    let base = LogQuery {
        from_ms: 0,
        to_ms: i64::MAX / 4,
        before: None,
        filters: Vec::new(),
        limit: 50,
        max_scan: 20_000,
    };
    let newest_cursor = store.request_log(base.clone()).await.unwrap().next;
    let cases: Vec<(&str, LogQuery)> = vec![
        ("newest page, no filter", base.clone()),
        (
            "second page (cursor)",
            LogQuery {
                before: newest_cursor,
                ..base.clone()
            },
        ),
        (
            "tier=cloud",
            LogQuery {
                filters: vec![(LogField::Tier, "cloud".into())],
                ..base.clone()
            },
        ),
        (
            "api_key + model",
            LogQuery {
                filters: vec![(LogField::ApiKey, "key-3".into()), (LogField::Model, "gpt-4o".into())],
                ..base.clone()
            },
        ),
        (
            "outcome=error (1 in 1,000)",
            LogQuery {
                filters: vec![(LogField::Outcome, "error".into())],
                ..base.clone()
            },
        ),
        (
            "session (50 rows)",
            LogQuery {
                filters: vec![(LogField::Session, format!("session-{}", rows / 100))],
                ..base.clone()
            },
        ),
        (
            "status=502 + tier=gpu, last day",
            LogQuery {
                from_ms: start_ms + rows as i64 * 2 - 86_400_000,
                filters: vec![(LogField::Status, "502".into()), (LogField::Tier, "gpu".into())],
                ..base.clone()
            },
        ),
    ];
    // What `--usage-max-mib` reckons a row takes, beside what the file says.
    let measured = store.usage_bytes_per_row(256).await.unwrap().unwrap_or(0);
    println!(
        "rows: {rows}; fill: {:.1} s; db size: {} MiB ({} bytes a row; the size cap measures {} bytes a row)\n",
        fill.as_secs_f64(),
        size / (1024 * 1024),
        size / rows.max(1),
        measured
    );
    println!("| query | rows returned | median | p95 |");
    println!("|---|---|---|---|");
    for (name, query) in cases {
        let (median, p95, returned) = time(&store, &query).await;
        println!(
            "| {name} | {returned} | {:.2} ms | {:.2} ms |",
            median.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("auxot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
