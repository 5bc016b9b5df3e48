//! The flags of the exec server, shared by `wharf-execd` and `wharfd`.

use std::time::Duration;

use wharf_core::server::Limits;
use wharf_core::size::parse_size;

use super::{ExecConfig, PrivilegeError, ResourceLimits, decide_identity};

fn size(input: &str) -> Result<u64, String> {
    parse_size(input).map_err(|e| e.to_string())
}

/// What commands may do, and who they run as.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Wall-clock time a command may run before its processes are killed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub command_timeout: Duration,
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
    /// Processes and threads the commands' user may have at once, counted
    /// by the kernel over all of that user's processes (not enforced for
    /// root).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_procs: u64,
    /// When started as root: run commands as this user (a name, UID or
    /// UID:GID); homes are handed to that user.
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Allow commands to run as root (when started as root without
    /// --run-as).
    #[arg(long)]
    pub allow_root: bool,
}

impl ExecArgs {
    /// The server settings these flags ask for; fails when started as root
    /// without `--run-as` or `--allow-root`.
    pub fn config(&self, limits: Limits) -> Result<ExecConfig, PrivilegeError> {
        let run_as = decide_identity(self.run_as.as_deref(), self.allow_root)?;
        Ok(ExecConfig {
            limits,
            command_timeout: self.command_timeout,
            max_output: self.max_output,
            max_per_user: self.max_commands_per_user.max(1),
            resources: ResourceLimits {
                cpu: self.max_cpu.max(Duration::from_secs(1)),
                file_size: self.max_file_size,
                processes: self.max_procs.max(1),
            },
            run_as,
            ..ExecConfig::default()
        })
    }
}
