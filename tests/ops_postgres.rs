//! The operator's commands on the routers' PostgreSQL database (`--database`): admin
//! recovery and the installation check beside running routers, a backup taken while they
//! serve and restored into an empty database, and a secret rotation refused while a router
//! runs.

use crate::support::command::{auxot_off_runtime, fails_with, output_text, succeeds};
use crate::support::postgres::fresh_database;
use crate::support::{eventually, FakeUpstream, Options, TestServer, TEST_KEY};
use std::time::Duration;

const PROVIDER_KEY: &str = "sk-ops-pg-provider-key-000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_work_on_postgres_while_the_routers_run() {
    let Some(url) = fresh_database().await else { return };
    let router = TestServer::start_with(Options::on_database(&url).key(TEST_KEY)).await;
    router.admin_key().await;
    let old_session = router.login("admin", "password123").await;

    let listed = succeeds(auxot_off_runtime(&["admin", "list", "--database", &url], &[], "").await);
    assert!(listed.starts_with("admin\t"), "{listed}");
    let reset = succeeds(
        auxot_off_runtime(
            &["admin", "reset-password", "admin", "--database", &url],
            &[],
            "a-new-password-42\n",
        )
        .await,
    );
    assert!(
        reset.contains("session(s) ended") && !reset.contains(" 0 session"),
        "{reset}"
    );
    succeeds(auxot_off_runtime(&["admin", "create", "bob", "--database", &url], &[], "bobs-password\n").await);
    fails_with(
        auxot_off_runtime(&["admin", "create", "bob", "--database", &url], &[], "bobs-password\n").await,
        "already exists",
    );
    // The running router sees it all at once: it reads admins and sessions from the database.
    router.login("admin", "a-new-password-42").await;
    router.login("bob", "bobs-password").await;
    let stale = router
        .send(
            router
                .http
                .get(format!("{}/api/session", router.url))
                .header("cookie", old_session),
        )
        .await;
    assert_ne!(stale.status, 200, "a session from before the reset still works");
    succeeds(auxot_off_runtime(&["admin", "remove", "bob", "--database", &url], &[], "").await);
    fails_with(
        auxot_off_runtime(&["admin", "remove", "admin", "--database", &url], &[], "").await,
        "last account with the admin role",
    );

    let Some(empty) = fresh_database().await else { return };
    fails_with(
        auxot_off_runtime(&["admin", "list", "--database", &empty], &[], "").await,
        "holds no auxot data",
    );
    fails_with(
        auxot_off_runtime(&["admin", "list", "--database", "mysql://nope"], &[], "").await,
        "must start with postgres://",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_routers_serve_restores_into_an_empty_database_only() {
    let Some(url) = fresh_database().await else { return };
    let fake = FakeUpstream::openai("up", &[PROVIDER_KEY], &["gpt-4o"]).await;
    let (router, admin) = TestServer::with_admin_using(Options::on_database(&url).key(TEST_KEY)).await;
    router.add_provider(&admin, "main", &fake, PROVIDER_KEY).await;
    let client = router.client_key(&admin).await;
    router.chat(&client, "gpt-4o", false).await.expect(200);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.redb");
    let file_arg = file.display().to_string();
    let report = succeeds(auxot_off_runtime(&["backup", &file_arg, "--database", &url], &[], "").await);
    assert!(report.contains("from PostgreSQL"), "{report}");
    assert!(!report.contains(PROVIDER_KEY));
    assert!(
        !std::fs::read(&file)
            .unwrap()
            .windows(PROVIDER_KEY.len())
            .any(|w| w == PROVIDER_KEY.as_bytes()),
        "the provider key is in the backup unsealed"
    );
    // The router kept serving.
    router.chat(&client, "gpt-4o", false).await.expect(200);

    // Not over a database that holds data; not with another key.
    fails_with(
        auxot_off_runtime(
            &["restore", &file_arg, "--database", &url],
            &[("AUXOT_SECRET_KEY", TEST_KEY)],
            "",
        )
        .await,
        "already holds auxot data",
    );
    let Some(target) = fresh_database().await else { return };
    let other = auxot::crypto::MasterKey::generate_hex();
    fails_with(
        auxot_off_runtime(
            &["restore", &file_arg, "--database", &target],
            &[("AUXOT_SECRET_KEY", other.expose())],
            "",
        )
        .await,
        "the backup is sealed with key id",
    );
    let restored = succeeds(
        auxot_off_runtime(
            &["restore", &file_arg, "--database", &target],
            &[("AUXOT_SECRET_KEY", TEST_KEY)],
            "",
        )
        .await,
    );
    assert!(
        restored.contains("restored") && restored.contains("counts checked"),
        "{restored}"
    );

    let copy = TestServer::start_with(Options::on_database(&target).key(TEST_KEY)).await;
    copy.login("admin", "password123").await;
    copy.chat(&client, "gpt-4o", false).await.expect(200);
    let last = fake.chat_requests().pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str()),
        "the sealed provider key opens on the restored database"
    );
    let log = copy.call("GET", "/api/requests", Some(&admin), None).await;
    let rows = log.expect(200).json()["requests"].as_array().cloned().unwrap();
    assert_eq!(rows.len(), 2, "the backed-up request and the new one: {}", log.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_secret_on_postgres_is_refused_while_a_router_runs_then_reseals_everything() {
    let Some(url) = fresh_database().await else { return };
    let fake = FakeUpstream::openai("up", &[PROVIDER_KEY], &["gpt-4o"]).await;
    let (mut router, admin) = TestServer::with_admin_using(Options::on_database(&url).key(TEST_KEY)).await;
    router.add_provider(&admin, "main", &fake, PROVIDER_KEY).await;
    let client = router.client_key(&admin).await;
    let keys = tempfile::tempdir().unwrap();
    let new_key = keys.path().join("new.key");
    let new_arg = new_key.display().to_string();
    let rotate = || {
        auxot_off_runtime(
            &["rotate-secret", "--database", &url, "--new-key-file", &new_arg],
            &[("AUXOT_SECRET_KEY", TEST_KEY)],
            "",
        )
    };
    // The router's change listener holds the router lock once it is connected.
    assert!(
        eventually(Duration::from_secs(5), || async {
            router.call("GET", "/healthz", None, None).await.json()["status"] == "ok"
        })
        .await
    );
    fails_with(rotate().await, "routers are running on this database");
    router.chat(&client, "gpt-4o", false).await.expect(200);

    router.stop().await;
    let mut report = None;
    for _ in 0..50 {
        let out = rotate().await;
        if out.status.success() {
            report = Some(String::from_utf8_lossy(&out.stdout).to_string());
            break;
        }
        // The stopped router's connection may take a moment to close on the server.
        assert!(
            output_text(&out).contains("routers are running"),
            "{}",
            output_text(&out)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = report.expect("the rotation never ran after the router stopped");
    assert!(report.contains("re-sealed 1 provider key"), "{report}");
    assert!(report.contains("start every router"), "{report}");
    let new_text = std::fs::read_to_string(&new_key).unwrap().trim().to_string();

    match router.relaunch(Options::on_database(&url).key(TEST_KEY)).await {
        Ok(_) => panic!("the old key still opens the database"),
        Err(logs) => assert!(logs.contains("not the key this data was sealed with"), "{logs}"),
    }
    let rotated = router
        .relaunch(Options::on_database(&url).key(&new_text))
        .await
        .unwrap();
    rotated.chat(&client, "gpt-4o", false).await.expect(200);
    let last = fake.chat_requests().pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_postgres_database_and_the_key() {
    let Some(url) = fresh_database().await else { return };
    let fake = FakeUpstream::openai("up", &[PROVIDER_KEY], &["gpt-4o-mini"]).await;
    let (router, admin) = TestServer::with_admin_using(Options::on_database(&url).key(TEST_KEY)).await;
    router.add_provider(&admin, "main", &fake, PROVIDER_KEY).await;
    let dir = router.data_dir.display().to_string();
    let args = [
        "doctor",
        "--database",
        &url,
        "--data-dir",
        &dir,
        "--server",
        &router.url,
        "--no-prompts",
    ];
    let report = succeeds(
        auxot_off_runtime(
            &args,
            &[("AUXOT_ADMIN_KEY", admin.as_str()), ("AUXOT_SECRET_KEY", TEST_KEY)],
            "",
        )
        .await,
    );
    for needle in [
        "ok    database: PostgreSQL 127.0.0.1/",
        "schema current",
        "opens the canary and 1 sealed value(s)",
        "ok    usage buffer: empty",
        "provider main: key accepted",
        "all checks passed",
    ] {
        assert!(report.contains(needle), "missing '{needle}' in:\n{report}");
    }
    assert!(
        !report.contains("auxot_test@"),
        "the report names the database user: {report}"
    );
    let other = auxot::crypto::MasterKey::generate_hex();
    fails_with(
        auxot_off_runtime(
            &args,
            &[
                ("AUXOT_ADMIN_KEY", admin.as_str()),
                ("AUXOT_SECRET_KEY", other.expose()),
            ],
            "",
        )
        .await,
        "is not the data's key",
    );
}
