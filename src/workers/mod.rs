//! Workers: the wire protocol, the router's registry of live workers, and the worker
//! clients (`auxot worker gpu`, `auxot worker cli`).

pub mod args;
pub mod cli;
pub mod client;
pub mod embeddings;
pub mod fleet;
pub mod gpu;
mod gpu_usage;
pub mod gpu_whole;
mod job;
mod model_server;
pub mod policy;
pub mod pool;
pub mod protocol;
pub mod registry;
mod session;
