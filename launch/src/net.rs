//! Network setup inside a group's private network namespace: bring up loopback.

/// Sets `IFF_UP` on `lo` (SIOCGIFFLAGS / SIOCSIFFLAGS).
pub fn loopback_up() -> Result<(), nix::Error> {
    // SAFETY: socket() has no memory effects; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own; fd is a valid socket.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
    let result = if r < 0 {
        Err(nix::Error::last())
    } else {
        // SAFETY: the flags member of the union was filled in by SIOCGIFFLAGS.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } < 0 {
            Err(nix::Error::last())
        } else {
            Ok(())
        }
    };
    // SAFETY: fd was returned by socket() above and is closed once.
    unsafe { libc::close(fd) };
    result
}
