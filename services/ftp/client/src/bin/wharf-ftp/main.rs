//! `wharf-ftp`: the file-transfer client. One command from the command line,
//! or an interactive shell (commands from stdin, one per line, when no
//! command is given).

mod commands;
mod complete;
mod many;
mod shell;
mod ui;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use wharf_client::cli::ClientFields;
use wharf_client::cli::client_user;
use wharf_client::cli::log_in;
use wharf_client::cli::parse_client;
use wharf_client::cli::run_main;
use wharf_client::tls::ClientTlsArgs;
use wharf_ftp::client::Client;

use crate::commands::Cmd;

const AFTER_HELP: &str = "\
Without a command, wharf-ftp is an interactive shell (type `help`); it also reads
commands from standard input, one per line, so scripts can pipe into it.
It logs in by key (--identity, ssh-agent, ~/.ssh/id_ed25519) when the user has
one (admin-cli user key add); else the password comes from WHARF_PASSWORD when
set, or is asked for.

Examples:
  wharf-ftp --user alice put report.pdf
  wharf-ftp --user alice get report.pdf copy.pdf
  wharf-ftp --user alice ls --json
  printf 'mkdir docs\\ncd docs\\nput notes.txt\\nls\\n' | wharf-ftp --user alice";

/// Wharf file-transfer client: md5-verified, resumable uploads and downloads.
#[derive(Debug, Parser)]
#[command(name = "wharf-ftp", version, after_help = AFTER_HELP)]
struct Args {
    /// Server to connect to.
    #[arg(
        long,
        env = "WHARF_FTP_SERVER",
        default_value = "127.0.0.1:2121",
        value_name = "HOST:PORT"
    )]
    server: String,
    /// User to log in as [default: $USER].
    #[arg(long, env = "WHARF_USER", value_name = "NAME")]
    user: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Most bytes per second for put and get: 500K, 40M, 1G.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,
    /// Sync each download to disk before it takes its name (slower; off by
    /// default, as in scp and curl: the md5 is checked either way).
    #[arg(long)]
    fsync: bool,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(flatten)]
    login: wharf_client::cli::LoginArgs,
    #[command(flatten)]
    docs: wharf_core::cli::DocsArgs,
    #[command(subcommand)]
    command: Option<Cmd>,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    wharf_core::size::parse_size(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = parse_client::<Args>("wharf-ftp", "ftp", 2, |a| ClientFields {
        server: &mut a.server,
        user: &mut a.user,
        ca: &mut a.tls.ca,
        docs: &a.docs,
    });
    run_main("wharf-ftp", run(args))
}

async fn run(args: Args) -> Result<ExitCode> {
    let user = client_user(args.user.clone())?;
    let tls = args.tls.tls()?;
    let (server, tls_ref, name) = (&args.server, &tls, &user);
    let (mut client, credential) = log_in(
        &user,
        &args.server,
        &args.login,
        |c| async move { Client::connect(server, tls_ref, name, &c).await },
        |e: &wharf_ftp::client::ClientError| e.code() == Some(wharf_proto::ErrorCode::AuthFailed),
    )
    .await?;
    let ui = ui::Ui {
        progress: !args.quiet && std::io::stderr().is_terminal(),
        rate_limit: args.limit_rate,
        fsync: args.fsync,
    };
    let mut login = shell::Login {
        server: args.server.clone(),
        tls,
        user,
        credential,
    };
    let code = match args.command {
        Some(cmd) => {
            // Ctrl-C: what was transferred is kept, and said so, as the
            // shell says it.
            tokio::select! {
                done = commands::execute(&mut client, cmd, &ui, &mut login) => {
                    done?;
                    ExitCode::SUCCESS
                }
                _ = tokio::signal::ctrl_c() => {
                    eprintln!(
                        "wharf-ftp: cancelled (what was transferred is kept: run the same command to resume)"
                    );
                    return Ok(ExitCode::from(130));
                }
            }
        }
        None => shell::run(&mut client, &ui, &mut login).await?,
    };
    let _ = client.quit().await;
    Ok(code)
}
