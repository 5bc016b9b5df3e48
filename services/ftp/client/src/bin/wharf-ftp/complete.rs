//! Tab completion in the file shell: command names, then remote paths
//! (names from the server, asked for through the shell's connection) or
//! local ones, as the command takes them.

use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use wharf_client::editor::Candidate;
use wharf_client::editor::CompleteFn;
use wharf_proto::ftp::{Entry, EntryKind};

use crate::shell::split_words;

/// Commands of the shell, as completed.
const COMMANDS: &[&str] = &[
    "cd", "df", "discard", "exit", "get", "help", "lcd", "lls", "lpwd", "ls", "mget", "mkdir",
    "mput", "mv", "partials", "passwd", "put", "pwd", "quit", "quota", "rm", "rmdir",
];

/// How long completion waits for the server's listing.
const ASK_WAIT: Duration = Duration::from_secs(3);

/// A listing the completer needs: the shell lists `dir` and answers.
pub struct Ask {
    /// The remote directory, as typed (relative to the current one).
    pub dir: String,
    /// Where the names go (empty when the listing failed).
    pub reply: SyncSender<Vec<Entry>>,
}

/// Which side a word names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Remote,
    Local,
}

/// The completion function for the shell; remote listings are asked of
/// the shell through `asks`.
pub fn completer(asks: UnboundedSender<Ask>) -> CompleteFn {
    Box::new(move |line, pos| complete(line, pos, &asks))
}

fn complete(line: &str, pos: usize, asks: &UnboundedSender<Ask>) -> (usize, Vec<Candidate>) {
    let Some(before) = line.get(..pos) else {
        return (pos, Vec::new());
    };
    let start = word_start(before);
    let word = unescape(&before[start..]);
    let Ok(words) = split_words(&before[..start]) else {
        return (pos, Vec::new());
    };
    let Some(cmd) = words.first() else {
        if before.trim_start().starts_with('!') {
            return (pos, Vec::new());
        }
        let names = COMMANDS
            .iter()
            .filter(|c| c.starts_with(&word))
            .map(|c| Candidate {
                display: (*c).to_owned(),
                replacement: format!("{c} "),
            })
            .collect();
        return (start, names);
    };
    // Positional arguments before this one (flags do not count).
    let nth = words[1..].iter().filter(|w| !w.starts_with('-')).count();
    let side = match cmd.as_str() {
        "put" if nth == 0 => Side::Local,
        "mput" | "lcd" | "lls" => Side::Local,
        _ if cmd.starts_with('!') => Side::Local,
        _ => Side::Remote,
    };
    let dirs_only = matches!(cmd.as_str(), "cd" | "lcd" | "lls" | "rmdir");
    let (dir, prefix) = match word.rfind('/') {
        Some(i) => (&word[..=i], &word[i + 1..]),
        None => ("", word.as_str()),
    };
    let entries = match side {
        Side::Local => local_entries(dir),
        Side::Remote => remote_entries(dir, asks),
    };
    let mut candidates: Vec<Candidate> = entries
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .filter(|(name, _)| !name.starts_with('.') || prefix.starts_with('.'))
        .filter(|(_, is_dir)| *is_dir || !dirs_only)
        .map(|(name, is_dir)| {
            let slash = if is_dir { "/" } else { "" };
            Candidate {
                display: format!("{name}{slash}"),
                replacement: format!("{}{slash}", escape(&format!("{dir}{name}"))),
            }
        })
        .collect();
    candidates.sort_by(|a, b| a.display.cmp(&b.display));
    (start, candidates)
}

/// Where the word at the end of `before` starts: after the last space that
/// is neither escaped nor quoted.
fn word_start(before: &str) -> usize {
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in before.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (c, quote) {
            ('\\', q) if q != Some('\'') => escaped = true,
            ('\'' | '"', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => start = i + c.len_utf8(),
            _ => {}
        }
    }
    start
}

/// The word as the shell will read it: quotes and escapes removed (an open
/// quote is taken as closed).
fn unescape(word: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', q) if q != Some('\'') => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            ('\'' | '"', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            (c, _) => out.push(c),
        }
    }
    out
}

/// `name` with the characters the shell splits on escaped.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_whitespace() || matches!(c, '\\' | '\'' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn local_entries(dir: &str) -> Vec<(String, bool)> {
    let dir = if dir.is_empty() { "." } else { dir };
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(Result::ok)
        .map(|e| {
            let is_dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect()
}

fn remote_entries(dir: &str, asks: &UnboundedSender<Ask>) -> Vec<(String, bool)> {
    let (reply, rx) = sync_channel(1);
    let ask = Ask {
        dir: dir.to_owned(),
        reply,
    };
    if asks.send(ask).is_err() {
        return Vec::new();
    }
    rx.recv_timeout(ASK_WAIT)
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.kind == EntryKind::Dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_found_as_the_shell_splits_them() {
        assert_eq!(word_start("get "), 4);
        assert_eq!(word_start("get my\\ fi"), 4);
        assert_eq!(word_start("get \"my fi"), 4);
        assert_eq!(word_start("put a 'b c' d"), 12);
        assert_eq!(unescape("my\\ fi"), "my fi");
        assert_eq!(unescape("\"my fi"), "my fi");
        assert_eq!(escape("a b'c"), "a\\ b\\'c");
    }

    #[test]
    fn commands_then_local_paths() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (start, c) = complete("mk", 2, &tx);
        assert_eq!(start, 0);
        assert_eq!(
            c.iter().map(|c| c.display.as_str()).collect::<Vec<_>>(),
            ["mkdir"]
        );
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("my file.txt"), b"x").expect("file");
        std::fs::create_dir(dir.path().join("sub")).expect("dir");
        let typed = format!("put {}/m", dir.path().display());
        let (start, c) = complete(&typed, typed.len(), &tx);
        assert_eq!(start, 4);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].display, "my file.txt");
        assert_eq!(
            c[0].replacement,
            format!("{}/my\\ file.txt", dir.path().display())
        );
        let typed = format!("lcd {}/", dir.path().display());
        let (_, c) = complete(&typed, typed.len(), &tx);
        assert_eq!(
            c.iter().map(|c| c.display.as_str()).collect::<Vec<_>>(),
            ["sub/"]
        );
    }
}
