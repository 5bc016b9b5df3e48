//! The commands both modes share, and what each prints.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use wharf_client::Credential;
use wharf_client::cli::current_password;

use crate::shell::Login;
use wharf_ftp::client::{Client, TransferOptions};

use crate::many::{Fetch, Plan, expand, name_of};
use crate::ui::{Bar, Ui, print_listing, print_partials, print_quota};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Upload a file (resumes an interrupted upload of the same file), or
    /// a directory tree with -r.
    Put {
        /// Local file (a directory with -r).
        local: PathBuf,
        /// Remote path [default: the local file's name, in the current
        /// directory]; ending in `/`, a directory to put it in.
        remote: Option<String>,
        /// Send the whole file, even if the server holds part of it from an
        /// interrupted upload.
        #[arg(long)]
        restart: bool,
        /// Upload the directory LOCAL and everything under it (remote
        /// directories are created as needed).
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Upload several files, pipelined on one connection (`*`, `?` and
    /// `[...]` are matched here).
    Mput {
        /// Local files or patterns.
        #[arg(required = true)]
        locals: Vec<PathBuf>,
        /// Remote directory to put them in [default: the current one].
        #[arg(short = 'O', long = "to", value_name = "DIR")]
        to: Option<String>,
    },
    /// Download a file (resumes from LOCAL.part), or a directory tree
    /// with -r.
    Get {
        /// Remote file (a directory with -r).
        remote: String,
        /// Local path or directory [default: the remote file's name, here].
        local: Option<PathBuf>,
        /// Download the directory REMOTE and everything under it.
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Download several files (`*`, `?` and `[...]` in the last part of a
    /// path are matched against the server's listing).
    Mget {
        /// Remote files or patterns (quote patterns: 'logs/*.log').
        #[arg(required = true)]
        remotes: Vec<String>,
        /// Local directory to put them in [default: here].
        #[arg(short = 'O', long = "to", value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// List a directory: type, size, modification time, name.
    #[command(visible_alias = "dir")]
    Ls {
        /// Directory or file [default: the current directory].
        path: Option<String>,
        /// Print a JSON array of {name, type, size, mtime}.
        #[arg(long)]
        json: bool,
        /// The long listing (what ls always prints here; taken for habit).
        #[arg(short = 'l', hide = true)]
        long: bool,
    },
    /// List your interrupted uploads: received, size, last data, path.
    Partials {
        /// Print a JSON array of {path, size, received, mtime, active}.
        #[arg(long)]
        json: bool,
    },
    /// Drop interrupted uploads and free the quota they hold.
    #[command(arg_required_else_help = true)]
    Discard {
        /// The upload's target path, as given to put.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        path: Option<String>,
        /// Every interrupted upload (uploads under way are left alone).
        #[arg(long)]
        all: bool,
    },
    /// Change your password: the new one is asked twice (or read from one
    /// line of standard input with --password-stdin); it takes effect at
    /// the next login, in every service.
    Passwd {
        /// Read the new password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Your disk quota: used, held by uploads, free.
    #[command(alias = "df")]
    Quota {
        /// Print {used, reserved, quota, files, free} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a directory.
    Mkdir {
        /// New directory.
        path: String,
    },
    /// Remove files; with -r, directories and everything in them.
    Rm {
        /// Files (directories with -r).
        #[arg(required = true)]
        paths: Vec<String>,
        /// Remove directories and everything under them.
        #[arg(short = 'r', short_alias = 'R', long)]
        recursive: bool,
    },
    /// Remove an empty directory.
    Rmdir {
        /// Directory.
        path: String,
    },
    /// Rename or move a file or directory.
    Mv {
        /// Existing path.
        from: String,
        /// New path (must not exist).
        to: String,
    },
}

/// Removes `path`: a file, or a directory with everything under it (its
/// files, then its folders, deepest first).
async fn remove_tree(client: &mut Client, path: &str) -> Result<()> {
    use wharf_proto::ftp::EntryKind;
    // A file goes as it is; what `rm` refuses is a directory, emptied first.
    let refused = match client.rm(path).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if refused.is_connection_lost() {
        return Err(refused.into());
    }
    let mut dirs = vec![path.trim_end_matches('/').to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        let dir = dirs[i].clone();
        for e in client.ls(Some(&dir)).await? {
            let child = format!("{dir}/{}", e.name);
            if e.kind == EntryKind::Dir {
                dirs.push(child);
            } else {
                client.rm(&child).await?;
            }
        }
        i += 1;
    }
    for dir in dirs.iter().rev() {
        client.rmdir(dir).await?;
    }
    Ok(())
}

fn base_name(remote: &str) -> &str {
    remote
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("download")
}

/// The transfer options the command line set.
pub fn transfer_options(ui: &Ui) -> TransferOptions {
    TransferOptions {
        rate_limit: ui.rate_limit,
        restart: false,
        fsync: ui.fsync,
    }
}

/// Where `put LOCAL [REMOTE]` puts LOCAL: REMOTE, or LOCAL's name in the
/// directory REMOTE ends with a `/`, or LOCAL's name here.
pub fn put_target(local: &std::path::Path, remote: Option<String>) -> Result<String> {
    Ok(match remote {
        Some(dir) if dir.ends_with('/') => format!("{dir}{}", name_of(local)?),
        Some(r) => r,
        None => name_of(local)?.to_owned(),
    })
}

/// Runs `cmd`; `login` is how the session logged in (`passwd` asks the
/// password when it was a key, and changes it when it was one).
pub async fn execute(client: &mut Client, cmd: Cmd, ui: &Ui, login: &mut Login) -> Result<()> {
    let opts = transfer_options(ui);
    match cmd {
        Cmd::Put {
            local,
            remote,
            restart,
            recursive: true,
        } => {
            let opts = TransferOptions { restart, ..opts };
            let remote = match remote {
                Some(r) => r,
                None => name_of(&local)?.to_owned(),
            };
            Plan::tree(&local, &remote)?.run(client, opts, ui).await?;
        }
        Cmd::Mput { locals, to } => {
            let files = expand(&locals)?;
            Plan::files(&files, to.as_deref())?
                .run(client, opts, ui)
                .await?;
        }
        Cmd::Put {
            local,
            remote,
            restart,
            recursive: false,
        } => {
            let opts = TransferOptions { restart, ..opts };
            let remote = put_target(&local, remote)?;
            let mut bar = Bar::new(ui, &remote);
            let done = client
                .put(&local, &remote, opts, &mut bar)
                .await
                .with_context(|| format!("put {}", local.display()))?;
            println!(
                "{} -> {} ({} bytes, md5 {})",
                local.display(),
                done.path,
                done.size,
                done.md5
            );
        }
        Cmd::Get {
            remote,
            local,
            recursive: true,
        } => {
            let local = local.unwrap_or_else(|| PathBuf::from(base_name(&remote)));
            Fetch::tree(client, &remote, &local)
                .await?
                .run(client, opts, ui)
                .await?;
        }
        Cmd::Mget { remotes, to } => {
            Fetch::matching(client, &remotes, to.as_deref())
                .await?
                .run(client, opts, ui)
                .await?;
        }
        Cmd::Get {
            remote,
            local,
            recursive: false,
        } => {
            let mut local = local.unwrap_or_else(|| PathBuf::from(base_name(&remote)));
            if local.is_dir() {
                local = local.join(base_name(&remote));
            }
            let mut bar = Bar::new(ui, &remote);
            let (path, done) = client
                .get(&remote, &local, opts, &mut bar)
                .await
                .with_context(|| format!("get {remote}"))?;
            println!(
                "{} -> {} ({} bytes, md5 {})",
                remote,
                path.display(),
                done.size,
                done.md5
            );
        }
        Cmd::Ls { path, json, .. } => {
            let entries = client.ls(path.as_deref()).await.context("ls")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print_listing(&entries);
            }
        }
        Cmd::Partials { json } => {
            let partials = client.partials().await.context("partials")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&partials)?);
            } else {
                print_partials(&partials);
            }
        }
        Cmd::Discard { path, all: _ } => {
            let (count, bytes) = client
                .discard(path.as_deref())
                .await
                .with_context(|| format!("discard {}", path.as_deref().unwrap_or("--all")))?;
            let s = if count == 1 { "" } else { "s" };
            println!(
                "discarded {count} interrupted upload{s}; {} of quota freed",
                wharf_core::size::format_size(bytes)
            );
        }
        Cmd::Passwd { password_stdin } => {
            let user = client.user().to_owned();
            let old = current_password(&login.credential, &user, &login.server)?;
            let new = wharf_core::cli::read_new_password(&user, password_stdin)?;
            client
                .passwd(&old, &new)
                .await
                .context("the password was not changed")?;
            if let Credential::Password(_) = login.credential {
                login.credential = Credential::Password(new);
            }
            eprintln!("password changed for {user}; use the new one from the next login on");
        }
        Cmd::Quota { json } => {
            let q = client.quota().await.context("quota")?;
            if json {
                let mut v = serde_json::to_value(q)?;
                v["free"] = serde_json::json!(q.free());
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_quota(&q);
            }
        }
        Cmd::Mkdir { path } => client
            .mkdir(&path)
            .await
            .with_context(|| format!("mkdir {path}"))?,
        Cmd::Rm { paths, recursive } => {
            for path in &paths {
                if recursive {
                    remove_tree(client, path)
                        .await
                        .with_context(|| format!("rm -r {path}"))?;
                } else {
                    client
                        .rm(path)
                        .await
                        .with_context(|| format!("rm {path}"))?;
                }
            }
        }
        Cmd::Rmdir { path } => client
            .rmdir(&path)
            .await
            .with_context(|| format!("rmdir {path}"))?,
        Cmd::Mv { from, to } => client
            .mv(&from, &to)
            .await
            .with_context(|| format!("mv {from} {to}"))?,
    }
    Ok(())
}
