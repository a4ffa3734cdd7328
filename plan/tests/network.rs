//! Group networks in the plan: stable addresses, names and environment for every group, and
//! what a reload of a network change touches (no root).
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::net::Ipv4Addr;

use agent_plan::{diff, HostPlan, NetworkPlan};

mod common;
use common::Dir;

const SYSTEM: &str = "\
hosts:
  mainpc: {address: 192.0.2.10, role: primary}
  pc2: {address: 192.0.2.20, role: secondary}
groups:
  web:
    host: mainpc
    network: private
    agents:
      - name: front
        command: python3 agents/a.py
        port: 7001
        publish: [\"18080:7001\"]
        depends_on: {api: started, remote: started}
  api:
    host: mainpc
    network: {mode: private, egress: false}
    agents:
      - name: api
        command: python3 agents/a.py
        port: 7002
  cache:
    host: mainpc
    agents:
      - name: redis
        command: python3 agents/a.py
        port: 6379
  far:
    host: pc2
    network: private
    agents:
      - name: remote
        command: python3 agents/a.py
        port: 7004
";

fn private(p: &HostPlan, g: &str) -> agent_plan::PrivateNet {
    match &p.groups[g].network {
        NetworkPlan::Private(n) => n.clone(),
        NetworkPlan::Host => panic!("{g} is on the host network"),
    }
}

/// The value of `k` in the environment the agent runs with (its own, then the system's names).
fn env<'a>(p: &'a HostPlan, agent: &str, k: &str) -> Option<&'a str> {
    let a = p.agent(agent)?;
    a.env
        .iter()
        .chain(a.visible_names())
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

fn names_of(p: &HostPlan, group: &str, ip: Ipv4Addr) -> Vec<String> {
    p.groups[group]
        .names
        .iter()
        .filter(|(a, _)| *a == ip)
        .flat_map(|(_, n)| n.clone())
        .collect()
}

#[test]
fn private_groups_get_stable_addresses_in_their_hosts_subnet() {
    let d = Dir::new("net-addr");
    d.write("system.yaml", SYSTEM);
    let p = d.plan("mainpc");
    let (web, api) = (private(&p, "web"), private(&p, "api"));
    let net = p.network.as_ref().unwrap();
    assert_eq!(
        net.subnet.to_string(),
        "10.88.1.0/24",
        "the first host's default"
    );
    assert_eq!(web.gateway, Ipv4Addr::new(10, 88, 1, 1));
    assert_eq!(web.prefix, 24);
    assert!(net.subnet.contains(web.address) && net.subnet.contains(api.address));
    assert_ne!(web.address, api.address);
    assert!(web.egress && !api.egress);
    assert_eq!(web.bridge, net.bridge);
    assert!(web.veth_prefix.len() == 9 && web.veth_prefix != api.veth_prefix);
    assert_eq!(web.publish.len(), 1);
    assert_eq!(
        (web.publish[0].host_port, web.publish[0].port),
        (18080, 7001)
    );
    // Derived from the names, not from the order: a group put first changes nobody's.
    d.write("system.yaml", &SYSTEM.replacen(
        "groups:\n",
        "groups:\n  extra:\n    host: mainpc\n    network: private\n    agents:\n      - name: x\n        command: python3 agents/a.py\n",
        1,
    ));
    let q = d.plan("mainpc");
    assert_eq!(private(&q, "web").address, web.address);
    assert_eq!(private(&q, "api").address, api.address);
    // The second host's subnet is another one.
    let r = d.plan("pc2");
    assert_eq!(r.network.unwrap().subnet.to_string(), "10.88.2.0/24");
}

#[test]
fn every_group_sees_every_name_and_the_environment_names_hosts_and_agents() {
    let d = Dir::new("net-names");
    d.write("system.yaml", SYSTEM);
    let p = d.plan("mainpc");
    let api = private(&p, "api").address;
    for viewer in ["web", "api", "cache"] {
        let n = names_of(&p, viewer, api);
        for name in ["api", "api.api", "api.api.mainpc"] {
            assert!(n.contains(&name.to_string()), "{viewer} sees {name}: {n:?}");
        }
    }
    // A host-network group of the same host: the bridge's address for private viewers, the
    // loopback for host-network ones.
    assert!(names_of(&p, "web", Ipv4Addr::new(10, 88, 1, 1)).contains(&"redis".to_string()));
    assert!(names_of(&p, "cache", Ipv4Addr::LOCALHOST).contains(&"redis".to_string()));
    // The other host's private group, at its own address in pc2's subnet.
    let far = d.plan("pc2");
    let remote = private(&far, "far").address;
    assert!(names_of(&p, "web", remote).contains(&"remote.far.pc2".to_string()));
    assert!(names_of(&p, "web", "192.0.2.20".parse().unwrap()).contains(&"pc2".to_string()));
    assert_eq!(env(&p, "front", "MAINPC_IP"), Some("192.0.2.10"));
    assert_eq!(env(&p, "front", "PC2_IP"), Some("192.0.2.20"));
    assert_eq!(
        env(&p, "front", "API_ADDR"),
        Some(format!("{api}:7002").as_str())
    );
    assert_eq!(
        env(&p, "redis", "OBSERVABILITY_ENDPOINT"),
        Some("http://192.0.2.10:9000/metrics")
    );
    // A private group names its dependencies; a host-network one keeps addresses.
    assert_eq!(
        env(&p, "front", "AGENT_DEPENDENCIES"),
        Some("api=api:7002,remote=remote:7004")
    );
}

