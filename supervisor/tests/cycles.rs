//! 100 start/stop cycles of a group leave no process, cgroup, mount or namespace behind.
//! A test binary of its own: cargo runs test binaries one at a time, so nothing else creates
//! namespaces while this one counts them.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::time::Instant;

use agent_supervisor_tests::fixture::{root_or_skip, text, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

/// Counts of things a group could leave behind.
#[derive(Debug, PartialEq)]
struct Leftovers {
    processes: usize,
    cgroups: usize,
    mounts: usize,
    namespaces: usize,
}

fn leftovers(tag: &str) -> Leftovers {
    let mut processes = 0;
    let mut namespaces = std::collections::BTreeSet::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if p.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(tag) {
                processes += 1;
            }
        }
        if let Ok(ns) = std::fs::read_dir(p.path().join("ns")) {
            for n in ns.flatten() {
                if let Ok(l) = std::fs::read_link(n.path()) {
                    namespaces.insert(l);
                }
            }
        }
    }
    let mut cgroups = 0;
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let mut stack = vec![h.path()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if e.path()
                        .to_string_lossy()
                        .contains(&format!("as-test-cycles-{}", std::process::id()))
                    {
                        cgroups += 1;
                    }
                    stack.push(e.path());
                }
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    Leftovers {
        processes,
        cgroups,
        mounts,
        namespaces: namespaces.len(),
    }
}

#[test]
fn hundred_start_stop_cycles_leave_nothing_behind() {
    if !root_or_skip("hundred_start_stop_cycles") {
        return;
    }
    let f = Fixture::new(BIN, "cycles", "cycles", 
        "  cycler:\n    host: h1\n    resources: {memory: 32M, pids: 16}\n    agents:\n      - name: t1\n        command: [/bin/true]\n      - name: t2\n        command: [sh, -c, 'exit 0']\n"
    );
    let tag = "as-cycles";
    // Warm up once so lazily created parent cgroups exist in the baseline.
    assert!(f.run_group("cycler").status.success());
    let root_slices = leftovers(tag).cgroups;
    let before = leftovers(tag);
    let start = Instant::now();
    for i in 0..100 {
        let out = f.run_group("cycler");
        assert!(out.status.success(), "cycle {i}: {}", text(&out));
    }
    let after = leftovers(tag);
    eprintln!("100 cycles in {:?}", start.elapsed());
    assert_eq!(
        before, after,
        "leftovers after 100 cycles (root slices: {root_slices})"
    );
    assert_eq!(after.processes, 0);
    assert!(!f.dir.join("run/groups/cycler").exists());
}
