//! The `agent-bench` binary: benchmarks that print a table comparing agent-supervisor with its
//! peers in one run (`launch`, `supervise`, `build`, `bridge`, `observe`, `scale`, `clients`),
//! and the `soak`. Kept out of
//! `agent-supervisor`, the product binary; it runs `agent-supervisor`, `supervisorctl`,
//! `agent-launch` and `agent-bridge` from its own directory.

use std::process::ExitCode;

use agent_bench::{bridge, build, clients, deploy, launch, observe, scale, soak, supervise};
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
    /// Throughput (iperf3 TCP) and ping RTT between two network namespaces over the plain
    /// veth, agent-bridge, wireguard-go, and agent-bridge to wireguard-go.
    Bridge {
        /// Seconds of iperf3 per path.
        #[arg(long, default_value_t = 5)]
        time: u64,
    },
    /// `agent-supervisor deploy` of two namespace hosts over ssh from nothing, then
    /// `validate` until it passes, beside copying the same files over the same ssh.
    Deploy {
        /// Number of stand-in agents, split over the two hosts.
        #[arg(long, default_value_t = 77)]
        agents: usize,
    },
    /// Observability of a two-host system (two network namespaces, the bridge between
    /// them, 77 stand-in agents): latency of the primary's /metrics and /health_summary
    /// beside a static file server, daemon RSS, idle CPU.
    Observe {
        /// Number of stand-in agents, split over the two hosts.
        #[arg(long, default_value_t = 77)]
        agents: usize,
        /// Timed scrapes per endpoint.
        #[arg(long, default_value_t = 500)]
        scrapes: usize,
        /// Seconds of the idle CPU window.
        #[arg(long, default_value_t = 10)]
        idle: u64,
    },
    /// The two-host system (as `observe`, plus an OOM group) under random faults for N
    /// minutes: agent kills and hangs, an OOM, daemon and bridge kills, reloads, group
    /// restarts; checks that no agent is lost or doubled, every restart is counted, the
    /// summary never hangs, RSS and fds stay flat, and nothing is left behind.
    Soak {
        /// Minutes of faults (the first round of every kind always completes).
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// The faults' random seed (default: the time; printed either way).
        #[arg(long)]
        seed: Option<u64>,
        /// Number of stand-in agents, split over the two hosts.
        #[arg(long, default_value_t = 77)]
        agents: usize,
    },
    /// For each size N: `agent-supervisor check` of a system file with N idle agents on one
    /// host, the daemon started with them (time to all RUNNING, RSS), `supervisorctl status`,
    /// stop all; beside supervisord with the same N programs.
    Scale {
        /// Agent counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "77,250,500,1000,2000")]
        sizes: Vec<usize>,
        /// Agents per group (the seed's 77 agents are in 11 groups of 7).
        #[arg(long, default_value_t = 7)]
        per_group: usize,
    },
    /// Concurrent clients asking for status without pause, on the control socket and the
    /// HTTP listener of a daemon with N idle agents, beside supervisord's XML-RPC socket:
    /// latency p50/p99/max, throughput, errors.
    Clients {
        /// Concurrent clients.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Requests per client.
        #[arg(long, default_value_t = 25)]
        requests: usize,
        /// Number of idle agents.
        #[arg(long, default_value_t = 77)]
        agents: usize,
        /// Pause of each client between its requests, in milliseconds (0: none, the most
        /// load the clients can make).
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
    },
}

fn main() -> ExitCode {
    // The launcher's subcommands: `Pod` execs this executable for them when no
    // `agent-launch` is next to it.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(status) = agent_launch::run_subcommand(&args) {
        return ExitCode::from(u8::try_from(status).unwrap_or(255));
    }
    let (name, result) = match Cli::parse().command {
        Cmd::Launch { runs } => ("launch", launch::run(runs).map_err(|e| e.to_string())),
        Cmd::Supervise { agents, kills } => (
            "supervise",
            supervise::run(agents, kills).map_err(|e| e.to_string()),
        ),
        Cmd::Build { runs } => ("build", build::run(runs)),
        Cmd::Bridge { time } => ("bridge", bridge::run(time).map_err(|e| e.to_string())),
        Cmd::Deploy { agents } => ("deploy", deploy::run(agents)),
        Cmd::Observe {
            agents,
            scrapes,
            idle,
        } => (
            "observe",
            observe::run(agents, scrapes, idle).map_err(|e| e.to_string()),
        ),
        Cmd::Soak {
            minutes,
            seed,
            agents,
        } => ("soak", soak::run(minutes, seed, agents)),
        Cmd::Scale { sizes, per_group } => ("scale", scale::run(&sizes, per_group)),
        Cmd::Clients {
            clients,
            requests,
            agents,
            pause_ms,
        } => (
            "clients",
            clients::run(
                agents,
                clients,
                requests,
                std::time::Duration::from_millis(pause_ms),
            ),
        ),
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
