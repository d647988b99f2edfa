//! Where a request goes: `plan.rs` orders the candidates (pure), `walk.rs` walks them
//! (failover, the wait queue in `queue.rs`, target health in `health.rs`) for the
//! `Dispatcher` (`dispatcher.rs`: the live state, overrides, agent and default order),
//! `attempt.rs` runs one chat attempt on a worker or provider (clocks and the held opening
//! in `stream.rs`, the target's body from `target_body.rs`), `embed.rs` one embeddings
//! attempt, `rules.rs` holds the admin's routing settings and aliases, `body.rs` rewrites
//! bodies in place.

pub mod attempt;
pub mod body;
mod count;
pub mod dispatcher;
pub mod embed;
pub mod error;
pub mod health;
pub mod plan;
pub mod queue;
pub mod responses;
pub mod rules;
pub mod stream;
mod target_body;
mod walk;

pub use attempt::{ChatRequest, RoutedReply};
pub use dispatcher::{Dispatcher, DispatcherParts, RouteOverrides, Routed};
pub use embed::{Embedded, Embeddings, EmbeddingsCall};
pub use error::{DispatchError, TargetFailure, Why};
pub use plan::{plan, PlanError, Tier};
pub use responses::ResponsesForms;
