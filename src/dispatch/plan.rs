//! `plan()`: request + a snapshot of live state → ordered candidates, tier by tier.
//! Pure: no I/O, no clock, no randomness (the round-robin turn is an argument), so it is
//! table-tested. Within the GPU and CLI tiers the least-loaded worker comes first, equal
//! loads take turns; within the cloud tier, provider priority, equal priorities take turns.

use super::queue::WaitKey;
use crate::providers::{LiveProvider, RoutingTable};
use crate::store::AliasRecord;
use crate::workers::protocol::{JobKind, WorkerKind};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Gpu,
    Cli,
    Cloud,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Gpu, Tier::Cli, Tier::Cloud];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Gpu => "gpu",
            Tier::Cli => "cli",
            Tier::Cloud => "cloud",
        }
    }

    pub fn parse(name: &str) -> Option<Tier> {
        match name.trim().to_ascii_lowercase().as_str() {
            "gpu" => Some(Tier::Gpu),
            "cli" => Some(Tier::Cli),
            "cloud" => Some(Tier::Cloud),
            _ => None,
        }
    }

    /// `cloud` or `cli,cloud`: each tier at most once, at least one.
    pub fn parse_order<S: AsRef<str>>(names: &[S]) -> Result<Vec<Tier>, String> {
        let mut order = Vec::new();
        for name in names {
            let name = name.as_ref();
            let tier =
                Tier::parse(name).ok_or_else(|| format!("unknown tier '{}' (use gpu, cli, cloud)", name.trim()))?;
            if order.contains(&tier) {
                return Err(format!("tier '{}' is named twice", tier.as_str()));
            }
            order.push(tier);
        }
        if order.is_empty() {
            return Err("name at least one tier (gpu, cli, cloud)".into());
        }
        Ok(order)
    }

    fn worker_kind(self) -> Option<WorkerKind> {
        match self {
            Tier::Gpu => Some(WorkerKind::Gpu),
            Tier::Cli => Some(WorkerKind::Cli),
            Tier::Cloud => None,
        }
    }
}

/// A live worker as the planner sees it: plain data, read once per request.
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub id: String,
    pub kind: WorkerKind,
    pub name: String,
    pub models: Arc<Vec<String>>,
    pub slots: u32,
    pub in_use: u32,
}

impl WorkerSnapshot {
    /// What planning a chat request needs of a live worker, read once.
    pub fn of(worker: &crate::workers::registry::LiveWorker) -> WorkerSnapshot {
        WorkerSnapshot::for_job(worker, JobKind::ChatCompletions)
    }

