//! Routers on one PostgreSQL database acting as one fleet: every router lists every worker
//! and where it is connected; a worker token revoked on one router cuts its worker off
//! everywhere; a key's requests per minute and monthly spend cap hold across routers
//! hammered at once, within the overshoot docs/scale-out.md documents.

use crate::support::routers::{two_routers, CloudFleet};
use crate::support::worker::worker_token_allowing;
use crate::support::{eventually, FakeUpstream, TestServer, TestWorker};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GPU_KEY: &str = "sk-local-model-server";
const CLOUD_KEY: &str = "sk-cloud-provider-key-0001";

fn gpu_worker(urls: &[&str], name: &str, token: &str, gpu: &FakeUpstream) -> TestWorker {
    let args = vec![
        "gpu".to_string(),
        "--upstream".into(),
        gpu.base_url(),
        "--upstream-key".into(),
        GPU_KEY.into(),
    ];
    TestWorker::spawn(&urls.join(","), name, token, 1, args, &[])
}

/// `router`'s list entry for the live worker `name` (none when it lists it offline or not).
async fn listed(router: &TestServer, admin: &str, name: &str) -> Option<Value> {
    let workers = router.call("GET", "/api/workers", Some(admin), None).await.json();
    workers["data"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name && w["status"] != "offline")
        .cloned()
}

