//! Every redb table, declared in one place, and the schema version they make up.
//!
//! Records are JSON: readable with any tool, and new optional fields need no migration.

use redb::TableDefinition;

/// Bump with a step in `store::migrate` whenever a table or record changes incompatibly.
pub const SCHEMA_VERSION: u32 = 6;

/// Schema version, passphrase salt, key-check canary.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Provider id → `ProviderRecord`.
pub const PROVIDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("providers");
/// Lower-cased provider name → provider id; keeps names unique.
pub const PROVIDER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("provider_names");
/// Provider id → `ModelCache`.
pub const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("models");
/// Username → `AdminRecord`.
pub const ADMINS: TableDefinition<&str, &[u8]> = TableDefinition::new("admins");
/// SHA-256 of the session token → `SessionRecord`.
pub const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// API key id → `ApiKeyRecord` (holds the key's SHA-256, never the key).
pub const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// Worker token id → `WorkerTokenRecord` (holds the token's SHA-256, never the token).
pub const WORKER_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("worker_tokens");
/// Alias name → `AliasRecord`.
pub const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
/// Agent name (lower-cased) → `AgentRecord`.
pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// Setting group (e.g. `routing`) → its JSON.
pub const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// (unix millis << 32 | sequence) → `UsageRecord`: time-ordered, so a period is one range.
pub const USAGE: TableDefinition<u128, &[u8]> = TableDefinition::new("usage");
/// (filter hash, first usage key) → the usage keys of one write batch that match the filter
/// (`usage_postings.rs`): the request log's filters (tier, route, model, api key, agent,
/// session, outcome, status), each read newest first.
pub const USAGE_POSTINGS: TableDefinition<(u64, u128), &[u8]> = TableDefinition::new("usage_postings");
/// The index schema 5 wrote, one entry per row and filter: dropped by the step to 6.
pub const LEGACY_USAGE_INDEX: TableDefinition<(&str, u128), ()> = TableDefinition::new("usage_index");
/// (API key id, month number) → USD spent: spend caps hold across restarts without a scan.
pub const USAGE_SPEND: TableDefinition<(&str, i64), f64> = TableDefinition::new("usage_spend");
/// (day start in unix millis, group) → `Rollup` of the rows pruned from that day, so
/// `/api/usage` still answers for ranges whose raw rows are gone.
pub const USAGE_DAILY: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("usage_daily");
/// Model id (or id prefix) → `PriceRecord`.
pub const PRICES: TableDefinition<&str, &[u8]> = TableDefinition::new("prices");

/// Conversation id → `ConversationRecord` (the admin agent's chats; placeholders, never keys).
pub const CONVERSATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("conversations");

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_KDF_SALT: &str = "kdf_salt";
pub const META_KEY_CANARY: &str = "key_canary";
/// Unix millis before which usage rows were pruned (their totals live in `USAGE_DAILY`).
pub const META_USAGE_PRUNED_BEFORE: &str = "usage_pruned_before";
