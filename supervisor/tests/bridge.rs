//! The WireGuard bridge between two "hosts" (network namespaces joined by a veth underlay,
//! each with its own daemon), as root: an agent on one reaches an agent on the other by
//! name; a capture of the underlay shows only UDP between the listen ports and never what
//! the agents send in clear; a namespace with a key nobody configured gets no answer; our
//! end and a `wireguard-go` end carry traffic both ways; a TCP stream through the tunnel
//! survives `kill -9` of either daemon; a restarted peer shakes hands again within 5 s; a
//! private key file others can read is refused with its path.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_supervisor_tests::fixture::root_or_skip;
use agent_supervisor_tests::hosts::{ip, wait_for, TwoHosts, ECHO_SERVER, FETCH_CLIENT};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");
const BRIDGE: &str = env!("CARGO_BIN_EXE_agent-bridge");

/// One private group on h1 with the echo server (`agents/server.py`) as `server`.
const WEB_ON_H1: &str = "  web:\n    host: h1\n    network: private\n    agents:\n      - name: server\n        command: [python3, agents/server.py]\n        port: 8000\n        health: {tcp: true, interval: 1s}\n";

fn wg_installed(test: &str) -> bool {
    let ok = Command::new("wireguard-go")
        .arg("--version")
        .output()
        .is_ok()
        && Command::new("wg").arg("--version").output().is_ok()
        && Command::new("tcpdump").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: wireguard-go, wg and tcpdump are needed (scripts/install-prereqs.sh)"
        );
        eprintln!("SKIP {test}: wireguard-go, wg or tcpdump missing");
    }
    ok
}

/// Stops a userspace WireGuard with SIGTERM (it removes its socket then); the socket goes
/// in any case.
fn stop(child: &mut std::process::Child, ifname: &str) {
    let _ = Command::new("kill").arg(child.id().to_string()).output();
    let t = Instant::now();
    while child.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(format!("/var/run/wireguard/{ifname}.sock"));
}

/// Waits until a userspace WireGuard serves interface `ifname`'s configuration socket.
fn wait_socket(ifname: &str) {
    let socket = format!("/var/run/wireguard/{ifname}.sock");
    wait_for(
        &format!("the socket {socket}"),
        Duration::from_secs(5),
        || std::path::Path::new(&socket).exists().then_some(()),
        String::new,
    );
}

fn peer<'a>(bridge: &'a Value, host: &str) -> &'a Value {
    bridge["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["host"] == host))
        .unwrap_or(&Value::Null)
}

fn by_name_groups() -> String {
    "  web:\n    host: h1\n    network: private\n    agents:\n      - name: server\n        command: [python3, agents/server.py]\n        port: 8000\n        health: {tcp: true, interval: 1s}\n  \
     front:\n    host: h2\n    network: private\n    agents:\n      - name: client\n        command: [python3, agents/client.py, server, server.web, server.web.h1, web]\n        env: {MARKER: SECRET-MARKER}\n"
        .to_string()
}

