//! `auxot worker cli`: runs each job through a coding CLI on a fixed subscription (Claude
//! Code, Codex, or any command) and streams its answer back as `chat.completion.chunk`s.
//!
//! One process per job, in its own process group, so a cancel, a timeout or a lost
//! connection kills everything the CLI started. The CLI sees one prompt built from the chat
//! messages (see [`build_prompt`]); sampling parameters and tools in the request are ignored.

use crate::workers::args::{CliTool, CliWorkerArgs};
use crate::workers::client::{ChunkSink, ConnectionConfig, Job, JobHandler, JobOutcome, SinkClosed, WorkerError};
use crate::workers::fleet::run_worker;
use crate::workers::protocol::{Usage, WorkerKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

mod format;
mod limit;
mod process;

pub use format::build_prompt;
use format::{ChunkBuilder, CliEvent, OutputParser};
pub use process::split_command;
use process::{find_program, read_tail, ProcessGroupGuard};

/// Longer prompts go on stdin: Linux refuses a single argument over 128 KiB.
const MAX_PROMPT_ARG: usize = 100_000;
/// Between SIGTERM and SIGKILL to a job's process group.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How much of stderr an error message carries.
const STDERR_TAIL: usize = 500;
const PROMPT_PLACEHOLDER: &str = "{prompt}";

/// Runs the CLI worker until `shutdown`. Fails at once if the CLI cannot be found.
pub async fn run(args: CliWorkerArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), WorkerError> {
    let worker = CliWorker::new(&args)?;
    tracing::info!(cli = args.tool.as_str(), program = %worker.program.display(), models = ?worker.models, "CLI found");
    let conn = ConnectionConfig::from_args(&args.connection, None);
    run_worker(conn, Arc::new(worker), shutdown).await
}

struct CliWorker {
    tool: CliTool,
    /// The resolved executable.
    program: PathBuf,
    /// Arguments from `--command` after the program: the whole template for custom, extra
    /// leading arguments for claude/codex.
    template: Vec<String>,
    models: Vec<String>,
    timeout: Duration,
}

/// One process to start: its arguments and what goes on its stdin.
#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    args: Vec<String>,
    stdin: Option<String>,
}

impl CliWorker {
    fn new(args: &CliWorkerArgs) -> Result<Self, WorkerError> {
        let words = match (&args.command, args.tool) {
            (Some(command), _) => split_command(command).map_err(WorkerError::InvalidConfig)?,
            (None, CliTool::Claude) => vec!["claude".to_string()],
            (None, CliTool::Codex) => vec!["codex".to_string()],
            (None, CliTool::Custom) => {
                return Err(WorkerError::InvalidConfig("--cli custom needs --command".into()));
            }
        };
        let Some((program, template)) = words.split_first() else {
            return Err(WorkerError::InvalidConfig("--command is empty".into()));
        };
        let models = args.offered_models();
        if models.is_empty() {
            return Err(WorkerError::InvalidConfig(format!(
                "--cli {} needs at least one --model",
                args.tool.as_str()
            )));
        }
        Ok(CliWorker {
            tool: args.tool,
            program: find_program(program)?,
            template: template.to_vec(),
            models,
            timeout: args.job_timeout(),
        })
    }

    fn invocation(&self, prompt: String) -> Invocation {
        let mut args = Vec::with_capacity(self.template.len() + 8);
        match self.tool {
            CliTool::Claude => {
                args.extend(self.template.iter().cloned());
                args.extend(["-p", "--output-format", "stream-json", "--verbose"].map(String::from));
                // On stdin: no argument-length limit, and the prompt stays out of `ps`.
                Invocation {
                    args,
                    stdin: Some(prompt),
                }
            }
            CliTool::Codex => {
                args.extend(self.template.iter().cloned());
                // The worker's directory is rarely a git checkout; codex refuses to run
                // outside one without this flag.
                args.extend(["exec", "--json", "--skip-git-repo-check"].map(String::from));
                if prompt.len() > MAX_PROMPT_ARG {
                    args.push("-".into());
                    Invocation {
                        args,
                        stdin: Some(prompt),
                    }
                } else {
                    args.push(prompt);
                    Invocation { args, stdin: None }
                }
            }
            CliTool::Custom => {
                if self.template.iter().any(|word| word.contains(PROMPT_PLACEHOLDER)) {
                    args.extend(
                        self.template
                            .iter()
                            .map(|word| word.replace(PROMPT_PLACEHOLDER, &prompt)),
                    );
                    Invocation { args, stdin: None }
                } else {
                    args.extend(self.template.iter().cloned());
                    Invocation {
                        args,
                        stdin: Some(prompt),
                    }
                }
            }
        }
    }

