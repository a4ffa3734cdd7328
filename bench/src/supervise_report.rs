//! The printout of `bench supervise`: the Markdown table (one column per supervisor), the
//! setup and notes, where agent-supervisor's restarts go, and the target verdicts.

use std::fmt::Write as _;
use std::time::Duration;

use super::supervise::{
    Column, Measured, IDLE_WINDOW, PLAIN, ROWS, ROW_CPU, ROW_HELPERS_CPU, ROW_HELPERS_RSS,
    ROW_LISTENING, ROW_REPORTED, ROW_RESTART, ROW_RSS, ROW_RUNNING, ROW_STOP, STOP_SLACK,
    STOP_TIMEOUT, SUPERVISORD, TARGET_IDLE_CPU, TARGET_RESTART, TARGET_RSS_MIB,
};
use super::supervise_ours::GROUPS;
use super::supervise_procs::{self as procs, Agents};
use super::table::Stats;

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Median and max of restart samples.
fn median_max(v: &[Duration]) -> Option<(Duration, Duration)> {
    let s = Stats::of(v)?;
    Some((s.median, v.iter().copied().max()?))
}

/// The cell of `row` for a column: its value, `n/a` (the row means nothing for it), `not
/// measured` (skipped), why it has no helper processes, or `-` (failed before).
fn cell(row: &str, m: &Measured) -> String {
    let per_supervisor = !matches!(row, ROW_LISTENING | ROW_STOP);
    if !m.has_states && per_supervisor {
        return "n/a".into();
    }
    let helpers_row = matches!(row, ROW_HELPERS_RSS | ROW_HELPERS_CPU);
    if let (true, Some(why)) = (helpers_row, m.no_helpers) {
        return why.into();
    }
    let value = match row {
        ROW_RUNNING => m.all_running.map(secs),
        ROW_LISTENING => m.all_listening.map(secs),
        ROW_RESTART => median_max(&m.restart_exec)
            .map(|(a, b)| format!("{} / {} ({} kills)", ms(a), ms(b), m.restart_exec.len())),
        ROW_REPORTED => {
            median_max(&m.restart_reported).map(|(a, b)| format!("{} / {}", ms(a), ms(b)))
        }
        ROW_RSS => m.daemon_rss.map(|k| format!("{:.1} MiB", mib(k))),
        ROW_HELPERS_RSS => m.helpers_mem.map(|(n, rss, pss)| {
            format!("{n} processes: {:.1} MiB ({:.1} MiB)", mib(rss), mib(pss))
        }),
        ROW_CPU => m
            .idle_cpu
            .map(|(p, t)| format!("{p:.3} % (ticks: {t:.2} %)")),
        ROW_HELPERS_CPU => m.helpers_cpu.map(|p| format!("{p:.3} %")),
        ROW_STOP => m.stop.map(secs),
        _ => None,
    };
    let planned = match row {
        ROW_RESTART | ROW_REPORTED => m.plan.kills > 0,
        ROW_CPU | ROW_HELPERS_CPU | ROW_HELPERS_RSS => m.plan.idle,
        ROW_STOP => m.plan.stop,
        _ => true,
    };
    match value {
        Some(v) => v,
        None if m.error.is_none() && !planned => "not measured".into(),
        None => "-".into(),
    }
}

