//! Benchmarks that compare agent-supervisor with its peers in one run and print a table.

pub mod bridge;
pub mod bridge_lab;
pub mod build;
pub mod clients;
pub mod deploy;
pub mod launch;
pub mod observe;
pub mod observe_http;
pub mod observe_lab;
pub mod observe_report;
pub mod oci;
pub mod ours;
pub mod scale;
pub mod scale_peers;
pub mod soak;
pub mod soak_faults;
pub mod soak_report;
pub mod supervise;
pub mod supervise_ours;
pub mod supervise_procs;
pub mod supervise_report;
pub mod supervise_supervisord;
pub mod supervise_watch;
pub mod table;
