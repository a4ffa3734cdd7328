//! What `agent-bench soak` found: the faults and their recoveries, the violations, the
//! daemons' RSS and fd samples (and their slopes), what was left behind after the daemons
//! shut down, and the Markdown table of it all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent_supervisor::cgroup::{Cgroup, Layout};

use super::bridge_lab::output;
use super::observe::Latency;
use super::observe_lab::Lab;
use super::soak_faults::{census, Kind};
use super::supervise_procs as procs;

/// One kind of fault's outcomes.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub injected: usize,
    /// The recovery time of each fault recovered from.
    pub recovered: Vec<Duration>,
    /// The faults not recovered from, or recovered from wrongly.
    pub failures: Vec<String>,
    /// Faults not injected, and why.
    pub skipped: Vec<String>,
}

/// One sample of a daemon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub host: usize,
    pub pid: i32,
    /// Seconds since the daemons started.
    pub at: f64,
    pub rss_kib: u64,
    pub fds: usize,
    /// What the daemon says of itself (its `/v1/snapshot`): resident anonymous memory and
    /// glibc's heap in use, KiB; `None` when it did not answer.
    pub anon_kib: Option<u64>,
    pub heap_kib: Option<u64>,
}

/// Everything the table shows.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    pub minutes: u64,
    pub agents: usize,
    pub ready: Option<Duration>,
    pub duration: Duration,
    pub rounds: usize,
    pub faults: BTreeMap<Kind, Outcome>,
    /// Agents that did not run exactly once outside a fault.
    pub lost: Vec<String>,
    /// Agents seen with two processes in two censuses in a row.
    pub doubled: BTreeMap<String, String>,
    /// `restarts_total` mismatches.
    pub restarts: Vec<String>,
    /// What each partition showed (the hosts' views during it, the recovery after it).
    pub partitions: Vec<String>,
    pub summary: Vec<Duration>,
    pub summary_hangs: Vec<String>,
    pub summary_errors: Vec<String>,
    /// Summaries refused while h1's daemon was down on purpose.
    pub summary_refused_down: usize,
    pub samples: Vec<Sample>,
    /// What was left after the daemons shut down.
    pub left: Vec<String>,
    /// Errors that ended the soak early.
    pub violations: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(seed: u64, minutes: u64, agents: usize) -> Report {
        Report {
            seed,
            minutes,
            agents,
            ..Report::default()
        }
    }

    pub fn outcome(&mut self, kind: Kind) -> &mut Outcome {
        self.faults.entry(kind).or_default()
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        !self.violations.is_empty()
            || !self.lost.is_empty()
            || !self.doubled.is_empty()
            || !self.restarts.is_empty()
            || !self.summary_hangs.is_empty()
            || !self.summary_errors.is_empty()
            || !self.left.is_empty()
            || self.faults.values().any(|o| !o.failures.is_empty())
    }
}

/// The least-squares slope of `(x, y)` points, per minute of `x` seconds.
pub fn slope_per_minute(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx * 60.0)
}

/// What the lab's namespaces had before the daemons started: their links and nftables
/// rule sets.
pub struct Baseline {
    links: Vec<Vec<String>>,
    rules: Vec<String>,
}

fn links(lab: &Lab, i: usize) -> Vec<String> {
    let mut c = Command::new(&lab.tools.ip);
    c.args(["-n", &lab.hosts[i].netns, "-o", "link", "show"]);
    let text = output(c, None).unwrap_or_default();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect();
    names.sort();
    names
}

fn ruleset(lab: &Lab, i: usize, nft: &Path) -> String {
    let mut c = lab.in_host(i, nft);
    c.args(["list", "ruleset"]);
    output(c, None).unwrap_or_else(|e| format!("cannot list: {e}"))
}

impl Baseline {
    pub fn take(lab: &Lab, nft: &Path) -> Baseline {
        Baseline {
            links: (0..2).map(|i| links(lab, i)).collect(),
            rules: (0..2).map(|i| ruleset(lab, i, nft)).collect(),
        }
    }
}

