//! The supervision daemon: one task per concern (the core state machine, process watchers,
//! health checkers, the control API, the metrics listener), talking over channels; a closed
//! event enum; each request carries its reply channel; shutdown through a cancellation token.

pub mod agent;
pub mod api;
pub mod bridge;
pub mod control;
pub mod core;
pub mod fleet;
pub mod health;
pub mod http;
pub mod memory;
pub mod metrics;
mod metrics_host;
pub mod notify;
pub mod observe;
pub mod page;
pub mod persist;
pub mod pidfile;
pub mod process;
pub mod reload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::core::{Core, Event};
use crate::pod::PodOptions;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another daemon (pid {pid}) runs with {path}")]
    AlreadyRunning { pid: i32, path: PathBuf },
    #[error(transparent)]
    Pod(#[from] crate::pod::PodError),
    #[error("{0}")]
    Serve(String),
}

/// How the daemon was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub host: Option<String>,
}

/// Takes the daemon's pid lock in `run_dir` (a second daemon on the same run dir would start
/// every agent twice).
fn lock(run_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, DaemonError> {
    std::fs::create_dir_all(run_dir).map_err(|source| DaemonError::Io {
        what: "create",
        path: run_dir.into(),
        source,
    })?;
    let path = run_dir.join("daemon.pid");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| DaemonError::Io {
            what: "open",
            path: path.clone(),
            source,
        })?;
    // A daemon killed with SIGKILL may leave the lock held for a moment by a child of its
    // that forked but did not exec yet (the fd is close-on-exec): retry for a few seconds
    // while the recorded daemon is dead.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut f = f;
    let f = loop {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => break locked,
            Err((file, _)) => f = file,
        }
        let pid: i32 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let alive =
            pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if alive || std::time::Instant::now() >= deadline {
            return Err(DaemonError::AlreadyRunning { pid, path });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    f.set_len(0).map_err(|source| DaemonError::Io {
        what: "truncate",
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, format!("{}\n", std::process::id())).map_err(|source| {
        DaemonError::Io {
            what: "write",
            path,
            source,
        }
    })?;
    Ok(f)
}

/// The most threads the daemon's blocking work runs on at once (agent spawns and exits,
/// group starts, snapshot cgroup reads, reload's file loading, bridge probes); more waits
/// for a free one. Tokio's default is 512, and its idle threads, woken in turn, each get work
/// within the keep-alive whenever work is frequent: every burst of concurrent work (a group
/// restart) left its threads, and with them a C-allocator arena each, for good — the soak
/// measured the long-lived daemon's RSS climbing with its thread count. The launch server
/// behind every spawn is single-threaded, so more threads would not start agents faster.
/// A long-lived blocking job (`logs -f`) runs on a thread of its own, never in this pool.
pub const BLOCKING_THREADS: usize = 8;

/// The daemon's runtime: one core thread and at most [`BLOCKING_THREADS`] blocking ones, on
/// a heap set up by [`memory::tune`] (called here, before the runtime starts any thread; the
/// daemon's process has none before).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    memory::tune();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
}

/// The host's plan, with its image store; every finding that stops it in the error.
pub fn resolve_plan(
    l: &agent_config::Loaded,
    host: &str,
) -> Result<agent_plan::HostPlan, DaemonError> {
    let joined = |f: agent_plan::Findings| {
        DaemonError::Config(
            f.iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    let store = agent_plan::Plan::store(l, host).map_err(|f| joined(vec![f]))?;
    agent_plan::Plan::resolve(l, host, store.as_ref()).map_err(joined)
}

/// Runs the daemon until SIGTERM/SIGINT or `supervisorctl shutdown` (agents are stopped in
/// reverse dependency order), or SIGQUIT (the daemon exits and leaves agents running for the
/// next daemon to adopt). `on_ready` gets the core's request channel (the `up` view uses it).
pub async fn run(
    opts: Options,
    on_ready: Option<Box<dyn FnOnce(mpsc::Sender<api::ControlMsg>) + Send>>,
) -> Result<(), DaemonError> {
    let l = agent_config::load(&opts.config).map_err(|e| DaemonError::Config(e.to_string()))?;
    if let Some(errors) = agent_config::validate::errors(&l) {
        return Err(DaemonError::Config(errors.join("\n")));
    }
    let host = crate::check::local_host(&l, opts.host.as_deref()).map_err(DaemonError::Config)?;
    let plan = resolve_plan(&l, &host)?;
    let d = plan.daemon.clone();
    let _lock = lock(&d.run_dir)?;
    for dir in [&d.log_dir, &d.state_dir] {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
    }
    let listen: std::net::SocketAddr = d.http_listen.parse().map_err(|_| {
        DaemonError::Config(format!(
            "daemon.http_listen {:?} is not ADDRESS:PORT",
            d.http_listen
        ))
    })?;
    // The host's nftables table (masquerading, published ports) before any group starts; a
    // new daemon rewrites the table an earlier one left, so nothing is made twice.
    crate::netfilter::sync(&plan).map_err(|e| DaemonError::Serve(e.to_string()))?;
    // Agent restarts move a process into a cgroup: without `favordynmods` each waits for an
    // RCU grace period (see `crate::cgroup::set_favordynmods`).
    if d.cgroup_favordynmods {
        match crate::cgroup::set_favordynmods(true) {
            Ok(found) => eprintln!("agent-supervisor: {}", found.describe()),
            Err(e) => eprintln!("agent-supervisor: cgroup favordynmods: {e}"),
        }
    }
    // One launch server for the daemon's life: every group init and agent shim is forked from
    // it instead of exec'd (see `crate::launch::server`).
    let pod_opts = PodOptions::for_host(&plan)?.with_spawner();
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let cancel = CancellationToken::new();
    // The bridge before any group: a key file others can read stops the daemon here.
    let bridge = bridge::start(
        host.clone(),
        plan.bridge.clone(),
        d.run_dir.clone(),
        d.log_dir.join("bridge.log"),
        cancel.clone(),
    )
    .await
    .map_err(DaemonError::Config)?;

    // Control requests reach the core as events, with their reply channels.
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<api::ControlMsg>(64);
    let fwd = tx.clone();
    tokio::spawn(async move {
        while let Some(m) = ctl_rx.recv().await {
            if fwd.send(Event::Control(m)).is_err() {
                return;
            }
        }
    });
    // Every other bridged host is asked for its state through the tunnel.
    let identity = observe::Identity {
        host: host.clone(),
        role: plan.role.clone(),
        order: plan.hosts.clone(),
    };
    let overlay = plan.bridge.as_ref().map(|b| (b.address, b.prefix));
    let fleet = fleet::Fleet::start(plan.fleet.clone(), observe::fetch_snapshot, cancel.clone());
    memory::start(cancel.clone());
    let mut core = Core::new(plan, pod_opts, tx.clone());
    core.set_bridge(bridge);
    core.set_fleet(fleet);
    let done = CancellationToken::new();
    let core_done = done.clone();
    let core_task = tokio::spawn(async move {
        core.run(rx).await;
        core_done.cancel();
    });
    {
        // The HTTP listener is bound first: once the control socket is there, so is it.
        let (c1, c2) = (cancel.clone(), cancel.clone());
        let obs = observe::Observability::new(ctl_tx.clone(), identity);
        match observe::bind(listen) {
            Ok(listener) => {
                let o2 = obs.clone();
                tokio::spawn(async move {
                    observe::serve(listener, o2, http::ServerLimits::default(), c1).await;
                });
            }
            Err(e) => eprintln!("agent-supervisor: http listener {listen}: {e}"),
        }
        let (socket, group, log_dir, c) = (
            d.control_socket.clone(),
            d.control_group.clone(),
            d.log_dir.clone(),
            cancel.clone(),
        );
        let ctl = ctl_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = control::serve_control(&socket, group, ctl, log_dir, c).await {
                eprintln!("agent-supervisor: control socket {}: {e}", socket.display());
            }
        });
        // The other hosts reach this one's listener on its overlay address, through the
        // tunnel.
        if let Some((ip, prefix)) = overlay {
            let addr = SocketAddr::new(ip.into(), listen.port());
            // (A listener on every address serves the overlay address already.)
            if addr != listen && !listen.ip().is_unspecified() {
                tokio::spawn(async move {
                    if let Err(e) = observe::serve_overlay(addr, (ip, prefix), obs, c2).await {
                        eprintln!("agent-supervisor: http listener {addr} (bridge): {e}");
                    }
                });
            }
        }
    }
    if let Some(f) = on_ready {
        f(ctl_tx.clone());
    }
    eprintln!("agent-supervisor: daemon for host {host} (pid {}), control socket {}, metrics on http://{listen}/metrics", std::process::id(), d.control_socket.display());

    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Serve(e.to_string()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Serve(e.to_string()))?;
    let mut quit = signal(SignalKind::quit()).map_err(|e| DaemonError::Serve(e.to_string()))?;
    let detach = tokio::select! {
        _ = term.recv() => false,
        _ = int.recv() => false,
        _ = quit.recv() => true,
        _ = done.cancelled() => false,
    };
    if detach {
        eprintln!("agent-supervisor: SIGQUIT: exiting, agents keep running for the next daemon");
        cancel.cancel();
        return Ok(());
    }
    if !done.is_cancelled() {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = ctl_tx
            .send(api::ControlMsg {
                request: api::Request::Shutdown,
                reply,
            })
            .await;
        let _ = answer.await;
        eprintln!("agent-supervisor: stopping every agent");
        let _ = core_task.await;
    }
    cancel.cancel();
    let _ = std::fs::remove_file(&d.control_socket);
    // Every group stopped: the host's table and bridge (named by the run directory, which a
    // reload does not change) go too.
    let table = agent_plan::net::table_name(&d.run_dir);
    if crate::netfilter::exists(&table) {
        if let Err(e) = crate::netfilter::remove(&table) {
            eprintln!("agent-supervisor: {e}");
        }
    }
    let bridge = agent_plan::net::bridge_name(&d.run_dir);
    if let Err(e) = crate::launch::rtnl::delete_link(&bridge) {
        eprintln!("agent-supervisor: bridge {bridge}: {e}");
    }
    // And the WireGuard end: its process, interface and socket.
    let (tunnel, run_dir) = (
        agent_plan::bridge::interface_name(&d.run_dir),
        d.run_dir.clone(),
    );
    let _ = tokio::task::spawn_blocking(move || crate::bridge::tear_down(&tunnel, &run_dir)).await;
    Ok(())
}
