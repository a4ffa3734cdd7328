//! cgroup v1: the rules as lines written to `devices.deny` / `devices.allow`, checked against
//! a model of the kernel's exception list (`security/device_cgroup.c`) before anything is
//! written, and against `devices.list` after.
//!
//! The kernel keeps a default (allow or deny) and a list of exceptions. `a` in `devices.deny`
//! (or `devices.allow`) sets the default to deny (allow) and empties the list; another line
//! adds an exception when it goes against the default, merging access into an entry with the
//! same type and numbers, and otherwise takes its access off the entries with exactly the same
//! type and numbers. So a deny of `c 195:1` after an allow of `c 195:*` does nothing in v1;
//! [`apply_v1`] refuses such lists rather than give a group more than its rules say.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::{allows, Access, DeviceRule, DeviceType, DevicesError};

/// One line to write: to `devices.allow` (`allow`) or `devices.deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    allow: bool,
    /// `None` for the line `a` (everything).
    entry: Option<Entry>,
}

/// An exception: type `c` or `b`, numbers (`None` = `*`), access bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    kind: DeviceType,
    major: Option<u32>,
    minor: Option<u32>,
    access: u32,
}

impl Entry {
    fn text(&self) -> String {
        DeviceRule {
            allow: true,
            kind: self.kind,
            major: self.major,
            minor: self.minor,
            access: Access::from_bits(self.access),
        }
        .v1_line()
    }

    fn same_device(&self, other: &Entry) -> bool {
        (self.kind, self.major, self.minor) == (other.kind, other.major, other.minor)
    }

