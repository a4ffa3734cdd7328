//! An agent's log files, written by its shim (`__agent`): every line of the agent's stdout and
//! stderr with an RFC 3339 UTC timestamp (`2026-11-24T02:33:00.123Z line`), appended to a file
//! that is rotated by size (`path` → `path.1` → ... → `path.<keep>`, `.1` newest).
//!
//! A slow disk never blocks the agent: the shim reads the agent's pipes continuously
//! ([`StreamPump`]) into a bounded buffer per stream ([`LogStream`], [`BUFFER_BYTES`]); a thread
//! per stream writes the buffer to disk ([`RotatingFile`]). When the buffer is full, the newest
//! output is dropped and, once the writer has caught up, a line says how much:
//! `… [agent-supervisor: N bytes dropped: log writer too slow]`.
//!
//! Every byte lost (dropped from a full buffer, or not written because the file could not be
//! written) is also counted for the daemon ([`super::logdrops`]).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::logdrops::DropCounter;
use crate::shim_sync::{lock, wait_until};

/// Output buffered in memory per stream while the disk is slow; beyond it output is dropped.
pub const BUFFER_BYTES: usize = 4 << 20;
/// A line longer than this (without its newline) is cut into lines of this size.
pub const MAX_LINE: usize = 16 << 10;
/// A partial line (no newline yet) is written as a line once it is this old. Long enough
/// that a line written in two calls (Python's unbuffered `print` writes the text, then the
/// newline) stays one line even when a CPU quota stalls the agent between them.
pub const PARTIAL_FLUSH: Duration = Duration::from_secs(1);
/// How often a log file that cannot be opened or written is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 64 << 10;

/// `2026-11-24T02:33:00.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Names the file in an I/O error.
fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

/// The name of the `n`th rotated copy of the log file `path`: `path.<n>` (`.1` newest).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// A log file rotated by size. Only whole lines are written to it, so a file never grows
/// beyond `max_size` unless a single line is longer than that (it then fills a file alone).
/// A path that is not a regular file (a FIFO, `/dev/null`) is appended to and never rotated.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    /// 0: never rotate.
    max_size: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
    regular: bool,
    /// The systemd journal gets every line too (the daemon runs as a service).
    journal: Option<super::journal::Journal>,
}

impl RotatingFile {
    /// A file opened (directories created, mode 0640) on the first write.
    pub fn new(path: &Path, max_size: u64, keep: u32) -> RotatingFile {
        RotatingFile {
            path: path.to_path_buf(),
            max_size,
            keep,
            file: None,
            size: 0,
            regular: true,
            journal: None,
        }
    }

    /// Also sends every line to `journal` (before the file: a full disk loses no line there).
    pub fn with_journal(mut self, journal: Option<super::journal::Journal>) -> RotatingFile {
        self.journal = journal;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| with_path(e, "create log directory", dir))?;
        }
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&self.path)
            .map_err(|e| with_path(e, "open log file", &self.path))?;
        let md = f
            .metadata()
            .map_err(|e| with_path(e, "stat log file", &self.path))?;
        self.regular = md.file_type().is_file();
        self.size = if self.regular { md.len() } else { 0 };
        self.file = Some(f);
        Ok(())
    }

    /// `path.<i>`.
    pub fn numbered(&self, i: u32) -> PathBuf {
        rotated(&self.path, i)
    }

    fn rotating(&self) -> bool {
        self.regular && self.max_size > 0
    }

    /// `path.<keep-1>` → `path.<keep>`, ..., `path` → `path.1`, then a new `path`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let ignore_missing = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        if self.keep == 0 {
            ignore_missing(std::fs::remove_file(&self.path))
                .map_err(|e| with_path(e, "remove full log file", &self.path))?;
        } else {
            for i in (1..self.keep).rev() {
                let from = self.numbered(i);
                ignore_missing(std::fs::rename(&from, self.numbered(i + 1)))
                    .map_err(|e| with_path(e, "rotate log file", &from))?;
            }
            ignore_missing(std::fs::rename(&self.path, self.numbered(1)))
                .map_err(|e| with_path(e, "rotate log file", &self.path))?;
        }
        self.open()
    }

    /// Appends whole lines (`data` ends with a newline), rotating before a line would take
    /// the file beyond `max_size`. On error, returns it with how many bytes were not written;
    /// the file is then reopened on the next write.
    pub fn write_lines(&mut self, data: &[u8]) -> Result<(), (io::Error, usize)> {
        if let Some(j) = &self.journal {
            j.send_lines(data);
        }
        let mut rest = data;
        while !rest.is_empty() {
            if let Err(e) = self.write_some(&mut rest) {
                self.file = None;
                return Err((e, rest.len()));
            }
        }
        Ok(())
    }

    fn write_some(&mut self, rest: &mut &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.open()?;
        }
        let mut take = rest.len();
        if self.rotating() {
            let room =
                usize::try_from(self.max_size.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if take > room {
                // The whole lines that fit.
                take = rest[..room]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
            }
            if take == 0 {
                if self.size > 0 {
                    return self.rotate();
                }
                // A line longer than max_size: alone in its file.
                take = rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
            }
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&rest[..take])
            .map_err(|e| with_path(e, "write log file", &self.path))?;
        self.size += take as u64;
        *rest = &rest[take..];
        Ok(())
    }
}

