//! `wharf-exec`: the remote-exec client. With a command, runs it once and
//! exits with its status; without, on a terminal, a remote login shell on a
//! pseudo-terminal (like `ssh`); without, fed from a pipe, one command per
//! line.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use wharf_client::Credential;
use wharf_client::cli::ClientFields;
use wharf_client::cli::client_user;
use wharf_client::cli::log_in;
use wharf_client::cli::parse_client;
use wharf_client::cli::run_main_failing_with;
use wharf_client::cli::{LoginArgs, current_password};
use wharf_client::tls::ClientTls;
use wharf_client::tls::ClientTlsArgs;
use wharf_core::cli::describe;
use wharf_exec::client::{ClientError, Command, ExecClient, Outcome, Streams};
use wharf_proto::exec::{SignalName, Tty, WindowSize};

/// Exit status when wharf-exec itself, or the server, ended the command.
const OWN_FAILURE: u8 = 255;

/// How often the interactive prompt pings while it waits for a line.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Ctrl-C presses forwarded before wharf-exec gives up and disconnects
/// (which kills the command too).
const MAX_INTERRUPTS: u32 = 3;

const AFTER_HELP: &str = "\
The words of COMMAND (after the options, with or without --) are joined into
one command line that the server runs with
`sh -c` in your home. Its stdout and stderr come back separately, your stdin is
streamed to it (-n: none), Ctrl-C is passed on to it, and wharf-exec exits with its
status (128+N when signal N ended it; 255 when wharf-exec or the server ended it:
cannot connect, refused, time limit, output cap).

Without a command, on a terminal, you get your login shell on the server, on a
terminal of its own like ssh gives: line editing, job control, `top`, `vim` and
`less` work, Ctrl-C goes to the remote program, the window's size follows yours.
It ends after the server's idle limit (30 minutes unless set otherwise) without
a key typed. -t does the same for a command (`wharf-exec -t -- top`); -T never
asks for a terminal.

Without a command and without a terminal (-T, or lines from a pipe), each line
runs as one command with no input; `cd DIR` changes the directory later lines
start in; `exit` leaves. wharf-exec then exits 0 only if every line succeeded,
else with the status of the last that failed.
It logs in by key (--identity, ssh-agent, ~/.ssh/id_ed25519) when the user has
one (admin-cli user key add); else the password comes from WHARF_PASSWORD when
set, or is asked for.

Exit status: the command's (or the shell's) own; 128+N when signal N ended it;
255 when wharf-exec could not connect or log in, or the server ended the command.

Examples:
  wharf-exec --user alice
  wharf-exec --user alice ls -la
  wharf-exec --user alice -t top
  wharf-exec --user alice -- 'cat > notes.txt' < notes.txt
  wharf-exec --user alice -- tar czf - projects > projects.tgz
  wharf-exec --user alice passwd
  printf 'cd projects\\nls\\n' | wharf-exec --user alice";

