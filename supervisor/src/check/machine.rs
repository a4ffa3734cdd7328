//! Facts about this machine that `check` compares with the system file: names and
//! addresses, listening TCP ports, RAM and free disk (GPUs: the plan, `agent_plan::gpu`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A TCP port something listens on, with the process that owns the socket when known.
#[derive(Debug, Clone)]
pub struct Listener {
    pub port: u16,
    pub pid: Option<u32>,
    pub process: Option<String>,
}

/// This machine's hostname.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Every IP address of this machine's interfaces.
pub fn addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
        for i in ifs {
            if let Some(a) = i.address {
                if let Some(v4) = a.as_sockaddr_in() {
                    out.push(IpAddr::V4(v4.ip()));
                } else if let Some(v6) = a.as_sockaddr_in6() {
                    out.push(IpAddr::V6(v6.ip()));
                }
            }
        }
    }
    out
}

/// TCP ports in LISTEN state (IPv4 and IPv6), from `/proc/net/tcp{,6}`.
pub fn listening_ports() -> Vec<Listener> {
    let mut inodes: HashMap<u64, u16> = HashMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode(9)
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Some(port) = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            let inode = f[9].parse().unwrap_or(0);
            inodes.insert(inode, port);
        }
    }
    let mut owners: HashMap<u64, (u32, String)> = HashMap::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(link) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let l = link.to_string_lossy();
                if let Some(n) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if let Ok(inode) = n.parse::<u64>() {
                        if inodes.contains_key(&inode) {
                            let comm =
                                std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                            owners
                                .entry(inode)
                                .or_insert((pid, comm.trim().to_string()));
                        }
                    }
                }
            }
        }
    }
    let mut out: Vec<Listener> = inodes
        .iter()
        .map(|(inode, port)| {
            let o = owners.get(inode);
            Listener {
                port: *port,
                pid: o.map(|o| o.0),
                process: o.map(|o| o.1.clone()),
            }
        })
        .collect();
    out.sort_by_key(|l| l.port);
    out.dedup_by_key(|l| l.port);
    out
}

/// Total RAM in bytes (`MemTotal`).
pub fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Free bytes for unprivileged use on the file system holding `path` (or its nearest
/// existing ancestor), with the directory actually measured.
pub fn free_disk(path: &Path) -> Option<(PathBuf, u64)> {
    let mut p = path.to_path_buf();
    loop {
        if p.exists() {
            let st = nix::sys::statvfs::statvfs(&p).ok()?;
            return Some((p, st.blocks_available() as u64 * st.fragment_size() as u64));
        }
        if !p.pop() {
            return None;
        }
    }
}
