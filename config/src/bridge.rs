//! Static checks of the hosts' `bridge` sections: overlay addresses in one subnet that
//! overlaps no group subnet and holds no underlay address, WireGuard public keys, endpoints
//! (`host:port`), endpoints two hosts share, and hosts left out of the bridge.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::defaults;
use crate::load::Loaded;
use crate::model::BridgeSettings;
use crate::report::{Finding, Severity};
use crate::rules::{err, valid_dns_name};

/// Every rule of this module.
pub fn check(l: &Loaded, out: &mut Vec<Finding>) {
    fields(l, out);
    overlay_clashes(l, out);
    endpoints(l, out);
    unbridged_hosts(l, out);
}

/// Parses `ADDRESS/PREFIX`.
fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let Some((a, p)) = s.split_once('/') else {
        return Err(format!(
            "bridge address {s:?} needs a prefix length, like 10.77.0.1/24"
        ));
    };
    let ip: IpAddr = a
        .parse()
        .map_err(|_| format!("bridge address {s:?}: {a:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match p.parse::<u8>() {
        Ok(n) if n <= max => Ok((ip, n)),
        _ => Err(format!(
            "bridge address {s:?}: prefix length must be 0-{max}, got {p:?}"
        )),
    }
}

fn network(ip: IpAddr, prefix: u8) -> (u128, bool) {
    match ip {
        IpAddr::V4(v) => {
            let bits = u32::from(v);
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            (u128::from(bits & mask), true)
        }
        IpAddr::V6(v) => {
            let bits = u128::from(v);
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            (bits & mask, false)
        }
    }
}

/// `ip/prefix` with the host bits cleared, for messages.
fn show_net(ip: IpAddr, prefix: u8) -> String {
    let (bits, v4) = network(ip, prefix);
    if v4 {
        // `network` of an IPv4 address fits 32 bits.
        format!("{}/{prefix}", Ipv4Addr::from(bits as u32))
    } else {
        format!("{}/{prefix}", Ipv6Addr::from(bits))
    }
}

/// The fields one by one, and what two hosts must not share (address, key).
fn fields(l: &Loaded, out: &mut Vec<Finding>) {
    let mut seen: HashMap<IpAddr, &str> = HashMap::new();
    let mut keys: HashMap<&str, &str> = HashMap::new();
    let mut net: Option<((u128, bool), u8, &str)> = None;
    for (name, h) in &l.system.hosts {
        let Some(b) = &h.bridge else { continue };
        let bp = format!("hosts.{name}.bridge");
        if let Some(a) = &b.address {
            match parse_cidr(a) {
                Err(why) => out.push(err(l, "bridge", &format!("{bp}.address"), why)),
                Ok((ip, prefix)) => {
                    let host_bits_zero =
                        network(ip, prefix).0 == network(ip, if ip.is_ipv4() { 32 } else { 128 }).0;
                    if host_bits_zero && prefix < if ip.is_ipv4() { 31 } else { 127 } {
                        out.push(err(
                            l,
                            "bridge",
                            &format!("{bp}.address"),
                            format!("bridge address {a} is the network address of its subnet; use a host address in it"),
                        ));
                    }
                    if let Some(first) = seen.insert(ip, name) {
                        out.push(err(
                            l,
                            "bridge",
                            &format!("{bp}.address"),
                            format!("bridge address {ip} of host {name} is also the bridge address of host {first}"),
                        ));
                    }
                    match net {
                        None => net = Some((network(ip, prefix), prefix, name)),
                        Some((n, p, first)) => {
                            if n != network(ip, p) || p != prefix {
                                out.push(err(
                                    l,
                                    "bridge",
                                    &format!("{bp}.address"),
                                    format!("bridge address {a} of host {name} is not in the overlay network of host {first}; every host's bridge address must be in one subnet"),
                                ));
                            }
                        }
                    }
                }
            }
        }
        if let Some(k) = &b.public_key {
            if !is_wireguard_key(k) {
                out.push(err(
                    l,
                    "bridge",
                    &format!("{bp}.public_key"),
                    "public_key is not a WireGuard key (44 characters of base64 ending in `=`, as `wg pubkey` prints)".into(),
                ));
            } else if let Some(first) = keys.insert(k.as_str(), name) {
                out.push(err(
                    l,
                    "bridge",
                    &format!("{bp}.public_key"),
                    format!("host {name} has the same public_key as host {first}"),
                ));
            }
        }
        if let Some(f) = &b.private_key_file {
            if f.as_os_str().is_empty() {
                out.push(err(
                    l,
                    "bridge",
                    &format!("{bp}.private_key_file"),
                    "private_key_file is empty".into(),
                ));
            }
        }
        if let Some(e) = &b.endpoint {
            if let Err(why) = parse_endpoint(e) {
                out.push(err(l, "bridge", &format!("{bp}.endpoint"), why));
            }
        }
    }
}