/// Wharf remote-exec client: run commands in your home on a Wharf server.
#[derive(Debug, Parser)]
#[command(
    name = "wharf-exec",
    version,
    after_help = AFTER_HELP,
    override_usage = "wharf-exec [OPTIONS] [COMMAND]...\n       wharf-exec [OPTIONS] passwd [--password-stdin]",
    subcommand_precedence_over_arg = true
)]
struct Args {
    /// Server to connect to.
    #[arg(
        long,
        env = "WHARF_EXEC_SERVER",
        default_value = "127.0.0.1:2123",
        value_name = "HOST:PORT"
    )]
    server: String,
    /// User to log in as [default: $USER].
    #[arg(long, env = "WHARF_USER", value_name = "NAME")]
    user: Option<String>,
    /// Give the command no input instead of this terminal's or pipe's.
    #[arg(short = 'n', long)]
    no_stdin: bool,
    /// Run the command on a terminal of its own on the server (as ssh -t),
    /// even when this side has none.
    #[arg(short = 't', long, conflicts_with_all = ["no_tty", "no_stdin"])]
    tty: bool,
    /// Never ask for a terminal: without a command, one command per line.
    #[arg(short = 'T', long)]
    no_tty: bool,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    docs: wharf_core::cli::DocsArgs,
    /// The command line to run, as with ssh (`wharf-exec --user alice ls
    /// -la`; `--` before it is allowed); without it, a prompt. Options of
    /// wharf-exec come before it: what follows its first word is the
    /// command's.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Change your password: the new one is asked twice (or read from one
    /// line of standard input with --password-stdin); it takes effect at
    /// the next login, in every service.
    Passwd {
        /// Read the new password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

fn main() -> ExitCode {
    let args = parse_client::<Args>("wharf-exec", "exec", i32::from(OWN_FAILURE), |a| {
        ClientFields {
            server: &mut a.server,
            user: &mut a.user,
            ca: &mut a.tls.ca,
            docs: &a.docs,
        }
    });
    run_main_failing_with("wharf-exec", OWN_FAILURE, run(args))
}

async fn run(args: Args) -> Result<ExitCode> {
    let user = client_user(args.user.clone())?;
    let tls = args.tls.tls()?;
    let (server, tls_ref, name) = (&args.server, &tls, &user);
    let (mut client, credential) = log_in(
        &user,
        &args.server,
        &args.login,
        |c| async move { ExecClient::connect(server, tls_ref, name, &c).await },
        |e: &ClientError| e.code() == Some(wharf_proto::ErrorCode::AuthFailed),
    )
    .await?;
    if let Some(Action::Passwd { password_stdin }) = args.action {
        let old = current_password(&credential, &user, &args.server)?;
        let new = wharf_core::cli::read_new_password(&user, password_stdin)?;
        client
            .passwd(&old, &new)
            .await
            .context("the password was not changed")?;
        eprintln!("password changed for {user}; use the new one from the next login on");
        let _ = client.quit().await;
        return Ok(ExitCode::SUCCESS);
    }
    let command = args.command.join(" ");
    let here = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if args.tty || (command.is_empty() && here && !args.no_tty) {
        return on_terminal(client, &command).await;
    }
    if command.is_empty() {
        return prompt(client, &args, &tls, &user, &credential).await;
    }
    one_shot(client, &command, !args.no_stdin).await
}

/// Forwards Ctrl-C (and TERM, HUP) to the running command; with no command
/// running, or after [`MAX_INTERRUPTS`] unheeded presses, exits (a
/// disconnect kills the command too).
struct Interrupts {
    rx: mpsc::UnboundedReceiver<SignalName>,
    state: Arc<InterruptState>,
}

#[derive(Default)]
struct InterruptState {
    running: AtomicBool,
    count: AtomicU32,
}

impl Interrupts {
    fn start() -> Result<Interrupts> {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(InterruptState::default());
        for (kind, name) in [
            (SignalKind::interrupt(), SignalName::Int),
            (SignalKind::terminate(), SignalName::Term),
            (SignalKind::hangup(), SignalName::Hup),
        ] {
            let mut stream = signal(kind).context("cannot catch signals")?;
            let tx = tx.clone();
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if !state.running.load(Ordering::SeqCst) {
                        std::process::exit(130);
                    }
                    if state.count.fetch_add(1, Ordering::SeqCst) >= MAX_INTERRUPTS {
                        eprintln!(
                            "wharf-exec: the command ignores signals; disconnecting, which kills it"
                        );
                        std::process::exit(130);
                    }
                    if tx.send(name).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Interrupts { rx, state })
    }

    /// A command starts (true) or ended (false).
    fn running(&mut self, running: bool) {
        while self.rx.try_recv().is_ok() {}
        self.state.count.store(0, Ordering::SeqCst);
        self.state.running.store(running, Ordering::SeqCst);
    }
}

/// This process's stdin as an async reader, read on a thread of its own (a
/// blocked terminal read must never hold up the exit).
fn stdin_reader() -> tokio::io::DuplexStream {
    let (mut w, r) = tokio::io::duplex(256 * 1024);
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if handle.block_on(w.write_all(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping the writer is the command's EOF.
    });
    r
}

async fn run_one(
    client: &mut ExecClient,
    command: &str,
    cwd: Option<&str>,
    stdin: Option<&mut tokio::io::DuplexStream>,
    interrupts: &mut Interrupts,
) -> Result<Outcome, ClientError> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    interrupts.running(true);
    let run = Command {
        line: command,
        cwd,
        tty: None,
        report_cwd: false,
    };
    let outcome = client
        .run_command(
            run,
            Streams {
                stdin: stdin.map(|s| s as &mut (dyn tokio::io::AsyncRead + Unpin + Send)),
                stdout: &mut stdout,
                stderr: &mut stderr,
                signals: Some(&mut interrupts.rx),
                resizes: None,
            },
        )
        .await;
    interrupts.running(false);
    outcome
}

