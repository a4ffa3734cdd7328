//! The fixtures of the control API tests (`control_api.rs`, `control_access.rs`): a fixed
//! snapshot, a small task that stands in for the daemon core, the server on a socket of its
//! own, and raw HTTP helpers.
#![allow(dead_code, unused_imports)] // each test binary uses part of it (and of these imports)
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

pub use std::io::{BufRead, BufReader, Read, Write};
pub use std::net::{SocketAddr, TcpStream};
pub use std::os::unix::fs::{MetadataExt, PermissionsExt};
pub use std::os::unix::net::UnixStream;
pub use std::path::Path;
pub use std::path::PathBuf;
pub use std::process::Command;
pub use std::process::Stdio;
pub use std::time::{Duration, Instant};

pub use agent_supervisor::daemon::api::{
    AgentState, AgentStatus, ApiError, ControlMsg, GroupStatus, Health, LastExit, ReloadResult,
    Request, Response, Snapshot,
};
pub use agent_supervisor::daemon::control::{serve_control_with, ControlError};
pub use agent_supervisor::daemon::http::ServerLimits;
pub use agent_supervisor::daemon::observe::serve_http_with;
pub use tokio::sync::mpsc;
pub use tokio_util::sync::CancellationToken;

pub const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

pub fn agent(group: &str, name: &str, state: AgentState, health: Health) -> AgentStatus {
    let running = state == AgentState::Running;
    AgentStatus {
        host: "h1".into(),
        group: group.into(),
        agent: name.into(),
        state,
        health,
        health_detail: None,
        pid: running.then_some(4242),
        started_at: running.then_some(1_764_000_000.5),
        uptime_seconds: running.then_some(312.0),
        restarts: 0,
        oom_kills: 0,
        memory_bytes: running.then_some(24_536_678),
        last_exit: None,
        last_exit_code: None,
        backoff_seconds: None,
        log_dropped_bytes: 0,
        log_error: None,
    }
}

/// Two groups, five agents: two RUNNING (one of them unhealthy), BACKOFF, FATAL, STOPPED.
pub fn snapshot() -> Snapshot {
    use AgentState::*;
    use Health::*;
    let mut transcriber = agent("audio", "Transcriber", Running, Unhealthy);
    transcriber.health_detail = Some("GET /health: 500".into());
    transcriber.restarts = 2;
    let mut front = agent("web", "Front", Backoff, Unknown);
    front.last_exit = Some(LastExit::Code { code: 1 });
    front.last_exit_code = Some(1);
    front.backoff_seconds = Some(2.5);
    front.restarts = 4;
    let mut worker = agent("web", "Worker", Fatal, Unknown);
    worker.last_exit = Some(LastExit::OomKilled);
    worker.oom_kills = 3;
    let mut idle = agent("web", "Idle", Stopped, Unknown);
    idle.last_exit = Some(LastExit::StoppedByUser);
    Snapshot {
        host: "h1".into(),
        version: "0.1.0-test".into(),
        daemon_pid: 1,
        daemon_started_at: 1_764_000_000.0,
        agents: vec![
            agent("audio", "AudioCapture", Running, Healthy),
            transcriber,
            front,
            worker,
            idle,
        ],
        groups: vec![
            GroupStatus {
                host: "h1".into(),
                group: "audio".into(),
                init_pid: Some(4000),
                memory_usage_bytes: Some(50_000_000),
                memory_limit_bytes: Some(1 << 30),
                cpu_seconds: Some(12.25),
                pids: Some(7),
                address: Some("10.88.1.7".into()),
                network_rx_bytes: Some(1000),
                network_tx_bytes: Some(2000),
                gpus: vec!["nvidia.com/gpu=0".into()],
                gpu_absent: None,
                image: None,
                image_digest: None,
            },
            GroupStatus {
                host: "h1".into(),
                group: "web".into(),
                init_pid: None,
                memory_usage_bytes: None,
                memory_limit_bytes: None,
                cpu_seconds: None,
                pids: None,
                address: None,
                network_rx_bytes: None,
                network_tx_bytes: None,
                gpus: Vec::new(),
                gpu_absent: Some("1 GPU(s) requested, 0 present".into()),
                image: None,
                image_digest: None,
            },
        ],
        bridge: None,
        gpu: None,
        process: None,
        others: Vec::new(),
    }
}

