//! `agent-supervisor check`: every static and machine check of a system file, all findings
//! at once, with a per-host summary.

mod bridge;
mod machine;
mod python;
mod summary;

use std::path::{Path, PathBuf};

use agent_config::scripts::{python_script, Script};
use agent_config::validate::{host_ports, listen_port};
use agent_config::{defaults, Finding, Loaded, Severity};
use serde::Serialize;

pub use summary::{render, summarize, HostSummary};

use self::python::Compiled;

/// How `check` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The host this machine is, when given with `--host`.
    pub host: Option<String>,
}

/// Totals of the Python syntax check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScriptTotals {
    /// Agents whose script compiles.
    pub compiled: usize,
    /// Agents that run a Python script.
    pub total: usize,
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: PathBuf,
    pub ok: bool,
    pub local_host: Option<String>,
    pub findings: Vec<Finding>,
    pub scripts: ScriptTotals,
    pub hosts: Vec<HostSummary>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.is_error()).count()
    }
    pub fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count()
    }
}

/// Runs every check on the system file at `path`.
pub fn run(path: &Path, opts: &Options) -> Report {
    let (loaded, mut findings) = agent_config::load_all(path);
    let Some(loaded) = loaded else {
        findings.sort_by(|a, b| a.severity.cmp(&b.severity).then(a.at.cmp(&b.at)));
        return Report {
            file: path.to_path_buf(),
            ok: false,
            local_host: None,
            findings,
            scripts: ScriptTotals::default(),
            hosts: Vec::new(),
        };
    };
    // What the static and machine checks find about parts of the file that could not be
    // read is a consequence of an error already reported: left out.
    let mut more = agent_config::validate::validate(&loaded);
    check_recipes(&loaded, &mut more);
    check_security(&loaded, &mut more);
    let scripts = check_scripts(&loaded, &mut more);
    let local_host = find_local_host(&loaded, opts, &mut more);
    if let Some(h) = &local_host {
        check_local(&loaded, h, &mut more);
        check_plan(&loaded, h, &mut more);
    }
    check_static_plans(&loaded, local_host.as_deref(), &mut more);
    bridge::check_keys(&loaded, local_host.as_deref(), &mut more);
    findings.extend(more.into_iter().filter(|f| !loaded.hides(f)));
    findings.sort_by(|a, b| a.severity.cmp(&b.severity).then(a.at.cmp(&b.at)));
    let hosts = summarize(&loaded, local_host.as_deref());
    Report {
        file: path.to_path_buf(),
        ok: !findings.iter().any(Finding::is_error),
        local_host,
        findings,
        scripts,
        hosts,
    }
}

/// Resolves the local host's plan as the daemon will (env_file contents, bind sources,
/// images in the store): what would stop the daemon is reported here, once per field. An
/// image that is not built yet is a warning (`agent-supervisor build` comes after `check`).
fn check_plan(l: &Loaded, host: &str, out: &mut Vec<Finding>) {
    let store = match agent_plan::Plan::store(l, host) {
        Ok(s) => s,
        Err(f) => {
            out.push(f);
            None
        }
    };
    let Ok((_, findings)) = agent_plan::Plan::resolve_partial(l, host, store.as_ref()) else {
        return; // an unknown host is reported by the host lookup
    };
    for mut f in findings {
        // One finding per field, but a warning there never hides an error.
        if out
            .iter()
            .any(|o| o.field.is_some() && o.field == f.field && (o.is_error() || !f.is_error()))
        {
            continue;
        }
        if f.code == agent_plan::IMAGE_MISSING {
            f.severity = Severity::Warning;
        }
        out.push(f);
    }
}

/// The other hosts' plans need their machines (env files, bind sources, images), but their
/// networks, published ports and bridges are static: those findings count from any machine,
/// except on a field the static checks already found wrong (one error per field).
fn check_static_plans(l: &Loaded, local: Option<&str>, out: &mut Vec<Finding>) {
    let before = out.len();
    for other in l.system.hosts.keys().filter(|h| Some(h.as_str()) != local) {
        let Ok((_, findings)) = agent_plan::Plan::resolve_partial(l, other, None) else {
            continue;
        };
        for f in findings {
            let known_field = f.field.is_some()
                && out[..before]
                    .iter()
                    .any(|o| o.is_error() && o.field == f.field);
            if agent_plan::STATIC_CODES.contains(&f.code)
                && !known_field
                && !out
                    .iter()
                    .any(|o| o.field == f.field && o.message == f.message)
            {
                out.push(f);
            }
        }
    }
}

