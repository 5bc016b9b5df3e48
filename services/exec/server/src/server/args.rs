//! The flags of the exec server, shared by `wharf-execd` and `wharfd`.

use std::time::Duration;

use wharf_core::size::parse_size;
use wharf_server::listener::Limits;

use super::{ExecConfig, ExecNetwork, ResourceLimits};

fn size(input: &str) -> Result<u64, String> {
    parse_size(input).map_err(|e| e.to_string())
}

/// What commands may do.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Wall-clock time a command may run before its processes are killed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub command_timeout: Duration,
    /// How long a command on a terminal (`wharf-exec` with no command, or
    /// -t) may go without input before its processes are killed; it has no
    /// wall-clock limit.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub tty_idle_timeout: Duration,
    /// Output (stdout and stderr together) a command may write before its
    /// processes are killed.
    #[arg(long, default_value = "64MiB", value_parser = size, value_name = "SIZE")]
    pub max_output: u64,
    /// Commands one user may run at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_commands_per_user: usize,
    /// CPU time each process of a command may use.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub max_cpu: Duration,
    /// Largest file a command may write (never more than the user's free
    /// quota).
    #[arg(long, default_value = "1GiB", value_parser = size, value_name = "SIZE")]
    pub max_file_size: u64,
    /// Processes and threads a user's commands may have at once (counted
    /// by the kernel per user when the server runs as root, per command
    /// otherwise).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_procs: u64,
    /// Memory (address space) each process of a command may use;
    /// allocations past it fail.
    #[arg(long, default_value = "1GiB", value_parser = size, value_name = "SIZE")]
    pub max_memory: u64,
    /// Size of each command's private /tmp (held in memory, not counted in
    /// the quota).
    #[arg(long, default_value = "64MiB", value_parser = size, value_name = "SIZE")]
    pub tmp_size: u64,
    /// What commands may reach: `private` (the internet through pasta, not
    /// this host: not its loopback, its addresses or its abstract unix
    /// sockets; path-named ones are out of every command's root anyway),
    /// `none` (nothing), or `host` (DANGEROUS: this host's network, its
    /// loopback services included). Where `private` cannot be set up (no
    /// pasta, no /dev/net/tun), commands get `none`, and the server says so.
    #[arg(long, value_enum, default_value = "private", value_name = "MODE")]
    pub exec_network: ExecNetwork,
    /// DANGEROUS: run commands even where the kernel cannot confine them
    /// (no Landlock, no namespaces): users' commands can then read each
    /// other's homes and the database, and outlive their run. Without it,
    /// exec does not serve on such a system and says what is missing.
    #[arg(long)]
    pub allow_unconfined_exec: bool,
}

impl ExecArgs {
    /// The server settings these flags ask for.
    pub fn config(&self, limits: Limits) -> ExecConfig {
        ExecConfig {
            limits,
            command_timeout: self.command_timeout,
            tty_idle_timeout: self.tty_idle_timeout.max(Duration::from_secs(1)),
            max_output: self.max_output,
            max_per_user: self.max_commands_per_user.max(1),
            resources: ResourceLimits {
                cpu: self.max_cpu.max(Duration::from_secs(1)),
                file_size: self.max_file_size,
                processes: self.max_procs.max(1),
                memory: self.max_memory.max(16 << 20),
                tmp_size: self.tmp_size.max(1 << 20),
            },
            unconfined_ok: self.allow_unconfined_exec,
            network: self.exec_network,
            ..ExecConfig::default()
        }
    }
}