#[test]
fn agents_reach_each_other_by_name_and_the_underlay_carries_only_the_tunnel() {
    let test = "agents_reach_each_other_by_name_and_the_underlay_carries_only_the_tunnel";
    if !root_or_skip(test) || !wg_installed(test) {
        return;
    }
    let mut two = TwoHosts::new(BIN, CTL, "byname", 0, &by_name_groups(), "");
    two.file("agents/server.py", ECHO_SERVER);
    two.file("agents/client.py", FETCH_CLIENT);
    let pcap = two.dir.join("underlay.pcap");
    let h1 = two.hosts[0].clone();
    let h2 = two.hosts[1].clone();
    let mut capture = two
        .in_host(0, "tcpdump")
        // Immediate mode: packets reach the file as they come, not in blocks that a quick
        // SIGINT would lose ("N packets received by filter, 0 captured").
        .args(["-i", &h1.underlay, "-U", "--immediate-mode", "-n", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    two.start(0);
    two.start(1);
    // Every name form resolves on h2 to h1's group, through the tunnel.
    wait_for(
        "the client on h2 reaches the server on h1 by every name",
        Duration::from_secs(40),
        || {
            let out = two.agent_stdout(1, "client");
            ["server", "server.web", "server.web.h1", "web"]
                .iter()
                .all(|n| {
                    out.lines()
                        .any(|l| l.contains(&format!(" OK {n} echo SECRET-MARKER-")))
                })
                .then_some(out)
        },
        || {
            format!(
                "client: {}\nh1 log:\n{}\nh2 log:\n{}",
                two.agent_stdout(1, "client"),
                two.log(0),
                two.log(1)
            )
        },
    );
    let b = two.wait_bridge(1, Duration::from_secs(10), "h2 sees h1 up", |b| {
        peer(b, "h1")["up"] == true
    });
    assert_eq!(b["implementation"], "userspace", "{b:#}");
    assert!(peer(&b, "h1")["rtt_ms"].as_f64().unwrap() > 0.0, "{b:#}");
    assert!(peer(&b, "h1")["rx_bytes"].as_u64().unwrap() > 0, "{b:#}");
    let text = String::from_utf8_lossy(&two.ctl(1, &["bridge"]).stdout).to_string();
    assert!(
        text.contains("PEER") && text.contains(&h1.overlay) && text.contains("yes"),
        "{text}"
    );

    // A third namespace, wired to h1 by a link of its own, with a key no host knows.
    let pid = std::process::id();
    let x = format!("as0x-{pid}");
    two.extra_netns.push(x.clone());
    ip(&["netns", "add", &x]);
    let (xa, xb) = (format!("as0xa-{pid}"), format!("as0xb-{pid}"));
    ip(&["link", "add", &xa, "type", "veth", "peer", "name", &xb]);
    ip(&["link", "set", &xa, "netns", &h1.netns]);
    ip(&["link", "set", &xb, "netns", &x]);
    ip(&["-n", &h1.netns, "addr", "add", "10.200.2.1/24", "dev", &xa]);
    ip(&["-n", &h1.netns, "link", "set", &xa, "up"]);
    ip(&["-n", &x, "addr", "add", "10.200.2.9/24", "dev", &xb]);
    ip(&["-n", &x, "link", "set", &xb, "up"]);
    let key = two.file("keys/intruder.key", "");
    std::fs::remove_file(&key).unwrap();
    let out = Command::new(BIN)
        .args(["bridge", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let wgx = format!("asx{}", pid % 100_000);
    let nsx = |prog: &str| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{x}")).arg("--").arg(prog);
        c
    };
    let mut intruder = nsx(BRIDGE).arg(&wgx).stderr(Stdio::null()).spawn().unwrap();
    wait_socket(&wgx);
    let set = nsx("wg")
        .args(["set", &wgx, "private-key"])
        .arg(&key)
        .args([
            "peer",
            &h1.public_key,
            "endpoint",
            &format!("10.200.2.1:{}", h1.listen_port),
            "allowed-ips",
            "10.200.0.0/16",
        ])
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    ip(&["-n", &x, "addr", "add", "10.200.1.9/24", "dev", &wgx]);
    ip(&["-n", &x, "link", "set", &wgx, "up"]);
    let ping = nsx("ping")
        .args(["-c", "3", "-W", "1", "-i", "0.3", &h1.overlay])
        .output()
        .unwrap();
    assert!(
        !ping.status.success(),
        "an unknown key got an answer: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let shown = nsx("wg")
        .args(["show", &wgx, "latest-handshakes"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown.trim().ends_with("\t0"),
        "the intruder shook hands: {shown}"
    );
    stop(&mut intruder, &wgx);
    let b1 = two.bridge(0);
    assert_eq!(b1["peers"].as_array().unwrap().len(), 1, "{b1:#}");

    // The capture: only UDP between the two listen ports (and ARP), never the marker.
    let _ = Command::new("kill")
        .args(["-INT", &capture.id().to_string()])
        .output();
    let _ = capture.wait();
    let raw = std::fs::read(&pcap).unwrap();
    assert!(
        raw.len() > 1000,
        "the capture saw the traffic ({} bytes)",
        raw.len()
    );
    assert!(
        !raw.windows(13).any(|w| w == b"SECRET-MARKER"),
        "plaintext on the underlay"
    );
    let read = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&pcap)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&read.stdout).to_string();
    let (a, b) = (
        format!("{}.{}", h1.address, h1.listen_port),
        format!("{}.{}", h2.address, h2.listen_port),
    );
    let mut udp = 0;
    for l in lines.lines() {
        // ARP, and the kernel's answer to a handshake sent before the other end listened.
        let unreachable = format!("udp port {} unreachable", h2.listen_port);
        if l.contains(" ARP, ") || (l.contains(": ICMP ") && l.contains(&unreachable)) {
            continue;
        }
        assert!(
            l.contains(": UDP, length")
                && (l.contains(&format!("{a} > {b}:")) || l.contains(&format!("{b} > {a}:"))),
            "not the tunnel on the underlay: {l}"
        );
        udp += 1;
    }
    assert!(udp > 20, "{lines}");
}

#[test]
fn our_end_and_a_wireguard_go_end_carry_traffic_both_ways() {
    let test = "our_end_and_a_wireguard_go_end_carry_traffic_both_ways";
    if !root_or_skip(test) || !wg_installed(test) {
        return;
    }
    let groups = WEB_ON_H1;
    let mut two = TwoHosts::new(BIN, CTL, "wggo", 1, groups, "");
    two.file("agents/server.py", ECHO_SERVER);
    let (h1, h2) = (two.hosts[0].clone(), two.hosts[1].clone());
    // h2 is no daemon of ours: wireguard-go, configured with `wg` from the same system file's
    // keys and addresses.
    let wgo = format!("wgo{}", std::process::id() % 100_000);
    let go = two
        .in_host(1, "wireguard-go")
        .arg(&wgo)
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Stop(std::process::Child, String);
    impl Drop for Stop {
        fn drop(&mut self) {
            stop(&mut self.0, &self.1);
        }
    }
    let _go = Stop(go, wgo.clone());
    wait_socket(&wgo);
    let set = two
        .in_host(1, "wg")
        .args(["set", &wgo, "private-key"])
        .arg(two.dir.join("keys/h2.key"))
        .args(["listen-port", &h2.listen_port.to_string()])
        .args([
            "peer",
            &h1.public_key,
            "endpoint",
            &format!("{}:{}", h1.address, h1.listen_port),
        ])
        .args(["allowed-ips", &format!("{}/32,10.201.16.0/24", h1.overlay)])
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    ip(&[
        "-n",
        &h2.netns,
        "addr",
        "add",
        &format!("{}/24", h2.overlay),
        "dev",
        &wgo,
    ]);
    ip(&["-n", &h2.netns, "link", "set", &wgo, "up"]);
    ip(&[
        "-n",
        &h2.netns,
        "route",
        "add",
        "10.201.16.0/24",
        "dev",
        &wgo,
    ]);
    two.start(0);
    // h2 (wireguard-go) -> h1's group through our end, and back.
    let web = wait_for(
        "the group web on h1 has an address",
        Duration::from_secs(30),
        || {
            let out = two.ctl(0, &["status", "--json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let a = v["agents"].as_array()?.first()?;
            (a["health"] == "healthy")
                .then(|| v["groups"][0]["address"].as_str().map(str::to_string))
                .flatten()
        },
        || two.log(0),
    );
    let fetched = wait_for(
        "wireguard-go's end fetches from h1's group",
        Duration::from_secs(20),
        || {
            let out = two
                .in_host(1, "python3")
                .args(["-c", &format!("import urllib.request;print(urllib.request.urlopen('http://{web}:8000/from-wireguard-go',timeout=2).read().decode())")])
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&out.stdout).to_string();
            s.contains("echo from-wireguard-go").then_some(s)
        },
        || two.log(0),
    );
    assert!(fetched.contains("from-wireguard-go"));
    // h1 (our end) -> h2: the daemon's own probe pings wireguard-go's overlay address.
    let b = two.wait_bridge(
        0,
        Duration::from_secs(10),
        "h1 sees the wireguard-go end up",
        |b| peer(b, "h2")["up"] == true && peer(b, "h2")["latest_handshake"].is_number(),
    );
    assert!(peer(&b, "h2")["tx_bytes"].as_u64().unwrap() > 0, "{b:#}");
    let shown = two
        .in_host(1, "wg")
        .args(["show", &wgo, "transfer"])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&shown.stdout).to_string();
    let rx: u64 = t
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(rx > 0, "wireguard-go received nothing from our end: {t}");
}

/// Sends `tick N` every 50 ms to each client, forever.
const TICKER: &str = r#"
import socket, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9100)); s.listen()
def serve(c):
    n = 0
    while True:
        n += 1
        c.sendall(f"tick {n}\n".encode()); time.sleep(0.05)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// One connection to `ticker:9100`, every line printed; `CLOSED` when it ends.
const LISTENER: &str = r#"
import socket
c = socket.create_connection(("ticker", 9100), timeout=30)
f = c.makefile()
for line in f:
    print(line.strip(), flush=True)
print("CLOSED", flush=True)
"#;

fn ticks(two: &TwoHosts) -> (usize, bool) {
    let out = two.agent_stdout(1, "listener");
    (
        out.lines().filter(|l| l.contains(" tick ")).count(),
        out.contains("CLOSED"),
    )
}

#[test]
fn a_stream_through_the_tunnel_survives_kill_9_and_a_restarted_peer_shakes_hands_again() {
    let test =
        "a_stream_through_the_tunnel_survives_kill_9_and_a_restarted_peer_shakes_hands_again";
    if !root_or_skip(test) {
        return;
    }
    let groups = "  tick:\n    host: h1\n    network: private\n    agents:\n      - name: ticker\n        command: [python3, agents/ticker.py]\n        port: 9100\n        health: {tcp: true, interval: 1s}\n  \
                  listen:\n    host: h2\n    network: private\n    agents:\n      - name: listener\n        command: [python3, agents/listener.py]\n";
    let mut two = TwoHosts::new(BIN, CTL, "kill9", 2, groups, "");
    two.file("agents/ticker.py", TICKER);
    two.file("agents/listener.py", LISTENER);
    two.start(0);
    two.wait_bridge(
        0,
        Duration::from_secs(20),
        "h1's bridge is configured",
        |b| b["implementation"] == "userspace",
    );
    two.start(1);
    wait_for(
        "ticks arrive on h2",
        Duration::from_secs(40),
        || (ticks(&two).0 > 5).then(String::new),
        || {
            format!(
                "{}\n{}\n{}",
                two.agent_stdout(1, "listener"),
                two.log(0),
                two.log(1)
            )
        },
    );
    for i in [0, 1] {
        let pid_before = std::fs::read_to_string(two.hosts[i].dir.join("run/bridge.pid")).unwrap();
        two.kill9(i);
        let before = ticks(&two).0;
        std::thread::sleep(Duration::from_secs(2));
        let (after, closed) = ticks(&two);
        assert!(
            !closed && after >= before + 20,
            "the stream stalled with {}'s daemon killed: {before} -> {after} ticks",
            two.hosts[i].name
        );
        two.start(i);
        let b = two.wait_bridge(
            i,
            Duration::from_secs(5),
            "the new daemon adopts the bridge",
            |b| b["peers"][0]["up"] == true,
        );
        assert_eq!(
            b["pid"].as_u64().unwrap().to_string(),
            pid_before.trim(),
            "the same agent-bridge process: {b:#}"
        );
    }
    let (n, closed) = ticks(&two);
    assert!(!closed, "the stream ended after {n} ticks");

    // h2 stops entirely (its bridge too) and starts again: the handshake is back within 5 s.
    two.shutdown(1);
    assert!(!std::path::Path::new(&two.hosts[1].dir.join("run/bridge.pid")).exists());
    let t0 = Instant::now();
    two.start(1);
    two.wait_bridge(
        0,
        Duration::from_secs(5),
        "h1 shakes hands with the restarted h2 within 5 s",
        |b| {
            peer(b, "h2")["handshake_age_seconds"]
                .as_f64()
                .is_some_and(|a| a < t0.elapsed().as_secs_f64())
        },
    );
}

#[test]
fn a_private_key_file_others_can_read_is_refused_with_its_path() {
    if !root_or_skip("a_private_key_file_others_can_read_is_refused_with_its_path") {
        return;
    }
    let two = TwoHosts::new(BIN, CTL, "keymode", 3, "  {}\n", "");
    let key = two.dir.join("keys/h1.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut d = two.spawn(0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = d.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the daemon kept running: {}",
            two.log(0)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = two.log(0);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&key.display().to_string()) && log.contains("0644"),
        "{log}"
    );
    assert!(
        !two.hosts[0].dir.join("run/bridge.pid").exists(),
        "nothing started: {log}"
    );
}

