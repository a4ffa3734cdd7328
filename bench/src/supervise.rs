//! `agent-bench supervise`: the same N stand-in agents under agent-supervisor and
//! under supervisord, one after the other in one run, and as plain processes for reference.
//! Prints a Markdown table (one column per supervisor): time to all RUNNING, restart latency
//! after `kill -9`, daemon RSS, idle CPU, time to stop all; then whether agent-supervisor
//! meets its targets. Not a timed test: the numbers are printed, never asserted.
//!
//! Fairness: restarts are detected the same way for both, from `/proc` (a new process with
//! the agent's command line), without asking the supervisor, because a client polling
//! supervisord over XML-RPC wakes its 1 s loop and would hide its real restart latency.
//! Only afterwards is the supervisor asked until it reports the new pid RUNNING.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::supervise_ours::Ours;
use super::supervise_procs::{self as procs, Agents};
use super::supervise_report::report;
use super::supervise_supervisord::{self as sv, Supervisord};

/// One agent as a supervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub name: String,
    pub running: bool,
    pub pid: Option<i32>,
}

/// A supervisor under test.
pub trait Peer {
    /// Starts the daemon (it starts every agent); returns its pid.
    fn start(&mut self) -> Result<i32, String>;
    /// Every agent's state; empty while the daemon does not answer yet.
    fn states(&mut self) -> Result<Vec<AgentView>, String>;
    /// One agent's state.
    fn agent(&mut self, name: &str) -> Result<Option<AgentView>, String>;
    /// Asks the daemon to stop every agent and exit, as a user would.
    fn stop_all(&mut self) -> Result<(), String>;
    /// Why the daemon is gone, if it is (reaps it).
    fn exited(&mut self) -> Option<String>;
    /// Its processes besides the daemon (agent-supervisor's shims and group inits).
    fn helpers(&self) -> Vec<i32>;
    /// Why it has no helper processes, if so.
    fn no_helpers(&self) -> Option<&'static str>;
    /// Kills whatever is left of it (daemon, agents, cgroups); returns notes.
    fn teardown(&mut self) -> Vec<String>;
    /// Before the kills: start watching what [`Peer::restart_marks`] reports.
    fn watch_restarts(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// After a restart of `name` killed at `killed`: when the supervisor's own steps
    /// happened, if it leaves traces (agent-supervisor's exit, spec and pid files).
    fn restart_marks(&self, _name: &str, _killed: Instant) -> Marks {
        Vec::new()
    }
}

/// Column labels.
pub const OURS: &str = "agent-supervisor";
pub const SUPERVISORD: &str = "supervisord (startsecs=1)";
pub const SUPERVISORD_0: &str = "supervisord (startsecs=0)";
pub const PLAIN: &str = "no supervisor";
/// The supervisors every table has a column for (the test checks these).
pub const SUPERVISORS: &[&str] = &[OURS, SUPERVISORD, SUPERVISORD_0];

/// Row labels, in table order.
pub const ROW_RUNNING: &str = "time to all RUNNING";
pub const ROW_LISTENING: &str = "time to all ports listening";
pub const ROW_RESTART: &str = "restart after kill -9: new agent exec'd, median / max";
pub const ROW_REPORTED: &str = "restart after kill -9: reported RUNNING, median / max";
pub const ROW_RSS: &str = "daemon RSS";
pub const ROW_HELPERS_RSS: &str = "shims + group inits: RSS (PSS)";
pub const ROW_CPU: &str = "idle CPU of the daemon, % of one core";
pub const ROW_HELPERS_CPU: &str = "idle CPU of shims + group inits";
pub const ROW_STOP: &str = "time to stop all";
pub const ROWS: &[&str] = &[
    ROW_RUNNING,
    ROW_LISTENING,
    ROW_RESTART,
    ROW_REPORTED,
    ROW_RSS,
    ROW_HELPERS_RSS,
    ROW_CPU,
    ROW_HELPERS_CPU,
    ROW_STOP,
];

/// The targets of the issue.
pub const TARGET_RESTART: Duration = Duration::from_millis(20);
pub const TARGET_RSS_MIB: f64 = 15.0;
pub const TARGET_IDLE_CPU: f64 = 0.2;
/// Stop-all may exceed the plain agents' own exit by this much (the daemon's group teardown).
pub const STOP_SLACK: Duration = Duration::from_millis(500);
/// The agents' stop_timeout (the default, `agent_config::defaults`).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the idle CPU window lasts, and the calm before it.
pub const IDLE_WINDOW: Duration = Duration::from_secs(5);
const SETTLE: Duration = Duration::from_secs(2);
const START_LIMIT: Duration = Duration::from_secs(120);
const RESTART_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT: Duration = Duration::from_secs(300);
/// Pause after a restart before the next kill.
const BETWEEN_KILLS: Duration = Duration::from_millis(250);

/// Why the benchmark could not run at all (a supervisor that fails gets its reason printed).
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error(
        "must run as root: agent-supervisor's groups need namespaces and cgroups (run it as \
         root, e.g. sudo agent-bench supervise)"
    )]
    NotRoot,
    #[error("--agents must be at least 1")]
    NoAgents,
    #[error(
        "python3 not found in /usr/local/bin, /usr/bin or /bin: the stand-in agents need the \
         system's interpreter (apt-get install python3)"
    )]
    NoPython,
    #[error("no {0} contiguous free TCP ports from {first} on", first = procs::FIRST_PORT)]
    NoPorts(usize),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What each step measures for a column.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Plan {
    pub(super) kills: usize,
    pub(super) idle: bool,
    pub(super) stop: bool,
}

