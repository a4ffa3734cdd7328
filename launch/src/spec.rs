//! What the daemon hands the launcher: a group spec (build the pod) and an agent spec (run
//! one agent in it), as JSON files under the run directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One entry of the group's root file system.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum RootEntry {
    /// Bind this host directory read-only at the same path.
    Dir(PathBuf),
    /// Create this symlink (usrmerge `/bin -> usr/bin`).
    Symlink { path: PathBuf, target: PathBuf },
}

/// The group's root file system.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum RootfsSpec {
    /// A read-only tmpfs skeleton with host directories bound read-only into it.
    Host(Vec<RootEntry>),
    /// A directory used as the root (bound onto itself), e.g. an unpacked image.
    Dir { path: PathBuf, readonly: bool },
    /// An image's layers stacked with overlayfs: `data` is the mount data
    /// (`lowerdir=...,upperdir=...,workdir=...`).
    Overlay { data: String },
}

/// A bind mount from the host into the group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BindSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

/// Everything `__group-init` needs to build a group's pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupSpec {
    pub group: String,
    pub hostname: String,
    /// `cgroup.procs` files of the init's cgroup, one per hierarchy.
    pub cgroup_procs: Vec<PathBuf>,
    /// The directory the new root is assembled in (must exist and be empty).
    pub root_dir: PathBuf,
    pub rootfs: RootfsSpec,
    pub binds: Vec<BindSpec>,
    /// Own network namespace instead of the host's (loopback only, unless `network`).
    pub private_network: bool,
    /// The private network's veth, bridge and address (`private_network` must be set).
    #[serde(default)]
    pub network: Option<NetSpec>,
    /// Paths hidden inside the group (files: /dev/null over them; dirs: empty read-only tmpfs).
    pub masked_paths: Vec<PathBuf>,
    /// Paths made read-only inside the group.
    pub readonly_paths: Vec<PathBuf>,
    /// Device nodes made in the group's `/dev` (GPU passthrough); the device cgroup that
    /// lets them be opened is set by whoever made the cgroups.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// `(target, link)`: symlinks made in the new root after the binds (CDI hooks).
    #[serde(default)]
    pub symlinks: Vec<(PathBuf, PathBuf)>,
}

/// A device node: made with `mknod` at `path` (under `/dev`), or, where that is refused or
/// the path is elsewhere, the host's `host_path` bound there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceSpec {
    pub path: PathBuf,
    pub host_path: PathBuf,
    /// A block device (else a character device).
    pub block: bool,
    pub major: u32,
    pub minor: u32,
    /// Permission bits (`0o666`).
    pub file_mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A group's private network: `eth0` with `address/prefix` and the default route through
/// `gateway` inside; the veth peer (`veth_prefix` and the launcher's pid in hex) on the host's
/// bridge `bridge`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetSpec {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    pub bridge: String,
    pub veth_prefix: String,
}

/// A resource limit for the agent process (`setrlimit`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rlimit {
    /// `nofile`, `nproc`, `core`, `memlock`, `stack`, ...
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// Everything `__agent` needs to start one agent inside a running group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentSpec {
    pub group: String,
    pub agent: String,
    /// The group init, as seen from the host pid namespace.
    pub init_pid: i32,
    /// The init's start time (`/proc/PID/stat` field 22), to refuse a recycled pid.
    pub init_start_time: u64,
    pub private_network: bool,
    /// `cgroup.procs` files of the agent's cgroup, one per hierarchy.
    pub cgroup_procs: Vec<PathBuf>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory inside the group.
    pub workdir: PathBuf,
    /// Capabilities the agent keeps (e.g. `CAP_CHOWN`); every other one is dropped.
    pub capabilities: Vec<String>,
    /// Install the default seccomp filter.
    pub seccomp: bool,
    pub rlimits: Vec<Rlimit>,
    /// Where the shim writes the agent's pid (host pid namespace) once it runs.
    pub pid_file: Option<PathBuf>,
    /// Where the shim writes the agent's exit (JSON) when it ends.
    pub exit_file: Option<PathBuf>,
    /// Log files the shim writes the agent's stdout and stderr to (timestamped, rotated).
    /// `None`: the agent inherits the shim's stdout and stderr (`run-group` in a terminal).
    #[serde(default)]
    pub log: Option<LogSpec>,
}

/// The agent's log files, written by its shim (`crate::launch::logfile`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogSpec {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Rotate a file before it would grow beyond this many bytes (0: never rotate).
    pub max_size: u64,
    /// Rotated files kept per stream (`path.1` newest ... `path.<keep>` oldest).
    pub keep: u32,
    /// Where the shim publishes the bytes it could not write (`crate::logdrops`; in the run
    /// directory, not on the log disk). `None`: they are only noted in the log files.
    #[serde(default)]
    pub drops: Option<PathBuf>,
}

/// How an agent ended, as the shim records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub pid: i32,
    /// Exit status when the agent exited.
    pub code: Option<i32>,
    /// Signal number when a signal ended it.
    pub signal: Option<i32>,
    /// Set when the agent could not be started at all.
    pub error: Option<String>,
}

impl ExitRecord {
    /// The shim's own exit status for this record: the code, or 128 + signal, or 127.
    pub fn status(&self) -> i32 {
        match (self.code, self.signal, &self.error) {
            (_, _, Some(_)) => 127,
            (Some(c), _, _) => c,
            (None, Some(s), _) => 128 + s,
            _ => 255,
        }
    }
}

/// Errors reading or writing a spec; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read launch spec {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse launch spec {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write launch spec {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The spec path that names the launcher's stdin: `Pod::start` writes the group spec into
/// that pipe once the group's cgroups exist, so the launcher is exec'd and loaded meanwhile
/// (and the spec is never on disk).
pub const ON_STDIN: &str = "/proc/self/fd/0";

/// Reads a JSON spec file (or pipe).
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::Read {
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SpecError::Parse {
        path: path.into(),
        source,
    })
}

/// Writes a JSON spec file, readable by root only.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), SpecError> {
    let bytes = serde_json::to_vec(value).map_err(|e| SpecError::Write {
        path: path.into(),
        source: std::io::Error::other(e),
    })?;
    write_bytes(path, &bytes)
}

/// Writes an already encoded spec, readable by root only (mode 0600).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), SpecError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| SpecError::Write {
            path: path.into(),
            source,
        })?;
    f.write_all(bytes).map_err(|source| SpecError::Write {
        path: path.into(),
        source,
    })
}
