//! `agent-bench observe`: the observability of a two-host system, in one run. Two "hosts"
//! (network namespaces joined by a veth, the bridge between them, see [`super::observe_lab`])
//! run 77 stand-in agents between them; once every agent is RUNNING and healthy and the
//! primary's `GET /health_summary` reports both hosts up (the daemons poll each other
//! through the bridge every 2 s), it measures, from inside h1's namespace: both daemons'
//! idle CPU over 10 s (the aggregation running, nothing scraping), then N sequential
//! scrapes each of the primary's `/metrics` and `/health_summary`, interleaved with the same
//! number of a static file of `/metrics`' size served by `python3 -m http.server` in h1's
//! namespace (the floor of an HTTP round trip), then both daemons' RSS. Prints a Markdown
//! table and whether the targets are met: scrape p99 <= 20 ms, daemon RSS <= 15 MiB, idle
//! CPU <= 0.2 % of one core.
//!
//! The client is in this process (a thread that entered h1's namespace with `setns`), one
//! new connection per request: no process start is in the timings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bridge::{catch_signals, interrupted};
use super::observe_http::{get, in_netns, Reply};
use super::observe_lab::{Lab, Tools, HTTP_PORT};
use super::observe_report::render;
use super::supervise::machine_busy;
use super::supervise_procs as procs;

/// The targets.
pub const TARGET_P99: Duration = Duration::from_millis(20);
pub const TARGET_RSS_MIB: f64 = 15.0;
pub const TARGET_IDLE_CPU: f64 = 0.2;
/// Untimed rounds of scrapes before the timed ones.
pub const WARMUP: usize = 20;
/// How long the system may take until every agent is healthy on both hosts.
const READY_LIMIT: Duration = Duration::from_secs(180);
/// The calm between the last poll of the wait and the idle window.
const SETTLE: Duration = Duration::from_secs(2);
/// The timeout of one request.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The static file server's port in h1's namespace.
const STATIC_PORT: u16 = 9100;
const STATIC_FILE: &str = "metrics.txt";

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(
        "must run as root: it creates network namespaces, cgroups and the bridge (run it as \
         root, e.g. sudo agent-bench observe)"
    )]
    NotRoot,
    #[error("--scrapes must be at least 1")]
    NoScrapes,
    #[error("--agents must be at least 2 (one per host)")]
    NoAgents,
    #[error("--idle must be at least 1 second")]
    NoIdle,
    #[error(
        "python3 not found in /usr/local/bin, /usr/bin or /bin: the stand-in agents and the \
         static file server need the system's interpreter (apt-get install python3)"
    )]
    NoPython,
    #[error("{0} is not installed: apt-get install {1}")]
    Missing(&'static str, &'static str),
    #[error("{0}")]
    NoBinary(String),
    #[error("cannot set up the two hosts: {0}")]
    Setup(String),
    #[error("the system did not come up: {0}")]
    NotReady(String),
    #[error("interrupted (everything it set up is removed)")]
    Interrupted,
}

/// Median, p90, p99 and maximum of a set of latencies (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub runs: usize,
    pub median: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The nearest-rank `pct` percentile of sorted `s`: the smallest sample with at least `pct`
/// percent of the samples at or below it; `None` when there are none.
pub fn percentile(s: &[Duration], pct: usize) -> Option<Duration> {
    let rank = (s.len() * pct).div_ceil(100).clamp(1, s.len().max(1));
    s.get(rank - 1).copied()
}

impl Latency {
    /// The latencies of `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Latency> {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let n = s.len();
        let max = *s.last()?;
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2
        };
        Some(Latency {
            runs: n,
            median,
            p90: percentile(&s, 90)?,
            p99: percentile(&s, 99)?,
            max,
        })
    }
}

/// One endpoint's scrapes: what, the body size of its last answer, the latencies (or why
/// there are none), and how many answers were not `200`.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub label: String,
    pub bytes: usize,
    pub result: Result<Latency, String>,
    pub not_ok: usize,
}

