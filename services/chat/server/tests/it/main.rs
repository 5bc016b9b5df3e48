//! The integration tests: one binary, a module per subject.

mod chat;
mod cli;
mod common;
mod proxy;
mod replicas;
mod terminal;
mod udp;
