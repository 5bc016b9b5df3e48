//! `wharf-exec`: the remote-exec client. With a command, runs it once and
//! exits with its status; without, an interactive prompt that runs one line
//! at a time (also fed from a pipe).

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use wharf_core::Password;
use wharf_core::cli::{client_password, client_user, run_main_failing_with};
use wharf_core::tls::{ClientTls, ClientTlsArgs};
use wharf_exec::client::{ClientError, ExecClient, Outcome, Streams};
use wharf_proto::exec::SignalName;

/// Exit status when wharf-exec itself, or the server, ended the command.
const OWN_FAILURE: u8 = 255;

/// How often the interactive prompt pings while it waits for a line.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Ctrl-C presses forwarded before wharf-exec gives up and disconnects
/// (which kills the command too).
const MAX_INTERRUPTS: u32 = 3;

const AFTER_HELP: &str = "\
The words after -- are joined into one command line that the server runs with
`sh -c` in your home. Its stdout and stderr come back separately, your stdin is
streamed to it (-n: none), Ctrl-C is passed on to it, and wharf-exec exits with its
status (128+N when signal N ended it; 255 when wharf-exec or the server ended it:
cannot connect, refused, time limit, output cap).

Without a command, wharf-exec is a prompt: each line runs as one command (with no
input); `cd DIR` changes the directory later lines start in; `exit` leaves. It reads
standard input when it is not a terminal and then exits 0 only if every line
succeeded, else with the status of the last that failed.
The password comes from WHARF_PASSWORD when set, else it is asked for.

Examples:
  wharf-exec --user alice -- ls -la
  wharf-exec --user alice -- 'cat > notes.txt' < notes.txt
  wharf-exec --user alice -- tar czf - projects > projects.tgz
  wharf-exec --user alice";

/// Wharf remote-exec client: run commands in your home on a Wharf server.
#[derive(Debug, Parser)]
#[command(name = "wharf-exec", version, after_help = AFTER_HELP)]
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
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// The command line to run; without it, a prompt.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_main_failing_with("wharf-exec", OWN_FAILURE, run(args))
}

async fn run(args: Args) -> Result<ExitCode> {
    let user = client_user(args.user.clone())?;
    let tls = args.tls.tls()?;
    let password = client_password(&user, &args.server)?;
    let client = ExecClient::connect(&args.server, &tls, &user, &password)
        .await
        .with_context(|| format!("cannot log in to {} as {user}", args.server))?;
    if args.command.is_empty() {
        return prompt(client, &args, &tls, &user, &password).await;
    }
    one_shot(client, &args.command.join(" "), !args.no_stdin).await
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
    stdin: Option<&mut tokio::io::DuplexStream>,
    interrupts: &mut Interrupts,
) -> Result<Outcome, ClientError> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    interrupts.running(true);
    let outcome = client
        .run(
            command,
            Streams {
                stdin: stdin.map(|s| s as &mut (dyn tokio::io::AsyncRead + Unpin + Send)),
                stdout: &mut stdout,
                stderr: &mut stderr,
                signals: Some(&mut interrupts.rx),
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
    match run_one(&mut client, command, stdin.as_mut(), &mut interrupts).await {
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

/// Quotes `s` for `sh` in single quotes.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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
    password: &Password,
) -> Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let mut interrupts = Interrupts::start()?;
    let mut lines = line_reader();
    let mut cwd: Option<String> = None;
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
            let place = cwd.as_deref().unwrap_or("~");
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
            client = ExecClient::connect(&args.server, tls, user, password)
                .await
                .with_context(|| format!("cannot log in to {} again", args.server))?;
            connected = true;
        }
        let enter = cwd
            .as_deref()
            .map(|dir| format!("cd -- {} || exit 1\n", quote(dir)))
            .unwrap_or_default();
        let is_cd = line == "cd" || line.starts_with("cd ");
        let result = if is_cd {
            let target = line.strip_prefix("cd").unwrap_or("").trim();
            let target = if target.is_empty() { "~" } else { target };
            let mut probe = client.output(&format!("{enter}cd {target} && pwd")).await;
            if let Ok(out) = &mut probe {
                let _ = tokio::io::stderr().write_all(&out.stderr).await;
                if out.outcome.status == 0 {
                    let dir = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
                    cwd = Some(dir);
                }
            }
            probe.map(|out| out.outcome)
        } else {
            run_one(
                &mut client,
                &format!("{enter}{line}"),
                None,
                &mut interrupts,
            )
            .await
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
