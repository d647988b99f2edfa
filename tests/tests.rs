//! The one integration-test binary: every test starts the real `auxot` binary on an
//! ephemeral port with a temp data dir, and fakes what lies outside it.

mod support;

mod accounts;
mod bad_input;
mod chat;
mod leak;
mod providers;
mod restart;
