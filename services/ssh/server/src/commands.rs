//! Commands over SSH: `ssh host cmd`, `ssh host` with a terminal, and what
//! runs commands underneath (rsync, `scp -O`).
//!
//! The SSH door does not start commands itself. Each `exec` or `shell`
//! request becomes a remote-exec session of its own, already logged in
//! ([`Exec::serve_logged_in`]), over an in-memory stream: this module
//! speaks the exec protocol on one side and SSH's channel on the other.
//! So a command from ssh is checked, sandboxed (own uid, namespaces,
//! Landlock, limits, cgroup, private network), counted in the user's slots
//! and recorded exactly as one from `wharf-exec`, by the same code.
//!
//! The translation: channel data is the command's input (`stdin` frames),
//! the client's EOF is `stdin_end`, `window-change` is `resize`, `signal`
//! is `signal` (INT, TERM, HUP, QUIT, KILL; others are ignored); `stdout`
//! and `stderr` frames are channel data and extended data; `exit` is
//! `exit-status`, or `exit-signal` when a signal ended the command; a
//! refusal (time limit, output cap, quota, the administrator's word) is
//! written to the client's standard error, `wharf: ` first, with status
//! 255, what ssh returns when the connection failed.
//! Environment requests are refused as the native service has no way to
//! pass them: commands get a scrubbed environment (`PATH`, `HOME`, `USER`,
//! `LANG`, and `TERM` from the terminal request).

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, Sig};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use wharf_execd::server::Exec;
use wharf_proto::exec::{ExecReply, ExecRequest, MAX_STDIN_CHUNK, SignalName, Tty, WindowSize};
use wharf_proto::{Frame, FrameCodec, Outbound, ProtoError};
use wharf_store::User;
use wharf_store::standing::Standing;

/// Bytes in flight between this side and the exec session, each way.
const IN_FLIGHT: usize = 512 * 1024;

/// The exit status of a command the server ended (as `wharf-exec`'s).
const SERVER_ENDED: u32 = 255;

/// What runs when a client asks for a shell without a terminal (`ssh -T
/// host`, a script piped in): the login shell, reading commands from its
/// input.
const SHELL_WITHOUT_TTY: &str = "command -v bash >/dev/null && exec bash -l; exec sh -l";

/// A terminal as `pty-req` asks for one; `None` when its `TERM` is not one
/// the exec service takes.
pub(crate) fn tty(term: &str, cols: u32, rows: u32) -> Option<Tty> {
    let term = if term.is_empty() { "dumb" } else { term };
    Tty::term_is_valid(term).then(|| Tty {
        term: term.to_owned(),
        size: size(cols, rows),
    })
}

fn size(cols: u32, rows: u32) -> WindowSize {
    WindowSize {
        cols: u16::try_from(cols).unwrap_or(u16::MAX),
        rows: u16::try_from(rows).unwrap_or(u16::MAX),
    }
}

/// One command's channel, from its request to its exit.
pub(crate) struct Command {
    pub(crate) exec: Exec,
    pub(crate) channel: Channel<Msg>,
    pub(crate) handle: Handle,
    pub(crate) user: User,
    pub(crate) standing: watch::Receiver<Standing>,
    pub(crate) peer: SocketAddr,
    pub(crate) shutdown: CancellationToken,
    /// The command line; `None` for a shell.
    pub(crate) command: Option<String>,
    pub(crate) tty: Option<Tty>,
}

type Requests = FramedWrite<tokio::io::WriteHalf<tokio::io::DuplexStream>, FrameCodec<ExecReply>>;

