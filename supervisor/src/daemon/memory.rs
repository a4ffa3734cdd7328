//! The daemon's heap stays the size of what it holds: glibc's malloc is set up once, before
//! any thread starts ([`tune`]: one arena, blocks of [`MMAP_FROM`] and more mapped on their
//! own), and every [`TRIM_EVERY`] a blocking thread gives the free pages back
//! (`malloc_trim(0)`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_gives_back_what_a_burst_freed() {
        // A burst of small blocks, then all freed but one at the end that pins the heap's top:
        // glibc keeps the rest resident until trimmed.
        fn rss_anon_kib() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        }
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
}
