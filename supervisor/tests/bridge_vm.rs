//! The WireGuard bridge with kernel WireGuard at one end, in the test VM (whose kernel has
//! the `wireguard` module, unlike a typical CI host): two "hosts" (network namespaces of the
//! guest joined by a veth underlay, each with its own daemon), h1 with `implementation:
//! kernel`, h2 with `implementation: userspace` (`agent-bridge`). An agent on h2 reaches an
//! agent on h1 by name through the tunnel; both daemons report their implementation and an
//! answering peer with a handshake; `wg show` sees the kernel device's peer; a daemon
//! restarted after `kill -9` adopts the kernel device untouched (same interface, same
//! handshake); after both daemons shut down, no bridge interface and no `agent-bridge`
//! process is left.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_supervisor_tests::hosts::{ECHO_SERVER, FETCH_CLIENT};
use agent_supervisor_tests::vm::{self, shell_quote, VmOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");
// Named so that cargo builds it: the daemon finds it next to its own executable.
const BRIDGE: &str = env!("CARGO_BIN_EXE_agent-bridge");

/// The fixture directory, shared read-write with the guest; removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `agent-supervisor bridge keygen --out FILE`; returns the public key.
fn keygen(file: &Path) -> String {
    let out = Command::new(BIN)
        .args(["bridge", "keygen", "--out"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The system file: h1 (kernel WireGuard) serves `web`, h2 (userspace) runs `front`, whose
/// client asks for h1's server by name. Daemon state lives in the guest's `/run`, logs in the
/// shared directory. Returns the file and the hosts' public keys.
fn system_yaml(dir: &Path) -> (String, Vec<String>) {
    let mut yaml = String::from("version: 1\nhosts:\n");
    let mut keys = Vec::new();
    for (i, implementation) in [(1, "kernel"), (2, "userspace")] {
        let public_key = keygen(&dir.join(format!("keys/h{i}.key")));
        yaml.push_str(&format!(
            "  h{i}:\n    address: 10.250.0.{i}\n    role: {role}\n    network: {{subnet: 10.250.{sub}.0/24}}\n    bridge: {{address: 10.250.1.{i}/24, listen_port: {port}, private_key_file: keys/h{i}.key, public_key: \"{public_key}\", implementation: {implementation}}}\n    daemon: {{run_dir: /run/bvm/h{i}/run, log_dir: {d}/h{i}/logs, state_dir: /run/bvm/h{i}/state, control_socket: /run/bvm/h{i}/control.sock, cgroup_root: bvm-h{i}.slice, http_listen: '127.0.0.1:9000'}}\n",
            role = if i == 1 { "primary" } else { "secondary" },
            sub = 16 * i,
            port = 51820 + i,
            d = dir.display(),
        ));
        keys.push(public_key);
    }
    yaml.push_str(
        "groups:\n  web:\n    host: h1\n    network: private\n    agents:\n      - name: server\n        command: [python3, agents/server.py]\n        port: 8000\n  \
         front:\n    host: h2\n    network: private\n    agents:\n      - name: client\n        command: [python3, agents/client.py, server.web.h1]\n",
    );
    (yaml, keys)
}

/// The guest's script: namespaces and underlay, both daemons, then each `@@ section`.
fn script(dir: &Path) -> String {
    format!(
        r#"
B={bin}; C={ctl}; D={dir}; S=$D/system.yaml
ns() {{ n=$1; shift; nsenter --net=/run/netns/bvm$n -- "$@"; }}
ctl() {{ n=$1; shift; $C -s /run/bvm/h$n/control.sock "$@"; }}
t0=$(cut -d' ' -f1 /proc/uptime)
stamp() {{ echo "TIME $1 $(cut -d' ' -f1 /proc/uptime) (script start $t0)"; }}
now() {{ cut -d. -f1 /proc/uptime; }}
# waitfor SECONDS COMMAND...: until COMMAND succeeds (status 1 after SECONDS of guest time).
waitfor() {{ lim=$(( $(now) + $1 )); shift; until "$@"; do [ $(now) -lt $lim ] || return 1; sleep 0.2; done; }}
up() {{ kill -0 $P1 && kill -0 $P2; }}
for n in 1 2; do
    ip netns add bvm$n && ip -n bvm$n link set lo up || exit 10
    mkdir -p /run/bvm/h$n
done
ip link add bvmu1 type veth peer name bvmu2 || exit 11
for n in 1 2; do
    ip link set bvmu$n netns bvm$n
    ip -n bvm$n addr add 10.250.0.$n/24 dev bvmu$n
    ip -n bvm$n link set bvmu$n up
done
echo "@@ module"
grep -o '^wireguard ' /proc/modules
# Not through `ns`: $! must be the daemon (nsenter execs it), not a subshell.
daemon() {{ nsenter --net=/run/netns/bvm$1 -- $B daemon --config $S --host h$1 >> $D/daemon-h$1.log 2>&1 & }}
daemon 1; P1=$!
daemon 2; P2=$!
sockets() {{ ! up || {{ [ -S /run/bvm/h1/control.sock ] && [ -S /run/bvm/h2/control.sock ]; }}; }}
waitfor 30 sockets
stamp daemons
echo "@@ client"
L=$D/h2/logs/client.stdout.log
answer() {{ ! up || grep -q ' OK server.web.h1 echo ' $L 2>/dev/null; }}
waitfor 40 answer
stamp answer
grep -m1 ' OK server.web.h1 echo ' $L
bridges() {{ ! up || {{ ctl 1 bridge > /dev/null && ctl 2 bridge > /dev/null; }}; }}
waitfor 20 bridges
stamp bridge
echo "@@ bridge h1"
ctl 1 bridge --json
echo "@@ bridge h2"
ctl 2 bridge --json
# The kernel device (`wg show all` would list h2's userspace one too: its socket in
# /var/run/wireguard is seen from every namespace).
W=$(ns 1 ip -o link show type wireguard | cut -d: -f2 | tr -d ' ')
echo "@@ wg h1"
ns 1 wg show $W dump | tail -n +2
echo "@@ wg h1 text"
ns 1 wg show $W
# kill -9 of h1's daemon, then a new one: it adopts the kernel device as it is (same
# interface, and no reconfiguration, which would drop the peer's session and handshake).
echo "@@ restart h1"
before="$(ns 1 ip -o link show dev $W | cut -d: -f1) $(ns 1 wg show $W latest-handshakes | cut -f2)"
kill -9 $P1; wait $P1
rm -f /run/bvm/h1/control.sock
daemon 1; P1=$!
adopted() {{ ! up || ctl 1 bridge > /dev/null; }}
waitfor 30 adopted
stamp restarted
echo "before $before"
echo "after $(ns 1 ip -o link show dev $W | cut -d: -f1) $(ns 1 wg show $W latest-handshakes | cut -f2)"
ctl 1 bridge --json | grep '"implementation"'
echo "@@ shutdown"
ctl 1 shutdown; ctl 2 shutdown
wait $P1; echo "h1 daemon exit $?"
wait $P2; echo "h2 daemon exit $?"
stamp shutdown
echo "@@ links after"
for n in 1 2; do ns $n ip -o link show | grep -o 'aswg[0-9a-f]*'; done
ns 1 ip -o link show type wireguard
echo "@@ processes after"
pgrep -x agent-bridge
echo "@@ daemon h1"
cat $D/daemon-h1.log
echo "@@ daemon h2"
cat $D/daemon-h2.log
echo "@@ client log"
tail -n 5 $L
echo "@@ dmesg"
dmesg | grep -i wireguard
echo "@@ end"
"#,
        bin = shell_quote(BIN),
        ctl = shell_quote(CTL),
        dir = shell_quote(&dir.to_string_lossy()),
    )
}

/// The script's output by `@@ section` (each section's text up to the next marker).
fn sections(out: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut name = String::new();
    for line in out.lines() {
        if let Some(n) = line.strip_prefix("@@ ") {
            name = n.trim().to_string();
            map.entry(name.clone()).or_insert_with(String::new);
        } else {
            let s = map.entry(name.clone()).or_insert_with(String::new);
            s.push_str(line);
            s.push('\n');
        }
    }
    map
}

fn peer<'a>(bridge: &'a Value, host: &str) -> &'a Value {
    bridge["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["host"] == host))
        .unwrap_or(&Value::Null)
}

#[test]
fn kernel_wireguard_end_talks_to_the_userspace_end_in_the_vm() {
    let test = "kernel_wireguard_end_talks_to_the_userspace_end_in_the_vm";
    if !vm::require_or_skip(test) {
        return;
    }
    assert!(Path::new(BRIDGE).is_file(), "{BRIDGE} is built");
    let started = Instant::now();
    let dir = Dir(std::env::temp_dir().join(format!("as-bridge-vm-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    for sub in ["agents", "keys", "h1/logs", "h2/logs"] {
        std::fs::create_dir_all(dir.0.join(sub)).unwrap();
    }
    std::fs::write(dir.0.join("agents/server.py"), ECHO_SERVER).unwrap();
    std::fs::write(dir.0.join("agents/client.py"), FETCH_CLIENT).unwrap();
    let (yaml, keys) = system_yaml(&dir.0);
    std::fs::write(dir.0.join("system.yaml"), yaml).unwrap();

    let opts = VmOptions {
        timeout: Duration::from_secs(100),
        share_rw: vec![dir.0.clone()],
        ..VmOptions::default()
    };
    let run = vm::run_reported(test, started, &script(&dir.0), &opts);
    let out = &run.stdout;
    let s = sections(out);
    let section = |name: &str| {
        s.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no section {name}:\n{out}\nconsole:\n{}", run.console))
    };
    assert_eq!(
        section("module").lines().next().map(str::trim),
        Some("wireguard"),
        "{out}"
    );

    // The agent on h2 got h1's answer through the tunnel.
    assert!(
        section("client").contains("OK server.web.h1 echo hello-"),
        "{out}\nconsole:\n{}",
        run.console
    );

    // Each daemon reports its own implementation and an answering peer with a handshake.
    for (name, implementation, other) in [("h1", "kernel", "h2"), ("h2", "userspace", "h1")] {
        let text = section(&format!("bridge {name}"));
        let b: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("bridge {name}: {e}\n{out}"));
        assert_eq!(b["implementation"], implementation, "{name}: {b:#}\n{out}");
        let p = peer(&b, other);
        assert_eq!(p["up"], true, "{name}: {b:#}\n{out}");
        assert!(p["latest_handshake"].as_f64().unwrap_or(0.0) > 0.0, "{b:#}");
        assert!(p["rx_bytes"].as_u64().unwrap_or(0) > 0, "{b:#}");
        assert!(p["rtt_ms"].as_f64().unwrap_or(0.0) > 0.0, "{b:#}");
    }
    assert!(section("bridge h1").contains("\"pid\": null"), "{out}");

    // `wg` reads the kernel device: h2's key is its peer, with a handshake (peer lines of
    // `wg show IF dump`: public key, preshared key, endpoint, allowed ips, latest handshake,
    // rx, tx, keepalive).
    let h2_key = &keys[1];
    let dump = section("wg h1");
    let row: Vec<&str> = dump
        .lines()
        .find(|l| l.split('\t').next() == Some(h2_key))
        .unwrap_or_else(|| panic!("no peer {h2_key} in `wg show all dump`:\n{out}"))
        .split('\t')
        .collect();
    let mut allowed: Vec<&str> = row.get(3).copied().unwrap_or("").split(',').collect();
    allowed.sort_unstable();
    assert_eq!(allowed, ["10.250.1.2/32", "10.250.32.0/24"], "{dump}");
    assert!(
        row.get(4).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0) > 0,
        "no handshake: {dump}"
    );
    assert!(section("wg h1 text").contains("latest handshake"), "{out}");

    // A restarted daemon adopted the kernel device untouched.
    let restart = section("restart h1");
    let line = |p: &str| {
        restart
            .lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no {p:?} line:\n{out}"))
            .to_string()
    };
    let before = line("before ");
    assert!(
        before
            .split(' ')
            .all(|v| v.parse::<u64>().is_ok_and(|n| n > 0)),
        "{out}"
    );
    assert_eq!(
        before,
        line("after "),
        "the device was remade or reconfigured:\n{out}"
    );
    assert!(restart.contains("\"implementation\": \"kernel\""), "{out}");

    // After `supervisorctl shutdown` of both: the daemons exited, nothing is left.
    let shutdown = section("shutdown");
    assert!(
        shutdown.contains("h1 daemon exit 0") && shutdown.contains("h2 daemon exit 0"),
        "{out}"
    );
    assert_eq!(section("links after").trim(), "", "links left:\n{out}");
    assert_eq!(
        section("processes after").trim(),
        "",
        "processes left:\n{out}"
    );
    assert_eq!(run.exit_code, 0, "{out}");
}
