//! A second client library against the SSH door: Python's paramiko, by
//! key and by password, files both ways, and a path out of the home.

use crate::common::{data, spawn, text};

const SCRIPT: &str = r#"
import os, sys, paramiko
t = paramiko.Transport(("127.0.0.1", int(os.environ["PORT"])))
if os.environ.get("KEY"):
    t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(os.environ["KEY"]))
else:
    t.connect(username="alice", password=os.environ["PASSWORD"])
sftp = paramiko.SFTPClient.from_transport(t)
sftp.mkdir("py")
sftp.put(os.environ["LOCAL"], "py/up.bin")
print("size", sftp.stat("py/up.bin").st_size)
sftp.get("py/up.bin", os.environ["BACK"])
print("list", sorted(sftp.listdir("py")))
try:
    sftp.stat("../../etc/passwd")
    print("escaped")
except IOError as e:
    print("refused", e.errno)
sftp.rename("py/up.bin", "py/moved.bin")
print("after", sorted(sftp.listdir("py")))
t.close()
"#;

async fn run(
    port: u16,
    key: Option<&std::path::Path>,
    local: &std::path::Path,
    back: &std::path::Path,
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c")
        .arg(SCRIPT)
        .env("PORT", port.to_string())
        .env("LOCAL", local)
        .env("BACK", back)
        .env("PASSWORD", wharf_testkit::PW)
        .kill_on_drop(true);
    match key {
        Some(key) => cmd.env("KEY", key),
        None => cmd.env_remove("KEY"),
    };
    tokio::time::timeout(wharf_testkit::WAIT * 3, cmd.output())
        .await
        .expect("in time")
        .expect("python3 with paramiko (pip install paramiko)")
}

#[tokio::test]
async fn paramiko_logs_in_by_key_and_by_password_and_moves_files() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let here = tempfile::tempdir().expect("dir");
    let body = data(1 << 20, 5);
    let local = here.path().join("local.bin");
    std::fs::write(&local, &body).expect("local");
    let back = here.path().join("back.bin");
    let out = run(srv.port, Some(&key), &local, &back).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains(&format!("size {}", body.len())), "{said}");
    assert!(said.contains("list ['up.bin']"), "{said}");
    assert!(said.contains("refused 13"), "permission denied: {said}");
    assert!(said.contains("after ['moved.bin']"), "{said}");
    assert_eq!(std::fs::read(&back).expect("downloaded"), body);
    assert_eq!(
        std::fs::read(alice.home.join("py/moved.bin")).expect("uploaded"),
        body
    );

    // By password, into a fresh folder.
    std::fs::remove_dir_all(alice.home.join("py")).expect("clean");
    let out = run(srv.port, None, &local, &back).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("after ['moved.bin']"));
}

const GUESSES: &str = r#"
import os, paramiko
def attempt(user, password):
    t = paramiko.Transport(("127.0.0.1", int(os.environ["PORT"])))
    try:
        t.connect(username=user, password=password)
        return "in"
    except paramiko.AuthenticationException:
        return "refused"
    finally:
        t.close()
# Ten wrong guesses from this address, on names that do not exist.
print("guesses", [attempt("guess%d" % i, "wrong") for i in range(10)].count("refused"))
print("then", attempt("alice", os.environ["PASSWORD"]))
"#;

#[tokio::test]
async fn wrong_ssh_passwords_count_against_the_address_for_every_service() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let password = std::ffi::OsStr::new(wharf_testkit::PW);
    let out = srv
        .python(GUESSES, &[("PASSWORD", password)], wharf_testkit::WAIT * 6)
        .await;
    let said = text(&out.stdout);
    assert!(said.contains("guesses 10"), "{said}{}", text(&out.stderr));
    // The address is in penalty: the right password is refused too...
    assert!(said.contains("then refused"), "{said}");
    // ...and so is a native login from it, which shares the books.
    let native = srv
        .auth
        .authenticate(
            "alice",
            &wharf_core::Password::new(wharf_testkit::PW),
            wharf_core::Service::Ftp,
            "127.0.0.1".parse().expect("address"),
        )
        .await;
    assert!(
        matches!(native, Err(wharf_store::Error::RateLimited { .. })),
        "{native:?}"
    );
}

const CUT: &str = r#"
import os, time, paramiko
t = paramiko.Transport(("127.0.0.1", int(os.environ["PORT"])))
t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(os.environ["KEY"]))
sftp = paramiko.SFTPClient.from_transport(t)
body = open(os.environ["LOCAL"], "rb").read()
if os.environ["STEP"] == "cut":
    f = sftp.open("cut.bin", "w")
    f.write(body[:3000])
    f.flush()
    print("sent")
    t.close()
else:
    # The cut upload shows its size; appending from there finishes it.
    for _ in range(100):
        try:
            size = sftp.stat("cut.bin").st_size
            break
        except IOError:
            time.sleep(0.05)
    print("kept", size)
    f = sftp.open("cut.bin", "a")
    f.seek(size)
    f.write(body[size:])
    f.close()
    print("whole", sftp.stat("cut.bin").st_size)
    t.close()
"#;

#[tokio::test]
async fn a_small_upload_cut_before_its_close_is_kept_and_finished_by_appending() {
    // A small file's writes are kept in hand until its close: a session
    // that ends before it still leaves what arrived, for a resume.
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let here = tempfile::tempdir().expect("dir");
    let body = data(5_000, 9);
    let local = here.path().join("local.bin");
    std::fs::write(&local, &body).expect("local");
    let step = |name: &str| {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg("-c")
            .arg(CUT)
            .env("PORT", srv.port.to_string())
            .env("LOCAL", &local)
            .env("KEY", &key)
            .env("STEP", name)
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(wharf_testkit::WAIT * 3, cmd.output())
                .await
                .expect("in time")
                .expect("python3 with paramiko")
        }
    };
    let out = step("cut").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sent"));
    let out = step("finish").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("kept 3000"), "{said}");
    assert!(said.contains("whole 5000"), "{said}");
    assert_eq!(
        std::fs::read(alice.home.join("cut.bin")).expect("stored"),
        body
    );
}
