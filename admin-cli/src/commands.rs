//! One function per command; each reads and writes through wharf-core.

use std::path::Path;

use anyhow::{Context, Result, bail};
use wharf_core::Service;
use wharf_core::ServiceSet;
use wharf_core::names::validate_user_name;
use wharf_core::size::format_quota;
use wharf_core::size::format_size;
use wharf_core::size::parse_quota;
use wharf_core::time::duration_ms;
use wharf_core::time::now_ms;
use wharf_server::tls::fingerprint_of_file;
use wharf_server::tls::made_cert_path;
use wharf_store::AuthConfig;
use wharf_store::Error;
use wharf_store::Store;
use wharf_store::User;
use wharf_store::auth::hash_password;
use wharf_store::db::NewUser;
use wharf_store::home::HomeUsage;
use wharf_store::home::apply_quota;
use wharf_store::home::btrfs;
use wharf_store::home::default_home;
use wharf_store::home::ensure_home;
use wharf_store::home::scan_home;
use wharf_store::owner::Owner;
use wharf_store::owner::hand_over;

use crate::UsageError;
use crate::cli::{
    AddArgs, Cli, Command, DbCommand, HomeCommand, KeyCommand, QuotaCommand, SshCommand,
    TlsCommand, UsageArgs, UserCommand,
};
use crate::password::read_new_password;
use crate::view::{self, UsageView, UserView};

