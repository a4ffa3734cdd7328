//! Resource limits of a cgroup, from the system file's `resources`, and usage figures.

use super::CgroupError;

/// Resource limits of a cgroup. `None` leaves the current value (unlimited on a new cgroup).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Hard limit in bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`).
    pub memory_max: Option<u64>,
    /// Throttling threshold in bytes (v2 `memory.high`, v1 `memory.soft_limit_in_bytes`).
    pub memory_high: Option<u64>,
    /// Swap in bytes (v2 `memory.swap.max`, v1 `memory.memsw.limit_in_bytes` = memory + swap,
    /// only together with `memory_max`). Skipped where the kernel has no swap accounting.
    pub memory_swap_max: Option<u64>,
    /// CPU quota in cores per 100 ms period (v2 `cpu.max`, v1 `cpu.cfs_quota_us`).
    pub cpu_max: Option<f64>,
    /// Relative weight 1-10000, 100 = default (v2 `cpu.weight`, v1 `cpu.shares` = w*1024/100).
    pub cpu_weight: Option<u16>,
    /// Processes and threads (`pids.max`).
    pub pids_max: Option<u64>,
}

impl Limits {
    pub(super) fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    pub(super) fn validate(&self, path: &str) -> Result<(), CgroupError> {
        let bad = |why: String| {
            Err(CgroupError::InvalidLimit {
                path: path.to_string(),
                why,
            })
        };
        if let Some(c) = self.cpu_max {
            if !c.is_finite() || c <= 0.0 || c > 100_000.0 {
                return bad(format!(
                    "cpu_max must be a positive number of cores, got {c}"
                ));
            }
        }
        if let Some(w) = self.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return bad(format!("cpu_weight must be 1-10000, got {w}"));
            }
        }
        if self.pids_max == Some(0) {
            return bad("pids_max must be at least 1".into());
        }
        Ok(())
    }

    pub(super) fn wants_memory(&self) -> bool {
        self.memory_max.is_some() || self.memory_high.is_some() || self.memory_swap_max.is_some()
    }

    pub(super) fn wants_cpu(&self) -> bool {
        self.cpu_max.is_some() || self.cpu_weight.is_some()
    }
}

impl From<&agent_config::model::Resources> for Limits {
    /// Swap defaults to 0 when `memory` is set and `memory_swap` is not.
    fn from(r: &agent_config::model::Resources) -> Limits {
        let memory_max = r.memory.map(|b| b.0);
        Limits {
            memory_max,
            memory_high: r.memory_high.map(|b| b.0),
            memory_swap_max: r.memory_swap.map(|b| b.0).or(memory_max.map(|_| 0)),
            cpu_max: r.cpus.map(|c| c.0),
            cpu_weight: r.cpu_weight,
            pids_max: r.pids,
        }
    }
}

/// Usage figures of a cgroup (its whole subtree); `None` where the controller is absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub memory_usage: Option<u64>,
    /// `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub cpu_usage_seconds: Option<f64>,
    pub pids_current: Option<u64>,
}
