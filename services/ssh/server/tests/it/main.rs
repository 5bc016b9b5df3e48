//! The integration tests: one binary, a module per subject. The SSH door
//! is driven with OpenSSH's own clients (sftp, scp), as users drive it.

mod commands;
mod common;
mod paramiko;
mod sftp;
