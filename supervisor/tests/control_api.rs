//! The control API and the observability listener over real sockets: `serve_control` and
//! `serve_http` answer from a fixed snapshot (a small task stands in for the daemon core,
//! which is not under test here); the real `supervisorctl` binary and raw socket writes check
//! the output, the exit codes, the hardening (400, 408, 411, 413, 431) and the peer checks, and
//! `promtool check metrics` checks `/metrics`.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use agent_supervisor::daemon::metrics::HealthReport;

mod control_common;
use control_common::*;

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

/// A connection that holds the only slot: a request head that never ends.
fn hold_the_slot(srv: &Server) -> UnixStream {
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    s.write_all(b"GET /v1/version HTTP/1.1\r\nHo").unwrap();
    // Accepted and admitted before the next connection arrives.
    std::thread::sleep(Duration::from_millis(150));
    s
}

/// A whole request on a new connection, its answer read on a thread.
fn ask_version(srv: &Server) -> std::thread::JoinHandle<(u16, String, Duration)> {
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    std::thread::spawn(move || {
        let (status, body) = read_answer(&mut s);
        (status, body, t.elapsed())
    })
}

#[test]
fn connections_over_the_limit_wait_for_a_slot_and_only_a_full_line_is_refused() {
    let limits = ServerLimits {
        request_timeout: Duration::from_millis(800),
        max_connections: 1,
        max_waiting: 1,
        queue_timeout: Duration::from_secs(5),
        ..ServerLimits::default()
    };
    let srv = Server::start("queue", None, limits);
    let mut slow = hold_the_slot(&srv);
    // The second waits in line until the slot is free (the slow one's 408), then is served;
    // the third finds the line full and is refused at once.
    let second = ask_version(&srv);
    std::thread::sleep(Duration::from_millis(150));
    let (status, body, refused_after) = ask_version(&srv).join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("too many connections (1 served and 1 waiting at once)"),
        "{body}"
    );
    assert!(
        refused_after < Duration::from_millis(500),
        "{refused_after:?}"
    );
    let (status, body, served_after) = second.join().unwrap();
    assert_eq!(status, 200, "the waiting connection is served: {body}");
    assert!(body.contains("version"), "{body}");
    assert!(
        served_after >= Duration::from_millis(400),
        "it waited for the slot: {served_after:?}"
    );
    assert_eq!(read_answer(&mut slow).0, 408);
    drop(srv);

    // A wait longer than queue_timeout ends in 503.
    let limits = ServerLimits {
        request_timeout: Duration::from_secs(3),
        max_connections: 1,
        queue_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    };
    let srv = Server::start("queue-timeout", None, limits);
    let _slow = hold_the_slot(&srv);
    let (status, body, after) = ask_version(&srv).join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(2),
        "{after:?}"
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
        "agent_supervisor_group_gpus{host=\"h1\",group=\"audio\"} 1",
        "agent_supervisor_group_gpu_absent{host=\"h1\",group=\"audio\"} 0",
        "agent_supervisor_group_gpus{host=\"h1\",group=\"web\"} 0",
        "agent_supervisor_group_gpu_absent{host=\"h1\",group=\"web\"} 1",
        "agent_supervisor_build_info{host=\"h1\",version=\"0.1.0-test\"} 1",
    ] {
        assert!(body.contains(series), "missing {series} in\n{body}");
    }
    assert!(
        !body.contains("agent_supervisor_agent_healthy{host=\"h1\",group=\"web\""),
        "unknown health has no series"
    );
    assert_eq!(body.matches("state=").count(), 5 * 7);

    if let Some(text) = agent_supervisor_tests::fixture::promtool_check(&body) {
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
fn the_http_listener_queues_a_burst_of_connections() {
    let srv = Server::start("backlog", None, quick());
    // `ss -l` shows a listener's backlog as its Send-Q: 1024 (or the kernel's cap), not
    // `TcpListener::bind`'s 128, which drops the SYNs of a burst of 200 clients.
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", srv.http.port())])
        .output();
    let Ok(out) = out else {
        assert!(std::env::var_os("CI").is_none(), "ss (iproute2) is missing");
        eprintln!("SKIP the_http_listener_queues_a_burst_of_connections: no ss");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let backlog: u32 = text
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listener on {} in {text:?}", srv.http));
    let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    assert_eq!(backlog, 1024.min(cap), "{text}");
}
