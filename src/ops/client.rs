//! A small client for a running server's admin API (backup download, doctor's checks).

use super::{OpsError, ServerArgs};
use crate::crypto::Secret;
use std::time::Duration;

pub const ADMIN_KEY_ENV: &str = "AUXOT_ADMIN_KEY";

pub struct AdminClient {
    pub base: String,
    key: Secret,
    pub http: reqwest::Client,
}

impl AdminClient {
    pub fn new(args: &ServerArgs) -> Result<AdminClient, OpsError> {
        let key = match (&args.admin_key_file, std::env::var(ADMIN_KEY_ENV)) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map(|t| Secret::new(t.trim().to_string()))
                .map_err(OpsError::io(format!(
                    "cannot read the admin key file {}",
                    path.display()
                )))?,
            (None, Ok(key)) => Secret::new(key.trim().to_string()),
            (None, Err(_)) => Secret::default(),
        };
        if key.is_empty() {
            return Err(OpsError::Refused(format!(
                "an admin API key is needed to talk to the running server: set {ADMIN_KEY_ENV} or --admin-key-file (create one in the UI under API keys, role admin)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| OpsError::Refused(format!("cannot build an HTTP client: {e}")))?;
        Ok(AdminClient {
            base: args.server.trim_end_matches('/').to_string(),
            key,
            http,
        })
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.key.expose())
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.key.expose())
    }

    /// Sends, and turns a transport failure or an error status into a readable error.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, OpsError> {
        let response = request.send().await.map_err(|e| self.failed(e.to_string()))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body: serde_json::Value = response
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no error message")
            .to_string();
        Err(self.failed(format!("answered {status}: {message}")))
    }

    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, OpsError> {
        let response = self.send(self.get(path)).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.failed(format!("the answer broke off: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| self.failed(format!("sent unreadable JSON: {e}")))
    }

    pub fn failed(&self, message: String) -> OpsError {
        OpsError::Server {
            url: self.base.clone(),
            message,
        }
    }
}
