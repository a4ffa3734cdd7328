//! A host's nftables table for its private group networks: masquerading for the groups with
//! egress, a drop for those without, and the DNAT rules of published ports.
//!
//! Why the `nft` tool and not netlink: the kernel's nftables netlink API (`nf_tables` batches
//! of expressions) has no maintained Rust crate that builds rules (`nftnl` bindings need
//! `libnftnl` at build time and are unmaintained), while `nft -f -` applies a whole table in
//! one kernel transaction: the table is written as text, deleted and recreated atomically, so
//! a new daemon re-adopts by rewriting it from its plan (never adding a rule twice), and a
//! group's rules disappear with it by the next write. The rules live in the kernel: a
//! published port keeps answering while the daemon is down.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// A published port: `host_addr:host_port` (any of the host's addresses when `host_addr` is
/// `None`) goes to `addr:port` of a private group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// `group/agent`, in the rule's comment.
    pub owner: String,
    pub host_addr: Option<Ipv4Addr>,
    pub host_port: u16,
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// Everything one host's table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The table's name (`ip` family), one per daemon: derived from its bridge.
    pub table: String,
    /// The host's group bridge.
    pub bridge: String,
    /// The host's group subnet.
    pub subnet: (Ipv4Addr, u8),
    /// Addresses of the groups whose traffic to the outside is masqueraded.
    pub egress: Vec<Ipv4Addr>,
    /// Addresses of the groups that reach nothing beyond the bridge.
    pub no_egress: Vec<Ipv4Addr>,
    pub forwards: Vec<Forward>,
    /// The bridge's WireGuard interface: traffic to other hosts' groups leaves through it
    /// unmasqueraded (the peer sees the group's own address) and is not `egress`.
    pub tunnel: Option<String>,
}

/// `nft` failed; `stderr` is what it said.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("run nft: {0} (install the nftables package)")]
    Spawn(#[source] std::io::Error),
    #[error("nft table {table}: {stderr}")]
    Failed { table: String, stderr: String },
}

