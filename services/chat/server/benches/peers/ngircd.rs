//! ngircd beside wharf-chatd: the same "everyone talks" fan-out and the same
//! idle sessions, driven by a minimal IRC client (NICK, USER, JOIN,
//! PRIVMSG). ngircd runs plain (no TLS), with its penalties off so one
//! client's burst is not spread over seconds.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

use super::{Res, Talk, measure_talk, wait_listening};

/// The ngircd binary, when installed.
pub fn binary() -> Option<&'static str> {
    ["/usr/sbin/ngircd", "/usr/bin/ngircd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// A throwaway ngircd on `port`, configured in `dir`.
pub fn start(bin: &str, dir: &std::path::Path, port: u16) -> Res<Child> {
    let conf = dir.join("ngircd.conf");
    std::fs::write(
        &conf,
        format!(
            "[Global]\nName = bench.wharf.test\nInfo = Wharf benchmark peer\nListen = 127.0.0.1\n\
             Ports = {port}\nMotdPhrase = bench\n\
             [Limits]\nMaxConnections = 0\nMaxConnectionsIP = 0\nMaxPenaltyTime = 0\nMaxJoins = 0\n\
             PingTimeout = 600\nPongTimeout = 600\n\
             [Options]\nDNS = no\nIdent = no\nPAM = no\n"
        ),
    )?;
    Ok(Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

struct Irc {
    lines: BufReader<OwnedReadHalf>,
    out: OwnedWriteHalf,
}

impl Irc {
    /// Connects and registers as `nick`; returns once the server welcomed it.
    async fn connect(addr: &str, nick: &str) -> Res<Irc> {
        let (r, w) = TcpStream::connect(addr).await?.into_split();
        let mut irc = Irc {
            lines: BufReader::new(r),
            out: w,
        };
        irc.send(&format!("NICK {nick}\r\nUSER {nick} 0 * :bench\r\n"))
            .await?;
        irc.until(" 001 ").await?;
        Ok(irc)
    }

    async fn send(&mut self, text: &str) -> Res<()> {
        self.out.write_all(text.as_bytes()).await?;
        Ok(())
    }

    async fn line(&mut self) -> Res<String> {
        let mut line = String::new();
        if self.lines.read_line(&mut line).await? == 0 {
            return Err("ngircd closed the connection".into());
        }
        if line.starts_with("PING ") {
            let pong = line.replacen("PING", "PONG", 1);
            self.send(&pong).await?;
        }
        Ok(line)
    }

    /// Reads lines until one containing `mark`.
    async fn until(&mut self, mark: &str) -> Res<()> {
        while !self.line().await?.contains(mark) {}
        Ok(())
    }
}

/// Connects `n` clients, a few at a time: ngircd listens with a backlog
/// of 10 and scans every connection on each turn of its loop, so a crowd of
/// connection attempts overflows its queue (those are retried).
async fn connect_many(addr: &str, prefix: &str, n: usize) -> Res<Vec<Irc>> {
    let gate = Arc::new(Semaphore::new(8));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = Arc::clone(&gate);
        let addr = addr.to_owned();
        let nick = format!("{prefix}{i}");
        tasks.push(tokio::spawn(async move {
            let _p = gate.acquire().await?;
            let mut tries = 0;
            loop {
                match Irc::connect(&addr, &nick).await {
                    Ok(irc) => return Ok(irc),
                    Err(e) if tries >= 20 => return Err(e),
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.push(t.await??);
    }
    Ok(all)
}

/// The "everyone talks" fan-out and the idle sessions, on ngircd.
pub async fn bench(
    addr: &str,
    pid: u32,
    (members, each, bursts): (usize, usize, usize),
    n_idle: usize,
) -> Res<Talk> {
    wait_listening(addr).await;
    let mut clients = connect_many(addr, "m", members).await?;
    for c in &mut clients {
        c.send("JOIN #bench\r\n").await?;
        c.until(" 366 ").await?; // end of the names list: joined
    }
    let expected = (members - 1) * each;
    let padding = "x".repeat(64);
    let talk = move |i: usize, mut c: Irc| {
        let padding = padding.clone();
        async move {
            let mut lines = String::new();
            for k in 0..each {
                lines.push_str(&format!("PRIVMSG #bench :{i} {k} {padding}\r\n"));
            }
            c.send(&lines).await?;
            let mut got = 0;
            while got < expected {
                if c.line().await?.contains(" PRIVMSG #bench :") {
                    got += 1;
                }
            }
            Ok(c)
        }
    };
    let idle = || connect_many(addr, "i", n_idle);
    measure_talk(pid, clients, members * expected, bursts, talk, idle).await
}
