//! Status from a real daemon as root: a hundred clients asking at once are all answered with
//! every agent, and an answer never predates its request — a status asked right after a
//! restart, in the middle of the burst, shows the new process; and once the control socket
//! is there, so is the HTTP listener.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_supervisor_tests::fixture::{root_or_skip, Fixture};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

/// `GET /v1/status` on the control socket: the status code and the JSON body.
fn status(socket: &Path) -> (u16, Value) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /v1/status HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn pid_of(v: &Value, agent: &str) -> Option<i64> {
    v["snapshot"]["agents"]
        .as_array()?
        .iter()
        .find(|a| a["agent"] == agent)?["pid"]
        .as_i64()
}

#[test]
fn a_burst_of_status_requests_is_answered_and_no_answer_predates_its_request() {
    if !root_or_skip("a_burst_of_status_requests_is_answered_and_no_answer_predates_its_request") {
        return;
    }
    let mut groups = String::new();
    for g in 0..4 {
        groups.push_str(&format!("  burst{g}:\n    host: h1\n    agents:\n"));
        for a in 0..5 {
            groups.push_str(&format!(
                "      - name: b{g}x{a}\n        command: [sleep, '600']\n"
            ));
        }
    }
    let f = Fixture::new(BIN, "status-burst", "burst", &groups);
    let mut daemon = f.start_daemon();
    let socket = f.socket();
    let t = Instant::now();
    while pid_of(&status(&socket).1, "b3x4").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not up:\n{}",
            f.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = pid_of(&status(&socket).1, "b0x0").unwrap();
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        let (code, v) = status(&socket);
                        (code, v["snapshot"]["agents"].as_array().map_or(0, Vec::len))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // In the middle of the burst: a restart, then a status that must show its new process.
    let out = f.ctl(CTL, &["restart", "b0x0"]);
    assert!(out.status.success(), "{out:?}");
    let after = pid_of(&status(&socket).1, "b0x0");
    assert!(
        after.is_some_and(|p| p != before),
        "the status after the restart shows pid {after:?} (was {before})"
    );
    let mut answered = 0;
    for c in clients {
        for (code, agents) in c.join().unwrap() {
            assert_eq!((code, agents), (200, 20), "a status in the burst");
            answered += 1;
        }
    }
    assert_eq!(answered, 500);
    let out = f.ctl(CTL, &["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let _ = daemon.wait();
}

#[test]
fn once_the_control_socket_is_there_the_http_listener_answers() {
    if !root_or_skip("once_the_control_socket_is_there_the_http_listener_answers") {
        return;
    }
    let f = Fixture::new(
        BIN,
        "listen-order",
        "listen",
        "  lo:\n    host: h1\n    agents:\n      - name: lo-a\n        command: [sleep, '600']\n",
    );
    for round in 0..5 {
        let _ = std::fs::remove_file(f.socket());
        let mut daemon = f.start_daemon();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], f.port));
        let connected = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2));
        assert!(
            connected.is_ok(),
            "round {round}: the control socket is there, {addr} is not: {connected:?}\n{}",
            f.daemon_log()
        );
        let out = f.ctl(CTL, &["shutdown"]);
        assert!(out.status.success(), "{out:?}");
        let _ = daemon.wait();
    }
}
