//! `bench observe`'s two "hosts" on one machine: two network namespaces joined by a veth
//! underlay, one system file with both hosts (each with its own run, log and state
//! directories, control socket, cgroup root and bridge key pair, `http_listen` on
//! `127.0.0.1:9000` of its namespace), and each host's `agent-supervisor daemon` run in its
//! namespace with `nsenter --net` (not `ip netns exec`, which remounts `/sys` and would hide
//! the cgroup file systems). The stand-in agents run in `network: private` groups, as in
//! `examples/ai-system/system.yaml`, with an HTTP health check every 5 s.
//!
//! [`Lab::teardown`] (or `Drop`, on any early return) shuts the daemons down with
//! `supervisorctl -s SOCKET shutdown`, waits for them, kills what is left (bridge, agents,
//! the static file server), deletes the namespaces and cgroup roots and the directory.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_supervisor::cgroup::{Cgroup, Layout};

use super::bridge_lab::{describe, output, stop_child};
use super::supervise_procs::{self as procs, Agents};

/// The networks: underlay `10.241.0.0/24`, overlay `10.241.1.0/24`, the group subnets
/// `10.241.16.0/24` (h1) and `10.241.32.0/24` (h2).
pub const NET: &str = "10.241";
/// Where each daemon serves `/metrics` and `/health_summary`, in its own namespace.
pub const HTTP_PORT: u16 = 9000;
/// The port of the stand-in agents' first agent (each agent has its own).
pub const FIRST_AGENT_PORT: u16 = 21000;
/// Groups per host the agents are split over.
pub const GROUPS_PER_HOST: usize = 4;
/// How long a daemon may take to shut down before it is killed.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// The programs the lab runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ip: PathBuf,
    pub nsenter: PathBuf,
    pub daemon: PathBuf,
    pub ctl: PathBuf,
}

/// One "host": its name in the system file, its namespace and directory.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub netns: String,
    pub dir: PathBuf,
    pub slice: String,
    /// The agents (indices into [`Lab::agents`]) it runs, by group name.
    pub groups: Vec<(String, Vec<usize>)>,
}

impl Host {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The daemon's pid, from `RUN_DIR/daemon.pid`.
    pub fn daemon_pid(&self) -> Option<i32> {
        read_pid(&self.dir.join("run/daemon.pid"))
    }

    /// The bridge's pid (`RUN_DIR/bridge.pid`), when it runs as a process of its own.
    pub fn bridge_pid(&self) -> Option<i32> {
        read_pid(&self.dir.join("run/bridge.pid"))
    }

