//! `auxot` subcommands other than `serve`, run as an operator runs them: no key or database
//! from the test's own environment, only what the test passes, stdin fed, output kept.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `auxot ARGS` with the key, admin-key, data-dir and database variables cleared, then `env`.
pub fn auxot_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_auxot"));
    command
        .args(args)
        .env_remove("AUXOT_SECRET_KEY")
        .env_remove("AUXOT_SECRET_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("AUXOT_ADMIN_KEY")
        .env_remove("AUXOT_DATA_DIR")
        .env_remove("AUXOT_DATABASE_URL")
        .env_remove("AUXOT_DATABASE_URL_FILE")
        .envs(env.iter().copied());
    command
}

/// Runs `auxot ARGS` (see `auxot_command`), feeding `stdin`, and waits for it.
pub fn auxot(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = auxot_command(args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn auxot");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `auxot` off the test's runtime, so fakes on this runtime keep answering meanwhile. It
/// starts at once; the future only waits for it.
pub fn auxot_off_runtime(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> impl std::future::Future<Output = Output> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let stdin = stdin.to_string();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        auxot(&args, &env, &stdin)
    });
    async move { run.await.unwrap() }
}

/// Exit status, stdout and stderr, for an assertion's message.
pub fn output_text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts the command succeeded; its stdout.
#[track_caller]
pub fn succeeds(output: Output) -> String {
    assert!(output.status.success(), "{}", output_text(&output));
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Asserts the command failed and said `needle` (on stdout or stderr).
#[track_caller]
pub fn fails_with(output: Output, needle: &str) {
    assert!(!output.status.success(), "succeeded: {}", output_text(&output));
    assert!(
        output_text(&output).contains(needle),
        "expected '{needle}': {}",
        output_text(&output)
    );
}