/// The buffer between the pump and the writer thread.
#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Bytes queued or being written.
    used: usize,
    /// The agent's bytes dropped since the last "dropped" line.
    dropped: u64,
    /// Every byte dropped so far.
    dropped_total: u64,
    closed: bool,
    finished: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Data queued or the stream closed (for the writer).
    work: Condvar,
    /// The writer finished (for `finish`).
    done: Condvar,
}

fn dropped_line(n: u64) -> Vec<u8> {
    format!(
        "{} … [agent-supervisor: {n} bytes dropped: log writer too slow]\n",
        timestamp(SystemTime::now())
    )
    .into_bytes()
}

/// One stream's bounded buffer and its writer thread. [`LogStream::push`] never waits for the
/// disk.
#[derive(Debug)]
pub struct LogStream {
    shared: Arc<Shared>,
    capacity: usize,
    thread: Option<JoinHandle<()>>,
    /// Where the dropped bytes are counted for the daemon.
    drops: Option<DropCounter>,
}

impl LogStream {
    /// Starts the writer thread of `file`; `label` names the stream in messages on stderr
    /// (`agent g:a stdout`); `drops` counts what is lost.
    pub fn start(
        label: String,
        file: RotatingFile,
        capacity: usize,
        drops: Option<DropCounter>,
    ) -> io::Result<LogStream> {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let counter = drops.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer(&s, file, &label, counter.as_ref()))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start a log writer: {e}")))?;
        Ok(LogStream {
            shared,
            capacity,
            thread: Some(thread),
            drops,
        })
    }

    /// `raw` bytes of the agent's output did not fit in the buffer.
    fn drop_raw(&self, st: &mut State, raw: u64) {
        st.dropped += raw;
        st.dropped_total += raw;
        if let Some(c) = &self.drops {
            c.add(raw, super::logdrops::TOO_SLOW);
        }
    }

    /// Queues whole timestamped lines holding `raw` bytes of the agent's output, or drops
    /// them when the buffer is full.
    pub fn push(&self, lines: Vec<u8>, raw: u64) {
        if lines.is_empty() {
            return;
        }
        let mut st = lock(&self.shared.state);
        if st.dropped > 0 {
            let note = dropped_line(st.dropped);
            if st.used + note.len() + lines.len() > self.capacity {
                self.drop_raw(&mut st, raw);
                return;
            }
            st.used += note.len();
            st.queue.push_back(note);
            st.dropped = 0;
        }
        if st.used + lines.len() > self.capacity {
            self.drop_raw(&mut st, raw);
            return;
        }
        st.used += lines.len();
        st.queue.push_back(lines);
        self.shared.work.notify_one();
    }

    /// Bytes of the agent's output dropped so far.
    pub fn dropped_bytes(&self) -> u64 {
        lock(&self.shared.state).dropped_total
    }

    /// No more output: waits until the writer wrote everything, or until `deadline` (then
    /// the rest is lost when the process exits). True when everything was written.
    pub fn finish(&mut self, deadline: Instant) -> bool {
        let mut st = lock(&self.shared.state);
        st.closed = true;
        self.shared.work.notify_one();
        let (st, finished) = wait_until(st, &self.shared.done, deadline, |s| s.finished);
        drop(st);
        if !finished {
            return false;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        true
    }
}

