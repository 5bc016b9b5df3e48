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

use wharf_proto::message::{
    CommonRequest, KEY_LOGIN_NAMESPACE, KeyProof, LoginOk, MAX_KEY_PROOF_BYTES, ServerHello,
    key_login_message,
};
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
    /// The challenge a login by key signs (hex), fresh per connection.
    challenge: String,
    /// The TLS connection's channel binding, which a login by key signs
    /// too; `None` without TLS.
    binding: Option<[u8; 32]>,
    /// Keys offered that no user has, on this connection.
    unknown_keys: u32,
}

/// Keys a connection may offer that turn out to be no one's (they are not
/// counted as failed logins: a client tries the keys it holds in turn).
const MAX_UNKNOWN_KEYS: u32 = 10;

/// A fresh challenge: 32 random bytes, hex.
fn challenge() -> String {
    let mut bytes = [0u8; 32];
    // The system's generator does not fail on Linux; an all-zero challenge
    // would still bind the signature to this TLS connection.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
            challenge: challenge(),
            binding: None,
            unknown_keys: 0,
        }
    }

    /// The opening of a connection whose TLS channel binding is `binding`
    /// ([`wharf_core::tls::Stream::channel_binding`]): a login by key must
    /// have signed it.
    pub fn bound_to(mut self, binding: Option<[u8; 32]>) -> Opening {
        self.binding = binding;
        self
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
                    challenge: Some(self.challenge.clone()),
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
                // A key is checked against this connection first; then a
                // key and a password meet the same rules.
                let fingerprint = match &login.key {
                    None => None,
                    Some(proof) => match self.verify_key(&login.user, proof) {
                        Ok(fingerprint) => Some(fingerprint),
                        Err(refusal) => {
                            tracing::info!(%peer, user = %login.user, error = %refusal.message, how = "key", "login refused");
                            self.failures += 1;
                            return Step::Refuse(Refusal {
                                close: refusal.close || self.failures >= self.max_attempts,
                                ..refusal
                            });
                        }
                    },
                };
                let proof = match &fingerprint {
                    Some(fingerprint) => wharf_store::Proof::Key { fingerprint },
                    None => wharf_store::Proof::Password(&login.password),
                };
                let by_key = fingerprint.is_some();
                let service = self.service;
                let attempt = auth
                    .authenticate_with(&login.user, proof, service.as_str(), &[service], peer)
                    .await;
                match attempt {
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
                        // A key no one has is the client trying its keys
                        // in turn, not a guess: counted apart.
                        let unknown_key = by_key && matches!(e, wharf_store::Error::AuthFailed);
                        if unknown_key {
                            self.unknown_keys += 1;
                        } else {
                            self.failures += 1;
                        }
                        let how = if by_key { "key" } else { "password" };
                        tracing::info!(%peer, user = %login.user, error = %e, how, "login refused");
                        let message = if unknown_key {
                            format!(
                                "this key does not log {} in; an administrator adds keys with `admin-cli user key add`",
                                login.user
                            )
                        } else {
                            e.client_message()
                        };
                        Step::Refuse(Refusal {
                            code: e.code(),
                            message,
                            close: self.failures >= self.max_attempts
                                || self.unknown_keys >= MAX_UNKNOWN_KEYS,
                        })
                    }
                }
            }
        }
    }
}

impl Opening {
    /// Checks a login by key's proof: a well-formed key that signed this
    /// connection's login message. Returns the key's fingerprint.
    fn verify_key(&self, user: &str, proof: &KeyProof) -> Result<String, Refusal> {
        if proof.public_key.len() > MAX_KEY_PROOF_BYTES
            || proof.signature.len() > MAX_KEY_PROOF_BYTES
        {
            return Err(Refusal::closing(
                ErrorCode::MessageTooLarge,
                format!("a key or signature is at most {MAX_KEY_PROOF_BYTES} bytes"),
            ));
        }
        let message = key_login_message(
            self.service.as_str(),
            user,
            &self.challenge,
            self.binding.as_ref().map(|b| &b[..]),
        );
        wharf_store::keys::verify_signed(
            &proof.public_key,
            &proof.signature,
            KEY_LOGIN_NAMESPACE,
            &message,
        )
        .map_err(|e| {
            Refusal::new(
                ErrorCode::AuthFailed,
                format!("the login by key was refused: {e}; sign this connection's challenge (a Wharf client does)"),
            )
        })
    }
}

/// The reply that tells a client it is in.
pub fn login_ok(user: &User) -> LoginOk {
    LoginOk {
        user: user.name.clone(),
    }
}
