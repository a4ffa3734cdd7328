//! How the core answers an agent's end, a failed start and a health check's result: record
//! the exit (OOM, signal, code), decide on a restart with backoff or FATAL, and restart an
//! unhealthy agent.

use agent_config::defaults::EffectiveRestart;

use super::*;
use crate::daemon::agent::{after_exit, signal_name, AfterExit, StopAsk};
use crate::daemon::api::LastExit;

impl Core {
    /// A shim ended; `exit` is what its watcher read afterwards.
    pub(super) fn exited(&mut self, name: &str, generation: u64, exit: ExitFacts) {
        let restart = self.agent_cfg(name).map(|(_, a)| a.restart.clone());
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        if a.generation != generation {
            return;
        }
        let (mut proc, ask) = match std::mem::replace(&mut a.run, Run::Stopped { wait: None }) {
            Run::Starting(p) | Run::Running(p) => (p, None),
            Run::Stopping { proc, ask, .. } => (proc, Some(ask)),
            other => {
                a.run = other;
                return;
            }
        };
        proc.health.stop();
        let oom = exit.oom_now > proc.oom_base;
        if oom {
            a.oom_kills += exit.oom_now - proc.oom_base;
        }
        let record = exit.record;
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
        let failed = !matches!(natural, LastExit::Code { code: 0 });
        a.last_exit = Some(match &ask {
            Some(ask) => ask.reason.clone(),
            None => natural,
        });
        self.after_end(name, restart, ask, failed, proc.started.elapsed());
    }

    /// A start failed before the agent ran (its pod or its shim could not start); `then` is
    /// a stop asked for meanwhile.
    pub(super) fn start_failed(&mut self, name: &str, then: Option<StopAsk>, reason: String) {
        let restart = self.agent_cfg(name).map(|(_, a)| a.restart.clone());
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        a.run = Run::Stopped { wait: None };
        a.last_exit = Some(LastExit::StartFailure { reason });
        a.last_exit_code = None;
        self.after_end(name, restart, then, true, Duration::ZERO);
    }

    /// After a run ended: stopped as asked, or the restart decision of its policy.
    fn after_end(
        &mut self,
        name: &str,
        restart: Option<EffectiveRestart>,
        ask: Option<StopAsk>,
        failed: bool,
        ran: Duration,
    ) {
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        a.run = Run::Stopped { wait: None };
        // Reload removed it: it stays stopped until it is forgotten.
        let Some(r) = restart else {
            return;
        };
        if let Some(ask) = &ask {
            if !ask.counts {
                a.desired = ask.then_start;
                return;
            }
        }
        match after_exit(a, &r, failed || ask.is_some(), ran) {
            AfterExit::Backoff(delay) => {
                a.run = Run::Backoff {
                    until: Instant::now() + delay,
                };
                a.generation += 1;
                let (tx, agent, generation) = (self.tx.clone(), name.to_string(), a.generation);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Event::BackoffOver { agent, generation });
                });
            }
            AfterExit::Fatal => {
                a.run = Run::Fatal;
                a.desired = false;
                eprintln!(
                    "agent-supervisor: {}:{name}: FATAL after {} failed starts ({})",
                    a.group,
                    a.retries - 1,
                    a.last_exit
                        .as_ref()
                        .map(|l| l.to_string())
                        .unwrap_or_default()
                );
            }
            AfterExit::Exited => {
                a.run = Run::Exited;
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
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        if a.generation != generation {
            return;
        }
        let Run::Running(p) = &mut a.run else {
            return;
        };
        let h = &mut p.health;
        let reason = match result {
            Ok(()) => {
                h.health = Health::Healthy;
                h.fails = 0;
                a.health_detail = None;
                return;
            }
            Err(reason) => reason,
        };
        let in_start_period = p.started.elapsed() < timing.start_period;
        a.health_detail = Some(reason.clone());
        if in_start_period && h.health != Health::Healthy {
            return;
        }
        // Checks run faster than `interval` until the first success; failures still count
        // at most once per interval.
        if h.counted_at.is_some_and(|t| t.elapsed() < timing.interval) {
            return;
        }
        h.counted_at = Some(Instant::now());
        h.fails += 1;
        if h.fails < timing.retries {
            return;
        }
        h.health = Health::Unhealthy;
        if on_unhealthy {
            eprintln!(
                "agent-supervisor: {}:{name}: unhealthy ({reason}), restarting",
                a.group
            );
            self.begin_stop(name, LastExit::HealthFailure { reason }, true, true);
        }
    }
}
