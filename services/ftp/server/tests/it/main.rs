//! The integration tests: one binary, a module per subject.

mod batch;
mod cli;
mod common;
mod digests;
mod files;
mod keys;
mod replicas;
mod resume;
mod robustness;
mod stdftp;
mod terminal;
mod tls;
