//! Remote-exec messages (`wharf-execd`, TCP 2123). See PROTOCOL.md, "Remote
//! exec", for the exchanges.
//!
//! A session runs one command at a time: `run`, then `started`, then the
//! command's output as `stdout` and `stderr` frames whose bodies are the raw
//! bytes, then one final frame: `exit`, or an `error` when the server ended
//! the command (time limit, output cap, shutdown). Standard input, when the
//! client asked for it, goes the other way as `stdin` frames and one
//! `stdin_end`.

use serde::{Deserialize, Serialize};

use crate::message::{ClientHello, ErrorReply, Login, LoginOk, Message, ServerHello};

/// Longest command line a client may send, in bytes.
pub const MAX_COMMAND_BYTES: usize = 32 * 1024;

/// Largest `stdin` body a server accepts in one frame.
pub const MAX_STDIN_CHUNK: u64 = 256 * 1024;

/// A signal a client may forward to its running command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SignalName {
    /// SIGINT: what Ctrl-C sends.
    Int,
    /// SIGTERM.
    Term,
    /// SIGHUP.
    Hup,
    /// SIGQUIT.
    Quit,
    /// SIGKILL.
    Kill,
}

impl SignalName {
    /// The signal's number on Linux.
    pub fn number(self) -> i32 {
        match self {
            SignalName::Hup => 1,
            SignalName::Int => 2,
            SignalName::Quit => 3,
            SignalName::Kill => 9,
            SignalName::Term => 15,
        }
    }
}

/// Requests of the remote-exec service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ExecRequest {
    /// Opening; see [`ClientHello`].
    Hello(ClientHello),
    /// Login; see [`Login`].
    Login(Login),
    /// Run `command` with `sh -c` in the home; answered with `started`.
    Run {
        /// The command line, at most [`MAX_COMMAND_BYTES`], no NUL byte.
        command: String,
        /// True when the client will stream standard input (`stdin` frames,
        /// then `stdin_end`); false closes the command's input at once.
        #[serde(default)]
        stdin: bool,
    },
    /// Bytes for the running command's standard input, in the body.
    Stdin,
    /// End of standard input: the command reads EOF.
    StdinEnd,
    /// Send a signal to the running command's whole process group.
    Signal {
        /// Which signal.
        signal: SignalName,
    },
    /// Keep the session alive; answered with `pong`.
    Ping,
    /// End the session; answered with `bye`.
    Quit,
}

impl Message for ExecRequest {
    const OPS: &'static [&'static str] = &[
        "hello",
        "login",
        "run",
        "stdin",
        "stdin_end",
        "signal",
        "ping",
        "quit",
    ];
}

/// Replies of the remote-exec service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ExecReply {
    /// Opening; see [`ServerHello`].
    Hello(ServerHello),
    /// Login accepted; see [`LoginOk`].
    LoginOk(LoginOk),
    /// A request failed, or the server ended the running command; see
    /// [`ErrorReply`].
    Error(ErrorReply),
    /// The command is running.
    Started {
        /// Wall-clock time it may run, in milliseconds.
        timeout_ms: u64,
        /// Bytes of output (stdout and stderr together) it may write.
        max_output: u64,
    },
    /// Bytes the command wrote to its standard output, in the body.
    Stdout,
    /// Bytes the command wrote to its standard error, in the body.
    Stderr,
    /// The command ended; no more output follows.
    Exit {
        /// Its status as a shell reports it: the exit code, or 128 + the
        /// signal number.
        status: i32,
        /// The signal that ended it, if one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// How long it ran, in milliseconds.
        duration_ms: u64,
        /// Bytes of output it wrote (stdout and stderr).
        bytes_out: u64,
    },
    /// Answer to `ping`.
    Pong,
    /// Answer to `quit`.
    Bye,
}

impl Message for ExecReply {
    const OPS: &'static [&'static str] = &[
        "hello", "login_ok", "error", "started", "stdout", "stderr", "exit", "pong", "bye",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_and_exit_serialise_as_documented() {
        let run = ExecRequest::Run {
            command: "ls -la".into(),
            stdin: false,
        };
        assert_eq!(
            serde_json::to_string(&run).unwrap_or_default(),
            r#"{"op":"run","command":"ls -la","stdin":false}"#
        );
        let sig = ExecRequest::Signal {
            signal: SignalName::Int,
        };
        assert_eq!(
            serde_json::to_string(&sig).unwrap_or_default(),
            r#"{"op":"signal","signal":"INT"}"#
        );
        let exit = ExecReply::Exit {
            status: 130,
            signal: Some(2),
            duration_ms: 5,
            bytes_out: 0,
        };
        assert_eq!(
            serde_json::to_string(&exit).unwrap_or_default(),
            r#"{"op":"exit","status":130,"signal":2,"duration_ms":5,"bytes_out":0}"#
        );
    }
}
