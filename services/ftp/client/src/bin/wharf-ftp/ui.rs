//! What the user sees: the progress bar and listings.

use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use wharf_core::size::format_size;
use wharf_ftp::client::Progress;
use wharf_proto::ftp::{Entry, EntryKind, PartialUpload};

/// Display settings.
pub struct Ui {
    /// Draw progress bars (stderr is a terminal and not --quiet).
    pub progress: bool,
    /// --limit-rate.
    pub rate_limit: Option<u64>,
    /// --fsync.
    pub fsync: bool,
}

/// A transfer's progress bar on stderr (or nothing); resumes are announced
/// either way.
pub struct Bar {
    bar: Option<ProgressBar>,
    label: String,
    enabled: bool,
}

impl Bar {
    pub fn new(ui: &Ui, label: &str) -> Bar {
        Bar {
            bar: None,
            label: label.to_owned(),
            enabled: ui.progress,
        }
    }
}

impl Bar {
    /// Prints lines without tearing the bar (once it has begun).
    pub fn printer(&self) -> Printer {
        Printer {
            bar: self.bar.clone(),
        }
    }
}

/// Prints whole lines above a progress bar.
#[derive(Clone)]
pub struct Printer {
    bar: Option<ProgressBar>,
}

impl Printer {
    /// A line on stdout.
    pub fn out(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// A line on stderr.
    pub fn err(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Bar {
    fn begin(&mut self, total: u64, resumed_at: u64) {
        if resumed_at > 0 {
            self.note(&format!("resuming at {resumed_at} bytes"));
        }
        if !self.enabled {
            return;
        }
        // The bar counts only what moves from now on, so that its rate and
        // ETA are true after a resume; the figures shown add what was
        // already there.
        let bar = ProgressBar::with_draw_target(
            Some(total.saturating_sub(resumed_at)),
            ProgressDrawTarget::stderr(),
        );
        let style = ProgressStyle::with_template(
            "{msg:20!} [{bar:30}] {done:>10}/{whole:<10} {binary_bytes_per_sec:>12} ETA {eta}",
        )
        .map(|style| {
            style
                .with_key(
                    "done",
                    move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}", HumanBytes(resumed_at + state.pos()));
                    },
                )
                .with_key(
                    "whole",
                    move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}", HumanBytes(total));
                    },
                )
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(self.label.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A listing's RFC 3339 time, as people read it.
fn shown_time(rfc3339: &str) -> String {
    rfc3339
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned()
}

/// `partials` for people: received of size, last data, path.
pub fn print_partials(partials: &[PartialUpload]) {
    if partials.is_empty() {
        println!("no interrupted uploads");
        return;
    }
    for p in partials {
        let path = p.path.as_deref().unwrap_or("(path unknown)");
        let state = if p.active { "  (uploading now)" } else { "" };
        println!(
            "{:>10} of {:<10}  {}  {path}{state}",
            format_size(p.received),
            format_size(p.size),
            shown_time(&p.mtime),
        );
    }
}

/// `ls` for people: type, size, time, name (directories end in `/`).
pub fn print_listing(entries: &[Entry]) {
    for e in entries {
        let (kind, size, suffix) = match e.kind {
            EntryKind::Dir => ('d', "-".to_owned(), "/"),
            EntryKind::File => ('-', format_size(e.size), ""),
        };
        let when = shown_time(&e.mtime);
        println!("{kind} {size:>10}  {when}  {}{suffix}", e.name);
    }
}

/// `quota` for people.
pub fn print_quota(q: &wharf_ftp::client::Quota) {
    let files = if q.files == 1 { "file" } else { "files" };
    println!(
        "used      {:>10}  ({} {files})",
        format_size(q.used),
        q.files
    );
    if q.reserved > 0 {
        println!(
            "reserved  {:>10}  (uploads under way or interrupted; see `partials`)",
            format_size(q.reserved)
        );
    }
    match (q.quota, q.free()) {
        (Some(quota), Some(free)) => {
            println!("quota     {:>10}", format_size(quota));
            println!("free      {:>10}", format_size(free));
        }
        _ => println!("quota     unlimited"),
    }
    if let Some(of) = q.files_quota {
        println!(
            "files     {:>10}  of {of} (files, folders, links and interrupted uploads)",
            q.files + q.reserved_files
        );
    }
}
