//! The chat screen, on a terminal: messages above an input line that they
//! never overwrite (rustyline prints them above it and draws the line
//! again), the time before each, history and completion, and a session
//! that outlives a lost connection: reconnect with back-off, rejoin, show
//! what was missed.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;
use wharf_chat::client::{ChatClient, ClientError, Event};
use wharf_client::editor::Candidate;
use wharf_client::editor::CompleteFn;
use wharf_client::editor::Input;
use wharf_client::editor::LineEditor;
use wharf_proto::ErrorCode;

use crate::{Login, Names, Screen, Target, View, command};

/// Commands, as completed.
const COMMANDS: &[&str] = &[
    "/help", "/history", "/join", "/leave", "/me", "/msg", "/names", "/part", "/passwd", "/query",
    "/quit", "/rooms", "/who",
];

/// Quiet this long, the session pings (the server closes idle sessions).
const KEEPALIVE: Duration = Duration::from_secs(60);

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Messages of each room fetched after a reconnect, to show what was
/// missed.
const CATCH_UP: u32 = 200;

/// Runs the screen until `/quit`, Ctrl-D, or a refusal that reconnecting
/// cannot mend (the account locked, say).
pub async fn run(client: ChatClient, login: &mut Login) -> Result<ExitCode> {
    let names = Arc::new(Mutex::new(Names::default()));
    let mut editor = LineEditor::start("chat", completer(Arc::clone(&names)))?;
    let mut view = View {
        names,
        screen: Some(Screen {
            printer: editor.printer(),
            zone: jiff::tz::TimeZone::system(),
        }),
        ..View::default()
    };
    // The server's rooms, for Tab after /join: a name need not be guessed.
    let mut client = client;
    if let Ok((rooms, _)) = client.rooms().await {
        for r in rooms {
            view.remember(Some(&r.name), None);
        }
    }
    let how = if client.is_udp() { "UDP" } else { "TCP" };
    view.note(&format!(
        "logged in to {} as {} over {how}; /join ROOM to start, /help for commands",
        login.server,
        client.user()
    ));
    let me = client.user().to_owned();
    let mut client = Some(client);
    let mut backoff = FIRST_BACKOFF;
    let mut retry_at = Instant::now();
    let mut code = ExitCode::SUCCESS;
    // Why the session ended, when it failed: said once the editor is done,
    // as the last line.
    let mut last_word = None;
    editor.ask(&prompt(&view));
    loop {
        tokio::select! {
            event = next_event(&mut client) => match event {
                Ok(event) => view.event(event, &me),
                Err(e) => {
                    lost(&mut view, &e, backoff);
                    client = None;
                    retry_at = Instant::now() + backoff;
                }
            },
            _ = tokio::time::sleep_until(retry_at), if client.is_none() => {
                match reconnect(login, &mut view).await {
                    Ok(c) => {
                        client = Some(c);
                        backoff = FIRST_BACKOFF;
                    }
                    Err(e) if is_final(&e) => {
                        // Said once, as the last line, below: a note now
                        // would race it to the screen through the editor.
                        last_word = Some(describe(e.as_ref()));
                        code = ExitCode::FAILURE;
                        break;
                    }
                    Err(e) => {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        retry_at = Instant::now() + backoff;
                        view.note(&format!(
                            "cannot reconnect: {}; next try in {}s",
                            describe(e.as_ref()),
                            backoff.as_secs()
                        ));
                    }
                }
            }
            _ = tokio::time::sleep(KEEPALIVE), if client.is_some() => {
                if let Some(c) = client.as_mut()
                    && let Err(e) = c.ping().await
                {
                    lost(&mut view, &e, backoff);
                    client = None;
                    retry_at = Instant::now() + backoff;
                }
            }
            read = editor.next() => {
                let line = match read? {
                    Input::Line(line) => {
                        // What is said is shown as said, with the time; the
                        // line as typed goes.
                        erase_typed(&prompt(&view), &line);
                        line
                    }
                    Input::Interrupted => String::new(),
                    Input::End => break,
                };
                let line = line.trim_end();
                let quit = matches!(line, "/quit" | "/exit");
                match client.as_mut() {
                    _ if quit => break,
                    Some(c) if line == "/passwd" => {
                        // The editor is not reading: the terminal is free to ask.
                        match crate::passwd(c, login, false).await {
                            Ok(()) => {
                                view.note("password changed; use the new one from the next login on");
                            }
                            Err(e) => view.note(&format!("error: {}", describe(e.as_ref()))),
                        }
                    }
                    None if !line.is_empty() => {
                        let wait = retry_at.saturating_duration_since(Instant::now());
                        view.note(&format!(
                            "not connected (next try in {}s); the line was not sent",
                            wait.as_secs()
                        ));
                    }
                    None => {}
                    Some(c) => match command(c, &mut view, line).await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            let gone = e
                                .downcast_ref::<ClientError>()
                                .is_some_and(connection_lost);
                            if gone {
                                view.note("that line was not sent; Up recalls it");
                                lost(&mut view, e.as_ref(), backoff);
                                client = None;
                                retry_at = Instant::now() + backoff;
                            } else {
                                view.note(&format!("error: {}", describe(e.as_ref())));
                            }
                        }
                    },
                }
                editor.ask(&prompt(&view));
            }
        }
    }
    if let Some(c) = client {
        let _ = c.quit().await;
    }
    drop(editor);
    if let Some(why) = last_word {
        // In one write (eprintln! writes piece by piece), over the prompt
        // the editor left on the last line.
        let line = format!("\r\x1b[Kwharf-chat: {why}\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
    Ok(code)
}

/// An error and its causes, each said once, on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    wharf_core::cli::describe(e).replace('\n', " ")
}

