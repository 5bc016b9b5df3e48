//! `mput` and `put -r`: many files on one connection, pipelined; `mget`
//! and `get -r`: many files down, one after the other, each resumable.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use wharf_core::size::format_size;
use wharf_ftp::client::{
    Client, ClientError, Progress, PutJob, TransferOptions, Transferred, Within,
};
use wharf_proto::ErrorCode;
use wharf_proto::ftp::EntryKind;

use crate::ui::{Bar, Printer, Ui};

/// What to upload: directories to create first (parents before children),
/// then the files, and their total size.
#[derive(Debug, Default)]
pub struct Plan {
    dirs: Vec<String>,
    jobs: Vec<PutJob>,
    bytes: u64,
}

/// `remote` joined with `name` (`remote` empty: just `name`).
fn join(remote: &str, name: &str) -> String {
    match remote.trim_end_matches('/') {
        "" if remote.starts_with('/') => format!("/{name}"),
        "" => name.to_owned(),
        dir => format!("{dir}/{name}"),
    }
}

/// The name a local path has, as UTF-8 (the remote side needs one).
pub fn name_of(path: &Path) -> Result<&str> {
    path.file_name().and_then(|n| n.to_str()).with_context(|| {
        format!(
            "{} has no usable file name (it must be UTF-8); rename it or give the remote path",
            path.display()
        )
    })
}

/// The local files `patterns` name: each a path, or a pattern (`*`, `?`,
/// `[...]`) matched here, since the file shell has no shell to expand it.
pub fn expand(patterns: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in patterns {
        let text = p.to_string_lossy();
        if p.exists() || !text.contains(['*', '?', '[']) {
            files.push(p.clone());
            continue;
        }
        let matches = glob::glob(&text).with_context(|| format!("bad pattern {text}"))?;
        let before = files.len();
        for m in matches {
            files.push(m.with_context(|| format!("cannot read what {text} matches"))?);
        }
        if files.len() == before {
            bail!("no local file matches {text}");
        }
    }
    Ok(files)
}

impl Plan {
    /// Each of `files` into remote directory `to` (the current one when
    /// absent), under its own name.
    pub fn files(files: &[PathBuf], to: Option<&str>) -> Result<Plan> {
        let mut plan = Plan::default();
        for local in files {
            let meta = std::fs::metadata(local)
                .with_context(|| format!("cannot read {}", local.display()))?;
            if meta.is_dir() {
                bail!(
                    "{} is a directory; use put -r to upload a tree",
                    local.display()
                );
            }
            plan.bytes += meta.len();
            plan.jobs.push(PutJob {
                local: local.clone(),
                remote: join(to.unwrap_or(""), name_of(local)?),
            });
        }
        Ok(plan)
    }

    /// The tree under `root` into `remote` (created if missing). Links to
    /// files are followed; links to directories are skipped (they could
    /// loop), with a note.
    pub fn tree(root: &Path, remote: &str) -> Result<Plan> {
        if !std::fs::metadata(root)
            .with_context(|| format!("cannot read {}", root.display()))?
            .is_dir()
        {
            bail!(
                "{} is not a directory; put -r uploads a tree",
                root.display()
            );
        }
        let mut plan = Plan::default();
        let mut stack = vec![(root.to_path_buf(), remote.trim_end_matches('/').to_owned())];
        while let Some((dir, rdir)) = stack.pop() {
            if !rdir.is_empty() {
                plan.dirs.push(rdir.clone());
            }
            let mut entries = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
                .with_context(|| format!("cannot list {}", dir.display()))?;
            entries.sort();
            let mut subdirs = Vec::new();
            for path in entries {
                let name = name_of(&path)?;
                let link = std::fs::symlink_metadata(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .file_type()
                    .is_symlink();
                let meta = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("wharf-ftp: skipping {}: {e}", path.display());
                        continue;
                    }
                };
                if meta.is_dir() && link {
                    eprintln!(
                        "wharf-ftp: skipping {}: a link to a directory",
                        path.display()
                    );
                } else if meta.is_dir() {
                    subdirs.push((path.clone(), join(&rdir, name)));
                } else if meta.is_file() {
                    plan.bytes += meta.len();
                    plan.jobs.push(PutJob {
                        remote: join(&rdir, name),
                        local: path,
                    });
                } else {
                    eprintln!("wharf-ftp: skipping {}: not a regular file", path.display());
                }
            }
            // Popped in name order.
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(plan)
    }

