//! `auxot doctor`: checks an installation end to end and prints a short report. Local checks
//! (config, key source, database) need no server; the rest goes through the running
//! server's admin API: providers (key validated, models counted), workers (online, slots),
//! and one test prompt through each tier that has something to serve it.

use super::client::AdminClient;
use super::keys::{configured_key, source_of};
use super::{DataArgs, ServerArgs};
use crate::config::SecretKeySource;
use crate::store::offline::OfflineError;
use crate::store::rekey::SealedUnder;
use crate::store::{Store, DB_FILE};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Skip the test prompts (they cost a few tokens on a cloud provider).
    #[arg(long)]
    pub no_prompts: bool,
}

/// The report, and whether every check passed.
pub struct Report {
    pub text: String,
    pub healthy: bool,
}

#[derive(Default)]
struct Lines {
    text: String,
    failures: usize,
}

impl Lines {
    fn ok(&mut self, what: &str, detail: impl AsRef<str>) {
        let _ = writeln!(self.text, "  ok    {what}: {}", detail.as_ref());
    }
    fn warn(&mut self, what: &str, detail: impl AsRef<str>) {
        let _ = writeln!(self.text, "  warn  {what}: {}", detail.as_ref());
    }
    fn fail(&mut self, what: &str, detail: impl AsRef<str>) {
        self.failures += 1;
        let _ = writeln!(self.text, "  FAIL  {what}: {}", detail.as_ref());
    }
    fn section(&mut self, title: &str) {
        let _ = writeln!(self.text, "{title}");
    }
}

pub async fn run(args: &DoctorArgs) -> Report {
    let mut out = Lines::default();
    out.section("config");
    check_config(args, &mut out);
    out.section("database");
    let server_holds_db = match args.data.database_url() {
        Ok(Some(url)) => {
            check_shared_database(args, url.expose(), &mut out).await;
            // Routers may run anywhere; none needs to answer at --server.
            false
        }
        Ok(None) => check_database(args, &mut out),
        Err(e) => {
            out.fail("database", e.to_string());
            false
        }
    };
    out.section(&format!("server {}", args.server.server));
    check_server(args, server_holds_db, &mut out).await;
    let healthy = out.failures == 0;
    let _ = writeln!(
        out.text,
        "{}",
        if healthy {
            "all checks passed".to_string()
        } else {
            format!("{} check(s) failed", out.failures)
        }
    );
    Report {
        text: out.text,
        healthy,
    }
}

fn check_config(args: &DoctorArgs, out: &mut Lines) {
    out.ok("data dir", args.data.data_dir.display().to_string());
    if let Ok(Some(url)) = args.data.database_url() {
        out.ok("database", format!("PostgreSQL {}", database_name(url.expose())));
    }
    let source = source_of(&args.data);
    match &source {
        SecretKeySource::Env => out.warn(
            "secret key",
            "from $AUXOT_SECRET_KEY: any process of the same user can read an environment; prefer a credential (LoadCredential=) or a 0600 file",
        ),
        SecretKeySource::File(path) | SecretKeySource::Credential(path) | SecretKeySource::DataDir(path) => {
            match std::fs::metadata(path) {
                Ok(meta) => {
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::PermissionsExt;
                        let mode = meta.permissions().mode() & 0o777;
                        if mode & 0o077 != 0 {
                            out.fail("secret key", format!("{} is readable by others (mode {mode:o}); chmod 600 it", source.describe()));
                            return;
                        }
                    }
                    let _ = meta;
                    out.ok("secret key", source.describe());
                }
                Err(e) => out.fail("secret key", format!("{}: {e}", source.describe())),
            }
        }
    }
}

/// Returns whether a running server holds the database.
fn check_database(args: &DoctorArgs, out: &mut Lines) -> bool {
    let path = args.data.data_dir.join(DB_FILE);
    let size = std::fs::metadata(&path).map(|m| m.len());
    match Store::open_offline(&args.data.data_dir) {
        Err(OfflineError::InUse(_)) => {
            out.ok(
                "database",
                format!(
                    "{} ({}), open in the running server",
                    path.display(),
                    human_size(size.unwrap_or(0))
                ),
            );
            true
        }
        Err(e) => {
            out.fail("database", e.to_string());
            false
        }
        Ok(store) => {
            let rows: u64 = match store.table_rows() {
                Ok(tables) => tables.iter().map(|(_, n)| n).sum(),
                Err(e) => {
                    out.fail("database", format!("cannot read: {e}"));
                    return false;
                }
            };
            out.ok(
                "database",
                format!(
                    "{} ({}, {rows} rows), no server running on it",
                    path.display(),
                    human_size(size.unwrap_or(0))
                ),
            );
            match store.key_state() {
                Ok(state) => match configured_key(&args.data, &state) {
                    Ok((key, _)) => report_key(out, &key.id_hex(), store.sealed_under(&key)),
                    Err(e) => out.fail("key check", e.to_string()),
                },
                Err(e) => out.fail("key check", e.to_string()),
            }
            false
        }
    }
}

