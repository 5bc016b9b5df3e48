//! File-transfer benchmark, on loopback, in one run so the figures can be
//! compared side by side on a shared machine:
//!
//! - `md5sum` of a 1 GiB file: the floor, since both ends must hash every byte;
//! - `dd conv=fsync` of that file: the other floor, since the receiver must
//!   write every byte and sync it before the file counts as stored;
//! - `wharf-ftp put` and `wharf-ftp get` of that file (real binaries, a real
//!   `wharf-ftpd` child process), best of 2 rounds, interleaved with md5sum;
//! - the same put and get against a second server run with `--no-tls`,
//!   interleaved, so TLS is measured against plaintext in the same run;
//! - the server's peak resident memory over the whole run;
//! - 1,000 files of 4 KiB put in one session (the shell, fed by a pipe).
//!
//! Run: `cargo build --release --bin wharf-ftp && cargo bench -p wharf-ftpd --bench transfer`. Smaller runs:
//! `WHARF_BENCH_SIZE=256MiB WHARF_BENCH_FILES=200 cargo build --release --bin wharf-ftp && cargo bench -p wharf-ftpd --bench transfer`.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wharf_core::Password;
use wharf_core::size::format_size;
use wharf_core::size::parse_size;
use wharf_store::Store;
use wharf_store::db::NewUser;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const PASSWORD: &str = "benchmark password";

