//! Static checks of what the daemon or the kernel would refuse later: daemon paths, host
//! addresses (the bridge: [`crate::bridge`]), environment variables and env files, commands,
//! binds, and dependencies that wait forever (cycles across groups and agents, `healthy`
//! without a health check).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Component, Path};

use crate::envfile;
use crate::graph::{show_cycle, Graph};
use crate::load::Loaded;
use crate::model::{Condition, DaemonSettings};
use crate::report::{Finding, Severity};
use crate::validate::agent_index;

/// Every rule of this module.
pub fn check(l: &Loaded, out: &mut Vec<Finding>) {
    daemon_settings(l, &l.system.daemon, "daemon", out);
    for (name, h) in &l.system.hosts {
        if let Some(d) = &h.daemon {
            daemon_settings(l, d, &format!("hosts.{name}.daemon"), out);
        }
    }
    hosts(l, out);
    crate::names::check(l, out);
    crate::bridge::check(l, out);
    environment(l, out);
    commands(l, out);
    binds(l, out);
    healthy_groups(l, out);
    cross_cycles(l, out);
}

pub(crate) fn err(l: &Loaded, code: &'static str, path: &str, msg: String) -> Finding {
    l.at(Severity::Error, code, path, msg)
}

/// Why a path the daemon creates or opens is unusable: it must be absolute and plain.
fn path_problem(p: &Path, what: &str) -> Option<String> {
    let s = p.to_string_lossy();
    if s.is_empty() {
        return Some(format!("{what} is empty"));
    }
    if s.contains('\0') {
        return Some(format!("{what} {s:?} contains a NUL byte"));
    }
    if !p.is_absolute() {
        return Some(format!("{what} must be an absolute path, got {s:?}"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Some(format!(
            "{what} {s:?} contains `..`; write the directory it means"
        ));
    }
    None
}

fn daemon_settings(l: &Loaded, d: &DaemonSettings, at: &str, out: &mut Vec<Finding>) {
    for (field, value) in [
        ("state_dir", &d.state_dir),
        ("run_dir", &d.run_dir),
        ("log_dir", &d.log_dir),
        ("control_socket", &d.control_socket),
    ] {
        let Some(p) = value else { continue };
        if let Some(why) = path_problem(p, field) {
            out.push(err(l, "daemon-path", &format!("{at}.{field}"), why));
        } else if field == "control_socket" && p.as_os_str().len() > 107 {
            out.push(err(
                l,
                "daemon-path",
                &format!("{at}.{field}"),
                format!(
                    "control_socket {} is longer than the 107 bytes a Unix socket path may have",
                    p.display()
                ),
            ));
        }
    }
    for (i, p) in d.cdi_spec_dirs.iter().flatten().enumerate() {
        if let Some(why) = path_problem(p, "a CDI spec directory") {
            out.push(err(
                l,
                "daemon-path",
                &format!("{at}.cdi_spec_dirs[{i}]"),
                why,
            ));
        }
    }
    if let Some(root) = &d.cgroup_root {
        let rel = root.trim_matches('/');
        let bad = if rel.is_empty() {
            Some("cgroup_root is empty".to_string())
        } else {
            rel.split('/').find_map(|part| {
                let why = if part.is_empty() {
                    "an empty component (`//`)"
                } else if part == "." || part == ".." {
                    "`.` or `..`, which would leave the cgroup tree"
                } else if part.contains(['\0', '\n']) {
                    "a NUL byte or a newline"
                } else if part.starts_with("cgroup.") {
                    "a component starting with `cgroup.` (reserved by the kernel)"
                } else {
                    return None;
                };
                Some(format!("cgroup_root {root:?} contains {why}"))
            })
        };
        if let Some(why) = bad {
            out.push(err(l, "cgroup-root", &format!("{at}.cgroup_root"), why));
        }
    }
    if let Some(g) = &d.control_group {
        if g.is_empty() || g.contains([':', '\0', '\n', ' ', '/']) {
            out.push(err(
                l,
                "control-group",
                &format!("{at}.control_group"),
                format!("control_group {g:?} is not a Unix group name"),
            ));
        }
    }
}

/// Whether `s` is a DNS name (labels of letters, digits and `-`, at most 253 bytes).
pub fn valid_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // All-numeric names are (broken) IP addresses, not names.
        && !s.split('.').all(|l| l.chars().all(|c| c.is_ascii_digit()))
}

fn hosts(l: &Loaded, out: &mut Vec<Finding>) {
    let mut addresses: HashMap<String, &str> = HashMap::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for (name, h) in &l.system.hosts {
        let p = format!("hosts.{name}.address");
        let a = h.address.trim();
        if !a.is_empty() && a.parse::<IpAddr>().is_err() && !valid_dns_name(a) {
            let why = if a.chars().all(|c| c.is_ascii_digit() || c == '.') {
                format!("address {a:?} is not a valid IPv4 address")
            } else if a.contains(':') && !a.contains('/') {
                format!("address {a:?} is not a valid IP address (an address has no port here)")
            } else {
                format!("address {a:?} is neither an IP address nor a DNS name")
            };
            out.push(err(l, "address", &p, why));
        } else if !a.is_empty() {
            let key = a.to_ascii_lowercase();
            if let Some(first) = addresses.get(&key) {
                out.push(err(
                    l,
                    "duplicate-address",
                    &p,
                    format!("address {a} of host {name} is also the address of host {first}"),
                ));
            } else {
                addresses.insert(key, name);
            }
        }
        let mut own = vec![(name.to_ascii_lowercase(), format!("hosts.{name}"))];
        for (i, hn) in h.hostnames.iter().enumerate() {
            let hp = format!("hosts.{name}.hostnames[{i}]");
            if !valid_dns_name(hn) {
                out.push(err(
                    l,
                    "hostname",
                    &hp,
                    format!("host name {hn:?} is not a valid machine host name"),
                ));
            }
            own.push((hn.to_ascii_lowercase(), hp));
        }
        for (hn, hp) in own {
            match names.get(&hn) {
                Some(other)
                    if !other.starts_with(&format!("hosts.{name}."))
                        && other != &format!("hosts.{name}") =>
                {
                    out.push(err(
                        l,
                        "hostname",
                        &hp,
                        format!("machine host name {hn:?} of host {name} also names {other}; check could not tell the hosts apart"),
                    ));
                }
                Some(_) => {}
                None => {
                    names.insert(hn, hp);
                }
            }
        }
    }
}

fn env_map<'a>(
    l: &Loaded,
    path: &str,
    vars: impl Iterator<Item = (&'a String, &'a String)>,
    out: &mut Vec<Finding>,
) {
    for (k, v) in vars {
        let vp = format!("{path}.{k}");
        if let Some(why) = envfile::name_problem(k).or_else(|| envfile::value_problem(k, v)) {
            out.push(err(l, "env", &vp, why));
        }
    }
}

