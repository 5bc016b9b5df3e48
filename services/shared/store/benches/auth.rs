//! Login benchmark: what one argon2id verification costs here, whether an
//! unknown user costs the same as a known one, and the throughput and peak
//! memory of 200 logins at once.
//!
//! Run with `cargo bench -p wharf-core --bench auth`. Figures are printed as
//! ratios taken side by side in one run, since the machine is shared.
//!
//! With a PostgreSQL test cluster in `WHARF_TEST_POSTGRES_URL` (`bash
//! .ci/postgres.sh start DIR` prints one), it also runs logins and the
//! database's share of a login on PostgreSQL beside SQLite.

use wharf_testkit::postgres;

use std::time::{Duration, Instant};

use wharf_core::Password;
use wharf_core::Service;
use wharf_store::AuthConfig;
use wharf_store::Authenticator;
use wharf_store::Store;
use wharf_store::auth::hash_password;
use wharf_store::db::NewUser;

const ROUNDS: usize = 20;
const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const CONCURRENT: usize = 200;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&format!("sqlite://{}/wharf.db", dir.path().display())).await?;
    let password = Password::new("correct horse battery");
    let started = Instant::now();
    let password_hash = hash_password(&password).await?;
    let hash_time = started.elapsed();
    store
        .create_user(&NewUser {
            name: "alice".into(),
            password_hash,
            home: dir.path().join("alice"),
            quota_bytes: None,
            quota_files: None,
            services: "ftp".parse()?,
        })
        .await?;
    // Penalties off for the benchmark: unknown names fail on purpose.
    let config = AuthConfig {
        source_max_failures: u32::MAX,
        name_delay_after: u32::MAX,
        ..AuthConfig::default()
    };
    let workers = config.verify_concurrency;
    let auth = Authenticator::new(store.clone(), config).await?;

    // Warm up: every worker allocates its argon2 buffer once.
    for _ in 0..workers {
        auth.authenticate("alice", &password, Service::Ftp, LOCAL)
            .await?;
    }

    let started = Instant::now();
    for _ in 0..ROUNDS {
        auth.authenticate("alice", &password, Service::Ftp, LOCAL)
            .await?;
    }
    let known = started.elapsed() / ROUNDS as u32;

    let started = Instant::now();
    for i in 0..ROUNDS {
        let name = format!("ghost{i}");
        let _ = auth
            .authenticate(&name, &password, Service::Ftp, LOCAL)
            .await;
    }
    let unknown = started.elapsed() / ROUNDS as u32;

    let before = peak_rss_kib();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(CONCURRENT);
    for _ in 0..CONCURRENT {
        let auth = auth.clone();
        let password = password.clone();
        tasks.push(tokio::spawn(async move {
            auth.authenticate("alice", &password, Service::Ftp, LOCAL)
                .await
                .is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await? {
            ok += 1;
        }
    }
    let burst = started.elapsed();
    let grown_mib = peak_rss_kib().saturating_sub(before) as f64 / 1024.0;

    println!("argon2id (m=19456 KiB, t=2, p=1), {workers} verification workers");
    println!("  hash a new password:            {:8.1} ms", ms(hash_time));
    println!("  login, known user:              {:8.1} ms", ms(known));
    println!(
        "  login, unknown user:            {:8.1} ms  ({:.2}x the known user's cost)",
        ms(unknown),
        unknown.as_secs_f64() / known.as_secs_f64()
    );
    println!(
        "  {CONCURRENT} concurrent logins:         {:8.1} ms  ({ok} ok, {:.0} logins/s, {:.2}x the sequential rate)",
        ms(burst),
        CONCURRENT as f64 / burst.as_secs_f64(),
        (CONCURRENT as f64 / burst.as_secs_f64()) / (1.0 / known.as_secs_f64())
    );
    println!(
        "  peak memory growth in the burst: {grown_mib:7.1} MiB (unbounded would be ~{} MiB)",
        CONCURRENT * 19
    );
    println!(
        "  peak resident memory overall:    {:7.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
    store.close().await;

    if let Some(pg_url) = postgres::fresh_postgres().await {
        let pg = Store::open(&pg_url).await?;
        let lite = Store::open(&format!("sqlite://{}/side.db", dir.path().display())).await?;
        let mut rates = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        for s in [&lite, &pg] {
            add_alice(s, dir.path()).await?;
        }
        // Rounds interleaved, so that a noisy neighbour hurts both alike.
        for _ in 0..3 {
            for (i, s) in [&lite, &pg].into_iter().enumerate() {
                let (logins, lookups) = db_rates(s, &password).await?;
                rates[i].0.push(logins);
                rates[i].1.push(lookups);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let [(mut ll, mut lk), (mut pl, mut pk)] = rates;
        let (ll, lk, pl, pk) = (
            median(&mut ll),
            median(&mut lk),
            median(&mut pl),
            median(&mut pk),
        );
        println!("PostgreSQL beside SQLite (medians of 3 interleaved rounds)");
        println!(
            "  {CONCURRENT} concurrent logins:   SQLite {ll:6.0}/s  PostgreSQL {pl:6.0}/s  ({:.2}x)",
            pl / ll
        );
        println!(
            "  a login's database work:  SQLite {lk:6.0}/s  PostgreSQL {pk:6.0}/s  ({:.2}x)  (find the user, record the login)",
            pk / lk
        );
        pg.close().await;
        lite.close().await;
    }
    Ok(())
}

async fn add_alice(store: &Store, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    store
        .create_user(&NewUser {
            name: "alice".into(),
            password_hash: hash_password(&Password::new("correct horse battery")).await?,
            home: dir.join("alice"),
            quota_bytes: None,
            quota_files: None,
            services: "ftp".parse()?,
        })
        .await?;
    Ok(())
}

/// Logins per second with `CONCURRENT` at once, and per second of the
/// database's share of a login alone.
async fn db_rates(
    store: &Store,
    password: &Password,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let config = AuthConfig {
        source_max_failures: u32::MAX,
        name_delay_after: u32::MAX,
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(store.clone(), config).await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(CONCURRENT);
    for _ in 0..CONCURRENT {
        let (auth, password) = (auth.clone(), password.clone());
        tasks.push(tokio::spawn(async move {
            auth.authenticate("alice", &password, Service::Ftp, LOCAL)
                .await
                .is_ok()
        }));
    }
    for t in tasks {
        t.await?;
    }
    let logins = CONCURRENT as f64 / started.elapsed().as_secs_f64();
    const LOOKUPS: usize = 2000;
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        let user = store.require_user("alice").await?;
        store
            .record_login(user.id, wharf_core::time::now_ms())
            .await?;
    }
    let lookups = LOOKUPS as f64 / started.elapsed().as_secs_f64();
    Ok((logins, lookups))
}
