//! What an agent's shim could not write to its log files, published for the daemon: a small
//! JSON file beside the agent's pid and exit files (`<run_dir>/groups/<g>/agents/<a>.logdrops`,
//! [`file`]), `{"stdout": N, "stderr": N, "error": "..."}`, written by a thread of the shim
//! ([`Publisher`], started at the first loss: a shim that loses nothing has neither the thread
//! nor the file) and read by the daemon when it builds a status snapshot ([`read`]).
//!
//! Why a file in the run directory: it is the channel the shim already uses for its pid and
//! exit records, it outlives a daemon restart (the counts of an adopted agent are still
//! there), and it is never on the log disk — the run directory is a tmpfs (`/run`), the logs
//! are under `log_dir` (`/var/log`), so a full log disk does not stop the report of it. The
//! daemon reads it off its core task without a round trip to the shim; the shim never waits
//! for the daemon. No file means nothing was lost.
//!
//! The file is written whole, to a temporary name and renamed over the old one, so a reader
//! sees the previous or the next counts, never a torn write; only when a count changed and at
//! most once per [`PUBLISH_EVERY`], so a shim that drops output continuously costs one small
//! write a second. The counts only grow during a run of the agent (its shim); the daemon
//! removes the file before it starts the agent again.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::shim_sync::{lock, wait_until};

/// The most often the file is rewritten.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The error recorded when output is dropped because the log writer could not keep up.
pub const TOO_SLOW: &str = "log writer too slow";

/// The counts file of `agent` in a pod's `agents/` directory: `<agent>.logdrops`.
pub fn file(agents_dir: &Path, agent: &str) -> PathBuf {
    agents_dir.join(format!("{agent}.logdrops"))
}

/// The content of the counts file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDrops {
    /// Bytes of the agent's stdout that did not reach its log file (a lost line counts with
    /// its timestamp).
    pub stdout: u64,
    pub stderr: u64,
    /// Why output was last dropped: the write error, naming the file (`cannot write log file
    /// /var/log/agent-supervisor/a.stdout.log: No space left on device (os error 28)`), or
    /// [`TOO_SLOW`].
    #[serde(default)]
    pub error: Option<String>,
}

impl LogDrops {
    /// Both streams.
    pub fn total(&self) -> u64 {
        self.stdout.saturating_add(self.stderr)
    }

    /// The file's bytes: one line of JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses the file's bytes; the error says what is wrong (the caller names the file).
    pub fn parse(bytes: &[u8]) -> Result<LogDrops, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a log drop count: {e}"))
    }
}

