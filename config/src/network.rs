//! Network settings of the system file: a group's `network` (`host`, `private`, or a map
//! with the private network's options) and a host's `network` (its group subnet).

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Network mode of a group.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Share the host's network namespace.
    #[default]
    Host,
    /// A network namespace of the group's own, with an address on the host's group bridge.
    Private,
}

/// A group's `network`: `host`, `private`, or `{mode, address, egress}`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GroupNetwork {
    pub mode: NetworkMode,
    /// A fixed address in the host's group subnet (private only); by default one is derived
    /// from the group's name.
    pub address: Option<String>,
    /// Whether the group reaches beyond its host (masqueraded); default `true`.
    pub egress: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupNetworkMap {
    #[serde(default)]
    mode: NetworkMode,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    egress: Option<bool>,
}

impl<'de> Deserialize<'de> for GroupNetwork {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GroupNetwork;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`host`, `private` or {mode, address, egress}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GroupNetwork, E> {
                let mode = match v {
                    "host" => NetworkMode::Host,
                    "private" => NetworkMode::Private,
                    other => {
                        return Err(E::custom(format!(
                            "expected `host` or `private`, got {other:?}"
                        )))
                    }
                };
                Ok(GroupNetwork {
                    mode,
                    ..GroupNetwork::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<GroupNetwork, A::Error> {
                let m = GroupNetworkMap::deserialize(MapAccessDeserializer::new(map))?;
                Ok(GroupNetwork {
                    mode: m.mode,
                    address: m.address,
                    egress: m.egress,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A host's `network`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostNetwork {
    /// The IPv4 subnet of the host's private groups (`10.88.1.0/24`); by default
    /// `10.88.<n>.0/24` for the n-th host of the file (1-based).
    pub subnet: Option<String>,
}

/// A published port of an agent: `host_port` on the host (on `address` only, when given)
/// goes to the agent's `port` (its first port when not given). Written `8080`,
/// `"8080:80"`, `"192.0.2.5:8080:80"` or `{host_port, port, address}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Publish {
    pub host_port: u16,
    pub port: Option<u16>,
    pub address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishMap {
    host_port: u16,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    address: Option<String>,
}

fn port_of(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("expected a port 1-65535, got {s:?}")),
    }
}

impl std::str::FromStr for Publish {
    type Err = String;
    fn from_str(v: &str) -> Result<Publish, String> {
        let parts: Vec<&str> = v.split(':').collect();
        let (address, host, port) = match parts.as_slice() {
            [h] => (None, *h, None),
            [h, p] => (None, *h, Some(*p)),
            [a, h, p] => (Some(a.to_string()), *h, Some(*p)),
            _ => {
                return Err(format!(
                    "expected HOST_PORT, HOST_PORT:PORT or ADDRESS:HOST_PORT:PORT, got {v:?}"
                ))
            }
        };
        Ok(Publish {
            host_port: port_of(host)?,
            port: port.map(port_of).transpose()?,
            address,
        })
    }
}

impl<'de> Deserialize<'de> for Publish {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Publish;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port, \"HOST_PORT:PORT\", \"ADDRESS:HOST_PORT:PORT\" or {host_port, port, address}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Publish, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Publish, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Publish, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Publish, A::Error> {
                let m = PublishMap::deserialize(MapAccessDeserializer::new(map))?;
                if m.host_port == 0 || m.port == Some(0) {
                    return Err(de::Error::custom("expected a port 1-65535, got 0"));
                }
                Ok(Publish {
                    host_port: m.host_port,
                    port: m.port,
                    address: m.address,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        let p: Publish = "192.0.2.5:8080:80".parse().unwrap();
        assert_eq!(
            p,
            Publish {
                host_port: 8080,
                port: Some(80),
                address: Some("192.0.2.5".into())
            }
        );
        assert_eq!("8080".parse::<Publish>().unwrap().port, None);
        assert!("0:80".parse::<Publish>().unwrap_err().contains("1-65535"));
        assert!("a:b:c:d"
            .parse::<Publish>()
            .unwrap_err()
            .contains("HOST_PORT"));
    }
}
