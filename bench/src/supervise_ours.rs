//! agent-supervisor as a contender of `bench supervise`: a generated system file (one host
//! `bench`, the agents split over up to 11 groups on the `host` image, restart always with a
//! 10 ms initial backoff, a `tcp` health check), the daemon run as `agent-supervisor daemon`
//! (this binary), and a tiny blocking HTTP/JSON client of its control socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::supervise::{AgentView, Marks, Peer};
use super::supervise_procs::{self as procs, Agents};
use super::supervise_watch::{Watcher, OPENED, REMOVED, WRITTEN};
use agent_supervisor::daemon::api::{AgentState, Response};

/// The host of the generated system file.
pub const HOST: &str = "bench";
/// Groups the agents are split over (the seed's MainPC has 11), at most one per agent.
pub const GROUPS: usize = 11;

/// agent-supervisor's daemon for the benchmark's agents.
pub struct Ours {
    agents: Agents,
    exe: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    slice: String,
    child: Option<Child>,
    watcher: Option<Watcher>,
}

/// The `agent-supervisor` binary the daemon runs from: the one next to this executable
/// (`cargo build` puts both in the same target directory; an install puts them side by side).
fn daemon_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let exe = me.with_file_name(DAEMON_BIN);
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "no {} next to {} (build it: cargo build -p agent-supervisor)",
            DAEMON_BIN,
            me.display()
        ))
    }
}

/// The name of the daemon's binary.
pub const DAEMON_BIN: &str = "agent-supervisor";

impl Ours {
    /// Writes the system file into the agents' directory.
    pub fn new(agents: &Agents) -> Result<Ours, String> {
        let exe = daemon_binary()?;
        let dir = &agents.dir;
        let slice = format!("as-bench-{}.slice", std::process::id());
        let http = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port for the daemon's http_listen: {e}"))?;
        let config = dir.join("system.yaml");
        let text = system_yaml(agents, dir, &slice, http);
        std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        Ok(Ours {
            agents: agents.clone(),
            exe,
            socket: dir.join("control.sock"),
            log: dir.join("daemon.log"),
            config,
            slice,
            child: None,
            watcher: None,
        })
    }

    /// The end of the daemon's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
        if tail.is_empty() {
            "daemon log empty".into()
        } else {
            format!("daemon log: {tail}")
        }
    }

    /// One request on the control socket; `Ok(None)` while nothing listens yet.
    fn call(&self, method: &str, path: &str, body: &str) -> Result<Option<Response>, String> {
        control_call(&self.socket, method, path, body)
    }

    fn status(&self, query: &str) -> Result<Vec<AgentView>, String> {
        match self.call("GET", &format!("/v1/status{query}"), "")? {
            None => Ok(Vec::new()),
            Some(Response::Status { snapshot }) => Ok(snapshot
                .agents
                .into_iter()
                .map(|a| AgentView {
                    name: a.agent,
                    running: a.state == AgentState::Running,
                    pid: a.pid,
                })
                .collect()),
            Some(other) => Err(format!("GET /v1/status: unexpected answer {other:?}")),
        }
    }
}

/// `POST /v1/shutdown` on the daemon's control socket: it stops every agent and exits.
pub fn shutdown(socket: &Path) -> Result<(), String> {
    match control_call(socket, "POST", "/v1/shutdown", "{}")? {
        Some(Response::ShuttingDown) => Ok(()),
        None => Err(format!("the control socket {} is gone", socket.display())),
        Some(other) => Err(format!("POST /v1/shutdown: unexpected answer {other:?}")),
    }
}

/// A connection to the Unix socket `socket`; `Ok(None)` while nothing listens there (no
/// socket file yet, or nobody accepting).
pub fn connect_if_listening(socket: &Path) -> Result<Option<UnixStream>, String> {
    match UnixStream::connect(socket) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("connect to {}: {e}", socket.display())),
    }
}