/// The whole printout: the table, the reasons of missing columns, notes and targets.
pub(super) fn report(a: &Agents, kills: usize, columns: &[Column], notes: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bench supervise: {} stand-in agents ({} on ports {}-{}), {kills} kill -9 restarts \
         per supervisor, {} s idle window (kernel {}, {} CPUs)\n",
        a.len(),
        a.python.display(),
        a.ports.first().copied().unwrap_or(0),
        a.ports.last().copied().unwrap_or(0),
        IDLE_WINDOW.as_secs(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("measure".to_string())
        .chain(columns.iter().map(|c| c.label.to_string()))
        .collect()];
    for row in ROWS {
        rows.push(
            std::iter::once(row.to_string())
                .chain(columns.iter().map(|c| cell(row, &c.m)))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for (k, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if k == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        }
    }
    out.push('\n');
    for c in columns {
        if let Some(e) = &c.m.error {
            let _ = writeln!(out, "{}: {}", c.label, e.replace('\n', " "));
        }
    }
    let ours = &columns[0].m;
    let _ = writeln!(
        out,
        "setup: agent-supervisor runs {} groups on the host image, restart always (backoff 10ms), tcp \
         health check every 10 s (its checks run during the idle window: fair, supervisord \
         has none); RUNNING = the shim exec'd the agent.",
        GROUPS.min(a.len())
    );
    let _ = writeln!(
        out,
        "setup: supervisord has one [program] per agent, autorestart=true; RUNNING = alive \
         for startsecs. Restarts: kill -9, then /proc is scanned every 5 ms for the new process \
         (neither supervisor is asked until it appeared); the supervisor is then polled every \
         5 ms until it reports the new pid RUNNING. Idle CPU: schedstat (ns) of every thread \
         over the window; ticks = utime+stime at {} Hz.",
        procs::clock_ticks()
    );
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    out.push('\n');
    out.push_str(&breakdown(ours));
    out.push_str(&targets(ours, columns));
    out
}

/// Where agent-supervisor's restarts go: medians of its steps, from the kill on.
fn breakdown(m: &Measured) -> String {
    let Some(first) = m.restart_marks.iter().find(|v| !v.is_empty()) else {
        return String::new();
    };
    let mut out = format!(
        "where agent-supervisor's restart after kill -9 goes (medians of {} kills, from the \
         kill; file events seen through inotify):\n",
        m.restart_marks.len()
    );
    let mut last = Duration::ZERO;
    for (k, (what, _)) in first.iter().enumerate() {
        let v: Vec<Duration> = m
            .restart_marks
            .iter()
            .filter_map(|r| r.get(k).map(|x| x.1))
            .collect();
        if let Some(s) = Stats::of(&v) {
            let _ = writeln!(
                out,
                "  {:>8}  (+{:>7})  {what}",
                ms(s.median),
                ms(s.median.saturating_sub(last))
            );
            last = s.median;
        }
    }
    if let Some((med, _)) = median_max(&m.restart_exec) {
        let _ = writeln!(
            out,
            "  {:>8}  (+{:>7})  the bench saw the new agent in /proc (polled every 5 ms)",
            ms(med),
            ms(med.saturating_sub(last))
        );
    }
    out.push('\n');
    out
}

/// Target verdicts for agent-supervisor.
fn targets(ours: &Measured, columns: &[Column]) -> String {
    let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
    let peer = |label: &str| columns.iter().find(|c| c.label == label).map(|c| &c.m);
    let mut out = String::from("targets (agent-supervisor):\n");
    let restart = median_max(&ours.restart_exec);
    let sv_restart = peer(SUPERVISORD)
        .and_then(|m| median_max(&m.restart_exec))
        .map(|(a, _)| format!(" (supervisord: {})", ms(a)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  restart after kill -9 <= {} median: {}",
        ms(TARGET_RESTART),
        match restart {
            Some((med, max)) => format!(
                "{} (max {}){sv_restart}: {}",
                ms(med),
                ms(max),
                verdict(med <= TARGET_RESTART)
            ),
            None => "not measured".into(),
        }
    );
    let sv_rss = peer(SUPERVISORD)
        .and_then(|m| m.daemon_rss)
        .map(|k| format!(" (supervisord: {:.1} MiB)", mib(k)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  daemon RSS <= {TARGET_RSS_MIB} MiB: {}",
        match ours.daemon_rss {
            Some(k) => format!(
                "{:.1} MiB{sv_rss}: {}",
                mib(k),
                verdict(mib(k) <= TARGET_RSS_MIB)
            ),
            None => "not measured".into(),
        }
    );
    let sv_cpu = peer(SUPERVISORD)
        .and_then(|m| m.idle_cpu)
        .map(|(p, _)| format!(" (supervisord: {p:.3} %)"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  idle CPU <= {TARGET_IDLE_CPU} %: {}",
        match ours.idle_cpu {
            Some((p, _)) => format!("{p:.3} %{sv_cpu}: {}", verdict(p <= TARGET_IDLE_CPU)),
            None => "not measured".into(),
        }
    );
    let own_exit = peer(PLAIN).and_then(|m| m.stop);
    let sv_stop = peer(SUPERVISORD)
        .and_then(|m| m.stop)
        .map(|d| format!(" (supervisord: {})", secs(d)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  stop-all bounded by the agents' own exit (+{}) and stop_timeout ({}): {}",
        secs(STOP_SLACK),
        secs(STOP_TIMEOUT),
        match (ours.stop, own_exit) {
            (Some(s), Some(own)) => format!(
                "{} vs {} for the agents SIGTERMed at once without a supervisor{sv_stop}: {}",
                secs(s),
                secs(own),
                verdict(s <= (own + STOP_SLACK).min(STOP_TIMEOUT))
            ),
            (Some(s), None) => format!(
                "{} (the agents' own exit was not measured){sv_stop}: {}",
                secs(s),
                verdict(s <= STOP_TIMEOUT)
            ),
            _ => "not measured".into(),
        }
    );
    out
}
