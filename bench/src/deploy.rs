//! `agent-bench deploy`: the two hosts of `bench observe` (namespaces, the bridge, 77
//! stand-in agents), each running OpenSSH's `sshd` in a mount namespace of its own (its own
//! `/usr/local/bin` and `/etc/agent-supervisor`, no systemd), and from h1 `agent-supervisor
//! deploy` of both hosts from nothing (binaries built, package installs excluded), then
//! `agent-supervisor validate` until it passes — timed in one run, beside the floor of copying
//! the same files over the same ssh (`tar | ssh HOST tar x`, both hosts). Target: deployed and
//! validated in at most 60 s (the seed allowed 10 minutes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::observe_lab::{Lab, Tools};
use super::supervise_procs as procs;

/// The target.
pub const TARGET: Duration = Duration::from_secs(60);

fn progress(what: &str) {
    eprintln!("bench deploy: {what}");
}

/// A binary of this workspace next to this executable.
pub fn sibling(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let exe = me.with_file_name(name);
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "no {name} next to {} (build it: cargo build --release --workspace)",
            me.display()
        ))
    }
}

fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The sshds and the `/etc/agent-supervisor` mount point this made.
struct Ssh {
    children: Vec<Child>,
    made_etc: bool,
    config: PathBuf,
}

impl Drop for Ssh {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.made_etc {
            let _ = std::fs::remove_dir("/etc/agent-supervisor");
        }
    }
}

fn start_sshd(lab: &Lab) -> Result<Ssh, String> {
    let d = lab.dir.join("ssh");
    std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
    let keygen = |path: &Path| {
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path),
        )
    };
    keygen(&d.join("client"))?;
    std::fs::copy(d.join("client.pub"), d.join("authorized_keys"))
        .map_err(|e| format!("authorized_keys: {e}"))?;
    std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
    let made_etc = !Path::new("/etc/agent-supervisor").exists();
    if made_etc {
        std::fs::create_dir_all("/etc/agent-supervisor")
            .map_err(|e| format!("/etc/agent-supervisor: {e}"))?;
    }
    let mut ssh = Ssh {
        children: Vec::new(),
        made_etc,
        config: d.join("config"),
    };
    for (i, h) in lab.hosts.iter().enumerate() {
        let key = d.join(format!("host{i}"));
        keygen(&key)?;
        let cfg = d.join(format!("sshd{i}.conf"));
        let address = lab.host_address(i);
        std::fs::write(
            &cfg,
            format!(
                "Port 22\nListenAddress {address}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
                key.display(),
                d.join("authorized_keys").display()
            ),
        )
        .map_err(|e| format!("{}: {e}", cfg.display()))?;
        let script = format!(
            "mount -t tmpfs tmpfs /usr/local/bin && mount -t tmpfs tmpfs /etc/agent-supervisor && \
             {{ [ ! -d /run/systemd ] || mount -t tmpfs tmpfs /run/systemd; }} && exec /usr/sbin/sshd -D -e -f {}",
            cfg.display()
        );
        let log = std::fs::File::create(d.join(format!("sshd{i}.log")))
            .map_err(|e| format!("sshd log: {e}"))?;
        let child = lab
            .in_host(i, "unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start sshd for {}: {e}", h.name))?;
        ssh.children.push(child);
    }
    std::fs::write(
        &ssh.config,
        format!(
            "Host *\n  User root\n  IdentityFile {}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
            d.join("client").display()
        ),
    )
    .map_err(|e| format!("ssh config: {e}"))?;
    // Both listening.
    let t = Instant::now();
    for i in 0..2 {
        let address = lab.host_address(i);
        while run_ok(lab.in_host(0, "ssh").arg("-F").arg(&ssh.config).args([
            "-o",
            "BatchMode=yes",
            &address,
            "true",
        ]))
        .is_err()
        {
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!("sshd on {address} does not answer"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(ssh)
}

struct Times {
    deploy: Duration,
    validated: Duration,
    copy_floor: Duration,
    deploy_table: String,
    bytes: u64,
}

fn measure(lab: &Lab, ssh: &Ssh, daemon: &Path) -> Result<Times, String> {
    // The floor: the same files, the same ssh, nothing installed or started.
    let stage = lab.dir.join("floor");
    std::fs::create_dir_all(stage.join("bin")).map_err(|e| e.to_string())?;
    let mut bytes = 0;
    for b in [
        "agent-supervisor",
        "agent-launch",
        "supervisorctl",
        "agent-bridge",
    ] {
        let from = daemon.with_file_name(b);
        bytes += std::fs::copy(&from, stage.join("bin").join(b))
            .map_err(|e| format!("copy {}: {e}", from.display()))?;
    }
    let t = Instant::now();
    for i in 0..2 {
        let address = lab.host_address(i);
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "tar -C {} -cf - . {} | nsenter --net=/run/netns/{} -- ssh -F {} -o BatchMode=yes {address} 'mkdir -p /tmp/abench-floor && tar -C /tmp/abench-floor -xf - && rm -rf /tmp/abench-floor'",
            stage.display(),
            lab.dir.display(),
            lab.hosts[0].netns,
            ssh.config.display()
        )))?;
    }
    let copy_floor = t.elapsed();

    progress("agent-supervisor deploy of both hosts, from nothing");
    let t = Instant::now();
    let deploy_table = run_ok(
        lab.in_host(0, daemon)
            .arg("deploy")
            .arg(&lab.config)
            .arg("--ssh-config")
            .arg(&ssh.config),
    )?;
    let deploy = t.elapsed();
    progress("agent-supervisor validate until it passes");
    loop {
        let out = lab
            .in_host(0, daemon)
            .arg("validate")
            .arg(&lab.config)
            .args(["--host", &lab.hosts[0].name])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "validate still fails after 300 s:\n{}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let validated = t.elapsed();
    Ok(Times {
        deploy,
        validated,
        copy_floor,
        deploy_table,
        bytes,
    })
}

