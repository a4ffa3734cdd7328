//! cgroup v1 files (hybrid and legacy hosts): memory, pids and cpu limits, OOM counts, freezer.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{keyed_value, read_u64, subdirs, write_file, CgroupError, Limits, Stats};

/// The CFS period written with `cpu.cfs_quota_us`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// v1 memory reports "unlimited" as `PAGE_COUNTER_MAX * PAGE_SIZE` (about 2^63); anything this
/// large is treated as no limit.
const UNLIMITED: u64 = 1 << 62;

/// v1 memory must be hierarchical (`memory.use_hierarchy` 1, the only value kernels >= 5.x
/// accept); on an old kernel with 0 at the top, set it.
pub(super) fn check_use_hierarchy(mount: &Path) -> Result<(), CgroupError> {
    let f = mount.join("memory.use_hierarchy");
    if read_u64(&f) == Some(0) {
        write_file(&f, "1")?;
    }
    Ok(())
}

/// Writes the limits of the controllers mounted in this hierarchy (`controllers`) to `dir`.
pub(super) fn apply(
    controllers: &[String],
    dir: &Path,
    limits: &Limits,
) -> Result<(), CgroupError> {
    let has = |c: &str| controllers.iter().any(|x| x == c);
    if has("memory") {
        if let Some(max) = limits.memory_max {
            set_memory_max(dir, max, limits.memory_swap_max)?;
        }
        if let Some(high) = limits.memory_high {
            write_file(&dir.join("memory.soft_limit_in_bytes"), &high.to_string())?;
        }
    }
    if has("pids") {
        if let Some(v) = limits.pids_max {
            write_file(&dir.join("pids.max"), &v.to_string())?;
        }
    }
    if has("cpu") {
        if let Some(cores) = limits.cpu_max {
            write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write_file(
                &dir.join("cpu.cfs_quota_us"),
                &super::v2::cpu_quota_us(cores).to_string(),
            )?;
        }
        if let Some(w) = limits.cpu_weight {
            write_file(&dir.join("cpu.shares"), &cpu_shares(w).to_string())?;
        }
    }
    Ok(())
}

/// v2 weight (1-10000, default 100) to v1 shares (2-262144, default 1024).
pub(super) fn cpu_shares(weight: u16) -> u64 {
    (u64::from(weight) * 1024 / 100).clamp(2, 262_144)
}

/// `memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes` = memory + swap where swap
/// accounting exists. memsw may never be below the memory limit, so when raising the limit the
/// kernel refuses (EINVAL) until memsw is raised first.
fn set_memory_max(dir: &Path, max: u64, swap: Option<u64>) -> Result<(), CgroupError> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let memsw_value = swap
        .filter(|_| memsw.exists())
        .map(|s| max.saturating_add(s).min(i64::MAX as u64));
    match (write_file(&limit, &max.to_string()), memsw_value) {
        (Ok(()), None) => Ok(()),
        (Ok(()), Some(sw)) => write_file(&memsw, &sw.to_string()),
        (Err(CgroupError::Io { source, .. }), Some(sw))
            if source.raw_os_error() == Some(libc::EINVAL) =>
        {
            write_file(&memsw, &sw.to_string())?;
            write_file(&limit, &max.to_string())
        }
        (Err(e), _) => Err(e),
    }
}

/// OOM kills in `dir` and below: v1 counts a kill only in the victim's own cgroup.
pub(super) fn oom_kills(dir: &Path) -> u64 {
    let own = keyed_value(&dir.join("memory.oom_control"), "oom_kill").unwrap_or(0);
    own + subdirs(dir).iter().map(|d| oom_kills(d)).sum::<u64>()
}

/// Freezes (waiting up to 200 ms for `FROZEN`) or thaws through `freezer.state`; best effort.
pub(super) fn freeze(dir: &Path, frozen: bool) {
    let f = dir.join("freezer.state");
    if write_file(&f, if frozen { "FROZEN" } else { "THAWED" }).is_err() || !frozen {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        if std::fs::read_to_string(&f).is_ok_and(|s| s.trim() == "FROZEN") {
            return;
        }
        sleep(Duration::from_millis(5));
    }
}

pub(super) fn stats(controllers: &[String], dir: &Path, s: &mut Stats) {
    let has = |c: &str| controllers.iter().any(|x| x == c);
    if has("memory") {
        s.memory_usage = read_u64(&dir.join("memory.usage_in_bytes"));
        s.memory_limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|&v| v < UNLIMITED);
    }
    if has("cpuacct") {
        s.cpu_usage_seconds = read_u64(&dir.join("cpuacct.usage")).map(|ns| ns as f64 / 1e9);
    }
    if has("pids") {
        s.pids_current = read_u64(&dir.join("pids.current"));
    }
}
