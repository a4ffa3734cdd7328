//! `agent-bench bridge`: throughput (iperf3 TCP) and ping round-trip time between two
//! network namespaces, in one run, over the plain veth underlay, over agent-bridge (our
//! gotatun daemon) at both ends, over wireguard-go at both ends, and over agent-bridge at one
//! end with wireguard-go at the other (which proves they interoperate). Prints a Markdown
//! table (Gbit/s, ping median and p90, the RTT added over the plain veth, the throughput
//! as a multiple of wireguard-go's) and whether the targets are met: throughput at least
//! wireguard-go's, and at most 0.2 ms added to the median RTT over the plain veth.
//!
//! Every tunnel is set up before the first measurement (see [`super::bridge_lab`]), and the
//! paths are measured one after the other: first the pings of every path, then iperf3 on
//! every path, so that no measurement overlaps another.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::bridge_lab::{output, stop_child, End, Lab, Tools, TUNNEL_MTU, UNDERLAY};
use super::supervise_procs::which;
use super::table::Stats;

pub const VETH: &str = "plain veth (no tunnel)";
pub const OURS: &str = "agent-bridge <-> agent-bridge";
/// The baseline of the throughput ratios and of the throughput target.
pub const WG_GO: &str = "wireguard-go <-> wireguard-go";
pub const MIXED: &str = "agent-bridge <-> wireguard-go";
/// The tunnels of the table, in order, after [`VETH`]: label and the ends in a and b.
pub const TUNNELS: [(&str, [End; 2]); 3] = [
    (OURS, [End::AgentBridge, End::AgentBridge]),
    (WG_GO, [End::WireguardGo, End::WireguardGo]),
    (MIXED, [End::AgentBridge, End::WireguardGo]),
];

/// Pings per path, and the interval between them.
pub const PINGS: usize = 200;
pub const PING_INTERVAL: &str = "0.01";
/// The targets: agent-bridge's throughput at least this multiple of wireguard-go's, and its
/// median RTT at most this much above the plain veth's.
pub const TARGET_THROUGHPUT: f64 = 1.0;
pub const TARGET_ADDED_RTT: Duration = Duration::from_micros(200);
/// The name of the tunnel daemon's binary, next to this executable.
pub const BRIDGE_BIN: &str = "agent-bridge";

/// Why the benchmark could not run at all (a path that fails gets a row saying why).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "must run as root: it creates network namespaces and TUN interfaces \
         (run it as root, e.g. sudo agent-bench bridge)"
    )]
    NotRoot,
    #[error("--time must be at least 1 second")]
    NoTime,
    #[error("{0} is not installed: apt-get install {1}")]
    Missing(&'static str, &'static str),
    #[error("cannot set up the namespaces: {0}")]
    Setup(String),
    #[error("interrupted (everything it set up is removed)")]
    Interrupted,
}

/// One path's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub bits_per_second: f64,
    pub rtt: Stats,
    pub lost: usize,
}

/// One line of the table: a path's numbers, or why it has none.
#[derive(Debug, Clone)]
pub struct PathRow {
    pub label: String,
    pub result: Result<Measured, String>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set a flag instead of ending this process, so that it removes what
/// it set up (its children run the default action: exec resets handled signals).
pub fn catch_signals() -> Result<(), String> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(|e| format!("sigaction({sig}): {e}"))?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM came since [`catch_signals`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn check_interrupted() -> Result<(), BenchError> {
    if interrupted() {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

/// The `agent-bridge` binary next to this executable (`cargo build` puts both in the same
/// target directory).
fn bridge_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let exe = me.with_file_name(BRIDGE_BIN);
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "no {BRIDGE_BIN} next to {} (build it: cargo build -p agent-supervisor --bin agent-bridge)",
            me.display()
        ))
    }
}

