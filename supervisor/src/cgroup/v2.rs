//! cgroup v2 files: controller enabling, limits, events and statistics, delegation detection.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::time::TimeSpec;
use nix::unistd::{access, AccessFlags};

use super::{
    keyed_value, mkdir, read_u64, read_words, write_file, CgroupError, Layout, Limits, Stats,
    DAEMON_LEAF,
};

/// Controllers enabled for children, when the parent has them.
const WANTED: &[&str] = &["memory", "pids", "cpu", "io"];

/// The CFS period written with `cpu.max`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// This process's cgroup2 path relative to the cgroup2 mount (`system.slice/x.service`; empty
/// for the root), from the `0::` line of `/proc/self/cgroup`.
pub fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    // Outside our cgroup namespace the path starts with "/.."; nothing sensible to use then.
    if path.split('/').any(|p| p == "..") {
        return None;
    }
    Some(path.trim_matches('/').to_string())
}

/// The daemon's own cgroup (relative to the mount) when systemd delegated it, on a unified
/// host: the cgroup is not the root, its directory, `cgroup.subtree_control` and `cgroup.procs`
/// are writable, and either systemd marked it delegated (xattr `trusted.delegate` or
/// `user.delegate` = `1`, systemd >= 251) or we are not root (then writability itself comes
/// from the delegation's chown). A process already moved into `<own>/`[`DAEMON_LEAF`] yields
/// `<own>`.
pub fn delegated_cgroup(layout: &Layout) -> Option<String> {
    let Layout::Unified { mount } = layout else {
        return None;
    };
    let own = own_cgroup()?;
    if own.is_empty() {
        return None;
    }
    let mut candidates = vec![own.clone()];
    if let Some(parent) = own.strip_suffix(&format!("/{DAEMON_LEAF}")) {
        candidates.insert(0, parent.to_string());
    }
    candidates
        .into_iter()
        .find(|rel| is_delegated(&mount.join(rel)))
}

fn is_delegated(dir: &Path) -> bool {
    let writable = |p: &Path| access(p, AccessFlags::W_OK).is_ok();
    if !(writable(dir)
        && writable(&dir.join("cgroup.subtree_control"))
        && writable(&dir.join("cgroup.procs")))
    {
        return false;
    }
    let euid = nix::unistd::geteuid();
    xattr_is_one(dir, "trusted.delegate") || xattr_is_one(dir, "user.delegate") || !euid.is_root()
}

fn xattr_is_one(path: &Path, name: &str) -> bool {
    let Ok(p) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let Ok(n) = CString::new(name) else {
        return false;
    };
    let mut buf = [0u8; 16];
    // SAFETY: `p` and `n` are NUL-terminated strings alive for the call; `buf` is writable for
    // `buf.len()` bytes and getxattr writes at most that many.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(r).is_ok_and(|len| len > 0 && buf[..len] == *b"1")
}

/// Creates `mount/rel` level by level, enabling the wanted controllers in every ancestor (from
/// the mount down to the parent of `rel`) that lacks them for its children. Nothing is written
/// where they already are, so a systemd-managed ancestor is left alone.
pub(super) fn create_down_to(mount: &Path, rel: &str) -> Result<(), CgroupError> {
    let mut dir = mount.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        enable_subtree(&dir)?;
        dir.push(part);
        mkdir(&dir)?;
    }
    Ok(())
}

