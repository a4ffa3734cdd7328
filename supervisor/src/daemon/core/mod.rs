//! The core task: owns every agent's state and the pods, handles one event at a time (a
//! closed enum), and starts, watches, restarts and stops agents in dependency order.
//!
//! Architecture Invariant: only this task changes agent state; other tasks (process
//! watchers, health checkers, the control API) send it events and get answers on channels.
//! Nothing that blocks runs on it: spawning shims, making and tearing down pods, reading
//! exit records and cgroups, loading and resolving the system file on reload happen on
//! tokio's blocking threads, and their results come back as events.

mod exits;
mod reload_ops;
mod requests;
mod start;
mod stop;

pub use requests::parse_signal;
use requests::Pending;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_config::model::Condition;
use agent_plan::{AgentPlan, GroupPlan, HostPlan};
use indexmap::IndexMap;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::agent::{AgentRt, Proc, Run, Wait};
use super::api::{ApiError, ControlMsg, Health, Response};
use super::persist::{self, AgentRecord};
use super::pidfile::PidFiles;
use super::process::{self, Watched};
use crate::cgroup::Cgroup;
use crate::launch::spec::ExitRecord;
use crate::pod::{Pod, PodOptions};

/// How long an agent may wait for its dependencies before the wait is reported.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Until the first healthy answer, health checks run this often (at most `interval`).
const EARLY_CHECK: Duration = Duration::from_millis(200);
/// How often the core looks at dependency waits and pending requests without an event.
const TICK: Duration = Duration::from_secs(2);
/// How long `start`/`stop` requests wait for their agents to settle.
const REQUEST_WAIT: Duration = Duration::from_secs(60);
/// How long a started shim has to report its agent's exec (its pid file).
const EXEC_WAIT: Duration = Duration::from_secs(5);

/// Everything that can happen to the core.
#[derive(Debug)]
pub enum Event {
    Control(ControlMsg),
    GroupStarted {
        group: String,
        result: Result<Arc<Pod>, String>,
    },
    /// A retired pod is torn down: its group may start afresh.
    GroupStopped {
        group: String,
    },
    /// A shim was spawned (or could not be).
    Spawned {
        agent: String,
        generation: u64,
        result: Result<Box<Spawned>, String>,
    },
    /// The shim wrote the agent's pid (`None`: it did not within [`EXEC_WAIT`]).
    Running {
        agent: String,
        generation: u64,
        pid: Option<i32>,
    },
    Exited {
        agent: String,
        generation: u64,
        exit: Box<ExitFacts>,
    },
    Health {
        agent: String,
        generation: u64,
        result: Result<(), String>,
    },
    BackoffOver {
        agent: String,
        generation: u64,
    },
    StopTimeout {
        agent: String,
        generation: u64,
    },
    /// The system file was re-read for a reload: the new plan, or why there is none.
    Resolved {
        result: Result<Box<HostPlan>, ApiError>,
        reply: tokio::sync::oneshot::Sender<Result<Response, ApiError>>,
    },
    /// The cgroup reads of a status snapshot are done (its answers are sent): the next
    /// batch of status requests may start.
    SnapshotDone,
    /// Periodic: report dependency waits, settle pending requests.
    Tick,
}

/// A shim that started: how to watch it, its cgroup, and its facts read at the start.
#[derive(Debug)]
pub struct Spawned {
    launched: crate::spawner::Launched,
    cgroup: Cgroup,
    /// The shim's start time, `None` when it already ended (its pid may be reused).
    shim_start: Option<u64>,
    oom_base: u64,
    started_at: SystemTime,
    started: Instant,
}

/// What is known once a shim ended, read off the core task: its exit record and its
/// cgroup's OOM count (before the cgroup was removed).
#[derive(Debug, Default)]
pub struct ExitFacts {
    record: Option<ExitRecord>,
    oom_now: u64,
}

#[derive(Default)]
struct GroupRt {
    pod: Option<Arc<Pod>>,
    starting: bool,
    /// Its retired pod is being torn down; no new one until that is done.
    stopping: bool,
    failed: Option<String>,
    /// Remove the pod once its agents stopped (reload removed or changed the group).
    retire: bool,
}

