//! Two "hosts" on one machine for end-to-end tests of the bridge: two network namespaces
//! joined by a veth underlay, each with its own daemon, state directory, control socket,
//! cgroup root and key pair, in one system file. Daemons run in their host's network
//! namespace only (`nsenter --net`, not `ip netns exec`, which would remount `/sys` and hide
//! the cgroup file systems). Everything is removed when the value drops: daemons, bridges,
//! namespaces, the directory.
//!
//! Each value has networks of its own (underlay `10.<200+n>.0.0/24`, overlay
//! `10.<200+n>.1.0/24`, group subnets `10.<200+n>.{16,32}.0/24`) and namespace names with
//! the test process's pid, so tests of one binary run at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A host of a [`TwoHosts`]: its name in the system file and its namespace.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub netns: String,
    /// Underlay address.
    pub address: String,
    /// Overlay address (without prefix).
    pub overlay: String,
    pub listen_port: u16,
    pub dir: PathBuf,
    pub public_key: String,
    /// The underlay veth inside the host's namespace.
    pub underlay: String,
}

/// Two hosts, `h1` (primary) and `h2`.
pub struct TwoHosts {
    pub dir: PathBuf,
    pub hosts: [Host; 2],
    /// The agent-supervisor binary.
    bin: PathBuf,
    ctl: PathBuf,
    slices: Vec<String>,
    daemons: Vec<(usize, Child)>,
    /// Extra namespaces a test made (removed on drop).
    pub extra_netns: Vec<String>,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

impl TwoHosts {
    /// Makes the namespaces, the underlay, the key pairs and the system file. `n` (0-49)
    /// picks the networks; `groups` is the YAML of `groups:` (indented by two spaces,
    /// `@DIR@` becomes the directory); `bridge_extra` is added to both hosts' `bridge`
    /// (e.g. `, implementation: userspace`).
    pub fn new(
        bin: &str,
        ctl: &str,
        name: &str,
        n: u8,
        groups: &str,
        bridge_extra: &str,
    ) -> TwoHosts {
        assert!(n < 50, "network slot {n} out of range");
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/as2-{name}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("agents")).expect("create the test directory");
        std::fs::create_dir_all(dir.join("keys")).expect("create the keys directory");
        let o = 200 + u16::from(n);
        let mut hosts = Vec::new();
        for i in 1..=2u16 {
            let hname = format!("h{i}");
            let key = dir.join(format!("keys/{hname}.key"));
            let out = run(Command::new(bin)
                .args(["bridge", "keygen", "--out"])
                .arg(&key));
            let public_key = String::from_utf8_lossy(&out.stdout).trim().to_string();
            hosts.push(Host {
                netns: format!("as{n}{hname}-{pid}"),
                address: format!("10.{o}.0.{i}"),
                overlay: format!("10.{o}.1.{i}"),
                listen_port: 51820 + i,
                dir: dir.join(&hname),
                name: hname,
                public_key,
                underlay: format!("as{n}u{i}-{pid}").chars().take(15).collect(),
            });
        }
        let hosts: [Host; 2] = [hosts[0].clone(), hosts[1].clone()];
        let (a, b) = (&hosts[0], &hosts[1]);
        for h in [a, b] {
            let _ = Command::new("ip").args(["netns", "del", &h.netns]).output();
            ip(&["netns", "add", &h.netns]);
            ip(&["-n", &h.netns, "link", "set", "lo", "up"]);
            // No IPv6 link-local chatter on the underlay: a capture there shows only the
            // tunnel (and ARP).
            run(Command::new("ip").args([
                "netns",
                "exec",
                &h.netns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]));
        }
        let (va, vb) = (a.underlay.as_str(), b.underlay.as_str());
        ip(&["link", "add", va, "type", "veth", "peer", "name", vb]);
        ip(&["link", "set", va, "netns", &a.netns]);
        ip(&["link", "set", vb, "netns", &b.netns]);
        for (h, v) in [(a, va), (b, vb)] {
            ip(&[
                "-n",
                &h.netns,
                "addr",
                "add",
                &format!("{}/24", h.address),
                "dev",
                v,
            ]);
            ip(&["-n", &h.netns, "link", "set", v, "up"]);
        }
        let slices: Vec<String> = hosts
            .iter()
            .map(|h| format!("as2-{name}-{}-{pid}.slice", h.name))
            .collect();
        let mut yaml = String::from("version: 1\nhosts:\n");
        for (i, h) in hosts.iter().enumerate() {
            let d = h.dir.display();
            yaml.push_str(&format!(
                "  {name}:\n    address: {addr}\n    role: {role}\n    network: {{subnet: 10.{o}.{sub}.0/24}}\n    bridge: {{address: {ov}/24, listen_port: {port}, private_key_file: keys/{name}.key, public_key: \"{key}\"{bridge_extra}}}\n    daemon: {{run_dir: {d}/run, log_dir: {d}/logs, state_dir: {d}/state, control_socket: {d}/control.sock, cgroup_root: {slice}, http_listen: '127.0.0.1:9000'}}\n",
                name = h.name,
                addr = h.address,
                role = if i == 0 { "primary" } else { "secondary" },
                sub = 16 * (i + 1),
                ov = h.overlay,
                port = h.listen_port,
                key = h.public_key,
                slice = slices[i],
            ));
        }
        yaml.push_str("groups:\n");
        yaml.push_str(&groups.replace("@DIR@", &dir.to_string_lossy()));
        std::fs::write(dir.join("system.yaml"), yaml).expect("write system.yaml");
        TwoHosts {
            dir,
            hosts,
            bin: PathBuf::from(bin),
            ctl: PathBuf::from(ctl),
            slices,
            daemons: Vec::new(),
            extra_netns: Vec::new(),
        }
    }

