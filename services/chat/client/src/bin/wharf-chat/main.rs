//! `wharf-chat`: the chat client. Interactive (lines are said to the current
//! room, `/commands` do the rest): on a terminal, a screen with an input
//! line that incoming messages never overwrite (see [`screen`]); fed from a
//! pipe, one line at a time. Or one-shot `send` and `listen`.

mod screen;

use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::io::AsyncBufReadExt;
use wharf_chat::client::{ChatClient, Event};
use wharf_client::Credential;
use wharf_client::cli::ClientFields;
use wharf_client::cli::client_user;
use wharf_client::cli::log_in;
use wharf_client::cli::parse_client;
use wharf_client::cli::run_main;
use wharf_client::cli::{LoginArgs, current_password};
use wharf_client::editor::Printer;
use wharf_client::tls::ClientTls;
use wharf_client::tls::ClientTlsArgs;
use wharf_proto::chat::{ChatMessage, PresenceChange};

const AFTER_HELP: &str = "\
Without a command, wharf-chat is interactive: a line is said to the current room;
/join ROOM, /part [ROOM], /me ACTION, /msg USER TEXT, /query [USER], /names [ROOM],
/rooms, /history [N], /passwd, /help, /quit. Room names may be written #room.
On a terminal, messages appear above the line you type, with the time; Up and
Ctrl-R recall earlier lines, Tab completes commands, rooms and names; a lost
connection is made again (1 s, 2 s, 4 s... up to 30 s apart), the rooms rejoined
and the messages missed meanwhile shown.
It also reads standard input when it is not a terminal, so scripts can pipe into it.
It logs in by key (--identity, ssh-agent, ~/.ssh/id_ed25519) when the user has
one (admin-cli user key add); else the password comes from WHARF_PASSWORD when
set, or is asked for.
Exit status: 0; 1 when a line failed (piped) or the session could not go on.

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
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    docs: wharf_core::cli::DocsArgs,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Say TEXT in ROOM, then exit.
    Send {
        /// Room to say it in: one with people in it, unless --create.
        #[arg(long, value_name = "ROOM")]
        room: String,
        /// Say it even when nobody is in ROOM (which makes the room).
        #[arg(long)]
        create: bool,
        /// The message (several words are joined by spaces).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Change your password: the new one is asked twice (or read from one
    /// line of standard input with --password-stdin); it takes effect at
    /// the next login, in every service.
    Passwd {
        /// Read the new password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
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
    let args = parse_client::<Args>("wharf-chat", "chat", 2, |a| ClientFields {
        server: &mut a.server,
        user: &mut a.user,
        ca: &mut a.tls.ca,
        docs: &a.docs,
    });
    run_main("wharf-chat", run(args))
}

/// How to log in (again, after a lost connection).
pub struct Login {
    server: String,
    tls: ClientTls,
    user: String,
    credential: Credential,
    udp: bool,
}

impl Login {
    async fn connect(&self) -> Result<ChatClient> {
        connect_as(
            &self.server,
            &self.tls,
            &self.user,
            &self.credential,
            self.udp,
        )
        .await
        .with_context(|| format!("cannot log in to {} as {}", self.server, self.user))
    }
}

/// A session over TCP, or UDP with `udp`.
async fn connect_as(
    server: &str,
    tls: &ClientTls,
    user: &str,
    credential: &Credential,
    udp: bool,
) -> Result<ChatClient, wharf_chat::client::ClientError> {
    if udp {
        ChatClient::connect_udp(server, tls, user, credential).await
    } else {
        ChatClient::connect(server, tls, user, credential).await
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    let user = client_user(args.user.clone())?;
    let tls = args.tls.tls()?;
    let (server, tls_ref, name, udp) = (&args.server, &tls, &user, args.udp);
    let (mut client, credential) = log_in(
        &user,
        &args.server,
        &args.login,
        |c| async move { connect_as(server, tls_ref, name, &c, udp).await },
        |e: &wharf_chat::client::ClientError| e.code() == Some(wharf_proto::ErrorCode::AuthFailed),
    )
    .await?;
    let mut login = Login {
        server: args.server.clone(),
        tls,
        user,
        credential,
        udp: args.udp,
    };
    let mut view = View::default();
    let code = match args.command {
        Some(Cmd::Send { room, text, create }) => {
            let room = room_name(&room);
            wharf_proto::chat::validate_room(room).map_err(anyhow::Error::msg)?;
            // A name typed wrong must not quietly make a room nobody reads.
            if !create {
                let (rooms, more) = client.rooms().await.context("cannot list the rooms")?;
                if more == 0 && !rooms.iter().any(|r| r.name == room) {
                    let mut names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
                    names.truncate(10);
                    let there = if names.is_empty() {
                        "no room has anyone in it now".to_owned()
                    } else {
                        format!("rooms with people in them: {}", names.join(", "))
                    };
                    anyhow::bail!(
                        "nobody is in room {room} ({there}); check the name, or add --create to say it there anyway"
                    );
                }
            }
            client
                .join(room)
                .await
                .with_context(|| format!("cannot join {room}"))?;
            client
                .say(room, &text.join(" "))
                .await
                .with_context(|| format!("cannot say it in {room}"))?;
            ExitCode::SUCCESS
        }
        Some(Cmd::Passwd { password_stdin }) => {
            passwd(&mut client, &mut login, password_stdin).await?;
            eprintln!(
                "password changed for {}; use the new one from the next login on",
                login.user
            );
            ExitCode::SUCCESS
        }
        Some(Cmd::Listen { room, count }) => {
            let room = room_name(&room).to_owned();
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
        None if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() => {
            return screen::run(client, &mut login).await;
        }
        None => piped(&mut client, &mut view).await?,
    };
    let _ = client.quit().await;
    Ok(code)
}

/// Changes the password from the one the login took (asked for when it
/// took a key); a later login after a lost connection takes the new one.
pub async fn passwd(client: &mut ChatClient, login: &mut Login, from_stdin: bool) -> Result<()> {
    let old = current_password(&login.credential, &login.user, &login.server)?;
    let new = wharf_core::cli::read_new_password(client.user(), from_stdin)?;
    client
        .passwd(&old, &new)
        .await
        .context("the password was not changed")?;
    if let Credential::Password(_) = login.credential {
        login.credential = Credential::Password(new);
    }
    Ok(())
}

/// A room as typed: IRC's `#room` is Wharf's `room`.
pub fn room_name(typed: &str) -> &str {
    typed.strip_prefix('#').unwrap_or(typed)
}

/// Where lines typed go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The current room.
    Room(String),
    /// A user, as direct messages (`/query`).
    User(String),
}

/// Names seen, for completion (rooms and users).
#[derive(Debug, Default)]
pub struct Names {
    pub rooms: BTreeSet<String>,
    pub users: BTreeSet<String>,
}

/// On a terminal: where lines go and how they look.
pub struct Screen {
    printer: Printer,
    zone: jiff::tz::TimeZone,
}

/// What the session shows, and what it remembers to show it well.
#[derive(Default)]
pub struct View {
    /// Where a line typed goes (the current room, or a user).
    target: Option<Target>,
    joined: Vec<String>,
    last_seq: HashMap<String, u64>,
    /// Rooms and users seen, for completion.
    names: Arc<Mutex<Names>>,
    /// On a terminal; None prints plain lines, as scripts read them.
    screen: Option<Screen>,
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
    /// A line of the session's own ("you joined lobby", "in lobby: ...").
    fn note(&self, text: &str) {
        match &self.screen {
            Some(s) => s.line(None, &format!("-- {text}")),
            None => println!("* {text}"),
        }
    }

    fn remember(&self, room: Option<&str>, user: Option<&str>) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = room {
            names.rooms.insert(room.to_owned());
        }
        if let Some(user) = user {
            names.users.insert(user.to_owned());
        }
    }

    /// Shows a message: numbered room messages once each, in order, a gap
    /// said as one.
    fn message(&mut self, m: &ChatMessage, me: &str) {
        if let (Some(room), Some(seq)) = (&m.room, m.seq) {
            let last = self
                .last_seq
                .entry(room.clone())
                .or_insert(seq.saturating_sub(1));
            if seq <= *last {
                return; // a duplicate or a latecomer already accounted for
            }
            let missed = seq - *last - 1;
            *last = seq;
            if missed > 0 {
                self.note(&format!(
                    "{missed} message(s) missed in {room} (see /history)"
                ));
            }
        }
        self.show(m, me);
    }

    /// Shows a message as it is (history replays it).
    fn show(&self, m: &ChatMessage, me: &str) {
        self.remember(m.room.as_deref(), Some(&m.from));
        let cut = if m.truncated {
            " [cut to fit UDP; /history over TCP has it all]"
        } else {
            ""
        };
        let text = clean(&m.text);
        let action = text.strip_prefix("/me ");
        let Some(screen) = &self.screen else {
            // An action reads `* alice waves`, as on the screen.
            let said = match action {
                Some(act) => format!("* {} {act}", m.from),
                None => format!("{}: {text}", m.from),
            };
            match (&m.room, &m.to) {
                (Some(room), _) => println!("[{room}] {said}{cut}"),
                (None, Some(to)) if m.from == me && to != me => {
                    println!("[dm to {to}] {said}{cut}");
                }
                _ => println!("[dm] {said}{cut}"),
            }
            return;
        };
        let line = match (&m.room, &m.to, action) {
            (Some(room), _, Some(act)) => format!("#{room} * {} {act}{cut}", m.from),
            (Some(room), _, None) => format!("#{room} <{}> {text}{cut}", m.from),
            (None, Some(to), act) if m.from == me && to != me => match act {
                Some(act) => format!("-> *{to}* * {me} {act}{cut}"),
                None => format!("-> *{to}* {text}{cut}"),
            },
            (None, _, Some(act)) => format!("*{}* * {} {act}{cut}", m.from, m.from),
            (None, _, None) => format!("*{}* {text}{cut}", m.from),
        };
        screen.line(Some(m.at), &line);
    }

    fn event(&mut self, event: Event, me: &str) {
        match event {
            Event::Message(m) => self.message(&m, me),
            Event::Presence { room, user, change } => {
                self.remember(Some(&room), Some(&user));
                let what = match change {
                    PresenceChange::Joined => "joined",
                    PresenceChange::Left => "left",
                    PresenceChange::Dropped => "was disconnected from (too slow)",
                };
                self.note(&format!("{user} {what} {}", self.shown_room(&room)));
            }
        }
    }

    fn shown_room(&self, room: &str) -> String {
        match self.screen {
            Some(_) => format!("#{room}"),
            None => room.to_owned(),
        }
    }

    /// The current room, if lines go to one.
    fn room(&self) -> Option<&str> {
        match &self.target {
            Some(Target::Room(r)) => Some(r),
            _ => None,
        }
    }
}

impl Screen {
    /// Prints `text` above the input line, after the time (`at`, unix ms,
    /// else now).
    fn line(&self, at: Option<i64>, text: &str) {
        let now = jiff::Timestamp::now();
        let at = at
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .unwrap_or(now);
        let time = self.zone.to_datetime(at).strftime("%H:%M").to_string();
        self.printer.line(format!("{time} {text}"));
    }
}

const HELP: &str = "\
  TEXT                say TEXT in the current room, or to the /query user
                      (//TEXT says a line starting with /)
  /join ROOM          join ROOM (or #ROOM) and make it current
  /part [ROOM]        leave ROOM (default: the current one); also /leave
  /me ACTION          say an action: * you ACTION
  /msg USER TEXT      direct message to USER
  /query [USER]       lines typed go to USER; without USER, back to the room
  /names [ROOM]       who is in ROOM (default: the current one); also /who
  /rooms              rooms with people in them
  /history [N]        the last N messages of the current room (default 50)
  /passwd             change your password (on a terminal)
  /quit               leave";

/// Lines from a pipe: each is said or run; the session ends at the end of
/// input.
async fn piped(client: &mut ChatClient, view: &mut View) -> Result<ExitCode> {
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

/// Joins `room`, making it current.
async fn join(client: &mut ChatClient, view: &mut View, room: &str) -> Result<()> {
    let seq = client.join(room).await?;
    view.last_seq.entry(room.to_owned()).or_insert(seq);
    if !view.joined.iter().any(|r| r == room) {
        view.joined.push(room.to_owned());
    }
    view.target = Some(Target::Room(room.to_owned()));
    view.remember(Some(room), None);
    view.note(&format!("you joined {}", view.shown_room(room)));
    Ok(())
}

/// Runs one line; `false` to quit.
pub async fn command(client: &mut ChatClient, view: &mut View, line: &str) -> Result<bool> {
    if line.is_empty() {
        return Ok(true);
    }
    let text = match line.strip_prefix('/') {
        Some(rest) if rest.starts_with('/') => rest,
        Some(rest) if rest.starts_with("me ") => line,
        Some(rest) => {
            let (cmd, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            let arg = arg.trim();
            match cmd {
                "join" if !arg.is_empty() => join(client, view, room_name(arg)).await?,
                "leave" | "part" => {
                    let room = current(view, arg)?;
                    client.leave(&room).await?;
                    view.joined.retain(|r| *r != room);
                    view.last_seq.remove(&room);
                    if view.room() == Some(room.as_str()) {
                        view.target = view.joined.last().cloned().map(Target::Room);
                    }
                    view.note(&format!("you left {}", view.shown_room(&room)));
                }
                "msg" => {
                    let Some((to, text)) = arg.split_once(' ') else {
                        anyhow::bail!("usage: /msg USER TEXT");
                    };
                    dm(client, view, to, text.trim()).await?;
                }
                "query" if arg.is_empty() => {
                    view.target = view.joined.last().cloned().map(Target::Room);
                }
                "query" => {
                    view.target = Some(Target::User(arg.to_owned()));
                    view.remember(None, Some(arg));
                    view.note(&format!(
                        "lines you type now go to {arg}; /query alone ends it"
                    ));
                }
                "who" | "names" => {
                    let room = current(view, arg)?;
                    let members = client.who(&room).await?;
                    let more = if members.more > 0 {
                        format!(" and {} more", members.more)
                    } else {
                        String::new()
                    };
                    for u in &members.users {
                        view.remember(None, Some(u));
                    }
                    let shown = view.shown_room(&room);
                    view.note(&format!("in {shown}: {}{more}", members.users.join(", ")));
                }
                "rooms" => {
                    let (rooms, more) = client.rooms().await?;
                    if rooms.is_empty() {
                        view.note("no rooms have anyone in them");
                    }
                    for r in rooms {
                        view.remember(Some(&r.name), None);
                        let s = if r.members == 1 { "" } else { "s" };
                        let shown = view.shown_room(&r.name);
                        view.note(&format!("{shown} ({} user{s})", r.members));
                    }
                    if more > 0 {
                        view.note(&format!("and {more} more rooms"));
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
                        view.show(&m, client.user());
                    }
                }
                "passwd" => {
                    anyhow::bail!(
                        "/passwd asks on a terminal; from a script, use: wharf-chat passwd --password-stdin"
                    )
                }
                "quit" | "exit" => return Ok(false),
                "help" => match &view.screen {
                    Some(s) => HELP.lines().for_each(|l| s.printer.line(l)),
                    None => println!("{HELP}"),
                },
                _ => anyhow::bail!("unknown command /{cmd}; /help lists them"),
            }
            return Ok(true);
        }
        None => line,
    };
    match view.target.clone() {
        Some(Target::User(to)) => dm(client, view, &to, text).await,
        Some(Target::Room(room)) => {
            let said = client.say(&room, text).await?;
            // Our own message is not echoed back: count it, so it is not a
            // gap, and show it on a screen.
            if let Some(seq) = said.seq {
                let last = view.last_seq.entry(room.clone()).or_insert(seq);
                *last = (*last).max(seq);
            }
            if view.screen.is_some() {
                view.show(
                    &own(client.user(), Some(room), None, text, said.at),
                    client.user(),
                );
            }
            Ok(())
        }
        None => anyhow::bail!("join a room first: /join ROOM"),
    }?;
    Ok(true)
}

/// A direct message, shown on a screen as sent.
async fn dm(client: &mut ChatClient, view: &View, to: &str, text: &str) -> Result<()> {
    let said = client.dm(to, text).await?;
    view.remember(None, Some(to));
    if view.screen.is_some() && to != client.user() {
        let m = own(client.user(), None, Some(to.to_owned()), text, said.at);
        view.show(&m, client.user());
    }
    Ok(())
}

/// A message of our own, as the server would show it to others.
fn own(me: &str, room: Option<String>, to: Option<String>, text: &str, at: i64) -> ChatMessage {
    ChatMessage {
        id: 0,
        room,
        to,
        seq: None,
        from: me.to_owned(),
        at,
        text: text.to_owned(),
        truncated: false,
        replay: false,
    }
}

/// The room named, or the current one.
fn current(view: &View, arg: &str) -> Result<String> {
    if !arg.is_empty() {
        return Ok(room_name(arg).to_owned());
    }
    view.room()
        .map(str::to_owned)
        .context("no current room: name one, or /join ROOM first")
}
