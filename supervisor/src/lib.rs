//! agent-supervisor: runs a multi-host system of agent groups without Docker.
//!
//! The library holds the commands; `src/main.rs` (the `agent-supervisor` binary) and
//! `src/bin/supervisorctl.rs` only parse arguments and print.

pub mod bench;
pub mod build_run;
pub mod bundle;
pub mod cgroup;
pub mod check;
pub mod daemon;
pub mod images_cli;
pub mod launch;
pub mod netfilter;
pub mod pod;
pub mod run_group;
pub mod spawner;
pub mod up;

/// The version printed by `--version` and `supervisorctl version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
