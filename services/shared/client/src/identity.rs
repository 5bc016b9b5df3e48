//! Logging in by key: the keys a client may use (a file given with
//! `--identity`, those ssh-agent holds, `~/.ssh/id_ed25519`), and the
//! signature that proves one (see PROTOCOL.md, "Login by key").
//!
//! The same keys as ssh's: an administrator gives a user a public key with
//! `admin-cli user key add`, and the user logs in to every service with
//! it, without a password.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, Signature, SshSig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_core::Password;

/// What a login proves itself with.
#[derive(Clone)]
pub enum Credential {
    /// A password.
    Password(Password),
    /// A key the user holds.
    Key(Arc<Identity>),
}

impl From<Password> for Credential {
    fn from(password: Password) -> Credential {
        Credential::Password(password)
    }
}

impl From<&Password> for Credential {
    fn from(password: &Password) -> Credential {
        Credential::Password(password.clone())
    }
}

impl From<&Credential> for Credential {
    fn from(credential: &Credential) -> Credential {
        credential.clone()
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Credential::Password(..)"),
            Credential::Key(k) => write!(f, "Credential::Key({})", k.source),
        }
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file cannot be read or is not an OpenSSH private key.
    #[error(
        "cannot use the key {path}: {why}; give an OpenSSH private key (ssh-keygen -t ed25519 makes one)"
    )]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An encrypted key and no way to ask for its passphrase.
    #[error(
        "the key {path} is protected by a passphrase and there is no terminal to ask it on; add the key to ssh-agent (ssh-add {path}) and set SSH_AUTH_SOCK"
    )]
    NoPassphrase {
        /// The file.
        path: PathBuf,
    },
    /// ssh-agent failed.
    #[error("ssh-agent at {socket}: {why}")]
    Agent {
        /// The agent's socket.
        socket: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The key cannot sign.
    #[error("the key {key} cannot sign: {why}")]
    Sign {
        /// Where the key is.
        key: String,
        /// What went wrong.
        why: String,
    },
}

/// How a key signs.
enum Signer {
    /// With the private key, read from a file.
    File(Box<PrivateKey>),
    /// Through ssh-agent, at this socket.
    Agent(PathBuf),
}

/// A key a client may log in with.
pub struct Identity {
    public: PublicKey,
    signer: Signer,
    /// Where it is, for messages: a file's path, or `ssh-agent`.
    source: String,
}

/// Largest message read from ssh-agent.
const MAX_AGENT_MESSAGE: usize = 256 * 1024;

impl Identity {
    /// The key in `path` (an OpenSSH private key). An encrypted one is
    /// decrypted with a passphrase asked on the terminal when `ask` is
    /// true; else it is an error.
    pub fn from_file(path: &Path, ask: bool) -> Result<Identity, IdentityError> {
        let file = |why: String| IdentityError::File {
            path: path.to_owned(),
            why,
        };
        let key = PrivateKey::read_openssh_file(path).map_err(|e| file(e.to_string()))?;
        let key = if key.is_encrypted() {
            if !ask {
                return Err(IdentityError::NoPassphrase {
                    path: path.to_owned(),
                });
            }
            let phrase =
                rpassword::prompt_password(format!("Passphrase for the key {}: ", path.display()))
                    .map_err(|_| IdentityError::NoPassphrase {
                        path: path.to_owned(),
                    })?;
            key.decrypt(phrase.as_bytes())
                .map_err(|_| file("wrong passphrase".into()))?
        } else {
            key
        };
        Ok(Identity {
            public: key.public_key().clone(),
            signer: Signer::File(Box::new(key)),
            source: path.display().to_string(),
        })
    }

    /// The public key, as an OpenSSH line.
    pub fn public_line(&self) -> String {
        let mut key = self.public.clone();
        key.set_comment("");
        key.to_openssh().unwrap_or_default()
    }

    /// Where the key is: a file's path, or `ssh-agent`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Signs `msg` in `namespace` (the `sshsig` format), armored.
    pub async fn sign(&self, namespace: &str, msg: &[u8]) -> Result<String, IdentityError> {
        let fail = |why: String| IdentityError::Sign {
            key: self.source.clone(),
            why,
        };
        let sig = match &self.signer {
            Signer::File(key) => key
                .sign(namespace, HashAlg::Sha512, msg)
                .map_err(|e| fail(e.to_string()))?,
            Signer::Agent(socket) => {
                let data = SshSig::signed_data(namespace, HashAlg::Sha512, msg)
                    .map_err(|e| fail(e.to_string()))?;
                let blob = self.public.to_bytes().map_err(|e| fail(e.to_string()))?;
                let signature = agent_sign(socket, &blob, &data, &self.public).await?;
                SshSig::new(
                    self.public.key_data().clone(),
                    namespace,
                    HashAlg::Sha512,
                    signature,
                )
                .map_err(|e| fail(e.to_string()))?
            }
        };
        sig.to_pem(LineEnding::LF).map_err(|e| fail(e.to_string()))
    }
}

