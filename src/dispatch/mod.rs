//! Where a request goes: `plan.rs` orders the candidates (pure), `attempt.rs` walks them,
//! `rules.rs` holds the admin's routing settings and aliases, `body.rs` rewrites bodies.

pub mod attempt;
pub mod body;
pub mod plan;
pub mod rules;

pub use attempt::{ChatRequest, DispatchError, Dispatcher, Routed, RoutedReply, TargetFailure};
pub use plan::{plan, PlanError, Tier};
