//! `agent-bench launch` end to end, as root: a few runs print a table with a row
//! for every contender (numbers, or the reason there are none) and the target verdict, and
//! leave no cgroup or directory behind. Not a timing assertion.

use std::process::Command;

use agent_bench::launch::CONTENDERS;
use agent_supervisor_tests::fixture::{root_or_skip, text};

const BIN: &str = env!("CARGO_BIN_EXE_agent-bench");

#[test]
fn bench_launch_prints_every_contender() {
    if !root_or_skip("bench_launch_prints_every_contender") {
        return;
    }
    let child = Command::new(BIN)
        .args(["launch", "--runs", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn agent-bench launch");
    let pid = child.id();
    let out = child
        .wait_with_output()
        .expect("wait for agent-bench launch");
    let t = text(&out);
    assert!(out.status.success(), "{t}");

    for label in CONTENDERS {
        let row = t
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .unwrap_or_else(|| panic!("no row for {label:?} in:\n{t}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 5, "row {row:?}");
        let measured = cells[1..4].iter().all(|c| c.parse::<f64>().is_ok());
        let reason = cells[1..4].iter().all(|c| *c == "-") && !cells[4].is_empty();
        assert!(measured || reason, "neither numbers nor a reason: {row:?}");
    }
    // Our own paths and plain fork+exec need nothing but root: they must have numbers.
    for label in [
        agent_bench::launch::NEW_GROUP,
        agent_bench::launch::IN_GROUP,
        agent_bench::launch::NEW_GROUP_NET,
        agent_bench::launch::IN_GROUP_NET,
        agent_bench::launch::FORK_EXEC,
    ] {
        let row = t
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .expect("row checked above");
        let median = row.trim_matches('|').split('|').nth(1).map(str::trim);
        assert!(
            median.is_some_and(|m| m.parse::<f64>().is_ok()),
            "{label} did not run: {row}\n{t}"
        );
    }
    assert!(t.contains("where the time of"), "{t}");
    // Every row is explained.
    for label in CONTENDERS {
        assert!(
            t.lines().any(|l| l.starts_with(&format!("  {label}: "))),
            "no explanation of {label:?} in:\n{t}"
        );
    }
    let verdict = t
        .lines()
        .find(|l| l.starts_with("target: "))
        .unwrap_or_else(|| panic!("no target line in:\n{t}"));
    assert!(
        verdict.ends_with(": MET") || verdict.ends_with(": NOT MET"),
        "{verdict}"
    );

    // Nothing left behind: the bench system, the bundle, the cgroups.
    for dir in [
        format!("/tmp/as-bench-{pid}"),
        format!("/tmp/as-bench-{pid}-oci"),
        format!("/dev/shm/as-bench-{pid}-run"),
        format!("/dev/shm/as-bench-{pid}-oci-state"),
        format!("/tmp/as-bench-{pid}-run"),
        format!("/tmp/as-bench-{pid}-oci-state"),
    ] {
        assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
    }
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").expect("read /sys/fs/cgroup");
    for h in hierarchies.flatten() {
        for name in [
            format!("as-bench-{pid}.slice"),
            format!("as-bench-{pid}.oci"),
        ] {
            let p = h.path().join(&name);
            assert!(!p.exists(), "cgroup {} left behind", p.display());
        }
    }
}

#[test]
fn bench_launch_rejects_zero_runs() {
    let out = Command::new(BIN)
        .args(["launch", "--runs", "0"])
        .output()
        .expect("run agent-bench launch --runs 0");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--runs must be at least 1"),
        "{}",
        text(&out)
    );
}
