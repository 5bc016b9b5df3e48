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

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Stream, fingerprint, provider};

/// The exit code of every client refusing a server whose certificate is not
/// the one pinned for it.
pub const EXIT_KEY_CHANGED: u8 = 254;

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
            interactive,
        ))
    }
}

/// `$XDG_CONFIG_HOME/wharf/known_servers`, else
/// `~/.config/wharf/known_servers`.
pub fn default_known_servers() -> Option<PathBuf> {
    Some(crate::cli::user_dir("XDG_CONFIG_HOME", ".config")?.join("known_servers"))
}

/// Why a connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No TCP connection.
    #[error("cannot connect to {addr}: {source}; is {service} running there?")]
    Connect {
        /// Where.
        addr: String,
        /// Which daemon was expected.
        service: String,
        /// Why.
        source: std::io::Error,
    },
    /// `--ca` names nothing usable.
    #[error("cannot use {path} as the CA: {reason}; give a PEM certificate with --ca or WHARF_CA")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate is not one `--ca` vouches for.
    #[error(
        "the server at {addr} presented a certificate that {ca} does not vouch for ({reason}); \
         check that --ca (or WHARF_CA) is your server's certificate, and that {addr} is your server"
    )]
    NotTrusted {
        /// Where.
        addr: String,
        /// The CA file.
        ca: String,
        /// What the verification said.
        reason: String,
    },
    /// First contact, and nobody could say yes.
    #[error(
        "the server at {addr} is not known: its certificate is not signed by a CA this machine trusts, and \
         no fingerprint is pinned for it. Its SHA-256 fingerprint is {fingerprint}. Compare it with what \
         the administrator gets from `admin-cli tls fingerprint`, then connect once with --accept-new (or run \
         in a terminal to be asked), or pass the server's certificate with --ca"
    )]
    UnknownServer {
        /// Where.
        addr: String,
        /// The certificate's fingerprint.
        fingerprint: String,
    },
    /// The user said no.
    #[error("not connecting to {addr}: its certificate was not accepted; nothing was sent")]
    Declined {
        /// Where.
        addr: String,
    },
    /// The certificate is not the pinned one.
    #[error(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @    WARNING: THE WHARF SERVER'S CERTIFICATE HAS CHANGED!  @\n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
         Someone could be eavesdropping on you right now (a man-in-the-middle attack),\n\
         or the administrator has replaced the server's certificate.\n\
         The certificate of {addr} has SHA-256 fingerprint\n{presented}\n\
         but {file} line {line} pins\n{pinned}\n\
         Nothing was sent. If the administrator confirms the new fingerprint \
         (`admin-cli tls fingerprint`), delete line {line} of {file} and connect again."
    )]
    KeyChanged {
        /// Where.
        addr: String,
        /// The presented certificate's fingerprint.
        presented: String,
        /// The pinned fingerprint.
        pinned: String,
        /// The known-servers file.
        file: String,
        /// Its line.
        line: usize,
    },
    /// The server does not speak TLS.
    #[error(
        "the server at {addr} did not answer in TLS; if it runs with --no-tls, connect with --no-tls \
         too (only on a network you trust)"
    )]
    NotTls {
        /// Where.
        addr: String,
    },
    /// The handshake failed otherwise.
    #[error(
        "TLS with {addr} failed: {reason}; check that {addr} is a Wharf server and that \
         both ends run the same Wharf version"
    )]
    Handshake {
        /// Where.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The known-servers file could not be read or written.
    #[error("cannot {action} {}: {source}; check the file and its folder", path.display())]
    KnownServers {
        /// "read", "add to".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `HOST:PORT` expected.
    #[error("{addr:?} is not HOST:PORT; write it like localhost:2121 or [::1]:2121")]
    BadAddress {
        /// What was given.
        addr: String,
    },
}

impl TlsError {
    /// The exit code a client should end with for this error:
    /// [`EXIT_KEY_CHANGED`] for a changed certificate, else `None`.
    pub fn exit_code(&self) -> Option<u8> {
        matches!(self, TlsError::KeyChanged { .. }).then_some(EXIT_KEY_CHANGED)
    }
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
    ask: bool,
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
                ask: false,
                provider,
            })),
        })
    }

    /// Trusts what the system's roots vouch for, else the fingerprints
    /// pinned in `known_servers`; a new server is pinned when `accept_new`,
    /// or when the user says yes on the terminal if `ask`.
    pub fn pinning(known_servers: Option<PathBuf>, accept_new: bool, ask: bool) -> ClientTls {
        ClientTls {
            trust: Some(Arc::new(Trust {
                ca: None,
                system: OnceLock::new(),
                known: known_servers,
                accept_new,
                ask,
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
        eprintln!(
            "Note: {addr} presents the certificate already trusted for {other}; added to the known servers ({}).",
            file.display()
        );
        return Ok(());
    }
    let yes = if trust.accept_new {
        true
    } else if trust.ask {
        let question = format!(
            "The authenticity of the Wharf server {addr} can't be established.\n\
             Its certificate's SHA-256 fingerprint is\n{fp}\n\
             Compare it with what the administrator gets from `admin-cli tls fingerprint`.\n\
             Are you sure you want to continue connecting (yes/no)? "
        );
        tokio::task::spawn_blocking(move || {
            eprint!("{question}");
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer).map(|_| answer)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|a| matches!(a.trim().to_ascii_lowercase().as_str(), "yes" | "y"))
    } else {
        return Err(unknown());
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
    eprintln!(
        "Warning: permanently added the Wharf server {addr} to the known servers ({}).",
        file.display()
    );
    Ok(())
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

/// How `addr` is written in the known-servers file.
fn pin_key(addr: &str) -> String {
    addr.trim().to_ascii_lowercase()
}

/// The known-servers file's text; a missing file is empty.
fn read_pins(file: &Path) -> Result<String, TlsError> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(TlsError::KnownServers {
            action: "read",
            path: file.to_path_buf(),
            source,
        }),
    }
}

/// The pinned fingerprint of `key` and its line, if any.
fn find_pin(file: &Path, key: &str) -> Result<Option<(String, usize)>, TlsError> {
    let text = read_pins(file)?;
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if let (Some(k), Some(fp)) = (words.next(), words.next())
            && !k.starts_with('#')
            && k == key
        {
            return Ok(Some((fp.to_ascii_uppercase(), i + 1)));
        }
    }
    Ok(None)
}

/// Another `HOST:PORT` of the same host as `addr` that `fp` is pinned for,
/// if any.
fn same_certificate_pinned(file: &Path, addr: &str, fp: &str) -> Result<Option<String>, TlsError> {
    let key = pin_key(addr);
    let Ok(host) = host_of(&key) else {
        return Ok(None);
    };
    let text = read_pins(file)?;
    Ok(text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let (k, pinned) = (words.next()?, words.next()?);
        let same = !k.starts_with('#')
            && k != key
            && host_of(k).is_ok_and(|h| h == host)
            && pinned.eq_ignore_ascii_case(fp);
        same.then(|| k.to_owned())
    }))
}

