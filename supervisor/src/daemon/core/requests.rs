//! The core's answers to control requests: status snapshots, target resolution, start / stop /
//! restart / signal, and requests that wait for their agents to settle.

use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::{unix, Core, Event, REQUEST_WAIT};
use crate::daemon::agent::{AgentRt, Run};
use crate::daemon::api::{
    AgentState, ApiError, ControlMsg, GroupStatus, LastExit, Request, Response, Snapshot,
};

/// Where a request's answer goes.
pub(super) type Reply = tokio::sync::oneshot::Sender<Result<Response, ApiError>>;

/// A `start`/`stop`/`restart` request waiting for its agents to settle.
pub(super) struct Pending {
    pub(super) agents: Vec<String>,
    pub(super) want_running: bool,
    pub(super) reply: Reply,
    pub(super) deadline: Instant,
}

/// Which of start / stop / restart a request is.
#[derive(Clone, Copy)]
enum Kind {
    Start,
    Stop,
    Restart,
}

impl Core {
    /// `start` of one agent: wanted again, its failure count and backoff forgotten.
    fn request_start(&mut self, name: &str) {
        let Some(a) = self.agents.get_mut(name) else {
            eprintln!("agent-supervisor: agent {name}: asked to start, but it is not known");
            return;
        };
        if !a.is_live() {
            a.desired = true;
            a.retries = 0;
            a.generation += 1;
            a.run = Run::Stopped { wait: None };
        }
    }

    /// Queues a status request; the snapshot starts at once unless one is under way, which
    /// then answers every request that came meanwhile with one more snapshot (taken after
    /// they arrived: an answer never predates its request). 200 clients asking at once cost
    /// two snapshots, not 200.
    fn snapshot(&mut self, targets: &[String], reply: Reply) {
        match self.resolve(targets, true) {
            Ok(names) => self.status_queue.push((names, reply)),
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        }
        if !self.snapshot_busy {
            self.start_snapshot();
        }
    }

    /// Takes a snapshot of every agent and group for the queued status requests: the rows
    /// are taken here, the cgroups (memory, CPU, pids) and the shims' log drop counts are
    /// read on a blocking thread, which sends each request its agents and then
    /// [`Event::SnapshotDone`].
    pub(super) fn start_snapshot(&mut self) {
        let waiting = std::mem::take(&mut self.status_queue);
        self.snapshot_busy = true;
        let agents: Vec<_> = self
            .agents
            .values()
            .map(|a| {
                let (row, cg) = a.status(&self.host);
                let drops = self
                    .groups
                    .get(&a.group)
                    .and_then(|g| g.pod.as_ref())
                    .map(|p| p.log_drops_file(&a.name));
                (row, cg, drops)
            })
            .collect();
        let groups: Vec<_> = self
            .groups
            .iter()
            .map(|(name, g)| {
                let net = self.plan.groups.get(name).and_then(|p| match &p.network {
                    agent_plan::NetworkPlan::Private(n) => Some(n.clone()),
                    agent_plan::NetworkPlan::Host => None,
                });
                let (gpus, gpu_absent) = match self.plan.groups.get(name).map(|p| &p.devices.gpus) {
                    Some(agent_plan::GpuState::Granted { gpus, .. }) => (gpus.clone(), None),
                    Some(agent_plan::GpuState::Absent { reason }) => {
                        (Vec::new(), Some(reason.clone()))
                    }
                    _ => (Vec::new(), None),
                };
                let (image, image_digest) = match self.plan.groups.get(name).map(|p| &p.rootfs) {
                    Some(agent_plan::RootfsPlan::Image(i)) => {
                        (Some(i.name.clone()), Some(i.digest.clone()))
                    }
                    _ => (None, None),
                };
                let row = GroupStatus {
                    host: self.host.clone(),
                    group: name.clone(),
                    init_pid: g.pod.as_ref().map(|p| p.init_pid),
                    memory_usage_bytes: None,
                    memory_limit_bytes: None,
                    cpu_seconds: None,
                    pids: None,
                    address: net.as_ref().map(|n| n.address.to_string()),
                    network_rx_bytes: None,
                    network_tx_bytes: None,
                    gpus,
                    gpu_absent,
                    image,
                    image_digest,
                };
                let init = net.and(g.pod.as_ref()).map(|p| p.init_pid);
                (row, g.pod.as_ref().map(|p| p.cgroup.clone()), init)
            })
            .collect();
        let head = Snapshot {
            host: self.host.clone(),
            version: crate::VERSION.to_string(),
            daemon_pid: std::process::id(),
            daemon_started_at: unix(self.started),
            agents: Vec::new(),
            groups: Vec::new(),
            bridge: self
                .bridge
                .as_ref()
                .and_then(|b| b.status.borrow().clone())
                .map(Box::new),
            gpu: None,
            process: None,
            others: self
                .fleet
                .as_ref()
                .map(|f| f.views.borrow().clone())
                .unwrap_or_default(),
        };
        let done = SnapshotDoneOnDrop(self.tx.clone());
        tokio::task::spawn_blocking(move || {
            let _done = done;
            let agents: Vec<crate::daemon::api::AgentStatus> = agents
                .into_iter()
                .map(|(mut row, cg, drops)| {
                    row.memory_bytes = cg.and_then(|c| c.memory_usage());
                    // A file on the run directory's tmpfs (never the log disk); none: nothing
                    // lost. One that cannot be read is reported and counts as nothing lost.
                    match drops.as_deref().map(crate::launch::logdrops::read) {
                        Some(Ok(Some(d))) => {
                            row.log_dropped_bytes = d.total();
                            row.log_error = d.error;
                        }
                        Some(Err(e)) => {
                            eprintln!("agent-supervisor: agent {}:{}: {e}", row.group, row.agent)
                        }
                        Some(Ok(None)) | None => {}
                    }
                    row
                })
                .collect();
            // The groups' pids only where there are GPUs to match them against.
            let nvml = crate::gpu_stats::nvml_loaded();
            let gpu_groups: Vec<(String, Vec<u32>)> = groups
                .iter()
                .filter(|_| nvml)
                .map(|(row, cg, _)| {
                    (
                        row.group.clone(),
                        cg.as_ref().map(|c| c.pids()).unwrap_or_default(),
                    )
                })
                .collect();
            let gpu = Some(Box::new(crate::gpu_stats::read(&gpu_groups)));
            let groups = groups
                .into_iter()
                .map(|(mut row, cg, init)| {
                    let stats = cg.map(|c| c.stats()).unwrap_or_default();
                    row.memory_usage_bytes = stats.memory_usage;
                    row.memory_limit_bytes = stats.memory_limit;
                    row.cpu_seconds = stats.cpu_usage_seconds;
                    row.pids = stats.pids_current;
                    if let Some((rx, tx)) = init.and_then(group_eth0) {
                        row.network_rx_bytes = Some(rx);
                        row.network_tx_bytes = Some(tx);
                    }
                    row
                })
                .collect();
            let snapshot = Snapshot {
                agents: Vec::new(),
                groups,
                gpu,
                process: Some(crate::daemon::memory::process_stats()),
                ..head
            };
            let rows: std::collections::HashMap<String, crate::daemon::api::AgentStatus> =
                agents.into_iter().map(|r| (r.agent.clone(), r)).collect();
            for (names, reply) in waiting {
                let mut s = snapshot.clone();
                s.agents = names.iter().filter_map(|n| rows.get(n).cloned()).collect();
                let _ = reply.send(Ok(Response::Status { snapshot: s }));
            }
        });
    }

