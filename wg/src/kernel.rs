//! Kernel WireGuard over its generic netlink family (`wireguard`): `WG_CMD_SET_DEVICE` makes
//! a device exactly a [`DeviceConfig`], `WG_CMD_GET_DEVICE` reads it back. The interface
//! itself is made over rtnetlink (`ip link add NAME type wireguard`) by the caller.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr as NlAddr};

use crate::{DeviceConfig, DeviceStats, Key, PeerStats};

/// A failed exchange with kernel WireGuard.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel WireGuard ({what}): netlink socket: {source}")]
    Socket {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel WireGuard ({what}): the kernel answered errno {errno}")]
    Kernel { what: String, errno: i32 },
    #[error("kernel WireGuard ({what}): the kernel has no `wireguard` netlink family (modprobe wireguard)")]
    NoFamily { what: String },
    #[error("kernel WireGuard ({what}): cannot parse the kernel's answer: {message}")]
    Decode { what: String, message: String },
}

struct Genl {
    socket: Socket,
    seq: u32,
    what: String,
}

impl Genl {
    fn open(what: String) -> Result<Genl, KernelError> {
        let io = |source| KernelError::Socket {
            what: what.clone(),
            source,
        };
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&NlAddr::new(0, 0)).map_err(io)?;
        Ok(Genl {
            socket,
            seq: 0,
            what,
        })
    }

    /// Sends one request, returns every message of the answer (up to the ACK or DONE).
    fn request<F>(&mut self, msg: GenlMessage<F>, flags: u16) -> Result<Vec<F>, KernelError>
    where
        F: GenlFamily
            + std::fmt::Debug
            + netlink_packet_core::Emitable
            + for<'a> netlink_packet_core::ParseableParametrized<
                [u8],
                netlink_packet_generic::GenlHeader,
            >,
    {
        self.seq = self.seq.wrapping_add(1);
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = NLM_F_REQUEST | flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        let what = self.what.clone();
        self.socket
            .send(&buf, 0)
            .map_err(|source| KernelError::Socket {
                what: what.clone(),
                source,
            })?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(|source| KernelError::Socket {
                    what: what.clone(),
                    source,
                })?;
            let mut at = 0;
            while at < data.len() {
                let reply =
                    NetlinkMessage::<GenlMessage<F>>::deserialize(&data[at..]).map_err(|e| {
                        KernelError::Decode {
                            what: what.clone(),
                            message: e.to_string(),
                        }
                    })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(KernelError::Decode {
                        what,
                        message: "a message of length 0".into(),
                    });
                }
                at += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(KernelError::Kernel {
                                what,
                                errno: -code.get(),
                            }),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m.payload);
                        if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The id of the `wireguard` family.
    fn family(&mut self) -> Result<u16, KernelError> {
        let msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
        });
        let answer = match self.request(msg, NLM_F_ACK) {
            Err(KernelError::Kernel { errno, .. }) if errno == libc_enoent() => {
                return Err(KernelError::NoFamily {
                    what: self.what.clone(),
                })
            }
            other => other?,
        };
        answer
            .iter()
            .flat_map(|m| m.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| KernelError::NoFamily {
                what: self.what.clone(),
            })
    }

    fn wireguard(
        &mut self,
        cmd: WireguardCmd,
        attributes: Vec<WireguardAttribute>,
        flags: u16,
    ) -> Result<Vec<WireguardMessage>, KernelError> {
        let family = self.family()?;
        let mut msg = GenlMessage::from_payload(WireguardMessage { cmd, attributes });
        msg.set_resolved_family_id(family);
        self.request(msg, flags)
    }
}

const fn libc_enoent() -> i32 {
    2
}

fn allowed(ip: IpAddr, prefix: u8) -> WireguardAllowedIp {
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(match ip {
            IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
            IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
        }),
        WireguardAllowedIpAttr::IpAddr(ip),
        WireguardAllowedIpAttr::Cidr(prefix),
    ])
}

