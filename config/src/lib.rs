//! The agent-supervisor system file: one YAML file describing hosts, images, groups and agents.
//!
//! [`load::load`] reads it (every error with file:line:column and field path),
//! [`validate::validate`] runs the static checks, [`defaults`] holds every default value.

mod bridge;
mod de;
pub mod defaults;
pub mod envfile;
pub mod fsread;
pub mod graph;
pub mod load;
pub mod locate;
pub mod model;
mod names;
pub mod network;
mod recover;
pub mod report;
mod rules;
pub mod scripts;
pub mod tree;
pub mod units;
pub mod validate;

pub use load::{load, load_all, LoadError, Loaded};
pub use recover::UNREADABLE;
pub use report::{Finding, Severity};