/// The routers `entry` says the worker is connected to, as (name, here).
fn connections(entry: &Value) -> Vec<(String, bool)> {
    entry["connections"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|c| (c["router"].as_str().unwrap_or("?").to_string(), c["here"] == true))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `router` lists `name` connected to exactly `expected` (name, here).
async fn wait_listed(
    router: &TestServer,
    admin: &str,
    name: &str,
    expected: &[(&str, bool)],
    within: Duration,
) -> Value {
    let expected: Vec<(String, bool)> = expected.iter().map(|(r, h)| (r.to_string(), *h)).collect();
    let last = Arc::new(Mutex::new(Value::Null));
    let ok = eventually(within, || {
        let expected = expected.clone();
        let last = last.clone();
        async move {
            let entry = listed(router, admin, name).await.unwrap_or(Value::Null);
            let matches = connections(&entry) == expected;
            *last.lock().unwrap() = entry;
            matches
        }
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert!(
        ok,
        "{} never listed {name} as connected to {expected:?}: {last}",
        router.url
    );
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_router_lists_every_worker_of_the_fleet_and_where_it_is_connected() {
    let Some((mut a, b)) = two_routers().await else { return };
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["local-model"]).await;
    let admin = a.admin_key().await;
    let shared_token = worker_token_allowing(&a, &admin, "shared", "gpu", &["*"]).await;
    let lone_token = worker_token_allowing(&a, &admin, "lone", "gpu", &["*"]).await;
    let _shared = gpu_worker(&[&a.url, &b.url], "shared", &shared_token, &gpu);
    let _lone = gpu_worker(&[&a.url], "lone", &lone_token, &gpu);

    // B lists the worker it never saw, with the router that holds it.
    let lone_on_b = wait_listed(&b, &admin, "lone", &[("router-a", false)], Duration::from_secs(15)).await;
    assert_eq!(lone_on_b["connected_here"], false, "{lone_on_b}");
    assert_eq!(lone_on_b["slots_in_use_here"], 0, "{lone_on_b}");
    assert_eq!(lone_on_b["slots_total"], 1, "{lone_on_b}");
    assert_eq!(lone_on_b["connections"][0]["status"], "idle", "{lone_on_b}");
    let lone_on_a = wait_listed(&a, &admin, "lone", &[("router-a", true)], Duration::from_secs(5)).await;
    assert_eq!(lone_on_a["connected_here"], true);

    // The shared worker is listed once on each router, with both connections, the asked
    // router first.
    let on_a = wait_listed(
        &a,
        &admin,
        "shared",
        &[("router-a", true), ("router-b", false)],
        Duration::from_secs(15),
    )
    .await;
    let on_b = wait_listed(
        &b,
        &admin,
        "shared",
        &[("router-b", true), ("router-a", false)],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(on_a["instance_id"], on_b["instance_id"]);
    let list = b.call("GET", "/api/workers", Some(&admin), None).await.json();
    let shared_entries = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"] == "shared")
        .count();
    assert_eq!(shared_entries, 1, "{list}");
    assert!(list.get("fleet_error").is_none(), "{list}");

    // A is killed: its rows stop being refreshed, and B stops listing what only A held.
    a.kill().await;
    let killed = Instant::now();
    wait_listed(&b, &admin, "shared", &[("router-b", true)], Duration::from_secs(15)).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            listed(&b, &admin, "lone").await.is_none()
        })
        .await,
        "B still lists a worker of the killed router {:?} later",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_token_revoked_on_one_router_disconnects_its_worker_from_every_router() {
    let Some((a, b)) = two_routers().await else { return };
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["local-model"]).await;
    let admin = a.admin_key().await;
    let reply = a
        .call(
            "POST",
            "/api/worker-tokens",
            Some(&admin),
            Some(json!({"name": "doomed", "kind": "gpu", "allowed_models": ["*"]})),
        )
        .await;
    reply.expect(201);
    let token = reply.json()["token"].as_str().unwrap().to_string();
    let token_id = reply.json()["id"].as_str().unwrap().to_string();
    let worker = gpu_worker(&[&a.url, &b.url], "doomed", &token, &gpu);
    wait_listed(
        &b,
        &admin,
        "doomed",
        &[("router-b", true), ("router-a", false)],
        Duration::from_secs(15),
    )
    .await;

    a.call("DELETE", &format!("/api/worker-tokens/{token_id}"), Some(&admin), None)
        .await
        .expect(204);
    let revoked = Instant::now();
    // B drops its own connection within a second of the revocation on A…
    assert!(
        eventually(Duration::from_secs(1), || async {
            !listed(&b, &admin, "doomed")
                .await
                .is_some_and(|w| w["connected_here"] == true)
        })
        .await,
        "B still holds the revoked worker's connection {:?} later\n{}",
        revoked.elapsed(),
        worker.logs()
    );
    // …and neither router takes it back: every reconnect is refused.
    assert!(
        eventually(Duration::from_secs(10), || async {
            listed(&a, &admin, "doomed").await.is_none() && listed(&b, &admin, "doomed").await.is_none()
        })
        .await,
        "the revoked worker is still listed"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(listed(&a, &admin, "doomed").await.is_none());
    assert!(listed(&b, &admin, "doomed").await.is_none());
    assert!(
        worker.logs().contains("rejected the worker token"),
        "the worker was not refused on reconnecting:\n{}",
        worker.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_two_routers_gets_at_most_one_request_past_the_fleets_requests_per_minute() {
    let Some(fleet) = CloudFleet::start(CLOUD_KEY).await else {
        return;
    };
    let CloudFleet { a, b, fake: cloud, .. } = &fleet;
    const RPM: usize = 6;
    let (_, key) = fleet
        .key_on_both(json!({"name": "hammer", "role": "client", "rpm_limit": RPM}))
        .await;

    // Twelve requests at once on each router: each alone would admit all six.
    let requests = (0..24).map(|i| {
        let router = if i % 2 == 0 { &a } else { &b };
        let key = key.clone();
        async move { router.chat(&key, "gpt-4o", false).await }
    });
    let replies = futures_util::future::join_all(requests).await;
    let admitted = replies.iter().filter(|r| r.status == 200).count();
    for reply in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(reply.status, 429, "{}", reply.text);
        assert!(reply.header("retry-after").is_some(), "{}", reply.text);
    }
    eprintln!("rpm {RPM}: {admitted} of 24 admitted across two routers");
    // The documented bound: at most (routers − 1) × ⌈limit ÷ routers⌉ past the limit.
    assert!(
        admitted <= RPM + RPM.div_ceil(2),
        "the fleet admitted {admitted} requests on a limit of {RPM} a minute"
    );
    assert!(admitted >= RPM / 2, "only {admitted} admitted on a limit of {RPM}");
    assert_eq!(cloud.chat_requests().len(), admitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_cap_hammered_on_two_routers_overshoots_by_no_more_than_the_requests_in_flight() {
    let Some(fleet) = CloudFleet::start(CLOUD_KEY).await else {
        return;
    };
    let CloudFleet { a, b, admin, .. } = &fleet;
    // Each request costs $9 (the fake reports 9 tokens); the cap is crossed by the third.
    a.call(
        "PUT",
        "/api/prices/gpt-4o",
        Some(admin),
        Some(json!({"input_per_mtok": 1000000.0, "output_per_mtok": 1000000.0})),
    )
    .await
    .expect(200);
    let cap = 20.0;
    let (_, key) = fleet
        .key_on_both(json!({"name": "hammer", "role": "client", "monthly_spend_cap_usd": cap}))
        .await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            b.call("GET", "/api/prices", Some(admin), None)
                .await
                .text
                .contains("1000000")
        })
        .await
    );

    // Three clients per router, each sending back to back until refused.
    const CLIENTS: usize = 6;
    let clients = (0..CLIENTS).map(|i| {
        let router = if i % 2 == 0 { &a } else { &b };
        let key = key.clone();
        async move {
            let mut served = 0;
            for _ in 0..50 {
                let reply = router.chat(&key, "gpt-4o", false).await;
                match reply.status {
                    200 => served += 1,
                    429 => return served,
                    other => panic!("unexpected {other}: {}", reply.text),
                }
            }
            panic!("the capped key was never refused")
        }
    });
    let served: usize = futures_util::future::join_all(clients).await.into_iter().sum();
    let per_request: f64 = 9.0;
    eprintln!("spend cap ${cap}: {served} requests of ${per_request} served by {CLIENTS} clients");
    let to_cross = (cap / per_request).floor() as usize + 1;
    // The documented bound: the requests in flight anywhere when the cap was crossed (one
    // per client), plus those a client sent back to back before the other router re-read
    // the spend (its change notice and one read: one more per client at most here).
    assert!(
        served <= to_cross + 2 * CLIENTS,
        "served {served} requests of ${per_request} on a cap of ${cap}"
    );
    assert!(served >= to_cross, "refused before the cap: {served}");
    // Once the spend is known everywhere, both routers refuse.
    for router in [&a, &b] {
        router.chat(&key, "gpt-4o", false).await.expect(429);
    }
}
