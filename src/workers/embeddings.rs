//! The GPU worker's embeddings: which of the model server's models embed (each asked once
//! with a one-word request, since `GET /models` does not say), and embeddings jobs, each one
//! `POST {upstream}/embeddings` whose whole answer goes to the router as one `chunk`.

use crate::translate::embeddings::{conform_encoding, read_request, reported_tokens, Encoding};
use crate::workers::client::{ChunkSink, Job, JobOutcome};
use crate::workers::model_server::ModelServer;
use crate::workers::protocol::Usage;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// A model server may load the model to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Probing stops after this long per models refresh, so a server with many models (each
/// loaded to answer) never holds the worker's connect back for long; the rest are asked at
/// the next refresh.
const PROBE_BUDGET: Duration = Duration::from_secs(15);
/// An embeddings answer bigger than this fails the job rather than being held.
const MAX_ANSWER: usize = 128 * 1024 * 1024;
/// Which models embed, as the model server answered the probe.
#[derive(Default)]
pub struct EmbeddingModels {
    verdicts: Mutex<HashMap<String, bool>>,
    /// Of the models last advertised, those that embed.
    current: Mutex<Vec<String>>,
}

impl EmbeddingModels {
    /// Probes the models not judged yet and remembers which of `models` embed. A model
    /// the server could not be asked about (unreachable, timed out) is asked again next time.
    pub async fn update(&self, server: &ModelServer<'_>, models: &[String]) {
        let unjudged: Vec<&String> = {
            let verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
            models.iter().filter(|m| !verdicts.contains_key(*m)).collect()
        };
        let started = std::time::Instant::now();
        for model in unjudged {
            if started.elapsed() > PROBE_BUDGET {
                tracing::info!("more models to ask about embeddings at the next models refresh");
                break;
            }
            if let Some(embeds) = probe(server, model).await {
                tracing::info!(model = %model, embeds, "asked the model server whether the model serves embeddings");
                self.verdicts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(model.clone(), embeds);
            }
        }
        let verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        let embedding: Vec<String> = models
            .iter()
            .filter(|m| verdicts.get(*m) == Some(&true))
            .cloned()
            .collect();
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = embedding;
    }

    pub fn current(&self) -> Vec<String> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// `Some(true)` when the server embeds with `model`, `Some(false)` when it answers that it
/// does not (llama.cpp without `--embeddings` answers 501, vLLM 400 or 404), `None` when it
/// could not be asked.
async fn probe(server: &ModelServer<'_>, model: &str) -> Option<bool> {
    let body = serde_json::json!({"model": model, "input": "auxot"}).to_string();
    let response = match server.post("embeddings", body).timeout(PROBE_TIMEOUT).send().await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(model = %model, error = %crate::providers::describe_reqwest_error(e), "cannot ask the model server about embeddings");
            return None;
        }
    };
    if !response.status().is_success() {
        return Some(false);
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<serde::de::IgnoredAny>,
    }
    let body = response.bytes().await.ok()?;
    Some(serde_json::from_slice::<Answer>(&body).is_ok_and(|a| !a.data.is_empty()))
}

/// Runs one embeddings job: the client's request goes to the model server as it is; its
/// answer (vectors in the encoding the client asked for) goes to the router whole.
pub async fn run_job(server: &ModelServer<'_>, job: Job, out: &ChunkSink) -> JobOutcome {
    let encoding = read_request(job.request.get().as_bytes()).map_or(Encoding::Float, |r| r.encoding);
    let response = match server
        .answer(server.post("embeddings", job.request.get().to_string()))
        .await
    {
        Ok(response) => response,
        Err(outcome) => return outcome,
    };
    let body = match crate::bounded::read_to_limit(response.bytes_stream(), MAX_ANSWER, 0).await {
        Ok(body) => Vec::from(body),
        Err(e) => {
            return JobOutcome::unread(e, |mib| {
                format!("the model server's embeddings answer is larger than {mib} MiB")
            })
        }
    };
    let body = match conform_encoding(&body, encoding) {
        Ok(Some(converted)) => converted,
        Ok(None) => body,
        Err(e) => return JobOutcome::failed(format!("the model server's {e}"), Some(502)),
    };
    let usage = reported_tokens(&body).map(|prompt| Usage::new(prompt, 0));
    let text = match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return JobOutcome::failed(format!("the model server's answer is not UTF-8: {e}"), Some(502)),
    };
    let answer = match RawValue::from_string(text) {
        Ok(answer) => answer,
        Err(e) => return JobOutcome::failed(format!("the model server's answer is not JSON: {e}"), Some(502)),
    };
    match out.send(answer).await {
        Ok(()) => JobOutcome::Done(usage),
        Err(closed) => JobOutcome::failed(closed.to_string(), None),
    }
}
