//! A client binary's shell completions and man page, as the README installs
//! them.

/// Checks that `bin` (the binary named `name`) prints bash and zsh
/// completions and a man page.
pub fn completions_and_man_page(bin: &str, name: &str) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env_remove("WHARF_PASSWORD")
            .output()
            .expect("run the client");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bash = run(&["--completions", "bash"]);
    let function = format!("complete -F _{}", name.replace('-', "__"));
    assert!(bash.contains(&function), "{bash}");
    assert!(run(&["--completions", "zsh"]).starts_with(&format!("#compdef {name}")));
    let man = run(&["--man"]);
    assert!(man.contains(&format!(".TH {name} 1")), "{man}");
    assert!(man.contains(r"\-\-server"), "{man}");
    // One page: it names no page of a subcommand that is never made.
    assert!(!man.contains("(1)"), "{man}");
}
