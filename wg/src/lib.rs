//! WireGuard for agent-supervisor's bridge: keys in WireGuard's own format ([`keys`]), the
//! wanted state of a device ([`DeviceConfig`]) and what a device reports ([`DeviceStats`]),
//! applied to and read from a userspace WireGuard over its configuration protocol ([`uapi`])
//! or from kernel WireGuard over generic netlink ([`kernel`]).
//!
//! No cryptography is written here: keys come from `x25519-dalek`, the tunnel itself from a
//! maintained implementation (gotatun in `agent-bridge`, or the kernel's).

pub mod kernel;
pub mod keys;
pub mod uapi;

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

pub use keys::{Key, KeyError};

/// The wanted state of a WireGuard device: applied whole, so peers not listed are removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub private_key: Key,
    pub listen_port: u16,
    pub peers: Vec<PeerConfig>,
}

/// One peer of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: Key,
    /// Where the peer is reached; `None` waits for the peer to reach us first.
    pub endpoint: Option<SocketAddr>,
    /// Networks routed to this peer (and accepted from it), as address and prefix length.
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Seconds between keepalives; 0 = off.
    pub persistent_keepalive: u16,
}

/// What a device reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub public_key: Option<Key>,
    pub listen_port: u16,
    pub peers: Vec<PeerStats>,
}

/// What a device reports about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub public_key: Key,
    pub endpoint: Option<SocketAddr>,
    /// The latest completed handshake; `None` when there was none.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<(IpAddr, u8)>,
}
