//! The `agent-bench` binary: benchmarks that print a table comparing agent-supervisor with its
//! peers in one run (`launch`, `supervise`, `build`). Kept out of `agent-supervisor`, the
//! product binary; it runs `agent-supervisor` and `agent-launch` from its own directory.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_bench::{build, launch, supervise};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agent-bench",
    version,
    about = "Benchmarks that print a table comparing agent-supervisor with its peers, in one run"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Launch-to-exit time of /bin/true in a group, beside fork+exec, unshare, crun and runc.
    Launch {
        /// Runs per contender.
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
    /// Image build times of the example's agent-python image beside tar | zstd and tar | gzip.
    Build {
        /// Rebuilds measured per kind.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The same stand-in agents under agent-supervisor and supervisord: time to all RUNNING,
    /// restart latency after kill -9, daemon RSS, idle CPU, time to stop all.
    Supervise {
        /// Number of stand-in agents.
        #[arg(long, default_value_t = 77)]
        agents: usize,
        /// kill -9 restarts measured per supervisor.
        #[arg(long, default_value_t = 20)]
        kills: usize,
    },
    /// (internal) The launcher's `__group-init`, when `agent-launch` is not next to this binary.
    #[command(name = "__group-init", hide = true)]
    GroupInit { spec: PathBuf },
    /// (internal) The launcher's `__agent`.
    #[command(name = "__agent", hide = true)]
    Agent { spec: PathBuf },
    /// (internal) The launcher's `__spawner`.
    #[command(name = "__spawner", hide = true)]
    Spawner,
}

fn main() -> ExitCode {
    let (name, result) = match Cli::parse().command {
        // `Pod` falls back to this executable when no `agent-launch` is next to it.
        Cmd::GroupInit { spec } => return exit_code(agent_launch::init::main(&spec)),
        Cmd::Agent { spec } => return exit_code(agent_launch::agent::main(&spec)),
        Cmd::Spawner => return exit_code(agent_launch::server::main()),
        Cmd::Launch { runs } => ("launch", launch::run(runs).map_err(|e| e.to_string())),
        Cmd::Supervise { agents, kills } => (
            "supervise",
            supervise::run(agents, kills).map_err(|e| e.to_string()),
        ),
        Cmd::Build { runs } => ("build", build::run(runs)),
    };
    match result {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agent-bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(255))
}