/// Capability and rlimit names of every group's `security` section.
fn check_security(l: &Loaded, out: &mut Vec<Finding>) {
    const RLIMITS: &[&str] = &[
        "nofile", "nproc", "core", "memlock", "stack", "as", "fsize", "cpu",
    ];
    for (name, g) in &l.system.groups {
        for (field, list) in [
            ("cap_add", &g.security.cap_add),
            ("cap_drop", &g.security.cap_drop),
        ] {
            for (i, cap) in list.iter().enumerate() {
                if !cap.eq_ignore_ascii_case("all")
                    && crate::launch::sandbox::parse_caps(std::slice::from_ref(cap)).is_err()
                {
                    out.push(l.at(
                        Severity::Error,
                        "capability",
                        &format!("groups.{name}.security.{field}[{i}]"),
                        format!("unknown capability {cap:?}"),
                    ));
                }
            }
        }
        for r in g.security.rlimits.keys() {
            if !RLIMITS.contains(&r.as_str()) {
                out.push(l.at(
                    Severity::Error,
                    "rlimit",
                    &format!("groups.{name}.security.rlimits.{r}"),
                    format!("unknown rlimit {r:?} (use {})", RLIMITS.join(", ")),
                ));
            }
        }
    }
}

fn check_recipes(l: &Loaded, out: &mut Vec<Finding>) {
    for (name, img) in &l.system.images {
        let Some(recipe) = &img.recipe else { continue };
        let path = l.resolve(recipe);
        if let Err(e) = agent_images::load_recipe(&path) {
            out.push(l.at(
                Severity::Error,
                "recipe",
                &format!("images.{name}.recipe"),
                e.to_string(),
            ));
        }
    }
}

