//! The daemon's heap stays the size of what it holds: it runs without glibc's per-thread
//! caches ([`exec_without_tcache`]), glibc's malloc is set up once, before any thread starts
//! ([`tune`]: one arena, blocks of [`MMAP_FROM`] and more mapped on their own), and every
//! [`TRIM_EVERY`] a blocking thread gives the free pages back (`malloc_trim(0)`). What the
//! process holds is reported ([`process_stats`]).
//!
//! Why: glibc keeps what a burst freed in its arenas, fragmenting, and returns only the top
//! of the main heap on its own. Under the soak's faults the long-lived daemon's RSS crept up
//! ~350-380 KiB/min over a live heap heaptrack measured flat (2.4 MiB at its peak in 10
//! minutes), whether with 2 arenas or with the trim alone; the three together, the same soak
//! and seed, +116 KiB/min over 8 minutes (+59 over 24 minutes of the 30-minute soak). A
//! burst's big buffers (status bodies, snapshots, up to ~140 KiB) would otherwise come from
//! the heap once glibc raised its mapping threshold after freeing the first. mimalloc
//! instead, tried in the same soak, started at 2.5 times the footprint (32 MiB) and grew
//! faster.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How often freed heap is given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Blocks of this size and more are mapped and unmapped on their own (a fixed threshold:
/// glibc's default starts at 128 KiB and rises to the biggest block freed so far).
pub const MMAP_FROM: i32 = 64 * 1024;

/// Sets glibc's malloc up for the daemon: one arena for every thread (the daemon's threads
/// allocate little, and each arena of its own kept what it once held) and [`MMAP_FROM`]. To be
/// called before the process starts a thread.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes no pointer; it is called before any other thread exists (the
    // caller's contract), so no allocation runs concurrently. A refusal (0) leaves glibc's
    // default, which is only less frugal.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_FROM);
    }
}

/// The glibc tunable that turns malloc's per-thread caches (tcache) off.
pub const TCACHE_OFF: &str = "glibc.malloc.tcache_count=0";

/// Set for the re-executed daemon: what `GLIBC_TUNABLES` was before (`=VALUE`, or `-` when it
/// was not set), to give its children the caller's.
const REEXEC_MARK: &str = "AGENT_SUPERVISOR_TUNABLES_WERE";

/// `GLIBC_TUNABLES` with [`TCACHE_OFF`] added to what the caller set.
pub fn tunables_with_tcache_off(before: Option<&str>) -> String {
    match before {
        Some(v) if !v.is_empty() => format!("{v}:{TCACHE_OFF}"),
        _ => TCACHE_OFF.to_string(),
    }
}

/// Runs the daemon with glibc's per-thread malloc caches off: the first time, re-executes
/// the same program with the same arguments and [`TCACHE_OFF`] added to `GLIBC_TUNABLES`
/// (the pid stays; glibc reads its tunables only when a program starts, and `mallopt` has no
/// setting for them); the second time, puts the caller's `GLIBC_TUNABLES` back, so that the
/// launch server, the bridge and the tools the daemon runs get what they would have. To be
/// called first thing, before the process has a thread. When the exec fails, the daemon
/// runs with the caches and says so.
///
/// Why: every thread keeps up to 7 freed blocks of each of 64 sizes in its cache, which
/// malloc counts as in use and `malloc_trim` cannot give back; with a core thread and up to
/// [`super::BLOCKING_THREADS`] blocking ones, each running other work in turn, those caches
/// filled for many minutes. The soak's long-lived daemon (same seed, 8 min): with the caches,
/// heap in use 1.9 → 2.8 MiB (+111 KiB/min) and RSS +123 KiB/min; without them, heap in use
/// flat at 1.7 MiB (+1.8 KiB/min) and RSS +28 KiB/min. The daemon's allocations are few, so
/// the caches' speed is not missed.
pub fn exec_without_tcache() {
    #[cfg(target_env = "gnu")]
    {
        use std::os::unix::process::CommandExt;
        if let Some(was) = std::env::var_os(REEXEC_MARK) {
            let was = was.to_string_lossy().into_owned();
            match was.strip_prefix('=') {
                Some(v) => std::env::set_var("GLIBC_TUNABLES", v),
                None => std::env::remove_var("GLIBC_TUNABLES"),
            }
            std::env::remove_var(REEXEC_MARK);
            return;
        }
        let before = std::env::var("GLIBC_TUNABLES").ok();
        let mark = before.as_ref().map_or("-".to_string(), |v| format!("={v}"));
        let mut args = std::env::args_os();
        let argv0 = args.next().unwrap_or_default();
        // The exec'd program is this one (`/proc/self/exe`), whatever `argv[0]` says.
        let err = std::process::Command::new("/proc/self/exe")
            .arg0(&argv0)
            .args(args)
            .env(REEXEC_MARK, mark)
            .env(
                "GLIBC_TUNABLES",
                tunables_with_tcache_off(before.as_deref()),
            )
            .exec();
        eprintln!(
            "agent-supervisor: cannot re-execute /proc/self/exe with {TCACHE_OFF}: {err}; \
             running with glibc's per-thread malloc caches"
        );
    }
}

