//! No answered request is lost from the books: kill -9 under load, again and again, and
//! count usage rows against the answers clients received in full.

use crate::support::{FakeUpstream, TestServer};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "sk-durability-provider-0001";
const ROUNDS: usize = 4;
const CLIENTS: usize = 12;

/// One request; whether the client got the whole answer.
async fn answered(http: &reqwest::Client, url: &str, key: &str, stream: bool) -> bool {
    let body = json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let Ok(response) = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
    else {
        return false;
    };
    if response.status() != 200 {
        return false;
    }
    match response.text().await {
        Ok(text) if stream => text.contains("data: [DONE]"),
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["choices"].is_array()),
        Err(_) => false,
    }
}

#[tokio::test]
async fn kill_9_under_load_loses_no_usage_row_of_an_answered_request() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    let http = reqwest::Client::new();
    let answers = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    for round in 0..ROUNDS {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        for n in 0..CLIENTS {
            let (http, url, key) = (http.clone(), server.url.clone(), client.clone());
            let (answers, sent, stop) = (answers.clone(), sent.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if answered(&http, &url, &key, (n + i) % 2 == 0).await {
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            }));
        }
        // Kill at a different point of the load each round.
        tokio::time::sleep(Duration::from_millis(400 + 150 * round as u64)).await;
        server.kill().await;
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.unwrap();
        }
        server = server
            .relaunch(Default::default())
            .await
            .expect("restart after kill -9");
    }
    let usage = server.call("GET", "/api/usage", Some(&admin), None).await;
    usage.expect(200);
    let totals = &usage.json()["totals"];
    let rows_ok = totals["requests"].as_u64().unwrap()
        - totals["errors"].as_u64().unwrap()
        - totals["cancelled"].as_u64().unwrap();
    let answers = answers.load(Ordering::Relaxed);
    assert!(
        answers > 50,
        "the load was too light to mean anything: {answers} answers"
    );
    assert!(
        rows_ok >= answers,
        "{answers} answers reached clients but only {rows_ok} ok rows survived {ROUNDS} kill -9s ({totals})"
    );
    assert!(totals["requests"].as_u64().unwrap() <= sent.load(Ordering::Relaxed));
}
