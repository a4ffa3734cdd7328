//! A small synchronous rtnetlink client: just what a group's network needs (a veth pair with
//! one end in another namespace, a bridge, addresses, links up, a default route).
//!
//! Synchronous on purpose: it runs in the single-threaded launcher (`__group-init`), which
//! has no async runtime (`rtnetlink` is tokio-based). The socket is `netlink-sys`'s, framing
//! constants and the reply buffer `netlink-packet-core`'s; the six message bodies are written
//! here ([`Body`]): with `netlink-packet-route`'s types the launcher's text grew from 0.75 to
//! 1.11 MB (1.72 MB with its parsers), and every shim forked from the launch server mapped
//! about 20 KiB more (ARCHITECTURE.md, Decisions).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NetlinkBuffer, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// An rtnetlink request that failed; `what` names the interface or route it was about.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("{what}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Kernel { what: String, errno: i32 },
    #[error("{what}: the kernel's reply could not be read: {message}")]
    Reply { what: String, message: String },
}

/// What a request's reply held besides its acknowledgement.
enum Reply {
    Link { index: u32 },
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
// Attributes (linux/if_link.h, if_addr.h, rtnetlink.h, veth.h).
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 1 << 15;
const NLM_F_REPLACE: u16 = 0x100;

/// The body of one rtnetlink request (after `struct nlmsghdr`): a fixed header, then
/// attributes (`struct rtattr`: length, type, value, padded to 4 bytes).
struct Body(Vec<u8>);

impl Body {
    /// `struct ifinfomsg`: family, pad, type, index, flags, change.
    fn link(index: u32, flags: u32, change: u32) -> Body {
        let mut b = vec![0u8; 4];
        b.extend_from_slice(&index.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&change.to_ne_bytes());
        Body(b)
    }

    /// `struct ifaddrmsg`: AF_INET, prefix length, flags, scope, index.
    fn addr(index: u32, prefix: u8) -> Body {
        let mut b = vec![libc::AF_INET as u8, prefix, 0, 0];
        b.extend_from_slice(&index.to_ne_bytes());
        Body(b)
    }

    /// `struct rtmsg` of a unicast IPv4 route in the main table, scope universe.
    fn route() -> Body {
        Body::route_to(0, libc::RT_SCOPE_UNIVERSE)
    }

