//! Group networks, system-wide: each host's group subnet, each private group's address
//! (derived from its name, stable across restarts and reloads), and the names and addresses
//! every group sees (`/etc/hosts`, `<HOST>_IP`, `<AGENT>_ADDR`, `OBSERVABILITY_ENDPOINT`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use agent_config::model::{NetworkMode, Role};
use agent_config::{defaults, Loaded};
use indexmap::IndexMap;

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `A.B.C.D/N` (8 <= N <= 30, host bits zero).
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("expected A.B.C.D/PREFIX, got {s:?}"))?;
        let base: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("prefix /{prefix} must be 8 to 30"))?;
        let sub = Subnet { base, prefix };
        if u32::from(base) & !sub.mask() != 0 {
            return Err(format!(
                "{s} has host bits set (the subnet is {}/{prefix})",
                Ipv4Addr::from(u32::from(base) & sub.mask())
            ));
        }
        Ok(sub)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// The bridge's own address: the first in the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// How many addresses groups can get (all but network, gateway and broadcast).
    fn slots(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 3
    }

    fn slot(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 2 + i)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.base)
    }

    /// Whether two subnets share addresses.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.base) & m == u32::from(other.base) & m
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The subnet of `host`: its `network.subnet`, else `10.88.<n>.0/24` for the n-th host of
/// the file (1-based), which never clashes between the hosts of one file.
pub fn host_subnet(l: &Loaded, host: &str) -> Result<Subnet, String> {
    let h = l.system.hosts.get(host);
    match h
        .and_then(|h| h.network.as_ref())
        .and_then(|n| n.subnet.as_ref())
    {
        Some(s) => Subnet::parse(s),
        None => {
            let n = l.system.hosts.get_index_of(host).unwrap_or(0) + 1;
            let n = u8::try_from(n).map_err(|_| "more than 255 hosts".to_string())?;
            Ok(Subnet {
                base: Ipv4Addr::new(10, 88, n, 0),
                prefix: 24,
            })
        }
    }
}

/// FNV-1a: a stable hash of a name (the same in every build, unlike `DefaultHasher`).
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// 64-bit FNV-1a, for names of kernel objects.
fn fnv64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn dir_bytes(run_dir: &std::path::Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    run_dir.as_os_str().as_bytes()
}

/// The host's group bridge: `asbr` and 8 hex digits of the daemon's run directory, so two
/// daemons on one machine (tests, two "hosts") never share one. 12 bytes (IFNAMSIZ is 16).
pub fn bridge_name(run_dir: &std::path::Path) -> String {
    format!("asbr{:08x}", fnv64(dir_bytes(run_dir)) as u32)
}

/// The prefix of the host end of a group's veth pair: `asv` and 6 hex digits of run
/// directory and group; the launcher adds its pid in hex (at most 6 digits), so a new pair
/// never waits for the kernel to release the name of the last run's (it removes a pair in
/// the background once its namespace is gone). At most 15 bytes in all (IFNAMSIZ is 16).
pub fn veth_prefix(run_dir: &std::path::Path, group: &str) -> String {
    let mut b = dir_bytes(run_dir).to_vec();
    b.push(0);
    b.extend_from_slice(group.as_bytes());
    format!("asv{:06x}", fnv64(&b) & 0xff_ffff)
}

/// The host's nftables table.
pub fn table_name(run_dir: &std::path::Path) -> String {
    format!("agent_supervisor_{:08x}", fnv64(dir_bytes(run_dir)) as u32)
}

