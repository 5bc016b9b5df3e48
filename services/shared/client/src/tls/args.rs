//! The TLS flags every client takes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::{ClientTls, Prompt, TlsError};

/// The TLS flags of every client.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// Trust only this certificate, or certificates signed by this CA (PEM).
    #[arg(long, env = "WHARF_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Trust a server seen for the first time and pin its certificate in
    /// ~/.config/wharf/known_servers (for scripts; a terminal is asked).
    #[arg(long)]
    pub accept_new: bool,
    /// Speak without TLS, to a server run with --no-tls; everything, the
    /// password included, crosses the network in clear.
    #[arg(long, conflicts_with = "accept_new")]
    pub no_tls: bool,
}

impl ClientTlsArgs {
    /// The trust these flags ask for; a terminal user is asked about new
    /// servers.
    pub fn tls(&self) -> Result<ClientTls, TlsError> {
        if self.no_tls {
            return Ok(ClientTls::plain());
        }
        if let Some(ca) = &self.ca {
            return ClientTls::trusting(ca);
        }
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        Ok(ClientTls::pinning(
            default_known_servers(),
            self.accept_new,
            Some(Arc::new(TerminalPrompt { interactive })),
        ))
    }
}

/// The client binaries' [`Prompt`]: questions on the terminal when there
/// is one (standard input and error both), notes on standard error.
#[derive(Debug)]
pub struct TerminalPrompt {
    /// Whether there is a person at a terminal to ask.
    pub interactive: bool,
}

impl Prompt for TerminalPrompt {
    fn confirm(&self, question: &str) -> Option<bool> {
        if !self.interactive {
            return None;
        }
        eprint!("{question}");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let read = std::io::stdin().read_line(&mut answer);
        Some(read.is_ok() && matches!(answer.trim().to_ascii_lowercase().as_str(), "yes" | "y"))
    }

    fn note(&self, note: &str) {
        eprintln!("{note}");
    }
}

/// `$XDG_CONFIG_HOME/wharf/known_servers`, else
/// `~/.config/wharf/known_servers`.
pub fn default_known_servers() -> Option<PathBuf> {
    Some(wharf_core::cli::user_dir("XDG_CONFIG_HOME", ".config")?.join("known_servers"))
}
