//! Line editing for the interactive clients (rustyline): arrows, Emacs
//! keys, history kept per client in the user's data directory (with
//! Ctrl-R), Tab completion from a function the client gives, and lines
//! printed above the one being typed (chat's incoming messages).
//!
//! rustyline blocks, so the editor lives on a thread of its own; the client
//! asks it for a line with [`LineEditor::read`] and goes on serving its
//! connection meanwhile (a completion function may ask that connection for
//! names through a channel the client serves while it waits).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::{DefaultHistory, History};
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, ExternalPrinter};
use tokio::sync::mpsc;

/// Entries kept in a history file.
const HISTORY_SIZE: usize = 2000;

/// What the editor read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its end.
    Line(String),
    /// Ctrl-C at the prompt: the line typed so far is dropped.
    Interrupted,
    /// Ctrl-D on an empty line, or the end of input.
    End,
}

/// A completion offered on Tab: what the list shows and what replaces the
/// word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Shown in the list of choices.
    pub display: String,
    /// Put in place of the word being completed.
    pub replacement: String,
}

/// Completes `line` at byte `pos`: where the word being completed starts,
/// and the candidates for it.
pub type CompleteFn = Box<dyn Fn(&str, usize) -> (usize, Vec<Candidate>) + Send>;

struct Helper {
    complete: CompleteFn,
}

impl Completer for Helper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, candidates) = (self.complete)(line, pos);
        let pairs = candidates
            .into_iter()
            .map(|c| Pair {
                display: c.display,
                replacement: c.replacement,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Helper {
    type Hint = String;
}
impl Highlighter for Helper {}
impl Validator for Helper {}
impl rustyline::Helper for Helper {}

/// Prints whole lines above the line being typed (or plainly, when no line
/// is being read). Cheap to clone.
#[derive(Clone)]
pub struct Printer {
    inner: Arc<Mutex<Option<Box<dyn ExternalPrinter + Send>>>>,
}

impl Printer {
    /// Prints `line` (a newline is added).
    pub fn line(&self, line: impl Into<String>) {
        let mut line = line.into();
        line.push('\n');
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let printed = guard
            .as_mut()
            .is_some_and(|p| p.print(line.clone()).is_ok());
        if !printed {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    }
}

/// The history file of the client `name`: `$XDG_DATA_HOME/wharf/NAME_history`,
/// else `~/.local/share/wharf/NAME_history`.
pub fn history_file(name: &str) -> Option<PathBuf> {
    let data = wharf_core::cli::user_dir("XDG_DATA_HOME", ".local/share")?;
    Some(data.join(format!("{name}_history")))
}

/// Makes the history file private (it may hold anything typed) before
/// rustyline first writes it.
fn prepare_history(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    Ok(())
}

/// A line editor on its own thread.
pub struct LineEditor {
    prompts: std::sync::mpsc::Sender<String>,
    lines: mpsc::Receiver<std::io::Result<Input>>,
    printer: Printer,
    /// Lines pasted together with the one returned, each given in turn as
    /// if typed (shown after its prompt).
    pasted: std::collections::VecDeque<String>,
}

impl LineEditor {
    /// Starts an editor for the client `name` (its history file, see
    /// [`history_file`]), completing with `complete`.
    pub fn start(name: &str, complete: CompleteFn) -> std::io::Result<LineEditor> {
        let config = Config::builder()
            .max_history_size(HISTORY_SIZE)
            .map_err(std::io::Error::other)?
            .history_ignore_dups(true)
            .map_err(std::io::Error::other)?
            .history_ignore_space(true)
            .completion_type(rustyline::CompletionType::List)
            .auto_add_history(false)
            .build();
        let mut editor: Editor<Helper, DefaultHistory> =
            Editor::with_config(config).map_err(std::io::Error::other)?;
        editor.set_helper(Some(Helper { complete }));
        let history = history_file(name).filter(|p| prepare_history(p).is_ok());
        if let Some(path) = &history {
            // An empty or unreadable history is no reason not to start.
            let _ = editor.load_history(path);
        }
        let printer = Printer {
            inner: Arc::new(Mutex::new(
                editor
                    .create_external_printer()
                    .ok()
                    .map(|p| Box::new(p) as Box<dyn ExternalPrinter + Send>),
            )),
        };
        let (prompts, prompt_rx) = std::sync::mpsc::channel::<String>();
        let (line_tx, lines) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("line-editor".into())
            .spawn(move || {
                while let Ok(prompt) = prompt_rx.recv() {
                    let read = match editor.readline(&prompt) {
                        Ok(line) => {
                            if !line.trim().is_empty()
                                && editor.add_history_entry(line.as_str()).unwrap_or(false)
                                && let Some(path) = &history
                            {
                                let _ = editor.history_mut().append(path);
                            }
                            Ok(Input::Line(line))
                        }
                        Err(ReadlineError::Interrupted) => Ok(Input::Interrupted),
                        Err(ReadlineError::Eof) => Ok(Input::End),
                        Err(ReadlineError::Io(e)) => Err(e),
                        Err(e) => Err(std::io::Error::other(e)),
                    };
                    let end = !matches!(read, Ok(Input::Line(_) | Input::Interrupted));
                    if line_tx.blocking_send(read).is_err() || end {
                        break;
                    }
                }
            })?;
        Ok(LineEditor {
            prompts,
            lines,
            printer,
            pasted: std::collections::VecDeque::new(),
        })
    }

    /// Reads a line after `prompt`.
    pub async fn read(&mut self, prompt: &str) -> std::io::Result<Input> {
        self.ask(prompt);
        self.next().await
    }

    /// Shows `prompt` and starts reading a line; [`LineEditor::next`] gets
    /// it.
    pub fn ask(&self, prompt: &str) {
        if let Some(line) = self.pasted.front() {
            // A pasted line runs as typed: shown after its prompt.
            self.printer.line(format!("{prompt}{line}"));
            return;
        }
        // A stopped editor thread: `next` says End.
        let _ = self.prompts.send(prompt.to_owned());
    }

    /// The line asked for by [`LineEditor::ask`]. Cancel-safe: a line not
    /// yet come is not lost.
    pub async fn next(&mut self) -> std::io::Result<Input> {
        if let Some(line) = self.pasted.pop_front() {
            return Ok(Input::Line(line));
        }
        match self.lines.recv().await {
            // Several lines pasted at once (bracketed paste gives them as
            // one): the first now, the others one by one after it.
            Some(Ok(Input::Line(line))) if line.contains(['\n', '\r']) => {
                let mut lines = line
                    .split(['\n', '\r'])
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned);
                let first = lines.next().unwrap_or_default();
                self.pasted.extend(lines);
                Ok(Input::Line(first))
            }
            Some(read) => read,
            None => Ok(Input::End),
        }
    }

    /// Prints lines above the one being typed.
    pub fn printer(&self) -> Printer {
        self.printer.clone()
    }
}