/// Says the connection is lost and when the next try is.
fn lost(view: &mut View, e: &(dyn std::error::Error + 'static), backoff: Duration) {
    view.note(&format!(
        "connection lost: {}; reconnecting in {}s",
        describe(e),
        backoff.as_secs()
    ));
}

/// The next event, or never without a connection.
async fn next_event(client: &mut Option<ChatClient>) -> Result<Event, ClientError> {
    match client {
        Some(c) => c.next_event().await,
        None => std::future::pending().await,
    }
}

/// Whether `e` means the connection is gone (rather than a request
/// refused).
fn connection_lost(e: &ClientError) -> bool {
    match e {
        ClientError::Server { code, .. } => matches!(
            code,
            ErrorCode::ShuttingDown | ErrorCode::SlowConsumer | ErrorCode::Timeout
        ),
        ClientError::Closed
        | ClientError::Protocol(_)
        | ClientError::Io { .. }
        | ClientError::NoAnswer(_) => true,
        _ => false,
    }
}

/// A refusal that trying again will not mend.
fn is_final(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<ClientError>())
        .any(|c| {
            matches!(
                c.code(),
                Some(
                    ErrorCode::AuthFailed
                        | ErrorCode::AccountLocked
                        | ErrorCode::NotPermitted
                        | ErrorCode::LockedOut
                )
            )
        })
}

/// Logs in again, rejoins the rooms and shows what was said meanwhile.
async fn reconnect(login: &Login, view: &mut View) -> Result<ChatClient> {
    let mut client = login.connect().await?;
    let me = client.user().to_owned();
    let rooms = view.joined.clone();
    for room in &rooms {
        client.join(room).await?;
        // What came after the last message seen (the view drops the rest).
        for m in client.history(room, Some(CATCH_UP)).await? {
            view.message(&m, &me);
        }
    }
    let shown: Vec<String> = rooms.iter().map(|r| format!("#{r}")).collect();
    let rejoined = if shown.is_empty() {
        String::new()
    } else {
        format!("; back in {}", shown.join(", "))
    };
    view.note(&format!("reconnected{rejoined}"));
    Ok(client)
}

/// Erases the line just typed (and its prompt) from the screen: the
/// cursor is on the row after it.
fn erase_typed(prompt: &str, line: &str) {
    use std::io::Write;
    let cols = rustix::termios::tcgetwinsize(std::io::stdout())
        .map_or(80, |w| usize::from(w.ws_col))
        .max(1);
    let width = prompt.chars().count() + line.chars().count();
    let rows = width.div_ceil(cols).max(1);
    let mut out = std::io::stdout().lock();
    // Up that many rows, to the first column, and clear to the end.
    let _ = write!(out, "\x1b[{rows}A\r\x1b[J");
    let _ = out.flush();
}

/// The prompt: where a line typed goes.
fn prompt(view: &View) -> String {
    match &view.target {
        Some(Target::Room(room)) => format!("#{room}> "),
        Some(Target::User(user)) => format!("@{user}> "),
        None => "> ".to_owned(),
    }
}

/// Completion: commands, then rooms or users as the command takes them;
/// in text, user names.
fn completer(names: Arc<Mutex<Names>>) -> CompleteFn {
    Box::new(move |line, pos| {
        let Some(before) = line.get(..pos) else {
            return (pos, Vec::new());
        };
        let start = before.rfind(' ').map_or(0, |i| i + 1);
        let word = &before[start..];
        let first = before.split(' ').next().unwrap_or("");
        let candidates: Vec<String> = if start == 0 && word.starts_with('/') {
            COMMANDS.iter().map(|c| format!("{c} ")).collect()
        } else {
            let names = names.lock().unwrap_or_else(|p| p.into_inner());
            match first {
                "/join" | "/part" | "/leave" | "/names" | "/who" => {
                    names.rooms.iter().map(|r| format!("#{r} ")).collect()
                }
                "/msg" | "/query" => names.users.iter().map(|u| format!("{u} ")).collect(),
                _ if start == 0 => names.users.iter().map(|u| format!("{u}: ")).collect(),
                _ => names.users.iter().map(|u| format!("{u} ")).collect(),
            }
        };
        let bare = word.strip_prefix('#').unwrap_or(word);
        let found = candidates
            .into_iter()
            .filter(|c| {
                let c = c.strip_prefix('#').unwrap_or(c);
                c.starts_with(bare)
            })
            .map(|c| Candidate {
                display: c.trim_end_matches([' ', ':']).to_owned(),
                replacement: c,
            })
            .collect();
        (start, found)
    })
}
