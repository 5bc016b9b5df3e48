//! Logins by key, as `wharf-ftp` makes them (the three clients share the
//! code): a key file, ssh-agent, and what the server refuses: a key not
//! given to the user, a locked user, a signature made for another
//! connection.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use tokio::process::Command;
use tokio_util::codec::Framed;
use wharf_client::identity::Identity;
use wharf_proto::message::{
    ClientHello, CommonReply, CommonRequest, KEY_LOGIN_NAMESPACE, KeyProof, Login,
    key_login_message,
};
use wharf_proto::{ErrorCode, FrameCodec, PROTOCOL_VERSION, Password};
use wharf_testkit::cli::text;

use crate::common::{TestServer, spawn, tls};

/// A key pair made by ssh-keygen in `dir` (with `passphrase`, or none).
fn keygen(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    let key = dir.join(name);
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (Debian's openssh-client)");
    assert!(made.success());
    key
}

async fn give(srv: &TestServer, user: &str, key: &Path) {
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let key = wharf_store::keys::parse(&public).expect("an OpenSSH key");
    srv.store.add_key(user, &key).await.expect("key added");
}

/// `wharf-ftp ls` as alice, without a password, in a home of its own (no
/// ~/.ssh), with `args` and `env`.
async fn ls(srv: &TestServer, home: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(wharf_testkit::cli::bin("wharf-ftp"));
    cmd.args(["--server", &srv.addr, "--user", "alice"])
        .args(args)
        .arg("ls")
        .env("WHARF_CA", &tls().2)
        .env("HOME", home)
        .env_remove("WHARF_PASSWORD")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(wharf_testkit::WAIT, cmd.output())
        .await
        .expect("in time")
        .expect("wharf-ftp")
}

#[tokio::test]
async fn a_key_logs_in_and_a_locked_user_is_refused_as_with_a_password() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    std::fs::write(alice.home.join("seen.txt"), b"x").expect("a file");
    let home = tempfile::tempdir().expect("home");
    let key = keygen(home.path(), "alice-key", "");
    let stranger = keygen(home.path(), "stranger", "");
    give(&srv, "alice", &key).await;

    let out = ls(
        &srv,
        home.path(),
        &["--identity", &key.display().to_string()],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("seen.txt"),
        "{}",
        text(&out.stdout)
    );

    // The default key, ~/.ssh/id_ed25519, without --identity.
    std::fs::create_dir_all(home.path().join(".ssh")).expect(".ssh");
    std::fs::copy(&key, home.path().join(".ssh/id_ed25519")).expect("copy");
    let out = ls(&srv, home.path(), &[], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_file(home.path().join(".ssh/id_ed25519")).expect("rm");

    // A key alice was not given: refused, and with --identity nothing
    // else is tried.
    let out = ls(
        &srv,
        home.path(),
        &["--identity", &stranger.display().to_string()],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("this key does not log alice in"),
        "{}",
        text(&out.stderr)
    );

    // Locked: the key is refused with the words a password gets.
    srv.store.set_locked("alice", true).await.expect("lock");
    let by_key = ls(
        &srv,
        home.path(),
        &["--identity", &key.display().to_string()],
        &[],
    )
    .await;
    let mut cmd =
        wharf_testkit::cli::client(wharf_testkit::cli::bin("wharf-ftp"), &srv.addr, "alice");
    let by_password = wharf_testkit::cli::run(cmd.arg("ls")).await;
    assert!(!by_key.status.success() && !by_password.status.success());
    let said = |o: &Output| {
        text(&o.stderr)
            .lines()
            .find(|l| l.contains("locked"))
            .map(str::to_owned)
    };
    assert!(said(&by_key).is_some(), "{}", text(&by_key.stderr));
    assert_eq!(said(&by_key), said(&by_password));
}

#[tokio::test]
async fn ssh_agent_signs_for_its_keys_and_for_a_key_file_it_holds() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let home = tempfile::tempdir().expect("home");
    // Encrypted: usable without a terminal only through the agent.
    let key = keygen(home.path(), "alice-key", "a long passphrase");
    give(&srv, "alice", &key).await;
    let socket = home.path().join("agent.sock");
    let _agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh-agent");
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Not in the agent yet: the key file cannot be opened without a
    // terminal, and says how to use it.
    let out = ls(
        &srv,
        home.path(),
        &["--identity", &key.display().to_string()],
        &[("SSH_AUTH_SOCK", &socket)],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ssh-add"),
        "{}",
        text(&out.stderr)
    );

    let askpass = home.path().join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\necho 'a long passphrase'\n").expect("askpass");
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", "none")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("ssh-add");
    assert!(added.status.success(), "{}", text(&added.stderr));

    // The agent's keys, without --identity; and the file, signed by the
    // agent, with it.
    let out = ls(&srv, home.path(), &[], &[("SSH_AUTH_SOCK", &socket)]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ls(
        &srv,
        home.path(),
        &["--identity", &key.display().to_string()],
        &[("SSH_AUTH_SOCK", &socket)],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn a_signature_for_another_connection_or_service_does_not_log_in() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let home = tempfile::tempdir().expect("home");
    let key = keygen(home.path(), "alice-key", "");
    give(&srv, "alice", &key).await;
    let identity = Identity::from_file(&key, false).expect("the key");

    let opened = || async {
        let mut conn = Framed::new(
            wharf_testkit::connect(&srv.addr).await,
            FrameCodec::<CommonReply>::new(),
        );
        let hello = CommonRequest::Hello(ClientHello {
            version: PROTOCOL_VERSION,
            client: "raw".into(),
        });
        let CommonReply::Hello(hello) = wharf_testkit::raw::ask(&mut conn, hello).await else {
            panic!("no hello");
        };
        let challenge = hello.challenge.expect("a challenge");
        (conn, challenge)
    };
    let identity = &identity;
    let login = |message: Vec<u8>| async move {
        let signature = identity
            .sign(KEY_LOGIN_NAMESPACE, &message)
            .await
            .expect("signed");
        CommonRequest::Login(Login {
            user: "alice".into(),
            password: Password::new(""),
            key: Some(KeyProof {
                public_key: identity.public_line(),
                signature,
            }),
        })
    };

    // Signed right: in.
    let (mut conn, challenge) = opened().await;
    let binding = conn.get_ref().channel_binding();
    let good = key_login_message("ftp", "alice", &challenge, binding.as_ref().map(|b| &b[..]));
    let reply = wharf_testkit::raw::ask(&mut conn, login(good.clone()).await).await;
    assert!(matches!(reply, CommonReply::LoginOk(_)), "{reply:?}");

    // The same proof on a new connection (a replay, or a relay by a server
    // in the middle: another challenge, other keying material).
    let (mut other, _) = opened().await;
    let reply = wharf_testkit::raw::ask(&mut other, login(good).await).await;
    let refused = |reply: &CommonReply| match reply {
        CommonReply::Error(e) => {
            e.code == ErrorCode::AuthFailed && e.message.contains("does not verify")
        }
        _ => false,
    };
    assert!(refused(&reply), "{reply:?}");

    // This connection's challenge, without its TLS binding; then signed
    // for chat.
    let (mut conn, challenge) = opened().await;
    let unbound = key_login_message("ftp", "alice", &challenge, None);
    let reply = wharf_testkit::raw::ask(&mut conn, login(unbound).await).await;
    assert!(refused(&reply), "{reply:?}");
    let binding = conn.get_ref().channel_binding();
    let for_chat = key_login_message(
        "chat",
        "alice",
        &challenge,
        binding.as_ref().map(|b| &b[..]),
    );
    let reply = wharf_testkit::raw::ask(&mut conn, login(for_chat).await).await;
    assert!(refused(&reply), "{reply:?}");

    // Garbage where the key and signature go: refused, the server serves on.
    let reply = wharf_testkit::raw::ask(
        &mut conn,
        CommonRequest::Login(Login {
            user: "alice".into(),
            password: Password::new(""),
            key: Some(KeyProof {
                public_key: "ssh-ed25519 AAAA".into(),
                signature: "x".repeat(20_000),
            }),
        }),
    )
    .await;
    assert!(matches!(reply, CommonReply::Error(_)), "{reply:?}");
    drop(conn);
    let (mut conn, challenge) = opened().await;
    let binding = conn.get_ref().channel_binding();
    let good = key_login_message("ftp", "alice", &challenge, binding.as_ref().map(|b| &b[..]));
    let reply = wharf_testkit::raw::ask(&mut conn, login(good).await).await;
    assert!(matches!(reply, CommonReply::LoginOk(_)), "{reply:?}");
}
