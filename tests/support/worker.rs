//! Real `auxot worker` processes for the tests, and a fake `claude` CLI script.

use super::{eventually, FakeUpstream, TestServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A worker connection the test drives by hand, frame by frame.
pub type WorkerSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the router's worker endpoint with `token` and says `hello` (the test writes
/// it): the router's answer (JSON, within 10 s) and the open socket.
pub async fn hand_driven_worker(server: &TestServer, token: &str, hello: Value) -> (Value, WorkerSocket) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let mut request = (server.url.replace("http://", "ws://") + "/api/workers/connect")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(Message::text(hello.to_string())).await.unwrap();
    let answer = match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str(&text).unwrap(),
        other => panic!("no answer to hello: {other:?}"),
    };
    (answer, socket)
}

pub struct TestWorker {
    child: Child,
    logs: Arc<Mutex<String>>,
}

impl TestWorker {
    /// `auxot worker gpu` in front of `fake` (whose key is `upstream_key`), connected and
    /// listed by the router before this returns. Its token allows every model.
    pub async fn gpu(
        server: &TestServer,
        admin: &str,
        name: &str,
        fake: &FakeUpstream,
        upstream_key: &str,
        slots: u32,
    ) -> TestWorker {
        let token = worker_token_allowing(server, admin, name, "gpu", &["*"]).await;
        let args = vec![
            "gpu".to_string(),
            "--upstream".into(),
            fake.base_url(),
            "--upstream-key".into(),
            upstream_key.into(),
        ];
        Self::launch(server, admin, name, &token, slots, args, &[]).await
    }

    /// `auxot worker cli --cli claude --command <fake script>` offering `models`.
    pub async fn cli(
        server: &TestServer,
        admin: &str,
        name: &str,
        cli: &FakeCli,
        models: &[&str],
        slots: u32,
    ) -> TestWorker {
        let token = worker_token_allowing(server, admin, name, "cli", &["*"]).await;
        let mut args = vec![
            "cli".to_string(),
            "--cli".into(),
            "claude".into(),
            "--command".into(),
            cli.script.display().to_string(),
        ];
        for model in models {
            args.push("--model".into());
            args.push(model.to_string());
        }
        let env = [("FAKE_CLI_DIR".to_string(), cli.dir.display().to_string())];
        Self::launch(server, admin, name, &token, slots, args, &env).await
    }

    pub async fn launch(
        server: &TestServer,
        admin: &str,
        name: &str,
        token: &str,
        slots: u32,
        args: Vec<String>,
        env: &[(String, String)],
    ) -> TestWorker {
        let worker = Self::spawn(&server.url, name, token, slots, args, env);
        let listed = eventually(Duration::from_secs(20), || async {
            let workers = server.call("GET", "/api/workers", Some(admin), None).await.json();
            workers["data"]
                .as_array()
                .is_some_and(|all| all.iter().any(|w| w["name"] == name && w["status"] != "offline"))
        })
        .await;
        assert!(listed, "worker {name} never connected:\n{}", worker.logs());
        worker
    }

