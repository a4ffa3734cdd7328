//! One agent's runtime record in the core and its state machine as data: each [`Run`]
//! variant carries what is valid in that state (a running agent's pids, cgroup and health
//! checker; a backoff's deadline; a stop's reason), plus the pure restart/backoff decision
//! and the status row.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_config::defaults::EffectiveRestart;
use agent_config::model::Policy;
use nix::sys::signal::Signal;

use super::api::{AgentState, AgentStatus, Health, LastExit};
use crate::cgroup::Cgroup;

/// Where an agent is in its life.
#[derive(Debug)]
pub enum Run {
    /// No process. `wait` is set while it should run but waits for its dependencies.
    Stopped { wait: Option<Wait> },
    /// Its shim is being spawned off the core task; `then` is a stop asked for meanwhile,
    /// applied once the shim runs.
    Spawning { then: Option<StopAsk> },
    /// The shim runs; the agent's exec is not confirmed yet (no pid file).
    Starting(Proc),
    /// The agent runs.
    Running(Proc),
    /// Its stop signal was sent; its cgroup is killed at `deadline`.
    Stopping {
        proc: Proc,
        ask: StopAsk,
        deadline: Instant,
    },
    /// Ended on its own; starts again at `until`.
    Backoff { until: Instant },
    /// Ended and its policy says not to restart.
    Exited,
    /// Too many consecutive failed starts.
    Fatal,
}

/// A dependency wait: since when, and whether its start timeout was reported.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    pub since: Instant,
    pub reported: bool,
}

/// Why and how an agent is being stopped.
#[derive(Debug, Clone)]
pub struct StopAsk {
    /// Reported as the last exit.
    pub reason: LastExit,
    /// Start again once stopped (restart, reload, health failure).
    pub then_start: bool,
    /// A health-failure restart counts as a restart and backs off.
    pub counts: bool,
}

/// A live run of an agent: its shim (and once known the agent's own pid), cgroup, times and
/// health checker.
#[derive(Debug)]
pub struct Proc {
    /// The shim: pid and start time (`None` when it ended before it could be read).
    pub shim: Option<(i32, u64)>,
    /// The agent's own pid, once its shim wrote it.
    pub pid: Option<i32>,
    pub started_at: SystemTime,
    pub started: Instant,
    /// The agent cgroup's OOM count when this run started.
    pub oom_base: u64,
    pub cgroup: Option<Cgroup>,
    pub health: HealthRt,
    /// The stop signal and timeout of the plan this run was started with.
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
}

/// A run's health checker and the counts of its results.
#[derive(Debug, Default)]
pub struct HealthRt {
    pub health: Health,
    pub fails: u32,
    /// When the last failure was counted (failures count at most once per interval).
    pub counted_at: Option<Instant>,
    pub task: Option<tokio_util::sync::CancellationToken>,
}

impl HealthRt {
    /// Stops the health checker of this run.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.cancel();
        }
    }
}

impl Proc {
    /// Who gets signals: the agent when its pid is known, else its shim (which forwards).
    pub fn target(&self) -> Option<i32> {
        self.pid.or(self.shim.map(|s| s.0))
    }
}

impl Run {
    /// The state reported by the API.
    pub fn state(&self) -> AgentState {
        match self {
            Run::Stopped { .. } => AgentState::Stopped,
            Run::Spawning { .. } | Run::Starting(_) => AgentState::Starting,
            Run::Running(_) => AgentState::Running,
            Run::Stopping { .. } => AgentState::Stopping,
            Run::Backoff { .. } => AgentState::Backoff,
            Run::Exited => AgentState::Exited,
            Run::Fatal => AgentState::Fatal,
        }
    }

    /// The live run, if there is one.
    pub fn proc(&self) -> Option<&Proc> {
        match self {
            Run::Starting(p) | Run::Running(p) | Run::Stopping { proc: p, .. } => Some(p),
            _ => None,
        }
    }

    pub fn proc_mut(&mut self) -> Option<&mut Proc> {
        match self {
            Run::Starting(p) | Run::Running(p) | Run::Stopping { proc: p, .. } => Some(p),
            _ => None,
        }
    }
}

/// Everything the core tracks about one agent.
#[derive(Debug)]
pub struct AgentRt {
    pub name: String,
    pub group: String,
    pub run: Run,
    /// The last health-check failure or start timeout, for the status.
    pub health_detail: Option<String>,
    pub restarts: u64,
    pub oom_kills: u64,
    pub last_exit: Option<LastExit>,
    pub last_exit_code: Option<i32>,
    /// Consecutive failed runs (reset by a stable run).
    pub retries: u32,
    /// The next backoff delay.
    pub backoff: Duration,
    /// Whether the agent should be running (autostart, `start`; cleared by `stop`, EXITED, FATAL).
    pub desired: bool,
    /// Bumped on every start and stop so events of an earlier run are ignored.
    pub generation: u64,
}

impl AgentRt {
    pub fn new(name: &str, group: &str, restart: &EffectiveRestart) -> AgentRt {
        AgentRt {
            name: name.to_string(),
            group: group.to_string(),
            run: Run::Stopped { wait: None },
            health_detail: None,
            restarts: 0,
            oom_kills: 0,
            last_exit: None,
            last_exit_code: None,
            retries: 0,
            backoff: restart.backoff_initial,
            desired: true,
            generation: 0,
        }
    }

    /// Whether a process of this agent may exist.
    pub fn is_live(&self) -> bool {
        matches!(
            self.run,
            Run::Spawning { .. } | Run::Starting(_) | Run::Running(_) | Run::Stopping { .. }
        )
    }

    pub fn state(&self) -> AgentState {
        self.run.state()
    }

    /// Whether it is stopped (or ended) and should run: a start candidate.
    pub fn wants_start(&self) -> bool {
        self.desired && matches!(self.run, Run::Stopped { .. } | Run::Exited)
    }

    /// The status row of this agent, and the cgroup whose memory use fills
    /// `memory_bytes` (read off the core task, as `log_dropped_bytes` is).
    pub fn status(&self, host: &str) -> (AgentStatus, Option<Cgroup>) {
        let p = self.run.proc();
        let row = AgentStatus {
            host: host.to_string(),
            group: self.group.clone(),
            agent: self.name.clone(),
            state: self.state(),
            health: p.map_or(Health::Unknown, |p| p.health.health),
            health_detail: self.health_detail.clone(),
            pid: p.and_then(|p| p.pid),
            started_at: p.and_then(|p| {
                p.started_at
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs_f64())
            }),
            uptime_seconds: p.map(|p| p.started.elapsed().as_secs_f64()),
            restarts: self.restarts,
            oom_kills: self.oom_kills,
            memory_bytes: None,
            last_exit: self.last_exit.clone(),
            last_exit_code: self.last_exit_code,
            backoff_seconds: match self.run {
                Run::Backoff { until } => Some(
                    until
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64(),
                ),
                _ => None,
            },
            log_dropped_bytes: 0,
            log_error: None,
        };
        (row, p.and_then(|p| p.cgroup.clone()))
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

    #[test]
    fn states_map_to_the_api() {
        let a = AgentRt::new("a", "g", &restart(Policy::Always));
        assert_eq!(a.state(), AgentState::Stopped);
        assert!(!a.is_live() && a.wants_start());
        let s = Run::Spawning { then: None };
        assert_eq!(s.state(), AgentState::Starting);
        assert!(s.proc().is_none());
    }
}