    /// Creates the directories, uploads the files, prints a line for each
    /// and a summary; fails if any file did.
    pub async fn run(self, client: &mut Client, opts: TransferOptions, ui: &Ui) -> Result<()> {
        for dir in &self.dirs {
            match client.mkdir(dir).await {
                Ok(()) => {}
                Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {}
                Err(e) => return Err(e).with_context(|| format!("mkdir {dir}")),
            }
        }
        let (mut bar, mut tally) = Tally::begin(ui, self.jobs.len(), self.bytes);
        let mut report = |job: PutJob, result: Result<Transferred, ClientError>| match result {
            Ok(done) => tally.done(&job.local.display().to_string(), &done.path, &done),
            Err(e) => tally.failed(&format!("put {}: {e}", job.local.display())),
        };
        let outcome = client.put_all(self.jobs, opts, &mut bar, &mut report).await;
        bar.finish();
        outcome.context("the connection to the server was lost; run the same command again to send what is missing")?;
        tally.end("sent")
    }
}

/// Uploads `jobs` pipelined on one connection, as `mput` does, under one
/// progress bar, and gives each its outcome, in the order of `jobs`
/// (reported by the caller). Fails only when the connection is lost.
pub async fn put_each(
    client: &mut Client,
    jobs: Vec<PutJob>,
    opts: TransferOptions,
    ui: &Ui,
) -> Result<Vec<Result<Transferred, ClientError>>> {
    let bytes = jobs
        .iter()
        .map(|j| std::fs::metadata(&j.local).map_or(0, |m| m.len()))
        .sum();
    let mut bar = Bar::new(ui, &format!("{} files", jobs.len()));
    bar.begin(bytes, 0);
    // A job's outcome goes to the first of its equals not yet answered (a
    // script may put the same file twice): the server answers in order.
    let mut waiting: Vec<Option<PutJob>> = jobs.iter().cloned().map(Some).collect();
    let mut outcomes: Vec<Option<Result<Transferred, ClientError>>> =
        jobs.iter().map(|_| None).collect();
    let mut report = |job: PutJob, result: Result<Transferred, ClientError>| {
        if let Some(i) = waiting.iter().position(|w| w.as_ref() == Some(&job)) {
            waiting[i] = None;
            outcomes[i] = Some(result);
        }
    };
    let sent = client.put_all(jobs, opts, &mut bar, &mut report).await;
    bar.finish();
    sent.context(
        "the connection to the server was lost; run the script again to send what is missing",
    )?;
    outcomes
        .into_iter()
        .map(|o| o.context("the server did not answer for every file; run the script again"))
        .collect()
}

/// What to download: local directories to create first, then the files
/// (remote path, local path), and their total size.
#[derive(Debug, Default)]
pub struct Fetch {
    dirs: Vec<PathBuf>,
    jobs: Vec<(String, PathBuf)>,
    bytes: u64,
}

/// A name from the server, as one local path component: a server must not
/// be able to make the client write outside the directory it asked for.
fn local_component(name: &str) -> Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        bail!("the server listed a file named {name:?}; refusing to write it");
    }
    Ok(name)
}

/// A remote pattern split into its directory (absent: the current one)
/// and the pattern for names in it.
fn split_remote(pattern: &str) -> (Option<&str>, &str) {
    match pattern.rsplit_once('/') {
        Some(("", name)) => (Some("/"), name),
        Some((dir, name)) => (Some(dir), name),
        None => (None, pattern),
    }
}

impl Fetch {
    /// The remote files `patterns` name (each a path, or a pattern with
    /// `*`, `?` or `[...]` in its last part, matched against the listing of
    /// its directory), into local directory `to` (here when absent).
    pub async fn matching(
        client: &mut Client,
        patterns: &[String],
        to: Option<&Path>,
    ) -> Result<Fetch> {
        let to = to.unwrap_or(Path::new("."));
        let mut fetch = Fetch::default();
        for pattern in patterns {
            let (dir, name) = split_remote(pattern);
            if !name.contains(['*', '?', '[']) {
                let entries = client
                    .ls(Some(pattern))
                    .await
                    .with_context(|| format!("mget {pattern}"))?;
                let size = entries.first().map_or(0, |e| e.size);
                fetch.bytes += size;
                fetch
                    .jobs
                    .push((pattern.clone(), to.join(local_component(name)?)));
                continue;
            }
            let matcher =
                glob::Pattern::new(name).with_context(|| format!("bad pattern {pattern}"))?;
            let entries = client
                .ls(dir)
                .await
                .with_context(|| format!("mget {pattern}"))?;
            let before = fetch.jobs.len();
            for e in entries {
                if e.kind == EntryKind::File && matcher.matches(&e.name) {
                    fetch.bytes += e.size;
                    let local = to.join(local_component(&e.name)?);
                    fetch.jobs.push((join(dir.unwrap_or(""), &e.name), local));
                }
            }
            if fetch.jobs.len() == before {
                bail!("no remote file matches {pattern}");
            }
        }
        Ok(fetch)
    }

