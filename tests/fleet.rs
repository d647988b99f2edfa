//! Several routers sharing workers: one `auxot worker` connected to every router of a fleet,
//! its slots never overfilled by routers racing for them, and a router killed mid-traffic
//! while the others keep serving through the same worker.
//!
//! The routers share their records by starting from copies of one data dir (the same admin
//! key, client key, worker token and cloud provider on each), as routers on one shared
//! database would.

use crate::support::worker::{worker_token_allowing, worker_view};
use crate::support::{eventually, FakeUpstream, Options, TestServer, TestWorker};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

const GPU_KEY: &str = "sk-local-model-server";
const CLOUD_KEY: &str = "sk-cloud-provider-key-0001";
const WORKER: &str = "shared-gpu";

struct Fleet {
    routers: Vec<TestServer>,
    /// The stopped first runs, kept so their temp dirs live as long as the test.
    _seeds: Vec<TestServer>,
    admin: String,
    client: String,
    token: String,
    gpu: FakeUpstream,
    cloud: FakeUpstream,
}

/// `n` routers on copies of one data dir, a GPU model server and a cloud provider that
/// both serve `gated` (each stream holds after its first content until released).
async fn fleet(n: usize) -> Fleet {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["gated"]).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["gated"]).await;
    let (mut first, admin, client) = TestServer::with_admin_and_client().await;
    first.add_provider(&admin, "cloud", &cloud, CLOUD_KEY).await;
    let token = worker_token_allowing(&first, &admin, WORKER, "gpu", &["*"]).await;
    first.stop().await;
    let mut seeds = vec![first];
    for _ in 1..n {
        let mut other = TestServer::start().await;
        other.stop().await;
        copy_dir(&seeds[0].data_dir, &other.data_dir);
        seeds.push(other);
    }
    let mut routers = Vec::new();
    for seed in &seeds {
        routers.push(seed.relaunch(Options::default()).await.expect("router restarts"));
    }
    Fleet {
        routers,
        _seeds: seeds,
        admin,
        client,
        token,
        gpu,
        cloud,
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::remove_dir_all(to).unwrap();
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

impl Fleet {
    /// One worker with `slots` slots, dialling every URL in `urls`.
    fn worker(&self, urls: &[String], slots: u32) -> TestWorker {
        let args = vec![
            "gpu".to_string(),
            "--upstream".into(),
            self.gpu.base_url(),
            "--upstream-key".into(),
            GPU_KEY.into(),
        ];
        TestWorker::spawn(&urls.join(","), WORKER, &self.token, slots, args, &[])
    }

    /// Waits until `router` lists the worker as connected to `connected` routers.
    async fn wait_connected(&self, router: &TestServer, connected: usize, worker: &TestWorker) -> Value {
        let last = Arc::new(Mutex::new(Value::Null));
        let ok = eventually(Duration::from_secs(20), || {
            let view = worker_view(router, &self.admin, WORKER);
            let last = last.clone();
            async move {
                let view = view.await.unwrap_or(Value::Null);
                let up = view["status"] != "offline"
                    && view["routers"]
                        .as_array()
                        .is_some_and(|r| r.iter().filter(|l| l["connected"] == true).count() == connected);
                *last.lock().unwrap() = view;
                up
            }
        })
        .await;
        let last = last.lock().unwrap().clone();
        assert!(
            ok,
            "router {} never listed the worker with {connected} connections: {last}\n{}",
            router.url,
            worker.logs()
        );
        last
    }

    fn chat(&self, router: &TestServer, tier: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = router.post_as(
            "/v1/chat/completions",
            &self.client,
            &json!({"model": "gated", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        );
        if let Some(tier) = tier {
            request = request.header("x-auxot-tier", tier);
        }
        request
    }
}

/// A stream read to its end: the tier that served it and its whole text.
async fn finish(response: reqwest::Response) -> (String, String) {
    let tier = response
        .headers()
        .get("x-auxot-tier")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut body = String::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.push_str(&String::from_utf8_lossy(&chunk.expect("the stream broke")));
    }
    (tier, body)
}

/// Releases gated streams on both fakes, forever (raced against what waits for them).
async fn keep_releasing(fleet: &Fleet, every: Duration) {
    loop {
        fleet.gpu.release_stream();
        fleet.cloud.release_stream();
        tokio::time::sleep(every).await;
    }
}

#[tokio::test]
async fn a_worker_shared_by_two_routers_lists_once_on_each_with_both_connections() {
    let f = fleet(2).await;
    let urls: Vec<String> = f.routers.iter().map(|r| r.url.clone()).collect();
    let worker = f.worker(&urls, 2);
    let on_a = f.wait_connected(&f.routers[0], 2, &worker).await;
    let on_b = f.wait_connected(&f.routers[1], 2, &worker).await;
    assert!(on_a["instance_id"].is_string(), "{on_a}");
    assert_eq!(
        on_a["instance_id"], on_b["instance_id"],
        "the same worker on both routers"
    );
    let listed: Vec<&str> = on_a["routers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["url"].as_str().unwrap())
        .collect();
    assert_eq!(listed, urls.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(on_a["slots_total"], 2);
}

#[tokio::test]
async fn concurrent_requests_on_both_routers_never_overfill_the_shared_worker() {
    let f = fleet(2).await;
    let urls: Vec<String> = f.routers.iter().map(|r| r.url.clone()).collect();
    let worker = f.worker(&urls, 2);
    f.wait_connected(&f.routers[0], 2, &worker).await;
    f.wait_connected(&f.routers[1], 2, &worker).await;

    // Eight streams at once, four on each router, on a worker with two slots: each router
    // alone sees two free slots. The surplus overflows to the cloud.
    let requests = (0..8).map(|i| {
        let request = f.chat(&f.routers[i % 2], None);
        async move { request.send().await.expect("request") }
    });
    let responses = futures_util::future::join_all(requests).await;
    for response in &responses {
        assert_eq!(response.status(), 200);
    }
    let in_flight_peak = f.gpu.max_in_flight();
    assert!(
        in_flight_peak <= 2,
        "the worker's model server saw {in_flight_peak} streams at once on 2 slots"
    );
    let releasing = keep_releasing(&f, Duration::from_millis(20));
    let finished = async { futures_util::future::join_all(responses.into_iter().map(finish)).await };
    let done = tokio::select! {
        done = finished => done,
        () = releasing => unreachable!(),
    };
    let mut gpu_served = 0;
    for (tier, body) in &done {
        assert!(
            body.contains(r#""finish_reason":"stop""#) && body.contains("[DONE]"),
            "an incomplete answer: {body}"
        );
        assert!(!body.contains("error"), "a refusal reached a client: {body}");
        if tier == "gpu" {
            gpu_served += 1;
        } else {
            assert_eq!(tier, "cloud");
        }
    }
    assert!((1..=2).contains(&gpu_served), "{done:?}");
    assert!(f.gpu.max_in_flight() <= 2, "overfilled: {}", f.gpu.max_in_flight());
    assert_eq!(f.gpu.chat_requests().len() + f.cloud.chat_requests().len(), 8);
    // A refusal is not a failure: the worker does not cool down on either router.
    for router in &f.routers {
        let view = worker_view(router, &f.admin, WORKER).await.unwrap();
        assert!(
            view["cooldown_until"].is_null() && view["consecutive_failures"] == 0,
            "{view}"
        );
    }
}

#[tokio::test]
async fn gpu_only_requests_from_both_routers_queue_for_the_one_slot_and_all_finish() {
    let f = fleet(2).await;
    let urls: Vec<String> = f.routers.iter().map(|r| r.url.clone()).collect();
    let worker = f.worker(&urls, 1);
    f.wait_connected(&f.routers[0], 2, &worker).await;
    f.wait_connected(&f.routers[1], 2, &worker).await;

    let requests = (0..4).map(|i| {
        let request = f.chat(&f.routers[i % 2], Some("gpu"));
        async move { finish(request.send().await.expect("request")).await }
    });
    let all = futures_util::future::join_all(requests);
    let releasing = keep_releasing(&f, Duration::from_millis(100));
    let done = tokio::select! {
        done = all => done,
        () = releasing => unreachable!(),
    };
    for (tier, body) in &done {
        assert_eq!(tier, "gpu", "{body}");
        assert!(body.contains("[DONE]") && !body.contains("error"), "{body}");
    }
    assert_eq!(f.gpu.max_in_flight(), 1, "one slot, one stream at a time");
    assert_eq!(f.gpu.chat_requests().len(), 4);
}

/// A TCP forwarder on a fixed loopback port, so a router restarted on a new port is still
/// where the worker dials it.
struct Forwarder {
    url: String,
    target: Arc<Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn to(url: &str) -> Forwarder {
        let target = Arc::new(Mutex::new(addr_of(url)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let current = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *current.lock().unwrap();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { url, target, task }
    }

    fn retarget(&self, url: &str) {
        *self.target.lock().unwrap() = addr_of(url);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test]
async fn a_router_killed_mid_traffic_leaves_the_worker_serving_the_others_and_it_comes_back() {
    let mut f = fleet(2).await;
    let to_a = Forwarder::to(&f.routers[0].url).await;
    let urls = vec![to_a.url.clone(), f.routers[1].url.clone()];
    let worker = f.worker(&urls, 1);
    f.wait_connected(&f.routers[1], 2, &worker).await;

    // A stream through A holds the worker's only slot; A dies under it.
    let held = f.chat(&f.routers[0], Some("gpu")).send().await.unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(held.headers()["x-auxot-tier"], "gpu");
    f.routers[0].kill().await;
    drop(held);

    // B keeps being served by the worker, whose slot A's abandoned job gave back.
    let view = f.wait_connected(&f.routers[1], 1, &worker).await;
    let a_link = view["routers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"] == to_a.url.as_str())
        .cloned();
    assert_eq!(a_link.map(|l| l["connected"].clone()), Some(json!(false)), "{view}");
    let (tier, body) = serve_released(&f, &f.routers[1]).await;
    assert_eq!(tier, "gpu", "{body}");
    assert!(body.contains("[DONE]"), "{body}");

    // A comes back (on a new port, behind the same address): the worker dials it again.
    let restarted = f._seeds[0].relaunch(Options::default()).await.expect("A restarts");
    to_a.retarget(&restarted.url);
    f.routers[0] = restarted;
    f.wait_connected(&f.routers[0], 2, &worker).await;
    f.wait_connected(&f.routers[1], 2, &worker).await;
    let (tier, body) = serve_released(&f, &f.routers[0]).await;
    assert_eq!(tier, "gpu", "{body}");
}

/// One GPU-only stream through `router`, its gate released, read to the end.
async fn serve_released(f: &Fleet, router: &TestServer) -> (String, String) {
    let served = f.chat(router, Some("gpu")).send();
    let releasing = keep_releasing(f, Duration::from_millis(50));
    tokio::select! {
        response = served => finish(response.unwrap()).await,
        () = releasing => unreachable!(),
    }
}
