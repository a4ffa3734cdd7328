//! Value types with units used by the system file: byte sizes, durations, ports, CPU counts.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A size in bytes, written `512M`, `2G`, `1.5GiB`, `1048576` (plain bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `512M`, `2G`, `64k`, `1.5GiB`, `100` (bytes). Units are binary (K = 1024).
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let value: f64 = num
            .parse()
            .map_err(|_| format!("expected a size like 512M or 2G, got {s:?}"))?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "ki" | "kib" => 1 << 10,
            "m" | "mb" | "mi" | "mib" => 1 << 20,
            "g" | "gb" | "gi" | "gib" => 1 << 30,
            "t" | "tb" | "ti" | "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "unknown size unit {unit:?} in {s:?} (use K, M, G or T)"
                ))
            }
        };
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("size {s:?} is out of range"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        const UNITS: [(&str, u64); 4] = [
            ("T", 1 << 40),
            ("G", 1 << 30),
            ("M", 1 << 20),
            ("K", 1 << 10),
        ];
        for (name, size) in UNITS {
            if b >= size {
                if b.is_multiple_of(size) {
                    return write!(f, "{}{}", b / size, name);
                }
                return write!(f, "{:.1}{}", b as f64 / size as f64, name);
            }
        }
        write!(f, "{b}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like 512M or 2G")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("expected a size like 512M or 2G, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A duration written `500ms`, `10s`, `2m`, `1h 30m`, or a bare number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 500ms, 10s or 2m")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                if v.is_finite() && v >= 0.0 {
                    Ok(Dur(Duration::from_secs_f64(v)))
                } else {
                    Err(E::custom(format!("expected a duration like 10s, got {v}")))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|s| Dur(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("expected a duration like 10s, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                humantime::parse_duration(v.trim()).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "expected a duration like 500ms, 10s or 2m, got {v:?} ({e})"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A TCP port, 1-65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Port(pub u16);

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn port_from_i128<E: de::Error>(v: i128) -> Result<Port, E> {
    if (1..=65535).contains(&v) {
        Ok(Port(v as u16))
    } else {
        Err(E::custom(format!("expected a port 1-65535, got {v}")))
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port 1-65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                port_from_i128(i128::from(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                port_from_i128(i128::from(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                match v.trim().parse::<i128>() {
                    Ok(n) => port_from_i128(n),
                    Err(_) => Err(E::custom(format!("expected a port 1-65535, got {v:?}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A CPU share: `1.5` means one and a half cores (cgroup `cpu.max` quota/period).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Cpus(pub f64);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Cpus;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of CPUs like 0.5 or 2")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cpus, E> {
                if v.is_finite() && v > 0.0 && v <= 4096.0 {
                    Ok(Cpus(v))
                } else {
                    Err(E::custom(format!(
                        "expected a number of CPUs above 0 and at most 4096, got {v}"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cpus, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cpus, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cpus, E> {
                match v.trim().parse::<f64>() {
                    Ok(n) => self.visit_f64(n),
                    Err(_) => Err(E::custom(format!(
                        "expected a number of CPUs like 0.5 or 2, got {v:?}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(ByteSize::parse("512M").unwrap().0, 512 << 20);
        assert_eq!(ByteSize::parse("2G").unwrap().0, 2 << 30);
        assert_eq!(ByteSize::parse("1.5GiB").unwrap().0, 3 << 29);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert!(ByteSize::parse("12Q")
            .unwrap_err()
            .contains("unknown size unit"));
        assert_eq!(ByteSize(2 << 30).to_string(), "2G");
    }
}
