//! The `agent-supervisor` binary: check, build, run-group, daemon, up, bundle, images,
//! import, and the launcher's hidden subcommands. (The benchmarks are `agent-bench`, in `bench/`.)

use std::path::PathBuf;
use std::process::ExitCode;

use agent_supervisor::{bundle, check, daemon, images_cli, import_cli, launch, run_group};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agent-supervisor",
    version,
    about = "Run a multi-host system of agent groups without Docker"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pre-flight checks: the system file, every agent's script, ports, dependency cycles,
    /// and this machine's RAM, disk and GPUs. Exits 1 on any error.
    Check {
        /// The system file (YAML).
        config: PathBuf,
        /// Which host of the file this machine is (default: by hostname or address).
        #[arg(long)]
        host: Option<String>,
        /// Print the findings and summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The supervision daemon: runs this host's groups, restarts agents, serves the control
    /// socket and /metrics. SIGTERM stops every agent; SIGQUIT leaves them for the next daemon.
    Daemon {
        /// The system file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Which host this machine is (default: by hostname or address).
        #[arg(long)]
        host: Option<String>,
    },
    /// The daemon in the foreground with a live status view (Ctrl-C stops everything).
    Up {
        /// The system file (YAML).
        config: PathBuf,
        /// Which host this machine is (default: by hostname or address).
        #[arg(long)]
        host: Option<String>,
    },
    /// Run one group in the foreground until Ctrl-C, printing its agents' starts and exits.
    RunGroup {
        /// The system file (YAML).
        config: PathBuf,
        /// The host the group belongs to (this machine).
        #[arg(long)]
        host: String,
        /// The group to run.
        group: String,
        /// Return once every agent has ended (exit 0 if all exited 0).
        #[arg(long)]
        until_exit: bool,
    },
    /// Build the OCI images this host's groups run from (the system file's `images:` recipes).
    Build {
        /// The system file (YAML).
        config: PathBuf,
        /// Which host this machine is (default: by hostname or address).
        #[arg(long)]
        host: Option<String>,
        /// Only the image of this group.
        #[arg(long)]
        group: Option<String>,
        /// Rebuild every step, ignoring the step cache.
        #[arg(long)]
        no_cache: bool,
        /// Layer compression: gzip, zstd or none.
        #[arg(long, default_value = "gzip")]
        compression: String,
    },
    /// The image store: ls, inspect, rm, prune, import, export.
    Images {
        /// The state directory holding the store.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: ImagesCmd,
    },
    /// Export a group as an OCI runtime bundle (config.json + rootfs) for crun or runc.
    Bundle {
        /// The system file (YAML).
        config: PathBuf,
        /// The host the group belongs to.
        #[arg(long)]
        host: String,
        /// The group to export.
        group: String,
        /// The bundle directory to write (created; must be empty if it exists).
        dir: PathBuf,
    },
    /// The WireGuard bridge between hosts.
    Bridge {
        #[command(subcommand)]
        what: BridgeCmd,
    },
    /// (internal) Build a group's namespaces and PID 1 from a launch spec; prints the init pid.
    #[command(name = "__group-init", hide = true)]
    GroupInit { spec: PathBuf },
    /// (internal) Run one agent inside a running group from a launch spec, as its shim.
    #[command(name = "__agent", hide = true)]
    Agent { spec: PathBuf },
    /// (internal) Fork server for `__group-init` and `__agent`, serving requests on stdin.
    #[command(name = "__spawner", hide = true)]
    Spawner,
    /// Install this machine as a host of the system: binaries, system file, systemd unit; start it.
    Install {
        /// The system file.
        #[arg(long)]
        config: PathBuf,
        /// This machine's host in it.
        #[arg(long)]
        host: String,
    },
    /// Stop the service and its agents and remove what `install` put in place.
    Uninstall {
        /// Also remove the state and log directories.
        #[arg(long)]
        purge: bool,
    },
    /// Deploy the system to its hosts over ssh, in dependency order, and start or reload them.
    Deploy {
        /// The system file.
        config: PathBuf,
        /// Only these hosts (comma-separated).
        #[arg(long, value_delimiter = ',')]
        hosts: Option<Vec<String>>,
        /// An ssh configuration file (`ssh -F`), instead of `~/.ssh/config`.
        #[arg(long)]
        ssh_config: Option<PathBuf>,
    },
    /// Check every host of a deployed system: daemons, agents, bridge, metrics, images.
    Validate {
        /// The system file.
        config: PathBuf,
        /// This machine's host in it (default: found by name or address).
        #[arg(long)]
        host: Option<String>,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export the system to Kubernetes manifests or a Nomad job.
    Export {
        #[command(subcommand)]
        what: agent_supervisor::export_cli::ExportCmd,
    },
    /// Import another tool's files into a system file (`docs/import-export.md`).
    Import {
        #[command(subcommand)]
        what: ImportCmd,
    },
    /// The systemd unit's `ExecStop=`: SIGQUIT for a restart, SIGTERM for a stop.
    #[command(name = "__systemd-stop", hide = true)]
    SystemdStop { unit: String, pid: i32 },
}

#[derive(Subcommand)]
enum BridgeCmd {
    /// Make a host's key pair: writes the private key (mode 0600, never over a file) to
    /// `--out` or prints it, and prints the public key, both as `wg genkey`/`wg pubkey` do.
    Keygen {
        /// The private key file to write (its `bridge.private_key_file`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// Docker Compose files (one per host) to one system file and image recipes; what
    /// cannot be carried over is listed with its file and line.
    Compose {
        /// The compose files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `NAME` (paired with the files in order) or `NAME=svc1,svc2` (these services).
        #[arg(long)]
        host: Vec<String>,
        /// `GROUP=svc1,svc2`: these services become one group.
        #[arg(long)]
        join: Vec<String>,
        /// The system file to write (recipes go to `images/` beside it).
        #[arg(short, long, default_value = "system.yaml")]
        output: PathBuf,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ImagesCmd {
    /// List the images.
    Ls,
    /// Show an image's digest, config and layers as JSON.
    Inspect { name: String },
    /// Remove an image's name (its blobs go with `prune`).
    Rm { name: String },
    /// Remove blobs and cache entries no image uses.
    Prune,
    /// Import an OCI layout (`DIR`, `DIR:REF`), OCI archive or `docker-archive:FILE[:NAME:TAG]` as NAME.
    Import { source: String, name: String },
    /// Export an image to an OCI layout directory (or `FILE.tar`).
    Export { name: String, dest: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::GroupInit { spec } => exit_code(launch::init::main(&spec)),
        Cmd::Agent { spec } => exit_code(launch::agent::main(&spec)),
        Cmd::Spawner => exit_code(launch::server::main()),
        Cmd::Install { config, host } => match agent_supervisor::install::install(&config, &host) {
            Ok(log) => {
                agent_supervisor::out!("{log}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("agent-supervisor install: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Uninstall { purge } => match agent_supervisor::install::uninstall(purge) {
            Ok(log) => {
                agent_supervisor::out!("{log}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("agent-supervisor uninstall: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Deploy {
            config,
            hosts,
            ssh_config,
        } => {
            let t = std::time::Instant::now();
            let l = match agent_config::load(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("agent-supervisor deploy: {e}");
                    return ExitCode::from(2);
                }
            };
            match agent_supervisor::deploy::run(&l, hosts.as_deref(), ssh_config.as_deref()) {
                Ok(rows) => {
                    agent_supervisor::out!("{}", agent_supervisor::deploy::table(&rows));
                    agent_supervisor::outln!("deploy: {:.1} s", t.elapsed().as_secs_f64());
                    if rows.iter().all(|(_, o)| {
                        matches!(o, agent_supervisor::deploy::Outcome::Deployed { .. })
                    }) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("agent-supervisor deploy: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Validate { config, host, json } => {
            let l = match agent_config::load(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("agent-supervisor validate: {e}");
                    return ExitCode::from(2);
                }
            };
            match agent_supervisor::validate::run(&l, host.as_deref()) {
                Ok(r) => {
                    if json {
                        match serde_json::to_string_pretty(&r) {
                            Ok(t) => agent_supervisor::outln!("{t}"),
                            Err(e) => eprintln!("agent-supervisor validate: JSON: {e}"),
                        }
                    } else {
                        agent_supervisor::out!("{}", agent_supervisor::validate::table(&r));
                    }
                    if r.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("agent-supervisor validate: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Export { what } => agent_supervisor::export_cli::main(what),
        Cmd::Import {
            what:
                ImportCmd::Compose {
                    files,
                    host,
                    join,
                    output,
                    force,
                },
        } => match import_cli::compose(&import_cli::ComposeArgs {
            files,
            hosts: host,
            joins: join,
            output,
            force,
        }) {
            Ok(m) => {
                agent_supervisor::out!("{m}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("agent-supervisor import compose: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::SystemdStop { unit, pid } => match agent_supervisor::systemd_stop::run(&unit, pid) {
            Ok(m) => {
                eprintln!("{m}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("agent-supervisor __systemd-stop: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Daemon { config, host } => daemon_main(daemon::Options { config, host }, false),
        Cmd::Up { config, host } => daemon_main(daemon::Options { config, host }, true),
        Cmd::Build {
            config,
            host,
            group,
            no_cache,
            compression,
        } => {
            let compression = match compression.parse() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("agent-supervisor build: --compression: {e}");
                    return ExitCode::from(2);
                }
            };
            report(images_cli::build(
                &config,
                host.as_deref(),
                group.as_deref(),
                no_cache,
                compression,
            ))
        }
        Cmd::Images { state_dir, what } => report(images_cli::store(state_dir).and_then(|store| {
            match what {
                ImagesCmd::Ls => images_cli::list(&store),
                ImagesCmd::Inspect { name } => images_cli::inspect(&store, &name),
                ImagesCmd::Rm { name } => store
                    .remove(&name)
                    .map(|()| format!("removed {name}\n"))
                    .map_err(|e| Box::new(e).into()),
                ImagesCmd::Prune => store
                    .prune()
                    .map(|r| format!("{r:?}\n"))
                    .map_err(|e| Box::new(e).into()),
                ImagesCmd::Import { source, name } => store
                    .import(&source, &name)
                    .map(|i| format!("imported {} as {name}\n", i.digest))
                    .map_err(|e| Box::new(e).into()),
                ImagesCmd::Export { name, dest } => store
                    .export(&name, &dest)
                    .map(|()| format!("exported {name} to {}\n", dest.display()))
                    .map_err(|e| Box::new(e).into()),
            }
        })),
        Cmd::Bridge {
            what: BridgeCmd::Keygen { out },
        } => {
            let key = agent_wg::Key::generate();
            match out {
                Some(path) => match key.write_private(&path) {
                    Ok(()) => {
                        eprintln!(
                            "wrote the private key to {} (mode 0600); its public key:",
                            path.display()
                        );
                        agent_supervisor::outln!("{}", key.public().to_base64());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("agent-supervisor bridge keygen: {e}");
                        ExitCode::FAILURE
                    }
                },
                None => {
                    agent_supervisor::outln!("private_key: {}", key.to_base64());
                    agent_supervisor::outln!("public_key: {}", key.public().to_base64());
                    ExitCode::SUCCESS
                }
            }
        }
        Cmd::Bundle {
            config,
            host,
            group,
            dir,
        } => match bundle::export(&config, &host, &group, &dir) {
            Ok(b) => {
                agent_supervisor::outln!(
                    "wrote OCI bundle of group {group} (agent {}) to {}",
                    b.agent,
                    dir.display()
                );
                if !b.left_out.is_empty() {
                    agent_supervisor::outln!(
                        "note: an OCI bundle runs one process; agents {} are not in it",
                        b.left_out.join(", ")
                    );
                }
                agent_supervisor::outln!(
                    "run it with: crun run --bundle {} {group}",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("agent-supervisor bundle: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::RunGroup {
            config,
            host,
            group,
            until_exit,
        } => match run_group::run(&config, &host, &group, until_exit) {
            Ok(outcome) if outcome.all_ok || !until_exit => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("agent-supervisor run-group: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Check { config, host, json } => {
            let report = check::run(&config, &check::Options { host });
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => agent_supervisor::outln!("{s}"),
                    Err(e) => {
                        eprintln!("agent-supervisor: cannot encode the report as JSON: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                agent_supervisor::out!("{}", check::render(&report.hosts));
                for f in &report.findings {
                    agent_supervisor::outln!("{f}");
                }
                if report.scripts.total > 0 || !report.hosts.is_empty() {
                    agent_supervisor::outln!(
                        "{}/{} agents compile",
                        report.scripts.compiled,
                        report.scripts.total
                    );
                }
                agent_supervisor::outln!(
                    "check {}: {} error(s), {} warning(s){}",
                    config.display(),
                    report.errors(),
                    report.warnings(),
                    match &report.local_host {
                        Some(h) => format!("; this machine is host {h}"),
                        None => String::new(),
                    }
                );
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(255))
}

/// Runs the daemon on a tokio runtime; with `live`, prints a status table as it changes.
fn daemon_main(opts: daemon::Options, live: bool) -> ExitCode {
    daemon::memory::exec_without_tcache();
    let rt = match daemon::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-supervisor: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let view: Option<Box<dyn FnOnce(tokio::sync::mpsc::Sender<daemon::api::ControlMsg>) + Send>> =
        if live {
            Some(Box::new(|ctl| {
                tokio::spawn(agent_supervisor::up::live_view(ctl));
            }))
        } else {
            None
        };
    match rt.block_on(daemon::run(opts, view)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent-supervisor daemon: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command's text or its error.
fn report(r: Result<String, images_cli::ImagesError>) -> ExitCode {
    match r {
        Ok(text) => {
            agent_supervisor::out!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agent-supervisor: {e}");
            ExitCode::FAILURE
        }
    }
}