    /// What planning a `job` needs of a live worker: the models it serves for that job.
    pub fn for_job(worker: &crate::workers::registry::LiveWorker, job: JobKind) -> WorkerSnapshot {
        WorkerSnapshot {
            id: worker.id.clone(),
            kind: worker.kind,
            name: worker.name.clone(),
            models: worker.models_for(job),
            slots: worker.slots,
            in_use: worker.in_use(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Target {
    /// `index` into the snapshot the plan was made from.
    Worker {
        tier: Tier,
        index: usize,
        model: String,
    },
    Cloud {
        provider: Arc<LiveProvider>,
        model: String,
    },
}

impl Target {
    pub fn tier(&self) -> Tier {
        match self {
            Target::Worker { tier, .. } => *tier,
            Target::Cloud { .. } => Tier::Cloud,
        }
    }
}

pub struct PlanInput<'a> {
    /// As the client sent it (agent already resolved): `gpt-4o`, `provider/gpt-4o`, an alias.
    pub model: &'a str,
    /// `X-Auxot-Provider`.
    pub provider: Option<&'a str>,
    pub order: &'a [Tier],
    pub alias: Option<&'a AliasRecord>,
    pub table: &'a RoutingTable,
    /// Snapshots of the workers' models for `job`.
    pub workers: &'a [WorkerSnapshot],
    pub turn: usize,
    /// What the request asks (chat or embeddings): the capacity it waits for.
    pub job: JobKind,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub targets: Vec<Target>,
    /// Some eligible worker exists but has no free slot: worth waiting for one.
    pub can_wait: bool,
    /// The worker capacity this request can use, in tier order (busy or not): what it
    /// waits for in the queue when nothing in `targets` answers.
    pub waits: Vec<WaitKey>,
    /// Why each tier that gave no candidate gave none.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("model '{model}' is not served by any tier tried ({})", notes.join("; "))]
    NoRoute { model: String, notes: Vec<String> },
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
    #[error("a provider is pinned but the tier order ({0}) leaves out the cloud tier")]
    PinWithoutCloud(String),
}

pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let pin = resolve_pin(input.model, input.provider, input.table)?;
    if let Some((provider, model)) = pin {
        let model = input.table.listed_name(model);
        if !input.order.contains(&Tier::Cloud) {
            let names: Vec<&str> = input.order.iter().map(|t| t.as_str()).collect();
            return Err(PlanError::PinWithoutCloud(names.join(",")));
        }
        if !input.table.serves(provider, model) {
            return Err(PlanError::NotServedBy {
                provider: provider.name.clone(),
                model: model.to_string(),
            });
        }
        return Ok(Plan {
            targets: vec![Target::Cloud {
                provider: provider.clone(),
                model: model.to_string(),
            }],
            ..Plan::default()
        });
    }
    let mut plan = Plan::default();
    for &tier in input.order {
        match tier.worker_kind() {
            Some(kind) => plan_workers(input, tier, kind, &mut plan),
            None => plan_cloud(input, &mut plan)?,
        }
    }
    if plan.targets.is_empty() && !plan.can_wait {
        return Err(PlanError::NoRoute {
            model: input.model.to_string(),
            notes: plan.notes,
        });
    }
    Ok(plan)
}

/// What this tier is asked to run: `Some(Some(m))` model m, `Some(None)` any model the
/// tier serves (`auto`), `None` the tier is skipped for this alias.
fn tier_model<'a>(input: &'a PlanInput<'_>, tier: Tier) -> Option<Option<&'a str>> {
    let Some(alias) = input.alias else {
        return Some(Some(input.model));
    };
    let chosen = match tier {
        Tier::Gpu => alias.gpu.as_deref(),
        Tier::Cli => alias.cli.as_deref(),
        Tier::Cloud => alias.cloud.as_deref(),
    };
    match chosen {
        Some(model) => Some(Some(model)),
        // `auto` with no model for a worker tier takes whatever the tier serves; a paid
        // cloud model is never picked for the user.
        None if alias.name == crate::store::AUTO_ALIAS && tier != Tier::Cloud => Some(None),
        None => None,
    }
}

fn plan_workers(input: &PlanInput<'_>, tier: Tier, kind: WorkerKind, plan: &mut Plan) {
    let Some(wanted) = tier_model(input, tier) else {
        plan.notes.push(format!(
            "{}: alias '{}' names no {} model",
            tier.as_str(),
            input.model,
            tier.as_str()
        ));
        return;
    };
    // (index, model it would run)
    let eligible: Vec<(usize, String)> = input
        .workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.kind == kind)
        .filter_map(|(i, w)| match wanted {
            Some(model) => w.models.iter().any(|m| m == model).then(|| (i, model.to_string())),
            None => w.models.first().map(|m| (i, m.clone())),
        })
        .collect();
    let shown = wanted.unwrap_or("any model");
    if eligible.is_empty() {
        plan.notes
            .push(format!("{}: no {} worker serves {shown}", tier.as_str(), tier.as_str()));
        return;
    }
    plan.waits.push(WaitKey {
        kind,
        job: input.job,
        model: wanted.map(str::to_string),
    });
    let mut free: Vec<(usize, String)> = eligible
        .iter()
        .filter(|(i, _)| input.workers[*i].in_use < input.workers[*i].slots)
        .cloned()
        .collect();
    if free.is_empty() {
        let (used, total) = eligible.iter().fold((0, 0), |(u, t), (i, _)| {
            (u + input.workers[*i].in_use, t + input.workers[*i].slots)
        });
        plan.notes.push(format!(
            "{}: {} worker(s) serve {shown} but all {used}/{total} slots are busy",
            tier.as_str(),
            eligible.len()
        ));
        plan.can_wait = true;
        return;
    }
    // Least loaded first (by share of slots in use), then by name for a stable order.
    let load = |i: usize| {
        let w = &input.workers[i];
        (u64::from(w.in_use) * 1_000_000) / u64::from(w.slots.max(1))
    };
    free.sort_by(|a, b| {
        load(a.0)
            .cmp(&load(b.0))
            .then_with(|| input.workers[a.0].name.cmp(&input.workers[b.0].name))
    });
    let rotated = rotate_groups(free, input.turn, |(i, _)| load(*i));
    plan.targets.extend(
        rotated
            .into_iter()
            .map(|(index, model)| Target::Worker { tier, index, model }),
    );
}

fn plan_cloud(input: &PlanInput<'_>, plan: &mut Plan) -> Result<(), PlanError> {
    let Some(Some(wanted)) = tier_model(input, Tier::Cloud) else {
        plan.notes
            .push(format!("cloud: alias '{}' names no cloud model", input.model));
        return Ok(());
    };
    // An alias may pin: `openai/gpt-4o-mini`.
    if input.alias.is_some() {
        if let Some((provider, model)) = resolve_pin(wanted, None, input.table)? {
            let model = input.table.listed_name(model);
            if input.table.serves(provider, model) {
                plan.targets.push(Target::Cloud {
                    provider: provider.clone(),
                    model: model.to_string(),
                });
            } else {
                plan.notes
                    .push(format!("cloud: provider '{}' does not serve {model}", provider.name));
            }
            return Ok(());
        }
    }
    let wanted = input.table.listed_name(wanted);
    let serving: Vec<&Arc<LiveProvider>> = input.table.serving(wanted).collect();
    if serving.is_empty() {
        plan.notes.push(format!("cloud: no enabled provider serves {wanted}"));
        return Ok(());
    }
    let rotated = rotate_groups(serving, input.turn, |p| i64::from(p.priority));
    plan.targets.extend(rotated.into_iter().map(|p| Target::Cloud {
        provider: p.clone(),
        model: wanted.to_string(),
    }));
    Ok(())
}

/// The provider a request pins (`name/model` or `X-Auxot-Provider`), with the model
/// the provider knows.
#[allow(clippy::type_complexity)]
fn resolve_pin<'a, 't>(
    model: &'a str,
    header: Option<&str>,
    table: &'t RoutingTable,
) -> Result<Option<(&'t Arc<LiveProvider>, &'a str)>, PlanError> {
    let (pinned, model) = split_pin(model, table);
    match (pinned, header) {
        (Some(p), Some(h)) if !p.name.eq_ignore_ascii_case(h) => Err(PlanError::ConflictingPins {
            model: model.to_string(),
            pinned: p.name.clone(),
            header: h.to_string(),
        }),
        (Some(p), _) => Ok(Some((p, model))),
        (None, Some(h)) => {
            let p = table
                .provider_named(h)
                .ok_or_else(|| PlanError::UnknownProvider(h.to_string()))?;
            Ok(Some((p, model)))
        }
        (None, None) => Ok(None),
    }
}

/// `name/model` pins a provider when `name` is one; otherwise the slash is part of the
/// model id (`meta-llama/Llama-3-8B`).
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

/// Items already sorted by `key`: each run of equal keys starts `turn` places further on,
/// so equals share the load.
fn rotate_groups<T, K: PartialEq>(items: Vec<T>, turn: usize, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    let mut group: Vec<T> = Vec::new();
    for item in items {
        if group.last().is_some_and(|last| key(last) != key(&item)) {
            flush(&mut group, &mut out, turn);
        }
        group.push(item);
    }
    flush(&mut group, &mut out, turn);
    out
}

fn flush<T>(group: &mut Vec<T>, out: &mut Vec<T>, turn: usize) {
    if group.is_empty() {
        return;
    }
    let shift = turn % group.len();
    group.rotate_left(shift);
    out.append(group);
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

    fn worker(name: &str, kind: WorkerKind, models: &[&str], slots: u32, in_use: u32) -> WorkerSnapshot {
        WorkerSnapshot {
            id: format!("id-{name}"),
            kind,
            name: name.into(),
            models: Arc::new(models.iter().map(|m| m.to_string()).collect()),
            slots,
            in_use,
        }
    }

    const DEFAULT: [Tier; 3] = [Tier::Gpu, Tier::Cli, Tier::Cloud];

    fn routes(
        model: &str,
        provider: Option<&str>,
        order: &[Tier],
        alias: Option<&AliasRecord>,
        workers: &[WorkerSnapshot],
        turn: usize,
    ) -> Result<Vec<String>, PlanError> {
        let table = table();
        let input = PlanInput {
            model,
            provider,
            order,
            alias,
            table: &table,
            workers,
            turn,
            job: JobKind::ChatCompletions,
        };
        plan(&input).map(|p| {
            p.targets
                .iter()
                .map(|t| match t {
                    Target::Worker { tier, index, model } => {
                        format!("{}:{}:{model}", tier.as_str(), workers[*index].name)
                    }
                    Target::Cloud { provider, model } => format!("cloud:{}:{model}", provider.name),
                })
                .collect()
        })
    }

    #[test]
    fn cloud_only_table() {
        type Case<'a> = (&'a str, Option<&'a str>, usize, Result<Vec<&'a str>, PlanError>);
        let cases: Vec<Case> = vec![
            (
                "gpt-4o",
                None,
                0,
                Ok(vec!["cloud:a:gpt-4o", "cloud:b:gpt-4o", "cloud:c:gpt-4o"]),
            ),
            (
                "gpt-4o",
                None,
                1,
                Ok(vec!["cloud:b:gpt-4o", "cloud:a:gpt-4o", "cloud:c:gpt-4o"]),
            ),
            ("o3", None, 1, Ok(vec!["cloud:c:o3"])),
            ("c/gpt-4o", None, 0, Ok(vec!["cloud:c:gpt-4o"])),
            ("C/gpt-4o", None, 0, Ok(vec!["cloud:c:gpt-4o"])),
            ("gpt-4o", Some("b"), 0, Ok(vec!["cloud:b:gpt-4o"])),
            ("b/gpt-4o", Some("b"), 0, Ok(vec!["cloud:b:gpt-4o"])),
            (
                "meta-llama/Llama-3-8B",
                None,
                0,
                Ok(vec!["cloud:a:meta-llama/Llama-3-8B"]),
            ),
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
        ];
        for (model, provider, turn, expected) in cases {
            let expected = expected.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(
                routes(model, provider, &DEFAULT, None, &[], turn),
                expected,
                "model={model} provider={provider:?} turn={turn}"
            );
        }
        assert!(matches!(
            routes("gpt-5", None, &DEFAULT, None, &[], 0),
            Err(PlanError::NoRoute { .. })
        ));
        assert!(matches!(
            routes("a/gpt-4o", Some("b"), &DEFAULT, None, &[], 0),
            Err(PlanError::ConflictingPins { .. })
        ));
        assert!(matches!(
            routes("a/gpt-4o", None, &[Tier::Gpu], None, &[], 0),
            Err(PlanError::PinWithoutCloud(_))
        ));
    }

