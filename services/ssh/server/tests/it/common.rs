//! An SSH door on a test data folder, and OpenSSH's clients pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use wharf_execd::server::{Exec, ExecConfig};
use wharf_server::listener::{Limits, Listener};
use wharf_sshd::{SshConfig, SshServer, host_key};
use wharf_store::{Authenticator, Store, User};
use wharf_testkit::{Data, PW, WAIT};

pub use wharf_testkit::data;

pub struct TestServer {
    pub data: Data,
    pub store: Store,
    pub auth: Authenticator,
    pub port: u16,
    pub shutdown: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A door taking passwords and keys.
pub async fn spawn() -> TestServer {
    spawn_with(true).await
}

pub async fn spawn_with(password_login: bool) -> TestServer {
    start(password_login, Limits::default(), false).await
}

/// A door that runs commands and shells too, through remote exec (its
/// launcher: this package's own `wharf-sshd`, as in production).
pub async fn spawn_exec() -> TestServer {
    start(true, Limits::default(), true).await
}

/// A door whose connections must log in within `deadline`.
pub async fn spawn_with_login_timeout(deadline: std::time::Duration) -> TestServer {
    let limits = Limits {
        login_timeout: deadline,
        ..Limits::default()
    };
    start(true, limits, false).await
}

async fn start(password_login: bool, limits: Limits, commands: bool) -> TestServer {
    let data = Data::new(None);
    let (store, auth) = data.open().await;
    let config = SshConfig {
        limits,
        host_key: host_key::load(data.dir.path(), None).expect("host key"),
        password_login,
        max_auth_tries: 6,
    };
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = tcp.local_addr().expect("address").port();
    let shutdown = CancellationToken::new();
    let exec = match commands {
        false => None,
        true => {
            let config = ExecConfig {
                launcher: env!("CARGO_BIN_EXE_wharf-sshd").into(),
                ..ExecConfig::default()
            };
            Some(
                Exec::start(auth.clone(), config)
                    .await
                    .expect("the sandbox works here"),
            )
        }
    };
    let server = Arc::new(SshServer::new(auth.clone(), config, exec));
    tokio::spawn(wharf_sshd::run(
        Listener::new(tcp, None),
        server,
        shutdown.clone(),
    ));
    TestServer {
        data,
        store,
        auth,
        port,
        shutdown,
    }
}

impl TestServer {
    pub async fn add_user(&self, name: &str, quota: Option<u64>, services: &str) -> User {
        let home = self.data.dir.path().join("homes").join(name);
        wharf_testkit::add_user(&self.store, &home, name, quota, services).await
    }

    /// A key pair for `name` made by ssh-keygen, given to the user: the
    /// private key's path.
    pub async fn give_key(&self, name: &str) -> PathBuf {
        let private = self.key(name);
        let public = std::fs::read_to_string(private.with_extension("pub")).expect("public key");
        let key = wharf_store::keys::parse(&public).expect("an OpenSSH key");
        self.store.add_key(name, &key).await.expect("key added");
        private
    }

    /// A key pair made by ssh-keygen, given to no one.
    pub fn key(&self, label: &str) -> PathBuf {
        let dir = self.data.dir.path().join("client-keys");
        std::fs::create_dir_all(&dir).expect("key folder");
        let private = dir.join(label);
        if !private.exists() {
            let made = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", label, "-f"])
                .arg(&private)
                .status()
                .expect("ssh-keygen (Debian's openssh-client)");
            assert!(made.success());
        }
        private
    }

    /// Options every OpenSSH client here takes: this port, no host key
    /// checks (a new server per test), no agent, no config of the user's.
    pub fn options(&self, key: Option<&Path>) -> Vec<String> {
        let mut o: Vec<String> = [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentityAgent=none",
            "-o",
            "ConnectTimeout=10",
        ]
        .map(String::from)
        .into();
        match key {
            Some(key) => {
                o.extend(
                    ["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-i"].map(String::from),
                );
                o.push(key.display().to_string());
            }
            None => o.extend(
                [
                    "-o",
                    "PubkeyAuthentication=no",
                    "-o",
                    "PreferredAuthentications=password",
                    "-o",
                    "NumberOfPasswordPrompts=1",
                ]
                .map(String::from),
            ),
        }
        o
    }

