//! The admin-API and client calls tests make over and over, by what they do: aliases,
//! settings, providers, API keys, the request log; requests as an Anthropic client sends them.

use super::{eventually, Reply, TestServer};
use serde_json::Value;
use std::time::Duration;

impl TestServer {
    /// `POST /api/setup`: creates the first admin, `username` with `password`; the reply.
    pub async fn setup_admin(&self, username: &str, password: &str) -> Reply {
        let body = serde_json::json!({"username": username, "password": password});
        self.call("POST", "/api/setup", None, Some(body)).await
    }

    /// `POST /api/login` as `username` with `password`; the reply, whatever it is (`login`
    /// is the session that must open).
    pub async fn try_login(&self, username: &str, password: &str) -> Reply {
        let body = serde_json::json!({"username": username, "password": password});
        self.call("POST", "/api/login", None, Some(body)).await
    }

    /// A request to `path` authenticated as an Anthropic SDK authenticates: `x-api-key` and
    /// `anthropic-version: 2023-06-01`.
    pub fn anthropic_request(&self, method: &str, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method.parse().expect("method"), format!("{}{path}", self.url))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    }

    /// `POST path` with a JSON body and `Authorization: Bearer key`, to send or to add headers to.
    pub fn post_as(&self, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(body)
    }

    /// Adds a provider of type `kind` (`openai`, `anthropic`, …) at `base_url`, which must
    /// succeed: its JSON.
    pub async fn add_provider_at(&self, admin: &str, name: &str, kind: &str, base_url: &str, key: &str) -> Value {
        let body = serde_json::json!({"name": name, "type": kind, "api_key": key, "base_url": base_url});
        let reply = self.call("POST", "/api/providers", Some(admin), Some(body)).await;
        reply.expect(201);
        reply.json()
    }

    /// Creates an alias (`POST /api/aliases`), which must succeed.
    pub async fn add_alias(&self, admin: &str, alias: Value) {
        self.call("POST", "/api/aliases", Some(admin), Some(alias))
            .await
            .expect(201);
    }

    /// Changes settings (`PUT /api/settings`), which must succeed; the settings as stored.
    pub async fn put_settings(&self, admin: &str, change: Value) -> Value {
        let reply = self.call("PUT", "/api/settings", Some(admin), Some(change)).await;
        reply.expect(200);
        reply.json()
    }

    /// Changes a provider (`PATCH /api/providers/ID`, `provider` as `add_provider` returned
    /// it), which must succeed.
    pub async fn patch_provider(&self, admin: &str, provider: &Value, change: Value) {
        let id = provider["id"].as_str().expect("a provider's id");
        self.call("PATCH", &format!("/api/providers/{id}"), Some(admin), Some(change))
            .await
            .expect(200);
    }

    /// Creates an API key from `body` (`POST /api/api-keys`): its (id, secret key).
    pub async fn new_api_key(&self, admin: &str, body: Value) -> (String, String) {
        let reply = self.call("POST", "/api/api-keys", Some(admin), Some(body)).await;
        reply.expect(201);
        let json = reply.json();
        (
            json["id"].as_str().expect("id").to_string(),
            json["key"].as_str().expect("key").to_string(),
        )
    }

    /// The API key `id` as `GET /api/api-keys` lists it.
    pub async fn listed_api_key(&self, admin: &str, id: &str) -> Value {
        let listed = self.call("GET", "/api/api-keys", Some(admin), None).await.json();
        listed["data"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("key {id} is not listed: {listed}"))
    }

    /// A page of the request log (`GET /api/requests?QUERY`): its rows, newest first, and
    /// the cursor to the next page.
    pub async fn request_log_page(&self, admin: &str, query: &str) -> Value {
        let reply = self
            .call("GET", &format!("/api/requests?{query}"), Some(admin), None)
            .await;
        reply.expect(200);
        reply.json()
    }

    /// The request log's rows (`GET /api/requests?QUERY`), newest first.
    pub async fn request_log(&self, admin: &str, query: &str) -> Vec<Value> {
        let page = self.request_log_page(admin, query).await;
        page["requests"].as_array().cloned().unwrap_or_default()
    }

    /// The request log's newest row (`null` while it is empty).
    pub async fn newest_request_row(&self, admin: &str) -> Value {
        self.request_log_page(admin, "limit=1").await["requests"][0].clone()
    }

    /// The request log's rows once it holds at least `count` (written off the request path);
    /// fails when it does not within 5 s.
    pub async fn request_log_of(&self, admin: &str, count: usize) -> Vec<Value> {
        let found = eventually(Duration::from_secs(5), || async {
            self.request_log(admin, "").await.len() >= count
        })
        .await;
        let rows = self.request_log(admin, "").await;
        assert!(found, "fewer than {count} rows: {rows:?}");
        rows
    }
}
