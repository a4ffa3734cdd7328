//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`), through the `sd-notify` crate
//! (the datagram to `$NOTIFY_SOCKET`; nothing is sent where it is unset):
//!
//! - `READY=1` once every agent of the host reached its start target — RUNNING, and healthy
//!   where it has a health check; an agent that is not wanted (stopped, EXITED by its
//!   policy) counts as reached — or when [`READY_DEADLINE`] passed, with `STATUS=` naming the
//!   agents that did not;
//! - `STATUS=` while starting (`starting: 12/52 agents ready`) and running
//!   (`52/52 agents healthy`, or which are not), sent when it changes;
//! - `WATCHDOG=1` from the core task's tick (every 2 s), so systemd restarts a daemon whose
//!   core hangs, not only one that died;
//! - `STOPPING=1` when a shutdown begins.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use super::agent::AgentRt;
use super::api::{AgentState, Health};

/// How long `READY=1` waits for the agents (the unit's `TimeoutStartSec=` is longer).
pub const READY_DEADLINE: Duration = Duration::from_secs(120);

/// At most this many agents are named in a `STATUS=` line.
const NAMED: usize = 5;

/// The daemon's side of the protocol.
#[derive(Debug)]
pub struct Notifier {
    /// `$NOTIFY_SOCKET` is set: systemd listens.
    enabled: bool,
    /// `$WATCHDOG_USEC` is set for this process.
    watchdog: bool,
    started: Instant,
    ready: bool,
    status: String,
}

impl Notifier {
    /// From the environment systemd gave the daemon.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled().is_some(),
            started: Instant::now(),
            ready: false,
            status: String::new(),
        }
    }

    fn send(&self, state: &[NotifyState]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(state) {
                eprintln!("agent-supervisor: sd_notify: {e}");
            }
        }
    }

    /// `WATCHDOG=1`: the core is alive.
    pub fn watchdog(&self) {
        if self.watchdog {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&mut self) {
        self.status = "stopping the agents".into();
        self.send(&[NotifyState::Stopping, NotifyState::Status(&self.status)]);
    }

    /// Looks at the agents after an event: `STATUS=` when it changed, `READY=1` once.
    pub fn progress<'a>(&mut self, agents: impl Iterator<Item = (&'a AgentRt, bool)>) {
        if !self.enabled {
            return;
        }
        let (status, all) = summary(agents, self.ready);
        let late = !self.ready && self.started.elapsed() >= READY_DEADLINE;
        let status = if late && !all {
            format!("{status} (started after {READY_DEADLINE:?} without them)")
        } else {
            status
        };
        let ready_now = !self.ready && (all || late);
        if status == self.status && !ready_now {
            return;
        }
        self.status = status;
        if ready_now {
            self.ready = true;
            self.send(&[NotifyState::Ready, NotifyState::Status(&self.status)]);
        } else {
            self.send(&[NotifyState::Status(&self.status)]);
        }
    }
}

/// Whether an agent is where a start should bring it (`checked`: it has a health check).
fn at_target(a: &AgentRt, checked: bool) -> bool {
    match a.state() {
        AgentState::Running => {
            !checked
                || a.run
                    .proc()
                    .is_some_and(|p| p.health.health == Health::Healthy)
        }
        // Not wanted: stopped on purpose, or ended as its policy says.
        AgentState::Stopped | AgentState::Exited => !a.desired,
        _ => false,
    }
}

/// The `STATUS=` text and whether every agent is at its target.
fn summary<'a>(agents: impl Iterator<Item = (&'a AgentRt, bool)>, ready: bool) -> (String, bool) {
    let mut total = 0;
    let mut missing: Vec<String> = Vec::new();
    for (a, checked) in agents {
        total += 1;
        if !at_target(a, checked) {
            missing.push(format!("{} {}", a.name, state_word(a)));
        }
    }
    let ok = total - missing.len();
    let all = missing.is_empty();
    let word = if ready { "healthy" } else { "ready" };
    let mut s = if ready || all {
        format!("{ok}/{total} agents {word}")
    } else {
        format!("starting: {ok}/{total} agents ready")
    };
    if !all {
        let shown: Vec<&str> = missing.iter().take(NAMED).map(String::as_str).collect();
        let more = missing.len().saturating_sub(NAMED);
        s.push_str(&format!("; not: {}", shown.join(", ")));
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
    }
    (s, all)
}

fn state_word(a: &AgentRt) -> &'static str {
    match a.state() {
        AgentState::Running => match a.run.proc().map(|p| p.health.health) {
            Some(Health::Unhealthy) => "(unhealthy)",
            _ => "(health unknown)",
        },
        AgentState::Starting => "(starting)",
        AgentState::Stopping => "(stopping)",
        AgentState::Stopped => "(stopped)",
        AgentState::Backoff => "(backoff)",
        AgentState::Exited => "(exited)",
        AgentState::Fatal => "(fatal)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::agent::Run;

    fn agent(name: &str, run: Run) -> AgentRt {
        let r = agent_config::defaults::EffectiveRestart {
            policy: agent_config::model::Policy::Always,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            max_retries: 3,
            reset_after: Duration::from_secs(60),
            on_unhealthy: true,
        };
        let mut a = AgentRt::new(name, "g", &r);
        a.run = run;
        a
    }

    #[test]
    fn starting_names_who_is_missing_then_all_healthy() {
        let a = agent("a", Run::Stopped { wait: None });
        let (s, all) = summary([(&a, false)].into_iter(), false);
        assert!(!all);
        assert_eq!(s, "starting: 0/1 agents ready; not: a (stopped)");
        // An agent stopped on purpose has reached its target.
        let mut b = agent("b", Run::Stopped { wait: None });
        b.desired = false;
        let (s, all) = summary([(&b, false)].into_iter(), true);
        assert!(all, "{s}");
        assert_eq!(s, "1/1 agents healthy");
        let many: Vec<AgentRt> = (0..8)
            .map(|i| {
                agent(
                    &format!("x{i}"),
                    Run::Backoff {
                        until: Instant::now(),
                    },
                )
            })
            .collect();
        let (s, _) = summary(many.iter().map(|a| (a, true)), true);
        assert_eq!(
            s,
            "0/8 agents healthy; not: x0 (backoff), x1 (backoff), x2 (backoff), x3 (backoff), x4 (backoff) and 3 more"
        );
    }
}
