//! Consistent copies of the database: one read transaction copied, table by table, into a
//! fresh redb file. A running server keeps serving (readers never block the writer), and the
//! copy is a plain `auxot.redb` that `auxot restore` puts in place.
//!
//! On PostgreSQL the copy is taken from one `REPEATABLE READ` snapshot, into the same redb
//! file: a backup of a fleet restores onto a single box, or into an empty PostgreSQL database
//! (`auxot restore --database`), and routers keep serving meanwhile.
//!
//! Sessions are left out: they are logins of the moment, not data, and a restored box asks
//! everyone to log in again. Everything else is copied as stored: provider keys stay sealed,
//! API keys and worker tokens stay hashes.

use super::kv::Col;
use super::tables::*;
use super::{Store, StoreError};
use redb::{Database, Key, ReadTransaction, TableDefinition, TableHandle, Value, WriteTransaction};
use std::path::Path;

/// What a snapshot holds, for the operator's report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub tables: usize,
    pub rows: u64,
}

/// Calls `$copy!(TABLE)` for every table a snapshot carries: one list, so a new table is
/// either added here or makes `snapshot_to` refuse (see `copy_every_table`).
macro_rules! every_snapshot_table {
    ($copy:ident) => {
        $copy!(META);
        $copy!(PROVIDERS);
        $copy!(PROVIDER_NAMES);
        $copy!(MODELS);
        $copy!(ADMINS);
        $copy!(API_KEYS);
        $copy!(WORKER_TOKENS);
        $copy!(ALIASES);
        $copy!(AGENTS);
        $copy!(SETTINGS);
        $copy!(USAGE);
        $copy!(USAGE_POSTINGS);
        $copy!(USAGE_SPEND);
        $copy!(USAGE_DAILY);
        $copy!(PRICES);
        $copy!(CONVERSATIONS);
    };
}

/// Tables deliberately not in a snapshot: sessions (created empty in it), and the index
/// schema 5 wrote (dropped by the step to 6).
const LEFT_OUT: &[&str] = &["sessions", "usage_index"];

impl Store {
    /// Writes a consistent snapshot of the whole database to `path` (a new file; an existing
    /// one is refused), from either backend. Runs on the blocking pool.
    pub async fn snapshot_to(&self, path: &Path) -> Result<SnapshotSummary, StoreError> {
        let path = path.to_path_buf();
        self.read(move |txn| match txn {
            super::ReadTxn::Redb(txn) => snapshot_from(txn, &path),
            super::ReadTxn::Pg(_) => snapshot_from_pg(txn, &path),
        })
        .await
    }

    /// The same, for a command line tool that opened the database offline.
    pub fn snapshot_now(&self, path: &Path) -> Result<SnapshotSummary, StoreError> {
        let txn = self.redb("a snapshot")?.begin_read()?;
        snapshot_from(&txn, path)
    }

    /// Row count of every table: a cheap health read for `auxot doctor` and restore.
    pub fn table_rows(&self) -> Result<Vec<(String, u64)>, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.redb("a snapshot")?.begin_read()?;
        let mut out = Vec::new();
        for handle in txn.list_tables()? {
            let name = handle.name().to_string();
            let rows = txn.open_untyped_table(handle)?.len()?;
            out.push((name, rows));
        }
        Ok(out)
    }
}

fn snapshot_from(txn: &ReadTransaction, path: &Path) -> Result<SnapshotSummary, StoreError> {
    if path.exists() {
        return Err(StoreError::Conflict(format!("{} already exists", path.display())));
    }
    let known = known_tables();
    for handle in txn.list_tables()? {
        let name = handle.name();
        if !known.contains(&name) && !LEFT_OUT.contains(&name) {
            // A table added without a line in `every_snapshot_table` would be silently lost.
            return Err(StoreError::Corrupt(
                "snapshot",
                format!("table '{name}' is not covered by the backup"),
            ));
        }
    }
    write_snapshot(path, |out| {
        let mut summary = SnapshotSummary::default();
        macro_rules! copy {
            ($table:ident) => {
                summary.rows += copy_table(txn, out, $table)?;
                summary.tables += 1;
            };
        }
        every_snapshot_table!(copy);
        Ok(summary)
    })
}

