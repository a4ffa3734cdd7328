//! Fault injection, as root: the log disk full. A 64 KiB tmpfs is the daemon's `log_dir`; an
//! agent prints without pause. It must keep running (same pid, no restart) while its shim
//! drops output, and the drops must show in `status --json` (`log_dropped_bytes`,
//! `log_error`), in `/metrics` (`agent_supervisor_log_dropped_bytes_total`) and as a line
//! in `supervisorctl status`; once there is room again the log file gets new lines and a
//! `bytes lost` note, and the count never goes down.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_supervisor_tests::daemon::Daemon;
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

/// The value of the agent's `agent_supervisor_log_dropped_bytes_total`.
fn dropped_metric(d: &Daemon) -> u64 {
    let m = d.metrics();
    let series =
        "agent_supervisor_log_dropped_bytes_total{host=\"h1\",group=\"g\",agent=\"chatty\"} ";
    m.lines()
        .find_map(|l| l.strip_prefix(series))
        .unwrap_or_else(|| panic!("no {series}in\n{m}"))
        .parse()
        .unwrap()
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
    let d = Daemon::start(&f, CTL);
    let a = d.wait_for("chatty", "RUNNING", Duration::from_secs(20), |a| {
        a["state"] == "RUNNING"
    });
    let pid = a["pid"].as_i64().expect("a pid");

    // The disk fills; the shim drops output and says why.
    let a = d.wait_for(
        "chatty",
        "log output dropped",
        Duration::from_secs(30),
        |a| dropped(a) > 0,
    );
    let error = a["log_error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("No space left on device") && error.contains("chatty.stdout.log"),
        "{a}"
    );
    // It keeps dropping while the agent runs on, the same process, never restarted.
    let first = dropped(&a);
    let a = d.wait_for(
        "chatty",
        "more output dropped",
        Duration::from_secs(10),
        |a| dropped(a) > first,
    );
    assert_eq!(a["state"], "RUNNING", "{a}");
    assert_eq!(a["pid"].as_i64(), Some(pid), "{a}");
    assert_eq!(a["restarts"], 0, "{a}");
    let m = dropped_metric(&d);
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
    assert!(dropped_metric(&d) >= settled);
    assert_eq!(a["pid"].as_i64(), Some(pid), "{a}");
    assert_eq!(a["restarts"], 0, "{a}");
    drop(d);
    drop(disk);
}
