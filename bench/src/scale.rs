//! `agent-bench scale`: for each size N, a system file with N idle agents on one host (in
//! groups of 7, the seed's shape), then: the wall time of `agent-supervisor check FILE`
//! (load, check, plan), the daemon started with them until all are RUNNING, its RSS (now
//! and peak), the time of `supervisorctl status`, and the time to stop all. supervisord
//! with the same N programs is measured in the same run, after ours, size by size. Prints
//! a Markdown table and whether the targets (check < 2 s and daemon RSS < 64 MiB at the
//! largest size) are met. Not a timed test: the numbers are printed, never asserted.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::scale_peers::{Daemon, Ours, Supervisord, Workdir};
use super::supervise::machine_busy;
use super::supervise_procs as procs;
use super::supervise_supervisord as sv;
use super::table::{measure, ms, Stats};

pub const OURS: &str = "agent-supervisor";
pub const SUPERVISORD: &str = "supervisord (startsecs=0)";
/// The targets, at the largest size (2,000 agents).
pub const TARGET_CHECK: Duration = Duration::from_secs(2);
pub const TARGET_RSS_MIB: f64 = 64.0;
/// Timed runs of `check` and of the status command per size.
const RUNS: usize = 5;
const START_LIMIT: Duration = Duration::from_secs(600);
const STOP_LIMIT: Duration = Duration::from_secs(300);
/// Calm after all RUNNING before the RSS is read.
const SETTLE: Duration = Duration::from_secs(2);

/// One daemon at one size.
#[derive(Debug, Default)]
struct Cell {
    check: Option<Result<Stats, String>>,
    /// VmRSS after the settle, VmHWM: KiB.
    rss: Option<(u64, u64)>,
    all_running: Option<Duration>,
    status: Option<Result<Stats, String>>,
    stop: Option<Duration>,
    error: Option<String>,
}

/// Runs the benchmark for each of `sizes` with `per_group` agents per group.
pub fn run(sizes: &[usize], per_group: usize) -> Result<String, String> {
    if sizes.is_empty() || sizes.contains(&0) {
        return Err("--sizes must list agent counts of at least 1".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "must run as root: agent-supervisor's groups need namespaces and cgroups \
                    (sudo agent-bench scale)"
                .into(),
        );
    }
    let w = Workdir::new("scale")?;
    let mut notes = Vec::new();
    if cfg!(debug_assertions) {
        notes.push("this is a debug build: build with --release for meaningful numbers".into());
    }
    let busy_before = machine_busy(Duration::from_secs(1));
    let inst = sv::installed();
    match &inst {
        Ok(i) => notes.push(format!(
            "supervisord {} ({}), started with `startsecs=0`, polled over XML-RPC; its status \
             is `supervisorctl -c CONF status` (a Python process)",
            i.version,
            i.supervisord.display()
        )),
        Err(why) => notes.push(format!("supervisord: {why}")),
    }
    let mut rows: Vec<(usize, &str, Cell)> = Vec::new();
    for &n in sizes {
        progress(n, OURS, "check, start, status, stop");
        let cell = match Ours::new(&w, n, per_group) {
            Ok(mut d) => {
                let check = measure(1, RUNS, || command_ok(&mut d.check_command()));
                let mut c = measure_daemon(&mut d, &w, n, &mut notes);
                c.check = Some(check);
                c
            }
            Err(e) => failed(e),
        };
        rows.push((n, OURS, cell));
        let cell = match &inst {
            Err(why) => failed(why.clone()),
            Ok(i) => {
                progress(n, SUPERVISORD, "start, status, stop");
                match Supervisord::new(&w, i, n) {
                    Ok(mut d) => measure_daemon(&mut d, &w, n, &mut notes),
                    Err(e) => failed(e),
                }
            }
        };
        rows.push((n, SUPERVISORD, cell));
    }
    let busy_after = machine_busy(Duration::from_secs(1));
    if busy_before.max(busy_after) > 15.0 {
        notes.push(format!(
            "the machine was busy without the benchmark ({busy_before:.0} % of its CPUs in the \
             second before, {busy_after:.0} % in the second after): the times are noisy"
        ));
    }
    Ok(report(&rows, per_group, &notes))
}

fn progress(n: usize, who: &str, what: &str) {
    eprintln!("bench scale: {n} agents: {who}: {what}");
}

fn failed(why: String) -> Cell {
    Cell {
        error: Some(why),
        ..Cell::default()
    }
}

/// Runs `cmd` to its end; an error says how it failed.
fn command_ok(cmd: &mut std::process::Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    Err(format!(
        "{cmd:?} failed ({}): {}",
        out.status,
        lines[lines.len().saturating_sub(4)..].join(" / ")
    ))
}

/// Start to all RUNNING, RSS, the status command, stop all; then the teardown.
fn measure_daemon(d: &mut dyn Daemon, w: &Workdir, n: usize, notes: &mut Vec<String>) -> Cell {
    let mut c = Cell::default();
    if let Err(e) = daemon_steps(d, w, n, &mut c) {
        c.error = Some(e);
    }
    notes.extend(d.teardown(w));
    c
}

