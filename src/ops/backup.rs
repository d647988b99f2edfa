//! `auxot backup FILE` and `auxot restore FILE`.
//!
//! A backup is a consistent snapshot (see `store::snapshot`): taken directly from a stopped
//! server's database, or downloaded from a running one's `GET /api/backup`, or read from the
//! routers' PostgreSQL database in one snapshot while they keep serving (`--database`). It
//! holds what the database holds: provider keys sealed, API keys and tokens as hashes, never
//! a plaintext secret, and not the secret key. Restoring needs the key the backup was sealed
//! with. A backup restores into a data dir, or into an EMPTY PostgreSQL database
//! (`--database`): restoring over a database routers run on is refused.

use super::client::AdminClient;
use super::keys::configured_key;
use super::{DataArgs, OpsError, ServerArgs};
use crate::store::offline::OfflineError;
use crate::store::tables::SCHEMA_VERSION;
use crate::store::{Store, DB_FILE};
use futures_util::StreamExt;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// Where to write the snapshot (a new file; an existing one is refused).
    pub file: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Used when a running server holds the data dir: the snapshot comes through its API.
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// A snapshot written by `auxot backup` (or the UI's "Download backup").
    pub file: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

pub async fn backup(args: &BackupArgs) -> Result<String, OpsError> {
    if args.file.exists() {
        return Err(OpsError::Refused(format!("{} already exists", args.file.display())));
    }
    let partial = partial_path(&args.file);
    let _ = std::fs::remove_file(&partial);
    let how = if args.data.database_url()?.is_some() {
        let store = args.data.open_store().await?;
        store.snapshot_to(&partial).await?;
        private(&partial)?;
        "from PostgreSQL (one consistent snapshot; the routers kept serving)".to_string()
    } else {
        backup_redb(args, &partial).await?
    };
    let summary = match check_snapshot(&partial) {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &args.file).map_err(OpsError::io(format!("cannot write {}", args.file.display())))?;
    Ok(format!(
        "backed up {} to {} ({summary}).\nIt holds provider keys sealed under the secret key, not the key itself: keep a copy of the key apart from it.",
        how,
        args.file.display()
    ))
}

/// From the redb file of a stopped server, or through a running server's API.
async fn backup_redb(args: &BackupArgs, partial: &Path) -> Result<String, OpsError> {
    match Store::open_offline(&args.data.data_dir) {
        Ok(store) => {
            // Rows a crash left in the journal belong in the backup, as the next start
            // would have committed them.
            super::commit_journal(&store, &args.data.data_dir).await?;
            store.snapshot_now(partial)?;
            private(partial)?;
            Ok(format!("from the stopped database in {}", args.data.data_dir.display()))
        }
        Err(OfflineError::InUse(_)) => {
            let client = AdminClient::new(&args.server)?;
            download(&client, partial).await?;
            Ok(format!("from the running server at {}", client.base))
        }
        Err(e) => Err(e.into()),
    }
}

async fn download(client: &AdminClient, to: &Path) -> Result<(), OpsError> {
    let response = client.send(client.get("/api/backup")).await?;
    let what = format!("cannot write {}", to.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(to).map_err(OpsError::io(what.clone()))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            let _ = std::fs::remove_file(to);
            client.failed(format!("the download broke off: {e}"))
        })?;
        file.write_all(&chunk).map_err(OpsError::io(what.clone()))?;
    }
    file.sync_all().map_err(OpsError::io(what))
}

/// A snapshot must open as a database and carry a key canary; returns a one-line summary.
fn check_snapshot(path: &Path) -> Result<String, OpsError> {
    let store = Store::open_file(path)?;
    let state = store.key_state()?;
    if state.canary.is_none() {
        return Err(OpsError::Refused(format!(
            "{} is not an auxot backup (no key canary)",
            path.display()
        )));
    }
    let rows: u64 = store.table_rows()?.iter().map(|(_, n)| n).sum();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(format!(
        "{rows} rows, {size} bytes, sealed with key id {}",
        state.canary.and_then(|c| c.key_id()).unwrap_or_default()
    ))
}

pub async fn restore(args: &RestoreArgs) -> Result<String, OpsError> {
    match args.data.database_url()? {
        Some(url) => restore_to_postgres(args, url.expose()).await,
        None => restore_redb(args).await,
    }
}

/// Fills an empty PostgreSQL database from a backup, in one transaction (counts checked);
/// a database that already holds auxot data is refused and left as it was.
async fn restore_to_postgres(args: &RestoreArgs, url: &str) -> Result<String, OpsError> {
    if !args.file.is_file() {
        return Err(OpsError::Refused(format!("no backup file at {}", args.file.display())));
    }
    // A private copy to open: opening a database may touch it, and the backup stays as it was.
    let staged = std::env::temp_dir().join(format!("auxot-restore-{}.redb", uuid::Uuid::new_v4()));
    let result = async {
        std::fs::copy(&args.file, &staged).map_err(OpsError::io(format!("cannot copy {}", args.file.display())))?;
        private(&staged)?;
        let key_id = check_restorable(args, &staged)?;
        let source = Store::open_file(&staged)?;
        // A backup made by an older auxot is brought up to this schema first, as a start would.
        source.initialize(None, None)?;
        let target = Store::connect_postgres(url).await?;
        let copied = source.copy_to(&target).await.map_err(|e| match e {
            crate::store::StoreError::Conflict(message) if message.contains("already holds auxot data") => {
                OpsError::Refused(
                    "the target database already holds auxot data; nothing was changed. Restore into a new, empty database (routers running on this one would see their data replaced under them), then point the routers at it".into(),
                )
            }
            other => other.into(),
        })?;
        Ok::<_, OpsError>(format!(
            "restored {} into PostgreSQL: {} rows in {} tables (counts checked), sealed with key id {key_id}, which the configured key opens.\nStart every router on this database with that key. Everyone logs in again: sessions are not part of a backup.",
            args.file.display(),
            copied.rows(),
            copied.tables.len()
        ))
    }
    .await;
    let _ = std::fs::remove_file(&staged);
    result
}