fn set(addrs: &[Ipv4Addr]) -> String {
    let items: Vec<String> = addrs.iter().map(Ipv4Addr::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

impl Ruleset {
    /// The `nft -f` script that replaces the table with this ruleset in one transaction.
    pub fn script(&self) -> String {
        let t = &self.table;
        let (net, prefix) = self.subnet;
        let br = &self.bridge;
        // Interfaces inside the system: the group bridge and the tunnel to other hosts.
        let inside = match &self.tunnel {
            Some(t) => format!("{{ \"{br}\", \"{t}\" }}"),
            None => format!("\"{br}\""),
        };
        let mut s = String::new();
        // Declaring the table first makes the delete succeed when it does not exist yet.
        let _ = writeln!(s, "table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
        let _ = writeln!(
            s,
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;"
        );
        if !self.egress.is_empty() {
            let _ = writeln!(
                s,
                "    ip saddr {} ip daddr != {net}/{prefix} oifname != {inside} masquerade",
                set(&self.egress)
            );
        }
        // A published port reached from another group of this host: the reply must come
        // back through the host, so the source becomes the bridge's address.
        for f in &self.forwards {
            let _ = writeln!(
                s,
                "    ip saddr {net}/{prefix} ip daddr {} tcp dport {} ct status dnat masquerade",
                f.addr, f.port
            );
        }
        s.push_str("  }\n");
        let _ = writeln!(
            s,
            "  chain forward {{\n    type filter hook forward priority filter; policy accept;"
        );
        if !self.no_egress.is_empty() {
            let _ = writeln!(
                s,
                "    iifname \"{br}\" ip saddr {} oifname != {inside} drop",
                set(&self.no_egress)
            );
        }
        s.push_str("  }\n");
        // Only traffic to this host's own addresses: a group's connection to port 8080 of
        // another machine is not a published port.
        // (`dstnat` is a name nft knows for prerouting only; it is -100 for both.)
        for chain in ["prerouting", "output"] {
            let _ = writeln!(
                s,
                "  chain {chain} {{\n    type nat hook {chain} priority -100; policy accept;"
            );
            for f in &self.forwards {
                let daddr = match f.host_addr {
                    Some(a) => format!("ip daddr {a} "),
                    None => "ip daddr != 127.0.0.0/8 fib daddr type local ".to_string(),
                };
                let _ = writeln!(
                    s,
                    "    {daddr}tcp dport {} dnat to {}:{} comment \"{}\"",
                    f.host_port, f.addr, f.port, f.owner
                );
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
        s
    }

    /// Writes the table into the kernel (replacing what was there).
    pub fn apply(&self) -> Result<(), NftError> {
        nft(&self.table, &self.script())
    }
}

impl Ruleset {
    /// The table of `plan`'s private groups; `None` when the host has none.
    pub fn of(plan: &agent_plan::HostPlan) -> Option<Ruleset> {
        let net = plan.network.as_ref()?;
        let mut r = Ruleset {
            table: net.table.clone(),
            bridge: net.bridge.clone(),
            subnet: (net.subnet.base, net.subnet.prefix),
            egress: Vec::new(),
            no_egress: Vec::new(),
            forwards: Vec::new(),
            tunnel: plan.bridge.as_ref().map(|b| b.interface.clone()),
        };
        for g in plan.groups.values() {
            let agent_plan::NetworkPlan::Private(n) = &g.network else {
                continue;
            };
            if n.egress {
                r.egress.push(n.address);
            } else {
                r.no_egress.push(n.address);
            }
            r.forwards.extend(n.publish.iter().map(|p| Forward {
                owner: format!("{}/{}", g.name, p.agent),
                host_addr: p.host_addr,
                host_port: p.host_port,
                addr: n.address,
                port: p.port,
            }));
        }
        Some(r)
    }
}

/// Makes the kernel's table match `plan` (written when the host has private groups, removed
/// when it has none), and turns on IPv4 forwarding where a group has egress.
pub fn sync(plan: &agent_plan::HostPlan) -> Result<(), NftError> {
    match Ruleset::of(plan) {
        Some(r) => {
            if !r.egress.is_empty() {
                // Like Docker: masquerading is of no use without forwarding.
                let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
            }
            r.apply()
        }
        None => {
            let table = agent_plan::net::table_name(&plan.daemon.run_dir);
            if exists(&table) {
                remove(&table)
            } else {
                Ok(())
            }
        }
    }
}

/// Removes `table` (nothing when it does not exist).
pub fn remove(table: &str) -> Result<(), NftError> {
    nft(
        table,
        &format!("table ip {table}\ndelete table ip {table}\n"),
    )
}

/// Whether the kernel has the table `table`.
pub fn exists(table: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", table])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nft(table: &str, script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Failed {
            table: table.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset() -> Ruleset {
        Ruleset {
            table: "as_test".into(),
            bridge: "asbr0".into(),
            subnet: ("10.88.1.0".parse().unwrap(), 24),
            egress: vec!["10.88.1.7".parse().unwrap()],
            no_egress: vec!["10.88.1.9".parse().unwrap()],
            forwards: vec![Forward {
                owner: "web/api".into(),
                host_addr: None,
                host_port: 8080,
                addr: "10.88.1.7".parse().unwrap(),
                port: 80,
            }],
            tunnel: None,
        }
    }

    #[test]
    fn traffic_through_the_tunnel_is_neither_masqueraded_nor_egress() {
        let s = Ruleset {
            tunnel: Some("aswg0".into()),
            ..ruleset()
        }
        .script();
        assert!(
            s.contains("oifname != { \"asbr0\", \"aswg0\" } masquerade"),
            "{s}"
        );
        assert!(
            s.contains("oifname != { \"asbr0\", \"aswg0\" } drop"),
            "{s}"
        );
    }

    #[test]
    fn the_script_replaces_the_table_atomically() {
        let s = ruleset().script();
        assert!(s.starts_with("table ip as_test\ndelete table ip as_test\ntable ip as_test {"));
        assert!(s.contains(
            "ip saddr { 10.88.1.7 } ip daddr != 10.88.1.0/24 oifname != \"asbr0\" masquerade"
        ));
        assert!(s.contains("iifname \"asbr0\" ip saddr { 10.88.1.9 } oifname != \"asbr0\" drop"));
        assert!(s.contains(
            "ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat to 10.88.1.7:80"
        ));
        assert!(
            !s.contains("    tcp dport"),
            "every forward is for local addresses only"
        );
    }

    #[test]
    fn no_groups_no_rules() {
        let mut r = ruleset();
        r.egress.clear();
        r.no_egress.clear();
        r.forwards.clear();
        let s = r.script();
        assert!(!s.contains("masquerade") && !s.contains("drop") && !s.contains("dnat"));
    }
}
