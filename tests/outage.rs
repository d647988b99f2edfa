//! A router on PostgreSQL through a real database outage: the cluster is stopped (every
//! connection cut, the port closed) and started again. The router keeps answering with the
//! configuration it loaded, keeps each answered request's usage row in its disk buffer,
//! says `degraded` with the reason, and writes the rows to the database once, when it is
//! back: after a kill -9 too.

use crate::support::postgres::OwnCluster;
use crate::support::{eventually, FakeUpstream, Options, TestServer};
use serde_json::Value;
use std::time::Duration;

const KEY: &str = "sk-test-outage-0001";
const METRICS: &str = "scrape-token-outage-0001";

fn router_options(url: &str, extra: &[&str]) -> Options {
    let options = Options::on_database(url)
        .named("r1")
        .arg("--metrics-token")
        .arg(METRICS);
    extra.iter().fold(options, |options, extra| options.arg(extra))
}

struct Fleet {
    cluster: OwnCluster,
    url: String,
    router: TestServer,
    admin: String,
    client: String,
    _fake: FakeUpstream,
}

/// A router on a cluster of its own, with a cloud provider and a client key.
async fn router_on_own_cluster(extra: &[&str]) -> Option<Fleet> {
    let cluster = OwnCluster::start()?;
    let url = cluster.fresh_database().await;
    let router = TestServer::start_with(router_options(&url, extra)).await;
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let admin = router.admin_key().await;
    router.add_provider(&admin, "cloud", &fake, KEY).await;
    let client = router.client_key(&admin).await;
    Some(Fleet {
        cluster,
        url,
        router,
        admin,
        client,
        _fake: fake,
    })
}

async fn health(router: &TestServer) -> Value {
    router.call("GET", "/healthz", None, None).await.expect(200).json()
}

