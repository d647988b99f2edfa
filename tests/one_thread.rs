//! A router on one thread (`--threads 1`, and the default on a box with one CPU) runs tokio's
//! single-threaded scheduler. It must still serve requests side by side, commit their usage
//! from its blocking threads, and on PostgreSQL drive the database from them.

use crate::support::command::auxot;
use crate::support::postgres::fresh_database;
use crate::support::{FakeUpstream, Options, TestServer};
use crate::usage::wait_rows;

const KEY: &str = "sk-one-thread-provider-key";
/// Each answer takes this long upstream, so requests served one after another cannot
/// overlap at the fake.
const MODEL: &str = "sleep-300";
const REQUESTS: usize = 24;

async fn serves_requests_side_by_side_and_books_them(options: Options) {
    let fake = FakeUpstream::openai("up", &[KEY], &[MODEL]).await;
    let (mut server, admin) = TestServer::with_admin_using(options.arg("--threads").arg("1")).await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;

    let requests = (0..REQUESTS).map(|i| {
        let request = server.chat_request(&client, MODEL, i % 2 == 0);
        async move {
            let response = request.send().await.expect("request to auxot");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    });
    let replies = futures_util::future::join_all(requests).await;
    for (i, (status, text)) in replies.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}: {text}");
        if i % 2 == 0 {
            assert!(
                text.trim_end().ends_with("data: [DONE]"),
                "stream {i} cut short: {text}"
            );
        } else {
            assert!(text.contains("Hello from up"), "request {i}: {text}");
        }
    }
    assert!(
        fake.max_in_flight() >= REQUESTS / 2,
        "the one thread served the requests one after another: at most {} upstream at once",
        fake.max_in_flight()
    );

    wait_rows(&server, &admin, REQUESTS as u64).await;
    server.stop().await;
    assert!(server.logs().contains("threads=1"), "{}", server.logs());
}

#[tokio::test]
async fn a_router_on_one_thread_serves_requests_side_by_side_and_books_them() {
    serves_requests_side_by_side_and_books_them(Options::default()).await;
}

#[tokio::test]
async fn a_router_on_one_thread_drives_postgresql_from_its_blocking_threads() {
    let Some(url) = fresh_database().await else { return };
    serves_requests_side_by_side_and_books_them(Options::on_database(&url)).await;
}

#[test]
fn a_thread_count_out_of_range_is_refused_by_name() {
    let output = auxot(&["serve", "--threads", "5000"], &[], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--threads"), "{stderr}");
    assert!(stderr.contains("5000"), "{stderr}");
}