/// The writer thread: writes queued lines until the stream is closed and empty.
fn writer(shared: &Shared, mut file: RotatingFile, label: &str, drops: Option<&DropCounter>) {
    // Bytes lost to write errors, and the last error (printed once per kind of failure).
    let mut lost: u64 = 0;
    let mut last_error = String::new();
    let mut retry_at: Option<Instant> = None;
    let lose = |n: usize, lost: &mut u64, error: &str| {
        *lost += n as u64;
        if let Some(c) = drops {
            c.add(n as u64, error);
        }
    };
    loop {
        let batch: Vec<Vec<u8>> = {
            let mut st = lock(&shared.state);
            loop {
                if !st.queue.is_empty() {
                    break;
                }
                if st.dropped > 0 {
                    // Caught up: say what was dropped.
                    let note = dropped_line(st.dropped);
                    st.dropped = 0;
                    st.used += note.len();
                    st.queue.push_back(note);
                    break;
                }
                if st.closed {
                    st.finished = true;
                    shared.done.notify_all();
                    return;
                }
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.queue.drain(..).collect()
        };
        let n: usize = batch.iter().map(Vec::len).sum();
        for chunk in &batch {
            if retry_at.is_some_and(|t| Instant::now() < t) {
                lose(chunk.len(), &mut lost, &last_error);
                continue;
            }
            let mut result = Ok(());
            if lost > 0 {
                let note = format!(
                    "{} … [agent-supervisor: {lost} bytes lost: {last_error}]\n",
                    timestamp(SystemTime::now())
                );
                // When the note cannot be written, neither is the chunk: all of it is lost.
                result = file
                    .write_lines(note.as_bytes())
                    .map_err(|(e, _)| (e, chunk.len()));
                if result.is_ok() {
                    lost = 0;
                }
            }
            if result.is_ok() {
                result = file.write_lines(chunk);
            }
            match result {
                Ok(()) => retry_at = None,
                Err((e, unwritten)) => {
                    let msg = e.to_string();
                    lose(unwritten, &mut lost, &msg);
                    if msg != last_error {
                        let _ = writeln!(
                            io::stderr(),
                            "agent-supervisor: {label}: {msg}; output is dropped until the log file can be written"
                        );
                        last_error = msg;
                    }
                    retry_at = Some(Instant::now() + RETRY_EVERY);
                }
            }
        }
        lock(&shared.state).used -= n;
    }
}

/// Cuts a stream of bytes into timestamped lines: each line gets the time its first byte was
/// read. Lines longer than [`MAX_LINE`] are cut; a partial line is completed by
/// [`Stamper::flush`].
#[derive(Debug, Default)]
pub struct Stamper {
    partial: Vec<u8>,
    /// When the partial line's first byte was read, and that time formatted.
    since: Option<(Instant, String)>,
}

impl Stamper {
    /// Appends the complete lines of `data` (read at `now`, formatted `ts`) to `out`; returns
    /// how many bytes of `data` and of the earlier partial line they hold.
    pub fn feed(&mut self, data: &[u8], now: Instant, ts: &str, out: &mut Vec<u8>) -> u64 {
        let mut raw = 0u64;
        let mut rest = data;
        while !rest.is_empty() {
            if self.partial.is_empty() {
                self.since = Some((now, ts.to_string()));
            }
            let room = MAX_LINE - self.partial.len();
            let window = &rest[..rest.len().min(room + 1)];
            if let Some(i) = window.iter().position(|b| *b == b'\n') {
                raw += self.emit(&rest[..=i], out);
                rest = &rest[i + 1..];
            } else if window.len() > room {
                raw += self.emit(&rest[..room], out);
                rest = &rest[room..];
            } else {
                self.partial.extend_from_slice(rest);
                rest = &[];
            }
        }
        raw
    }

    /// Writes the partial line and `tail` as one line (a newline added when missing).
    fn emit(&mut self, tail: &[u8], out: &mut Vec<u8>) -> u64 {
        let ts = self.since.as_ref().map_or("", |(_, ts)| ts.as_str());
        out.extend_from_slice(ts.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.partial);
        out.extend_from_slice(tail);
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        let raw = (self.partial.len() + tail.len()) as u64;
        self.partial.clear();
        self.since = None;
        raw
    }

    /// When the partial line is due to be written, if there is one.
    pub fn due(&self) -> Option<Instant> {
        self.since
            .as_ref()
            .filter(|_| !self.partial.is_empty())
            .map(|(t, _)| *t + PARTIAL_FLUSH)
    }

    /// Writes the partial line, if any, as a line; returns its length.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> u64 {
        if self.partial.is_empty() {
            return 0;
        }
        self.emit(&[], out)
    }
}

