//! Several `auxot serve` processes on one PostgreSQL database act as one router: what one
//! changes, the others apply within a second.

use crate::support::command::auxot;
use crate::support::postgres::{database_name, fresh_database, superuser_sql};
use crate::support::routers::{two_routers, CloudFleet};
use crate::support::{eventually, FakeUpstream, Options, TestServer};
use serde_json::json;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-fleet-0001";

async fn router_on(url: &str) -> TestServer {
    TestServer::start_with(Options::on_database(url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_revoked_on_one_router_is_refused_by_the_other_within_a_second() {
    let Some(fleet) = CloudFleet::start(KEY).await else {
        return;
    };
    let (id, client) = fleet.key_on_both(json!({"name": "laptop", "role": "client"})).await;
    let CloudFleet { a, b, admin, .. } = &fleet;
    // The key and the provider made on A work on B.
    b.chat(&client, "gpt-4o", false).await.expect(200);

    a.call("DELETE", &format!("/api/api-keys/{id}"), Some(admin), None)
        .await
        .expect(204);
    let revoked = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || async {
            b.chat(&client, "gpt-4o", false).await.status == 401
        })
        .await,
        "B still accepts the revoked key after {:?}",
        revoked.elapsed()
    );
    // And keeps refusing it (no stale cache coming back).
    assert_eq!(b.chat(&client, "gpt-4o", false).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_alias_and_setting_added_on_one_router_apply_on_the_other() {
    let Some((a, b)) = two_routers().await else { return };
    let admin = a.admin_key().await;
    // An admin key made on A is known on B (the same database).
    assert!(
        eventually(Duration::from_secs(1), || async {
            b.call("GET", "/api/providers", Some(&admin), None).await.status == 200
        })
        .await
    );
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o-mini"]).await;
    // B has no provider yet: nothing serves the model.
    assert_ne!(b.chat(&admin, "gpt-4o-mini", false).await.status, 200);
    a.add_provider(&admin, "cloud", &fake, KEY).await;
    let added = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || async {
            b.chat(&admin, "gpt-4o-mini", false).await.status == 200
        })
        .await,
        "B does not route to the provider added on A after {:?}",
        added.elapsed()
    );

    a.add_alias(&admin, json!({"name": "fast", "cloud": "gpt-4o-mini"}))
        .await;
    assert!(
        eventually(Duration::from_secs(1), || async {
            let reply = b.chat(&admin, "fast", false).await;
            reply.status == 200 && reply.header("x-auxot-tier") == Some("cloud")
        })
        .await,
        "B does not know the alias made on A"
    );

    b.put_settings(&admin, json!({"routing": {"queue_timeout_ms": 1234}}))
        .await;
    assert!(
        eventually(Duration::from_secs(1), || async {
            let reply = a.call("GET", "/api/settings", Some(&admin), None).await;
            reply.json()["routing"]["queue_timeout_ms"] == 1234
        })
        .await,
        "A did not apply the setting changed on B"
    );
}

fn migrate(data_dir: &std::path::Path, url: &str) -> std::process::Output {
    let data_dir = data_dir.display().to_string();
    auxot(&["migrate", "--data-dir", &data_dir, "--to", url], &[], "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redb_box_migrates_to_postgres_with_its_keys_providers_and_usage() {
    let Some(url) = fresh_database().await else { return };
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (mut single, admin) = TestServer::with_admin().await;
    single.add_provider(&admin, "cloud", &fake, KEY).await;
    let client = single.client_key(&admin).await;
    single.chat(&client, "gpt-4o", false).await.expect(200);
    // The usage row is durable once the server stopped cleanly.
    single.stop().await;

    let out = migrate(&single.data_dir, &url);
    let report = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "migrate failed: {report}");
    assert!(report.contains("counts checked"), "{report}");
    assert!(!report.contains(KEY), "the provider key leaked into the report");

    let router = router_on(&url).await;
    // The admin's password, the client key and the sealed provider key all work there.
    router.login("admin", "password123").await;
    router.chat(&client, "gpt-4o", false).await.expect(200);
    let log = router.call("GET", "/api/requests", Some(&admin), None).await;
    let rows = log.expect(200).json()["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rows.len(), 2, "the migrated request and the new one: {}", log.text);

    // A database that already holds data is refused, and left as it was.
    let again = migrate(&single.data_dir, &url);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds auxot data"));
    assert_eq!(router.chat(&client, "gpt-4o", false).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_cap_holds_for_the_fleet_and_each_row_names_its_router() {
    let Some(fleet) = CloudFleet::start(KEY).await else {
        return;
    };
    let (_, client) = fleet
        .key_on_both(json!({"name": "capped", "role": "client", "monthly_spend_cap_usd": 0.000_001}))
        .await;
    let CloudFleet { a, b, admin, .. } = &fleet;
    // The first request (under the cap) runs on B.
    b.chat(&client, "gpt-4o", false).await.expect(200);
    // What the key spent on B reaches A within a second (a notice, then a re-read)…
    let spent_on_a = || async {
        let keys = a.call("GET", "/api/api-keys", Some(admin), None).await;
        keys.json()["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .any(|k| k["name"] == "capped" && k["spent_this_month_usd"].as_f64().unwrap_or(0.0) > 0.0)
    };
    assert!(
        eventually(Duration::from_secs(1), spent_on_a).await,
        "A does not know what the key spent on B"
    );
    // …and from then on A refuses the key without serving it.
    a.chat(&client, "gpt-4o", false).await.expect(429);
    let log = a.call("GET", "/api/requests", Some(admin), None).await;
    let rows = log.expect(200).json()["requests"].as_array().cloned().unwrap();
    let served: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| (r["router"].as_str().unwrap_or("?"), r["status"].as_u64().unwrap_or(0)))
        .collect();
    assert!(served.contains(&("router-b", 200)), "{served:?}");
    assert!(served.contains(&("router-a", 429)), "{served:?}");
    assert!(
        !served.contains(&("router-a", 200)),
        "A served the capped key: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_unreachable_a_router_keeps_serving_and_says_it_is_degraded() {
    let Some(url) = fresh_database().await else { return };
    let router = router_on(&url).await;
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let admin = router.admin_key().await;
    router.add_provider(&admin, "cloud", &fake, KEY).await;
    let client = router.client_key(&admin).await;
    let health = || async { router.call("GET", "/healthz", None, None).await.json()["status"].clone() };
    assert_eq!(health().await, "ok");

    let db = database_name(&url).to_string();
    superuser_sql(
        &url,
        &format!(
            "ALTER DATABASE {db} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';"
        ),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(3), || async { health().await == "degraded" }).await,
        "healthz never said degraded"
    );
    let reply = router.call("GET", "/healthz", None, None).await;
    assert_eq!(reply.status, 200, "a degraded router stays in the balancer's pool");
    assert!(reply.json()["reason"].as_str().unwrap_or("").contains("PostgreSQL"));
    // Routing runs on what was loaded: the key, the provider, its sealed key.
    router.chat(&client, "gpt-4o", false).await.expect(200);

    superuser_sql(&url, &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).await;
    assert!(
        eventually(Duration::from_secs(10), || async { health().await == "ok" }).await,
        "the router did not recover once PostgreSQL was back"
    );
    router.chat(&client, "gpt-4o", false).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_mid_traffic_loses_nothing_it_answered_and_the_other_keeps_serving() {
    let Some(url) = fresh_database().await else { return };
    let named = |name: &str| Options::on_database(&url).named(name);
    let mut a = TestServer::start_with(named("doomed")).await;
    let b = TestServer::start_with(named("survivor")).await;
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let admin = a.admin_key().await;
    a.add_provider(&admin, "cloud", &fake, KEY).await;
    let client = a.client_key(&admin).await;
    for _ in 0..5 {
        a.chat(&client, "gpt-4o", true).await.expect(200);
    }
    // A stream in flight when the router dies.
    let pid = a.pid().to_string();
    // Its client sees the connection drop; only what was answered must survive.
    let streaming = a
        .post_as(
            "/v1/chat/completions",
            &client,
            &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send();
    let killed = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
    };
    let (_dropped, ()) = tokio::join!(streaming, killed);
    a.kill().await;
    assert!(
        eventually(Duration::from_secs(1), || async {
            b.chat(&client, "gpt-4o", false).await.status == 200
        })
        .await,
        "the surviving router does not serve"
    );
    let log = b.call("GET", "/api/requests?limit=100", Some(&admin), None).await;
    let rows = log.expect(200).json()["requests"].as_array().cloned().unwrap();
    let answered_by_a = rows
        .iter()
        .filter(|r| r["router"] == "doomed" && r["status"] == 200)
        .count();
    assert!(answered_by_a >= 5, "rows of answered requests were lost: {}", log.text);
    assert!(rows.iter().any(|r| r["router"] == "survivor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_hold_for_the_fleet_then_both_routers_refuse_with_retry_after() {
    let Some(fleet) = CloudFleet::start(KEY).await else {
        return;
    };
    let (_, client) = fleet
        .key_on_both(json!({"name": "paced", "role": "client", "rpm_limit": 6}))
        .await;
    let CloudFleet { a, b, .. } = &fleet;
    // Three requests on B…
    b.chat(&client, "gpt-4o", false).await.expect(200);
    b.chat(&client, "gpt-4o", false).await.expect(200);
    b.chat(&client, "gpt-4o", false).await.expect(200);
    // …reach A within two exchange intervals, so A admits only the other three.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for n in 0..3 {
        let reply = a.chat(&client, "gpt-4o", false).await;
        assert_eq!(reply.status, 200, "request {n} on A: {}", reply.text);
    }
    for (name, router) in [("A", &a), ("B", &b)] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let limited = router.chat(&client, "gpt-4o", false).await;
        assert_eq!(limited.status, 429, "{name} admitted a 7th request: {}", limited.text);
        assert_eq!(limited.json()["error"]["type"], "rate_limit_error", "{name}");
        let retry: u64 = limited.header("retry-after").unwrap_or("").parse().unwrap_or(0);
        assert!((1..=60).contains(&retry), "{name}: Retry-After {retry}");
    }
}