fn exit_status(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(OWN_FAILURE))
}

async fn one_shot(mut client: ExecClient, command: &str, with_stdin: bool) -> Result<ExitCode> {
    let mut interrupts = Interrupts::start()?;
    let mut stdin = with_stdin.then(stdin_reader);
    match run_one(&mut client, command, None, stdin.as_mut(), &mut interrupts).await {
        Ok(outcome) => {
            let _ = client.quit().await;
            Ok(exit_status(outcome.status))
        }
        Err(e) => {
            eprintln!("wharf-exec: {e}");
            Ok(ExitCode::from(OWN_FAILURE))
        }
    }
}

/// This terminal in raw mode (keys go to the remote terminal as typed,
/// Ctrl-C included) until dropped, which puts it back as it was.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("cannot read this terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Drain, &raw)
            .context("cannot put this terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Drain, &self.saved);
    }
}

/// This side's window size, if it has a window.
fn window_size() -> Option<WindowSize> {
    let size = tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some(WindowSize {
        cols: size.ws_col,
        rows: size.ws_row,
    })
}

/// The window's new sizes, as they change (SIGWINCH).
fn window_changes() -> Result<mpsc::UnboundedReceiver<WindowSize>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut winch = signal(SignalKind::window_change()).context("cannot catch SIGWINCH")?;
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some(size) = window_size()
                && tx.send(size).is_err()
            {
                break;
            }
        }
    });
    Ok(rx)
}

/// Runs `command` (empty: the login shell) on a terminal on the server,
/// this terminal in raw mode meanwhile, as `ssh -t` does.
async fn on_terminal(mut client: ExecClient, command: &str) -> Result<ExitCode> {
    let tty = Tty {
        term: std::env::var("TERM")
            .ok()
            .filter(|t| Tty::term_is_valid(t))
            .unwrap_or_else(|| "dumb".to_owned()),
        size: window_size().unwrap_or(WindowSize { cols: 80, rows: 24 }),
    };
    let mut interrupts = Interrupts::start()?;
    let mut resizes = window_changes()?;
    let mut stdin = stdin_reader();
    let raw = if std::io::stdin().is_terminal() {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    interrupts.running(true);
    let run = Command {
        line: command,
        cwd: None,
        tty: Some(tty),
        report_cwd: false,
    };
    let outcome = client
        .run_command(
            run,
            Streams {
                stdin: Some(&mut stdin),
                stdout: &mut stdout,
                stderr: &mut stderr,
                signals: Some(&mut interrupts.rx),
                resizes: Some(&mut resizes),
            },
        )
        .await;
    drop(raw);
    match outcome {
        Ok(outcome) => {
            let _ = client.quit().await;
            Ok(exit_status(outcome.status))
        }
        Err(e) => {
            eprintln!("\nwharf-exec: {}", describe(&e));
            Ok(ExitCode::from(OWN_FAILURE))
        }
    }
}

/// How the pipe-mode prompt shows `dir`: beneath `home` as `~/...`.
fn shown_dir(dir: &str, home: &str) -> String {
    match dir.strip_prefix(home) {
        Some("") => "~".to_owned(),
        Some(rest) if rest.starts_with('/') => format!("~{rest}"),
        _ => dir.to_owned(),
    }
}

/// A line read by the prompt.
enum Input {
    Line(String),
    End,
}

fn line_reader() -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        let mut lines = std::io::stdin().lines();
        loop {
            let input = match lines.next() {
                Some(Ok(line)) => Input::Line(line),
                Some(Err(e)) => {
                    eprintln!("wharf-exec: cannot read standard input: {e}");
                    Input::End
                }
                None => Input::End,
            };
            let end = matches!(input, Input::End);
            if tx.blocking_send(input).is_err() || end {
                break;
            }
        }
    });
    rx
}

