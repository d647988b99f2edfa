//! Where a request goes: `plan.rs` orders the candidates (pure), `attempt.rs` walks them.

pub mod attempt;
pub mod plan;

pub use attempt::{ChatRequest, DispatchError, Dispatcher, Routed, TargetFailure};
pub use plan::{plan, PlanError, RouteRequest, Target, Tier};
