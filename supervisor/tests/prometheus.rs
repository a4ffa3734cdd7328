//! The deploy artefacts against a real Prometheus, as root: two "hosts" (network namespaces
//! with a daemon each, the bridge between them) serve `/metrics` on their underlay
//! addresses; the Debian `prometheus` server, in the first host's namespace, scrapes both
//! with `deploy/prometheus.yml`'s job; then every PromQL expression of
//! `deploy/grafana/agent-supervisor.json` runs through Prometheus's HTTP API: each parses, and
//! each (but the GPU panels, whose series need NVML) returns series for both hosts.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_supervisor_tests::fixture::root_or_skip;
use agent_supervisor_tests::hosts::TwoHosts;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Every `expr` of the dashboard, with its panel's title.
fn dashboard_exprs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo().join("deploy/grafana/agent-supervisor.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in v["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn prometheus_scrapes_both_hosts_and_every_dashboard_query_answers() {
    let test = "prometheus_scrapes_both_hosts_and_every_dashboard_query_answers";
    if !root_or_skip(test) {
        return;
    }
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: prometheus is needed (scripts/install-prereqs.sh)"
        );
        eprintln!("SKIP {test}: no prometheus");
        return;
    }
    let groups = "  web:\n    host: h1\n    network: private\n    resources: {memory: 256M}\n    agents:\n      - name: server\n        command: [python3, -m, http.server, '8000']\n        port: 8000\n        health: {tcp: true, interval: 1s}\n  \
                  front:\n    host: h2\n    network: private\n    resources: {memory: 256M}\n    agents:\n      - name: client\n        command: [sh, -c, 'while true; do python3 -c \"import urllib.request as u; u.urlopen(\\\"http://server:8000/\\\", timeout=2)\"; sleep 0.5; done']\n";
    let mut two = TwoHosts::new(BIN, CTL, "prom", 5, groups, "");
    // Each daemon serves /metrics on its underlay address, where Prometheus reaches it.
    let path = two.dir.join("system.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for h in &two.hosts {
        text = text.replacen(
            "http_listen: '127.0.0.1:9000'",
            &format!("http_listen: '{}:9000'", h.address),
            1,
        );
    }
    std::fs::write(&path, text).unwrap();
    two.start(0);
    two.start(1);

    // deploy/prometheus.yml's job, with this test's targets and a 1 s interval.
    let deploy = std::fs::read_to_string(repo().join("deploy/prometheus.yml")).unwrap();
    let config = deploy
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace(
            "192.168.100.16:9000",
            &format!("{}:9000", two.hosts[0].address),
        )
        .replace(
            "192.168.100.17:9000",
            &format!("{}:9000", two.hosts[1].address),
        );
    let cfg = two.file("prometheus.yml", &config);
    let data = two.dir.join("prometheus-data");
    let mut prom = two
        .in_host(0, "prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--web.listen-address=127.0.0.1:9090")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let query = |expr: &str| -> Value {
        let out = two
            .in_host(0, "curl")
            .args(["-s", "--max-time", "5", "--data-urlencode"])
            .arg(format!("query={expr}"))
            .arg("http://127.0.0.1:9090/api/v1/query")
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let hosts_of = |v: &Value| -> Vec<String> {
        let mut h: Vec<String> = v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| s["metric"]["host"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        h.sort();
        h.dedup();
        h
    };
    let t = Instant::now();
    // Both hosts scraped, the bridge up and some traffic through it, and at least two
    // scrapes of it for the rate() panels.
    loop {
        let up = query("count by (host) (agent_supervisor_bridge_up == 1)");
        let healthy = query("sum by (host) (agent_supervisor_agent_healthy)");
        if hosts_of(&up) == ["h1", "h2"] && hosts_of(&healthy) == ["h1"] {
            break;
        }
        if let Ok(Some(status)) = prom.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(prom.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("prometheus exited ({status}): {err}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "Prometheus does not see both hosts: {up}\n{healthy}\nh1:\n{}\nh2:\n{}",
            two.log(0),
            two.log(1)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(4));
    let _prom = Kill(prom);
    let mut failures = Vec::new();
    for (title, expr) in dashboard_exprs() {
        let v = query(&expr);
        if v["status"] != "success" {
            failures.push(format!("{title}: {expr}: {v}"));
            continue;
        }
        if expr.contains("DCGM_") {
            continue; // GPU series need NVML (none on this machine); the query parses.
        }
        // Only h1 runs an agent with a health check.
        let want: &[&str] = if expr.contains("agent_supervisor_agent_healthy") {
            &["h1"]
        } else {
            &["h1", "h2"]
        };
        let got = hosts_of(&v);
        if got != want {
            failures.push(format!(
                "{title}: {expr}: series for hosts {got:?}, not {want:?}: {v}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries:\n{}",
        failures.join("\n")
    );
}