/// CPU time used over a window: `utime + stime` of `/proc/PID/stat`, in clock ticks. Unlike
/// a sum over `/proc/PID/task/*`, it keeps the time of threads that ended in the window
/// (the runtime's blocking threads come and go); its resolution is one tick per window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleCpu {
    pub ticks: u64,
    /// Clock ticks per second.
    pub hz: u64,
    pub wall: Duration,
}

impl IdleCpu {
    /// Percent of one core.
    pub fn percent(&self) -> f64 {
        self.ticks as f64 * self.resolution()
    }

    /// What one tick is in percent of one core over the window.
    pub fn resolution(&self) -> f64 {
        100.0 / self.hz.max(1) as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// A host's daemon: its RSS and peak (KiB) after the scrapes, its RSS before them, its idle
/// CPU.
#[derive(Debug, Clone, Default)]
pub struct DaemonNumbers {
    pub host: String,
    pub rss_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    pub rss_before_kib: Option<u64>,
    pub idle_cpu: Option<IdleCpu>,
}

/// Everything the report prints.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub agents: usize,
    pub split: [(usize, usize); 2],
    pub scrapes: usize,
    pub idle: Duration,
    pub ready: Option<Duration>,
    pub rows: Vec<Scrape>,
    pub daemons: Vec<DaemonNumbers>,
    /// The bridge processes' idle CPU, when the bridges run as processes.
    pub bridge_cpu: Option<IdleCpu>,
    pub metrics_series: usize,
    pub notes: Vec<String>,
}

fn progress(what: &str) {
    eprintln!("bench observe: {what}");
}

/// A binary of this workspace next to this executable.
fn sibling(name: &str, package: &str) -> Result<PathBuf, ObserveError> {
    let me = std::env::current_exe()
        .map_err(|e| ObserveError::NoBinary(format!("cannot find this executable: {e}")))?;
    let exe = me.with_file_name(name);
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(ObserveError::NoBinary(format!(
            "no {name} next to {} (build it: cargo build -p {package})",
            me.display()
        )))
    }
}

/// Runs the benchmark: `agents` stand-in agents, `scrapes` timed scrapes per endpoint, an
/// idle window of `idle` seconds; returns the report.
pub fn run(agents: usize, scrapes: usize, idle: u64) -> Result<String, ObserveError> {
    if scrapes == 0 {
        return Err(ObserveError::NoScrapes);
    }
    if agents < 2 {
        return Err(ObserveError::NoAgents);
    }
    if idle == 0 {
        return Err(ObserveError::NoIdle);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(ObserveError::NotRoot);
    }
    let need = |name: &'static str, pkg: &'static str| {
        procs::which(name).ok_or(ObserveError::Missing(name, pkg))
    };
    let tools = Tools {
        ip: need("ip", "iproute2")?,
        nsenter: need("nsenter", "util-linux")?,
        daemon: sibling("agent-supervisor", "agent-supervisor")?,
        ctl: sibling("supervisorctl", "agent-supervisor")?,
    };
    let python = procs::system_python().ok_or(ObserveError::NoPython)?;
    let mut r = Report {
        agents,
        scrapes,
        idle: Duration::from_secs(idle),
        ..Report::default()
    };
    if cfg!(debug_assertions) {
        r.notes
            .push("this is a debug build: build with --release for meaningful numbers".into());
    }
    if let Err(e) = catch_signals() {
        r.notes
            .push(format!("Ctrl-C will leave the namespaces behind: {e}"));
    }
    let busy_before = machine_busy(Duration::from_secs(1));
    progress("setting up the namespaces, keys and the system file");
    let mut lab = Lab::new(tools, &python, agents).map_err(ObserveError::Setup)?;
    for (i, h) in lab.hosts.iter().enumerate() {
        let n = h.groups.iter().map(|(_, v)| v.len()).sum();
        r.split[i] = (n, h.groups.len());
    }
    let result = measure(&mut lab, &python, &mut r);
    let notes = lab.teardown();
    r.notes.extend(notes);
    drop(lab);
    result?;
    let busy_after = machine_busy(Duration::from_secs(1));
    if busy_before.max(busy_after) > 15.0 {
        r.notes.push(format!(
            "the machine was busy without the benchmark ({busy_before:.0} % of its CPUs in \
             the second before, {busy_after:.0} % in the second after): the numbers are noisy"
        ));
    }
    Ok(render(&r))
}

