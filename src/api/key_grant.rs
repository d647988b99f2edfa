//! An API key's allow-lists applied to one request before dispatch: the model it asked for,
//! and the tiers it may reach (the request's, agent's or default order, narrowed).

use super::error::ApiError;
use crate::dispatch::{RouteOverrides, Tier};
use crate::AppState;

const AGENT_PREFIX: &str = "agent:";

/// For any request: the model it names and its `X-Auxot-Tier` order (narrowed in place).
pub fn enforce(state: &AppState, key_id: &str, model: &str, overrides: &mut RouteOverrides) -> Result<(), ApiError> {
    let tiers = &mut overrides.tiers;
    let grant = state
        .auth
        .grant_of(key_id)
        .ok_or_else(|| ApiError::new(401, "invalid_api_key", "invalid credentials"))?;
    if !grant.allows_model(model) {
        return Err(ApiError::new(
            403,
            "model_not_allowed",
            format!(
                "this API key may not use the model '{}'; it may use: {}",
                model,
                grant.models.join(", ")
            ),
        ));
    }
    if !grant.restricts_tiers() {
        return Ok(());
    }
    let order = match tiers.as_ref() {
        Some(order) => order.clone(),
        None => model
            .strip_prefix(AGENT_PREFIX)
            .and_then(|name| state.agents.resolve(name))
            .and_then(|agent| agent.tier_order.clone())
            .unwrap_or_else(|| state.rules.default_order()),
    };
    let narrowed: Vec<Tier> = order
        .iter()
        .copied()
        .filter(|t| grant.allows_tier(t.as_str()))
        .collect();
    if narrowed.is_empty() {
        let asked: Vec<&str> = order.iter().map(|t| t.as_str()).collect();
        return Err(ApiError::new(
            403,
            "tier_not_allowed",
            format!(
                "this API key may not use the {} tier; it may use: {}",
                asked.join(", "),
                grant.tiers.join(", ")
            ),
        ));
    }
    *tiers = Some(narrowed);
    Ok(())
}
