//! The SSH server: its configuration (russh's, with modern algorithms
//! only), and one connection's life around russh: the login deadline, the
//! administrator's word, the shutdown.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};
use russh::{MethodKind, MethodSet, Preferred, cipher, kex};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use wharf_core::Service;
use wharf_execd::server::Exec;
use wharf_ftpd::server::stdftp::{WharfStorage, WharfUsers};
use wharf_server::listener::{Handler, Limits, Listener, LoginGate, Rejection};
use wharf_store::Authenticator;
use wharf_store::standing;

use crate::session::{Connection, Entered};

/// What `wharf-sshd` and `wharfd --ssh-listen` are configured with.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// Connections, per address, not logged in yet, the login deadline.
    pub limits: Limits,
    /// The host key.
    pub host_key: PrivateKey,
    /// Whether a password may log in (keys always may).
    pub password_login: bool,
    /// Logins a connection may try before it is closed.
    pub max_auth_tries: u32,
}

/// The SSH flags of `wharf-sshd` and `wharfd`.
#[derive(Debug, Clone, clap::Args)]
pub struct SshArgs {
    /// The host key (an OpenSSH private key file, no passphrase)
    /// [default: an Ed25519 key made on first start in DATA_DIR/ssh/].
    #[arg(long, env = "WHARF_SSH_HOST_KEY", value_name = "FILE")]
    pub ssh_host_key: Option<std::path::PathBuf>,
    /// Whether a password may log in over SSH (keys always may: `admin-cli
    /// user key add`).
    #[arg(long, default_value = "yes", value_parser = parse_yes_no, value_name = "yes|no")]
    pub ssh_password_login: bool,
    /// Logins one connection may try (keys offered count) before it is
    /// closed.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub ssh_max_auth_tries: u32,
}

fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Ok(true),
        "no" | "false" | "off" => Ok(false),
        _ => Err(format!("{s:?} is neither yes nor no")),
    }
}

impl SshArgs {
    /// The configuration these flags ask for, with the host key read (or
    /// made in `data_dir`).
    pub fn config(
        &self,
        limits: Limits,
        data_dir: &std::path::Path,
    ) -> Result<SshConfig, crate::host_key::HostKeyError> {
        Ok(SshConfig {
            limits,
            host_key: crate::host_key::load(data_dir, self.ssh_host_key.as_deref())?,
            password_login: self.ssh_password_login,
            max_auth_tries: self.ssh_max_auth_tries.max(1),
        })
    }
}

/// The SSH door of one process.
pub struct SshServer {
    pub(crate) auth: Authenticator,
    pub(crate) config: SshConfig,
    pub(crate) russh: Arc<russh::server::Config>,
    pub(crate) users: WharfUsers,
    pub(crate) storage: WharfStorage,
    /// Remote exec, for commands and shells; `None`: sftp and scp only.
    pub(crate) exec: Option<Exec>,
}

/// Key exchanges: curve25519 (and its hybrid with ML-KEM), with the
/// extension negotiation and OpenSSH's strict key exchange.
const KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

/// Ciphers: AEAD only.
const CIPHERS: &[cipher::Name] = &[
    cipher::AES_128_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
];

/// Host and user key algorithms: Ed25519, ECDSA, RSA signing with SHA-2.
const KEYS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
];

impl SshServer {
    /// The door, logging in through `auth`; commands and shells run
    /// through `exec`, or are refused when it is `None`.
    pub fn new(auth: Authenticator, config: SshConfig, exec: Option<Exec>) -> SshServer {
        let mut methods = MethodSet::empty();
        methods.push(MethodKind::PublicKey);
        if config.password_login {
            methods.push(MethodKind::Password);
        }
        let preferred = Preferred {
            kex: Cow::Borrowed(KEX),
            key: Cow::Borrowed(KEYS),
            cipher: Cow::Borrowed(CIPHERS),
            ..Preferred::DEFAULT
        };
        let russh = russh::server::Config {
            server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-Wharf")),
            methods,
            // Every refusal takes as long, so it tells nothing of why.
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![config.host_key.clone()],
            preferred,
            max_auth_attempts: config.max_auth_tries as usize,
            inactivity_timeout: Some(config.limits.idle_timeout),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            // Room for a pipelined SFTP transfer in flight.
            window_size: 8 << 20,
            maximum_packet_size: 65_536,
            ..Default::default()
        };
        SshServer {
            users: WharfUsers::new(auth.clone()),
            storage: WharfStorage::new(auth.store().clone()),
            auth,
            config,
            russh: Arc::new(russh),
            exec,
        }
    }
}

/// Serves SSH on `listener` until `shutdown`.
pub async fn run(listener: Listener, server: Arc<SshServer>, shutdown: CancellationToken) {
    let limits = server.config.limits.clone();
    wharf_server::listener::serve(listener, limits, server, shutdown).await;
}

impl Handler for SshServer {
    async fn handle(
        self: Arc<Self>,
        stream: wharf_core::tls::Stream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        gate: LoginGate,
    ) {
        let login_timeout = self.config.limits.login_timeout;
        let (told, entered) = oneshot::channel::<Entered>();
        let connection = Connection::new(Arc::clone(&self), peer, gate, told, shutdown.clone());
        let start = russh::server::run_stream(Arc::clone(&self.russh), stream, connection);
        let running = match tokio::time::timeout(login_timeout, start).await {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "ssh: no session");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "ssh: no SSH greeting within the login time");
                return;
            }
        };
        let handle = running.handle();
        tokio::pin!(running);
        let deadline = tokio::time::sleep(login_timeout);
        tokio::pin!(deadline);
        let mut entered = Some(entered);
        let mut watch = None;
        let mut home = None;
        let mut service = Service::Ftp;
        loop {
            tokio::select! {
                ended = &mut running => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "ssh: session ended");
                    }
                    return;
                }
                _ = shutdown.cancelled() => {
                    bye(&handle, "the server is shutting down; connect again later").await;
                    return;
                }
                _ = &mut deadline, if entered.is_some() => {
                    tracing::info!(%peer, "ssh: no login within the login time");
                    bye(&handle, "no login in time").await;
                    return;
                }
                got = async {
                    match entered.as_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                }, if entered.is_some() => {
                    entered = None;
                    match got {
                        Ok(e) => {
                            watch = Some(e.standing);
                            home = Some(e.home);
                            service = e.service;
                        }
                        Err(_) => return,
                    }
                }
                why = standing::ended(&mut watch, service, home.as_deref()) => {
                    tracing::info!(%peer, reason = %why, "ssh: session ended by the administrator's word");
                    bye(&handle, &why.client_message()).await;
                    return;
                }
            }
        }
    }

    fn service_name(&self) -> &'static str {
        "ssh"
    }

    /// SSH has no words before its greeting: a connection turned away is
    /// closed.
    async fn reject(&self, stream: wharf_core::tls::Stream, why: Rejection) {
        tracing::debug!(?why, "ssh: connection turned away");
        drop(stream);
    }
}

/// Ends the connection with `why`, as ssh shows it. A session whose loop
/// is stalled (a channel's queue full) is not waited for: the connection
/// is dropped after a moment either way.
async fn bye(handle: &russh::server::Handle, why: &str) {
    let said = handle.disconnect(
        russh::Disconnect::ByApplication,
        why.to_owned(),
        "en".to_owned(),
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), said).await;
}
