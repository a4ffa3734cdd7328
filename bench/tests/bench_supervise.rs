//! `agent-bench supervise` end to end, as root, with a few agents: the table has
//! every row, each supervisor's column has numbers or its reason is printed, the targets are
//! judged, and nothing is left behind (processes, the directory, the cgroups). Not a timing
//! assertion.

use std::process::{Command, Stdio};

use agent_bench::supervise::{OURS, ROWS, SUPERVISORS};
use agent_supervisor_tests::fixture::{root_or_skip, siblings_or_skip, text};

const BIN: &str = env!("CARGO_BIN_EXE_agent-bench");

use agent_bench::table::cells;

#[test]
fn bench_supervise_prints_every_row_for_every_supervisor() {
    if !root_or_skip("bench_supervise_prints_every_row_for_every_supervisor") {
        return;
    }
    let test = "bench_supervise_prints_every_row_for_every_supervisor";
    if !siblings_or_skip(test, BIN, &[agent_bench::supervise_ours::DAEMON_BIN]) {
        return;
    }
    let child = Command::new(BIN)
        .args(["supervise", "--agents", "6", "--kills", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent-bench supervise");
    let pid = child.id();
    let out = child
        .wait_with_output()
        .expect("wait for agent-bench supervise");
    let t = text(&out);
    assert!(out.status.success(), "{t}");

    let header = t
        .lines()
        .find(|l| l.starts_with("| measure"))
        .unwrap_or_else(|| panic!("no table header in:\n{t}"));
    let head = cells(header);
    for sup in SUPERVISORS {
        let col = head
            .iter()
            .position(|h| h == sup)
            .unwrap_or_else(|| panic!("no column {sup:?} in {header:?}"));
        // A supervisor that could not run says why on a line of its own.
        let reason = t
            .lines()
            .find(|l| l.starts_with(&format!("{sup}: ")))
            .map(str::to_string);
        for row in ROWS {
            let line = t
                .lines()
                .find(|l| l.starts_with(&format!("| {row} ")))
                .unwrap_or_else(|| panic!("no row {row:?} in:\n{t}"));
            let c = cells(line);
            assert_eq!(c.len(), head.len(), "row {line:?}");
            let cell = &c[col];
            assert!(!cell.is_empty(), "{sup}: empty cell in {line:?}");
            if cell == "-" {
                assert!(
                    reason.is_some(),
                    "{sup}: no number for {row:?} and no reason printed:\n{t}"
                );
            }
        }
        // agent-supervisor needs nothing but root: all its cells have values.
        if *sup == OURS {
            assert!(reason.is_none(), "agent-supervisor could not run:\n{t}");
        }
    }
    for target in [
        "restart after kill -9",
        "daemon RSS",
        "idle CPU",
        "stop-all",
    ] {
        let line = t
            .lines()
            .find(|l| l.trim_start().starts_with(target))
            .unwrap_or_else(|| panic!("no target line {target:?} in:\n{t}"));
        assert!(
            line.ends_with(": MET") || line.ends_with(": MISSED"),
            "{line}"
        );
    }

    // Nothing left behind.
    let dir = format!("/tmp/as-bench-sup-{pid}");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
    let slice = format!("as-bench-{pid}.slice");
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .expect("read /sys/fs/cgroup")
        .flatten()
    {
        let p = h.path().join(&slice);
        assert!(!p.exists(), "cgroup {} left behind", p.display());
    }
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(&dir) {
                left.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn bench_supervise_rejects_zero_agents() {
    let out = Command::new(BIN)
        .args(["supervise", "--agents", "0"])
        .output()
        .expect("run agent-bench supervise --agents 0");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--agents must be at least 1"),
        "{}",
        text(&out)
    );
}
