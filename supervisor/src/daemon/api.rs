//! The control API's data: what `supervisorctl` asks and what the daemon answers. Shared by
//! the daemon (server) and `supervisorctl` (client); the HTTP mapping is in `docs/api.md`.

use serde::{Deserialize, Serialize};

/// supervisord's process states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AgentState {
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Stopped => "STOPPED",
            AgentState::Starting => "STARTING",
            AgentState::Running => "RUNNING",
            AgentState::Backoff => "BACKOFF",
            AgentState::Stopping => "STOPPING",
            AgentState::Exited => "EXITED",
            AgentState::Fatal => "FATAL",
        }
    }
}

/// Result of an agent's health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// Why an agent last stopped running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LastExit {
    /// It exited with this status.
    Code { code: i32 },
    /// A signal killed it.
    Signal { signal: i32, name: String },
    /// The kernel's OOM killer killed it (memory limit).
    OomKilled,
    /// It was restarted because its health check failed.
    HealthFailure { reason: String },
    /// A user stopped it (`supervisorctl stop`, reload, shutdown).
    StoppedByUser,
    /// It could not be started.
    StartFailure { reason: String },
}

impl std::fmt::Display for LastExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LastExit::Code { code } => write!(f, "exit {code}"),
            LastExit::Signal { name, .. } => write!(f, "killed by {name}"),
            LastExit::OomKilled => f.write_str("OOM-killed"),
            LastExit::HealthFailure { reason } => write!(f, "health check failed: {reason}"),
            LastExit::StoppedByUser => f.write_str("stopped by user"),
            LastExit::StartFailure { reason } => write!(f, "failed to start: {reason}"),
        }
    }
}

/// One agent as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub host: String,
    pub group: String,
    pub agent: String,
    pub state: AgentState,
    pub health: Health,
    /// Last health-check failure, if any.
    pub health_detail: Option<String>,
    /// The agent's pid in the host pid namespace.
    pub pid: Option<i32>,
    /// Unix time (seconds) the current run started.
    pub started_at: Option<f64>,
    pub uptime_seconds: Option<f64>,
    /// Restarts by the supervisor since the daemon first started it (kept across daemon restarts).
    pub restarts: u64,
    pub oom_kills: u64,
    /// Memory in use by the agent's cgroup.
    pub memory_bytes: Option<u64>,
    pub last_exit: Option<LastExit>,
    /// Exit code of the last exit, when it had one.
    pub last_exit_code: Option<i32>,
    /// Seconds until the next start attempt, in BACKOFF.
    pub backoff_seconds: Option<f64>,
    /// Bytes of the agent's stdout and stderr its shim could not write to the log files (a
    /// full log disk, a log writer too slow) in the current or last run; the agent runs on.
    #[serde(default)]
    pub log_dropped_bytes: u64,
    /// Why output was last dropped (`cannot write log file PATH: No space left on device (os
    /// error 28)`, `log writer too slow`); `None` while nothing was.
    #[serde(default)]
    pub log_error: Option<String>,
}

/// One group's resource usage, from its cgroup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub host: String,
    pub group: String,
    /// The group init's pid, when the group runs.
    pub init_pid: Option<i32>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub pids: Option<u64>,
    /// The group's address on the host's bridge (`network: private`); `None` on the host's
    /// network.
    #[serde(default)]
    pub address: Option<String>,
    /// Bytes the group received and sent through its veth pair (private groups).
    #[serde(default)]
    pub network_rx_bytes: Option<u64>,
    #[serde(default)]
    pub network_tx_bytes: Option<u64>,
    /// The GPUs given to the group (CDI names, UUIDs or indices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// Why an `optional: true` group runs without the GPUs it asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_absent: Option<String>,
    /// The built image the group runs from (`None`: the host's directories) and its manifest
    /// digest, as the plan resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

/// Everything the daemon knows, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub host: String,
    pub version: String,
    pub daemon_pid: u32,
    /// Unix time the daemon started.
    pub daemon_started_at: f64,
    pub agents: Vec<AgentStatus>,
    pub groups: Vec<GroupStatus>,
    /// The host's end of the WireGuard bridge (`None`: the host has no `bridge`).
    #[serde(default)]
    pub bridge: Option<Box<BridgeStatus>>,
    /// The host's GPUs (`None` when not read).
    #[serde(default)]
    pub gpu: Option<Box<crate::gpu_stats::GpuReport>>,
    /// The daemon's own process (`None` when not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<super::memory::ProcessStats>,
    /// The other hosts as this daemon last saw them (through the bridge); empty in the
    /// snapshot another host asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<super::fleet::HostView>,
}

/// The host's end of the WireGuard bridge, as the daemon's bridge task last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeStatus {
    pub interface: String,
    /// `kernel` or `userspace`; `None` while it is not up.
    pub implementation: Option<String>,
    /// The `agent-bridge` process (userspace).
    pub pid: Option<u32>,
    /// This host's overlay address, `ip/prefix`.
    pub address: String,
    pub listen_port: u16,
    pub public_key: String,
    /// Why the bridge is not up, when it is not.
    pub error: Option<String>,
    pub peers: Vec<BridgePeerStatus>,
}

/// One other host, through the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgePeerStatus {
    pub host: String,
    pub public_key: String,
    /// Where its packets come from (or are sent, before the first one came).
    pub endpoint: Option<String>,
    /// The peer's overlay address.
    pub address: String,
    /// Unix time of the latest completed handshake.
    pub latest_handshake: Option<f64>,
    pub handshake_age_seconds: Option<f64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Round-trip time of the latest ICMP echo to the peer's overlay address, in
    /// milliseconds (`None`: it did not answer within a second).
    pub rtt_ms: Option<f64>,
    /// Whether the latest echo through the tunnel was answered.
    pub up: bool,
}

/// A request to the daemon's core. `targets` are agent names, `GROUP:*`, or `all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Request {
    Status {
        targets: Vec<String>,
    },
    Start {
        targets: Vec<String>,
    },
    Stop {
        targets: Vec<String>,
    },
    Restart {
        targets: Vec<String>,
    },
    Signal {
        signal: String,
        targets: Vec<String>,
    },
    /// Re-read the system file and apply the difference.
    Reload,
    Shutdown,
    Version,
}

/// What changed on `reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResult {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
}

/// The core's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Response {
    Status {
        snapshot: Snapshot,
    },
    /// Per target agent: what happened (`started`, `already running`, ...).
    Done {
        results: Vec<(String, String)>,
    },
    Reloaded {
        result: ReloadResult,
    },
    ShuttingDown,
    Version {
        version: String,
        pid: u32,
    },
}

/// An error answer; `status` is the HTTP status the control API uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            message: message.into(),
        }
    }
}

/// A request with the channel its answer goes back on (cloud-hypervisor style).
#[derive(Debug)]
pub struct ControlMsg {
    pub request: Request,
    pub reply: tokio::sync::oneshot::Sender<Result<Response, ApiError>>,
}

pub use agent_plan::log_file;
