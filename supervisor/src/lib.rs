//! agent-supervisor: runs a multi-host system of agent groups without Docker.
//!
//! The library holds the commands; `src/main.rs` (the `agent-supervisor` binary) and
//! `src/bin/supervisorctl.rs` only parse arguments and print.

pub mod bridge;
pub mod build_run;
pub mod bundle;
pub mod cgroup;
pub mod check;
pub mod cli_out;
pub mod daemon;
pub mod deploy;
pub mod export_cli;
pub mod gpu_stats;
pub mod images_cli;
pub mod import_cli;
pub mod install;
pub mod netfilter;
pub mod pod;
pub mod run_group;
pub mod spawner;
pub mod systemd_stop;
pub mod up;
pub mod validate;

/// The launch path (`agent-launch`, its own tokio-free crate), under its old name so
/// `crate::launch::…` and `agent_supervisor::launch::…` paths keep working.
pub use agent_launch as launch;

/// The version printed by `--version` and `supervisorctl version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