/// The stand-in core's answer.
pub fn answer(snap: &Snapshot, request: Request) -> Result<Response, ApiError> {
    let resolve = |targets: &[String]| -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        for t in targets {
            let hits: Vec<String> = snap
                .agents
                .iter()
                .filter(|a| match t.split_once(':') {
                    _ if t == "all" => true,
                    Some((g, "*")) => a.group == g,
                    _ => a.agent == *t,
                })
                .map(|a| a.agent.clone())
                .collect();
            if hits.is_empty() {
                return Err(ApiError::not_found(format!(
                    "no agent or group named {t:?}"
                )));
            }
            out.extend(hits);
        }
        Ok(out)
    };
    let done = |targets: &[String], what: &str| -> Result<Response, ApiError> {
        Ok(Response::Done {
            results: resolve(targets)?
                .into_iter()
                .map(|a| (a, what.to_string()))
                .collect(),
        })
    };
    match request {
        Request::Status { targets } => {
            let mut s = snap.clone();
            if !targets.is_empty() {
                let names = resolve(&targets)?;
                s.agents.retain(|a| names.contains(&a.agent));
            }
            Ok(Response::Status { snapshot: s })
        }
        Request::Start { targets } => done(&targets, "started"),
        Request::Stop { targets } => done(&targets, "stopped"),
        Request::Restart { targets } => done(&targets, "restarted"),
        Request::Signal { signal, targets } => done(&targets, &format!("signalled {signal}")),
        Request::Reload => Ok(Response::Reloaded {
            result: ReloadResult {
                added: vec!["NewAgent".into()],
                removed: vec!["OldAgent".into()],
                changed: vec!["Front".into()],
                unchanged: 4,
            },
        }),
        Request::Shutdown => Ok(Response::ShuttingDown),
        Request::Version => Ok(Response::Version {
            version: "0.1.0-test".into(),
            pid: 1,
        }),
    }
}

/// `serve_control` and `serve_http` on a thread of their own, with a stand-in core.
pub struct Server {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub http: SocketAddr,
    pub log_dir: PathBuf,
    pub cancel: CancellationToken,
    pub thread: Option<std::thread::JoinHandle<Result<(), ControlError>>>,
}

impl Server {
    pub fn start(name: &str, group: Option<&str>, limits: ServerLimits) -> Server {
        let dir = PathBuf::from(format!("/tmp/as-ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log_dir = dir.join("log");
        std::fs::create_dir_all(&log_dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("run/control.sock");
        let http = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let cancel = CancellationToken::new();
        let (c, s, g, ld) = (
            cancel.clone(),
            socket.clone(),
            group.map(str::to_string),
            log_dir.clone(),
        );
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, mut rx) = mpsc::channel::<ControlMsg>(16);
                let snap = snapshot();
                tokio::spawn(async move {
                    while let Some(m) = rx.recv().await {
                        let _ = m.reply.send(answer(&snap, m.request));
                    }
                });
                let (tx2, c2, l2) = (tx.clone(), c.clone(), limits.clone());
                tokio::spawn(async move {
                    serve_http_with(http, tx2, l2, c2).await.unwrap();
                });
                serve_control_with(&s, g, tx, ld, limits, c).await
            })
        });
        let server = Server {
            dir,
            socket,
            http,
            log_dir,
            cancel,
            thread: Some(thread),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&server.socket).is_err()
            || TcpStream::connect(server.http).is_err()
        {
            assert!(Instant::now() < deadline, "the servers did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(CTL)
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Raw bytes to the control socket; (status, body) of the answer.
    pub fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(request);
        read_answer(&mut s)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn read_answer(s: &mut impl Read) -> (u16, String) {
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    read_answer(&mut s)
}

pub fn quick() -> ServerLimits {
    ServerLimits {
        request_timeout: Duration::from_millis(700),
        ..ServerLimits::default()
    }
}
