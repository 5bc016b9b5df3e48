//! The integration tests: one binary, a module per subject.

mod auth;
mod common;
mod login_memory;
mod opening;
mod store;
