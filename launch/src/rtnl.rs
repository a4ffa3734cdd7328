//! A small synchronous rtnetlink client: just what a group's network needs (a veth pair with
//! one end in another namespace, a bridge, addresses, links up, a default route).
//!
//! Synchronous on purpose: it runs in the single-threaded launcher (`__group-init`), which
//! has no async runtime (`rtnetlink` is tokio-based). Messages are built and parsed by
//! `netlink-packet-route`; the socket is `netlink-sys`'s.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
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
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<Reply>, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
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
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(&format!("link {name}"), RouteNetlinkMessage::GetLink(m), 0) {
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
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(
            &format!("veth {name} (peer {peer})"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Creates the bridge `name` unless it exists; returns its index.
    pub fn ensure_bridge(&mut self, name: &str) -> Result<u32, RtnlError> {
        if let Some(i) = self.link_index(name)? {
            return Ok(i);
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        match self.request(
            &format!("bridge {name}"),
            RouteNetlinkMessage::NewLink(m),
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
            what: format!("bridge {name}"),
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
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        if let Some(c) = controller {
            m.attributes.push(LinkAttribute::Controller(c));
        }
        self.request(&format!("link {what}"), RouteNetlinkMessage::SetLink(m), 0)
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
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr.into()));
        m.attributes.push(AddressAttribute::Address(addr.into()));
        match self.request(
            &format!("address {addr}/{prefix} on {what}"),
            RouteNetlinkMessage::NewAddress(m),
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
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(
            &format!("default route via {gateway}"),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

impl Rtnl {
    /// Deletes link `index`.
    pub fn delete(&mut self, what: &str, index: u32) -> Result<(), RtnlError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(&format!("link {what}"), RouteNetlinkMessage::DelLink(m), 0)
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
