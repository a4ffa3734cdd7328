//! The system file's data model: hosts, images, groups and agents, as written by the user.
//!
//! Every struct rejects unknown keys. Fields left out are `None` here; the values that
//! apply when a field is left out live in one place, [`crate::defaults`].

use std::fmt;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Cpus, Dur, Port};

/// The whole multi-host system: the root of the system file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// Format version; only `1` exists.
    #[serde(default)]
    pub version: Option<u32>,
    /// Settings of the daemon on every host (a host may override them).
    #[serde(default)]
    pub daemon: DaemonSettings,
    /// Hosts by name.
    pub hosts: IndexMap<String, Host>,
    /// Images by name; `host` is built in and may not be redefined.
    #[serde(default)]
    pub images: IndexMap<String, ImageDef>,
    /// Agent groups by name.
    #[serde(default)]
    pub groups: IndexMap<String, Group>,
}

/// Daemon settings; every field is optional and falls back to [`crate::defaults`].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    /// Persistent state: image store, build cache.
    pub state_dir: Option<PathBuf>,
    /// Runtime state: pid files, adoption records, the control socket.
    pub run_dir: Option<PathBuf>,
    /// Per-agent log files.
    pub log_dir: Option<PathBuf>,
    /// The control socket path.
    pub control_socket: Option<PathBuf>,
    /// A Unix group allowed to use the control socket (mode 0660 instead of 0600).
    pub control_group: Option<String>,
    /// `ADDRESS:PORT` of the HTTP listener serving `/metrics` and `/health`.
    pub http_listen: Option<String>,
    /// Root cgroup path for group slices (relative to the cgroup mount).
    pub cgroup_root: Option<String>,
    /// Remount the cgroup2 file system with `favordynmods` (default true): an agent's move
    /// into its cgroup then does not wait for an RCU grace period.
    pub cgroup_favordynmods: Option<bool>,
    /// Rotate an agent's log file when it reaches this size.
    pub log_max_size: Option<ByteSize>,
    /// Rotated log files kept per agent.
    pub log_keep: Option<u32>,
    /// `check` fails when the state directory's file system has less free space.
    pub min_free_disk: Option<ByteSize>,
    /// Directories of CDI specs (GPUs and other devices), lowest priority first.
    pub cdi_spec_dirs: Option<Vec<PathBuf>>,
}

/// One machine of the system.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Underlay address (IP or DNS name) other hosts reach this one at.
    pub address: String,
    /// `primary` (aggregates health and metrics) or `secondary`.
    pub role: Role,
    /// Machine host names that identify this host (default: the host's key).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Per-host overrides of the top-level `daemon` settings.
    #[serde(default)]
    pub daemon: Option<DaemonSettings>,
    /// Settings of the WireGuard bridge between hosts.
    #[serde(default)]
    pub bridge: Option<BridgeSettings>,
    /// The host's group network (`subnet`).
    #[serde(default)]
    pub network: Option<HostNetwork>,
}

/// The role of a host.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Secondary,
}

/// WireGuard bridge settings of one host: every host with a `bridge` is a peer of every other.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    /// This host's address inside the overlay, e.g. `10.77.0.1/24`.
    pub address: Option<String>,
    /// UDP port WireGuard listens on (default 51820).
    pub listen_port: Option<Port>,
    /// Path of this host's private key file (`agent-supervisor bridge keygen` writes one).
    pub private_key_file: Option<PathBuf>,
    /// This host's public key (base64), as other hosts need it.
    pub public_key: Option<String>,
    /// Where other hosts send this host's tunnel packets, `ip:port` or `name:port`, when it
    /// is not the host's `address` and `listen_port` (behind NAT, another interface).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Seconds between keepalives sent to every peer (default 25; 0 = off).
    #[serde(default)]
    pub persistent_keepalive: Option<u16>,
    /// `auto` (kernel WireGuard where the module loads, userspace otherwise), `kernel` or
    /// `userspace`.
    #[serde(default)]
    pub implementation: Option<BridgeImplementation>,
}

