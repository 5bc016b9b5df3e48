//! The client's side of TLS: how a client decides to trust a server, as ssh
//! and browsers do.
//!
//! In order: with `--ca FILE` (or `WHARF_CA`), the server must present that
//! very certificate or one that a CA in the file signed, and nothing else
//! counts. Without it, a certificate the system's roots vouch for is
//! trusted. Otherwise the certificate's fingerprint must be the one pinned
//! for that `HOST:PORT` in `~/.config/wharf/known_servers`: on first
//! contact a terminal user is shown the fingerprint and asked, a script is
//! refused unless it passed `--accept-new`, and a server whose certificate
//! changed is refused with a warning ([`TlsError::KeyChanged`],
//! [`EXIT_KEY_CHANGED`]). No byte of the session (the password least of
//! all) is sent before the decision.
//!
//! The connector asks and tells the person through a [`Prompt`]: the client
//! binaries answer on the terminal ([`TerminalPrompt`]), a program using
//! the library as it likes.

mod args;
mod error;
mod pins;
mod verify;

pub use args::{ClientTlsArgs, TerminalPrompt, default_known_servers};
pub use error::TlsError;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use wharf_core::tls::{Stream, provider};

use self::pins::{add_pin, pin_key, same_certificate_pinned};
use self::verify::{Verdict, Verifier};

/// The exit code of every client refusing a server whose certificate is not
/// the one pinned for it.
pub const EXIT_KEY_CHANGED: u8 = 254;

/// How the connector reaches the person using it: a question about a
/// server never seen before, and notes about the servers it pinned.
pub trait Prompt: std::fmt::Debug + Send + Sync {
    /// Asks `question` (whether to trust a new server), blocking until the
    /// answer: `Some(true)` for yes, `None` when there is no one to ask.
    fn confirm(&self, question: &str) -> Option<bool>;
    /// Tells the person `note` (a server pinned).
    fn note(&self, note: &str);
}

/// How a client connects: plain, or TLS with a way to trust the server.
#[derive(Debug, Clone)]
pub struct ClientTls {
    trust: Option<Arc<Trust>>,
}

