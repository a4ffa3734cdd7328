//! The bridge's round-trip time: one ICMP echo to a peer's overlay address (the peer's
//! kernel answers it, through the tunnel both ways). A raw socket, so root only, as the
//! daemon is; blocking, with a deadline, for the bridge task's blocking threads.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn};

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `ident` and `seq` and 16 bytes of payload.
fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"agent-supervisor");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether `packet` (an IPv4 packet as a raw socket reads it) is the echo reply to
/// (`ident`, `seq`) from `from`.
fn is_reply(packet: &[u8], from: Ipv4Addr, ident: u16, seq: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    if packet.len() < ihl + 8 || ihl < 20 {
        return false;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let icmp = &packet[ihl..];
    src == from
        && icmp[0] == 0
        && u16::from_be_bytes([icmp[4], icmp[5]]) == ident
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
}

/// The round-trip time of one echo to `to`, or `None` when no reply came within `timeout`.
pub fn rtt(to: Ipv4Addr, seq: u16, timeout: Duration) -> Result<Option<Duration>, String> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )
    .map_err(|e| format!("ICMP socket: {e}"))?;
    let ident = (std::process::id() & 0xffff) as u16;
    let start = Instant::now();
    let dest = SockaddrIn::from(std::net::SocketAddrV4::new(to, 0));
    socket::sendto(
        fd.as_raw_fd(),
        &echo_request(ident, seq),
        &dest,
        socket::MsgFlags::empty(),
    )
    .map_err(|e| format!("ICMP echo to {to}: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(None);
        }
        let tv = nix::sys::time::TimeVal::new(
            left.as_secs() as i64,
            i64::from(left.subsec_micros().max(1)),
        );
        socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| format!("ICMP socket timeout: {e}"))?;
        match socket::recv(fd.as_raw_fd(), &mut buf, socket::MsgFlags::empty()) {
            Ok(n) if is_reply(&buf[..n], to, ident, seq) => return Ok(Some(start.elapsed())),
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("ICMP reply from {to}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_request_verifies() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        let mut reply = vec![0x45u8; 20];
        reply[12..16].copy_from_slice(&[10, 77, 0, 2]);
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_reply(&reply, Ipv4Addr::new(10, 77, 0, 2), 0x1234, 7));
        assert!(!is_reply(&reply, Ipv4Addr::new(10, 77, 0, 3), 0x1234, 7));
        assert!(!is_reply(&reply, Ipv4Addr::new(10, 77, 0, 2), 0x1234, 8));
    }
}