/// Enables in `dir/cgroup.subtree_control` the wanted controllers `dir` has and has not yet
/// enabled: in one write, and when that fails one at a time to name the one that fails.
pub(super) fn enable_subtree(dir: &Path) -> Result<(), CgroupError> {
    let available = read_words(&dir.join("cgroup.controllers"));
    let enabled = read_words(&dir.join("cgroup.subtree_control"));
    let missing: Vec<&str> = WANTED
        .iter()
        .copied()
        .filter(|c| available.iter().any(|a| a == c) && !enabled.iter().any(|e| e == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let file = dir.join("cgroup.subtree_control");
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if write_file(&file, &all.join(" ")).is_ok() {
        return Ok(());
    }
    for c in missing {
        if let Err(CgroupError::Io { source, .. }) = write_file(&file, &format!("+{c}")) {
            let hint = match source.raw_os_error() {
                Some(libc::EBUSY) => {
                    " (the cgroup holds processes itself; cgroup v2 enables controllers for \
                     children only in cgroups without processes)"
                }
                Some(libc::ENOENT) | Some(libc::EINVAL) => {
                    " (the parent cgroup does not enable it for this cgroup)"
                }
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    " (no permission; is the cgroup delegated to this user?)"
                }
                _ => "",
            };
            return Err(CgroupError::EnableController {
                path: file,
                controller: c.to_string(),
                hint,
                source,
            });
        }
    }
    Ok(())
}

/// Writes the v2 limit files of the cgroup at `dir` (`rel` for messages).
pub(super) fn apply(rel: &str, dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    let need = |file: &str, controller: &'static str| -> Result<PathBuf, CgroupError> {
        let f = dir.join(file);
        if present(&f) {
            Ok(f)
        } else {
            Err(CgroupError::ControllerMissing {
                path: rel.to_string(),
                controller,
                why: format!(
                    "{} does not exist: the parent's cgroup.subtree_control lacks +{controller}",
                    f.display()
                ),
            })
        }
    };
    if let Some(v) = limits.memory_high {
        write_file(&need("memory.high", "memory")?, &v.to_string())?;
    }
    if let Some(v) = limits.memory_max {
        write_file(&need("memory.max", "memory")?, &v.to_string())?;
    }
    if let Some(v) = limits.memory_swap_max {
        need("memory.max", "memory")?;
        // Without swap accounting (CONFIG_MEMCG_SWAP off, swapaccount=0) there is no file.
        let f = dir.join("memory.swap.max");
        if present(&f) {
            write_file(&f, &v.to_string())?;
        }
    }
    if let Some(v) = limits.pids_max {
        write_file(&need("pids.max", "pids")?, &v.to_string())?;
    }
    if let Some(cores) = limits.cpu_max {
        write_file(
            &need("cpu.max", "cpu")?,
            &format!("{} {CPU_PERIOD_US}", cpu_quota_us(cores)),
        )?;
    }
    if let Some(w) = limits.cpu_weight {
        write_file(&need("cpu.weight", "cpu")?, &w.to_string())?;
    }
    Ok(())
}

/// Quota per [`CPU_PERIOD_US`] for `cores`, at least the kernel's minimum of 1 ms.
pub(super) fn cpu_quota_us(cores: f64) -> u64 {
    ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

/// Interface files exist on a real cgroup; unit tests run on a plain tree where they appear
/// only once written.
fn present(f: &Path) -> bool {
    cfg!(test) || f.exists()
}

/// `populated` from `cgroup.events` (covers descendants).
pub(super) fn populated(dir: &Path) -> bool {
    keyed_value(&dir.join("cgroup.events"), "populated").is_some_and(|v| v != 0)
}

/// Waits until the cgroup at `dir` and its descendants hold no process (`populated 0` in
/// `cgroup.events`) or `until` has passed; returns whether it emptied. The kernel notifies a
/// change of `cgroup.events` as a modification, so this sleeps in `poll(2)` on an inotify
/// watch; as the kernel sends at most one such event per file every 10 ms, it also re-reads
/// the file after 50 µs, 100 µs, 200 µs, ... (at most every 10 ms).
pub(super) fn wait_unpopulated(dir: &Path, until: Instant) -> bool {
    let events = dir.join("cgroup.events");
    // The watch exists before the first read, so no change can be missed.
    let watch = Watch::modify(&events);
    let mut step = Duration::from_micros(50);
    loop {
        if !populated(dir) {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        let nap = (until - now).min(step);
        match &watch {
            Some(w) => w.wait(nap),
            None => std::thread::sleep(nap),
        }
        step = (step * 2).min(Duration::from_millis(10));
    }
}

/// An inotify instance watching one file for modifications.
struct Watch(Inotify);

impl Watch {
    fn modify(path: &Path) -> Option<Watch> {
        let fd = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        fd.add_watch(path, AddWatchFlags::IN_MODIFY).ok()?;
        Some(Watch(fd))
    }

    /// Sleeps until an event arrives or `timeout` passes, then drops the queued events.
    fn wait(&self, timeout: Duration) {
        // ppoll, not poll: the naps start at 50 µs, below poll's millisecond.
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None);
        // Non-blocking: this stops once the queue is empty (EAGAIN).
        while self.0.read_events().is_ok_and(|e| !e.is_empty()) {}
    }
}

/// `oom_kill` from `memory.events`, which counts the cgroup and its descendants.
pub(super) fn oom_kills(dir: &Path) -> u64 {
    keyed_value(&dir.join("memory.events"), "oom_kill").unwrap_or(0)
}

/// `usage_usec` of `cpu.stat` (present in every cgroup2 cgroup), in seconds.
pub(super) fn cpu_seconds(dir: &Path) -> Option<f64> {
    keyed_value(&dir.join("cpu.stat"), "usage_usec").map(|us| us as f64 / 1e6)
}

pub(super) fn stats(dir: &Path, s: &mut Stats) {
    s.memory_usage = read_u64(&dir.join("memory.current"));
    s.memory_limit = read_u64(&dir.join("memory.max"));
    s.cpu_usage_seconds = cpu_seconds(dir);
    s.pids_current = read_u64(&dir.join("pids.current"));
}