fn check_interrupted() -> Result<(), ObserveError> {
    if interrupted() {
        Err(ObserveError::Interrupted)
    } else {
        Ok(())
    }
}

/// The daemon's address inside each host's namespace.
fn daemon_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], HTTP_PORT))
}

/// The steps, in order; the caller tears the lab down whatever happens.
fn measure(lab: &mut Lab, python: &std::path::Path, r: &mut Report) -> Result<(), ObserveError> {
    progress("starting h1's and h2's daemons");
    let t0 = Instant::now();
    for i in 0..2 {
        lab.start(i).map_err(ObserveError::Setup)?;
    }
    progress(&format!(
        "waiting until all {} agents are healthy in h1's /health_summary",
        r.agents
    ));
    r.ready = Some(wait_ready(lab, r.agents, t0)?);
    check_interrupted()?;

    // Idle: nothing scrapes; the daemons poll each other and run the health checks.
    std::thread::sleep(SETTLE);
    let pids: Vec<Option<i32>> = lab.hosts.iter().map(|h| h.daemon_pid()).collect();
    let bridges: Vec<i32> = lab.hosts.iter().filter_map(|h| h.bridge_pid()).collect();
    progress(&format!("idle for {:?}", r.idle));
    let ticks = |pids: &[i32]| -> Option<u64> {
        pids.iter()
            .map(|p| procs::cpu_time(*p).map(|c| c.ticks))
            .sum()
    };
    let one = |p: Option<i32>| ticks(&p.into_iter().collect::<Vec<_>>());
    let before: Vec<Option<u64>> = pids.iter().map(|p| one(*p)).collect();
    let bridge_before = ticks(&bridges);
    let t = Instant::now();
    std::thread::sleep(r.idle);
    let wall = t.elapsed();
    let hz = procs::clock_ticks();
    let idle = |b: Option<u64>, a: Option<u64>| {
        b.zip(a).map(|(b, a)| IdleCpu {
            ticks: a.saturating_sub(b),
            hz,
            wall,
        })
    };
    for (i, h) in lab.hosts.iter().enumerate() {
        r.daemons.push(DaemonNumbers {
            host: h.name.clone(),
            idle_cpu: idle(before[i], one(pids[i])),
            rss_before_kib: pids[i].and_then(procs::rss_kib),
            ..DaemonNumbers::default()
        });
    }
    if !bridges.is_empty() {
        r.bridge_cpu = idle(bridge_before, ticks(&bridges));
    }
    check_interrupted()?;

    // The scrapes.
    let ns = lab.hosts[0].netns.clone();
    let metrics = in_netns(&ns, || get(daemon_addr(), "/metrics", TIMEOUT))
        .map_err(ObserveError::NotReady)?;
    if metrics.status != 200 {
        return Err(ObserveError::NotReady(format!(
            "GET /metrics of h1: HTTP {}: {}",
            metrics.status,
            metrics.text().chars().take(200).collect::<String>()
        )));
    }
    let text = metrics.text();
    r.metrics_series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let h2 = format!("host=\"{}\"", lab.hosts[1].name);
    if !text.contains(&h2) {
        r.notes.push(format!(
            "h1's /metrics has no series with {h2}: the fleet exposition is missing"
        ));
    }
    let dir = lab.dir.join("static");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(STATIC_FILE), &metrics.body))
        .map_err(|e| ObserveError::Setup(format!("cannot write {}: {e}", dir.display())))?;
    let mut server = lab.in_host(0, python);
    server
        .args([
            "-m",
            "http.server",
            &STATIC_PORT.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(&dir);
    let log = lab.dir.join("static.log");
    lab.spawn_helper("python3 -m http.server in h1", server, &log)
        .map_err(ObserveError::Setup)?;
    progress(&format!(
        "{} rounds of scrapes ({WARMUP} untimed), each /metrics, /health_summary, the static file",
        r.scrapes
    ));
    let n = r.scrapes;
    r.rows = in_netns(&ns, move || Ok(scrape_all(n)))
        .map_err(|e| ObserveError::NotReady(format!("{e} (see {})", log.display())))?;
    for (i, d) in r.daemons.iter_mut().enumerate() {
        d.rss_kib = pids[i].and_then(procs::rss_kib);
        d.hwm_kib = pids[i].and_then(|p| kib_status(p, "VmHWM"));
    }
    Ok(())
}

/// A `kB` field of `/proc/PID/status`.
fn kib_status(pid: i32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Why h1's `/health_summary` does not (yet) show every host up and all `agents` agents
/// RUNNING and healthy; `Ok` when it does.
pub fn summary_ready(v: &Value, agents: usize) -> Result<(), String> {
    let hosts = v["hosts"].as_array().ok_or("no hosts in the summary")?;
    let down: Vec<String> = hosts
        .iter()
        .filter(|h| h["up"] != true)
        .map(|h| {
            let err = h["error"].as_str().unwrap_or("no answer yet");
            format!("{} down ({err})", h["host"].as_str().unwrap_or("?"))
        })
        .collect();
    if hosts.len() < 2 || !down.is_empty() {
        return Err(format!("{} hosts; {}", hosts.len(), down.join(", ")));
    }
    let all: Vec<&Value> = hosts
        .iter()
        .filter_map(|h| h["groups"].as_array())
        .flatten()
        .filter_map(|g| g["agents"].as_array())
        .flatten()
        .collect();
    let healthy = all
        .iter()
        .filter(|a| a["state"] == "RUNNING" && a["health"] == "healthy")
        .count();
    if all.len() != agents || healthy != agents {
        return Err(format!(
            "{healthy} of {agents} agents RUNNING and healthy ({} listed)",
            all.len()
        ));
    }
    if v["status"] != "ok" {
        return Err(format!("status {}", v["status"]));
    }
    Ok(())
}

/// Polls h1's `/health_summary` every 250 ms until [`summary_ready`]; returns the time since
/// `t0`.
fn wait_ready(lab: &mut Lab, agents: usize, t0: Instant) -> Result<Duration, ObserveError> {
    let ns = lab.hosts[0].netns.clone();
    loop {
        check_interrupted()?;
        for i in 0..2 {
            if let Some(e) = lab.exited(i) {
                return Err(ObserveError::NotReady(e));
            }
        }
        let answer = in_netns(&ns, || get(daemon_addr(), "/health_summary", TIMEOUT));
        let why = match answer.and_then(|a: Reply| {
            serde_json::from_slice::<Value>(&a.body)
                .map_err(|e| format!("HTTP {}: not JSON: {e}", a.status))
        }) {
            Ok(v) => match summary_ready(&v, agents) {
                Ok(()) => return Ok(t0.elapsed()),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if t0.elapsed() > READY_LIMIT {
            return Err(ObserveError::NotReady(format!(
                "after {READY_LIMIT:?}, h1's /health_summary: {why}; {}; {}",
                lab.hosts[0].log_tail(),
                lab.hosts[1].log_tail()
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// In h1's namespace: waits for the static server, then [`WARMUP`] + `n` rounds, each one
/// GET of every endpoint in turn (a load that comes and goes weighs on all alike).
fn scrape_all(n: usize) -> Vec<Scrape> {
    let static_addr = SocketAddr::from(([127, 0, 0, 1], STATIC_PORT));
    let static_path = format!("/{STATIC_FILE}");
    let targets: [(String, SocketAddr, &str, bool); 3] = [
        (
            "GET /metrics of h1 (the primary)".into(),
            daemon_addr(),
            "/metrics",
            false,
        ),
        (
            "GET /health_summary of h1".into(),
            daemon_addr(),
            "/health_summary",
            false,
        ),
        (
            "peer: python3 -m http.server, a static file of /metrics' size".into(),
            static_addr,
            &static_path,
            true,
        ),
    ];
    let until = Instant::now() + Duration::from_secs(10);
    let mut up = get(static_addr, &static_path, TIMEOUT);
    while up.is_err() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        up = get(static_addr, &static_path, TIMEOUT);
    }
    let mut rows: Vec<(Scrape, Vec<Duration>)> = targets
        .iter()
        .map(|(label, ..)| {
            let s = Scrape {
                label: label.clone(),
                bytes: 0,
                result: Err("not measured".into()),
                not_ok: 0,
            };
            (s, Vec::with_capacity(n))
        })
        .collect();
    let mut failed = [false, false, up.is_err()];
    if let Err(e) = up {
        rows[2].0.result = Err(format!("the static file server did not answer: {e}"));
    }
    for round in 0..WARMUP + n {
        for (k, (_, addr, path, strict)) in targets.iter().enumerate() {
            if failed[k] {
                continue;
            }
            let t = Instant::now();
            let answer = get(*addr, path, TIMEOUT);
            let took = t.elapsed();
            let (row, samples) = &mut rows[k];
            match answer {
                Ok(a) if a.status != 200 && *strict => {
                    row.result = Err(format!("GET {path}: HTTP {}", a.status));
                    failed[k] = true;
                }
                Ok(a) => {
                    row.bytes = a.body.len();
                    if round >= WARMUP {
                        samples.push(took);
                        row.not_ok += usize::from(a.status != 200);
                    }
                }
                Err(e) => {
                    row.result = Err(e);
                    failed[k] = true;
                }
            }
        }
    }
    rows.into_iter()
        .zip(failed)
        .map(|((mut row, samples), failed)| {
            if !failed {
                row.result = Latency::of(&samples).ok_or_else(|| "no scrape was timed".into());
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(us: u64) -> Duration {
        Duration::from_micros(us)
    }

    #[test]
    fn nearest_rank_percentiles_median_and_max() {
        let hundred: Vec<Duration> = (1..=100).rev().map(d).collect();
        let l = Latency::of(&hundred).expect("samples");
        assert_eq!((l.runs, l.p90, l.p99, l.max), (100, d(90), d(99), d(100)));
        assert_eq!(l.median, Duration::from_nanos(50_500));
        let one = Latency::of(&[d(7)]).expect("one sample");
        assert_eq!((one.median, one.p99, one.max), (d(7), d(7), d(7)));
        let five: Vec<Duration> = [5, 1, 4, 2, 3].map(d).to_vec();
        let l = Latency::of(&five).expect("five");
        assert_eq!((l.median, l.p90, l.p99), (d(3), d(5), d(5)));
        assert!(Latency::of(&[]).is_none());
        assert_eq!(percentile(&[], 99), None);
    }

    #[test]
    fn a_summary_is_ready_when_both_hosts_are_up_and_every_agent_healthy() {
        let agent = |state: &str, health: &str| serde_json::json!({"agent": "a", "state": state, "health": health});
        let summary = |up2: bool, a2: Value| {
            serde_json::json!({
                "status": if up2 { "ok" } else { "down" },
                "hosts": [
                    {"host": "h1", "up": true, "groups": [{"agents": [agent("RUNNING", "healthy")]}]},
                    {"host": "h2", "up": up2, "error": if up2 { Value::Null } else { "refused".into() },
                     "groups": [{"agents": [a2]}]},
                ]
            })
        };
        assert_eq!(
            summary_ready(&summary(true, agent("RUNNING", "healthy")), 2),
            Ok(())
        );
        let e = summary_ready(&summary(false, agent("RUNNING", "healthy")), 2).expect_err("down");
        assert!(e.contains("h2 down (refused)"), "{e}");
        let e = summary_ready(&summary(true, agent("RUNNING", "unknown")), 2).expect_err("unknown");
        assert!(e.starts_with("1 of 2 agents"), "{e}");
        let e = summary_ready(&summary(true, agent("RUNNING", "healthy")), 3).expect_err("3");
        assert!(e.contains("(2 listed)"), "{e}");
    }
}