/// One request on the control socket `socket` (HTTP over a Unix socket, `Connection:
/// close`), its JSON answer decoded; `Ok(None)` while nothing listens yet.
pub fn control_call(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> Result<Option<Response>, String> {
    let Some(mut s) = connect_if_listening(socket)? else {
        return Ok(None);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send {method} {path} to {}: {e}", socket.display()))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read the answer to {method} {path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: not an HTTP answer: {text:?}"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!("{method} {path}: HTTP {status}: {}", body.trim()));
    }
    serde_json::from_str(body)
        .map(Some)
        .map_err(|e| format!("{method} {path}: cannot decode {body:?}: {e}"))
}

fn group_count(agents: usize) -> usize {
    GROUPS.min(agents).max(1)
}

/// The group of agent `i` of `n`: contiguous runs of nearly equal size.
fn group_of(n: usize, i: usize) -> usize {
    let groups = group_count(n);
    (0..groups)
        .find(|g| i < (g + 1) * n / groups)
        .unwrap_or(groups - 1)
}

impl Ours {
    /// `run_dir/groups/<group>/agents` of group `g`.
    fn agents_dir(&self, g: usize) -> PathBuf {
        self.agents
            .dir
            .join("run/groups")
            .join(group_name(g))
            .join("agents")
    }
}

fn group_name(g: usize) -> String {
    format!("g{:02}", g + 1)
}

/// The benchmark's system file.
fn system_yaml(agents: &Agents, dir: &Path, slice: &str, http: u16) -> String {
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap_or_default();
    let mut y = format!(
        "hosts:\n  {HOST}: {{address: 127.0.0.1, role: primary}}\ndaemon:\n  run_dir: {}\n  \
         log_dir: {}\n  state_dir: {}\n  control_socket: {}\n  cgroup_root: {slice}\n  \
         http_listen: '127.0.0.1:{http}'\ngroups:\n",
        q(&dir.join("run")),
        q(&dir.join("logs")),
        q(&dir.join("state")),
        q(&dir.join("control.sock")),
    );
    let n = agents.len();
    for g in 0..group_count(n) {
        y.push_str(&format!(
            "  {}:\n    host: {HOST}\n    image: host\n    \
             restart: {{policy: always, backoff: {{initial: 10ms}}}}\n    agents:\n",
            group_name(g)
        ));
        for i in (0..n).filter(|&i| group_of(n, i) == g) {
            let argv: Vec<String> = agents
                .argv(i)
                .iter()
                .map(|a| serde_json::to_string(a).unwrap_or_default())
                .collect();
            y.push_str(&format!(
                "      - name: {}\n        command: [{}]\n        port: {}\n        \
                 health: {{tcp: true}}\n",
                agents.names[i],
                argv.join(", "),
                agents.ports[i]
            ));
        }
    }
    y
}

impl Peer for Ours {
    fn start(&mut self) -> Result<i32, String> {
        let log = std::fs::File::create(&self.log)
            .map_err(|e| format!("create {}: {e}", self.log.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("dup {}: {e}", self.log.display()))?;
        let child = Command::new(&self.exe)
            .arg("daemon")
            .arg("--config")
            .arg(&self.config)
            .args(["--host", HOST])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("run {} daemon: {e}", self.exe.display()))?;
        let pid = child.id() as i32;
        self.child = Some(child);
        Ok(pid)
    }

    fn states(&mut self) -> Result<Vec<AgentView>, String> {
        self.status("")
            .map_err(|e| format!("{e} ({})", self.log_tail()))
    }

    fn agent(&mut self, name: &str) -> Result<Option<AgentView>, String> {
        Ok(self
            .status(&format!("?targets={name}"))?
            .into_iter()
            .find(|a| a.name == name))
    }

