//! The supervision daemon end to end, as root, with real agents: restarts and backoff,
//! health-check restarts, OOM exits, start order, reload, and re-adoption after the daemon
//! is killed with SIGKILL twenty times in a row.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agent_supervisor_tests::daemon::Daemon;
use agent_supervisor_tests::fixture::{root_or_skip, Fixture};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

fn running(a: &Value) -> bool {
    a["state"] == "RUNNING"
}

fn pid(a: &Value) -> i64 {
    a["pid"].as_i64().unwrap_or(0)
}

#[test]
fn kill9_of_an_agent_restarts_it_and_counts() {
    if !root_or_skip("kill9_of_an_agent_restarts_it_and_counts") {
        return;
    }
    let f = Fixture::new(BIN, "d-kill", "dkill", "  g:\n    host: h1\n    agents:\n      - name: sleeper\n        command: [sleep, '600']\n        restart: {policy: always, backoff: {initial: 50ms}}\n");
    let d = Daemon::start(&f, CTL);
    let a = d.wait_for("sleeper", "RUNNING", Duration::from_secs(10), running);
    assert_eq!(a["restarts"], 0);
    let old = pid(&a);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the agent");
    let t = Instant::now();
    let a = d.wait_for("sleeper", "restarted", Duration::from_secs(10), |a| {
        running(a) && pid(a) != old
    });
    eprintln!("restart after kill -9 took {:?}", t.elapsed());
    assert_eq!(a["restarts"], 1);
    assert_eq!(a["last_exit"]["kind"], "signal");
    assert!(
        d.metrics().contains(
            "agent_supervisor_agent_restarts_total{host=\"h1\",group=\"g\",agent=\"sleeper\"} 1"
        ),
        "{}",
        d.metrics()
    );
}

