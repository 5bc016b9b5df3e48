//! The integration tests: one binary, a module per subject.

mod compose;
mod config;
mod suite;
