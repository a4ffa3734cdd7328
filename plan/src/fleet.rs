//! The other hosts of the system, as this host's daemon asks them for their state: through
//! the bridge on a peer's overlay address, else on its `http_listen` where another machine can
//! reach it, else not at all (with the reason).

use std::net::SocketAddr;

use agent_config::model::Role;
use agent_config::{defaults, Loaded};

use crate::bridge::BridgePlan;

/// Another host and where its daemon is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPeer {
    pub host: String,
    /// `primary` or `secondary`.
    pub role: String,
    /// `http://ip:port`, or why it cannot be reached from this host.
    pub base: Result<String, String>,
}

/// `primary` or `secondary`.
pub fn role_name(l: &Loaded, host: &str) -> String {
    match l.system.hosts.get(host).map(|h| h.role) {
        Some(Role::Primary) => "primary",
        _ => "secondary",
    }
    .to_string()
}

/// Every host but `me`, in the system file's order.
pub fn peers(l: &Loaded, me: &str, bridge: Option<&BridgePlan>) -> Vec<FleetPeer> {
    let mut out = Vec::new();
    for (name, h) in l.system.hosts.iter().filter(|(n, _)| *n != me) {
        let through_bridge = bridge.and_then(|b| b.peers.iter().find(|p| &p.host == name));
        let base = match through_bridge {
            Some(p) => Ok(format!("http://{}:{}", p.overlay, p.daemon_port)),
            None => {
                let listen = defaults::daemon(&l.system, name).http_listen;
                match listen.parse::<SocketAddr>() {
                    Ok(a) if a.ip().is_unspecified() => {
                        Ok(format!("http://{}:{}", h.address, a.port()))
                    }
                    Ok(a) if !a.ip().is_loopback() => Ok(format!("http://{a}")),
                    _ => Err(format!(
                        "no bridge between {me} and {name}, and {name}'s daemon.http_listen \
                         {listen} is not reachable from another host"
                    )),
                }
            }
        };
        out.push(FleetPeer {
            host: name.clone(),
            role: role_name(l, name),
            base,
        });
    }
    out
}
