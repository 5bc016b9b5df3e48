//! Wharf's SSH door: `wharf-sshd`, and `wharfd --ssh-listen`.
//!
//! The clients everyone already has (OpenSSH's sftp and scp, WinSCP,
//! FileZilla's SFTP) reach the same users, keys, homes and quotas as
//! Wharf's own clients. Built on russh: the connection goes through the
//! accept loop every Wharf daemon shares (its limits, the budget of
//! connections not logged in yet, PROXY protocol), a login through the
//! one [`wharf_store::Authenticator`] (a password, or a key the
//! administrator gave the user), and every file operation of the `sftp`
//! subsystem through the storage layer standard FTP uses ([`sftp`]): the
//! same jail, the same quota reservations, uploads made visible whole with
//! their md5.

#![deny(missing_docs)]

mod commands;
pub mod host_key;
pub mod server;
mod session;
pub mod sftp;

pub use server::{SshArgs, SshConfig, SshServer, run};
