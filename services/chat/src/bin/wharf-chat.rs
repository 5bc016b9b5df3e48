//! `wharf-chat`: the chat client. Interactive (lines are said to the current
//! room, `/commands` do the rest; reads stdin when it is not a terminal, so
//! scripts can pipe into it), or one-shot `send` and `listen`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::io::AsyncBufReadExt;
use wharf_chat::client::{ChatClient, Event};
use wharf_core::cli::{client_password, client_user, run_main};
use wharf_core::tls::ClientTlsArgs;
use wharf_proto::chat::{ChatMessage, PresenceChange};

const AFTER_HELP: &str = "\
Without a command, wharf-chat is interactive: a line is said to the current room;
/join ROOM, /leave [ROOM], /msg USER TEXT, /who [ROOM], /rooms, /history [N], /help, /quit.
It also reads standard input when it is not a terminal, so scripts can pipe into it.
The password comes from WHARF_PASSWORD when set, else it is asked for.

Examples:
  wharf-chat --user alice
  wharf-chat --user bob --udp
  wharf-chat --user alice send --room lobby 'build is green'
  wharf-chat --user bob listen --room lobby --count 10";

/// Wharf chat client: rooms and direct messages, over TCP or UDP.
#[derive(Debug, Parser)]
#[command(name = "wharf-chat", version, after_help = AFTER_HELP)]
struct Args {
    /// Server to connect to (TCP and UDP).
    #[arg(
        long,
        env = "WHARF_CHAT_SERVER",
        default_value = "127.0.0.1:2122",
        value_name = "HOST:PORT"
    )]
    server: String,
    /// User to log in as [default: $USER].
    #[arg(long, env = "WHARF_USER", value_name = "NAME")]
    user: Option<String>,
    /// Chat over UDP (the login still goes over TCP).
    #[arg(long)]
    udp: bool,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Say TEXT in ROOM, then exit.
    Send {
        /// Room to say it in.
        #[arg(long, value_name = "ROOM")]
        room: String,
        /// The message (several words are joined by spaces).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Print the messages said in ROOM, one line each: `[room] sender: text`.
    Listen {
        /// Room to listen to.
        #[arg(long, value_name = "ROOM")]
        room: String,
        /// Exit after N messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_main("wharf-chat", run(args))
}

async fn run(args: Args) -> Result<ExitCode> {
    let user = client_user(args.user.clone())?;
    let tls = args.tls.tls()?;
    let password = client_password(&user, &args.server)?;
    let connected = if args.udp {
        ChatClient::connect_udp(&args.server, &tls, &user, &password).await
    } else {
        ChatClient::connect(&args.server, &tls, &user, &password).await
    };
    let mut client =
        connected.with_context(|| format!("cannot log in to {} as {user}", args.server))?;
    let mut view = View::default();
    let code = match args.command {
        Some(Cmd::Send { room, text }) => {
            client
                .join(&room)
                .await
                .with_context(|| format!("cannot join {room}"))?;
            client
                .say(&room, &text.join(" "))
                .await
                .with_context(|| format!("cannot say it in {room}"))?;
            ExitCode::SUCCESS
        }
        Some(Cmd::Listen { room, count }) => {
            let seq = client
                .join(&room)
                .await
                .with_context(|| format!("cannot join {room}"))?;
            view.last_seq.insert(room.clone(), seq);
            let mut seen = 0;
            while count.is_none_or(|n| seen < n) {
                match client.next_event().await? {
                    Event::Message(m) if m.room.as_deref() == Some(room.as_str()) => {
                        view.message(&m, client.user());
                        seen += 1;
                    }
                    _ => {}
                }
            }
            ExitCode::SUCCESS
        }
        None => interactive(&mut client, &mut view).await?,
    };
    let _ = client.quit().await;
    Ok(code)
}

/// What the screen shows, and what it remembers to show it well.
#[derive(Default)]
struct View {
    room: Option<String>,
    joined: Vec<String>,
    last_seq: HashMap<String, u64>,
}

/// Text from others, made safe for a terminal.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect::<String>()
        .replace('\n', "\n    ")
}

impl View {
    fn message(&mut self, m: &ChatMessage, me: &str) {
        let cut = if m.truncated {
            " [cut to fit UDP; /history over TCP has it all]"
        } else {
            ""
        };
        match (&m.room, &m.to) {
            (Some(room), _) => {
                if let Some(seq) = m.seq {
                    let last = self
                        .last_seq
                        .entry(room.clone())
                        .or_insert(seq.saturating_sub(1));
                    if seq <= *last {
                        return; // a duplicate or a latecomer already accounted for
                    }
                    if seq > *last + 1 {
                        println!(
                            "* {} message(s) missed in {room} (see /history)",
                            seq - *last - 1
                        );
                    }
                    *last = seq;
                }
                println!("[{room}] {}: {}{cut}", m.from, clean(&m.text));
            }
            (None, Some(to)) if m.from == me && to != me => {
                println!("[dm to {to}] {}: {}{cut}", m.from, clean(&m.text));
            }
            _ => println!("[dm] {}: {}{cut}", m.from, clean(&m.text)),
        }
    }