fn add_pin(file: &Path, key: &str, fp: &str) -> Result<(), TlsError> {
    let failed = |source| TlsError::KnownServers {
        action: "add to",
        path: file.to_path_buf(),
        source,
    };
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .map_err(failed)?;
    writeln!(f, "{key} {fp}").map_err(failed)
}

#[derive(Debug)]
enum Verdict {
    Trusted,
    /// Nothing vouches for it and nothing is pinned: the connector decides
    /// before sending anything.
    Unknown(String),
    Changed {
        pinned: String,
        presented: String,
        line: usize,
    },
    Refused(String),
}

#[derive(Debug)]
struct Verifier {
    trust: Arc<Trust>,
    key: String,
    verdict: Mutex<Verdict>,
}

impl Verifier {
    fn lock(&self) -> std::sync::MutexGuard<'_, Verdict> {
        self.verdict.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, verdict: Verdict) {
        *self.lock() = verdict;
    }
}

impl Trust {
    fn system(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.system
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return None;
                }
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .ok()
            })
            .as_ref()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        if let Some(ca) = &self.trust.ca {
            if ca.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                return Ok(ServerCertVerified::assertion());
            }
            let checked = match &ca.verifier {
                Some(v) => {
                    v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                }
                None => Err(rustls::Error::General("not the --ca certificate".into())),
            };
            if let Err(e) = &checked {
                self.set(Verdict::Refused(e.to_string()));
            }
            return checked;
        }
        if let Some(system) = self.trust.system()
            && system
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .is_ok()
        {
            return Ok(ServerCertVerified::assertion());
        }
        let pinned = match &self.trust.known {
            Some(file) => {
                find_pin(file, &self.key).map_err(|e| rustls::Error::General(e.to_string()))?
            }
            None => None,
        };
        match pinned {
            Some((pinned, _)) if pinned == fp => Ok(ServerCertVerified::assertion()),
            Some((pinned, line)) => {
                self.set(Verdict::Changed {
                    pinned,
                    presented: fp,
                    line,
                });
                Err(rustls::Error::General(
                    "the server's certificate is not the pinned one".into(),
                ))
            }
            None => {
                self.set(Verdict::Unknown(fp));
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.trust.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.trust.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
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
