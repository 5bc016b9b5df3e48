//! A client binary on a pseudo-terminal of the test's own (expectrl), for
//! the tests of the interactive clients.

use std::time::Duration;

use expectrl::session::OsSession;
use expectrl::{ControlCode, Expect};

/// How long a terminal waits for what a test expects to see.
pub const SEE_WAIT: Duration = Duration::from_secs(10);

/// A program running on a terminal.
pub struct Terminal {
    session: OsSession,
}

impl Terminal {
    /// Starts `cmd` on a new terminal of `cols` x `rows`, TERM=xterm-256color.
    pub fn start(mut cmd: std::process::Command, cols: u16, rows: u16) -> Terminal {
        cmd.env("TERM", "xterm-256color");
        let mut session = OsSession::spawn(cmd).expect("start a program on a terminal");
        session
            .get_process_mut()
            .set_window_size(cols, rows)
            .expect("window size");
        session.set_expect_timeout(Some(SEE_WAIT));
        Terminal { session }
    }

    /// Waits until the terminal shows `needle` (after what was seen last).
    pub fn sees(&mut self, needle: &str) {
        if let Err(e) = self.session.expect(needle) {
            let mut rest = vec![0u8; 64 * 1024];
            let n = self.session.try_read(&mut rest).unwrap_or(0);
            let rest = String::from_utf8_lossy(&rest[..n]);
            panic!("the terminal never showed {needle:?}: {e}; it shows {rest:?}");
        }
    }

    /// Waits until the terminal shows a match of the regular expression
    /// `pattern`.
    pub fn sees_pattern(&mut self, pattern: &str) {
        if let Err(e) = self.session.expect(expectrl::Regex(pattern)) {
            panic!("the terminal never showed a match of {pattern:?}: {e}");
        }
    }

    /// Waits for `prompt`, the line editor's sign that it reads keys.
    pub fn prompt(&mut self, prompt: &str) {
        self.sees(prompt);
    }

    /// Types `line` and Enter.
    pub fn line(&mut self, line: &str) {
        self.session.send_line(line).expect("type a line");
        self.pause();
    }

    /// Types `keys` as they are (escape sequences included).
    pub fn keys(&mut self, keys: &str) {
        self.session.send(keys).expect("type keys");
        self.pause();
    }

    /// Waits as a person would between keys. A line editor reads what was
    /// typed in chunks: keys that came in the same instant as one that
    /// ends its read (Enter, Ctrl-C) would be read and dropped with it.
    pub fn pause(&self) {
        std::thread::sleep(Duration::from_millis(150));
    }

    fn control(&mut self, code: ControlCode) {
        self.session.send(code).expect("a control key");
        self.pause();
    }

    /// Presses Ctrl-C.
    pub fn ctrl_c(&mut self) {
        self.control(ControlCode::EndOfText);
    }

    /// Presses Ctrl-Z.
    pub fn ctrl_z(&mut self) {
        self.control(ControlCode::Substitute);
    }

    /// Presses Ctrl-D.
    pub fn ctrl_d(&mut self) {
        self.control(ControlCode::EndOfTransmission);
    }

    /// Presses Ctrl-R.
    pub fn ctrl_r(&mut self) {
        self.control(ControlCode::DeviceControl2);
    }

    /// Everything the program writes from now until it ends.
    pub fn rest(&mut self) -> String {
        match self.session.expect(expectrl::Eof) {
            Ok(seen) => String::from_utf8_lossy(seen.as_bytes()).into_owned(),
            Err(e) => panic!("the program did not end: {e}"),
        }
    }

    /// Makes the window `cols` x `rows` (the program gets SIGWINCH).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.session
            .get_process_mut()
            .set_window_size(cols, rows)
            .expect("resize");
    }

    /// Waits for the program to end; its exit code (None if a signal
    /// ended it).
    pub fn exit_code(&mut self) -> Option<i32> {
        let until = std::time::Instant::now() + SEE_WAIT;
        // nix's WaitStatus, which expectrl does not re-export: Exited(pid,
        // code), or StillAlive.
        let status = loop {
            let status = self
                .session
                .get_process()
                .status()
                .expect("the program's status");
            let status = format!("{status:?}");
            if status != "StillAlive" {
                break status;
            }
            if std::time::Instant::now() > until {
                let _ = self.session.get_process_mut().exit(true);
                panic!("the program did not end within {SEE_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        status
            .strip_prefix("Exited(")?
            .rsplit_once(", ")?
            .1
            .strip_suffix(')')?
            .parse()
            .ok()
    }
}

/// Runs `f`, which blocks on a terminal, off the runtime's threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("terminal test")
}
