//! The operator's commands against the real binary: admin recovery, backup and restore
//! (online and offline), secret rotation (also under repeated kill -9), graceful stops,
//! systemd socket activation and `auxot doctor`.

use crate::support::command::{auxot, auxot_command, auxot_off_runtime, fails_with, succeeds};
use crate::support::{eventually, FakeUpstream, Options, TestServer, TestWorker, TEST_KEY};
use auxot::crypto::MasterKey;
use auxot::store::rekey::{SealedUnder, PROVIDER_KEY_SEAL_KIND};
use auxot::store::{ModelCache, ProviderKind, ProviderRecord, Store};
use futures_util::StreamExt;
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const PROVIDER_KEY: &str = "sk-ops-provider-key-0000000001";

fn data_arg(server: &TestServer) -> String {
    server.data_dir.display().to_string()
}

#[tokio::test]
async fn admin_commands_recover_a_locked_out_operator_offline_only() {
    let mut server = TestServer::start().await;
    server.admin_key().await;
    let dir = data_arg(&server);
    fails_with(
        auxot(&["admin", "list", "--data-dir", &dir], &[], ""),
        "held by a running auxot server",
    );
    let old_session = server.login("admin", "password123").await;
    server.stop().await;

    let listed = succeeds(auxot(&["admin", "list", "--data-dir", &dir], &[], ""));
    assert!(listed.starts_with("admin\t"), "{listed}");
    let reset = succeeds(auxot(
        &["admin", "reset-password", "admin", "--data-dir", &dir],
        &[],
        "a-new-password-42\n",
    ));
    assert!(
        reset.contains("session(s) ended") && !reset.contains(" 0 session"),
        "{reset}"
    );
    assert!(!reset.contains("a-new-password-42"), "echoed the password: {reset}");
    succeeds(auxot(
        &["admin", "create", "bob", "--data-dir", &dir],
        &[],
        "bobs-password\n",
    ));
    fails_with(
        auxot(&["admin", "create", "bob", "--data-dir", &dir], &[], "bobs-password\n"),
        "already exists",
    );
    fails_with(
        auxot(&["admin", "create", "carol", "--data-dir", &dir], &[], "short\n"),
        "at least 8 characters",
    );
    fails_with(
        auxot(
            &["admin", "reset-password", "nobody", "--data-dir", &dir],
            &[],
            "whatever-long\n",
        ),
        "no admin named 'nobody'",
    );
    fails_with(
        auxot(&["admin", "list", "--data-dir", "/nonexistent/auxot"], &[], ""),
        "no database at",
    );

    let again = server.relaunch(Options::with_key(Some(TEST_KEY))).await.unwrap();
    again.login("admin", "a-new-password-42").await;
    again.login("bob", "bobs-password").await;
    let old = again.try_login("admin", "password123").await;
    assert_eq!(old.status, 401, "{}", old.text);
    let stale = again
        .send(
            again
                .http
                .get(format!("{}/api/session", again.url))
                .header("cookie", old_session),
        )
        .await;
    assert_ne!(
        stale.status, 200,
        "a session from before the reset still works: {}",
        stale.text
    );
    let mut again = again;
    again.stop().await;

    succeeds(auxot(&["admin", "remove", "bob", "--data-dir", &dir], &[], ""));
    fails_with(
        auxot(&["admin", "remove", "admin", "--data-dir", &dir], &[], ""),
        "last account with the admin role",
    );
}

