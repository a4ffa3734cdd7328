//! Stopping agents: the stop signal of the plan a run was started with, a kill of its
//! cgroup at its stop timeout, and an orderly shutdown in reverse dependency order.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::*;
use crate::daemon::agent::StopAsk;
use crate::daemon::api::LastExit;

impl Core {
    /// Asks an agent to stop (a live one: its stop signal now, a kill of its cgroup at its
    /// stop timeout); `then_start` starts it again once stopped.
    pub(super) fn begin_stop(
        &mut self,
        name: &str,
        reason: LastExit,
        then_start: bool,
        counts: bool,
    ) {
        let Some(a) = self.agents.get_mut(name) else {
            eprintln!("agent-supervisor: agent {name}: asked to stop, but it is not known");
            return;
        };
        let ask = StopAsk {
            reason,
            then_start,
            counts,
        };
        a.run = match std::mem::replace(&mut a.run, Run::Stopped { wait: None }) {
            Run::Starting(mut proc) | Run::Running(mut proc) => {
                proc.health.stop();
                if let Some(pid) = proc.target() {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), proc.stop_signal);
                    // As systemd does: a stopped (SIGSTOP, hung in a debugger) agent gets
                    // its stop signal now, not only at the stop timeout's kill.
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGCONT);
                }
                let timeout = proc.stop_timeout;
                let (tx, agent, generation) = (self.tx.clone(), name.to_string(), a.generation);
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let _ = tx.send(Event::StopTimeout { agent, generation });
                });
                Run::Stopping {
                    proc,
                    ask,
                    deadline: Instant::now() + timeout,
                }
            }
            Run::Stopping {
                proc,
                ask: old,
                deadline,
            } => Run::Stopping {
                proc,
                ask: StopAsk { then_start, ..old },
                deadline,
            },
            // Stopped as soon as the shim runs.
            Run::Spawning { then } => Run::Spawning {
                then: Some(match then {
                    Some(old) => StopAsk { then_start, ..old },
                    None => ask,
                }),
            },
            Run::Backoff { .. } => {
                a.generation += 1;
                a.desired = then_start;
                Run::Stopped { wait: None }
            }
            other @ (Run::Stopped { .. } | Run::Exited | Run::Fatal) => {
                a.desired = then_start;
                if then_start {
                    Run::Stopped { wait: None }
                } else {
                    other
                }
            }
        };
    }

    /// The stop timeout of a run passed: kill its cgroup (off the core task).
    pub(super) fn stop_timeout(&mut self, name: &str, generation: u64) {
        let Some(a) = self.agents.get(name) else {
            return;
        };
        if a.generation != generation {
            return;
        }
        if let Run::Stopping { proc, .. } = &a.run {
            if let Some(cg) = proc.cgroup.clone() {
                let name = name.to_string();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = cg.kill() {
                        eprintln!("agent-supervisor: agent {name}: cannot kill its cgroup: {e}");
                    }
                });
            }
        }
    }

    /// One round of an orderly shutdown: stop every live agent nothing live depends on.
    pub(super) fn shutdown_step(&mut self) {
        let names: Vec<String> = self.agents.keys().cloned().collect();
        for name in &names {
            let Some(a) = self.agents.get(name) else {
                continue;
            };
            if matches!(a.run, Run::Backoff { .. }) {
                self.begin_stop(name, LastExit::StoppedByUser, false, false);
                continue;
            }
            if !matches!(a.run, Run::Starting(_) | Run::Running(_)) {
                continue;
            }
            let needed = names.iter().any(|other| {
                other != name
                    && self.agents.get(other).is_some_and(AgentRt::is_live)
                    && self.depends_on(other, name)
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
