//! `auxot migrate --to postgres://…`: moves a single box's redb data into an empty
//! PostgreSQL database, so the same installation can grow into several routers. Offline:
//! the server on this data dir must be stopped (a running one holds the file).

use super::OpsError;
use crate::config::{locate_database, DATABASE_URL_ENV};
use crate::store::Store;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// The data directory holding auxot.redb (the server on it stopped).
    #[arg(long, env = "AUXOT_DATA_DIR", default_value = "./auxot-data")]
    pub data_dir: PathBuf,
    /// The empty PostgreSQL database to move the data to (postgres://user:password@host/db).
    #[arg(long, env = DATABASE_URL_ENV, hide_env_values = true)]
    pub to: Option<String>,
    /// File holding that URL instead (keeps the password off the command line).
    #[arg(long, env = "AUXOT_DATABASE_URL_FILE")]
    pub to_file: Option<PathBuf>,
}

/// Copies everything and returns the report to print.
pub async fn run(args: &MigrateArgs) -> Result<String, OpsError> {
    let url = locate_database(
        args.to.clone(),
        args.to_file.clone(),
        std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
    )
    .map_err(|e| OpsError::Refused(e.to_string()))?
    .ok_or_else(|| OpsError::Refused("give the target database: --to postgres://… (or --to-file)".into()))?;
    let source = Store::open_offline(&args.data_dir)?;
    let state = source.key_state()?;
    if state.canary.is_none() {
        return Err(OpsError::Refused(format!(
            "{} holds no auxot data yet (start the server once, or migrate nothing)",
            args.data_dir.display()
        )));
    }
    // Brings an older file up to this auxot's schema first, as a start would.
    source.initialize(None, None)?;
    super::commit_journal(&source, &args.data_dir).await?;
    let target = Store::connect_postgres(url.expose()).await?;
    let copied = source.copy_to(&target).await?;
    let mut report = format!(
        "copied {} rows in {} tables from {} to PostgreSQL (counts checked):\n",
        copied.rows(),
        copied.tables.len(),
        args.data_dir.display()
    );
    for (table, rows) in &copied.tables {
        report.push_str(&format!("  {table:<16} {rows}\n"));
    }
    report.push_str(
        "Next: start every router with --database (or AUXOT_DATABASE_URL / the auxot-database-url credential) and the SAME secret key as this box; keep the redb file as a fallback until you are satisfied.",
    );
    Ok(report)
}