fn fill(path: &Path, size: u64) -> Res<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn timed(cmd: &mut Command) -> Res<Duration> {
    let start = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(took)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn main() -> Res<()> {
    let size = parse_size(&std::env::var("WHARF_BENCH_SIZE").unwrap_or_else(|_| "1GiB".into()))?;
    let files: usize = std::env::var("WHARF_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rounds = 3;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/wharf.db", dir.path().display());
    let home = dir.path().join("home");

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = Store::open(&url).await?;
        let hash = wharf_store::auth::hash_password(&Password::new(PASSWORD)).await?;
        let (home, _) = wharf_store::home::ensure_home(&home)?;
        store
            .create_user(&NewUser {
                name: "bench".into(),
                password_hash: hash,
                home,
                quota_bytes: None,
                quota_files: None,
                services: "ftp".parse()?,
            })
            .await?;
        store.close().await;
        Ok::<_, wharf_store::Error>(())
    })?;

    let start_server = |tls: bool| -> Res<(String, std::process::Child)> {
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
        let server = Command::new(env!("CARGO_BIN_EXE_wharf-ftpd"))
            .args(["--listen", &addr, "--database-url", &url])
            .arg("--data-dir")
            .arg(dir.path())
            .args(if tls { &[][..] } else { &["--no-tls"][..] })
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()?;
        for _ in 0..500 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((addr, server))
    };
    let (addr, mut server) = start_server(true)?;
    let (plain_addr, mut plain_server) = start_server(false)?;
    let pid = server.id();
    let cert = dir.path().join("tls/server.crt");
    let idle_rss = status_kib(pid, "VmRSS:");

    let work = dir.path().join("work");
    std::fs::create_dir_all(&work)?;
    let big = work.join("big.bin");
    println!("preparing a {} file...", format_size(size));
    fill(&big, size)?;
    let client_to = |tls: bool, args: &[&str]| {
        let mut c = Command::new(wharf_testkit::cli::bin("wharf-ftp"));
        if tls {
            c.args(["--server", &addr]).arg("--ca").arg(&cert);
        } else {
            c.args(["--server", &plain_addr, "--no-tls"]);
        }
        c.args(["--user", "bench", "--quiet"])
            .args(args)
            .current_dir(&work)
            .env("WHARF_PASSWORD", PASSWORD);
        c
    };
    let client = |args: &[&str]| client_to(true, args);

    // Warm the page cache so every contender reads from memory.
    timed(Command::new("md5sum").arg(&big))?;
    let (mut md5sum, mut put, mut get) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut plain_put, mut plain_get) = (Duration::MAX, Duration::MAX);
    let mut write = Duration::MAX;
    let floor_copy = work.join("floor.bin");
    for round in 0..rounds {
        md5sum = md5sum.min(timed(Command::new("md5sum").arg(&big))?);
        write = write.min(timed(
            Command::new("dd")
                .arg(format!("if={}", big.display()))
                .arg(format!("of={}", floor_copy.display()))
                .args(["bs=1M", "conv=fsync", "status=none"]),
        )?);
        std::fs::remove_file(&floor_copy)?;
        put = put.min(timed(&mut client(&["put", "big.bin"]))?);
        get = get.min(timed(&mut client(&["get", "big.bin", "copy.bin"]))?);
        let copied = std::fs::metadata(work.join("copy.bin"))?.len();
        if copied != size {
            return Err(
                format!("round {round}: downloaded {copied} bytes, expected {size}").into(),
            );
        }
        std::fs::remove_file(work.join("copy.bin"))?;
        plain_put = plain_put.min(timed(&mut client_to(false, &["put", "big.bin"]))?);
        plain_get = plain_get.min(timed(&mut client_to(
            false,
            &["get", "big.bin", "copy.bin"],
        ))?);
        std::fs::remove_file(work.join("copy.bin"))?;
    }
    let peak_big = status_kib(pid, "VmHWM:");

    let small = work.join("small");
    std::fs::create_dir_all(&small)?;
    let mut script = String::from("mkdir small\ncd small\n");
    for i in 0..files {
        let name = format!("f{i:04}");
        std::fs::write(small.join(&name), vec![i as u8; 4096])?;
        script.push_str(&format!("put small/{name}\n"));
    }
    let start = Instant::now();
    let mut shell = client(&[])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = shell.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = shell.wait_with_output()?;
    let small_time = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "small-file session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let peak_all = status_kib(pid, "VmHWM:");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = server.wait();
    let _ = plain_server.kill();
    let _ = plain_server.wait();

    let (m, w, p, g) = (
        rate(size, md5sum),
        rate(size, write),
        rate(size, put),
        rate(size, get),
    );
    let floor = m.min(w);
    println!();
    println!(
        "file transfer over loopback, {} file, best of {rounds} rounds",
        format_size(size)
    );
    println!(
        "  md5sum              {:6.2} s  {m:6.0} MB/s",
        md5sum.as_secs_f64()
    );
    println!(
        "  dd conv=fsync       {:6.2} s  {w:6.0} MB/s",
        write.as_secs_f64()
    );
    println!(
        "  wharf-ftp put       {:6.2} s  {p:6.0} MB/s  {:.2}x md5sum, {:.2}x the slower floor",
        put.as_secs_f64(),
        p / m,
        p / floor
    );
    println!(
        "  wharf-ftp get       {:6.2} s  {g:6.0} MB/s  {:.2}x md5sum, {:.2}x the slower floor",
        get.as_secs_f64(),
        g / m,
        g / floor
    );
    println!(
        "  --no-tls put        {:6.2} s  {:6.0} MB/s;  TLS put = {:.2}x plaintext",
        plain_put.as_secs_f64(),
        rate(size, plain_put),
        p / rate(size, plain_put)
    );
    println!(
        "  --no-tls get        {:6.2} s  {:6.0} MB/s;  TLS get = {:.2}x plaintext",
        plain_get.as_secs_f64(),
        rate(size, plain_get),
        g / rate(size, plain_get)
    );
    println!(
        "  server memory: {:.1} MiB idle, peak {:.1} MiB during the big transfers, {:.1} MiB overall",
        idle_rss as f64 / 1024.0,
        peak_big as f64 / 1024.0,
        peak_all as f64 / 1024.0
    );
    println!(
        "  {files} files of 4 KiB in one session: {:.2} s, {:.0} files/s",
        small_time.as_secs_f64(),
        files as f64 / small_time.as_secs_f64()
    );
    Ok(())
}
