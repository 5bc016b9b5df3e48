//! Remote-exec benchmark, on loopback, against a real `wharf-execd` child
//! process, side by side with the same work done locally in the same run:
//!
//! - `true` 1,000 times over one connection, and 1,000 times over fresh
//!   connections (each logs in: one argon2 verification with the production
//!   parameters), beside a local loop spawning `sh -c true`; commands/s and
//!   the per-command overhead beyond the local spawn;
//! - `head -c 1G /dev/zero` streamed to the client (which discards it),
//!   beside a local `head -c 1G /dev/zero > /dev/null` and a local pipe
//!   `head -c 1G /dev/zero | cat > /dev/null`; MB/s and the ratios.
//!
//! Each remote figure is measured against two servers in the same run, one
//! with TLS (the default) and one with `--no-tls`, and compared.
//!
//! Run: `cargo bench -p wharf-execd --bench exec`. With other server flags:
//! `WHARF_BENCH_SERVER_ARGS="--exec-network host"`. Smaller:
//! `WHARF_BENCH_COMMANDS=200 WHARF_BENCH_MIB=256 cargo bench -p wharf-execd --bench exec`.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wharf_client::tls::ClientTls;
use wharf_core::Password;
use wharf_exec::client::{ExecClient, Streams};
use wharf_server::tls::made_cert_path;
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

fn mb_per_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64()
}

fn local(script: &str) -> Res<Duration> {
    let start = Instant::now();
    let status = Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("{script}: {status}").into());
    }
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> Res<()> {
    let n = env_num("WHARF_BENCH_COMMANDS", 1000);
    let mib = env_num("WHARF_BENCH_MIB", 1024) as u64;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/wharf.db", dir.path().display());
    let store = Store::open(&url).await?;
    let hash = wharf_store::auth::hash_password(&Password::new(PASSWORD)).await?;
    let (home, _) = wharf_store::home::ensure_home(&dir.path().join("homes/bench"))?;
    store
        .create_user(&NewUser {
            name: "bench".into(),
            password_hash: hash,
            home,
            quota_bytes: None,
            quota_files: None,
            services: "exec".parse()?,
        })
        .await?;
    store.close().await;

    // Two servers on one database: TLS (the default) and --no-tls, both
    // with the flags in WHARF_BENCH_SERVER_ARGS (`--exec-network host`, say).
    let server_args = std::env::var("WHARF_BENCH_SERVER_ARGS").unwrap_or_default();
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for tls in [true, false] {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let server = Command::new(env!("CARGO_BIN_EXE_wharf-execd"))
            .args(["--listen", &addr, "--database-url", &url])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--max-output", "4GiB", "--command-timeout", "10m"])
            .args(["--max-cpu", "10m", "--max-file-size", "1GiB"])
            .args(if tls { &[][..] } else { &["--no-tls"][..] })
            .args(server_args.split_whitespace())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        addrs.push(addr);
        servers.push(server);
    }
    let result = bench(&addrs, dir.path(), n, mib, &servers).await;
    for mut server in servers {
        let _ = server.kill();
        let _ = server.wait();
    }
    result
}

