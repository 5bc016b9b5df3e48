//! One SSH connection as russh sees it: the login (a password or a key,
//! through the one authenticator), and its channels: `session` channels
//! only, for the `sftp` subsystem (the ftp right) or a command or shell
//! (the exec right, run by remote exec: [`crate::commands`]). Forwarding,
//! agents and X11 are refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use wharf_core::{Password, Service};
use wharf_proto::exec::Tty;
use wharf_server::listener::LoginGate;
use wharf_store::standing::Standing;
use wharf_store::{Proof, User};

use crate::commands;
use crate::server::SshServer;

/// Session channels one connection may hold open at once.
const MAX_CHANNELS: usize = 10;

/// Requests and data a channel may send before its program (sftp, a
/// command) starts. Each waits in the channel's queue until then, and a
/// full queue (russh's `channel_buffer_size`, 100) would stall the whole
/// connection: past this, the channel is closed.
const MAX_EARLY: usize = 32;

/// A session channel whose program has not started yet.
struct Pending {
    channel: Channel<Msg>,
    /// The terminal `pty-req` asked for.
    tty: Option<Tty>,
    /// Requests and data so far.
    early: usize,
}

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
    channels: HashMap<ChannelId, Pending>,
    shutdown: CancellationToken,
}

impl Connection {
    pub(crate) fn new(
        server: Arc<SshServer>,
        peer: SocketAddr,
        gate: LoginGate,
        told: oneshot::Sender<Entered>,
        shutdown: CancellationToken,
    ) -> Connection {
        Connection {
            server,
            peer,
            gate: Some(gate),
            told: Some(told),
            user: None,
            channels: HashMap::new(),
            shutdown,
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
            let pending = Pending {
                channel,
                tty: None,
                early: 0,
            };
            self.channels.insert(pending.channel.id(), pending);
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
        let Some(Pending { channel: chan, .. }) = self.channels.remove(&channel) else {
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
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match std::str::from_utf8(data) {
            Ok(command) => self.command(channel, Some(command.to_owned()), session),
            Err(_) => {
                let why = "the command is not UTF-8 text, and commands run as text by sh -c; send it in UTF-8";
                self.refuse_command(channel, why, session)
            }
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.command(channel, None, session)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.early(channel, session)? {
            return Ok(());
        }
        let tty = commands::tty(term, col_width, row_height);
        match (self.channels.get_mut(&channel), tty) {
            (Some(pending), Some(tty)) => {
                pending.tty = Some(tty);
                session.channel_success(channel)
            }
            (_, None) => {
                tracing::info!(peer = %self.peer.ip(), %term, via = "ssh", "terminal refused: TERM must be letters, digits or . _ + -");
                session.channel_failure(channel)
            }
            (None, _) => session.channel_failure(channel),
        }
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.early(channel, session)? {
            return Ok(());
        }
        // Commands get a scrubbed environment, as the native service's do.
        tracing::debug!(peer = %self.peer.ip(), variable = %variable_name, via = "ssh", "environment request refused");
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.early(channel, session)? {
            return Ok(());
        }
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.early(channel, session)?;
        Ok(false)
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.early(channel, session)?;
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        _code: u32,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.early(channel, session)?;
        Ok(())
    }
}

impl Connection {
    /// Counts a request or data on a channel whose program has not started;
    /// past [`MAX_EARLY`], closes the channel (true: it is gone).
    fn early(&mut self, channel: ChannelId, session: &mut Session) -> Result<bool, russh::Error> {
        let Some(pending) = self.channels.get_mut(&channel) else {
            return Ok(false);
        };
        pending.early += 1;
        if pending.early <= MAX_EARLY {
            return Ok(false);
        }
        tracing::info!(peer = %self.peer.ip(), via = "ssh", "channel closed: {MAX_EARLY} requests or data before its program started");
        self.channels.remove(&channel);
        session.close(channel)?;
        Ok(true)
    }

    /// Starts a command (`None`: a shell) on `channel`, through remote
    /// exec, when the user has the exec right and this server runs
    /// commands.
    fn command(
        &mut self,
        channel: ChannelId,
        command: Option<String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(user) = self.user.as_ref() else {
            return session.channel_failure(channel);
        };
        let name = user.user.name.clone();
        let Some(exec) = self.server.exec.clone() else {
            tracing::info!(peer = %self.peer.ip(), user = %name, via = "ssh", "command refused: this server does not run commands");
            let why = "this server does not run commands (remote exec is off); sftp and scp work";
            return self.refuse_command(channel, why, session);
        };
        if !user.user.services.contains(Service::Exec) {
            tracing::info!(peer = %self.peer.ip(), user = %name, via = "ssh", "command refused: the user has no exec right");
            let why = format!(
                "{name} may not run commands (no exec right); sftp and scp work; ask an administrator for the exec right"
            );
            return self.refuse_command(channel, &why, session);
        }
        let Some(pending) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        session.channel_success(channel)?;
        tracing::info!(peer = %self.peer.ip(), user = %name, shell = command.is_none(), tty = pending.tty.is_some(), via = "ssh", "command");
        let run = commands::Command {
            exec,
            channel: pending.channel,
            handle: session.handle(),
            standing: self.server.auth.standings().watch(&user.user),
            user: user.user.clone(),
            peer: self.peer,
            shutdown: self.shutdown.clone(),
            command,
            tty: pending.tty,
        };
        tokio::spawn(run.run());
        Ok(())
    }

    /// Refuses a command or shell: the request is taken (a failed one makes
    /// ssh say only "exec request failed"), then the reason goes to the
    /// client's standard error, with status 1, and the channel closes.
    fn refuse_command(
        &mut self,
        channel: ChannelId,
        why: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if self.channels.remove(&channel).is_none() {
            return session.channel_failure(channel);
        }
        session.channel_success(channel)?;
        session.extended_data(channel, 1, format!("wharf: {why}\r\n").into_bytes())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }
}
