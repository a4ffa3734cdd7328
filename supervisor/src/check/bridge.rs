//! The bridge's private key files on this machine: readable by their owner only, one
//! WireGuard key, and the private key of the host's `public_key`. The local host's file must
//! exist here; another host's file is checked when this machine has it (and no other host
//! names its path).

use std::collections::HashMap;
use std::path::PathBuf;

use agent_config::{Finding, Loaded, Severity};
use agent_wg::Key;

/// Checks every bridged host's `private_key_file` that is on this machine.
pub fn check_keys(l: &Loaded, local: Option<&str>, out: &mut Vec<Finding>) {
    let mut files: Vec<(&str, PathBuf)> = Vec::new();
    for (name, h) in &l.system.hosts {
        let Some(f) = h.bridge.as_ref().and_then(|b| b.private_key_file.as_ref()) else {
            continue;
        };
        if !f.as_os_str().is_empty() {
            files.push((name, l.resolve(f)));
        }
    }
    let mut users: HashMap<&PathBuf, usize> = HashMap::new();
    for (_, p) in &files {
        *users.entry(p).or_default() += 1;
    }
    let local_file = files.iter().find(|(n, _)| Some(*n) == local).map(|x| &x.1);
    for (name, path) in &files {
        let is_local = Some(*name) == local;
        // One path for several hosts (the same file name on every machine): the file here is
        // the local host's, or one whose host check cannot tell.
        if !is_local && (users[path] > 1 || local_file == Some(path)) {
            continue;
        }
        check_key(l, name, path, is_local, out);
    }
}

fn check_key(l: &Loaded, host: &str, path: &PathBuf, is_local: bool, out: &mut Vec<Finding>) {
    let field = format!("hosts.{host}.bridge.private_key_file");
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if is_local {
                out.push(l.at(
                    Severity::Error,
                    "bridge-key",
                    &field,
                    format!(
                        "the private key file {} of host {host} does not exist on this machine, which is host {host} (`agent-supervisor bridge keygen --out {}` writes one)",
                        path.display(),
                        path.display()
                    ),
                ));
            }
            return;
        }
        _ => {}
    }
    let key = match Key::read_private(path) {
        Ok(k) => k,
        Err(e) => {
            out.push(l.at(
                Severity::Error,
                "bridge-key",
                &field,
                format!("host {host}: {e}"),
            ));
            return;
        }
    };
    let written = l
        .system
        .hosts
        .get(host)
        .and_then(|h| h.bridge.as_ref())
        .and_then(|b| b.public_key.as_deref())
        .map(Key::parse);
    // A missing or malformed public_key is reported on its own.
    if let Some(Ok(public)) = written {
        let right = key.public();
        if public != right {
            out.push(l.at(
                Severity::Error,
                "bridge-key",
                &format!("hosts.{host}.bridge.public_key"),
                format!(
                    "public_key of host {host} does not match the private key in {}; its public key is {}",
                    path.display(),
                    right.to_base64()
                ),
            ));
        }
    }
}
