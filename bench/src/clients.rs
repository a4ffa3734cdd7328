//! `agent-bench clients`: one daemon with 77 idle agents, then C concurrent clients (threads
//! of this process, loopback only), each asking for status R times in a row (without pause,
//! or with `--pause-ms` between its requests),
//! on the control socket (`GET /v1/status`) and, separately, on the HTTP listener (`GET
//! /health_summary`); supervisord with the same programs is asked the same way over its
//! XML-RPC socket (`getAllProcessInfo`), in the same run. Prints per listener the latency
//! p50, p99 and max of each answered request (from connect to the end of the answer), the
//! throughput, and every error or refusal by kind. Target: p99 < 100 ms. Not a timed test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::observe_http::{get, parse_response};
use super::scale_peers::{Daemon, Ours, Supervisord, Workdir};
use super::supervise::machine_busy;
use super::supervise_supervisord::{self as sv, xmlrpc};
use super::table::ms;

pub const CONTROL: &str = "agent-supervisor control socket: GET /v1/status";
pub const HTTP: &str = "agent-supervisor HTTP listener: GET /health_summary";
pub const SUPERVISORD: &str = "supervisord XML-RPC socket: getAllProcessInfo";
/// The rows every table has (the test checks them).
pub const ROWS: &[&str] = &[CONTROL, HTTP, SUPERVISORD];
pub const TARGET_P99: Duration = Duration::from_millis(100);
/// A client gives up on one request after this long (counted as an error).
const TIMEOUT: Duration = Duration::from_secs(30);
const START_LIMIT: Duration = Duration::from_secs(120);

/// What one listener's clients saw.
#[derive(Debug, Default)]
struct Load {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, usize>,
    wall: Duration,
}

/// One request on a Unix socket with `Connection: close`, read to its end; its status.
fn unix_get(socket: &Path, path: &str) -> Result<u16, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {}", e.kind()))?;
    s.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("set a timeout: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {}", e.kind()))?;
    let mut raw = Vec::with_capacity(64 * 1024);
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read: {}", e.kind()))?;
    parse_response(&raw).map(|r| r.status)
}

/// A request of one kind, answered `Ok` when it succeeded.
#[derive(Clone)]
enum Target {
    Control(PathBuf),
    Http(SocketAddr),
    XmlRpc(PathBuf),
}

