//! The core task: owns every agent's state and the pods, handles one event at a time (a
//! closed enum), and starts, watches, restarts and stops agents in dependency order.
//!
//! Architecture Invariant: only this task changes agent state; other tasks (process
//! watchers, health checkers, the control API) send it events and get answers on channels.

mod exits;
mod reload_ops;
mod requests;

pub use requests::parse_signal;
use requests::Pending;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_config::model::Condition;
use agent_plan::{AgentPlan, GroupPlan, HostPlan};
use indexmap::IndexMap;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::agent::{after_exit, signal_name, AfterExit, AgentRt};
use super::api::{AgentState, ControlMsg, Health, LastExit};
use super::health;
use super::persist::{self, AgentRecord};
use super::process::{self, Watched};
use crate::pod::{Pod, PodOptions};
use crate::spawner::Io;

/// How long an agent may wait for its dependencies before the wait is reported.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Until the first healthy answer, health checks run this often (at most `interval`).
const EARLY_CHECK: Duration = Duration::from_millis(200);
/// How often the core looks at dependency waits and pending requests without an event.
const TICK: Duration = Duration::from_secs(2);
/// How long `start`/`stop` requests wait for their agents to settle.
const REQUEST_WAIT: Duration = Duration::from_secs(60);

/// Everything that can happen to the core.
#[derive(Debug)]
pub enum Event {
    Control(ControlMsg),
    GroupStarted {
        group: String,
        result: Result<Box<Pod>, String>,
    },
    Running {
        agent: String,
        generation: u64,
        pid: Option<i32>,
    },
    Exited {
        agent: String,
        generation: u64,
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
    /// Periodic: report dependency waits, settle pending requests.
    Tick,
}

#[derive(Default)]
struct GroupRt {
    pod: Option<Pod>,
    starting: bool,
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
    state_path: PathBuf,
    started: SystemTime,
    pending: Vec<Pending>,
    shutting_down: Option<CancellationToken>,
    /// What was last written to `state.json`.
    saved: Option<persist::State>,
    /// A reload left agents or groups to forget once they stopped.
    retiring: bool,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Core {
    /// A core for the host of `plan`; agents start once [`Core::run`] runs.
    pub fn new(plan: HostPlan, opts: PodOptions, tx: UnboundedSender<Event>) -> Core {
        let mut core = Core {
            state_path: persist::state_path(&plan.daemon.run_dir),
            host: plan.host.clone(),
            plan,
            opts,
            tx,
            groups: BTreeMap::new(),
            agents: IndexMap::new(),
            started: SystemTime::now(),
            pending: Vec::new(),
            shutting_down: None,
            saved: None,
            retiring: false,
        };
        core.sync_config();
        core
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
            self.handle(ev);
            if self.retiring {
                self.collect_retired();
            }
            self.reconcile();
            self.settle_pending();
            self.save();
            if let Some(done) = self.shutting_down.clone() {
                if self.agents.values().all(|a| !a.is_live())
                    && self.groups.values().all(|g| !g.starting)
                {
                    for (name, g) in self.groups.iter_mut() {
                        if let Some(pod) = g.pod.take() {
                            if let Err(e) = pod.stop() {
                                eprintln!("agent-supervisor: group {name}: {e}");
                            }
                        }
                    }
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
            st.agents.insert(
                n.clone(),
                AgentRecord {
                    restarts: a.restarts,
                    oom_kills: a.oom_kills,
                    started_at: a.started_at.map(unix),
                    shim: if a.is_live() { a.shim } else { None },
                    pid: a.pid,
                    oom_base: a.oom_base,
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
    fn adopt(&mut self) {
        let saved = match persist::load(&self.state_path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("agent-supervisor: ignoring unreadable state: {e}");
                persist::State::default()
            }
        };
        let groups: Vec<String> = self.groups.keys().cloned().collect();
        for gname in groups {
            let Some(gplan) = self.plan.groups.get(&gname) else {
                continue;
            };
            let pod = match Pod::adopt(gplan, &self.opts) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("agent-supervisor: group {gname}: cannot adopt: {e}");
                    continue;
                }
            };
            let names: Vec<String> = self
                .agents
                .values()
                .filter(|a| a.group == gname)
                .map(|a| a.name.clone())
                .collect();
            for name in names {
                let Some(rec) = saved.agents.get(&name) else {
                    continue;
                };
                let a = self.agents.get_mut(&name).expect("agent listed above");
                a.restarts = rec.restarts;
                a.oom_kills = rec.oom_kills;
                let Some((shim, start)) = rec.shim else {
                    continue;
                };
                if !process::alive(shim, start) {
                    continue;
                }
                a.generation += 1;
                a.state = AgentState::Running;
                a.shim = Some((shim, start));
                a.pid = rec.pid.or_else(|| pod.agent_pid(&name));
                a.started_at = rec
                    .started_at
                    .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s));
                a.started = a
                    .started_at
                    .and_then(|s| s.elapsed().ok())
                    .map(|e| Instant::now() - e);
                a.oom_base = rec.oom_base;
                a.cgroup = pod.cgroup.open_child(&name);
                let (tx, generation) = (self.tx.clone(), a.generation);
                tokio::spawn(async move {
                    process::wait_exit(Watched::Adopted(shim)).await;
                    let _ = tx.send(Event::Exited {
                        agent: name.clone(),
                        generation,
                    });
                });
            }
            if let Some(g) = self.groups.get_mut(&gname) {
                g.pod = Some(pod);
            }
        }
        let names: Vec<String> = self.agents.keys().cloned().collect();
        for n in names {
            if self.agents[&n].state == AgentState::Running {
                self.start_health(&n);
            }
        }
        for (n, rec) in &saved.agents {
            if let Some(a) = self.agents.get_mut(n) {
                a.restarts = rec.restarts;
                a.oom_kills = rec.oom_kills;
            }
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
                        d.state.as_str()
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
            let a = &self.agents[&name];
            if !a.desired || !matches!(a.state, AgentState::Stopped | AgentState::Exited) {
                continue;
            }
            if let Err(waiting) = self.deps_ready(&name) {
                let a = self.agents.get_mut(&name).expect("listed");
                let since = *a.waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() > START_TIMEOUT && !a.wait_reported {
                    a.wait_reported = true;
                    a.health_detail = Some(format!(
                        "start timeout: waited {:?} for {waiting}",
                        START_TIMEOUT
                    ));
                    eprintln!("agent-supervisor: {}:{name}: start timeout: waited {START_TIMEOUT:?} for {waiting}", a.group);
                }
                continue;
            }
            let gname = self.agents[&name].group.clone();
            let g = self.groups.entry(gname.clone()).or_default();
            if g.retire {
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
                            .map(Box::new)
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

    fn start_agent(&mut self, name: &str) {
        let Some(cfg) = self.plan.agent(name).cloned() else {
            return;
        };
        let a = self.agents.get_mut(name).expect("known agent");
        a.generation += 1;
        a.waiting_since = None;
        a.wait_reported = false;
        a.health = Health::Unknown;
        a.health_fails = 0;
        a.health_counted_at = None;
        a.health_detail = None;
        a.backoff_until = None;
        let generation = a.generation;
        let pod = self
            .groups
            .get(&a.group)
            .and_then(|g| g.pod.as_ref())
            .expect("reconcile starts agents of running pods");
        let log = crate::pod::spec_of::log_spec(&cfg.log);
        let spawned = pod
            .spawn_agent(&cfg, Some(log), [Io::Null; 3])
            .map_err(|e| e.to_string());
        let a = self.agents.get_mut(name).expect("known agent");
        match spawned {
            Err(reason) => {
                eprintln!("agent-supervisor: {}:{name}: {reason}", a.group);
                a.state = AgentState::Starting;
                a.stop_reason = Some(LastExit::StartFailure { reason });
                let _ = self.tx.send(Event::Exited {
                    agent: name.to_string(),
                    generation,
                });
            }
            Ok((shim_proc, cg)) => {
                let shim = shim_proc.pid;
                // Read, then checked still running: a shim the launch server already reaped
                // may have had its pid reused by another process.
                a.shim = crate::launch::proc_start_time(shim)
                    .map(|t| (shim, t))
                    .filter(|_| !shim_proc.exited());
                a.state = AgentState::Starting;
                a.pid = None;
                a.started_at = Some(SystemTime::now());
                a.started = Some(Instant::now());
                a.oom_base = cg.oom_kills();
                a.cgroup = Some(cg);
                let pid_file = pod.dir.join("agents").join(format!("{name}.pid"));
                let tx = self.tx.clone();
                let agent = name.to_string();
                tokio::spawn(async move {
                    process::wait_exit(Watched::from(shim_proc)).await;
                    let _ = tx.send(Event::Exited { agent, generation });
                });
                let tx = self.tx.clone();
                let agent = name.to_string();
                tokio::spawn(async move {
                    // The shim writes the agent's pid once exec succeeded.
                    for _ in 0..2500 {
                        if let Ok(t) = tokio::fs::read_to_string(&pid_file).await {
                            if let Ok(pid) = t.trim().parse::<i32>() {
                                let _ = tx.send(Event::Running {
                                    agent,
                                    generation,
                                    pid: Some(pid),
                                });
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let _ = tx.send(Event::Running {
                        agent,
                        generation,
                        pid: None,
                    });
                });
            }
        }
    }

    fn start_health(&mut self, name: &str) {
        let Some((_, cfg)) = self.agent_cfg(name) else {
            return;
        };
        let Some(agent_plan::HealthPlan { probe, timing }) = cfg.health.clone() else {
            return;
        };
        let a = self.agents.get_mut(name).expect("known agent");
        a.stop_health();
        let cancel = CancellationToken::new();
        a.health_task = Some(cancel.clone());
        let (tx, agent, generation) = (self.tx.clone(), name.to_string(), a.generation);
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let wait = if first {
                    Duration::ZERO
                } else if healthy.load(std::sync::atomic::Ordering::Relaxed) {
                    timing.interval
                } else {
                    EARLY_CHECK.min(timing.interval)
                };
                first = false;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = health::check(&probe, timing.timeout) => r,
                };
                healthy.store(result.is_ok(), std::sync::atomic::Ordering::Relaxed);
                if tx
                    .send(Event::Health {
                        agent: agent.clone(),
                        generation,
                        result,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    /// Asks a live agent to stop: its stop signal now, a kill of its cgroup at stop_timeout.
    fn begin_stop(&mut self, name: &str, reason: LastExit, then_start: bool, counts: bool) {
        // An agent reload removed from the file still stops, with the default signal and timeout.
        let (timeout, sig) = match self.agent_cfg(name) {
            Some((_, cfg)) => (cfg.stop_timeout, cfg.stop_signal.clone()),
            None => (
                agent_config::defaults::STOP_TIMEOUT,
                agent_config::defaults::STOP_SIGNAL.to_string(),
            ),
        };
        if !self.agents.contains_key(name) {
            return;
        }
        let a = self.agents.get_mut(name).expect("known agent");
        a.stop_health();
        match a.state {
            AgentState::Starting | AgentState::Running => {
                a.state = AgentState::Stopping;
                a.stop_reason = Some(reason);
                a.then_start = then_start;
                a.restart_counts = counts;
                let sig = parse_signal(&sig).unwrap_or(Signal::SIGTERM);
                // The agent itself when its pid is known, else its shim (which forwards).
                let target = a.pid.or(a.shim.map(|s| s.0));
                if let Some(pid) = target {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                }
                let (tx, agent, generation) = (self.tx.clone(), name.to_string(), a.generation);
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let _ = tx.send(Event::StopTimeout { agent, generation });
                });
            }
            AgentState::Stopping => {
                a.then_start = then_start;
            }
            AgentState::Backoff => {
                a.generation += 1;
                a.backoff_until = None;
                a.state = AgentState::Stopped;
                a.desired = then_start;
            }
            AgentState::Stopped | AgentState::Exited | AgentState::Fatal => {
                a.desired = then_start;
                if then_start {
                    a.state = AgentState::Stopped;
                }
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Control(msg) => self.control(msg),
            Event::GroupStarted { group, result } => {
                let g = self.groups.entry(group.clone()).or_default();
                g.starting = false;
                match result {
                    Ok(pod) => {
                        g.failed = None;
                        g.pod = Some(*pod);
                    }
                    Err(e) => {
                        eprintln!("agent-supervisor: group {group}: {e}");
                        g.failed = Some(e.clone());
                        // Its agents back off like failed starts.
                        let names: Vec<String> = self
                            .agents
                            .values()
                            .filter(|a| a.group == group && a.desired)
                            .map(|a| a.name.clone())
                            .collect();
                        for n in names {
                            let a = self.agents.get_mut(&n).expect("listed");
                            a.state = AgentState::Starting;
                            a.generation += 1;
                            a.stop_reason = Some(LastExit::StartFailure { reason: e.clone() });
                            let _ = self.tx.send(Event::Exited {
                                agent: n,
                                generation: a.generation,
                            });
                        }
                    }
                }
            }
            Event::Running {
                agent,
                generation,
                pid,
            } => {
                let Some(a) = self.agents.get_mut(&agent) else {
                    return;
                };
                if a.generation != generation || a.state != AgentState::Starting {
                    return;
                }
                a.pid = pid;
                a.state = AgentState::Running;
                self.start_health(&agent);
            }
            Event::Exited { agent, generation } => self.exited(&agent, generation),
            Event::Health {
                agent,
                generation,
                result,
            } => self.health(&agent, generation, result),
            Event::BackoffOver { agent, generation } => {
                let Some(a) = self.agents.get_mut(&agent) else {
                    return;
                };
                if a.generation == generation && a.state == AgentState::Backoff {
                    a.restarts += 1;
                    a.state = AgentState::Stopped;
                    a.backoff_until = None;
                }
            }
            Event::StopTimeout { agent, generation } => {
                let Some(a) = self.agents.get(&agent) else {
                    return;
                };
                if a.generation == generation && a.state == AgentState::Stopping {
                    if let Some(cg) = a.cgroup.clone() {
                        tokio::task::spawn_blocking(move || {
                            let _ = cg.kill();
                        });
                    }
                }
            }
            Event::Tick => {}
        }
    }

    /// One round of an orderly shutdown: stop every live agent nothing live depends on.
    fn shutdown_step(&mut self) {
        let names: Vec<String> = self.agents.keys().cloned().collect();
        for name in &names {
            let a = &self.agents[name];
            if a.state == AgentState::Backoff {
                self.begin_stop(name, LastExit::StoppedByUser, false, false);
                continue;
            }
            if !matches!(a.state, AgentState::Starting | AgentState::Running) {
                continue;
            }
            let needed = names.iter().any(|other| {
                other != name && self.agents[other].is_live() && self.depends_on(other, name)
            });
            if !needed {
                self.begin_stop(name, LastExit::StoppedByUser, false, false);
            }
        }
        for a in self.agents.values_mut() {
            a.desired = false;
        }
    }

    /// Whether agent `a` depends on agent `b` (directly or through its group).
    fn depends_on(&self, a: &str, b: &str) -> bool {
        let (Some((ga, ca)), Some(rb)) = (self.agent_cfg(a), self.agents.get(b)) else {
            return false;
        };
        ca.depends_on.iter().any(|(d, _)| d == b)
            || ga.depends_on.iter().any(|(d, _)| *d == rb.group)
    }
}

fn satisfies(d: &AgentRt, cond: Condition, has_health: bool) -> bool {
    match cond {
        Condition::Started => d.state == AgentState::Running,
        Condition::Healthy => {
            d.state == AgentState::Running && (d.health == Health::Healthy || !has_health)
        }
    }
}

fn cond_name(c: Condition) -> &'static str {
    match c {
        Condition::Started => "started",
        Condition::Healthy => "healthy",
    }
}
