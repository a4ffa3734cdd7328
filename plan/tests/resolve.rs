//! `Plan::resolve` and `diff` on real system files in a temporary directory (no root).
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use agent_plan::{diff, HostPlan, Plan, Probe, RootfsPlan};

mod common;
use common::Dir;

const SYSTEM: &str = "\
hosts:
  h1: {address: 10.0.0.1, role: primary}
  h2: {address: 10.0.0.2, role: secondary}
groups:
  web:
    host: h1
    env_file: web.env
    env: {MODE: web}
    restart: {policy: always}
    agents:
      - name: front
        command: python3 agents/a.py
        port: 7001
        env: {MODE: front}
        health: {tcp: true}
      - name: back
        command: python3 agents/a.py
        port: 7002
        depends_on: {front: healthy}
  db:
    host: h1
    agents:
      - name: store
        command: python3 agents/a.py
        port: 7003
  far:
    host: h2
    agents:
      - name: remote
        command: python3 agents/a.py
        port: 7004
";

/// The value of `k` in the environment the agent runs with (its own, then the system's names).
fn env<'a>(p: &'a HostPlan, agent: &str, k: &str) -> Option<&'a str> {
    let a = p.agent(agent)?;
    a.env
        .iter()
        .chain(a.visible_names())
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

#[test]
fn resolves_one_host_with_merged_environment() {
    let d = Dir::new("merge");
    d.write("system.yaml", SYSTEM);
    d.write("web.env", "# comment\nSECRET=one\nMODE=file\n");
    let p = d.plan("h1");
    assert_eq!(p.groups.keys().collect::<Vec<_>>(), ["web", "db"]);
    assert!(
        p.agent("remote").is_none(),
        "h2's agent is not in h1's plan"
    );
    // env_file < group env < agent env < AGENT_*.
    assert_eq!(env(&p, "front", "SECRET"), Some("one"));
    assert_eq!(env(&p, "front", "MODE"), Some("front"));
    assert_eq!(env(&p, "back", "MODE"), Some("web"));
    assert_eq!(env(&p, "back", "AGENT_NAME"), Some("back"));
    assert_eq!(env(&p, "store", "SECRET"), None);
    let front = p.agent("front").unwrap();
    assert_eq!(
        front.health.as_ref().unwrap().probe,
        Probe::Tcp {
            addr: std::net::Ipv4Addr::LOCALHOST,
            port: 7001
        }
    );
    assert_eq!(front.ports, [7001]);
    assert_eq!(front.restart.policy, agent_config::model::Policy::Always);
    assert!(front.log.stdout.ends_with("front.stdout.log"));
    let web = &p.groups["web"];
    assert!(matches!(web.rootfs, RootfsPlan::Host { .. }));
    // The host image shows the system file's directory at its own path, read-only.
    let dir = std::fs::canonicalize(&d.0).unwrap();
    assert_eq!(web.binds[0].source, dir);
    assert!(web.binds[0].readonly);
    assert_eq!(front.workdir, dir);
}

#[test]
fn env_file_content_change_restarts_only_that_group() {
    let d = Dir::new("envfile");
    d.write("system.yaml", SYSTEM);
    d.write("web.env", "SECRET=one\n");
    let old = d.plan("h1");
    d.write("web.env", "SECRET=two\n");
    let new = d.plan("h1");
    let x = diff(&old, &new);
    assert_eq!(x.restarted_agents, ["front", "back"]);
    assert_eq!(x.unchanged_agents, ["store"]);
    assert!(
        x.changed_groups.is_empty(),
        "the pod itself is unchanged: {x:?}"
    );
    assert!(diff(&new, &new).is_empty());
}