    fn event(&mut self, event: Event, me: &str) {
        match event {
            Event::Message(m) => self.message(&m, me),
            Event::Presence { room, user, change } => {
                let what = match change {
                    PresenceChange::Joined => "joined",
                    PresenceChange::Left => "left",
                    PresenceChange::Dropped => "was disconnected from (too slow)",
                };
                println!("* {user} {what} {room}");
            }
        }
    }
}

const HELP: &str = "\
  TEXT                say TEXT in the current room (//TEXT says a line starting with /)
  /join ROOM          join ROOM and make it current
  /leave [ROOM]       leave ROOM (default: the current one)
  /msg USER TEXT      direct message to USER
  /who [ROOM]         who is in ROOM (default: the current one)
  /rooms              rooms with people in them
  /history [N]        the last N messages of the current room (default 50)
  /quit               leave";

async fn interactive(client: &mut ChatClient, view: &mut View) -> Result<ExitCode> {
    let terminal = std::io::stdin().is_terminal();
    if terminal {
        let how = if client.is_udp() { "UDP" } else { "TCP" };
        println!(
            "logged in as {} over {how}; /join ROOM to start, /help for commands",
            client.user()
        );
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut failed = false;
    loop {
        tokio::select! {
            event = client.next_event() => {
                let event = event.context("the chat session ended")?;
                view.event(event, client.user());
            }
            line = lines.next_line() => {
                let Some(line) = line.context("cannot read standard input")? else {
                    break;
                };
                match command(client, view, line.trim_end()).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        failed = true;
                        eprintln!(
                            "wharf-chat: {}",
                            wharf_core::cli::describe(e.as_ref()).replace('\n', " ")
                        );
                    }
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs one line; `false` to quit.
async fn command(client: &mut ChatClient, view: &mut View, line: &str) -> Result<bool> {
    if line.is_empty() {
        return Ok(true);
    }
    let text = match line.strip_prefix('/') {
        Some(rest) if rest.starts_with('/') => rest,
        Some(rest) => {
            let (cmd, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            let arg = arg.trim();
            match cmd {
                "join" if !arg.is_empty() => {
                    let seq = client.join(arg).await?;
                    view.last_seq.entry(arg.to_owned()).or_insert(seq);
                    if !view.joined.iter().any(|r| r == arg) {
                        view.joined.push(arg.to_owned());
                    }
                    view.room = Some(arg.to_owned());
                    println!("* you joined {arg}");
                }
                "leave" => {
                    let room = current(view, arg)?;
                    client.leave(&room).await?;
                    view.joined.retain(|r| *r != room);
                    view.last_seq.remove(&room);
                    if view.room.as_deref() == Some(room.as_str()) {
                        view.room = view.joined.last().cloned();
                    }
                    println!("* you left {room}");
                }
                "msg" => {
                    let Some((to, text)) = arg.split_once(' ') else {
                        anyhow::bail!("usage: /msg USER TEXT");
                    };
                    client.dm(to, text.trim()).await?;
                }
                "who" => {
                    let room = current(view, arg)?;
                    let members = client.who(&room).await?;
                    let more = if members.more > 0 {
                        format!(" and {} more", members.more)
                    } else {
                        String::new()
                    };
                    println!("* in {room}: {}{more}", members.users.join(", "));
                }
                "rooms" => {
                    let (rooms, more) = client.rooms().await?;
                    if rooms.is_empty() {
                        println!("* no rooms have anyone in them");
                    }
                    for r in rooms {
                        println!(
                            "* {} ({} user{})",
                            r.name,
                            r.members,
                            if r.members == 1 { "" } else { "s" }
                        );
                    }
                    if more > 0 {
                        println!("* and {more} more rooms");
                    }
                }
                "history" => {
                    let room = current(view, "")?;
                    let limit = match arg {
                        "" => None,
                        n => Some(
                            n.parse()
                                .with_context(|| format!("/history takes a count, not {n:?}"))?,
                        ),
                    };
                    for m in client.history(&room, limit).await? {
                        let cut = if m.truncated { " [cut]" } else { "" };
                        println!("[{room}] {}: {}{cut}", m.from, clean(&m.text));
                    }
                }
                "quit" | "exit" => return Ok(false),
                "help" => println!("{HELP}"),
                _ => anyhow::bail!("unknown command /{cmd}; /help lists them"),
            }
            return Ok(true);
        }
        None => line,
    };
    let Some(room) = view.room.clone() else {
        anyhow::bail!("join a room first: /join ROOM");
    };
    let said = client.say(&room, text).await?;
    // Our own message is not echoed back: count it, so it is not a gap.
    if let Some(seq) = said.seq {
        let last = view.last_seq.entry(room).or_insert(seq);
        *last = (*last).max(seq);
    }
    Ok(true)
}

/// The room named, or the current one.
fn current(view: &View, arg: &str) -> Result<String> {
    if !arg.is_empty() {
        return Ok(arg.to_owned());
    }
    view.room
        .clone()
        .context("no current room: name one, or /join ROOM first")
}
