//! The switchboard: parse the command line, load config, run one subcommand.

/// mimalloc: about a fifth fewer CPU cycles per request than glibc's malloc (measured in
/// BENCHMARKS.md), and freed memory goes back to the OS instead of staying in per-thread
/// arenas. Its arenas are not committed eagerly (`.cargo/config.toml`), which would make
/// ~18 MB resident at start for nothing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use auxot::config::{LogFormat, ServeArgs, ServeConfig};
use auxot::ops::admins::AdminCommand;
use auxot::ops::backup::{BackupArgs, RestoreArgs};
use auxot::ops::doctor::DoctorArgs;
use auxot::ops::migrate::MigrateArgs;
use auxot::ops::rotate::RotateArgs;
use auxot::workers::args::{CliWorkerArgs, GpuWorkerArgs};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "auxot",
    version,
    about = "Self-hosted AI inference router: GPU workers → CLI workers → cloud"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router: HTTP API, web UI and store.
    Serve(ServeArgs),
    /// Print a fresh random secret key (64 hex chars) for AUXOT_SECRET_KEY.
    Keygen,
    /// Run a worker that dials the router and serves its jobs.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Re-seal every stored secret under a new key, in one transaction (server stopped; on
    /// PostgreSQL, every router stopped).
    RotateSecret(RotateArgs),
    /// Write a consistent snapshot of the data (from a running server through its admin
    /// API, else directly from the stopped database).
    Backup(BackupArgs),
    /// Replace the database with a snapshot (server stopped; the old file is kept aside), or
    /// fill an empty PostgreSQL database with it (--database).
    Restore(RestoreArgs),
    /// Manage admin accounts offline, e.g. after a lost password (server stopped; on
    /// PostgreSQL the routers may run).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Check an installation end to end: config, key, database, providers, workers, tiers.
    Doctor(DoctorArgs),
    /// Move this box's data (auxot.redb) into an empty PostgreSQL database, for several
    /// routers on one database (server stopped).
    Migrate(MigrateArgs),
    /// One password hash for the server, in a process of its own (request on stdin).
    #[command(name = "hash-password-child", hide = true)]
    HashPasswordChild,
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Serve jobs from a local OpenAI-compatible model server (llama.cpp, vLLM, Ollama, SGLang).
    Gpu(GpuWorkerArgs),
    /// Serve jobs through a coding CLI on a subscription (Claude Code, Codex, or a custom command).
    Cli(CliWorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen => {
            #[allow(clippy::print_stdout)] // the command's output is the key
            {
                println!("{}", auxot::crypto::MasterKey::generate_hex().expose());
            }
            ExitCode::SUCCESS
        }
        Command::HashPasswordChild => auxot::auth::serve_hash_child(),
        Command::Serve(args) => {
            // Held to the end: dropping it writes out the lines still queued.
            let _flush_logs = init_logging_off_thread(args.log_format);
            raise_open_file_limit();
            hash_passwords_in_children();
            exit(run_serve(args))
        }
        Command::RotateSecret(args) => {
            init_logging(LogFormat::Text);
            report(on_runtime(async move {
                auxot::ops::rotate::run(&args).await.map_err(|e| e.to_string())
            }))
        }
        Command::Backup(args) => {
            init_logging(LogFormat::Text);
            report(on_runtime(async move {
                auxot::ops::backup::backup(&args).await.map_err(|e| e.to_string())
            }))
        }
        Command::Restore(args) => {
            init_logging(LogFormat::Text);
            report(on_runtime(async move {
                auxot::ops::backup::restore(&args).await.map_err(|e| e.to_string())
            }))
        }
        Command::Admin(command) => {
            init_logging(LogFormat::Text);
            report(on_runtime(async move {
                auxot::ops::admins::run(&command).await.map_err(|e| e.to_string())
            }))
        }
        Command::Migrate(args) => {
            init_logging(LogFormat::Text);
            report(on_runtime(async move {
                auxot::ops::migrate::run(&args).await.map_err(|e| e.to_string())
            }))
        }
        Command::Doctor(args) => {
            init_logging(LogFormat::Text);
            let result = on_runtime(async move {
                let report = auxot::ops::doctor::run(&args).await;
                #[allow(clippy::print_stdout)] // the command's output is the report
                {
                    print!("{}", report.text);
                }
                Ok(report.healthy)
            });
            match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(message) => exit(Err(message)),
            }
        }
        Command::Worker(WorkerCommand::Gpu(args)) => {
            init_logging(LogFormat::Text);
            exit(on_runtime(async move {
                auxot::workers::gpu::run(args, shutdown_signal())
                    .await
                    .map_err(|e| e.to_string())
            }))
        }
        Command::Worker(WorkerCommand::Cli(args)) => {
            init_logging(LogFormat::Text);
            exit(on_runtime(async move {
                auxot::workers::cli::run(args, shutdown_signal())
                    .await
                    .map_err(|e| e.to_string())
            }))
        }
    }
}

