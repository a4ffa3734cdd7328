//! Private group networks on a unified cgroup v2 kernel (the test VM): two groups, each
//! `run-group` in its own network namespace on the host's bridge, reach each other by every
//! name form through their generated `/etc/hosts`, and nothing of either is left after.

use std::time::Instant;

use agent_supervisor_tests::fixture::Fixture;
use agent_supervisor_tests::vm::{self, shell_quote, VmOptions};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

#[test]
fn two_private_groups_talk_by_name_in_the_vm() {
    let test = "two_private_groups_talk_by_name_in_the_vm";
    if !vm::require_or_skip(test) {
        return;
    }
    let started = Instant::now();
    let f = Fixture::new(
        BIN,
        "net-vm",
        "vm",
        "  web:\n    host: h1\n    network: {mode: private, egress: false}\n    agents:\n      - name: front\n        command: [python3, -m, http.server, '8001']\n        port: 8001\n  api:\n    host: h1\n    network: {mode: private, egress: false}\n    agents:\n      - name: back\n        command: [python3, agents/ask.py]\n        port: 8002\n",
    );
    f.file(
        "agents/ask.py",
        r#"
import socket, time
for name in ["front", "front.web", "front.web.h1", "web", "FRONT.Web"]:
    for _ in range(100):
        try:
            s = socket.create_connection((name, 8001), 1)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            print("ASK", name, s.recv(64).decode().splitlines()[0], flush=True)
            break
        except OSError as e:
            err = e
            time.sleep(0.05)
    else:
        print("ASK", name, "failed:", err, flush=True)
print("ADDR", open("/etc/hosts").read().count("front.web.h1"), flush=True)
"#,
    );
    let sys = f.dir.join("system.yaml");
    let script = format!(
        r#"
B={bin}; S={sys}
$B run-group $S --host h1 web > /tmp/web.log 2>&1 &
WPID=$!
for i in $(seq 100); do grep -q started /tmp/web.log && break; sleep 0.1; done
echo "@@ ask"
$B run-group $S --host h1 api --until-exit
kill -INT $WPID; wait $WPID
echo "@@ links"
sleep 1
ip -o link | grep -c 'asv' || true
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
    for name in ["front", "front.web", "front.web.h1", "web", "FRONT.Web"] {
        assert!(
            out.contains(&format!("ASK {name} HTTP/1.0 200")),
            "{name}:\n{out}\nconsole:\n{}",
            run.console
        );
    }
    assert!(out.contains("ADDR 1"), "{out}");
    let links = out
        .split("@@ links\n")
        .nth(1)
        .and_then(|s| s.lines().next())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(links.trim(), "0", "veths left:\n{out}");
    let leftovers = out
        .split("@@ leftovers\n")
        .nth(1)
        .and_then(|s| s.split("@@ end").next())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(leftovers.trim(), "", "cgroups left behind: {leftovers}");
}
