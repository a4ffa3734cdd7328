//! [`diff`]: what changed between two plans of one host, so `reload` touches exactly that.

use crate::{AgentPlan, GroupPlan, HostNetPlan, HostPlan, NetworkPlan, PrivateNet};

/// The difference between an old and a new plan of one host. Names are in the new plan's
/// order (removed ones in the old plan's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanDiff {
    /// Groups only in the new plan.
    pub added_groups: Vec<String>,
    /// Groups only in the old plan (their agents are in `removed_agents`).
    pub removed_groups: Vec<String>,
    /// Groups in both whose own settings (limits, root file system or image digest, binds,
    /// security, network, devices, dependencies) changed: the pod is made anew, so every
    /// agent of such a group is in `restarted_agents`.
    pub changed_groups: Vec<String>,
    /// Agents only in the new plan (or moved to another group: then also in
    /// `removed_agents`).
    pub added_agents: Vec<String>,
    /// Agents only in the old plan, or moved to another group.
    pub removed_agents: Vec<String>,
    /// Agents in both, in the same group, whose plan changed or whose group changed.
    pub restarted_agents: Vec<String>,
    /// Agents in both whose plan and group are unchanged.
    pub unchanged_agents: Vec<String>,
    /// Daemon settings that changed and that only a daemon restart applies (`http_listen`,
    /// `control_socket`, ...); the per-agent ones (log settings) are in the agents' plans.
    pub daemon_settings: Vec<&'static str>,
    /// Groups whose names (`/etc/hosts`) changed but nothing that needs a restart: the
    /// daemon rewrites their hosts file in place.
    pub renamed_groups: Vec<String>,
    /// Whether the host's nftables table (masquerading, published ports) must be rewritten.
    pub netfilter: bool,
    /// Whether the bridge (its keys, port, address or peers) must be configured anew.
    pub bridge: bool,
    /// Whether the other hosts, or where they are asked, changed.
    pub fleet: bool,
}

impl PlanDiff {
    /// Whether nothing changed at all.
    pub fn is_empty(&self) -> bool {
        self.added_groups.is_empty()
            && self.removed_groups.is_empty()
            && self.changed_groups.is_empty()
            && self.added_agents.is_empty()
            && self.removed_agents.is_empty()
            && self.restarted_agents.is_empty()
            && self.daemon_settings.is_empty()
            && self.renamed_groups.is_empty()
            && !self.netfilter
            && !self.bridge
            && !self.fleet
    }
}

/// The network plan without its published ports (they change without a restart).
fn unpublished(n: &NetworkPlan) -> NetworkPlan {
    match n {
        NetworkPlan::Host => NetworkPlan::Host,
        NetworkPlan::Private(p) => NetworkPlan::Private(PrivateNet {
            publish: Vec::new(),
            ..p.clone()
        }),
    }
}

/// What the host's nftables table is made of.
fn netfilter_of(p: &HostPlan) -> (Option<&HostNetPlan>, Vec<&NetworkPlan>) {
    (
        p.network.as_ref(),
        p.groups.values().map(|g| &g.network).collect(),
    )
}

/// Whether a running agent of plan `old` must restart to be as `new`: anything changed but
/// a system name that was not there before (a new agent's `<AGENT>_ADDR`).
fn same_agent(old: &AgentPlan, new: &AgentPlan) -> bool {
    if old == new {
        return true;
    }
    use std::collections::HashMap;
    // Every system name the old one saw, with the same value; new ones do not count.
    let seen: HashMap<&str, &str> = new
        .visible_names()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let kept = old
        .visible_names()
        .all(|(k, v)| seen.get(k.as_str()) == Some(&v.as_str()));
    let mut n = new.clone();
    n.system_names = old.system_names.clone();
    kept && n == *old
}

/// A group's own settings, without its agents.
fn same_group(a: &GroupPlan, b: &GroupPlan) -> bool {
    a.limits == b.limits
        && a.rootfs == b.rootfs
        && a.binds == b.binds
        && a.security == b.security
        && unpublished(&a.network) == unpublished(&b.network)
        && a.devices == b.devices
        && a.depends_on == b.depends_on
}

/// What changed from `old` to `new`.
pub fn diff(old: &HostPlan, new: &HostPlan) -> PlanDiff {
    let mut d = PlanDiff::default();
    for name in old.groups.keys() {
        if !new.groups.contains_key(name) {
            d.removed_groups.push(name.clone());
        }
    }
    for (name, g) in &new.groups {
        match old.groups.get(name) {
            None => d.added_groups.push(name.clone()),
            Some(o) if !same_group(o, g) => d.changed_groups.push(name.clone()),
            Some(o) if o.names != g.names => d.renamed_groups.push(name.clone()),
            Some(_) => {}
        }
    }
    for (og, oa) in old.agents() {
        match new.agent(&oa.name) {
            Some(na) if na.group == og.name => {}
            _ => d.removed_agents.push(oa.name.clone()),
        }
    }
    for (ng, na) in new.agents() {
        match old.agent(&na.name) {
            Some(oa) if oa.group == ng.name => {
                if !same_agent(oa, na) || d.changed_groups.contains(&ng.name) {
                    d.restarted_agents.push(na.name.clone());
                } else {
                    d.unchanged_agents.push(na.name.clone());
                }
            }
            _ => d.added_agents.push(na.name.clone()),
        }
    }
    d.netfilter = netfilter_of(old) != netfilter_of(new);
    d.bridge = old.bridge != new.bridge;
    d.fleet = (&old.fleet, &old.hosts, &old.role) != (&new.fleet, &new.hosts, &new.role);
    let (a, b) = (&old.daemon, &new.daemon);
    macro_rules! field {
        ($($f:ident),*) => {$(
            if a.$f != b.$f {
                d.daemon_settings.push(stringify!($f));
            }
        )*};
    }
    field!(
        state_dir,
        run_dir,
        log_dir,
        control_socket,
        control_group,
        http_listen,
        cgroup_root,
        cgroup_favordynmods,
        min_free_disk
    );
    d
}