#[test]
fn crashes_back_off_exponentially_reset_after_a_stable_run_and_end_fatal() {
    if !root_or_skip("crashes_back_off") {
        return;
    }
    // Crashes 3 times fast, then runs 1.5 s (stable: reset_after 1s) and crashes, then crashes forever.
    let f = Fixture::new(
        BIN,
        "d-backoff",
        "dbackoff",
        "  g:\n    host: h1\n    binds: ['@DIR@/data:@DIR@/data:rw']\n    agents:\n      - name: crasher\n        command: [sh, agents/crash.sh]\n        restart: {policy: on-failure, backoff: {initial: 100ms, max: 400ms}, max_retries: 5, reset_after: 1s}\n",
    );
    f.file(
        "agents/crash.sh",
        &format!("d={}/data\necho $(date +%s.%N) >> $d/starts\nn=$(wc -l < $d/starts)\n[ $n -eq 4 ] && sleep 1.5\nexit 3\n", f.dir.display()),
    );
    std::fs::create_dir_all(f.dir.join("data")).unwrap();
    let d = Daemon::start(&f, CTL);
    let a = d.wait_for("crasher", "FATAL", Duration::from_secs(30), |a| {
        a["state"] == "FATAL"
    });
    assert_eq!(
        a["last_exit"],
        serde_json::json!({"kind": "code", "code": 3})
    );
    let starts: Vec<f64> = std::fs::read_to_string(f.dir.join("data/starts"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    // 3 quick crashes, the stable one (start 4), then 5 more failures until FATAL (max_retries 5).
    assert_eq!(starts.len(), 4 + 5, "{starts:?}");
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("gaps between starts: {gaps:?}");
    // The first restart is immediate; then the backoff grows: 100 ms, 200 ms, 400 ms (cap).
    // (Each gap also holds the crasher's own start-up, which a loaded machine stretches:
    // immediate means no backoff, so shorter than the first backed-off gap.)
    assert!(
        gaps[0] < 0.25 && gaps[0] < gaps[1],
        "first restart immediate: {gaps:?}"
    );
    assert!(gaps[1] >= 0.09 && gaps[1] < 0.5, "{gaps:?}");
    assert!(gaps[2] >= 0.19 && gaps[2] > gaps[1], "{gaps:?}");
    // After the stable run the count starts again: immediate restart.
    assert!(
        gaps[3] >= 1.5 && gaps[3] < 1.5 + 0.09,
        "stable run then immediate restart: {gaps:?}"
    );
    assert!(
        gaps[4] >= 0.09 && gaps[5] >= 0.19 && gaps[6] >= 0.39,
        "{gaps:?}"
    );
    // The cap holds: never much above 400ms + the crash's own run time.
    assert!(gaps[4..].iter().all(|g| *g < 0.8), "{gaps:?}");
    assert_eq!(a["restarts"], 8);
    let status = d.ctl(&["status", "crasher"]);
    assert_eq!(
        status.status.code(),
        Some(3),
        "status of a FATAL agent exits 3"
    );
}

#[test]
fn failing_health_check_restarts_with_the_reason() {
    if !root_or_skip("failing_health_check_restarts_with_the_reason") {
        return;
    }
    // The agent accepts connections but never answers HTTP: the check times out.
    let f = Fixture::new(
        BIN,
        "d-health",
        "dhealth",
        "  g:\n    host: h1\n    agents:\n      - name: mute\n        command: [python3, agents/mute.py]\n        port: 18931\n        health: {http: /health, interval: 200ms, timeout: 300ms, retries: 2}\n        restart: {policy: always, backoff: {initial: 50ms}}\n",
    );
    f.file("agents/mute.py", "import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', 18931))\ns.listen(16)\nconns = []\nwhile True:\n    c, _ = s.accept()\n    conns.append(c)\n");
    let d = Daemon::start(&f, CTL);
    let a = d.wait_for(
        "mute",
        "restarted for health",
        Duration::from_secs(20),
        |a| a["restarts"].as_u64().unwrap_or(0) >= 1,
    );
    assert_eq!(a["last_exit"]["kind"], "health_failure", "{a}");
    assert!(
        a["last_exit"]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{a}"
    );
    let text = String::from_utf8_lossy(&d.ctl(&["status", "mute"]).stdout).to_string();
    assert!(text.contains("health check failed"), "{text}");
}

/// An http check reads the answer to its end before it closes: the agent's server never
/// writes into a reset connection (Python's `http.server` prints a traceback for that in the
/// agent's own log). The server here sends its status line, waits, then its body, so a
/// check that closed after the status line would hit that write every time.
#[test]
fn an_http_check_lets_the_server_finish_its_answer() {
    if !root_or_skip("an_http_check_lets_the_server_finish_its_answer") {
        return;
    }
    let f = Fixture::new(
        BIN,
        "d-drain",
        "ddrain",
        "  g:\n    host: h1\n    agents:\n      - name: slowbody\n        command: [python3, agents/slowbody.py]\n        port: 18932\n        health: {http: /health, interval: 100ms, timeout: 2s, retries: 2}\n",
    );
    f.file(
        "agents/slowbody.py",
        "import http.server, sys, time\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200)\n        self.send_header('Content-Length', '8192')\n        self.end_headers()\n        self.wfile.flush()\n        time.sleep(0.05)\n        self.wfile.write(b'x' * 8192)\n    def log_message(self, fmt, *args):\n        sys.stderr.write('CHECKED ' + self.path + '\\n')\n        sys.stderr.flush()\nhttp.server.HTTPServer(('127.0.0.1', 18932), H).serve_forever()\n",
    );
    let d = Daemon::start(&f, CTL);
    let logs = || f.agent_logs();
    let t = Instant::now();
    while logs().matches("CHECKED /health").count() < 10 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "fewer than 10 checks: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = d.wait_for("slowbody", "healthy", Duration::from_secs(10), |a| {
        a["health"] == "healthy"
    });
    assert_eq!(a["restarts"], 0, "{a}");
    let log = logs();
    assert!(
        !log.contains("Traceback") && !log.contains("Exception"),
        "a check reset the server's answer:\n{log}"
    );
}

