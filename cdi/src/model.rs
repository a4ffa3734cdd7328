//! The CDI spec model: what one spec file says, in the spec's camelCase field names.
//!
//! Unknown fields are ignored on purpose (a newer `nvidia-ctk` may add some); the fields
//! this crate does not act on (`intelRdt`, `netDevices`) are among them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// One CDI spec file: a vendor/class and the devices it defines.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// The CDI spec version the file is written for, e.g. `0.5.0`.
    #[serde(default)]
    pub cdi_version: String,
    /// `vendor.com/class`, e.g. `nvidia.com/gpu`.
    #[serde(default)]
    pub kind: String,
    /// The devices, each requested as `kind=name`.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Edits applied once when any device of this spec is requested.
    #[serde(default)]
    pub container_edits: ContainerEdits,
    /// Free-form metadata for consumers (spec 0.6.0+).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The file the spec was read from (empty for a spec built in code).
    #[serde(skip)]
    pub source: PathBuf,
}

/// One device of a spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The device's name within its kind: `0`, `GPU-<uuid>`, `all`.
    #[serde(default, deserialize_with = "scalar_string")]
    pub name: String,
    /// Free-form metadata for consumers (spec 0.6.0+).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Edits applied when this device is requested.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// The changes to make to a container for a spec or a device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    /// Environment entries, each `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Device nodes to create in the container (and allow in its cgroup).
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    /// Bind (or other) mounts from the host.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// OCI hooks to run.
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Extra groups for the container's process (spec 0.7.0+); 0 entries are ignored.
    #[serde(default, rename = "additionalGids", alias = "additionalGIDs")]
    pub additional_gids: Vec<u32>,
}

impl ContainerEdits {
    /// Whether these edits change nothing (a device's edits must change something).
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.mounts.is_empty()
            && self.hooks.is_empty()
            && self.additional_gids.is_empty()
    }

    /// Appends `other`'s edits after this one's, as the reference implementation merges them.
    pub fn append(&mut self, other: &ContainerEdits) {
        self.env.extend(other.env.iter().cloned());
        self.device_nodes.extend(other.device_nodes.iter().cloned());
        self.mounts.extend(other.mounts.iter().cloned());
        self.hooks.extend(other.hooks.iter().cloned());
        self.additional_gids
            .extend(other.additional_gids.iter().copied());
    }
}

/// A device node to expose in the container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// The node's path in the container.
    #[serde(default)]
    pub path: PathBuf,
    /// The node's path on the host, when it differs from `path` (spec 0.5.0+).
    #[serde(default)]
    pub host_path: Option<PathBuf>,
    /// The node type (`type`: `c`/`u`, `b`, `p`); read from the host node when absent.
    #[serde(default, rename = "type")]
    pub kind: Option<NodeKind>,
    /// Major number; read from the host node when absent.
    #[serde(default)]
    pub major: Option<u32>,
    /// Minor number; read from the host node when absent.
    #[serde(default)]
    pub minor: Option<u32>,
    /// Permission bits of the node; read from the host node when absent.
    #[serde(default)]
    pub file_mode: Option<u32>,
    /// Cgroup access, a subset of `rwm` (`none` for no access); `rwm` when absent.
    #[serde(default)]
    pub permissions: Option<String>,
    /// Owner in the container.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Group in the container.
    #[serde(default)]
    pub gid: Option<u32>,
}

/// The type of a device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A character device (`c`, or `u` for unbuffered, which Linux treats alike).
    Char,
    /// A block device (`b`).
    Block,
    /// A FIFO (`p`).
    Fifo,
}

impl NodeKind {
    /// The letter OCI and `mknod(1)` use: `c`, `b` or `p`.
    pub fn letter(self) -> char {
        match self {
            NodeKind::Char => 'c',
            NodeKind::Block => 'b',
            NodeKind::Fifo => 'p',
        }
    }

    /// Reads the spec's `type` value.
    pub fn from_letter(s: &str) -> Option<NodeKind> {
        match s {
            "c" | "u" => Some(NodeKind::Char),
            "b" => Some(NodeKind::Block),
            "p" => Some(NodeKind::Fifo),
            _ => None,
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeKind::from_letter(&s).ok_or_else(|| {
            de::Error::invalid_value(
                de::Unexpected::Str(&s),
                &"one of \"c\", \"u\", \"b\", \"p\"",
            )
        })
    }
}

/// A mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// The source on the host.
    #[serde(default)]
    pub host_path: PathBuf,
    /// The mount point in the container.
    #[serde(default)]
    pub container_path: PathBuf,
    /// The filesystem type (`type`, spec 0.4.0+), e.g. `none` or `tmpfs`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Mount options, e.g. `ro`, `nosuid`, `nodev`, `bind`.
    #[serde(default)]
    pub options: Vec<String>,
}

/// An OCI hook to run at one point of the container's life.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// When it runs: `createContainer`, `createRuntime`, `startContainer`, `prestart`,
    /// `poststart` or `poststop`.
    #[serde(default)]
    pub hook_name: String,
    /// The program, an absolute path.
    #[serde(default)]
    pub path: PathBuf,
    /// Its argv, `args[0]` included.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment, each `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds before it is killed; must be over 0 when set.
    #[serde(default)]
    pub timeout: Option<u32>,
}

/// Device names such as `0` are numbers to YAML when unquoted: accept any scalar as text.
fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a device name")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}
