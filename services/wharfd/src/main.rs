//! `wharfd`: file transfer, chat and remote exec in one process, one tokio
//! runtime, one database pool and one shutdown signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use wharf_chatd::server::ChatArgs;
use wharf_core::cli::run_main;
use wharf_execd::server::{Exec, ExecArgs};
use wharf_ftpd::server::{FtpArgs, FtpServer};
use wharf_server::cli::DatabaseArgs;
use wharf_server::cli::LimitArgs;
use wharf_server::cli::init_tracing;
use wharf_server::daemon::Daemon;
use wharf_server::daemon::bind;
use wharf_server::daemon::listen_error;
use wharf_server::listener::Listener;
use wharf_server::listener::cancel_on_signal;
use wharf_server::tls::ServerTlsArgs;

const AFTER_HELP: &str = "\
Started as root, wharfd runs each user's commands as that user's own uid
(1900000000 + the user's id) and gives the user's files to it; otherwise as
itself. Either way every command runs in a sandbox the kernel enforces
(Landlock, mount and PID namespaces); where the kernel cannot, exec stays off
and wharfd says what is missing. SIGINT or SIGTERM stops all three: idle sessions are told, transfers in
flight may finish within --shutdown-grace, running commands are killed.

Add users with `admin-cli user add NAME` (exec is granted only explicitly:
`admin-cli user grant NAME exec`). Durations: 10s, 5m, 7d; sizes: 64MiB, 1G.";

/// Wharf all-in-one server: file transfer (TCP 2121), chat (TCP and UDP
/// 2122) and remote exec (TCP 2123) in one process over one database.
#[derive(Debug, Parser)]
#[command(name = "wharfd", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: wharf_server::config::ConfigArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address of the file-transfer service.
    #[arg(long, default_value = "0.0.0.0:2121", value_name = "ADDR")]
    ftp_listen: String,
    /// Address of the chat service, TCP and UDP.
    #[arg(long, default_value = "0.0.0.0:2122", value_name = "ADDR")]
    chat_listen: String,
    /// Address of the remote-exec service.
    #[arg(long, default_value = "0.0.0.0:2123", value_name = "ADDR")]
    exec_listen: String,
    /// Also serve SSH here: sftp and scp for users with the ftp right
    /// (2222 is the usual port).
    #[arg(long, value_name = "ADDR")]
    ssh_listen: Option<String>,
    /// Do not serve file transfer.
    #[arg(long)]
    no_ftp: bool,
    /// Do not serve chat.
    #[arg(long)]
    no_chat: bool,
    /// Do not serve remote exec.
    #[arg(long)]
    no_exec: bool,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    ftp: FtpArgs,
    #[command(flatten)]
    chat: ChatArgs,
    #[command(flatten)]
    exec: ExecArgs,
    #[command(flatten)]
    ssh: wharf_sshd::SshArgs,
    #[command(flatten)]
    tls: ServerTlsArgs,
}

fn main() -> ExitCode {
    wharf_execd::launch::launch_if_asked();
    let args: Args = wharf_server::config::parse();
    init_tracing(args.config.log_format);
    run_main("wharfd", async {
        serve(args).await.map(|()| ExitCode::SUCCESS)
    })
}

/// How to run admin-cli from here: the one beside this binary, else
/// through cargo in a source tree, else the one on the PATH.
fn admin_cli() -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(beside) = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("admin-cli"))
        .filter(|p| p.exists())
    {
        let shown = beside.strip_prefix(&cwd).map(PathBuf::from);
        return shown.unwrap_or(beside).display().to_string();
    }
    if cwd.join("admin-cli").join("Cargo.toml").exists() {
        return "cargo run --release -p admin-cli --".to_owned();
    }
    "admin-cli".to_owned()
}

/// Decides whether exec runs: off when asked, or when the kernel cannot
/// confine commands (then said plainly, with what is missing; the other
/// services go on). One `Exec` serves its own port and the SSH door's
/// commands.
async fn start_exec(args: &Args, daemon: &Daemon) -> Option<Exec> {
    if args.no_exec {
        return None;
    }
    let mut config = args.exec.config(args.limits.limits());
    config.private_dirs = args.database.private_dirs();
    match Exec::start(daemon.auth.clone(), config).await {
        Ok(exec) => Some(exec),
        Err(e) => {
            println!("exec is OFF: {e}");
            None
        }
    }
}