/// The addresses of `host`'s private groups: a fixed `network.address` where one is given,
/// else the slot its name hashes to (the next free one on a collision, in file order).
/// Errors name the group.
pub fn group_addresses(
    l: &Loaded,
    host: &str,
    subnet: &Subnet,
) -> Result<IndexMap<String, Ipv4Addr>, Vec<(String, String)>> {
    let mut taken = BTreeSet::new();
    let mut out = IndexMap::new();
    let mut errors = Vec::new();
    let private = || {
        l.system.groups.iter().filter(|(_, g)| {
            g.host == host
                && g.network
                    .as_ref()
                    .is_some_and(|n| n.mode == NetworkMode::Private)
        })
    };
    for (name, g) in private() {
        if let Some(a) = g.network.as_ref().and_then(|n| n.address.as_ref()) {
            match a.parse::<Ipv4Addr>() {
                Ok(ip) if !subnet.contains(ip) => errors.push((
                    name.clone(),
                    format!("address {ip} is not in the host's group subnet {subnet}"),
                )),
                Ok(ip) if ip == subnet.gateway() || ip == subnet.base => errors.push((
                    name.clone(),
                    format!("address {ip} is the subnet's network or bridge address"),
                )),
                Ok(ip) if !taken.insert(ip) => errors.push((
                    name.clone(),
                    format!("address {ip} is given to another group too"),
                )),
                Ok(ip) => {
                    out.insert(name.clone(), ip);
                }
                Err(_) => errors.push((name.clone(), format!("{a:?} is not an IPv4 address"))),
            }
        }
    }
    let slots = subnet.slots();
    for (name, g) in private() {
        if out.contains_key(name) || g.network.as_ref().is_some_and(|n| n.address.is_some()) {
            continue;
        }
        let start = fnv(name) % slots;
        let free = (0..slots)
            .map(|i| subnet.slot((start + i) % slots))
            .find(|ip| !taken.contains(ip));
        match free {
            Some(ip) => {
                taken.insert(ip);
                out.insert(name.clone(), ip);
            }
            None => errors.push((name.clone(), format!("no free address left in {subnet}"))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Upper-case environment name of an agent or host: `VRAMOptimizerAgent` ->
/// `VRAMOPTIMIZERAGENT`, `face-recognition` -> `FACE_RECOGNITION`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The names and addresses of the whole system as one group sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// `/etc/hosts` lines after the defaults: an address and its names.
    pub hosts: Vec<(Ipv4Addr, Vec<String>)>,
    /// `<HOST>_IP`, `<AGENT>_ADDR`, `OBSERVABILITY_ENDPOINT`.
    pub env: Vec<(String, String)>,
    /// Agent -> (address, first port), for `AGENT_DEPENDENCIES`.
    pub agents: IndexMap<String, (Ipv4Addr, Option<u16>)>,
}

/// The system's group networks: subnets and private addresses of every host.
pub struct SystemNet {
    pub subnets: IndexMap<String, Subnet>,
    pub addresses: IndexMap<String, Ipv4Addr>,
    /// Hosts with at least one private group (they have a bridge).
    pub bridged: BTreeSet<String>,
}

/// Host addresses that are not IPv4 literals cannot be written to `/etc/hosts`.
fn host_ip(l: &Loaded, host: &str) -> Option<Ipv4Addr> {
    l.system.hosts.get(host)?.address.parse().ok()
}

impl SystemNet {
    /// Every host's subnet and private addresses; errors as (field path, message).
    pub fn resolve(l: &Loaded) -> Result<SystemNet, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut subnets = IndexMap::new();
        let mut addresses = IndexMap::new();
        let mut bridged = BTreeSet::new();
        for host in l.system.hosts.keys() {
            let sub = match host_subnet(l, host) {
                Ok(s) => s,
                Err(e) => {
                    errors.push((format!("hosts.{host}.network.subnet"), e));
                    continue;
                }
            };
            for (other, o) in &subnets {
                if sub.overlaps(o) {
                    errors.push((
                        format!("hosts.{host}.network.subnet"),
                        format!("group subnet {sub} overlaps host {other}'s {o}"),
                    ));
                }
            }
            match group_addresses(l, host, &sub) {
                Ok(a) => {
                    if !a.is_empty() {
                        bridged.insert(host.clone());
                    }
                    addresses.extend(a);
                }
                Err(e) => errors.extend(
                    e.into_iter()
                        .map(|(g, m)| (format!("groups.{g}.network"), m)),
                ),
            }
            subnets.insert(host.clone(), sub);
        }
        if errors.is_empty() {
            Ok(SystemNet {
                subnets,
                addresses,
                bridged,
            })
        } else {
            Err(errors)
        }
    }

    /// What a group on `viewer_host` sees (`private`: it has its own network namespace).
    pub fn names(&self, l: &Loaded, viewer_host: &str, private: bool) -> Names {
        let mut n = Names::default();
        // Through the bridge, when both ends have one, a host is its overlay address.
        let overlay = |h: &str| {
            l.system
                .hosts
                .get(h)?
                .bridge
                .as_ref()
                .and_then(crate::bridge::overlay_address)
        };
        let through_bridge = overlay(viewer_host).is_some();
        let reach = |h: &str| match overlay(h) {
            Some((ip, _)) if through_bridge => Some(ip),
            _ => host_ip(l, h),
        };
        // A host-network group on the viewer's host: its loopback for host-network viewers,
        // the host's bridge address for private ones (the host's own side of the bridge).
        let local = if private {
            self.subnets
                .get(viewer_host)
                .map_or(Ipv4Addr::LOCALHOST, Subnet::gateway)
        } else {
            Ipv4Addr::LOCALHOST
        };
        for (gname, g) in &l.system.groups {
            let ip = match self.addresses.get(gname) {
                Some(ip) => Some(*ip),
                None if g.host == viewer_host => Some(local),
                None => reach(&g.host),
            };
            let Some(ip) = ip else { continue };
            let mut names = vec![gname.clone()];
            for a in &g.agents {
                names.push(a.name.clone());
                names.push(format!("{}.{gname}", a.name));
                names.push(format!("{}.{gname}.{}", a.name, g.host));
                let port = a.all_ports().first().map(|p| p.0);
                n.agents.insert(a.name.clone(), (ip, port));
                if let Some(p) = port {
                    n.env
                        .push((format!("{}_ADDR", env_name(&a.name)), format!("{ip}:{p}")));
                }
            }
            n.hosts.push((ip, names));
        }
        for (hname, h) in &l.system.hosts {
            // Its own host, for a private group, is the bridge's address.
            let ip = if hname == viewer_host && private {
                Some(local)
            } else {
                reach(hname)
            };
            if let Some(ip) = ip {
                n.hosts.push((ip, vec![hname.clone()]));
            }
            let env_ip = match overlay(hname) {
                Some((ip, _)) if through_bridge => ip.to_string(),
                _ => h.address.clone(),
            };
            n.env.push((format!("{}_IP", env_name(hname)), env_ip));
        }
        if let Some((pname, p)) = l.system.hosts.iter().find(|(_, h)| h.role == Role::Primary) {
            let listen = defaults::daemon(&l.system, pname).http_listen;
            let port = listen.rsplit(':').next().unwrap_or("9000");
            n.env.push((
                "OBSERVABILITY_ENDPOINT".into(),
                format!(
                    "http://{}:{port}/metrics",
                    match overlay(pname) {
                        Some((ip, _)) if through_bridge => ip.to_string(),
                        _ => p.address.clone(),
                    }
                ),
            ));
        }
        n
    }
}

/// `/etc/hosts` text: the defaults, the group's own name, then the system's names.
pub fn hosts_text(group: &str, names: &Names) -> String {
    let mut t = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{group}\n"
    );
    for (ip, list) in &names.hosts {
        t.push_str(&format!("{ip}\t{}\n", list.join(" ")));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_refuse() {
        let s = Subnet::parse("10.88.1.0/24").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 88, 1, 1));
        assert!(s.contains(Ipv4Addr::new(10, 88, 1, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 88, 2, 1)));
        assert_eq!(s.slots(), 253);
        assert!(Subnet::parse("10.88.1.1/24")
            .unwrap_err()
            .contains("host bits"));
        assert!(Subnet::parse("10.88.1.0/31")
            .unwrap_err()
            .contains("8 to 30"));
        assert!(Subnet::parse("10.88.1.0").is_err());
        let wide = Subnet::parse("10.88.0.0/16").unwrap();
        assert!(wide.overlaps(&s) && s.overlaps(&wide));
        assert!(!s.overlaps(&Subnet::parse("10.88.2.0/24").unwrap()));
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("face-recognition.v2"), "FACE_RECOGNITION_V2");
        assert_eq!(env_name("mainpc"), "MAINPC");
    }

    #[test]
    fn kernel_names_fit_and_differ() {
        let a = std::path::Path::new("/run/agent-supervisor");
        let b = std::path::Path::new("/tmp/t/run");
        assert_eq!(bridge_name(a).len(), 12);
        assert_eq!(veth_prefix(a, "a-very-long-group-name").len(), 9);
        assert_ne!(bridge_name(a), bridge_name(b));
        assert_ne!(veth_prefix(a, "web"), veth_prefix(a, "db"));
        assert_eq!(veth_prefix(a, "web"), veth_prefix(a, "web"), "stable");
        assert!(table_name(a).starts_with("agent_supervisor_"));
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv(""), 0x811c_9dc5);
        assert_eq!(fnv("a"), 0xe40c_292c);
    }
}