/// The routers' PostgreSQL database: reachable, its schema this auxot's, the configured key
/// its key; and rows this machine's disk buffer still holds for it.
async fn check_shared_database(args: &DoctorArgs, url: &str, out: &mut Lines) {
    let name = database_name(url);
    let store = match args.data.open_store().await {
        Ok(store) => store,
        Err(e) => {
            out.fail("database", format!("{name}: {e}"));
            return;
        }
    };
    match store.shared_table_rows().await {
        Ok(tables) => {
            let rows: u64 = tables.iter().map(|(_, n)| n).sum();
            out.ok(
                "database",
                format!(
                    "PostgreSQL {name}, schema current, {rows} rows in {} tables",
                    tables.len()
                ),
            );
        }
        Err(e) => {
            out.fail("database", format!("{name}: cannot read: {e}"));
            return;
        }
    }
    match store.load_key_state().await {
        Ok(state) => match configured_key(&args.data, &state) {
            Ok((key, _)) => {
                let id = key.id_hex();
                report_key(out, &id, store.sealed_under_shared(std::sync::Arc::new(key)).await);
            }
            Err(e) => out.fail("key check", e.to_string()),
        },
        Err(e) => out.fail("key check", e.to_string()),
    }
    let buffer = args.data.data_dir.join(crate::usage::buffer::FILE_NAME);
    match std::fs::metadata(&buffer).map(|m| m.len()) {
        Ok(bytes) if bytes > 24 => out.warn(
            "usage buffer",
            format!(
                "{} holds {} of usage rows not yet in PostgreSQL; the router on this data dir writes them once it runs and reaches the database",
                buffer.display(),
                human_size(bytes)
            ),
        ),
        _ => out.ok("usage buffer", "empty"),
    }
}

/// Host and database of a URL, without user or password, for the report.
fn database_name(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .map(|u| format!("{}{}", u.host_str().unwrap_or("?"), u.path()))
        .unwrap_or_else(|| "(the configured database)".into())
}

fn report_key(out: &mut Lines, key_id: &str, sealed: Result<SealedUnder, crate::store::rekey::RekeyError>) {
    match sealed {
        Ok(SealedUnder::Key { values }) => out.ok(
            "key check",
            format!("key id {key_id} opens the canary and {values} sealed value(s)"),
        ),
        Ok(SealedUnder::OtherKey) => out.fail(
            "key check",
            format!("the configured key (id {key_id}) is not the data's key: the server will refuse to start"),
        ),
        Err(e) => out.fail("key check", e.to_string()),
    }
}

async fn check_server(args: &DoctorArgs, server_holds_db: bool, out: &mut Lines) {
    let base = args.server.server.trim_end_matches('/');
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build();
    let health = match plain {
        Ok(client) => client.get(format!("{base}/healthz")).send().await,
        Err(e) => {
            out.fail("reachable", e.to_string());
            return;
        }
    };
    match health {
        Ok(r) if r.status().is_success() => out.ok("reachable", "/healthz answered ok"),
        Ok(r) => {
            out.fail("reachable", format!("/healthz answered {}", r.status()));
            return;
        }
        Err(e) => {
            if server_holds_db {
                out.fail(
                    "reachable",
                    format!("a server holds the database but {base} does not answer: {e}"),
                );
            } else {
                out.warn("reachable", format!("no server answers at {base} (not running?)"));
            }
            return;
        }
    }
    let client = match AdminClient::new(&args.server) {
        Ok(client) => client,
        Err(e) => {
            out.warn("admin checks", format!("skipped: {e}"));
            return;
        }
    };
    let providers = check_providers(&client, out).await;
    let workers = check_workers(&client, out).await;
    if args.no_prompts {
        out.warn("test prompts", "skipped (--no-prompts)");
        return;
    }
    for (tier, model) in [
        ("gpu", workers.gpu_model),
        ("cli", workers.cli_model),
        ("cloud", providers),
    ] {
        match model {
            Some(model) => test_prompt(&client, tier, &model, out).await,
            None => out.warn(&format!("prompt via {tier}"), "nothing serves this tier; skipped"),
        }
    }
}

/// Validates each provider's key by refreshing its model list; returns a model for the
/// cloud tier's test prompt.
async fn check_providers(client: &AdminClient, out: &mut Lines) -> Option<String> {
    let list = match client.get_json("/api/providers").await {
        Ok(list) => list,
        Err(e) => {
            out.fail("providers", e.to_string());
            return None;
        }
    };
    let providers = list["data"].as_array().cloned().unwrap_or_default();
    if providers.is_empty() {
        out.warn("providers", "none configured");
    }
    let mut pick = None;
    for p in &providers {
        let name = p["name"].as_str().unwrap_or("?");
        let id = p["id"].as_str().unwrap_or_default();
        if p["enabled"] == json!(false) {
            out.warn(&format!("provider {name}"), "disabled");
            continue;
        }
        let started = Instant::now();
        match client
            .send(client.post(&format!("/api/providers/{id}/refresh-models")))
            .await
        {
            Ok(response) => {
                let view: Value = response
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                let count = view["model_count"].as_u64().unwrap_or(0);
                out.ok(
                    &format!("provider {name}"),
                    format!("key accepted, {count} models ({} ms)", started.elapsed().as_millis()),
                );
                if pick.is_none() && count > 0 {
                    pick = Some((name.to_string(), id.to_string()));
                }
            }
            Err(e) => out.fail(&format!("provider {name}"), e.to_string()),
        }
    }
    let (name, id) = pick?;
    let models = client.get_json("/api/models").await.ok()?;
    let ids: Vec<&str> = models["data"]
        .as_array()?
        .iter()
        .filter(|m| m["provider_id"] == json!(id))
        .filter_map(|m| m["id"].as_str())
        .collect();
    // The test prompt should be cheap: a small model where the provider has one.
    let model = ids
        .iter()
        .find(|m| m.contains("mini") || m.contains("haiku") || m.contains("nano"))
        .or(ids.first())?;
    Some(format!("{name}/{model}"))
}