/// What is left once both daemons have shut down: agent or other processes of the lab,
/// cgroups under the hosts' roots, mounts under the lab's directory, links and nftables
/// rules the namespaces did not have before.
pub fn left_behind(lab: &Lab, before: &Baseline, nft: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let dir = lab.dir.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let agents: Vec<String> = census(&lab.tag())
        .into_iter()
        .map(|(n, p)| format!("{n} {p:?}"))
        .collect();
    if !agents.is_empty() {
        left.push(format!("agent processes: {}", agents.join(", ")));
    }
    let others: Vec<String> = procs::pids()
        .into_iter()
        .filter(|&p| p != me)
        .filter_map(|p| Some((p, procs::cmdline(p)?)))
        .filter(|(_, a)| a.iter().any(|x| x.contains(&dir)))
        .map(|(p, a)| format!("{p} `{}`", a.join(" ")))
        .collect();
    if !others.is_empty() {
        left.push(format!("processes: {}", others.join(", ")));
    }
    for h in &lab.hosts {
        if let Ok(root) = Layout::detect().and_then(|l| Cgroup::existing_root(&l, &h.slice)) {
            let children = root.children();
            if !children.is_empty() {
                left.push(format!(
                    "cgroups under {}: {}",
                    h.slice,
                    children.join(", ")
                ));
            }
        }
    }
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&dir))
        .map(|l| l.split(' ').nth(4).unwrap_or(l).to_string())
        .collect();
    if !mounts.is_empty() {
        left.push(format!("mounts: {}", mounts.join(", ")));
    }
    for (i, h) in lab.hosts.iter().enumerate() {
        let now = links(lab, i);
        let new: Vec<&String> = now
            .iter()
            .filter(|l| !before.links[i].contains(l))
            .collect();
        if !new.is_empty() {
            let new: Vec<&str> = new.iter().map(|s| s.as_str()).collect();
            left.push(format!("links in {}: {}", h.name, new.join(", ")));
        }
        let rules = ruleset(lab, i, nft);
        if rules.trim() != before.rules[i].trim() {
            let tables: Vec<&str> = rules.lines().filter(|l| l.starts_with("table")).collect();
            left.push(format!("nftables in {}: {}", h.name, tables.join(", ")));
        }
    }
    left
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn none_or(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join("; ")
    }
}

