//! Standard FTP and FTPS (RFC 959, 2228, 3659) on Wharf's own users, homes,
//! jail and quotas, built on libunftp: Wharf supplies the authenticator
//! (the same argon2 logins, rights, locks and per-source penalties as the
//! native protocol) and the storage back end (every path resolved beneath
//! the home by the same [`Jail`](crate::paths::Jail), the same md5s and
//! usage tables).
//!
//! Connections come through the native services' accept loop
//! ([`wharf_server::listener::serve`]), with the same limits; libunftp (with a
//! cap on a control line's length, vendor/libunftp/WHARF.md) runs each
//! session, and speaks TLS itself after `AUTH TLS`.

mod auth;
mod stor;
mod storage;

use auth::SessionLogin;
pub use auth::{FtpUser, WharfAuthenticator, WharfUsers};
pub use stor::Durable;
pub use storage::{Meta, WharfStorage};

use std::fmt::Debug;
use std::path::PathBuf;

use wharf_core::tls::Stream as Connection;
use wharf_server::listener::Handler;
use wharf_server::listener::Listener;
use wharf_server::listener::LoginGate;
use wharf_server::listener::Rejection;
use wharf_store::Authenticator;
use wharf_store::Store;

/// Settings of the standard FTP listener.
#[derive(Debug, Clone)]
pub struct StdFtpConfig {
    /// Ports passive data connections are offered on.
    pub passive_ports: std::ops::RangeInclusive<u16>,
    /// The address announced for passive data connections, if not the one
    /// the client connected to.
    pub passive_host: Option<std::net::Ipv4Addr>,
    /// Connections at once, per source, and the idle timeout, as the
    /// native service has them.
    pub limits: wharf_server::listener::Limits,
    /// The service's certificate and key (PEM), for `AUTH TLS`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Refuse logins (and data) without TLS.
    pub require_tls: bool,
}

/// Serves standard FTP on `listener` until `shutdown`, with the native
/// service's accept loop and limits (connections at once and per source,
/// connections not logged in yet, the shutdown's grace period): each
/// connection is a libunftp session over Wharf's users and homes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    auth: Authenticator,
    store: Store,
    config: StdFtpConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let limits = config.limits.clone();
    let server = std::sync::Arc::new(StdFtpServer {
        users: std::sync::Arc::new(WharfUsers::new(auth.clone())),
        auth: std::sync::Arc::new(WharfAuthenticator::new(auth)),
        store,
        config,
        stop_now: tokio_util::sync::CancellationToken::new(),
    });
    // libunftp speaks TLS itself, after `AUTH TLS`: the accept loop hands it
    // the plain connection.
    wharf_server::listener::serve(Listener::new(listener, None), limits, server, shutdown).await;
}

/// What every standard FTP session shares.
struct StdFtpServer {
    auth: std::sync::Arc<WharfAuthenticator>,
    users: std::sync::Arc<WharfUsers>,
    store: Store,
    config: StdFtpConfig,
    /// Fires when a shutdown's grace period is over.
    stop_now: tokio_util::sync::CancellationToken,
}

impl StdFtpServer {
    /// A libunftp server for one connection, whose logins are told to
    /// `on_login`.
    fn session(
        &self,
        on_login: tokio::sync::oneshot::Sender<wharf_store::sessions::SessionLease>,
        peer: std::net::IpAddr,
    ) -> Result<libunftp::Server<WharfStorage, FtpUser>, libunftp::ServerError> {
        let storage = self.store.clone();
        let config = &self.config;
        let mut builder = libunftp::ServerBuilder::with_user_detail_provider(
            Box::new(move || WharfStorage::new(storage.clone())),
            self.users.clone(),
        )
        // Never libunftp's anonymous default: Wharf's logins only.
        .authenticator(std::sync::Arc::new(SessionLogin {
            auth: self.auth.clone(),
            on_login: std::sync::Mutex::new(Some(on_login)),
            peer,
        }))
        .greeting("Wharf file transfer (standard FTP)")
        .passive_ports(config.passive_ports.clone())
        .idle_session_timeout(config.limits.idle_timeout.as_secs().max(1));
        if let Some(host) = config.passive_host {
            builder = builder.passive_host(host);
        }
        if let Some((cert, key)) = &config.tls {
            // FTPS speaks TLS 1.2 with AEAD suites only (rustls has no
            // others), with forward secrecy, nothing older. Not 1.3: curl
            // ends a TLS 1.3 data connection without close_notify, which
            // must count as a cut upload (else anyone on the path could
            // truncate a file by closing the connection), so every curl
            // upload would fail.
            use libunftp::options::TlsFlags;
            builder = builder
                .ftps(cert.clone(), key.clone())
                .ftps_tls_flags(
                    TlsFlags::V1_2 | TlsFlags::RESUMPTION_SESS_ID | TlsFlags::RESUMPTION_TICKETS,
                )
                .ftps_required(config.require_tls, config.require_tls);
        }
        builder.build()
    }
}

impl Handler for StdFtpServer {
    fn service_name(&self) -> &'static str {
        "std-ftp"
    }

    async fn handle(
        self: std::sync::Arc<Self>,
        stream: Connection,
        peer: std::net::SocketAddr,
        shutdown: tokio_util::sync::CancellationToken,
        gate: LoginGate,
    ) {
        let Connection::Plain(tcp) = stream else {
            return;
        };
        // libunftp owns the connection and runs it in a task of its own;
        // this second handle on the socket is how the limits below end it.
        let hangup = match Hangup::of(&tcp) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "standard ftp: cannot serve a connection");
                return;
            }
        };
        let (on_login, logged_in) = tokio::sync::oneshot::channel();
        let server = match self.session(on_login, peer.ip()) {
            Ok(server) => server,
            Err(e) => {
                tracing::error!(%peer, error = %e, "standard ftp: cannot serve a connection (is the certificate readable?)");
                return;
            }
        };
        let session = server.service(tcp);
        tokio::pin!(session);
        let login_time = self.config.limits.login_timeout;
        // Until the login: within the login timeout, and not past a shutdown.
        let mut _lease = None;
        tokio::select! {
            _ = &mut session => return,
            _ = shutdown.cancelled() => {
                hangup.now();
            }
            login = tokio::time::timeout(login_time, logged_in) => match login {
                Ok(Ok(lease)) => {
                    _lease = Some(lease);
                    gate.passed();
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::info!(%peer, via = "standard ftp", "no login within {login_time:?}: connection closed");
                    hangup.now();
                }
            }
        }
        // Logged in: until the session ends, or the grace period after a
        // shutdown does.
        tokio::select! {
            _ = &mut session => {}
            _ = self.stop_now.cancelled() => {
                hangup.now();
                let _ = session.await;
            }
        }
    }

    fn abort(&self) {
        self.stop_now.cancel();
    }

    async fn reject(&self, stream: Connection, why: Rejection) {
        let reply = format!("421 {}.\r\n", why.message());
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::io::AsyncWriteExt::write_all(&mut { stream }, reply.as_bytes()),
        )
        .await;
    }
}

/// A second handle on a connection libunftp owns: [`Hangup::now`] (or
/// dropping it, as when the connection is dropped to make room for others)
/// shuts the socket down, which ends libunftp's session.
struct Hangup(std::net::TcpStream);

impl Hangup {
    fn of(tcp: &tokio::net::TcpStream) -> std::io::Result<Hangup> {
        use std::os::fd::AsFd;
        Ok(Hangup(std::net::TcpStream::from(
            tcp.as_fd().try_clone_to_owned()?,
        )))
    }

    fn now(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for Hangup {
    fn drop(&mut self) {
        self.now();
    }
}
