//! The main job, as `./quickstart.sh` runs it: `scripts/two-hosts.sh up` starts both hosts of
//! the example system (MainPC and PC2 as two network namespaces with a daemon each, every
//! group from its image, the WireGuard bridge between them); every agent of both hosts
//! becomes healthy and a PC2 agent reaches MainPC's `service-registry` by name through the
//! tunnel; `scripts/two-hosts.sh down` leaves no namespace, daemon or bridge. As root; it uses
//! the example's fixed places (`/run/agent-supervisor/{mainpc,pc2}`, namespaces `as-mainpc`,
//! `as-pc2`), so it does not run beside a quickstart that is up.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::path::Path;
use std::process::Command;

use agent_supervisor_tests::fixture::root_or_skip;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `curl -sf` of the primary's observability port, in its namespace.
fn curl_mainpc(path: &str) -> std::process::Output {
    Command::new("nsenter")
        .args([
            "--net=/run/netns/as-mainpc",
            "--",
            "curl",
            "-sf",
            "--max-time",
            "5",
        ])
        .arg(format!("http://127.0.0.1:9000{path}"))
        .output()
        .unwrap()
}

#[test]
fn both_hosts_of_the_example_run_on_one_machine_and_reach_each_other_by_name() {
    let test = "both_hosts_of_the_example_run_on_one_machine_and_reach_each_other_by_name";
    if !root_or_skip(test) {
        return;
    }
    let netns = netns_list();
    if netns.lines().any(|l| l.starts_with("as-mainpc")) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: a quickstart is up (namespace as-mainpc)"
        );
        eprintln!(
            "SKIP {test}: the example's two hosts are up already (scripts/two-hosts.sh down)"
        );
        return;
    }
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let bin_dir = Path::new(BIN).parent().unwrap();
    let script = repo.join("scripts/two-hosts.sh");
    struct Down<'a>(&'a Path, &'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = Command::new(self.0).arg("down").env("BIN", self.1).output();
        }
    }
    let down = Down(&script, bin_dir);
    let up = Command::new(&script)
        .arg("up")
        .env("BIN", bin_dir)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(up.status.success(), "two-hosts.sh up failed:\n{out}");
    assert!(
        out.contains("every agent of mainpc and pc2 is healthy"),
        "{out}"
    );
    for section in [
        "== host mainpc: supervisorctl",
        "== host pc2: supervisorctl",
        "redis:redis ",
        "pc2-redis:pc2-redis ",
        "infrastructure:TieredResponder ",
    ] {
        assert!(out.contains(section), "{section:?} missing:\n{out}");
    }
    assert!(
        out.contains(
            "\"service-registry\": {\"address\": \"service-registry:7200\", \"reachable\": true}"
        ),
        "PC2 does not reach MainPC by name:\n{out}"
    );
    let bridge = out
        .lines()
        .find(|l| l.starts_with("mainpc  10.77.0.1"))
        .unwrap_or_default();
    assert!(bridge.ends_with("yes"), "the bridge peer is not up:\n{out}");
    // The primary's summary covers both hosts, every agent healthy (`curl -f` passes).
    // (The primary asks PC2 every 2 s: its view may be one poll behind the script's wait.)
    let t = std::time::Instant::now();
    let summary = loop {
        let s = curl_mainpc("/health_summary");
        if s.status.success() || t.elapsed() > std::time::Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(
        summary.status.success(),
        "curl -f /health_summary: {}",
        String::from_utf8_lossy(&summary.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&summary.stdout).unwrap();
    assert_eq!(v["status"], "ok", "{v:#}");
    assert_eq!(v["hosts_up"], 2, "{v:#}");
    let per_host: Vec<u64> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["agents"].as_u64().unwrap())
        .collect();
    assert!(per_host.iter().all(|n| *n > 10), "{per_host:?}");
    assert_eq!(v["agents"], v["agents_healthy"], "{v:#}");
    let metrics = curl_mainpc("/metrics");
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        text.contains("agent_supervisor_host_up{host=\"pc2\"} 1"),
        "{text}"
    );
    drop(down);
    let netns = netns_list();
    assert!(
        !netns.contains("as-mainpc") && !netns.contains("as-pc2"),
        "{netns}"
    );
    let left = Command::new("pgrep")
        .args(["-f", "system.two-hosts.yaml"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "daemons left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    let bridges = Command::new("pgrep")
        .args(["-x", "agent-bridge"])
        .output()
        .unwrap();
    assert!(
        bridges.stdout.is_empty(),
        "agent-bridge left: {}",
        String::from_utf8_lossy(&bridges.stdout)
    );
}
