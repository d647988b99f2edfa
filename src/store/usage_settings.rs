//! How GPU/CLI answers are valued in cloud money: the cloud model that stands in for a
//! worker or a local model when no alias names one.

use super::tables::SETTINGS;
use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const EQUIVALENTS: &str = "cloud_equivalents";

/// The cloud model priced for a GPU/CLI answer: by worker name first, then by the model
/// the worker ran, then `default_model`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EquivalentSettings {
    #[serde(default)]
    pub default_model: Option<String>,
    #[serde(default)]
    pub by_worker: BTreeMap<String, String>,
    #[serde(default)]
    pub by_model: BTreeMap<String, String>,
}

impl Store {
    pub async fn equivalent_settings(&self) -> Result<EquivalentSettings, StoreError> {
        self.read(|txn| match txn.open_table(SETTINGS)?.get(EQUIVALENTS)? {
            Some(row) => decode("settings", &row),
            None => Ok(EquivalentSettings::default()),
        })
        .await
    }

    pub async fn put_equivalent_settings(&self, settings: EquivalentSettings) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.open_table(SETTINGS)?
                .insert(EQUIVALENTS, encode("settings", &settings)?.as_slice())?;
            Ok(())
        })
        .await
    }
}
