//! The admin agent's tools: OpenAI function definitions, and each one a thin call into the
//! same domain functions the admin API calls (no second code path).

use super::secrets::SecretVault;
use crate::auth::AuthError;
use crate::dispatch::rules::RulesError;
use crate::providers::{NewProvider, ProviderKind, ProviderPatch, ProviderView, RegistryError};
use crate::store::{AliasRecord, Role};
use crate::usage::{GroupBy, UsageError};
use crate::workers::protocol::WorkerKind;
use crate::AppState;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Invalid(String),
    #[error("there is no tool named '{0}'")]
    UnknownTool(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Usage(#[from] UsageError),
}

/// What a tool run gives back: the model's view, and the operator's when it differs (a
/// freshly created token or key is shown to the operator only).
pub struct ToolOutput {
    pub for_model: String,
    pub for_operator: Option<String>,
    /// Set when the tool asked for the operator's confirmation of a provider deletion.
    pub pending_delete: Option<String>,
}

impl ToolOutput {
    fn json(value: Value) -> ToolOutput {
        ToolOutput {
            for_model: value.to_string(),
            for_operator: None,
            pending_delete: None,
        }
    }
}

/// One tool call's context: the conversation (for its secrets) and a confirmed deletion.
pub struct ToolContext<'a> {
    pub state: &'a AppState,
    pub vault: &'a SecretVault,
    pub conversation: &'a str,
    /// The provider id the operator has just confirmed deleting, if they did.
    pub confirmed_delete: Option<&'a str>,
}

fn function(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({"type": "function", "function": {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }})
}

/// The tools as OpenAI function definitions.
pub fn definitions() -> Value {
    let provider = json!({"type": "string", "description": "the provider's name or id"});
    let key =
        json!({"type": "string", "description": "the key exactly as the operator's placeholder, e.g. [[secret:1]]"});
    json!([
        function(
            "add_provider",
            "Add a cloud provider: validates the key, caches its models, seals the key.",
            json!({"name": {"type": "string"}, "type": {"type": "string", "enum": ["openai", "anthropic", "openai-compatible"]},
                   "api_key": key, "base_url": {"type": "string"}}),
            &["name", "type"]
        ),
        function(
            "list_providers",
            "List providers (keys are never shown, only a hint).",
            json!({}),
            &[]
        ),
        function(
            "update_provider_key",
            "Rotate a provider's API key (validated before it replaces the old one).",
            json!({"provider": provider, "api_key": key}),
            &["provider", "api_key"]
        ),
        function(
            "rename_provider",
            "Rename a provider.",
            json!({"provider": provider, "name": {"type": "string"}}),
            &["provider", "name"]
        ),
        function(
            "enable_provider",
            "Enable a provider.",
            json!({"provider": provider}),
            &["provider"]
        ),
        function(
            "disable_provider",
            "Disable a provider.",
            json!({"provider": provider}),
            &["provider"]
        ),
        function(
            "delete_provider",
            "Delete a provider. The first call asks for the operator's confirmation; call it again after they say yes.",
            json!({"provider": provider}),
            &["provider"]
        ),
        function(
            "refresh_models",
            "Re-read a provider's model list.",
            json!({"provider": provider}),
            &["provider"]
        ),
        function("list_models", "List every model of every provider.", json!({}), &[]),
        function(
            "list_workers",
            "List connected GPU and CLI workers with their slots and status.",
            json!({}),
            &[]
        ),
        function(
            "create_worker_token",
            "Create a token for a GPU or CLI worker (shown to the operator only).",
            json!({"name": {"type": "string"}, "kind": {"type": "string", "enum": ["gpu", "cli"]}}),
            &["name", "kind"]
        ),
        function("list_agents", "List named agents.", json!({}), &[]),
        function(
            "create_agent",
            "Create a named agent (a system prompt, a model or alias, a tier order).",
            json!({"name": {"type": "string"}, "model": {"type": "string"}, "system_prompt": {"type": "string"},
                   "tier_order": {"type": "array", "items": {"type": "string", "enum": ["gpu", "cli", "cloud"]}}}),
            &["name", "model"]
        ),
        function(
            "create_api_key",
            "Create an API key (shown to the operator only).",
            json!({"name": {"type": "string"}, "role": {"type": "string", "enum": ["client", "admin"]}}),
            &["name"]
        ),
        function(
            "revoke_api_key",
            "Revoke an API key by id or name.",
            json!({"key": {"type": "string"}}),
            &["key"]
        ),
        function(
            "usage_summary",
            "Requests, tokens and cost over the last days.",
            json!({"group_by": {"type": "string", "enum": ["tier", "provider", "model", "api_key", "agent", "day"]},
                   "days": {"type": "integer", "minimum": 1, "maximum": 366}}),
            &[]
        ),
        function(
            "set_alias",
            "Create or change a model alias: the model each tier runs for it (cloud models as provider/model).",
            json!({"name": {"type": "string"}, "gpu": {"type": "string"}, "cli": {"type": "string"}, "cloud": {"type": "string"}}),
            &["name"]
        ),
    ])
}

