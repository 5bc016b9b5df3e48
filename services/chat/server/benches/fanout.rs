//! Chat benchmark, on loopback, against a real `wharf-chatd` child process:
//!
//! - fan-out: 1,000 TCP clients in one room, one sender says 1,000
//!   messages; deliveries per second and the 99th-percentile delivery
//!   latency (each message carries its send time);
//! - memory: the server's resident memory with 10,000 idle logged-in TCP
//!   sessions, beside its resident memory with none.
//!
//! The bench users' password hashes use argon2id with 64 KiB instead of
//! 19 MiB, so that 11,000 logins take seconds rather than minutes on two
//! cores; the login path is otherwise the production one. Flood control is
//! opened wide for the sender.
//!
//! Both are measured twice in one run, with TLS (the default) and with
//! `--no-tls`, and the TLS figures are given as ratios of the plain ones.
//!
//! Then, beside ngircd when it is installed (Debian's `ngircd`): 500
//! members in one room all talk at once, 2 messages each, 10 bursts
//! (about 5 million deliveries), on a fresh wharf-chatd with `--no-tls`
//! and on a throwaway ngircd (plain IRC), like for like, then on a
//! wharf-chatd with TLS; deliveries per second, server CPU per delivery,
//! peak memory after the first burst and after the last (growth over
//! bursts), and memory per idle session, as ratios of the plain pair.
//!
//! With `WHARF_BENCH_POSTGRES=1` and a PostgreSQL test cluster in
//! `WHARF_TEST_POSTGRES_URL` (`bash .ci/postgres.sh start DIR` prints one),
//! only the fan-out runs, with TLS, on PostgreSQL beside SQLite, rounds
//! interleaved, and prints the ratios.
//!
//! Run: `cargo bench -p wharf-chatd --bench fanout` (only the ngircd part:
//! `WHARF_BENCH_PEERS_ONLY=1`). Smaller:
//! `WHARF_BENCH_CLIENTS=200 WHARF_BENCH_MESSAGES=200 WHARF_BENCH_IDLE=2000 cargo bench -p wharf-chatd --bench fanout`.

#[path = "peers/ngircd.rs"]
mod ngircd;
use wharf_testkit::postgres;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{Barrier, Semaphore};
use wharf_chat::client::{ChatClient, Event};
use wharf_client::tls::ClientTls;
use wharf_core::Password;
use wharf_store::Store;
use wharf_store::db::NewUser;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PASSWORD: &str = "benchmark password";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How long after a burst of logins memory is measured: wharf-chatd gives
/// argon2's working memory back once its workers are idle for a second.
const AFTER_LOGINS: Duration = Duration::from_secs(3);

/// Resets the peak resident memory (`VmHWM`) of `pid` to what is resident
/// now (`echo 5 > /proc/PID/clear_refs`), so that a later peak is that of
/// what ran since.
fn reset_peak(pid: u32) {
    if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        println!("cannot reset the peak memory of {pid} ({e}): the peaks below include the logins");
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) of `pid` so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    (fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// Waits (5 s at most) until a server started as a child accepts on `addr`.
async fn wait_listening(addr: &str) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn login_many(
    addr: &str,
    tls: &ClientTls,
    users: &[String],
    n: usize,
) -> Res<Vec<ChatClient>> {
    login_spread(&[addr.to_owned()], tls, users, n).await
}

/// [`login_many`], the clients spread over several servers in turn.
async fn login_spread(
    addrs: &[String],
    tls: &ClientTls,
    users: &[String],
    n: usize,
) -> Res<Vec<ChatClient>> {
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = Arc::clone(&gate);
        let addr = addrs[i % addrs.len()].clone();
        let user = users[i % users.len()].clone();
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let _p = gate.acquire().await?;
            let c = ChatClient::connect(&addr, &tls, &user, &Password::new(PASSWORD)).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(c)
        }));
    }
    let mut clients = Vec::with_capacity(n);
    for t in tasks {
        clients.push(t.await??);
    }
    Ok(clients)
}

