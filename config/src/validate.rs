//! Static validation of a loaded system: names, references, cycles, ports, health and limits.
//!
//! Everything here depends only on the file; checks of the machine (scripts, listening ports,
//! RAM, disk, GPUs) live in the supervisor's `check` command.

use std::collections::HashMap;

use crate::defaults;
use crate::graph::{show_cycle, Graph};
use crate::load::Loaded;
use crate::model::{Condition, GpuDevices, Role};
use crate::report::{Finding, Severity};
use crate::units::Port;

/// Signals accepted by `stop_signal`.
pub const SIGNALS: &[&str] = &[
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2",
];

/// Whether `name` is usable as a group, host or agent name (cgroup and hostname safe).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-')
}

/// Why `name` is not a [`valid_name`]: too long, a leading `-`, else `chars` (the message
/// about the characters). A long name is shown cut.
fn name_problem(what: &str, name: &str, chars: &str) -> String {
    let shown: String = name.chars().take(40).collect();
    let shown = if shown.len() < name.len() {
        format!("{shown:?}…")
    } else {
        format!("{name:?}")
    };
    let n = name.chars().count();
    if name.is_empty() {
        format!("{what} name is empty")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        format!("{what} name {shown} {chars}")
    } else if name.len() > 63 {
        format!("{what} name {shown} is {n} characters long; at most 63")
    } else {
        format!("{what} name {shown} may not start with -")
    }
}

/// The agent name the launcher keeps for itself: each group's init runs in the group's
/// `init` cgroup, beside one cgroup per agent.
pub const RESERVED_AGENT_NAME: &str = "init";

/// Where an agent is defined: group name and index.
#[derive(Debug, Clone)]
pub struct AgentRef {
    pub group: String,
    pub index: usize,
}

/// Index of every agent by name (first definition wins).
pub fn agent_index(loaded: &Loaded) -> HashMap<String, AgentRef> {
    let mut out = HashMap::new();
    for (g, group) in &loaded.system.groups {
        for (i, a) in group.agents.iter().enumerate() {
            out.entry(a.name.clone()).or_insert(AgentRef {
                group: g.clone(),
                index: i,
            });
        }
    }
    out
}