    fn stop_all(&mut self) -> Result<(), String> {
        shutdown(&self.socket)
    }

    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(format!("the daemon exited ({status}); {}", self.log_tail())),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for the daemon: {e}")),
        }
    }

    fn helpers(&self) -> Vec<i32> {
        // The launcher is `agent-launch` next to the daemon's binary, or the binary itself:
        // its launch server and the shims and launchers it forked.
        let exe = self.exe.to_string_lossy().into_owned();
        let small = self
            .exe
            .with_file_name(agent_supervisor::pod::LAUNCHER_BIN)
            .to_string_lossy()
            .into_owned();
        // Ours, not another run's: group inits live in this bench's cgroup slice; the launch
        // server is the daemon's child, and the shims are the server's children (or the
        // daemon's, exec'd, when no server runs).
        let slice = format!("/{}/", self.slice);
        let daemon = self.child.as_ref().map(|c| c.id() as i32);
        let ppid = |p: i32| -> Option<i32> {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
        };
        let ours: Vec<(i32, String)> = procs::pids()
            .into_iter()
            .filter_map(|p| {
                let a = procs::cmdline(p)?;
                let verb = a.get(1)?.clone();
                let mine = (a[0] == exe || a[0] == small)
                    && matches!(verb.as_str(), "__agent" | "__group-init" | "__spawner");
                mine.then_some((p, verb))
            })
            .collect();
        let servers: Vec<i32> = ours
            .iter()
            .filter(|(p, verb)| verb == "__spawner" && daemon.is_some() && ppid(*p) == daemon)
            .map(|(p, _)| *p)
            .collect();
        ours.into_iter()
            .filter(|(p, _)| {
                servers.contains(p)
                    || ppid(*p).is_some_and(|pp| servers.contains(&pp) || Some(pp) == daemon)
                    || std::fs::read_to_string(format!("/proc/{p}/cgroup"))
                        .is_ok_and(|c| c.contains(&slice))
            })
            .map(|(p, _)| p)
            .collect()
    }

    fn no_helpers(&self) -> Option<&'static str> {
        None
    }

    fn watch_restarts(&mut self) -> Result<(), String> {
        let dirs: Vec<PathBuf> = (0..group_count(self.agents.len()))
            .map(|g| self.agents_dir(g))
            .collect();
        let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        self.watcher = Some(Watcher::new(&refs)?);
        Ok(())
    }

    fn restart_marks(&self, name: &str, killed: Instant) -> Marks {
        let Some(w) = &self.watcher else {
            return Vec::new();
        };
        // Give the watcher thread a moment to read the last events.
        std::thread::sleep(Duration::from_millis(5));
        let exit = format!("{name}.exit");
        let spec = format!("{name}.json");
        let pid = format!("{name}.pid");
        let Some(written) = w.first(&exit, WRITTEN, killed) else {
            return Vec::new();
        };
        let read = w.next(&exit, OPENED, written);
        let removed = read.and_then(|r| w.next(&exit, REMOVED, r));
        let spawned = removed.and_then(|r| w.next(&spec, WRITTEN, r));
        let running = spawned.and_then(|r| w.next(&pid, WRITTEN, r));
        let steps = [
            (
                "the old shim reaped the agent and wrote its exit record",
                Some(written),
            ),
            (
                "the core handled the shim's exit (read the exit record); backoff 10 ms starts",
                read,
            ),
            (
                "backoff over: the core starts the agent, its cgroup created",
                removed,
            ),
            ("launch spec written, the shim is spawned", spawned),
            (
                "the new shim exec'd, joined the group, forked, the agent exec'd (pid file)",
                running,
            ),
        ];
        steps
            .into_iter()
            .map_while(|(what, m)| m.map(|m| (what, m.at.saturating_duration_since(killed))))
            .collect()
    }

    fn teardown(&mut self) -> Vec<String> {
        self.watcher = None;
        let mut notes = procs::end(self.child.take(), &self.agents);
        notes.extend(procs::remove_cgroup_root(&self.slice));
        notes
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.teardown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_split_over_nonempty_contiguous_groups() {
        for n in [1, 5, 11, 12, 77] {
            let groups: Vec<usize> = (0..n).map(|i| group_of(n, i)).collect();
            assert!(groups.windows(2).all(|w| w[0] <= w[1]), "{n}: {groups:?}");
            for g in 0..group_count(n) {
                assert!(groups.contains(&g), "{n}: group {g} empty in {groups:?}");
            }
        }
        let sizes: Vec<usize> = (0..11)
            .map(|g| (0..77).filter(|&i| group_of(77, i) == g).count())
            .collect();
        assert_eq!(sizes, vec![7; 11]);
    }
}