/// A WireGuard key: 32 bytes in base64 (43 characters and one `=`).
fn is_wireguard_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() == 44
        && b[43] == b'='
        && b[..43]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        // The last character before `=` carries 2 bits of padding that must be zero.
        && b"AEIMQUYcgkosw048".contains(&b[42])
}

/// Parses an endpoint, `ip:port`, `name:port` or `[ipv6]:port`, into its host (lower
/// case, without brackets) and port.
pub fn parse_endpoint(e: &str) -> Result<(String, u16), String> {
    let example = "like 192.0.2.10:51820, vpn.example.com:51820 or [2001:db8::10]:51820";
    let (host, port) = if let Some(rest) = e.strip_prefix('[') {
        let Some((addr, port)) = rest.split_once("]:") else {
            return Err(format!(
                "endpoint {e:?} needs a port after the brackets, {example}"
            ));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "endpoint {e:?}: {addr:?} in brackets is not an IPv6 address"
            ));
        }
        (addr, port)
    } else {
        let Some((host, port)) = e.rsplit_once(':') else {
            return Err(format!("endpoint {e:?} needs a port, {example}"));
        };
        if host.contains(':') {
            return Err(format!(
                "endpoint {e:?}: an IPv6 address is written in brackets, like [2001:db8::10]:51820"
            ));
        }
        if host.is_empty() {
            return Err(format!("endpoint {e:?} has no address before the port"));
        }
        if host.parse::<Ipv4Addr>().is_err() && !valid_dns_name(host) {
            return Err(if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
                format!("endpoint {e:?}: {host:?} is not a valid IPv4 address")
            } else {
                format!("endpoint {e:?}: {host:?} is neither an IP address nor a DNS name")
            });
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_ascii_lowercase(), p)),
        _ => Err(format!(
            "endpoint {e:?}: the port must be 1-65535, got {port:?}"
        )),
    }
}

/// A host's group subnet as written (`network.subnet`) or by default (`10.88.<n>.0/24` for
/// the n-th host, as the plan's `host_subnet`); `None` when it is not a valid one (the plan
/// reports that).
fn group_subnet(l: &Loaded, index: usize, host: &str) -> Option<(Ipv4Addr, u8, bool)> {
    let h = l.system.hosts.get(host)?;
    match h.network.as_ref().and_then(|n| n.subnet.as_ref()) {
        Some(s) => {
            let (ip, prefix) = s.split_once('/')?;
            let prefix: u8 = prefix.parse().ok().filter(|p| (8..=30).contains(p))?;
            Some((ip.parse().ok()?, prefix, true))
        }
        None => Some((
            Ipv4Addr::new(10, 88, u8::try_from(index + 1).ok()?, 0),
            24,
            false,
        )),
    }
}

/// The overlay subnet shares no address with a group subnet and holds no host's underlay
/// address (packets to it would be routed into the tunnel they carry). Reported once per
/// overlay, on the first host whose bridge address is in it.
fn overlay_clashes(l: &Loaded, out: &mut Vec<Finding>) {
    let hosts = &l.system.hosts;
    let mut reported: HashSet<((u128, bool), u8)> = HashSet::new();
    for (name, h) in hosts {
        let Some(Ok((ip, prefix))) = h
            .bridge
            .as_ref()
            .and_then(|b| b.address.as_deref())
            .map(parse_cidr)
        else {
            continue;
        };
        let overlay = network(ip, prefix);
        if !reported.insert((overlay, prefix)) {
            continue;
        }
        let field = format!("hosts.{name}.bridge.address");
        let shown = show_net(ip, prefix);
        if ip.is_ipv4() {
            for (i, other) in hosts.keys().enumerate() {
                let Some((base, p, written)) = group_subnet(l, i, other) else {
                    continue;
                };
                let m = p.min(prefix);
                if network(IpAddr::V4(base), m) == network(ip, m) {
                    let how = if written {
                        format!("hosts.{other}.network.subnet")
                    } else {
                        format!(
                            "its default; set hosts.{other}.network.subnet or use another overlay"
                        )
                    };
                    out.push(err(
                        l,
                        "bridge",
                        &field,
                        format!("overlay subnet {shown} overlaps host {other}'s group subnet {base}/{p} ({how})"),
                    ));
                }
            }
        }
        for (other, o) in hosts {
            let mut underlay = vec![(o.address.trim().to_string(), "address")];
            if let Some(Ok((e, _))) = o
                .bridge
                .as_ref()
                .and_then(|b| b.endpoint.as_deref())
                .map(parse_endpoint)
            {
                underlay.push((e, "bridge endpoint"));
            }
            for (a, what) in underlay {
                let Ok(u) = a.parse::<IpAddr>() else { continue };
                if u.is_ipv4() == ip.is_ipv4() && network(u, prefix) == overlay {
                    out.push(err(
                        l,
                        "bridge",
                        &field,
                        format!("overlay subnet {shown} contains host {other}'s {what} {u}; the tunnel's own packets to it would be routed into the tunnel"),
                    ));
                }
            }
        }
    }
}

