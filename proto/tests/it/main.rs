//! The integration tests: one binary, a module per subject.

mod codec;
mod properties;
mod protocol_doc;
