//! `plan()`: request + routing snapshot → ordered candidates. Pure: no I/O, no clock, no
//! randomness (the round-robin turn is an argument), so it is table-tested.

use crate::providers::{LiveProvider, RoutingTable};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Cloud,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Cloud => "cloud",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Target {
    pub tier: Tier,
    pub provider: Arc<LiveProvider>,
    /// The model name the upstream knows (a `provider/` pin stripped).
    pub model: String,
}

#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// As the client sent it: `gpt-4o`, or `provider-name/gpt-4o` to pin a provider.
    pub model: &'a str,
    /// `X-Auxot-Provider`.
    pub provider: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown model '{0}': no enabled provider serves it (GET /v1/models lists what can be routed)")]
    UnknownModel(String),
    #[error("no enabled provider is named '{0}'")]
    UnknownProvider(String),
    #[error("provider '{provider}' does not serve model '{model}'")]
    NotServedBy { provider: String, model: String },
    #[error("model '{model}' pins provider '{pinned}' but X-Auxot-Provider asks for '{header}'")]
    ConflictingPins {
        model: String,
        pinned: String,
        header: String,
    },
}

pub fn plan(request: &RouteRequest<'_>, table: &RoutingTable, turn: usize) -> Result<Vec<Target>, PlanError> {
    let (pinned, model) = split_pin(request.model, table);
    let provider = match (pinned, request.provider) {
        (Some(p), Some(h)) if !p.name.eq_ignore_ascii_case(h) => {
            return Err(PlanError::ConflictingPins {
                model: request.model.to_string(),
                pinned: p.name.clone(),
                header: h.to_string(),
            })
        }
        (Some(p), _) => Some(p),
        (None, Some(h)) => Some(
            table
                .provider_named(h)
                .ok_or_else(|| PlanError::UnknownProvider(h.to_string()))?,
        ),
        (None, None) => None,
    };
    if let Some(provider) = provider {
        if !table.serves(provider, model) {
            return Err(PlanError::NotServedBy {
                provider: provider.name.clone(),
                model: model.to_string(),
            });
        }
        return Ok(vec![cloud(provider, model)]);
    }
    let serving: Vec<&Arc<LiveProvider>> = table.serving(model).collect();
    if serving.is_empty() {
        return Err(PlanError::UnknownModel(model.to_string()));
    }
    Ok(rotate_within_priority(serving, turn)
        .into_iter()
        .map(|p| cloud(p, model))
        .collect())
}

/// `name/model` pins a provider when `name` is one; otherwise the slash is part of the
/// model id (`meta-llama/Llama-3-8B` on an OpenAI-compatible server).
fn split_pin<'a, 't>(model: &'a str, table: &'t RoutingTable) -> (Option<&'t Arc<LiveProvider>>, &'a str) {
    if let Some((prefix, rest)) = model.split_once('/') {
        if let Some(provider) = table.provider_named(prefix) {
            if !rest.is_empty() {
                return (Some(provider), rest);
            }
        }
    }
    (None, model)
}

/// Providers of equal priority share the load: each group starts `turn` places further on.
fn rotate_within_priority(providers: Vec<&Arc<LiveProvider>>, turn: usize) -> Vec<&Arc<LiveProvider>> {
    let mut out = Vec::with_capacity(providers.len());
    for group in providers.chunk_by(|a, b| a.priority == b.priority) {
        let shift = turn % group.len();
        out.extend(group[shift..].iter().chain(&group[..shift]).copied());
    }
    out
}

fn cloud(provider: &Arc<LiveProvider>, model: &str) -> Target {
    Target {
        tier: Tier::Cloud,
        provider: provider.clone(),
        model: model.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CachedModel, ModelCache, ProviderKind, ProviderRecord};

    fn row(name: &str, priority: i32, models: &[&str]) -> (ProviderRecord, ModelCache) {
        (
            ProviderRecord {
                id: format!("id-{name}"),
                name: name.into(),
                kind: ProviderKind::Openai,
                base_url: "http://127.0.0.1:1/v1".into(),
                sealed_key: None,
                key_hint: String::new(),
                priority,
                enabled: true,
                created_at: 0,
                updated_at: 0,
            },
            ModelCache {
                models: models
                    .iter()
                    .map(|m| CachedModel {
                        id: m.to_string(),
                        display_name: None,
                        created: None,
                    })
                    .collect(),
                fetched_at: 1,
            },
        )
    }

    fn table() -> RoutingTable {
        RoutingTable::build(vec![
            row("a", 10, &["gpt-4o", "meta-llama/Llama-3-8B"]),
            row("b", 10, &["gpt-4o"]),
            row("c", 50, &["gpt-4o", "o3"]),
        ])
    }

    fn routes(model: &str, provider: Option<&str>, turn: usize) -> Result<Vec<String>, PlanError> {
        let table = table();
        plan(&RouteRequest { model, provider }, &table, turn).map(|targets| {
            targets
                .iter()
                .map(|t| format!("{}:{}", t.provider.name, t.model))
                .collect()
        })
    }

    #[test]
    fn plan_table() {
        type Case<'a> = (&'a str, Option<&'a str>, usize, Result<Vec<&'a str>, PlanError>);
        let cases: Vec<Case> = vec![
            ("gpt-4o", None, 0, Ok(vec!["a:gpt-4o", "b:gpt-4o", "c:gpt-4o"])),
            ("gpt-4o", None, 1, Ok(vec!["b:gpt-4o", "a:gpt-4o", "c:gpt-4o"])),
            ("gpt-4o", None, 2, Ok(vec!["a:gpt-4o", "b:gpt-4o", "c:gpt-4o"])),
            ("o3", None, 1, Ok(vec!["c:o3"])),
            ("c/gpt-4o", None, 0, Ok(vec!["c:gpt-4o"])),
            ("C/gpt-4o", None, 0, Ok(vec!["c:gpt-4o"])),
            ("gpt-4o", Some("b"), 0, Ok(vec!["b:gpt-4o"])),
            ("b/gpt-4o", Some("b"), 0, Ok(vec!["b:gpt-4o"])),
            ("meta-llama/Llama-3-8B", None, 0, Ok(vec!["a:meta-llama/Llama-3-8B"])),
            ("gpt-5", None, 0, Err(PlanError::UnknownModel("gpt-5".into()))),
            ("gpt-4o", Some("zz"), 0, Err(PlanError::UnknownProvider("zz".into()))),
            (
                "b/o3",
                None,
                0,
                Err(PlanError::NotServedBy {
                    provider: "b".into(),
                    model: "o3".into(),
                }),
            ),
            (
                "a/gpt-4o",
                Some("b"),
                0,
                Err(PlanError::ConflictingPins {
                    model: "a/gpt-4o".into(),
                    pinned: "a".into(),
                    header: "b".into(),
                }),
            ),
        ];
        for (model, provider, turn, expected) in cases {
            let expected = expected.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(
                routes(model, provider, turn),
                expected,
                "model={model} provider={provider:?} turn={turn}"
            );
        }
    }
}
