//! The per-host summary `check` prints: groups, agents, ports, GPUs and memory.

use agent_config::model::GpuDevices;
use agent_config::units::ByteSize;
use agent_config::{defaults, Loaded};
use serde::Serialize;

/// One agent line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSummary {
    pub name: String,
    pub ports: Vec<u16>,
}

/// One group of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub name: String,
    pub image: String,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub gpus: Option<String>,
    pub depends_on: Vec<String>,
    pub agents: Vec<AgentSummary>,
}

/// One host of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct HostSummary {
    pub name: String,
    pub address: String,
    pub role: String,
    pub this_machine: bool,
    pub http_listen: String,
    pub groups: Vec<GroupSummary>,
    pub agent_count: usize,
    pub port_count: usize,
    pub memory_total: u64,
    pub gpu_groups: usize,
}

/// Builds the summary of every host.
pub fn summarize(l: &Loaded, local: Option<&str>) -> Vec<HostSummary> {
    let s = &l.system;
    s.hosts
        .iter()
        .map(|(hname, h)| {
            let groups: Vec<GroupSummary> = s
                .groups
                .iter()
                .filter(|(_, g)| g.host == *hname)
                .map(|(gname, g)| GroupSummary {
                    name: gname.clone(),
                    image: defaults::image(g).to_string(),
                    memory: g.resources.memory.map(|m| m.0),
                    cpus: g.resources.cpus.map(|c| c.0),
                    gpus: g.gpus.as_ref().map(|r| {
                        let d = match &r.devices {
                            GpuDevices::All => "all".to_string(),
                            GpuDevices::Count(n) => n.to_string(),
                            GpuDevices::List(ids) => format!("{ids:?}"),
                        };
                        if r.optional {
                            format!("{d} (optional)")
                        } else {
                            d
                        }
                    }),
                    depends_on: g.depends_on.0.keys().cloned().collect(),
                    agents: g
                        .agents
                        .iter()
                        .map(|a| AgentSummary {
                            name: a.name.clone(),
                            ports: a.all_ports().iter().map(|p| p.0).collect(),
                        })
                        .collect(),
                })
                .collect();
            HostSummary {
                name: hname.clone(),
                address: h.address.clone(),
                role: format!("{:?}", h.role).to_lowercase(),
                this_machine: local == Some(hname.as_str()),
                http_listen: defaults::daemon(s, hname).http_listen,
                agent_count: groups.iter().map(|g| g.agents.len()).sum(),
                port_count: groups
                    .iter()
                    .flat_map(|g| &g.agents)
                    .map(|a| a.ports.len())
                    .sum(),
                memory_total: groups.iter().filter_map(|g| g.memory).sum(),
                gpu_groups: groups.iter().filter(|g| g.gpus.is_some()).count(),
                groups,
            }
        })
        .collect()
}

/// Renders the summary as aligned text.
pub fn render(hosts: &[HostSummary]) -> String {
    let mut out = String::new();
    for h in hosts {
        out.push_str(&format!(
            "host {} ({}, {}){}: {} groups, {} agents, {} ports, {} GPU group(s), memory limits {}, daemon on {}\n",
            short(&h.name),
            short(&h.address),
            h.role,
            if h.this_machine { " [this machine]" } else { "" },
            h.groups.len(),
            h.agent_count,
            h.port_count,
            h.gpu_groups,
            ByteSize(h.memory_total),
            h.http_listen,
        ));
        for g in &h.groups {
            let mut attrs = vec![format!("image {}", g.image)];
            if let Some(m) = g.memory {
                attrs.push(format!("memory {}", ByteSize(m)));
            }
            if let Some(c) = g.cpus {
                attrs.push(format!("cpus {c}"));
            }
            if let Some(gp) = &g.gpus {
                attrs.push(format!("gpus {gp}"));
            }
            if !g.depends_on.is_empty() {
                let after: Vec<String> = g.depends_on.iter().map(|d| short(d)).collect();
                attrs.push(format!("after {}", after.join(", ")));
            }
            out.push_str(&format!(
                "  group {} ({} agents; {})\n",
                short(&g.name),
                g.agents.len(),
                attrs.join(", ")
            ));
            // (A longer name is an error of its own; `format!` panics on widths over 65535.)
            let width = g
                .agents
                .iter()
                .map(|a| a.name.len())
                .max()
                .unwrap_or(0)
                .min(64);
            for a in &g.agents {
                let ports: Vec<String> = a.ports.iter().map(|p| p.to_string()).collect();
                let ports = if ports.is_empty() {
                    "-".to_string()
                } else {
                    ports.join(", ")
                };
                out.push_str(&format!("    {:width$}  {}\n", short(&a.name), ports));
            }
        }
    }
    out
}

/// A name as the table shows it: at most 64 characters (a longer one is an error of its
/// own, shown there), control characters escaped, `?` where it could not be read.
fn short(name: &str) -> String {
    if name == agent_config::UNREADABLE {
        return "?".into();
    }
    let mut out: String = name
        .chars()
        .take(64)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if name.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}
