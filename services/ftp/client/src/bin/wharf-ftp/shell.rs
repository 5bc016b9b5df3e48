//! The interactive shell: one command per line, from a terminal or a pipe.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::mpsc::UnboundedReceiver;
use wharf_client::editor::Input;
use wharf_client::editor::LineEditor;
use wharf_ftp::client::{Client, PutJob};

use crate::commands::{Cmd, execute, put_target, transfer_options};
use crate::complete::{self, Ask};
use crate::many;
use crate::ui::Ui;

/// One line of the shell.
#[derive(Debug, Parser)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Line {
    #[command(subcommand)]
    cmd: ShellCmd,
}

#[derive(Debug, Subcommand)]
enum ShellCmd {
    #[command(flatten)]
    Cmd(Cmd),
    /// Change directory (`cd ..` at / stays at /).
    Cd {
        /// Directory [default: /].
        path: Option<String>,
    },
    /// Print the current directory.
    Pwd,
    /// Change the local directory [default: $HOME].
    Lcd {
        /// Local directory.
        path: Option<std::path::PathBuf>,
    },
    /// Print the local directory.
    Lpwd,
    /// List a local directory: type, size, modification time, name.
    Lls {
        /// Local directory [default: the local directory].
        path: Option<std::path::PathBuf>,
    },
    /// Leave the shell.
    #[command(visible_alias = "exit", visible_alias = "bye")]
    Quit,
    /// Clear the screen.
    Clear,
}

/// Splits a line into words: spaces separate, quotes group, a backslash
/// escapes the next character.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => word.push(c),
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("a line cannot end with a backslash".into()),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