/// Where other hosts send a host's tunnel packets: its `endpoint`, else its address and
/// `listen_port`; with whether it was written.
fn endpoint_of(address: &str, b: &BridgeSettings) -> Option<((String, u16), bool)> {
    match &b.endpoint {
        Some(e) => parse_endpoint(e).ok().map(|x| (x, true)),
        None if address.trim().is_empty() => None,
        None => {
            let a = address.trim().trim_start_matches('[').trim_end_matches(']');
            let port = b.listen_port.map_or(defaults::BRIDGE_PORT, |p| p.0);
            Some(((a.to_ascii_lowercase(), port), false))
        }
    }
}

/// Two hosts cannot receive tunnel packets at one address and port. Two hosts of one
/// address are already an error (`duplicate-address`): reported here when an `endpoint`
/// is written.
fn endpoints(l: &Loaded, out: &mut Vec<Finding>) {
    let mut seen: HashMap<(String, u16), (&str, bool)> = HashMap::new();
    for (name, h) in &l.system.hosts {
        let Some(b) = &h.bridge else { continue };
        let Some((ep, written)) = endpoint_of(&h.address, b) else {
            continue;
        };
        match seen.get(&ep) {
            Some((first, first_written)) if written || *first_written => {
                let bp = format!("hosts.{name}.bridge");
                let field = if written {
                    format!("{bp}.endpoint")
                } else if b.listen_port.is_some() {
                    format!("{bp}.listen_port")
                } else {
                    format!("hosts.{name}.address")
                };
                let shown = if ep.0.contains(':') {
                    format!("[{}]:{}", ep.0, ep.1)
                } else {
                    format!("{}:{}", ep.0, ep.1)
                };
                out.push(err(
                    l,
                    "bridge",
                    &field,
                    format!("bridge endpoint {shown} of host {name} is also the bridge endpoint of host {first}; two hosts cannot receive tunnel packets on one address and port"),
                ));
            }
            Some(_) => {}
            None => {
                seen.insert(ep, (name, written));
            }
        }
    }
}

/// Hosts without a `bridge` when others have one: their groups are left out of the overlay.
fn unbridged_hosts(l: &Loaded, out: &mut Vec<Finding>) {
    let hosts = &l.system.hosts;
    let Some((bridged, _)) = hosts.iter().find(|(_, h)| h.bridge.is_some()) else {
        return;
    };
    for (name, h) in hosts {
        let field = format!("hosts.{name}");
        if h.bridge.is_none() && !l.hidden_below(&format!("{field}.bridge")) {
            out.push(l.at(
                Severity::Warning,
                "bridge",
                &field,
                format!("host {name} has no bridge section, but host {bridged} has one: its groups are not reachable through the bridge"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_or_say_why() {
        assert_eq!(
            parse_endpoint("192.0.2.1:51820"),
            Ok(("192.0.2.1".into(), 51820))
        );
        assert_eq!(
            parse_endpoint("VPN.example.com:1"),
            Ok(("vpn.example.com".into(), 1))
        );
        assert_eq!(
            parse_endpoint("[2001:db8::1]:51820"),
            Ok(("2001:db8::1".into(), 51820))
        );
        for (bad, why) in [
            ("192.0.2.1", "needs a port"),
            ("192.0.2.1:0", "1-65535"),
            ("192.0.2.1:70000", "1-65535"),
            ("2001:db8::1:51820", "in brackets"),
            ("[2001:db8::1]", "after the brackets"),
            ("[10.0.0.1]:51820", "not an IPv6 address"),
            (":51820", "no address"),
            ("300.1.1.1:51820", "not a valid IPv4"),
            ("a_b:51820", "neither an IP address nor a DNS name"),
        ] {
            let e = parse_endpoint(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