impl Command {
    /// Runs the command and says how it ended on the channel, then closes
    /// it.
    pub(crate) async fn run(self) {
        let Command {
            exec,
            channel,
            handle,
            user,
            standing,
            peer,
            shutdown,
            command,
            tty,
        } = self;
        let id = channel.id();
        let name = user.name.clone();
        let (ours, theirs) = tokio::io::duplex(IN_FLIGHT);
        let session = tokio::spawn(async move {
            exec.serve_logged_in(theirs, peer, shutdown, user, standing)
                .await;
        });
        let (rd, wr) = tokio::io::split(ours);
        let mut replies = FramedRead::new(rd, FrameCodec::<ExecReply>::new().max_body(u64::MAX));
        let mut requests: Requests = FramedWrite::new(wr, FrameCodec::new());
        let (mut input, output) = channel.split();
        let mut stdout = output.make_writer();
        let mut stderr = output.make_writer_ext(Some(1));
        let on_tty = tty.is_some();
        let command = match (command, on_tty) {
            (Some(c), _) => c,
            (None, true) => String::new(),
            (None, false) => SHELL_WITHOUT_TTY.to_owned(),
        };
        let run = ExecRequest::Run {
            command,
            stdin: true,
            cwd: None,
            tty,
            report_cwd: false,
        };
        let mut ended = Ended::Gone;
        if requests.send(Outbound::msg(run)).await.is_ok() {
            // Which stream the body being read goes to.
            let mut to_err = false;
            let mut input_open = true;
            ended = loop {
                tokio::select! {
                    msg = input.wait(), if input_open => {
                        match msg {
                            Some(msg) => {
                                if forward(msg, &mut requests).await.is_err() {
                                    break Ended::Gone;
                                }
                            }
                            // The client closed the channel: the session
                            // ends, and the command is killed with it.
                            None => input_open = false,
                        }
                    }
                    frame = replies.next() => {
                        let Some(Ok(frame)) = frame else {
                            break Ended::Gone;
                        };
                        match frame {
                            Frame::Header { msg: ExecReply::Stdout, .. } => to_err = false,
                            Frame::Header { msg: ExecReply::Stderr, .. } => to_err = true,
                            Frame::Header { msg: ExecReply::Exit { status, signal, .. }, .. } => {
                                break Ended::Exit { status, signal };
                            }
                            Frame::Header { msg: ExecReply::Error(e), .. } => {
                                break Ended::Refused(e.message);
                            }
                            Frame::Header { .. } | Frame::Rejected(_) => {}
                            Frame::Body { chunk, .. } => {
                                let out: &mut (dyn AsyncWrite + Unpin + Send) = if to_err {
                                    &mut stderr
                                } else {
                                    &mut stdout
                                };
                                if out.write_all(&chunk).await.is_err() {
                                    break Ended::Gone;
                                }
                            }
                        }
                    }
                }
                if !input_open {
                    break Ended::Gone;
                }
            };
        }
        // How it ended goes to the client at once; the exec session then
        // ends with its stream (a command still running is killed with it).
        match ended {
            Ended::Exit { status, signal } => {
                tracing::debug!(user = %name, status, ?signal, via = "ssh", "command ended");
                match signal.and_then(sig) {
                    Some(sig) => {
                        let _ = handle
                            .exit_signal_request(id, sig, false, String::new(), String::new())
                            .await;
                    }
                    None => {
                        let _ = output
                            .exit_status(u32::try_from(status).unwrap_or(SERVER_ENDED))
                            .await;
                    }
                }
            }
            Ended::Refused(why) => {
                let end = if on_tty { "\r\n" } else { "\n" };
                let _ = stderr
                    .write_all(format!("wharf: {why}{end}").as_bytes())
                    .await;
                let _ = output.exit_status(SERVER_ENDED).await;
            }
            Ended::Gone => {}
        }
        let _ = output.eof().await;
        let _ = output.close().await;
        drop(requests);
        drop(replies);
        let _ = session.await;
    }
}

/// How a command's channel ends.
enum Ended {
    /// The command exited.
    Exit { status: i32, signal: Option<i32> },
    /// The server refused it or ended it, for this reason.
    Refused(String),
    /// The client or the session went away.
    Gone,
}

/// Passes what the client sent on the channel to the exec session.
async fn forward(msg: ChannelMsg, requests: &mut Requests) -> Result<(), ProtoError> {
    let send = |msg| Outbound::msg(msg);
    match msg {
        ChannelMsg::Data { mut data } => {
            // Pieces of the packet itself, not copies.
            while !data.is_empty() {
                let piece = data.split_to(data.len().min(MAX_STDIN_CHUNK as usize));
                requests
                    .feed(Outbound::Header {
                        msg: ExecRequest::Stdin,
                        body_len: piece.len() as u64,
                    })
                    .await?;
                requests.send(Outbound::<ExecRequest>::Body(piece)).await?;
            }
            Ok(())
        }
        ChannelMsg::Eof => requests.send(send(ExecRequest::StdinEnd)).await,
        ChannelMsg::WindowChange {
            col_width,
            row_height,
            ..
        } => {
            let size = size(col_width, row_height);
            requests.send(send(ExecRequest::Resize(size))).await
        }
        ChannelMsg::Signal { signal } => match signal_name(&signal) {
            Some(signal) => requests.send(send(ExecRequest::Signal { signal })).await,
            None => {
                tracing::debug!(
                    ?signal,
                    via = "ssh",
                    "a signal commands cannot be sent: ignored"
                );
                Ok(())
            }
        },
        // The requests that came before the command (its terminal, its
        // environment, the command itself), answered already.
        _ => Ok(()),
    }
}

/// The exec protocol's name of a signal ssh sends.
fn signal_name(sig: &Sig) -> Option<SignalName> {
    match sig {
        Sig::INT => Some(SignalName::Int),
        Sig::TERM => Some(SignalName::Term),
        Sig::HUP => Some(SignalName::Hup),
        Sig::QUIT => Some(SignalName::Quit),
        Sig::KILL => Some(SignalName::Kill),
        _ => None,
    }
}

/// SSH's name of the signal numbered `n`, for `exit-signal`.
fn sig(n: i32) -> Option<Sig> {
    Some(match n {
        1 => Sig::HUP,
        2 => Sig::INT,
        3 => Sig::QUIT,
        4 => Sig::ILL,
        6 => Sig::ABRT,
        8 => Sig::FPE,
        9 => Sig::KILL,
        10 => Sig::USR1,
        11 => Sig::SEGV,
        13 => Sig::PIPE,
        14 => Sig::ALRM,
        15 => Sig::TERM,
        _ => return None,
    })
}