pub async fn run(cli: Cli, command: Command) -> Result<()> {
    if let Command::Tls(TlsCommand::Fingerprint { cert }) = &command {
        return fingerprint(&cli.data_dir, cert.as_deref());
    }
    if let Command::Ssh(SshCommand::Fingerprint { key }) = &command {
        let made = cli.data_dir.join("ssh").join("ssh_host_ed25519_key");
        let path = key.clone().unwrap_or(made);
        if key.is_none() && !path.exists() {
            bail!(
                "no SSH host key at {}: wharf-sshd (or wharfd --ssh-listen) makes it at its first start; run this where it runs, or give --data-dir or --key",
                path.display()
            );
        }
        let public = wharf_store::keys::public_key_of(&path)?;
        println!("{}", wharf_store::keys::fingerprint_line(&public));
        return Ok(());
    }
    let url = wharf_core::config::database_url(cli.database_url.as_deref(), &cli.data_dir);
    // Only `user add` makes a database; anything else run where there is
    // none (the wrong folder, most likely) says so and makes nothing, so
    // the user database is never split between two folders.
    let file = wharf_core::config::sqlite_file(&url);
    let new = file.as_ref().filter(|f| !f.exists());
    if let Some(file) = new
        && !matches!(command, Command::User(UserCommand::Add(_)))
    {
        let here = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "this folder".to_owned());
        bail!(
            "no Wharf database at {}: admin-cli uses DATA_DIR/wharf.db, DATA_DIR being `data` in the folder it runs in ({here}) unless --data-dir or WHARF_DATA_DIR names another; run it where the servers run, or give their --data-dir (or --database-url)",
            file.display()
        );
    }
    let made = new.cloned();
    let store = Store::open(&url).await.with_context(|| {
        format!(
            "cannot open the database {}",
            wharf_core::config::shown_database_url(&url)
        )
    })?;
    let listing = matches!(command, Command::User(UserCommand::List(ref f)) if !f.json);
    if listing {
        println!(
            "database: {}",
            wharf_core::config::shown_database_url(&match &file {
                Some(f) => f.display().to_string(),
                None => url.clone(),
            })
        );
    }
    let result = dispatch(&store, &cli.data_dir, command).await;
    store.close().await;
    if let Some(file) = made {
        if result.is_ok() {
            eprintln!(
                "admin-cli: made a new database at {} (servers must be started with this data folder to see it)",
                file.display()
            );
        } else {
            // The add failed: the database it made goes with it.
            for suffix in ["", "-wal", "-shm"] {
                let mut name = file.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
    }
    result
}

async fn dispatch(store: &Store, data_dir: &Path, command: Command) -> Result<()> {
    match command {
        Command::User(cmd) => match cmd {
            UserCommand::Add(args) => add(store, data_dir, args).await,
            UserCommand::List(flag) => list(store, flag.json).await,
            UserCommand::Show { name, json } => show(store, &name, json.json).await,
            UserCommand::Del {
                name,
                purge_home,
                yes,
            } => del(store, &name, purge_home, yes).await,
            UserCommand::Passwd { name, password } => {
                passwd(store, &name, password.password_stdin).await
            }
            UserCommand::Lock { name } => {
                store.set_locked(&name, true).await?;
                println!("locked {name}: no login anywhere until `admin-cli user unlock {name}`");
                Ok(())
            }
            UserCommand::Unlock { name } => {
                store.set_locked(&name, false).await?;
                store.clear_failures(&name).await?;
                println!("unlocked {name} and cleared their failed logins");
                Ok(())
            }
            UserCommand::Grant { name, service } => {
                let service: Service = service.parse()?;
                if store.grant(&name, service).await? {
                    println!("granted {service} to {name}");
                } else {
                    println!("{name} already has {service}");
                }
                Ok(())
            }
            UserCommand::Limit { name, limits } => set_limits(store, &name, &limits).await,
            UserCommand::Key(cmd) => keys(store, cmd).await,
            UserCommand::Revoke { name, service } => {
                let service: Service = service.parse()?;
                if store.revoke(&name, service).await? {
                    println!("revoked {service} from {name}");
                } else {
                    println!("{name} did not have {service}");
                }
                Ok(())
            }
        },
        Command::Quota(QuotaCommand::Set { name, size, files }) => {
            set_quota(store, &name, &size, files.as_deref()).await
        }
        Command::Home(HomeCommand::Set {
            name,
            dir,
            move_files,
        }) => set_home(store, &name, &dir, move_files).await,
        Command::Usage(args) => usage(store, args).await,
        Command::Tls(TlsCommand::Fingerprint { cert }) => fingerprint(data_dir, cert.as_deref()),
        // Answered above, before any database.
        Command::Ssh(SshCommand::Fingerprint { .. }) => Ok(()),
        Command::Db(DbCommand::Copy { to }) => copy(store, &to).await,
        Command::Db(DbCommand::Backup { file }) => backup(store, &file).await,
        Command::Db(DbCommand::Check { fix }) => check(store, fix).await,
    }
}

/// `db copy --to URL`: every row into a new database, then the counts of
/// both compared.
async fn copy(store: &Store, to: &str) -> Result<()> {
    let shown = wharf_core::config::shown_database_url(to);
    let target = Store::open(to)
        .await
        .with_context(|| format!("cannot open the database to copy into, {shown}"))?;
    let copied = store
        .copy_into(&target)
        .await
        .with_context(|| format!("cannot copy into {shown}; it may hold part of the copy: drop it and make it again before retrying"));
    let copied = match copied {
        Ok(report) => report,
        Err(e) => {
            target.close().await;
            return Err(e);
        }
    };
    let (from, into) = (store.row_counts().await?, target.row_counts().await?);
    target.close().await;
    if from != into {
        bail!(
            "the copy in {shown} does not hold what this database holds ({into:?}, not {from:?}); drop it and copy again"
        );
    }
    println!("{}", view::copy_table(&copied.tables).trim_fmt());
    println!("copied into {shown}; start the services with --database-url set to it");
    Ok(())
}

async fn add(store: &Store, data_dir: &Path, args: AddArgs) -> Result<()> {
    // Check everything that can be checked before asking for a password.
    validate_user_name(&args.name)?;
    let quota = parse_quota(&args.quota)?;
    let quota_files = parse_file_quota(&args.files)?;
    let services: ServiceSet = args.services.parse()?;
    if store.user(&args.name).await?.is_some() {
        return Err(Error::UserExists(args.name).into());
    }
    let password = read_new_password(&args.name, args.password.password_stdin)?;
    let password_hash = hash_password(&password).await?;
    let wanted_home = args
        .home
        .unwrap_or_else(|| default_home(data_dir, &args.name));
    let (home, created) = ensure_home(&wanted_home)?;
    let new = NewUser {
        name: args.name,
        password_hash,
        home: home.clone(),
        quota_bytes: quota,
        quota_files,
        services,
    };
    let limits = args.limits.change();
    let created_user = match store.create_user(&new).await {
        Ok(user) if !limits.is_empty() => store.set_user_limits(&user.name, limits).await,
        other => other,
    };
    match created_user {
        Ok(user) => {
            give_home(&user)?;
            let kernel = apply_quota(&user.home, user.quota_bytes).with_context(|| {
                format!(
                    "user {} is added, but the kernel's limit on its home could not be set; run `admin-cli db check --fix` as root",
                    user.name
                )
            })?;
            let services = if user.services == ServiceSet::default() {
                "none".to_owned()
            } else {
                user.services.to_string()
            };
            println!(
                "added user {}: home {}{}, quota {}{}, services {services}",
                user.name,
                user.home.display(),
                if kernel {
                    " (a btrfs subvolume: the kernel holds it to the quota)"
                } else {
                    ""
                },
                format_quota(user.quota_bytes),
                user.quota_files
                    .map(|n| format!(" and {n} files"))
                    .unwrap_or_default(),
            );
            if user.limits != wharf_store::db::UserLimits::default() {
                println!("  limits: {}", view::limits_text(&user.limits));
            }
            Ok(())
        }
        Err(e) => {
            if created {
                // Leave the disk as it was; ignore failure, the error below matters more.
                let _ = std::fs::remove_dir(&home);
            }
            Err(e.into())
        }
    }
}

/// `user limit NAME ...`.
async fn set_limits(store: &Store, name: &str, flags: &crate::cli::LimitFlags) -> Result<()> {
    let change = flags.change();
    if change.is_empty() {
        let user = store.require_user(name).await?;
        println!(
            "{name}: {}
(set one with --upload-rate RATE, --download-rate RATE or --max-sessions N; `none` clears it)",
            view::limits_text(&user.limits)
        );
        return Ok(());
    }
    let user = store.set_user_limits(name, change).await?;
    println!(
        "limits of {name}: {} (a session limit holds from the next login; transfers under way take a new rate within seconds)",
        view::limits_text(&user.limits)
    );
    Ok(())
}

/// Users with what their failed logins do to attempts on them now.
async fn views(store: &Store, users: &[User]) -> Result<Vec<UserView>> {
    let policy = AuthConfig::default();
    let mut views = Vec::with_capacity(users.len());
    for u in users {
        views.push(UserView::new(
            u,
            policy.name_slowdown(store, &u.name).await?,
            store.open_sessions(u.id).await?,
        ));
    }
    Ok(views)
}

async fn list(store: &Store, json: bool) -> Result<()> {
    let users = store.list_users().await?;
    let views = views(store, &users).await?;
    if json {
        return view::print_json(&views);
    }
    if users.is_empty() {
        println!("no users yet; add one with `admin-cli user add NAME`");
        return Ok(());
    }
    println!("{}", view::users_table(&views).trim_fmt());
    Ok(())
}

async fn show(store: &Store, name: &str, json: bool) -> Result<()> {
    let user = store.require_user(name).await?;
    let v = UserView::new(
        &user,
        AuthConfig::default().name_slowdown(store, name).await?,
        store.open_sessions(user.id).await?,
    );
    if json {
        return view::print_json(&v);
    }
    println!("{}", view::user_table(&v, &user).trim_fmt());
    Ok(())
}

async fn del(store: &Store, name: &str, purge_home: bool, yes: bool) -> Result<()> {
    let user = store.require_user(name).await?;
    if purge_home && !yes && !confirmed(&user)? {
        println!("nothing was changed");
        return Ok(());
    }
    if purge_home {
        let users = store.list_users().await?;
        let overlapping = users.iter().find(|u| {
            u.id != user.id && (u.home.starts_with(&user.home) || user.home.starts_with(&u.home))
        });
        if let Some(other) = overlapping {
            bail!(
                "refusing to purge {}: it overlaps the home of {} ({}); nothing was changed",
                user.home.display(),
                other.name,
                other.home.display()
            );
        }
    }
    store.delete_user(name).await?;
    println!("deleted user {name}");
    if purge_home && btrfs::is_subvolume(&user.home) {
        btrfs::delete_subvolume(&user.home).with_context(|| {
            format!(
                "user {name} is deleted, but its home {} could not be removed",
                user.home.display()
            )
        })?;
        println!("removed home {} (its subvolume)", user.home.display());
    } else if purge_home {
        match std::fs::remove_dir_all(&user.home) {
            Ok(()) => println!("removed home {}", user.home.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!(
                "user {name} is deleted, but its home {} could not be removed: {e}",
                user.home.display()
            ),
        }
    } else {
        println!(
            "kept home {} (pass --purge-home to delete it)",
            user.home.display()
        );
    }
    Ok(())
}

/// Asks on the terminal whether to delete `user` with their home; without
/// a terminal, refuses (the caller must say --yes).
fn confirmed(user: &User) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    let home = user.home.display();
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "--purge-home deletes {home} and every file in it: add --yes to confirm (nothing was changed)"
        ))
        .into());
    }
    let held = format!(
        "{} in {} entries",
        format_size(user.used_bytes),
        user.file_count
    );
    eprint!(
        "Delete user {} and their home {home} with everything in it ({held}, as last counted)? [y/N] ",
        user.name
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

async fn passwd(store: &Store, name: &str, from_stdin: bool) -> Result<()> {
    store.require_user(name).await?;
    let password = read_new_password(name, from_stdin)?;
    let hash = hash_password(&password).await?;
    store.set_password_hash(name, &hash).await?;
    println!("changed the password of {name}");
    Ok(())
}

async fn set_quota(store: &Store, name: &str, size: &str, files: Option<&str>) -> Result<()> {
    let quota = parse_quota(size)?;
    let quota_files = files.map(parse_file_quota).transpose()?;
    store.set_quota(name, quota).await?;
    let home = store.require_user(name).await?.home;
    apply_quota(&home, quota).with_context(|| {
        format!(
            "the quota of {name} is set in the database, but the kernel's limit on {} could not be changed; run `admin-cli db check --fix` as root",
            home.display()
        )
    })?;
    if let Some(quota_files) = quota_files {
        store.set_quota_files(name, quota_files).await?;
    }
    let user = store.require_user(name).await?;
    if quota_files.is_some() {
        println!(
            "file quota of {name} is now {} ({} held)",
            user.quota_files
                .map_or_else(|| "unlimited".to_owned(), |n| format!("{n} files")),
            user.file_count + user.reserved_files
        );
    }
    println!(
        "quota of {name} is now {} ({} used)",
        format_quota(quota),
        format_size(user.used_bytes)
    );
    if let Some(q) = quota.filter(|q| user.used_bytes > *q) {
        eprintln!(
            "admin-cli: note: {name} already uses {}, more than the new quota of {}; uploads will be refused until they free space",
            format_size(user.used_bytes),
            format_size(q)
        );
    }
    Ok(())
}

/// A file quota as given on the command line: a count, or "unlimited".
fn parse_file_quota(s: &str) -> Result<Option<u64>> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("unlimited") || s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    s.replace('_', "").parse::<u64>().map(Some).map_err(|_| {
        anyhow::anyhow!(
            "cannot read {s:?} as a file quota: give a whole number of files (10000) or unlimited"
        )
    })
}