/// The core's state.
pub struct Core {
    /// This host's plan: what every start, stop, restart decision and health check uses.
    pub plan: HostPlan,
    pub host: String,
    opts: PodOptions,
    tx: UnboundedSender<Event>,
    groups: BTreeMap<String, GroupRt>,
    agents: IndexMap<String, AgentRt>,
    pid_files: PidFiles,
    state_path: PathBuf,
    started: SystemTime,
    pending: Vec<Pending>,
    /// Status requests waiting for the snapshot under way to finish (the agents each asked
    /// for, and where the answer goes); `snapshot_busy` while one is under way.
    status_queue: Vec<(Vec<String>, requests::Reply)>,
    snapshot_busy: bool,
    shutting_down: Option<CancellationToken>,
    /// What was last written to `state.json`.
    saved: Option<persist::State>,
    /// A reload left agents or groups to forget once they stopped.
    retiring: bool,
    /// The bridge task's status and plan channel (set once, before [`Core::run`]).
    bridge: Option<super::bridge::BridgeHandle>,
    /// The other hosts' views (set once, before [`Core::run`]).
    fleet: Option<super::fleet::Fleet>,
    /// systemd's notify socket: readiness, status, watchdog.
    notifier: super::notify::Notifier,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Core {
    /// A core for the host of `plan`; agents start once [`Core::run`] runs. Must be called
    /// on the tokio runtime (it starts the pid-file watcher).
    pub fn new(plan: HostPlan, opts: PodOptions, tx: UnboundedSender<Event>) -> Core {
        let mut core = Core {
            state_path: persist::state_path(&plan.daemon.run_dir),
            host: plan.host.clone(),
            plan,
            opts,
            tx,
            groups: BTreeMap::new(),
            agents: IndexMap::new(),
            pid_files: PidFiles::start(),
            started: SystemTime::now(),
            pending: Vec::new(),
            status_queue: Vec::new(),
            snapshot_busy: false,
            shutting_down: None,
            saved: None,
            retiring: false,
            bridge: None,
            fleet: None,
            notifier: super::notify::Notifier::from_env(),
        };
        core.sync_config();
        core
    }

    /// Gives the core the bridge task's handle.
    pub fn set_bridge(&mut self, handle: super::bridge::BridgeHandle) {
        self.bridge = Some(handle);
    }

    /// Gives the core the other hosts' views, for every snapshot.
    pub fn set_fleet(&mut self, fleet: super::fleet::Fleet) {
        self.fleet = Some(fleet);
    }

    /// Gives the fleet a reload's other hosts.
    pub(crate) fn replan_fleet(&self, peers: Vec<agent_plan::FleetPeer>) {
        if let Some(f) = &self.fleet {
            f.set_peers(peers);
        }
    }

    /// Sends a reload's bridge plan to the bridge task.
    pub(crate) fn replan_bridge(&self, plan: Option<agent_plan::BridgePlan>) {
        if let Some(b) = &self.bridge {
            let _ = b.plans.send(plan);
        }
    }

    /// Adds runtime records for every group and agent of this host not yet known.
    fn sync_config(&mut self) {
        for (gname, g) in &self.plan.groups {
            self.groups.entry(gname.clone()).or_default();
            for a in g.agents.values() {
                if !self.agents.contains_key(&a.name) {
                    self.agents
                        .insert(a.name.clone(), AgentRt::new(&a.name, gname, &a.restart));
                }
            }
        }
    }

    /// The plan of a known agent and of its group (`None`: reload removed it).
    fn agent_cfg(&self, name: &str) -> Option<(&GroupPlan, &AgentPlan)> {
        let rt = self.agents.get(name)?;
        let g = self.plan.groups.get(&rt.group)?;
        Some((g, g.agents.get(name)?))
    }

    /// The event loop; returns when a shutdown finished.
    pub async fn run(mut self, mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) {
        self.adopt();
        self.reconcile();
        let tick = self.tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                if tick.send(Event::Tick).is_err() {
                    return;
                }
            }
        });
        while let Some(ev) = rx.recv().await {
            // The watchdog is fed by the core itself: a core that hangs stops feeding it.
            if matches!(ev, Event::Tick) {
                self.notifier.watchdog();
            }
            self.handle(ev);
            if self.retiring {
                self.collect_retired();
            }
            self.reconcile();
            self.settle_pending();
            self.save();
            if self.shutting_down.is_none() {
                let plan = &self.plan;
                self.notifier.progress(self.agents.values().map(|a| {
                    let checked = plan
                        .groups
                        .get(&a.group)
                        .and_then(|g| g.agents.get(&a.name))
                        .is_some_and(|p| p.health.is_some());
                    (a, checked)
                }));
            }
            if let Some(done) = self.shutting_down.clone() {
                if self.agents.values().all(|a| !a.is_live())
                    && self.groups.values().all(|g| !g.starting && !g.stopping)
                {
                    let pods: Vec<(String, Arc<Pod>)> = self
                        .groups
                        .iter_mut()
                        .filter_map(|(n, g)| Some((n.clone(), g.pod.take()?)))
                        .collect();
                    let _ = tokio::task::spawn_blocking(move || {
                        for (name, pod) in pods {
                            stop_pod(&name, &pod);
                        }
                    })
                    .await;
                    self.save();
                    done.cancel();
                    return;
                }
            }
        }
    }

    fn save(&mut self) {
        let mut st = persist::State::default();
        for (n, a) in &self.agents {
            let p = a.run.proc();
            st.agents.insert(
                n.clone(),
                AgentRecord {
                    restarts: a.restarts,
                    oom_kills: a.oom_kills,
                    started_at: p.map(|p| unix(p.started_at)),
                    shim: p.and_then(|p| p.shim),
                    pid: p.and_then(|p| p.pid),
                    oom_base: p.map_or(0, |p| p.oom_base),
                },
            );
        }
        // Most events (health results, ticks) change nothing that is persisted: skip the write.
        if self.saved.as_ref() == Some(&st) {
            return;
        }
        let result = persist::save(&self.state_path, &st);
        self.saved = Some(st);
        if let Err(e) = result {
            eprintln!("agent-supervisor: cannot save state: {e}");
        }
    }

    /// Re-adopts groups and agents left running by an earlier daemon; cleans up the rest.
    /// It runs once, before the event loop, so it may block.
    fn adopt(&mut self) {
        let saved = match persist::load(&self.state_path) {
            Ok(s) => s,
            Err(e @ persist::PersistError::Json { .. }) => {
                // Truncated or corrupt (a full disk, a crash of the file system): kept aside
                // for a look, never read again; the groups are adopted from their cgroups.
                let aside = self.state_path.with_extension("json.corrupt");
                let kept = match std::fs::rename(&self.state_path, &aside) {
                    Ok(()) => format!("kept as {}", aside.display()),
                    Err(r) => format!("cannot move it to {}: {r}", aside.display()),
                };
                eprintln!(
                    "agent-supervisor: the state file is corrupt ({e}); {kept}; restart \
                     counts start again from 0; groups are re-adopted from their cgroups"
                );
                persist::State::default()
            }
            Err(e) => {
                eprintln!("agent-supervisor: ignoring unreadable state: {e}");
                persist::State::default()
            }
        };
        for (n, rec) in &saved.agents {
            if let Some(a) = self.agents.get_mut(n) {
                a.restarts = rec.restarts;
                a.oom_kills = rec.oom_kills;
            }
        }
        let mut adopted = Vec::new();
        for (gname, gplan) in &self.plan.groups {
            let pod = match Pod::adopt(gplan, &self.opts) {
                Ok(Some(p)) => Arc::new(p),
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("agent-supervisor: group {gname}: cannot adopt: {e}");
                    continue;
                }
            };
            for (name, ap) in &gplan.agents {
                let Some(a) = self.agents.get_mut(name) else {
                    continue;
                };
                let saved_rec = saved
                    .agents
                    .get(name)
                    .filter(|r| r.shim.is_some_and(|(p, t)| process::alive(p, t)))
                    .cloned();
                let Some(rec) = saved_rec.or_else(|| from_group(&pod, name)) else {
                    continue;
                };
                let Some((shim, start)) = rec.shim else {
                    continue;
                };
                a.generation += 1;
                let started_at = rec
                    .started_at
                    .map_or_else(SystemTime::now, |s| UNIX_EPOCH + Duration::from_secs_f64(s));
                let started = started_at
                    .elapsed()
                    .ok()
                    .and_then(|e| Instant::now().checked_sub(e))
                    .unwrap_or_else(Instant::now);
                let cgroup = pod.cgroup.open_child(name);
                a.run = Run::Running(Proc {
                    shim: Some((shim, start)),
                    pid: rec.pid.or_else(|| pod.agent_pid(name)),
                    started_at,
                    started,
                    oom_base: rec.oom_base,
                    cgroup: cgroup.clone(),
                    health: Default::default(),
                    stop_signal: start::stop_signal(ap),
                    stop_timeout: ap.stop_timeout,
                });
                adopted.push((name.clone(), a.generation, shim, pod.clone(), cgroup));
            }
            if let Some(g) = self.groups.get_mut(gname) {
                g.pod = Some(pod);
            }
        }
        for (name, generation, shim, pod, cgroup) in adopted {
            start::watch_exit(
                self.tx.clone(),
                name.clone(),
                generation,
                Watched::Adopted(shim),
                Some(pod),
                cgroup,
            );
            self.start_health(&name);
        }
        Pod::remove_strays(&self.opts, &self.groups.keys().cloned().collect::<Vec<_>>());
    }

    /// Whether `name`'s dependencies (its own and its group's) hold now; else what it waits for.
    fn deps_ready(&self, name: &str) -> Result<(), String> {
        let Some((g, a)) = self.agent_cfg(name) else {
            return Ok(());
        };
        for (dep, cond) in &a.depends_on {
            if let Some(d) = self.agents.get(dep) {
                if !satisfies(d, *cond, self.has_health(dep)) {
                    return Err(format!("agent {dep} to be {}", cond_name(*cond)));
                }
            }
        }
        for (dg, cond) in &g.depends_on {
            for d in self.agents.values().filter(|d| &d.group == dg) {
                if !satisfies(d, *cond, self.has_health(&d.name)) {
                    return Err(format!(
                        "group {dg} to be {} ({} is {})",
                        cond_name(*cond),
                        d.name,
                        d.state().as_str()
                    ));
                }
            }
        }
        Ok(())
    }

    fn has_health(&self, name: &str) -> bool {
        self.agent_cfg(name)
            .is_some_and(|(_, a)| a.health.is_some())
    }

    /// Starts what should run and can; stops what must stop during a shutdown.
    fn reconcile(&mut self) {
        if self.shutting_down.is_some() {
            self.shutdown_step();
            return;
        }
        let names: Vec<String> = self.agents.keys().cloned().collect();
        for name in names {
            if !self.agents.get(&name).is_some_and(AgentRt::wants_start) {
                continue;
            }
            if let Err(waiting) = self.deps_ready(&name) {
                if let Some(a) = self.agents.get_mut(&name) {
                    note_wait(a, &waiting);
                }
                continue;
            }
            let Some(gname) = self.agents.get(&name).map(|a| a.group.clone()) else {
                continue;
            };
            let g = self.groups.entry(gname.clone()).or_default();
            if g.retire || g.stopping {
                continue;
            }
            if g.pod.is_none() {
                if !g.starting {
                    let Some(gplan) = self.plan.groups.get(&gname).cloned() else {
                        continue;
                    };
                    g.starting = true;
                    let (opts, tx) = (self.opts.clone(), self.tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let result = Pod::start(&gplan, &opts)
                            .map(Arc::new)
                            .map_err(|e| e.to_string());
                        let _ = tx.send(Event::GroupStarted {
                            group: gname,
                            result,
                        });
                    });
                }
                continue;
            }
            self.start_agent(&name);
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Control(msg) => self.control(msg),
            Event::GroupStarted { group, result } => self.group_started(&group, result),
            Event::GroupStopped { group } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.stopping = false;
                }
                if !self.plan.groups.contains_key(&group) {
                    self.groups.remove(&group);
                }
            }
            Event::Spawned {
                agent,
                generation,
                result,
            } => self.spawned(&agent, generation, result),
            Event::Running {
                agent,
                generation,
                pid,
            } => self.running(&agent, generation, pid),
            Event::Exited {
                agent,
                generation,
                exit,
            } => self.exited(&agent, generation, *exit),
            Event::Health {
                agent,
                generation,
                result,
            } => self.health(&agent, generation, result),
            Event::BackoffOver { agent, generation } => {
                let Some(a) = self.agents.get_mut(&agent) else {
                    return;
                };
                if a.generation == generation && matches!(a.run, Run::Backoff { .. }) {
                    a.restarts += 1;
                    a.run = Run::Stopped { wait: None };
                }
            }
            Event::StopTimeout { agent, generation } => self.stop_timeout(&agent, generation),
            Event::Resolved { result, reply } => {
                let answer = match result {
                    _ if self.shutting_down.is_some() => Err(ApiError {
                        status: 409,
                        message: "the daemon is shutting down".into(),
                    }),
                    Ok(plan) => Ok(Response::Reloaded {
                        result: crate::daemon::reload::apply(self, *plan),
                    }),
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
            }
            Event::SnapshotDone => {
                self.snapshot_busy = false;
                if !self.status_queue.is_empty() {
                    self.start_snapshot();
                }
            }
            Event::Tick => {}
        }
    }

    fn group_started(&mut self, group: &str, result: Result<Arc<Pod>, String>) {
        let g = self.groups.entry(group.to_string()).or_default();
        g.starting = false;
        match result {
            Ok(pod) => {
                g.failed = None;
                g.pod = Some(pod);
            }
            Err(e) => {
                eprintln!("agent-supervisor: group {group}: {e}");
                g.failed = Some(e.clone());
                // Its agents back off like failed starts.
                let names: Vec<String> = self
                    .agents
                    .values()
                    .filter(|a| a.group == group && a.wants_start())
                    .map(|a| a.name.clone())
                    .collect();
                for n in names {
                    self.start_failed(&n, None, e.clone());
                }
            }
        }
    }
}