    /// Answers a reload: the system file is loaded and resolved on a blocking thread; the
    /// new plan comes back as [`Event::Resolved`] and is applied there.
    fn reload(&self, reply: Reply) {
        let (file, host, tx) = (self.plan.file.clone(), self.host.clone(), self.tx.clone());
        tokio::task::spawn_blocking(move || {
            let result = crate::daemon::reload::resolve(&file, &host).map(Box::new);
            let _ = tx.send(Event::Resolved { result, reply });
        });
    }

    /// Agent names for targets (`NAME`, `GROUP:*`, `GROUP:NAME`, `all`); empty = all when
    /// `empty_is_all`.
    fn resolve(&self, targets: &[String], empty_is_all: bool) -> Result<Vec<String>, ApiError> {
        if (targets.is_empty() && empty_is_all) || targets.iter().any(|t| t == "all") {
            return Ok(self.agents.keys().cloned().collect());
        }
        if targets.is_empty() {
            return Err(ApiError::bad_request(
                "no agent named: give NAME, GROUP:* or all",
            ));
        }
        let mut out = Vec::new();
        for t in targets {
            if let Some((g, rest)) = t.split_once(':') {
                if !self.groups.contains_key(g) {
                    return Err(ApiError::not_found(format!(
                        "no group {g:?} on host {}",
                        self.host
                    )));
                }
                let members = self
                    .agents
                    .values()
                    .filter(|a| a.group == g && (rest == "*" || a.name == rest));
                let before = out.len();
                out.extend(members.map(|a| a.name.clone()));
                if out.len() == before && rest != "*" {
                    return Err(ApiError::not_found(format!(
                        "no agent {rest:?} in group {g}"
                    )));
                }
            } else if self.agents.contains_key(t) {
                out.push(t.clone());
            } else {
                return Err(ApiError::not_found(format!(
                    "no agent {t:?} on host {}",
                    self.host
                )));
            }
        }
        out.dedup();
        Ok(out)
    }

