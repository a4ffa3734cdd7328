//! The checks a spec passes before it is used, as the reference implementation makes them:
//! a known `cdiVersion` no older than the fields used need, a `vendor/class` kind, valid
//! and unique device names, device edits that change something, absolute paths, `K=V`
//! environment entries, known hook names and `rwm` permissions.

use std::collections::BTreeSet;
use std::path::Path;

use crate::name::{check_device_name, split_kind};
use crate::{CdiError, ContainerEdits, Spec};

/// The hook names OCI runtimes know.
pub const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A spec version as (major, minor); the patch level is not checked.
type Version = (u32, u32);

/// The versions read: 0.3 to 0.8, 1.0 and 1.1.
const KNOWN: [Version; 8] = [
    (0, 3),
    (0, 4),
    (0, 5),
    (0, 6),
    (0, 7),
    (0, 8),
    (1, 0),
    (1, 1),
];

/// Checks `spec`, returning the first rule it breaks.
pub fn validate(spec: &Spec) -> Result<(), CdiError> {
    let file = spec.source.as_path();
    let invalid = |field: &str, reason: String| CdiError::Invalid {
        file: file.to_owned(),
        field: field.to_owned(),
        reason,
    };

    let version = parse_version(&spec.cdi_version)
        .filter(|v| KNOWN.contains(v))
        .ok_or_else(|| CdiError::Version {
            file: file.to_owned(),
            version: spec.cdi_version.clone(),
        })?;
    let (needed, why) = required_version(spec);
    if version < needed {
        return Err(invalid(
            "cdiVersion",
            format!(
                "{} uses {why}, which needs CDI {}.{}.0 or newer",
                spec.cdi_version, needed.0, needed.1
            ),
        ));
    }

    split_kind(&spec.kind).map_err(|reason| invalid("kind", reason))?;
    check_edits(file, "containerEdits", &spec.container_edits)?;

    if spec.devices.is_empty() {
        return Err(invalid(
            "devices",
            "a spec must define at least one device".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, device) in spec.devices.iter().enumerate() {
        let at = format!("devices[{i}]");
        check_device_name(&device.name).map_err(|reason| invalid(&format!("{at}.name"), reason))?;
        if !seen.insert(device.name.as_str()) {
            return Err(invalid(
                &format!("{at}.name"),
                format!("device {:?} is defined twice in this spec", device.name),
            ));
        }
        if device.container_edits.is_empty() {
            return Err(invalid(
                &format!("{at}.containerEdits"),
                format!("device {:?} has no edits", device.name),
            ));
        }
        check_edits(
            file,
            &format!("{at}.containerEdits"),
            &device.container_edits,
        )?;
    }
    Ok(())
}

/// `MAJOR.MINOR.PATCH` with an optional leading `v`, all numbers.
fn parse_version(text: &str) -> Option<Version> {
    let text = text.strip_prefix('v').unwrap_or(text);
    let mut parts = text.split('.');
    let mut num = || -> Option<u32> {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let version = (num()?, num()?);
    num()?;
    parts.next().is_none().then_some(version)
}

/// The oldest version whose fields the spec uses, and which field that is.
fn required_version(spec: &Spec) -> (Version, &'static str) {
    let all_edits = || {
        std::iter::once(&spec.container_edits)
            .chain(spec.devices.iter().map(|d| &d.container_edits))
    };
    if all_edits().any(|e| !e.additional_gids.is_empty()) {
        return ((0, 7), "additionalGids");
    }
    if !spec.annotations.is_empty() || spec.devices.iter().any(|d| !d.annotations.is_empty()) {
        return ((0, 6), "annotations");
    }
    if spec
        .kind
        .split_once('/')
        .is_some_and(|(_, class)| class.contains('.'))
    {
        return ((0, 6), "a '.' in the class of kind");
    }
    if spec
        .devices
        .iter()
        .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit()))
    {
        return ((0, 5), "a device name starting with a digit");
    }
    if all_edits().any(|e| e.device_nodes.iter().any(|n| n.host_path.is_some())) {
        return ((0, 5), "deviceNodes[].hostPath");
    }
    if all_edits().any(|e| e.mounts.iter().any(|m| m.kind.is_some())) {
        return ((0, 4), "mounts[].type");
    }
    ((0, 3), "")
}

fn check_env(file: &Path, at: &str, env: &[String]) -> Result<(), CdiError> {
    for (i, entry) in env.iter().enumerate() {
        if entry.find('=').is_none_or(|eq| eq == 0) {
            return Err(CdiError::Invalid {
                file: file.to_owned(),
                field: format!("{at}[{i}]"),
                reason: format!("{entry:?} is not of the form KEY=VALUE"),
            });
        }
    }
    Ok(())
}

fn check_absolute(file: &Path, field: String, path: &Path) -> Result<(), CdiError> {
    if path.as_os_str().is_empty() {
        return Err(CdiError::Invalid {
            file: file.to_owned(),
            field,
            reason: "is required".into(),
        });
    }
    if !path.is_absolute() {
        return Err(CdiError::Invalid {
            file: file.to_owned(),
            field,
            reason: format!("{} must be absolute", path.display()),
        });
    }
    Ok(())
}

fn check_edits(file: &Path, at: &str, edits: &ContainerEdits) -> Result<(), CdiError> {
    let invalid = |field: String, reason: String| CdiError::Invalid {
        file: file.to_owned(),
        field,
        reason,
    };
    check_env(file, &format!("{at}.env"), &edits.env)?;
    for (i, node) in edits.device_nodes.iter().enumerate() {
        let at = format!("{at}.deviceNodes[{i}]");
        check_absolute(file, format!("{at}.path"), &node.path)?;
        if let Some(host) = &node.host_path {
            check_absolute(file, format!("{at}.hostPath"), host)?;
        }
        if let Some(p) = &node.permissions {
            if p != "none" && !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                return Err(invalid(
                    format!("{at}.permissions"),
                    format!("{p:?} is not a combination of r, w and m (or \"none\")"),
                ));
            }
        }
    }
    for (i, mount) in edits.mounts.iter().enumerate() {
        let at = format!("{at}.mounts[{i}]");
        if mount.host_path.as_os_str().is_empty() {
            return Err(invalid(format!("{at}.hostPath"), "is required".into()));
        }
        check_absolute(file, format!("{at}.containerPath"), &mount.container_path)?;
    }
    for (i, hook) in edits.hooks.iter().enumerate() {
        let at = format!("{at}.hooks[{i}]");
        if !HOOK_NAMES.contains(&hook.hook_name.as_str()) {
            return Err(invalid(
                format!("{at}.hookName"),
                format!(
                    "{:?} is not one of {}",
                    hook.hook_name,
                    HOOK_NAMES.join(", ")
                ),
            ));
        }
        check_absolute(file, format!("{at}.path"), &hook.path)?;
        check_env(file, &format!("{at}.env"), &hook.env)?;
        if hook.timeout == Some(0) {
            return Err(invalid(
                format!("{at}.timeout"),
                "must be over 0 seconds".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.5.0"), Some((0, 5)));
        assert_eq!(parse_version("v1.1.2"), Some((1, 1)));
        assert_eq!(parse_version("1.0"), None);
        assert_eq!(parse_version("1.0.0-rc1"), None);
        assert_eq!(parse_version("1.0.0.0"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("+1.0.0"), None);
    }
}
