//! `agent-supervisor check` end to end: the example passes, and every kind of bad input
//! fails with a message naming the file, line, column and field (or script and line).
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

mod check_common;
use check_common::*;

use std::process::Command;

#[test]
fn base_fixture_passes() {
    let f = Fixture::new("base");
    f.write("system.yaml", BASE);
    let (code, out) = f.check(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3/3 agents compile"), "{out}");
}

#[test]
fn example_system_passes_and_names_every_seed_group_and_agent() {
    let out = Command::new(BIN)
        .args(["check", "--json"])
        .arg(repo().join("examples/ai-system/system.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["scripts"]["compiled"], 50);
    let hosts = v["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mainpc", "pc2"]);
    let find = |agent: &str| -> (String, u64) {
        for h in hosts {
            for g in h["groups"].as_array().unwrap() {
                for a in g["agents"].as_array().unwrap() {
                    if a["name"] == agent {
                        return (
                            h["name"].as_str().unwrap().to_string(),
                            a["ports"][0].as_u64().unwrap(),
                        );
                    }
                }
            }
        }
        panic!("agent {agent} missing from the summary");
    };
    // A sample from every group the seed lists, with the seed's ports.
    for (agent, host, port) in [
        ("VRAMOptimizerAgent", "mainpc", 5572),
        ("ChainOfThoughtAgent", "mainpc", 5612),
        ("FaceRecognitionAgent", "mainpc", 5610),
        ("LearningAdjusterAgent", "mainpc", 5643),
        ("TTSService", "mainpc", 5801),
        ("ProactiveAgent", "mainpc", 5624),
        ("EmpathyAgent", "mainpc", 5703),
        ("MemoryOrchestratorService", "pc2", 7140),
        ("VisionProcessingAgent", "pc2", 7150),
        ("UnifiedWebAgent", "pc2", 7126),
        ("AdvancedRouter", "pc2", 7129),
        ("redis", "mainpc", 6379),
        ("pc2-redis", "pc2", 6379),
    ] {
        assert_eq!(find(agent), (host.to_string(), port), "{agent}");
    }
    let agents: usize = hosts
        .iter()
        .map(|h| h["agent_count"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(agents, 52);
}

#[test]
fn unknown_keys_are_rejected_at_every_level() {
    fails_with(
        "unknown-top",
        &format!("{BASE}extra: 1\n"),
        &["system.yaml:20:1: extra: unknown field `extra`"],
    );
    fails_with(
        "unknown-host-key",
        &BASE.replace("role: primary}", "role: primary, colour: red}"),
        &["system.yaml:2:", "hosts.h1.colour: unknown field `colour`"],
    );
    fails_with(
        "unknown-agent-key",
        &BASE.replace(
            "        port: 18081\n",
            "        port: 18081\n        prot: 1\n",
        ),
        &["system.yaml:13:9: groups.web.agents[1].prot: unknown field `prot`"],
    );
    fails_with(
        "unknown-health-key",
        &BASE.replace(
            "        port: 18082\n",
            "        port: 18082\n        health: {http: /h, intervall: 2s}\n",
        ),
        &["groups.db.agents[0].health.intervall: unknown field `intervall`"],
    );
}

#[test]
fn wrong_types_name_the_field() {
    fails_with(
        "wrong-type",
        &BASE.replace(
            "    depends_on: [web]\n",
            "    depends_on: [web]\n    resources: {memory: lots}\n",
        ),
        &[
            "system.yaml:16:25: groups.db.resources.memory",
            "expected a size like 512M or 2G",
        ],
    );
    fails_with(
        "wrong-type-cmd",
        &BASE.replace(
            "command: python3 agents/ok.py\n        port: 18082",
            "command: {a: 1}\n        port: 18082",
        ),
        &["groups.db.agents[0].command", "expected a command"],
    );
}

#[test]
fn port_out_of_range() {
    fails_with(
        "port-range",
        &BASE.replace("port: 18081", "port: 66000"),
        &["system.yaml:12:15: groups.web.agents[1].port: expected a port 1-65535, got 66000"],
    );
}

/// A name longer than `format!` can pad (65,535) is one error, not a panic of the summary.
#[test]
fn a_huge_agent_name_is_an_error_not_a_panic() {
    let name = "a".repeat(70_000);
    let f = Fixture::new("huge-name");
    f.write(
        "system.yaml",
        &BASE.replace("name: store", &format!("name: {name}")),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{}", &out[..out.len().min(2000)]);
    assert!(!out.contains("panicked"), "{}", &out[..out.len().min(2000)]);
    assert!(
        out.contains("system.yaml:17:15: groups.db.agents[0].name:"),
        "{}",
        &out[..out.len().min(2000)]
    );
}

/// A FIFO, a device and an oversized file are refused at once, naming the file: no read
/// that blocks for a writer or never ends.
#[test]
fn a_system_file_that_is_not_a_regular_file_or_too_large_is_refused() {
    let f = Fixture::new("not-regular");
    let fifo = f.dir.join("system.yaml");
    let status = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success());
    let started = std::time::Instant::now();
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "error: {}: cannot read system file: a FIFO, not a regular file",
            fifo.display()
        )),
        "{out}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let out = Command::new(BIN)
        .args(["check", "/dev/zero"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error: /dev/zero: cannot read system file: a device, not a regular file"),
        "{text}"
    );
    std::fs::remove_file(&fifo).unwrap();
    f.write("system.yaml", &"#".repeat((16 << 20) + 1));
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot read system file: larger than 16 MiB"),
        "{out}"
    );
}

/// A health path that would break the request line or add a header is refused.
#[test]
fn a_health_http_path_with_spaces_or_newlines_is_refused() {
    for (path, quoted) in [("/h h", "\"/h h\""), ("/h\\nX: y", "\"/h\\nX: y\"")] {
        let system = BASE.replace(
            "        port: 18082\n",
            &format!("        port: 18082\n        health: {{http: \"{path}\"}}\n"),
        );
        fails_with(
            "health-path",
            &system,
            &[&format!(
                "groups.db.agents[0].health.http: http path may not contain spaces or control characters (percent-encode them), got {quoted}"
            )],
        );
    }
}

#[test]
fn duplicate_agent_name() {
    fails_with(
        "dup-agent",
        &BASE.replace("name: store", "name: front"),
        &["system.yaml:17:15: groups.db.agents[0].name: duplicate agent name \"front\" (also defined at groups.web.agents[0])"],
    );
}

#[test]
fn reserved_agent_name_is_refused() {
    fails_with(
        "reserved-agent",
        &BASE.replace("name: store", "name: init"),
        &["system.yaml:17:15: groups.db.agents[0].name: agent name \"init\" is reserved"],
    );
}

#[test]
fn group_dependency_cycle_is_named() {
    fails_with(
        "cycle",
        &BASE.replace(
            "  web:\n    host: h1\n",
            "  web:\n    host: h1\n    depends_on: [db]\n",
        ),
        &["dependency cycle among groups: web -> db -> web"],
    );
}

#[test]
fn agent_dependency_cycle_is_named() {
    let s = BASE
        .replace(
            "        port: 18080\n",
            "        port: 18080\n        depends_on: [back]\n",
        )
        .replace(
            "        port: 18081\n",
            "        port: 18081\n        depends_on: [front]\n",
        );
    fails_with(
        "agent-cycle",
        &s,
        &["dependency cycle among agents: front -> back -> front"],
    );
}

#[test]
fn port_clash_names_both_agents() {
    fails_with(
        "clash",
        &BASE.replace("port: 18082", "port: 18080"),
        &["groups.db.agents[0].port: port 18080 of db:store is already used by web:front on host h1"],
    );
    fails_with(
        "clash-daemon",
        &BASE.replace("port: 18082", "port: 9000"),
        &["port 9000 of db:store clashes with the daemon's http_listen on host h1"],
    );
}

#[test]
fn port_in_use_on_this_machine() {
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let f = Fixture::new("in-use");
    f.write(
        "system.yaml",
        &BASE.replace("port: 18082", &format!("port: {port}")),
    );
    let (code, out) = f.check(&["--host", "h1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("groups.db.agents[0].port: port {port} of db:store is already in use on this machine by")), "{out}");
    assert!(
        out.contains(&format!("(pid {})", std::process::id())),
        "{out}"
    );
}

#[test]
fn published_port_in_use_on_this_machine() {
    // A private group's own port is in its own namespace: only the published one counts.
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let f = Fixture::new("pub-in-use");
    f.write(
        "system.yaml",
        &BASE
            .replace(
                "    depends_on: [web]\n",
                "    depends_on: [web]\n    network: private\n",
            )
            .replace(
                "port: 18082",
                &format!("port: {port}\n        publish: [\"{port}:{port}\"]"),
            ),
    );
    let (code, out) = f.check(&["--host", "h1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("groups.db.agents[0].publish: port {port} of db:store (published) is already in use on this machine by")),
        "{out}"
    );
    assert_eq!(out.matches(&format!("port {port} ")).count(), 1, "{out}");
}

#[test]
fn missing_script_names_the_agent() {
    fails_with(
        "missing-script",
        &BASE.replace(
            "command: [python3, agents/ok.py]",
            "command: [python3, agents/gone.py]",
        ),
        &[
            "groups.web.agents[1].command: agent web:back runs agents/gone.py but",
            "gone.py does not exist",
        ],
    );
}

#[test]
fn syntax_error_names_script_and_line() {
    let f = Fixture::new("syntax");
    f.write(
        "system.yaml",
        &BASE.replace(
            "command: [python3, agents/ok.py]",
            "command: [python3, -u, agents/bad.py]",
        ),
    );
    f.write("agents/bad.py", "import os\n\ndef broken(:\n    pass\n");
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    let bad = f.dir.join("agents/bad.py");
    assert!(
        out.contains(&format!(
            "{}:3: SyntaxError: invalid syntax (agent web:back)",
            bad.display()
        )),
        "{out}"
    );
    assert!(out.contains("2/3 agents compile"), "{out}");
}

#[test]
fn unknown_host_reference() {
    fails_with(
        "unknown-host",
        &BASE.replace("  db:\n    host: h1", "  db:\n    host: h9"),
        &["system.yaml:14:11: groups.db.host: unknown host \"h9\" (hosts: h1)"],
    );
    let f = Fixture::new("unknown-host-flag");
    f.write("system.yaml", BASE);
    let (code, out) = f.check(&["--host", "nope"]);
    assert_eq!(code, 1);
    assert!(out.contains("--host \"nope\" is not a host of"), "{out}");
}

#[test]
fn all_findings_are_reported_at_once() {
    let s = BASE
        .replace("  db:\n    host: h1", "  db:\n    host: h9")
        .replace("port: 18081", "port: 18080")
        .replace(
            "command: [python3, agents/ok.py]",
            "command: [python3, agents/gone.py]",
        );
    fails_with(
        "many",
        &s,
        &[
            "unknown host \"h9\"",
            "already used by web:front",
            "gone.py does not exist",
        ],
    );
}

#[test]
fn json_output_lists_findings() {
    let f = Fixture::new("json");
    f.write("system.yaml", &BASE.replace("port: 18082", "port: 18080"));
    let out = Command::new(BIN)
        .args(["check", "--json"])
        .arg(f.dir.join("system.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errs: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .collect();
    assert_eq!(errs.len(), 1, "{v}");
    assert_eq!(errs[0]["code"], "port-clash");
    assert_eq!(errs[0]["field"], "groups.db.agents[0].port");
    assert_eq!(errs[0]["at"]["line"], 19);
}

#[test]
fn yaml_syntax_error_and_missing_file() {
    fails_with("yaml", "hosts: [a\n", &["system.yaml:", "invalid YAML"]);
    let out = Command::new(BIN)
        .args(["check", "/nonexistent/system.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("/nonexistent/system.yaml: cannot read system file"));
}

#[test]
fn unknown_capabilities_and_rlimits_are_named() {
    fails_with(
        "security",
        &BASE.replace("  db:\n    host: h1\n", "  db:\n    host: h1\n    security: {cap_add: [net_raw, CAP_FLY], rlimits: {nofile: 1024, files: 3}}\n"),
        &[
            "groups.db.security.cap_add[1]: unknown capability \"CAP_FLY\"",
            "groups.db.security.rlimits.files: unknown rlimit \"files\"",
        ],
    );
}

#[test]
fn run_group_daemon_and_bundle_refuse_an_invalid_file_naming_the_place() {
    let f = Fixture::new("refuse");
    f.write(
        "system.yaml",
        &BASE.replace("  db:\n    host: h1", "  db:\n    host: h9"),
    );
    let sys = f.dir.join("system.yaml");
    let bundle_dir = f.dir.join("bundle");
    for args in [
        vec![
            "run-group".to_string(),
            sys.display().to_string(),
            "--host".into(),
            "h1".into(),
            "web".into(),
        ],
        vec![
            "daemon".to_string(),
            "--config".into(),
            sys.display().to_string(),
            "--host".into(),
            "h1".into(),
        ],
        vec![
            "bundle".to_string(),
            sys.display().to_string(),
            "--host".into(),
            "h1".into(),
            "web".into(),
            bundle_dir.display().to_string(),
        ],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} accepted an invalid file");
        assert!(
            text.contains("system.yaml:14:11: groups.db.host: unknown host \"h9\""),
            "{args:?}: {text}"
        );
    }
    assert!(
        !bundle_dir.exists(),
        "nothing is written for a refused file"
    );
}

/// Two hosts, `db` on h2, with these `bridge` sections (flow maps; `None`: that host has
/// none).
fn bridged(b1: Option<&str>, b2: Option<&str>) -> String {
    let host = |name: &str, ip: &str, role: &str, b: Option<&str>| match b {
        Some(b) => format!("  {name}:\n    address: {ip}\n    role: {role}\n    bridge: {b}\n"),
        None => format!("  {name}:\n    address: {ip}\n    role: {role}\n"),
    };
    BASE.replace(
        "  h1: {address: 10.0.0.1, role: primary}\n",
        &(host("h1", "10.0.0.1", "primary", b1) + &host("h2", "10.0.0.2", "secondary", b2)),
    )
    .replace("  db:\n    host: h1", "  db:\n    host: h2")
}

/// Host `n`'s bridge section with the public key `public` and the private key file `file`.
fn bridge(n: u8, public: &agent_wg::Key, file: &str) -> String {
    format!(
        "{{address: 10.77.0.{n}/24, public_key: \"{}\", private_key_file: {file}}}",
        public.to_base64()
    )
}

/// Writes a fresh private key file (mode 0600) and returns the key.
fn key_file(f: &Fixture, rel: &str) -> agent_wg::Key {
    let k = agent_wg::Key::generate();
    k.write_private(&f.dir.join(rel)).unwrap();
    k
}

/// The findings about bridges (fixtures are named `wg-*`, so no path says "bridge").
fn bridge_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| (l.starts_with("error") || l.starts_with("warning")) && l.contains("bridge"))
        .collect()
}

#[test]
fn a_correct_two_host_bridge_has_no_findings() {
    let f = Fixture::new("wg-ok");
    let (k1, k2) = (key_file(&f, "h1.key"), key_file(&f, "h2.key"));
    f.write(
        "system.yaml",
        &bridged(
            Some(&bridge(1, &k1.public(), "h1.key")),
            Some(&bridge(2, &k2.public(), "h2.key")),
        ),
    );
    for host in [[].as_slice(), &["--host", "h1"], &["--host", "h2"]] {
        let (code, out) = f.check(host);
        assert_eq!(code, 0, "{host:?}: {out}");
        assert!(bridge_lines(&out).is_empty(), "{host:?}: {out}");
    }
}

#[test]
fn a_host_without_a_bridge_is_a_warning() {
    let f = Fixture::new("wg-half");
    let k1 = key_file(&f, "h1.key");
    f.write(
        "system.yaml",
        &bridged(Some(&bridge(1, &k1.public(), "h1.key")), None),
    );
    let (code, out) = f.check(&["--host", "h1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        bridge_lines(&out),
        ["warning: system.yaml:7:5: hosts.h2: host h2 has no bridge section, but host h1 has one: its groups are not reachable through the bridge"
            .replace("system.yaml", &f.dir.join("system.yaml").display().to_string())],
        "{out}"
    );
}

#[test]
fn key_files_readable_by_others_or_malformed_are_named() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new("wg-keys");
    let k1 = key_file(&f, "h1.key");
    std::fs::set_permissions(f.dir.join("h1.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    f.write("h2.key", "not a key\n");
    std::fs::set_permissions(f.dir.join("h2.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let other = agent_wg::Key::generate().public();
    f.write(
        "system.yaml",
        &bridged(
            Some(&bridge(1, &k1.public(), "h1.key")),
            Some(&bridge(2, &other, "h2.key")),
        ),
    );
    let (code, out) = f.check(&["--host", "h1"]);
    assert_eq!(code, 1, "{out}");
    let h1 = f.dir.join("h1.key").display().to_string();
    let h2 = f.dir.join("h2.key").display().to_string();
    let lines = bridge_lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].ends_with(&format!(":5:115: hosts.h1.bridge.private_key_file: host h1: the private key file {h1} has mode 0644: other users can read it; run `chmod 600 {h1}`")),
        "{out}"
    );
    assert!(
        lines[1].ends_with(&format!(":9:115: hosts.h2.bridge.private_key_file: host h2: the private key file {h2} is not a WireGuard key (one line of 44 characters of base64, as `wg genkey` prints)")),
        "{out}"
    );
}

#[test]
fn a_public_key_of_another_private_key_is_refused_with_the_right_one() {
    let f = Fixture::new("wg-mismatch");
    let k1 = key_file(&f, "h1.key");
    let k2 = key_file(&f, "h2.key");
    let wrong = agent_wg::Key::generate().public();
    f.write(
        "system.yaml",
        &bridged(
            Some(&bridge(1, &wrong, "h1.key")),
            Some(&bridge(2, &k2.public(), "h2.key")),
        ),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    let lines = bridge_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].ends_with(&format!(
            ":5:49: hosts.h1.bridge.public_key: public_key of host h1 does not match the private key in {}; its public key is {}",
            f.dir.join("h1.key").display(),
            k1.public().to_base64()
        )),
        "{out}"
    );
}

#[test]
fn a_missing_key_file_is_an_error_on_its_own_host_only() {
    let f = Fixture::new("wg-missing");
    let (p1, p2) = (
        agent_wg::Key::generate().public(),
        agent_wg::Key::generate().public(),
    );
    f.write(
        "system.yaml",
        &bridged(
            Some(&bridge(1, &p1, "h1.key")),
            Some(&bridge(2, &p2, "h2.key")),
        ),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 0, "no host is this machine: {out}");
    for (host, other) in [("h1", "h2"), ("h2", "h1")] {
        let (code, out) = f.check(&["--host", host]);
        assert_eq!(code, 1, "{out}");
        let lines = bridge_lines(&out);
        assert_eq!(lines.len(), 1, "{out}");
        assert!(
            lines[0].contains(&format!("hosts.{host}.bridge.private_key_file: the private key file {} of host {host} does not exist on this machine, which is host {host}", f.dir.join(format!("{host}.key")).display())),
            "{out}"
        );
        assert!(!out.contains(&format!("{other}.key")), "{out}");
    }
}

#[test]
fn a_key_file_path_every_host_writes_is_the_local_hosts() {
    // The same path on every machine: here it holds h1's key, which is not h2's.
    let f = Fixture::new("wg-shared");
    let k1 = key_file(&f, "bridge.key");
    let p2 = agent_wg::Key::generate().public();
    f.write(
        "system.yaml",
        &bridged(
            Some(&bridge(1, &k1.public(), "bridge.key")),
            Some(&bridge(2, &p2, "bridge.key")),
        ),
    );
    for host in [[].as_slice(), &["--host", "h1"]] {
        let (code, out) = f.check(host);
        assert_eq!(code, 0, "{host:?}: {out}");
        assert!(bridge_lines(&out).is_empty(), "{host:?}: {out}");
    }
    let (code, out) = f.check(&["--host", "h2"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "hosts.h2.bridge.public_key: public_key of host h2 does not match the private key in"
        ),
        "{out}"
    );
}