/// Measures `home` again and stores the result as `name`'s usage.
async fn rescan(store: &Store, name: &str, home: &Path) -> Result<HomeUsage> {
    let dir = home.to_path_buf();
    let usage = tokio::task::spawn_blocking(move || scan_home(&dir))
        .await
        .context("home scan task failed")??;
    store.set_usage(name, &usage).await?;
    Ok(usage)
}

/// Run as root, hands the user's home to the user's own uid, so that
/// their commands (and nobody else's) can use it.
fn give_home(user: &User) -> Result<()> {
    if let Some(owner) = Owner::for_files(user.id) {
        hand_over(&user.home, owner).with_context(|| {
            format!(
                "cannot hand the home {} to uid {}",
                user.home.display(),
                owner.uid
            )
        })?;
    }
    Ok(())
}

async fn set_home(store: &Store, name: &str, dir: &Path, move_files: bool) -> Result<()> {
    let user = store.require_user(name).await?;
    let old = user.home.clone();
    let has_files = std::fs::read_dir(&old).is_ok_and(|mut d| d.next().is_some());
    let moving = has_files
        && dir != old
        && (move_files || {
            use std::io::{BufRead, IsTerminal, Write};
            std::io::stdin().is_terminal() && {
                eprint!(
                    "Move the files of {name} from {} to {}? [y/N] ",
                    old.display(),
                    dir.display()
                );
                std::io::stderr().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                matches!(answer.trim(), "y" | "Y" | "yes")
            }
        });
    if moving {
        move_home(&old, dir)?;
    }
    let (home, _) = ensure_home(dir)?;
    store.set_home(name, &home).await?;
    apply_quota(&home, user.quota_bytes)?;
    give_home(&User {
        home: home.clone(),
        ..user
    })?;
    let usage = rescan(store, name, &home).await?;
    println!(
        "home of {name} is now {} ({} in {} files{})",
        home.display(),
        format_size(usage.bytes),
        usage.files,
        if moving {
            format!(", moved from {}", old.display())
        } else if has_files && dir != old {
            format!(
                "; the old home {} keeps its files: `home set {name} {} --move` takes them along",
                old.display(),
                home.display()
            )
        } else {
            "; nothing was moved".to_owned()
        }
    );
    Ok(())
}

