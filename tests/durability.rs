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

/// `CLIENTS` clients send requests (streamed every other one when `streams`) until the
/// server is killed with SIGKILL after `after_ms`, counting those sent and answered in full.
async fn kill_under_load(
    server: &mut TestServer,
    client: &str,
    answers: &Arc<AtomicU64>,
    sent: &Arc<AtomicU64>,
    streams: bool,
    after_ms: u64,
) {
    let http = reqwest::Client::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for n in 0..CLIENTS {
        let (http, url, key) = (http.clone(), server.url.clone(), client.to_string());
        let (answers, sent, stop) = (answers.clone(), sent.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                if answered(&http, &url, &key, streams && (n + i) % 2 == 0).await {
                    answers.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    server.kill().await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn kill_9_under_load_loses_no_usage_row_of_an_answered_request() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    let answers = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    for round in 0..ROUNDS {
        // Kill at a different point of the load each round.
        kill_under_load(&mut server, &client, &answers, &sent, true, 400 + 150 * round as u64).await;
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

/// Bytes of rows a dead router left in its usage journal.
fn journaled_bytes(data_dir: &std::path::Path) -> u64 {
    std::fs::read_dir(data_dir.join("usage-journal"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn an_offline_backup_after_kill_9_holds_the_rows_still_in_the_journal() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    let (answers, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Kill under load until the kill lands between a journal append and its commit (rows
    // are committed within ~20 ms, so the first kill almost always does).
    for attempt in 0..10 {
        kill_under_load(&mut server, &client, &answers, &sent, false, 300).await;
        if journaled_bytes(&server.data_dir) > 0 {
            break;
        }
        assert!(attempt < 9, "no kill left rows in the journal");
        server = server
            .relaunch(Default::default())
            .await
            .expect("restart after kill -9");
    }

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("after-crash.redb");
    let dir = server.data_dir.display().to_string();
    let report = crate::support::command::succeeds(crate::support::command::auxot(
        &["backup", &file.display().to_string(), "--data-dir", &dir],
        &[],
        "",
    ));
    assert!(report.contains("from the stopped database"), "{report}");
    assert_eq!(
        journaled_bytes(&server.data_dir),
        0,
        "the backup left the journal's rows behind"
    );
    let backup = auxot::store::Store::open_file(&file).unwrap();
    let rows = backup
        .table_rows()
        .unwrap()
        .into_iter()
        .find(|(table, _)| table == "usage")
        .map_or(0, |(_, n)| n);
    let answers = answers.load(Ordering::Relaxed);
    assert!(
        answers > 20,
        "the load was too light to mean anything: {answers} answers"
    );
    assert!(
        rows >= answers,
        "{answers} answers reached clients but the backup holds {rows} usage rows"
    );
    drop(backup);

    // The next start finds the rows committed once, not twice.
    let server = server
        .relaunch(Default::default())
        .await
        .expect("restart after the backup");
    let usage = server.call("GET", "/api/usage", Some(&admin), None).await;
    usage.expect(200);
    assert_eq!(usage.json()["totals"]["requests"].as_u64().unwrap(), rows);
}
