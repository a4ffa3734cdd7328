//! [`DeviceNode::resolve`]: a device node with everything the spec leaves out read from
//! `lstat(2)` of its host path, as the reference implementation fills it in.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{CdiError, DeviceNode, NodeKind};

/// The mode a node gets when the spec gives none and the host node cannot be read.
pub const DEFAULT_FILE_MODE: u32 = 0o666;

/// A device node ready to be made: nothing left to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedNode {
    /// The node's path in the container.
    pub path: PathBuf,
    /// The node on the host.
    pub host_path: PathBuf,
    /// Its type.
    pub kind: NodeKind,
    /// Major number (0 for a FIFO).
    pub major: u32,
    /// Minor number (0 for a FIFO).
    pub minor: u32,
    /// Permission bits (no file-type bits), e.g. `0o666`.
    pub file_mode: u32,
    /// Cgroup access: a subset of `rwm`; empty when the spec says `none`.
    pub permissions: String,
    /// Owner in the container, when the spec sets one.
    pub uid: Option<u32>,
    /// Group in the container, when the spec sets one.
    pub gid: Option<u32>,
}

impl DeviceNode {
    /// A node at `path` with everything else read from the host's node there.
    pub fn at(path: impl Into<PathBuf>) -> DeviceNode {
        DeviceNode {
            path: path.into(),
            host_path: None,
            kind: None,
            major: None,
            minor: None,
            file_mode: None,
            permissions: None,
            uid: None,
            gid: None,
        }
    }

    /// The node on the host: `hostPath`, or `path` when the spec gives none.
    pub fn host(&self) -> &Path {
        self.host_path.as_deref().unwrap_or(&self.path)
    }

    /// Fills type, major, minor and mode from `lstat(2)` of [`DeviceNode::host`] where the
    /// spec leaves them out. A spec that gives the type and the major number (or says
    /// FIFO) needs no host node; otherwise a missing host node, one that is not a device,
    /// or one of another type than the spec says is an error naming the node.
    pub fn resolve(&self) -> Result<ResolvedNode, CdiError> {
        let host = self.host();
        let err = |reason: String| CdiError::Node {
            path: self.path.clone(),
            host_path: host.to_owned(),
            reason,
        };
        let permissions = match self.permissions.as_deref() {
            None | Some("") => "rwm".to_owned(),
            Some("none") => String::new(),
            Some(p) => p.to_owned(),
        };
        let complete = match self.kind {
            Some(NodeKind::Fifo) => true,
            Some(_) => self.major.is_some(),
            None => false,
        };
        let done = |kind: NodeKind, major: u32, minor: u32, file_mode: u32| ResolvedNode {
            path: self.path.clone(),
            host_path: host.to_owned(),
            kind,
            major,
            minor,
            file_mode,
            permissions: permissions.clone(),
            uid: self.uid,
            gid: self.gid,
        };

        let meta = match fs::symlink_metadata(host) {
            Ok(meta) => meta,
            Err(e) => {
                return match (complete, self.kind) {
                    (true, Some(kind)) => Ok(done(
                        kind,
                        self.major.unwrap_or(0),
                        self.minor.unwrap_or(0),
                        self.file_mode.unwrap_or(DEFAULT_FILE_MODE),
                    )),
                    _ => Err(err(format!("cannot stat the host node: {e}"))),
                }
            }
        };
        let file_type = meta.file_type();
        let host_kind = if file_type.is_char_device() {
            NodeKind::Char
        } else if file_type.is_block_device() {
            NodeKind::Block
        } else if file_type.is_fifo() {
            NodeKind::Fifo
        } else {
            return Err(err("the host path is not a device node".into()));
        };
        let file_mode = self.file_mode.unwrap_or(meta.mode() & 0o7777);
        if complete {
            if let Some(kind) = self.kind {
                return Ok(done(
                    kind,
                    self.major.unwrap_or(0),
                    self.minor.unwrap_or(0),
                    file_mode,
                ));
            }
        }
        let kind = self.kind.unwrap_or(host_kind);
        if kind != host_kind {
            return Err(err(format!(
                "the spec says type {kind} but the host node is of type {host_kind}"
            )));
        }
        if kind == NodeKind::Fifo {
            return Ok(done(kind, 0, 0, file_mode));
        }
        let rdev = meta.rdev();
        let major = self.major.unwrap_or(libc::major(rdev));
        let minor = self.minor.unwrap_or(libc::minor(rdev));
        Ok(done(kind, major, minor, file_mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str) -> DeviceNode {
        DeviceNode::at(path)
    }

    #[test]
    fn resolve_dev_null_from_the_host() {
        let r = node("/dev/null").resolve().unwrap();
        assert_eq!(r.kind, NodeKind::Char);
        assert_eq!((r.major, r.minor), (1, 3));
        assert_eq!(r.file_mode, 0o666);
        assert_eq!(r.permissions, "rwm");
        assert_eq!(r.host_path, Path::new("/dev/null"));
    }

    #[test]
    fn resolve_host_path_differs_and_spec_values_win() {
        let mut n = node("/dev/nvidia0");
        n.host_path = Some("/dev/zero".into());
        n.file_mode = Some(0o600);
        n.permissions = Some("rw".into());
        n.uid = Some(1000);
        let r = n.resolve().unwrap();
        assert_eq!(r.path, Path::new("/dev/nvidia0"));
        assert_eq!(r.host_path, Path::new("/dev/zero"));
        assert_eq!((r.kind, r.major, r.minor), (NodeKind::Char, 1, 5));
        assert_eq!(
            (r.file_mode, r.permissions.as_str(), r.uid),
            (0o600, "rw", Some(1000))
        );

        let mut none = node("/dev/null");
        none.permissions = Some("none".into());
        assert_eq!(none.resolve().unwrap().permissions, "");
    }

    #[test]
    fn resolve_complete_spec_needs_no_host_node() {
        let mut n = node("/dev/nvidia-caps/nvidia-cap1");
        n.host_path = Some("/nonexistent/nvidia-cap1".into());
        n.kind = Some(NodeKind::Char);
        n.major = Some(235);
        n.minor = Some(1);
        let r = n.resolve().unwrap();
        assert_eq!((r.major, r.minor, r.file_mode), (235, 1, DEFAULT_FILE_MODE));
    }

    #[test]
    fn resolve_errors_name_the_node() {
        let err = node("/nonexistent/nvidia9").resolve().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("device node /nonexistent/nvidia9 (host /nonexistent/nvidia9): cannot stat the host node:"),
            "{msg}"
        );

        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        assert_eq!(
            node(file).resolve().unwrap_err().to_string(),
            format!("device node {file} (host {file}): the host path is not a device node")
        );

        let mut block = node("/dev/null");
        block.kind = Some(NodeKind::Block);
        assert_eq!(
            block.resolve().unwrap_err().to_string(),
            "device node /dev/null (host /dev/null): the spec says type b but the host node is of type c"
        );
    }
}
