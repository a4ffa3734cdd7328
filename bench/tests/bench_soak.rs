//! `agent-bench soak --minutes 2` end to end, as root: the two-host system with 12 stand-in
//! agents and the OOM group, under every kind of fault at least once. It must pass (no
//! agent lost or doubled, every fault recovered from, every restart counted, the summary
//! never hung, nothing left behind), and its table must show each kind injected and
//! recovered. Not a timing assertion.

use std::process::{Command, Stdio};

use agent_bench::soak_faults::Kind;
use agent_supervisor_tests::fixture::{root_or_skip, siblings_or_skip};

const BIN: &str = env!("CARGO_BIN_EXE_agent-bench");

use agent_bench::table::cells;

#[test]
fn a_two_minute_soak_recovers_from_every_kind_of_fault() {
    if !root_or_skip("a_two_minute_soak_recovers_from_every_kind_of_fault") {
        return;
    }
    let test = "a_two_minute_soak_recovers_from_every_kind_of_fault";
    if !siblings_or_skip(
        test,
        BIN,
        &["agent-supervisor", "supervisorctl", "agent-bridge"],
    ) {
        return;
    }
    let out = Command::new(BIN)
        .args(["soak", "--minutes", "2", "--agents", "12"])
        .stdin(Stdio::null())
        .output()
        .expect("run agent-bench soak");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "soak failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("repeat this run with --seed"),
        "the seed is printed: {stderr}"
    );
    for kind in Kind::ALL {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", kind.label())))
            .unwrap_or_else(|| panic!("no row for {}:\n{stdout}", kind.label()));
        let c = cells(row);
        let injected: usize = c[1].parse().expect("injected is a number");
        assert!(
            injected >= 1,
            "{} was never injected:\n{stdout}",
            kind.label()
        );
        assert_eq!(c[1], c[2], "every {} recovered:\n{stdout}", kind.label());
        assert_eq!(c[5], "none", "{}: {row}", kind.label());
    }
    for check in [
        "agents lost",
        "agents doubled",
        "`restarts_total`",
        "left behind",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {check}")))
            .unwrap_or_else(|| panic!("no row {check}:\n{stdout}"));
        assert_eq!(cells(row)[1], "none", "{row}");
    }
    assert!(stdout.contains("hangs (>= 3 s): 0;"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("nothing left behind"),
        "{stdout}"
    );
}
