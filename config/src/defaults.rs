//! Every default value of the system file, stated once; `docs/config.md` documents the same table.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::{Agent, DaemonSettings, Group, Health, Policy, Restart, RestartMap, System};
use crate::units::{ByteSize, Dur};

/// Built-in image name: the host's own system directories, read-only.
pub const HOST_IMAGE: &str = "host";
/// Default HTTP listener (`/metrics`, `/health`): the seed's observability port.
pub const HTTP_LISTEN: &str = "127.0.0.1:9000";
pub const STATE_DIR: &str = "/var/lib/agent-supervisor";
pub const RUN_DIR: &str = "/run/agent-supervisor";
pub const LOG_DIR: &str = "/var/log/agent-supervisor";
pub const CONTROL_SOCKET: &str = "/run/agent-supervisor/control.sock";
pub const CGROUP_ROOT: &str = "agent-supervisor.slice";
pub const LOG_MAX_SIZE: u64 = 10 << 20;
pub const LOG_KEEP: u32 = 5;
pub const MIN_FREE_DISK: u64 = 1 << 30;
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const POLICY: Policy = Policy::OnFailure;
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const MAX_RETRIES: u32 = 10;
pub const RESET_AFTER: Duration = Duration::from_secs(60);
pub const RESTART_ON_UNHEALTHY: bool = true;
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
pub const HEALTH_RETRIES: u32 = 3;
pub const HEALTH_START_PERIOD: Duration = Duration::from_secs(0);
pub const STOP_SIGNAL: &str = "SIGTERM";
/// A bridge's UDP `listen_port` (WireGuard's own default).
pub const BRIDGE_PORT: u16 = 51820;

/// Binds are read-only unless they say `rw`.
pub fn bind_readonly() -> bool {
    true
}

/// Daemon settings with every field filled: host override, then top level, then default.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveDaemon {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
    pub control_socket: PathBuf,
    pub control_group: Option<String>,
    pub http_listen: String,
    pub cgroup_root: String,
    /// Whether the daemon turns on the cgroup2 mount's `favordynmods`.
    pub cgroup_favordynmods: bool,
    pub log_max_size: ByteSize,
    pub log_keep: u32,
    pub min_free_disk: ByteSize,
    /// CDI spec directories, lowest priority first ([`CDI_SPEC_DIRS`] by default).
    pub cdi_spec_dirs: Vec<PathBuf>,
}

/// Where CDI specs are read from, as the CDI specification says: `/etc/cdi`, then
/// `/var/run/cdi` (higher priority: a device named in both comes from there).
pub const CDI_SPEC_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// The daemon settings that apply on `host`.
pub fn daemon(system: &System, host: &str) -> EffectiveDaemon {
    let top = &system.daemon;
    let empty = DaemonSettings::default();
    let over = system
        .hosts
        .get(host)
        .and_then(|h| h.daemon.as_ref())
        .unwrap_or(&empty);
    macro_rules! pick {
        ($f:ident, $d:expr) => {
            over.$f
                .clone()
                .or_else(|| top.$f.clone())
                .unwrap_or_else(|| $d)
        };
    }
    EffectiveDaemon {
        state_dir: pick!(state_dir, PathBuf::from(STATE_DIR)),
        run_dir: pick!(run_dir, PathBuf::from(RUN_DIR)),
        log_dir: pick!(log_dir, PathBuf::from(LOG_DIR)),
        control_socket: pick!(control_socket, PathBuf::from(CONTROL_SOCKET)),
        control_group: over
            .control_group
            .clone()
            .or_else(|| top.control_group.clone()),
        http_listen: pick!(http_listen, HTTP_LISTEN.to_string()),
        cgroup_root: pick!(cgroup_root, CGROUP_ROOT.to_string()),
        cgroup_favordynmods: pick!(cgroup_favordynmods, true),
        log_max_size: pick!(log_max_size, ByteSize(LOG_MAX_SIZE)),
        log_keep: pick!(log_keep, LOG_KEEP),
        min_free_disk: pick!(min_free_disk, ByteSize(MIN_FREE_DISK)),
        cdi_spec_dirs: pick!(
            cdi_spec_dirs,
            CDI_SPEC_DIRS.iter().map(PathBuf::from).collect()
        ),
    }
}

/// Restart settings of an agent with every field filled: agent, then group, then default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveRestart {
    pub policy: Policy,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_retries: u32,
    pub reset_after: Duration,
    pub on_unhealthy: bool,
}

/// The restart settings that apply to `agent` in `group`.
pub fn restart(group: &Group, agent: &Agent) -> EffectiveRestart {
    let empty = Restart(RestartMap::default());
    let a = &agent.restart.as_ref().unwrap_or(&empty).0;
    let g = &group.restart.as_ref().unwrap_or(&empty).0;
    let backoff = |f: fn(&crate::model::Backoff) -> Option<Dur>| {
        a.backoff
            .as_ref()
            .and_then(f)
            .or_else(|| g.backoff.as_ref().and_then(f))
    };
    EffectiveRestart {
        policy: a.policy.or(g.policy).unwrap_or(POLICY),
        backoff_initial: backoff(|b| b.initial).map_or(BACKOFF_INITIAL, |d| d.0),
        backoff_max: backoff(|b| b.max).map_or(BACKOFF_MAX, |d| d.0),
        max_retries: a.max_retries.or(g.max_retries).unwrap_or(MAX_RETRIES),
        reset_after: a.reset_after.or(g.reset_after).map_or(RESET_AFTER, |d| d.0),
        on_unhealthy: a
            .on_unhealthy
            .or(g.on_unhealthy)
            .unwrap_or(RESTART_ON_UNHEALTHY),
    }
}

/// Health-check timing with every field filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTiming {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// The timing that applies to a health check.
pub fn health_timing(h: &Health) -> HealthTiming {
    HealthTiming {
        interval: h.interval.map_or(HEALTH_INTERVAL, |d| d.0),
        timeout: h.timeout.map_or(HEALTH_TIMEOUT, |d| d.0),
        retries: h.retries.unwrap_or(HEALTH_RETRIES),
        start_period: h.start_period.map_or(HEALTH_START_PERIOD, |d| d.0),
    }
}

/// The stop timeout of an agent: its own, else its group's, else the default.
pub fn stop_timeout(group: &Group, agent: &Agent) -> Duration {
    agent
        .stop_timeout
        .or(group.stop_timeout)
        .map_or(STOP_TIMEOUT, |d| d.0)
}

/// The image a group runs from.
pub fn image(group: &Group) -> &str {
    group.image.as_deref().unwrap_or(HOST_IMAGE)
}