#[tokio::test]
async fn backup_from_a_running_server_restores_after_the_stop_under_the_right_key_only() {
    let fake = FakeUpstream::openai("up", &[PROVIDER_KEY], &["gpt-4o"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, PROVIDER_KEY).await;
    let client = server.client_key(&admin).await;
    let dir = data_arg(&server);
    let out = tempfile::tempdir().unwrap();

    // The UI's download: admin only, a complete redb file, no plaintext secret inside.
    let denied = server.call("GET", "/api/backup", Some(&client), None).await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    let download = server
        .http
        .get(format!("{}/api/backup", server.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "application/octet-stream");
    assert!(download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let bytes = download.bytes().await.unwrap();
    assert!(!bytes.windows(PROVIDER_KEY.len()).any(|w| w == PROVIDER_KEY.as_bytes()));
    assert!(!bytes.windows(admin.len()).any(|w| w == admin.as_bytes()));
    assert!(!std::fs::read_dir(&server.data_dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".backup-")));

    // The command line backup of a running server goes through the same endpoint.
    let file = out.path().join("snap.redb");
    let file_arg = file.display().to_string();
    fails_with(
        auxot(
            &["backup", &file_arg, "--data-dir", &dir, "--server", &server.url],
            &[],
            "",
        ),
        "AUXOT_ADMIN_KEY",
    );
    let report = succeeds(auxot(
        &["backup", &file_arg, "--data-dir", &dir, "--server", &server.url],
        &[("AUXOT_ADMIN_KEY", &admin)],
        "",
    ));
    assert!(report.contains("from the running server"), "{report}");
    fails_with(
        auxot(
            &["backup", &file_arg, "--data-dir", &dir],
            &[("AUXOT_ADMIN_KEY", &admin)],
            "",
        ),
        "already exists",
    );
    fails_with(
        auxot(
            &["restore", &file_arg, "--data-dir", &dir],
            &[("AUXOT_SECRET_KEY", TEST_KEY)],
            "",
        ),
        "held by a running auxot server",
    );

    // A change after the backup, which the restore takes back.
    server.add_provider(&admin, "later", &fake, PROVIDER_KEY).await;
    server.stop().await;
    let before = std::fs::read(server.db_path()).unwrap();
    let other = MasterKey::generate_hex();
    fails_with(
        auxot(
            &["restore", &file_arg, "--data-dir", &dir],
            &[("AUXOT_SECRET_KEY", other.expose())],
            "",
        ),
        "nothing was changed",
    );
    assert_eq!(
        std::fs::read(server.db_path()).unwrap(),
        before,
        "a refused restore changed the db"
    );
    let restored = succeeds(auxot(
        &["restore", &file_arg, "--data-dir", &dir],
        &[("AUXOT_SECRET_KEY", TEST_KEY)],
        "",
    ));
    assert!(restored.contains("kept as"), "{restored}");
    let kept: Vec<_> = std::fs::read_dir(&server.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("auxot.redb.replaced-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(server.data_dir.join(&kept[0])).unwrap(), before);

    let again = server.relaunch(Options::with_key(Some(TEST_KEY))).await.unwrap();
    let providers = again.call("GET", "/api/providers", Some(&admin), None).await.json();
    let names: Vec<_> = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("main")]);
    again.chat(&client, "gpt-4o", false).await.expect(200);
    again.login("admin", "password123").await;
    let mut again = again;
    again.stop().await;

    // Offline, the backup is taken straight from the database.
    let offline = out.path().join("offline.redb");
    let report = succeeds(auxot(
        &["backup", &offline.display().to_string(), "--data-dir", &dir],
        &[],
        "",
    ));
    assert!(report.contains("from the stopped database"), "{report}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&offline).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn rotate_secret_moves_every_key_and_the_old_key_opens_nothing() {
    let fake = FakeUpstream::openai("up", &[PROVIDER_KEY], &["gpt-4o"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, PROVIDER_KEY).await;
    let client = server.client_key(&admin).await;
    let dir = data_arg(&server);
    let keys = tempfile::tempdir().unwrap();
    let new_key = keys.path().join("new.key");
    let new_arg = new_key.display().to_string();
    fails_with(
        auxot(
            &["rotate-secret", "--data-dir", &dir, "--new-key-file", &new_arg],
            &[("AUXOT_SECRET_KEY", TEST_KEY)],
            "",
        ),
        "held by a running auxot server",
    );
    server.stop().await;
    let wrong = MasterKey::generate_hex();
    fails_with(
        auxot(
            &["rotate-secret", "--data-dir", &dir, "--new-key-file", &new_arg],
            &[("AUXOT_SECRET_KEY", wrong.expose())],
            "",
        ),
        "does not open this data",
    );

    let report = succeeds(auxot(
        &["rotate-secret", "--data-dir", &dir, "--new-key-file", &new_arg],
        &[("AUXOT_SECRET_KEY", TEST_KEY)],
        "",
    ));
    assert!(report.contains("re-sealed 1 provider key"), "{report}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&new_key).unwrap().permissions().mode() & 0o777, 0o600);
    let new_text = std::fs::read_to_string(&new_key).unwrap().trim().to_string();
    assert!(!std::fs::read(server.db_path())
        .unwrap()
        .windows(PROVIDER_KEY.len())
        .any(|w| w == PROVIDER_KEY.as_bytes()));

    // Run again after success: nothing to do, nothing changed.
    let again = succeeds(auxot(
        &["rotate-secret", "--data-dir", &dir, "--new-key-file", &new_arg],
        &[("AUXOT_SECRET_KEY", TEST_KEY)],
        "",
    ));
    assert!(again.contains("already sealed under the new key"), "{again}");

    match server.relaunch(Options::with_key(Some(TEST_KEY))).await {
        Ok(_) => panic!("the old key still opens the data"),
        Err(logs) => assert!(logs.contains("not the key this data was sealed with"), "{logs}"),
    }
    let rotated = server.relaunch(Options::with_key(Some(&new_text))).await.unwrap();
    rotated.chat(&client, "gpt-4o", false).await.expect(200);
    let last = fake.chat_requests().pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
}

fn key_bytes(hex_key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex_key[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// A database sealed under `key` with `n` providers, written directly through the store.
async fn sealed_database(dir: &Path, key: &MasterKey, n: usize) {
    let store = Store::open(dir).unwrap();
    store.initialize(None, Some(&key.seal_canary().unwrap())).unwrap();
    for i in 0..n {
        let id = format!("p{i:04}");
        let record = ProviderRecord {
            id: id.clone(),
            name: format!("provider-{i}"),
            kind: ProviderKind::Openai,
            base_url: "http://127.0.0.1:9".into(),
            sealed_key: Some(
                key.seal(PROVIDER_KEY_SEAL_KIND, &id, format!("sk-{i}").as_bytes())
                    .unwrap(),
            ),
            key_hint: "…".into(),
            priority: 0,
            enabled: true,
            created_at: 0,
            updated_at: 0,
        };
        let cache = ModelCache {
            models: vec![],
            fetched_at: 0,
        };
        store.insert_provider(record, cache).await.unwrap();
    }
}

#[tokio::test]
async fn rotate_secret_killed_at_any_moment_leaves_all_under_one_key() {
    const PROVIDERS: usize = 400;
    let old = MasterKey::from_bytes(&key_bytes(TEST_KEY));
    let work = tempfile::tempdir().unwrap();
    let template = work.path().join("template");
    std::fs::create_dir(&template).unwrap();
    sealed_database(&template, &old, PROVIDERS).await;
    let new_key = work.path().join("new.key");
    std::fs::write(&new_key, format!("{}\n", MasterKey::generate_hex().expose())).unwrap();
    let new = MasterKey::from_bytes(&key_bytes(std::fs::read_to_string(&new_key).unwrap().trim()));

    let new_key_arg = new_key.display().to_string();
    let run = |dir: &Path| {
        let dir = dir.display().to_string();
        auxot_command(
            &["rotate-secret", "--data-dir", &dir, "--new-key-file", &new_key_arg],
            &[("AUXOT_SECRET_KEY", TEST_KEY)],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
    };
    let fresh_copy = |name: &str| {
        let dir = work.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(template.join("auxot.redb"), dir.join("auxot.redb")).unwrap();
        dir
    };
    // How long a whole rotation takes here, to spread the kills over it.
    let timing = fresh_copy("timing");
    let started = Instant::now();
    assert!(run(&timing).wait().unwrap().success());
    let full = started.elapsed();

    let (mut saw_old, mut saw_new) = (0, 0);
    for round in 0..16u32 {
        let dir = fresh_copy(&format!("round{round}"));
        let mut child = run(&dir);
        std::thread::sleep(full * round / 12);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let store = Store::open_offline(&dir).unwrap();
        let under_old = store.sealed_under(&old).unwrap();
        let under_new = store.sealed_under(&new).unwrap();
        match (under_old, under_new) {
            (SealedUnder::Key { values }, SealedUnder::OtherKey) => {
                assert_eq!(values, PROVIDERS, "round {round}");
                saw_old += 1;
            }
            (SealedUnder::OtherKey, SealedUnder::Key { values }) => {
                assert_eq!(values, PROVIDERS, "round {round}");
                saw_new += 1;
            }
            other => panic!("round {round}: data split between keys: {other:?}"),
        }
    }
    // The last rounds sleep past the whole run: at least those finished.
    assert!(
        saw_new > 0,
        "no kill came after the commit (old {saw_old}, new {saw_new})"
    );
    eprintln!("rotation of {PROVIDERS} keys took {full:?}; after kills: {saw_old} under old, {saw_new} under new");
}

async fn open_stream(
    server: &TestServer,
    client: &str,
) -> impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> {
    let response = server.open_stream(client, "gated").await;
    assert_eq!(response.status(), 200);
    let mut body = Box::pin(response.bytes_stream());
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap();
    assert!(first.unwrap().is_ok());
    body
}

#[tokio::test]
async fn sigterm_stops_accepting_but_lets_a_stream_in_flight_finish() {
    let fake = FakeUpstream::openai("up", &[PROVIDER_KEY], &["gated"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, PROVIDER_KEY).await;
    let client = server.client_key(&admin).await;
    let mut body = open_stream(&server, &client).await;

    server.terminate();
    let url = server.url.clone();
    let refused = eventually(Duration::from_secs(5), || {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{url}/healthz"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_err()
        }
    })
    .await;
    assert!(refused, "new connections are still accepted after SIGTERM");
    fake.release_stream();
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.expect("the stream was cut")));
    }
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
    let status = server.wait_exit(Duration::from_secs(10)).await.expect("did not exit");
    assert!(status.success(), "{status:?}\n{}", server.logs());
    assert!(
        server.logs().contains("letting requests in flight finish"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn a_stream_still_running_after_the_grace_period_is_cut_and_the_server_exits() {
    let fake = FakeUpstream::openai("up", &[PROVIDER_KEY], &["gated"]).await;
    let (mut server, admin) = TestServer::with_admin_using(Options::with_args(&["--shutdown-grace", "1"])).await;
    server.add_provider(&admin, "main", &fake, PROVIDER_KEY).await;
    let client = server.client_key(&admin).await;
    let mut body = open_stream(&server, &client).await;
    let stopped = Instant::now();
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(10)).await.expect("did not exit");
    assert!(status.success(), "{status:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "took {:?}",
        stopped.elapsed()
    );
    let mut rest = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!rest.contains("[DONE]"), "{rest}");
    assert!(server.logs().contains("grace period over"), "{}", server.logs());
}

#[tokio::test]
async fn serve_takes_the_socket_systemd_passes() {
    // What systemd does for auxot.socket: a bound, listening socket as fd 3, LISTEN_FDS=1,
    // LISTEN_PID = the service's pid (python keeps its pid across exec).
    let temp = tempfile::tempdir().unwrap();
    let script = r#"
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let mut child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_auxot"))
        .args(["serve", "--listen", "127.0.0.1:1", "--data-dir"])
        .arg(temp.path().join("data"))
        .env("AUXOT_SECRET_KEY", TEST_KEY)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let mut seen = String::new();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(at) = line.find("auxot listening on ") {
                return line[at + 19..].split_whitespace().next().map(str::to_string);
            }
        }
        None
    })
    .await
    .unwrap()
    .unwrap_or_else(|| panic!("no listening line: {seen}"));
    assert!(seen.contains("LISTEN_FDS"), "{seen}");
    assert!(!url.ends_with(":1"), "{url}");
    let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let _ = child.kill().await;
}

#[tokio::test]
async fn doctor_reports_every_tier_and_fails_on_a_bad_provider_key() {
    let fake = FakeUpstream::openai("up", &[PROVIDER_KEY], &["gpt-4o-mini"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, PROVIDER_KEY).await;
    let model_server = FakeUpstream::openai("llama", &["local"], &["llama-3-8b"]).await;
    let _gpu = TestWorker::gpu(&server, &admin, "gpu1", &model_server, "local", 2).await;
    let dir = data_arg(&server);
    let env = [("AUXOT_ADMIN_KEY", admin.as_str()), ("AUXOT_SECRET_KEY", TEST_KEY)];
    let report = succeeds(auxot_off_runtime(&["doctor", "--data-dir", &dir, "--server", &server.url], &env, "").await);
    for needle in [
        "open in the running server",
        "provider main: key accepted, 1 models",
        "gpu worker gpu1: online, 0/2 slots in use, models: llama-3-8b",
        "prompt via gpu: ",
        "prompt via cloud: main",
        "first token",
        "tokens/s",
        "all checks passed",
    ] {
        assert!(report.contains(needle), "missing '{needle}' in:\n{report}");
    }
    fake.set_keys(&["sk-some-other-key"]);
    fails_with(
        auxot_off_runtime(
            &["doctor", "--data-dir", &dir, "--server", &server.url, "--no-prompts"],
            &env,
            "",
        )
        .await,
        "FAIL  provider main",
    );
}
