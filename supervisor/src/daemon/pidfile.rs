//! Agents' pid files without polling: the shim writes `agents/<agent>.pid` once the agent's
//! exec succeeded; one inotify instance for the daemon (a watch per pod's `agents`
//! directory, `IN_CLOSE_WRITE | IN_MOVED_TO`) wakes the waiter the moment the file is
//! complete. Where inotify is not available a wait falls back to looking every 10 ms.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

/// How often a wait without inotify looks at the file.
const POLL: Duration = Duration::from_millis(10);

/// The daemon's pid-file watcher; cheap to clone.
#[derive(Clone, Debug)]
pub struct PidFiles {
    tx: Option<mpsc::UnboundedSender<Watch>>,
}

/// One waiter: the file `dir/file` and where its pid goes.
#[derive(Debug)]
struct Watch {
    dir: PathBuf,
    file: String,
    reply: oneshot::Sender<i32>,
}

/// The inotify fd for tokio's reactor.
struct Ino(Inotify);

impl AsRawFd for Ino {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl PidFiles {
    /// Starts the watcher task on the current tokio runtime; without inotify every wait
    /// polls (reported once).
    pub fn start() -> PidFiles {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(std::io::Error::from)
            .and_then(|i| {
                // SAFETY: the Inotify (an OwnedFd inside) moves into the AsyncFd and is only
                // reachable through it, so its fd stays open and the same until the AsyncFd
                // is dropped; `Ino::as_raw_fd` always returns that fd.
                unsafe { AsyncFd::register(Ino(i)) }.map_err(|e| e.into_parts().1)
            });
        match ino {
            Ok(ino) => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(watch(ino, rx));
                PidFiles { tx: Some(tx) }
            }
            Err(e) => {
                eprintln!("agent-supervisor: no inotify ({e}): agents' pid files are polled");
                PidFiles { tx: None }
            }
        }
    }

    /// The pid in `dir/file` once the shim wrote it; `None` after `timeout`.
    pub async fn wait(&self, dir: PathBuf, file: String, timeout: Duration) -> Option<i32> {
        let path = dir.join(&file);
        let notified = self.tx.as_ref().and_then(|tx| {
            let (reply, rx) = oneshot::channel();
            tx.send(Watch { dir, file, reply }).ok().map(|_| rx)
        });
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(rx) = notified {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(pid)) => return Some(pid),
                Err(_) => return None,
                // The directory could not be watched: look for the file instead.
                Ok(Err(_)) => {}
            }
        }
        loop {
            if let Some(pid) = read_pid(&path) {
                return Some(pid);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The pid a complete pid file holds.
fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The watcher task: adds a watch per directory asked for, answers waiters as their files
/// are closed after writing (or renamed into place); ends with the last [`PidFiles`].
async fn watch(ino: AsyncFd<Ino>, mut rx: mpsc::UnboundedReceiver<Watch>) {
    let mut dirs: HashMap<WatchDescriptor, PathBuf> = HashMap::new();
    let mut waiting: Vec<Watch> = Vec::new();
    let flags = AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO;
    loop {
        tokio::select! {
            w = rx.recv() => {
                let Some(w) = w else { return };
                match ino.get_ref().0.add_watch(&w.dir, flags) {
                    Ok(wd) => {
                        dirs.insert(wd, w.dir.clone());
                    }
                    // Dropping the waiter sends it to its fallback.
                    Err(_) => continue,
                }
                // Written before the watch was in place.
                match read_pid(&w.dir.join(&w.file)) {
                    Some(pid) => {
                        let _ = w.reply.send(pid);
                    }
                    None => waiting.push(w),
                }
            }
            guard = ino.readable() => {
                let Ok(mut guard) = guard else { return };
                let events = match guard
                    .try_io(|i| i.get_ref().0.read_events().map_err(std::io::Error::from))
                {
                    Ok(Ok(events)) => events,
                    Ok(Err(e)) => {
                        eprintln!("agent-supervisor: inotify: {e}: agents' pid files are polled");
                        return;
                    }
                    Err(_would_block) => continue,
                };
                for ev in events {
                    if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                        dirs.remove(&ev.wd);
                        continue;
                    }
                    let (Some(dir), Some(name)) = (dirs.get(&ev.wd), ev.name) else {
                        continue;
                    };
                    let Some(i) = waiting
                        .iter()
                        .position(|w| &w.dir == dir && *w.file == *name)
                    else {
                        continue;
                    };
                    if let Some(pid) = read_pid(&dir.join(&name)) {
                        let _ = waiting.swap_remove(i).reply.send(pid);
                    }
                }
            }
        }
        // Waiters that gave up (timeout, a run that ended).
        waiting.retain(|w| !w.reply.is_closed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_pid_file_written_before_or_after_the_wait_is_seen() {
        let dir = std::env::temp_dir().join(format!("pidfiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("early.pid"), "41\n").unwrap();
        let p = PidFiles::start();
        let t = Duration::from_secs(5);
        assert_eq!(p.wait(dir.clone(), "early.pid".into(), t).await, Some(41));
        let (p2, d2) = (p.clone(), dir.clone());
        let late = tokio::spawn(async move { p2.wait(d2, "late.pid".into(), t).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(dir.join("other.pid"), "1\n").unwrap();
        std::fs::write(dir.join("late.pid"), "42\n").unwrap();
        assert_eq!(late.await.unwrap(), Some(42));
        let none = p.wait(dir.clone(), "never.pid".into(), Duration::from_millis(50));
        assert_eq!(none.await, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