    /// The last lines of the daemon's log, on one line.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
        if tail.is_empty() {
            format!("{}'s daemon log is empty", self.name)
        } else {
            format!("{}'s daemon log: {tail}", self.name)
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The two hosts, their daemons, and a helper process or two run in a namespace.
pub struct Lab {
    pub tools: Tools,
    pub dir: PathBuf,
    pub hosts: [Host; 2],
    pub agents: Agents,
    pub config: PathBuf,
    /// The stand-in agents' health check (a YAML flow mapping).
    pub health: String,
    /// Extra environment of some agents (by index): `SOAK_GENERATION` for a reload.
    pub env: std::collections::HashMap<usize, String>,
    /// More groups, as YAML lines under `groups:` (e.g. the soak's OOM group).
    pub extra_groups: String,
    /// The underlay: the veth end in each host's namespace.
    pub underlay: [String; 2],
    keys: Vec<String>,
    made_ns: Vec<String>,
    daemons: Vec<(usize, Child)>,
    helpers: Vec<(String, Child)>,
}

/// Splits agents `0..n` into `h1`'s first `n - n / 2` and `h2`'s rest, each into up to
/// [`GROUPS_PER_HOST`] contiguous groups of nearly equal size.
pub fn split(n: usize) -> [Vec<(String, Vec<usize>)>; 2] {
    let first = n - n / 2;
    let part = |host: &str, range: std::ops::Range<usize>| {
        let len = range.len();
        let groups = GROUPS_PER_HOST.min(len).max(1);
        (0..groups)
            .map(|g| {
                let from = range.start + g * len / groups;
                let to = range.start + (g + 1) * len / groups;
                (format!("{host}g{}", g + 1), (from..to).collect())
            })
            .filter(|(_, v): &(String, Vec<usize>)| !v.is_empty())
            .collect()
    };
    [part("h1", 0..first), part("h2", first..n)]
}

impl Lab {
    /// Makes the directory (with the stand-in agent script next to the system file, which
    /// every group sees), both key pairs, the namespaces with the underlay, and the system
    /// file for `agents` stand-in agents run by `python`. On error, what was made is
    /// removed again (by `Drop`).
    pub fn new(tools: Tools, python: &Path, agents: usize) -> Result<Lab, String> {
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/abench-obs-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir.join("keys"))
            .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
        let split = split(agents);
        let hosts = [0, 1].map(|i| {
            let name = format!("h{}", i + 1);
            Host {
                netns: format!("abench-obs-{pid}-{name}"),
                dir: dir.join(&name),
                slice: format!("abench-obs-{pid}-{name}.slice"),
                groups: split[i].clone(),
                name,
            }
        });
        let script = dir.join("stand_in_agent.py");
        let ports = (0..agents)
            .map(|i| u16::try_from(i).map(|i| FIRST_AGENT_PORT.saturating_add(i)))
            .collect::<Result<Vec<u16>, _>>()
            .map_err(|_| format!("too many agents: {agents}"))?;
        let mut lab = Lab {
            agents: Agents::new(&dir, python, &script, ports),
            config: dir.join("system.yaml"),
            health: "{http: /health, interval: 5s}".into(),
            env: std::collections::HashMap::new(),
            extra_groups: String::new(),
            underlay: [0, 1].map(|i| format!("ob{pid:x}u{}", i + 1)),
            keys: Vec::new(),
            tools,
            dir,
            hosts,
            made_ns: Vec::new(),
            daemons: Vec::new(),
            helpers: Vec::new(),
        };
        std::fs::write(&script, procs::STAND_IN_AGENT)
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        let mut keys = Vec::new();
        for h in &lab.hosts {
            let key = lab.dir.join(format!("keys/{}.key", h.name));
            let mut c = Command::new(&lab.tools.daemon);
            c.args(["bridge", "keygen", "--out"]).arg(&key);
            keys.push(output(c, None)?.trim().to_string());
        }
        for h in lab.hosts.clone() {
            lab.ip(&["netns", "add", &h.netns])?;
            lab.made_ns.push(h.netns.clone());
            lab.ip(&["-n", &h.netns, "link", "set", "lo", "up"])?;
        }
        let [va, vb] = lab.underlay.clone();
        lab.ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        for (i, v) in [(0, &va), (1, &vb)] {
            let ns = lab.hosts[i].netns.clone();
            lab.ip(&["link", "set", v, "netns", &ns])?;
            let addr = format!("{NET}.0.{}/24", i + 1);
            lab.ip(&["-n", &ns, "addr", "add", &addr, "dev", v])?;
            lab.ip(&["-n", &ns, "link", "set", v, "up"])?;
        }
        lab.keys = keys;
        lab.write_config()?;
        Ok(lab)
    }

    /// (Re)writes the system file from the lab's fields (a daemon sees it on its next
    /// start or reload).
    pub fn write_config(&self) -> Result<(), String> {
        let yaml = system_yaml(self, &self.keys);
        let tmp = self.config.with_extension("yaml.new");
        std::fs::write(&tmp, yaml)
            .and_then(|()| std::fs::rename(&tmp, &self.config))
            .map_err(|e| format!("cannot write {}: {e}", self.config.display()))
    }

    /// `ip ARGS`, failing with the command line and its stderr.
    fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new(&self.tools.ip);
        c.args(args);
        output(c, None)
    }

    /// What the names of the lab's namespaces and cgroup roots have in common (and nothing
    /// else on the machine has): `abench-obs-PID-`.
    pub fn tag(&self) -> String {
        format!("abench-obs-{}-", std::process::id())
    }

    /// Host `i`'s underlay address (its `address` in the system file).
    pub fn host_address(&self, i: usize) -> String {
        format!("{NET}.0.{}", i + 1)
    }

    /// `nsenter --net=/run/netns/NS -- PROGRAM` for host `i`, not yet run.
    pub fn in_host(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(&self.tools.nsenter);
        c.arg(format!("--net=/run/netns/{}", self.hosts[i].netns))
            .arg("--")
            .arg(program);
        c
    }