async fn prompt(
    mut client: ExecClient,
    args: &Args,
    tls: &ClientTls,
    user: &str,
    credential: &Credential,
) -> Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let mut interrupts = Interrupts::start()?;
    let mut lines = line_reader();
    // The directory later lines start in, as commands see it, and as the
    // prompt shows it.
    let mut cwd: Option<(String, String)> = None;
    let mut failed: Option<i32> = None;
    let mut connected = true;
    if interactive {
        eprintln!(
            "Connected to {} as {user}. Each line runs in your home with sh -c; cd DIR, exit.",
            args.server
        );
    }
    loop {
        if interactive {
            let place = cwd.as_ref().map_or("~", |(_, shown)| shown.as_str());
            print!("{user}@{}:{place}$ ", args.server);
            let _ = std::io::stdout().flush();
        }
        let line = loop {
            tokio::select! {
                input = lines.recv() => break input,
                _ = tokio::time::sleep(KEEPALIVE), if connected => {
                    connected = client.ping().await.is_ok();
                }
            }
        };
        let line = match line {
            Some(Input::Line(line)) => line,
            Some(Input::End) | None => break,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "exit" || line == "quit" {
            break;
        }
        if !connected {
            client = ExecClient::connect(&args.server, tls, user, credential)
                .await
                .with_context(|| format!("cannot log in to {} again", args.server))?;
            connected = true;
        }
        let dir = cwd.as_ref().map(|(dir, _)| dir.as_str());
        let is_cd = line == "cd" || line.starts_with("cd ");
        let result = if is_cd {
            // The shell runs the line as typed (and the server records it
            // so); the new directory and the home come back after its
            // output, a line each.
            let probe = Command {
                line,
                cwd: dir,
                tty: None,
                report_cwd: true,
            };
            let mut probe = client.output_of(probe).await;
            if let Ok(out) = &mut probe {
                let _ = tokio::io::stderr().write_all(&out.stderr).await;
                let text = String::from_utf8_lossy(&out.stdout);
                let lines: Vec<&str> = text.lines().collect();
                if out.outcome.status == 0
                    && let [said @ .., dir, home] = lines.as_slice()
                {
                    // What the line itself printed, then where it led.
                    for l in said {
                        println!("{l}");
                    }
                    cwd = Some(((*dir).to_owned(), shown_dir(dir, home)));
                }
            }
            probe.map(|out| out.outcome)
        } else {
            run_one(&mut client, line, dir, None, &mut interrupts).await
        };
        match result {
            Ok(outcome) if outcome.status == 0 => {}
            Ok(outcome) => {
                if interactive {
                    eprintln!("[exit {}]", outcome.status);
                }
                failed = Some(outcome.status);
            }
            Err(e) => {
                eprintln!("wharf-exec: {e}");
                failed = Some(i32::from(OWN_FAILURE));
                if !matches!(e, ClientError::Server { .. }) {
                    connected = false;
                }
            }
        }
    }
    if connected {
        let _ = client.quit().await;
    }
    Ok(failed.map_or(ExitCode::SUCCESS, exit_status))
}
