//! What a command can reach over the network in each `--exec-network`
//! mode. "The outside world" is a network namespace the test makes (as
//! root), reached through a veth pair; the host's side of that pair is an
//! address of the host, which no command may reach.

use crate::common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use wharf_exec::client::ExecClient;
use wharf_execd::server::{ExecNetwork, check_sandbox};

const WORLD_NS: &str = "wharf-test-world";
const HOST_SIDE: Ipv4Addr = Ipv4Addr::new(10, 231, 77, 1);
const WORLD_SIDE: Ipv4Addr = Ipv4Addr::new(10, 231, 77, 2);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The outside world: a namespace behind a veth pair, with a listener that
/// answers "WORLD" to every connection; its port.
fn world() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let _ = Command::new("ip").args(["link", "del", "wwh0"]).output();
        let _ = Command::new("ip").args(["netns", "del", WORLD_NS]).output();
        ip(&["netns", "add", WORLD_NS]);
        ip(&[
            "link", "add", "wwh0", "type", "veth", "peer", "name", "wwn0",
        ]);
        ip(&["link", "set", "wwn0", "netns", WORLD_NS]);
        ip(&["addr", "add", "10.231.77.1/30", "dev", "wwh0"]);
        ip(&["link", "set", "wwh0", "up"]);
        ip(&[
            "-n",
            WORLD_NS,
            "addr",
            "add",
            "10.231.77.2/30",
            "dev",
            "wwn0",
        ]);
        ip(&["-n", WORLD_NS, "link", "set", "wwn0", "up"]);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(format!("/run/netns/{WORLD_NS}")).expect("netns");
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            let listener = TcpListener::bind((WORLD_SIDE, 0)).expect("world listener");
            tx.send(listener.local_addr().expect("addr").port())
                .expect("port");
            for conn in listener.incoming().flatten() {
                let mut conn = conn;
                let _ = conn.write_all(b"WORLD\n");
            }
        });
        rx.recv().expect("world port")
    })
}

/// A listener of the host's that answers "HOST" to every connection, on
/// `addr`; its port.
fn host_listener(addr: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((addr, 0)).expect("host listener");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.write_all(b"HOST\n");
        }
    });
    port
}

/// What a command gets connecting to `addr:port` and reading a line.
async fn reach(c: &mut ExecClient, addr: &str, port: u16) -> String {
    let out = c
        .output(&format!(
            "bash -c 'exec 3<>/dev/tcp/{addr}/{port} && head -1 <&3' 2>&1"
        ))
        .await
        .expect("run");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_private_network_reaches_the_world_and_nothing_of_the_host() {
    if !is_root() {
        eprintln!("not root: the outside world cannot be made here; skipped");
        return;
    }
    let world = world();
    let on_loopback = host_listener(Ipv4Addr::LOCALHOST);
    let on_all = host_listener(Ipv4Addr::UNSPECIFIED);
    let srv = spawn_on(ExecNetwork::Private).await;
    srv.add_user("alice", "exec").await;
    let mut a = srv.client("alice").await;
    assert_eq!(reach(&mut a, &WORLD_SIDE.to_string(), world).await, "WORLD");
    // The host's loopback: the namespace's own, where nothing listens.
    let said = reach(&mut a, "127.0.0.1", on_loopback).await;
    assert!(said.contains("Connection refused"), "{said}");
    let exec_port: u16 = srv
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let said = reach(&mut a, "127.0.0.1", exec_port).await;
    assert!(said.contains("Connection refused"), "{said}");
    // An address of the host's own: prohibited.
    let said = reach(&mut a, &HOST_SIDE.to_string(), on_all).await;
    assert!(said.contains("Permission denied"), "{said}");
    // A second command of the same user shares the network; it still works.
    assert_eq!(reach(&mut a, &WORLD_SIDE.to_string(), world).await, "WORLD");
}

#[tokio::test]
async fn no_network_reaches_nothing() {
    let srv = spawn_on(ExecNetwork::None).await;
    srv.add_user("alice", "exec").await;
    let mut a = srv.client("alice").await;
    let on_loopback = host_listener(Ipv4Addr::LOCALHOST);
    let said = reach(&mut a, "127.0.0.1", on_loopback).await;
    assert!(said.contains("Connection refused"), "{said}");
    if is_root() {
        let world = world();
        let said = reach(&mut a, &WORLD_SIDE.to_string(), world).await;
        assert!(said.contains("unreachable"), "{said}");
    }
    // Only its own loopback, up.
    let out = a.output("cat /proc/net/dev").await.expect("run");
    let devices: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|d| d.trim().to_owned()))
        .collect();
    assert_eq!(devices, ["lo"]);
}

#[tokio::test]
async fn a_trusted_proxy_source_commands_could_reach_is_refused_on_the_host_network() {
    let trusted = vec!["127.0.0.1/32".parse().expect("network")];
    let mut host = config();
    host.network = ExecNetwork::Host;
    host.limits.proxy_protocol_from = trusted.clone();
    let err = check_sandbox(&mut host).await.expect_err("refused");
    assert!(err.to_string().contains("--exec-network private"), "{err}");
    // On a private network (or none) no command connects from there.
    let mut private = config();
    private.network = ExecNetwork::None;
    private.limits.proxy_protocol_from = trusted;
    check_sandbox(&mut private).await.expect("safe");
}
