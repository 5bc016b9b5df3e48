//! docker-compose.yml and the Dockerfile agree with the workspace and with
//! each other: every command names a binary the workspace builds and the
//! image installs, every daemon listens on the port it publishes and checks,
//! and every service shares the one data volume where the programs look.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;

/// What a container running commands needs (sorted): switch to each
/// user's uid, end their processes, give files to them, make namespaces
/// and enter the root built for a command.
const EXEC_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "KILL",
    "SETGID",
    "SETUID",
    "SYS_ADMIN",
    "SYS_CHROOT",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("workspace root")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("compose file");
    let mut value: Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
    // A merged mapping may hold merge keys of its own (a replica made from
    // another): merge until none is left, as docker compose does.
    for _ in 0..4 {
        value.apply_merge().expect("merge keys");
    }
    value
}

/// The binaries the workspace builds, from `cargo metadata`.
fn workspace_bins() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let mut bins = BTreeSet::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            if target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
            {
                bins.insert(target["name"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    bins
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `name` in a command.
fn flag(command: &[String], name: &str) -> Option<String> {
    let at = command.iter().position(|a| a == name)?;
    command.get(at + 1).cloned()
}

/// The port of `--listen ADDR` in a command.
fn listen_port(command: &[String]) -> Option<u16> {
    let at = command.iter().position(|a| a == "--listen")?;
    command.get(at + 1)?.rsplit(':').next()?.parse().ok()
}

#[test]
fn compose_services_match_the_workspace_and_each_other() {
    let compose = compose();
    let bins = workspace_bins();
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    // The one-machine stack: the services of no profile, and its tool.
    let services: serde_yaml_ng::Mapping = compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .filter(|(_, svc)| {
            let profiles = strings(&svc["profiles"]);
            profiles.is_empty() || profiles == ["tools"]
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let services = &services;
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["admin", "chat", "exec", "ftp", "ssh"])
    );

    // The named volume, mounted by everyone where WHARF_DATA_DIR points.
    let volumes = compose["volumes"].as_mapping().expect("volumes");
    assert!(
        volumes.contains_key("wharf-data"),
        "the named volume is declared"
    );
    let mut published: HashMap<String, &str> = HashMap::new();
    for (name, svc) in services {
        let name = name.as_str().expect("name");
        let data_dir = svc["environment"]["WHARF_DATA_DIR"]
            .as_str()
            .expect("WHARF_DATA_DIR");
        let mounts = strings(&svc["volumes"]);
        assert_eq!(mounts, [format!("wharf-data:{data_dir}")], "{name}: volume");
        assert!(
            dockerfile.contains(&format!("ENV WHARF_DATA_DIR={data_dir}")),
            "{name}: the image's data dir is {data_dir}"
        );

        // The program it runs is built by the workspace and installed.
        let mut command = strings(&svc["entrypoint"]);
        command.extend(strings(&svc["command"]));
        let program = command.first().expect("a command").clone();
        assert!(
            bins.contains(&program),
            "{name}: {program} is not a workspace binary ({bins:?})"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{program}")),
            "{name}: the Dockerfile does not install {program}"
        );

        // Least privilege: every capability dropped, a few added back.
        assert_eq!(strings(&svc["cap_drop"]), ["ALL"], "{name}: cap_drop");
        assert_eq!(svc["read_only"].as_bool(), Some(true), "{name}: read_only");
        assert!(
            strings(&svc["security_opt"]).contains(&"no-new-privileges:true".to_owned()),
            "{name}: no-new-privileges"
        );
        let mut caps = strings(&svc["cap_add"]);
        caps.sort();
        let allowed: &[&str] = match name {
            "chat" => &[],
            "ftp" | "admin" => &["CHOWN", "DAC_OVERRIDE", "FOWNER"],
            _ => EXEC_CAPS,
        };
        assert_eq!(caps, allowed, "{name}: capabilities");
        // Who holds no capability runs as the image's unprivileged user.
        let user = svc["user"].as_str();
        assert_eq!(user.is_none(), caps.is_empty(), "{name}: user {user:?}");

        if name == "admin" {
            assert_eq!(strings(&svc["profiles"]), ["tools"], "admin is a tool");
            assert!(svc.get("ports").is_none(), "admin publishes nothing");
            continue;
        }
        // A daemon: restarted, checked, listening where it publishes.
        assert_eq!(svc["restart"].as_str(), Some("unless-stopped"), "{name}");
        let port = listen_port(&command).unwrap_or_else(|| panic!("{name}: no --listen"));
        // The healthcheck asks the daemon's /health (database and listeners).
        let metrics = flag(&command, "--metrics-listen")
            .and_then(|a| a.rsplit(':').next().map(str::to_owned))
            .unwrap_or_else(|| panic!("{name}: no --metrics-listen"));
        let check = strings(&svc["healthcheck"]["test"]).join(" ");
        assert!(
            check.contains(&format!("/{metrics}")) && check.contains("GET /health"),
            "{name}: the healthcheck asks /health on {metrics}: {check}"
        );
        let ports = strings(&svc["ports"]);
        let mut protocols = BTreeSet::new();
        // What it may publish: its --listen port, and standard FTP's port
        // and passive range when it serves them.
        let mut served = vec![port.to_string()];
        served.extend(
            flag(&command, "--std-ftp-listen")
                .and_then(|a| a.rsplit(':').next().map(str::to_owned)),
        );
        served.extend(flag(&command, "--std-ftp-passive-ports"));
        for p in &ports {
            let (mapping, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            let (host, container) = mapping.rsplit_once(':').expect("HOST:CONTAINER");
            assert!(
                served.iter().any(|s| s == container),
                "{name}: {p} is not served"
            );
            assert_eq!(host, container, "{name}: {p} is published on another port");
            assert!(
                published.insert(format!("{host}/{proto}"), name).is_none(),
                "{name}: {host}/{proto} is published twice"
            );
            assert!(
                dockerfile
                    .lines()
                    .any(|l| l.starts_with("EXPOSE") && l.contains(&format!("{container}/{proto}"))),
                "{name}: the image does not expose {container}/{proto}"
            );
            protocols.insert(proto.to_owned());
        }
        let want: BTreeSet<String> = if name == "chat" {
            ["tcp", "udp"].map(str::to_owned).into()
        } else {
            ["tcp"].map(str::to_owned).into()
        };
        assert_eq!(protocols, want, "{name}: protocols");
        let documented = match name {
            "ftp" => 2121,
            "chat" => 2122,
            "ssh" => 2222,
            _ => 2123,
        };
        assert_eq!(port, documented, "{name}: the documented port");
    }
    // Only one daemon creates the database: the others wait for it.
    for name in ["chat", "exec", "ssh", "admin"] {
        assert_eq!(
            compose["services"][name]["depends_on"]["ftp"]["condition"].as_str(),
            Some("service_healthy"),
            "{name} waits for ftp"
        );
    }
    // The image runs unprivileged.
    let runtime = dockerfile.rsplit("FROM ").next().unwrap_or_default();
    assert!(
        runtime.contains("USER wharf"),
        "the runtime stage drops root"
    );
}

#[test]
fn the_scale_profile_runs_replicas_behind_the_balancer_they_trust() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let scale: BTreeSet<&str> = services
        .iter()
        .filter(|(_, svc)| strings(&svc["profiles"]) == ["scale"])
        .filter_map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        scale,
        BTreeSet::from(["balancer", "postgres", "replica-1", "replica-2"])
    );
    assert_eq!(
        strings(&compose["services"]["scale-admin"]["profiles"]),
        ["scale-tools"]
    );
    let balancer = &compose["services"]["balancer"];
    let balancer_ip = balancer["networks"]["wharf-scale"]["ipv4_address"]
        .as_str()
        .expect("the balancer's fixed address");
    let haproxy =
        std::fs::read_to_string(root().join("deploy/scale/haproxy.cfg")).expect("haproxy.cfg");
    assert!(
        haproxy.contains("send-proxy-v2"),
        "the balancer sends PROXY v2"
    );
    // The database is reachable only on the scale network, never published.
    assert!(compose["services"]["postgres"].get("ports").is_none());
    let file = std::fs::read_to_string(root().join("docker-compose.yml")).expect("compose");
    assert!(
        !file.contains("postgres://wharf:") || file.contains("$$(cat /run/wharf-db/password)"),
        "the database password is read from its volume, never written here"
    );
    let mut udp_ports = BTreeSet::new();
    for name in ["replica-1", "replica-2"] {
        let svc = &compose["services"][name];
        let command = strings(&svc["command"]);
        assert_eq!(
            command.first().map(String::as_str),
            Some("wharfd"),
            "{name}"
        );
        assert_eq!(
            flag(&command, "--proxy-protocol-from").as_deref(),
            Some(balancer_ip),
            "{name} takes PROXY headers from the balancer alone"
        );
        // The UDP port it names is the one it publishes, for its chat port.
        let udp = flag(&command, "--udp-public-port").expect("--udp-public-port");
        assert_eq!(
            strings(&svc["ports"]),
            [format!("{udp}:2122/udp")],
            "{name}"
        );
        assert!(udp_ports.insert(udp), "{name}: a UDP port used twice");
        // As the exec service: every capability dropped but the sandbox's.
        assert_eq!(strings(&svc["cap_drop"]), ["ALL"], "{name}");
        assert_eq!(svc["read_only"].as_bool(), Some(true), "{name}");
        let mut caps = strings(&svc["cap_add"]);
        caps.sort();
        assert_eq!(caps, EXEC_CAPS, "{name}");
        assert!(
            strings(&svc["volumes"]).contains(&"wharf-db-secret:/run/wharf-db:ro".to_owned()),
            "{name}: reads the password, read-only"
        );
        // The balancer sends each service to the replica's port for it.
        for port in ["2121", "2122", "2123", "2222"] {
            assert!(
                haproxy.contains(&format!("server {name} {name}:{port}")),
                "{name}:{port} is not behind the balancer"
            );
        }
    }
    for (public, port) in [
        ("2220", "2222"),
        ("2221", "2121"),
        ("2223", "2123"),
        ("2224", "2122"),
    ] {
        assert!(haproxy.contains(&format!("bind :{public}")), "{public}");
        assert!(
            strings(&balancer["ports"]).contains(&format!("{public}:{public}/tcp")),
            "the balancer publishes {public} (for {port})"
        );
    }
}
