//! The opening every service shares, written once: `hello` (the protocol
//! version), then `login` (through the [`Authenticator`]: penalties, locks,
//! rights and the count of the user's sessions), with one policy and one
//! set of texts, as `CommonRequest`/`CommonReply` in the protocol describe
//! it.
//!
//! A session hands each request it reads before login to
//! [`Opening::step`] (as the [`CommonRequest`] it is, or `None` for any
//! other `op`) and does what the [`Step`] says: send a hello, send a
//! refusal (closing after it when the refusal says so), or, logged in, do
//! its own part (a jail, a place in the chat hub) and send [`login_ok`].
//! What comes after the login is each service's own.

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use wharf_proto::message::{CommonRequest, LoginOk, ServerHello};
use wharf_proto::{ErrorCode, PROTOCOL_VERSION};

use crate::listener::LoginGate;
use crate::refusal::Refusal;
use wharf_core::Service;
use wharf_store::sessions::SessionLease;
use wharf_store::standing::Standing;
use wharf_store::{Authenticator, User};

/// What to do with a request read before the login.
#[derive(Debug)]
pub enum Step {
    /// Send this `hello` and read on.
    Hello(ServerHello),
    /// Send the refusal (and close after it when it says so).
    Refuse(Refusal),
    /// The user is in: do the service's part, then send [`login_ok`].
    LoggedIn(Box<Entered>),
}

/// A user who just logged in, with what every service holds for them while
/// the session lasts.
#[derive(Debug)]
pub struct Entered {
    /// The user as the login found them.
    pub user: User,
    /// The session as the user's sessions are counted, and their rates.
    pub lease: SessionLease,
    /// The user's standing: a lock, a deletion, a revoked right or a
    /// moved home ends the session when it changes.
    pub standing: watch::Receiver<Standing>,
}

/// Where a connection is in the opening.
#[derive(Debug)]
enum Expect {
    Hello,
    Login,
}

/// The opening of one connection.
#[derive(Debug)]
pub struct Opening {
    expect: Expect,
    service: Service,
    /// The server's program, as `hello` names it (with the version).
    program: &'static str,
    failures: u32,
    max_attempts: u32,
    /// How long the client has to log in, and until when.
    login_timeout: Duration,
    deadline: Instant,
    /// The connection's place among those not logged in yet, passed when
    /// the login succeeds.
    gate: Option<LoginGate>,
}

impl Opening {
    /// The opening of a connection to `service`, served by `program` (its
    /// `hello` says `program/VERSION`), closed after `max_attempts` refused
    /// logins or when no login came within `login_timeout` from now.
    pub fn new(
        service: Service,
        program: &'static str,
        max_attempts: u32,
        login_timeout: Duration,
    ) -> Opening {
        Opening {
            expect: Expect::Hello,
            service,
            program,
            failures: 0,
            max_attempts,
            login_timeout,
            deadline: Instant::now() + login_timeout,
            gate: None,
        }
    }

    /// The opening of a connection the listener admitted with `gate`: the
    /// login that succeeds passes it, so the connection is never ended to
    /// make room for others from then on.
    pub fn holding(mut self, gate: LoginGate) -> Opening {
        self.gate = Some(gate);
        self
    }

    /// How long the client has left to log in.
    pub fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The refusal of a client that did not log in in time.
    pub fn timed_out(&self) -> Refusal {
        Refusal::closing(
            ErrorCode::Timeout,
            format!(
                "no login within {}; closing the connection",
                humantime::format_duration(self.login_timeout)
            ),
        )
    }

    /// The next request before the login: the [`CommonRequest`] it is, or
    /// `None` for any other `op`.
    pub async fn step(
        &mut self,
        request: Option<CommonRequest>,
        auth: &Authenticator,
        peer: IpAddr,
    ) -> Step {
        match (&self.expect, request) {
            (Expect::Hello, Some(CommonRequest::Hello(hello))) => {
                if hello.version != PROTOCOL_VERSION {
                    return Step::Refuse(Refusal::closing(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "this server speaks protocol version {PROTOCOL_VERSION}, not {}; use a matching client",
                            hello.version
                        ),
                    ));
                }
                self.expect = Expect::Login;
                Step::Hello(ServerHello {
                    version: PROTOCOL_VERSION,
                    server: format!("{}/{}", self.program, env!("CARGO_PKG_VERSION")),
                    service: self.service.to_string(),
                })
            }
            (Expect::Hello, _) => Step::Refuse(Refusal::new(
                ErrorCode::NotLoggedIn,
                "start with hello, then login",
            )),
            (Expect::Login, Some(CommonRequest::Hello(_))) => Step::Refuse(Refusal::new(
                ErrorCode::BadRequest,
                "hello was already said; now login",
            )),
            (Expect::Login, None) => Step::Refuse(Refusal::not_logged_in()),
            (Expect::Login, Some(CommonRequest::Login(login))) => {
                match auth
                    .authenticate(&login.user, &login.password, self.service, peer)
                    .await
                {
                    Ok((user, lease)) => {
                        if let Some(gate) = self.gate.take() {
                            gate.passed();
                        }
                        let standing = auth.standings().watch(&user);
                        Step::LoggedIn(Box::new(Entered {
                            user,
                            lease,
                            standing,
                        }))
                    }
                    Err(e) => {
                        self.failures += 1;
                        tracing::info!(%peer, user = %login.user, error = %e, "login refused");
                        Step::Refuse(Refusal {
                            code: e.code(),
                            message: e.client_message(),
                            close: self.failures >= self.max_attempts,
                        })
                    }
                }
            }
        }
    }
}

/// The reply that tells a client it is in.
pub fn login_ok(user: &User) -> LoginOk {
    LoginOk {
        user: user.name.clone(),
    }
}