/// The keys a login tries, in order: the file given (`--identity`), else
/// the keys ssh-agent holds (`SSH_AUTH_SOCK`), then `~/.ssh/id_ed25519`
/// when it needs no passphrase (or the agent holds it already). A file
/// given that cannot be used is an error; a default that cannot is passed
/// over.
pub async fn identities(given: Option<&Path>) -> Result<Vec<Arc<Identity>>, IdentityError> {
    let mut found: Vec<Identity> = Vec::new();
    let agent = std::env::var_os("SSH_AUTH_SOCK")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let from_agent = match &agent {
        Some(socket) => agent_identities(socket).await.unwrap_or_default(),
        None => Vec::new(),
    };
    if let Some(path) = given {
        // The agent signs for the file when it holds its key: no passphrase.
        let mut public = path.as_os_str().to_owned();
        public.push(".pub");
        let public = PublicKey::read_openssh_file(Path::new(&public)).ok();
        match from_agent.into_iter().find(|k| {
            public
                .as_ref()
                .is_some_and(|p| p.key_data() == k.public.key_data())
        }) {
            Some(held) => found.push(held),
            None => {
                let ask = std::io::IsTerminal::is_terminal(&std::io::stdin());
                found.push(Identity::from_file(path, ask)?);
            }
        }
        return Ok(found.into_iter().map(Arc::new).collect());
    }
    found.extend(from_agent);
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        let default = Path::new(&home).join(".ssh").join("id_ed25519");
        if default.exists()
            && let Ok(key) = Identity::from_file(&default, false)
            && !found
                .iter()
                .any(|k| k.public.key_data() == key.public.key_data())
        {
            found.push(key);
        }
    }
    Ok(found.into_iter().map(Arc::new).collect())
}

/// ssh-agent's messages (draft-miller-ssh-agent).
const AGENT_FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
/// Sign with rsa-sha2-512 (an RSA key's default would be SHA-1).
const RSA_SHA2_512: u32 = 4;

async fn agent_identities(socket: &Path) -> Result<Vec<Identity>, IdentityError> {
    let answer = agent_ask(socket, REQUEST_IDENTITIES, &[]).await?;
    let fail = |why: &str| IdentityError::Agent {
        socket: socket.to_owned(),
        why: why.to_owned(),
    };
    let mut r = Reader(&answer);
    if r.byte() != Some(IDENTITIES_ANSWER) {
        return Err(fail("no list of keys"));
    }
    let count = r.u32().ok_or_else(|| fail("a malformed list of keys"))?;
    let mut keys = Vec::new();
    for _ in 0..count.min(1024) {
        let (Some(blob), Some(_comment)) = (r.string(), r.string()) else {
            return Err(fail("a malformed list of keys"));
        };
        // Keys of kinds this client does not know (certificates, security
        // keys) are passed over.
        if let Ok(public) = PublicKey::from_bytes(blob) {
            keys.push(Identity {
                public,
                signer: Signer::Agent(socket.to_owned()),
                source: "ssh-agent".into(),
            });
        }
    }
    Ok(keys)
}

async fn agent_sign(
    socket: &Path,
    blob: &[u8],
    data: &[u8],
    public: &PublicKey,
) -> Result<Signature, IdentityError> {
    let fail = |why: String| IdentityError::Agent {
        socket: socket.to_owned(),
        why,
    };
    let flags = if public.key_data().rsa().is_some() {
        RSA_SHA2_512
    } else {
        0
    };
    let mut req = Vec::with_capacity(blob.len() + data.len() + 12);
    put_string(&mut req, blob);
    put_string(&mut req, data);
    req.extend_from_slice(&flags.to_be_bytes());
    let answer = agent_ask(socket, SIGN_REQUEST, &req).await?;
    let mut r = Reader(&answer);
    match r.byte() {
        Some(SIGN_RESPONSE) => {}
        Some(AGENT_FAILURE) => {
            return Err(fail(
                "it refused to sign (a key that asks for confirmation, declined?)".into(),
            ));
        }
        _ => return Err(fail("a malformed answer to a signing request".into())),
    }
    let sig = r
        .string()
        .ok_or_else(|| fail("a malformed signature".into()))?;
    Signature::try_from(sig).map_err(|e| fail(format!("an unusable signature ({e})")))
}

/// Sends one request to the agent and reads its answer (type byte first).
async fn agent_ask(socket: &Path, kind: u8, payload: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let fail = |why: String| IdentityError::Agent {
        socket: socket.to_owned(),
        why,
    };
    let talk = async {
        let mut conn = tokio::net::UnixStream::connect(socket).await?;
        let len = u32::try_from(payload.len() + 1).map_err(std::io::Error::other)?;
        let mut msg = Vec::with_capacity(payload.len() + 5);
        msg.extend_from_slice(&len.to_be_bytes());
        msg.push(kind);
        msg.extend_from_slice(payload);
        conn.write_all(&msg).await?;
        let len = conn.read_u32().await? as usize;
        if len == 0 || len > MAX_AGENT_MESSAGE {
            return Err(std::io::Error::other(format!("an answer of {len} bytes")));
        }
        let mut answer = vec![0; len];
        conn.read_exact(&mut answer).await?;
        Ok(answer)
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), talk)
        .await
        .map_err(|_| fail("no answer within 30 s".into()))?
        .map_err(|e: std::io::Error| fail(e.to_string()))
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// Reads SSH wire types off a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(s)
    }
}