async fn restore_redb(args: &RestoreArgs) -> Result<String, OpsError> {
    let data_dir = &args.data.data_dir;
    // Held open until the new file is in place: no server can start on the data halfway.
    let live = match Store::open_offline(data_dir) {
        Ok(store) => Some(store),
        Err(OfflineError::NoDatabase(_)) => None,
        Err(OfflineError::InUse(path)) => {
            return Err(OpsError::Refused(format!(
                "{} is held by a running auxot server; stop it first (systemctl stop auxot), then restore",
                path.display()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if !args.file.is_file() {
        return Err(OpsError::Refused(format!("no backup file at {}", args.file.display())));
    }
    if live.is_none() {
        std::fs::create_dir_all(data_dir).map_err(OpsError::io(format!("cannot create {}", data_dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
        }
    }

    // Work on a copy inside the data dir: opening a database may touch it, and the backup
    // file stays as it was.
    let staged = data_dir.join(format!("{DB_FILE}.restoring"));
    let _ = std::fs::remove_file(&staged);
    std::fs::copy(&args.file, &staged).map_err(OpsError::io(format!("cannot copy {}", args.file.display())))?;
    private(&staged)?;
    same_owner_as_dir(&staged, data_dir)?;
    let checked = check_restorable(args, &staged);
    let key_id = match checked {
        Ok(key_id) => key_id,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };

    // The journal's rows belong to the database being replaced: committed into it (the
    // kept copy stays complete), not into the restored one at the next start.
    if let Some(live) = &live {
        if let Err(e) = super::commit_journal(live, data_dir).await {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    }
    let db = data_dir.join(DB_FILE);
    let kept = live
        .as_ref()
        .map(|_| data_dir.join(format!("{DB_FILE}.replaced-{}", crate::clock::now_unix())));
    if let Some(kept) = &kept {
        std::fs::rename(&db, kept).map_err(OpsError::io(format!("cannot move {} aside", db.display())))?;
    }
    std::fs::rename(&staged, &db).map_err(OpsError::io(format!("cannot put {} in place", db.display())))?;
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    drop(live);
    let kept = match kept {
        Some(path) => format!(
            "\nThe replaced database is kept as {} (delete it once the restore checks out).",
            path.display()
        ),
        None => String::new(),
    };
    Ok(format!(
        "restored {} into {} (sealed with key id {key_id}, which the configured key opens).{kept}\nEveryone logs in again: sessions are not part of a backup.",
        args.file.display(),
        db.display()
    ))
}

/// The staged copy must be an auxot database this auxot understands, sealed with the
/// configured key. Returns the key id.
fn check_restorable(args: &RestoreArgs, staged: &Path) -> Result<String, OpsError> {
    let store = Store::open_file(staged)
        .map_err(|e| OpsError::Refused(format!("{} is not a readable auxot backup: {e}", args.file.display())))?;
    let state = store.key_state()?;
    let canary = state.canary.clone().ok_or_else(|| {
        OpsError::Refused(format!(
            "{} is not an auxot backup (no key canary)",
            args.file.display()
        ))
    })?;
    if let Some(found) = state.schema_version {
        if found > SCHEMA_VERSION {
            return Err(OpsError::Refused(format!(
                "the backup has schema version {found}, newer than this auxot supports ({SCHEMA_VERSION}); upgrade auxot first"
            )));
        }
    }
    let (key, source) = configured_key(&args.data, &state)?;
    if key.check_canary(&canary).is_err() {
        return Err(OpsError::Refused(format!(
            "the backup is sealed with key id {}, but the configured key ({}) has id {}; nothing was changed. Give the key the backup was made with (AUXOT_SECRET_KEY_FILE)",
            canary.key_id().unwrap_or_default(),
            source.describe(),
            key.id_hex()
        )));
    }
    Ok(key.id_hex())
}

/// Run as root for a service user: the restored file must belong to whoever owns the data
/// dir, or the service cannot open it.
fn same_owner_as_dir(file: &Path, dir: &Path) -> Result<(), OpsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(dir).map_err(OpsError::io(format!("cannot read {}", dir.display())))?;
        let current = std::fs::metadata(file).map_err(OpsError::io(format!("cannot read {}", file.display())))?;
        if (owner.uid(), owner.gid()) != (current.uid(), current.gid()) {
            std::os::unix::fs::chown(file, Some(owner.uid()), Some(owner.gid())).map_err(OpsError::io(format!(
                "cannot give {} to the owner of {} (run as root or as that user)",
                file.display(),
                dir.display()
            )))?;
        }
    }
    Ok(())
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    file.with_file_name(name)
}

fn private(path: &Path) -> Result<(), OpsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(OpsError::io(format!("cannot restrict {}", path.display())))?;
    }
    Ok(())
}
