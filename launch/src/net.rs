//! A group's private network: a veth pair with `eth0` inside the group's network namespace
//! and its peer on the host's group bridge, the group's address and default route, loopback.
//!
//! Done by the launcher of `__group-init` right after `unshare(CLONE_NEWNET)` and before it
//! forks the init, with two rtnetlink sockets: one opened *before* the unshare (it stays in
//! the host's namespace and makes the host side: the veth pair, the bridge, the bridge's
//! address) and one opened after it (the group's side). Nothing here needs cleaning up on an
//! error: the namespace, and with it the veth pair, goes when the launcher exits without a
//! process left in it.

use std::os::fd::AsFd;

use crate::rtnl::{Rtnl, RtnlError};
use crate::spec::NetSpec;

/// The name of the group's end of its veth pair.
pub const GROUP_IFACE: &str = "eth0";

/// Opens the host's rtnetlink socket; call before `unshare(CLONE_NEWNET)`.
pub fn host_socket() -> Result<Rtnl, RtnlError> {
    Rtnl::open()
}

/// After `unshare(CLONE_NEWNET)`: the veth pair (the group's end moved into the namespace
/// this process is in now), the bridge (made if it is not there yet, with the gateway
/// address, up), the host end on it and up; inside, loopback and `eth0` up with the group's
/// address and the default route through the bridge.
pub fn connect(host: &mut Rtnl, n: &NetSpec) -> Result<(), RtnlError> {
    let ns = std::fs::File::open("/proc/thread-self/ns/net").map_err(RtnlError::Socket)?;
    // The kernel removes a veth pair in the background once its namespace is gone, so the
    // name of the last run's pair may still be taken: this launcher's pid makes it unique
    // among the live ones.
    let veth = format!("{}{:x}", n.veth_prefix, std::process::id());
    host.add_veth(&veth, GROUP_IFACE, ns.as_fd())?;
    let bridge = host.ensure_bridge(&n.bridge)?;
    host.add_address(&n.bridge, bridge, n.gateway, n.prefix)?;
    host.set_up(&n.bridge, bridge, None)?;
    let index = host.link_index(&veth)?.ok_or_else(|| RtnlError::Kernel {
        what: format!("veth {veth}"),
        errno: libc::ENODEV,
    })?;
    host.set_up(&veth, index, Some(bridge))?;
    let mut inside = Rtnl::open()?;
    loopback(&mut inside)?;
    let eth = inside
        .link_index(GROUP_IFACE)?
        .ok_or_else(|| RtnlError::Kernel {
            what: format!("{GROUP_IFACE} in the group"),
            errno: libc::ENODEV,
        })?;
    inside.add_address(GROUP_IFACE, eth, n.address, n.prefix)?;
    inside.set_up(GROUP_IFACE, eth, None)?;
    inside.add_default_route(n.gateway)
}

/// Brings up `lo` of the current network namespace.
pub fn loopback_up() -> Result<(), RtnlError> {
    loopback(&mut Rtnl::open()?)
}

fn loopback(r: &mut Rtnl) -> Result<(), RtnlError> {
    let lo = r.link_index("lo")?.ok_or_else(|| RtnlError::Kernel {
        what: "lo".to_string(),
        errno: libc::ENODEV,
    })?;
    r.set_up("lo", lo, None)
}