/// One of the agent's output pipes, stamped and buffered into its log file.
#[derive(Debug)]
pub struct StreamPump {
    /// The pipe's read end (non-blocking); `None` once it reached end of file.
    fd: Option<OwnedFd>,
    stamper: Stamper,
    stream: LogStream,
}

/// What [`StreamPump::read_available`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// Everything there was has been read.
    Drained,
    /// The read budget ran out; more may be there.
    More,
    /// End of file (or an error): the pipe is closed.
    Closed,
}

impl StreamPump {
    /// Starts the writer of `file` for the pipe `fd` (made non-blocking); `drops` counts
    /// what is lost.
    pub fn start(
        label: String,
        fd: OwnedFd,
        file: RotatingFile,
        drops: Option<DropCounter>,
    ) -> io::Result<StreamPump> {
        let fl = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let fl = nix::fcntl::OFlag::from_bits_retain(fl) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(fl)).map_err(io::Error::from)?;
        Ok(StreamPump {
            fd: Some(fd),
            stamper: Stamper::default(),
            stream: LogStream::start(label, file, BUFFER_BYTES, drops)?,
        })
    }

    /// Reads what the pipe has, up to `max_reads` reads of `buf.len()` bytes, into the buffer.
    pub fn read_available(&mut self, buf: &mut [u8], max_reads: usize) -> Pumped {
        let Some(fd) = &self.fd else {
            return Pumped::Closed;
        };
        let mut lines = Vec::new();
        let mut raw = 0;
        let mut result = Pumped::More;
        for _ in 0..max_reads {
            match nix::unistd::read(fd, buf) {
                Ok(0) => {
                    result = Pumped::Closed;
                    break;
                }
                Ok(n) => {
                    let ts = timestamp(SystemTime::now());
                    raw += self
                        .stamper
                        .feed(&buf[..n], Instant::now(), &ts, &mut lines);
                }
                Err(nix::Error::EINTR) => {}
                Err(nix::Error::EAGAIN) => {
                    result = Pumped::Drained;
                    break;
                }
                Err(_) => {
                    result = Pumped::Closed;
                    break;
                }
            }
        }
        if result == Pumped::Closed {
            self.fd = None;
        }
        self.stream.push(lines, raw);
        result
    }

    /// The pipe to poll, until it reached end of file.
    pub fn pipe(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    /// When a partial line must be written, if there is one.
    pub fn due(&self) -> Option<Instant> {
        self.stamper.due()
    }

    /// Writes the partial line if it is due at `now` (or always with `force`).
    pub fn flush_partial(&mut self, now: Instant, force: bool) {
        if force || self.due().is_some_and(|t| t <= now) {
            let mut out = Vec::new();
            let raw = self.stamper.flush(&mut out);
            self.stream.push(out, raw);
        }
    }

    /// Adds a line of the shim's own (`[agent-supervisor: ...]`).
    pub fn note(&mut self, text: &str) {
        self.flush_partial(Instant::now(), true);
        let line = format!(
            "{} [agent-supervisor: {text}]\n",
            timestamp(SystemTime::now())
        );
        self.stream.push(line.into_bytes(), 0);
    }

    /// Bytes of the agent's output dropped so far.
    pub fn dropped_bytes(&self) -> u64 {
        self.stream.dropped_bytes()
    }

    /// Closes the pipe, writes the partial line and waits for the writer until `deadline`.
    pub fn finish(&mut self, deadline: Instant) -> bool {
        self.fd = None;
        self.flush_partial(Instant::now(), true);
        self.stream.finish(deadline)
    }
}