/// Which WireGuard carries a host's bridge.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BridgeImplementation {
    #[default]
    Auto,
    Kernel,
    Userspace,
}

/// An image definition: a recipe file the images crate builds, or (no recipe) an image that
/// is imported into the store (`agent-supervisor images import`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDef {
    /// Path of the recipe, relative to the system file.
    #[serde(default)]
    pub recipe: Option<PathBuf>,
}

pub use crate::network::{GroupNetwork, HostNetwork, NetworkMode, Publish};

/// A group of agents that share namespaces, an image and a cgroup slice.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The host this group runs on.
    pub host: String,
    /// Image name (`host` = the host's own system directories, read-only).
    pub image: Option<String>,
    #[serde(default)]
    pub network: Option<GroupNetwork>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub gpus: Option<GpuRequest>,
    #[serde(default)]
    pub depends_on: Depends,
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// A file of `KEY=VALUE` lines, relative to the system file.
    pub env_file: Option<PathBuf>,
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// Time between the stop signal and killing the group's cgroup.
    pub stop_timeout: Option<Dur>,
    /// Default restart policy of the group's agents.
    pub restart: Option<Restart>,
    /// The agents' sandbox: capabilities, seccomp, rlimits.
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub agents: Vec<Agent>,
}

/// Whether the default seccomp filter applies.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// The default filter (docs/launcher.md).
    #[default]
    Default,
    /// No filter.
    Unconfined,
}

/// Sandbox settings of a group's agents.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Capabilities added to the default set (`CAP_NET_RAW` or `net_raw`; `ALL`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Capabilities removed from the default set (`ALL` drops every one).
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub seccomp: SeccompMode,
    /// Resource limits (`setrlimit`), soft = hard: `nofile`, `nproc`, `core`, `memlock`,
    /// `stack`, `as`, `fsize`, `cpu`.
    #[serde(default)]
    pub rlimits: IndexMap<String, u64>,
}

/// Resource limits of a group.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Hard memory limit (`memory.max`).
    pub memory: Option<ByteSize>,
    /// Memory throttling threshold (`memory.high`).
    pub memory_high: Option<ByteSize>,
    /// Swap limit (`memory.swap.max`); default 0 when `memory` is set.
    pub memory_swap: Option<ByteSize>,
    /// CPU quota in cores (`cpu.max`).
    pub cpus: Option<Cpus>,
    /// Relative CPU weight 1-10000 (`cpu.weight`).
    pub cpu_weight: Option<u16>,
    /// Maximum number of processes and threads (`pids.max`).
    pub pids: Option<u64>,
}

/// One GPU selector: an index or a UUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum GpuId {
    Index(u32),
    Uuid(String),
}

/// Which GPUs a group gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuDevices {
    All,
    Count(u32),
    List(Vec<GpuId>),
}

/// GPUs requested by a group. `optional`: the group runs without them when the host has
/// too few (and says so); `shared`: another group on the host that also says `shared` may be
/// given the same GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuRequest {
    pub devices: GpuDevices,
    pub optional: bool,
    pub shared: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuRequestMap {
    devices: GpuDevicesDe,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    shared: bool,
}

struct GpuDevicesDe(GpuDevices);

struct GpuVisitor;

