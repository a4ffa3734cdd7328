//! The daemons `bench scale` and `bench clients` run: agent-supervisor (`agent-supervisor
//! daemon`, the binary next to this one) and supervisord, each with N idle agents (a copy
//! of `sleep` in the benchmark's directory, run as `DIR/idle-agent infinity`: the cheapest
//! agent there is, so that 2,000 of them fit on a small machine, and one whose command line
//! names the directory, so that whatever is left of a run is found and killed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_supervisor::daemon::api::{AgentState, Response};

use super::deploy::sibling;
use super::supervise_ours::{control_call, shutdown, DAEMON_BIN, HOST};
use super::supervise_procs as procs;
use super::supervise_supervisord::{process_infos, xmlrpc, Installed};

/// The idle agent's file name in the benchmark's directory.
pub const IDLE_AGENT: &str = "idle-agent";

/// The benchmark's directory: its idle agent, system files, sockets, logs. Removed (after
/// every process of it is killed) when dropped.
pub struct Workdir {
    pub dir: PathBuf,
    pub idle: PathBuf,
}

impl Workdir {
    /// `/tmp/as-bench-TAG-PID` with a copy of `sleep` as [`IDLE_AGENT`].
    pub fn new(tag: &str) -> Result<Workdir, String> {
        let dir = PathBuf::from(format!("/tmp/as-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let sleep = procs::which("sleep").ok_or("no sleep program (coreutils) on PATH")?;
        let idle = dir.join(IDLE_AGENT);
        std::fs::copy(&sleep, &idle)
            .map_err(|e| format!("copy {} to {}: {e}", sleep.display(), idle.display()))?;
        Ok(Workdir { dir, idle })
    }

    /// Every process whose command line names the directory (agents, daemons, shims).
    pub fn leftovers(&self) -> Vec<i32> {
        let dir = self.dir.to_string_lossy();
        let me = std::process::id() as i32;
        procs::pids()
            .into_iter()
            .filter(|&p| p != me)
            .filter(|&p| procs::cmdline(p).is_some_and(|a| a.iter().any(|x| x.contains(&*dir))))
            .collect()
    }

    /// Kills every leftover until none is left (at most 10 s); how many survived.
    pub fn kill_leftovers(&self) -> usize {
        let t = Instant::now();
        loop {
            let left = self.leftovers();
            if left.is_empty() || t.elapsed() > Duration::from_secs(10) {
                return left.len();
            }
            procs::kill_all(&left);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        self.kill_leftovers();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A daemon under test, with its N idle agents.
pub trait Daemon {
    /// Starts it (it starts every agent); its pid.
    fn start(&mut self) -> Result<i32, String>;
    /// How many agents it reports RUNNING, of how many; `(0, 0)` while it does not answer.
    fn running(&mut self) -> Result<(usize, usize), String>;
    /// Its own status command, as a user runs it (a new process).
    fn status_command(&self) -> Command;
    /// Asks it to stop every agent and exit.
    fn stop_all(&mut self) -> Result<(), String>;
    /// Why it is gone, if it is (reaps it).
    fn exited(&mut self) -> Option<String>;
    /// Kills what is left of it; notes.
    fn teardown(&mut self, w: &Workdir) -> Vec<String>;
}

/// The end of a log file on one line, for messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{}: {}",
        path.display(),
        lines[lines.len().saturating_sub(5)..].join(" / ")
    )
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("dup {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("run {cmd:?}: {e}"))
}

fn exited(child: &mut Option<Child>, who: &str, log: &Path) -> Option<String> {
    match child.as_mut()?.try_wait() {
        Ok(Some(status)) => Some(format!("{who} exited ({status}); {}", tail(log))),
        Ok(None) => None,
        Err(e) => Some(format!("cannot wait for {who}: {e}")),
    }
}

fn end(child: &mut Option<Child>, w: &Workdir) -> Vec<String> {
    if let Some(mut c) = child.take() {
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    match w.kill_leftovers() {
        0 => Vec::new(),
        n => vec![format!("{n} processes survived SIGKILL for 10 s")],
    }
}

/// agent-supervisor's daemon with N idle agents in groups of `per_group`.
pub struct Ours {
    exe: PathBuf,
    ctl: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub http: std::net::SocketAddr,
    log: PathBuf,
    slice: String,
    child: Option<Child>,
}

impl Ours {
    /// Writes `system-N.yaml` into the work directory.
    pub fn new(w: &Workdir, n: usize, per_group: usize) -> Result<Ours, String> {
        let exe = sibling(DAEMON_BIN)?;
        let ctl = sibling("supervisorctl")?;
        let http = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for the daemon's http_listen: {e}"))?;
        let slice = format!("as-bench-{}-{n}.slice", std::process::id());
        let state = w.dir.join(format!("ours-{n}"));
        let config = w.dir.join(format!("system-{n}.yaml"));
        let socket = state.join("control.sock");
        let text = system_yaml(&w.idle, &state, &socket, &slice, http, n, per_group);
        std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        Ok(Ours {
            exe,
            ctl,
            log: w.dir.join(format!("daemon-{n}.log")),
            config,
            socket,
            http,
            slice,
            child: None,
        })
    }

    /// `agent-supervisor check FILE --host bench`, as a user runs it.
    pub fn check_command(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("check").arg(&self.config).args(["--host", HOST]);
        c
    }
}

/// The system file: one host, `n` idle agents in groups of `per_group` on the `host` image.
pub fn system_yaml(
    idle: &Path,
    state: &Path,
    socket: &Path,
    slice: &str,
    http: std::net::SocketAddr,
    n: usize,
    per_group: usize,
) -> String {
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap_or_default();
    let mut y = format!(
        "hosts:\n  {HOST}: {{address: 127.0.0.1, role: primary}}\ndaemon:\n  run_dir: {}\n  \
         log_dir: {}\n  state_dir: {}\n  control_socket: {}\n  cgroup_root: {slice}\n  \
         http_listen: '{http}'\ngroups:\n",
        q(&state.join("run")),
        q(&state.join("logs")),
        q(&state.join("state")),
        q(socket),
    );
    let per = per_group.max(1);
    for (g, first) in (0..n).step_by(per).enumerate() {
        y.push_str(&format!(
            "  g{:04}:\n    host: {HOST}\n    image: host\n    restart: {{policy: always}}\n    \
             agents:\n",
            g + 1
        ));
        for i in first..(first + per).min(n) {
            y.push_str(&format!(
                "      - name: a{}\n        command: [{}, infinity]\n",
                i + 1,
                q(idle)
            ));
        }
    }
    y
}

impl Daemon for Ours {
    fn start(&mut self) -> Result<i32, String> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("daemon")
            .arg("--config")
            .arg(&self.config)
            .args(["--host", HOST]);
        let child = spawn_logged(&mut cmd, &self.log)?;
        let pid = child.id() as i32;
        self.child = Some(child);
        Ok(pid)
    }

    fn running(&mut self) -> Result<(usize, usize), String> {
        match control_call(&self.socket, "GET", "/v1/status", "") {
            Ok(None) => Ok((0, 0)),
            Ok(Some(Response::Status { snapshot })) => Ok((
                snapshot
                    .agents
                    .iter()
                    .filter(|a| a.state == AgentState::Running)
                    .count(),
                snapshot.agents.len(),
            )),
            Ok(Some(other)) => Err(format!("GET /v1/status: unexpected answer {other:?}")),
            Err(e) => Err(format!("{e} ({})", tail(&self.log))),
        }
    }

    fn status_command(&self) -> Command {
        let mut c = Command::new(&self.ctl);
        c.arg("-s").arg(&self.socket).arg("status");
        c
    }

    fn stop_all(&mut self) -> Result<(), String> {
        shutdown(&self.socket)
    }

    fn exited(&mut self) -> Option<String> {
        exited(&mut self.child, "the daemon", &self.log)
    }

    fn teardown(&mut self, w: &Workdir) -> Vec<String> {
        let mut notes = end(&mut self.child, w);
        notes.extend(procs::remove_cgroup_root(&self.slice));
        notes
    }
}

/// supervisord with N idle programs (`startsecs=0`: RUNNING once forked, as ours is once
/// the shim wrote the agent's pid).
pub struct Supervisord {
    bin: PathBuf,
    ctl: PathBuf,
    conf: PathBuf,
    pub socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Supervisord {
    pub fn new(w: &Workdir, inst: &Installed, n: usize) -> Result<Supervisord, String> {
        let base = w.dir.join(format!("sv-{n}"));
        let logs = base.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| format!("create {}: {e}", logs.display()))?;
        let socket = base.join("sv.sock");
        let conf = base.join("supervisord.conf");
        let mut c = format!(
            "[unix_http_server]\nfile={sock}\nchmod=0700\n\n\
             [supervisord]\nnodaemon=true\nuser=root\nlogfile={base}/sv.log\n\
             pidfile={base}/sv.pid\nchildlogdir={logs}\nminfds={fds}\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{sock}\n\n",
            sock = socket.display(),
            base = base.display(),
            logs = logs.display(),
            fds = 1024 + 4 * n,
        );
        for i in 1..=n {
            c.push_str(&format!(
                "[program:a{i}]\ncommand={} infinity\ndirectory={}\nautostart=true\n\
                 autorestart=true\nstartsecs=0\nstopsignal=TERM\nstopwaitsecs=10\n\
                 stdout_logfile={logs}/a{i}.stdout.log\nstderr_logfile={logs}/a{i}.stderr.log\n\n",
                w.idle.display(),
                w.dir.display(),
                logs = logs.display(),
            ));
        }
        std::fs::write(&conf, c).map_err(|e| format!("write {}: {e}", conf.display()))?;
        Ok(Supervisord {
            bin: inst.supervisord.clone(),
            ctl: inst.supervisorctl.clone(),
            log: base.join("sv.out"),
            conf,
            socket,
            child: None,
        })
    }
}

impl Daemon for Supervisord {
    fn start(&mut self) -> Result<i32, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.conf);
        let child = spawn_logged(&mut cmd, &self.log)?;
        let pid = child.id() as i32;
        self.child = Some(child);
        Ok(pid)
    }

    fn running(&mut self) -> Result<(usize, usize), String> {
        let xml = xmlrpc(&self.socket, "supervisor.getAllProcessInfo", &[])
            .map_err(|e| format!("{e} ({})", tail(&self.log)))?;
        let v = xml.map(|x| process_infos(&x)).unwrap_or_default();
        Ok((v.iter().filter(|a| a.running).count(), v.len()))
    }

    fn status_command(&self) -> Command {
        let mut c = Command::new(&self.ctl);
        c.arg("-c").arg(&self.conf).arg("status");
        c
    }

    fn stop_all(&mut self) -> Result<(), String> {
        match xmlrpc(&self.socket, "supervisor.shutdown", &[])? {
            Some(_) => Ok(()),
            None => Err(format!(
                "supervisord's socket {} is gone",
                self.socket.display()
            )),
        }
    }

    fn exited(&mut self) -> Option<String> {
        exited(&mut self.child, "supervisord", &self.log)
    }

    fn teardown(&mut self, w: &Workdir) -> Vec<String> {
        end(&mut self.child, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_file_has_every_agent_in_groups_of_the_size_given() {
        let y = system_yaml(
            Path::new("/tmp/x/idle-agent"),
            Path::new("/tmp/x/s"),
            Path::new("/tmp/x/s/control.sock"),
            "t.slice",
            "127.0.0.1:9".parse().expect("address"),
            15,
            7,
        );
        assert_eq!(y.matches("      - name: a").count(), 15, "{y}");
        assert!(y.contains("  g0003:\n") && !y.contains("g0004"), "{y}");
        assert!(y.contains("- name: a15\n"), "{y}");
        assert!(
            y.contains("command: [\"/tmp/x/idle-agent\", infinity]"),
            "{y}"
        );
    }
}