    /// Writes a file under the directory.
    pub fn file(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("a file has a parent")).expect("create parent");
        std::fs::write(&p, text).expect("write a test file");
        p
    }

    /// A command run in host `i`'s network namespace.
    pub fn in_host(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.hosts[i].netns))
            .arg("--")
            .arg(program);
        c
    }

    /// Starts host `i`'s daemon (output appended to `<host>/daemon.log`) and waits for its
    /// control socket; panics with the log after 30 s or when it exits.
    pub fn start(&mut self, i: usize) {
        let child = self.spawn(i);
        let h = &self.hosts[i];
        let socket = h.dir.join("control.sock");
        let t = Instant::now();
        self.daemons.push((i, child));
        while !socket.exists() {
            let exited = self
                .daemons
                .last_mut()
                .and_then(|(_, c)| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && t.elapsed() < Duration::from_secs(30),
                "daemon of {} did not come up ({exited:?}); log:\n{}",
                h.name,
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Host `i`'s daemon in the background, not waited for.
    pub fn spawn(&self, i: usize) -> Child {
        let h = &self.hosts[i];
        std::fs::create_dir_all(&h.dir).expect("create the host directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.dir.join("daemon.log"))
            .expect("open daemon.log");
        let err = log.try_clone().expect("clone daemon.log");
        self.in_host(i, &self.bin)
            .arg("daemon")
            .arg("--config")
            .arg(self.dir.join("system.yaml"))
            .args(["--host", &h.name])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn agent-supervisor daemon")
    }

    /// SIGKILL to host `i`'s daemon (its agents and bridge keep running).
    pub fn kill9(&mut self, i: usize) {
        for (_, c) in self.daemons.iter_mut().filter(|(j, _)| *j == i) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.daemons.retain(|(j, _)| *j != i);
        let _ = std::fs::remove_file(self.hosts[i].dir.join("control.sock"));
    }

    /// `supervisorctl shutdown` of host `i`, waited for (every agent and the bridge stop).
    pub fn shutdown(&mut self, i: usize) {
        let _ = self.ctl(i, &["shutdown"]);
        for (_, c) in self.daemons.iter_mut().filter(|(j, _)| *j == i) {
            let t = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.daemons.retain(|(j, _)| *j != i);
    }

    /// `supervisorctl ARGS` against host `i`.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        Command::new(&self.ctl)
            .arg("-s")
            .arg(self.hosts[i].dir.join("control.sock"))
            .args(args)
            .output()
            .expect("run supervisorctl")
    }

    /// Host `i`'s daemon log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.hosts[i].dir.join("daemon.log")).unwrap_or_default()
    }

    /// The `bridge` part of host `i`'s status (`null` when there is none yet).
    pub fn bridge(&self, i: usize) -> serde_json::Value {
        let out = self.ctl(i, &["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .map(|v| v["bridge"].clone())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `cond` holds for host `i`'s bridge status; panics with both logs.
    pub fn wait_bridge(
        &self,
        i: usize,
        within: Duration,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t = Instant::now();
        loop {
            let b = self.bridge(i);
            if cond(&b) {
                return b;
            }
            assert!(
                t.elapsed() < within,
                "{what}: host {} bridge: {b:#}\nlog h1:\n{}\nlog h2:\n{}",
                self.hosts[i].name,
                self.log(0),
                self.log(1)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What an agent of host `i` wrote to its stdout so far.
    pub fn agent_stdout(&self, i: usize, agent: &str) -> String {
        std::fs::read_to_string(
            self.hosts[i]
                .dir
                .join("logs")
                .join(format!("{agent}.stdout.log")),
        )
        .unwrap_or_default()
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for i in 0..2 {
            if self.daemons.iter().any(|(j, _)| *j == i) {
                self.shutdown(i);
            }
        }
        // Whatever a killed daemon left: its bridge process (pid file in its run dir).
        for h in &self.hosts {
            if let Ok(pid) = std::fs::read_to_string(h.dir.join("run/bridge.pid")) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).output();
            }
        }
        for ns in self
            .hosts
            .iter()
            .map(|h| h.netns.clone())
            .chain(self.extra_netns.clone())
        {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
        for s in &self.slices {
            if let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") {
                for h in hier.flatten() {
                    let _ = std::fs::remove_dir(h.path().join(s));
                }
            }
            let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(s));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP server on port 8000 that answers `GET /X` with `echo X` (an agent's script).
pub const ECHO_SERVER: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("echo " + self.path[1:] + "\n").encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
"#;

/// Fetches `http://NAME:8000/$MARKER-n` (`MARKER` from the environment, default `hello`) for
/// each name given, forever, printing `OK name body` or `FAIL name why` (an agent's script).
pub const FETCH_CLIENT: &str = r#"
import os, sys, time, urllib.request
marker = os.environ.get("MARKER", "hello")
n = 0
while True:
    n += 1
    for name in sys.argv[1:]:
        try:
            body = urllib.request.urlopen(f"http://{name}:8000/{marker}-{n}", timeout=2).read().decode().strip()
            print("OK", name, body, flush=True)
        except Exception as e:
            print("FAIL", name, e, flush=True)
    time.sleep(0.3)
"#;

/// Polls `cond` every 100 ms until it gives a value; panics with `why()` after `within`.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> Option<T>,
    why: impl Fn() -> String,
) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            t.elapsed() < within,
            "{what} (after {within:?}):\n{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
