//! `agent-supervisor deploy` to two "hosts" (network namespaces joined by a veth underlay),
//! each running OpenSSH's `sshd` with a test key in a mount namespace of its own (its own
//! `/usr/local/bin` and `/etc/agent-supervisor`, and no systemd: `install` starts the daemon
//! itself). From h1: both hosts end up running their share and `validate` passes; a second
//! deploy with one agent changed restarts only that agent; a host whose ssh fails stops the
//! rollout there, named, and the host after it is untouched.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_supervisor_tests::fixture::root_or_skip;
use agent_supervisor_tests::hosts::{wait_for, TwoHosts};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

/// The sshds and what the test made on the machine, undone on drop.
struct Ssh {
    sshd: Vec<Child>,
    made_etc: bool,
    config: PathBuf,
}

impl Drop for Ssh {
    fn drop(&mut self) {
        for c in &mut self.sshd {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.made_etc {
            let _ = std::fs::remove_dir("/etc/agent-supervisor");
        }
    }
}

/// Stops the daemons `deploy` started (through their control sockets) on drop.
struct StopDaemons {
    ctl: PathBuf,
    sockets: Vec<PathBuf>,
}

impl Drop for StopDaemons {
    fn drop(&mut self) {
        let ask = |s: &Path, what: &[&str]| {
            Command::new(&self.ctl)
                .arg("-s")
                .arg(s)
                .args(what)
                .output()
                .ok()
                .filter(|o| o.status.success())
        };
        // Their pids first: the control socket closes before the agents are stopped.
        let pids: Vec<i64> = self
            .sockets
            .iter()
            .filter_map(|s| ask(s, &["status", "--json"]))
            .filter_map(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .filter_map(|v| v["daemon_pid"].as_i64())
            .collect();
        for s in &self.sockets {
            ask(s, &["shutdown"]);
        }
        let alive = |p: i64| Path::new(&format!("/proc/{p}")).exists();
        let t = Instant::now();
        while pids.iter().any(|p| alive(*p)) && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        for p in pids.iter().filter(|p| alive(**p)) {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Host keys, a client key, an sshd per host listening on its underlay address.
fn sshd(two: &TwoHosts) -> Ssh {
    let d = two.dir.join("ssh");
    std::fs::create_dir_all(&d).unwrap();
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("client")));
    std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let made_etc = !Path::new("/etc/agent-supervisor").exists();
    if made_etc {
        std::fs::create_dir_all("/etc/agent-supervisor").unwrap();
    }
    let mut sshd = Vec::new();
    for (i, h) in two.hosts.iter().enumerate() {
        let key = d.join(format!("host{i}"));
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
        let cfg = d.join(format!("sshd{i}.conf"));
        std::fs::write(
            &cfg,
            format!(
                "Port 22\nListenAddress {}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
                h.address,
                key.display(),
                d.join("authorized_keys").display()
            ),
        )
        .unwrap();
        // A machine of its own: binaries and system directory private to this host, and no
        // systemd even where the test machine runs one.
        let script = format!(
            "mount -t tmpfs tmpfs /usr/local/bin && mount -t tmpfs tmpfs /etc/agent-supervisor && \
             {{ [ ! -d /run/systemd ] || mount -t tmpfs tmpfs /run/systemd; }} && exec /usr/sbin/sshd -D -e -f {}",
            cfg.display()
        );
        let child = two
            .in_host(i, "unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join(format!("sshd{i}.log"))).unwrap())
            .spawn()
            .unwrap();
        sshd.push(child);
    }
    let config = d.join("config");
    std::fs::write(
        &config,
        format!(
            "Host *\n  User root\n  IdentityFile {}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
            d.join("client").display()
        ),
    )
    .unwrap();
    Ssh {
        sshd,
        made_etc,
        config,
    }
}

fn deploy(two: &TwoHosts, ssh: &Ssh) -> (bool, String, f64) {
    let t = Instant::now();
    let out = two
        .in_host(0, BIN)
        .arg("deploy")
        .arg(two.dir.join("system.yaml"))
        .arg("--ssh-config")
        .arg(&ssh.config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text, t.elapsed().as_secs_f64())
}

fn validate(two: &TwoHosts) -> (bool, String) {
    let out = two
        .in_host(0, BIN)
        .arg("validate")
        .arg(two.dir.join("system.yaml"))
        .args(["--host", "h1"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Agent name -> pid, from host `i`'s daemon.
fn pids(two: &TwoHosts, i: usize) -> Vec<(String, i64)> {
    let out = two.ctl(i, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut p: Vec<(String, i64)> = v["agents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                a["agent"].as_str().unwrap_or("").to_string(),
                a["pid"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    p.sort();
    p
}

#[test]
fn deploy_both_hosts_then_one_changed_agent_then_a_failing_host() {
    if !root_or_skip("deploy_both_hosts_then_one_changed_agent_then_a_failing_host") {
        return;
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "sshd is missing (openssh-server), and CI must run this test"
        );
        eprintln!("SKIP deploy: sshd is not installed (openssh-server)");
        return;
    }
    let groups = "  core:\n    host: h1\n    network: private\n    agents:\n      - name: core\n        command: [python3, -m, http.server, '8000']\n        port: 8000\n        health: {tcp: true, interval: 1s}\n  \
                  front:\n    host: h2\n    network: private\n    depends_on: [core]\n    agents:\n      - name: frontend\n        command: [python3, -m, http.server, '8001']\n        port: 8001\n        health: {tcp: true, interval: 1s}\n      - name: sidecar\n        command: [sleep, '600']\n  \
                  boxed:\n    host: h2\n    image: tiny\n    agents:\n      - name: boxed\n        command: [sleep, '700']\n";
    let two = TwoHosts::new(BIN, CTL, "deploy", 8, groups, "");
    // h2 runs a group from an image: its recipe travels with the system directory and
    // `install` builds it there.
    let sys = two.dir.join("system.yaml");
    let text = std::fs::read_to_string(&sys).unwrap();
    std::fs::write(
        &sys,
        format!("images:\n  tiny: {{recipe: images/tiny.yaml}}\n{text}"),
    )
    .unwrap();
    two.file(
        "images/tiny.yaml",
        "base: host-closure\nbinaries: [sh, sleep]\n",
    );
    let mut ssh = sshd(&two);
    std::thread::sleep(Duration::from_millis(500));
    // The deployed daemons are not the test's children: whatever happens (a failed assert
    // too), they are asked to stop every agent before the namespaces go.
    let _stop = StopDaemons {
        ctl: PathBuf::from(CTL),
        sockets: two
            .hosts
            .iter()
            .map(|h| h.dir.join("control.sock"))
            .collect(),
    };

    // 1. From nothing: both hosts.
    let (ok, text, secs) = deploy(&two, &ssh);
    println!("deploy 1 ({secs:.1} s):\n{text}");
    if !ok {
        panic!(
            "deploy failed:\n{text}\nsshd: {}",
            std::fs::read_to_string(two.dir.join("ssh/sshd0.log")).unwrap_or_default()
        );
    }
    assert!(
        text.contains("| h1   | deployed") && text.contains("| h2   | deployed"),
        "{text}"
    );
    // h1 first: h2's group depends on h1's.
    assert!(
        text.find("deploy: h1").unwrap() < text.find("deploy: h2").unwrap(),
        "{text}"
    );
    let v = wait_for(
        "validate passes after the deploy",
        Duration::from_secs(40),
        || {
            let (ok, t) = validate(&two);
            ok.then_some(t)
        },
        || validate(&two).1,
    );
    println!("{v}");
    assert!(v.contains("image tiny | PASS"), "{v}");
    // The other host's private key stayed home.
    let keys = two
        .in_host(0, "ssh")
        .arg("-F")
        .arg(&ssh.config)
        .arg(&two.hosts[1].address)
        .arg("ls /etc/agent-supervisor/keys")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap();
    assert_eq!(keys.trim(), "h2.key", "h2 got keys {keys}");
    let before = pids(&two, 1);
    assert_eq!(before.len(), 3, "{before:?}");
    println!("pids before the second deploy: {before:?}");
    let pid = |v: &[(String, i64)], n: &str| v.iter().find(|(a, _)| a == n).map(|(_, p)| *p);

    // 2. One agent changed: only it restarts.
    let file = two.dir.join("system.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("command: [sleep, '600']", "command: [sleep, '601']"),
    )
    .unwrap();
    let (ok, text, secs) = deploy(&two, &ssh);
    println!("deploy 2 ({secs:.1} s):\n{text}");
    assert!(ok, "{text}");
    assert!(text.contains("reloaded the system file"), "{text}");
    let after = wait_for(
        "sidecar restarted, the others not",
        Duration::from_secs(20),
        || {
            let now = pids(&two, 1);
            let s = pid(&now, "sidecar");
            (s.is_some() && s != pid(&before, "sidecar") && s != Some(0)).then_some(now)
        },
        || format!("{:?}", pids(&two, 1)),
    );
    for unchanged in ["frontend", "boxed"] {
        assert_eq!(
            pid(&after, unchanged),
            pid(&before, unchanged),
            "{unchanged} was restarted: {before:?} -> {after:?}"
        );
    }

    // 3. h1's ssh fails: the rollout stops there, h2 is left as it was.
    let _ = ssh.sshd[0].kill();
    let _ = ssh.sshd[0].wait();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("command: [sleep, '601']", "command: [sleep, '602']"),
    )
    .unwrap();
    let (ok, text, _) = deploy(&two, &ssh);
    println!("deploy 3:\n{text}");
    assert!(!ok, "{text}");
    assert!(
        text.contains("| h1   | FAILED") && text.contains("copy to"),
        "{text}"
    );
    assert!(text.contains("| h2   | skipped"), "{text}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pids(&two, 1), after, "h2 was touched");
    drop(ssh);
}
