//! `supervisorctl`: the control client of the agent-supervisor daemon (HTTP over its Unix
//! socket, with hyper on a current-thread tokio runtime; the API is in `docs/api.md`).
//!
//! Exit codes: 0 success; 1 the daemon refused or failed the request; 2 the daemon cannot be
//! reached (not running, permission denied); 3 `status` listed an agent that is not RUNNING
//! (as supervisord's `status`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agent_supervisor::daemon::api::{AgentState, AgentStatus, BridgeStatus, Response, Snapshot};
use agent_supervisor::daemon::fleet::HostView;
use agent_supervisor::daemon::http::percent_encode;
use anyhow::{anyhow, Context};
use clap::{CommandFactory, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::handshake;
use hyper::header;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Parser)]
#[command(
    name = "supervisorctl",
    version,
    about = "Control the agent-supervisor daemon"
)]
struct Cli {
    /// The daemon's control socket [env: AGENT_SUPERVISOR_SOCKET; default:
    /// /run/agent-supervisor/control.sock].
    #[arg(long, short = 's', global = true)]
    socket: Option<PathBuf>,
    /// Show another host of the system, as this daemon last saw it through the bridge
    /// (`status` only).
    #[arg(long = "host", short = 'H', global = true)]
    host: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show agents' state (exit status 3 when one of them is not RUNNING).
    Status {
        /// Agents (`NAME`) or groups (`GROUP:*`); none: every agent.
        names: Vec<String>,
        /// Print the daemon's snapshot as JSON.
        #[arg(long)]
        json: bool,
        /// Every host of the system: this one, and the others as this daemon last saw them
        /// through the bridge (exit status 3 also when a host does not answer).
        #[arg(long)]
        all_hosts: bool,
    },
    /// Show the WireGuard bridge's peers: endpoint, latest handshake, bytes, round-trip
    /// time (exit status 3 when a peer does not answer through the tunnel).
    Bridge {
        /// Print the bridge's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start agents.
    Start {
        /// `NAME`, `GROUP:*` or `all`.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop agents.
    Stop {
        /// `NAME`, `GROUP:*` or `all`.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Restart agents.
    Restart {
        /// `NAME`, `GROUP:*` or `all`.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Send a signal to agents.
    Signal {
        /// `HUP`, `SIGUSR1`, `9`, ...
        signal: String,
        /// `NAME`, `GROUP:*` or `all`.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print an agent's log.
    Logs {
        /// Keep printing what the agent writes.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Lines of the past to print.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// The agent's stderr instead of its stdout.
        #[arg(long)]
        stderr: bool,
        agent: String,
    },
    /// Re-read the system file and apply the changes.
    Reload,
    /// Stop every agent and the daemon.
    Shutdown,
    /// Print the client's and the daemon's versions.
    Version,
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

/// Why a command failed, with its exit status.
struct Failure {
    code: u8,
    message: String,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure {
            code: 1,
            message: format!("{e:#}"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli
        .socket
        .clone()
        .or_else(|| std::env::var_os("AGENT_SUPERVISOR_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(agent_config::defaults::CONTROL_SOCKET));
    let result = match (&cli.host, &cli.command) {
        (Some(_), Cmd::Status { .. }) | (None, _) => run(cli.command, &socket, cli.host.as_deref()),
        (Some(h), _) => Err(Failure {
            code: 2,
            message: format!(
                "-H {h} works with `status` only; run other commands with the control socket of host {h}"
            ),
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("supervisorctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(cmd: Cmd, socket: &Path, host: Option<&str>) -> Result<u8, Failure> {
    match cmd {
        Cmd::Status {
            names,
            json,
            all_hosts,
        } if all_hosts || host.is_some() => {
            if !names.is_empty() {
                return Err(
                    anyhow!("--all-hosts and -H show whole hosts: give no agent names").into(),
                );
            }
            let snapshot = status(socket, "/v1/status")?;
            hosts_status(snapshot, host, json)
        }
        Cmd::Status { names, json, .. } => {
            let targets: Vec<String> = names.iter().map(|n| percent_encode(n, b":*")).collect();
            let path = if targets.is_empty() {
                "/v1/status".to_string()
            } else {
                format!("/v1/status?targets={}", targets.join(","))
            };
            let snapshot = status(socket, &path)?;
            if json {
                let text = serde_json::to_string_pretty(&snapshot).context("JSON")?;
                agent_supervisor::outln!("{text}");
            } else {
                agent_supervisor::out!("{}", status_table(&snapshot));
            }
            let all_running = snapshot
                .agents
                .iter()
                .all(|a| a.state == AgentState::Running);
            Ok(if all_running { 0 } else { 3 })
        }
        Cmd::Bridge { json } => {
            let snapshot = status(socket, "/v1/status")?;
            let Some(b) = snapshot.bridge else {
                return Err(anyhow!(
                    "host {} has no bridge (give it `bridge:` in the system file)",
                    snapshot.host
                )
                .into());
            };
            if json {
                agent_supervisor::outln!("{}", serde_json::to_string_pretty(&b).context("JSON")?);
            } else {
                agent_supervisor::out!("{}", bridge_table(&b));
            }
            Ok(if b.error.is_none() && b.peers.iter().all(|p| p.up) {
                0
            } else {
                3
            })
        }
        Cmd::Start { names } => action(socket, "start", &names),
        Cmd::Stop { names } => action(socket, "stop", &names),
        Cmd::Restart { names } => action(socket, "restart", &names),
        Cmd::Signal { signal, names } => {
            let body = serde_json::json!({ "signal": signal, "targets": names });
            print_done(call(socket, "POST", "/v1/signal", Some(&body))?)
        }
        Cmd::Logs {
            follow,
            lines,
            stderr,
            agent,
        } => {
            let path = format!(
                "/v1/logs/{}?stream={}&lines={lines}{}",
                percent_encode(&agent, b""),
                if stderr { "stderr" } else { "stdout" },
                if follow { "&follow=1" } else { "" }
            );
            let mut out = std::io::stdout().lock();
            let status = exchange(socket, "GET", &path, None, &mut out)?;
            if status != 200 {
                return Err(anyhow!("logs {agent}: HTTP {status}").into());
            }
            Ok(0)
        }
        Cmd::Reload => {
            let Response::Reloaded { result } = call(socket, "POST", "/v1/reload", None)? else {
                return Err(anyhow!("the daemon answered reload with something else").into());
            };
            for (what, names) in [
                ("added", &result.added),
                ("removed", &result.removed),
                ("changed", &result.changed),
            ] {
                for n in names {
                    agent_supervisor::outln!("{n}: {what}");
                }
            }
            if result.added.is_empty() && result.removed.is_empty() && result.changed.is_empty() {
                agent_supervisor::outln!("no changes ({} agents unchanged)", result.unchanged);
            } else {
                agent_supervisor::outln!("{} agents unchanged", result.unchanged);
            }
            Ok(0)
        }
        Cmd::Shutdown => {
            call(socket, "POST", "/v1/shutdown", None)?;
            agent_supervisor::outln!("Shut down");
            Ok(0)
        }
        Cmd::Version => {
            agent_supervisor::outln!("supervisorctl {}", agent_supervisor::VERSION);
            if let Response::Version { version, pid } = call(socket, "GET", "/v1/version", None)? {
                agent_supervisor::outln!("agent-supervisor daemon {version} (pid {pid})");
            }
            Ok(0)
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "supervisorctl",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}

/// start/stop/restart: one line per agent, like supervisord (`AudioCapture: started`).
fn action(socket: &Path, verb: &str, names: &[String]) -> Result<u8, Failure> {
    let body = serde_json::json!({ "targets": names });
    print_done(call(socket, "POST", &format!("/v1/{verb}"), Some(&body))?)
}

/// Prints `agent: result` lines; exit status 1 when one of them is an error.
fn print_done(resp: Response) -> Result<u8, Failure> {
    let Response::Done { results } = resp else {
        return Err(anyhow!("the daemon answered with something else: {resp:?}").into());
    };
    let mut code = 0;
    for (agent, result) in results {
        if result.starts_with("ERROR") {
            code = 1;
        }
        agent_supervisor::outln!("{agent}: {result}");
    }
    Ok(code)
}

/// The `status` table: one aligned line per agent, with a header; under the row of an agent
/// whose shim dropped log output, a line says how much and why.
fn status_table(s: &Snapshot) -> String {
    let header = [
        "GROUP:AGENT",
        "STATE",
        "HEALTH",
        "PID",
        "ADDRESS",
        "UPTIME",
        "RESTARTS",
        "MEMORY",
        "LAST EXIT",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for a in &s.agents {
        // A private group's address; `host` for the host's network.
        let address = s
            .groups
            .iter()
            .find(|g| g.group == a.group)
            .and_then(|g| g.address.clone())
            .unwrap_or_else(|| "host".to_string());
        rows.push(row(a, address));
    }
    let table = columns(rows);
    let mut out = String::with_capacity(table.len());
    let mut lines = table.lines();
    if let Some(header) = lines.next() {
        out.push_str(header);
        out.push('\n');
    }
    for (line, a) in lines.zip(&s.agents) {
        out.push_str(line);
        out.push('\n');
        if let Some(note) = log_drop_note(a) {
            out.push_str(&note);
            out.push('\n');
        }
    }
    out
}

/// `  logs dropped: 12.3K (cannot write log file ...: No space left on device (os error 28))`
/// when the agent's shim could not write all of its output.
fn log_drop_note(a: &AgentStatus) -> Option<String> {
    (a.log_dropped_bytes > 0).then(|| {
        let why = a
            .log_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        format!("  logs dropped: {}{why}", human_bytes(a.log_dropped_bytes))
    })
}

/// The daemon's snapshot (`GET path`, a `/v1/status` route).
fn status(socket: &Path, path: &str) -> Result<Snapshot, Failure> {
    match call(socket, "GET", path, None)? {
        Response::Status { snapshot } => Ok(snapshot),
        _ => Err(anyhow!("the daemon answered status with something else").into()),
    }
}

/// `status --all-hosts` and `-H HOST`: a head line and the table of each host shown.
fn hosts_status(snapshot: Snapshot, only: Option<&str>, json: bool) -> Result<u8, Failure> {
    let mut own = snapshot;
    let others = std::mem::take(&mut own.others);
    let mut views = vec![HostView {
        host: own.host.clone(),
        role: String::new(),
        up: true,
        stale: false,
        last_seen: None,
        error: None,
        snapshot: Some(own),
    }];
    views.extend(others);
    if let Some(h) = only {
        views.retain(|v| v.host == h);
        if views.is_empty() {
            return Err(anyhow!(
                "this daemon knows no host {h:?} (hosts reach each other through the bridge)"
            )
            .into());
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut ok = true;
    if json {
        agent_supervisor::outln!("{}", serde_json::to_string_pretty(&views).context("JSON")?);
    }
    for (i, v) in views.iter().enumerate() {
        let (host, up, error, last_seen, snap) =
            (&v.host, &v.up, &v.error, &v.last_seen, &v.snapshot);
        ok &= *up;
        if let Some(s) = snap {
            ok &= s.agents.iter().all(|a| a.state == AgentState::Running);
        }
        if json {
            continue;
        }
        if i > 0 {
            agent_supervisor::outln!();
        }
        let seen = last_seen.map_or("never".to_string(), |t| {
            format!("{:.0}s ago", (now - t).max(0.0))
        });
        match (up, error) {
            (true, _) if i == 0 && only.is_none() => {
                agent_supervisor::outln!("== host {host} (this host)")
            }
            (true, _) => agent_supervisor::outln!("== host {host}: up (seen {seen})"),
            (false, e) => agent_supervisor::outln!(
                "== host {host}: DOWN ({}; last seen {seen}){}",
                e.as_deref().unwrap_or("no answer"),
                if snap.is_some() {
                    ", its last known state:"
                } else {
                    ""
                }
            ),
        }
        if let Some(s) = snap {
            agent_supervisor::out!("{}", status_table(s));
        }
    }
    Ok(if ok { 0 } else { 3 })
}

/// The bridge's head line and one row per peer.
fn bridge_table(b: &BridgeStatus) -> String {
    let how = match (&b.implementation, b.pid) {
        (Some(i), Some(pid)) => format!("{i}, pid {pid}"),
        (Some(i), None) => i.clone(),
        (None, _) => "down".to_string(),
    };
    let mut out = format!(
        "interface {} ({how}), address {}, port {}, public key {}\n",
        b.interface, b.address, b.listen_port, b.public_key
    );
    if let Some(e) = &b.error {
        out.push_str(&format!("error: {e}\n"));
    }
    let header = [
        "PEER",
        "ADDRESS",
        "ENDPOINT",
        "HANDSHAKE",
        "RX",
        "TX",
        "RTT",
        "UP",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for p in &b.peers {
        rows.push(vec![
            p.host.clone(),
            p.address.clone(),
            p.endpoint.clone().unwrap_or_else(|| "-".into()),
            p.handshake_age_seconds
                .map_or("never".into(), |a| format!("{a:.0}s ago")),
            human_bytes(p.rx_bytes),
            human_bytes(p.tx_bytes),
            p.rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms")),
            if p.up { "yes" } else { "no" }.to_string(),
        ]);
    }
    out.push_str(&columns(rows));
    out
}

/// Rows as left-aligned columns; the first row is the header.
fn columns(rows: Vec<Vec<String>>) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row(a: &AgentStatus, address: String) -> Vec<String> {
    let running = matches!(a.state, AgentState::Running | AgentState::Stopping);
    let mut last = a
        .last_exit
        .as_ref()
        .map_or("-".to_string(), |e| e.to_string());
    if let Some(b) = a.backoff_seconds {
        last.push_str(&format!(" (retry in {b:.1}s)"));
    }
    vec![
        format!("{}:{}", a.group, a.agent),
        a.state.as_str().to_string(),
        a.health.as_str().to_string(),
        a.pid
            .filter(|_| running)
            .map_or("-".into(), |p| p.to_string()),
        address,
        a.uptime_seconds
            .filter(|_| running)
            .map_or("-".into(), uptime),
        a.restarts.to_string(),
        a.memory_bytes.map_or("-".into(), human_bytes),
        last,
    ]
}

/// `0:05:12`, `2d 3:04:05`.
fn uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}:{m:02}:{sec:02}")
    } else {
        format!("{h}:{m:02}:{sec:02}")
    }
}

/// `812.0K`, `23.4M`, `1.5G` (binary units).
fn human_bytes(b: u64) -> String {
    let units = ["K", "M", "G", "T", "P"];
    if b < 1024 {
        return format!("{b}B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = units[0];
    for u in &units[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1}{unit}")
}

/// One request whose answer is a [`Response`]; an error answer becomes a [`Failure`].
fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Response, Failure> {
    let mut buf = Vec::new();
    let status = exchange(socket, method, path, body, &mut buf)?;
    if status != 200 {
        return Err(http_failure(status, &buf, socket));
    }
    serde_json::from_slice(&buf)
        .with_context(|| format!("the daemon's answer to {method} {path} is not understood"))
        .map_err(Failure::from)
}

/// The message of an error answer (`{"error": "..."}`).
fn http_failure(status: u16, body: &[u8], socket: &Path) -> Failure {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    if status == 403 {
        return Failure {
            code: 2,
            message: format!("{message} (refused by the daemon on {})", socket.display()),
        };
    }
    Failure {
        code: 1,
        message: format!("ERROR ({message})"),
    }
}

async fn connect(socket: &Path) -> Result<UnixStream, Failure> {
    UnixStream::connect(socket)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => Failure {
                code: 2,
                message: format!(
                    "the agent-supervisor daemon is not running (no listener on {})",
                    socket.display()
                ),
            },
            std::io::ErrorKind::PermissionDenied => Failure {
                code: 2,
                message: format!(
                    "permission denied on {}: run supervisorctl as root, or join the daemon's \
                 control group (daemon.control_group in the system file)",
                    socket.display()
                ),
            },
            _ => Failure {
                code: 2,
                message: format!("cannot connect to {}: {e}", socket.display()),
            },
        })
}

/// Sends one HTTP/1.1 request and copies the answer's body to `out` as it arrives, flushing
/// after every piece (for `logs -f`); returns the status. An error answer is a [`Failure`].
fn exchange(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    out: &mut dyn Write,
) -> Result<u16, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the client's I/O runtime")?;
    runtime.block_on(exchange_on(socket, method, path, body, out))
}

async fn exchange_on(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    out: &mut dyn Write,
) -> Result<u16, Failure> {
    let stream = connect(socket).await?;
    let failed = |what: &str, e: &dyn std::fmt::Display| -> Failure {
        anyhow!("cannot {what} the daemon on {}: {e}", socket.display()).into()
    };
    let (mut sender, conn) = handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("talk to", &e))?;
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "agent-supervisor")
        .header(
            header::USER_AGENT,
            format!("supervisorctl/{}", agent_supervisor::VERSION),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONNECTION, "close")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .with_context(|| format!("malformed request {method} {path}"))?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| failed("send to", &e))?;
    let status = answer.status().as_u16();
    let mut body = answer.into_body();
    // An error answer is collected (to print its message); a good one streams to `out`.
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed("read from", &e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if status != 200 {
            collected.extend_from_slice(&data);
            continue;
        }
        match out.write_all(&data).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(status),
            Err(e) => return Err(anyhow!("cannot write the answer: {e}").into()),
        }
    }
    if status != 200 {
        return Err(http_failure(status, &collected, socket));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, dropped: u64, error: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "host": "h1", "group": "g", "agent": name, "state": "RUNNING",
            "health": "unknown", "health_detail": null, "pid": 7, "started_at": 1.0,
            "uptime_seconds": 5.0, "restarts": 0, "oom_kills": 0, "memory_bytes": null,
            "last_exit": null, "last_exit_code": null, "backoff_seconds": null,
            "log_dropped_bytes": dropped, "log_error": error,
        })
    }

    #[test]
    fn an_agent_that_lost_log_output_gets_a_line_under_its_row() {
        let s: Snapshot = serde_json::from_value(serde_json::json!({
            "host": "h1", "version": "0", "daemon_pid": 1, "daemon_started_at": 0.0,
            "agents": [
                agent("full", 12_595, Some("cannot write log file /l/full.stdout.log: No space left on device (os error 28)")),
                agent("fine", 0, None),
            ],
            "groups": [],
        }))
        .expect("a snapshot");
        let table = status_table(&s);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].starts_with("g:full "), "{table}");
        assert_eq!(
            lines[2],
            "  logs dropped: 12.3K (cannot write log file /l/full.stdout.log: No space left on device (os error 28))"
        );
        assert!(lines[3].starts_with("g:fine "), "{table}");
        // The columns stay aligned: the note is not a row.
        assert_eq!(
            lines[1].find("RUNNING"),
            lines[3].find("RUNNING"),
            "{table}"
        );
    }
}