/// Moves the home `old` to `new` (which must not exist, or be empty): a
/// rename where both are on one file system, else a copy that keeps
/// owners, modes and times (`cp -a`), then the old one removed.
fn move_home(old: &Path, new: &Path) -> Result<()> {
    let empty = match std::fs::read_dir(new) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => bail!("cannot read {}: {e}; nothing was changed", new.display()),
    };
    if !empty {
        bail!(
            "{} is not empty: move the home to a new or empty folder (nothing was changed)",
            new.display()
        );
    }
    if new.exists() {
        std::fs::remove_dir(new)
            .with_context(|| format!("cannot replace the empty {}", new.display()))?;
    }
    if let Some(parent) = new.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot make {}", parent.display()))?;
    }
    match std::fs::rename(old, new) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {}
        Err(e) => bail!(
            "cannot move {} to {}: {e}; nothing was changed",
            old.display(),
            new.display()
        ),
    }
    // Another file system: copied, then the old one removed.
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(old)
        .arg(new)
        .status()
        .with_context(|| "cannot run cp")?;
    if !copied.success() {
        let _ = std::fs::remove_dir_all(new);
        bail!(
            "cannot copy {} to {} ({copied}); nothing was changed",
            old.display(),
            new.display()
        );
    }
    std::fs::remove_dir_all(old).with_context(|| {
        format!(
            "the files are copied to {}, but the old home {} could not be removed",
            new.display(),
            old.display()
        )
    })
}