/// A sample of `/metrics`, by its exact series name.
async fn metric(router: &TestServer, series: &str) -> Option<f64> {
    let text = router
        .call("GET", "/metrics", Some(METRICS), None)
        .await
        .expect(200)
        .text
        .clone();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every row of the request log.
async fn logged(router: &TestServer, admin: &str) -> Vec<Value> {
    let log = router.call("GET", "/api/requests?limit=500", Some(admin), None).await;
    log.expect(200).json()["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn serve_during_outage(router: &TestServer, client: &str, count: usize) {
    for n in 0..count {
        let reply = router.chat(client, "gpt-4o", n % 2 == 0).await;
        assert_eq!(
            reply.status,
            200,
            "request {n} during the outage: {}\n{}",
            reply.text,
            router.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stopped_a_router_answers_buffers_usage_on_disk_then_writes_it_once() {
    let Some(mut fleet) = router_on_own_cluster(&[]).await else {
        return;
    };
    let router = &fleet.router;
    for _ in 0..2 {
        router.chat(&fleet.client, "gpt-4o", false).await.expect(200);
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            health(router).await["status"] == "ok"
        })
        .await,
        "not healthy before the outage: {}",
        health(router).await
    );

    fleet.cluster.stop().await;
    serve_during_outage(router, &fleet.client, 5).await;
    let degraded = health(router).await;
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert_eq!(degraded["usage_rows_buffered"], 5, "{degraded}");
    let reason = degraded["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("usage rows buffered on disk: 5 (database unreachable since "),
        "{reason}"
    );
    assert_eq!(metric(router, "auxot_usage_rows_buffered").await, Some(5.0));
    assert_eq!(metric(router, "auxot_usage_rows_dropped_total").await, Some(0.0));
    assert!(
        std::fs::metadata(router.data_path("usage-buffer.bin")).unwrap().len() > 24,
        "the rows are in the buffer file"
    );

    fleet.cluster.start_again().await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            health(router).await["status"] == "ok"
        })
        .await,
        "never caught up: {}\n{}",
        health(router).await,
        router.logs()
    );
    assert_eq!(metric(router, "auxot_usage_rows_buffered").await, Some(0.0));
    assert_eq!(
        std::fs::metadata(router.data_path("usage-buffer.bin")).unwrap().len(),
        24,
        "the buffer is emptied"
    );
    let rows = logged(router, &fleet.admin).await;
    let answered = rows
        .iter()
        .filter(|r| r["router"] == "r1" && r["status"] == 200)
        .count();
    assert_eq!(answered, 7, "each answered request once: {rows:#?}");
    let usage = router
        .call("GET", "/api/usage?group_by=model", Some(&fleet.admin), None)
        .await;
    assert_eq!(usage.expect(200).json()["totals"]["requests"], 7, "{}", usage.text);
    // New rows go straight to the database again.
    router.chat(&fleet.client, "gpt-4o", false).await.expect(200);
    assert_eq!(logged(router, &fleet.admin).await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_with_rows_on_disk_writes_them_once_after_a_restart() {
    let Some(mut fleet) = router_on_own_cluster(&[]).await else {
        return;
    };
    fleet.cluster.stop().await;
    serve_during_outage(&fleet.router, &fleet.client, 4).await;
    assert_eq!(health(&fleet.router).await["usage_rows_buffered"], 4);
    // A crash: nothing gets to flush.
    fleet.router.kill().await;
    fleet.cluster.start_again().await;

    let url = fleet.url.clone();
    let restarted = fleet
        .router
        .relaunch(router_options(&url, &[]))
        .await
        .unwrap_or_else(|logs| panic!("the router did not restart:\n{logs}"));
    assert!(
        eventually(Duration::from_secs(20), || async {
            health(&restarted).await["status"] == "ok"
        })
        .await,
        "the restarted router did not write its buffer: {}\n{}",
        health(&restarted).await,
        restarted.logs()
    );
    let rows = logged(&restarted, &fleet.admin).await;
    assert_eq!(rows.len(), 4, "each buffered row once: {rows:#?}");
    // Info lines reach stderr in batches (every 50 ms).
    assert!(
        eventually(Duration::from_secs(2), || async {
            restarted
                .logs()
                .contains("usage rows buffered on disk by an earlier run")
        })
        .await,
        "{}",
        restarted.logs()
    );

    // A second restart finds nothing left to write.
    let mut restarted = restarted;
    restarted.stop().await;
    let again = fleet
        .router
        .relaunch(router_options(&url, &[]))
        .await
        .unwrap_or_else(|logs| panic!("the router did not restart:\n{logs}"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            health(&again).await["status"] == "ok"
        })
        .await,
        "{}",
        health(&again).await
    );
    assert_eq!(logged(&again, &fleet.admin).await.len(), 4);
    assert!(
        !again.logs().contains("by an earlier run"),
        "the buffer was not emptied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_and_counts_rows_and_the_router_keeps_serving() {
    // About 4 KiB: room for a few rows only.
    let Some(mut fleet) = router_on_own_cluster(&["--usage-buffer-mib", "0.004"]).await else {
        return;
    };
    let router = &fleet.router;
    fleet.cluster.stop().await;
    serve_during_outage(router, &fleet.client, 12).await;
    let buffered = metric(router, "auxot_usage_rows_buffered").await.unwrap_or(0.0);
    let dropped = metric(router, "auxot_usage_rows_dropped_total").await.unwrap_or(0.0);
    assert!((1.0..12.0).contains(&buffered), "buffered {buffered}");
    assert_eq!(buffered + dropped, 12.0, "every row buffered or counted dropped");
    let reason = health(router).await["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("the usage buffer is full"), "{reason}");
    let full_logs = router
        .logs()
        .lines()
        .filter(|l| l.contains("the usage buffer is full"))
        .count();
    assert_eq!(full_logs, 1, "logged once per burst, not per row:\n{}", router.logs());

    fleet.cluster.start_again().await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            health(router).await["status"] == "ok"
        })
        .await,
        "never caught up: {}",
        health(router).await
    );
    assert_eq!(logged(router, &fleet.admin).await.len() as f64, buffered);
    router.chat(&fleet.client, "gpt-4o", false).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_router_on_the_same_data_dir_is_refused_rather_than_share_its_buffer() {
    let Some(url) = crate::support::postgres::fresh_database().await else {
        return;
    };
    let first = TestServer::start_with(router_options(&url, &[])).await;
    match first.relaunch(router_options(&url, &[])).await {
        Ok(_) => panic!("two routers share one usage buffer"),
        Err(logs) => assert!(
            logs.contains("is held by another auxot process") && logs.contains("its own --data-dir"),
            "{logs}"
        ),
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            health(&first).await["status"] == "ok"
        })
        .await,
        "the first router is not serving: {}",
        health(&first).await
    );
}