/// Runs the benchmark with `agents` stand-in agents; returns the table.
pub fn run(agents: usize) -> Result<String, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root (namespaces, cgroups, sshd)".into());
    }
    let need = |name: &str, pkg: &str| {
        procs::which(name).ok_or_else(|| format!("{name} is missing (install {pkg})"))
    };
    let tools = Tools {
        ip: need("ip", "iproute2")?,
        nsenter: need("nsenter", "util-linux")?,
        daemon: sibling("agent-supervisor")?,
        ctl: sibling("supervisorctl")?,
    };
    need("sshd", "openssh-server").or_else(|_| {
        Path::new("/usr/sbin/sshd")
            .exists()
            .then(|| PathBuf::from("/usr/sbin/sshd"))
            .ok_or_else(|| "sshd is missing (install openssh-server)".to_string())
    })?;
    let python = procs::system_python().ok_or("no python3")?;
    let daemon = tools.daemon.clone();
    let ctl = tools.ctl.clone();
    progress("setting up the namespaces, keys and the system file");
    let mut lab = Lab::new(tools, &python, agents)?;
    let result = start_sshd(&lab).and_then(|ssh| {
        let r = measure(&lab, &ssh, &daemon);
        // The deployed daemons are not the lab's children: stop them through their sockets.
        for h in &lab.hosts {
            let _ = Command::new(&ctl)
                .arg("-s")
                .arg(h.socket())
                .arg("shutdown")
                .output();
        }
        let t = Instant::now();
        while lab.hosts.iter().any(|h| {
            h.daemon_pid().is_some_and(|p| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok()
            })
        }) && t.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(ssh);
        r
    });
    let notes = lab.teardown();
    let t = result?;
    let mut out = format!(
        "bench deploy: 2 hosts (network namespaces, the bridge between them), {agents} stand-in agents, sshd per host; from h1\n\n"
    );
    out.push_str("| step | seconds | target | met? |\n|---|---|---|---|\n");
    out.push_str(&format!(
        "| floor: tar \\| ssh of the 4 binaries ({:.1} MiB) to both hosts | {:.2} | - | - |\n",
        t.bytes as f64 / 1048576.0,
        t.copy_floor.as_secs_f64()
    ));
    out.push_str(&format!(
        "| agent-supervisor deploy, both hosts from nothing | {:.2} | - | - |\n",
        t.deploy.as_secs_f64()
    ));
    let met = if t.validated <= TARGET {
        "MET"
    } else {
        "NOT MET"
    };
    out.push_str(&format!(
        "| deploy + validate passing (all agents healthy, bridge up, metrics of both hosts) | {:.2} | <= {} s | {met} |\n\n",
        t.validated.as_secs_f64(),
        TARGET.as_secs()
    ));
    out.push_str("deploy's own table:\n");
    out.push_str(&t.deploy_table);
    for n in notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(&format!("target: deploy + validate: {met}\n"));
    Ok(out)
}
