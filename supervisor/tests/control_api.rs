//! The control API and the observability listener over real sockets: `serve_control` and
//! `serve_http` answer from a fixed snapshot (a small task stands in for the daemon core,
//! which is not under test here); the real `supervisorctl` binary and raw socket writes check
//! the output, the exit codes, the hardening (400, 408, 411, 413, 431) and the peer checks, and
//! `promtool check metrics` checks `/metrics`.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_supervisor::daemon::api::{
    AgentState, AgentStatus, ApiError, ControlMsg, GroupStatus, Health, LastExit, ReloadResult,
    Request, Response, Snapshot,
};
use agent_supervisor::daemon::control::{serve_control_with, ControlError};
use agent_supervisor::daemon::http::ServerLimits;
use agent_supervisor::daemon::metrics::HealthReport;
use agent_supervisor::daemon::observe::serve_http_with;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

fn agent(group: &str, name: &str, state: AgentState, health: Health) -> AgentStatus {
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
    }
}

/// Two groups, five agents: two RUNNING (one of them unhealthy), BACKOFF, FATAL, STOPPED.
fn snapshot() -> Snapshot {
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
            },
        ],
        bridge: None,
        gpu: None,
        others: Vec::new(),
    }
}

/// The stand-in core's answer.
fn answer(snap: &Snapshot, request: Request) -> Result<Response, ApiError> {
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
struct Server {
    dir: PathBuf,
    socket: PathBuf,
    http: SocketAddr,
    log_dir: PathBuf,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<(), ControlError>>>,
}

impl Server {
    fn start(name: &str, group: Option<&str>, limits: ServerLimits) -> Server {
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

    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
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
    fn raw(&self, request: &[u8]) -> (u16, String) {
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

fn read_answer(s: &mut impl Read) -> (u16, String) {
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

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    read_answer(&mut s)
}

fn quick() -> ServerLimits {
    ServerLimits {
        request_timeout: Duration::from_millis(700),
        ..ServerLimits::default()
    }
}

#[test]
fn status_text_json_and_exit_codes() {
    let srv = Server::start("status", None, quick());
    let mode = std::fs::metadata(&srv.socket).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket is owner-only by default");

    let (code, out, err) = srv.ctl(&["status"]);
    assert_eq!(
        code, 3,
        "BACKOFF/FATAL/STOPPED agents make status exit 3: {out}{err}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(lines[0].starts_with("GROUP:AGENT"), "{out}");
    for h in [
        "STATE",
        "HEALTH",
        "PID",
        "ADDRESS",
        "UPTIME",
        "RESTARTS",
        "MEMORY",
        "LAST EXIT",
    ] {
        assert!(lines[0].contains(h), "header lacks {h}: {out}");
    }
    let col = lines[0].find("STATE").unwrap();
    for l in &lines[1..] {
        assert_ne!(&l[col..col + 1], " ", "columns are aligned: {out}");
    }
    assert!(lines[1].starts_with("audio:AudioCapture"), "{out}");
    assert!(
        lines[1].contains("RUNNING") && lines[1].contains("healthy"),
        "{out}"
    );
    assert!(
        lines[1].contains("4242") && lines[1].contains("0:05:12"),
        "{out}"
    );
    assert!(lines[1].contains("23.4M"), "{out}");
    assert!(lines[2].contains("unhealthy"), "{out}");
    assert!(out.contains("exit 1 (retry in 2.5s)"), "{out}");
    assert!(
        out.contains("OOM-killed") && out.contains("stopped by user"),
        "{out}"
    );

    let (code, out, _) = srv.ctl(&["status", "AudioCapture"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");

    let (code, out, _) = srv.ctl(&["status", "audio:*"]);
    assert_eq!(
        code, 0,
        "unhealthy but RUNNING is exit 0, like supervisord: {out}"
    );
    assert_eq!(out.lines().count(), 3, "{out}");

    let (code, out, _) = srv.ctl(&["status", "--json", "web:*"]);
    assert_eq!(code, 3);
    let snap: Snapshot = serde_json::from_str(&out).unwrap();
    assert_eq!(snap.agents.len(), 3);

    let (code, _, err) = srv.ctl(&["status", "Nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no agent or group named \"Nope\""), "{err}");

    let (code, _, err) = srv.ctl(&["status", "../etc"]);
    assert_eq!(code, 1);
    assert!(err.contains("malformed target"), "{err}");
}

#[test]
fn actions_print_one_line_per_agent() {
    let srv = Server::start("actions", None, quick());
    let (code, out, err) = srv.ctl(&["start", "AudioCapture", "web:*"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "AudioCapture: started\nFront: started\nWorker: started\nIdle: started\n"
    );
    let (_, out, _) = srv.ctl(&["stop", "Front"]);
    assert_eq!(out, "Front: stopped\n");
    let (_, out, _) = srv.ctl(&["restart", "all"]);
    assert_eq!(out.lines().count(), 5);
    let (_, out, _) = srv.ctl(&["signal", "HUP", "Front"]);
    assert_eq!(out, "Front: signalled HUP\n");
    let (code, out, _) = srv.ctl(&["reload"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "NewAgent: added\nOldAgent: removed\nFront: changed\n4 agents unchanged\n"
    );
    let (code, out, _) = srv.ctl(&["version"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("agent-supervisor daemon 0.1.0-test (pid 1)"),
        "{out}"
    );
    let (code, _, err) = srv.ctl(&["start"]);
    assert_eq!(code, 2, "clap refuses start without names: {err}");
    let (code, out, _) = srv.ctl(&["shutdown"]);
    assert_eq!((code, out.as_str()), (0, "Shut down\n"));
    let (code, out, _) = srv.ctl(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("supervisorctl"), "{out}");

    // The same through curl-style raw requests.
    let (status, body) = srv.raw(
        b"POST /v1/start HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\n{\"targets\": [\"Front\"]}\n\n",
    );
    assert_eq!(status, 200, "{body}");
    let resp: Response = serde_json::from_str(&body).unwrap();
    assert_eq!(
        resp,
        Response::Done {
            results: vec![("Front".into(), "started".into())]
        }
    );
    let (status, body) =
        srv.raw(b"POST /v1/start HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("missing field `targets`"), "{body}");
}

#[test]
fn curl_speaks_to_the_socket() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP curl_speaks_to_the_socket: curl is not installed");
        return;
    }
    let srv = Server::start("curl", None, quick());
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--unix-socket"])
            .arg(&srv.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        serde_json::from_slice::<Response>(&out.stdout).unwrap()
    };
    let Response::Status { snapshot } = curl(&["http://localhost/v1/status?targets=web:*"]) else {
        panic!("not a status answer");
    };
    assert_eq!(snapshot.agents.len(), 3);
    let resp = curl(&[
        "-d",
        r#"{"targets": ["Front"]}"#,
        "http://localhost/v1/stop",
    ]);
    assert_eq!(
        resp,
        Response::Done {
            results: vec![("Front".into(), "stopped".into())]
        }
    );
    let resp = curl(&["-X", "POST", "http://localhost/v1/reload"]);
    assert!(matches!(resp, Response::Reloaded { .. }), "{resp:?}");
}

/// Bad requests get their status and a JSON error (a head hyper cannot parse gets hyper's bare
/// answer, without a body), and the server goes on answering.
#[test]
fn malformed_oversized_unknown_and_wrong_method() {
    let srv = Server::start("malformed", None, quick());
    let get = "GET /v1/version HTTP/1.1\r\nHost: x\r\n";
    let post = "POST /v1/stop HTTP/1.1\r\nHost: x\r\n";
    let big_head = format!("{get}X-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let many_headers = format!("{get}{}\r\n", "X-A: b\r\n".repeat(101));
    let cases = [
        ("GARBAGE\r\n\r\n".to_string(), 400, None),
        (
            "GET /v1/version HTTP/1.1\r\n\r\n".into(),
            400,
            Some("without a Host"),
        ),
        (format!("{get}Host x\r\n\r\n"), 400, None),
        ("GET / HTTP/3.0\r\nHost: x\r\n\r\n".into(), 400, None),
        (
            "GET /v1/%zz HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
            Some("malformed percent-encoding"),
        ),
        (
            "GET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            404,
            Some("no route /v1/x"),
        ),
        (
            "DELETE /v1/status HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            405,
            Some("DELETE not allowed"),
        ),
        (
            format!("{post}Content-Length: 5\r\n\r\n{{oops"),
            400,
            Some("malformed JSON body"),
        ),
        (
            format!("{post}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            411,
            Some("Content-Length"),
        ),
        (big_head, 431, None),
        (many_headers, 431, None),
        (
            format!("{post}Content-Length: 1000000\r\n\r\n{{"),
            413,
            Some("limit of 65536 bytes"),
        ),
    ];
    for (req, status, msg) in cases {
        let (got, body) = srv.raw(req.as_bytes());
        assert_eq!(got, status, "{:?}: {body}", &req[..req.len().min(80)]);
        match msg {
            Some(msg) => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(v["error"].as_str().unwrap().contains(msg), "{body}");
            }
            None => assert_eq!(body, "", "hyper's own answer has no body"),
        }
        let (status, body) = srv.raw(format!("{get}\r\n").as_bytes());
        assert_eq!(status, 200, "the server still answers: {body}");
    }
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    s.write_all(format!("{get}\r\n").as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "connection: close",
        "cache-control: no-store",
        "x-content-type-options",
    ] {
        assert!(head.contains(h), "every answer has {h}: {head}");
    }
    let (code, _, _) = srv.ctl(&["status", "AudioCapture"]);
    assert_eq!(code, 0);
}

#[test]
fn slow_client_gets_408_while_others_are_served() {
    let limits = ServerLimits {
        request_timeout: Duration::from_millis(1200),
        ..ServerLimits::default()
    };
    let srv = Server::start("slow", None, limits);
    let started = Instant::now();
    let mut slow = UnixStream::connect(&srv.socket).unwrap();
    slow.write_all(b"GET /v1/version HTTP/1.1\r\nHo").unwrap();
    // Meanwhile other clients are served, while the stalled one still waits for its answer.
    for _ in 0..3 {
        let (code, _, _) = srv.ctl(&["status", "AudioCapture"]);
        assert_eq!(code, 0);
    }
    slow.set_nonblocking(true).unwrap();
    let early = slow.read(&mut [0u8; 16]);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the stalled client was answered before the others were served ({:?}): {early:?}",
        started.elapsed()
    );
    slow.set_nonblocking(false).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (status, body) = read_answer(&mut slow);
    let waited = started.elapsed();
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("not received within 1200 ms"), "{body}");
    assert!(
        waited >= Duration::from_millis(1150) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn logs_tail_rotation_and_follow() {
    let srv = Server::start("logs", None, quick());
    let log = srv.log_dir.join("AudioCapture.stdout.log");
    let line = |i: u32| format!("2026-11-24T02:33:{i:02}.123Z line {i}\n");
    let older: String = (1..=3).map(line).collect();
    let newer: String = (4..=5).map(line).collect();
    std::fs::write(format!("{}.1", log.display()), &older).unwrap();
    std::fs::write(&log, &newer).unwrap();
    std::fs::write(srv.log_dir.join("AudioCapture.stderr.log"), "oops\n").unwrap();

    let (code, out, err) = srv.ctl(&["logs", "-n", "2", "AudioCapture"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, newer);
    let (_, out, _) = srv.ctl(&["logs", "-n", "4", "AudioCapture"]);
    assert_eq!(
        out,
        (2..=5).map(line).collect::<String>(),
        "spans the rotated file"
    );
    let (_, out, _) = srv.ctl(&["logs", "AudioCapture", "--stderr"]);
    assert_eq!(out, "oops\n");
    // Known to the core, but no log yet: empty.
    let (code, out, _) = srv.ctl(&["logs", "Front"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, _, err) = srv.ctl(&["logs", "Ghost"]);
    assert_eq!(code, 1);
    assert!(err.contains("no agent named \"Ghost\""), "{err}");
    let (code, _, err) = srv.ctl(&["logs", "../../etc/passwd"]);
    assert_eq!(code, 1);
    assert!(err.contains("malformed agent name"), "{err}");

    // Follow: new lines, then a rotation (rename + new file), then more lines.
    let mut child = Command::new(CTL)
        .arg("-s")
        .arg(&srv.socket)
        .args(["logs", "-f", "-n", "1", "AudioCapture"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            if tx.send(l.unwrap()).is_err() {
                return;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(5)).unwrap() + "\n";
    assert_eq!(next(), line(5));
    let append = |text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append(&line(6));
    assert_eq!(next(), line(6));
    append(&line(7));
    std::fs::rename(&log, format!("{}.1", log.display())).unwrap();
    append(&line(8));
    assert_eq!(next(), line(7), "the rest of the rotated file comes first");
    assert_eq!(next(), line(8));
    // Truncated in place (same inode, shorter): read again from the start.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&log, "x\n").unwrap();
    assert_eq!(next(), "x\n");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn metrics_pass_promtool_and_health_reports() {
    let srv = Server::start("metrics", None, quick());
    let (status, body) = http_get(srv.http, "/metrics");
    assert_eq!(status, 200, "{body}");
    for series in [
        "agent_supervisor_agent_state{host=\"h1\",group=\"web\",agent=\"Front\",state=\"BACKOFF\"} 1",
        "agent_supervisor_agent_up{host=\"h1\",group=\"audio\",agent=\"AudioCapture\"} 1",
        "agent_supervisor_agent_healthy{host=\"h1\",group=\"audio\",agent=\"Transcriber\"} 0",
        "agent_supervisor_agent_restarts_total{host=\"h1\",group=\"web\",agent=\"Front\"} 4",
        "container_oom_events_total{host=\"h1\",group=\"web\",agent=\"Worker\"} 3",
        "agent_supervisor_agent_last_exit_code{host=\"h1\",group=\"web\",agent=\"Front\"} 1",
        "container_memory_usage_bytes{host=\"h1\",group=\"audio\"} 50000000",
        "container_spec_memory_limit_bytes{host=\"h1\",group=\"audio\"} 1073741824",
        "container_cpu_usage_seconds_total{host=\"h1\",group=\"audio\"} 12.25",
        "agent_supervisor_group_pids{host=\"h1\",group=\"audio\"} 7",
        "agent_supervisor_build_info{host=\"h1\",version=\"0.1.0-test\"} 1",
    ] {
        assert!(body.contains(series), "missing {series} in\n{body}");
    }
    assert!(
        !body.contains("agent_supervisor_agent_healthy{host=\"h1\",group=\"web\""),
        "unknown health has no series"
    );
    assert_eq!(body.matches("state=").count(), 5 * 7);

    let promtool = Command::new("promtool").arg("--version").output();
    if promtool.is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("promtool is missing (apt-get install prometheus)");
        }
        eprintln!("SKIP promtool check: promtool is not installed");
    } else {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{text}\n{body}"
        );
        assert!(text.trim().is_empty(), "promtool lint problems:\n{text}");
    }

    let (status, body) = http_get(srv.http, "/health");
    assert_eq!(status, 503, "{body}");
    let report: HealthReport = serde_json::from_str(&body).unwrap();
    assert!(!report.ok);
    assert_eq!((report.host.as_str(), report.agents), ("h1", 5));
    assert_eq!(report.states.get("RUNNING"), Some(&2));
    let names: Vec<&str> = report
        .not_healthy
        .iter()
        .map(|a| a.agent.as_str())
        .collect();
    assert_eq!(names, ["Transcriber", "Front", "Worker", "Idle"]);
    assert_eq!(
        report.not_healthy[0].detail.as_deref(),
        Some("GET /health: 500")
    );

    let (status, _) = http_get(srv.http, "/nothing");
    assert_eq!(status, 404);
    let mut s = TcpStream::connect(srv.http).unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut s).0, 405);
}

#[test]
fn daemon_not_running_is_a_clear_message() {
    let missing = "/tmp/as-ctl-no-such-dir/control.sock";
    let out = Command::new(CTL)
        .args(["-s", missing, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "supervisorctl: the agent-supervisor daemon is not running (no listener on {missing})\n"
        )
    );
    let out = Command::new(CTL)
        .arg("status")
        .env("AGENT_SUPERVISOR_SOCKET", missing)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing));
}

/// Runs `supervisorctl` as uid 65534 with primary group `gid` and no others.
fn ctl_as_nobody(srv: &Server, gid: u32, args: &[&str]) -> (i32, String) {
    let bin = srv.dir.join("supervisorctl");
    if !bin.exists() {
        std::fs::copy(CTL, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        srv.socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
        .arg(&bin)
        .arg("-s")
        .arg(&srv.socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn non_root_peers_are_refused() {
    if !agent_supervisor_tests::fixture::root_or_skip("non_root_peers_are_refused") {
        return;
    }
    let srv = Server::start("peer", None, quick());
    // Mode 0600: the kernel refuses the connection.
    let (code, out) = ctl_as_nobody(&srv, 65534, &["status"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("permission denied on"), "{out}");
    assert!(out.contains("run supervisorctl as root, or join the daemon's control group"));
    // Even when the file mode lets it in, SO_PEERCRED does not.
    std::fs::set_permissions(&srv.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, out) = ctl_as_nobody(&srv, 65534, &["status"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("permission denied: uid 65534 is not root"),
        "{out}"
    );
    assert!(out.contains("refused by the daemon"), "{out}");
    let (status, _) = srv.raw(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "root is still served");
}

#[test]
fn control_group_members_are_served() {
    if !agent_supervisor_tests::fixture::root_or_skip("control_group_members_are_served") {
        return;
    }
    let Ok(Some(group)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(65534)) else {
        eprintln!("SKIP control_group_members_are_served: no group with gid 65534");
        return;
    };
    let srv = Server::start("group", Some(&group.name), quick());
    let meta = std::fs::metadata(&srv.socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 65534));
    let (code, out) = ctl_as_nobody(&srv, 65534, &["status", "AudioCapture"]);
    assert_eq!(code, 0, "a member of the control group is served: {out}");
    // Another group: the socket's mode keeps it out.
    let (code, out) = ctl_as_nobody(&srv, 1, &["status"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("permission denied"), "{out}");
}

fn serve_once(socket: &Path, group: Option<&str>) -> Result<(), ControlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (tx, _rx) = mpsc::channel(1);
    rt.block_on(serve_control_with(
        socket,
        group.map(str::to_string),
        tx,
        PathBuf::from("/nonexistent"),
        ServerLimits::default(),
        cancel,
    ))
}

#[test]
fn socket_setup_errors_name_their_subject() {
    let dir = PathBuf::from(format!("/tmp/as-ctl-setup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("control.sock");

    let err = serve_once(&socket, Some("no-such-group-xyz")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "control_group \"no-such-group-xyz\" does not exist on this machine"
    );
    // A stale socket (nobody listening) is replaced; the socket is removed on shutdown.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    serve_once(&socket, None).unwrap();
    assert!(!socket.exists());
    // A live one is not.
    let live = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = serve_once(&socket, None).unwrap_err();
    assert!(
        err.to_string().contains("another daemon already answers"),
        "{err}"
    );
    drop(live);
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, "not a socket").unwrap();
    let err = serve_once(&socket, None).unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
