//! The requester's end of the launch server's protocol ([`super::server`]): a request with its
//! descriptors and, last, a reply socket of its own; one reply, text and at most one
//! descriptor. Used by `agent-supervisor`'s spawner and by tests; no threads, no runtime.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

/// A connected pair of close-on-exec `SOCK_SEQPACKET` Unix sockets.
pub fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(std::io::Error::from)
}

/// Sends one request on the server's socket, `fds` passed with it (`SCM_RIGHTS`).
pub fn send(sock: RawFd, payload: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(payload)];
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    loop {
        match sendmsg::<()>(sock, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::Error::EINTR) => continue,
            other => return other.map(|_| ()).map_err(std::io::Error::from),
        }
    }
}

/// Reads one reply from a request's reply socket: its text and the descriptor sent with it.
pub fn receive(sock: RawFd) -> std::io::Result<(String, Option<OwnedFd>)> {
    let mut buf = [0u8; 512];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = loop {
        match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::Error::EINTR) => continue,
            other => break other.map_err(std::io::Error::from)?,
        }
    };
    let mut fd = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: the kernel just installed this descriptor for us; nothing else
                    // owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
    }
    let n = msg.bytes;
    if n == 0 && fd.is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the launch server closed its socket",
        ));
    }
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    Ok((text, fd))
}

/// One whole request: `payload` with `fds` and a fresh reply socket, then the reply.
pub fn ask(
    sock: RawFd,
    payload: &[u8],
    fds: &[RawFd],
) -> std::io::Result<(String, Option<OwnedFd>)> {
    let (mine, theirs) = seqpacket_pair()?;
    let mut all = fds.to_vec();
    all.push(theirs.as_raw_fd());
    send(sock, payload, &all)?;
    // Only the server holds its end now: if it drops the request, the read below ends.
    drop(theirs);
    receive(mine.as_raw_fd())
}
