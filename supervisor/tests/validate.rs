//! `agent-supervisor validate` on two "hosts" (network namespaces with a daemon each, the
//! bridge between them), run from h1: everything passes (daemons, agents, the bridge's
//! handshakes and round trip, the primary's metrics of both hosts); with one agent stopped it
//! fails naming the agent; with h2's daemon down it fails naming the host; `--json` says the
//! same.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::time::Duration;

use agent_supervisor_tests::fixture::root_or_skip;
use agent_supervisor_tests::hosts::{wait_for, TwoHosts};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

fn validate(two: &TwoHosts, json: bool) -> (bool, String) {
    let mut c = two.in_host(0, BIN);
    c.arg("validate")
        .arg(two.dir.join("system.yaml"))
        .args(["--host", "h1"]);
    if json {
        c.arg("--json");
    }
    let out = c.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn validate_passes_then_names_the_stopped_agent_and_the_down_host() {
    if !root_or_skip("validate_passes_then_names_the_stopped_agent_and_the_down_host") {
        return;
    }
    let groups = "  web:\n    host: h1\n    network: private\n    agents:\n      - name: server\n        command: [python3, -m, http.server, '8000']\n        port: 8000\n        health: {tcp: true, interval: 1s}\n  \
                  front:\n    host: h2\n    network: private\n    agents:\n      - name: frontend\n        command: [python3, -m, http.server, '8001']\n        port: 8001\n        health: {tcp: true, interval: 1s}\n      - name: sidecar\n        command: [sleep, '600']\n";
    let mut two = TwoHosts::new(BIN, CTL, "validate", 7, groups, "");
    two.start(0);
    two.start(1);
    let text = wait_for(
        "validate passes from h1",
        Duration::from_secs(40),
        || {
            let (ok, text) = validate(&two, false);
            ok.then_some(text)
        },
        || validate(&two, false).1,
    );
    println!("{text}");
    for want in [
        "| h1   | daemon",
        "| h2   | daemon",
        "1/1 RUNNING and healthy",
        "2/2 RUNNING and healthy",
        "h2 handshake",
        "every host's series",
        "validate: every check passed",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // One agent stopped: named.
    assert!(two.ctl(1, &["stop", "sidecar"]).status.success());
    let (ok, text) = validate(&two, false);
    println!("{text}");
    assert!(!ok, "{text}");
    assert!(text.contains("sidecar STOPPED"), "{text}");
    let (ok, json) = validate(&two, true);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"], false, "{json}");
    assert!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["host"] == "h2" && r["check"] == "agents" && r["result"] == "fail"),
        "{json}"
    );
    // h2's daemon down: the host is named.
    two.shutdown(1);
    let (ok, text) = validate(&two, false);
    println!("{text}");
    assert!(!ok, "{text}");
    assert!(
        text.contains("host h2: the daemon does not answer"),
        "{text}"
    );
}
