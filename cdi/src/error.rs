//! [`CdiError`]: every way reading, validating or using a CDI spec fails, each naming the
//! file and the field or device it is about.

use std::path::PathBuf;

/// An error of this crate. Every variant names the file, field, device or node concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdiError {
    /// The spec file could not be read.
    #[error("{}: cannot read: {reason}", file.display())]
    Read {
        /// The spec file.
        file: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The text is not JSON/YAML of the spec's shape; `field` is where it went wrong.
    #[error("{}: {field}: {reason}", file.display())]
    Syntax {
        /// The spec file.
        file: PathBuf,
        /// The field path (`devices[0].containerEdits.deviceNodes[1].type`), `.` for the top.
        field: String,
        /// What the parser said (with line and column where it knows them).
        reason: String,
    },
    /// `cdiVersion` names a version this crate does not read.
    #[error(
        "{}: cdiVersion: unsupported CDI version {version:?} (supported: 0.3.x to 0.8.x, 1.0.x and 1.1.x)",
        file.display()
    )]
    Version {
        /// The spec file.
        file: PathBuf,
        /// The version as written.
        version: String,
    },
    /// A field breaks a rule of the spec.
    #[error("{}: {field}: {reason}", file.display())]
    Invalid {
        /// The spec file.
        file: PathBuf,
        /// The field path, e.g. `devices[1].containerEdits.deviceNodes[0].path`.
        field: String,
        /// The rule broken.
        reason: String,
    },
    /// A name is not a qualified device name `vendor.com/class=device`.
    #[error("CDI device name {name:?}: {reason}")]
    Qualified {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No loaded spec defines this device.
    #[error("unknown CDI device {name:?}: no loaded spec defines it")]
    UnknownDevice {
        /// The qualified name asked for.
        name: String,
    },
    /// Two specs of the same priority (one directory) define the device, so neither is used.
    #[error(
        "CDI device {name:?} is defined by two specs of the same priority, {} and {}: neither is used",
        first.display(),
        second.display()
    )]
    Conflict {
        /// The qualified device name.
        name: String,
        /// The spec read first.
        first: PathBuf,
        /// The spec read second.
        second: PathBuf,
    },
    /// A device node's host path could not be used to fill in what the spec leaves out.
    #[error("device node {} (host {}): {reason}", path.display(), host_path.display())]
    Node {
        /// The node's path in the container.
        path: PathBuf,
        /// The node on the host that was looked at.
        host_path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}