/// Reads the counts file at `path`: `Ok(None)` when there is none (nothing was lost).
pub fn read(path: &Path) -> Result<Option<LogDrops>, String> {
    match std::fs::read(path) {
        Ok(bytes) => LogDrops::parse(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `drops` to `path` atomically: `path.tmp`, then renamed over `path` (mode 0644: the
/// counts are no secret, the error names only the log file).
pub fn write(path: &Path, drops: &LogDrops) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let named = |e: io::Error, what: &str, p: &Path| {
        io::Error::new(e.kind(), format!("cannot {what} {}: {e}", p.display()))
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| named(e, "create", &tmp))?;
    f.write_all(&drops.encode())
        .map_err(|e| named(e, "write", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| named(e, "rename into place", path))
}

#[derive(Debug, Default)]
struct State {
    drops: LogDrops,
    /// The thread was started (at the first loss: a shim that loses nothing has none).
    started: bool,
    /// Counts changed since the last write.
    dirty: bool,
    /// No more counts: write what is left and end.
    closed: bool,
    finished: bool,
    /// Files written (for the tests of the rate limit).
    writes: u64,
}

#[derive(Debug)]
struct Shared {
    /// The counts file, and who publishes it (`agent g:a`, in messages on stderr).
    path: PathBuf,
    label: String,
    state: Mutex<State>,
    /// The thread, once started (for `finish` to join).
    thread: Mutex<Option<JoinHandle<()>>>,
    /// A count changed or the publisher is closed (for the thread).
    changed: Condvar,
    /// The thread ended (for `finish`).
    done: Condvar,
}

/// Which of the agent's streams a [`DropCounter`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Counts one stream's lost bytes into its [`Publisher`]; cheap to clone, never blocks on a
/// disk (it takes a lock held only to copy counts).
#[derive(Debug, Clone)]
pub struct DropCounter {
    shared: Arc<Shared>,
    stream: Stream,
}

impl DropCounter {
    /// `bytes` were lost, because of `error`.
    pub fn add(&self, bytes: u64, error: &str) {
        if bytes == 0 {
            return;
        }
        let mut st = lock(&self.shared.state);
        let n = match self.stream {
            Stream::Stdout => &mut st.drops.stdout,
            Stream::Stderr => &mut st.drops.stderr,
        };
        *n = n.saturating_add(bytes);
        if st.drops.error.as_deref() != Some(error) {
            st.drops.error = Some(error.to_string());
        }
        st.dirty = true;
        self.shared.changed.notify_one();
        if !st.started {
            st.started = true;
            drop(st);
            start_thread(&self.shared);
        }
    }
}

/// Starts the publishing thread of `shared` (from the first [`DropCounter::add`]). When no
/// thread can be started, that is said once on stderr; the counts are then only in the
/// `bytes lost` / `bytes dropped` lines of the log files.
fn start_thread(shared: &Arc<Shared>) {
    let s = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("log-drops".into())
        .spawn(move || publish(&s));
    match spawned {
        Ok(t) => *lock(&shared.thread) = Some(t),
        Err(e) => {
            let _ = writeln!(
                io::stderr(),
                "agent-supervisor: {}: cannot start the thread that writes {}: {e}",
                shared.label,
                shared.path.display()
            );
            let mut st = lock(&shared.state);
            st.finished = true;
            shared.done.notify_all();
        }
    }
}

/// Keeps the counts file up to date, from a thread started at the first loss (after the
/// fork, like the log writers; a shim that loses nothing has no such thread and no file).
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl Publisher {
    /// The publisher of `path`; an earlier run's file is removed. `label` names the agent in
    /// messages on stderr.
    pub fn new(path: &Path, label: String) -> io::Result<Publisher> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove {}: {e}", path.display()),
                ))
            }
            _ => {}
        }
        Ok(Publisher {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                label,
                state: Mutex::default(),
                thread: Mutex::default(),
                changed: Condvar::new(),
                done: Condvar::new(),
            }),
        })
    }

    /// The counter of one stream.
    pub fn counter(&self, stream: Stream) -> DropCounter {
        DropCounter {
            shared: Arc::clone(&self.shared),
            stream,
        }
    }

    /// The counts so far.
    pub fn drops(&self) -> LogDrops {
        lock(&self.shared.state).drops.clone()
    }

    #[cfg(test)]
    fn writes(&self) -> u64 {
        lock(&self.shared.state).writes
    }

    #[cfg(test)]
    fn started(&self) -> bool {
        lock(&self.shared.state).started
    }

    /// No more counts: writes the last ones, waiting for that until `deadline`.
    pub fn finish(&mut self, deadline: Instant) {
        let mut st = lock(&self.shared.state);
        st.closed = true;
        if !st.started {
            return;
        }
        self.shared.changed.notify_one();
        let (st, finished) = wait_until(st, &self.shared.done, deadline, |s| s.finished);
        drop(st);
        if !finished {
            return;
        }
        let thread = lock(&self.shared.thread).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The thread: writes the counts when they changed, at most once per [`PUBLISH_EVERY`].
fn publish(shared: &Shared) {
    let (path, label) = (&shared.path, &shared.label);
    let mut last_error = String::new();
    let mut next = Instant::now();
    loop {
        let drops = {
            let mut st = lock(&shared.state);
            loop {
                let now = Instant::now();
                if st.dirty && (now >= next || st.closed) {
                    break;
                }
                if st.closed && !st.dirty {
                    st.finished = true;
                    shared.done.notify_all();
                    return;
                }
                st = if st.dirty {
                    shared
                        .changed
                        .wait_timeout(st, next - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                } else {
                    shared.changed.wait(st).unwrap_or_else(|p| p.into_inner())
                };
            }
            st.dirty = false;
            st.writes += 1;
            st.drops.clone()
        };
        next = Instant::now() + PUBLISH_EVERY;
        if let Err(e) = write(path, &drops) {
            let msg = e.to_string();
            if msg != last_error {
                let _ = writeln!(io::stderr(), "agent-supervisor: {label}: {msg}");
                last_error = msg;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("as-logdrops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn the_file_format_round_trips_and_garbage_is_refused() {
        let d = LogDrops {
            stdout: 12,
            stderr: 3,
            error: Some("cannot write log file /l/a.stdout.log: No space left on device".into()),
        };
        let bytes = d.encode();
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            "{\"stdout\":12,\"stderr\":3,\"error\":\"cannot write log file /l/a.stdout.log: No space left on device\"}\n"
        );
        assert_eq!(LogDrops::parse(&bytes), Ok(d.clone()));
        assert_eq!(d.total(), 15);
        // An older shim's file without an error still parses.
        assert_eq!(
            LogDrops::parse(b"{\"stdout\":1,\"stderr\":0}"),
            Ok(LogDrops {
                stdout: 1,
                ..LogDrops::default()
            })
        );
        for bad in [
            &b""[..],
            b"{\"stdout\":-1,\"stderr\":0}",
            b"12 bytes",
            b"{\"stdout\":1",
        ] {
            let e = LogDrops::parse(bad).expect_err("garbage");
            assert!(e.contains("not a log drop count"), "{e}");
        }
    }

    #[test]
    fn read_names_the_file_and_a_missing_file_is_nothing_lost() {
        let dir = tmp("read");
        let p = file(&dir, "a");
        assert_eq!(p, dir.join("a.logdrops"));
        assert_eq!(read(&p), Ok(None));
        std::fs::write(&p, "nonsense").expect("write");
        let e = read(&p).expect_err("garbage");
        assert!(e.contains(&p.display().to_string()), "{e}");
        let d = LogDrops {
            stdout: 0,
            stderr: 7,
            error: Some(TOO_SLOW.into()),
        };
        write(&p, &d).expect("write atomically");
        assert_eq!(read(&p), Ok(Some(d)));
        assert!(!dir.join("a.logdrops.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_log_file_that_cannot_be_written_counts_every_lost_byte_with_the_error() {
        use crate::logfile::{LogStream, RotatingFile, BUFFER_BYTES};
        let dir = tmp("unwritable");
        let blocker = dir.join("a-file");
        std::fs::write(&blocker, "").expect("file");
        let counts = file(&dir, "a");
        let mut publisher = Publisher::new(&counts, "test".into()).expect("start");
        // A log directory that cannot be created: under a regular file.
        let log = blocker.join("x.log");
        let mut s = LogStream::start(
            "test".into(),
            RotatingFile::new(&log, 0, 0),
            BUFFER_BYTES,
            Some(publisher.counter(Stream::Stderr)),
        )
        .expect("start");
        for _ in 0..10 {
            s.push(b"T line\n".to_vec(), 5);
        }
        assert!(s.finish(Instant::now() + Duration::from_secs(5)));
        publisher.finish(Instant::now() + Duration::from_secs(5));
        let d = read(&counts).expect("read").expect("a counts file");
        assert_eq!((d.stdout, d.stderr), (0, 70), "{d:?}");
        let e = d.error.expect("the error");
        assert!(
            e.contains("cannot create log directory") && e.contains(&blocker.display().to_string()),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_shim_that_loses_nothing_writes_nothing() {
        let dir = tmp("nothing");
        let p = file(&dir, "a");
        let mut publisher = Publisher::new(&p, "test".into()).expect("start");
        let _counter = publisher.counter(Stream::Stdout);
        let t = Instant::now();
        publisher.finish(t + Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_millis(100));
        assert!(!publisher.started());
        assert_eq!(read(&p), Ok(None));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_publisher_writes_changes_at_most_once_a_second() {
        let dir = tmp("publish");
        let p = file(&dir, "a");
        std::fs::write(&p, "an earlier run's counts").expect("stale file");
        let mut publisher = Publisher::new(&p, "test".into()).expect("start");
        assert!(!p.exists(), "the earlier run's file is removed");
        let (out, err) = (
            publisher.counter(Stream::Stdout),
            publisher.counter(Stream::Stderr),
        );
        // Nothing lost, no thread and no file.
        err.add(0, "nothing");
        assert!(!publisher.started());
        let t = Instant::now();
        for _ in 0..100 {
            out.add(10, "disk full");
        }
        err.add(5, TOO_SLOW);
        assert!(publisher.started());
        // The first change is written at once, the rest within a second after it.
        loop {
            if let Ok(Some(d)) = read(&p) {
                if d.total() == 1005 {
                    assert_eq!(d.stdout, 1000);
                    assert_eq!(d.error.as_deref(), Some(TOO_SLOW));
                    break;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", read(&p));
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(publisher.writes() <= 2, "{} writes", publisher.writes());
        // No change, no write.
        std::thread::sleep(PUBLISH_EVERY + Duration::from_millis(200));
        assert!(publisher.writes() <= 2, "{} writes", publisher.writes());
        // The last count is written when the publisher finishes, without waiting a second.
        out.add(1, "disk full");
        publisher.finish(Instant::now() + Duration::from_secs(5));
        assert_eq!(read(&p).expect("read").map(|d| d.total()), Some(1006));
        assert_eq!(publisher.drops().stdout, 1001);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
