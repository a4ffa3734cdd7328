//! Private group networks in the real daemon, as root: two groups talk by every name form,
//! a private group cannot reach a loopback-only service of the host, a published port
//! answers from the host (also while the daemon is killed and after a new one adopted the
//! group), a reload that changes it touches nobody, and a stopped daemon leaves no bridge,
//! veth or nftables table. A test binary of its own: it counts links and namespaces.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use agent_supervisor_tests::fixture::{root_or_skip, text, Fixture};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

/// The tests of this binary count links and namespaces: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

/// A fixture whose host has the group subnet `10.<89+n>.0.0/24` (its own: tests of this
/// binary run at once, each with a bridge of its own).
fn fixture(name: &str, n: u8, groups: &str) -> Fixture {
    let f = Fixture::new(BIN, name, "net", groups);
    let path = f.dir.join("system.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "h1: {address: 127.0.0.1, role: primary}",
        &format!(
            "h1: {{address: 127.0.0.1, role: primary, network: {{subnet: 10.{}.0.0/24}}}}",
            89 + n
        ),
        1,
    );
    std::fs::write(&path, text).unwrap();
    f
}

fn ctl(f: &Fixture, args: &[&str]) -> Output {
    f.ctl(CTL, args)
}

fn start(f: &Fixture) -> Child {
    f.start_daemon()
}