#[test]
fn oom_kill_is_the_exit_reason_and_counted() {
    if !root_or_skip("oom_kill_is_the_exit_reason_and_counted") {
        return;
    }
    let f = Fixture::new(
        BIN,
        "d-oom",
        "doom",
        "  g:\n    host: h1\n    resources: {memory: 48M}\n    agents:\n      - name: hog\n        command: [python3, agents/hog.py]\n        restart: {policy: on-failure, backoff: {initial: 5s}}\n",
    );
    f.file(
        "agents/hog.py",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(4 << 20))\n",
    );
    let d = Daemon::start(&f, CTL);
    let a = d.wait_for("hog", "OOM-killed", Duration::from_secs(20), |a| {
        a["last_exit"]["kind"] == "oom_killed"
    });
    assert_eq!(a["oom_kills"], 1, "{a}");
    let m = d.metrics();
    assert!(
        m.contains("container_oom_events_total{host=\"h1\",group=\"g\",agent=\"hog\"} 1"),
        "{m}"
    );
    let text = String::from_utf8_lossy(&d.ctl(&["status", "hog"]).stdout).to_string();
    assert!(text.contains("OOM-killed"), "{text}");
}

#[test]
fn start_order_follows_dependencies_with_healthy_waits() {
    if !root_or_skip("start_order_follows_dependencies") {
        return;
    }
    // db (healthy after 1 s) <- api (group dependency) <- web (agent dependency, started).
    let f = Fixture::new(
        BIN,
        "d-order",
        "dorder",
        "  data:\n    host: h1\n    agents:\n      - name: db\n        command: [python3, agents/slow.py, '18941']\n        port: 18941\n        health: {tcp: true, interval: 1s}\n  app:\n    host: h1\n    depends_on: {data: healthy}\n    agents:\n      - name: web\n        command: [sleep, '600']\n        depends_on: [api]\n      - name: api\n        command: [sleep, '600']\n",
    );
    f.file("agents/slow.py", "import socket, sys, time\ntime.sleep(1)\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen(8)\nwhile True:\n    s.accept()\n");
    let d = Daemon::start(&f, CTL);
    d.wait_for("web", "RUNNING", Duration::from_secs(20), running);
    let s = d.status();
    let start: BTreeMap<String, f64> = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent"].as_str().unwrap().to_string(),
                a["started_at"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(
        start["api"] >= start["db"] + 1.0,
        "api waited for db to be healthy: {start:?}"
    );
    assert!(start["web"] > start["api"], "web after api: {start:?}");
}

#[test]
fn reload_touches_only_the_changed_added_and_removed_agents() {
    if !root_or_skip("reload_touches_only_changed") {
        return;
    }
    let groups = |b_cmd: &str, extra: &str| {
        format!("  g:\n    host: h1\n    agents:\n      - name: a\n        command: [sleep, '600']\n      - name: b\n        command: [sleep, '{b_cmd}']\n      - name: c\n        command: [sleep, '600']\n{extra}  h:\n    host: h1\n    agents:\n      - name: keep\n        command: [sleep, '600']\n")
    };
    let f = Fixture::new(BIN, "d-reload", "dreload", &groups("600", ""));
    let d = Daemon::start(&f, CTL);
    for n in ["a", "b", "c", "keep"] {
        d.wait_for(n, "RUNNING", Duration::from_secs(10), running);
    }
    let before: BTreeMap<String, i64> = ["a", "b", "c", "keep"]
        .iter()
        .map(|n| (n.to_string(), pid(&d.agent(n))))
        .collect();
    // b changes, c goes, n is new.
    let new = groups("601", "").replace(
        "      - name: c\n        command: [sleep, '600']\n",
        "      - name: n\n        command: [sleep, '600']\n",
    );
    f.set_groups(&new);
    let out = d.ctl(&["reload"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_for("b", "restarted", Duration::from_secs(10), |a| {
        running(a) && pid(a) != before["b"]
    });
    d.wait_for("n", "RUNNING", Duration::from_secs(10), running);
    let s = d.status();
    let names: Vec<&str> = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"c"), "c was removed: {names:?}");
    assert_eq!(pid(&d.agent("a")), before["a"], "a untouched");
    assert_eq!(pid(&d.agent("keep")), before["keep"], "keep untouched");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(before["c"] as i32), None).is_err(),
        "c's process is gone"
    );
}