fn environment(l: &Loaded, out: &mut Vec<Finding>) {
    for (gname, g) in &l.system.groups {
        let gp = format!("groups.{gname}");
        env_map(l, &format!("{gp}.env"), g.env.iter(), out);
        for (i, a) in g.agents.iter().enumerate() {
            env_map(l, &format!("{gp}.agents[{i}].env"), a.env.iter(), out);
        }
        let Some(f) = &g.env_file else { continue };
        let path = l.resolve(f);
        let field = format!("{gp}.env_file");
        let Ok(text) = crate::fsread::read_regular(&path, envfile::MAX_ENV_FILE) else {
            continue; // validate reports why it cannot be read
        };
        let at = l
            .source
            .locate(&field)
            .map(|m| format!(" (env_file of group {gname}, {}:{m})", l.file.display()))
            .unwrap_or_default();
        let Ok(text) = String::from_utf8(text) else {
            out.push(
                Finding::error("env-file", format!("env file is not valid UTF-8{at}"))
                    .in_file(path.clone(), None)
                    .field(field.clone()),
            );
            continue;
        };
        let errors = envfile::parse_all(&path, &text).1;
        let more = errors.len().saturating_sub(MAX_ENV_FILE_ERRORS);
        let first_not_shown = match errors.get(MAX_ENV_FILE_ERRORS) {
            Some(envfile::EnvFileError::Line { line, column, .. }) => Some(crate::locate::Mark {
                line: *line,
                column: *column,
            }),
            _ => None,
        };
        for e in errors.into_iter().take(MAX_ENV_FILE_ERRORS) {
            if let envfile::EnvFileError::Line {
                line,
                column,
                message,
                ..
            } = e
            {
                out.push(
                    Finding::error("env-file", format!("{message}{at}"))
                        .in_file(path.clone(), Some(crate::locate::Mark { line, column }))
                        .field(field.clone()),
                );
            }
        }
        if more > 0 {
            out.push(
                Finding::error(
                    "env-file",
                    format!(
                        "this and {} more bad line(s) not shown{at} (is it an env file?)",
                        more - 1
                    ),
                )
                .in_file(path.clone(), first_not_shown)
                .field(field.clone()),
            );
        }
    }
}

