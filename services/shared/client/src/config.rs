//! The clients' configuration file, `~/.config/wharf/config.toml` (or
//! `$WHARF_CLIENT_CONFIG`): the server of each service, the user, the CA
//! to trust, and per-server sections. Flags and environment variables
//! always win over it; it wins over the built-in defaults.
//!
//! ```toml
//! user = "alice"                       # every service, every server
//! ca = "~/wharf/server.crt"            # trust this certificate (--ca)
//!
//! [ftp]
//! server = "files.example.org:2121"    # wharf-ftp's default --server
//! [chat]
//! server = "files.example.org:2122"
//! [exec]
//! server = "files.example.org:2123"
//! user = "alice-admin"                 # this service only
//!
//! [servers."files.example.org:2121"]   # this server only
//! user = "alice"
//! ca = "/etc/wharf/other.crt"
//! ```
//!
//! Unknown keys are errors that name the key and its line: a typo is not
//! silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

/// Environment variable naming another config file.
pub const CONFIG_ENV: &str = "WHARF_CLIENT_CONFIG";

/// Why the config file is not used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It exists and cannot be read.
    #[error("cannot read the client config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid, or has keys Wharf does not know.
    #[error("the client config {path} is invalid: {message}; fix or remove that line")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The TOML parser's account, with line and column.
        message: String,
    },
}

/// One service's section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// The service's server, `HOST:PORT`.
    pub server: Option<String>,
    /// The user to log in as.
    pub user: Option<String>,
}

/// One server's section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// The user to log in as there.
    pub user: Option<String>,
    /// The certificate or CA to trust there.
    pub ca: Option<PathBuf>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The user everywhere.
    pub user: Option<String>,
    /// The certificate or CA to trust everywhere.
    pub ca: Option<PathBuf>,
    /// `wharf-ftp`'s section.
    pub ftp: Option<ServiceSection>,
    /// `wharf-chat`'s section.
    pub chat: Option<ServiceSection>,
    /// `wharf-exec`'s section.
    pub exec: Option<ServiceSection>,
    /// Per-server sections, by `HOST:PORT`.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerSection>,
}

/// `$WHARF_CLIENT_CONFIG`, else `$XDG_CONFIG_HOME/wharf/config.toml`, else
/// `~/.config/wharf/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    Some(wharf_core::cli::user_dir("XDG_CONFIG_HOME", ".config")?.join("config.toml"))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

impl ClientConfig {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let mut config: ClientConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or(&text);
                    let line = before.matches('\n').count() + 1;
                    format!("line {line}: {}", e.message())
                }
                None => e.message().to_owned(),
            },
        })?;
        // `~/` is the home; other relative paths are the file's folder's.
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if let (Ok(rest), Some(home)) = (p.strip_prefix("~"), home()) {
                *p = home.join(rest);
            } else if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        config.ca.as_mut().map(resolve);
        for section in config.servers.values_mut() {
            section.ca.as_mut().map(resolve);
        }
        Ok(config)
    }

    fn service(&self, service: &str) -> Option<&ServiceSection> {
        match service {
            "ftp" => self.ftp.as_ref(),
            "chat" => self.chat.as_ref(),
            "exec" => self.exec.as_ref(),
            _ => None,
        }
    }

    fn server_section(&self, server: &str) -> Option<&ServerSection> {
        self.servers.get(server.trim())
    }

    /// Fills in what the command line (flags and environment) left to
    /// defaults: `server` (the arg `server` of `matches`), `user` and `ca`
    /// for `service` (`ftp`, `chat` or `exec`).
    pub fn apply(
        &self,
        matches: &ArgMatches,
        service: &str,
        server: &mut String,
        user: &mut Option<String>,
        ca: &mut Option<PathBuf>,
    ) {
        let given = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let section = self.service(service);
        if !given("server")
            && let Some(s) = section.and_then(|s| s.server.clone())
        {
            *server = s;
        }
        let here = self.server_section(server);
        if user.is_none() {
            *user = here
                .and_then(|h| h.user.clone())
                .or_else(|| section.and_then(|s| s.user.clone()))
                .or_else(|| self.user.clone());
        }
        if ca.is_none() {
            *ca = here.and_then(|h| h.ca.clone()).or_else(|| self.ca.clone());
        }
    }
}

/// Reads the config file ([`default_path`]) and applies it, as
/// [`ClientConfig::apply`] does.
pub fn apply(
    matches: &ArgMatches,
    service: &str,
    server: &mut String,
    user: &mut Option<String>,
    ca: &mut Option<PathBuf>,
) -> Result<(), ConfigError> {
    let Some(path) = default_path() else {
        return Ok(());
    };
    ClientConfig::load(&path)?.apply(matches, service, server, user, ca);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn matches(args: &[&str]) -> ArgMatches {
        Command::new("t")
            .arg(
                Arg::new("server")
                    .long("server")
                    .default_value("127.0.0.1:2121"),
            )
            .get_matches_from(std::iter::once("t").chain(args.iter().copied()))
    }

    fn config(text: &str) -> Result<ClientConfig, ConfigError> {
        let dir = tempfile::tempdir().map_err(|source| ConfigError::Read {
            path: "tempdir".into(),
            source,
        })?;
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        ClientConfig::load(&path)
    }

    #[test]
    fn sections_fill_in_what_flags_left_to_defaults() -> Result<(), ConfigError> {
        let c = config(
            r#"
user = "alice"
ca = "/etc/wharf/ca.crt"
[ftp]
server = "files:2121"
[exec]
user = "alice-admin"
[servers."other:2121"]
user = "al"
ca = "other.crt"
"#,
        )?;
        let resolve = |args: &[&str], service: &str| {
            let m = matches(args);
            let mut server = m.get_one::<String>("server").cloned().unwrap_or_default();
            let (mut user, mut ca) = (None, None);
            c.apply(&m, service, &mut server, &mut user, &mut ca);
            (server, user, ca)
        };
        assert_eq!(
            resolve(&[], "ftp"),
            (
                "files:2121".to_owned(),
                Some("alice".to_owned()),
                Some("/etc/wharf/ca.crt".into())
            )
        );
        let (server, user, ca) = resolve(&["--server", "other:2121"], "ftp");
        assert_eq!(
            (server.as_str(), user.as_deref()),
            ("other:2121", Some("al"))
        );
        assert!(ca.is_some_and(|p| p.ends_with("other.crt") && p.is_absolute()));
        assert_eq!(resolve(&[], "exec").1.as_deref(), Some("alice-admin"));
        // No [chat] server: the built-in default stays.
        assert_eq!(resolve(&[], "chat").0, "127.0.0.1:2121");
        Ok(())
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = config("user = \"alice\"\n[ftp]\nsevrer = \"x:1\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("line 3") && err.contains("sevrer"), "{err}");
        let err = config("user = \n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("line 1"), "{err}");
    }
}
