//! The secret key across restarts: same key keeps working, a wrong or missing key is
//! refused before the port is bound and leaves the data as it was.

use crate::support::{file_bytes, FakeUpstream, Options, TestServer, OTHER_KEY, TEST_KEY};
use std::os::unix::fs::PermissionsExt;

const KEY: &str = "sk-restart-provider-key-0001";

#[tokio::test]
async fn restart_with_the_same_key_keeps_providers_and_keys_working() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    server.chat(&client, "gpt-4o", false).await.expect(200);
    server.stop().await;

    let again = server
        .relaunch(Options::with_key(Some(TEST_KEY)))
        .await
        .expect("restart");
    again.chat(&client, "gpt-4o", true).await.expect(200);
    let providers = again.call("GET", "/api/providers", Some(&admin), None).await.json();
    assert_eq!(providers["data"][0]["name"], "main");
    let last = fake.chat_requests().pop().unwrap();
    assert_eq!(last.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
}

#[tokio::test]
async fn restart_with_a_wrong_key_is_refused_and_the_data_is_intact() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    server.stop().await;
    let before = file_bytes(&server.db_path());

    let logs = match server.relaunch(Options::with_key(Some(OTHER_KEY))).await {
        Ok(_) => panic!("started with the wrong key"),
        Err(logs) => logs,
    };
    assert!(logs.contains("not the key this data was sealed with"), "{logs}");
    assert!(!logs.contains("auxot listening on"), "bound a port: {logs}");
    assert!(logs.contains("exited with"), "{logs}");
    assert_eq!(
        file_bytes(&server.db_path()),
        before,
        "the refused start changed the database"
    );

    let again = server
        .relaunch(Options::with_key(Some(TEST_KEY)))
        .await
        .expect("restart with the right key");
    again.chat(&client, "gpt-4o", false).await.expect(200);
}

#[tokio::test]
async fn no_config_generates_a_private_key_file_and_reuses_it() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let mut server = TestServer::start_with(Options::with_key(None)).await;
    let key_file = server.data_path("secret.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        server.logs().contains("generated one into this file"),
        "{}",
        server.logs()
    );
    let admin = server.admin_key().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    server.stop().await;

    let mut again = server
        .relaunch(Options::with_key(None))
        .await
        .expect("restart on the generated key");
    again.chat(&client, "gpt-4o", false).await.expect(200);
    again.stop().await;

    std::fs::remove_file(&key_file).unwrap();
    let logs = match server.relaunch(Options::with_key(None)).await {
        Ok(_) => panic!("started without the key its data needs"),
        Err(logs) => logs,
    };
    assert!(logs.contains("no key was given"), "{logs}");
    assert!(!key_file.exists(), "a new key was generated over sealed data");
}

#[tokio::test]
async fn a_passphrase_is_stretched_and_a_short_key_is_refused() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let passphrase = "correct horse battery staple";
    let mut server = TestServer::start_with(Options::with_key(Some(passphrase))).await;
    assert!(server.logs().contains("passphrase"), "{}", server.logs());
    let admin = server.admin_key().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    server.stop().await;

    let mut again = server
        .relaunch(Options::with_key(Some(passphrase)))
        .await
        .expect("same passphrase");
    again.chat(&client, "gpt-4o", false).await.expect(200);
    again.stop().await;

    let refused = server.relaunch(Options::with_key(Some("a different passphrase"))).await;
    assert!(refused.err().unwrap().contains("not the key this data was sealed with"));
    let refused = server.relaunch(Options::with_key(Some("short"))).await;
    assert!(refused.err().unwrap().contains("too short"));
}

#[tokio::test]
async fn the_key_is_read_from_a_file_or_a_systemd_credential() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, format!("{TEST_KEY}\n")).unwrap();
    let (mut server, admin) = TestServer::with_admin_using(Options {
        secret_key: None,
        env: vec![("AUXOT_SECRET_KEY_FILE".into(), file.display().to_string())],
        ..Options::default()
    })
    .await;
    assert!(!server.data_path("secret.key").exists());
    server.stop().await;

    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("auxot-secret-key"), TEST_KEY).unwrap();
    let again = server
        .relaunch(Options {
            secret_key: None,
            env: vec![("CREDENTIALS_DIRECTORY".into(), creds.path().display().to_string())],
            ..Options::default()
        })
        .await
        .expect("start on the credential");
    again
        .call("GET", "/api/providers", Some(&admin), None)
        .await
        .expect(200);

    let missing = server
        .relaunch(Options {
            secret_key: None,
            env: vec![("AUXOT_SECRET_KEY_FILE".into(), "/nonexistent/auxot.key".into())],
            ..Options::default()
        })
        .await;
    assert!(missing.err().unwrap().contains("/nonexistent/auxot.key"));
}