fn daemon_steps(d: &mut dyn Daemon, w: &Workdir, n: usize, c: &mut Cell) -> Result<(), String> {
    let t0 = Instant::now();
    let pid = d.start()?;
    loop {
        let (running, total) = d.running()?;
        if total == n && running == n {
            c.all_running = Some(t0.elapsed());
            break;
        }
        if let Some(why) = d.exited() {
            return Err(why);
        }
        if t0.elapsed() > START_LIMIT {
            return Err(format!(
                "only {running} of {n} agents RUNNING after {START_LIMIT:?}"
            ));
        }
        // Polled less often when large: each poll is an answer of N agents.
        std::thread::sleep(Duration::from_millis(20 + n as u64 / 20));
    }
    std::thread::sleep(SETTLE);
    let hwm = hwm_kib(pid);
    c.rss = procs::rss_kib(pid).zip(hwm);
    c.status = Some(measure(1, RUNS, || command_ok(&mut d.status_command())));
    let t = Instant::now();
    d.stop_all()?;
    loop {
        if d.exited().is_some() && w.leftovers().is_empty() {
            c.stop = Some(t.elapsed());
            return Ok(());
        }
        if t.elapsed() > STOP_LIMIT {
            return Err(format!(
                "{} processes still there {STOP_LIMIT:?} after stop all",
                w.leftovers().len()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peak resident memory (`VmHWM`) of `pid`, KiB.
fn hwm_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Column heads of the table (the test checks them).
pub const HEADS: &[&str] = &[
    "agents",
    "daemon",
    "check (load + check + plan), median",
    "daemon RSS (peak)",
    "time to all RUNNING",
    "status command, median",
    "time to stop all",
];

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn stats_cell(s: &Option<Result<Stats, String>>) -> String {
    match s {
        None => "n/a".into(),
        Some(Ok(s)) => format!("{} ms", ms(s.median)),
        Some(Err(e)) => format!("failed: {}", e.replace('|', "/")),
    }
}

fn report(rows: &[(usize, &str, Cell)], per_group: usize, notes: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "N idle agents (`sleep infinity`, a copy in the benchmark's directory) on one host, \
         agent-supervisor's in groups of {per_group} on the `host` image, restart always; \
         supervisord's as N programs. {RUNS} timed runs of each command per size.\n"
    );
    let _ = writeln!(out, "| {} |", HEADS.join(" | "));
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|");
    for (n, who, c) in rows {
        let rss = c
            .rss
            .map(|(r, h)| format!("{:.1} MiB ({:.1})", mib(r), mib(h)))
            .unwrap_or_else(|| "-".into());
        let mut line = format!(
            "| {n} | {who} | {} | {rss} | {} | {} | {} |",
            if *who == OURS {
                stats_cell(&c.check)
            } else {
                "n/a".into()
            },
            c.all_running.map(secs).unwrap_or_else(|| "-".into()),
            stats_cell(&c.status),
            c.stop.map(secs).unwrap_or_else(|| "-".into()),
        );
        if let Some(e) = &c.error {
            line.pop();
            let _ = write!(line, " error: {} |", e.replace('|', "/").replace('\n', " "));
        }
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
    targets(&mut out, rows);
    for n in notes {
        let _ = writeln!(out, "- {n}");
    }
    out
}

/// The targets at the largest size, and the daemon's memory per added agent.
fn targets(out: &mut String, rows: &[(usize, &str, Cell)]) {
    let ours: Vec<(usize, &Cell)> = rows
        .iter()
        .filter(|r| r.1 == OURS)
        .map(|r| (r.0, &r.2))
        .collect();
    let Some(&(n, big)) = ours.iter().max_by_key(|r| r.0) else {
        return;
    };
    let check = match &big.check {
        Some(Ok(s)) => format!("{} ms: {}", ms(s.median), met(s.median <= TARGET_CHECK)),
        _ => "not measured".into(),
    };
    let rss = match big.rss {
        Some((r, h)) => format!(
            "{:.1} MiB (peak {:.1}): {}",
            mib(r),
            mib(h),
            met(mib(h.max(r)) < TARGET_RSS_MIB)
        ),
        None => "not measured".into(),
    };
    let _ = writeln!(
        out,
        "Targets at {n} agents: check < {} s: {check}; daemon RSS < {TARGET_RSS_MIB:.0} MiB: \
         {rss}.",
        TARGET_CHECK.as_secs()
    );
    if let (Some(&(n0, small)), true) = (ours.iter().min_by_key(|r| r.0), ours.len() > 1) {
        if let (Some((r0, _)), Some((r1, _))) = (small.rss, big.rss) {
            if n > n0 {
                let _ = writeln!(
                    out,
                    "agent-supervisor's daemon RSS grows by {:.1} KiB per agent from {n0} to \
                     {n} agents.",
                    (r1 as f64 - r0 as f64) / (n - n0) as f64
                );
            }
        }
    }
    out.push('\n');
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}
