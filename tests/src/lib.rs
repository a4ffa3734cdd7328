//! Test harness for agent-supervisor's end-to-end tests: temporary system files and a
//! throwaway QEMU VM with a full cgroup v2 host.

pub mod daemon;
pub mod fixture;
pub mod fuzz;
pub mod fuzz_tar;
pub mod hosts;
pub mod vm;
