//! What an agent runs: the Python script behind its command, and the environment it gets.

use std::path::{Path, PathBuf};

use crate::load::Loaded;
use crate::model::{Agent, Group};
use crate::validate::AgentRef;
use std::collections::{HashMap, HashSet};

/// A Python script an agent runs, resolved to a path on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The interpreter named by the command (`python3` when the command is the script).
    pub interpreter: String,
    /// The path as written in the command.
    pub written: String,
    /// The path on this machine.
    pub path: PathBuf,
}

/// Whether a program name is a Python interpreter (`python`, `python3`, `python3.11`).
pub fn is_python(program: &str) -> bool {
    let base = Path::new(program)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or(program);
    base.strip_prefix("python")
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Python options that take a value in the next argument.
const OPTS_WITH_VALUE: &[&str] = &["-X", "-W", "--check-hash-based-pycs"];

/// The working directory of an agent on this machine: its `workdir` (relative to the system
/// file), else the system file's directory.
pub fn workdir(l: &Loaded, group: &Group, agent: &Agent) -> PathBuf {
    match &agent.workdir {
        Some(w) => host_path(l, group, w),
        None => l.dir.clone(),
    }
}

/// Maps a path seen inside a group to this machine: through the group's binds, else as is
/// (the `host` image shows host paths), relative paths against the system file.
pub fn host_path(l: &Loaded, group: &Group, p: &Path) -> PathBuf {
    if p.is_absolute() {
        for b in &group.binds {
            if let Ok(rest) = p.strip_prefix(&b.target) {
                return l.resolve(&b.source).join(rest);
            }
        }
    }
    l.resolve(p)
}

/// The Python script an agent's command runs, if it runs one (`python3 -m mod` and
/// `python3 -c code` run no script file).
pub fn python_script(l: &Loaded, group: &Group, agent: &Agent) -> Option<Script> {
    let argv = &agent.command.0;
    let first = argv.first()?;
    let (interpreter, written) = if is_python(first) {
        let mut i = 1;
        let mut script = None;
        while i < argv.len() {
            let a = argv[i].as_str();
            if a == "-m" || a == "-c" || a == "-" {
                return None;
            }
            if OPTS_WITH_VALUE.contains(&a) {
                i += 2;
                continue;
            }
            if a.starts_with('-') {
                i += 1;
                continue;
            }
            script = Some(a.to_string());
            break;
        }
        (first.clone(), script?)
    } else if first.ends_with(".py") {
        ("python3".to_string(), first.clone())
    } else {
        return None;
    };
    let wp = Path::new(&written);
    let path = if wp.is_absolute() {
        host_path(l, group, wp)
    } else {
        workdir(l, group, agent).join(wp)
    };
    Some(Script {
        interpreter,
        written,
        path,
    })
}

/// Environment every agent gets in addition to its group's and its own `env`:
/// `AGENT_NAME`, `AGENT_GROUP`, `AGENT_HOST`, `AGENT_PORT` (first port),
/// `AGENT_DEPENDENCIES` (`Name=address:port,...` of the agents it depends on, directly or
/// through its group's dependencies; address 127.0.0.1 on the same host, else the host's
/// address).
pub fn agent_env(
    l: &Loaded,
    index: &HashMap<String, AgentRef>,
    group_name: &str,
    agent: &Agent,
) -> Vec<(String, String)> {
    let s = &l.system;
    let Some(group) = s.groups.get(group_name) else {
        return Vec::new();
    };
    let mut env = vec![
        ("AGENT_NAME".to_string(), agent.name.clone()),
        ("AGENT_GROUP".to_string(), group_name.to_string()),
        ("AGENT_HOST".to_string(), group.host.clone()),
    ];
    if let Some(p) = agent.all_ports().first() {
        env.push(("AGENT_PORT".to_string(), p.to_string()));
    }
    // Each dependency once, the agent's own first, then its group's groups' agents.
    let mut seen: HashSet<&str> = HashSet::new();
    let mut deps: Vec<(&str, &Agent)> = Vec::new(); // (group name, agent)
    for dep in agent.depends_on.0.keys() {
        let Some(r) = index.get(dep) else { continue };
        let Some((g, dg)) = s.groups.get_key_value(&r.group) else {
            continue;
        };
        if let Some(a) = dg.agents.get(r.index) {
            if seen.insert(a.name.as_str()) {
                deps.push((g.as_str(), a));
            }
        }
    }
    for g in group.depends_on.0.keys() {
        if let Some((g, dg)) = s.groups.get_key_value(g) {
            for a in &dg.agents {
                if seen.insert(a.name.as_str()) {
                    deps.push((g.as_str(), a));
                }
            }
        }
    }
    let addrs: Vec<String> = deps
        .iter()
        .filter_map(|(g, a)| {
            let dg = s.groups.get(*g)?;
            let port = a.all_ports().first().copied()?;
            let addr = if dg.host == group.host {
                "127.0.0.1".to_string()
            } else {
                s.hosts.get(&dg.host)?.address.clone()
            };
            Some(format!("{}={addr}:{port}", a.name))
        })
        .collect();
    env.push(("AGENT_DEPENDENCIES".to_string(), addrs.join(",")));
    env
}

#[cfg(test)]
mod tests {
    use super::is_python;

    #[test]
    fn recognises_interpreters() {
        assert!(is_python("python3"));
        assert!(is_python("/usr/bin/python3.11"));
        assert!(is_python("python"));
        assert!(!is_python("pythonista"));
        assert!(!is_python("redis-server"));
    }
}
