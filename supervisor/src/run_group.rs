//! `agent-supervisor run-group CONFIG --host H GROUP`: one group in the foreground until
//! Ctrl-C, printing its agents' starts and exits. For debugging and tests; the daemon does
//! the same with supervision on top.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use agent_config::graph::Graph;
use agent_plan::{GroupPlan, Plan};
use nix::sys::signal::{SigSet, Signal};

use crate::cgroup::Cgroup;
use crate::pod::{Pod, PodOptions};

/// Why run-group could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunGroupError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Pod(#[from] crate::pod::PodError),
    #[error("cannot {what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("agent {agent}: cannot start the shim: {source}")]
    Spawn {
        agent: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the run ended: every agent's last status.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Agent -> how it ended (`exit 0`, `signal 9 (OOM-killed)`, ...).
    pub exits: BTreeMap<String, String>,
    /// Whether every agent that ended exited 0.
    pub all_ok: bool,
}

struct Running {
    name: String,
    /// Held so the handle lives as long as the shim; the shim is reaped with `waitpid`.
    _child: Child,
    cgroup: Cgroup,
    stop_timeout: Duration,
}

/// Agents of `group` in dependency order (their dependencies inside the group first).
fn agent_order(g: &GroupPlan) -> Vec<String> {
    let mut graph = Graph::default();
    for a in g.agents.values() {
        graph.add_node(&a.name);
        for (d, _) in &a.depends_on {
            if g.agents.contains_key(d) {
                graph.add_edge(&a.name, d);
            }
        }
    }
    graph.topo_order()
}

/// Runs `group` of `host`; returns when all agents ended (`until_exit`) or on SIGINT/SIGTERM.
pub fn run(
    config: &Path,
    host: &str,
    group: &str,
    until_exit: bool,
) -> Result<Outcome, RunGroupError> {
    let (l, plan) = Plan::load(config, host, Some(group)).map_err(|findings| {
        if findings.iter().any(|f| f.code == "plan-host") {
            return RunGroupError::Config(format!(
                "--host {host:?} is not a host of {}",
                config.display()
            ));
        }
        RunGroupError::Config(
            findings
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let Some(g) = plan.groups.get(group) else {
        return Err(RunGroupError::Config(match l.system.groups.get(group) {
            Some(other) => format!("group {group} runs on host {}, not {host}", other.host),
            None => format!("group {group:?} is not in {}", config.display()),
        }));
    };
    // Orphans of our children (the group init, once its launcher exits) come back to us.
    nix::sys::prctl::set_child_subreaper(true).map_err(|source| RunGroupError::Sys {
        what: "become a subreaper",
        source,
    })?;
    let mut waited = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGINT, Signal::SIGTERM] {
        waited.add(s);
    }
    waited.thread_block().map_err(|source| RunGroupError::Sys {
        what: "block signals",
        source,
    })?;

    let opts = PodOptions::for_host(&plan)?;
    let pod = Pod::start(g, &opts)?;
    println!(
        "group {group}: init pid {} (cgroup {})",
        pod.init_pid,
        pod.cgroup.path()
    );
    // Shim pid -> agent.
    let mut running: BTreeMap<i32, Running> = BTreeMap::new();
    let mut outcome = Outcome {
        all_ok: true,
        ..Outcome::default()
    };
    for name in agent_order(g) {
        let Some(agent) = g.agents.get(&name) else {
            continue;
        };
        let (mut cmd, cgroup) = match pod.agent_command(agent) {
            Ok(x) => x,
            Err(e) => {
                stop_all(&pod, &mut running, &mut outcome);
                return Err(e.into());
            }
        };
        let child = match cmd
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(source) => {
                stop_all(&pod, &mut running, &mut outcome);
                return Err(RunGroupError::Spawn {
                    agent: name,
                    source,
                });
            }
        };
        println!("{group}:{name}: started (shim pid {})", child.id());
        running.insert(
            child.id() as i32,
            Running {
                name,
                _child: child,
                cgroup,
                stop_timeout: agent.stop_timeout,
            },
        );
    }
    loop {
        if until_exit && running.is_empty() {
            break;
        }
        let sig = waited.wait().map_err(|source| RunGroupError::Sys {
            what: "wait for signals",
            source,
        })?;
        if sig != Signal::SIGCHLD {
            println!("group {group}: {sig}, stopping");
            break;
        }
        reap(&pod, &mut running, &mut outcome);
    }
    stop_all(&pod, &mut running, &mut outcome);
    Ok(outcome)
}

/// Reaps every child that ended: agents' shims are reported, others (the group init, once
/// its launcher exited) just collected.
fn reap(pod: &Pod, running: &mut BTreeMap<i32, Running>, outcome: &mut Outcome) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => {
                if let Some(r) = running.remove(&pid.as_raw()) {
                    report(pod, &r.name, &r.cgroup, outcome);
                }
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Prints and records how an agent ended, then removes its cgroup.
fn report(pod: &Pod, name: &str, cgroup: &Cgroup, outcome: &mut Outcome) {
    let oom = cgroup.oom_kills() > 0;
    let how = match pod.exit_record(name) {
        Some(r) => match (r.code, r.signal, r.error) {
            (_, _, Some(e)) => format!("failed to start: {e}"),
            (Some(c), _, _) => format!("exit {c}"),
            (None, Some(s), _) => {
                let sig = Signal::try_from(s)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| s.to_string());
                if oom {
                    format!("killed by {sig} (OOM-killed)")
                } else {
                    format!("killed by {sig}")
                }
            }
            _ => "ended".to_string(),
        },
        None => "ended without an exit record".to_string(),
    };
    println!("{}:{name}: {how}", pod.group);
    if how != "exit 0" {
        outcome.all_ok = false;
    }
    outcome.exits.insert(name.to_string(), how);
    let _ = cgroup.remove();
}

/// Asks every agent to stop, waits up to its stop_timeout, then tears the pod down.
fn stop_all(pod: &Pod, running: &mut BTreeMap<i32, Running>, outcome: &mut Outcome) {
    for pid in running.keys() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now()
        + running
            .values()
            .map(|r| r.stop_timeout)
            .max()
            .unwrap_or_default();
    while !running.is_empty() && Instant::now() < deadline {
        reap(pod, running, outcome);
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Err(e) = pod.stop() {
        eprintln!("group {}: {e}", pod.group);
    }
    for (pid, r) in std::mem::take(running) {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        report(pod, &r.name, &r.cgroup, outcome);
    }
    reap(pod, running, outcome);
}