/// Processes whose command line contains `needle`.
fn count_procs(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| p.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn twenty_daemon_kill9s_readopt_every_agent_exactly_once() {
    if !root_or_skip("twenty_daemon_kill9s") {
        return;
    }
    // The sleep lengths carry this test's pid, so processes of other runs are never counted.
    let tag = std::process::id();
    let mut groups = String::new();
    for g in 0..3 {
        groups.push_str(&format!("  grp{g}:\n    host: h1\n    agents:\n"));
        for a in 0..4 {
            groups.push_str(&format!(
                "      - name: ag{g}x{a}\n        command: [sleep, '{tag}{g}{a}']\n        port: {}\n        health: {{exec: [true], interval: 200ms}}\n",
                18950 + g * 10 + a
            ));
        }
    }
    let f = Fixture::new(BIN, "d-adopt", "dadopt", &groups);
    let mut d = Daemon::start(&f, CTL);
    let names: Vec<String> = (0..3)
        .flat_map(|g| (0..4).map(move |a| format!("ag{g}x{a}")))
        .collect();
    for n in &names {
        d.wait_for(n, "RUNNING", Duration::from_secs(20), running);
    }
    let pids: BTreeMap<String, i64> = names
        .iter()
        .map(|n| (n.clone(), pid(&d.agent(n))))
        .collect();
    for i in 0..20 {
        let old = d.pid();
        d.kill9();
        d.restart();
        assert_ne!(d.pid(), old);
        // Vary the timing: sometimes kill again right away.
        if i % 3 != 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for n in &names {
        let a = d.wait_for(n, "RUNNING", Duration::from_secs(20), running);
        assert_eq!(pid(&a), pids[n], "{n} was restarted instead of adopted");
        assert_eq!(a["restarts"], 0, "{n}");
    }
    for (g, a) in (0..3).flat_map(|g| (0..4).map(move |a| (g, a))) {
        assert_eq!(
            count_procs(&format!("sleep {tag}{g}{a}")),
            1,
            "agent ag{g}x{a} runs exactly once"
        );
    }
    // Still supervised after adoption: a kill is noticed and restarted.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids["ag1x1"] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let a = d.wait_for(
        "ag1x1",
        "restarted after adoption",
        Duration::from_secs(10),
        |a| running(a) && pid(a) != pids["ag1x1"],
    );
    assert_eq!(a["restarts"], 1);
    let _ = d.pid();
}

#[test]
fn stop_start_restart_and_signal_through_supervisorctl() {
    if !root_or_skip("stop_start_restart_and_signal_through_supervisorctl") {
        return;
    }
    let f = Fixture::new(
        BIN,
        "d-ctl",
        "dctl",
        "  g:\n    host: h1\n    agents:\n      - name: one\n        command: [sleep, '600']\n      - name: two\n        command: [sleep, '601']\n",
    );
    let d = Daemon::start(&f, CTL);
    let first = pid(&d.wait_for("one", "RUNNING", Duration::from_secs(10), running));
    let out = d.ctl(&["stop", "one"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("one: stopped"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let a = d.agent("one");
    assert_eq!(a["state"], "STOPPED");
    assert_eq!(a["last_exit"]["kind"], "stopped_by_user");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), None).is_err(),
        "the process is gone"
    );
    // status exits 3 while an agent is not RUNNING.
    assert_eq!(d.ctl(&["status"]).status.code(), Some(3));
    let out = d.ctl(&["start", "g:*"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("one: started"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let second = pid(&d.agent("one"));
    assert!(second != first && second > 0);
    assert_eq!(d.ctl(&["status"]).status.code(), Some(0));
    let out = d.ctl(&["restart", "one"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("one: started"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let a = d.agent("one");
    assert!(pid(&a) != second && running(&a));
    assert_eq!(a["restarts"], 0, "a user restart is not a crash restart");
    let two = pid(&d.agent("two"));
    let out = d.ctl(&["signal", "KILL", "two"]);
    assert!(out.status.success());
    let a = d.wait_for(
        "two",
        "restarted after the signal",
        Duration::from_secs(10),
        |a| running(a) && pid(a) != two,
    );
    assert_eq!(a["restarts"], 1);
    assert_eq!(
        d.ctl(&["stop", "nosuch"]).status.code().map(|c| c != 0),
        Some(true),
        "an unknown agent is an error"
    );
}

#[test]
fn a_stopped_agent_gets_its_stop_signal_at_once_not_at_the_stop_timeout() {
    if !root_or_skip("a_stopped_agent_gets_its_stop_signal_at_once_not_at_the_stop_timeout") {
        return;
    }
    // The agent says so when SIGTERM reaches it; it hangs in SIGSTOP when asked to stop,
    // with a stop timeout (30 s) far beyond the test's patience.
    let f = Fixture::new(
        BIN,
        "d-frozen",
        "dfrozen",
        "  g:\n    host: h1\n    agents:\n      - name: frozen\n        command: [python3, agents/term.py]\n        stop_timeout: 30s\n",
    );
    f.file(
        "agents/term.py",
        "import signal, sys, time\ndef term(*_):\n    print('got SIGTERM', flush=True)\n    sys.exit(0)\nsignal.signal(signal.SIGTERM, term)\nprint('ready', flush=True)\nwhile True:\n    time.sleep(1)\n",
    );
    let d = Daemon::start(&f, CTL);
    let agent = pid(&d.wait_for("frozen", "RUNNING", Duration::from_secs(10), running));
    let logs = || f.agent_logs();
    // The interpreter has installed its handler once it said `ready`.
    let t = Instant::now();
    while !logs().contains("ready") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no `ready`: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP the agent");
    let t = Instant::now();
    let out = d.ctl(&["stop", "frozen"]);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        took < Duration::from_secs(10),
        "stopping a SIGSTOPped agent took {took:?}: it waited for the stop timeout"
    );
    let a = d.agent("frozen");
    assert!(
        logs().contains("got SIGTERM"),
        "SIGTERM reached it: {a}; {}",
        logs()
    );
    assert_eq!(
        (a["state"].as_str(), a["last_exit_code"].as_i64()),
        (Some("STOPPED"), Some(0)),
        "{a}"
    );
}

#[test]
fn a_truncated_or_corrupt_state_file_is_set_aside_and_every_agent_readopted() {
    if !root_or_skip("a_truncated_or_corrupt_state_file_is_set_aside_and_every_agent_readopted") {
        return;
    }
    let tag = std::process::id();
    let f = Fixture::new(
        BIN,
        "d-corrupt",
        "dcorrupt",
        &format!(
            "  g:\n    host: h1\n    agents:\n      - name: one\n        command: [sleep, '{tag}1']\n        restart: {{policy: always, backoff: {{initial: 50ms}}}}\n      - name: two\n        command: [sleep, '{tag}2']\n"
        ),
    );
    let state = f.dir.join("run/state.json");
    let aside = f.dir.join("run/state.json.corrupt");
    let mut d = Daemon::start(&f, CTL);
    let one = pid(&d.wait_for("one", "RUNNING", Duration::from_secs(10), running));
    let two = pid(&d.wait_for("two", "RUNNING", Duration::from_secs(10), running));
    // A restart to count, so that the state file has something in it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(one as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let one = pid(
        &d.wait_for("one", "restarted", Duration::from_secs(10), |a| {
            running(a) && pid(a) != one
        }),
    );
    let t = Instant::now();
    while !std::fs::read_to_string(&state)
        .unwrap_or_default()
        .contains("restarts")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no state file at {}",
            state.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let whole = std::fs::read(&state).unwrap();
    for (what, bytes) in [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("garbage", b"\x00\xffnot json{{{".to_vec()),
    ] {
        d.kill9();
        std::fs::write(&state, &bytes).unwrap();
        let _ = std::fs::remove_file(&aside);
        d.restart();
        for (n, p) in [("one", one), ("two", two)] {
            let a = d.wait_for(n, "RUNNING", Duration::from_secs(20), running);
            assert_eq!(
                pid(&a),
                p,
                "{what}: {n} was restarted instead of adopted: {a}; {} processes; {}",
                count_procs(&format!("sleep {tag}1")),
                f.daemon_log()
            );
        }
        let log = f.daemon_log();
        assert!(log.contains("the state file is corrupt"), "{what}: {log}");
        assert!(log.contains(&aside.display().to_string()), "{what}: {log}");
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            bytes,
            "{what}: the corrupt file is kept"
        );
        assert_eq!(
            count_procs(&format!("sleep {tag}1")),
            1,
            "{what}: one runs once"
        );
        assert_eq!(
            count_procs(&format!("sleep {tag}2")),
            1,
            "{what}: two runs once"
        );
    }
    // Still supervised, and the state file is written again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(two as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let a = d.wait_for("two", "restarted", Duration::from_secs(10), |a| {
        running(a) && pid(a) != two
    });
    assert_eq!(a["restarts"], 1, "{a}");
    let t = Instant::now();
    while serde_json::from_slice::<Value>(&std::fs::read(&state).unwrap_or_default()).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "state.json is not written again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `NAME=VALUE` entries of a process's initial environment.
fn environ(pid: i64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

#[test]
fn the_daemon_runs_without_malloc_thread_caches_and_its_children_get_the_callers_env() {
    if !root_or_skip(
        "the_daemon_runs_without_malloc_thread_caches_and_its_children_get_the_callers_env",
    ) {
        return;
    }
    let f = Fixture::new(
        BIN,
        "d-tcache",
        "dtcache",
        "  g:\n    host: h1\n    agents:\n      - name: sleeper\n        command: [sleep, '600']\n",
    );
    let d = Daemon::start(&f, CTL);
    let a = d.wait_for("sleeper", "RUNNING", Duration::from_secs(10), running);
    // Re-executed in place (the same pid) with the tunable glibc reads at start.
    let own = environ(i64::from(d.pid()));
    assert!(
        own.iter()
            .any(|e| e == "GLIBC_TUNABLES=glibc.malloc.tcache_count=0"),
        "daemon's environment: {own:?}"
    );
    // Its children: the launch server it started after, and the agent, have neither the
    // tunable nor the mark (the test's own environment has no GLIBC_TUNABLES).
    let spawner = std::fs::read_to_string(format!("/proc/{}/task/{}/children", d.pid(), d.pid()))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse::<i64>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("__spawner"))
                .unwrap_or(false)
        });
    let mut children = vec![("agent", pid(&a))];
    children.extend(spawner.map(|p| ("launch server", p)));
    assert_eq!(
        children.len(),
        2,
        "no launch server among the daemon's children"
    );
    for (what, p) in children {
        let env = environ(p);
        assert!(!env.is_empty(), "{what} {p}: no environment read");
        assert!(
            !env.iter().any(|e| e.starts_with("GLIBC_TUNABLES=")
                || e.starts_with("AGENT_SUPERVISOR_TUNABLES_WERE=")),
            "{what} {p}: {env:?}"
        );
    }
    let m = d.metrics();
    for series in [
        "process_resident_memory_bytes{host=\"h1\"}",
        "agent_supervisor_daemon_heap_in_use_bytes{host=\"h1\"}",
    ] {
        assert!(m.contains(series), "no {series} in\n{m}");
    }
}