    #[test]
    fn tiers_cascade_gpu_then_cli_then_cloud() {
        let workers = [
            worker("g1", WorkerKind::Gpu, &["gpt-4o"], 2, 1),
            worker("g2", WorkerKind::Gpu, &["gpt-4o"], 2, 0),
            worker("c1", WorkerKind::Cli, &["gpt-4o"], 1, 0),
        ];
        assert_eq!(
            routes("gpt-4o", None, &DEFAULT, None, &workers, 0).unwrap(),
            [
                "gpu:g2:gpt-4o",
                "gpu:g1:gpt-4o",
                "cli:c1:gpt-4o",
                "cloud:a:gpt-4o",
                "cloud:b:gpt-4o",
                "cloud:c:gpt-4o"
            ]
        );
        assert_eq!(
            routes("gpt-4o", None, &[Tier::Cli, Tier::Cloud], None, &workers, 0).unwrap(),
            ["cli:c1:gpt-4o", "cloud:a:gpt-4o", "cloud:b:gpt-4o", "cloud:c:gpt-4o"]
        );
    }

    #[test]
    fn busy_workers_are_skipped_and_make_the_request_worth_waiting() {
        let workers = [
            worker("g1", WorkerKind::Gpu, &["qwen"], 1, 1),
            worker("c1", WorkerKind::Cli, &["qwen"], 1, 0),
        ];
        assert_eq!(
            routes("qwen", None, &DEFAULT, None, &workers, 0).unwrap(),
            ["cli:c1:qwen"]
        );
        let all_busy = [
            worker("g1", WorkerKind::Gpu, &["qwen"], 1, 1),
            worker("c1", WorkerKind::Cli, &["qwen"], 1, 1),
        ];
        let table = table();
        let p = plan(&PlanInput {
            model: "qwen",
            provider: None,
            order: &DEFAULT,
            alias: None,
            table: &table,
            workers: &all_busy,
            turn: 0,
            job: JobKind::ChatCompletions,
        })
        .unwrap();
        assert!(p.targets.is_empty());
        assert!(p.can_wait);
        assert_eq!(p.notes.len(), 3, "{:?}", p.notes);
        assert!(p.notes[0].contains("busy"));
        assert!(p.notes[2].contains("cloud"));
    }