/// Starts the task; it ends with `cancel`.
pub fn start(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    let _ = tokio::task::spawn_blocking(trim).await;
                }
            }
        }
    });
}

/// Gives the free pages of every malloc arena back; whether it freed any is of no account.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer and may be called from any thread at any time;
    // it only takes the arenas' locks and returns free pages (madvise) to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the daemon's own process holds, as `/metrics` and `status --json` report it (the
/// Prometheus client libraries' `process_*` series, and glibc's view of the heap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// `VmRSS`: every resident page, the binary's mapped code included.
    pub resident_bytes: u64,
    /// `RssAnon`: the resident pages that are the process's own (heap, stacks).
    pub anon_bytes: u64,
    /// Bytes the program holds from malloc (`mallinfo2`: in the arena and mapped on their
    /// own); `None` off glibc.
    pub heap_in_use_bytes: Option<u64>,
    /// Bytes free in the arena that glibc keeps (`mallinfo2`'s `fordblks`).
    pub heap_free_bytes: Option<u64>,
    pub threads: u64,
    pub open_fds: u64,
    /// User and system CPU time so far.
    pub cpu_seconds: f64,
}

/// Reads [`ProcessStats`] from `/proc/self` and glibc; a field it cannot read is 0. Blocking
/// (a few procfs reads): called where the snapshot's cgroup reads run.
pub fn process_stats() -> ProcessStats {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let (heap_in_use_bytes, heap_free_bytes) = heap();
    ProcessStats {
        resident_bytes: field("VmRSS") * 1024,
        anon_bytes: field("RssAnon") * 1024,
        heap_in_use_bytes,
        heap_free_bytes,
        threads: field("Threads"),
        open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
        cpu_seconds: cpu_seconds().unwrap_or(0.0),
    }
}

/// `utime + stime` of `/proc/self/stat`, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)?;
    Some((utime + stime) as f64 / hz as f64)
}

/// glibc's bytes in use and free: `(uordblks + hblkhd, fordblks)`.
#[cfg(target_env = "gnu")]
fn heap() -> (Option<u64>, Option<u64>) {
    // SAFETY: mallinfo2 takes no pointer and returns a plain struct; it takes the arenas'
    // locks, so it is safe beside other threads' allocations.
    let m = unsafe { libc::mallinfo2() };
    (
        Some((m.uordblks + m.hblkhd) as u64),
        Some(m.fordblks as u64),
    )
}

#[cfg(not(target_env = "gnu"))]
fn heap() -> (Option<u64>, Option<u64>) {
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_gives_back_what_a_burst_freed() {
        // A burst of small blocks, then all freed but one at the end that pins the heap's top:
        // glibc keeps the rest resident until trimmed.
        let rss_anon_kib = || process_stats().anon_bytes / 1024;
        let burst: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1000]).collect();
        let pin = vec![1u8; 1000];
        drop(burst);
        let before = rss_anon_kib();
        trim();
        let after = rss_anon_kib();
        assert!(
            after + 8 * 1024 < before,
            "RssAnon {before} KiB before the trim, {after} KiB after"
        );
        drop(pin);
    }

    #[test]
    fn the_callers_tunables_are_kept() {
        assert_eq!(tunables_with_tcache_off(None), TCACHE_OFF);
        assert_eq!(tunables_with_tcache_off(Some("")), TCACHE_OFF);
        assert_eq!(
            tunables_with_tcache_off(Some("glibc.malloc.check=3")),
            format!("glibc.malloc.check=3:{TCACHE_OFF}")
        );
    }

    #[test]
    fn process_stats_see_what_the_process_holds() {
        let before = process_stats();
        let block = vec![7u8; 32 << 20];
        let during = process_stats();
        assert!(
            before.resident_bytes > 0 && before.anon_bytes > 0,
            "{before:?}"
        );
        assert!(before.threads >= 1 && before.open_fds >= 3, "{before:?}");
        // Absolute, not differences: the other tests of this binary allocate beside it.
        let in_use = during.heap_in_use_bytes.unwrap_or(0);
        assert!(
            in_use >= 32 << 20,
            "heap in use {in_use} with a 32 MiB block"
        );
        assert!(
            during.anon_bytes >= 30 << 20,
            "RssAnon {} with 32 MiB written",
            during.anon_bytes
        );
        assert_eq!(block.len(), 32 << 20);
        drop(block);
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(50) {}
        assert!(process_stats().cpu_seconds > 0.0);
    }
}
