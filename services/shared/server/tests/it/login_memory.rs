//! 200 logins at once finish with bounded memory: the semaphore holds, so
//! argon2's ~19 MiB per computation is taken by at most `cores` at a time.
//! Measured alone, in a process of its own (this test binary run again for
//! this one test), so that no other test moves the peak.

use std::process::Command;

use crate::common;

use wharf_core::Password;
use wharf_core::Service;
use wharf_store::AuthConfig;
use wharf_store::Error;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

/// Set in the process that measures.
const ALONE: &str = "WHARF_TEST_LOGIN_MEMORY_ALONE";

#[test]
fn two_hundred_concurrent_logins_stay_within_bounded_memory() {
    if std::env::var_os(ALONE).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(measure());
        return;
    }
    let name = "login_memory::two_hundred_concurrent_logins_stay_within_bounded_memory";
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE, "1")
        .output()
        .expect("run the measurement in a process of its own");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "the measurement failed");
    assert!(stdout.contains("1 passed"), "the measurement did not run");
}

async fn measure() {
    let env = common::env().await;
    env.add_user("alice", "correct horse", None, "ftp").await;
    let before = peak_rss_kib();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let auth = env.auth.clone();
        tasks.push(tokio::spawn(async move {
            // Half right, half unknown users: both cost one argon2 run.
            let (name, pw) = if i % 2 == 0 {
                ("alice", "correct horse")
            } else {
                ("nobody", "whatever1")
            };
            // Each from an address of its own: penalties are not what
            // this test is about.
            let ip = std::net::Ipv4Addr::new(10, 0, (i / 256) as u8, (i % 256) as u8);
            auth.authenticate(name, &Password::new(pw), Service::Ftp, ip.into())
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(Error::AuthFailed | Error::RateLimited { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(ok, 100);
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    // Unbounded, 200 x 19 MiB would be ~3.7 GiB. Bounded, it is one ~19 MiB
    // argon2 buffer per worker (one per core) and a little slack.
    let workers = AuthConfig::default().verify_concurrency as u64;
    println!(
        "peak RSS growth for 200 concurrent logins: {grown_mib} MiB with {workers} argon2 workers"
    );
    assert!(
        grown_mib < 20 * (workers + 2),
        "peak memory grew by {grown_mib} MiB"
    );
}
