//! The host's end of the WireGuard bridge: its overlay address, port, key file and every
//! other bridged host as a peer, with the networks routed to it (the peer's overlay address
//! and its group subnet). Static: it depends on the system file only, so `check` reports
//! its findings for every host.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use agent_config::model::{BridgeImplementation, BridgeSettings};
use agent_config::Loaded;
use agent_wg::Key;

use crate::net::{Subnet, SystemNet};

/// The default `listen_port`.
pub const DEFAULT_PORT: u16 = 51820;
/// The default `persistent_keepalive`, in seconds.
pub const DEFAULT_KEEPALIVE: u16 = 25;

/// This host's end of the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePlan {
    /// The WireGuard interface: `aswg` and 8 hex digits of the run directory.
    pub interface: String,
    pub implementation: BridgeImplementation,
    /// This host's overlay address and the overlay's prefix length.
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub listen_port: u16,
    /// Absolute (relative paths are from the system file's directory).
    pub private_key_file: PathBuf,
    pub public_key: Key,
    pub peers: Vec<BridgePeer>,
}

/// Another host, as this host's bridge sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePeer {
    pub host: String,
    pub public_key: Key,
    /// `ip:port` or `name:port`, resolved when the bridge is configured.
    pub endpoint: String,
    pub overlay: Ipv4Addr,
    /// Its group subnet (routed through the tunnel).
    pub subnet: Subnet,
    pub persistent_keepalive: u16,
    /// The port of the peer's daemon (`daemon.http_listen`): reached on its overlay address.
    pub daemon_port: u16,
}

impl BridgePeer {
    /// The networks sent to and accepted from this peer.
    pub fn allowed_ips(&self) -> Vec<(Ipv4Addr, u8)> {
        vec![(self.overlay, 32), (self.subnet.base, self.subnet.prefix)]
    }
}

/// The WireGuard interface of a daemon with run directory `run_dir`.
pub fn interface_name(run_dir: &Path) -> String {
    let b = crate::net::bridge_name(run_dir);
    format!("aswg{}", &b[4..])
}

/// A host's overlay address, when its bridge has a valid one.
pub fn overlay_address(b: &BridgeSettings) -> Option<(Ipv4Addr, u8)> {
    let (ip, prefix) = b.address.as_deref()?.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (8..=30).contains(p))?;
    Some((ip.parse().ok()?, prefix))
}

/// `host`'s bridge, or `None` when it has no `bridge` section; errors as (field, message).
pub fn resolve(
    l: &Loaded,
    host: &str,
    run_dir: &Path,
    sysnet: Option<&SystemNet>,
) -> Result<Option<BridgePlan>, Vec<(String, String)>> {
    let Some(b) = l.system.hosts.get(host).and_then(|h| h.bridge.as_ref()) else {
        return Ok(None);
    };
    let mut errors = Vec::new();
    let field = |f: &str| format!("hosts.{host}.bridge.{f}");
    let address = overlay_address(b);
    if address.is_none() {
        errors.push((
            field("address"),
            "the bridge needs this host's overlay address with its prefix, like 10.77.0.1/24"
                .to_string(),
        ));
    }
    let public_key = match b.public_key.as_deref().map(Key::parse) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            errors.push((field("public_key"), e.to_string()));
            None
        }
        None => {
            errors.push((
                field("public_key"),
                "the bridge needs this host's public key (`agent-supervisor bridge keygen` prints it)"
                    .to_string(),
            ));
            None
        }
    };
    let private_key_file = match &b.private_key_file {
        Some(f) if !f.as_os_str().is_empty() => Some(l.dir.join(f)),
        _ => {
            errors.push((
                field("private_key_file"),
                "the bridge needs this host's private key file (`agent-supervisor bridge keygen --out FILE` writes one)"
                    .to_string(),
            ));
            None
        }
    };
    let mut peers = Vec::new();
    for (other, h) in &l.system.hosts {
        let Some(ob) = h.bridge.as_ref().filter(|_| other != host) else {
            continue;
        };
        // The other host's own findings are reported on its fields by its own plan (and by
        // `check` for every host); here a broken peer is left out.
        let (Some((overlay, _)), Some(Ok(key))) = (
            overlay_address(ob),
            ob.public_key.as_deref().map(Key::parse),
        ) else {
            continue;
        };
        let Some(subnet) = sysnet.and_then(|n| n.subnets.get(other)) else {
            continue;
        };
        let endpoint = match &ob.endpoint {
            Some(e) => e.clone(),
            None => {
                let port = ob.listen_port.map_or(DEFAULT_PORT, |p| p.0);
                if h.address.contains(':') && !h.address.starts_with('[') {
                    format!("[{}]:{port}", h.address)
                } else {
                    format!("{}:{port}", h.address)
                }
            }
        };
        let listen = agent_config::defaults::daemon(&l.system, other).http_listen;
        let daemon_port = listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(9000);
        peers.push(BridgePeer {
            host: other.clone(),
            public_key: key,
            endpoint,
            overlay,
            subnet: *subnet,
            persistent_keepalive: b.persistent_keepalive.unwrap_or(DEFAULT_KEEPALIVE),
            daemon_port,
        });
    }
    let (Some((address, prefix)), Some(public_key), Some(private_key_file)) =
        (address, public_key, private_key_file)
    else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(BridgePlan {
        interface: interface_name(run_dir),
        implementation: b.implementation.unwrap_or_default(),
        address,
        prefix,
        listen_port: b.listen_port.map_or(DEFAULT_PORT, |p| p.0),
        private_key_file,
        public_key,
        peers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_and_follow_the_run_dir() {
        let a = interface_name(Path::new("/run/agent-supervisor"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("aswg"));
        assert_ne!(a, interface_name(Path::new("/tmp/x/run")));
    }
}
