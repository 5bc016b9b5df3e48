//! wharfd's config file: every kind of setting set by the file, a flag and
//! an environment variable winning over it, an unknown key or a bad value
//! refused with its line, and the repository's example file accepted.

use std::process::{Command, Output};
use wharf_testkit::cli::text;

fn wharfd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharfd"));
    cmd.args(args)
        .env_remove("WHARF_CONFIG")
        .env_remove("WHARF_DATABASE_URL")
        .env_remove("WHARF_DATA_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run wharfd")
}

const FILE: &str = r#"# every kind of setting
ftp-listen = "127.0.0.1:3121"      # a string
max-connections = 77               # a number
login-timeout = "3s"               # a duration
max-output = "2MiB"                # a size
no-exec = true                     # a switch
std-ftp-passive-ports = "51000-51009"
tls-name = ["files.example", "wharf.example"]
database-url = "postgres://wharf:s3cret@db.example/wharf"
"#;

#[test]
fn the_file_sets_every_kind_of_setting_and_flags_and_the_environment_win() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("wharfd.toml");
    std::fs::write(&file, FILE).expect("write");
    let f = file.display().to_string();
    let out = wharfd(&["--config", &f, "--print-config"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for line in [
        r#"ftp-listen = "127.0.0.1:3121""#,
        "max-connections = 77",
        r#"login-timeout = "3s""#,
        r#"max-output = "2MiB""#,
        "no-exec = true",
        r#"std-ftp-passive-ports = "51000-51009""#,
        r#"tls-name = ["files.example", "wharf.example"]"#,
        r#"database-url = "postgres://wharf:***@db.example/wharf""#,
    ] {
        let found = said.lines().find(|l| l.starts_with(line));
        assert!(
            found.is_some_and(|l| l.ends_with("# from the config file")),
            "no {line:?} from the file in:\n{said}"
        );
    }
    assert!(!said.contains("s3cret"), "a password printed:\n{said}");
    assert!(said.contains("chat-listen = \"0.0.0.0:2122\""), "{said}");

    // A flag and an environment variable win over the file.
    let out = wharfd(
        &["--config", &f, "--max-connections", "9", "--print-config"],
        &[("WHARF_DATABASE_URL", "sqlite://elsewhere/wharf.db")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("max-connections = 9"), "{said}");
    assert!(said.contains("# from --max-connections"), "{said}");
    assert!(
        said.contains(r#"database-url = "sqlite://elsewhere/wharf.db""#),
        "{said}"
    );
    assert!(said.contains("# from WHARF_DATABASE_URL"), "{said}");
    // WHARF_CONFIG names the file as --config does.
    let out = wharfd(&["--print-config"], &[("WHARF_CONFIG", &f)]);
    assert!(text(&out.stdout).contains("max-connections = 77"));
}

#[test]
fn an_unknown_key_or_a_bad_value_is_refused_with_its_line() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("wharfd.toml");
    let f = file.display().to_string();
    for (content, says) in [
        (
            "ftp-listen = \"127.0.0.1:3121\"\n\nftp-lisen = \"x\"\n",
            "line 3: unknown key `ftp-lisen`",
        ),
        (
            "max-connections = \"many\"\n",
            "line 1: `max-connections`: invalid value 'many'",
        ),
        (
            "\n\nlogin-timeout = \"soon\"\n",
            "line 3: `login-timeout`: invalid value 'soon'",
        ),
        (
            "no-exec = \"yes\"\n",
            "line 1: `no-exec` takes true or false",
        ),
        ("[ftp]\nlisten = 1\n", "unknown key `ftp`"),
        ("ftp-listen = \n", "is not TOML"),
    ] {
        std::fs::write(&file, content).expect("write");
        let out = wharfd(&["--config", &f, "--print-config"], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{content:?}: {err}");
        assert!(err.starts_with("wharfd: "), "{err}");
        assert!(
            err.contains(says),
            "{content:?}: expected {says:?} in {err}"
        );
        assert!(err.contains(&f), "{err}");
    }
    let out = wharfd(&["--config", "/nonexistent/wharfd.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read the config file /nonexistent/wharfd.toml"));
}

#[test]
fn the_example_file_in_the_repository_is_accepted() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wharfd.example.toml");
    let out = wharfd(&["--config", example, "--print-config"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("# from the config file"));
}

#[test]
fn the_log_is_json_lines_when_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharfd"))
        .current_dir(dir.path())
        .args(["--log-format", "json", "--no-exec"])
        .args([
            "--ftp-listen",
            "127.0.0.1:0",
            "--chat-listen",
            "127.0.0.1:0",
        ])
        .env_remove("WHARF_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wharfd");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let log = text(&out.stderr);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
    }
}
