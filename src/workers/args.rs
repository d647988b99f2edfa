//! Flags of `auxot worker gpu` and `auxot worker cli`; each also reads its `AUXOT_*` variable.
//! Documented in docs/worker-protocol.md.

use crate::crypto::Secret;
use std::time::Duration;

/// How a worker reaches the router; shared by both worker kinds.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// The router's base URL (http or https), e.g. http://127.0.0.1:8080. Several routers
    /// of one fleet: repeat it or separate them with commas; the worker stays connected to
    /// each and shares its slots among them.
    #[arg(long, env = "AUXOT_SERVER", value_delimiter = ',', required = true)]
    pub server: Vec<String>,
    /// Worker token created in the router's admin UI (prefer the variable: flags show in `ps`).
    #[arg(long, env = "AUXOT_WORKER_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub token: Secret,
    /// Name shown in the router's workers list. Default: the name of the worker token.
    #[arg(long, env = "AUXOT_WORKER_NAME")]
    pub name: Option<String>,
    /// Jobs this worker runs at once.
    #[arg(long, env = "AUXOT_SLOTS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: u32,
}

/// `auxot worker gpu`: serves the models of a local OpenAI-compatible server.
#[derive(clap::Args, Debug, Clone)]
pub struct GpuWorkerArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The model server's OpenAI base URL, including /v1, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, env = "AUXOT_UPSTREAM")]
    pub upstream: String,
    /// API key the model server expects, if any (sent as `Authorization: Bearer`).
    #[arg(long, env = "AUXOT_UPSTREAM_KEY", hide_env_values = true, value_parser = parse_token)]
    pub upstream_key: Option<Secret>,
    /// Seconds between re-reads of the model server's model list.
    #[arg(long, env = "AUXOT_MODELS_REFRESH_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub models_refresh_secs: u64,
    /// Advertise only these models (repeatable, or comma-separated); each must be listed by
    /// the model server. Default: every model it lists.
    #[arg(long = "model", env = "AUXOT_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,
    /// The largest single SSE event accepted from the model server, in MiB. A bigger one
    /// fails that job with a clear error; the connection and other jobs live on.
    #[arg(long, env = "AUXOT_MAX_EVENT_MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub max_event_mib: u64,
}

impl GpuWorkerArgs {
    pub fn models_refresh(&self) -> Duration {
        Duration::from_secs(self.models_refresh_secs)
    }
}

/// Which coding CLI a CLI worker drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliTool {
    /// `claude -p --output-format stream-json --verbose` (Claude Code).
    Claude,
    /// `codex exec --json` (OpenAI Codex CLI).
    Codex,
    /// Any command, from the `--command` template.
    Custom,
}

impl CliTool {
    pub fn as_str(self) -> &'static str {
        match self {
            CliTool::Claude => "claude",
            CliTool::Codex => "codex",
            CliTool::Custom => "custom",
        }
    }

    /// The model names offered when `--model` is not given.
    fn default_models(self) -> Vec<String> {
        match self {
            CliTool::Claude => vec!["claude-code".to_string()],
            CliTool::Codex => vec!["codex".to_string()],
            CliTool::Custom => Vec::new(),
        }
    }
}

/// `auxot worker cli`: runs each job through a coding CLI.
#[derive(clap::Args, Debug, Clone)]
pub struct CliWorkerArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The CLI to run.
    #[arg(long = "cli", env = "AUXOT_CLI", value_enum)]
    pub tool: CliTool,
    /// Model names this worker offers (repeatable, or comma-separated). Default: `claude-code`
    /// for claude, `codex` for codex; required for custom.
    #[arg(
        long = "model",
        env = "AUXOT_MODELS",
        value_delimiter = ',',
        required_if_eq("tool", "custom")
    )]
    pub models: Vec<String>,
    /// For custom: the command template (`{prompt}` marks where the prompt goes, else it is
    /// sent on stdin). For claude/codex: the binary to run instead of the one on PATH, with
    /// optional leading arguments.
    #[arg(long, env = "AUXOT_CLI_COMMAND", required_if_eq("tool", "custom"))]
    pub command: Option<String>,
    /// Seconds a job may run before its process group is killed.
    #[arg(long, env = "AUXOT_JOB_TIMEOUT_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_timeout_secs: u64,
}

impl CliWorkerArgs {
    /// `--model` as given, else the tool's default names (empty only for a custom tool,
    /// which clap already refuses).
    pub fn offered_models(&self) -> Vec<String> {
        let given: Vec<String> = self
            .models
            .iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if given.is_empty() {
            self.tool.default_models()
        } else {
            given
        }
    }

    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.job_timeout_secs)
    }
}

fn parse_token(value: &str) -> Result<Secret, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("the value is empty".to_string());
    }
    Ok(Secret::new(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Gpu {
        #[command(flatten)]
        args: GpuWorkerArgs,
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: CliWorkerArgs,
    }

    const CONN: [&str; 5] = ["w", "--server", "http://r:8080", "--token", "t0k"];

    #[test]
    fn gpu_flags_parse_with_defaults() {
        let mut argv = CONN.to_vec();
        argv.extend([
            "--upstream",
            "http://127.0.0.1:8000/v1",
            "--model",
            "a,b",
            "--model",
            "c",
        ]);
        let parsed = Gpu::try_parse_from(argv).unwrap().args;
        assert_eq!(parsed.connection.slots, 1);
        assert_eq!(parsed.connection.server, ["http://r:8080"]);
        assert_eq!(parsed.connection.token.expose(), "t0k");
        assert_eq!(parsed.models, ["a", "b", "c"]);
        assert_eq!(parsed.models_refresh_secs, 60);
        assert!(parsed.upstream_key.is_none());
        assert!(
            !format!("{parsed:?}").contains("t0k"),
            "the token must not show in Debug"
        );
    }

    #[test]
    fn server_takes_several_routers_repeated_or_comma_separated() {
        let argv = [
            "w",
            "--server",
            "http://a:8080,http://b:8080",
            "--server",
            "https://c",
            "--token",
            "t",
            "--upstream",
            "http://u/v1",
        ];
        let parsed = Gpu::try_parse_from(argv).unwrap().args;
        assert_eq!(
            parsed.connection.server,
            ["http://a:8080", "http://b:8080", "https://c"]
        );
        assert!(Gpu::try_parse_from(["w", "--token", "t", "--upstream", "http://u/v1"]).is_err());
    }

    #[test]
    fn slots_must_be_positive() {
        let mut argv = CONN.to_vec();
        argv.extend(["--upstream", "http://u/v1", "--slots", "0"]);
        assert!(Gpu::try_parse_from(argv).is_err());
    }

    #[test]
    fn cli_models_default_per_tool_and_custom_needs_command_and_models() {
        let mut argv = CONN.to_vec();
        argv.extend(["--cli", "claude"]);
        let parsed = Cli::try_parse_from(argv).unwrap().args;
        assert_eq!(parsed.offered_models(), ["claude-code"]);
        assert_eq!(parsed.job_timeout_secs, 600);

        let mut argv = CONN.to_vec();
        argv.extend(["--cli", "codex", "--model", "codex-big"]);
        assert_eq!(Cli::try_parse_from(argv).unwrap().args.offered_models(), ["codex-big"]);

        let mut argv = CONN.to_vec();
        argv.extend(["--cli", "custom", "--model", "m"]);
        assert!(Cli::try_parse_from(argv).is_err(), "custom without --command");

        let mut argv = CONN.to_vec();
        argv.extend(["--cli", "custom", "--command", "echo {prompt}"]);
        assert!(Cli::try_parse_from(argv).is_err(), "custom without --model");
    }
}