    /// Starts host `i`'s daemon in its namespace (output to its `daemon.log`) and waits up
    /// to 30 s for its control socket.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let h = self.hosts[i].clone();
        std::fs::create_dir_all(&h.dir)
            .map_err(|e| format!("cannot create {}: {e}", h.dir.display()))?;
        let log = std::fs::File::create(h.log())
            .map_err(|e| format!("cannot create {}: {e}", h.log().display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", h.log().display()))?;
        let mut cmd = self.in_host(i, &self.tools.daemon);
        cmd.arg("daemon")
            .arg("--config")
            .arg(&self.config)
            .args(["--host", &h.name])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let what = format!("`{}`", describe(&cmd));
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        // nsenter execs the daemon: the child's pid is the daemon's (and tells this daemon's
        // pid file from one a killed daemon left).
        let pid = i32::try_from(child.id()).ok();
        self.daemons.push((i, child));
        let t = Instant::now();
        // Ready when its own control socket accepts: a daemon killed with `kill -9` leaves
        // its socket file behind, and the new daemon writes its pid file before it binds its
        // listeners (the HTTP one first, then the control socket).
        while h.daemon_pid() != pid || UnixStream::connect(h.socket()).is_err() {
            if let Some(why) = self.exited(i) {
                return Err(why);
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "{what}: no control socket {} after 30 s; {}",
                    h.socket().display(),
                    h.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Kills host `i`'s daemon with SIGKILL (its agents, shims and bridge stay) and reaps it.
    pub fn kill_daemon(&mut self, i: usize) -> Result<(), String> {
        let at = self
            .daemons
            .iter()
            .position(|(j, _)| *j == i)
            .ok_or_else(|| format!("{}'s daemon is not running", self.hosts[i].name))?;
        let (_, mut c) = self.daemons.remove(at);
        c.kill()
            .and_then(|()| c.wait().map(|_| ()))
            .map_err(|e| format!("cannot kill {}'s daemon: {e}", self.hosts[i].name))
    }

    /// Why host `i`'s daemon is gone, if it is.
    pub fn exited(&mut self, i: usize) -> Option<String> {
        let tail = self.hosts[i].log_tail();
        let name = self.hosts[i].name.clone();
        let (_, c) = self.daemons.iter_mut().find(|(j, _)| *j == i)?;
        match c.try_wait() {
            Ok(Some(status)) => Some(format!("{name}'s daemon exited ({status}); {tail}")),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for {name}'s daemon: {e}")),
        }
    }

    /// Runs `cmd` (already made with [`Lab::in_host`]) in the background as `what`, output
    /// to `log`; stopped by the teardown.
    pub fn spawn_helper(&mut self, what: &str, mut cmd: Command, log: &Path) -> Result<(), String> {
        let out = std::fs::File::create(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {what} (`{}`): {e}", describe(&cmd)))?;
        self.helpers.push((what.to_string(), child));
        Ok(())
    }

    /// Stops the helpers and shuts both daemons down (`supervisorctl shutdown`: every agent
    /// stops), killing a daemon that does not exit in time; returns what went wrong. What a
    /// daemon left behind is still there for the caller to see.
    pub fn stop_daemons(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for (what, mut c) in self.helpers.drain(..) {
            if let Some(why) = stop_child(&mut c, Duration::from_secs(5)) {
                notes.push(format!("{what}: {why}"));
            }
        }
        // Both shutdowns first, then the waits: the hosts stop at the same time.
        for (i, _) in &self.daemons {
            let h = &self.hosts[*i];
            let mut c = Command::new(&self.tools.ctl);
            c.arg("-s").arg(h.socket()).arg("shutdown");
            if let Err(e) = output(c, None) {
                notes.push(format!("{}: {e}", h.name));
            }
        }
        for (i, mut c) in self.daemons.drain(..) {
            let t = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t.elapsed() < SHUTDOWN_WAIT {
                std::thread::sleep(Duration::from_millis(20));
            }
            if c.try_wait().ok().flatten().is_none() {
                notes.push(format!(
                    "{}'s daemon did not exit within {SHUTDOWN_WAIT:?} of `supervisorctl \
                     shutdown` and was killed",
                    self.hosts[i].name
                ));
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        notes
    }

    /// Stops everything and removes it; returns what went wrong or was left behind.
    /// Running it again does nothing.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut notes = self.stop_daemons();
        for h in &self.hosts {
            if let Some(pid) = h.bridge_pid().filter(|p| procs::cmdline(*p).is_some()) {
                let exe = procs::cmdline(pid).unwrap_or_default();
                if exe.first().is_some_and(|a| a.contains("agent-bridge")) {
                    procs::kill_all(&[pid]);
                    notes.push(format!(
                        "{}: killed its leftover bridge (pid {pid})",
                        h.name
                    ));
                }
            }
        }
        let left = procs::kill_leftovers(&self.agents, Duration::from_secs(5));
        if left > 0 {
            notes.push(format!("{left} processes survived SIGKILL for 5 s"));
        }
        for ns in std::mem::take(&mut self.made_ns) {
            if let Err(e) = self.ip(&["netns", "del", &ns]) {
                notes.push(e);
            }
        }
        for h in &self.hosts {
            match Layout::detect().and_then(|l| Cgroup::root(&l, &h.slice)) {
                Ok(root) => {
                    if let Err(e) = root.remove() {
                        notes.push(format!("cannot remove the cgroup {}: {e}", h.slice));
                    }
                }
                Err(e) => notes.push(format!("cgroup root {}: {e}", h.slice)),
            }
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                notes.push(format!("cannot remove {}: {e}", self.dir.display()));
            }
        }
        notes
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.teardown() {
            eprintln!("agent-bench observe: cleanup: {n}");
        }
    }
}

/// The system file: both hosts (the shape of `tests/src/hosts.rs`), then the groups.
fn system_yaml(lab: &Lab, keys: &[String]) -> String {
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap_or_default();
    let mut y = String::from("version: 1\nhosts:\n");
    for (i, h) in lab.hosts.iter().enumerate() {
        let d = &h.dir;
        y.push_str(&format!(
            "  {name}:\n    address: {NET}.0.{n}\n    role: {role}\n    \
             network: {{subnet: {NET}.{sub}.0/24}}\n    \
             bridge: {{address: {NET}.1.{n}/24, listen_port: {port}, \
             private_key_file: keys/{name}.key, public_key: \"{key}\"}}\n    \
             daemon: {{run_dir: {run}, log_dir: {logs}, state_dir: {state}, \
             control_socket: {sock}, cgroup_root: {slice}, \
             http_listen: '127.0.0.1:{HTTP_PORT}'}}\n",
            name = h.name,
            n = i + 1,
            role = if i == 0 { "primary" } else { "secondary" },
            sub = 16 * (i + 1),
            port = 51821 + i,
            key = keys.get(i).map(String::as_str).unwrap_or_default(),
            run = q(&d.join("run")),
            logs = q(&d.join("logs")),
            state = q(&d.join("state")),
            sock = q(&h.socket()),
            slice = h.slice,
        ));
    }
    y.push_str("groups:\n");
    for h in &lab.hosts {
        for (group, members) in &h.groups {
            y.push_str(&format!(
                "  {group}:\n    host: {}\n    network: private\n    \
                 restart: {{policy: always, backoff: {{initial: 100ms, max: 30s}}}}\n    \
                 agents:\n",
                h.name
            ));
            for &i in members {
                // The script relative to the system file's directory (the agents' working
                // directory, which the host image shows them): the same file works where
                // `deploy` copies the directory to.
                let script = lab.agents.script.to_string_lossy().into_owned();
                let argv: Vec<String> = lab
                    .agents
                    .argv(i)
                    .iter()
                    .map(|a| match (a == &script, lab.agents.script.file_name()) {
                        (true, Some(name)) => name.to_string_lossy().into_owned(),
                        _ => a.clone(),
                    })
                    .map(|a| serde_json::to_string(&a).unwrap_or_default())
                    .collect();
                y.push_str(&format!(
                    "      - name: {}\n        command: [{}]\n        port: {}\n        \
                     health: {}\n",
                    lab.agents.names[i],
                    argv.join(", "),
                    lab.agents.ports[i],
                    lab.health,
                ));
                if let Some(generation) = lab.env.get(&i) {
                    y.push_str(&format!(
                        "        env: {{SOAK_GENERATION: '{generation}'}}\n"
                    ));
                }
            }
        }
    }
    y.push_str(&lab.extra_groups);
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_77_agents_39_and_38_into_four_groups_each() {
        let [h1, h2] = split(77);
        let sizes = |g: &[(String, Vec<usize>)]| g.iter().map(|(_, v)| v.len()).collect::<Vec<_>>();
        assert_eq!(sizes(&h1), vec![9, 10, 10, 10]);
        assert_eq!(sizes(&h2), vec![9, 10, 9, 10]);
        assert_eq!(h1[0].0, "h1g1");
        assert_eq!(h2[3].0, "h2g4");
        let all: Vec<usize> = h1.iter().chain(&h2).flat_map(|(_, v)| v.clone()).collect();
        assert_eq!(all, (0..77).collect::<Vec<_>>());
        let [a, b] = split(2);
        assert_eq!((a.len(), b.len()), (1, 1));
    }
}
