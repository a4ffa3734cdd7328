//! Health checks: `tcp` (connect), `http` (GET, 2xx/3xx healthy) and `exec` (exit 0), each
//! bounded by its timeout.

use std::time::Duration;

use agent_config::model::{Health, TcpTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to check, resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp(u16),
    Http { port: u16, path: String },
    Exec(Vec<String>),
}

impl Probe {
    /// The probe of a health section, with the agent's first port.
    pub fn from_config(h: &Health, port: Option<u16>) -> Option<Probe> {
        if let Some(t) = h.tcp {
            return Some(Probe::Tcp(match t {
                TcpTarget::Port(p) => p.0,
                TcpTarget::AgentPort => port?,
            }));
        }
        if let Some(path) = &h.http {
            return Some(Probe::Http {
                port: port?,
                path: path.clone(),
            });
        }
        h.exec.as_ref().map(|c| Probe::Exec(c.0.clone()))
    }
}

/// Runs one check; `Err` carries the reason it failed.
pub async fn check(p: &Probe, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(p)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

async fn run(p: &Probe) -> Result<(), String> {
    match p {
        Probe::Tcp(port) => tokio::net::TcpStream::connect(("127.0.0.1", *port))
            .await
            .map(|_| ())
            .map_err(|e| format!("tcp 127.0.0.1:{port}: {e}")),
        Probe::Http { port, path } => {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .map_err(|e| format!("http 127.0.0.1:{port}: {e}"))?;
            let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: agent-supervisor\r\n\r\n");
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
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("http {path}: status {code}"))
            }
        }
        Probe::Exec(argv) => {
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let status = cmd
                .status()
                .await
                .map_err(|e| format!("exec {}: {e}", argv[0]))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("exec {}: {status}", argv[0]))
            }
        }
    }
}