    /// struct rtmsg of a unicast route in the main table to a `prefix`-long destination.
    fn route_to(prefix: u8, scope: u8) -> Body {
        let mut b = vec![
            libc::AF_INET as u8,
            prefix,              // destination prefix length (0: the default route)
            0,                   // source prefix length
            0,                   // tos
            libc::RT_TABLE_MAIN, // table
            libc::RTPROT_BOOT,   // protocol
            scope,
            libc::RTN_UNICAST,
        ];
        b.extend_from_slice(&0u32.to_ne_bytes());
        Body(b)
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Body {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    /// A NUL-terminated string attribute.
    fn name(self, kind: u16, s: &str) -> Body {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    /// An attribute holding `inner`'s bytes (nested attributes, or a whole message).
    fn nest(self, kind: u16, inner: Body) -> Body {
        self.attr(kind | NLA_F_NESTED, &inner.0)
    }
}

/// A route netlink socket of the network namespace the calling thread was in when it was
/// opened (it stays there when the thread moves to another one).
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// Opens a route netlink socket in the current network namespace.
    pub fn open() -> Result<Rtnl, RtnlError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        socket.bind_auto().map_err(RtnlError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(RtnlError::Socket)?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends `msg` with `flags` (and ACK), returns the messages of the reply.
    fn request(
        &mut self,
        what: &str,
        kind: u16,
        body: Body,
        flags: u16,
    ) -> Result<Vec<Reply>, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        // struct nlmsghdr: length, type, flags, sequence number, port id (0: the kernel's).
        let len = 16 + body.0.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        buf.extend_from_slice(&self.seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&body.0);
        self.socket.send(&buf, 0).map_err(RtnlError::Socket)?;
        let reply = |message: String| RtnlError::Reply {
            what: what.to_string(),
            message,
        };
        // Replies are read by hand (header, error code, a link's index): parsing them into
        // `RouteNetlinkMessage` links every parser of the crate into the launcher, which
        // doubled its size and the memory of every shim forked from the launch server.
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(RtnlError::Socket)?;
            let mut at = 0;
            while at < data.len() {
                let msg =
                    NetlinkBuffer::new_checked(&data[at..]).map_err(|e| reply(e.to_string()))?;
                let len = msg.length() as usize;
                if len == 0 {
                    return Err(reply("a message of length 0".to_string()));
                }
                at += (len + 3) & !3;
                if msg.sequence_number() != self.seq {
                    continue;
                }
                let payload = msg.payload();
                let word = |i: usize| -> Result<i32, RtnlError> {
                    payload
                        .get(i..i + 4)
                        .and_then(|b| b.try_into().ok())
                        .map(i32::from_ne_bytes)
                        .ok_or_else(|| reply(format!("a message of {} bytes", payload.len())))
                };
                match msg.message_type() {
                    NLMSG_ERROR => {
                        return match word(0)? {
                            0 => Ok(out),
                            code => Err(RtnlError::Kernel {
                                what: what.to_string(),
                                errno: -code,
                            }),
                        }
                    }
                    NLMSG_DONE => return Ok(out),
                    // struct ifinfomsg: family, pad, type (u16), index (i32), ...
                    RTM_NEWLINK => out.push(Reply::Link {
                        index: word(4)? as u32,
                    }),
                    _ => {}
                }
            }
        }
    }

    /// The index of the link called `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, RtnlError> {
        let body = Body::link(0, 0, 0).name(IFLA_IFNAME, name);
        match self.request(&format!("link {name}"), RTM_GETLINK, body, 0) {
            Ok(reply) => Ok(reply.into_iter().map(|Reply::Link { index }| index).next()),
            Err(RtnlError::Kernel { errno, .. }) if errno == libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the veth pair `name` (here) and `peer`, which is moved at once into the
    /// network namespace `peer_ns` (an fd of `/proc/<pid>/ns/net`).
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
    ) -> Result<(), RtnlError> {
        let fd = u32::try_from(peer_ns.as_raw_fd()).unwrap_or_default();
        let peer_msg = Body::link(0, 0, 0)
            .name(IFLA_IFNAME, peer)
            .attr(IFLA_NET_NS_FD, &fd.to_ne_bytes());
        let info = Body(Vec::new()).name(IFLA_INFO_KIND, "veth").nest(
            IFLA_INFO_DATA,
            Body(Vec::new()).nest(VETH_INFO_PEER, peer_msg),
        );
        let body = Body::link(0, 0, 0)
            .name(IFLA_IFNAME, name)
            .nest(IFLA_LINKINFO, info);
        self.request(
            &format!("veth {name} (peer {peer})"),
            RTM_NEWLINK,
            body,
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Creates the bridge `name` unless it exists; returns its index.
    pub fn ensure_bridge(&mut self, name: &str) -> Result<u32, RtnlError> {
        self.ensure_link(name, "bridge")
    }

    /// Creates the link `name` of `kind` (`bridge`, `wireguard`) unless a link of that name
    /// exists; returns its index. A kind the kernel does not know fails with `EOPNOTSUPP`.
    pub fn ensure_link(&mut self, name: &str, kind: &str) -> Result<u32, RtnlError> {
        if let Some(i) = self.link_index(name)? {
            return Ok(i);
        }
        let body = Body::link(0, 0, 0)
            .name(IFLA_IFNAME, name)
            .nest(IFLA_LINKINFO, Body(Vec::new()).name(IFLA_INFO_KIND, kind));
        match self.request(
            &format!("{kind} {name}"),
            RTM_NEWLINK,
            body,
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            // Another group's init made it meanwhile.
            Ok(_)
            | Err(RtnlError::Kernel {
                errno: libc::EEXIST,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        self.link_index(name)?.ok_or_else(|| RtnlError::Kernel {
            what: format!("{kind} {name}"),
            errno: libc::ENODEV,
        })
    }

    /// Sets link `index` up, and with `controller` attaches it to that bridge.
    pub fn set_up(
        &mut self,
        what: &str,
        index: u32,
        controller: Option<u32>,
    ) -> Result<(), RtnlError> {
        let up = libc::IFF_UP as u32;
        let mut body = Body::link(index, up, up);
        if let Some(c) = controller {
            body = body.attr(IFLA_MASTER, &c.to_ne_bytes());
        }
        self.request(&format!("link {what}"), RTM_SETLINK, body, 0)
            .map(drop)
    }

    /// Adds `addr/prefix` to link `index` (an address it has already is fine).
    pub fn add_address(
        &mut self,
        what: &str,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), RtnlError> {
        let body = Body::addr(index, prefix)
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        match self.request(
            &format!("address {addr}/{prefix} on {what}"),
            RTM_NEWADDR,
            body,
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_)
            | Err(RtnlError::Kernel {
                errno: libc::EEXIST,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds the default route through `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<(), RtnlError> {
        let body = Body::route().attr(RTA_GATEWAY, &gateway.octets());
        self.request(
            &format!("default route via {gateway}"),
            RTM_NEWROUTE,
            body,
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

impl Rtnl {
    /// Sets the MTU of link `index`.
    pub fn set_mtu(&mut self, what: &str, index: u32, mtu: u32) -> Result<(), RtnlError> {
        let body = Body::link(index, 0, 0).attr(IFLA_MTU, &mtu.to_ne_bytes());
        self.request(&format!("MTU of {what}"), RTM_SETLINK, body, 0)
            .map(drop)
    }

    /// Routes `dst/prefix` out of link `index` (made or replaced: a second call is fine).
    pub fn replace_route(
        &mut self,
        what: &str,
        dst: Ipv4Addr,
        prefix: u8,
        index: u32,
    ) -> Result<(), RtnlError> {
        let body = Body::route_to(prefix, libc::RT_SCOPE_LINK)
            .attr(RTA_DST, &dst.octets())
            .attr(RTA_OIF, &index.to_ne_bytes());
        self.request(
            &format!("route {dst}/{prefix} via {what}"),
            RTM_NEWROUTE,
            body,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Deletes link `index`.
    pub fn delete(&mut self, what: &str, index: u32) -> Result<(), RtnlError> {
        self.request(
            &format!("link {what}"),
            RTM_DELLINK,
            Body::link(index, 0, 0),
            0,
        )
        .map(drop)
    }
}

/// Deletes the link `name` of the current network namespace, if there is one.
pub fn delete_link(name: &str) -> Result<(), RtnlError> {
    let mut r = Rtnl::open()?;
    match r.link_index(name)? {
        None => Ok(()),
        Some(i) => match r.delete(name, i) {
            Err(RtnlError::Kernel { errno, .. }) if errno == libc::ENODEV => Ok(()),
            other => other,
        },
    }
}