/// Syntax-checks every agent's Python script; one finding per failing script. An agent whose
/// working directory is missing or not a directory is that error, at its `workdir`.
fn check_scripts(l: &Loaded, out: &mut Vec<Finding>) -> ScriptTotals {
    let mut runs: Vec<(String, String, Script)> = Vec::new(); // (field path, agent, script)
    let mut total = 0;
    for (g, group) in &l.system.groups {
        for (i, a) in group.agents.iter().enumerate() {
            let Some(s) = python_script(l, group, a) else {
                continue;
            };
            total += 1;
            let ap = format!("groups.{g}.agents[{i}]");
            if a.command.0.iter().any(|x| x.contains('\0')) {
                continue; // its NUL byte is the error (rules)
            }
            if a.workdir.is_some() && group_image_is_host(group) {
                let w = agent_config::scripts::workdir(l, group, a);
                let why = match std::fs::metadata(&w) {
                    Ok(m) if m.is_dir() => None,
                    Ok(_) => Some("is not a directory"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist"),
                    Err(_) => Some("cannot be read"),
                };
                if let Some(why) = why {
                    out.push(l.at(
                        Severity::Error,
                        "workdir",
                        &format!("{ap}.workdir"),
                        format!("agent {g}:{}: workdir {} {why}", a.name, w.display()),
                    ));
                    continue;
                }
            }
            runs.push((format!("{ap}.command"), format!("{g}:{}", a.name), s));
        }
    }
    let scripts: Vec<Script> = runs.iter().map(|r| r.2.clone()).collect();
    let results = python::compile_all(&scripts);
    let mut totals = ScriptTotals { compiled: 0, total };
    let mut reported = std::collections::HashSet::new();
    for ((field, agent, s), result) in runs.iter().zip(&results) {
        match result {
            Compiled::Ok => totals.compiled += 1,
            Compiled::Missing => out.push(l.at(
                Severity::Error,
                "missing-script",
                field,
                format!(
                    "agent {agent} runs {} but {} does not exist",
                    s.written,
                    s.path.display()
                ),
            )),
            Compiled::Unreadable(why) => out.push(l.at(
                Severity::Error,
                "missing-script",
                field,
                format!(
                    "agent {agent} runs {} but {} cannot be read: {why}",
                    s.written,
                    s.path.display()
                ),
            )),
            Compiled::SyntaxError {
                line,
                kind,
                message,
            } => {
                if reported.insert(s.path.clone()) {
                    let f = Finding::error("syntax", format!("{kind}: {message} (agent {agent})"))
                        .in_file(s.path.clone(), None);
                    // Line 0: the error is of the whole file (a NUL byte in it).
                    out.push(if *line > 0 { f.with_line(*line) } else { f });
                }
            }
            Compiled::NoInterpreter(why) => out.push(l.at(
                Severity::Error,
                "interpreter",
                field,
                format!("agent {agent}: {why}"),
            )),
        }
    }
    totals
}

/// Whether the group runs on the host's own file system (its paths are this machine's).
fn group_image_is_host(g: &agent_config::model::Group) -> bool {
    agent_config::defaults::image(g) == agent_config::defaults::HOST_IMAGE
}

/// Which host of the file this machine is: `--host`, else by hostname, else by address.
fn find_local_host(l: &Loaded, opts: &Options, out: &mut Vec<Finding>) -> Option<String> {
    let hosts = &l.system.hosts;
    if let Some(h) = &opts.host {
        if hosts.contains_key(h) {
            return Some(h.clone());
        }
        let names: Vec<&str> = hosts.keys().map(|s| s.as_str()).collect();
        out.push(Finding::error(
            "unknown-host",
            format!(
                "--host {h:?} is not a host of {} (hosts: {})",
                l.file.display(),
                names.join(", ")
            ),
        ));
        return None;
    }
    let me = machine::hostname();
    for (name, h) in hosts {
        let matches = name.eq_ignore_ascii_case(&me)
            || h.hostnames.iter().any(|n| n.eq_ignore_ascii_case(&me));
        if matches {
            return Some(name.clone());
        }
    }
    let addrs = machine::addresses();
    for (name, h) in hosts {
        if let Ok(ip) = h.address.parse() {
            if addrs.contains(&ip) {
                return Some(name.clone());
            }
        }
    }
    out.push(Finding::warning(
        "local-host",
        format!(
            "this machine (hostname {me:?}, addresses {}) matches no host in {}; checks of this machine's ports, RAM, disk and GPUs were skipped (pass --host NAME)",
            addrs.iter().filter(|a| !a.is_loopback()).map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
            l.file.display()
        ),
    ));
    None
}

/// Checks of this machine for the groups of `host`.
fn check_local(l: &Loaded, host: &str, out: &mut Vec<Finding>) {
    let s = &l.system;
    let daemon = defaults::daemon(s, host);
    // Ports something already listens on.
    let listeners = machine::listening_ports();
    let busy = |port: u16| listeners.iter().find(|x| x.port == port);
    let owner = |x: &machine::Listener| match (&x.process, x.pid) {
        (Some(p), Some(pid)) => format!("{p} (pid {pid})"),
        _ => "another process".to_string(),
    };
    for (port, label) in host_ports(l, host) {
        if let Some(x) = busy(port.0) {
            let (g, a) = label.split_once(':').unwrap_or((&label, ""));
            // A private group's published port, or a host-network agent's own.
            let (a, what) = match a.strip_suffix(" (published)") {
                Some(a) => (a, "publish"),
                None => (a, "port"),
            };
            let field = agent_field(l, g, a)
                .map(|p| format!("{p}.{what}"))
                .unwrap_or_default();
            // The agent itself, running under agent-supervisor, is not a clash.
            let own = format!("/{}/{g}/{a}", daemon.cgroup_root.trim_matches('/'));
            let is_own = x.pid.is_some_and(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|c| c.lines().any(|line| line.ends_with(&own)))
            });
            if is_own {
                out.push(l.at(
                    Severity::Note,
                    "port-in-use",
                    &field,
                    format!(
                        "port {port} is served by {label} itself, running under agent-supervisor"
                    ),
                ));
                continue;
            }
            out.push(l.at(
                Severity::Error,
                "port-in-use",
                &field,
                format!(
                    "port {port} of {label} is already in use on this machine by {}",
                    owner(x)
                ),
            ));
        }
    }
    // Private networks: the daemon writes their nftables table with `nft` (docs/network.md).
    let private = s.groups.iter().find(|(_, g)| {
        g.host == host
            && g.network
                .as_ref()
                .is_some_and(|n| n.mode == agent_config::model::NetworkMode::Private)
    });
    if let Some((name, _)) = private {
        let sbin = ["/usr/sbin/nft", "/sbin/nft"];
        if find_program("nft", Path::new("/")).is_none()
            && !sbin.iter().any(|p| Path::new(p).exists())
        {
            out.push(l.at(
                Severity::Error,
                "nftables",
                &format!("groups.{name}.network"),
                "private networks need nftables, and `nft` is not installed on this machine \
                 (apt-get install nftables)",
            ));
        }
    }
    if let Some(p) = listen_port(&daemon.http_listen) {
        if let Some(x) = busy(p) {
            out.push(Finding::warning("port-in-use", format!(
                "the daemon's http_listen port {p} is in use on this machine by {} (fine if that is the agent-supervisor daemon)", owner(x)
            )));
        }
    }
    // Memory.
    let groups: Vec<(&String, &agent_config::model::Group)> =
        s.groups.iter().filter(|(_, g)| g.host == host).collect();
    if let Some(total) = machine::mem_total() {
        let mut sum = 0u64;
        for (name, g) in &groups {
            if let Some(m) = g.resources.memory {
                sum += m.0;
                if m.0 > total {
                    out.push(l.at(
                        Severity::Error,
                        "memory",
                        &format!("groups.{name}.resources.memory"),
                        format!(
                            "group {name} asks for {m} of memory; this machine has {}",
                            agent_config::units::ByteSize(total)
                        ),
                    ));
                }
            }
        }
        if sum > total {
            out.push(Finding::warning("memory", format!(
                "the memory limits of {host}'s groups add up to {}, more than this machine's {} (limits are caps; they may not all be reached at once)",
                agent_config::units::ByteSize(sum), agent_config::units::ByteSize(total)
            )));
        }
    }
    // Disk (a state_dir that is empty or relative is its own error: rules).
    let disk_field = [
        format!("hosts.{host}.daemon.min_free_disk"),
        "daemon.min_free_disk".to_string(),
        format!("hosts.{host}.daemon.state_dir"),
        "daemon.state_dir".to_string(),
    ]
    .into_iter()
    .find(|f| l.source.has(f));
    let disk = |sev: Severity, message: String| match &disk_field {
        Some(f) => l.at(sev, "disk", f, message),
        None => Finding {
            severity: sev,
            ..Finding::error("disk", message).in_file(l.file.clone(), None)
        },
    };
    if daemon.state_dir.is_absolute() {
        match machine::free_disk(&daemon.state_dir) {
            Some((dir, free)) if free < daemon.min_free_disk.0 => out.push(disk(Severity::Error, format!(
                "only {} free on {} (state directory {}); at least {} is needed (daemon.min_free_disk)",
                agent_config::units::ByteSize(free), dir.display(), daemon.state_dir.display(), daemon.min_free_disk
            ))),
            Some(_) => {}
            None => out.push(disk(Severity::Warning, format!("cannot measure free disk at {}", daemon.state_dir.display()))),
        }
    }
    // GPUs: resolved with the plan (code `gpu`: CDI specs, then NVML; scheduling rules).
    // Host rootfs and programs for groups on the host image.
    let host_image_groups: Vec<_> = groups
        .iter()
        .filter(|(_, g)| defaults::image(g) == defaults::HOST_IMAGE)
        .collect();
    if !host_image_groups.is_empty() {
        if let Err(e) = agent_rootfs::host_rootfs(Path::new("/")) {
            out.push(Finding::error("rootfs", e.to_string()));
        }
    }
    for (gname, g) in host_image_groups {
        for (i, a) in g.agents.iter().enumerate() {
            let prog = &a.command.0[0];
            if python_script(l, g, a).is_some() && !agent_config::scripts::is_python(prog) {
                continue;
            }
            if find_program(prog, &agent_config::scripts::workdir(l, g, a)).is_none() {
                out.push(l.at(
                    Severity::Error,
                    "program",
                    &format!("groups.{gname}.agents[{i}].command"),
                    format!(
                        "agent {gname}:{}: program {prog:?} is not found{}",
                        a.name,
                        if prog.contains('/') {
                            String::new()
                        } else {
                            " on PATH".to_string()
                        }
                    ),
                ));
            }
        }
    }
}

fn agent_field(l: &Loaded, group: &str, agent: &str) -> Option<String> {
    let g = l.system.groups.get(group)?;
    let i = g.agents.iter().position(|a| a.name == agent)?;
    Some(format!("groups.{group}.agents[{i}]"))
}

/// Resolves a program like `execvp` would (relative paths against `workdir`).
pub fn find_program(prog: &str, workdir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        let p = workdir.join(prog);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_exec(p))
}

/// Adds a line number to a finding about a script.
trait WithLine {
    fn with_line(self, line: usize) -> Self;
}

impl WithLine for Finding {
    fn with_line(mut self, line: usize) -> Finding {
        self.at = Some(agent_config::locate::Mark { line, column: 0 });
        self
    }
}

/// Which host of the system file this machine is (`--host`, else hostname, else address);
/// the error says why none matched.
pub fn local_host(l: &Loaded, host: Option<&str>) -> Result<String, String> {
    let mut findings = Vec::new();
    let opts = Options {
        host: host.map(str::to_string),
    };
    find_local_host(l, &opts, &mut findings).ok_or_else(|| {
        findings
            .into_iter()
            .map(|f| f.message)
            .collect::<Vec<_>>()
            .join("; ")
    })
}