    pub(in crate::daemon) fn control(&mut self, msg: ControlMsg) {
        let ControlMsg { request, reply } = msg;
        let request_kind = match &request {
            Request::Start { .. } => Kind::Start,
            Request::Stop { .. } => Kind::Stop,
            _ => Kind::Restart,
        };
        let answer = match request {
            Request::Status { targets } => return self.snapshot(&targets, reply),
            Request::Version => Ok(Response::Version {
                version: crate::VERSION.to_string(),
                pid: std::process::id(),
            }),
            Request::Start { targets }
            | Request::Stop { targets }
            | Request::Restart { targets }
                if self.shutting_down.is_some() =>
            {
                let _ = targets;
                Err(ApiError {
                    status: 409,
                    message: "the daemon is shutting down".into(),
                })
            }
            Request::Start { targets }
            | Request::Stop { targets }
            | Request::Restart { targets } => {
                let want_running = !matches!(request_kind, Kind::Stop);
                match self.resolve(&targets, false) {
                    Ok(names) => {
                        for n in &names {
                            match request_kind {
                                Kind::Start => self.request_start(n),
                                Kind::Stop => {
                                    self.begin_stop(n, LastExit::StoppedByUser, false, false)
                                }
                                Kind::Restart => {
                                    self.begin_stop(n, LastExit::StoppedByUser, true, false)
                                }
                            }
                        }
                        // The answer waits until the agents settle (as supervisorctl's does).
                        self.pending.push(Pending {
                            agents: names,
                            want_running,
                            reply,
                            deadline: Instant::now() + REQUEST_WAIT,
                        });
                        return;
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Signal { signal, targets } => {
                match (parse_signal(&signal), self.resolve(&targets, false)) {
                    (None, _) => Err(ApiError::bad_request(format!("unknown signal {signal:?}"))),
                    (_, Err(e)) => Err(e),
                    (Some(sig), Ok(names)) => {
                        let results = names
                            .into_iter()
                            .map(|n| {
                                let pid = self
                                    .agents
                                    .get(&n)
                                    .and_then(|a| a.run.proc())
                                    .and_then(|p| p.pid);
                                let r = match pid {
                                    Some(pid) => {
                                        match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
                                            Ok(()) => format!("sent {sig}"),
                                            Err(e) => format!("cannot signal: {e}"),
                                        }
                                    }
                                    None => "not running".to_string(),
                                };
                                (n, r)
                            })
                            .collect();
                        Ok(Response::Done { results })
                    }
                }
            }
            Request::Reload => return self.reload(reply),
            Request::Shutdown => {
                self.begin_shutdown();
                Ok(Response::ShuttingDown)
            }
        };
        let _ = reply.send(answer);
    }

    /// Starts an orderly shutdown; the event loop ends when every agent stopped.
    pub fn begin_shutdown(&mut self) -> CancellationToken {
        if self.shutting_down.is_none() {
            self.notifier.stopping();
        }
        let token = self
            .shutting_down
            .get_or_insert_with(CancellationToken::new)
            .clone();
        self.shutdown_step();
        token
    }

    pub(in crate::daemon) fn settle_pending(&mut self) {
        let now = Instant::now();
        let mut keep = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let settled = |a: &AgentRt| {
                if p.want_running {
                    matches!(
                        a.state(),
                        AgentState::Running
                            | AgentState::Fatal
                            | AgentState::Exited
                            | AgentState::Backoff
                    )
                } else {
                    !a.is_live()
                }
            };
            let all = p
                .agents
                .iter()
                .all(|n| self.agents.get(n).is_none_or(settled));
            if all || now >= p.deadline {
                let results = p
                    .agents
                    .iter()
                    .map(|n| {
                        let what = match self.agents.get(n) {
                            None => "removed".to_string(),
                            Some(a) => match (p.want_running, a.state()) {
                                (true, AgentState::Running) => "started".to_string(),
                                (false, s) if !a.is_live() => format!("stopped ({})", s.as_str()),
                                (_, s) => format!(
                                    "{} ({})",
                                    s.as_str(),
                                    a.last_exit
                                        .as_ref()
                                        .map(|l| l.to_string())
                                        .unwrap_or_else(|| "in progress".into())
                                ),
                            },
                        };
                        (n.clone(), what)
                    })
                    .collect();
                let _ = p.reply.send(Ok(Response::Done { results }));
            } else {
                keep.push(p);
            }
        }
        self.pending = keep;
    }
}

/// `TERM`, `SIGTERM`, `15` -> SIGTERM.
pub fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse().ok()
}

/// Bytes received and sent by `eth0` of the network namespace of `pid` (a group's init):
/// `/proc/<pid>/net/dev` shows the interfaces of the process's own namespace.
fn group_eth0(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("eth0:"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
    Some((*f.first()?, *f.get(8)?))
}

/// Sends [`Event::SnapshotDone`] when dropped: at the end of a snapshot's blocking task,
/// also when it panicked, so status requests never wait for one that is gone.
struct SnapshotDoneOnDrop(tokio::sync::mpsc::UnboundedSender<Event>);

impl Drop for SnapshotDoneOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Event::SnapshotDone);
    }
}