/// Runs the bridge benchmark with `time` seconds of iperf3 per path; returns the report.
pub fn run(time: u64) -> Result<String, BenchError> {
    if time == 0 {
        return Err(BenchError::NoTime);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    let need =
        |name: &'static str, pkg: &'static str| which(name).ok_or(BenchError::Missing(name, pkg));
    let tools = Tools {
        ip: need("ip", "iproute2")?,
        wg: need("wg", "wireguard-tools")?,
        agent_bridge: bridge_binary(),
        wireguard_go: which("wireguard-go")
            .ok_or_else(|| "not installed: apt-get install wireguard-go".to_string()),
    };
    let iperf3 = need("iperf3", "iperf3")?;
    let ping = need("ping", "iputils-ping")?;
    let mut notes = Vec::new();
    if cfg!(debug_assertions) {
        notes.push("this is a debug build: build with --release for meaningful numbers".into());
    }
    if let Err(e) = catch_signals() {
        notes.push(format!("Ctrl-C will leave the namespaces behind: {e}"));
    }
    let versions = versions(&tools, &iperf3);

    let mut lab = Lab::new(tools).map_err(BenchError::Setup)?;
    // The paths: label and the address in namespace b that namespace a talks to.
    let mut paths: Vec<(String, Result<String, String>)> =
        vec![(VETH.to_string(), Ok(UNDERLAY[1].to_string()))];
    for (n, (label, ends)) in (0u8..).zip(TUNNELS) {
        check_interrupted()?;
        let addr = lab
            .tunnel(n, ends)
            .and_then(|addr| handshake(&lab, &ping, &addr).map(|()| addr));
        paths.push((label.to_string(), addr));
    }
    let mut rtts = Vec::new();
    for (_, addr) in &paths {
        check_interrupted()?;
        rtts.push(match addr {
            Ok(a) => ping_rtts(&lab, &ping, a),
            Err(e) => Err(e.clone()),
        });
    }
    let mut rows = Vec::new();
    for (port, ((label, addr), rtt)) in (5201u16..).zip(paths.into_iter().zip(rtts)) {
        check_interrupted()?;
        let result = rtt.and_then(|(samples, lost)| {
            let rtt = Stats::of(&samples).ok_or_else(|| "no ping came back".to_string())?;
            let addr = addr?;
            let bits_per_second = throughput(&lab, &iperf3, &addr, port, time)?;
            Ok(Measured {
                bits_per_second,
                rtt,
                lost,
            })
        });
        rows.push(PathRow {
            label: label.clone(),
            result,
        });
    }
    check_interrupted()?;
    let namespaces = lab.ns.clone();
    notes.extend(lab.teardown());
    notes.extend(leftovers(&namespaces));

    let mut out = String::new();
    let _ = writeln!(
        out,
        "bench bridge: namespace {} -> {} over a veth pair; iperf3 TCP for {time} s and \
         {PINGS} pings every {PING_INTERVAL} s per path, paths measured one at a time; tunnel \
         MTU {TUNNEL_MTU} (kernel {}, {} CPUs)\n",
        namespaces[0],
        namespaces[1],
        kernel(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    out.push_str(&render(&rows));
    out.push('\n');
    let _ = writeln!(out, "{versions}");
    for r in &rows {
        if let Ok(m) = &r.result {
            if m.lost > 0 {
                notes.push(format!(
                    "{}: {} of {PINGS} pings lost (not in the RTTs)",
                    r.label, m.lost
                ));
            }
        }
    }
    for n in &notes {
        let _ = writeln!(out, "note: {n}");
    }
    out.push_str(&verdict(&rows));
    Ok(out)
}

/// The versions of the peers, on one line.
fn versions(tools: &Tools, iperf3: &std::path::Path) -> String {
    let first_line = |program: &std::path::Path, arg: &str| {
        let mut c = Command::new(program);
        c.arg(arg);
        output(c, None).map_or_else(
            |_| "unknown".to_string(),
            |o| o.lines().next().unwrap_or("unknown").trim().to_string(),
        )
    };
    let wg_go = match &tools.wireguard_go {
        Ok(p) => first_line(p, "--version"),
        Err(_) => "not installed".into(),
    };
    format!(
        "versions: {wg_go}; {}; {}",
        first_line(&tools.wg, "--version"),
        first_line(iperf3, "--version")
    )
}

/// Pings `addr` from namespace a until one answer comes back (the tunnel's handshake), for
/// at most five seconds.
fn handshake(lab: &Lab, ping: &std::path::Path, addr: &str) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = lab.in_ns(0, ping);
        c.args(["-n", "-q", "-c", "1", "-W", "1", addr]);
        match output(c, None) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= until => {
                return Err(format!(
                    "no handshake: {addr} does not answer from {}: {e}",
                    lab.ns[0]
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// [`PINGS`] pings of `addr` from namespace a: the round-trip times and how many were lost.
fn ping_rtts(
    lab: &Lab,
    ping: &std::path::Path,
    addr: &str,
) -> Result<(Vec<Duration>, usize), String> {
    let mut c = lab.in_ns(0, ping);
    let count = PINGS.to_string();
    c.args([
        "-n",
        "-c",
        &count,
        "-i",
        PING_INTERVAL,
        "-W",
        "1",
        "-w",
        "60",
        addr,
    ]);
    let line = super::bridge_lab::describe(&c);
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{line}`: {e}"))?;
    let rtts = parse_ping(&String::from_utf8_lossy(&out.stdout));
    if rtts.is_empty() {
        return Err(format!(
            "`{line}` in {}: no answer ({}): {}",
            lab.ns[0],
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let lost = PINGS.saturating_sub(rtts.len());
    Ok((rtts, lost))
}

/// The round-trip times of ping's answer lines (`... time=0.043 ms`).
pub fn parse_ping(text: &str) -> Vec<Duration> {
    text.lines()
        .filter_map(|l| l.split_once(" time=").map(|(_, t)| t))
        .filter_map(|t| t.trim_end_matches(" ms").trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .collect()
}

/// TCP throughput from namespace a to `addr` in b: an iperf3 server in b for one test, the
/// client in a for `time` seconds; the receiver's bits per second.
fn throughput(
    lab: &Lab,
    iperf3: &std::path::Path,
    addr: &str,
    port: u16,
    time: u64,
) -> Result<f64, String> {
    let port_s = port.to_string();
    let mut server = lab.in_ns(1, iperf3);
    server
        .args(["-s", "-1", "-p", &port_s])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let line = super::bridge_lab::describe(&server);
    let mut child = server
        .spawn()
        .map_err(|e| format!("cannot start `{line}`: {e}"))?;
    let result = wait_listening(child.id(), port)
        .map_err(|e| format!("`{line}` in {}: {e}", lab.ns[1]))
        .and_then(|()| {
            let mut client = lab.in_ns(0, iperf3);
            client.args(["-c", addr, "-p", &port_s, "-t", &time.to_string(), "-J"]);
            let line = super::bridge_lab::describe(&client);
            // On failure iperf3 exits 1 with its JSON (and the error in it) on stdout.
            let out = client
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run `{line}`: {e}"))?;
            parse_iperf(&String::from_utf8_lossy(&out.stdout))
                .map_err(|e| format!("`{line}` in {} ({}): {e}", lab.ns[0], out.status))
        });
    let _ = stop_child(&mut child, Duration::from_secs(2));
    result
}

/// Waits up to five seconds until the process `pid` (in its own namespace) has a TCP
/// socket listening on `port`.
fn wait_listening(pid: u32, port: u16) -> Result<(), String> {
    let needle = format!(":{port:04X} ");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let listening = ["tcp", "tcp6"].iter().any(|t| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).is_ok_and(|s| {
                s.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && format!("{} ", f[1]).ends_with(&needle) && f[3] == "0A"
                })
            })
        });
        if listening {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("not listening on port {port} after 5 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The receiver's bits per second of an `iperf3 -J` report, or its error.
pub fn parse_iperf(json: &str) -> Result<f64, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("no JSON report: {e}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(e.to_string());
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .ok_or_else(|| "no end.sum_received.bits_per_second in the report".to_string())
}

/// What the benchmark left behind that it should not have: its namespaces, its sockets.
fn leftovers(namespaces: &[String; 2]) -> Vec<String> {
    let mut notes = Vec::new();
    for ns in namespaces {
        if std::path::Path::new("/var/run/netns").join(ns).exists() {
            notes.push(format!("left behind: namespace {ns}"));
        }
    }
    let tag = format!("ab{:x}t", std::process::id());
    if let Ok(dir) = std::fs::read_dir(super::bridge_lab::SOCKET_DIR) {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(&tag) {
                notes.push(format!("left behind: {}", e.path().display()));
            }
        }
    }
    notes
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Milliseconds with three decimals (a veth round trip is tens of microseconds).
fn ms3(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn measured<'a>(rows: &'a [PathRow], label: &str) -> Option<&'a Measured> {
    rows.iter()
        .find(|r| r.label == label)
        .and_then(|r| r.result.as_ref().ok())
}

/// The Markdown table: one line per path.
pub fn render(rows: &[PathRow]) -> String {
    let veth = measured(rows, VETH).map(|m| m.rtt.median);
    let wg_go = measured(rows, WG_GO).map(|m| m.bits_per_second);
    let label_w = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0)
        .max("path".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {:<label_w$} | Gbit/s | ping median ms | ping p90 ms | added RTT ms | × wireguard-go |",
        "path"
    );
    let _ = writeln!(
        out,
        "|{}|-------:|---------------:|------------:|-------------:|---------------:|",
        "-".repeat(label_w + 2)
    );
    for r in rows {
        match &r.result {
            Ok(m) => {
                let added = veth.map_or_else(
                    || "n/a".to_string(),
                    |v| {
                        let d = m.rtt.median.as_secs_f64() - v.as_secs_f64();
                        format!("{:+.3}", d * 1e3)
                    },
                );
                let ratio = wg_go.filter(|w| *w > 0.0).map_or_else(
                    || "n/a".to_string(),
                    |w| format!("{:.2}", m.bits_per_second / w),
                );
                let _ = writeln!(
                    out,
                    "| {:<label_w$} | {:>6.3} | {:>14} | {:>11} | {added:>12} | {ratio:>14} |",
                    r.label,
                    m.bits_per_second / 1e9,
                    ms3(m.rtt.median),
                    ms3(m.rtt.p90),
                );
            }
            Err(why) => {
                let why = why.replace('|', "/").replace('\n', " ");
                let _ = writeln!(out, "| {:<label_w$} | - | - | - | - | {why} |", r.label);
            }
        }
    }
    out
}

/// The closing lines: are the targets met?
pub fn verdict(rows: &[PathRow]) -> String {
    let ours = measured(rows, OURS);
    let mut out = format!(
        "targets: throughput >= {TARGET_THROUGHPUT:.1}x wireguard-go; added RTT over plain \
         veth <= {} ms median\n",
        TARGET_ADDED_RTT.as_secs_f64() * 1e3
    );
    let met = |ok: bool| if ok { "MET" } else { "NOT MET" };
    match (ours, measured(rows, WG_GO)) {
        (Some(o), Some(w)) if w.bits_per_second > 0.0 => {
            let ratio = o.bits_per_second / w.bits_per_second;
            let _ = writeln!(
                out,
                "target: throughput of \"{OURS}\" >= {TARGET_THROUGHPUT:.1}x \"{WG_GO}\": \
                 {:.2} vs {:.2} Gbit/s ({ratio:.2}x): {}",
                o.bits_per_second / 1e9,
                w.bits_per_second / 1e9,
                met(ratio >= TARGET_THROUGHPUT)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "target: throughput cannot be evaluated: \"{OURS}\" or \"{WG_GO}\" has no numbers"
            );
        }
    }
    match (ours, measured(rows, VETH)) {
        (Some(o), Some(v)) => {
            let added = o.rtt.median.as_secs_f64() - v.rtt.median.as_secs_f64();
            let _ = writeln!(
                out,
                "target: median RTT of \"{OURS}\" <= {} ms over \"{VETH}\": {:+.3} ms \
                 ({} vs {} ms): {}",
                TARGET_ADDED_RTT.as_secs_f64() * 1e3,
                added * 1e3,
                ms3(o.rtt.median),
                ms3(v.rtt.median),
                met(added <= TARGET_ADDED_RTT.as_secs_f64())
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "target: added RTT cannot be evaluated: \"{OURS}\" or \"{VETH}\" has no numbers"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_answers_only() {
        let text = "PING 10.231.0.2 (10.231.0.2) 56(84) bytes of data.\n\
            64 bytes from 10.231.0.2: icmp_seq=1 ttl=64 time=0.043 ms\n\
            64 bytes from 10.231.0.2: icmp_seq=2 ttl=64 time=1.25 ms\n\
            \n--- 10.231.0.2 ping statistics ---\n\
            2 packets transmitted, 2 received, 0% packet loss, time 10ms\n\
            rtt min/avg/max/mdev = 0.043/0.646/1.250/0.603 ms\n";
        assert_eq!(
            parse_ping(text),
            vec![Duration::from_micros(43), Duration::from_micros(1250)]
        );
        assert!(parse_ping("").is_empty());
    }

    #[test]
    fn parses_iperf_reports_and_errors() {
        let ok = r#"{"start":{},"end":{"sum_received":{"bits_per_second":2.5e9}}}"#;
        assert_eq!(parse_iperf(ok), Ok(2.5e9));
        let err = r#"{"start":{},"end":{},"error":"unable to connect to server"}"#;
        assert_eq!(parse_iperf(err), Err("unable to connect to server".into()));
        assert!(parse_iperf("").is_err());
    }

    fn row(label: &str, gbps: f64, rtt_us: &[u64]) -> PathRow {
        let rtts: Vec<Duration> = rtt_us.iter().copied().map(Duration::from_micros).collect();
        PathRow {
            label: label.into(),
            result: Stats::of(&rtts)
                .ok_or_else(String::new)
                .map(|rtt| Measured {
                    bits_per_second: gbps * 1e9,
                    rtt,
                    lost: 0,
                }),
        }
    }

    #[test]
    fn renders_ratios_added_rtt_and_verdicts() {
        let rows = vec![
            row(VETH, 20.0, &[40, 50, 60]),
            row(OURS, 2.0, &[150, 200, 300]),
            row(WG_GO, 1.6, &[250, 300, 400]),
            PathRow {
                label: MIXED.into(),
                result: Err("no handshake".into()),
            },
        ];
        let t = render(&rows);
        assert!(
            t.contains(&format!(
                "| {OURS} |  2.000 |          0.200 |       0.300 |       +0.150 |           1.25 |"
            )),
            "{t}"
        );
        assert!(t.contains("| - | no handshake |"), "{t}");
        let v = verdict(&rows);
        assert!(v.contains("(1.25x): MET"), "{v}");
        assert!(v.contains("+0.150 ms (0.200 vs 0.050 ms): MET"), "{v}");
        let v = verdict(&[
            row(VETH, 20.0, &[40]),
            row(OURS, 1.0, &[400]),
            row(WG_GO, 2.0, &[300]),
        ]);
        assert!(v.contains("(0.50x): NOT MET"), "{v}");
        assert!(v.contains("+0.360 ms (0.400 vs 0.040 ms): NOT MET"), "{v}");
    }
}