    #[test]
    fn equal_load_workers_take_turns() {
        let workers = [
            worker("g1", WorkerKind::Gpu, &["m"], 1, 0),
            worker("g2", WorkerKind::Gpu, &["m"], 1, 0),
        ];
        assert_eq!(
            routes("m", None, &[Tier::Gpu], None, &workers, 0).unwrap(),
            ["gpu:g1:m", "gpu:g2:m"]
        );
        assert_eq!(
            routes("m", None, &[Tier::Gpu], None, &workers, 1).unwrap(),
            ["gpu:g2:m", "gpu:g1:m"]
        );
    }

    #[test]
    fn aliases_map_a_name_to_a_model_per_tier() {
        let coder = AliasRecord {
            name: "coder".into(),
            gpu: Some("qwen-coder".into()),
            cli: Some("sonnet".into()),
            cloud: Some("c/o3".into()),
            client_models: Vec::new(),
        };
        let workers = [
            worker("g1", WorkerKind::Gpu, &["qwen-coder"], 1, 0),
            worker("c1", WorkerKind::Cli, &["sonnet"], 1, 0),
        ];
        assert_eq!(
            routes("coder", None, &DEFAULT, Some(&coder), &workers, 0).unwrap(),
            ["gpu:g1:qwen-coder", "cli:c1:sonnet", "cloud:c:o3"]
        );
        let auto = AliasRecord::auto();
        assert_eq!(
            routes("auto", None, &DEFAULT, Some(&auto), &workers, 0).unwrap(),
            ["gpu:g1:qwen-coder", "cli:c1:sonnet"]
        );
        let gpu_only = AliasRecord {
            name: "local".into(),
            gpu: Some("qwen-coder".into()),
            cli: None,
            cloud: None,
            client_models: Vec::new(),
        };
        assert_eq!(
            routes("local", None, &DEFAULT, Some(&gpu_only), &workers, 0).unwrap(),
            ["gpu:g1:qwen-coder"]
        );
    }

    #[test]
    fn tier_orders_parse_strictly() {
        assert_eq!(
            Tier::parse_order(&["cli", " Cloud "]).unwrap(),
            [Tier::Cli, Tier::Cloud]
        );
        assert!(Tier::parse_order(&["cli", "cli"]).is_err());
        assert!(Tier::parse_order(&["tpu"]).is_err());
        assert!(Tier::parse_order::<&str>(&[]).is_err());
    }
}