#[test]
fn changed_default_reaches_exactly_the_agents_that_inherit_it() {
    let d = Dir::new("default");
    d.write("system.yaml", SYSTEM);
    d.write("web.env", "");
    let old = d.plan("h1");
    // The group's restart default changes; `front` and `back` inherit it, `store` does not.
    d.write(
        "system.yaml",
        &SYSTEM.replace("restart: {policy: always}", "restart: {policy: never}"),
    );
    let x = diff(&old, &d.plan("h1"));
    assert_eq!(x.restarted_agents, ["front", "back"]);
    assert_eq!(x.unchanged_agents, ["store"]);
    // A daemon log setting reaches every agent (its shim writes the logs).
    d.write(
        "system.yaml",
        &format!("daemon: {{log_max_size: 1M}}\n{SYSTEM}"),
    );
    let x = diff(&old, &d.plan("h1"));
    assert_eq!(x.restarted_agents.len(), 3);
    // A listener address change needs the daemon, not the agents.
    d.write(
        "system.yaml",
        &format!("daemon: {{http_listen: \"0.0.0.0:9000\"}}\n{SYSTEM}"),
    );
    let x = diff(&old, &d.plan("h1"));
    assert!(x.restarted_agents.is_empty(), "{x:?}");
    assert_eq!(x.daemon_settings, ["http_listen"]);
    // Its port is in every agent's OBSERVABILITY_ENDPOINT (h1 is the primary).
    d.write(
        "system.yaml",
        &format!("daemon: {{http_listen: \"0.0.0.0:9100\"}}\n{SYSTEM}"),
    );
    let new = d.plan("h1");
    assert!(new
        .groups
        .values()
        .flat_map(|g| g.agents.values())
        .all(|a| a.full_env().contains(&(
            "OBSERVABILITY_ENDPOINT".into(),
            "http://10.0.0.1:9100/metrics".into()
        ))));
    assert_eq!(diff(&old, &new).restarted_agents.len(), 3);
}

#[test]
fn group_settings_restart_the_whole_group_and_moves_are_remove_plus_add() {
    let d = Dir::new("group");
    d.write("system.yaml", SYSTEM);
    d.write("web.env", "");
    let old = d.plan("h1");
    d.write(
        "system.yaml",
        &SYSTEM.replace(
            "  db:\n    host: h1\n",
            "  db:\n    host: h1\n    resources: {memory: 256M}\n",
        ),
    );
    let x = diff(&old, &d.plan("h1"));
    assert_eq!(x.changed_groups, ["db"]);
    assert_eq!(x.restarted_agents, ["store"]);
    // `store` moves to a new group `db2`; `db` is then empty.
    d.write(
        "system.yaml",
        &SYSTEM.replace(
            "  db:\n    host: h1\n    agents:\n",
            "  db:\n    host: h1\n  db2:\n    host: h1\n    agents:\n",
        ),
    );
    let x = diff(&old, &d.plan("h1"));
    assert_eq!(x.added_groups, ["db2"]);
    assert_eq!(x.removed_agents, ["store"]);
    assert_eq!(x.added_agents, ["store"]);
}

#[test]
fn every_finding_names_its_field() {
    let d = Dir::new("findings");
    d.write(
        "system.yaml",
        &SYSTEM.replace(
            "env_file: web.env",
            "env_file: missing.env\n    image: agent-python\n    binds: [\"nowhere:/data\"]",
        ),
    );
    let l = agent_config::load(&d.0.join("system.yaml")).unwrap();
    let findings = Plan::resolve(&l, "h1", None).unwrap_err();
    let text: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
    let has = |s: &str| text.iter().any(|t| t.contains(s));
    assert!(
        has("groups.web.image: image agent-python: no image store"),
        "{text:#?}"
    );
    assert!(has("groups.web.binds[0].source: bind source"), "{text:#?}");
    assert!(has("groups.web.env_file: env_file"), "{text:#?}");
    assert!(
        findings.iter().all(|f| f.at.is_some()),
        "every finding is placed: {text:#?}"
    );
    let bad = Plan::resolve(&l, "h9", None).unwrap_err();
    assert!(bad[0]
        .to_string()
        .contains("host \"h9\" is not in the system file"));
}

#[test]
fn malformed_env_file_line_is_named() {
    let d = Dir::new("envline");
    d.write("system.yaml", SYSTEM);
    d.write("web.env", "A=1\nnot a pair\n");
    let l = agent_config::load(&d.0.join("system.yaml")).unwrap();
    let f = Plan::resolve(&l, "h1", None).unwrap_err();
    let t = f[0].to_string();
    assert!(
        t.contains("groups.web.env_file") && t.contains("web.env:2:"),
        "{t}"
    );
}
