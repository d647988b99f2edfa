//! Where a request goes: `plan.rs` orders the candidates (pure), `walk.rs` walks them
//! (failover, the wait queue in `queue.rs`, target health in `health.rs`), `attempt.rs`
//! runs one attempt on a worker or provider (clocks and the held opening in `stream.rs`),
//! `rules.rs` holds the admin's routing settings and aliases, `body.rs` rewrites bodies.

pub mod attempt;
pub mod body;
pub mod embed;
pub mod error;
pub mod health;
pub mod plan;
pub mod queue;
pub mod responses;
pub mod rules;
pub mod stream;
mod walk;

pub use attempt::{ChatRequest, Dispatcher, Routed, RoutedReply};
pub use embed::{Embedded, EmbeddingsCall};
pub use error::{DispatchError, TargetFailure, Why};
pub use plan::{plan, PlanError, Tier};
pub use responses::ResponsesForms;