#[test]
fn a_reload_reconfigures_the_bridge_without_restarting_agents() {
    let test = "a_reload_reconfigures_the_bridge_without_restarting_agents";
    if !root_or_skip(test) || !wg_installed(test) {
        return;
    }
    let groups = WEB_ON_H1;
    let mut two = TwoHosts::new(BIN, CTL, "reload", 4, groups, "");
    two.file("agents/server.py", ECHO_SERVER);
    two.start(0);
    two.start(1);
    let b = two.wait_bridge(0, Duration::from_secs(20), "h1 sees h2 up", |b| {
        peer(b, "h2")["up"] == true
    });
    let ifname = b["interface"].as_str().unwrap().to_string();
    let keepalive = |two: &TwoHosts| {
        let out = two
            .in_host(0, "wg")
            .args(["show", &ifname, "persistent-keepalive"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(keepalive(&two).ends_with("\t25"), "{}", keepalive(&two));
    let status = |two: &TwoHosts| -> Value {
        serde_json::from_slice(&two.ctl(0, &["status", "--json"]).stdout).unwrap()
    };
    let pid = wait_for(
        "the server is healthy",
        Duration::from_secs(30),
        || {
            let s = status(&two);
            (s["agents"][0]["health"] == "healthy").then(|| s["agents"][0]["pid"].to_string())
        },
        || two.log(0),
    );
    let path = two.dir.join("system.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    // h1's bridge only: the first `bridge: {` line.
    let edited = text.replacen("\"}\n", "\", persistent_keepalive: 7}\n", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    let out = two.ctl(0, &["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the reload sets the new keepalive",
        Duration::from_secs(10),
        || keepalive(&two).ends_with("\t7").then(String::new),
        || format!("{}\n{}", keepalive(&two), two.log(0)),
    );
    assert_eq!(
        status(&two)["agents"][0]["pid"].to_string(),
        pid,
        "the agent kept running"
    );
    let b = two.wait_bridge(0, Duration::from_secs(10), "h2 still up", |b| {
        peer(b, "h2")["up"] == true
    });
    assert_eq!(b["interface"], ifname.as_str());
}

#[test]
fn keygen_writes_a_private_key_that_wg_reads_and_never_overwrites() {
    let test = "keygen_writes_a_private_key_that_wg_reads_and_never_overwrites";
    if !wg_installed(test) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("as-keygen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("bridge.key");
    let out = Command::new(BIN)
        .args(["bridge", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let wg = Command::new("wg")
        .arg("pubkey")
        .stdin(std::fs::File::open(&key).unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&wg.stdout).trim(), public);
    let before = std::fs::read(&key).unwrap();
    let again = Command::new(BIN)
        .args(["bridge", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key file is untouched"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
