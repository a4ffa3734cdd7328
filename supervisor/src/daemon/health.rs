//! Health checks: `tcp` (connect), `http` (GET, 2xx/3xx healthy) and `exec` (exit 0), each
//! bounded by its timeout.
//!
//! A tcp or http probe opens a new connection each time (like the kubelet's probes: a check
//! of the agent's accept path too, not of one kept-alive connection) and closes it with
//! `SO_LINGER` 0, i.e. a reset instead of the FIN exchange: no `TIME_WAIT` socket per check
//! left on the host, and two packets fewer through the group's veth and conntrack.
//!
//! An http probe reads the answer to its end (the server closes an HTTP/1.0 answer) before
//! that reset, for at most [`DRAIN_BYTES`] and [`DRAIN_TIME`]: a reset in the middle of the
//! server's write is an error in the agent's own log (Python's `http.server` prints a
//! `ConnectionResetError` traceback for it), which a health check must not cause.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// At most this much of an http answer is read (and thrown away) after its status line.
pub const DRAIN_BYTES: usize = 64 * 1024;
/// At most this long is spent reading the rest of an http answer; the check's result is
/// known already, so a server that keeps the connection open costs this, not a failure.
pub const DRAIN_TIME: Duration = Duration::from_millis(500);

/// What to check: the plan's probe (resolved once, with the agent's port).
pub use agent_plan::Probe;

/// Runs one check; `Err` carries the reason it failed.
pub async fn check(p: &Probe, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(p)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// A new connection to the agent, closed with a reset when dropped (see the module doc).
async fn connect(addr: std::net::Ipv4Addr, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_zero_linger()?;
    socket.connect((addr, port).into()).await
}

async fn run(p: &Probe) -> Result<(), String> {
    match p {
        Probe::Tcp { addr, port } => connect(*addr, *port)
            .await
            .map(|_| ())
            .map_err(|e| format!("tcp {addr}:{port}: {e}")),
        Probe::Http { addr, port, path } => {
            let mut s = connect(*addr, *port)
                .await
                .map_err(|e| format!("http {addr}:{port}: {e}"))?;
            let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}:{port}\r\nUser-Agent: agent-supervisor\r\n\r\n");
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("http {path}: {e}"))?;
            let mut buf = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let r = s
                    .read(&mut buf[n..])
                    .await
                    .map_err(|e| format!("http {path}: {e}"))?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("http {path}: not an HTTP response"))?;
            drain(&mut s).await;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("http {path}: status {code}"))
            }
        }
        Probe::Exec(argv) => {
            let Some(program) = argv.first() else {
                return Err("exec: an empty command".to_string());
            };
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let status = cmd
                .status()
                .await
                .map_err(|e| format!("exec {program}: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("exec {program}: {status}"))
            }
        }
    }
}

/// Reads the rest of an answer until the server closes, [`DRAIN_BYTES`] or [`DRAIN_TIME`];
/// a read error here changes nothing (the status is known).
async fn drain(s: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while total < DRAIN_BYTES {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