async fn serve(args: Args) -> Result<()> {
    if args.no_ftp && args.no_chat && args.no_exec {
        anyhow::bail!("--no-ftp, --no-chat and --no-exec leave nothing to serve; drop one");
    }
    let limits = args.limits.limits();
    let chat_config = args.chat.config(limits.clone())?;
    let ftp_config = args.ftp.config(limits);
    let daemon = Daemon::start(&args.database, &args.limits, Some(&args.tls), false).await?;
    let (store, auth, tls) = (&daemon.store, &daemon.auth, &daemon.tls);
    let exec = start_exec(&args, &daemon).await;

    // What to do when a service's port is in use.
    let fix = |what: &str| {
        format!("pick another with --{what}-listen, or turn {what} off with --no-{what}")
    };
    let ftp = match args.no_ftp {
        true => None,
        false => Some(bind(&args.ftp_listen, " for ftp", &fix("ftp")).await?),
    };
    // Standard FTP beside the native protocol, when asked for.
    let std_ftp = match args.no_ftp {
        true => None,
        false => {
            let files = args.tls.files(&args.database.data_dir);
            args.ftp
                .std_ftp_listener(files, args.limits.limits())
                .await?
        }
    };
    let chat = match args.no_chat {
        true => None,
        false => Some(
            wharf_chatd::server::bind(&args.chat_listen)
                .await
                .map_err(|e| listen_error(&args.chat_listen, " for chat", &fix("chat"), e))?,
        ),
    };
    let ssh = match &args.ssh_listen {
        None => None,
        Some(at) => {
            let config = args
                .ssh
                .config(args.limits.limits(), &args.database.data_dir)?;
            let fix = "pick another with --ssh-listen, or leave it out";
            Some((bind(at, " for ssh", fix).await?, config))
        }
    };
    let exec = match exec {
        None => None,
        Some(exec) => Some((
            bind(&args.exec_listen, " for exec", &fix("exec")).await?,
            exec,
        )),
    };

    // Caught from here on: once "ready" is printed, SIGTERM stops cleanly.
    let shutdown = cancel_on_signal(|| {
        println!("wharfd: stopping; sessions are told, transfers may finish, commands are killed");
    });
    let addr = |l: &tokio::net::TcpListener| -> Result<SocketAddr> { Ok(l.local_addr()?) };
    println!("wharfd {} serving:", env!("CARGO_PKG_VERSION"));
    if let Some(l) = &ftp {
        println!("  ftp   {}  file transfer", addr(l)?);
    }
    if let Some((l, config)) = &std_ftp {
        let tls = match (&config.tls, config.require_tls) {
            (Some(_), true) => "FTPS required (AUTH TLS)",
            (Some(_), false) => "FTPS offered (AUTH TLS), plaintext allowed",
            (None, _) => "plaintext only (--no-tls)",
        };
        let ports = &config.passive_ports;
        println!(
            "  std   {}  standard FTP, {tls}, passive ports {}-{}",
            addr(l)?,
            ports.start(),
            ports.end()
        );
    }
    if let Some((l, _)) = &chat {
        println!("  chat  {}  chat, TCP and UDP", addr(l)?);
    }
    if let Some((l, config)) = &ssh {
        println!(
            "  ssh   {}  SSH: sftp, scp{}, passwords {}; host key {}",
            addr(l)?,
            if exec.is_some() {
                ", rsync and commands"
            } else {
                " (commands off)"
            },
            if config.password_login {
                "and keys"
            } else {
                "off, keys only"
            },
            wharf_sshd::host_key::fingerprint_line(&config.host_key)
        );
    }
    if let Some((l, exec)) = &exec {
        println!(
            "  exec  {}  remote exec, commands run {}, {}",
            addr(l)?,
            exec.config().runs_as(),
            exec.config().network()
        );
    }
    // Where the services can be reached from, said plainly: the default
    // is every interface, for the people of an organisation.
    let mut listening = Vec::new();
    for l in [
        ftp.as_ref(),
        chat.as_ref().map(|(l, _)| l),
        exec.as_ref().map(|(l, _)| l),
    ]
    .into_iter()
    .flatten()
    {
        listening.push(addr(l)?);
    }
    if let Some((l, _)) = &std_ftp {
        listening.push(addr(l)?);
    }
    if let Some((l, _)) = &ssh {
        listening.push(addr(l)?);
    }
    let open = listening.iter().filter(|a| !a.ip().is_loopback()).count();
    if open == 0 {
        println!("reachable from this machine only (loopback)");
    } else {
        println!(
            "reachable from other machines: {} on every interface or a public address; --ftp-listen 127.0.0.1:2121 (and the like) keeps a service to this machine",
            if open == listening.len() {
                "all services"
            } else {
                "some services"
            }
        );
        if exec
            .as_ref()
            .is_some_and(|(l, _)| l.local_addr().is_ok_and(|a| !a.ip().is_loopback()))
        {
            println!(
                "  exec takes logins from the network: only users granted it (admin-cli user grant NAME exec) run commands"
            );
        }
    }
    let mut own = Vec::new();
    if let Some(l) = &ftp {
        own.push(("ftp", addr(l)?));
    }
    if let Some((l, _)) = &std_ftp {
        own.push(("std-ftp", addr(l)?));
    }
    if let Some((l, _)) = &chat {
        own.push(("chat", addr(l)?));
    }
    if let Some((l, _)) = &exec {
        own.push(("exec", addr(l)?));
    }
    if let Some((l, _)) = &ssh {
        own.push(("ssh", addr(l)?));
    }
    if let Some(at) = args.config.start_metrics(store, own, &shutdown).await? {
        println!("  metrics http://{at}/metrics and /health");
    }
    match &tls {
        Some(tls) => println!(
            "TLS on, certificate {}\n  SHA-256 fingerprint {}",
            tls.cert_path.display(),
            tls.fingerprint
        ),
        None => println!("TLS OFF (--no-tls): everything crosses the network in clear"),
    }
    println!(
        "database {}; homes under {}",
        daemon.database,
        args.database.data_dir.join("homes").display()
    );
    if ftp.is_some() || std_ftp.is_some() || exec.is_some() {
        println!("quota: {}", args.database.quota_enforcement());
    }
    if store.has_no_users().await? {
        let admin = admin_cli();
        let db = if args.database.database_url.is_some() {
            format!(" --database-url {}", daemon.database)
        } else if args.database.data_dir.as_os_str() != wharf_core::config::DEFAULT_DATA_DIR {
            format!(" --data-dir {}", args.database.data_dir.display())
        } else {
            String::new()
        };
        println!("No users yet. Add one with:\n  {admin}{db} user add alice");
    }
    println!("ready; Ctrl-C or SIGTERM stops it");

    // A service that cannot start stops the others.
    let stop_all = |r: Result<()>| {
        if r.is_err() {
            shutdown.cancel();
        }
        r
    };
    if let Some((listener, config)) = std_ftp {
        tokio::spawn(wharf_ftpd::server::stdftp::serve(
            listener,
            auth.clone(),
            store.clone(),
            config,
            shutdown.clone(),
        ));
    }
    let ftp_task = async {
        if let Some(listener) = ftp {
            let server = FtpServer::new(auth.clone(), ftp_config);
            let listener = Listener::new(listener, tls.clone());
            wharf_ftpd::server::run(listener, server, shutdown.clone()).await;
        }
        Ok(())
    };
    let chat_task = async {
        let r = match chat {
            Some((listener, udp)) => {
                let listener = Listener::new(listener, tls.clone());
                wharf_chatd::server::run(listener, udp, auth.clone(), chat_config, shutdown.clone())
                    .await
                    .context("chat stopped")
            }
            None => Ok(()),
        };
        stop_all(r)
    };
    let ssh_exec = exec.as_ref().map(|(_, exec)| exec.clone());
    let exec_ends = ssh_exec.clone();
    let ssh_task = async {
        if let Some((listener, config)) = ssh {
            let server = wharf_sshd::SshServer::new(auth.clone(), config, ssh_exec);
            let server = std::sync::Arc::new(server);
            wharf_sshd::run(Listener::new(listener, None), server, shutdown.clone()).await;
        }
    };
    let exec_task = async {
        if let Some((listener, exec)) = exec {
            let listener = Listener::new(listener, tls.clone());
            exec.serve(listener, shutdown.clone()).await;
        }
    };
    // The SSH door's sessions end (their uploads kept) before the
    // database closes, as the other services' do.
    let (f, c, (), ()): (Result<()>, Result<()>, (), ()) =
        tokio::join!(ftp_task, chat_task, exec_task, ssh_task);
    if let Some(exec) = exec_ends {
        exec.finish().await;
    }
    daemon.stop().await;
    f?;
    c?;
    println!("wharfd: stopped");
    Ok(())
}
