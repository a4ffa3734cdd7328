//! Fault injection, as root: the log disk full. A 64 KiB tmpfs is the daemon's `log_dir`; an
//! agent prints without pause. It must keep running (same pid, no restart) while its shim
//! drops output, and the drops must show in `status --json` (`log_dropped_bytes`,
//! `log_error`), in `/metrics` (`agent_supervisor_log_dropped_bytes_total`) and as a line
//! in `supervisorctl status`; once there is room again the log file gets new lines and a
//! `bytes lost` note, and the count never goes down.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use agent_supervisor_tests::fixture::{root_or_skip, text, Fixture};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

/// A tmpfs mounted on a directory, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount a tmpfs: {}", text(&out));
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Gives the file system `size` bytes: the full disk is freed.
    fn grow(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount the tmpfs: {}", text(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(&self.dir).status().is_ok_and(|s| s.success())
        };
        // A shim that still holds its log file open makes a plain umount fail: detach then.
        if !umount(false) && !umount(true) {
            eprintln!("cannot unmount {}", self.dir.display());
        }
    }
}

/// The fixture's daemon, stopped (with its agents) when dropped, before the tmpfs goes.
struct Daemon<'a> {
    f: &'a Fixture,
    child: Child,
}

impl Daemon<'_> {
    fn ctl(&self, args: &[&str]) -> Output {
        self.f.ctl(CTL, args)
    }

    fn agent(&self, name: &str) -> Value {
        let out = self.ctl(&["status", "--json"]);
        let s: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out)));
        s["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|a| a["agent"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no agent {name} in {s}"))
    }

    fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            let a = self.agent("chatty");
            if cond(&a) {
                return a;
            }
            assert!(
                t.elapsed() < limit,
                "{what} not reached in {limit:?}: {a}\ndaemon log:\n{}",
                self.f.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `/metrics` (the classic text format).
    fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.f.port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of the agent's `agent_supervisor_log_dropped_bytes_total`.
    fn dropped_metric(&self) -> u64 {
        let m = self.metrics();
        let series =
            "agent_supervisor_log_dropped_bytes_total{host=\"h1\",group=\"g\",agent=\"chatty\"} ";
        m.lines()
            .find_map(|l| l.strip_prefix(series))
            .unwrap_or_else(|| panic!("no {series}in\n{m}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        agent_supervisor_tests::fixture::stop_child(&mut self.child);
    }
}

fn dropped(a: &Value) -> u64 {
    a["log_dropped_bytes"].as_u64().unwrap_or(0)
}

/// The number of the last `line N` in the log text.
fn last_line_number(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| {
            let (_, rest) = l.split_once(" line ")?;
            rest.split(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

#[test]
fn a_full_log_disk_drops_output_says_so_and_the_agent_runs_on() {
    if !root_or_skip("a_full_log_disk_drops_output_says_so_and_the_agent_runs_on") {
        return;
    }
    // About 50 KB/s of output: the 64 KiB disk is full within seconds.
    let f = Fixture::new(
        BIN,
        "log-full",
        "logfull",
        "  g:\n    host: h1\n    agents:\n      - name: chatty\n        command: [sh, -c, 'x=$(head -c 500 /dev/zero | tr \"\\0\" x); i=0; while :; do i=$((i+1)); echo \"line $i $x\"; sleep 0.01; done']\n        restart: {policy: always}\n",
    );
    let disk = Tmpfs::mount(&f.dir.join("logs"), "64k");
    let log = f.dir.join("logs/chatty.stdout.log");
    let d = Daemon {
        f: &f,
        child: f.start_daemon(),
    };
    let a = d.wait_for("RUNNING", Duration::from_secs(20), |a| {
        a["state"] == "RUNNING"
    });
    let pid = a["pid"].as_i64().expect("a pid");

    // The disk fills; the shim drops output and says why.
    let a = d.wait_for("log output dropped", Duration::from_secs(30), |a| {
        dropped(a) > 0
    });
    let error = a["log_error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("No space left on device") && error.contains("chatty.stdout.log"),
        "{a}"
    );
    // It keeps dropping while the agent runs on, the same process, never restarted.
    let first = dropped(&a);
    let a = d.wait_for("more output dropped", Duration::from_secs(10), |a| {
        dropped(a) > first
    });
    assert_eq!(a["state"], "RUNNING", "{a}");
    assert_eq!(a["pid"].as_i64(), Some(pid), "{a}");
    assert_eq!(a["restarts"], 0, "{a}");
    let m = d.dropped_metric();
    assert!(m >= dropped(&a), "the metric {m} lags the status {a}");

    let out = d.ctl(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = table.lines().collect();
    let row = lines
        .iter()
        .position(|l| l.starts_with("g:chatty "))
        .unwrap_or_else(|| panic!("no row of g:chatty in\n{table}"));
    let note = lines.get(row + 1).copied().unwrap_or_default();
    assert!(
        note.starts_with("  logs dropped: ") && note.contains("No space left on device"),
        "no drop line under the row:\n{table}"
    );
    assert_eq!(out.status.code(), Some(0), "every agent runs:\n{table}");

    // Room again: the log file gets a note of what was lost, then new lines.
    let before = last_line_number(&std::fs::read_to_string(&log).unwrap());
    let counted = dropped(&d.agent("chatty"));
    disk.grow("16m");
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        let noted = text
            .lines()
            .any(|l| l.contains("bytes lost: ") && l.contains("No space left on device"));
        if noted && last_line_number(&text) > before + 50 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "logging did not resume (last line {before} before):\n{}",
            text.lines().rev().take(4).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A counter never goes down; nothing more is lost, and the agent is still the same.
    std::thread::sleep(Duration::from_millis(1500));
    let a = d.agent("chatty");
    assert!(dropped(&a) >= counted, "{a} after {counted}");
    let settled = dropped(&a);
    std::thread::sleep(Duration::from_millis(1500));
    let a = d.agent("chatty");
    assert_eq!(dropped(&a), settled, "nothing is lost with room: {a}");
    assert!(d.dropped_metric() >= settled);
    assert_eq!(a["pid"].as_i64(), Some(pid), "{a}");
    assert_eq!(a["restarts"], 0, "{a}");
    drop(d);
    drop(disk);
}