/// The table.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let injected: usize = r.faults.values().map(|o| o.injected).sum();
    let _ = writeln!(
        s,
        "agent-bench soak: {} stand-in agents + 1 OOM agent on two hosts, {} rounds of \
         faults in {:.1} min (asked: {} min), seed {} (repeat with --seed {}); up in {}\n",
        r.agents,
        r.rounds,
        r.duration.as_secs_f64() / 60.0,
        r.minutes,
        r.seed,
        r.seed,
        r.ready.map_or("-".into(), secs),
    );
    s.push_str("| fault | injected | recovered | median recovery | worst recovery | failures |\n");
    s.push_str("|---|---:|---:|---:|---:|---|\n");
    for kind in Kind::ALL {
        let o = r.faults.get(&kind).cloned().unwrap_or_default();
        let l = Latency::of(&o.recovered);
        let mut fails = o.failures.clone();
        fails.extend(o.skipped.iter().map(|w| format!("skipped: {w}")));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            kind.label(),
            o.injected,
            o.recovered.len(),
            l.map_or("-".into(), |l| secs(l.median)),
            l.map_or("-".into(), |l| secs(l.max)),
            none_or(&fails),
        );
    }
    let _ = writeln!(s, "| **all** | {injected} | {} | | | |\n", {
        r.faults.values().map(|o| o.recovered.len()).sum::<usize>()
    });
    s.push_str("| check | result |\n|---|---|\n");
    let doubled: Vec<String> = r.doubled.iter().map(|(n, w)| format!("{n} {w}")).collect();
    let rows = [
        (
            "agents lost (not running once, outside a fault)",
            none_or(&r.lost),
        ),
        ("agents doubled", none_or(&doubled)),
        ("`restarts_total` = restarts caused", none_or(&r.restarts)),
        ("left behind after shutdown", none_or(&r.left)),
        ("peer unreachable (underlay cut)", none_or(&r.partitions)),
    ];
    for (what, v) in rows {
        let _ = writeln!(s, "| {what} | {v} |");
    }
    let l = Latency::of(&r.summary);
    let _ = writeln!(
        s,
        "| h1 `/health_summary` ({} answers) | median {}, p99 {}, max {}; hangs (>= 3 s): {}; \
         refused while h1's daemon was down: {}; other errors: {} |",
        r.summary.len(),
        l.map_or("-".into(), |l| format!(
            "{:.1} ms",
            l.median.as_secs_f64() * 1e3
        )),
        l.map_or("-".into(), |l| format!(
            "{:.1} ms",
            l.p99.as_secs_f64() * 1e3
        )),
        l.map_or("-".into(), |l| format!(
            "{:.1} ms",
            l.max.as_secs_f64() * 1e3
        )),
        r.summary_hangs.len(),
        r.summary_refused_down,
        r.summary_errors.len(),
    );
    for host in 0..2 {
        let mine: Vec<&Sample> = r.samples.iter().filter(|x| x.host == host).collect();
        let (Some(first), Some(last)) = (mine.first(), mine.last()) else {
            continue;
        };
        // The longest run of one daemon process: its slope is the one that means something.
        let mut runs: BTreeMap<i32, Vec<&Sample>> = BTreeMap::new();
        for x in &mine {
            runs.entry(x.pid).or_default().push(x);
        }
        let longest = runs
            .values()
            .max_by_key(|v| v.len())
            .cloned()
            .unwrap_or_default();
        let pts = |f: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
            longest.iter().map(|x| (x.at, f(x))).collect()
        };
        let rss_slope = slope_per_minute(&pts(&|x| x.rss_kib as f64));
        let fd_slope = slope_per_minute(&pts(&|x| x.fds as f64));
        // Its second half alone: a heap that warms up and then holds shows ~0 here, a leak
        // the same slope as over the whole.
        let rss_pts = pts(&|x| x.rss_kib as f64);
        let late_slope = slope_per_minute(&rss_pts[rss_pts.len() / 2..]);
        let span = longest.last().map_or(0.0, |l| l.at) - longest.first().map_or(0.0, |f| f.at);
        // What the daemon said of itself: its anonymous memory and its heap in use (where
        // RSS grows over a flat heap, what grows is glibc's free memory or stacks).
        let own = |f: &dyn Fn(&Sample) -> Option<u64>| -> String {
            let p: Vec<(f64, f64)> = longest
                .iter()
                .filter_map(|x| Some((x.at, f(x)? as f64)))
                .collect();
            match (p.first(), p.last(), slope_per_minute(&p)) {
                (Some(a), Some(b), Some(v)) => format!(
                    "{} → {}, {v:+.1} KiB/min ({} in its second half)",
                    mib(a.1 as u64),
                    mib(b.1 as u64),
                    slope_per_minute(&p[p.len() / 2..]).map_or("-".into(), |v| format!("{v:+.1}")),
                ),
                _ => "-".into(),
            }
        };
        let _ = writeln!(
            s,
            "| h{}'s daemon RSS / open fds | start {} / {}, end {} / {}, peak {}; {} processes; \
             slope over its longest ({:.1} min, {} samples): {} KiB/min ({} in its second \
             half), {} fds/min; its anonymous memory {}; its heap in use {} |",
            host + 1,
            mib(first.rss_kib),
            first.fds,
            mib(last.rss_kib),
            last.fds,
            mib(mine.iter().map(|x| x.rss_kib).max().unwrap_or(0)),
            runs.len(),
            span / 60.0,
            longest.len(),
            rss_slope.map_or("-".into(), |v| format!("{v:+.1}")),
            late_slope.map_or("-".into(), |v| format!("{v:+.1}")),
            fd_slope.map_or("-".into(), |v| format!("{v:+.2}")),
            own(&|x| x.anon_kib),
            own(&|x| x.heap_kib),
        );
    }
    let mut notes: Vec<String> = r.violations.clone();
    notes.extend(r.summary_hangs.iter().map(|h| format!("summary hung: {h}")));
    notes.extend(
        r.summary_errors
            .iter()
            .take(5)
            .map(|e| format!("summary error: {e}")),
    );
    notes.extend(r.notes.iter().cloned());
    for n in notes {
        let _ = writeln!(s, "\n- {n}");
    }
    let _ = writeln!(
        s,
        "\n{}",
        if r.failed() {
            "FAILED"
        } else {
            "PASSED: no agent lost or doubled, every fault recovered, every restart counted, nothing left behind"
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_are_per_minute() {
        let flat = [(0.0, 5.0), (60.0, 5.0), (120.0, 5.0)];
        assert_eq!(slope_per_minute(&flat), Some(0.0));
        let rising = [(0.0, 0.0), (30.0, 1.0), (60.0, 2.0)];
        let v = slope_per_minute(&rising).expect("slope");
        assert!((v - 2.0).abs() < 1e-9, "{v}");
        assert_eq!(slope_per_minute(&[(1.0, 1.0)]), None);
        assert_eq!(slope_per_minute(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }

    #[test]
    fn a_report_fails_on_any_violation() {
        let mut r = Report::new(1, 1, 2);
        assert!(!r.failed());
        r.outcome(Kind::Oom).skipped.push("no".into());
        assert!(!r.failed(), "a skipped fault alone is not a failure");
        r.outcome(Kind::Oom).failures.push("not recovered".into());
        assert!(r.failed());
        let t = render(&r);
        assert!(
            t.contains("| agent OOM | 0 | 0 | - | - | not recovered; skipped: no |"),
            "{t}"
        );
        assert!(t.ends_with("FAILED\n"), "{t}");
        let mut r = Report::new(1, 1, 2);
        r.summary_refused_down = 3;
        assert!(!r.failed(), "refused while h1's daemon was down on purpose");
        r.summary_errors.push("connection refused".into());
        assert!(r.failed(), "refused while h1's daemon should have answered");
    }
}