/// The server hashes passwords in child processes of this very binary (see
/// `auth::hash_child`). `/proc/self/exe` still runs it after a package upgrade replaced the
/// file on disk.
fn hash_passwords_in_children() {
    let proc_exe = std::path::PathBuf::from("/proc/self/exe");
    let program = if proc_exe.exists() {
        Some(proc_exe)
    } else {
        std::env::current_exe().ok()
    };
    if let Some(program) = program {
        auxot::auth::hash_in_child_processes(program);
    }
}

fn exit(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command's report on stdout, or its error on stderr.
fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            #[allow(clippy::print_stdout)] // the command's output is the report
            {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn on_runtime<T>(work: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?
        .block_on(work)
}

/// The threads `serve` runs on: as asked, or one per CPU this process may use.
fn serve_threads(asked: u16) -> usize {
    match asked {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => usize::from(n),
    }
}

/// On one thread, a single-threaded scheduler: tasks never move between threads, so a
/// wake-up is a queue push rather than an atomic hand-off, and nothing steals or parks.
/// With one CPU that costs about a seventh less CPU a request than the multi-threaded
/// scheduler with one worker (BENCHMARKS.md). Blocking work (store commits, password
/// hashes) runs on the blocking pool or in child processes either way.
fn serve_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

fn init_logging(format: LogFormat) {
    install_logger(format, std::io::stderr);
}

/// The server's logging: lines are formatted where they happen and gathered in memory; a
/// background thread writes them to stderr in batches (`log_buffer.rs`), so a request never
/// waits on a slow terminal, pipe or journal, nor wakes a thread per line.
fn init_logging_off_thread(format: LogFormat) -> Option<auxot::log_buffer::FlushGuard> {
    match auxot::log_buffer::spawn(std::io::stderr()) {
        Ok((writer, guard)) => {
            let gathered = writer.clone();
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                gathered.flush_now(&mut std::io::stderr());
                report(info);
            }));
            install_logger(format, writer);
            Some(guard)
        }
        Err(e) => {
            install_logger(format, std::io::stderr);
            tracing::warn!(error = %e, "cannot start the log writer thread: logging straight to stderr");
            None
        }
    }
}

fn install_logger<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_timer(auxot::log_fields::LogTime)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.fmt_fields(auxot::log_fields::QuickFields).init(),
    }
}

/// Below this many open files a router refuses connections in a flood of a few hundred
/// clients: said at start.
const FEW_OPEN_FILES: u64 = 4096;

/// Every client connection, every upstream connection and each data file takes a file
/// descriptor. A shell's soft limit is usually 1024, which a flood of some 500 clients (each
/// with its upstream connection) exhausts: accepts and upstream connects then fail. The hard
/// limit is what the administrator allows, so the server raises its soft limit to it, as
/// nginx (`worker_rlimit_nofile`) and Go's runtime do; `LimitNOFILE` in the systemd unit
/// sets both.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(soft) = limit.current else { return };
    // An unlimited hard limit still stops at the kernel's `fs.nr_open`.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let hard = match (limit.maximum, nr_open) {
        (Some(hard), _) => hard,
        (None, Some(nr_open)) => nr_open,
        (None, None) => soft,
    };
    let mut now = soft;
    if hard > soft {
        let raised = Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                now = hard;
                tracing::debug!(from = soft, to = hard, "raised the open-file limit to its hard limit");
            }
            Err(e) => tracing::info!(error = %e, limit = soft, "cannot raise the open-file limit"),
        }
    }
    if now < FEW_OPEN_FILES {
        tracing::warn!(
            limit = now,
            "the open-file limit is low: a flood of more than about {} clients at once will be refused; raise it (ulimit -n, or LimitNOFILE in the systemd unit)",
            now / 2
        );
    }
}

fn run_serve(args: ServeArgs) -> Result<(), String> {
    let threads = serve_threads(args.threads);
    let runtime = serve_runtime(threads).map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let config = ServeConfig::load(args).map_err(|e| e.to_string())?;
        let listen = config.listen;
        let state = auxot::start(config).await.map_err(|e| e.to_string())?;
        let listener = match socket_from_systemd()? {
            Some(listener) => {
                tracing::info!("listening on the socket systemd passed (LISTEN_FDS); --listen is not used");
                listener
            }
            None => tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?,
        };
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            threads,
            "auxot listening on http://{addr}"
        );
        auxot::serve(listener, state, shutdown_signal()).await;
        tracing::info!("auxot stopped");
        Ok(())
    })
}

/// The listening socket of systemd socket activation (`auxot.socket`), when started by it:
/// during a restart new connections wait in that socket's backlog instead of being refused.
fn socket_from_systemd() -> Result<Option<tokio::net::TcpListener>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let socket = fds
        .take_tcp_listener(0)
        .map_err(|e| format!("the socket systemd passed (LISTEN_FDS) is not a TCP listener: {e}"))?;
    let Some(socket) = socket else { return Ok(None) };
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("cannot use the socket systemd passed: {e}"))?;
    tokio::net::TcpListener::from_std(socket)
        .map(Some)
        .map_err(|e| format!("cannot use the socket systemd passed: {e}"))
}

/// SIGTERM (systemd) or Ctrl-C: stop accepting, let in-flight requests finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
