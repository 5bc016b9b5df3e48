//! The integration tests: one binary, a module per subject.

mod cli;
mod common;
mod exec;
mod host;
mod isolation;
mod network;
mod terminal;
