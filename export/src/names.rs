//! Kubernetes (and Nomad) names of the system's groups and agents, and the rewriting of the
//! environment variables that carry our names and addresses.
//!
//! A group becomes a namespace named after it, an agent a Service named after it in its
//! group's namespace: `<agent>.<group>` resolves as `<service>.<namespace>` does in a cluster.
//! Names are lower-cased (DNS is case-insensitive, so `VRAMOptimizerAgent.gpu-infrastructure`
//! still resolves) and must then be RFC 1035 labels; two names that become one are an error
//! naming both.

use agent_config::Loaded;
use indexmap::IndexMap;

use crate::ExportError;

/// Namespaces a group must not take: the cluster's own.
const RESERVED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// An agent's names in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentName {
    /// The Service and container name (`vramoptimizeragent`).
    pub service: String,
    /// Its group's namespace.
    pub namespace: String,
    pub group: String,
    /// Its ports, first one first.
    pub ports: Vec<u16>,
}

impl AgentName {
    /// `<service>.<namespace>`: resolves from every namespace of the cluster.
    pub fn dns(&self) -> String {
        format!("{}.{}", self.service, self.namespace)
    }
}

/// The names of every group and agent of the system (not only the exported hosts': an
/// agent depends on agents of other hosts by name).
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Agent name -> its names.
    pub agents: IndexMap<String, AgentName>,
    /// Group name -> namespace.
    pub groups: IndexMap<String, String>,
}

/// `VRAMOptimizerAgent` -> `vramoptimizeragent`.
pub fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Why `s` is not an RFC 1035 label (a Service name), if it is not.
pub fn label_problem(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 63 {
        return Some(format!("{s:?} must be 1-63 characters"));
    }
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let starts = s.starts_with(|c: char| c.is_ascii_lowercase());
    let ends = s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(ok_chars && starts && ends) {
        return Some(format!(
            "{s:?} is not a DNS label (lower-case letters, digits and '-', starting with a \
             letter, ending with a letter or digit)"
        ));
    }
    None
}

impl Names {
    /// The names of `l`'s groups and agents, or every problem at once.
    pub fn new(l: &Loaded) -> Result<Names, ExportError> {
        let mut problems = Vec::new();
        let mut names = Names::default();
        let mut by_ns: IndexMap<String, &str> = IndexMap::new();
        let mut by_service: IndexMap<String, &str> = IndexMap::new();
        for (gname, g) in &l.system.groups {
            let ns = lower(gname);
            if let Some(p) = label_problem(&ns) {
                problems.push(format!("group {gname}: its namespace {p}"));
            } else if RESERVED_NAMESPACES.contains(&ns.as_str()) || ns.starts_with("kube-") {
                problems.push(format!(
                    "group {gname}: namespace {ns:?} is the cluster's own; rename the group"
                ));
            }
            if let Some(other) = by_ns.insert(ns.clone(), gname) {
                problems.push(format!(
                    "groups {other} and {gname} both become namespace {ns:?}; rename one"
                ));
            }
            names.groups.insert(gname.clone(), ns.clone());
            for a in &g.agents {
                let service = lower(&a.name);
                if let Some(p) = label_problem(&service) {
                    problems.push(format!(
                        "agent {} (group {gname}): its Service name {p}",
                        a.name
                    ));
                }
                if let Some(other) = by_service.insert(service.clone(), &a.name) {
                    problems.push(format!(
                        "agents {other} and {} both become Service {service:?} (names are \
                         lower-cased: DNS does not tell them apart); rename one",
                        a.name
                    ));
                }
                names.agents.insert(
                    a.name.clone(),
                    AgentName {
                        service,
                        namespace: ns.clone(),
                        group: gname.clone(),
                        ports: a.all_ports().iter().map(|p| p.0).collect(),
                    },
                );
            }
        }
        if problems.is_empty() {
            Ok(names)
        } else {
            Err(ExportError::Name(problems.join("\n")))
        }
    }

    /// The namespace of `group`.
    pub fn namespace(&self, group: &str) -> String {
        self.groups
            .get(group)
            .cloned()
            .unwrap_or_else(|| lower(group))
    }

    /// The agent whose `<AGENT>_ADDR` variable is `key`.
    fn by_addr_var(&self, key: &str) -> Option<&AgentName> {
        let stem = key.strip_suffix("_ADDR")?;
        self.agents
            .iter()
            .find(|(name, _)| agent_plan::net::env_name(name) == stem)
            .map(|(_, a)| a)
    }

    /// A variable of the system's names (`AgentPlan::visible_names`) for the cluster.
    pub fn rewrite(&self, key: &str, host: impl Fn(&AgentName) -> String) -> Rewrite {
        if key == "OBSERVABILITY_ENDPOINT" {
            return Rewrite::Drop("the daemon's metrics endpoint does not exist in the cluster");
        }
        if let Some(a) = self.by_addr_var(key) {
            return match a.ports.first() {
                Some(p) => Rewrite::Value(format!("{}:{p}", host(a))),
                None => Rewrite::Drop("its agent has no port"),
            };
        }
        if key.ends_with("_IP") {
            return Rewrite::Drop("hosts have no address of their own in the cluster");
        }
        Rewrite::Keep
    }

    /// `AGENT_DEPENDENCIES` (`name=address:port,...`) with each agent at `host(agent)`.
    pub fn dependencies(&self, value: &str, host: impl Fn(&AgentName) -> String) -> String {
        value
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| {
                let Some((name, addr)) = d.split_once('=') else {
                    return d.to_string();
                };
                match self.agents.get(name) {
                    Some(a) => {
                        let port = addr.rsplit(':').next().unwrap_or_default();
                        format!("{name}={}:{port}", host(a))
                    }
                    None => d.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What becomes of a variable of the system's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    Keep,
    Value(String),
    Drop(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_lower_case_dns_labels() {
        assert_eq!(lower("VRAMOptimizerAgent"), "vramoptimizeragent");
        assert_eq!(label_problem("vramoptimizeragent"), None);
        assert_eq!(label_problem("pc2-redis"), None);
        assert!(label_problem("my_agent").is_some());
        assert!(label_problem("2fast").is_some());
        assert!(label_problem("trailing-").is_some());
        assert!(label_problem(&"a".repeat(64)).is_some());
        assert!(label_problem("").is_some());
    }

    #[test]
    fn address_variables_become_service_names() {
        let mut names = Names::default();
        names.agents.insert(
            "VRAMOptimizerAgent".into(),
            AgentName {
                service: "vramoptimizeragent".into(),
                namespace: "gpu-infrastructure".into(),
                group: "gpu-infrastructure".into(),
                ports: vec![5572],
            },
        );
        let dns = |a: &AgentName| a.dns();
        assert_eq!(
            names.rewrite("VRAMOPTIMIZERAGENT_ADDR", dns),
            Rewrite::Value("vramoptimizeragent.gpu-infrastructure:5572".into())
        );
        assert!(matches!(names.rewrite("MAINPC_IP", dns), Rewrite::Drop(_)));
        assert!(matches!(
            names.rewrite("OBSERVABILITY_ENDPOINT", dns),
            Rewrite::Drop(_)
        ));
        assert_eq!(names.rewrite("OTHER", dns), Rewrite::Keep);
        assert_eq!(
            names.dependencies("VRAMOptimizerAgent=10.88.1.7:5572,gone=1.2.3.4:1", dns),
            "VRAMOptimizerAgent=vramoptimizeragent.gpu-infrastructure:5572,gone=1.2.3.4:1"
        );
    }
}