/// One column's numbers; `error` is why the rest is missing.
#[derive(Debug, Default)]
pub(super) struct Measured {
    pub(super) plan: Plan,
    pub(super) has_states: bool,
    pub(super) all_running: Option<Duration>,
    pub(super) all_listening: Option<Duration>,
    pub(super) restart_exec: Vec<Duration>,
    pub(super) restart_reported: Vec<Duration>,
    /// Per restart: the supervisor's own steps (from [`Peer::restart_marks`]), and when the
    /// new process was seen.
    pub(super) restart_marks: Vec<Marks>,
    pub(super) daemon_rss: Option<u64>,
    /// Count, RSS and PSS in KiB.
    pub(super) helpers_mem: Option<(usize, u64, u64)>,
    /// (from schedstat, from clock ticks), % of one core.
    pub(super) idle_cpu: Option<(f64, f64)>,
    pub(super) helpers_cpu: Option<f64>,
    /// Why the supervisor has no helper processes (supervisord).
    pub(super) no_helpers: Option<&'static str>,
    pub(super) stop: Option<Duration>,
    pub(super) error: Option<String>,
}

pub(super) struct Column {
    pub(super) label: &'static str,
    pub(super) m: Measured,
}

/// The benchmark's directory, removed when dropped (after the supervisors' teardown).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark with `agents` stand-in agents and `kills` restarts per supervisor.
pub fn run(agents: usize, kills: usize) -> Result<String, SuperviseError> {
    if agents == 0 {
        return Err(SuperviseError::NoAgents);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(SuperviseError::NotRoot);
    }
    let python = procs::system_python().ok_or(SuperviseError::NoPython)?;
    let ports = procs::free_ports(agents).ok_or(SuperviseError::NoPorts(agents))?;
    let dir = PathBuf::from(format!("/tmp/as-bench-sup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| SuperviseError::Io {
        what: "create",
        path: dir.clone(),
        source,
    })?;
    let _cleanup = TempDir(dir.clone());
    let script = dir.join("stand_in_agent.py");
    std::fs::write(&script, procs::STAND_IN_AGENT).map_err(|source| SuperviseError::Io {
        what: "write",
        path: script.clone(),
        source,
    })?;
    let a = Agents::new(&dir, &python, &script, ports);
    let mut notes = Vec::new();
    let busy_before = machine_busy(Duration::from_secs(1));
    if cfg!(debug_assertions) {
        notes.push("this is a debug build: build with --release for meaningful numbers".into());
    }
    if kills > agents {
        notes.push(format!(
            "--kills {kills} > --agents {agents}: agents are killed more than once, and a \
             second kill within reset_after backs off longer"
        ));
    }

    progress(
        PLAIN,
        "starting the agents as plain processes (also warms the page cache)",
    );
    let plain = plain(&a);
    let mut columns = Vec::new();
    progress(OURS, "starting the daemon");
    let ours = match Ours::new(&a) {
        Ok(mut p) => measure(&mut p, &a, OURS, full(kills), &mut notes),
        Err(e) => failed(e),
    };
    columns.push(Column {
        label: OURS,
        m: ours,
    });
    match sv::installed() {
        Err(why) => {
            for label in [SUPERVISORD, SUPERVISORD_0] {
                columns.push(Column {
                    label,
                    m: failed(why.clone()),
                });
            }
        }
        Ok(inst) => {
            notes.push(format!(
                "supervisord {} ({}), polled over XML-RPC on its Unix socket",
                inst.version,
                inst.supervisord.display()
            ));
            for (label, startsecs, plan) in [
                (SUPERVISORD, 1, full(kills)),
                (SUPERVISORD_0, 0, Plan::default()),
            ] {
                progress(label, "starting supervisord");
                let m = match Supervisord::new(&a, &inst, startsecs) {
                    Ok(mut p) => measure(&mut p, &a, label, plan, &mut notes),
                    Err(e) => failed(e),
                };
                columns.push(Column { label, m });
            }
        }
    }
    columns.push(Column {
        label: PLAIN,
        m: plain,
    });
    let left = a.leftovers();
    if !left.is_empty() {
        procs::kill_all(&left);
        notes.push(format!("killed {} leftover processes", left.len()));
    }
    let busy_after = machine_busy(Duration::from_secs(1));
    if busy_before.max(busy_after) > BUSY_PERCENT {
        notes.push(format!(
            "the machine was busy without the benchmark ({busy_before:.0} % of its {} CPUs in \
             the second before, {busy_after:.0} % in the second after): other processes \
             competed for the CPUs, \
             so the numbers are noisy; and agent-supervisor's agents run in the cpu cgroup of \
             its slice, which gets one share against each busy process of the root cgroup, \
             while supervisord's and the plain agents compete one by one (slower start under \
             load)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
    }
    Ok(report(&a, kills, &columns, &notes))
}

/// Other processes using more than this share of the machine make a note.
const BUSY_PERCENT: f64 = 15.0;

/// How busy all CPUs were over `window` (from `/proc/stat`), in percent.
pub fn machine_busy(window: Duration) -> f64 {
    // (busy, total) jiffies of the `cpu` line: idle and iowait are not busy.
    let read = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3)? + v.get(4)?;
        Some((total.saturating_sub(idle), total))
    };
    let Some((b0, t0)) = read() else { return 0.0 };
    std::thread::sleep(window);
    let Some((b1, t1)) = read() else { return 0.0 };
    b1.saturating_sub(b0) as f64 / t1.saturating_sub(t0).max(1) as f64 * 100.0
}