    async fn run_process(&self, job_id: &str, model: &str, prompt: String, out: &ChunkSink) -> JobOutcome {
        let invocation = self.invocation(prompt);
        let mut command = Command::new(&self.program);
        command
            .args(&invocation.args)
            .stdin(if invocation.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return JobOutcome::failed(format!("cannot start {}: {e}", self.program.display()), None);
            }
        };
        let Some(mut group) = child.id().map(ProcessGroupGuard::new) else {
            return JobOutcome::failed(format!("{} exited at once", self.program.display()), None);
        };
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return JobOutcome::failed("the CLI's output pipes are missing", None);
        };
        let stdin = child.stdin.take();
        let feed_stdin = async move {
            if let (Some(mut stdin), Some(text)) = (stdin, invocation.stdin) {
                // A CLI that exits without reading its stdin is not an error here.
                let _ = stdin.write_all(text.as_bytes()).await;
            }
        };
        let (streamed, stderr_tail, ()) = tokio::join!(
            self.stream_output(job_id, model, stdout, out),
            read_tail(stderr, STDERR_TAIL),
            feed_stdin
        );
        let status = child.wait().await;
        if status.is_ok() {
            group.leader_reaped();
        }
        // What the CLI reported spending on an answer that then failed: still the truth
        // about this request, sent as a usage-only chunk before the failure.
        let spent = streamed.usage.filter(|_| streamed.sent_text);
        match finish_job(self.tool, streamed, status, &stderr_tail) {
            Finished::Done(usage, stop) => match out.send(stop).await {
                Ok(()) => JobOutcome::Done(usage),
                Err(closed) => JobOutcome::failed(closed.to_string(), None),
            },
            Finished::Failed(outcome) => {
                if let Some(usage) = spent {
                    let chunks = ChunkBuilder::new(job_id, model);
                    let _ = out.send(chunks.usage(&usage)).await;
                }
                outcome
            }
        }
    }

    /// Reads the CLI's stdout line by line, forwarding text as it arrives.
    async fn stream_output(
        &self,
        job_id: &str,
        model: &str,
        stdout: impl AsyncRead + Unpin,
        out: &ChunkSink,
    ) -> Streamed {
        let mut parser = OutputParser::new(self.tool);
        let mut chunks = ChunkBuilder::new(job_id, model);
        let mut streamed = Streamed::default();
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    streamed.failure = Some(format!("cannot read the CLI's output: {e}"));
                    break;
                }
            }
            let text = String::from_utf8_lossy(&line);
            for event in parser.parse_line(&text) {
                if apply_event(event, &mut streamed, &mut chunks, out).await.is_err() {
                    streamed.failure = Some("the router connection closed".into());
                    return streamed;
                }
            }
        }
        for event in parser.finish() {
            if apply_event(event, &mut streamed, &mut chunks, out).await.is_err() {
                streamed.failure = Some("the router connection closed".into());
                return streamed;
            }
        }
        streamed.stop = Some(chunks.stop());
        streamed
    }
}

async fn apply_event(
    event: CliEvent,
    streamed: &mut Streamed,
    chunks: &mut ChunkBuilder,
    out: &ChunkSink,
) -> Result<(), SinkClosed> {
    match event {
        CliEvent::Text(text) if text.is_empty() => {}
        CliEvent::Text(text) => {
            out.send(chunks.content(&text)).await?;
            streamed.sent_text = true;
        }
        CliEvent::Usage(usage) => streamed.usage = Some(usage),
        CliEvent::Failed(message) => streamed.failure = Some(message),
    }
    Ok(())
}

impl JobHandler for CliWorker {
    fn kind(&self) -> WorkerKind {
        WorkerKind::Cli
    }

    async fn models(&self) -> Result<Vec<String>, WorkerError> {
        Ok(self.models.clone())
    }

