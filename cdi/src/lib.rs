//! CDI (Container Device Interface) specs, as `nvidia-ctk cdi generate` writes them into
//! `/etc/cdi` and `/var/run/cdi`: the model, a parser and validator, a registry of the
//! specs of several directories by priority, and the device nodes resolved from the host.
//!
//! [`parse`] reads one file (JSON when it ends in `.json`, YAML otherwise) and validates it
//! as the reference implementation (`cncf-tags/container-device-interface`) does;
//! [`Registry::load`] reads directories, a later one taking priority; [`Registry::edits`]
//! merges what a list of qualified device names (`nvidia.com/gpu=0`) asks of a container;
//! [`DeviceNode::resolve`] fills a node's type, numbers and mode from `lstat(2)`.
//!
//! YAML is read with `serde-saphyr` (2.x): it is maintained (unlike the archived
//! `serde_yaml`), a serde adapter over a saphyr-derived pure-Rust parser (the same family
//! as the `saphyr-parser` the config crate uses), built to be panic-free on hostile input
//! and with a budget on document size; its `with_deserializer_from_str` lets
//! `serde_path_to_error` report the field path of a type error, for YAML as for JSON.
//!
//! Not acted on: `intelRdt` and `netDevices` (ignored like any unknown field), and the
//! Kubernetes syntax rules for annotation keys.

mod error;
mod model;
mod name;
mod node;
mod parse;
mod registry;
pub mod validate;

pub use error::CdiError;
pub use model::{ContainerEdits, Device, DeviceNode, Hook, Mount, NodeKind, Spec};
pub use name::parse_qualified;
pub use node::ResolvedNode;
pub use parse::parse;
pub use registry::Registry;