/// Waits until every agent is RUNNING and healthy; returns agent -> pid.
fn running(f: &Fixture, n: usize) -> Vec<(String, i32)> {
    let t = Instant::now();
    loop {
        let out = ctl(f, &["status", "--json"]);
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
            let agents = v["agents"].as_array().cloned().unwrap_or_default();
            // Every agent here has a health check: healthy means it listens.
            if agents.len() == n
                && agents
                    .iter()
                    .all(|a| a["state"] == "RUNNING" && a["health"] == "healthy")
            {
                return agents
                    .iter()
                    .map(|a| {
                        (
                            a["agent"].as_str().unwrap().to_string(),
                            a["pid"].as_i64().unwrap() as i32,
                        )
                    })
                    .collect();
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "agents not RUNNING: {}\ndaemon log:\n{}",
            text(&out),
            f.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Shuts the fixture's daemon (and with it its agents, bridge and table) down when the test
/// ends, also when it failed.
struct Cleanup<'a>(&'a Fixture);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.0.socket().exists() {
            let _ = ctl(self.0, &["shutdown"]);
            let t = Instant::now();
            while self.0.socket().exists() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn pid_of(agents: &[(String, i32)], name: &str) -> i32 {
    agents.iter().find(|(a, _)| a == name).unwrap().1
}

/// Connects from inside `pid`'s network and mount namespaces (its `/etc/hosts`) to
/// `host:port`; `Ok` with the first line the server sent, or why it failed.
fn connect_from(pid: i32, host: &str, port: u16) -> Result<String, String> {
    let code = format!(
        "import socket,sys\ntry:\n s=socket.create_connection(({host:?},{port}),2)\n s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n print(s.recv(64).decode().splitlines()[0])\nexcept Exception as e:\n print(e); sys.exit(1)\n"
    );
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "-m", "python3", "-c", &code])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(s)
    } else {
        Err(format!("{s}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Connects from the host.
fn connect_host(addr: &str, port: u16) -> Result<(), String> {
    let a: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
    std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn links(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn table(f: &Fixture) -> Option<String> {
    let name = agent_plan::net::table_name(&f.dir.join("run"));
    let out = Command::new("nft")
        .args(["list", "table", "ip", &name])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

const TWO_GROUPS: &str = "  web:\n    host: h1\n    network: private\n    agents:\n      - name: front\n        command: [python3, -m, http.server, '8001']\n        port: 8001\n        health: {tcp: true, interval: 200ms}\n  api:\n    host: h1\n    network: private\n    agents:\n      - name: back\n        command: [python3, -m, http.server, '8002']\n        port: 8002\n        publish: ['PUB:8002']\n        health: {tcp: true, interval: 200ms}\n";

#[test]
fn private_groups_talk_by_name_publish_ports_and_leave_nothing() {
    if !root_or_skip("private_groups_talk_by_name_publish_ports_and_leave_nothing") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pub_port = 18350;
    let f = fixture(
        "net-two",
        0,
        &TWO_GROUPS.replace("PUB", &pub_port.to_string()),
    );
    let bridge = agent_plan::net::bridge_name(&f.dir.join("run"));
    let _cleanup = Cleanup(&f);
    let mut daemon = start(&f);
    let agents = running(&f, 2);
    let front = pid_of(&agents, "front");
    // Every name form, from the other group, case-insensitively.
    for name in ["back", "back.api", "back.api.h1", "api", "BACK.Api"] {
        let r = connect_from(front, name, 8002);
        assert!(
            r.as_deref().is_ok_and(|l| l.starts_with("HTTP/1.0 200")),
            "front -> {name}:8002: {r:?}"
        );
    }
    // Status shows each group's address, /metrics its veth's bytes.
    let st: Value = serde_json::from_slice(&ctl(&f, &["status", "--json"]).stdout).unwrap();
    let api = st["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "api")
        .unwrap()
        .clone();
    let addr = api["address"].as_str().unwrap().to_string();
    assert!(addr.starts_with("10.89.0."), "{api}");
    assert!(api["network_rx_bytes"].as_u64().unwrap() > 0, "{api}");
    let table_out = text(&ctl(&f, &["status"]));
    assert!(
        table_out.contains("ADDRESS") && table_out.contains(&addr),
        "{table_out}"
    );
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", f.port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut m = String::new();
        s.read_to_string(&mut m).unwrap();
        m
    };
    assert!(
        metrics.contains("container_network_receive_bytes_total{host=\"h1\",group=\"api\"}"),
        "{metrics}"
    );
    // The host by its name is the bridge's address; the published port answers there.
    assert!(connect_from(front, "h1", pub_port).is_ok());
    // The daemon's loopback-only listener (127.0.0.1:<port>) is out of reach: the group's
    // 127.0.0.1 is its own, and the bridge address has no such listener.
    assert!(
        connect_host("127.0.0.1", f.port).is_ok(),
        "the daemon listens"
    );
    assert!(connect_from(front, "127.0.0.1", f.port).is_err());
    assert!(connect_from(front, "h1", f.port).is_err());
    // The published port from the host, at one of its own addresses (the bridge's).
    let gw = "10.89.0.1";
    connect_host(gw, pub_port).unwrap();
    // ... while the daemon is killed, and after a new daemon adopted the group.
    let rules = table(&f).unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    connect_host(gw, pub_port).unwrap();
    let _ = std::fs::remove_file(f.socket());
    let mut daemon = start(&f);
    let again = running(&f, 2);
    assert_eq!(pid_of(&again, "back"), pid_of(&agents, "back"), "adopted");
    connect_host(gw, pub_port).unwrap();
    assert_eq!(
        table(&f).unwrap(),
        rules,
        "the table is rewritten, never doubled"
    );
    assert!(links("asv").len() >= 2);
    // A reload that moves the published port restarts nobody.
    f.set_groups(&TWO_GROUPS.replace("PUB", &(pub_port + 1).to_string()));
    let out = ctl(&f, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = Instant::now();
    while connect_host(gw, pub_port + 1).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the new port never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(connect_host(gw, pub_port).is_err(), "the old port is gone");
    assert_eq!(running(&f, 2), again, "nobody restarted");
    // A reload that adds a group to the network starts only it; the running groups find it
    // by name at once (their /etc/hosts is rewritten in place). Its exec health check runs
    // in its network namespace (127.0.0.1 is the agent's).
    f.set_groups(&format!(
        "{}  extra:\n    host: h1\n    network: private\n    agents:\n      - name: more\n        command: [python3, -m, http.server, '8003']\n        port: 8003\n        health: {{exec: [python3, -c, 'import socket; socket.create_connection((\"127.0.0.1\", 8003), 1)'], interval: 200ms}}\n",
        TWO_GROUPS.replace("PUB", &(pub_port + 1).to_string())
    ));
    let out = ctl(&f, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    let three = running(&f, 3);
    assert_eq!(pid_of(&three, "front"), pid_of(&again, "front"));
    assert_eq!(pid_of(&three, "back"), pid_of(&again, "back"));
    let r = connect_from(pid_of(&three, "front"), "more.extra", 8003);
    assert!(r.is_ok(), "front -> more.extra: {r:?}");
    // A clean stop takes the bridge, the veths and the table with it.
    let veths: Vec<String> = links("asv");
    let out = ctl(&f, &["shutdown"]);
    assert!(out.status.success(), "{}", text(&out));
    daemon.wait().unwrap();
    assert!(table(&f).is_none(), "the table is gone");
    assert!(links(&bridge).is_empty(), "the bridge is gone");
    let t = Instant::now();
    loop {
        let left: Vec<String> = links("asv")
            .into_iter()
            .filter(|v| veths.contains(v))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "veths left: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_hundred_private_group_cycles_leave_no_veth_or_namespace() {
    if !root_or_skip("a_hundred_private_group_cycles_leave_no_veth_or_namespace") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture(
        "net-cycles",
        1,
        "  g:\n    host: h1\n    network: private\n    agents:\n      - name: once\n        command: [/bin/true]\n",
    );
    let (_, plan) = agent_plan::Plan::load(&f.dir.join("system.yaml"), "h1", None).unwrap();
    let agent_plan::NetworkPlan::Private(n) = &plan.groups["g"].network else {
        panic!("g is private");
    };
    // run-group has no daemon to remove the bridge: this test does, also when it fails.
    struct Bridge(String);
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = agent_launch::rtnl::delete_link(&self.0);
        }
    }
    let _bridge = Bridge(n.bridge.clone());
    let count_ns = || {
        let mut set = std::collections::BTreeSet::new();
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(l) = std::fs::read_link(p.path().join("ns/net")) {
                set.insert(l);
            }
        }
        set.len()
    };
    let before = count_ns();
    for i in 0..100 {
        let out = f.run_group("g");
        assert!(out.status.success(), "cycle {i}: {}", text(&out));
    }
    // The kernel removes the last pair in the background once its namespace is gone.
    let t = Instant::now();
    while !links(&n.veth_prefix).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "veth {} left",
            n.veth_prefix
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(count_ns() <= before, "network namespaces left");
    // run-group has no daemon to remove the bridge; it holds only the bridge address.
    let addrs = Command::new("ip")
        .args(["-o", "addr", "show", "dev", &n.bridge])
        .output()
        .unwrap();
    let a = String::from_utf8_lossy(&addrs.stdout);
    assert_eq!(a.lines().filter(|l| l.contains(" inet ")).count(), 1, "{a}");
    assert!(a.contains("10.90.0.1/24"), "{a}");
}
