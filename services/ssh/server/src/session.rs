//! One SSH connection as russh sees it: the login (a password or a key,
//! through the one authenticator), and its channels: `session` channels
//! only, for the `sftp` subsystem. Forwarding, agents and X11 are refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::sync::{oneshot, watch};
use wharf_core::{Password, Service};
use wharf_server::listener::LoginGate;
use wharf_store::standing::Standing;
use wharf_store::{Proof, User};

use crate::server::SshServer;

/// Session channels one connection may hold open at once.
const MAX_CHANNELS: usize = 10;

/// What the connection's outer loop needs once the user is in.
pub(crate) struct Entered {
    /// The user's standing: a lock, a deletion or a revoked right ends the
    /// connection.
    pub(crate) standing: watch::Receiver<Standing>,
    /// The home as it was at the login: a move ends the connection.
    pub(crate) home: PathBuf,
    /// The right the session stands on: ftp when the user has it (SFTP),
    /// else exec.
    pub(crate) service: Service,
}

/// The user of a connection, once logged in.
struct LoggedIn {
    user: User,
    /// The session as the user's sessions are counted.
    _lease: wharf_store::sessions::SessionLease,
}

/// One connection.
pub(crate) struct Connection {
    server: Arc<SshServer>,
    peer: SocketAddr,
    gate: Option<LoginGate>,
    told: Option<oneshot::Sender<Entered>>,
    user: Option<LoggedIn>,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Connection {
    pub(crate) fn new(
        server: Arc<SshServer>,
        peer: SocketAddr,
        gate: LoginGate,
        told: oneshot::Sender<Entered>,
    ) -> Connection {
        Connection {
            server,
            peer,
            gate: Some(gate),
            told: Some(told),
            user: None,
            channels: HashMap::new(),
        }
    }

    fn methods(&self) -> MethodSet {
        let mut methods = MethodSet::empty();
        methods.push(MethodKind::PublicKey);
        if self.server.config.password_login {
            methods.push(MethodKind::Password);
        }
        methods
    }

    fn reject(&self) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(self.methods()),
            partial_success: false,
        }
    }

    /// Logs `name` in with `proof`: SFTP needs the ftp right, commands the
    /// exec right; one of them lets the user in.
    async fn log_in(&mut self, name: &str, proof: Proof<'_>, how: &str) -> Auth {
        let peer = self.peer.ip();
        let result = self
            .server
            .auth
            .authenticate_with(name, proof, "ssh", &[Service::Ftp, Service::Exec], peer)
            .await;
        match result {
            Ok((user, lease)) => {
                tracing::info!(%peer, user = %user.name, how, via = "ssh", "logged in");
                if let Some(gate) = self.gate.take() {
                    gate.passed();
                }
                if let Some(told) = self.told.take() {
                    let service = if user.services.contains(Service::Ftp) {
                        Service::Ftp
                    } else {
                        Service::Exec
                    };
                    let _ = told.send(Entered {
                        standing: self.server.auth.standings().watch(&user),
                        home: user.home.clone(),
                        service,
                    });
                }
                self.user = Some(LoggedIn {
                    user,
                    _lease: lease,
                });
                Auth::Accept
            }
            Err(e) => {
                // The reason goes to the log only: ssh shows its own words.
                tracing::info!(%peer, user = %name, how, via = "ssh", error = %e, "login refused");
                self.reject()
            }
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(self.reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if !self.server.config.password_login {
            tracing::info!(peer = %self.peer.ip(), %user, via = "ssh", "password login refused: this server takes keys only");
            return Ok(self.reject());
        }
        let password = Password::new(password);
        Ok(self
            .log_in(user, Proof::Password(&password), "password")
            .await)
    }

    /// Every offered key may try: whether the user has it is told only
    /// once the client proved it holds the key, so offers reveal nothing.
    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fingerprint = wharf_store::keys::fingerprint(key.public_key);
        Ok(self
            .log_in(
                user,
                Proof::Key {
                    fingerprint: &fingerprint,
                },
                "key",
            )
            .await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.user.is_none() {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
        } else if self.channels.len() >= MAX_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
        } else {
            self.channels.insert(channel.id(), channel);
            reply.accept().await;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(user) = self.user.as_ref() else {
            return session.channel_failure(channel);
        };
        if name != "sftp" {
            tracing::info!(peer = %self.peer.ip(), user = %user.user.name, subsystem = %name, via = "ssh", "unknown subsystem refused");
            return session.channel_failure(channel);
        }
        if !user.user.services.contains(Service::Ftp) {
            tracing::info!(peer = %self.peer.ip(), user = %user.user.name, via = "ssh", "sftp refused: the user has no ftp right");
            return session.channel_failure(channel);
        }
        let Some(chan) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        let files = match crate::sftp::Files::open(&self.server, &user.user).await {
            Ok(files) => files,
            Err(why) => {
                tracing::error!(user = %user.user.name, error = %why, via = "ssh", "cannot prepare the home for sftp");
                return session.channel_failure(channel);
            }
        };
        session.channel_success(channel)?;
        let notes = chan.make_writer_ext(Some(1));
        let handle = session.handle();
        tokio::spawn(async move {
            crate::sftp::serve(chan.into_stream(), notes, files).await;
            // The subsystem ended as a program does: with its status (scp
            // takes a missing one for a failure).
            let _ = handle.exit_status_request(channel, 0).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.no_commands(channel, session)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.no_commands(channel, session)
    }
}

impl Connection {
    /// Commands over SSH are not served yet: the request is refused, and
    /// the client is told so on its standard error before the channel
    /// closes.
    fn no_commands(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        tracing::info!(peer = %self.peer.ip(), via = "ssh", "command refused: this server serves sftp only");
        session.channel_failure(channel)?;
        session.extended_data(
            channel,
            1,
            &b"wharf: this server serves sftp (and scp) only; run commands with wharf-exec\r\n"[..],
        )?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }
}
