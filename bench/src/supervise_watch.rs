//! Timestamps of file events in a few directories, for `bench supervise`'s breakdown of
//! agent-supervisor's restarts: an inotify descriptor read by a thread that stamps each
//! event with [`Instant::now`] as it arrives (file times are too coarse: the kernel hands
//! out coarse, tick-granular timestamps to files nobody asked about).

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// A file was opened.
pub const OPENED: AddWatchFlags = AddWatchFlags::IN_OPEN;
/// A file opened for writing was closed.
pub const WRITTEN: AddWatchFlags = AddWatchFlags::IN_CLOSE_WRITE;
/// A file was removed.
pub const REMOVED: AddWatchFlags = AddWatchFlags::IN_DELETE;

/// One event: when it arrived, its kind (one of the constants above) and the file name.
#[derive(Debug, Clone)]
pub struct FileEvent {
    pub at: Instant,
    pub mask: AddWatchFlags,
    pub name: String,
}

/// Where an event is in the sequence, and when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub at: Instant,
    pub seq: usize,
}

/// Watches directories until dropped.
pub struct Watcher {
    events: Arc<Mutex<Vec<FileEvent>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Watches `dirs` for opens, writes and removals of the files in them.
    pub fn new(dirs: &[&Path]) -> Result<Watcher, String> {
        let fd = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| format!("inotify_init1: {e}"))?;
        for d in dirs {
            fd.add_watch(*d, OPENED | WRITTEN | REMOVED)
                .map_err(|e| format!("inotify_add_watch {}: {e}", d.display()))?;
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ev, st) = (events.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bench-inotify".into())
            .spawn(move || read_events(fd, &ev, &st))
            .map_err(|e| format!("start the inotify thread: {e}"))?;
        Ok(Watcher {
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// The first event of kind `mask` on `name` that arrived at or after `since`.
    pub fn first(&self, name: &str, mask: AddWatchFlags, since: Instant) -> Option<Mark> {
        let ev = self.events.lock().ok()?;
        ev.iter()
            .enumerate()
            .find(|(_, e)| e.at >= since && e.mask.intersects(mask) && e.name == name)
            .map(|(seq, e)| Mark { at: e.at, seq })
    }

    /// The first event of kind `mask` on `name` after the event `after` (events read
    /// together share their time: the order is the kernel's).
    pub fn next(&self, name: &str, mask: AddWatchFlags, after: Mark) -> Option<Mark> {
        let ev = self.events.lock().ok()?;
        ev.iter()
            .enumerate()
            .skip(after.seq + 1)
            .find(|(_, e)| e.mask.intersects(mask) && e.name == name)
            .map(|(seq, e)| Mark { at: e.at, seq })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: waits for events (100 ms at a time, to see `stop`) and records them.
fn read_events(fd: Inotify, events: &Mutex<Vec<FileEvent>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if !poll(&mut p, PollTimeout::from(100u8)).is_ok_and(|n| n > 0) {
            continue;
        }
        let Ok(read) = fd.read_events() else { continue };
        let at = Instant::now();
        let parsed = read.into_iter().map(|e| FileEvent {
            at,
            mask: e.mask,
            name: e
                .name
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
        if let Ok(mut ev) = events.lock() {
            ev.extend(parsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_writes_opens_and_removals_in_order() {
        let dir = std::env::temp_dir().join(format!("as-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the watched dir");
        let w = Watcher::new(&[dir.as_path()]).expect("inotify");
        let t = Instant::now();
        std::fs::write(dir.join("a.exit"), "x").expect("write a.exit");
        let _ = std::fs::read(dir.join("a.exit")).expect("read a.exit");
        std::fs::remove_file(dir.join("a.exit")).expect("remove a.exit");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while w.first("a.exit", REMOVED, t).is_none() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let written = w.first("a.exit", WRITTEN, t).expect("write seen");
        let opened = w
            .next("a.exit", OPENED, written)
            .expect("open after the write seen");
        let removed = w.next("a.exit", REMOVED, opened).expect("removal seen");
        assert!(written.seq < opened.seq && opened.seq < removed.seq);
        assert!(written.at <= opened.at && opened.at <= removed.at);
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