const HELP: &str = "\
commands:
  ls [PATH] [--json]        list a directory
  cd [PATH] | pwd           change or show the current directory
  mkdir PATH | rmdir PATH   create or remove a directory
  rm PATH                   remove a file
  mv FROM TO                rename or move
  put LOCAL [REMOTE]        upload (resumes an interrupted upload; --restart
                            sends the whole file again; REMOTE/ puts it there)
  put -r DIR [REMOTE]       upload a directory tree
  mput FILE... [-O DIR]     upload many files at once (patterns: *.txt)
  get REMOTE [LOCAL]        download (resumes from LOCAL.part)
  get -r DIR [LOCAL]        download a directory tree
  mget FILE... [-O DIR]     download many files ('*.log' matched on the server's listing)
  quota | df [--json]       your quota: used, held by uploads, free
  passwd                    change your password (asked twice)
  partials [--json]         your interrupted uploads
  discard PATH | --all      drop interrupted uploads, freeing their quota
  lcd [DIR] | lpwd | lls [DIR]   the local directory: change, show, list
  !COMMAND                  run a command here, with sh
  help | quit
Quote names with spaces: put \"my file.txt\"";

/// How to log in again, after Ctrl-C cut a command short.
pub struct Login {
    pub server: String,
    pub tls: wharf_client::tls::ClientTls,
    pub user: String,
    pub credential: wharf_client::Credential,
}

impl Login {
    async fn connect(&self) -> Result<Client> {
        Client::connect(&self.server, &self.tls, &self.user, &self.credential)
            .await
            .map_err(|e| anyhow::Error::new(e).context("cannot log in again"))
    }
}

/// Runs the shell until `quit` or end of input. Reading from a pipe, the exit
/// code is 1 if any command failed. Ctrl-C cancels the command running (a
/// transfer's partial stays, to resume) and the shell goes on, on a new
/// connection in the same directory; at the prompt it is ignored.
/// Where the shell's lines come from.
enum Lines {
    /// A terminal: a line editor, with completion asking for listings.
    Editor {
        editor: LineEditor,
        asks: UnboundedReceiver<Ask>,
    },
    /// A pipe or file, read on a thread of its own (ahead of the commands,
    /// so that consecutive `put`s can be sent as one batch); `back` is a
    /// line looked at and put back, or the error reading the next one.
    Pipe {
        rx: tokio::sync::mpsc::Receiver<std::io::Result<String>>,
        back: Option<std::io::Result<String>>,
    },
}

/// Lines of a script read ahead, at most.
const READ_AHEAD: usize = 256;

/// `put`s of a script sent as one batch, at most.
const MAX_BATCH: usize = 256;

impl Lines {
    fn start() -> Result<Lines> {
        if std::io::stdin().is_terminal() {
            let (tx, asks) = tokio::sync::mpsc::unbounded_channel();
            let editor = LineEditor::start("ftp", complete::completer(tx))
                .context("cannot start the line editor")?;
            return Ok(Lines::Editor { editor, asks });
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(READ_AHEAD);
        // stdin is read on its own thread so the runtime never blocks on it.
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Lines::Pipe { rx, back: None })
    }

    /// The next line of a script if it is read already, without waiting.
    fn ready(&mut self) -> Option<String> {
        let Lines::Pipe { rx, back } = self else {
            return None;
        };
        if back.is_some() {
            return None;
        }
        match rx.try_recv() {
            Ok(Ok(line)) => Some(line),
            Ok(Err(e)) => {
                *back = Some(Err(e));
                None
            }
            Err(_) => None,
        }
    }

    /// Puts back a line [`Lines::ready`] gave: it is the next one.
    fn unread(&mut self, line: String) {
        if let Lines::Pipe { back, .. } = self {
            *back = Some(Ok(line));
        }
    }

    /// Whether a script has lines left (waiting for the next one).
    async fn any_left(&mut self) -> bool {
        match self {
            Lines::Pipe { rx, back } => back.is_some() || rx.recv().await.is_some(),
            Lines::Editor { .. } => false,
        }
    }

    /// The next line (None at the end); on a terminal, after `prompt`,
    /// answering completion's listings meanwhile.
    async fn next(&mut self, prompt: &str, client: &mut Client) -> Result<Option<String>> {
        match self {
            Lines::Pipe { rx, back } => match back.take() {
                Some(line) => line.map(Some).context("cannot read a command"),
                None => rx.recv().await.transpose().context("cannot read a command"),
            },
            Lines::Editor { editor, asks } => {
                editor.ask(prompt);
                loop {
                    tokio::select! {
                        read = editor.next() => {
                            return match read.context("cannot read a command")? {
                                Input::Line(line) => Ok(Some(line)),
                                // Ctrl-C at the prompt: a fresh line.
                                Input::Interrupted => Ok(Some(String::new())),
                                Input::End => Ok(None),
                            };
                        }
                        Some(ask) = asks.recv() => {
                            let dir = (!ask.dir.is_empty()).then_some(ask.dir.as_str());
                            let entries = client.ls(dir).await.unwrap_or_default();
                            let _ = ask.reply.try_send(entries);
                        }
                    }
                }
            }
        }
    }
}

pub async fn run(client: &mut Client, ui: &Ui, login: &mut Login) -> Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let mut cwd = client.pwd().await?;
    let mut failed = false;
    let mut number = 0u64;
    let mut stopped = None;
    let mut lines = Lines::start()?;
    if interactive {
        eprintln!("connected; type `help` for commands (Tab completes, Up and Ctrl-R recall)");
    }
    loop {
        let prompt = format!("wharf:{cwd}> ");
        let line = tokio::select! {
            line = lines.next(&prompt, client) => line?,
            // Lines from a pipe: Ctrl-C between commands is ignored.
            _ = tokio::signal::ctrl_c(), if !interactive => continue,
        };
        let Some(line) = line else { break };
        number += 1;
        if !interactive && let Some(first) = scripted_put(&line, number) {
            let batch = gather_puts(first, &mut lines, &mut number);
            if batch.len() > 1 {
                match run_puts(client, batch, ui, login, &mut cwd).await? {
                    Batch::Done => {}
                    Batch::Failed => failed = true,
                    Batch::Stop(at, line) => {
                        failed = true;
                        stopped = Some((at, line));
                        break;
                    }
                }
                continue;
            }
        }
        // From a pipe, as `sftp -b`: the first failure stops the script,
        // unless its line starts with `-`.
        let (line, may_fail) = match line.trim_start().strip_prefix('-') {
            Some(rest) if !interactive => (rest.to_owned(), true),
            _ => (line, false),
        };
        let stop = !interactive && !may_fail;
        if let Some(command) = line.trim_start().strip_prefix('!') {
            if let Err(e) = local_command(command).await {
                eprintln!("wharf-ftp: {}", wharf_core::cli::describe(e.as_ref()));
                failed = true;
                if stop {
                    stopped = Some((number, line));
                    break;
                }
            }
            continue;
        }
        let words = match split_words(&line) {
            Ok(w) if w.is_empty() => continue,
            Ok(w) => w,
            Err(e) => {
                eprintln!("wharf-ftp: {e}");
                failed = true;
                if stop {
                    stopped = Some((number, line));
                    break;
                }
                continue;
            }
        };
        if words[0] == "help" {
            println!("{HELP}");
            continue;
        }
        let parsed = match Line::try_parse_from(&words) {
            Ok(l) => l,
            Err(e) => {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("bad command");
                eprintln!(
                    "wharf-ftp: {} (type `help`)",
                    first.trim_start_matches("error: ")
                );
                failed = true;
                if stop {
                    stopped = Some((number, line));
                    break;
                }
                continue;
            }
        };
        let result = match parsed.cmd {
            ShellCmd::Quit => break,
            ShellCmd::Clear => {
                use std::io::Write;
                if interactive {
                    print!("\x1b[H\x1b[2J");
                    let _ = std::io::stdout().flush();
                }
                Ok(())
            }
            ShellCmd::Pwd => {
                println!("{cwd}");
                Ok(())
            }
            ShellCmd::Lcd { path } => lcd(path),
            ShellCmd::Lpwd => std::env::current_dir()
                .map(|d| println!("{}", d.display()))
                .context("lpwd"),
            ShellCmd::Lls { path } => lls(path.as_deref()),
            ShellCmd::Cd { path } => match client.cd(path.as_deref().unwrap_or("/")).await {
                Ok(now) => {
                    cwd = now;
                    Ok(())
                }
                Err(e) => Err(anyhow::Error::new(e).context("cd")),
            },
            ShellCmd::Cmd(cmd) => {
                let cancelled = tokio::select! {
                    result = execute(client, cmd, ui, login) => Err(result),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                };
                match cancelled {
                    Err(result) => result,
                    Ok(()) => {
                        // The connection is out of step mid-command: a new one.
                        eprintln!(
                            "wharf-ftp: cancelled (what was transferred is kept: run the same command to resume)"
                        );
                        *client = login.connect().await?;
                        cwd = client.cd(&cwd).await?;
                        // Cancelled on purpose: the script goes on.
                        failed = true;
                        continue;
                    }
                }
            }
        };
        if let Err(e) = result {
            eprintln!(
                "wharf-ftp: {}",
                wharf_core::cli::describe(e.as_ref()).replace('\n', " ")
            );
            failed = true;
            if e.downcast_ref::<wharf_ftp::client::ClientError>()
                .is_some_and(wharf_ftp::client::ClientError::is_connection_lost)
            {
                anyhow::bail!("the connection to the server is lost");
            }
            if stop {
                stopped = Some((number, line));
                break;
            }
        }
    }
    // Said only when lines were left unrun.
    if let Some((number, line)) = stopped
        && lines.any_left().await
    {
        eprintln!(
            "wharf-ftp: stopped at line {number} ({}): the lines after it were not run (start a line with `-` to let it fail)",
            line.trim()
        );
    }
    Ok(if failed && !interactive {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A `put` line of a script, to be sent in a batch.
struct ScriptedPut {
    number: u64,
    line: String,
    /// The line starts with `-`: its failure does not stop the script.
    may_fail: bool,
    job: PutJob,
}

/// `line` (number `number`) as a put that can go in a batch: a plain
/// `put LOCAL [REMOTE]` of a local file that is there. Anything else is
/// run on its own, as before, and says its own errors.
fn scripted_put(line: &str, number: u64) -> Option<ScriptedPut> {
    let (text, may_fail) = match line.trim_start().strip_prefix('-') {
        Some(rest) => (rest, true),
        None => (line, false),
    };
    let words = split_words(text).ok()?;
    let Ok(Line {
        cmd:
            ShellCmd::Cmd(Cmd::Put {
                local,
                remote,
                restart: false,
                recursive: false,
            }),
    }) = Line::try_parse_from(&words)
    else {
        return None;
    };
    if !std::fs::metadata(&local).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let remote = put_target(&local, remote).ok()?;
    Some(ScriptedPut {
        number,
        line: line.to_owned(),
        may_fail,
        job: PutJob { local, remote },
    })
}

/// `first` and the `put` lines right after it that are read already.
fn gather_puts(first: ScriptedPut, lines: &mut Lines, number: &mut u64) -> Vec<ScriptedPut> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let Some(line) = lines.ready() else { break };
        match scripted_put(&line, *number + 1) {
            Some(put) => {
                *number += 1;
                batch.push(put);
            }
            None => {
                lines.unread(line);
                break;
            }
        }
    }
    batch
}

/// How a batch of a script's `put`s went.
enum Batch {
    Done,
    /// Some failed on lines that may fail.
    Failed,
    /// One failed on line n (the script stops there).
    Stop(u64, String),
}

/// Sends a script's consecutive `put`s pipelined, as `mput` does (a script
/// written for `sftp -b` is no slower than one `mput`), and reports each
/// as its own line would. A failure stops the script, as it would have on
/// its own line; the puts after it in the batch were sent already, and
/// their lines say so.
async fn run_puts(
    client: &mut Client,
    batch: Vec<ScriptedPut>,
    ui: &Ui,
    login: &mut Login,
    cwd: &mut String,
) -> Result<Batch> {
    let jobs = batch.iter().map(|p| p.job.clone()).collect();
    let last = batch.last().map_or(0, |p| p.number);
    let outcomes = tokio::select! {
        outcomes = many::put_each(client, jobs, transfer_options(ui), ui) => outcomes?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "wharf-ftp: cancelled (what was transferred is kept: run the same script to resume)"
            );
            *client = login.connect().await?;
            *cwd = client.cd(cwd).await?;
            return Ok(Batch::Failed);
        }
    };
    let mut how = Batch::Done;
    for (put, outcome) in batch.into_iter().zip(outcomes) {
        match outcome {
            Ok(done) => println!(
                "{} -> {} ({} bytes, md5 {})",
                put.job.local.display(),
                done.path,
                done.size,
                done.md5
            ),
            Err(e) => {
                let e = anyhow::Error::new(e).context(format!("put {}", put.job.local.display()));
                eprintln!(
                    "wharf-ftp: {}",
                    wharf_core::cli::describe(e.as_ref()).replace('\n', " ")
                );
                how = match how {
                    Batch::Stop(..) => how,
                    _ if !put.may_fail => Batch::Stop(put.number, put.line),
                    _ => Batch::Failed,
                };
            }
        }
    }
    if let Batch::Stop(at, _) = &how
        && *at < last
    {
        eprintln!(
            "wharf-ftp: lines {} to {last} were puts sent with line {at}, before it failed (reported above)",
            at + 1
        );
    }
    Ok(how)
}