impl<'de> Visitor<'de> for GpuVisitor {
    type Value = GpuRequest;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "`all`, a GPU count, a list of GPU indices/UUIDs, or {devices, optional, shared}",
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<GpuRequest, E> {
        if v == "all" {
            Ok(GpuRequest {
                devices: GpuDevices::All,
                optional: false,
                shared: false,
            })
        } else {
            Err(E::custom(format!(
                "expected `all`, a GPU count or a list of GPU indices/UUIDs, got {v:?}"
            )))
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<GpuRequest, E> {
        let n = u32::try_from(v).map_err(|_| E::custom(format!("GPU count {v} is too large")))?;
        Ok(GpuRequest {
            devices: GpuDevices::Count(n),
            optional: false,
            shared: false,
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<GpuRequest, E> {
        if v < 0 {
            return Err(E::custom(format!(
                "expected a GPU count of 0 or more, got {v}"
            )));
        }
        self.visit_u64(v as u64)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<GpuRequest, A::Error> {
        let ids = Vec::<GpuIdDe>::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(GpuRequest {
            devices: GpuDevices::List(ids.into_iter().map(|g| g.0).collect()),
            optional: false,
            shared: false,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<GpuRequest, A::Error> {
        let m = GpuRequestMap::deserialize(MapAccessDeserializer::new(map))?;
        Ok(GpuRequest {
            devices: m.devices.0,
            optional: m.optional,
            shared: m.shared,
        })
    }
}

impl<'de> Deserialize<'de> for GpuRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(GpuVisitor)
    }
}

impl<'de> Deserialize<'de> for GpuDevicesDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Same forms as the short `gpus:` value, without `optional`.
        let r = d.deserialize_any(GpuVisitor)?;
        Ok(GpuDevicesDe(r.devices))
    }
}

struct GpuIdDe(GpuId);

impl<'de> Deserialize<'de> for GpuIdDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GpuIdDe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a GPU index or a GPU UUID (GPU-...)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GpuIdDe, E> {
                u32::try_from(v)
                    .map(|i| GpuIdDe(GpuId::Index(i)))
                    .map_err(|_| E::custom(format!("GPU index {v} is too large")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GpuIdDe, E> {
                if v.starts_with("GPU-") || v.starts_with("MIG-") {
                    Ok(GpuIdDe(GpuId::Uuid(v.to_string())))
                } else if let Ok(i) = v.parse::<u32>() {
                    Ok(GpuIdDe(GpuId::Index(i)))
                } else {
                    Err(E::custom(format!(
                        "expected a GPU index or a UUID starting with GPU- or MIG-, got {v:?}"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// When a dependency counts as satisfied.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// The dependency's processes have started.
    Started,
    /// The dependency passes its health check.
    Healthy,
}

/// Dependencies by name with their condition. Written as a map (`{redis: healthy}`) or a list
/// of names (condition `started`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Depends(pub IndexMap<String, Condition>);

impl<'de> Deserialize<'de> for Depends {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Depends;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of names or a map of name: started|healthy")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Depends, A::Error> {
                let names = Vec::<String>::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(Depends(
                    names.into_iter().map(|n| (n, Condition::Started)).collect(),
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Depends, A::Error> {
                IndexMap::<String, Condition>::deserialize(MapAccessDeserializer::new(map))
                    .map(Depends)
            }
        }
        d.deserialize_any(V)
    }
}

/// A bind mount from the host into a group: `SOURCE:TARGET[:ro|rw]` or a map.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindMap {
    source: PathBuf,
    target: PathBuf,
    #[serde(default = "crate::defaults::bind_readonly")]
    readonly: bool,
}

impl<'de> Deserialize<'de> for Bind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bind;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("SOURCE:TARGET[:ro|rw] or {source, target, readonly}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bind, E> {
                let parts: Vec<&str> = v.split(':').collect();
                let (source, target, readonly) = match parts.as_slice() {
                    [s, t] => (*s, *t, crate::defaults::bind_readonly()),
                    [s, t, "ro"] => (*s, *t, true),
                    [s, t, "rw"] => (*s, *t, false),
                    [_, _, m] => {
                        return Err(E::custom(format!(
                            "bind mode must be ro or rw, got {m:?} in {v:?}"
                        )))
                    }
                    _ => {
                        return Err(E::custom(format!(
                            "expected SOURCE:TARGET[:ro|rw], got {v:?}"
                        )))
                    }
                };
                if source.is_empty() || target.is_empty() {
                    return Err(E::custom(format!(
                        "expected SOURCE:TARGET[:ro|rw], got {v:?}"
                    )));
                }
                Ok(Bind {
                    source: source.into(),
                    target: target.into(),
                    readonly,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Bind, A::Error> {
                let m = BindMap::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Bind {
                    source: m.source,
                    target: m.target,
                    readonly: m.readonly,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A command line: an argv list, or a string split with shell quoting rules (no shell runs).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Command(pub Vec<String>);

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command: a list of arguments or a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
                let argv = shell_words::split(v)
                    .map_err(|e| E::custom(format!("cannot split command {v:?}: {e}")))?;
                if argv.is_empty() {
                    return Err(E::custom("command is empty"));
                }
                Ok(Command(argv))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Command, A::Error> {
                let argv = Vec::<String>::deserialize(SeqAccessDeserializer::new(seq))?;
                if argv.is_empty() {
                    return Err(de::Error::custom("command is empty"));
                }
                Ok(Command(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// Restart policy kinds, as in supervisord/Compose.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Always,
    OnFailure,
    Never,
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub initial: Option<Dur>,
    pub max: Option<Dur>,
}

/// Restart settings; `restart: always` is short for `restart: {policy: always}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestartMap {
    pub policy: Option<Policy>,
    pub backoff: Option<Backoff>,
    /// Consecutive failed starts before the agent is FATAL.
    pub max_retries: Option<u32>,
    /// A run this long resets the backoff and the retry count.
    pub reset_after: Option<Dur>,
    /// Restart the agent when its health check fails.
    pub on_unhealthy: Option<bool>,
}

/// See [`RestartMap`].
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Restart(pub RestartMap);

impl<'de> Deserialize<'de> for Restart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Restart;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("always, on-failure, never, or a map {policy, backoff, max_retries, reset_after, on_unhealthy}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Restart, E> {
                let policy = Policy::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(Restart(RestartMap {
                    policy: Some(policy),
                    ..RestartMap::default()
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Restart, A::Error> {
                RestartMap::deserialize(MapAccessDeserializer::new(map)).map(Restart)
            }
        }
        d.deserialize_any(V)
    }
}

/// Target of a TCP health check: `true` (the agent's first port) or a port.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum TcpTarget {
    AgentPort,
    Port(Port),
}

impl<'de> Deserialize<'de> for TcpTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TcpTarget;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true (the agent's port) or a port number")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TcpTarget, E> {
                if v {
                    Ok(TcpTarget::AgentPort)
                } else {
                    Err(E::custom(
                        "tcp: false is not a check; remove the health section instead",
                    ))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TcpTarget, E> {
                Port::deserialize(de::value::U64Deserializer::<E>::new(v)).map(TcpTarget::Port)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TcpTarget, E> {
                Port::deserialize(de::value::I64Deserializer::<E>::new(v)).map(TcpTarget::Port)
            }
        }
        d.deserialize_any(V)
    }
}

/// A health check: exactly one of `tcp`, `http`, `exec`, with timing.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub tcp: Option<TcpTarget>,
    /// HTTP path (`/health`) requested on the agent's first port; 2xx/3xx is healthy.
    pub http: Option<String>,
    pub exec: Option<Command>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    /// Consecutive failures before the agent is unhealthy.
    pub retries: Option<u32>,
    /// Failures during this time after start do not count.
    pub start_period: Option<Dur>,
}

/// One agent: a process with its own ports, health check and restart policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub name: String,
    pub command: Command,
    /// Working directory; relative paths are relative to the system file.
    pub workdir: Option<PathBuf>,
    pub port: Option<Port>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub env: IndexMap<String, String>,
    pub health: Option<Health>,
    pub restart: Option<Restart>,
    #[serde(default)]
    pub depends_on: Depends,
    /// Signal sent to stop the agent (default SIGTERM).
    pub stop_signal: Option<String>,
    /// Overrides the group's `stop_timeout`.
    pub stop_timeout: Option<Dur>,
    /// Ports of the host that lead to this agent (private groups; nftables DNAT).
    #[serde(default)]
    pub publish: Vec<Publish>,
}

impl Agent {
    /// All ports of the agent, `port` first.
    pub fn all_ports(&self) -> Vec<Port> {
        self.port.iter().chain(self.ports.iter()).copied().collect()
    }
}