    pub fn spawn(
        url: &str,
        name: &str,
        token: &str,
        slots: u32,
        args: Vec<String>,
        env: &[(String, String)],
    ) -> TestWorker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_auxot"));
        command
            .arg("worker")
            .args(&args)
            .arg("--server")
            .arg(url)
            .arg("--name")
            .arg(name)
            .arg("--slots")
            .arg(slots.to_string())
            .env("AUXOT_WORKER_TOKEN", token)
            .env("RUST_LOG", "debug")
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn auxot worker");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        TestWorker { child, logs }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (up to `within`) for the worker to exit, which must be a failure whose log
    /// says `needle`.
    pub async fn fails_saying(&mut self, within: Duration, needle: &str) {
        let status = self.wait_exit(within).await.expect("the worker kept running");
        assert!(!status.success());
        // The reader may still be draining the last lines the process wrote.
        let said = eventually(Duration::from_secs(5), || async { self.logs().contains(needle) }).await;
        assert!(said, "{}", self.logs());
    }

    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// SIGKILL: the worker vanishes without a goodbye.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

pub async fn worker_token(server: &TestServer, admin: &str, name: &str, kind: &str) -> String {
    let reply = server
        .call(
            "POST",
            "/api/worker-tokens",
            Some(admin),
            Some(json!({"name": name, "kind": kind})),
        )
        .await;
    reply.expect(201);
    reply.json()["token"].as_str().unwrap().to_string()
}

/// A token whose worker may serve `allowed` (`*`: anything, cloud-served names included —
/// the deliberate GPU-first override the tier tests rely on).
pub async fn worker_token_allowing(
    server: &TestServer,
    admin: &str,
    name: &str,
    kind: &str,
    allowed: &[&str],
) -> String {
    let reply = server
        .call(
            "POST",
            "/api/worker-tokens",
            Some(admin),
            Some(json!({"name": name, "kind": kind, "allowed_models": allowed})),
        )
        .await;
    reply.expect(201);
    reply.json()["token"].as_str().unwrap().to_string()
}

/// The router's view of one worker.
pub async fn worker_view(server: &TestServer, admin: &str, name: &str) -> Option<Value> {
    let workers = server.call("GET", "/api/workers", Some(admin), None).await.json();
    workers["data"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name && w["status"] != "offline")
        .cloned()
        .or_else(|| workers["data"].as_array()?.iter().find(|w| w["name"] == name).cloned())
}

/// A fake `claude`: prints Claude Code's stream-json lines. It records its arguments and
/// PID and its standard input in its directory, and waits for the file `gate` there when `gated` exists.
pub struct FakeCli {
    pub dir: PathBuf,
    pub script: PathBuf,
    _temp: tempfile::TempDir,
}

impl FakeCli {
    pub fn new() -> FakeCli {
        Self::with_script(
            r#"#!/bin/sh
d="$FAKE_CLI_DIR"
echo $$ > "$d/pid.$$"
printf '%s\n' "$@" > "$d/args.$$"
cat > "$d/input.$$"
echo '{"type":"system","subtype":"init","session_id":"s1"}'
if [ -e "$d/limited" ]; then
  echo "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"result\":\"Claude AI usage limit reached|$(cat "$d/limited")\"}"
  rm -f "$d/pid.$$"
  exit 0
fi
if [ -e "$d/gated" ]; then
  while [ ! -e "$d/gate" ]; do sleep 0.02; done
fi
echo '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Hello from cli"}]}}'
sleep 0.02
echo '{"type":"result","subtype":"success","is_error":false,"result":"Hello from cli","usage":{"input_tokens":7,"output_tokens":3}}'
rm -f "$d/pid.$$"
"#,
        )
    }

    /// A fake CLI that runs `script` (a whole `sh` script) instead of the usual one.
    pub fn with_script(script_text: &str) -> FakeCli {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let script = dir.join("claude");
        std::fs::write(&script, script_text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeCli {
            dir,
            script,
            _temp: temp,
        }
    }

    /// From now on each run waits until `open_gate`.
    pub fn close_gate(&self) {
        let _ = std::fs::remove_file(self.dir.join("gate"));
        std::fs::write(self.dir.join("gated"), "").unwrap();
    }

    /// From now on each run reports Claude Code's usage limit, resetting at `until`.
    pub fn set_limited(&self, until: i64) {
        std::fs::write(self.dir.join("limited"), until.to_string()).unwrap();
    }

    pub fn open_gate(&self) {
        std::fs::write(self.dir.join("gate"), "").unwrap();
    }

    /// PIDs of runs still going.
    pub fn running(&self) -> Vec<u32> {
        files_with_prefix(&self.dir, "pid.")
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
            .collect()
    }

    /// The arguments and standard input of every run so far.
    pub fn runs(&self) -> Vec<String> {
        files_with_prefix(&self.dir, "args.")
            .iter()
            .filter_map(|p| {
                let args = std::fs::read_to_string(p).ok()?;
                let input_path = p.with_file_name(p.file_name()?.to_str()?.replace("args.", "input."));
                let input = std::fs::read_to_string(input_path).unwrap_or_default();
                Some(format!("{args}{input}"))
            })
            .collect()
    }
}

fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process is still alive.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.split_whitespace().nth(2).is_none_or(|state| state != "Z"))
            .unwrap_or(false)
}