/// The host a daemon listener port is bound on, from `ADDR:PORT`.
pub fn listen_port(listen: &str) -> Option<u16> {
    listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// The error findings of [`validate`], one message each (`None` when there is none): what
/// the daemon, `run-group`, `bundle` and `reload` refuse a system file for.
pub fn errors(l: &Loaded) -> Option<Vec<String>> {
    let errors: Vec<String> = validate(l)
        .into_iter()
        .filter(Finding::is_error)
        .map(|f| f.to_string())
        .collect();
    (!errors.is_empty()).then_some(errors)
}

/// Runs every static check and returns all findings.
pub fn validate(l: &Loaded) -> Vec<Finding> {
    let mut out = Vec::new();
    let s = &l.system;
    let e = |path: &str, code, msg: String| l.at(Severity::Error, code, path, msg);
    let w = |path: &str, code, msg: String| l.at(Severity::Warning, code, path, msg);

    if let Some(v) = s.version {
        if v != 1 {
            out.push(e(
                "version",
                "version",
                format!("unsupported version {v}; only 1 exists"),
            ));
        }
    }

    // Hosts.
    if s.hosts.is_empty() {
        out.push(e("hosts", "hosts", "no hosts defined".into()));
    }
    let primaries: Vec<&String> = s
        .hosts
        .iter()
        .filter(|(_, h)| h.role == Role::Primary)
        .map(|(n, _)| n)
        .collect();
    if primaries.len() > 1 {
        out.push(e(
            &format!("hosts.{}.role", primaries[1]),
            "primary",
            format!(
                "more than one primary host ({})",
                primaries
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    } else if primaries.is_empty() && !s.hosts.is_empty() {
        out.push(w(
            "hosts",
            "primary",
            "no host has role: primary; cross-host health has no aggregator".into(),
        ));
    }
    let mut top_listen_done = false;
    for (name, h) in &s.hosts {
        let p = format!("hosts.{name}");
        if !valid_name(name) {
            out.push(e(
                &p,
                "name",
                name_problem("host", name, "may use only letters, digits, - and _"),
            ));
        }
        if h.address.trim().is_empty() {
            out.push(e(
                &format!("{p}.address"),
                "address",
                "address is empty".into(),
            ));
        }
        let d = defaults::daemon(s, name);
        let own = h
            .daemon
            .as_ref()
            .and_then(|d| d.http_listen.as_ref())
            .is_some();
        if !own && !top_listen_done && s.daemon.http_listen.is_some() {
            top_listen_done = true;
        } else if !own {
            continue;
        }
        if listen_port(&d.http_listen).is_none()
            || d.http_listen.parse::<std::net::SocketAddr>().is_err()
        {
            let at = if own {
                format!("{p}.daemon.http_listen")
            } else {
                "daemon.http_listen".to_string()
            };
            out.push(e(
                &at,
                "listen",
                format!(
                    "http_listen must be ADDRESS:PORT (like 127.0.0.1:9000), got {:?}",
                    d.http_listen
                ),
            ));
        }
    }

    // Images.
    for (name, _) in &s.images {
        if name == defaults::HOST_IMAGE {
            out.push(e(
                &format!("images.{name}"),
                "image",
                "`host` is the built-in host rootfs and cannot be redefined".into(),
            ));
        } else if !valid_name(name) {
            out.push(e(
                &format!("images.{name}"),
                "name",
                format!("image name {name:?} may use only letters, digits, - and _"),
            ));
        }
    }

    // Groups and agents.
    let agents = agent_index(l);
    let mut seen_agents: HashMap<&str, String> = HashMap::new();
    let mut group_graph = Graph::default();
    let mut agent_graph = Graph::default();
    // Ports per network namespace — (host, "") is the host's own, (host, group) a private
    // group's: port -> (agent label, field path).
    let mut ports: HashMap<(&str, &str, u16), (String, String)> = HashMap::new();
    for (gname, g) in &s.groups {
        let gp = format!("groups.{gname}");
        group_graph.add_node(gname);
        if !valid_name(gname) {
            out.push(e(
                &gp,
                "name",
                name_problem(
                    "group",
                    gname,
                    "may use only letters, digits, - and _ (at most 63)",
                ),
            ));
        }
        if !s.hosts.contains_key(&g.host) {
            out.push(e(
                &format!("{gp}.host"),
                "unknown-host",
                format!(
                    "unknown host {:?} (hosts: {})",
                    g.host,
                    keys(s.hosts.keys())
                ),
            ));
        }
        let image = defaults::image(g);
        if image != defaults::HOST_IMAGE && !s.images.contains_key(image) {
            out.push(e(
                &format!("{gp}.image"),
                "unknown-image",
                format!(
                    "unknown image {image:?} (images: host, {})",
                    keys(s.images.keys())
                ),
            ));
        }
        if g.agents.is_empty() {
            out.push(w(
                &gp,
                "empty-group",
                format!("group {gname} has no agents"),
            ));
        }
        for (dep, _) in &g.depends_on.0 {
            let dp = format!("{gp}.depends_on.{dep}");
            if !s.groups.contains_key(dep) {
                out.push(e(
                    &dp,
                    "unknown-group",
                    format!("unknown group {dep:?} in depends_on"),
                ));
            } else {
                group_graph.add_edge(gname, dep);
            }
        }
        let r = &g.resources;
        if let (Some(high), Some(max)) = (r.memory_high, r.memory) {
            if high > max {
                out.push(e(
                    &format!("{gp}.resources.memory_high"),
                    "memory",
                    format!("memory_high {high} is above memory {max}"),
                ));
            }
        }
        if let Some(m) = r.memory {
            if m.0 < 4 << 20 {
                out.push(e(
                    &format!("{gp}.resources.memory"),
                    "memory",
                    format!("memory limit {m} is below the 4M minimum"),
                ));
            }
        }
        if let Some(wt) = r.cpu_weight {
            if !(1..=10000).contains(&wt) {
                out.push(e(
                    &format!("{gp}.resources.cpu_weight"),
                    "cpu",
                    format!("cpu_weight must be 1-10000, got {wt}"),
                ));
            }
        }
        if r.pids == Some(0) {
            out.push(e(
                &format!("{gp}.resources.pids"),
                "pids",
                "pids must be at least 1".into(),
            ));
        }
        if let Some(gpus) = &g.gpus {
            if gpus.devices == GpuDevices::Count(0) {
                out.push(w(
                    &format!("{gp}.gpus"),
                    "gpus",
                    "gpus: 0 requests no GPU; remove the field".into(),
                ));
            }
        }
        if let Some(f) = &g.env_file {
            let path = l.resolve(f);
            if let Err(why) = crate::fsread::read_regular(&path, crate::envfile::MAX_ENV_FILE) {
                out.push(e(
                    &format!("{gp}.env_file"),
                    "env-file",
                    format!(
                        "env_file {} {}",
                        path.display(),
                        crate::fsread::why_unreadable(&why)
                    ),
                ));
            }
        }
        for (i, b) in g.binds.iter().enumerate() {
            let bp = format!("{gp}.binds[{i}]");
            if !b.target.is_absolute() {
                out.push(e(
                    &bp,
                    "bind",
                    format!(
                        "bind target {} must be an absolute path",
                        b.target.display()
                    ),
                ));
            }
            let src = l.resolve(&b.source);
            if !src.exists() {
                out.push(e(
                    &bp,
                    "bind",
                    format!("bind source {} does not exist", src.display()),
                ));
            }
        }
        let daemon_port = listen_port(&defaults::daemon(s, &g.host).http_listen);
        let private = g
            .network
            .as_ref()
            .is_some_and(|n| n.mode == crate::model::NetworkMode::Private);
        let netns = if private { gname.as_str() } else { "" };
        for (i, a) in g.agents.iter().enumerate() {
            let ap = format!("{gp}.agents[{i}]");
            let label = format!("{gname}:{}", a.name);
            agent_graph.add_node(&a.name);
            if !valid_name(&a.name) {
                out.push(e(
                    &format!("{ap}.name"),
                    "name",
                    name_problem("agent", &a.name, "may use only letters, digits, - and _"),
                ));
            }
            if a.name == RESERVED_AGENT_NAME {
                out.push(e(
                    &format!("{ap}.name"),
                    "name",
                    format!(
                        "agent name {:?} is reserved (the group's init has a cgroup of that name)",
                        a.name
                    ),
                ));
            }
            if let Some(first) = seen_agents.get(a.name.as_str()) {
                out.push(e(
                    &format!("{ap}.name"),
                    "duplicate-agent",
                    format!(
                        "duplicate agent name {:?} (also defined at {first})",
                        a.name
                    ),
                ));
            } else {
                seen_agents.insert(&a.name, ap.clone());
            }
            let mut own = Vec::new();
            for (k, port) in a.all_ports().into_iter().enumerate() {
                let pp = if a.port.is_some() && k == 0 {
                    format!("{ap}.port")
                } else {
                    format!("{ap}.ports[{}]", k - usize::from(a.port.is_some()))
                };
                if own.contains(&port) {
                    out.push(e(
                        &pp,
                        "port-clash",
                        format!("port {port} is listed twice for agent {}", a.name),
                    ));
                    continue;
                }
                own.push(port);
                if Some(port.0) == daemon_port && !private {
                    out.push(e(&pp, "port-clash", format!("port {port} of {label} clashes with the daemon's http_listen on host {}", g.host)));
                }
                match ports.get(&(g.host.as_str(), netns, port.0)) {
                    Some((other, _)) => out.push(e(
                        &pp,
                        "port-clash",
                        format!(
                            "port {port} of {label} is already used by {other} on host {}",
                            g.host
                        ),
                    )),
                    None => {
                        ports.insert(
                            (g.host.as_str(), netns, port.0),
                            (label.clone(), pp.clone()),
                        );
                    }
                }
            }
            // A published port is a port of the host.
            for (j, p) in a.publish.iter().enumerate() {
                let pp = format!("{ap}.publish[{j}]");
                let port = p.host_port;
                if Some(port) == daemon_port {
                    out.push(e(&pp, "port-clash", format!("published port {port} of {label} clashes with the daemon's http_listen on host {}", g.host)));
                }
                match ports.get(&(g.host.as_str(), "", port)) {
                    Some((other, _)) => out.push(e(
                        &pp,
                        "port-clash",
                        format!(
                            "published port {port} of {label} is already used by {other} on host {}",
                            g.host
                        ),
                    )),
                    None => {
                        ports.insert(
                            (g.host.as_str(), "", port),
                            (format!("{label} (published)"), pp.clone()),
                        );
                    }
                }
            }
            if let Some(h) = &a.health {
                let hp = format!("{ap}.health");
                let kinds = usize::from(h.tcp.is_some())
                    + usize::from(h.http.is_some())
                    + usize::from(h.exec.is_some());
                if kinds != 1 && !l.hidden_below(&hp) {
                    out.push(e(
                        &hp,
                        "health",
                        format!(
                            "a health check needs exactly one of tcp, http, exec (found {kinds})"
                        ),
                    ));
                }
                if (h.http.is_some() || h.tcp == Some(crate::model::TcpTarget::AgentPort))
                    && a.all_ports().is_empty()
                {
                    out.push(e(
                        &hp,
                        "health",
                        format!(
                            "agent {} has no port for its {} health check",
                            a.name,
                            if h.http.is_some() { "http" } else { "tcp" }
                        ),
                    ));
                }
                if let Some(path) = &h.http {
                    if !path.starts_with('/') {
                        out.push(e(
                            &format!("{hp}.http"),
                            "health",
                            format!("http path must start with /, got {path:?}"),
                        ));
                    } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        out.push(e(
                            &format!("{hp}.http"),
                            "health",
                            format!(
                                "http path may not contain spaces or control characters \
                                 (percent-encode them), got {path:?}"
                            ),
                        ));
                    }
                }
                let t = defaults::health_timing(h);
                if t.retries == 0 {
                    out.push(e(
                        &format!("{hp}.retries"),
                        "health",
                        "retries must be at least 1".into(),
                    ));
                }
                if t.timeout.is_zero() || t.interval.is_zero() {
                    out.push(e(
                        &hp,
                        "health",
                        "interval and timeout must be above 0".into(),
                    ));
                }
            }
            let rs = defaults::restart(g, a);
            if rs.backoff_initial > rs.backoff_max {
                out.push(e(
                    &format!("{ap}.restart"),
                    "restart",
                    format!(
                        "backoff initial {:?} is above backoff max {:?}",
                        rs.backoff_initial, rs.backoff_max
                    ),
                ));
            }
            if let Some(sig) = &a.stop_signal {
                let norm = if sig.starts_with("SIG") {
                    sig.clone()
                } else {
                    format!("SIG{sig}")
                };
                if !SIGNALS.contains(&norm.as_str()) {
                    out.push(e(
                        &format!("{ap}.stop_signal"),
                        "signal",
                        format!("unknown signal {sig:?} (use one of {})", SIGNALS.join(", ")),
                    ));
                }
            }
            for (dep, cond) in &a.depends_on.0 {
                let dp = format!("{ap}.depends_on.{dep}");
                match agents.get(dep) {
                    None => out.push(e(
                        &dp,
                        "unknown-agent",
                        format!("unknown agent {dep:?} in depends_on of {}", a.name),
                    )),
                    Some(r) => {
                        agent_graph.add_edge(&a.name, dep);
                        let target = &s.groups[&r.group].agents[r.index];
                        if *cond == Condition::Healthy && target.health.is_none() {
                            out.push(e(&dp, "healthy-without-check", format!(
                                "{} waits for {dep} to be healthy, but {dep} has no health check", a.name
                            )));
                        }
                    }
                }
            }
        }
    }
    for c in group_graph.cycles() {
        out.push(e(
            &format!("groups.{}.depends_on", c[0]),
            "cycle",
            format!("dependency cycle among groups: {}", show_cycle(&c)),
        ));
    }
    for c in agent_graph.cycles() {
        let path = agents
            .get(&c[0])
            .map(|r| format!("groups.{}.agents[{}].depends_on", r.group, r.index))
            .unwrap_or_default();
        out.push(e(
            &path,
            "cycle",
            format!("dependency cycle among agents: {}", show_cycle(&c)),
        ));
    }
    crate::rules::check(l, &mut out);
    out
}

fn keys<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(|s| s.as_str()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The ports `host`'s agents take on the host itself, with their `group:agent` label: the
/// ports of agents on the host's network and the published ports of private groups (a
/// private group's own ports are in its own network namespace).
pub fn host_ports(l: &Loaded, host: &str) -> Vec<(Port, String)> {
    let mut v = Vec::new();
    for (gname, g) in &l.system.groups {
        if g.host != host {
            continue;
        }
        let private = g
            .network
            .as_ref()
            .is_some_and(|n| n.mode == crate::model::NetworkMode::Private);
        for a in &g.agents {
            if !private {
                for p in a.all_ports() {
                    v.push((p, format!("{gname}:{}", a.name)));
                }
            }
            for p in &a.publish {
                v.push((Port(p.host_port), format!("{gname}:{} (published)", a.name)));
            }
        }
    }
    v
}
