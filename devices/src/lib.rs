//! The device cgroup of a group: a default allow-list like runc's plus exactly the devices
//! granted (GPUs), written as cgroup v1 `devices.*` files ([`apply_v1`]) or as a cgroup2
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program ([`apply_v2`], built by [`program`]).
//!
//! Semantics (the same in [`allows`], the eBPF program and, where it can express them, v1):
//! rules are looked at from the last to the first and the first one that matches decides, so
//! later rules take precedence; nothing matching means deny. A rule matches a request when its
//! type is [`DeviceType::All`] or the request's, its major and minor are wildcards or equal
//! the request's, and for an **allow** rule every requested access bit is in the rule's
//! access, for a **deny** rule any requested bit is (as the kernel's v1 exceptions: a deny of
//! `w` also refuses an open for read and write).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod bpf;
mod sys;
mod v1;
mod v2;

pub use bpf::{program, Insn};
pub use v1::apply_v1;
pub use v2::{apply_v2, attached_programs};

/// The type of device a rule is about (v1's `a`, `c`, `b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceType {
    /// `a`: char and block devices.
    #[serde(rename = "a")]
    All,
    /// `c`: character devices.
    #[serde(rename = "c")]
    Char,
    /// `b`: block devices.
    #[serde(rename = "b")]
    Block,
}

impl DeviceType {
    /// The v1 letter.
    pub fn letter(self) -> char {
        match self {
            DeviceType::All => 'a',
            DeviceType::Char => 'c',
            DeviceType::Block => 'b',
        }
    }

    /// Whether a rule of this type is about a request for a device of type `request`.
    fn covers(self, request: DeviceType) -> bool {
        self == DeviceType::All || self == request
    }
}

/// Read, write and mknod access; as text a subset of `rwm` in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    /// `r`
    pub read: bool,
    /// `w`
    pub write: bool,
    /// `m`: mknod(2) of such a device node.
    pub mknod: bool,
}

impl Access {
    /// `rwm`.
    pub const ALL: Access = Access {
        read: true,
        write: true,
        mknod: true,
    };
    /// `rw`.
    pub const RW: Access = Access {
        read: true,
        write: true,
        mknod: false,
    };
    /// `m`.
    pub const MKNOD: Access = Access {
        read: false,
        write: false,
        mknod: true,
    };

    /// The kernel's bits (`BPF_DEVCG_ACC_MKNOD` 1, `_READ` 2, `_WRITE` 4).
    pub fn bits(self) -> u32 {
        u32::from(self.mknod) | u32::from(self.read) << 1 | u32::from(self.write) << 2
    }

    pub(crate) fn from_bits(bits: u32) -> Access {
        Access {
            mknod: bits & 1 != 0,
            read: bits & 2 != 0,
            write: bits & 4 != 0,
        }
    }

