//! [`Registry`]: the specs of several directories, each device by its qualified name
//! (`nvidia.com/gpu=0`), a later directory taking priority over an earlier one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::{parse, parse_qualified, CdiError, ContainerEdits, Device, Spec};

/// The extensions of the files [`Registry::load`] reads.
pub const SPEC_EXTENSIONS: [&str; 3] = ["json", "yaml", "yml"];

/// The specs found, and which spec's device each qualified name means.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registry {
    specs: Vec<Spec>,
    /// Qualified name to (spec index, device index) of the definition in force.
    devices: BTreeMap<String, (usize, usize)>,
    /// Qualified names defined by two specs of the same, highest, priority: not usable.
    conflicts: BTreeMap<String, (PathBuf, PathBuf)>,
}

impl Registry {
    /// Reads every `*.json`, `*.yaml` and `*.yml` file of each directory, in name order; a
    /// later directory has higher priority (pass `["/etc/cdi", "/var/run/cdi"]`). A missing
    /// directory holds nothing. A file that cannot be read or is invalid is reported and
    /// skipped, and so is a device two files of one directory define (neither is used).
    pub fn load(dirs: &[&Path]) -> (Registry, Vec<CdiError>) {
        let mut errors = Vec::new();
        let mut specs = Vec::new();
        for (priority, dir) in dirs.iter().enumerate() {
            for file in spec_files(dir, &mut errors) {
                match fs::read_to_string(&file) {
                    Ok(text) => match parse(&file, &text) {
                        Ok(spec) => specs.push((spec, priority)),
                        Err(e) => errors.push(e),
                    },
                    Err(e) => errors.push(CdiError::Read {
                        file,
                        reason: e.to_string(),
                    }),
                }
            }
        }
        let registry = Registry::build(specs, &mut errors);
        (registry, errors)
    }

    /// A registry of specs made elsewhere; each later spec has priority over earlier ones.
    pub fn from_specs(specs: Vec<Spec>) -> Registry {
        let ranked = specs.into_iter().enumerate().map(|(i, s)| (s, i)).collect();
        Registry::build(ranked, &mut Vec::new())
    }

    fn build(ranked: Vec<(Spec, usize)>, errors: &mut Vec<CdiError>) -> Registry {
        let mut devices: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut conflicts = BTreeMap::new();
        let priority: Vec<usize> = ranked.iter().map(|(_, p)| *p).collect();
        let specs: Vec<Spec> = ranked.into_iter().map(|(s, _)| s).collect();
        for (si, spec) in specs.iter().enumerate() {
            for (di, device) in spec.devices.iter().enumerate() {
                let name = format!("{}={}", spec.kind, device.name);
                if let Some(&(old, _)) = devices.get(&name) {
                    if priority[si] < priority[old] {
                        continue;
                    }
                    if priority[si] == priority[old] {
                        let (first, second) = (specs[old].source.clone(), spec.source.clone());
                        errors.push(CdiError::Conflict {
                            name: name.clone(),
                            first: first.clone(),
                            second: second.clone(),
                        });
                        conflicts.insert(name.clone(), (first, second));
                        continue;
                    }
                }
                conflicts.remove(&name);
                devices.insert(name, (si, di));
            }
        }
        for name in conflicts.keys() {
            devices.remove(name);
        }
        Registry {
            specs,
            devices,
            conflicts,
        }
    }

    /// Every spec read, in the order read (lowest priority first).
    pub fn specs(&self) -> &[Spec] {
        &self.specs
    }

    /// The device `vendor.com/class=name` and its spec: the highest-priority definition.
    pub fn device(&self, qualified: &str) -> Option<(&Spec, &Device)> {
        let &(si, di) = self.devices.get(qualified)?;
        let spec = self.specs.get(si)?;
        Some((spec, spec.devices.get(di)?))
    }

    /// Every device of `kind` (`nvidia.com/gpu`), in spec order; a name defined by several
    /// specs appears once, from the spec in force.
    pub fn devices_of(&self, kind: &str) -> Vec<(&Spec, &Device)> {
        let mut out = Vec::new();
        for (si, spec) in self.specs.iter().enumerate() {
            if spec.kind != kind {
                continue;
            }
            for (di, device) in spec.devices.iter().enumerate() {
                let name = format!("{}={}", spec.kind, device.name);
                if self.devices.get(&name) == Some(&(si, di)) {
                    out.push((spec, device));
                }
            }
        }
        out
    }

    /// The edits the devices `qualified` ask of a container, merged as the reference
    /// implementation merges them: for each device in order, its spec's own edits the first
    /// time a device of that spec comes, then the device's. A name given twice counts once;
    /// `additionalGids` of 0 are dropped. An unknown name is an error naming it.
    pub fn edits(&self, qualified: &[String]) -> Result<ContainerEdits, CdiError> {
        let mut merged = ContainerEdits::default();
        let mut specs_seen = BTreeSet::new();
        let mut names_seen = BTreeSet::new();
        for name in qualified {
            if !names_seen.insert(name.as_str()) {
                continue;
            }
            let Some(&(si, di)) = self.devices.get(name) else {
                return Err(self.why_unknown(name));
            };
            let Some(spec) = self.specs.get(si) else {
                return Err(self.why_unknown(name));
            };
            if specs_seen.insert(si) {
                merged.append(&spec.container_edits);
            }
            if let Some(device) = spec.devices.get(di) {
                merged.append(&device.container_edits);
            }
        }
        merged.additional_gids.retain(|&g| g != 0);
        Ok(merged)
    }

    fn why_unknown(&self, name: &str) -> CdiError {
        if let Some((first, second)) = self.conflicts.get(name) {
            return CdiError::Conflict {
                name: name.to_owned(),
                first: first.clone(),
                second: second.clone(),
            };
        }
        if let Err(e) = parse_qualified(name) {
            return e;
        }
        CdiError::UnknownDevice {
            name: name.to_owned(),
        }
    }
}

/// The spec files of `dir`, sorted by name; a missing directory has none.
fn spec_files(dir: &Path, errors: &mut Vec<CdiError>) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(CdiError::Read {
                file: dir.to_owned(),
                reason: e.to_string(),
            });
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                errors.push(CdiError::Read {
                    file: dir.to_owned(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let path = entry.path();
        let is_spec = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| SPEC_EXTENSIONS.contains(&e));
        if is_spec && !entry.file_type().is_ok_and(|t| t.is_dir()) {
            files.push(path);
        }
    }
    files.sort();
    files
}
