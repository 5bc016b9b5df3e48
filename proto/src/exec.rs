//! Remote-exec messages (`wharf-execd`, TCP 2123). See PROTOCOL.md, "Remote
//! exec", for the exchanges.
//!
//! A session runs one command at a time: `run`, then `started`, then the
//! command's output as `stdout` and `stderr` frames whose bodies are the raw
//! bytes, then one final frame: `exit`, or an `error` when the server ended
//! the command (time limit, output cap, shutdown). Standard input, when the
//! client asked for it, goes the other way as `stdin` frames and one
//! `stdin_end`.
//!
//! A `run` with `tty` runs on a pseudo-terminal instead, like `ssh -t`: the
//! command (or, with an empty command, the user's login shell) sees a
//! terminal of the size given, `resize` changes it, `stdin` frames are the
//! keys typed (Ctrl-C is a byte like any other, delivered by the terminal),
//! and all output comes as `stdout`. The time limit is then an idle limit:
//! the command is ended when no input came for that long.

use serde::{Deserialize, Serialize};

use crate::message::{
    ChangePassword, ClientHello, ErrorReply, Login, LoginOk, Message, ServerHello,
};

/// Longest command line a client may send, in bytes.
pub const MAX_COMMAND_BYTES: usize = 32 * 1024;

/// Largest `stdin` body a server accepts in one frame.
pub const MAX_STDIN_CHUNK: u64 = 256 * 1024;

/// Longest `TERM` value a client may send.
pub const MAX_TERM_BYTES: usize = 64;

/// The terminal a `run` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tty {
    /// The client's `TERM` (letters, digits, `.`, `_`, `+`, `-`), passed to
    /// the command.
    pub term: String,
    /// The window's size.
    #[serde(flatten)]
    pub size: WindowSize,
}

/// A terminal window's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl Tty {
    /// Whether `term` is a value the server accepts.
    pub fn term_is_valid(term: &str) -> bool {
        !term.is_empty()
            && term.len() <= MAX_TERM_BYTES
            && term
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    }
}

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
    /// Change the logged-in user's password; see [`ChangePassword`].
    Passwd(ChangePassword),
    /// Run `command` with `sh -c` in the home; answered with `started`.
    Run {
        /// The command line, at most [`MAX_COMMAND_BYTES`], no NUL byte;
        /// empty with `tty` for the user's login shell.
        command: String,
        /// True when the client will stream standard input (`stdin` frames,
        /// then `stdin_end`); false closes the command's input at once.
        #[serde(default)]
        stdin: bool,
        /// The directory to start in, as commands see it (an absolute path,
        /// or one relative to the home); none: the home.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        /// Run on a pseudo-terminal like this one (input is then always
        /// streamed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tty: Option<Tty>,
        /// After a command that succeeds, its last directory and the home
        /// follow its output on stdout, a line each (a `cd` typed at a
        /// prompt: the client learns where it leads). The command is run
        /// and recorded as sent.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        report_cwd: bool,
    },
    /// Bytes for the running command's standard input, in the body.
    Stdin,
    /// End of standard input: the command reads EOF.
    StdinEnd,
    /// The client's window changed size (a `run` with `tty` only).
    Resize(WindowSize),
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

impl ExecRequest {
    /// The request as the opening every service shares sees it: `hello`
    /// or `login`, else `None`.
    pub fn into_opening(self) -> Option<crate::message::CommonRequest> {
        match self {
            ExecRequest::Hello(hello) => Some(crate::message::CommonRequest::Hello(hello)),
            ExecRequest::Login(login) => Some(crate::message::CommonRequest::Login(login)),
            _ => None,
        }
    }
}

impl Message for ExecRequest {
    const OPS: &'static [&'static str] = &[
        "hello",
        "login",
        "passwd",
        "run",
        "stdin",
        "stdin_end",
        "resize",
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
    /// The password was changed; the next login takes the new one.
    PasswdOk,
    /// A request failed, or the server ended the running command; see
    /// [`ErrorReply`].
    Error(ErrorReply),
    /// The command is running.
    Started {
        /// Wall-clock time it may run, in milliseconds (on a terminal: how
        /// long it may go without input).
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
        "hello",
        "login_ok",
        "passwd_ok",
        "error",
        "started",
        "stdout",
        "stderr",
        "exit",
        "pong",
        "bye",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_and_exit_serialise_as_documented() {
        let run = ExecRequest::Run {
            report_cwd: false,
            command: "ls -la".into(),
            stdin: false,
            cwd: None,
            tty: None,
        };
        assert_eq!(
            serde_json::to_string(&run).unwrap_or_default(),
            r#"{"op":"run","command":"ls -la","stdin":false}"#
        );
        let tty = ExecRequest::Run {
            report_cwd: false,
            command: String::new(),
            stdin: true,
            cwd: Some("projects".into()),
            tty: Some(Tty {
                term: "xterm-256color".into(),
                size: WindowSize { cols: 80, rows: 24 },
            }),
        };
        assert_eq!(
            serde_json::to_string(&tty).unwrap_or_default(),
            r#"{"op":"run","command":"","stdin":true,"cwd":"projects","tty":{"term":"xterm-256color","cols":80,"rows":24}}"#
        );
        let resize = ExecRequest::Resize(WindowSize {
            cols: 120,
            rows: 40,
        });
        assert_eq!(
            serde_json::to_string(&resize).unwrap_or_default(),
            r#"{"op":"resize","cols":120,"rows":40}"#
        );
        assert!(Tty::term_is_valid("xterm-256color"));
        assert!(Tty::term_is_valid("screen.xterm+x_y"));
        assert!(!Tty::term_is_valid(""));
        assert!(!Tty::term_is_valid("xterm;rm -rf"));
        assert!(!Tty::term_is_valid(&"x".repeat(65)));
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
