//! The launcher on a unified cgroup v2 host (the test VM): a group's sandbox, `memory.max`
//! with the OOM kill attributed to the agent while another group runs on, and `pids.max`.
//! (`agent-bench launch` in the VM: `bench/tests/bench_vm.rs`.)

use std::time::Instant;

use agent_supervisor_tests::fixture::Fixture;
use agent_supervisor_tests::vm::{self, shell_quote, VmOptions};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

#[test]
fn run_group_on_cgroup_v2_in_the_vm() {
    let test = "run_group_on_cgroup_v2_in_the_vm";
    if !vm::require_or_skip(test) {
        return;
    }
    let started = Instant::now();
    let f = Fixture::new(
        BIN,
        "launch-vm",
        "vm",
        "  hungry:\n    host: h1\n    resources: {memory: 64M, pids: 64}\n    agents:\n      - name: hog\n        command: [python3, agents/hog.py]\n      - name: calm\n        command: [python3, -c, 'print(\"calm ok\")']\n  bystander:\n    host: h1\n    resources: {memory: 64M}\n    agents:\n      - name: sleeper\n        command: [sleep, '600']\n  probe:\n    host: h1\n    resources: {pids: 40}\n    agents:\n      - name: probe\n        command: [python3, agents/probe.py]\n",
    );
    f.file(
        "agents/hog.py",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n",
    );
    f.file(
        "agents/probe.py",
        r#"
import os, socket
print("HOSTNAME", socket.gethostname())
print("PID1", open("/proc/1/cmdline").read().replace("\0", " "))
for line in open("/proc/self/status"):
    if line.split(":")[0] in ("CapEff", "NoNewPrivs", "Seccomp"):
        print("STATUS", line.strip().replace("\t", " "))
print("CGROUP", open("/proc/self/cgroup").read().strip())
kids, failed = [], 0
for _ in range(100):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        import time; time.sleep(1); os._exit(0)
    kids.append(pid)
print("FORKS", len(kids), failed)
for k in kids:
    os.waitpid(k, 0)
"#,
    );
    let sys = f.dir.join("system.yaml");
    let script = format!(
        r#"
B={bin}; S={sys}
$B run-group $S --host h1 bystander > /tmp/bystander.log 2>&1 &
BPID=$!
for i in $(seq 50); do grep -q started /tmp/bystander.log && break; sleep 0.1; done
echo "@@ limits"
cat /sys/fs/cgroup/{slice}/bystander/memory.max /sys/fs/cgroup/{slice}/bystander/memory.swap.max
echo "@@ hungry"
# Load the interpreter outside the limited group first, so memcg reclaim in it cannot thrash
# on the interpreter's pages (read over 9p) before the OOM killer acts (see tests/cgroup.rs).
python3 -c 'import os, socket' >/dev/null
$B run-group $S --host h1 hungry --until-exit
echo "hungry exit $?"
kill -0 $BPID && echo "bystander alive"
kill -INT $BPID; wait $BPID
cat /tmp/bystander.log
echo "@@ probe"
$B run-group $S --host h1 probe --until-exit
echo "@@ leftovers"
find /sys/fs/cgroup/{slice} -mindepth 1 -type d
echo "@@ end"
"#,
        bin = shell_quote(BIN),
        sys = shell_quote(&sys.to_string_lossy()),
        slice = f.slice,
    );
    let opts = VmOptions {
        share_rw: vec![f.dir.clone()],
        ..VmOptions::default()
    };
    let run = vm::run_reported(test, started, &script, &opts);
    let out = &run.stdout;
    assert!(
        out.contains("67108864\n0\n"),
        "memory.max / memory.swap.max:\n{out}"
    );
    assert!(
        out.contains("hungry:hog: killed by SIGKILL (OOM-killed)"),
        "{out}"
    );
    assert!(out.contains("hungry:calm: exit 0"), "{out}");
    assert!(out.contains("bystander alive"), "{out}");
    assert!(
        out.contains("bystander:sleeper: killed by SIGTERM"),
        "{out}"
    );
    assert!(!out.contains("sleeper: killed by SIGKILL (OOM"), "{out}");
    assert!(out.contains("HOSTNAME probe"), "{out}");
    assert!(out.contains("__group-init"), "{out}");
    assert!(
        out.contains("STATUS NoNewPrivs: 1") && out.contains("STATUS Seccomp: 2"),
        "{out}"
    );
    assert!(out.contains("STATUS CapEff: 00000000a00405fb"), "{out}");
    assert!(
        out.contains("CGROUP 0::/"),
        "the agent's cgroup namespace is rooted at its cgroup:\n{out}"
    );
    let forks = out
        .lines()
        .find(|l| l.starts_with("FORKS"))
        .unwrap_or_else(|| panic!("{out}"));
    let n: usize = forks.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(n < 40, "pids.max did not hold: {forks}");
    let leftovers = out
        .split("@@ leftovers\n")
        .nth(1)
        .unwrap()
        .split("@@ end")
        .next()
        .unwrap();
    assert_eq!(leftovers.trim(), "", "cgroups left behind: {leftovers}");
}