#[test]
fn a_new_group_renames_the_others_without_restarting_them() {
    let d = Dir::new("net-reload");
    d.write("system.yaml", SYSTEM);
    let old = d.plan("mainpc");
    d.write("system.yaml", &format!(
        "{SYSTEM}  more:\n    host: mainpc\n    network: private\n    agents:\n      - name: extra\n        command: python3 agents/a.py\n        port: 7010\n"
    ));
    let new = d.plan("mainpc");
    let x = diff(&old, &new);
    assert_eq!(x.added_groups, ["more"]);
    assert!(x.restarted_agents.is_empty(), "{x:?}");
    assert_eq!(x.renamed_groups, ["web", "api", "cache"]);
    assert!(x.netfilter);
    // A changed published port: the table is rewritten, nobody restarts.
    d.write("system.yaml", &SYSTEM.replace("18080:7001", "18081:7001"));
    let x = diff(&old, &d.plan("mainpc"));
    assert!(
        x.restarted_agents.is_empty() && x.changed_groups.is_empty(),
        "{x:?}"
    );
    assert!(x.netfilter);
    // Turning egress off changes the group.
    d.write(
        "system.yaml",
        &SYSTEM.replace(
            "network: private\n    agents:\n      - name: front",
            "network: {mode: private, egress: false}\n    agents:\n      - name: front",
        ),
    );
    let x = diff(&old, &d.plan("mainpc"));
    assert_eq!(x.changed_groups, ["web"]);
    assert_eq!(x.restarted_agents, ["front"]);
}

#[test]
fn network_errors_name_their_field() {
    let d = Dir::new("net-errors");
    d.write(
        "system.yaml",
        &SYSTEM.replace(
            "  pc2: {address: 192.0.2.20, role: secondary}",
            "  pc2: {address: 192.0.2.20, role: secondary, network: {subnet: 10.88.0.0/16}}",
        ),
    );
    let e = d.errors("mainpc");
    assert!(
        e.iter().any(|m| m.starts_with("hosts.pc2.network.subnet: ")
            && m.contains("overlaps host mainpc's 10.88.1.0/24")),
        "{e:?}"
    );
    d.write(
        "system.yaml",
        &SYSTEM.replace(
            "network: private\n    agents:\n      - name: front",
            "network: {mode: private, address: 10.88.9.3}\n    agents:\n      - name: front",
        ),
    );
    let e = d.errors("mainpc");
    assert!(
        e.iter().any(|m| m.starts_with("groups.web.network: ")
            && m.contains("10.88.9.3 is not in the host's group subnet 10.88.1.0/24")),
        "{e:?}"
    );
    d.write(
        "system.yaml",
        &SYSTEM.replace("port: 6379", "port: 6379\n        publish: [6380]"),
    );
    let e = d.errors("mainpc");
    assert!(
        e.iter()
            .any(|m| m.starts_with("groups.cache.agents[0].publish[0]: ")
                && m.contains("give the group `network: private`")),
        "{e:?}"
    );
    d.write("system.yaml", &SYSTEM.replace("18080:7001", "18080:7009"));
    let e = d.errors("mainpc");
    assert!(
        e.iter()
            .any(|m| m.contains("agent front has no port 7009 to publish")),
        "{e:?}"
    );
}

#[test]
fn groups_that_see_the_system_alike_share_one_name_table() {
    let d = Dir::new("net-shared");
    d.write("system.yaml", SYSTEM);
    let p = d.plan("mainpc");
    let names = |g: &str| &p.groups[g].names;
    // Two private groups of one host: one table, not one per group (the plan would grow
    // with groups × agents).
    assert!(std::sync::Arc::ptr_eq(names("web"), names("api")));
    // A host-network group reaches the names at other addresses: a table of its own.
    assert!(!std::sync::Arc::ptr_eq(names("web"), names("cache")));
    assert_ne!(names("web"), names("cache"));
}
