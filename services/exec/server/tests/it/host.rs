//! What of the host a command can find by name: no unix socket of the
//! host's (by path in `/var/tmp`, `/run` or `/dev/shm`, or in the abstract
//! namespace), and a mount table holding only the command's own places.

use crate::common;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use common::*;
use wharf_exec::client::ExecClient;
use wharf_execd::server::ExecNetwork;

/// A 0666 unix socket of the host's that answers "HOST" to every
/// connection; removed when dropped.
struct HostSocket(PathBuf);

impl HostSocket {
    fn at(dir: &str) -> HostSocket {
        let path = Path::new(dir).join(format!("wharf-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("host socket");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        serve(listener);
        HostSocket(path)
    }
}

impl Drop for HostSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn serve(listener: UnixListener) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.write_all(b"HOST\n");
        }
    });
}

/// What a command gets connecting to the unix socket `peer` (a path, or
/// `\0NAME` for the abstract namespace) and reading a line.
async fn connect(c: &mut ExecClient, peer: &str) -> String {
    let script = format!(
        "perl -MIO::Socket::UNIX -e '$p = \"{peer}\"; $p =~ s/^\\\\0/\\0/; \
         $s = IO::Socket::UNIX->new(Peer => $p) or die \"cannot connect: $!\\n\"; print scalar <$s>' 2>&1"
    );
    let out = c.output(&script).await.expect("run");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn no_unix_socket_of_the_host_is_there_by_path() {
    // /var/tmp and /dev/shm take anyone's sockets; /run only root's.
    let mut dirs = vec!["/var/tmp", "/dev/shm"];
    if is_root() {
        dirs.push("/run");
    }
    let sockets: Vec<HostSocket> = dirs.iter().map(|d| HostSocket::at(d)).collect();
    for network in [ExecNetwork::Private, ExecNetwork::Host] {
        let srv = spawn_on(network).await;
        srv.add_user("alice", "exec").await;
        let mut a = srv.client("alice").await;
        for socket in &sockets {
            let path = socket.0.display().to_string();
            let said = connect(&mut a, &path).await;
            assert_eq!(
                said, "cannot connect: No such file or directory",
                "{network:?}: {path}"
            );
        }
        // /var/run leads to the command's own /run too.
        let said = connect(&mut a, "/var/run/wharf-test.sock").await;
        assert_eq!(said, "cannot connect: No such file or directory");
        // The places are the command's own, empty and writable.
        let out = a
            .output(
                "for d in /tmp /var/tmp /run /var/run /dev/shm; do ls -A $d; touch $d/mine; done",
            )
            .await
            .expect("run");
        assert_eq!(
            out.outcome.status,
            0,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // /var/tmp is /tmp and /var/run is /run: each shows what the
        // one before made; /dev/shm is apart.
        assert_eq!(String::from_utf8_lossy(&out.stdout), "mine\nmine\n");
        srv.stop().await;
    }
    for socket in &sockets {
        assert!(socket.0.exists(), "{} was touched", socket.0.display());
    }
}

#[tokio::test]
async fn no_abstract_socket_of_the_host_is_reachable() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("wharf-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    serve(UnixListener::bind_addr(&addr).expect("abstract listener"));
    // The private and no networks have their own abstract namespaces; on
    // the host's network, Landlock's scope keeps the command out.
    for network in [ExecNetwork::Private, ExecNetwork::None, ExecNetwork::Host] {
        let srv = spawn_on(network).await;
        srv.add_user("alice", "exec").await;
        let mut a = srv.client("alice").await;
        let said = connect(&mut a, &format!("\\0{name}")).await;
        assert!(said.starts_with("cannot connect"), "{network:?}: {said}");
        srv.stop().await;
    }
}

#[tokio::test]
async fn the_mount_table_holds_only_the_commands_own_places() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut a = srv.client("alice").await;
    let home = srv.home("alice");
    let data = home
        .parent()
        .and_then(Path::parent)
        .expect("data folder")
        .display()
        .to_string();
    let out = a.output("cat /proc/self/mountinfo").await.expect("run");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let system = [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
    ];
    let own = [
        "/",
        "/home/alice",
        "/home/alice/.wharf",
        "/tmp",
        "/run",
        "/dev/shm",
        "/proc",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
    ];
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (root, point) = (fields[3], fields[4]);
        assert!(
            own.contains(&point)
                || system
                    .iter()
                    .any(|s| point == *s || point.starts_with(&format!("{s}/"))),
            "a mount of the host's: {line}"
        );
        // Where the home lies on the host's disk is in the root column of
        // its mount alone (the kernel shows the path within the file
        // system); nowhere else.
        if point != "/home/alice" {
            assert!(!line.contains(&data), "{line}");
        } else {
            assert!(!fields[4..].join(" ").contains(&data), "{line}");
            assert!(root.ends_with("/alice"), "{line}");
        }
    }
    let out = a.output("mount").await.expect("run");
    let shown = String::from_utf8_lossy(&out.stdout);
    // Without root the command has no `/proc` of its own, and no table.
    assert!(
        table.is_empty() || shown.contains(" on /home/alice "),
        "{shown}"
    );
    assert!(!shown.contains(&data), "{shown}");
}
