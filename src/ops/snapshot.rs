//! Snapshots of the running server's database for `GET /api/backup`.

use crate::store::{Store, StoreError};
use std::path::PathBuf;

pub struct Backups {
    store: Store,
    data_dir: PathBuf,
}

impl Backups {
    pub fn new(store: Store, data_dir: PathBuf) -> Backups {
        Backups { store, data_dir }
    }

    /// Writes a snapshot beside the database (the data dir is private to the service), opens
    /// it and unlinks it at once: the open handle is all that is left, so an aborted download
    /// leaves no file behind. Returns the handle and the size.
    pub async fn snapshot_file(&self) -> Result<(tokio::fs::File, u64), StoreError> {
        let path = self.data_dir.join(format!(".backup-{}.redb", uuid::Uuid::new_v4()));
        let result = self.store.snapshot_to(&path).await;
        let opened = match result {
            Ok(_) => tokio::fs::File::open(&path).await,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
        };
        let _ = tokio::fs::remove_file(&path).await;
        let file = opened.map_err(|e| StoreError::Task(format!("cannot read the snapshot: {e}")))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| StoreError::Task(format!("cannot read the snapshot: {e}")))?
            .len();
        Ok((file, size))
    }
}