#[derive(Debug)]
struct Trust {
    ca: Option<Ca>,
    /// The system's roots, loaded at the first connection that needs them.
    system: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
    known: Option<PathBuf>,
    accept_new: bool,
    prompt: Option<Arc<dyn Prompt>>,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
struct Ca {
    path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl ClientTls {
    /// No TLS (for a `--no-tls` server).
    pub fn plain() -> ClientTls {
        ClientTls { trust: None }
    }

    /// Trusts the certificate in `ca`, or what the CAs in it signed.
    pub fn trusting(ca: &Path) -> Result<ClientTls, TlsError> {
        let bad = |reason: String| TlsError::CaFile {
            path: ca.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE block in it".into()));
        }
        let provider = provider();
        let mut roots = RootCertStore::empty();
        let (_, _) = roots.add_parsable_certificates(certs.iter().cloned());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .ok();
        Ok(ClientTls {
            trust: Some(Arc::new(Trust {
                ca: Some(Ca {
                    path: ca.to_path_buf(),
                    certs,
                    verifier,
                }),
                system: OnceLock::new(),
                known: None,
                accept_new: false,
                prompt: None,
                provider,
            })),
        })
    }

    /// Trusts what the system's roots vouch for, else the fingerprints
    /// pinned in `known_servers`; a new server is pinned when `accept_new`,
    /// or when the person says yes to `prompt`, which also hears what was
    /// pinned.
    pub fn pinning(
        known_servers: Option<PathBuf>,
        accept_new: bool,
        prompt: Option<Arc<dyn Prompt>>,
    ) -> ClientTls {
        ClientTls {
            trust: Some(Arc::new(Trust {
                ca: None,
                system: OnceLock::new(),
                known: known_servers,
                accept_new,
                prompt,
                provider: provider(),
            })),
        }
    }

    /// Connects to `addr` (`HOST:PORT`) and, under TLS, verifies the server
    /// before returning. `service` names the daemon in error messages.
    pub async fn connect(&self, addr: &str, service: &str) -> Result<Stream, TlsError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TlsError::Connect {
                addr: addr.to_owned(),
                service: service.to_owned(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        self.secure(tcp, addr).await
    }

    /// Runs the TLS handshake (and the verification) on a TCP connection
    /// made to `addr`; plain, returns it as it is.
    pub async fn secure(&self, tcp: TcpStream, addr: &str) -> Result<Stream, TlsError> {
        let Some(trust) = &self.trust else {
            return Ok(Stream::Plain(tcp));
        };
        let host = host_of(addr)?;
        let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsError::BadAddress {
            addr: addr.to_owned(),
        })?;
        let verifier = Arc::new(Verifier {
            trust: Arc::clone(trust),
            key: pin_key(addr),
            verdict: Mutex::new(Verdict::Trusted),
        });
        let config = ClientConfig::builder_with_provider(Arc::clone(&trust.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Handshake {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(config));
        let handshake = connector.connect(name, tcp).await;
        let verdict = std::mem::replace(&mut *verifier.lock(), Verdict::Trusted);
        let tls = match (handshake, verdict) {
            (
                Err(_),
                Verdict::Changed {
                    pinned,
                    presented,
                    line,
                },
            ) => {
                return Err(TlsError::KeyChanged {
                    addr: addr.to_owned(),
                    presented,
                    pinned,
                    file: trust
                        .known
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    line,
                });
            }
            (Err(_), Verdict::Refused(reason)) => {
                return Err(TlsError::NotTrusted {
                    addr: addr.to_owned(),
                    ca: trust
                        .ca
                        .as_ref()
                        .map(|c| c.path.display().to_string())
                        .unwrap_or_default(),
                    reason,
                });
            }
            (Err(e), _) => return Err(handshake_error(addr, e)),
            (Ok(tls), verdict) => (tls, verdict),
        };
        let (tls, verdict) = tls;
        if let Verdict::Unknown(fp) = verdict {
            decide(trust, addr, &fp).await?;
        }
        Ok(Stream::Client(Box::new(tls)))
    }
}

/// Pins `fingerprint` for `addr` if the user or `--accept-new` says so.
async fn decide(trust: &Trust, addr: &str, fp: &str) -> Result<(), TlsError> {
    let unknown = || TlsError::UnknownServer {
        addr: addr.to_owned(),
        fingerprint: fp.to_owned(),
    };
    // The same certificate, already trusted for this host on another port
    // (wharfd serves its three services with one): it is the same server.
    if let Some(file) = &trust.known
        && let Some(other) = same_certificate_pinned(file, addr, fp)?
    {
        add_pin(file, &pin_key(addr), fp)?;
        trust.tell(&format!(
            "Note: {addr} presents the certificate already trusted for {other}; added to the known servers ({}).",
            file.display()
        ));
        return Ok(());
    }
    let yes = if trust.accept_new {
        true
    } else {
        let question = format!(
            "The authenticity of the Wharf server {addr} can't be established.\n\
             Its certificate's SHA-256 fingerprint is\n{fp}\n\
             Compare it with what the administrator gets from `admin-cli tls fingerprint`.\n\
             Are you sure you want to continue connecting (yes/no)? "
        );
        let prompt = trust.prompt.clone().ok_or_else(unknown)?;
        let answer = tokio::task::spawn_blocking(move || prompt.confirm(&question))
            .await
            .unwrap_or(Some(false));
        answer.ok_or_else(unknown)?
    };
    if !yes {
        return Err(TlsError::Declined {
            addr: addr.to_owned(),
        });
    }
    let Some(file) = &trust.known else {
        // Nowhere to remember it: trusted for this connection only.
        return Ok(());
    };
    add_pin(file, &pin_key(addr), fp)?;
    trust.tell(&format!(
        "Warning: permanently added the Wharf server {addr} to the known servers ({}).",
        file.display()
    ));
    Ok(())
}

impl Trust {
    /// Tells the person `note`, when there is someone to tell.
    fn tell(&self, note: &str) {
        if let Some(prompt) = &self.prompt {
            prompt.note(note);
        }
    }
}

fn handshake_error(addr: &str, e: std::io::Error) -> TlsError {
    let not_tls = matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidMessage(_))
    ) || e.kind() == std::io::ErrorKind::UnexpectedEof;
    if not_tls {
        TlsError::NotTls {
            addr: addr.to_owned(),
        }
    } else {
        TlsError::Handshake {
            addr: addr.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// The host part of `HOST:PORT` (`[v6]:PORT` too).
fn host_of(addr: &str) -> Result<&str, TlsError> {
    let bad = || TlsError::BadAddress {
        addr: addr.to_owned(),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if port.parse::<u16>().is_err() || host.is_empty() {
        return Err(bad());
    }
    Ok(host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host))
}

#[cfg(test)]
mod tests {
    use super::pins::find_pin;
    use super::*;

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("localhost:2121").ok(), Some("localhost"));
        assert_eq!(host_of("[::1]:2121").ok(), Some("::1"));
        assert!(host_of("localhost").is_err());
        assert!(host_of(":2121").is_err());
    }

    #[test]
    fn pins_are_found_by_address_and_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("wharf/known_servers");
        assert_eq!(find_pin(&file, "a:1").ok(), Some(None));
        add_pin(&file, "a:1", "AA:BB").expect("add");
        add_pin(&file, "b:2", "CC:DD").expect("add");
        assert_eq!(
            find_pin(&file, "b:2").ok().flatten(),
            Some(("CC:DD".to_owned(), 2))
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_same_certificate_on_another_port_of_the_host_is_recognised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_servers");
        add_pin(&file, "files.example:2121", "AA:BB").expect("add");
        let found = |addr: &str, fp: &str| same_certificate_pinned(&file, addr, fp).ok().flatten();
        assert_eq!(
            found("files.example:2122", "aa:bb").as_deref(),
            Some("files.example:2121")
        );
        // Another certificate, or another host with it: asked as new.
        assert_eq!(found("files.example:2122", "AA:BC"), None);
        assert_eq!(found("other.example:2122", "AA:BB"), None);
        assert_eq!(found("files.example:2121", "AA:BB"), None);
    }
}
