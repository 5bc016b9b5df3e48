//! The client library behind `wharf-exec`, usable on its own.
//!
//! [`ExecClient::connect`] logs in; [`ExecClient::run`] runs one command,
//! streaming its input from any reader and its output to two writers, and
//! returns how it ended; [`ExecClient::output`] collects the output in
//! memory. One connection runs any number of commands, one at a time.

use std::time::Duration;
use wharf_client::Credential;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use wharf_client::session::Session;
use wharf_client::session::open_session;
use wharf_client::tls::ClientTls;
use wharf_client::tls::TlsError;
use wharf_proto::exec::{ExecReply, ExecRequest, MAX_STDIN_CHUNK, SignalName, Tty, WindowSize};
use wharf_proto::message::{ChangePassword, ErrorReply};
use wharf_proto::{ErrorCode, Frame, Outbound, Password, ProtoError};

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made, or the server is not trusted.
    #[error("{0}")]
    Connect(#[source] TlsError),
    /// The server refused the request, or ended the command.
    #[error("{message}")]
    Server {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server's bytes are not Wharf frames.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// The connection ended.
    #[error("the server closed the connection")]
    Closed,
    /// A reply that does not fit the request.
    #[error("unexpected reply from the server: {0}")]
    Unexpected(String),
    /// The key to log in with could not sign.
    #[error("{0}")]
    Key(#[source] wharf_client::identity::IdentityError),
    /// Writing the command's output or reading its input failed here.
    #[error("{context}: {source}")]
    Local {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ClientError {
    /// The server's error code, if the server refused or ended the command.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

wharf_client::from_session_error!(ClientError);

type Result<T> = std::result::Result<T, ClientError>;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The shell's status: the exit code, or 128 + the signal number.
    pub status: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// How long it ran, as the server measured.
    pub duration: Duration,
    /// Bytes of output it wrote.
    pub bytes_out: u64,
}

/// A command's collected output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Where a command's input and output go.
pub struct Streams<'a> {
    /// Its standard input; `None` gives it an empty one.
    pub stdin: Option<&'a mut (dyn AsyncRead + Unpin + Send)>,
    /// Where its standard output goes.
    pub stdout: &'a mut (dyn AsyncWrite + Unpin + Send),
    /// Where its standard error goes.
    pub stderr: &'a mut (dyn AsyncWrite + Unpin + Send),
    /// Signals to forward to it while it runs (Ctrl-C, say).
    pub signals: Option<&'a mut mpsc::UnboundedReceiver<SignalName>>,
    /// New sizes of the window, for a command on a terminal.
    pub resizes: Option<&'a mut mpsc::UnboundedReceiver<WindowSize>>,
}

/// A command to run, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    /// The command line for `sh -c`; empty, on a terminal, for the login
    /// shell.
    pub line: &'a str,
    /// The directory to start in, as commands see it (absolute, or relative
    /// to the home); none: the home.
    pub cwd: Option<&'a str>,
    /// Run it on a pseudo-terminal like this one (`ssh -t`): its output all
    /// comes as stdout, and the input is the keys typed.
    pub tty: Option<Tty>,
    /// On success, its last directory and the home follow its stdout, a
    /// line each (for a `cd` typed at a prompt).
    pub report_cwd: bool,
}

impl<'a> Command<'a> {
    /// `line`, in the home, without a terminal.
    pub fn new(line: &'a str) -> Command<'a> {
        Command {
            line,
            cwd: None,
            tty: None,
            report_cwd: false,
        }
    }
}

fn server_error(e: ErrorReply) -> ClientError {
    ClientError::Server {
        code: e.code,
        message: e.message,
    }
}

fn unexpected(reply: &ExecReply) -> ClientError {
    let text = serde_json::to_string(reply).unwrap_or_else(|_| format!("{reply:?}"));
    ClientError::Unexpected(text.chars().take(200).collect())
}

type Conn = Session<ExecReply>;

/// A logged-in remote-exec client.
pub struct ExecClient {
    conn: Conn,
    user: String,
    stdin_buf: Vec<u8>,
}

impl std::fmt::Debug for ExecClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecClient")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Output gathered into one write at most (what already arrived).
const OUTPUT_BLOCK: usize = 1 << 20;

/// Which writer the current body goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    Stdout,
    Stderr,
    None,
}

impl ExecClient {
    /// Connects to `addr` (verifying it as `tls` says) and logs in as
    /// `user`.
    pub async fn connect(
        addr: &str,
        tls: &ClientTls,
        user: &str,
        credential: impl Into<Credential>,
    ) -> Result<ExecClient> {
        let credential = &credential.into();
        let client = format!("wharf-exec/{}", env!("CARGO_PKG_VERSION"));
        let (conn, _) = open_session(addr, "wharf-execd", &client, tls, user, credential).await?;
        Ok(ExecClient {
            conn,
            user: user.to_owned(),
            stdin_buf: Vec::new(),
        })
    }

    /// The logged-in user.
    pub fn user(&self) -> &str {
        &self.user
    }

    async fn send(&mut self, msg: ExecRequest) -> Result<()> {
        self.conn
            .send(Outbound::msg(msg))
            .await
            .map_err(ClientError::from)
    }

    /// Sends one chunk of the command's input.
    async fn send_stdin(&mut self, chunk: Bytes) -> Result<()> {
        self.conn
            .feed(Outbound::Header {
                msg: ExecRequest::Stdin,
                body_len: chunk.len() as u64,
            })
            .await?;
        self.conn.send(Outbound::<ExecRequest>::Body(chunk)).await?;
        Ok(())
    }

    /// The next header from the server (bodies are not expected here).
    async fn header(&mut self) -> Result<ExecReply> {
        loop {
            match self.conn.next().await {
                None => return Err(ClientError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Frame::Header { msg, .. })) => return Ok(msg),
                Some(Ok(Frame::Body { .. })) => {}
                Some(Ok(Frame::Rejected(e))) => {
                    return Err(ClientError::Unexpected(e.to_string()));
                }
            }
        }
    }

    async fn exchange(&mut self, msg: ExecRequest) -> Result<ExecReply> {
        self.send(msg).await?;
        match self.header().await? {
            ExecReply::Error(e) => Err(server_error(e)),
            reply => Ok(reply),
        }
    }

    /// Changes the user's password from `old` to `new`.
    pub async fn passwd(&mut self, old: &Password, new: &Password) -> Result<()> {
        let change = ExecRequest::Passwd(ChangePassword {
            old: old.clone(),
            new: new.clone(),
        });
        match self.exchange(change).await? {
            ExecReply::PasswdOk => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Checks the connection; the server answers `pong`.
    pub async fn ping(&mut self) -> Result<()> {
        match self.exchange(ExecRequest::Ping).await? {
            ExecReply::Pong => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs `command`, collecting its output in memory, with no input.
    pub async fn output(&mut self, command: &str) -> Result<Output> {
        self.output_with_input(command, None).await
    }

    /// Runs `command` with `input` as its standard input, collecting its
    /// output in memory.
    pub async fn output_with_input(
        &mut self,
        command: &str,
        input: Option<&[u8]>,
    ) -> Result<Output> {
        self.collect(Command::new(command), input).await
    }

    /// Runs `command` (in its directory, on its terminal if asked) with no
    /// input, collecting its output in memory.
    pub async fn output_of(&mut self, command: Command<'_>) -> Result<Output> {
        self.collect(command, None).await
    }

    async fn collect(&mut self, command: Command<'_>, input: Option<&[u8]>) -> Result<Output> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut input = input;
        let outcome = self
            .run_command(
                command,
                Streams {
                    stdin: input
                        .as_mut()
                        .map(|i| i as &mut (dyn AsyncRead + Unpin + Send)),
                    stdout: &mut stdout,
                    stderr: &mut stderr,
                    signals: None,
                    resizes: None,
                },
            )
            .await?;
        Ok(Output {
            stdout,
            stderr,
            outcome,
        })
    }

    /// Runs `command` and streams: `io.stdin` to its input (EOF closes it),
    /// its output to `io.stdout` and `io.stderr`, `io.signals` to its
    /// process group. Returns how it ended; a command the server ended
    /// (time limit, output cap, shutdown) is [`ClientError::Server`].
    pub async fn run(&mut self, command: &str, io: Streams<'_>) -> Result<Outcome> {
        self.run_command(Command::new(command), io).await
    }

    /// Runs `command` as [`ExecClient::run`] does, in its directory and on
    /// its terminal if it asks for them; `io.resizes` then passes the
    /// window's new sizes on.
    pub async fn run_command(&mut self, command: Command<'_>, io: Streams<'_>) -> Result<Outcome> {
        let Streams {
            mut stdin,
            stdout,
            stderr,
            mut signals,
            mut resizes,
        } = io;
        let run = ExecRequest::Run {
            command: command.line.to_owned(),
            stdin: stdin.is_some(),
            cwd: command.cwd.map(str::to_owned),
            tty: command.tty,
            report_cwd: command.report_cwd,
        };
        match self.exchange(run).await? {
            ExecReply::Started { .. } => {}
            other => return Err(unexpected(&other)),
        }
        let mut sink = Sink::None;
        let mut buf = std::mem::take(&mut self.stdin_buf);
        buf.resize(MAX_STDIN_CHUNK as usize, 0);
        // A frame read ahead while output was gathered, handled next.
        let mut ahead = None;
        let result = loop {
            let next_frame = async {
                match ahead.take() {
                    Some(frame) => frame,
                    None => self.conn.next().await,
                }
            };
            tokio::select! {
                frame = next_frame => {
                    let frame = match frame {
                        None => break Err(ClientError::Closed),
                        Some(Err(e)) => break Err(e.into()),
                        Some(Ok(frame)) => frame,
                    };
                    match frame {
                        Frame::Body { chunk, .. } => {
                            let (out, what) = match sink {
                                Sink::Stdout => (&mut *stdout, "cannot write the command's output"),
                                Sink::Stderr => (&mut *stderr, "cannot write the command's error output"),
                                Sink::None => continue,
                            };
                            // The output already arrived behind it goes in
                            // the same write (one trip to the writer, not
                            // one per chunk); then flushed at once: a prompt
                            // has no newline, and a line-buffered stdout
                            // would hold it back.
                            let mut chunk = chunk;
                            let mut gathered: Option<bytes::BytesMut> = None;
                            while gathered.as_ref().map_or(chunk.len(), bytes::BytesMut::len) < OUTPUT_BLOCK {
                                match self.conn.next().now_or_never() {
                                    Some(Some(Ok(Frame::Body { chunk: more, .. }))) => {
                                        let all = gathered.get_or_insert_with(|| {
                                            let mut all = bytes::BytesMut::with_capacity(chunk.len() + more.len());
                                            all.extend_from_slice(&chunk);
                                            all
                                        });
                                        all.extend_from_slice(&more);
                                    }
                                    // More of the same output: its body follows.
                                    Some(Some(Ok(Frame::Header { msg: ExecReply::Stdout, .. })))
                                        if sink == Sink::Stdout => {}
                                    Some(Some(Ok(Frame::Header { msg: ExecReply::Stderr, .. })))
                                        if sink == Sink::Stderr => {}
                                    Some(other) => {
                                        ahead = Some(other);
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            if let Some(all) = gathered {
                                chunk = all.freeze();
                            }
                            let written = async {
                                out.write_all(&chunk).await?;
                                out.flush().await
                            };
                            if let Err(source) = written.await {
                                break Err(ClientError::Local { context: what, source });
                            }
                        }
                        Frame::Header { msg, .. } => match msg {
                            ExecReply::Stdout => sink = Sink::Stdout,
                            ExecReply::Stderr => sink = Sink::Stderr,
                            ExecReply::Pong => sink = Sink::None,
                            ExecReply::Exit { status, signal, duration_ms, bytes_out } => {
                                break Ok(Outcome {
                                    status,
                                    signal,
                                    duration: Duration::from_millis(duration_ms),
                                    bytes_out,
                                });
                            }
                            ExecReply::Error(e) => break Err(server_error(e)),
                            other => break Err(unexpected(&other)),
                        },
                        Frame::Rejected(e) => break Err(ClientError::Unexpected(e.to_string())),
                    }
                }
                n = read_input(&mut stdin, &mut buf) => {
                    let sent = match n {
                        Ok(0) => {
                            stdin = None;
                            self.send(ExecRequest::StdinEnd).await
                        }
                        Ok(n) => {
                            let chunk = Bytes::copy_from_slice(&buf[..n]);
                            self.send_stdin(chunk).await
                        }
                        Err(source) => break Err(ClientError::Local { context: "cannot read the command's input", source }),
                    };
                    if let Err(e) = sent {
                        break Err(e);
                    }
                }
                Some(signal) = next_of(&mut signals) => {
                    if let Err(e) = self.send(ExecRequest::Signal { signal }).await {
                        break Err(e);
                    }
                }
                Some(size) = next_of(&mut resizes) => {
                    if let Err(e) = self.send(ExecRequest::Resize(size)).await {
                        break Err(e);
                    }
                }
            }
        };
        self.stdin_buf = buf;
        let flushed = stdout.flush().await.and(stderr.flush().await);
        let outcome = result?;
        flushed.map_err(|source| ClientError::Local {
            context: "cannot write the command's output",
            source,
        })?;
        Ok(outcome)
    }

    /// Ends the session politely.
    pub async fn quit(mut self) -> Result<()> {
        match self.exchange(ExecRequest::Quit).await? {
            ExecReply::Bye => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

async fn read_input(
    stdin: &mut Option<&mut (dyn AsyncRead + Unpin + Send)>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match stdin {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn next_of<T>(rx: &mut Option<&mut mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