#[tokio::main]
async fn main() -> Res<()> {
    let n_clients = env_num("WHARF_BENCH_CLIENTS", 1000);
    let n_messages = env_num("WHARF_BENCH_MESSAGES", 1000);
    let n_idle = env_num("WHARF_BENCH_IDLE", 10_000);
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/wharf.db", dir.path().display());
    let users = bench_users(&url, dir.path()).await?;
    if std::env::var_os("WHARF_BENCH_POSTGRES").is_some() {
        return on_postgres_beside_sqlite(&url, dir.path(), &users, n_clients, n_messages).await;
    }
    let talk = (
        env_num("WHARF_BENCH_MEMBERS", 500),
        env_num("WHARF_BENCH_EACH", 2),
        env_num("WHARF_BENCH_BURSTS", 10),
    );
    if std::env::var_os("WHARF_BENCH_PEERS_ONLY").is_some() {
        return beside_ngircd(&url, dir.path(), &users, talk, n_idle).await;
    }
    let mut figures = Vec::new();
    for tls in [true, false] {
        println!("\n== {} ==", if tls { "TLS" } else { "--no-tls" });
        let (mut server, addr) = start_server(&url, dir.path(), tls)?;
        let pid = server.id();
        let result = bench(
            &addr,
            tls,
            dir.path(),
            pid,
            None,
            &users,
            n_clients,
            n_messages,
            n_idle,
        )
        .await;
        let _ = server.kill();
        let _ = server.wait();
        figures.push(result?);
    }
    let (t, p) = (&figures[0], &figures[1]);
    beside_ngircd(&url, dir.path(), &users, talk, n_idle).await?;
    println!(
        "\nTLS / plain: fan-out {:.2}, server CPU per delivery {:.2}, peak memory {:.2}, memory per idle session {:.2}, logins/s {:.2}",
        t.deliveries_per_s / p.deliveries_per_s,
        t.cpu_us_each / p.cpu_us_each,
        t.peak_mib / p.peak_mib,
        t.idle_kib_each / p.idle_kib_each,
        t.logins_per_s / p.logins_per_s,
    );
    Ok(())
}

/// A wharf-chatd on `url` listening on a free port; its address.
fn start_server(url: &str, dir: &std::path::Path, tls: bool) -> Res<(std::process::Child, String)> {
    let addr = free_addr()?;
    let server = Command::new(env!("CARGO_BIN_EXE_wharf-chatd"))
        .args(["--listen", &addr, "--database-url", url])
        .arg("--data-dir")
        .arg(dir)
        .args(["--max-connections", "30000", "--max-per-ip", "30000"])
        .args(["--flood-burst", "1000000", "--flood-rate", "1000000"])
        .args(["--flood-bytes-burst", "1GiB", "--flood-bytes-rate", "1GiB"])
        .args(if tls { &[][..] } else { &["--no-tls"][..] })
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    Ok((server, addr))
}

