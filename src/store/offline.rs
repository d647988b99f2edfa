//! Opening the database from a command line tool while no server runs (admin recovery,
//! rotation, restore). redb locks the file for the process that has it open, so a running
//! server is detected by the lock, not by guessing from pid files.

use super::{Store, StoreError, DB_FILE};
use redb::{Database, DatabaseError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("no database at {0}: wrong --data-dir (or AUXOT_DATA_DIR)?")]
    NoDatabase(PathBuf),
    #[error("{0} is held by a running auxot server; stop it first (systemctl stop auxot)")]
    InUse(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Opens an existing `auxot.redb` in `data_dir`; refuses a missing file (a typo in the
    /// data dir must not create an empty database) and a file a server holds.
    pub fn open_offline(data_dir: &Path) -> Result<Store, OfflineError> {
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(OfflineError::NoDatabase(path));
        }
        Store::open_file(&path)
    }

    /// Opens any redb file (a snapshot, a copy) with the same lock check.
    pub fn open_file(path: &Path) -> Result<Store, OfflineError> {
        match Database::open(path) {
            Ok(db) => Ok(Store::from_redb(db)),
            Err(DatabaseError::DatabaseAlreadyOpen) => Err(OfflineError::InUse(path.to_path_buf())),
            Err(e) => Err(OfflineError::Store(e.into())),
        }
    }

    /// Whether a server holds the database in `data_dir` right now.
    pub fn is_held(data_dir: &Path) -> bool {
        matches!(Store::open_offline(data_dir), Err(OfflineError::InUse(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_database_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Store::open_offline(dir.path()),
            Err(OfflineError::NoDatabase(_))
        ));
        assert!(!dir.path().join(DB_FILE).exists());
    }

    #[test]
    fn a_database_held_open_is_reported_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let held = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open_offline(dir.path()), Err(OfflineError::InUse(_))));
        assert!(Store::is_held(dir.path()));
        drop(held);
        assert!(Store::open_offline(dir.path()).is_ok());
    }
}