#[derive(Default)]
struct WorkerModels {
    gpu_model: Option<String>,
    cli_model: Option<String>,
}

async fn check_workers(client: &AdminClient, out: &mut Lines) -> WorkerModels {
    let mut found = WorkerModels::default();
    let list = match client.get_json("/api/workers").await {
        Ok(list) => list,
        Err(e) => {
            out.fail("workers", e.to_string());
            return found;
        }
    };
    let workers = list["data"].as_array().cloned().unwrap_or_default();
    if workers.is_empty() {
        out.warn("workers", "none connected");
    }
    for w in &workers {
        let name = w["name"].as_str().unwrap_or("?");
        let kind = w["kind"].as_str().unwrap_or("?");
        let status = w["status"].as_str().unwrap_or("?");
        let label = format!("{kind} worker {name}");
        if status == "offline" {
            out.warn(
                &label,
                format!("offline since {}", w["last_heartbeat"].as_str().unwrap_or("?")),
            );
            continue;
        }
        let total = w["slots_total"].as_u64().unwrap_or(0);
        let used = w["slots_in_use"].as_u64().unwrap_or(0);
        let models: Vec<&str> = w["models"]
            .as_array()
            .map(|m| m.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.ok(
            &label,
            format!("online, {used}/{total} slots in use, models: {}", models.join(", ")),
        );
        let slot = match kind {
            "gpu" => &mut found.gpu_model,
            "cli" => &mut found.cli_model,
            _ => continue,
        };
        if slot.is_none() {
            *slot = models.first().map(|m| m.to_string());
        }
    }
    found
}

/// One short streamed prompt through `tier`; reports time to first token and tokens/s.
async fn test_prompt(client: &AdminClient, tier: &str, model: &str, out: &mut Lines) {
    let what = format!("prompt via {tier}");
    let body = json!({
        "model": model,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "Reply with the single word: ok"}],
    });
    let started = Instant::now();
    let request = client
        .post("/v1/chat/completions")
        .header("x-auxot-tier", tier)
        .timeout(Duration::from_secs(120))
        .header("content-type", "application/json")
        .body(body.to_string());
    let response = match client.send(request).await {
        Ok(r) => r,
        Err(e) => {
            out.fail(&what, format!("{model}: {e}"));
            return;
        }
    };
    let route = response
        .headers()
        .get("x-auxot-route")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(model)
        .to_string();
    let mut first_token = None;
    let mut chunks = 0u64;
    let mut usage_tokens = None;
    let mut parser = crate::translate::sse::SseParser::new();
    let mut stream = response.bytes_stream();
    let mut ended = false;
    while !ended {
        let events = match stream.next().await {
            Some(Ok(piece)) => parser.push(&piece),
            Some(Err(e)) => {
                out.fail(&what, format!("{route}: the stream broke off: {e}"));
                return;
            }
            None => {
                ended = true;
                parser.finish()
            }
        };
        for event in events {
            let Ok(event) = serde_json::from_str::<Value>(event.data.trim()) else {
                continue;
            };
            if let Some(error) = event.get("error") {
                out.fail(
                    &what,
                    format!("{route}: {}", error["message"].as_str().unwrap_or("error event")),
                );
                return;
            }
            let text = event["choices"][0]["delta"]["content"].as_str().unwrap_or_default();
            if !text.is_empty() {
                first_token.get_or_insert_with(|| started.elapsed());
                chunks += 1;
            }
            if let Some(n) = event["usage"]["completion_tokens"].as_u64() {
                usage_tokens = Some(n);
            }
        }
    }
    let total = started.elapsed();
    let Some(ttft) = first_token else {
        out.fail(&what, format!("{route}: the answer had no content"));
        return;
    };
    let tokens = usage_tokens.unwrap_or(chunks);
    let generating = total.saturating_sub(ttft).as_secs_f64();
    let rate = if generating > 0.0 {
        format!("{:.1} tokens/s", tokens as f64 / generating)
    } else {
        "— tokens/s".to_string()
    };
    out.ok(
        &what,
        format!("{route}: first token {} ms, {tokens} tokens, {rate}", ttft.as_millis()),
    );
}

fn human_size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