fn parse<T: DeserializeOwned>(args: &Value) -> Result<T, ToolError> {
    serde_json::from_value(args.clone()).map_err(|e| ToolError::Invalid(format!("bad arguments: {e}")))
}

#[derive(Deserialize)]
struct AddProvider {
    name: String,
    #[serde(rename = "type")]
    kind: ProviderKind,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
}

#[derive(Deserialize)]
struct ProviderArgs {
    provider: String,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
    #[serde(default)]
    kind: Option<WorkerKind>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(default)]
    tier_order: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct UsageArgs {
    #[serde(default)]
    group_by: Option<String>,
    #[serde(default)]
    days: Option<i64>,
}

#[derive(Deserialize)]
struct AliasArgs {
    name: String,
    #[serde(default)]
    gpu: Option<String>,
    #[serde(default)]
    cli: Option<String>,
    #[serde(default)]
    cloud: Option<String>,
}

impl ToolContext<'_> {
    /// Runs one tool. `args` hold placeholders; only `api_key` is resolved, here.
    pub async fn run(&self, name: &str, args: &Value) -> Result<ToolOutput, ToolError> {
        let state = self.state;
        let view = |v: ProviderView| ToolOutput::json(json!(v));
        match name {
            "add_provider" => {
                let a: AddProvider = parse(args)?;
                let new = NewProvider {
                    name: a.name,
                    kind: a.kind,
                    api_key: a.api_key.map(|k| self.secret(&k)).transpose()?,
                    base_url: a.base_url,
                    priority: None,
                    enabled: None,
                };
                Ok(view(state.providers.add(new).await?))
            }
            "list_providers" => Ok(ToolOutput::json(json!(state.providers.list().await?))),
            "update_provider_key" => {
                let a: ProviderArgs = parse(args)?;
                let key = a
                    .api_key
                    .ok_or_else(|| ToolError::Invalid("api_key is required".into()))?;
                let patch = ProviderPatch {
                    api_key: Some(self.secret(&key)?),
                    ..ProviderPatch::default()
                };
                Ok(view(self.patch(&a.provider, patch).await?))
            }
            "rename_provider" => {
                let a: ProviderArgs = parse(args)?;
                let patch = ProviderPatch {
                    name: Some(a.name.ok_or_else(|| ToolError::Invalid("name is required".into()))?),
                    ..ProviderPatch::default()
                };
                Ok(view(self.patch(&a.provider, patch).await?))
            }
            "enable_provider" | "disable_provider" => {
                let a: ProviderArgs = parse(args)?;
                let patch = ProviderPatch {
                    enabled: Some(name == "enable_provider"),
                    ..ProviderPatch::default()
                };
                Ok(view(self.patch(&a.provider, patch).await?))
            }
            "delete_provider" => self.delete_provider(parse(args)?).await,
            "refresh_models" => {
                let a: ProviderArgs = parse(args)?;
                let id = self.find_provider(&a.provider).await?.id;
                Ok(view(state.providers.refresh_models(&id).await?))
            }
            "list_models" => Ok(ToolOutput::json(json!(state.providers.list_models().await?))),
            "list_workers" => Ok(ToolOutput::json(json!(state.workers.views()))),
            "create_worker_token" => {
                let a: Named = parse(args)?;
                let kind = a
                    .kind
                    .ok_or_else(|| ToolError::Invalid("kind must be gpu or cli".into()))?;
                let (token, secret) = state.auth.create_worker_token(&a.name, kind).await?;
                Ok(ToolOutput {
                    for_model: format!("worker token '{}' created (shown to the operator, not to you)", token.name),
                    for_operator: Some(
                        json!({"token": secret.expose(), "worker_token": token, "note": "copy it now: it is not shown again"})
                            .to_string(),
                    ),
                    pending_delete: None,
                })
            }
            "list_agents" => Ok(ToolOutput::json(json!(state.agents.list()))),
            "create_agent" => {
                let a: Named = parse(args)?;
                let input = crate::agents::AgentInput {
                    name: a.name,
                    system_prompt: a.system_prompt,
                    model: a.model.ok_or_else(|| ToolError::Invalid("model is required".into()))?,
                    tier_order: a.tier_order,
                    queue_timeout_ms: None,
                };
                Ok(ToolOutput::json(json!(state.agents.put(input, true).await?)))
            }
            "create_api_key" => {
                let a: Named = parse(args)?;
                let (key, secret) = state
                    .auth
                    .create_api_key(&a.name, a.role.unwrap_or(Role::Client))
                    .await?;
                Ok(ToolOutput {
                    for_model: format!("API key '{}' created (shown to the operator, not to you)", key.name),
                    for_operator: Some(
                        json!({"key": secret.expose(), "api_key": key, "note": "copy it now: it is not shown again"})
                            .to_string(),
                    ),
                    pending_delete: None,
                })
            }
            "revoke_api_key" => {
                let wanted = args["key"].as_str().unwrap_or_default().trim().to_string();
                let keys = state.auth.list_api_keys().await?;
                let key = keys
                    .iter()
                    .find(|k| k.id == wanted)
                    .or_else(|| keys.iter().find(|k| k.name.eq_ignore_ascii_case(&wanted)))
                    .ok_or_else(|| ToolError::Invalid(format!("no API key has the id or name '{wanted}'")))?;
                state.auth.revoke_api_key(&key.id).await?;
                Ok(ToolOutput::json(json!({"revoked": key.name, "id": key.id})))
            }
            "usage_summary" => self.usage_summary(parse(args)?).await,
            "set_alias" => self.set_alias(parse(args)?).await,
            other => Err(ToolError::UnknownTool(other.to_string())),
        }
    }

    fn secret(&self, value: &str) -> Result<crate::crypto::Secret, ToolError> {
        self.vault.resolve(self.conversation, value).map_err(ToolError::Invalid)
    }

    async fn find_provider(&self, wanted: &str) -> Result<ProviderView, ToolError> {
        let wanted = wanted.trim();
        let providers = self.state.providers.list().await?;
        providers
            .iter()
            .find(|p| p.id == wanted)
            .or_else(|| providers.iter().find(|p| p.name.eq_ignore_ascii_case(wanted)))
            .cloned()
            .ok_or_else(|| ToolError::Invalid(format!("no provider has the name or id '{wanted}'")))
    }

    async fn patch(&self, provider: &str, patch: ProviderPatch) -> Result<ProviderView, ToolError> {
        let id = self.find_provider(provider).await?.id;
        Ok(self.state.providers.update(&id, patch).await?)
    }

    /// Destructive: runs only when the operator's latest message confirmed this provider.
    async fn delete_provider(&self, a: ProviderArgs) -> Result<ToolOutput, ToolError> {
        let provider = self.find_provider(&a.provider).await?;
        if self.confirmed_delete == Some(provider.id.as_str()) {
            self.state.providers.delete(&provider.id).await?;
            return Ok(ToolOutput::json(json!({"deleted": provider.name, "id": provider.id})));
        }
        Ok(ToolOutput {
            for_model: format!(
                "confirmation required: ask the operator to confirm deleting provider '{}' (reply yes to delete it)",
                provider.name
            ),
            for_operator: None,
            pending_delete: Some(provider.id),
        })
    }

    async fn usage_summary(&self, a: UsageArgs) -> Result<ToolOutput, ToolError> {
        let group_text = a.group_by.unwrap_or_else(|| "tier".into());
        let group_by = GroupBy::parse(&group_text).ok_or_else(|| {
            ToolError::Invalid("group_by must be one of tier, provider, model, api_key, agent, day".into())
        })?;
        let days = a.days.unwrap_or(7).clamp(1, 366);
        let to = crate::clock::now_unix_ms() + 1;
        let from = to - days * 86_400_000;
        let summary = self.state.usage.summary(from, to, group_by).await?;
        Ok(ToolOutput::json(
            json!({"days": days, "group_by": group_text, "groups": summary.groups, "totals": summary.totals}),
        ))
    }

    /// Given tiers replace the alias's; tiers not given keep their model.
    async fn set_alias(&self, a: AliasArgs) -> Result<ToolOutput, ToolError> {
        let rules = &self.state.rules;
        let existing = rules.alias(a.name.trim());
        let create = existing.is_none();
        let old = existing.unwrap_or_else(|| AliasRecord {
            name: a.name.trim().to_string(),
            gpu: None,
            cli: None,
            cloud: None,
            client_models: Vec::new(),
        });
        let alias = AliasRecord {
            name: old.name,
            gpu: a.gpu.or(old.gpu),
            cli: a.cli.or(old.cli),
            cloud: a.cloud.or(old.cloud),
            client_models: old.client_models,
        };
        Ok(ToolOutput::json(json!(rules.put_alias(alias, create).await?)))
    }
}