/// The same copy, read through the storage interface from a PostgreSQL snapshot.
fn snapshot_from_pg(txn: &super::ReadTxn<'_>, path: &Path) -> Result<SnapshotSummary, StoreError> {
    write_snapshot(path, |out| {
        let mut summary = SnapshotSummary::default();
        macro_rules! copy {
            ($table:ident) => {
                summary.rows += copy_table_from(txn, out, $table)?;
                summary.tables += 1;
            };
        }
        every_snapshot_table!(copy);
        Ok(summary)
    })
}

/// Creates the snapshot file at `path`, has `fill` copy the tables into it, and makes it
/// durable.
fn write_snapshot(
    path: &Path,
    fill: impl FnOnce(&WriteTransaction) -> Result<SnapshotSummary, StoreError>,
) -> Result<SnapshotSummary, StoreError> {
    if path.exists() {
        return Err(StoreError::Conflict(format!("{} already exists", path.display())));
    }
    let target = Database::create(path)?;
    let out = target.begin_write()?;
    let summary = fill(&out)?;
    // Left-out tables exist, empty: the schema version says they do, and readers expect them.
    out.open_table(SESSIONS)?;
    out.commit()?;
    drop(target);
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Task(format!("cannot sync {}: {e}", path.display())))?;
    Ok(summary)
}

fn copy_table_from<K: Col + redb::Key, V: Col>(
    from: &super::ReadTxn<'_>,
    to: &WriteTransaction,
    table: TableDefinition<'static, K, V>,
) -> Result<u64, StoreError> {
    let mut target = to.open_table(table)?;
    let source = from.open_table(table)?;
    let mut rows = 0;
    for row in source.iter()? {
        let (key, value) = row?;
        target.insert(K::lend(&key), V::lend(&value))?;
        rows += 1;
    }
    Ok(rows)
}

fn known_tables() -> Vec<&'static str> {
    let mut names = Vec::new();
    macro_rules! name {
        ($table:ident) => {
            names.push($table.name());
        };
    }
    every_snapshot_table!(name);
    names
}

/// Copies one table; a table the source never created is created empty in the copy.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    use redb::ReadableTable;
    let mut target = to.open_table(table)?;
    let source = match from.open_table(table) {
        Ok(source) => source,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut rows = 0;
    for row in source.iter()? {
        let (key, value) = row?;
        target.insert(key.value(), value.value())?;
        rows += 1;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_snapshot_copies_every_row_but_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.initialize(None, None).unwrap();
        store
            .insert_session(
                "hash".into(),
                crate::store::SessionRecord {
                    username: "a".into(),
                    created_at: 0,
                    expires_at: i64::MAX,
                },
            )
            .await
            .unwrap();
        let copy = dir.path().join("copy.redb");
        let summary = store.snapshot_to(&copy).await.unwrap();
        assert!(summary.rows > 0, "{summary:?}");
        let restored = Store::open_file(&copy).unwrap();
        assert!(restored.get_session("hash".into()).await.unwrap().is_none());
        assert_eq!(
            restored.list_aliases().await.unwrap().len(),
            store.list_aliases().await.unwrap().len()
        );
        assert_eq!(
            restored.key_state().unwrap().schema_version,
            store.key_state().unwrap().schema_version
        );
        assert!(store.snapshot_to(&copy).await.is_err(), "overwrote an existing file");
    }

    #[test]
    fn every_declared_table_is_in_the_snapshot_list() {
        // tables.rs is the one list of tables; a snapshot must name each one or leave it out
        // on purpose.
        let source = include_str!("tables.rs");
        let known = known_tables();
        for line in source.lines() {
            if let Some(rest) = line.split("TableDefinition::new(\"").nth(1) {
                let name = rest.split('"').next().unwrap_or_default();
                assert!(
                    known.contains(&name) || LEFT_OUT.contains(&name),
                    "table '{name}' is neither copied by a snapshot nor left out on purpose"
                );
            }
        }
    }
}
