//! Starting an agent: its shim is spawned on a blocking thread (`Spawning`), comes back as
//! [`Event::Spawned`] (`Starting`, with an exit watcher and a pid-file watch), and turns
//! `Running` once the shim wrote the agent's pid; then its health checker starts.

use nix::sys::signal::Signal;

use super::*;
use crate::spawner::Io;

/// The stop signal of an agent's plan (validated when the file was loaded; SIGTERM if not).
pub(super) fn stop_signal(a: &AgentPlan) -> Signal {
    parse_signal(&a.stop_signal).unwrap_or(Signal::SIGTERM)
}

/// Watches a shim until it exits, then reads (off the core task) its exit record and its
/// cgroup's OOM count and removes the cgroup (killing what the agent left in it) before
/// the core hears of the exit: a restart then makes the same cgroup afresh, never has it
/// removed under it.
pub(super) fn watch_exit(
    tx: UnboundedSender<Event>,
    agent: String,
    generation: u64,
    watched: Watched,
    pod: Option<Arc<Pod>>,
    cgroup: Option<Cgroup>,
) {
    tokio::spawn(async move {
        process::wait_exit(watched).await;
        let name = agent.clone();
        let exit = tokio::task::spawn_blocking(move || {
            let record = pod.and_then(|p| p.exit_record(&name));
            let oom_now = cgroup.as_ref().map_or(0, Cgroup::oom_kills);
            if let Some(cg) = cgroup {
                if let Err(e) = cg.remove() {
                    eprintln!("agent-supervisor: agent {name}: cannot remove its cgroup: {e}");
                }
            }
            ExitFacts { record, oom_now }
        })
        .await
        .unwrap_or_default();
        let _ = tx.send(Event::Exited {
            agent,
            generation,
            exit: Box::new(exit),
        });
    });
}

impl Core {
    /// Spawns the shim of a start candidate whose pod runs, on a blocking thread.
    pub(super) fn start_agent(&mut self, name: &str) {
        let Some(plan) = self.plan.agent(name).cloned() else {
            return;
        };
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        let Some(pod) = self.groups.get(&a.group).and_then(|g| g.pod.clone()) else {
            return;
        };
        a.generation += 1;
        a.health_detail = None;
        a.run = Run::Spawning { then: None };
        let (tx, agent, generation) = (self.tx.clone(), name.to_string(), a.generation);
        tokio::task::spawn_blocking(move || {
            let log = crate::pod::spec_of::log_spec(&plan.log);
            let result = pod
                .spawn_agent(&plan, Some(log), [Io::Null; 3])
                .map(|(launched, cgroup)| {
                    // Read, then checked still running: a shim the launch server already
                    // reaped may have had its pid reused by another process.
                    let shim_start =
                        crate::launch::proc_start_time(launched.pid).filter(|_| !launched.exited());
                    Box::new(Spawned {
                        oom_base: cgroup.oom_kills(),
                        launched,
                        cgroup,
                        shim_start,
                        started_at: SystemTime::now(),
                        started: Instant::now(),
                    })
                })
                .map_err(|e| e.to_string());
            let _ = tx.send(Event::Spawned {
                agent,
                generation,
                result,
            });
        });
    }