    /// The remote tree under `remote` into local directory `local`
    /// (created if missing).
    pub async fn tree(client: &mut Client, remote: &str, local: &Path) -> Result<Fetch> {
        let mut fetch = Fetch::default();
        let mut stack = vec![(remote.trim_end_matches('/').to_owned(), local.to_path_buf())];
        while let Some((rdir, ldir)) = stack.pop() {
            let entries = client
                .ls(Some(if rdir.is_empty() { "/" } else { &rdir }))
                .await
                .with_context(|| format!("get -r {rdir}"))?;
            fetch.dirs.push(ldir.clone());
            let mut subdirs = Vec::new();
            for e in entries {
                let local = ldir.join(local_component(&e.name)?);
                let remote = join(&rdir, &e.name);
                match e.kind {
                    EntryKind::Dir => subdirs.push((remote, local)),
                    EntryKind::File => {
                        fetch.bytes += e.size;
                        fetch.jobs.push((remote, local));
                    }
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(fetch)
    }

    /// Creates the directories, downloads the files one by one (each
    /// resumable from its `.part`), prints a line for each and fails if
    /// any did.
    pub async fn run(self, client: &mut Client, opts: TransferOptions, ui: &Ui) -> Result<()> {
        for dir in &self.dirs {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let (mut bar, mut tally) = Tally::begin(ui, self.jobs.len(), self.bytes);
        for (remote, local) in self.jobs {
            match client
                .get(&remote, &local, opts, &mut Within(&mut bar))
                .await
            {
                Ok((path, done)) => tally.done(&remote, &path.display().to_string(), &done),
                Err(e) if e.is_connection_lost() => {
                    bar.finish();
                    return Err(e).with_context(|| {
                        format!("get {remote}: the connection to the server was lost; run the same command again to resume")
                    });
                }
                Err(e) => tally.failed(&format!("get {remote}: {e}")),
            }
        }
        bar.finish();
        tally.end("received")
    }
}

/// The outcome of many transfers: a line for each, then a summary.
struct Tally {
    lines: Printer,
    count: usize,
    failed: usize,
    bytes: u64,
}

impl Tally {
    /// A bar for `count` files of `bytes` in all, begun, and its tally.
    fn begin(ui: &Ui, count: usize, bytes: u64) -> (Bar, Tally) {
        let s = if count == 1 { "" } else { "s" };
        let mut bar = Bar::new(ui, &format!("{count} file{s}"));
        bar.begin(bytes, 0);
        let lines = bar.printer();
        let tally = Tally {
            lines,
            count,
            failed: 0,
            bytes: 0,
        };
        (bar, tally)
    }

    fn done(&mut self, from: &str, to: &str, done: &Transferred) {
        self.bytes += done.size;
        self.lines.out(&format!(
            "{from} -> {to} ({} bytes, md5 {})",
            done.size, done.md5
        ));
    }

    fn failed(&mut self, what: &str) {
        self.failed += 1;
        self.lines.err(&format!("wharf-ftp: {what}"));
    }

    /// Fails if any file did.
    fn end(self, moved: &str) -> Result<()> {
        if self.failed > 0 {
            let s = if self.count == 1 { "" } else { "s" };
            bail!(
                "{} of {} file{s} failed ({} {moved})",
                self.failed,
                self.count,
                format_size(self.bytes)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{join, local_component, split_remote};

    #[test]
    fn a_server_cannot_name_a_file_outside_the_target() {
        for bad in ["", ".", "..", "../x", "a/b", "/etc", "x\0y"] {
            assert!(local_component(bad).is_err(), "{bad:?}");
        }
        assert_eq!(local_component("report.pdf").ok(), Some("report.pdf"));
        assert_eq!(local_component("..hidden").ok(), Some("..hidden"));
    }

    #[test]
    fn remote_patterns_split_at_their_last_slash() {
        assert_eq!(split_remote("*.log"), (None, "*.log"));
        assert_eq!(split_remote("logs/*.log"), (Some("logs"), "*.log"));
        assert_eq!(split_remote("/*.log"), (Some("/"), "*.log"));
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("d/", "a"), "d/a");
    }
}
