//! `agent-bench scale --sizes 20,100` and `agent-bench clients --clients 50` end to end, as
//! root: every row of their tables is printed with numbers and no error. Not a timing
//! assertion: the targets are the benchmarks' business.

use std::process::{Command, Stdio};

use agent_bench::{clients, scale};
use agent_supervisor_tests::fixture::{root_or_skip, siblings_or_skip};

const BIN: &str = env!("CARGO_BIN_EXE_agent-bench");

use agent_bench::table::cells;

fn supervisord_installed() -> bool {
    let ok = ["/usr/bin/supervisord", "/usr/local/bin/supervisord"]
        .iter()
        .any(|p| std::path::Path::new(p).is_file());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "supervisord is not installed (apt-get install supervisor)"
    );
    ok
}

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agent-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn scale_prints_a_row_per_size_and_daemon() {
    let test = "scale_prints_a_row_per_size_and_daemon";
    if !root_or_skip(test) || !siblings_or_skip(test, BIN, &["agent-supervisor", "supervisorctl"]) {
        return;
    }
    let with_sv = supervisord_installed();
    let out = run(&["scale", "--sizes", "20,100"]);
    let head = format!("| {} |", scale::HEADS.join(" | "));
    assert!(out.contains(&head), "no table head:\n{out}");
    for n in ["20", "100"] {
        for who in [scale::OURS, scale::SUPERVISORD] {
            let row = out
                .lines()
                .map(cells)
                .find(|c| c.len() >= 2 && c[0] == n && c[1] == who)
                .unwrap_or_else(|| panic!("no row for {who} at {n}:\n{out}"));
            if who == scale::SUPERVISORD && !with_sv {
                continue;
            }
            assert_eq!(row.len(), scale::HEADS.len(), "{row:?}\n{out}");
            assert!(
                !row.iter()
                    .any(|c| c.contains("error") || c.contains("failed")),
                "{row:?}\n{out}"
            );
            // RSS, time to all RUNNING, status and stop are measured.
            for c in &row[3..] {
                assert!(c != "-", "{who} at {n}: {row:?}\n{out}");
            }
            if who == scale::OURS {
                assert!(row[2].ends_with(" ms"), "check is timed: {row:?}");
            }
        }
    }
    assert!(out.contains("Targets at 100 agents: check < 2 s"), "{out}");
}

#[test]
fn clients_answers_every_request_on_every_listener() {
    let test = "clients_answers_every_request_on_every_listener";
    if !root_or_skip(test) || !siblings_or_skip(test, BIN, &["agent-supervisor", "supervisorctl"]) {
        return;
    }
    let with_sv = supervisord_installed();
    let out = run(&[
        "clients",
        "--clients",
        "50",
        "--requests",
        "4",
        "--agents",
        "20",
    ]);
    for label in clients::ROWS {
        let row = out
            .lines()
            .map(cells)
            .find(|c| c.first().map(String::as_str) == Some(*label))
            .unwrap_or_else(|| panic!("no row for {label}:\n{out}"));
        if *label == clients::SUPERVISORD && !with_sv {
            continue;
        }
        assert_eq!(row.len(), 7, "{row:?}\n{out}");
        assert_eq!(row[1], "200", "every request answered: {row:?}\n{out}");
        assert_eq!(row[2], "0", "no error: {row:?}\n{out}");
    }
}
