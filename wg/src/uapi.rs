//! The configuration protocol of userspace WireGuard (wireguard.com/xplatform): `get=1` and
//! `set=1` as `key=value` lines over the device's Unix socket,
//! `/var/run/wireguard/<interface>.sock`. gotatun (our `agent-bridge`) and `wireguard-go`
//! both speak it, and so does `wg`; one client configures either.

use crate::{DeviceConfig, DeviceStats, Key, PeerStats};
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where userspace WireGuard implementations put their sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The socket of interface `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// A failed exchange with a device.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    #[error("cannot talk to the WireGuard device at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the WireGuard device at {} refused the configuration (errno={errno})", path.display())]
    Refused { path: PathBuf, errno: i32 },
    #[error("the WireGuard device at {} answered {line:?}, which is not the configuration protocol", path.display())]
    Protocol { path: PathBuf, line: String },
}

/// The `set=1` request that makes a device exactly `config` (peers not in it are removed,
/// and each peer's allowed IPs replaced).
pub fn set_request(config: &DeviceConfig) -> String {
    let mut s = String::from("set=1\n");
    let _ = writeln!(s, "private_key={}", config.private_key.to_hex());
    let _ = writeln!(s, "listen_port={}", config.listen_port);
    s.push_str("replace_peers=true\n");
    for p in &config.peers {
        let _ = writeln!(s, "public_key={}", p.public_key.to_hex());
        if let Some(e) = p.endpoint {
            let _ = writeln!(s, "endpoint={e}");
        }
        let _ = writeln!(
            s,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive
        );
        s.push_str("replace_allowed_ips=true\n");
        for (ip, prefix) in &p.allowed_ips {
            let _ = writeln!(s, "allowed_ip={ip}/{prefix}");
        }
    }
    s.push('\n');
    s
}

fn exchange(path: &Path, request: &str) -> Result<Vec<String>, UapiError> {
    let io = |source| UapiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            break;
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            break;
        }
        lines.push(line.to_string());
    }
    match lines.last().and_then(|l| l.strip_prefix("errno=")) {
        Some("0") => Ok(lines),
        Some(n) => Err(UapiError::Refused {
            path: path.to_path_buf(),
            errno: n.parse().unwrap_or(-1),
        }),
        None => Err(UapiError::Protocol {
            path: path.to_path_buf(),
            line: lines.last().cloned().unwrap_or_default(),
        }),
    }
}

/// Makes the device behind `socket` exactly `config`.
pub fn set(socket: &Path, config: &DeviceConfig) -> Result<(), UapiError> {
    exchange(socket, &set_request(config)).map(drop)
}

/// Reads the device behind `socket`.
pub fn get(socket: &Path) -> Result<DeviceStats, UapiError> {
    let lines = exchange(socket, "get=1\n\n")?;
    parse_get(&lines).map_err(|line| UapiError::Protocol {
        path: socket.to_path_buf(),
        line,
    })
}

/// Parses the lines of a `get=1` answer; `Err` is the line that does not parse.
pub fn parse_get(lines: &[String]) -> Result<DeviceStats, String> {
    let mut stats = DeviceStats::default();
    let mut handshake: (u64, u32) = (0, 0);
    fn finish(p: &mut PeerStats, hs: &mut (u64, u32)) {
        if *hs != (0, 0) {
            p.last_handshake =
                Some(SystemTime::UNIX_EPOCH + Duration::new(hs.0, hs.1.min(999_999_999)));
        }
        *hs = (0, 0);
    }
    for line in lines {
        let bad = || line.clone();
        let (key, value) = line.split_once('=').ok_or_else(bad)?;
        let num = || value.parse::<u64>().map_err(|_| bad());
        match key {
            "private_key" => {
                let k = Key::from_hex(value).ok_or_else(bad)?;
                stats.public_key = Some(k.public());
            }
            "listen_port" => stats.listen_port = u16::try_from(num()?).map_err(|_| bad())?,
            "public_key" => {
                if let Some(p) = stats.peers.last_mut() {
                    finish(p, &mut handshake);
                }
                stats.peers.push(PeerStats {
                    public_key: Key::from_hex(value).ok_or_else(bad)?,
                    endpoint: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: 0,
                    allowed_ips: Vec::new(),
                });
            }
            "errno" | "fwmark" | "protocol_version" | "preshared_key" => {}
            _ => {
                let Some(p) = stats.peers.last_mut() else {
                    continue;
                };
                match key {
                    "endpoint" => {
                        p.endpoint = Some(value.parse::<SocketAddr>().map_err(|_| bad())?)
                    }
                    "last_handshake_time_sec" => handshake.0 = num()?,
                    "last_handshake_time_nsec" => {
                        handshake.1 = u32::try_from(num()?).map_err(|_| bad())?
                    }
                    "rx_bytes" => p.rx_bytes = num()?,
                    "tx_bytes" => p.tx_bytes = num()?,
                    "persistent_keepalive_interval" => {
                        p.persistent_keepalive = u16::try_from(num()?).map_err(|_| bad())?
                    }
                    "allowed_ip" => {
                        let (ip, prefix) = value.split_once('/').ok_or_else(bad)?;
                        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                        p.allowed_ips.push((ip, prefix.parse().map_err(|_| bad())?));
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(p) = stats.peers.last_mut() {
        finish(p, &mut handshake);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerConfig;

    #[test]
    fn set_request_lists_every_peer_and_replaces() {
        let me = Key::generate();
        let peer = Key::generate().public();
        let req = set_request(&DeviceConfig {
            private_key: me,
            listen_port: 51820,
            peers: vec![PeerConfig {
                public_key: peer,
                endpoint: Some("10.0.0.2:51821".parse().unwrap()),
                allowed_ips: vec![("10.88.2.0".parse().unwrap(), 24)],
                persistent_keepalive: 25,
            }],
        });
        assert!(req.starts_with("set=1\nprivate_key="));
        assert!(req.contains("replace_peers=true\n"));
        assert!(req.contains(&format!(
            "public_key={}\nendpoint=10.0.0.2:51821\n",
            peer.to_hex()
        )));
        assert!(req.contains("allowed_ip=10.88.2.0/24\n"));
        assert!(req.ends_with("\n\n"));
    }

    #[test]
    fn get_answer_parses_peers_and_handshakes() {
        let me = Key::generate();
        let a = Key::generate().public();
        let text = format!(
            "private_key={}\nlisten_port=51820\npublic_key={}\nendpoint=10.0.0.2:51821\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=10\n\
             rx_bytes=20\npersistent_keepalive_interval=25\nallowed_ip=10.88.2.0/24\nerrno=0",
            me.to_hex(),
            a.to_hex()
        );
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let s = parse_get(&lines).unwrap();
        assert_eq!(s.public_key, Some(me.public()));
        assert_eq!(s.listen_port, 51820);
        assert_eq!(s.peers.len(), 1);
        let p = &s.peers[0];
        assert_eq!(p.public_key, a);
        assert_eq!(
            (p.rx_bytes, p.tx_bytes, p.persistent_keepalive),
            (20, 10, 25)
        );
        assert!(p.last_handshake.is_some());
        assert_eq!(p.allowed_ips, vec![("10.88.2.0".parse().unwrap(), 24)]);
        assert_eq!(
            parse_get(&["listen_port=x".into()]),
            Err("listen_port=x".into())
        );
    }
}
