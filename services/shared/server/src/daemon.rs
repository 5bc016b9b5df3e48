//! What every daemon does to start and to stop, written once: open the
//! database and an authenticator over it, load (or make) the certificate,
//! bind with one message for a port in use, and at the end let its users'
//! sessions go and close the database. The daemons' mains add only what is
//! their own.

use tokio::net::TcpListener;

use crate::cli::{DatabaseArgs, LimitArgs};
use crate::tls::{ServerTls, ServerTlsArgs};
use wharf_core::config::shown_database_url;
use wharf_store::{Authenticator, Store};

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("cannot open the database {database}")]
    Database {
        /// The database as shown (no password).
        database: String,
        /// Why.
        #[source]
        source: wharf_store::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}{what}; is the port in use? {fix}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// What would listen there, as " for chat" or " (TCP and UDP)";
        /// empty for a daemon of one service.
        what: String,
        /// What to do, as "pick another with --listen".
        fix: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate could not be loaded or made.
    #[error(transparent)]
    Tls(crate::tls::CertError),
}

/// A daemon's database, authenticator and certificate.
pub struct Daemon {
    /// The database.
    pub store: Store,
    /// Logins, over the database.
    pub auth: Authenticator,
    /// `None` under `--no-tls`.
    pub tls: Option<ServerTls>,
    /// The database as shown: no password.
    pub database: String,
}

impl Daemon {
    /// Opens the database (migrating it) with the login policy of `limits`
    /// and loads the certificate (making one in the data folder on first
    /// start; `None` for a service with no TLS of its own: SSH encrypts by
    /// itself). A daemon of one service warns in its log when there are no
    /// users yet (`warn_no_users`); `wharfd` says so on its banner.
    pub async fn start(
        database: &DatabaseArgs,
        limits: &LimitArgs,
        tls: Option<&ServerTlsArgs>,
        warn_no_users: bool,
    ) -> Result<Daemon, StartError> {
        let shown = shown_database_url(&database.url());
        let policy = limits.login_policy();
        let opened = match warn_no_users {
            true => database.open(policy).await,
            false => database.open_quietly(policy).await,
        };
        let (store, auth) = opened.map_err(|source| StartError::Database {
            database: shown.clone(),
            source,
        })?;
        let tls = match tls {
            Some(tls) => tls.load(&database.data_dir).map_err(StartError::Tls)?,
            None => None,
        };
        Ok(Daemon {
            store,
            auth,
            tls,
            database: shown,
        })
    }

    /// Ends the sessions this process counts (at once: a restart finds its
    /// users' places free) and closes the database.
    pub async fn stop(self) {
        self.auth.sessions().end().await;
        self.store.close().await;
    }
}

/// Binds `addr` for TCP, or says it is in use and what to do (`what` and
/// `fix` as in [`StartError::Listen`]).
pub async fn bind(addr: &str, what: &str, fix: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| listen_error(addr, what, fix, source))
}

/// The error of a listener that could not be bound, for listeners bound
/// otherwise than by [`bind`] (chat's TCP and UDP on one port).
pub fn listen_error(addr: &str, what: &str, fix: &str, source: std::io::Error) -> StartError {
    StartError::Listen {
        addr: addr.to_owned(),
        what: what.to_owned(),
        fix: fix.to_owned(),
        source,
    }
}