/// `lcd`: the local directory, `$HOME` without one.
fn lcd(path: Option<std::path::PathBuf>) -> Result<()> {
    let path = match path {
        Some(p) => p,
        None => std::env::var_os("HOME")
            .map(std::path::PathBuf::from)
            .context("lcd: HOME is not set; give a directory")?,
    };
    std::env::set_current_dir(&path).with_context(|| format!("lcd {}", path.display()))
}

/// `lls`: a local directory listed as `ls` lists a remote one.
fn lls(path: Option<&std::path::Path>) -> Result<()> {
    use wharf_proto::ftp::{Entry, EntryKind};
    let dir = path.unwrap_or(std::path::Path::new("."));
    let what = || format!("lls {}", dir.display());
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).with_context(what)? {
        let e = e.with_context(what)?;
        let Ok(meta) = std::fs::metadata(e.path()) else {
            continue; // a dangling link
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
        entries.push(Entry {
            name: e.file_name().to_string_lossy().into_owned(),
            kind: if meta.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
            size: if meta.is_dir() { 0 } else { meta.len() },
            mtime: wharf_core::time::rfc3339(mtime),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    crate::ui::print_listing(&entries);
    Ok(())
}

/// `!COMMAND`: runs `sh -c COMMAND` here, its output on the terminal; it
/// does not read the shell's input (commands may come from a pipe).
async fn local_command(command: &str) -> Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .context("cannot run sh")?;
    if !status.success() {
        anyhow::bail!("!{command}: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_words("put a b").ok(),
            Some(vec!["put".into(), "a".into(), "b".into()])
        );
        assert_eq!(
            split_words("  put  \"my file.txt\"  'x y' ").ok(),
            Some(vec!["put".into(), "my file.txt".into(), "x y".into()])
        );
        assert_eq!(
            split_words(r"get a\ b").ok(),
            Some(vec!["get".into(), "a b".into()])
        );
        assert_eq!(
            split_words(r#"mv "q\"uote" ''"#).ok(),
            Some(vec!["mv".into(), "q\"uote".into(), "".into()])
        );
        assert!(split_words("put \"open").is_err());
        assert!(split_words("put x\\").is_err());
    }
}
