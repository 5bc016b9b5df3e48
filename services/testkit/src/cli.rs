//! The client binaries run as a user runs them: against a test server, with
//! the test certificate and the password in the environment, and waited
//! for within [`WAIT`].

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::{PW, WAIT, tls};

/// A binary of another package of the workspace (a client, for the tests
/// of its server; admin-cli, for the suite), where cargo put it: beside
/// the test binary's `deps/` folder, as ripgrep's tests find `rg`.
/// `cargo test --workspace` builds every package's binaries before it runs
/// a test (each package's own integration tests ask for them); a run for
/// one package alone builds them here when they are missing, and otherwise
/// uses their last build.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dir = exe.parent().expect("its folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--workspace", "--bins"]);
        // The profile of the test binary: the others sit beside it.
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success() && path.is_file(),
            "cannot build {name}: run the tests with `cargo test --workspace`"
        );
    }
    path
}

/// `bin --server addr --user user`, trusting the test certificate, with
/// the password in `WHARF_PASSWORD`; stdin empty, stdout and stderr
/// captured, killed when dropped.
pub fn client(bin: impl AsRef<OsStr>, addr: &str, user: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--server", addr, "--user", user])
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", PW)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits for `child` to exit, within [`WAIT`]; its output.
pub async fn finish(child: Child) -> Output {
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("exits in time")
        .expect("output")
}

/// Runs `cmd` to its end, within [`WAIT`].
pub async fn run(cmd: &mut Command) -> Output {
    finish(cmd.spawn().expect("spawn")).await
}

/// Runs `cmd` with `input` on its stdin, within [`WAIT`].
pub async fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("write stdin");
    drop(stdin);
    finish(child).await
}

/// Output as text, for assertions and their messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A daemon binary (`wharf-chatd`, ...) to start on a free loopback port
/// with the test certificate and `data_dir`, its output dropped, killed
/// when dropped; and the address it will listen on.
pub fn daemon(bin: impl AsRef<OsStr>, data_dir: &std::path::Path) -> (String, Command) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let cert = &tls().2;
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", &addr])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(cert.with_file_name("server.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    (addr, cmd)
}
