//! Routers on one PostgreSQL database (`support::postgres`): two of them, a cloud provider
//! their first admin added on one, and client keys both know.

use super::postgres::fresh_database;
use super::{eventually, FakeUpstream, Options, TestServer};
use serde_json::Value;
use std::time::Duration;

/// `router-a` and `router-b` on one fresh database; `None` when PostgreSQL is unavailable
/// (skipped).
pub async fn two_routers() -> Option<(TestServer, TestServer)> {
    let url = fresh_database().await?;
    let a = TestServer::start_with(Options::on_database(&url).named("router-a")).await;
    let b = TestServer::start_with(Options::on_database(&url).named("router-b")).await;
    Some((a, b))
}

/// Two routers on one database whose first admin added, on `a`, a cloud provider named
/// `cloud` serving `gpt-4o` from `fake`.
pub struct CloudFleet {
    pub a: TestServer,
    pub b: TestServer,
    pub admin: String,
    pub fake: FakeUpstream,
}

impl CloudFleet {
    /// `None` when PostgreSQL is unavailable (skipped); `provider_key` is the fake's key.
    pub async fn start(provider_key: &str) -> Option<CloudFleet> {
        let (a, b) = two_routers().await?;
        let fake = FakeUpstream::openai("cloud", &[provider_key], &["gpt-4o"]).await;
        let admin = a.admin_key().await;
        a.add_provider(&admin, "cloud", &fake, provider_key).await;
        Some(CloudFleet { a, b, admin, fake })
    }

    /// A client key made on `a` from `body` (name, role, limits), once both routers accept
    /// it and route `gpt-4o` (no request is spent on finding out): (id, key).
    pub async fn key_on_both(&self, body: Value) -> (String, String) {
        let (id, key) = self.a.new_api_key(&self.admin, body).await;
        for router in [&self.a, &self.b] {
            assert!(
                eventually(Duration::from_secs(2), || async {
                    router.call("GET", "/v1/models", Some(&key), None).await.json()["data"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m["id"] == "gpt-4o"))
                })
                .await,
                "{} never knew the key and the provider; its log:\n{}",
                router.url,
                router.logs()
            );
        }
        (id, key)
    }
}