impl Target {
    fn ask(&self) -> Result<(), String> {
        let status = match self {
            Target::Control(socket) => unix_get(socket, "/v1/status")?,
            Target::Http(addr) => {
                get(*addr, "/health_summary", TIMEOUT)
                    .map_err(|e| {
                        // The message names the URL; keep the cause only.
                        e.rsplit_once(": ")
                            .map_or(e.clone(), |(_, c)| c.to_string())
                    })?
                    .status
            }
            Target::XmlRpc(socket) => {
                return xmlrpc(socket, "supervisor.getAllProcessInfo", &[])?
                    .map(|_| ())
                    .ok_or_else(|| "connection refused".to_string())
            }
        };
        if status == 200 {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

/// `clients` threads, started together, each asking `requests` times, `pause` apart.
fn load(target: &Target, clients: usize, requests: usize, pause: Duration) -> Result<Load, String> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::with_capacity(clients);
    for i in 0..clients {
        let (t, b) = (target.clone(), Arc::clone(&barrier));
        let h = std::thread::Builder::new()
            .name(format!("client-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                b.wait();
                let mut seen = Vec::with_capacity(requests);
                for _ in 0..requests {
                    let t0 = Instant::now();
                    let r = t.ask();
                    seen.push((t0.elapsed(), r.err()));
                    std::thread::sleep(pause);
                }
                seen
            })
            .map_err(|e| format!("cannot start client thread {i}: {e}"))?;
        threads.push(h);
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut out = Load::default();
    for h in threads {
        let seen = h
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        for (d, err) in seen {
            match err {
                None => out.latencies.push(d),
                Some(e) => *out.errors.entry(e).or_default() += 1,
            }
        }
    }
    out.wall = t0.elapsed();
    out.latencies.sort_unstable();
    Ok(out)
}

/// Nearest-rank percentile `q` (0-100) of sorted samples.
pub fn percentile(sorted: &[Duration], q: usize) -> Option<Duration> {
    let rank = (sorted.len() * q).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn wait_running(d: &mut dyn Daemon, n: usize) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let (running, total) = d.running()?;
        if running == n && total == n {
            return Ok(());
        }
        if let Some(why) = d.exited() {
            return Err(why);
        }
        if t.elapsed() > START_LIMIT {
            return Err(format!(
                "only {running} of {n} RUNNING after {START_LIMIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the benchmark: `agents` idle agents, `clients` clients of `requests` requests each,
/// `pause` apart.
pub fn run(
    agents: usize,
    clients: usize,
    requests: usize,
    pause: Duration,
) -> Result<String, String> {
    if agents == 0 || clients == 0 || requests == 0 {
        return Err("--agents, --clients and --requests must be at least 1".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "must run as root: agent-supervisor's groups need namespaces and cgroups \
                    (sudo agent-bench clients)"
                .into(),
        );
    }
    let w = Workdir::new("clients")?;
    let mut notes = Vec::new();
    if cfg!(debug_assertions) {
        notes.push("this is a debug build: build with --release for meaningful numbers".into());
    }
    let busy_before = machine_busy(Duration::from_secs(1));
    let mut rows: Vec<(&str, Result<Load, String>)> = Vec::new();
    eprintln!("bench clients: agent-supervisor: starting the daemon with {agents} agents");
    match Ours::new(&w, agents, 7) {
        Err(e) => {
            rows.push((CONTROL, Err(e.clone())));
            rows.push((HTTP, Err(e)));
        }
        Ok(mut d) => {
            let started = d.start().and_then(|_| wait_running(&mut d, agents));
            for (label, target) in [
                (CONTROL, Target::Control(d.socket.clone())),
                (HTTP, Target::Http(d.http)),
            ] {
                eprintln!("bench clients: {label}: {clients} clients × {requests}");
                let r = match &started {
                    Ok(()) => load(&target, clients, requests, pause),
                    Err(e) => Err(e.clone()),
                };
                rows.push((label, r));
            }
            if d.exited().is_some() {
                notes.push("agent-supervisor's daemon exited during the run".into());
            }
            notes.extend(d.teardown(&w));
        }
    }
    let peer = sv::installed().and_then(|inst| {
        notes.push(format!(
            "supervisord {} ({}), asked with the same client code over its Unix socket",
            inst.version,
            inst.supervisord.display()
        ));
        let mut d = Supervisord::new(&w, &inst, agents)?;
        eprintln!("bench clients: {SUPERVISORD}: {clients} clients × {requests}");
        let r = d
            .start()
            .and_then(|_| wait_running(&mut d, agents))
            .and_then(|()| load(&Target::XmlRpc(d.socket.clone()), clients, requests, pause));
        notes.extend(d.teardown(&w));
        r
    });
    rows.push((SUPERVISORD, peer));
    let busy_after = machine_busy(Duration::from_secs(1));
    if busy_before.max(busy_after) > 15.0 {
        notes.push(format!(
            "the machine was busy without the benchmark ({busy_before:.0} % before, \
             {busy_after:.0} % after): the latencies are noisy"
        ));
    }
    Ok(report(agents, clients, requests, pause, &rows, &notes))
}

fn report(
    agents: usize,
    clients: usize,
    requests: usize,
    pause: Duration,
    rows: &[(&str, Result<Load, String>)],
    notes: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{clients} concurrent clients (threads, loopback), each {requests} requests in a row \
         {}, one connection per request; {agents} idle agents; {} CPUs.\n",
        if pause.is_zero() {
            "without pause".to_string()
        } else {
            format!("{} ms apart", pause.as_millis())
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "| listener | answered | errors | p50 ms | p99 ms | max ms | answers/s |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    let mut verdicts = Vec::new();
    for (label, r) in rows {
        match r {
            Err(e) => {
                let e = e.replace('|', "/").replace('\n', " ");
                let _ = writeln!(out, "| {label} | - | - | - | - | - | {e} |");
            }
            Ok(l) => {
                let p = |q| percentile(&l.latencies, q).map_or("-".into(), ms);
                let errors: usize = l.errors.values().sum();
                let _ = writeln!(
                    out,
                    "| {label} | {} | {errors} | {} | {} | {} | {:.0} |",
                    l.latencies.len(),
                    p(50),
                    p(99),
                    l.latencies.last().map_or("-".into(), |d| ms(*d)),
                    l.latencies.len() as f64 / l.wall.as_secs_f64().max(1e-9),
                );
                for (kind, count) in &l.errors {
                    verdicts.push(format!("{label}: {count} × {kind}"));
                }
                if *label != SUPERVISORD {
                    let ok =
                        errors == 0 && percentile(&l.latencies, 99).is_some_and(|d| d < TARGET_P99);
                    verdicts.push(format!(
                        "{label}: p99 < {} ms and no error: {}",
                        TARGET_P99.as_millis(),
                        if ok { "met" } else { "NOT met" }
                    ));
                }
            }
        }
    }
    out.push('\n');
    for v in verdicts.iter().chain(notes) {
        let _ = writeln!(out, "- {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 99), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 99), None);
    }
}
