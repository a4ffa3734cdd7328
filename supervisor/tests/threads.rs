//! The daemon's threads stay bounded, as root: 40 agents restarted all at once, again and
//! again, with status asked meanwhile, never run the daemon on more than its core thread and
//! `BLOCKING_THREADS` blocking ones (tokio's default pool kept a thread, and a malloc arena,
//! for every agent of the biggest burst, so the daemon's RSS climbed with its bursts); a
//! `logs -f` client has a thread of its own, which ends when the client goes.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_supervisor::daemon::BLOCKING_THREADS;
use agent_supervisor_tests::daemon::Daemon;
use agent_supervisor_tests::fixture::{root_or_skip, stop_child, text, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

/// The daemon's threads: how many, and how many of them are named `name`.
fn threads(pid: i32, name: &str) -> (usize, usize) {
    let comms: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default())
        .collect();
    let named = comms.iter().filter(|c| c.trim() == name).count();
    (comms.len(), named)
}

fn all_running(d: &Daemon, n: usize) -> bool {
    let agents = d.agents();
    agents.len() == n && agents.iter().all(|a| a["state"] == "RUNNING")
}

#[test]
fn bursts_of_blocking_work_never_grow_the_daemon_past_its_pool() {
    let test = "bursts_of_blocking_work_never_grow_the_daemon_past_its_pool";
    if !root_or_skip(test) {
        return;
    }
    let mut groups = String::new();
    for g in 0..4 {
        groups.push_str(&format!("  g{g}:\n    host: h1\n    agents:\n"));
        for a in 0..10 {
            groups.push_str(&format!(
                "      - name: a{g}{a}\n        command: [sleep, '600']\n"
            ));
        }
    }
    let f = Fixture::new(BIN, "threads", "thr", &groups);
    let d = Daemon::start(&f, CTL);
    let pid = d.pid();
    let t = Instant::now();
    while !all_running(&d, 40) {
        assert!(t.elapsed() < Duration::from_secs(60), "{}", d.status());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Three followers: a thread each, outside the pool.
    let followers: Vec<_> = (0..3)
        .map(|_| {
            Command::new(CTL)
                .arg("-s")
                .arg(f.socket())
                .args(["logs", "-f", "a00"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let t = Instant::now();
    while threads(pid, "logs-follow").1 < 3 {
        assert!(t.elapsed() < Duration::from_secs(10), "no 3 followers");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Restart all 40 at once, five times, asking status meanwhile; count threads all along.
    let mut most = (0, 0);
    for round in 0..5 {
        let mut restart = Command::new(CTL)
            .arg("-s")
            .arg(f.socket())
            .args(["restart", "all"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        loop {
            let now = threads(pid, "logs-follow");
            most = most.max(now);
            if let Some(status) = restart.try_wait().unwrap() {
                let out = restart.wait_with_output().unwrap();
                assert!(status.success(), "round {round}: restart: {}", text(&out));
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "round {round}: restart hangs"
            );
            let _ = d.status();
        }
        while !all_running(&d, 40) {
            most = most.max(threads(pid, "logs-follow"));
            assert!(t.elapsed() < Duration::from_secs(60), "{}", d.status());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (total, followers_seen) = most;
    eprintln!("{test}: at most {total} threads ({followers_seen} followers)");
    assert!(
        total <= 1 + BLOCKING_THREADS + 3,
        "the daemon ran {total} threads: more than its core thread, {BLOCKING_THREADS} \
         blocking ones and 3 followers"
    );

    // The followers' threads end with their clients.
    for mut c in followers {
        stop_child(&mut c);
    }
    let t = Instant::now();
    while threads(pid, "logs-follow").1 > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a follower thread outlived its client"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
