//! How the core answers an agent's end and a health check's result: record the exit (OOM,
//! signal, code), decide on a restart with backoff or FATAL, and restart an unhealthy agent.

use super::*;

impl Core {
    pub(super) fn exited(&mut self, name: &str, generation: u64) {
        let Some(rt) = self.agents.get(name) else {
            return;
        };
        if rt.generation != generation || !rt.is_live() {
            return;
        }
        let group = rt.group.clone();
        let record = self
            .groups
            .get(&group)
            .and_then(|g| g.pod.as_ref())
            .and_then(|p| p.exit_record(name));
        let restart_cfg = self.agent_cfg(name).map(|(_, a)| a.restart.clone());
        let a = self.agents.get_mut(name).expect("known agent");
        a.stop_health();
        let oom_now = a.cgroup.as_ref().map_or(0, |c| c.oom_kills());
        let oom = oom_now > a.oom_base;
        if oom {
            a.oom_kills += oom_now - a.oom_base;
        }
        let ran = a.started.map_or(Duration::ZERO, |s| s.elapsed());
        let natural = match &record {
            Some(r) if r.error.is_some() => LastExit::StartFailure {
                reason: r.error.clone().unwrap_or_default(),
            },
            _ if oom => LastExit::OomKilled,
            Some(r) => match (r.code, r.signal) {
                (Some(code), _) => LastExit::Code { code },
                (None, Some(s)) => LastExit::Signal {
                    signal: s,
                    name: signal_name(s),
                },
                _ => LastExit::Code { code: -1 },
            },
            None => LastExit::StartFailure {
                reason: "the shim ended without an exit record".into(),
            },
        };
        a.last_exit_code = record.as_ref().and_then(|r| r.code);
        let stopping = a.state == AgentState::Stopping;
        a.last_exit = Some(match a.stop_reason.take() {
            Some(LastExit::StartFailure { reason }) => LastExit::StartFailure { reason },
            Some(reason) if stopping => reason,
            _ => natural.clone(),
        });
        a.pid = None;
        a.shim = None;
        if let Some(cg) = a.cgroup.take() {
            // An empty cgroup (the usual case) is removed here, a few rmdirs: a restart
            // creates the same cgroup again and must not have it removed under it by a
            // removal still pending in the background. One with processes left (the agent's
            // children) is killed and removed in the background.
            if cg.populated() {
                tokio::task::spawn_blocking(move || {
                    let _ = cg.remove();
                });
            } else {
                let _ = cg.remove();
            }
        }
        let Some(r) = restart_cfg else {
            a.state = AgentState::Stopped;
            return;
        };
        if stopping && !a.restart_counts {
            a.state = AgentState::Stopped;
            a.desired = a.then_start;
            a.then_start = false;
            return;
        }
        let failed = !matches!(a.last_exit, Some(LastExit::Code { code: 0 }));
        a.then_start = false;
        a.restart_counts = false;
        match after_exit(a, &r, failed || stopping, ran) {
            AfterExit::Backoff(delay) => {
                a.state = AgentState::Backoff;
                a.backoff_until = Some(Instant::now() + delay);
                a.generation += 1;
                let (tx, agent, generation) = (self.tx.clone(), name.to_string(), a.generation);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Event::BackoffOver { agent, generation });
                });
            }
            AfterExit::Fatal => {
                a.state = AgentState::Fatal;
                a.desired = false;
                eprintln!(
                    "agent-supervisor: {group}:{name}: FATAL after {} failed starts ({})",
                    a.retries - 1,
                    a.last_exit
                        .as_ref()
                        .map(|l| l.to_string())
                        .unwrap_or_default()
                );
            }
            AfterExit::Exited => {
                a.state = AgentState::Exited;
                a.desired = false;
            }
        }
    }

    pub(super) fn health(&mut self, name: &str, generation: u64, result: Result<(), String>) {
        let Some((_, cfg)) = self.agent_cfg(name) else {
            return;
        };
        let Some(timing) = cfg.health.as_ref().map(|h| h.timing) else {
            return;
        };
        let on_unhealthy =
            cfg.restart.on_unhealthy && cfg.restart.policy != agent_config::model::Policy::Never;
        let a = self.agents.get_mut(name).expect("known agent");
        if a.generation != generation || a.state != AgentState::Running {
            return;
        }
        match result {
            Ok(()) => {
                a.health = Health::Healthy;
                a.health_fails = 0;
                a.health_detail = None;
            }
            Err(reason) => {
                let in_start_period = a.started.is_some_and(|s| s.elapsed() < timing.start_period);
                a.health_detail = Some(reason.clone());
                if in_start_period && a.health != Health::Healthy {
                    return;
                }
                // Checks run faster than `interval` until the first success; failures still
                // count at most once per interval.
                if a.health_counted_at
                    .is_some_and(|t| t.elapsed() < timing.interval)
                {
                    return;
                }
                a.health_counted_at = Some(Instant::now());
                a.health_fails += 1;
                if a.health_fails >= timing.retries {
                    a.health = Health::Unhealthy;
                    if on_unhealthy {
                        eprintln!(
                            "agent-supervisor: {}:{name}: unhealthy ({reason}), restarting",
                            a.group
                        );
                        self.begin_stop(name, LastExit::HealthFailure { reason }, true, true);
                    }
                }
            }
        }
    }
}
