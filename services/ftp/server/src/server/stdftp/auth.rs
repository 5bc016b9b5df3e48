//! Wharf's logins and users as libunftp asks for them: the same
//! authenticator as the native protocol.

use std::fmt::{Debug, Display};

use async_trait::async_trait;
use unftp_core::auth::{
    AuthenticationError, Authenticator as FtpAuthenticator, Credentials, Principal, UserDetail,
    UserDetailError, UserDetailProvider,
};
use wharf_core::Password;
use wharf_core::Service;
use wharf_store::Authenticator;
use wharf_store::Store;
use wharf_store::User;
use wharf_store::owner::Owner;

use crate::paths::Jail;

/// A user logged in over standard FTP.
#[derive(Debug, Clone)]
pub struct FtpUser {
    pub(super) user: User,
    pub(super) jail: Jail,
    /// The user's transfer rates, shared with their other sessions.
    pub(super) rates: wharf_store::sessions::Rates,
    /// The door the user came in by, as the log names it.
    pub(super) door: &'static str,
}

impl FtpUser {
    /// The same user come in by another door (`sftp`), for the log.
    pub fn through(mut self, door: &'static str) -> FtpUser {
        self.door = door;
        self
    }
}

impl Display for FtpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.user.name)
    }
}

/// No home of libunftp's: Wharf's jail confines every path.
impl UserDetail for FtpUser {}

/// Wharf's logins for libunftp.
#[derive(Debug)]
pub struct WharfAuthenticator {
    pub(super) auth: Authenticator,
}

impl WharfAuthenticator {
    /// Logins checked by `auth`, as the native service checks them.
    pub fn new(auth: Authenticator) -> Self {
        WharfAuthenticator { auth }
    }
}

#[async_trait]
impl FtpAuthenticator for WharfAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        self.login(username, creds).await.map(|(who, _)| who)
    }
}

impl WharfAuthenticator {
    /// A login, and the session it opens (counted while held).
    async fn login(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<(Principal, wharf_store::sessions::SessionLease), AuthenticationError> {
        let password = Password::new(creds.password.clone().unwrap_or_default());
        let peer = creds.source_ip;
        match self
            .auth
            .authenticate(username, &password, Service::Ftp, peer)
            .await
        {
            Ok((user, lease)) => {
                tracing::info!(%peer, user = %user.name, via = "standard ftp", "logged in");
                Ok((
                    Principal {
                        username: user.name,
                    },
                    lease,
                ))
            }
            Err(e) => {
                tracing::info!(%peer, user = %username, via = "standard ftp", error = %e, "login refused");
                // The native protocol's words, which the vendored libunftp
                // sends after 530 (vendor/libunftp/WHARF.md).
                Err(AuthenticationError::new(e.client_message()))
            }
        }
    }
}

/// Turns a logged-in name into the user and their jail.
#[derive(Debug)]
pub struct WharfUsers {
    pub(super) store: Store,
    pub(super) auth: Authenticator,
}

impl WharfUsers {
    /// Users read from `auth`'s database, with their rates.
    pub fn new(auth: Authenticator) -> Self {
        WharfUsers {
            store: auth.store().clone(),
            auth,
        }
    }
}

#[async_trait]
impl UserDetailProvider for WharfUsers {
    type User = FtpUser;

    async fn provide_user_detail(&self, principal: &Principal) -> Result<FtpUser, UserDetailError> {
        let user = match self.store.user(&principal.username).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                return Err(UserDetailError::UserNotFound {
                    username: principal.username.clone(),
                });
            }
            Err(e) => return Err(UserDetailError::Generic(e.client_message())),
        };
        let home = user.home.clone();
        let owner = Owner::for_files(user.id);
        let jail = tokio::task::spawn_blocking(move || Jail::for_user(&home, owner))
            .await
            .map_err(|e| UserDetailError::Generic(format!("internal error: {e}")))?
            .map_err(|e| {
                tracing::error!(user = %user.name, error = %e, "cannot prepare a home");
                UserDetailError::Generic("your home directory cannot be prepared".into())
            })?;
        let rates = self.auth.sessions().rates(&user);
        Ok(FtpUser {
            user,
            jail,
            rates,
            door: "standard ftp",
        })
    }
}

/// One connection's view of Wharf's logins: tells the connection's handler
/// when a login succeeds (for the login timeout and the budget of
/// connections not logged in yet).
#[derive(Debug)]
pub(super) struct SessionLogin {
    pub(super) auth: std::sync::Arc<WharfAuthenticator>,
    /// Told of the login, with the session it opened (held by the
    /// connection while it lasts).
    pub(super) on_login:
        std::sync::Mutex<Option<tokio::sync::oneshot::Sender<wharf_store::sessions::SessionLease>>>,
    /// The client's address as the accept loop knows it: behind a load
    /// balancer, the one its PROXY header named (libunftp sees the
    /// balancer's).
    pub(super) peer: std::net::IpAddr,
}

#[async_trait]
impl FtpAuthenticator for SessionLogin {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let creds = Credentials {
            password: creds.password.clone(),
            certificate_chain: creds.certificate_chain.clone(),
            source_ip: self.peer,
            command_channel_security: creds.command_channel_security,
        };
        let (principal, lease) = self.auth.login(username, &creds).await?;
        let told = self
            .on_login
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tell) = told {
            let _ = tell.send(lease);
        }
        Ok(principal)
    }
}