    async fn run_job(&self, job: Job, out: ChunkSink) -> JobOutcome {
        if !job.endpoint.is_chat() {
            // Never sent: a CLI worker advertises no embedding models.
            return JobOutcome::failed("a CLI worker serves chat jobs only", Some(400));
        }
        let request: ChatRequest = match serde_json::from_str(job.request.get()) {
            Ok(request) => request,
            Err(e) => return JobOutcome::failed(format!("the job's request cannot be read: {e}"), Some(400)),
        };
        let prompt = build_prompt(&request.messages);
        if prompt.trim().is_empty() {
            return JobOutcome::failed("the request has no message text to give the CLI", Some(400));
        }
        let model = request
            .model
            .or_else(|| self.models.first().cloned())
            .unwrap_or_default();
        match tokio::time::timeout(self.timeout, self.run_process(&job.id, &model, prompt, &out)).await {
            Ok(outcome) => outcome,
            // Dropping the job's future above killed the process group.
            Err(_) => JobOutcome::failed(
                format!(
                    "the {} CLI did not finish within {}s",
                    self.tool.as_str(),
                    self.timeout.as_secs()
                ),
                Some(504),
            ),
        }
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Vec<Value>,
}

/// What reading a job's stdout produced.
#[derive(Default)]
struct Streamed {
    sent_text: bool,
    usage: Option<Usage>,
    failure: Option<String>,
    /// The closing chunk, ready once stdout ended cleanly.
    stop: Option<Box<RawValue>>,
}

enum Finished {
    Done(Option<Usage>, Box<RawValue>),
    Failed(JobOutcome),
}

/// Decides how a job ended from what it printed and how it exited.
fn finish_job(tool: CliTool, streamed: Streamed, status: std::io::Result<ExitStatus>, stderr_tail: &str) -> Finished {
    if let Some(message) = streamed.failure {
        if let Some(until) = limit::usage_limit(&message, crate::clock::now_unix()) {
            return Finished::Failed(JobOutcome::Throttled {
                message,
                status: Some(429),
                retry_after: None,
                limited_until: Some(until),
            });
        }
        return Finished::Failed(JobOutcome::failed(message, None));
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => return Finished::Failed(JobOutcome::failed(format!("cannot wait for the CLI: {e}"), None)),
    };
    let Some(stop) = streamed.stop else {
        return Finished::Failed(JobOutcome::failed("the CLI's output ended abnormally", None));
    };
    if !status.success() {
        // Even after text: a CLI that exits non-zero did not finish its answer, and the
        // request must be booked as the failure it was (the client's stream ends with an
        // error event; a non-streaming client's request fails over).
        let detail = if stderr_tail.is_empty() {
            "(nothing on stderr)"
        } else {
            stderr_tail
        };
        let after = if streamed.sent_text { " after answering" } else { "" };
        return Finished::Failed(JobOutcome::failed(
            format!("the {} CLI exited with {status}{after}: {detail}", tool.as_str()),
            None,
        ));
    }
    Finished::Done(streamed.usage, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use format::usage_of;
    use serde_json::json;

    fn worker(tool: CliTool, template: &[&str]) -> CliWorker {
        CliWorker {
            tool,
            program: PathBuf::from("/bin/true"),
            template: template.iter().map(|s| s.to_string()).collect(),
            models: vec!["m".into()],
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn invocations_put_the_prompt_where_each_cli_reads_it() {
        let claude = worker(CliTool::Claude, &[]).invocation("hi".into());
        assert_eq!(claude.args, ["-p", "--output-format", "stream-json", "--verbose"]);
        assert_eq!(claude.stdin.as_deref(), Some("hi"));

        let codex = worker(CliTool::Codex, &["--model", "o3"]).invocation("hi".into());
        assert_eq!(
            codex.args,
            ["--model", "o3", "exec", "--json", "--skip-git-repo-check", "hi"]
        );
        assert_eq!(codex.stdin, None);
        let long = worker(CliTool::Codex, &[]).invocation("x".repeat(MAX_PROMPT_ARG + 1));
        assert_eq!(long.args.last().map(String::as_str), Some("-"));
        assert!(long.stdin.is_some());

        let placed = worker(CliTool::Custom, &["-p", "--prompt={prompt}"]).invocation("hi there".into());
        assert_eq!(
            placed,
            Invocation {
                args: vec!["-p".into(), "--prompt=hi there".into()],
                stdin: None
            }
        );
        let piped = worker(CliTool::Custom, &["-"]).invocation("hi".into());
        assert_eq!(piped.stdin.as_deref(), Some("hi"));
    }

    use crate::workers::client::test_sink;
    use crate::workers::protocol::WorkerMessage;

    fn custom(template: &str, timeout: Duration) -> CliWorker {
        let words = split_command(template).unwrap();
        CliWorker {
            tool: CliTool::Custom,
            program: find_program(&words[0]).unwrap(),
            template: words[1..].to_vec(),
            models: vec!["m".into()],
            timeout,
        }
    }

    fn job(request: Value) -> Job {
        Job {
            id: "j1".into(),
            endpoint: crate::workers::protocol::JobKind::ChatCompletions,
            request: serde_json::value::to_raw_value(&request).unwrap(),
        }
    }

    /// Runs a job and returns its outcome and the text of its chunks (the last is the stop).
    async fn run(worker: &CliWorker, prompt: &str) -> (JobOutcome, Vec<Value>) {
        let (sink, mut frames) = test_sink("j1");
        let request = json!({"model": "m", "messages": [{"role": "user", "content": prompt}]});
        let outcome = worker.run_job(job(request), sink).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut chunks = Vec::new();
        while let Ok(WorkerMessage::Chunk { chunk, .. }) = frames.try_recv() {
            chunks.push(serde_json::from_str::<Value>(chunk.get()).unwrap());
        }
        (outcome, chunks)
    }

    fn texts(chunks: &[Value]) -> Vec<String> {
        chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect()
    }

    #[tokio::test]
    async fn a_custom_command_streams_its_lines() {
        let worker = custom(
            r#"sh -c 'printf "%s\n" "$1"; echo "{\"text\":\"!\"}"' sh {prompt}"#,
            Duration::from_secs(10),
        );
        let (outcome, chunks) = run(&worker, "hello there").await;
        assert_eq!(outcome, JobOutcome::Done(None));
        assert_eq!(texts(&chunks), ["hello there\n", "!"]);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");

        // No {prompt}: the prompt arrives on stdin.
        let (outcome, chunks) = run(&custom("cat", Duration::from_secs(10)), "from stdin").await;
        assert_eq!(outcome, JobOutcome::Done(None));
        assert_eq!(texts(&chunks), ["from stdin\n"]);
    }

    #[tokio::test]
    async fn a_failing_command_reports_its_stderr() {
        let worker = custom("sh -c 'echo boom >&2; exit 3'", Duration::from_secs(10));
        let (outcome, chunks) = run(&worker, "x").await;
        match outcome {
            JobOutcome::Failed { message, status: None } => {
                assert!(
                    message.contains("exit status: 3") && message.ends_with("boom"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(chunks.is_empty());
    }

    #[tokio::test]
    async fn a_fake_claude_is_read_as_stream_json() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("claude");
        std::fs::write(
            &script,
            r#"#!/bin/sh
prompt=$(cat)
[ "$1 $2 $3 $4 $5" = "-p --output-format stream-json --verbose " ] || { echo "bad args: $*" >&2; exit 2; }
printf '%s\n' '{"type":"system","subtype":"init"}'
printf '{"type":"assistant","message":{"content":[{"type":"text","text":"you said %s"}]}}\n' "$prompt"
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"result":"x","usage":{"input_tokens":4,"output_tokens":2}}'
"#,
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let worker = CliWorker {
            tool: CliTool::Claude,
            program: find_program(script.to_str().unwrap()).unwrap(),
            template: Vec::new(),
            models: vec!["claude-code".into()],
            timeout: Duration::from_secs(10),
        };
        let (outcome, chunks) = run(&worker, "hi").await;
        assert_eq!(outcome, JobOutcome::Done(Some(usage_of(4, 2))));
        assert_eq!(texts(&chunks), ["you said hi"]);
    }

    fn group_alive(pgid: &str) -> bool {
        std::process::Command::new("kill")
            .args(["-0", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    #[tokio::test]
    async fn cancelling_a_job_kills_its_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let template = format!("sh -c 'echo $$ > {}; sleep 300 & sleep 300'", pid_file.display());
        let worker = Arc::new(custom(&template, Duration::from_secs(60)));
        let running = Arc::clone(&worker);
        let task = tokio::spawn(async move { run(&running, "x").await });
        let pgid = loop {
            match std::fs::read_to_string(&pid_file) {
                Ok(pid) if pid.ends_with('\n') => break pid.trim().to_string(),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert!(group_alive(&pgid));
        task.abort();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while group_alive(&pgid) {
            assert!(
                std::time::Instant::now() < deadline,
                "process group {pgid} survived the cancel"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_job_past_its_timeout_fails_with_504() {
        let worker = custom("sleep 30", Duration::from_millis(300));
        let (outcome, _) = run(&worker, "x").await;
        assert!(
            matches!(outcome, JobOutcome::Failed { status: Some(504), .. }),
            "{outcome:?}"
        );
    }
}
