//! Named agents: a system prompt, a model (or alias), a tier order and a queue timeout.
//! Clients call one with model `agent:NAME`; the request's own overrides still win.

use crate::dispatch::plan::Tier;
use crate::dispatch::rules::{validate_queue_timeout, RulesError};
use crate::edits::Edits;
use crate::store::{AgentRecord, Store};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub mod admin;

pub const MODEL_PREFIX: &str = "agent:";
const MAX_PROMPT_LEN: usize = 100_000;

/// An agent as the API takes it.
#[derive(Debug, Clone)]
pub struct AgentInput {
    pub name: String,
    pub system_prompt: Option<String>,
    pub model: String,
    pub tier_order: Option<Vec<String>>,
    pub queue_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub name: String,
    pub system_prompt: Option<String>,
    pub model: String,
    pub tier_order: Option<Vec<String>>,
    pub queue_timeout_ms: Option<u64>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&AgentRecord> for AgentView {
    fn from(r: &AgentRecord) -> Self {
        AgentView {
            name: r.name.clone(),
            system_prompt: r.system_prompt.clone(),
            model: r.model.clone(),
            tier_order: r.tier_order.clone(),
            queue_timeout_ms: r.queue_timeout_ms,
            created_at: crate::clock::rfc3339(r.created_at),
            updated_at: crate::clock::rfc3339(r.updated_at),
        }
    }
}

/// What routing needs of an agent, resolved once per change (not per request) and shared:
/// a request holds the agent, its prompt included, by reference.
#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    pub system_prompt: Option<Arc<str>>,
    pub model: String,
    pub tier_order: Option<Vec<Tier>>,
    pub queue_timeout_ms: Option<u64>,
}

pub struct AgentBook {
    store: Store,
    /// Keyed by the lower-cased name.
    agents: RwLock<Arc<HashMap<String, Entry>>>,
    /// Orders this router's own changes with reloads (see `edits`).
    edits: Edits,
}

struct Entry {
    record: AgentRecord,
    agent: Arc<Agent>,
}

impl From<AgentRecord> for Entry {
    fn from(record: AgentRecord) -> Self {
        let agent = Arc::new(Agent {
            name: record.name.clone(),
            system_prompt: record.system_prompt.as_deref().map(Arc::from),
            model: record.model.clone(),
            tier_order: record.tier_order.as_ref().and_then(|o| Tier::parse_order(o).ok()),
            queue_timeout_ms: record.queue_timeout_ms,
        });
        Entry { record, agent }
    }
}

impl AgentBook {
    pub async fn load(store: Store) -> Result<AgentBook, RulesError> {
        let book = AgentBook {
            store,
            agents: RwLock::new(Arc::new(HashMap::new())),
            edits: Edits::default(),
        };
        book.reload().await?;
        Ok(book)
    }

    /// Re-reads every agent (also when another router changed one).
    pub async fn reload(&self) -> Result<(), RulesError> {
        self.edits.reload(|| self.read(), |agents| self.install(agents)).await
    }

    /// Re-reads every agent after this router's own write committed.
    async fn reload_own(&self) -> Result<(), RulesError> {
        self.edits
            .reload_own(|| self.read(), |agents| self.install(agents))
            .await
    }

    async fn read(&self) -> Result<HashMap<String, Entry>, RulesError> {
        Ok(self
            .store
            .list_agents()
            .await?
            .into_iter()
            .map(|a| (a.name.to_lowercase(), Entry::from(a)))
            .collect())
    }

    fn install(&self, agents: HashMap<String, Entry>) {
        *self.agents.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(agents);
    }

    /// `agent:NAME` → the agent, for the request path (memory only).
    pub fn resolve(&self, name: &str) -> Option<Arc<Agent>> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        let already_lower = name.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase());
        let key: std::borrow::Cow<'_, str> = if already_lower {
            name.into()
        } else {
            name.to_lowercase().into()
        };
        agents.get(key.as_ref()).map(|entry| entry.agent.clone())
    }

    pub fn list(&self) -> Vec<AgentView> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<AgentView> = agents.values().map(|entry| AgentView::from(&entry.record)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn get(&self, name: &str) -> Result<AgentView, RulesError> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        agents
            .get(&name.to_lowercase())
            .map(|entry| AgentView::from(&entry.record))
            .ok_or(RulesError::NotFound("agent"))
    }

    /// `create`: a new name (409 if taken); else replaces an existing agent (404 if missing).
    pub async fn put(&self, input: AgentInput, create: bool) -> Result<AgentView, RulesError> {
        let now = crate::clock::now_unix();
        let created_at = if create {
            now
        } else {
            self.store
                .list_agents()
                .await?
                .into_iter()
                .find(|a| a.name.eq_ignore_ascii_case(input.name.trim()))
                .map(|a| a.created_at)
                .ok_or(RulesError::NotFound("agent"))?
        };
        let record = validate(input, created_at, now)?;
        self.store.put_agent(record.clone(), create).await?;
        self.reload_own().await?;
        Ok(AgentView::from(&record))
    }

    pub async fn delete(&self, name: &str) -> Result<(), RulesError> {
        self.store.delete_agent(name).await?;
        self.reload_own().await
    }
}

fn validate(input: AgentInput, created_at: i64, now: i64) -> Result<AgentRecord, RulesError> {
    let name = input.name.trim().to_string();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(RulesError::Invalid(
            "agent name must be 1 to 64 characters of letters, digits, '.', '_' or '-'".into(),
        ));
    }
    let model = input.model.trim().to_string();
    if model.is_empty() || model.starts_with(MODEL_PREFIX) {
        return Err(RulesError::Invalid(
            "model must name a model or alias (not another agent)".into(),
        ));
    }
    if input.system_prompt.as_ref().is_some_and(|p| p.len() > MAX_PROMPT_LEN) {
        return Err(RulesError::Invalid(format!(
            "system_prompt is longer than {MAX_PROMPT_LEN} bytes"
        )));
    }
    let tier_order = match input.tier_order {
        Some(order) => Some(
            Tier::parse_order(&order)
                .map_err(|e| RulesError::Invalid(format!("tier_order: {e}")))?
                .iter()
                .map(|t| t.as_str().to_string())
                .collect(),
        ),
        None => None,
    };
    let queue_timeout_ms = input.queue_timeout_ms.map(validate_queue_timeout).transpose()?;
    Ok(AgentRecord {
        name,
        system_prompt: input.system_prompt.filter(|p| !p.trim().is_empty()),
        model,
        tier_order,
        queue_timeout_ms,
        created_at,
        updated_at: now,
    })
}
