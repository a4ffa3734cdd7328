//! Benchmarks that compare agent-supervisor with its peers in one run and print a table.

pub mod launch;
pub mod oci;
pub mod ours;
pub mod table;
pub mod supervise;
