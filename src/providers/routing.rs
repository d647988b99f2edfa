//! The routing snapshot the hot path reads: the enabled providers in priority order and
//! the models each serves, rebuilt by the registry after each change, never per request.

use super::registry::SEAL_KIND;
use super::ProviderKind;
use crate::crypto::{CryptoError, MasterKey, Sealed, Secret};
use crate::store::{ModelCache, ProviderRecord};
use std::collections::HashMap;
use std::sync::Arc;

/// A provider as the router sees it: enough to route and proxy, key still sealed.
#[derive(Debug)]
pub struct LiveProvider {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub priority: i32,
    sealed_key: Option<Sealed>,
}

impl LiveProvider {
    /// Opens the key for one upstream call; it is wiped when the returned `Secret` drops.
    pub fn open_key(&self, master: &MasterKey) -> Result<Option<Secret>, CryptoError> {
        self.sealed_key
            .as_ref()
            .map(|sealed| master.open_secret(SEAL_KIND, &self.id, sealed))
            .transpose()
    }
}

/// The enabled providers and what each serves, ready for `dispatch::plan`.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Sorted by priority (lower first), then name.
    providers: Vec<Arc<LiveProvider>>,
    by_model: HashMap<String, Vec<usize>>,
    by_name: HashMap<String, usize>,
    /// Undated and `-latest` names → the newest dated id listed (`claude-sonnet-4-5` →
    /// `claude-sonnet-4-5-20250929`), as Anthropic's own API resolves them.
    undated: HashMap<String, String>,
    /// The same table without the providers that do not speak the OpenAI format, for the
    /// endpoints only those have (embeddings); `None` when it would be this table.
    openai_format: Option<Arc<RoutingTable>>,
}

impl RoutingTable {
    pub fn build(rows: Vec<(ProviderRecord, ModelCache)>) -> RoutingTable {
        let openai_format = rows.iter().any(|(r, _)| r.enabled && !r.kind.speaks_openai()).then(|| {
            let rows = rows.iter().filter(|(r, _)| r.kind.speaks_openai()).cloned().collect();
            Arc::new(RoutingTable::build_one(rows))
        });
        RoutingTable {
            openai_format,
            ..RoutingTable::build_one(rows)
        }
    }

    /// The providers that speak the OpenAI format, and what each serves.
    pub fn openai_format(self: &Arc<Self>) -> Arc<RoutingTable> {
        self.openai_format.clone().unwrap_or_else(|| self.clone())
    }

    fn build_one(rows: Vec<(ProviderRecord, ModelCache)>) -> RoutingTable {
        let mut rows: Vec<_> = rows.into_iter().filter(|(r, _)| r.enabled).collect();
        rows.sort_by(|(a, _), (b, _)| a.priority.cmp(&b.priority).then_with(|| a.name.cmp(&b.name)));
        let mut table = RoutingTable::default();
        for (index, (record, cache)) in rows.into_iter().enumerate() {
            for model in cache.models {
                table.by_model.entry(model.id).or_default().push(index);
            }
            table.by_name.insert(record.name.to_lowercase(), index);
            table.providers.push(Arc::new(LiveProvider {
                id: record.id,
                name: record.name,
                kind: record.kind,
                base_url: record.base_url,
                priority: record.priority,
                sealed_key: record.sealed_key,
            }));
        }
        for id in table.by_model.keys() {
            if let Some(base) = undated_name(id) {
                for name in [base.to_string(), format!("{base}-latest")] {
                    let newest = table.undated.entry(name).or_insert_with(|| id.clone());
                    if id.as_str() > newest.as_str() {
                        *newest = id.clone();
                    }
                }
            }
        }
        table
    }

    /// The id providers list for a client's model name: the name itself when listed, else
    /// the newest dated id its undated or `-latest` form stands for.
    pub fn listed_name<'a>(&'a self, model: &'a str) -> &'a str {
        if self.by_model.contains_key(model) {
            return model;
        }
        self.undated.get(model).map_or(model, String::as_str)
    }

    pub fn provider_named(&self, name: &str) -> Option<&Arc<LiveProvider>> {
        self.by_name.get(&name.to_lowercase()).map(|&i| &self.providers[i])
    }

    /// Providers that serve `model`, in priority order.
    pub fn serving(&self, model: &str) -> impl Iterator<Item = &Arc<LiveProvider>> {
        self.by_model
            .get(model)
            .into_iter()
            .flatten()
            .map(|&i| &self.providers[i])
    }

    pub fn serves(&self, provider: &LiveProvider, model: &str) -> bool {
        self.serving(model).any(|p| p.id == provider.id)
    }

    /// Every routable model id with the providers serving it, sorted by id.
    pub fn models(&self) -> Vec<(&str, Vec<&Arc<LiveProvider>>)> {
        let mut out: Vec<_> = self
            .by_model
            .iter()
            .map(|(model, idx)| (model.as_str(), idx.iter().map(|&i| &self.providers[i]).collect()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }
}

/// `name-YYYYMMDD` → `name`.
fn undated_name(id: &str) -> Option<&str> {
    let (base, date) = id.rsplit_once('-')?;
    (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty()).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::CachedModel;

    fn record(name: &str, priority: i32, enabled: bool) -> (ProviderRecord, ModelCache) {
        (
            ProviderRecord {
                id: format!("id-{name}"),
                name: name.into(),
                kind: ProviderKind::Openai,
                base_url: "http://x/v1".into(),
                sealed_key: None,
                key_hint: String::new(),
                priority,
                enabled,
                created_at: 0,
                updated_at: 0,
            },
            ModelCache {
                models: vec![CachedModel {
                    id: "gpt-4o".into(),
                    display_name: None,
                    created: None,
                }],
                fetched_at: 1,
            },
        )
    }

    #[test]
    fn routing_table_orders_by_priority_and_skips_disabled() {
        let table = RoutingTable::build(vec![record("b", 5, true), record("a", 10, true), record("c", 1, false)]);
        let names: Vec<_> = table.serving("gpt-4o").map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert!(table.provider_named("C").is_none());
        assert!(table.provider_named("A").is_some());
    }
}