/// Makes kernel WireGuard interface `ifname` exactly `config` (peers not in it removed).
pub fn set(ifname: &str, config: &DeviceConfig) -> Result<(), KernelError> {
    let peers = config
        .peers
        .iter()
        .map(|p| {
            let mut attrs = vec![
                WireguardPeerAttribute::PublicKey(p.public_key.0),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                WireguardPeerAttribute::PersistentKeepalive(p.persistent_keepalive),
                WireguardPeerAttribute::AllowedIps(
                    p.allowed_ips
                        .iter()
                        .map(|(ip, n)| allowed(*ip, *n))
                        .collect(),
                ),
            ];
            if let Some(e) = p.endpoint {
                attrs.push(WireguardPeerAttribute::Endpoint(e));
            }
            WireguardPeer(attrs)
        })
        .collect();
    let attributes = vec![
        WireguardAttribute::IfName(ifname.to_string()),
        WireguardAttribute::PrivateKey(config.private_key.0),
        WireguardAttribute::ListenPort(config.listen_port),
        WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
        WireguardAttribute::Peers(peers),
    ];
    let mut g = Genl::open(format!("set {ifname}"))?;
    g.wireguard(WireguardCmd::SetDevice, attributes, NLM_F_ACK)
        .map(drop)
}

/// Reads kernel WireGuard interface `ifname`.
pub fn get(ifname: &str) -> Result<DeviceStats, KernelError> {
    let mut g = Genl::open(format!("get {ifname}"))?;
    let answer = g.wireguard(
        WireguardCmd::GetDevice,
        vec![WireguardAttribute::IfName(ifname.to_string())],
        NLM_F_DUMP,
    )?;
    let mut stats = DeviceStats::default();
    // A large device comes in several messages; a peer may continue in the next one.
    for m in answer {
        for a in m.attributes {
            match a {
                WireguardAttribute::PublicKey(k) => stats.public_key = Some(Key(k)),
                WireguardAttribute::ListenPort(p) => stats.listen_port = p,
                WireguardAttribute::Peers(peers) => {
                    for WireguardPeer(attrs) in peers {
                        merge_peer(&mut stats.peers, attrs);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(stats)
}

fn merge_peer(peers: &mut Vec<PeerStats>, attrs: Vec<WireguardPeerAttribute>) {
    let key = attrs.iter().find_map(|a| match a {
        WireguardPeerAttribute::PublicKey(k) => Some(Key(*k)),
        _ => None,
    });
    let Some(key) = key else { return };
    let i = match peers.iter().position(|p| p.public_key == key) {
        Some(i) => i,
        None => {
            peers.push(PeerStats {
                public_key: key,
                endpoint: None,
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                persistent_keepalive: 0,
                allowed_ips: Vec::new(),
            });
            peers.len() - 1
        }
    };
    let p = &mut peers[i];
    for a in attrs {
        match a {
            WireguardPeerAttribute::Endpoint(e) => p.endpoint = Some(e as SocketAddr),
            WireguardPeerAttribute::LastHandshake(t) if t.seconds > 0 => {
                p.last_handshake = Some(
                    SystemTime::UNIX_EPOCH
                        + Duration::new(
                            t.seconds as u64,
                            t.nano_seconds.clamp(0, 999_999_999) as u32,
                        ),
                )
            }
            WireguardPeerAttribute::RxBytes(n) => p.rx_bytes = n,
            WireguardPeerAttribute::TxBytes(n) => p.tx_bytes = n,
            WireguardPeerAttribute::PersistentKeepalive(n) => p.persistent_keepalive = n,
            WireguardPeerAttribute::AllowedIps(list) => {
                for WireguardAllowedIp(attrs) in list {
                    let ip = attrs.iter().find_map(|a| match a {
                        WireguardAllowedIpAttr::IpAddr(ip) => Some(*ip),
                        _ => None,
                    });
                    let cidr = attrs.iter().find_map(|a| match a {
                        WireguardAllowedIpAttr::Cidr(c) => Some(*c),
                        _ => None,
                    });
                    if let (Some(ip), Some(c)) = (ip, cidr) {
                        p.allowed_ips.push((ip, c));
                    }
                }
            }
            _ => {}
        }
    }
}