/// Bad lines of one env file reported one by one; the rest are counted.
const MAX_ENV_FILE_ERRORS: usize = 10;

fn commands(l: &Loaded, out: &mut Vec<Finding>) {
    for (gname, g) in &l.system.groups {
        for (i, a) in g.agents.iter().enumerate() {
            let ap = format!("groups.{gname}.agents[{i}]");
            let mut argvs = vec![(format!("{ap}.command"), &a.command.0)];
            if let Some(c) = a.health.as_ref().and_then(|h| h.exec.as_ref()) {
                argvs.push((format!("{ap}.health.exec"), &c.0));
            }
            for (p, argv) in argvs {
                match argv.first() {
                    Some(prog) if prog.trim().is_empty() => out.push(err(
                        l,
                        "command",
                        &p,
                        format!(
                            "agent {}: the program name (first argument) is empty",
                            a.name
                        ),
                    )),
                    _ => {}
                }
                if let Some(arg) = argv.iter().find(|x| x.contains('\0')) {
                    out.push(err(
                        l,
                        "command",
                        &p,
                        format!("agent {}: argument {arg:?} contains a NUL byte", a.name),
                    ));
                }
            }
            if let Some(w) = &a.workdir {
                if w.as_os_str().is_empty() || w.to_string_lossy().contains('\0') {
                    out.push(err(
                        l,
                        "workdir",
                        &format!("{ap}.workdir"),
                        format!("agent {}: workdir {:?} is not a usable path", a.name, w),
                    ));
                }
            }
        }
    }
}

fn binds(l: &Loaded, out: &mut Vec<Finding>) {
    for (gname, g) in &l.system.groups {
        let mut targets: HashMap<&Path, usize> = HashMap::new();
        for (i, b) in g.binds.iter().enumerate() {
            let bp = format!("groups.{gname}.binds[{i}]");
            if b.target.is_absolute()
                && !b
                    .target
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            {
                out.push(err(
                    l,
                    "bind",
                    &bp,
                    format!(
                        "bind target {} contains `.` or `..`; write the plain absolute path",
                        b.target.display()
                    ),
                ));
            }
            if b.target == Path::new("/") {
                out.push(err(
                    l,
                    "bind",
                    &bp,
                    "bind target / would hide the group's root file system".into(),
                ));
            }
            if let Some(first) = targets.insert(&b.target, i) {
                out.push(err(
                    l,
                    "bind",
                    &bp,
                    format!(
                        "bind target {} is also the target of binds[{first}]",
                        b.target.display()
                    ),
                ));
            }
        }
    }
}