fn full(kills: usize) -> Plan {
    Plan {
        kills,
        idle: true,
        stop: true,
    }
}

fn failed(why: String) -> Measured {
    Measured {
        has_states: true,
        error: Some(why),
        ..Measured::default()
    }
}

fn progress(who: &str, what: &str) {
    eprintln!("bench supervise: {who}: {what}");
}

/// Measures one supervisor and tears it down, whatever happened.
fn measure(
    p: &mut dyn Peer,
    a: &Agents,
    label: &str,
    plan: Plan,
    notes: &mut Vec<String>,
) -> Measured {
    let mut m = Measured {
        plan,
        has_states: true,
        no_helpers: p.no_helpers(),
        ..Measured::default()
    };
    if let Err(e) = steps(p, a, label, &mut m) {
        m.error = Some(e);
    }
    for n in p.teardown() {
        notes.push(format!("{label}: {n}"));
    }
    m
}

fn steps(p: &mut dyn Peer, a: &Agents, label: &str, m: &mut Measured) -> Result<(), String> {
    let n = a.len();
    // 1. Start to all RUNNING (the supervisor's word) and all listening (/proc/net/tcp).
    let t0 = Instant::now();
    let daemon = p.start()?;
    loop {
        if m.all_listening.is_none() && a.all_listening() {
            m.all_listening = Some(t0.elapsed());
        }
        if m.all_running.is_none() {
            let s = p.states()?;
            if s.len() == n && s.iter().all(|v| v.running) {
                m.all_running = Some(t0.elapsed());
            } else if t0.elapsed() > START_LIMIT {
                let running = s.iter().filter(|v| v.running).count();
                return Err(format!(
                    "only {running} of {n} agents RUNNING after {START_LIMIT:?}"
                ));
            }
        }
        if m.all_running.is_some() && m.all_listening.is_some() {
            break;
        }
        if let Some(why) = p.exited() {
            return Err(why);
        }
        if t0.elapsed() > START_LIMIT {
            return Err(format!("not all {n} ports listening after {START_LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // 2. Restarts after kill -9, a different agent each time.
    if m.plan.kills > 0 {
        progress(label, &format!("{} kill -9 restarts", m.plan.kills));
        p.watch_restarts()?;
    }
    for k in 0..m.plan.kills {
        let r = restart(p, a, k % n)?;
        m.restart_exec.push(r.exec);
        m.restart_reported.push(r.reported);
        m.restart_marks.push(r.marks);
        std::thread::sleep(BETWEEN_KILLS);
    }
    if !m.plan.idle {
        m.daemon_rss = procs::rss_kib(daemon);
        return Ok(());
    }
    // 3. and 4. Idle CPU over a quiet window, then memory.
    progress(label, &format!("idle for {IDLE_WINDOW:?}"));
    std::thread::sleep(SETTLE);
    let helpers = p.helpers();
    let cpu_sum = |pids: &[i32]| -> procs::CpuTime {
        let mut t = procs::CpuTime::default();
        for c in pids.iter().filter_map(|&h| procs::cpu_time(h)) {
            t.ns += c.ns;
            t.ticks += c.ticks;
        }
        t
    };
    let before = procs::cpu_time(daemon).ok_or("the daemon is gone")?;
    let helpers_before = cpu_sum(&helpers);
    let t = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let after = procs::cpu_time(daemon).ok_or("the daemon is gone")?;
    let helpers_after = cpu_sum(&helpers);
    let wall = t.elapsed();
    m.idle_cpu = Some(procs::cpu_percent(before, after, wall));
    m.daemon_rss = procs::rss_kib(daemon);
    if !helpers.is_empty() {
        m.helpers_cpu = Some(procs::cpu_percent(helpers_before, helpers_after, wall).0);
        let rss = helpers.iter().filter_map(|&h| procs::rss_kib(h)).sum();
        let pss = helpers.iter().filter_map(|&h| procs::pss_kib(h)).sum();
        m.helpers_mem = Some((helpers.len(), rss, pss));
    }
    // 5. Stop all until the daemon exited and every agent (and helper) is gone.
    if m.plan.stop {
        progress(label, "stopping all");
        let t = Instant::now();
        p.stop_all()?;
        loop {
            if p.exited().is_some() && a.leftovers().is_empty() {
                m.stop = Some(t.elapsed());
                break;
            }
            if t.elapsed() > STOP_LIMIT {
                return Err(format!(
                    "{} processes still there {STOP_LIMIT:?} after stop all",
                    a.leftovers().len()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// One restart after kill -9, timed from the kill.
struct Restart {
    /// Until the new process exec'd (seen in `/proc`, the supervisor not asked).
    exec: Duration,
    /// Until the supervisor reported the new pid RUNNING.
    reported: Duration,
    /// The supervisor's own steps ([`Peer::restart_marks`]).
    marks: Marks,
}

/// Steps of a restart and when they happened, from the kill.
pub type Marks = Vec<(&'static str, Duration)>;

/// Kills agent `i` with SIGKILL and times its restart.
fn restart(p: &mut dyn Peer, a: &Agents, i: usize) -> Result<Restart, String> {
    let name = &a.names[i];
    let old = *a
        .pids()
        .get(&i)
        .ok_or_else(|| format!("agent {name} has no process to kill"))?;
    let known: HashSet<i32> = procs::pids().into_iter().collect();
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| format!("kill -9 {old} (agent {name}): {e}"))?;
    let new = loop {
        if let Some(pid) = procs::new_agent(a, i, &known) {
            break pid;
        }
        if t.elapsed() > RESTART_LIMIT {
            return Err(format!(
                "agent {name}: no new process {RESTART_LIMIT:?} after kill -9"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let exec = t.elapsed();
    loop {
        let v = p.agent(name)?;
        if v.as_ref().is_some_and(|v| v.running && v.pid == Some(new)) {
            return Ok(Restart {
                exec,
                reported: t.elapsed(),
                marks: p.restart_marks(name, t),
            });
        }
        if t.elapsed() > RESTART_LIMIT {
            return Err(format!(
                "agent {name}: not reported RUNNING as pid {new} {RESTART_LIMIT:?} after \
                 kill -9 (last seen {v:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The agents as plain children of this process: time to all listening, and to all gone
/// after SIGTERM to every one at once (the agents' own exit: what stop-all is bounded by).
fn plain(a: &Agents) -> Measured {
    let mut m = Measured {
        plan: Plan {
            kills: 0,
            idle: false,
            stop: true,
        },
        ..Measured::default()
    };
    let mut children: Vec<Child> = Vec::new();
    let t0 = Instant::now();
    let mut spawn_err = None;
    for i in 0..a.len() {
        let argv = a.argv(i);
        let c = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&a.dir)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match c {
            Ok(c) => children.push(c),
            Err(e) => {
                spawn_err = Some(format!("run {}: {e}", argv[0]));
                break;
            }
        }
    }
    m.error = spawn_err;
    while m.error.is_none() && !a.all_listening() {
        if t0.elapsed() > START_LIMIT {
            m.error = Some(format!("not all ports listening after {START_LIMIT:?}"));
        } else if let Some(st) = children
            .iter_mut()
            .find_map(|c| c.try_wait().ok().flatten())
        {
            m.error = Some(format!("a stand-in agent exited on its own ({st})"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if m.error.is_none() {
        m.all_listening = Some(t0.elapsed());
        std::thread::sleep(SETTLE);
    }
    let t = Instant::now();
    for c in &children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    while t.elapsed() < STOP_LIMIT {
        if children
            .iter_mut()
            .all(|c| c.try_wait().ok().flatten().is_some())
        {
            if m.error.is_none() {
                m.stop = Some(t.elapsed());
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    m
}