async fn connect(addr: &str, tls: &ClientTls) -> Res<ExecClient> {
    for _ in 0..100 {
        match ExecClient::connect(addr, tls, "bench", &Password::new(PASSWORD)).await {
            Ok(c) => return Ok(c),
            Err(wharf_exec::client::ClientError::Connect(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err("wharf-execd did not start".into())
}

/// CPU seconds (user + system) of `pid`, and of its reaped children.
fn cpu(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0;
    let get = |i: usize| fields.get(i).copied().unwrap_or(0.0) / tick;
    (get(11) + get(12), get(13) + get(14))
}

/// What one server measured.
struct Remote {
    one: Duration,
    fresh: Duration,
    stream: Duration,
}

async fn bench(
    addrs: &[String],
    dir: &std::path::Path,
    n: usize,
    mib: u64,
    servers: &[std::process::Child],
) -> Res<()> {
    // The TLS server makes the certificate at start: wait for the plain one
    // to answer first, by then the other has long made it.
    let plain = ClientTls::plain();
    let mut plain_client = connect(&addrs[1], &plain).await?;
    let mut tls = None;
    for _ in 0..100 {
        if let Ok(t) = ClientTls::trusting(&made_cert_path(dir)) {
            tls = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls = tls.ok_or("the TLS server made no certificate")?;
    let mut tls_client = connect(&addrs[0], &tls).await?;
    println!(
        "wharf-exec benchmark: {n} commands, {mib} MiB of output (loopback, one run, side by side)"
    );

    // Warm up every side.
    for _ in 0..20 {
        tls_client.output("true").await?;
        plain_client.output("true").await?;
        local("true")?;
    }

    let start = Instant::now();
    for _ in 0..n {
        let status = Command::new("/bin/sh")
            .args(["-c", "true"])
            .stdin(Stdio::null())
            .status()?;
        if !status.success() {
            return Err("local sh -c true failed".into());
        }
    }
    let t_local = start.elapsed();
    let per = |t: Duration| t.as_secs_f64() * 1000.0 / n as f64;
    let rate = |t: Duration| n as f64 / t.as_secs_f64();
    println!(
        "local  sh -c true            {:>8.0} commands/s  {:>6.3} ms each",
        rate(t_local),
        per(t_local)
    );
    let bytes = mib * 1024 * 1024;
    let t_null = local(&format!("head -c {bytes} /dev/zero > /dev/null"))?;
    let t_pipe = local(&format!("head -c {bytes} /dev/zero | cat > /dev/null"))?;
    let null = mb_per_s(bytes, t_null);
    let pipe = mb_per_s(bytes, t_pipe);
    println!("local  head > /dev/null      {null:>8.0} MB/s");
    println!("local  head | cat > /dev/null{pipe:>8.0} MB/s");

    let mut figures = Vec::new();
    for (i, (label, client, client_tls)) in [
        ("TLS", &mut tls_client, &tls),
        ("--no-tls", &mut plain_client, &plain),
    ]
    .into_iter()
    .enumerate()
    {
        println!("== {label} ==");
        let server_pid = servers[i].id().to_string();
        let start = Instant::now();
        for _ in 0..n {
            let out = client.output("true").await?;
            if out.outcome.status != 0 {
                return Err("remote true failed".into());
            }
        }
        let one = start.elapsed();
        let start = Instant::now();
        for _ in 0..n {
            let mut c =
                ExecClient::connect(&addrs[i], client_tls, "bench", &Password::new(PASSWORD))
                    .await?;
            c.output("true").await?;
            c.quit().await?;
        }
        let fresh = start.elapsed();
        println!(
            "remote true, one connection  {:>8.0} commands/s  {:>6.3} ms each  overhead {:+.3} ms beyond the local spawn",
            rate(one),
            per(one),
            per(one) - per(t_local)
        );
        println!(
            "remote true, new connection  {:>8.0} commands/s  {:>6.3} ms each  (connect + login with argon2id 19 MiB + run)",
            rate(fresh),
            per(fresh)
        );
        let mut sink = tokio::io::sink();
        let mut errors = Vec::new();
        let (s0, c0) = cpu(&server_pid);
        let (me0, _) = cpu("self");
        let start = Instant::now();
        let outcome = client
            .run(
                &format!("head -c {bytes} /dev/zero"),
                Streams {
                    stdin: None,
                    stdout: &mut sink,
                    stderr: &mut errors,
                    signals: None,
                    resizes: None,
                },
            )
            .await?;
        let stream = start.elapsed();
        let (s1, c1) = cpu(&server_pid);
        let (me1, _) = cpu("self");
        if outcome.bytes_out != bytes || outcome.status != 0 {
            return Err(format!("remote head: {outcome:?}").into());
        }
        let remote = mb_per_s(bytes, stream);
        println!(
            "remote head, streamed        {remote:>8.0} MB/s  = {:.2}x the local pipe, {:.2}x head > /dev/null",
            remote / pipe,
            remote / null
        );
        println!(
            "       CPU seconds while streaming: server {:.2}, head {:.2}, client {:.2} (wall {:.2})",
            s1 - s0,
            c1 - c0,
            me1 - me0,
            stream.as_secs_f64()
        );
        figures.push(Remote { one, fresh, stream });
    }
    let (t, p) = (&figures[0], &figures[1]);
    println!(
        "TLS / plain: per command {:.2}x the time, new connection {:.2}x, streaming {:.2}x the throughput",
        t.one.as_secs_f64() / p.one.as_secs_f64(),
        t.fresh.as_secs_f64() / p.fresh.as_secs_f64(),
        p.stream.as_secs_f64() / t.stream.as_secs_f64()
    );
    tls_client.quit().await?;
    plain_client.quit().await?;
    Ok(())
}
