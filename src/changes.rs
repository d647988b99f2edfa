//! Keeps this router's caches in step with the shared database: each change notice (see
//! `store::notify`) reloads the caches of the tables it names. A router on redb has no feed
//! and never runs this.

use crate::app::AppState;
use crate::store::notify::Changed;
use tokio::sync::mpsc;

/// Reloads caches as changes arrive, until the feed ends. Notices that queued up meanwhile
/// are folded into one reload.
pub async fn follow(state: AppState, mut changes: mpsc::Receiver<Changed>) {
    while let Some(mut change) = changes.recv().await {
        while let Ok(more) = changes.try_recv() {
            change.merge(more);
        }
        apply(&state, &change).await;
    }
}

async fn apply(state: &AppState, change: &Changed) {
    fn report<E: std::fmt::Display>(what: &str, result: Result<(), E>) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot reload {what} after a change on another router");
        }
    }
    if change.touches("api_keys") || change.touches("worker_tokens") {
        let reloaded = state.auth.reload_credentials().await;
        if reloaded.is_ok() {
            drop_revoked_workers(state);
        }
        report("API keys and worker tokens", reloaded);
    }
    if change.touches("providers") || change.touches("models") {
        report("providers", state.providers.reload().await);
    }
    if change.touches("aliases") {
        report("aliases", state.rules.reload_aliases().await);
    }
    if change.touches("settings") {
        report("routing settings", state.rules.reload_settings().await);
        report("cloud-equivalent settings", state.usage.reload_equivalents().await);
    }
    if change.touches("agents") {
        report("agents", state.agents.reload().await);
    }
    if change.touches("usage_spend") {
        report("monthly spend", state.usage.reload_spend().await);
    }
    if change.touches("prices") {
        report("prices", state.usage.reload_prices().await);
    }
}

/// Disconnects the live workers whose token was revoked or deleted (they are refused when
/// they dial again), or whose allow-list changed (they reconnect under the new one), on
/// whichever router of the fleet that was done.
fn drop_revoked_workers(state: &AppState) {
    let auth = &state.auth;
    let dropped = state.workers.kick_unless(|worker| {
        auth.worker_token(&worker.token_id)
            .is_some_and(|token| token.allowed_models.as_deref() == worker.allowed_models.as_deref())
    });
    if dropped > 0 {
        tracing::info!(
            disconnected = dropped,
            "disconnected workers whose token was revoked or changed"
        );
    }
}