    fn covers(&self, kind: DeviceType, major: u32, minor: u32) -> bool {
        self.kind == kind
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

/// The lines for `rules`, after the leading `a` to `devices.deny` (which the first rule is
/// when it is the deny-all). A rule of type `a` that is not `a *:* rwm` becomes a `c` and a `b`
/// line: the kernel reads any line starting with `a` as "everything".
fn lines(rules: &[DeviceRule]) -> Vec<Line> {
    let mut out = vec![Line {
        allow: false,
        entry: None,
    }];
    let skip = usize::from(rules.first() == Some(&DeviceRule::deny_all()));
    for r in &rules[skip..] {
        if r.access.is_empty() {
            continue; // matches no request
        }
        if r.is_everything() {
            out.push(Line {
                allow: r.allow,
                entry: None,
            });
            continue;
        }
        let kinds: &[DeviceType] = match r.kind {
            DeviceType::All => &[DeviceType::Char, DeviceType::Block],
            DeviceType::Char => &[DeviceType::Char],
            DeviceType::Block => &[DeviceType::Block],
        };
        for &kind in kinds {
            out.push(Line {
                allow: r.allow,
                entry: Some(Entry {
                    kind,
                    major: r.major,
                    minor: r.minor,
                    access: r.access.bits(),
                }),
            });
        }
    }
    out
}

/// The kernel's state for a cgroup: default and exceptions.
#[derive(Debug, Default)]
struct Model {
    default_allow: bool,
    exceptions: Vec<Entry>,
}

impl Model {
    fn write(&mut self, line: &Line) {
        let Some(e) = line.entry else {
            self.default_allow = line.allow;
            self.exceptions.clear();
            return;
        };
        if line.allow != self.default_allow {
            match self.exceptions.iter_mut().find(|x| x.same_device(&e)) {
                Some(x) => x.access |= e.access,
                None => self.exceptions.push(e),
            }
        } else {
            for x in self.exceptions.iter_mut().filter(|x| x.same_device(&e)) {
                x.access &= !e.access;
            }
            self.exceptions.retain(|x| x.access != 0);
        }
    }

    fn allows(&self, kind: DeviceType, major: u32, minor: u32, access: u32) -> bool {
        let mut hits = self
            .exceptions
            .iter()
            .filter(|x| x.covers(kind, major, minor));
        if self.default_allow {
            !hits.any(|x| x.access & access != 0)
        } else {
            hits.any(|x| access & !x.access == 0)
        }
    }

    /// `devices.list`: `a *:* rwm` under a default allow, else the exceptions.
    fn list(&self) -> Vec<String> {
        if self.default_allow {
            vec!["a *:* rwm".to_string()]
        } else {
            self.exceptions.iter().map(Entry::text).collect()
        }
    }
}

fn model(rules: &[DeviceRule]) -> Model {
    let mut m = Model::default();
    for l in lines(rules) {
        m.write(&l);
    }
    m
}

/// Whether v1 decides every request as [`allows`] does: both depend on a number only through
/// which rules name it, so each named number plus one named by none covers every case.
fn same_as_rules(rules: &[DeviceRule]) -> bool {
    let m = model(rules);
    let sentinel = |v: &mut Vec<u32>| {
        let free = (0..).find(|n| !v.contains(n)).unwrap_or(u32::MAX);
        v.push(free);
    };
    let mut majors: Vec<u32> = rules.iter().filter_map(|r| r.major).collect();
    let mut minors: Vec<u32> = rules.iter().filter_map(|r| r.minor).collect();
    sentinel(&mut majors);
    sentinel(&mut minors);
    for kind in [DeviceType::Char, DeviceType::Block] {
        for &major in &majors {
            for &minor in &minors {
                for bits in 1..8 {
                    let want = allows(rules, kind, major, minor, Access::from_bits(bits));
                    if m.allows(kind, major, minor, bits) != want {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// cgroup v1: `dir` is the group's directory in the `devices` hierarchy (it exists). Writes
/// `a` to `devices.deny`, then each allow rule to `devices.allow` (deny rules after the first
/// to `devices.deny`); then reads `devices.list` back and checks it. Refuses, before writing
/// anything, a list that v1 would enforce differently from [`allows`]; errors name the file.
pub fn apply_v1(dir: &Path, rules: &[DeviceRule]) -> Result<(), DevicesError> {
    if !same_as_rules(rules) {
        let k = (1..=rules.len())
            .find(|&k| !same_as_rules(&rules[..k]))
            .unwrap_or(rules.len());
        let rule = rules
            .get(k.saturating_sub(1))
            .map_or_else(String::new, |r| r.to_string());
        return Err(DevicesError::V1Unrepresentable {
            dir: dir.to_path_buf(),
            rule,
            why: "v1 takes a deny off only an earlier allow of exactly the same type and \
                  numbers, so the devices it names would stay allowed"
                .to_string(),
        });
    }
    for l in lines(rules) {
        let (file, text) = match &l.entry {
            None => (
                if l.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                },
                "a".to_string(),
            ),
            Some(e) => (
                if l.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                },
                e.text(),
            ),
        };
        let path = dir.join(file);
        // The kernel's file: opened without create, so a directory that is no devices
        // cgroup fails here rather than gaining a file.
        let written = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        written.map_err(|source| DevicesError::Write {
            path,
            line: text,
            source,
        })?;
    }
    let path = dir.join("devices.list");
    let text = fs::read_to_string(&path).map_err(|source| DevicesError::Read {
        path: path.clone(),
        source,
    })?;
    let mut found: Vec<String> = text.lines().map(str::to_string).collect();
    let mut expected = model(rules).list();
    found.sort();
    expected.sort();
    if found != expected {
        return Err(DevicesError::V1Mismatch {
            path,
            expected,
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group_rules;

    #[test]
    fn defaults_and_grants_are_expressible() {
        let gpus = [
            DeviceRule::allow_char(195, Some(0), Access::RW),
            DeviceRule::allow_char(195, Some(255), Access::RW),
        ];
        let rules = group_rules(&gpus);
        assert!(same_as_rules(&rules));
        let list = model(&rules).list();
        assert_eq!(list[0], "c *:* m");
        assert_eq!(list[1], "b *:* m");
        assert!(list.contains(&"c 136:* rwm".to_string()));
        assert_eq!(list.last().map(String::as_str), Some("c 195:255 rw"));
        assert_eq!(list.len(), rules.len() - 1);
    }

    #[test]
    fn partial_denies_and_all_types() {
        let c195 = DeviceRule::allow_char(195, Some(1), Access::RW);
        let mut rules = group_rules(std::slice::from_ref(&c195));
        // A deny of exactly the same device takes the bits off: expressible.
        rules.push(DeviceRule {
            allow: false,
            access: "w".parse().unwrap(),
            ..c195
        });
        assert!(same_as_rules(&rules));
        assert!(model(&rules).list().contains(&"c 195:1 r".to_string()));
        // A deny inside a wildcard allow is not: v1 would still allow 195:1.
        let mut rules = group_rules(&[DeviceRule::allow_char(195, None, Access::RW)]);
        rules.push(DeviceRule {
            allow: false,
            ..DeviceRule::allow_char(195, Some(1), Access::RW)
        });
        assert!(!same_as_rules(&rules));
        let e = apply_v1(Path::new("/nonexistent-devices-dir"), &rules).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("/nonexistent-devices-dir") && s.contains("deny c 195:1 rw"),
            "{s}"
        );
        // Allow-all, then denies: a default-allow list; `a` with numbers becomes c and b.
        let mut all = vec![DeviceRule {
            allow: true,
            ..DeviceRule::deny_all()
        }];
        all.push(DeviceRule {
            allow: false,
            kind: DeviceType::All,
            major: Some(8),
            minor: None,
            access: Access::ALL,
        });
        assert!(same_as_rules(&all));
        let ls = lines(&all);
        assert_eq!(ls.len(), 4, "{ls:?}");
        assert_eq!(model(&all).list(), vec!["a *:* rwm"]);
    }
}