/// A group waited for as `healthy` needs at least one agent with a health check.
fn healthy_groups(l: &Loaded, out: &mut Vec<Finding>) {
    let s = &l.system;
    for (gname, g) in &s.groups {
        for (dep, cond) in &g.depends_on.0 {
            let Some(target) = s.groups.get(dep) else {
                continue;
            };
            if *cond == Condition::Healthy
                && !target.agents.is_empty()
                && target.agents.iter().all(|a| a.health.is_none())
            {
                out.push(err(
                    l,
                    "healthy-without-check",
                    &format!("groups.{gname}.depends_on.{dep}"),
                    format!("group {gname} waits for group {dep} to be healthy, but no agent of {dep} has a health check"),
                ));
            }
        }
    }
}

/// Cycles that only show when agents and groups are taken together: an agent waits for its
/// group's dependencies, and a group dependency waits for every agent of that group.
fn cross_cycles(l: &Loaded, out: &mut Vec<Finding>) {
    let s = &l.system;
    let agents = agent_index(l);
    let mut pure_groups = Graph::default();
    let mut pure_agents = Graph::default();
    let mut g = Graph::default();
    let gnode = |n: &str| format!("group {n}");
    // Agents are `group:agent`, so two agents of one name stay apart.
    let anode = |dep: &str| agents.get(dep).map(|r| format!("{}:{dep}", r.group));
    for (gname, group) in &s.groups {
        g.add_node(&gnode(gname));
        for dep in group.depends_on.0.keys() {
            if s.groups.contains_key(dep) {
                pure_groups.add_edge(gname, dep);
                // Waiting for a group is waiting for each of its agents.
                for a in &s.groups[dep].agents {
                    g.add_edge(&gnode(dep), &format!("{dep}:{}", a.name));
                }
            }
        }
        for a in &group.agents {
            let me = format!("{gname}:{}", a.name);
            g.add_node(&me);
            for dep in group.depends_on.0.keys() {
                if s.groups.contains_key(dep) {
                    g.add_edge(&me, &gnode(dep));
                }
            }
            for dep in a.depends_on.0.keys() {
                if let Some(target) = anode(dep) {
                    pure_agents.add_edge(&a.name, dep);
                    g.add_edge(&me, &target);
                }
            }
        }
    }
    if !pure_groups.cycles().is_empty() || !pure_agents.cycles().is_empty() {
        return; // named by validate; the same loop would show here again
    }
    for c in g.cycles() {
        // Start the cycle at an agent that waits for another agent, and point at that wait.
        let ring = &c[..c.len() - 1];
        let is_agent = |n: &String| !n.starts_with("group ");
        let Some(pos) = (0..ring.len())
            .find(|&i| is_agent(&ring[i]) && is_agent(&ring[(i + 1) % ring.len()]))
            .or_else(|| ring.iter().position(is_agent))
        else {
            continue;
        };
        let mut cycle: Vec<String> = ring[pos..].to_vec();
        cycle.extend_from_slice(&ring[..pos]);
        cycle.push(cycle[0].clone());
        let name = |n: &str| {
            n.split_once(':')
                .map_or(n.to_string(), |(_, a)| a.to_string())
        };
        let (group, first) = cycle[0].split_once(':').unwrap_or_default();
        let index = s
            .groups
            .get(group)
            .and_then(|g| g.agents.iter().position(|a| a.name == first));
        let path = match index {
            Some(i) if is_agent(&cycle[1]) => {
                format!("groups.{group}.agents[{i}].depends_on.{}", name(&cycle[1]))
            }
            Some(i) => format!("groups.{group}.agents[{i}]"),
            None => String::new(),
        };
        out.push(err(
            l,
            "cycle",
            &path,
            format!(
                "dependency cycle across groups and agents: {} (an agent waits for its group's dependencies; a group dependency waits for all agents of that group)",
                show_cycle(&cycle)
            ),
        ));
    }
}
