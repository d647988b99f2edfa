//! A provider fake whose answers the test writes: it lists its models in both dialects'
//! fields and answers every chat completion or message with what the test's function returns
//! for the request, byte for byte.

use super::{serve_warp, WarpBody};
use bytes::Bytes;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// The body and content type a `ScriptedProvider` answers a request (its JSON) with.
pub type Answer = (WarpBody, &'static str);

pub struct ScriptedProvider {
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ScriptedProvider {
    /// Serves on a free loopback port until dropped.
    pub async fn start<F>(models: &'static [&'static str], answer: F) -> ScriptedProvider
    where
        F: Fn(&Value) -> Answer + Clone + Send + Sync + 'static,
    {
        use warp::Filter;
        let list = warp::get().and(warp::path!("v1" / "models")).map(move || {
            let data: Vec<Value> = models
                .iter()
                .map(|m| json!({"id": m, "object": "model", "type": "model", "display_name": m, "created": 1, "created_at": "2025-01-01T00:00:00Z"}))
                .collect();
            warp::reply::json(&json!({"object": "list", "data": data, "has_more": false, "first_id": null, "last_id": null}))
        });
        let chat = warp::post()
            .and(
                warp::path!("v1" / "chat" / "completions")
                    .or(warp::path!("v1" / "messages"))
                    .unify(),
            )
            .and(warp::body::bytes())
            .map(move |body: Bytes| {
                let request: Value = serde_json::from_slice(&body).unwrap();
                let (body, content_type) = answer(&request);
                warp::http::Response::builder()
                    .header("content-type", content_type)
                    .body(body)
                    .unwrap()
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = serve_warp(list.or(chat), async move {
            let _ = stopped.await;
        });
        tokio::spawn(server);
        ScriptedProvider { addr, _stop: stop }
    }

    /// Its base URL as an OpenAI-dialect provider or model server (`…/v1`).
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Its base URL as an Anthropic provider.
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
