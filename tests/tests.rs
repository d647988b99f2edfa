//! The one integration-test binary: every test starts the real `auxot` binary on an
//! ephemeral port with a temp data dir, and fakes what lies outside it.

// The whole binary is test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod accounts;
mod admin_agent;
mod anthropic;
mod bad_input;
mod chat;
mod coding_agents;
mod console;
mod cost;
mod dispatch;
mod durability;
mod embeddings;
mod fleet;
mod fleet_db;
mod hardening;
mod leak;
mod model_servers;
mod one_thread;
mod ops;
mod ops_postgres;
mod outage;
mod outcomes;
mod providers;
mod responses;
mod restart;
mod scale_out;
mod store_suite;
mod tiers;
mod usage;
mod workers;
