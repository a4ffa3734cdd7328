//! `agent-bench launch` on a unified cgroup v2 host (the test VM): its pods, started through
//! the launch server as the daemon starts them, with the init in its cgroup2 leaf, start,
//! run and go, leaving no cgroup behind. Not a timing assertion.

use agent_supervisor_tests::vm::{self, shell_quote, VmOptions};

const BIN: &str = env!("CARGO_BIN_EXE_agent-bench");

#[test]
fn bench_launch_on_cgroup_v2_in_the_vm() {
    let test = "bench_launch_on_cgroup_v2_in_the_vm";
    if !vm::require_or_skip(test) {
        return;
    }
    let script = format!(
        r#"
echo "@@ bench"
{bin} launch --runs 3 2>&1
echo "@@ bench leftovers"
ls /sys/fs/cgroup | grep as-bench
echo "@@ bench end"
"#,
        bin = shell_quote(BIN),
    );
    let run = vm::run(&script, &VmOptions::default()).expect("the VM runs the script");
    eprintln!("{test}: boot {:.1?}\n{}", run.boot_time, run.stdout);
    let out = &run.stdout;
    let bench = out
        .split("@@ bench\n")
        .nth(1)
        .and_then(|b| b.split("@@ bench leftovers").next())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(bench.contains("forked by its launch server"), "{bench}");
    let median = bench
        .lines()
        .find(|l| l.starts_with("| agent-supervisor: new group + agent"))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|m| m.trim().parse::<f64>().ok());
    assert!(median.is_some_and(|m| m > 0.0), "{bench}");
    let left = out
        .split("@@ bench leftovers\n")
        .nth(1)
        .and_then(|b| b.split("@@ bench end").next())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(left.trim(), "", "bench cgroups left behind: {left}");
}