/// Records that a start candidate waits for its dependencies; reports a wait longer than
/// [`START_TIMEOUT`] once.
fn note_wait(a: &mut AgentRt, waiting: &str) {
    if matches!(a.run, Run::Exited) {
        a.run = Run::Stopped { wait: None };
    }
    let Run::Stopped { wait } = &mut a.run else {
        return;
    };
    let w = wait.get_or_insert_with(|| Wait {
        since: Instant::now(),
        reported: false,
    });
    if w.since.elapsed() > START_TIMEOUT && !w.reported {
        w.reported = true;
        a.health_detail = Some(format!(
            "start timeout: waited {START_TIMEOUT:?} for {waiting}"
        ));
        eprintln!(
            "agent-supervisor: {}:{}: start timeout: waited {START_TIMEOUT:?} for {waiting}",
            a.group, a.name
        );
    }
}

/// Tears a pod down, reporting a failure with the group's name.
fn stop_pod(group: &str, pod: &Pod) {
    if let Err(e) = pod.stop() {
        eprintln!("agent-supervisor: group {group}: {e}");
    }
}

fn satisfies(d: &AgentRt, cond: Condition, has_health: bool) -> bool {
    let Run::Running(p) = &d.run else {
        return false;
    };
    match cond {
        Condition::Started => true,
        Condition::Healthy => p.health.health == Health::Healthy || !has_health,
    }
}

fn cond_name(c: Condition) -> &'static str {
    match c {
        Condition::Started => "started",
        Condition::Healthy => "healthy",
    }
}

/// An agent's record worked out from its running group when the state file has none (it
/// was lost or corrupt): the pid its shim recorded, if that process is in the agent's
/// cgroup and its parent is a shim. The restart count is lost; the OOM kills the cgroup
/// had so far are not counted again.
fn from_group(pod: &Pod, name: &str) -> Option<persist::AgentRecord> {
    let pid = pod.agent_pid(name)?;
    let cgroup = pod.cgroup.open_child(name)?;
    if !cgroup.pids().contains(&u32::try_from(pid).ok()?) {
        return None;
    }
    let shim = process::shim_of(pid)?;
    eprintln!(
        "agent-supervisor: agent {name}: no saved record; re-adopted from its cgroup (pid \
         {pid}, shim {})",
        shim.0
    );
    Some(persist::AgentRecord {
        started_at: process::started_at(pid)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
        shim: Some(shim),
        pid: Some(pid),
        oom_base: cgroup.oom_kills(),
        ..persist::AgentRecord::default()
    })
}
