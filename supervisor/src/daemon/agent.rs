//! One agent's runtime record in the core, and the pure parts of its state machine:
//! restart decisions, backoff, dependency conditions, status rows.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_config::defaults::EffectiveRestart;
use agent_config::model::Policy;

use super::api::{AgentState, AgentStatus, Health, LastExit};
use crate::cgroup::Cgroup;

/// Everything the core tracks about one agent.
#[derive(Debug)]
pub struct AgentRt {
    pub name: String,
    pub group: String,
    pub state: AgentState,
    pub health: Health,
    pub health_detail: Option<String>,
    pub health_fails: u32,
    /// When the last failure was counted (failures count at most once per interval).
    pub health_counted_at: Option<Instant>,
    pub pid: Option<i32>,
    /// The shim: pid and start time.
    pub shim: Option<(i32, u64)>,
    pub started_at: Option<SystemTime>,
    pub started: Option<Instant>,
    pub restarts: u64,
    pub oom_kills: u64,
    /// The agent cgroup's OOM count when this run started.
    pub oom_base: u64,
    pub last_exit: Option<LastExit>,
    pub last_exit_code: Option<i32>,
    /// Consecutive failed runs (reset by a stable run).
    pub retries: u32,
    /// The next backoff delay.
    pub backoff: Duration,
    pub backoff_until: Option<Instant>,
    /// Whether the agent should be running (autostart, `start`; cleared by `stop`, EXITED, FATAL).
    pub desired: bool,
    /// Bumped on every start and stop so events of an earlier run are ignored.
    pub generation: u64,
    pub cgroup: Option<Cgroup>,
    pub health_task: Option<tokio_util::sync::CancellationToken>,
    /// Why the core is stopping it (reported as the last exit).
    pub stop_reason: Option<LastExit>,
    /// Start again once stopped (restart, reload, health failure).
    pub then_start: bool,
    /// A health-failure restart counts as a restart and backs off.
    pub restart_counts: bool,
    /// Since when it waits for its dependencies (to report a start timeout).
    pub waiting_since: Option<Instant>,
    pub wait_reported: bool,
}

impl AgentRt {
    pub fn new(name: &str, group: &str, restart: &EffectiveRestart) -> AgentRt {
        AgentRt {
            name: name.to_string(),
            group: group.to_string(),
            state: AgentState::Stopped,
            health: Health::Unknown,
            health_detail: None,
            health_fails: 0,
            health_counted_at: None,
            pid: None,
            shim: None,
            started_at: None,
            started: None,
            restarts: 0,
            oom_kills: 0,
            oom_base: 0,
            last_exit: None,
            last_exit_code: None,
            retries: 0,
            backoff: restart.backoff_initial,
            backoff_until: None,
            desired: true,
            generation: 0,
            cgroup: None,
            health_task: None,
            stop_reason: None,
            then_start: false,
            restart_counts: false,
            waiting_since: None,
            wait_reported: false,
        }
    }

    /// Whether a process of this agent may exist.
    pub fn is_live(&self) -> bool {
        matches!(
            self.state,
            AgentState::Starting | AgentState::Running | AgentState::Stopping
        )
    }

    /// Stops the health checker of the current run.
    pub fn stop_health(&mut self) {
        if let Some(t) = self.health_task.take() {
            t.cancel();
        }
    }

    /// The status row of this agent.
    pub fn status(&self, host: &str) -> AgentStatus {
        let started_at = self
            .started_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        let live = self.is_live();
        AgentStatus {
            host: host.to_string(),
            group: self.group.clone(),
            agent: self.name.clone(),
            state: self.state,
            health: if live { self.health } else { Health::Unknown },
            health_detail: self.health_detail.clone(),
            pid: if live { self.pid } else { None },
            started_at: if live { started_at } else { None },
            uptime_seconds: if live {
                self.started.map(|s| s.elapsed().as_secs_f64())
            } else {
                None
            },
            restarts: self.restarts,
            oom_kills: self.oom_kills,
            memory_bytes: if live {
                self.cgroup.as_ref().and_then(|c| c.stats().memory_usage)
            } else {
                None
            },
            last_exit: self.last_exit.clone(),
            last_exit_code: self.last_exit_code,
            backoff_seconds: self
                .backoff_until
                .map(|u| u.saturating_duration_since(Instant::now()).as_secs_f64()),
        }
    }
}

