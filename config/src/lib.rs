//! The agent-supervisor system file: one YAML file describing hosts, images, groups and agents.
//!
//! [`load::load`] reads it (every error with file:line:column and field path),
//! [`validate::validate`] runs the static checks, [`defaults`] holds every default value.

pub mod defaults;
pub mod graph;
pub mod load;
pub mod locate;
pub mod model;
pub mod report;
pub mod scripts;
pub mod units;
pub mod validate;

pub use load::{load, LoadError, Loaded};
pub use report::{Finding, Severity};