    /// No bit set.
    pub fn is_empty(self) -> bool {
        self.bits() == 0
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, c) in [(self.read, 'r'), (self.write, 'w'), (self.mknod, 'm')] {
            if on {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Access {
    type Err = DevicesError;

    fn from_str(s: &str) -> Result<Access, DevicesError> {
        let mut a = Access::default();
        for c in s.chars() {
            let bit = match c {
                'r' => &mut a.read,
                'w' => &mut a.write,
                'm' => &mut a.mknod,
                _ => {
                    return Err(DevicesError::Parse(format!(
                        "access {s:?}: {c:?} is not r, w or m"
                    )))
                }
            };
            if *bit {
                return Err(DevicesError::Parse(format!("access {s:?}: {c:?} twice")));
            }
            *bit = true;
        }
        Ok(a)
    }
}

impl Serialize for Access {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Access, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One rule of a device cgroup, as OCI's `linux.resources.devices[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    /// Allow (`true`) or deny.
    pub allow: bool,
    /// Which devices.
    pub kind: DeviceType,
    /// `None` is `*`.
    pub major: Option<u32>,
    /// `None` is `*`.
    pub minor: Option<u32>,
    /// What access the rule allows or denies.
    pub access: Access,
}

impl DeviceRule {
    /// Allows `access` to the char device `major:minor` (`None` = every minor).
    pub fn allow_char(major: u32, minor: Option<u32>, access: Access) -> Self {
        DeviceRule {
            allow: true,
            kind: DeviceType::Char,
            major: Some(major),
            minor,
            access,
        }
    }

    /// Allows `access` to the block device `major:minor` (`None` = every minor).
    pub fn allow_block(major: u32, minor: Option<u32>, access: Access) -> Self {
        DeviceRule {
            allow: true,
            kind: DeviceType::Block,
            major: Some(major),
            minor,
            access,
        }
    }

    /// `a *:* rwm`, denied: the first rule of every group's list.
    pub fn deny_all() -> Self {
        DeviceRule {
            allow: false,
            kind: DeviceType::All,
            major: None,
            minor: None,
            access: Access::ALL,
        }
    }

    /// The rule as a v1 line, `c 195:0 rwm` (wildcards as `*`), as `devices.list` shows it.
    pub fn v1_line(&self) -> String {
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.kind.letter(),
            num(self.major),
            num(self.minor),
            self.access
        )
    }

    /// Whether the rule is `a *:* rwm`: it matches every request.
    pub fn is_everything(&self) -> bool {
        self.kind == DeviceType::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == Access::ALL
    }

    /// Whether this rule decides the request (see the crate doc).
    pub fn matches(&self, kind: DeviceType, major: u32, minor: u32, access: Access) -> bool {
        let (want, have) = (access.bits(), self.access.bits());
        let access_ok = if self.allow {
            want & have == want
        } else {
            self.access == Access::ALL || want & have != 0
        };
        self.kind.covers(kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && access_ok
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.allow { "allow" } else { "deny" };
        write!(f, "{verb} {}", self.v1_line())
    }
}

/// runc's built-in allow-list (`specconv.AllowedDevices`, runc 1.2.4 and later), after a
/// deny-all: mknod of any node, the null/zero/full/random/urandom/tty character devices,
/// `/dev/pts/*` (136:*), `/dev/ptmx` (5:2) and `/dev/net/tun` (10:200, which runc 1.2.0
/// dropped and 1.2.4 put back).
pub fn default_rules() -> Vec<DeviceRule> {
    let c = |major, minor| DeviceRule::allow_char(major, minor, Access::ALL);
    let mut rules = vec![
        DeviceRule::deny_all(),
        DeviceRule {
            allow: true,
            kind: DeviceType::Char,
            major: None,
            minor: None,
            access: Access::MKNOD,
        },
        DeviceRule {
            allow: true,
            kind: DeviceType::Block,
            major: None,
            minor: None,
            access: Access::MKNOD,
        },
    ];
    rules.extend([
        c(1, Some(3)),    // /dev/null
        c(1, Some(8)),    // /dev/random
        c(1, Some(7)),    // /dev/full
        c(5, Some(0)),    // /dev/tty
        c(1, Some(5)),    // /dev/zero
        c(1, Some(9)),    // /dev/urandom
        c(136, None),     // /dev/pts/*
        c(5, Some(2)),    // /dev/ptmx
        c(10, Some(200)), // /dev/net/tun
    ]);
    rules
}

/// The whole list for a group: deny all, the defaults, then `granted` (later rules take
/// precedence, as runc and OCI).
pub fn group_rules(granted: &[DeviceRule]) -> Vec<DeviceRule> {
    let mut rules = default_rules();
    rules.extend_from_slice(granted);
    rules
}

/// Decides like the kernel would: for tests and for the bundle writer's self-check. `kind` is
/// the request's ([`DeviceType::Char`] or [`DeviceType::Block`]).
pub fn allows(
    rules: &[DeviceRule],
    kind: DeviceType,
    major: u32,
    minor: u32,
    access: Access,
) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| r.matches(kind, major, minor, access))
        .is_some_and(|r| r.allow)
}

/// What went wrong applying a device cgroup; each names the file or directory and the step.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// A rule's text is not one.
    #[error("device rule: {0}")]
    Parse(String),
    /// Writing a v1 file.
    #[error("write {line:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        line: String,
        source: std::io::Error,
    },
    /// Reading a v1 file.
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `devices.list` is not what the rules should have made it.
    #[error("{}: the kernel's list is {found:?}, the rules make {expected:?}", path.display())]
    V1Mismatch {
        path: PathBuf,
        expected: Vec<String>,
        found: Vec<String>,
    },
    /// The rules mean something v1's exception list cannot say (a deny that is not an exact
    /// match of an earlier allow); v1 would allow more than the rules, so nothing is written.
    #[error("{}: cgroup v1 cannot express {rule}: {why}", dir.display())]
    V1Unrepresentable {
        dir: PathBuf,
        rule: String,
        why: String,
    },
    /// A bpf(2) step or the open of the directory failed.
    #[error("{}: {step}: {source}", dir.display())]
    Bpf {
        dir: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    /// The kernel's verifier refused the program; `log` is its text.
    #[error("{}: load (BPF_PROG_LOAD): {source}; verifier log:\n{log}", dir.display())]
    Load {
        dir: PathBuf,
        source: std::io::Error,
        log: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_text_round_trips() {
        for s in ["", "r", "w", "m", "rw", "rm", "wm", "rwm"] {
            let a: Access = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(Access::from_bits(a.bits()), a);
        }
        assert_eq!("mwr".parse::<Access>().unwrap(), Access::ALL);
        assert!("rx".parse::<Access>().is_err());
        assert!("rr".parse::<Access>().is_err());
        assert_eq!(Access::ALL.bits(), 7);
    }

    #[test]
    fn serde_forms() {
        let r = DeviceRule::allow_char(195, None, Access::RW);
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"allow":true,"kind":"c","major":195,"minor":null,"access":"rw"}"#
        );
        assert_eq!(serde_json::from_str::<DeviceRule>(&j).unwrap(), r);
        assert!(serde_json::from_str::<Access>(r#""rwx""#).is_err());
        assert_eq!(r.v1_line(), "c 195:* rw");
        assert_eq!(DeviceRule::deny_all().v1_line(), "a *:* rwm");
    }

    #[test]
    fn defaults_and_grants_decide() {
        let gpu0 = DeviceRule::allow_char(195, Some(0), Access::RW);
        let ctl = DeviceRule::allow_char(195, Some(255), Access::RW);
        let rules = group_rules(&[gpu0, ctl]);
        assert_eq!(rules[0], DeviceRule::deny_all());
        let c = DeviceType::Char;
        assert!(allows(&rules, c, 1, 3, Access::ALL));
        assert!(allows(&rules, c, 136, 7, Access::RW));
        assert!(allows(&rules, c, 10, 200, Access::RW));
        assert!(!allows(&rules, c, 5, 1, Access::RW), "no /dev/console");
        assert!(allows(&rules, c, 195, 0, Access::RW));
        assert!(!allows(&rules, c, 195, 0, Access::ALL), "no mknod+rw");
        assert!(
            allows(&rules, c, 195, 0, Access::MKNOD),
            "mknod of anything"
        );
        assert!(allows(&rules, c, 195, 255, Access::RW));
        assert!(!allows(&rules, c, 195, 1, Access::RW));
        assert!(!allows(&rules, DeviceType::Block, 1, 3, Access::RW));
        assert!(allows(&rules, DeviceType::Block, 8, 0, Access::MKNOD));
        assert!(!allows(&rules, DeviceType::Block, 8, 0, Access::RW));
    }

    #[test]
    fn last_rule_wins_and_deny_refuses_any_bit() {
        let mut rules = group_rules(&[DeviceRule::allow_char(195, None, Access::RW)]);
        rules.push(DeviceRule {
            allow: false,
            kind: DeviceType::Char,
            major: Some(195),
            minor: Some(1),
            access: "w".parse().unwrap(),
        });
        let c = DeviceType::Char;
        assert!(allows(&rules, c, 195, 1, "r".parse().unwrap()));
        assert!(!allows(&rules, c, 195, 1, "w".parse().unwrap()));
        assert!(!allows(&rules, c, 195, 1, Access::RW));
        assert!(allows(&rules, c, 195, 2, Access::RW));
        rules.push(DeviceRule {
            allow: true,
            ..DeviceRule::deny_all()
        });
        assert!(allows(&rules, c, 195, 1, Access::RW));
        assert!(allows(&rules, DeviceType::Block, 8, 0, Access::ALL));
    }
}