/// What to do after a run ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Start again after this delay.
    Backoff(Duration),
    /// Too many consecutive failures.
    Fatal,
    /// The policy says not to restart.
    Exited,
}

/// The restart decision: `failed` is a non-zero exit, a signal or an OOM kill; `ran` is how
/// long the run lasted. The first restart after a crash is immediate (as supervisord's); each
/// further consecutive failure waits `backoff.initial`, doubling up to `backoff.max`; a run of
/// `reset_after` starts the count again; more than `max_retries` consecutive failures is FATAL.
pub fn after_exit(a: &mut AgentRt, r: &EffectiveRestart, failed: bool, ran: Duration) -> AfterExit {
    if ran >= r.reset_after {
        a.retries = 0;
        a.backoff = r.backoff_initial;
    }
    let restart = a.desired
        && match r.policy {
            Policy::Always => true,
            Policy::OnFailure => failed,
            Policy::Never => false,
        };
    if !restart {
        return AfterExit::Exited;
    }
    a.retries += 1;
    if a.retries > r.max_retries {
        return AfterExit::Fatal;
    }
    if a.retries == 1 {
        return AfterExit::Backoff(Duration::ZERO);
    }
    let delay = a.backoff;
    a.backoff = (a.backoff * 2).min(r.backoff_max);
    AfterExit::Backoff(delay)
}

/// Signal names for messages.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart(policy: Policy) -> EffectiveRestart {
        EffectiveRestart {
            policy,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(800),
            max_retries: 5,
            reset_after: Duration::from_secs(10),
            on_unhealthy: true,
        }
    }

    #[test]
    fn backoff_doubles_caps_resets_and_turns_fatal() {
        let r = restart(Policy::Always);
        let mut a = AgentRt::new("a", "g", &r);
        let short = Duration::from_millis(10);
        let delays: Vec<AfterExit> = (0..6)
            .map(|_| after_exit(&mut a, &r, true, short))
            .collect();
        let ms = |d: u64| AfterExit::Backoff(Duration::from_millis(d));
        assert_eq!(
            delays,
            vec![ms(0), ms(100), ms(200), ms(400), ms(800), AfterExit::Fatal]
        );
        // A stable run resets the count and the delay.
        let mut b = AgentRt::new("b", "g", &r);
        after_exit(&mut b, &r, true, short);
        after_exit(&mut b, &r, true, short);
        assert_eq!(after_exit(&mut b, &r, true, Duration::from_secs(11)), ms(0));
        assert_eq!(after_exit(&mut b, &r, true, short), ms(100));
        assert_eq!(b.retries, 2);
    }

    #[test]
    fn policies_decide_restarts() {
        let mut a = AgentRt::new("a", "g", &restart(Policy::OnFailure));
        assert_eq!(
            after_exit(&mut a, &restart(Policy::OnFailure), false, Duration::ZERO),
            AfterExit::Exited
        );
        assert!(matches!(
            after_exit(&mut a, &restart(Policy::OnFailure), true, Duration::ZERO),
            AfterExit::Backoff(_)
        ));
        assert_eq!(
            after_exit(&mut a, &restart(Policy::Never), true, Duration::ZERO),
            AfterExit::Exited
        );
        a.desired = false;
        assert_eq!(
            after_exit(&mut a, &restart(Policy::Always), true, Duration::ZERO),
            AfterExit::Exited
        );
    }
}
