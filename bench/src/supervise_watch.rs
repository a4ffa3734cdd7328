//! Timestamps of file events in a few directories, for `bench supervise`'s breakdown of
//! agent-supervisor's restarts: an inotify descriptor read by a thread that stamps each
//! event with [`Instant::now`] as it arrives (file times are too coarse: the kernel hands
//! out coarse, tick-granular timestamps to files nobody asked about).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A file was opened.
pub const OPENED: u32 = libc::IN_OPEN;
/// A file opened for writing was closed.
pub const WRITTEN: u32 = libc::IN_CLOSE_WRITE;
/// A file was removed.
pub const REMOVED: u32 = libc::IN_DELETE;

/// One event: when it arrived, its kind (one of the constants above) and the file name.
#[derive(Debug, Clone)]
pub struct FileEvent {
    pub at: Instant,
    pub mask: u32,
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
        // SAFETY: inotify_init1 takes flags and returns a new fd or -1; no memory is shared.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "inotify_init1: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for d in dirs {
            let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes())
                .map_err(|_| format!("{} contains a NUL byte", d.display()))?;
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
            let wd = unsafe {
                libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), OPENED | WRITTEN | REMOVED)
            };
            if wd < 0 {
                return Err(format!(
                    "inotify_add_watch {}: {}",
                    d.display(),
                    std::io::Error::last_os_error()
                ));
            }
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
    pub fn first(&self, name: &str, mask: u32, since: Instant) -> Option<Mark> {
        let ev = self.events.lock().ok()?;
        ev.iter()
            .enumerate()
            .find(|(_, e)| e.at >= since && e.mask & mask != 0 && e.name == name)
            .map(|(seq, e)| Mark { at: e.at, seq })
    }

    /// The first event of kind `mask` on `name` after the event `after` (events read
    /// together share their time: the order is the kernel's).
    pub fn next(&self, name: &str, mask: u32, after: Mark) -> Option<Mark> {
        let ev = self.events.lock().ok()?;
        ev.iter()
            .enumerate()
            .skip(after.seq + 1)
            .find(|(_, e)| e.mask & mask != 0 && e.name == name)
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
fn read_events(fd: OwnedFd, events: &Mutex<Vec<FileEvent>>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one live pollfd for the duration of the call.
        if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
            continue;
        }
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let at = Instant::now();
        if n <= 0 {
            continue;
        }
        let parsed = parse(&buf[..n as usize], at);
        if let Ok(mut ev) = events.lock() {
            ev.extend(parsed);
        }
    }
}

/// `struct inotify_event`s: wd, mask, cookie, len (4 bytes each), then `len` bytes of name.
fn parse(mut b: &[u8], at: Instant) -> Vec<FileEvent> {
    let word = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
    };
    let mut out = Vec::new();
    while let (Some(mask), Some(len)) = (word(b, 4), word(b, 12)) {
        let end = 16 + len as usize;
        let Some(raw) = b.get(16..end) else { break };
        let name = String::from_utf8_lossy(raw)
            .trim_end_matches('\0')
            .to_string();
        out.push(FileEvent { at, mask, name });
        b = &b[end..];
    }
    out
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