/// The read buffer size for [`StreamPump::read_available`].
pub fn read_buffer() -> Vec<u8> {
    vec![0u8; READ_CHUNK]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("as-logfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn stamper_cuts_lines_and_keeps_partials() {
        let mut s = Stamper::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        assert_eq!(s.feed(b"one\ntw", t0, "T1", &mut out), 4);
        assert_eq!(out, b"T1 one\n");
        assert_eq!(s.due(), Some(t0 + PARTIAL_FLUSH));
        out.clear();
        // The rest of a line keeps the time of its first byte.
        assert_eq!(s.feed(b"o\nthree\n", t0, "T2", &mut out), 10);
        assert_eq!(out, b"T1 two\nT2 three\n");
        assert_eq!(s.due(), None);
        out.clear();
        s.feed(b"dangling", t0, "T3", &mut out);
        assert!(out.is_empty());
        assert_eq!(s.flush(&mut out), 8);
        assert_eq!(out, b"T3 dangling\n");
    }

    #[test]
    fn stamper_cuts_long_lines() {
        let mut s = Stamper::default();
        let mut out = Vec::new();
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        s.feed(&long, Instant::now(), "T", &mut out);
        s.feed(b"\n", Instant::now(), "T", &mut out);
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE + 2);
        assert_eq!(lines[2].len(), 10 + 2);
        // Exactly MAX_LINE bytes and a newline is one line, not a line and an empty one.
        out.clear();
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        s.feed(&exact, Instant::now(), "T", &mut out);
        assert_eq!(out.len(), MAX_LINE + 3);
    }

    #[test]
    fn rotates_by_size_keeping_n() {
        let dir = tmp("rotate");
        let path = dir.join("sub/a.log");
        let mut f = RotatingFile::new(&path, 100, 2);
        let line = [b'z'; 29]; // 30 bytes with the newline
        for _ in 0..20 {
            let mut l = line.to_vec();
            l.push(b'\n');
            f.write_lines(&l).expect("write");
        }
        for p in [path.clone(), f.numbered(1), f.numbered(2)] {
            let len = std::fs::metadata(&p).expect("rotated file").len();
            assert!(len <= 100 && len % 30 == 0, "{}: {len}", p.display());
        }
        assert!(!f.numbered(3).exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("log").permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");
        // An over-long line fills a file alone.
        f.write_lines(&[b'w'; 250]).expect("write long");
        assert_eq!(std::fs::metadata(&path).expect("log").len(), 250);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_log_loses_output_but_never_hangs() {
        let dir = tmp("unwritable");
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("a-file");
        std::fs::write(&file, "").expect("file");
        // A directory that cannot be created: under a regular file.
        let mut s = LogStream::start(
            "test".into(),
            RotatingFile::new(&file.join("x.log"), 0, 0),
            BUFFER_BYTES,
            None,
        )
        .expect("start");
        for _ in 0..10 {
            s.push(b"T line\n".to_vec(), 5);
        }
        assert!(s.finish(Instant::now() + Duration::from_secs(5)));
        assert!(!file.join("x.log").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn full_buffer_drops_newest_and_says_so() {
        let dir = tmp("drop");
        std::fs::create_dir_all(&dir).expect("dir");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // Nobody reads the FIFO yet: the writer blocks opening it.
        let mut s = LogStream::start("test".into(), RotatingFile::new(&fifo, 0, 0), 1000, None)
            .expect("start");
        let t = Instant::now();
        for _ in 0..100 {
            s.push(vec![b'a'; 99].into_iter().chain([b'\n']).collect(), 100);
        }
        assert!(t.elapsed() < Duration::from_millis(100));
        assert_eq!(s.dropped_bytes(), 9000);
        let reader = std::thread::spawn(move || std::fs::read(&fifo).expect("read fifo"));
        assert!(s.finish(Instant::now() + Duration::from_secs(10)));
        let got = String::from_utf8(reader.join().expect("reader")).expect("utf8");
        assert_eq!(got.lines().filter(|l| l.starts_with("aaa")).count(), 10);
        assert!(
            got.contains("… [agent-supervisor: 9000 bytes dropped: log writer too slow]"),
            "{got}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