    /// A shim was spawned: watch it and its pid file; apply a stop asked for meanwhile.
    pub(super) fn spawned(
        &mut self,
        name: &str,
        generation: u64,
        result: Result<Box<Spawned>, String>,
    ) {
        let current = self.agents.get_mut(name).and_then(|a| match &mut a.run {
            Run::Spawning { then } if a.generation == generation => Some(then.take()),
            _ => None,
        });
        let Some(then) = current else {
            // Only a start sets Spawning and nothing else bumps the generation meanwhile:
            // a shim nobody waits for is not expected; end it rather than leak it.
            if let Ok(s) = result {
                eprintln!("agent-supervisor: agent {name}: a stray shim started; killing it");
                tokio::task::spawn_blocking(move || {
                    let _ = s.cgroup.remove();
                });
            }
            return;
        };
        let s = match result {
            Ok(s) => s,
            Err(reason) => {
                let group = self.agents.get(name).map(|a| a.group.clone());
                eprintln!(
                    "agent-supervisor: {}:{name}: {reason}",
                    group.unwrap_or_default()
                );
                self.start_failed(name, then, reason);
                return;
            }
        };
        let (sig, timeout) = self.plan.agent(name).map_or(
            (Signal::SIGTERM, agent_config::defaults::STOP_TIMEOUT),
            |p| (stop_signal(p), p.stop_timeout),
        );
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        let pod = self.groups.get(&a.group).and_then(|g| g.pod.clone());
        let Spawned {
            launched,
            cgroup,
            shim_start,
            oom_base,
            started_at,
            started,
        } = *s;
        let shim = launched.pid;
        a.run = Run::Starting(Proc {
            shim: shim_start.map(|t| (shim, t)),
            pid: None,
            started_at,
            started,
            oom_base,
            cgroup: Some(cgroup.clone()),
            health: Default::default(),
            stop_signal: sig,
            stop_timeout: timeout,
        });
        if let Some(dir) = pod.as_ref().map(|p| p.dir.join("agents")) {
            let (tx, agent, files) = (self.tx.clone(), name.to_string(), self.pid_files.clone());
            let file = format!("{name}.pid");
            tokio::spawn(async move {
                let pid = files.wait(dir, file, EXEC_WAIT).await;
                let _ = tx.send(Event::Running {
                    agent,
                    generation,
                    pid,
                });
            });
        }
        watch_exit(
            self.tx.clone(),
            name.to_string(),
            generation,
            Watched::from(launched),
            pod,
            Some(cgroup),
        );
        if let Some(ask) = then {
            self.begin_stop(name, ask.reason, ask.then_start, ask.counts);
        }
    }

    /// The shim reported the agent's exec: `Starting` turns `Running`.
    pub(super) fn running(&mut self, name: &str, generation: u64, pid: Option<i32>) {
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        if a.generation != generation {
            return;
        }
        a.run = match std::mem::replace(&mut a.run, Run::Stopped { wait: None }) {
            Run::Starting(mut p) => {
                p.pid = pid;
                Run::Running(p)
            }
            other => {
                a.run = other;
                return;
            }
        };
        self.start_health(name);
    }

    /// Starts the health checker of a running agent that has a health check.
    pub(super) fn start_health(&mut self, name: &str) {
        let Some(agent_plan::HealthPlan { probe, timing }) =
            self.agent_cfg(name).and_then(|(_, a)| a.health.clone())
        else {
            return;
        };
        let private = self
            .agent_cfg(name)
            .is_some_and(|(g, _)| matches!(g.network, agent_plan::NetworkPlan::Private(_)));
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        let generation = a.generation;
        let Run::Running(p) = &mut a.run else {
            return;
        };
        // An exec probe of a private group runs in the group's network namespace, so its
        // `localhost` is the agent's (tcp and http probes go to the group's address).
        let probe = match (probe, p.pid) {
            (agent_plan::Probe::Exec(argv), Some(pid)) if private => {
                let mut wrapped = vec![
                    "nsenter".to_string(),
                    format!("--net=/proc/{pid}/ns/net"),
                    "--".to_string(),
                ];
                wrapped.extend(argv);
                agent_plan::Probe::Exec(wrapped)
            }
            (probe, _) => probe,
        };
        p.health.stop();
        let cancel = CancellationToken::new();
        p.health.task = Some(cancel.clone());
        let (tx, agent) = (self.tx.clone(), name.to_string());
        tokio::spawn(async move {
            let (mut first, mut healthy) = (true, false);
            loop {
                let wait = if first {
                    Duration::ZERO
                } else if healthy {
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
                    r = super::super::health::check(&probe, timing.timeout) => r,
                };
                // A success after a success changes nothing in the core (the agent is
                // already healthy, its failure count 0): the core is woken only for a
                // change or a failure, which keeps an idle host's daemon asleep.
                let was_healthy = std::mem::replace(&mut healthy, result.is_ok());
                if was_healthy && result.is_ok() {
                    continue;
                }
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
}