    /// `sftp -b -` as `user` with `key` (a password from SSH_ASKPASS when
    /// `None`, the commands on standard input), running `batch`, in `cwd`.
    pub async fn sftp(&self, user: &str, key: Option<&Path>, batch: &str, cwd: &Path) -> Output {
        let mut cmd = Command::new("sftp");
        cmd.args(self.options(key))
            .args(["-P", &self.port.to_string()]);
        // A batch (-b) takes no password: with one, the commands come on
        // standard input instead (and a failed one does not stop the rest).
        if key.is_some() {
            cmd.args(["-b", "-"]);
        }
        cmd.arg(format!("{user}@127.0.0.1")).current_dir(cwd);
        self.run(cmd, key.is_none(), Some(batch)).await
    }

    /// `ssh` as `user` with `key`, these extra options, running `command`
    /// (none: a shell), `input` on its standard input.
    pub async fn ssh(
        &self,
        user: &str,
        key: &Path,
        extra: &[&str],
        command: Option<&str>,
        input: &str,
    ) -> Output {
        let mut cmd = Command::new("ssh");
        cmd.args(self.options(Some(key)))
            .args(["-p", &self.port.to_string()])
            .args(extra)
            .arg(format!("{user}@127.0.0.1"));
        if let Some(command) = command {
            cmd.arg(command);
        }
        self.run(cmd, false, Some(input)).await
    }

    /// The `-e` of rsync: ssh with this door's options and `key`.
    pub fn rsync_shell(&self, key: &Path) -> String {
        let mut shell = vec!["ssh".to_owned(), "-p".to_owned(), self.port.to_string()];
        shell.extend(self.options(Some(key)));
        shell.join(" ")
    }

    /// `python3 -c script` (with paramiko) with this door's port in `PORT`
    /// and `env`, within `wait`.
    pub async fn python(
        &self,
        script: &str,
        env: &[(&str, &std::ffi::OsStr)],
        wait: std::time::Duration,
    ) -> Output {
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(script)
            .env("PORT", self.port.to_string())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        tokio::time::timeout(wait, cmd.output())
            .await
            .expect("in time")
            .expect("python3 with paramiko (pip install paramiko)")
    }

    /// Locks `user` and waits for `child` (an ssh of theirs) to end: within
    /// 3 s, failed. Returns all it wrote from then on, both streams.
    pub async fn lock_ends(&self, user: &str, mut child: tokio::process::Child) -> String {
        use tokio::io::AsyncReadExt;
        self.store.set_locked(user, true).await.expect("locked");
        let started = std::time::Instant::now();
        let status = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
            .await
            .expect("ssh ends soon after the lock")
            .expect("status");
        assert!(!status.success());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let mut said = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut said).await;
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut said).await;
        }
        said
    }

    /// `scp` (over SFTP, as OpenSSH 9's) with `key`.
    pub async fn scp(&self, key: &Path, from: &str, to: &str) -> Output {
        let mut cmd = Command::new("scp");
        cmd.args(self.options(Some(key)))
            .args(["-P", &self.port.to_string(), from, to]);
        self.run(cmd, false, None).await
    }

    async fn run(&self, mut cmd: Command, password: bool, input: Option<&str>) -> Output {
        if password {
            let askpass = self.data.dir.path().join("askpass");
            std::fs::write(&askpass, format!("#!/bin/sh\necho '{PW}'\n")).expect("askpass");
            let mut perms = std::fs::metadata(&askpass).expect("askpass").permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            std::fs::set_permissions(&askpass, perms).expect("chmod");
            cmd.env("SSH_ASKPASS", &askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", "none");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .expect("OpenSSH client (Debian's openssh-client)");
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(input.unwrap_or("").as_bytes()).await;
        }
        tokio::time::timeout(WAIT * 3, child.wait_with_output())
            .await
            .expect("the client ends in time")
            .expect("output")
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
