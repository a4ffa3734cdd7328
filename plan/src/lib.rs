//! A host's share of the system, resolved once: the plan that `check`, the daemon, `reload`,
//! `run-group`, `bundle` and the benches consume.
//!
//! [`Plan::resolve`] reads the loaded system file (and, for groups that run from a built
//! image, the image store) and works out everything an agent start needs: the group's
//! limits, root file system (image digest and layers, or the host's directories), binds with
//! their sources resolved, security, and per agent the argv, the fully merged environment
//! (`env_file` contents included), working directory, restart, health and log settings.
//! [`diff`] compares two plans of one host: `reload` applies exactly what it names.
//!
//! Architecture Invariant: nothing below the plan reads the raw config. Code that starts,
//! stops or reloads groups and agents takes a [`GroupPlan`] or an [`AgentPlan`], never a
//! `Loaded` and a name; a value that depends on the system file, a default, an `env_file` or
//! an image is worked out here, once.

use std::path::PathBuf;
use std::time::Duration;

use agent_config::defaults::{EffectiveDaemon, EffectiveRestart, HealthTiming};
use agent_config::model::{Condition, Resources};
use indexmap::IndexMap;

pub mod bridge;
mod diff;
mod env;
pub mod fleet;
pub mod gpu;
pub mod net;
mod resolve;

pub use bridge::{BridgePeer, BridgePlan};
pub use diff::{diff, PlanDiff};
pub use fleet::FleetPeer;
pub use gpu::{DeviceNode, DevicePlan, GpuState};
pub use resolve::{Findings, Plan, IMAGE_MISSING, STATIC_CODES};

/// Everything one host runs, with the system-wide facts its agents need.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPlan {
    /// The host's name in the system file.
    pub host: String,
    /// The system file, as given.
    pub file: PathBuf,
    /// The system file's directory (the `host` image shows it at its own path).
    pub dir: PathBuf,
    /// The daemon settings that apply on this host (host override, top level, default).
    pub daemon: EffectiveDaemon,
    /// The bridge and nftables table of this host's private groups (`None` when it has none).
    pub network: Option<HostNetPlan>,
    /// This host's end of the WireGuard bridge (`None` when it has no `bridge` section).
    pub bridge: Option<bridge::BridgePlan>,
    /// `primary` or `secondary`.
    pub role: String,
    /// Every host of the system, in the file's order.
    pub hosts: Vec<String>,
    /// The other hosts, and where this host's daemon asks them for their state.
    pub fleet: Vec<fleet::FleetPeer>,
    /// This host's groups, in the order of the system file.
    pub groups: IndexMap<String, GroupPlan>,
}

/// One group: a pod with its own namespaces and cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    pub name: String,
    /// Cgroup limits of the whole group.
    pub limits: Resources,
    pub rootfs: RootfsPlan,
    /// Host paths mounted into the group, sources resolved to absolute canonical paths on
    /// this machine (the `host` image's system file directory first).
    pub binds: Vec<BindPlan>,
    pub security: SecurityPlan,
    pub network: NetworkPlan,
    /// `/etc/hosts` lines after the defaults: every group and agent of the system, by name,
    /// with the address this group reaches it at; one table shared by the groups of a host
    /// that see the system alike (same network mode).
    pub names: std::sync::Arc<Vec<(std::net::Ipv4Addr, Vec<String>)>>,
    /// GPUs and device nodes passed through, and the group's device cgroup list.
    pub devices: gpu::DevicePlan,
    /// Groups this group starts after (on any host), with their condition.
    pub depends_on: Vec<(String, Condition)>,
    /// The group's agents, in the order of the system file.
    pub agents: IndexMap<String, AgentPlan>,
}

/// A group's root file system.
#[derive(Debug, Clone, PartialEq)]
pub enum RootfsPlan {
    /// The host's own system directories, read-only.
    Host {
        entries: Vec<agent_rootfs::HostEntry>,
    },
    /// A built image of the host's store.
    Image(ImagePlan),
}

/// A built image, as it was when the plan was made: a rebuilt image has a new digest.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePlan {
    pub name: String,
    /// The manifest digest: the image's identity. Empty only in a plan of
    /// [`Plan::resolve_portable`] whose image is not in this machine's store.
    pub digest: String,
    /// Layers bottom to top, with their blobs in the store.
    pub layers: Vec<agent_rootfs::LayerRef>,
    /// Where unpacked layers are cached (`state_dir/layers`).
    pub layer_cache: PathBuf,
    /// The image's `WorkingDir`, if any.
    pub working_dir: Option<PathBuf>,
}

/// A bind mount from the host into the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPlan {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

/// The sandbox of a group's agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityPlan {
    /// `cap_add` and `cap_drop` as written; the launcher's default set is applied to them.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Install the default seccomp filter.
    pub seccomp: bool,
    /// `setrlimit` values (soft = hard).
    pub rlimits: Vec<(String, u64)>,
}

/// How a group is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkPlan {
    /// The host's network namespace.
    Host,
    /// A network namespace of its own on the host's group bridge.
    Private(PrivateNet),
}

