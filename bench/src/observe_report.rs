//! The report of `agent-bench observe`: a header line, a Markdown table (measurement,
//! value, target, met?), the targets, a verdict per target, and the notes.

use std::fmt::Write as _;
use std::time::Duration;

use super::observe::{IdleCpu, Report, TARGET_IDLE_CPU, TARGET_P99, TARGET_RSS_MIB, WARMUP};

/// `0.50 % (utime+stime: 5 ticks in 10.0 s, +/- 0.10 %)`.
fn cpu(c: &IdleCpu) -> String {
    format!(
        "{:.2} % (utime+stime: {} ticks in {:.1} s, +/- {:.2} %)",
        c.percent(),
        c.ticks,
        c.wall.as_secs_f64(),
        c.resolution()
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

fn size(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// The report: a header, the table, the targets and the verdicts, the notes.
pub fn render(r: &Report) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let dash = || "-".to_string();
    if let Some(t) = r.ready {
        rows.push([
            format!(
                "time to all {} agents healthy in h1's /health_summary",
                r.agents
            ),
            format!("{:.1} s after the daemons' start", t.as_secs_f64()),
            dash(),
            dash(),
        ]);
    }
    let mut verdicts = Vec::new();
    for (k, s) in r.rows.iter().enumerate() {
        let peer = s.label.starts_with("peer:");
        let label = match k {
            0 => format!(
                "{} ({}, {} series of both hosts)",
                s.label,
                size(s.bytes),
                r.metrics_series
            ),
            _ => format!("{} ({})", s.label, size(s.bytes)),
        };
        let (value, ok) = match &s.result {
            Ok(l) => (
                format!(
                    "median {} / p90 {} / p99 {} / max {} ms",
                    ms(l.median),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.max)
                ),
                Some(l.p99 <= TARGET_P99),
            ),
            Err(e) => (e.replace('|', "/").replace('\n', " "), None),
        };
        let target = if peer {
            "floor of an HTTP round trip".to_string()
        } else {
            format!("p99 <= {} ms", TARGET_P99.as_millis())
        };
        let m = match (peer, ok) {
            (true, _) => dash(),
            (false, Some(ok)) => met(ok).to_string(),
            (false, None) => "not measured".into(),
        };
        if !peer {
            verdicts.push(format!("{}: {m}", s.label));
        }
        rows.push([label, value, target, m]);
    }
    for d in &r.daemons {
        let value = match d.rss_kib {
            Some(k) => format!(
                "{} (peak {}; {} before the scrapes)",
                mib(k),
                d.hwm_kib.map_or("?".into(), mib),
                d.rss_before_kib.map_or("?".into(), mib)
            ),
            None => "not measured".into(),
        };
        let ok = d.rss_kib.map(|k| k as f64 / 1024.0 <= TARGET_RSS_MIB);
        let m = ok.map_or("not measured", met).to_string();
        verdicts.push(format!("daemon RSS of {}: {m}", d.host));
        rows.push([
            format!("daemon RSS of {} (VmRSS, after the scrapes)", d.host),
            value,
            format!("<= {TARGET_RSS_MIB} MiB"),
            m,
        ]);
    }
    for d in &r.daemons {
        let (value, ok) = match d.idle_cpu {
            Some(c) => (cpu(&c), Some(c.percent() <= TARGET_IDLE_CPU)),
            None => ("not measured".into(), None),
        };
        let m = ok.map_or("not measured", met).to_string();
        verdicts.push(format!("idle CPU of {}'s daemon: {m}", d.host));
        rows.push([
            format!(
                "idle CPU of {}'s daemon over {} s, % of one core",
                d.host,
                r.idle.as_secs()
            ),
            value,
            format!("<= {TARGET_IDLE_CPU} %"),
            m,
        ]);
    }
    rows.push([
        format!(
            "idle CPU of both bridges (agent-bridge) over {} s",
            r.idle.as_secs()
        ),
        r.bridge_cpu.map_or_else(
            || "no bridge process (kernel WireGuard)".into(),
            |c| cpu(&c),
        ),
        dash(),
        dash(),
    ]);
    let w: Vec<usize> = (0..4)
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .chain([["measurement", "value", "target", "met?"][c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bench observe: 2 hosts (network namespaces over a veth, the bridge between them), \
         {} stand-in agents ({} on h1 in {} groups, {} on h2 in {} groups; network: private; \
         health: http /health every 5 s); from inside h1's namespace, {} timed rounds (after \
         {WARMUP} untimed) of one GET each of /metrics, /health_summary and the static file, \
         in turn, one new connection per request (in-process HTTP/1.1 client); idle window \
         {} s with nothing scraping (kernel {}, {} CPUs)\n",
        r.agents,
        r.split[0].0,
        r.split[0].1,
        r.split[1].0,
        r.split[1].1,
        r.scrapes,
        r.idle.as_secs(),
        kernel(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "| {:<a$} | {:<b$} | {:<c$} | {:<d$} |",
        "measurement",
        "value",
        "target",
        "met?",
        a = w[0],
        b = w[1],
        c = w[2],
        d = w[3]
    );
    let _ = writeln!(
        out,
        "|{}|{}|{}|{}|",
        "-".repeat(w[0] + 2),
        "-".repeat(w[1] + 2),
        "-".repeat(w[2] + 2),
        "-".repeat(w[3] + 2)
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "| {:<a$} | {:<b$} | {:<c$} | {:<d$} |",
            row[0],
            row[1],
            row[2],
            row[3],
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3]
        );
    }
    let _ = writeln!(
        out,
        "\ntargets: scrape p99 <= {} ms, daemon RSS <= {TARGET_RSS_MIB} MiB, idle CPU <= \
         {TARGET_IDLE_CPU} %",
        TARGET_P99.as_millis()
    );
    for v in verdicts {
        let _ = writeln!(out, "target: {v}");
    }
    for s in r.rows.iter().filter(|s| s.not_ok > 0) {
        let _ = writeln!(
            out,
            "note: {}: {} of {} answers were not 200 (timed all the same)",
            s.label, s.not_ok, r.scrapes
        );
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{DaemonNumbers, Latency, Scrape};

    fn d(us: u64) -> Duration {
        Duration::from_micros(us)
    }

    #[test]
    fn renders_targets_and_verdicts_honestly() {
        let lat = |p99: u64| Latency {
            runs: 500,
            median: d(800),
            p90: d(1000),
            p99: d(p99),
            max: d(30_000),
        };
        let r = Report {
            agents: 77,
            split: [(39, 4), (38, 4)],
            scrapes: 500,
            idle: Duration::from_secs(10),
            ready: Some(Duration::from_millis(8400)),
            rows: vec![
                Scrape {
                    label: "GET /metrics of h1 (the primary)".into(),
                    bytes: 20480,
                    result: Ok(lat(2500)),
                    not_ok: 0,
                },
                Scrape {
                    label: "GET /health_summary of h1".into(),
                    bytes: 10240,
                    result: Ok(lat(25_000)),
                    not_ok: 3,
                },
                Scrape {
                    label: "peer: python3 -m http.server, a static file of /metrics' size".into(),
                    bytes: 20480,
                    result: Err("the static file server did not answer".into()),
                    not_ok: 0,
                },
            ],
            daemons: vec![DaemonNumbers {
                host: "h1".into(),
                rss_kib: Some(10 * 1024),
                hwm_kib: Some(11 * 1024),
                rss_before_kib: Some(9 * 1024),
                idle_cpu: Some(IdleCpu {
                    ticks: 3,
                    hz: 100,
                    wall: Duration::from_secs(10),
                }),
            }],
            metrics_series: 600,
            ..Report::default()
        };
        let t = render(&r);
        for want in [
            "median 0.80 / p90 1.00 / p99 2.50 / max 30.00 ms",
            "(20.0 KiB, 600 series of both hosts)",
            "target: GET /metrics of h1 (the primary): MET",
            "target: GET /health_summary of h1: NOT MET",
            "10.0 MiB (peak 11.0 MiB; 9.0 MiB before the scrapes)",
            "target: daemon RSS of h1: MET",
            "0.30 % (utime+stime: 3 ticks in 10.0 s, +/- 0.10 %)",
            "target: idle CPU of h1's daemon: NOT MET",
            "the static file server did not answer",
            "3 of 500 answers were not 200",
            "time to all 77 agents healthy",
        ] {
            assert!(t.contains(want), "{want:?} in\n{t}");
        }
    }
}
