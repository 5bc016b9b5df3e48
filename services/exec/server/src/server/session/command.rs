//! One command, from `run` to its `exit`: the loop that moves its input,
//! output, signals, limits and the server's shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rustix::process::geteuid;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wharf_core::Service;
use wharf_proto::exec::{ExecReply, ExecRequest};
use wharf_proto::{ErrorCode, Frame};
use wharf_store::User;
use wharf_store::db::ExecRecord;
use wharf_store::owner::Owner;
use wharf_store::standing;

use super::request::{REPORT_CWD, Run, check_run};
use super::{BodyTo, Flow, Frames, STDIN_QUEUE, Session};
use crate::server::output::{CommandInput, OutPipe, Waiting};
use crate::server::process::{Running, Spawn, shell_status};
use crate::server::quota;
use wharf_server::Refusal;

impl Session {
    /// Runs one command to its end; the session goes on after it unless
    /// the connection broke.
    pub(super) async fn execute(&mut self, frames: &mut Frames, user: &User, run: Run) -> Flow {
        if let Err(refusal) = check_run(&run) {
            return self.refuse(refusal).await;
        }
        let Run {
            command,
            stdin: want_stdin,
            cwd,
            tty,
            report_cwd,
        } = run;
        // The command as sent is what runs and what is recorded; the report
        // of its directory, when asked, is Wharf's own line after it.
        let script = if report_cwd && tty.is_none() {
            format!("{command}\n{REPORT_CWD}")
        } else {
            command.clone()
        };
        let user = match self.current_user(user).await {
            Ok(user) => user,
            Err(refusal) => return self.refuse(refusal).await,
        };
        let server = Arc::clone(&self.server);
        let config = &server.config;
        let Some(_slot) = server.running.enter(user.id, config.max_per_user) else {
            let max = config.max_per_user;
            return self
                .refuse(Refusal::new(
                    ErrorCode::Busy,
                    format!(
                        "{} has {max} commands running already (the limit); wait for one to end",
                        user.name
                    ),
                ))
                .await;
        };
        // Run as root, the server runs each user's commands as the user's
        // own uid; otherwise as itself, kept apart by the sandbox alone.
        let owner = match (geteuid().is_root(), Owner::of_user(user.id)) {
            (false, _) => None,
            (true, Some(owner)) => Some(owner),
            (true, None) => {
                let msg = format!(
                    "{} has no uid of its own (database id {} is out of range); ask an administrator",
                    user.name, user.id
                );
                return self.refuse(Refusal::new(ErrorCode::Internal, msg)).await;
            }
        };
        let home = match self.prepare_home(&user.home, owner).await {
            Ok(home) => home,
            Err(refusal) => return self.refuse(refusal).await,
        };
        let mut limits = config.resources;
        if let Some(quota) = user.quota_bytes {
            let free = quota.saturating_sub(user.used_bytes + user.reserved_bytes);
            limits.file_size = limits.file_size.min(free);
        }
        let lease = match self.server.networks.lease(user.id).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::error!(user = %user.name, error = %e, "cannot set up a private network");
                let msg = format!(
                    "your commands' private network could not be set up: {e}; ask an administrator"
                );
                return self.refuse(Refusal::new(ErrorCode::Internal, msg)).await;
            }
        };
        let started = Instant::now();
        let spawned = Running::spawn(&Spawn {
            launcher: &server.launcher,
            command: &script,
            home: &home,
            user: &user.name,
            identity: owner.map(|o| (o.uid, o.gid)),
            limits,
            unconfined_ok: config.unconfined_ok,
            stdin: want_stdin,
            cwd: cwd.as_deref(),
            tty: tty.as_ref(),
            net: &lease.place,
        });
        let mut running = match spawned {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(user = %user.name, home = %home.display(), error = %e, "cannot start a command");
                let msg = format!(
                    "the command could not be started in your home {}: {e}; ask an administrator",
                    home.display()
                );
                return self.refuse(Refusal::new(ErrorCode::Internal, msg)).await;
            }
        };
        // On a terminal a person is at the keys: the limit is on idleness,
        // and there is no output cap (they can press Ctrl-C).
        let on_tty = tty.is_some();
        let (timeout, max_output) = if on_tty {
            (config.tty_idle_timeout, u64::MAX)
        } else {
            (config.command_timeout, config.max_output)
        };
        let deadline = started + timeout;
        let started_reply = ExecReply::Started {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            max_output,
        };
        let quota_watch = self.standing.clone();
        let at_start = (user.quota_bytes, user.quota_files);
        let kernel = server.kernel.enforce(&home, user.quota_bytes).await;
        // What the home stored at the start, not what uploads had reserved:
        // an upload that ends (as one does when the quota is lowered) must
        // not leave its reservation to the command as room.
        let held = (user.used_bytes, user.file_count);
        let over_quota =
            quota::exceeded(home.clone(), Some(running.pid()), kernel, held, move || {
                standing::quotas_now(&quota_watch, at_start)
            });
        let (end, bytes_out) = if self.out.send(started_reply).await.is_err() {
            (End::Disconnected, 0)
        } else {
            let limits = RunLimits {
                deadline,
                idle: on_tty.then_some(timeout),
                max_output,
            };
            self.supervise(frames, &mut running, limits, over_quota)
                .await
        };
        let status = running.finish().await;
        let duration = started.elapsed();
        let (status, signal) = match status {
            Ok(s) => shell_status(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot reap a command");
                (255, None)
            }
        };
        let record = ExecRecord {
            user_id: user.id,
            command: if command.is_empty() {
                LOGIN_SHELL_RECORD.to_owned()
            } else {
                command
            },
            exit_code: if signal.is_none() { Some(status) } else { None },
            signal,
            duration,
            bytes_out,
        };
        if let Err(e) = self.server.auth.store().record_exec(&record).await {
            tracing::error!(user = %user.name, error = %e, "cannot record a command in exec_log");
        }
        if let End::OverQuota(_) = end {
            self.server
                .usage
                .measure_now(&user.name, home.clone())
                .await;
        }
        self.server
            .usage
            .after_command(user.id, &user.name, home.clone());
        tracing::info!(
            peer = %self.peer, user = %user.name, status, ?signal, bytes_out,
            ms = duration.as_millis() as u64, end = end.name(), "command ended"
        );
        let killed = "; it and every process it started were killed";
        match end {
            End::Exited => {
                self.reply(ExecReply::Exit {
                    status,
                    signal,
                    duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                    bytes_out,
                })
                .await
            }
            End::Timeout if on_tty => {
                let msg = format!(
                    "nothing was typed for {} (the server's --tty-idle-timeout){killed}",
                    humantime::format_duration(timeout)
                );
                self.refuse(Refusal::new(ErrorCode::Timeout, msg)).await
            }
            End::Timeout => {
                let msg = format!(
                    "the command ran longer than {} (the server's --command-timeout){killed}",
                    humantime::format_duration(timeout)
                );
                self.refuse(Refusal::new(ErrorCode::Timeout, msg)).await
            }
            End::OutputCap => {
                let msg = format!(
                    "the command wrote more than {max_output} bytes of output (the server's --max-output){killed}; redirect big output to a file and fetch it with wharf-ftp"
                );
                self.refuse(Refusal::new(ErrorCode::MessageTooLarge, msg))
                    .await
            }
            End::OverQuota(quota) => {
                let msg = format!(
                    "the command took your home past {quota}{killed}; remove files to make room"
                );
                self.refuse(Refusal::new(ErrorCode::QuotaExceeded, msg))
                    .await
            }
            End::Shutdown => {
                let msg = format!("the server is shutting down{killed}");
                self.out
                    .last_refusal(Refusal::closing(ErrorCode::ShuttingDown, msg))
                    .await;
                Flow::Close
            }
            End::Quit => {
                self.out.last(ExecReply::Bye).await;
                Flow::Close
            }
            End::Refused(mut refusal) => {
                refusal.message.push_str("; the running command was killed");
                self.refuse(refusal).await
            }
            End::Disconnected => Flow::Close,
        }
    }

    /// Sends what waits in an output pipe (within the cap, the time limit
    /// and the shutdown), or closes the pipe at its end; returns the output
    /// bytes sent so far.
    async fn pump(
        &mut self,
        pipe: &mut Option<OutPipe>,
        waiting: std::io::Result<Waiting>,
        msg: ExecReply,
        sent: u64,
        limits: &RunLimits,
    ) -> Result<u64, End> {
        let Some(p) = pipe
            .as_mut()
            .filter(|_| matches!(waiting, Ok(Waiting::Bytes)))
        else {
            *pipe = None;
            return Ok(sent);
        };
        let room = limits.max_output.saturating_sub(sent);
        if room == 0 {
            return Err(End::OutputCap);
        }
        let max = usize::try_from(room).unwrap_or(usize::MAX);
        let shutdown = self.shutdown.clone();
        let n = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(End::Shutdown),
            _ = tokio::time::sleep_until(limits.deadline) => return Err(End::Timeout),
            r = self.out.output(msg, p, max) => r.map_err(|_| End::Disconnected)?,
        };
        Ok(sent + n as u64)
    }

    /// Moves input, output and signals until the command ends or must be
    /// ended. Returns why, and the output bytes sent.
    async fn supervise(
        &mut self,
        frames: &mut Frames,
        running: &mut Running,
        mut limits: RunLimits,
        over_quota: impl std::future::Future<Output = String>,
    ) -> (End, u64) {
        tokio::pin!(over_quota);
        let drain = self.server.config.drain;
        let shutdown = self.shutdown.clone();
        let mut stdout = running.stdout.take();
        let mut stderr = running.stderr.take();
        let terminal = running.terminal.take();
        let mut stdin = running.input.take().map(|input| {
            let (tx, rx) = mpsc::channel(STDIN_QUEUE);
            tokio::spawn(feed_stdin(input, rx));
            tx
        });
        let mut pending: Option<Bytes> = None;
        let mut body_to = BodyTo::Discard;
        let mut bytes_out: u64 = 0;
        let mut drain_until: Option<Instant> = None;
        let end = loop {
            if drain_until.is_some() && stdout.is_none() && stderr.is_none() {
                break End::Exited;
            }
            let ev = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Ev::Shutdown,
                why = standing::ended(&mut self.standing, Service::Exec, None) => Ev::Revoked(why),
                _ = tokio::time::sleep_until(limits.deadline) => Ev::Timeout,
                quota = &mut over_quota => Ev::OverQuota(quota),
                _ = running.exited(), if drain_until.is_none() => Ev::Exited,
                _ = sleep_until_some(drain_until) => Ev::DrainOver,
                w = waiting(&mut stdout) => Ev::Output { stderr: false, waiting: w },
                w = waiting(&mut stderr) => Ev::Output { stderr: true, waiting: w },
                room = stdin_room(&stdin), if pending.is_some() => Ev::StdinRoom(room),
                frame = frames.next(), if pending.is_none() => Ev::Frame(frame),
            };
            match ev {
                Ev::Shutdown => break End::Shutdown,
                Ev::Revoked(why) => {
                    break End::Refused(Refusal::closing(why.code(), why.client_message()));
                }
                Ev::Timeout => break End::Timeout,
                Ev::OverQuota(quota) => break End::OverQuota(quota),
                Ev::Exited => drain_until = Some(Instant::now() + drain),
                Ev::DrainOver => break End::Exited,
                Ev::StdinRoom(room) => {
                    // No room ever: the command closed its input; the chunk
                    // is dropped.
                    if let (true, Some(chunk), Some(tx)) = (room, pending.take(), &stdin)
                        && let Err(mpsc::error::TrySendError::Full(chunk)) = tx.try_send(chunk)
                    {
                        pending = Some(chunk);
                    }
                }
                Ev::Output {
                    stderr: to_err,
                    waiting,
                } => {
                    let (pipe, msg) = if to_err {
                        (&mut stderr, ExecReply::Stderr)
                    } else {
                        (&mut stdout, ExecReply::Stdout)
                    };
                    match self.pump(pipe, waiting, msg, bytes_out, &limits).await {
                        Ok(total) => bytes_out = total,
                        Err(end) => break end,
                    }
                }
                Ev::Frame(frame) => {
                    match frame {
                        None => break End::Disconnected,
                        Some(Err(e)) => {
                            break End::Refused(Refusal::closing(e.code(), e.to_string()));
                        }
                        Some(Ok(Frame::Rejected(e))) => {
                            break End::Refused(Refusal::closing(e.code(), e.to_string()));
                        }
                        Some(Ok(Frame::Body { chunk, .. })) => {
                            if let (BodyTo::Stdin, Some(tx)) = (&body_to, &stdin)
                                && let Err(mpsc::error::TrySendError::Full(chunk)) =
                                    tx.try_send(chunk)
                            {
                                pending = Some(chunk);
                            }
                        }
                        Some(Ok(Frame::Header { msg, body_len })) => {
                            body_to = BodyTo::Discard;
                            // Keys typed or a window resized: someone is there.
                            if let (Some(idle), ExecRequest::Stdin | ExecRequest::Resize(_)) =
                                (limits.idle, &msg)
                            {
                                limits.deadline = Instant::now() + idle;
                            }
                            match msg {
                                ExecRequest::Stdin if stdin.is_some() || body_len == 0 => {
                                    body_to = BodyTo::Stdin;
                                }
                                // The client asked for input and the command
                                // closed it early: the rest is dropped.
                                ExecRequest::Stdin => {}
                                // On a terminal, the end of input is the
                                // terminal's end-of-file key, Ctrl-D.
                                ExecRequest::StdinEnd if terminal.is_some() => {
                                    if let Some(tx) = &stdin
                                        && let Err(mpsc::error::TrySendError::Full(chunk)) =
                                            tx.try_send(Bytes::from_static(b"\x04"))
                                    {
                                        pending = Some(chunk);
                                    }
                                }
                                ExecRequest::StdinEnd => stdin = None,
                                ExecRequest::Resize(size) if body_len == 0 => {
                                    if let Some(t) = &terminal
                                        && let Err(e) = t.resize(size)
                                    {
                                        tracing::warn!(error = %e, "cannot resize a terminal");
                                    }
                                }
                                ExecRequest::Signal { signal } if body_len == 0 => {
                                    running.signal_group(signal.number());
                                }
                                ExecRequest::Ping if body_len == 0 => {
                                    if self.out.send(ExecReply::Pong).await.is_err() {
                                        break End::Disconnected;
                                    }
                                }
                                ExecRequest::Quit => break End::Quit,
                                ExecRequest::Run { .. } => {
                                    break End::Refused(Refusal::closing(
                                        ErrorCode::BadRequest,
                                        "a command is running already; one at a time per connection",
                                    ));
                                }
                                _ => {
                                    break End::Refused(Refusal::closing(
                                        ErrorCode::BadRequest,
                                        "while a command runs, only stdin, stdin_end, resize, signal, ping and quit are allowed, and only stdin has a body",
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        };
        if let End::OutputCap = end {
            bytes_out = limits.max_output;
        }
        (end, bytes_out)
    }
}

/// What woke the loop of a running command.
enum Ev {
    Frame(Option<Result<Frame<ExecRequest>, wharf_proto::ProtoError>>),
    StdinRoom(bool),
    /// Output waiting in stdout's pipe, or stderr's.
    Output {
        stderr: bool,
        waiting: std::io::Result<Waiting>,
    },
    Exited,
    DrainOver,
    Timeout,
    /// The home went past this quota.
    OverQuota(String),
    Shutdown,
    /// An administrator locked, removed or revoked the user.
    Revoked(wharf_store::Error),
}

/// Resolves when the command's input queue has room (true), or never will
/// (false: the command closed its input).
async fn stdin_room(tx: &Option<mpsc::Sender<Bytes>>) -> bool {
    match tx {
        Some(tx) => tx.reserve().await.is_ok(),
        None => false,
    }
}

/// How a command's run ended.
enum End {
    /// The shell exited and its output was read.
    Exited,
    /// `--command-timeout` ran out.
    Timeout,
    /// `--max-output` was reached.
    OutputCap,
    /// The home went past the user's quota (this one, as it is now).
    OverQuota(String),
    /// The server is stopping.
    Shutdown,
    /// The client said `quit`.
    Quit,
    /// The client broke the protocol; this error is its answer.
    Refused(Refusal),
    /// The client went away.
    Disconnected,
}

impl End {
    fn name(&self) -> &'static str {
        match self {
            End::Exited => "exited",
            End::Timeout => "timeout",
            End::OutputCap => "output cap",
            End::OverQuota(_) => "over quota",
            End::Shutdown => "shutdown",
            End::Quit => "quit",
            End::Refused(_) => "protocol error",
            End::Disconnected => "client gone",
        }
    }
}

/// What an output pipe that is still open has; pends forever once closed.
async fn waiting(pipe: &mut Option<OutPipe>) -> std::io::Result<Waiting> {
    match pipe {
        Some(p) => p.waiting().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The limits of one run.
pub(super) struct RunLimits {
    /// When it is ended.
    deadline: Instant,
    /// On a terminal: input moves the deadline this far ahead.
    idle: Option<Duration>,
    /// Output it may send.
    max_output: u64,
}

/// What the exec log says for an interactive login shell.
const LOGIN_SHELL_RECORD: &str = "(login shell on a terminal)";

/// Writes the client's input to the command until the client ends it or
/// the command closes its end.
async fn feed_stdin(pipe: CommandInput, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(chunk) = rx.recv().await {
        if pipe.write_all(&chunk).await.is_err() {
            return;
        }
    }
    // Dropping the pipe is the command's EOF.
}
