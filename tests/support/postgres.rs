//! A throwaway PostgreSQL cluster for the tests: `initdb` + `postgres` from the machine's
//! packages (Debian's `postgresql`), in a temp dir, on a free loopback port, fsync off. One
//! cluster per test-binary run, started on first use; each test gets its own database.
//!
//! initdb refuses to run as root, so as root the cluster runs as the `postgres` user (or
//! `nobody`). The server is started under a small shell that waits on a pipe from this
//! process: when the test binary exits (however it exits) the pipe closes, and the shell
//! stops the server and removes its directory.
//!
//! A test that needs an outage takes an `OwnCluster` instead: a cluster of its own, which it
//! stops and starts again on the same port and data directory.
//!
//! Without the binaries a test skips with a printed reason, unless `AUXOT_REQUIRE_POSTGRES=1`
//! (set by .ci/run) makes it fail.

use super::free_port;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Cluster {
    port: u16,
    /// The wrapper shell's stdin; kept open for the life of the process.
    _keepalive: std::process::ChildStdin,
}

static CLUSTER: OnceLock<Result<Mutex<Cluster>, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database on the shared cluster, as a URL; `None` (with the reason
/// printed) when PostgreSQL is not installed and not required.
pub async fn fresh_database() -> Option<String> {
    let cluster = CLUSTER.get_or_init(|| start_cluster().map(Mutex::new));
    let port = match cluster {
        Ok(cluster) => cluster.lock().unwrap_or_else(|e| e.into_inner()).port,
        Err(reason) => return skipped(reason),
    };
    Some(create_database(port, &format!("auxot_t{}", std::process::id())).await)
}

/// `None` with the reason printed, for a test to skip; a panic instead when
/// `AUXOT_REQUIRE_POSTGRES=1`.
fn skipped<T>(reason: &str) -> Option<T> {
    if std::env::var("AUXOT_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("PostgreSQL is required (AUXOT_REQUIRE_POSTGRES=1) but unavailable: {reason}");
    }
    eprintln!("skipping a PostgreSQL test: {reason}");
    None
}

/// The URL of database `name` on the cluster at `port`.
fn database_url(port: u16, name: &str) -> String {
    format!("postgres://auxot_test@127.0.0.1:{port}/{name}?sslmode=disable")
}

/// Creates a database named `prefix_N` (N unique in this process) on the cluster at `port`;
/// its URL.
async fn create_database(port: u16, prefix: &str) -> String {
    let name = format!("{prefix}_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
    run_sql(&database_url(port, "postgres"), &format!("CREATE DATABASE {name}")).await;
    database_url(port, &name)
}

/// Runs `sql` on the database at `url`, panicking with the error.
async fn run_sql(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"));
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = driver.await;
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("AUXOT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no /usr/lib/postgresql (apt-get install postgresql)".to_string())?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A private directory for a cluster, owned by the user the server will run as (initdb
/// refuses root), and that user.
fn cluster_dir() -> Result<(PathBuf, Option<&'static str>), String> {
    let dir = std::env::temp_dir().join(format!("auxot-pg-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !is_root() {
        return Ok((dir, None));
    }
    let user = if Command::new("id")
        .arg("postgres")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "postgres"
    } else {
        "nobody"
    };
    let status = Command::new("chown")
        .arg(user)
        .arg(&dir)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    if !status.success() {
        return Err(format!("cannot chown {} to {user}", dir.display()));
    }
    Ok((dir, Some(user)))
}

/// `initdb` and the `postgres` command line for a cluster in `dir` on `port`.
fn cluster_commands(bin: &std::path::Path, dir: &std::path::Path, port: u16) -> (String, String) {
    let data = dir.join("data");
    let initdb = format!(
        "{bin}/initdb -D {data} -U auxot_test --auth=trust --no-sync --encoding=UTF8 --locale=C >{dir}/initdb.log 2>&1",
        bin = bin.display(),
        data = data.display(),
        dir = dir.display(),
    );
    let postgres = format!(
        "{bin}/postgres -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
         -c shared_buffers=32MB >>{dir}/server.log 2>&1",
        bin = bin.display(),
        data = data.display(),
        dir = dir.display(),
    );
    (initdb, postgres)
}

/// Runs `script` in `sh` (as `run_as` when given), in `dir`, its stdin piped from here.
fn spawn_script(script: &str, dir: &std::path::Path, run_as: Option<&str>) -> Result<std::process::Child, String> {
    let mut command = match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--", "sh", "-c", script]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        }
    };
    command
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start PostgreSQL: {e}"))
}

/// Waits until `port` accepts connections, or the wrapper exits (with the logs).
fn wait_listening(child: &mut std::process::Child, dir: &std::path::Path, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Accepting TCP can precede accepting logins by a moment; the first connect retries.
            std::thread::sleep(Duration::from_millis(200));
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default()
                + &std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("PostgreSQL exited ({status}): {log}"));
        }
        if Instant::now() > deadline {
            return Err("PostgreSQL did not start within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A new cluster in a private directory on a free port, under the wrapper shell that
/// `wrapper(initdb, postgres, dir)` writes; returns once it takes connections.
fn launch(
    wrapper: impl FnOnce(&str, &str, &str) -> String,
) -> Result<(u16, PathBuf, std::process::Child, std::process::ChildStdin), String> {
    let bin = bin_dir()?;
    let (dir, run_as) = cluster_dir()?;
    let port = free_port();
    let (initdb, postgres) = cluster_commands(&bin, &dir, port);
    let script = wrapper(&initdb, &postgres, &dir.display().to_string());
    let mut child = spawn_script(&script, &dir, run_as)?;
    let stdin = child.stdin.take().ok_or("no stdin for the PostgreSQL wrapper")?;
    wait_listening(&mut child, &dir, port)?;
    Ok((port, dir, child, stdin))
}

fn start_cluster() -> Result<Cluster, String> {
    // The server lives as long as this shell's stdin is open: the test process holds it.
    let (port, _, _, keepalive) = launch(|initdb, postgres, dir| {
        format!("{initdb} || exit 1; {postgres} & pid=$!; cat >/dev/null; kill -INT $pid; wait $pid; rm -rf {dir}")
    })?;
    Ok(Cluster {
        port,
        _keepalive: keepalive,
    })
}

/// A cluster of a test's own, which it may stop and start again on the same port and data
/// directory (an outage), without touching the cluster every other test shares. Gone, with
/// its directory, when dropped or when the test binary exits.
pub struct OwnCluster {
    port: u16,
    dir: PathBuf,
    /// Commands to the wrapper shell, one a line: `stop`, `start`. Closed: stop and clean up.
    control: std::process::ChildStdin,
    child: std::process::Child,
}

impl OwnCluster {
    /// `None` (with the reason printed) when PostgreSQL is not installed and not required.
    pub fn start() -> Option<OwnCluster> {
        let launched = launch(|initdb, postgres, dir| {
            format!(
                "{initdb} || exit 1; run() {{ {postgres} & pid=$!; }}; run; \
                 while read cmd; do case \"$cmd\" in stop) kill -INT $pid; wait $pid;; start) run;; esac; done; \
                 kill -INT $pid; wait $pid; rm -rf {dir}"
            )
        });
        match launched {
            Ok((port, dir, child, control)) => Some(OwnCluster {
                port,
                dir,
                control,
                child,
            }),
            Err(reason) => skipped(&reason),
        }
    }

    /// A fresh database on this cluster, as a URL.
    pub async fn fresh_database(&self) -> String {
        create_database(self.port, "auxot_own").await
    }

    fn send(&mut self, command: &str) {
        use std::io::Write;
        writeln!(self.control, "{command}").unwrap_or_else(|e| panic!("the PostgreSQL wrapper is gone: {e}"));
        self.control
            .flush()
            .unwrap_or_else(|e| panic!("the PostgreSQL wrapper is gone: {e}"));
    }

    /// Stops the server (a fast shutdown: every connection is cut) and waits until its port
    /// refuses connections.
    pub async fn stop(&mut self) {
        self.send("stop");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "PostgreSQL did not stop within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the server again on the same port and data, and waits until it takes logins.
    pub async fn start_again(&mut self) {
        self.send("start");
        let admin = database_url(self.port, "postgres");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((client, connection)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
                drop(client);
                drop(connection);
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                panic!("PostgreSQL exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not come back within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `sql` on the cluster of `db_url` from its maintenance database (as the superuser),
/// e.g. to cut a router off its database.
pub async fn superuser_sql(db_url: &str, sql: &str) {
    let (base, _) = db_url.rsplit_once('/').expect("a database URL");
    run_sql(&format!("{base}/postgres?sslmode=disable"), sql).await;
}

/// The database name in a URL from `fresh_database`.
pub fn database_name(db_url: &str) -> &str {
    let (_, tail) = db_url.rsplit_once('/').expect("a database URL");
    tail.split('?').next().unwrap_or(tail)
}