/// A private group's network: `eth0` with `address/prefix` inside, its peer on the host's
/// bridge, the default route through the bridge's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateNet {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    pub bridge: String,
    /// The name of the host end of the group's veth pair without the launcher's pid (9 bytes,
    /// derived from the host's run directory and the group's name).
    pub veth_prefix: String,
    /// Whether traffic beyond the host is masqueraded (else dropped).
    pub egress: bool,
    /// Published ports of the group's agents.
    pub publish: Vec<PublishPlan>,
}

/// `host_addr:host_port` on the host leads to `port` of `agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPlan {
    pub agent: String,
    pub host_addr: Option<std::net::Ipv4Addr>,
    pub host_port: u16,
    pub port: u16,
}

/// The host's side of its private group networks: one bridge and one nftables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNetPlan {
    pub subnet: net::Subnet,
    pub bridge: String,
    /// The nftables table (`ip` family) with the host's masquerading and published ports.
    pub table: String,
}

/// One agent: a process in its group's namespaces.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPlan {
    pub name: String,
    pub group: String,
    pub argv: Vec<String>,
    /// The agent's own environment, in order, every source merged (later sources win):
    /// defaults, the image's `Env`, the group's `env_file`, the group's `env`, the agent's
    /// `env`, the `AGENT_*` variables. The system's names are in `system_names`; the whole
    /// environment is [`AgentPlan::full_env`].
    pub env: Vec<(String, String)>,
    /// Working directory inside the group.
    pub workdir: PathBuf,
    /// The agent's TCP ports, first one first.
    pub ports: Vec<u16>,
    pub restart: EffectiveRestart,
    pub health: Option<HealthPlan>,
    pub log: LogPlan,
    pub stop_signal: String,
    pub stop_timeout: Duration,
    /// Agents this agent starts after (on any host), with their condition.
    pub depends_on: Vec<(String, Condition)>,
    /// The system's names as the agent's group sees them (`<AGENT>_ADDR`, `<HOST>_IP`,
    /// `OBSERVABILITY_ENDPOINT`), one table shared by every agent that sees the system
    /// alike: with it in each agent's `env`, a plan of N agents with ports held N² variables.
    /// A name the agent's `env` also sets is the agent's. A reload that only adds such a
    /// name restarts nobody.
    pub system_names: std::sync::Arc<Vec<(String, String)>>,
}

impl AgentPlan {
    /// The names of `system_names` the agent sees as the system gave them (not set by its
    /// own `env`), in the system's order.
    pub fn visible_names(&self) -> impl Iterator<Item = &(String, String)> {
        let own: std::collections::HashSet<&str> =
            self.env.iter().map(|(k, _)| k.as_str()).collect();
        self.system_names
            .iter()
            .filter(move |(k, _)| !own.contains(k.as_str()))
    }

    /// The whole environment the agent runs with: its own, then the system's names it did
    /// not set itself.
    pub fn full_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.extend(self.visible_names().cloned());
        env
    }
}

/// A health check with its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPlan {
    pub probe: Probe,
    pub timing: HealthTiming,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connect to `addr:port` (`127.0.0.1` on the host network, the group's address in a
    /// private one).
    Tcp { addr: std::net::Ipv4Addr, port: u16 },
    /// `GET path` on `addr:port`; 2xx and 3xx are healthy.
    Http {
        addr: std::net::Ipv4Addr,
        port: u16,
        path: String,
    },
    /// Run a command; exit 0 is healthy.
    Exec(Vec<String>),
}

impl Probe {
    /// Probes the agent at `at` instead of the loopback (an agent of a private group).
    pub fn reach_at(&mut self, at: std::net::Ipv4Addr) {
        match self {
            Probe::Tcp { addr, .. } | Probe::Http { addr, .. } => *addr = at,
            Probe::Exec(_) => {}
        }
    }
}

/// Where an agent's shim writes its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPlan {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Rotate before a file would grow beyond this many bytes (0: never).
    pub max_size: u64,
    /// Rotated files kept per stream.
    pub keep: u32,
}

/// The log file of an agent's stdout or stderr in `log_dir`: `<agent>.stdout.log`,
/// `<agent>.stderr.log` (rotated copies get `.1`, `.2`, ...: `agent_launch::logfile::rotated`).
pub fn log_file(log_dir: &std::path::Path, agent: &str, stderr: bool) -> PathBuf {
    log_dir.join(format!(
        "{agent}.{}.log",
        if stderr { "stderr" } else { "stdout" }
    ))
}

/// The `PATH` an agent gets unless its image or configuration sets one (the launcher's).
pub use agent_launch::DEFAULT_PATH;

impl HostPlan {
    /// The plan of an agent of this host.
    pub fn agent(&self, name: &str) -> Option<&AgentPlan> {
        self.groups.values().find_map(|g| g.agents.get(name))
    }

    /// Every agent of this host with its group, in file order.
    pub fn agents(&self) -> impl Iterator<Item = (&GroupPlan, &AgentPlan)> {
        self.groups
            .values()
            .flat_map(|g| g.agents.values().map(move |a| (g, a)))
    }
}

impl GroupPlan {
    /// Whether the group runs from the host's own directories.
    pub fn is_host_image(&self) -> bool {
        matches!(self.rootfs, RootfsPlan::Host { .. })
    }
}