/// Transfers and commands `usage NAME` lists.
const RECENT: u32 = 10;

async fn usage(store: &Store, args: UsageArgs) -> Result<()> {
    let since = match &args.since {
        None => 0,
        Some(text) => {
            let d = humantime::parse_duration(text).map_err(|e| {
                UsageError(format!(
                    "invalid duration {text:?} for --since: {e}; write it as 1h, 7d or 30days"
                ))
            })?;
            now_ms() - duration_ms(d)
        }
    };
    let users = match &args.name {
        Some(name) => vec![store.require_user(name).await?],
        None => store.list_users().await?,
    };
    if args.rescan {
        for user in &users {
            if let Err(e) = rescan(store, &user.name, &user.home).await {
                eprintln!(
                    "admin-cli: warning: cannot rescan the home of {}: {e:#}",
                    user.name
                );
            }
        }
    }
    let rows = store.usage_report(args.name.as_deref(), since).await?;
    let (transfers, commands) = match &args.name {
        Some(name) => (
            store.recent_transfers(name, since, RECENT).await?,
            store.exec_log(Some(name), since, RECENT).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    if args.json.json {
        let mut views: Vec<UsageView> = rows
            .iter()
            .map(|r| {
                let mut v = UsageView::from(r);
                if let Some(u) = users.iter().find(|u| u.name == r.name) {
                    v.limits = u.limits;
                }
                v
            })
            .collect();
        if let (Some(_), Some(view)) = (&args.name, views.first_mut()) {
            view.recent_transfers = Some(transfers.iter().map(view::TransferView::from).collect());
            view.recent_commands = Some(commands.iter().map(view::CommandView::from).collect());
        }
        return view::print_json(&views);
    }
    if rows.is_empty() {
        println!("no users yet; add one with `admin-cli user add NAME`");
        return Ok(());
    }
    println!("{}", view::usage_table(&rows).trim_fmt());
    if let (Some(_), [user]) = (&args.name, &users[..]) {
        println!("limits: {}", view::limits_text(&user.limits));
        println!();
        if transfers.is_empty() {
            println!("no transfers");
        } else {
            println!(
                "latest transfers:\n{}",
                view::transfers_table(&transfers).trim_fmt()
            );
        }
        println!();
        if commands.is_empty() {
            println!("no commands");
        } else {
            println!(
                "latest commands:\n{}",
                view::commands_table(&commands).trim_fmt()
            );
        }
    }
    Ok(())
}

/// Prints the certificate's fingerprint, as clients show it.
fn fingerprint(data_dir: &Path, cert: Option<&Path>) -> Result<()> {
    let made = made_cert_path(data_dir);
    let path = cert.unwrap_or(&made);
    if cert.is_none() && !made.exists() {
        bail!(
            "no certificate at {}: the daemons make it at their first start with TLS; start one \
             (or wharfd) with this --data-dir, or pass the certificate they serve with --cert FILE",
            made.display()
        );
    }
    let fp = fingerprint_of_file(path)?;
    println!("{fp}");
    Ok(())
}

/// `db backup FILE`: a consistent copy, opened and checked.
async fn backup(store: &Store, file: &Path) -> Result<()> {
    store
        .backup_to(file)
        .await
        .with_context(|| format!("cannot back up the database to {}", file.display()))?;
    let url = format!("sqlite://{}", file.display());
    let copy = Store::open(&url)
        .await
        .with_context(|| format!("the backup {} does not open", file.display()))?;
    let problems = copy.integrity_problems().await;
    let users = copy.list_users().await;
    copy.close().await;
    let problems = problems?;
    if !problems.is_empty() {
        bail!(
            "the backup {} is not sound ({}); take it again",
            file.display(),
            problems.join("; ")
        );
    }
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let users = users?.len();
    println!(
        "backed up {users} user{} to {} ({}); it passes the integrity check",
        if users == 1 { "" } else { "s" },
        file.display(),
        format_size(size)
    );
    Ok(())
}

/// What is wrong with the kernel's hold on `user`'s home, where the homes
/// are on btrfs with quotas on: not a subvolume, or a limit that is not
/// the quota.
fn kernel_problem(user: &User) -> Option<String> {
    let home = &user.home;
    let quotas_on = home.parent().is_some_and(btrfs::quotas_on);
    if !btrfs::is_subvolume(home) {
        return quotas_on.then(|| {
            format!(
                "the home {} is on btrfs with quotas on but is not a subvolume, so the kernel does not hold it to its quota",
                home.display()
            )
        });
    }
    match btrfs::qgroup(home) {
        Ok(q) if q.limit == user.quota_bytes => None,
        Ok(q) => Some(format!(
            "the kernel's limit on the home {} is {}, its quota {}",
            home.display(),
            format_quota(q.limit),
            format_quota(user.quota_bytes)
        )),
        Err(e) => Some(format!(
            "the home {} is a subvolume, but its quota group cannot be read ({e}); turn quotas on with `btrfs quota enable` on its mount point, as root",
            home.display()
        )),
    }
}

/// Makes `user`'s home a subvolume held to its quota.
async fn fix_kernel_quota(user: &User) -> Result<()> {
    let home = user.home.clone();
    let quota = user.quota_bytes;
    tokio::task::spawn_blocking(move || -> Result<()> {
        if !btrfs::is_subvolume(&home) {
            btrfs::convert_to_subvolume(&home)?;
        }
        btrfs::set_limit(&home, quota)?;
        Ok(())
    })
    .await
    .context("the subvolume task failed")??;
    give_home(user)
}

/// `db check [--fix]`: the database's integrity, then each user's usage
/// against their home.
async fn check(store: &Store, fix: bool) -> Result<()> {
    let problems = store.integrity_problems().await?;
    for p in &problems {
        println!("integrity: {p}");
    }
    let (mut differ, mut unmeasured) = (Vec::new(), Vec::new());
    for user in store.list_users().await? {
        if let Some(problem) = kernel_problem(&user) {
            println!(
                "{}: {problem}{}",
                user.name,
                if fix { "; fixing" } else { "" }
            );
            if fix {
                fix_kernel_quota(&user).await?;
            } else {
                differ.push(user.name.clone());
            }
        }
        let home = user.home.clone();
        let found = match tokio::task::spawn_blocking(move || scan_home(&home))
            .await
            .context("home scan task failed")?
        {
            Ok(found) => found,
            Err(e) => {
                println!(
                    "{}: cannot measure the home {}: {e}",
                    user.name,
                    user.home.display()
                );
                unmeasured.push(user.name.clone());
                continue;
            }
        };
        let kept = HomeUsage {
            bytes: user.used_bytes,
            files: user.file_count,
            reserved: user.reserved_bytes,
            reserved_files: user.reserved_files,
        };
        if let Some(why) = &user.usage_problem {
            println!(
                "{}: a server could not measure the home ({why}), so its writes are refused{}",
                user.name,
                if fix { "; measured now" } else { "" }
            );
            if fix {
                store.set_usage(&user.name, &found).await?;
            } else {
                differ.push(user.name.clone());
            }
            continue;
        }
        if found != kept {
            println!(
                "{}: the database says {} in {} files ({} reserved), the home holds {} in {} files ({} reserved){}",
                user.name,
                format_size(kept.bytes),
                kept.files,
                format_size(kept.reserved),
                format_size(found.bytes),
                found.files,
                format_size(found.reserved),
                if fix { "; fixed" } else { "" }
            );
            if fix {
                store.set_usage(&user.name, &found).await?;
            } else {
                differ.push(user.name.clone());
            }
        }
    }
    if problems.is_empty() && differ.is_empty() && unmeasured.is_empty() {
        println!("the database is sound and every user's usage matches their home");
        return Ok(());
    }
    if !problems.is_empty() {
        bail!(
            "the database is damaged: restore the last backup (see the README's restore procedure)"
        );
    }
    if !unmeasured.is_empty() {
        bail!(
            "the home of {} cannot be measured (see above); make it readable, or move it with `admin-cli home set`, then check again",
            unmeasured.join(", ")
        );
    }
    bail!(
        "the usage of {} differs from the home; run `admin-cli db check --fix` with no upload in progress",
        differ.join(", ")
    );
}

async fn keys(store: &Store, cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Add { name, file } => {
            use std::io::Read;
            let mut text = String::new();
            if file.as_os_str() == "-" {
                std::io::stdin()
                    .take(MAX_KEY_FILE)
                    .read_to_string(&mut text)
                    .context("cannot read the keys from standard input")?;
            } else {
                std::fs::File::open(&file)
                    .and_then(|f| f.take(MAX_KEY_FILE).read_to_string(&mut text))
                    .with_context(|| format!("cannot read the key file {}", file.display()))?;
            }
            let keys = wharf_store::keys::parse_all(&text)?;
            // All or none: a file with one key the user has adds nothing.
            for added in store.add_keys(&name, &keys).await? {
                println!(
                    "added {} {} {} to {name}",
                    added.key_type, added.fingerprint, added.comment
                );
            }
            Ok(())
        }
        KeyCommand::List { name, json } => {
            let keys = store.keys(&name).await?;
            if json.json {
                let views: Vec<view::KeyView> = keys.iter().map(view::KeyView::from).collect();
                return view::print_json(&views);
            }
            if keys.is_empty() {
                println!(
                    "{name} has no SSH key; add one with `admin-cli user key add {name} FILE`"
                );
            } else {
                println!("{}", view::keys_table(&keys));
            }
            Ok(())
        }
        KeyCommand::Rm { name, fingerprint } => {
            let fingerprint = wharf_store::keys::normalise_fingerprint(&fingerprint);
            let gone = store.remove_key(&name, &fingerprint).await?;
            println!(
                "removed {} {} {} from {name}",
                gone.key_type, gone.fingerprint, gone.comment
            );
            Ok(())
        }
    }
}

/// The most of a key file read: a thousand keys' worth.
const MAX_KEY_FILE: u64 = 1024 * 1024;