/// The fan-out with TLS on PostgreSQL beside SQLite, three rounds
/// interleaved; the medians and their ratios.
async fn on_postgres_beside_sqlite(
    sqlite: &str,
    dir: &std::path::Path,
    users: &[String],
    n_clients: usize,
    n_messages: usize,
) -> Res<()> {
    let Some(pg) = postgres::fresh_postgres().await else {
        return Err(format!(
            "WHARF_BENCH_POSTGRES needs a cluster in {}",
            postgres::POSTGRES_ENV
        )
        .into());
    };
    bench_users(&pg, dir).await?;
    let mut rates: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    const SETUPS: [&str; 3] = [
        "SQLite",
        "PostgreSQL",
        "PostgreSQL, two replicas (members split, the sender on the first)",
    ];
    for round in 1..=3 {
        for (i, url) in [sqlite, pg.as_str(), pg.as_str()].into_iter().enumerate() {
            println!("\n== round {round}, {} ==", SETUPS[i]);
            let (mut server, addr) = start_server(url, dir, true)?;
            let pid = server.id();
            let mut second = None;
            if i == 2 {
                // After the first has made the certificate both serve.
                wait_listening(&addr).await;
                let (child, other) = start_server(url, dir, true)?;
                wait_listening(&other).await;
                second = Some((child, other));
            }
            let other = second.as_ref().map(|(c, a)| (a.as_str(), c.id()));
            let result = bench(
                &addr, true, dir, pid, other, users, n_clients, n_messages, 0,
            )
            .await;
            for child in std::iter::once(&mut server).chain(second.as_mut().map(|(c, _)| c)) {
                let _ = child.kill();
                let _ = child.wait();
            }
            let f = result?;
            rates[i].push(f.deliveries_per_s);
            cpu[i].push(f.cpu_us_each);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (ls, ps, rs) = (
        median(&mut rates[0]),
        median(&mut rates[1]),
        median(&mut rates[2]),
    );
    let (lc, pc, rc) = (
        median(&mut cpu[0]),
        median(&mut cpu[1]),
        median(&mut cpu[2]),
    );
    println!(
        "\nPostgreSQL beside SQLite, {n_clients} members, {n_messages} messages, TLS (medians of 3 interleaved rounds):"
    );
    println!(
        "  deliveries/s: SQLite {ls:.0}, PostgreSQL {ps:.0} ({:.2}x), two replicas on PostgreSQL {rs:.0} ({:.2}x)",
        ps / ls,
        rs / ls
    );
    println!(
        "  server CPU per delivery: SQLite {lc:.2} us, PostgreSQL {pc:.2} us ({:.2}x), two replicas {rc:.2} us ({:.2}x)",
        pc / lc,
        rc / lc
    );
    Ok(())
}

/// The bench's users (cheap argon2 hashes) in the database at `url`.
async fn bench_users(url: &str, dir: &std::path::Path) -> Res<Vec<String>> {
    let store = Store::open(url).await?;
    let cheap = Params::new(64, 1, 1, None).map_err(|e| e.to_string())?;
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, cheap)
        .hash_password(PASSWORD.as_bytes())
        .map_err(|e| e.to_string())?
        .to_string();
    let users: Vec<String> = (0..50).map(|i| format!("user{i}")).collect();
    for u in users.iter().chain(std::iter::once(&"sender".to_owned())) {
        store
            .create_user(&NewUser {
                name: u.clone(),
                password_hash: hash.clone(),
                home: dir.join("homes").join(u),
                quota_bytes: None,
                quota_files: None,
                services: "chat".parse()?,
            })
            .await?;
    }
    store.close().await;
    Ok(users)
}

struct Figures {
    deliveries_per_s: f64,
    cpu_us_each: f64,
    peak_mib: f64,
    idle_kib_each: f64,
    logins_per_s: f64,
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    addr: &str,
    tls: bool,
    dir: &std::path::Path,
    pid: u32,
    other: Option<(&str, u32)>,
    users: &[String],
    n_clients: usize,
    n_messages: usize,
    n_idle: usize,
) -> Res<Figures> {
    wait_listening(addr).await;
    let client_tls = if tls {
        ClientTls::trusting(&wharf_server::tls::made_cert_path(dir))?
    } else {
        ClientTls::plain()
    };
    let base_rss = status_kib(pid, "VmRSS:");
    println!(
        "wharf-chatd resident memory at start: {:.1} MiB",
        mib(base_rss)
    );

    // Fan-out.
    let t = Instant::now();
    let mut addrs = vec![addr.to_owned()];
    addrs.extend(other.map(|(a, _)| a.to_owned()));
    let pids: Vec<u32> = std::iter::once(pid).chain(other.map(|(_, p)| p)).collect();
    let cpu_all = || pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let mut listeners = login_spread(&addrs, &client_tls, users, n_clients).await?;
    for c in &mut listeners {
        c.join("bench").await?;
    }
    println!(
        "{n_clients} clients logged in and joined in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let epoch = Instant::now();
    let mut tasks = Vec::with_capacity(n_clients);
    for mut c in listeners {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n_messages);
            while latencies.len() < n_messages {
                match c.next_event().await? {
                    Event::Message(m) => {
                        let sent: u64 = m
                            .text
                            .split(' ')
                            .next()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                        let now = epoch.elapsed().as_micros() as u64;
                        latencies.push(now.saturating_sub(sent));
                    }
                    Event::Presence { .. } => {}
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((latencies, epoch.elapsed(), c))
        }));
    }
    let mut sender =
        ChatClient::connect(addr, &client_tls, "sender", &Password::new(PASSWORD)).await?;
    sender.join("bench").await?;
    let padding = "x".repeat(64);
    let cpu_before = cpu_all();
    let start = epoch.elapsed();
    for _ in 0..n_messages {
        let now = epoch.elapsed().as_micros();
        sender.say("bench", &format!("{now} {padding}")).await?;
    }
    let said = epoch.elapsed() - start;
    let mut all = Vec::with_capacity(n_clients * n_messages);
    let mut last = Duration::ZERO;
    let mut clients = Vec::with_capacity(n_clients);
    for t in tasks {
        let (lat, done, c) = t.await??;
        all.extend(lat);
        last = last.max(done);
        clients.push(c);
    }
    let took = (last - start).as_secs_f64();
    let server_cpu = cpu_all() - cpu_before;
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    let deliveries_per_s = all.len() as f64 / took;
    let cpu_us_each = server_cpu * 1e6 / all.len().max(1) as f64;
    println!("server CPU during the fan-out: {server_cpu:.2} s, {cpu_us_each:.2} us per delivery");
    println!(
        "fan-out: {} deliveries in {took:.2} s = {deliveries_per_s:.0} deliveries/s (sender: {n_messages} messages in {:.2} s)",
        all.len(),
        said.as_secs_f64()
    );
    println!(
        "delivery latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    let peak_mib = mib(status_kib(pid, "VmHWM:"));
    println!("wharf-chatd peak resident memory so far: {peak_mib:.1} MiB");
    drop(clients);
    drop(sender);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Idle sessions.
    let before = status_kib(pid, "VmRSS:");
    let t = Instant::now();
    let idle = login_many(addr, &client_tls, users, n_idle).await?;
    let logins_per_s = idle.len() as f64 / t.elapsed().as_secs_f64();
    println!(
        "{} idle sessions logged in in {:.2} s ({logins_per_s:.0} logins/s)",
        idle.len(),
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(AFTER_LOGINS).await;
    let with = status_kib(pid, "VmRSS:");
    let idle_kib_each = with.saturating_sub(before) as f64 / idle.len().max(1) as f64;
    println!(
        "wharf-chatd resident memory: {:.1} MiB with {} idle sessions ({:.1} MiB before them; {idle_kib_each:.1} KiB per session)",
        mib(with),
        idle.len(),
        mib(before),
    );
    drop(idle);
    Ok(Figures {
        deliveries_per_s,
        cpu_us_each,
        peak_mib,
        idle_kib_each,
        logins_per_s,
    })
}

/// Figures of the "everyone talks" fan-out and of idle sessions.
pub struct Talk {
    deliveries_per_s: f64,
    cpu_us_each: f64,
    peak_first_mib: f64,
    peak_mib: f64,
    idle_kib_each: f64,
    idle_mib: f64,
}

fn free_addr() -> Res<String> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(format!("127.0.0.1:{port}"))
}

/// wharf-chatd and ngircd, one after the other in this run, on the same
/// workload: like for like, wharf-chatd with `--no-tls` beside ngircd
/// (plain), and wharf-chatd with TLS (its default) beside them; prints
/// all three and the ratios of the plain pair.
async fn beside_ngircd(
    url: &str,
    dir: &std::path::Path,
    users: &[String],
    talk: (usize, usize, usize),
    n_idle: usize,
) -> Res<()> {
    let Some(bin) = ngircd::binary() else {
        println!("\nngircd is not installed (apt-get install ngircd): no comparison");
        return Ok(());
    };
    let (members, each, bursts) = talk;
    println!(
        "\n== beside ngircd: {members} members all talking, {each} messages each, {bursts} bursts; {n_idle} idle sessions =="
    );
    let mut runs = Vec::new();
    for tls in [false, true] {
        let (mut server, addr) = start_server(url, dir, tls)?;
        let run = talk_wharf(&addr, dir, server.id(), users, talk, n_idle, tls).await;
        let _ = server.kill();
        let _ = server.wait();
        runs.push(run?);
    }
    let (Some(with_tls), Some(wharf)) = (runs.pop(), runs.pop()) else {
        return Err("the wharf-chatd runs are missing".into());
    };
    let addr = free_addr()?;
    let port = addr.rsplit(':').next().unwrap_or("0").parse()?;
    let mut peer = ngircd::start(bin, dir, port)?;
    let irc = ngircd::bench(&addr, peer.id(), talk, n_idle).await;
    let _ = peer.kill();
    let _ = peer.wait();
    let irc = irc?;
    println!("| | wharf-chatd --no-tls | ngircd (plain) | ratio | wharf-chatd (TLS) |");
    println!("|---|---|---|---|---|");
    let row = |what: &str, pick: &dyn Fn(&Talk) -> f64, unit: &str| {
        let (w, n, t) = (pick(&wharf), pick(&irc), pick(&with_tls));
        println!(
            "| {what} | {w:.2} {unit} | {n:.2} {unit} | {:.2} x | {t:.2} {unit} |",
            w / n
        );
    };
    row(
        "deliveries per second",
        &|t| t.deliveries_per_s / 1e6,
        "M/s",
    );
    row("server CPU per delivery", &|t| t.cpu_us_each, "us");
    row(
        "peak memory after the first burst",
        &|t| t.peak_first_mib,
        "MiB",
    );
    row(
        &format!("peak memory after {bursts} bursts"),
        &|t| t.peak_mib,
        "MiB",
    );
    row("memory per idle session", &|t| t.idle_kib_each, "KiB");
    row(
        &format!("resident memory with {n_idle} idle sessions"),
        &|t| t.idle_mib,
        "MiB",
    );
    Ok(())
}

/// The "everyone talks" fan-out and the idle sessions, on wharf-chatd.
async fn talk_wharf(
    addr: &str,
    dir: &std::path::Path,
    pid: u32,
    users: &[String],
    (members, each, bursts): (usize, usize, usize),
    n_idle: usize,
    tls: bool,
) -> Res<Talk> {
    wait_listening(addr).await;
    let client_tls = if tls {
        ClientTls::trusting(&wharf_server::tls::made_cert_path(dir))?
    } else {
        ClientTls::plain()
    };
    let mut clients = login_many(addr, &client_tls, users, members).await?;
    for c in &mut clients {
        c.join("bench").await?;
    }
    let expected = (members - 1) * each;
    let padding = "x".repeat(64);
    let talk = move |i: usize, mut c: ChatClient| {
        let padding = padding.clone();
        async move {
            for k in 0..each {
                c.say("bench", &format!("{i} {k} {padding}")).await?;
            }
            let me = i.to_string();
            let mut got = 0;
            while got < expected {
                if let Event::Message(m) = c.next_event().await?
                    && m.text.split(' ').next() != Some(me.as_str())
                {
                    got += 1;
                }
            }
            Ok(c)
        }
    };
    let idle = || login_many(addr, &client_tls, users, n_idle);
    measure_talk(pid, clients, members * expected, bursts, talk, idle).await
}

/// Runs `bursts` bursts in which every client does its part of `talk` at
/// once (`deliveries` in each burst), then opens idle sessions with
/// `idle`; measures the server `pid` throughout.
async fn measure_talk<C, F, Fut, I, IFut, D>(
    pid: u32,
    mut clients: Vec<C>,
    deliveries: usize,
    bursts: usize,
    talk: F,
    idle: I,
) -> Res<Talk>
where
    C: Send + 'static,
    F: Fn(usize, C) -> Fut,
    Fut: std::future::Future<Output = Res<C>> + Send + 'static,
    I: FnOnce() -> IFut,
    IFut: std::future::Future<Output = Res<Vec<D>>>,
{
    // The logins' own peak (argon2's memory, for wharf-chatd) is said
    // apart: the bursts' peak is measured from here, once a login burst's
    // memory had the time to go back.
    tokio::time::sleep(AFTER_LOGINS).await;
    println!(
        "server {pid}: peak resident memory through the logins {:.1} MiB, {:.1} MiB resident once they are over",
        mib(status_kib(pid, "VmHWM:")),
        mib(status_kib(pid, "VmRSS:"))
    );
    reset_peak(pid);
    let mut took = 0.0;
    let mut server_cpu = 0.0;
    let mut peak_first = 0.0;
    for burst in 0..bursts {
        let cpu_before = cpu_secs(pid);
        let start = Arc::new(Barrier::new(clients.len()));
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(clients.len());
        for (i, c) in clients.into_iter().enumerate() {
            let start = Arc::clone(&start);
            let part = talk(i, c);
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let c = part.await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((Instant::now(), c))
            }));
        }
        let mut last = t0;
        clients = Vec::with_capacity(tasks.len());
        for t in tasks {
            let (done, c) = t.await??;
            last = last.max(done);
            clients.push(c);
        }
        took += (last - t0).as_secs_f64();
        server_cpu += cpu_secs(pid) - cpu_before;
        if burst == 0 {
            peak_first = mib(status_kib(pid, "VmHWM:"));
        }
    }
    let deliveries = (deliveries * bursts) as f64;
    let peak_mib = mib(status_kib(pid, "VmHWM:"));
    drop(clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = status_kib(pid, "VmRSS:");
    let idle = idle().await?;
    tokio::time::sleep(AFTER_LOGINS).await;
    let with = status_kib(pid, "VmRSS:");
    let idle_kib_each = with.saturating_sub(before) as f64 / idle.len().max(1) as f64;
    drop(idle);
    Ok(Talk {
        deliveries_per_s: deliveries / took,
        cpu_us_each: server_cpu * 1e6 / deliveries,
        peak_first_mib: peak_first,
        peak_mib,
        idle_kib_each,
        idle_mib: mib(with),
    })
}
