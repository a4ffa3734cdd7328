//! One Compose service made into a group plan: every key it has either becomes a field of
//! the system file or a note at its line.

use std::path::{Path, PathBuf};

use agent_config::tree::Node;

use crate::emit::{comment, q};
use crate::recipe::{self, relative, ImageFacts};
use crate::service_keys::{
    depends, deploy, env_file, env_of, extra_keys, healthcheck, restart, set_cpus, set_memory,
    ulimits, volumes,
};
use crate::values::{dur_text, duration_ms, short_port, PortSpec};
use crate::yaml::{
    entries, get, is_null, items, key_text, kind_name, line, scalar, strings, trailing_comment,
};

/// What the import knows while it reads one compose file.
pub struct Ctx<'a> {
    pub file: &'a Path,
    pub dir: PathBuf,
    pub out_dir: PathBuf,
    pub lines: Vec<&'a str>,
    pub read: &'a dyn Fn(&Path) -> Option<String>,
    pub notes: Vec<(PathBuf, usize, String)>,
    /// Recipe files to write (relative to the output directory).
    pub files: Vec<(PathBuf, String)>,
}

impl Ctx<'_> {
    pub fn note(&mut self, line: usize, msg: impl Into<String>) {
        self.notes.push((self.file.to_path_buf(), line, msg.into()));
    }
    /// A path of the compose file (relative to its directory) as the system file names it.
    pub fn path_out(&self, p: &str) -> String {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.display().to_string();
        }
        relative(&self.out_dir, &normalize(&self.dir.join(p)))
    }
}

/// `a/./b/../c` → `a/c`, lexically.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// One agent of a group plan.
#[derive(Debug, Clone, Default)]
pub struct AgentPlan {
    pub name: String,
    /// The comment it was named by, or the comment of its port.
    pub comment: Option<String>,
    pub ports: Vec<u16>,
    pub publish: Vec<String>,
    pub command: Option<Vec<String>>,
    pub command_from: String,
    pub workdir: Option<String>,
    pub health: Vec<String>,
    pub stop_signal: Option<String>,
    pub line: usize,
}

/// A service as a group.
#[derive(Debug, Clone, Default)]
pub struct GroupPlan {
    pub service: String,
    pub line: usize,
    pub comments: Vec<String>,
    pub x_host: Option<String>,
    pub x_group: Option<String>,
    /// `(image name, recipe path relative to the output)`.
    pub image: Option<(String, String)>,
    pub network: Option<String>,
    pub resources: Vec<(String, String)>,
    pub gpus: Option<String>,
    pub depends: Vec<(String, String, usize)>,
    pub env: Vec<(String, String)>,
    pub env_file: Option<String>,
    pub binds: Vec<String>,
    pub stop_timeout: Option<String>,
    pub restart: Option<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub seccomp: Option<String>,
    pub rlimits: Vec<(String, u64)>,
    pub agents: Vec<AgentPlan>,
}

/// A name the system file accepts: letters, digits, `-`, `_`, at most 63.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A valid name made of `s`.
pub fn sanitize(s: &str) -> String {
    let mut n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    n.truncate(63);
    if n.is_empty() {
        "unnamed".into()
    } else {
        n
    }
}

struct PortEntry {
    spec: PortSpec,
    comment: Option<String>,
    line: usize,
}

/// Keys of a service that are listed as not carried, with why.
fn unsupported(key: &str) -> Option<&'static str> {
    Some(match key {
        "hostname" | "domainname" => "the group's host name is its name",
        "dns" | "dns_search" | "dns_opt" | "extra_hosts" => "name resolution is the host's (/etc/hosts and resolv.conf bound read-only)",
        "links" | "external_links" => "agents reach each other by AGENT_DEPENDENCIES (address:port), not by links",
        "logging" => "agents' output goes to the daemon's per-agent log files (daemon.log_dir, log_max_size, log_keep)",
        "labels" | "annotations" => "labels have no meaning for a group",
        "tty" | "stdin_open" => "agents have no terminal or stdin",
        "platform" | "pull_policy" => "images are built or imported for this machine",
        "profiles" => "every service is imported, whatever its profile",
        "secrets" | "configs" => "bind the secret or config file with volumes instead",
        "tmpfs" => "the group gets a private /tmp already; other tmpfs mounts are not carried",
        "shm_size" => "/dev/shm is the launcher's",
        "sysctls" => "sysctls are not set per group",
        "devices" | "device_cgroup_rules" => "only GPUs are passed through (deploy.resources.reservations.devices or gpus)",
        "privileged" => "groups never run privileged; add capabilities with cap_add",
        "init" => "every group already has an init process (__group-init)",
        "ipc" | "pid" | "uts" | "userns_mode" | "cgroup" | "cgroup_parent" | "isolation" => "the group's namespaces and cgroup are the supervisor's",
        "mac_address" | "runtime" | "oom_kill_disable" | "oom_score_adj" | "group_add" | "read_only" | "storage_opt" | "volumes_from" | "scale" | "extends" | "attach" | "develop" | "post_start" | "pre_stop" | "cpuset" | "cpu_period" | "cpu_quota" | "cpu_rt_runtime" | "cpu_rt_period" | "cpu_count" | "cpu_percent" | "mem_reservation" | "mem_swappiness" | "blkio_config" | "credential_spec" | "provider" | "use_api_socket" | "models" | "label_file" | "gpus_driver" => "no system-file field for it",
        _ => return None,
    })
}

/// Plans service `name` (`node` is its mapping).
pub fn plan(
    name: &str,
    at: usize,
    node: &Node,
    lines_above: Vec<String>,
    cx: &mut Ctx,
) -> Option<GroupPlan> {
    let mut g = GroupPlan {
        service: name.to_string(),
        line: at,
        comments: lines_above,
        ..GroupPlan::default()
    };
    let Some(es) = entries(node) else {
        cx.note(
            line(node),
            format!(
                "services.{name}: expected a mapping, got {}; skipped",
                kind_name(node)
            ),
        );
        return None;
    };
    // `<<: *anchor` merge keys: the merged mapping's entries where the service has none.
    let own: Vec<String> = es.iter().map(|e| key_text(e)).collect();
    let mut es: Vec<&agent_config::tree::Entry> =
        es.into_iter().filter(|e| key_text(e) != "<<").collect();
    if let Some(m) = get(node, "<<") {
        let maps: Vec<&Node> = match items(m) {
            Some(v) => v.iter().collect(),
            None => vec![m],
        };
        for mm in maps {
            match entries(mm) {
                Some(more) => {
                    for e in more {
                        let k = key_text(e);
                        if !own.contains(&k) && !es.iter().any(|x| key_text(x) == k) {
                            es.push(e);
                        }
                    }
                }
                None => cx.note(
                    line(mm),
                    format!("services.{name}.<<: expected a mapping to merge"),
                ),
            }
        }
    }
    let mut facts = ImageFacts::default();
    let mut command: Option<(Vec<String>, usize)> = None;
    let mut entrypoint: Option<(Vec<String>, usize)> = None;
    let mut health: Vec<String> = Vec::new();
    let mut health_off = false;
    let mut ports: Vec<PortEntry> = Vec::new();
    let mut expose: Vec<u16> = Vec::new();
    let mut workdir = None;
    let mut stop_signal = None;
    let mut has_restart = false;
    let mut private = false;
    for e in &es {
        let k = key_text(e);
        let v = &e.value;
        let l = line(&e.key);
        match k.as_str() {
            "build" => build(name, v, cx, &mut g, &mut facts),
            "image" => {
                if g.image.is_some() {
                    cx.note(l, format!("services.{name}.image: the image is built from `build`; its tag {:?} is not used", scalar(v).unwrap_or("")));
                } else if let Some(img) = scalar(v) {
                    let (base, archive) = recipe::base_for(img);
                    let rel = PathBuf::from("images").join(format!("{}.yaml", sanitize(name)));
                    let mut text = format!("# {}\nbase: {}\nsteps: []\n", comment(&format!("The image {img} of service {name}; see docs/import-export.md.")), q(&base));
                    if let Some((file, img)) = archive {
                        cx.note(l, format!("services.{name}.image: {img} becomes the recipe images/{}.yaml with base docker-archive:{file}; make the archive with `skopeo copy docker://{img} docker-archive:images/{file}:{img}` (or `docker save {img} -o images/{file}`); its CMD, ENTRYPOINT, ENV and WORKDIR are not known to the import", sanitize(name)));
                    } else {
                        text = "base: scratch\nsteps: []\n".to_string();
                    }
                    cx.files.push((rel.clone(), text));
                    g.image = Some((sanitize(name), rel.display().to_string()));
                }
            }
            "container_name" => cx.note(l, format!("services.{name}.container_name: the group is named after the service ({})", sanitize(name))),
            "ports" => {
                for it in items(v).unwrap_or(&[]) {
                    let il = line(it);
                    let comment = trailing_comment(&cx.lines, il, it.mark.column);
                    let specs = if let Some(s) = scalar(it) {
                        short_port(s)
                    } else {
                        extra_keys(cx, it, &["target", "published", "host_ip", "protocol"], &format!("services.{name}.ports"));
                        long_port(it)
                    };
                    match specs {
                        Ok(specs) => ports.extend(specs.into_iter().map(|spec| PortEntry { spec, comment: comment.clone(), line: il })),
                        Err(m) => cx.note(il, format!("services.{name}.ports: {m}")),
                    }
                }
                if items(v).is_none() {
                    cx.note(l, format!("services.{name}.ports: expected a list"));
                }
            }
            "expose" => {
                for (s, il) in strings(v).unwrap_or_default() {
                    match short_port(&s) {
                        Ok(p) => expose.extend(p.iter().map(|p| p.container)),
                        Err(m) => cx.note(il, format!("services.{name}.expose: {m}")),
                    }
                }
            }
            "environment" => env_of(name, v, cx, &mut g.env),
            "env_file" => env_file(name, v, cx, &mut g),
            "depends_on" => depends(name, v, cx, &mut g),
            "healthcheck" => healthcheck(name, v, cx, &mut health, &mut health_off),
            "restart" => {
                has_restart = true;
                g.restart = restart(name, scalar(v).unwrap_or(""), l, cx);
            }
            "deploy" => deploy(name, v, cx, &mut g, &mut has_restart),
            "mem_limit" => set_memory(name, "mem_limit", v, cx, &mut g, "memory"),
            "memswap_limit" => set_memory(name, "memswap_limit", v, cx, &mut g, "memory_swap"),
            "cpus" => set_cpus(name, v, cx, &mut g),
            "pids_limit" => match scalar(v).and_then(|s| s.parse::<i64>().ok()) {
                Some(n) if n > 0 => g.resources.push(("pids".into(), n.to_string())),
                _ => cx.note(l, format!("services.{name}.pids_limit: {:?} is not a limit (unlimited is the default)", scalar(v).unwrap_or(""))),
            },
            "cpu_shares" => match scalar(v).and_then(|s| s.parse::<u64>().ok()) {
                Some(n) => g.resources.push(("cpu_weight".into(), (n.saturating_mul(100) / 1024).clamp(1, 10000).to_string())),
                None => cx.note(l, format!("services.{name}.cpu_shares: not a number")),
            },
            "gpus" => {
                g.gpus = Some(match scalar(v) {
                    Some("all") => "{devices: all, optional: true}".into(),
                    _ => {
                        cx.note(l, format!("services.{name}.gpus: only `gpus: all` is read here; write deploy.resources.reservations.devices for counts and ids"));
                        "{devices: all, optional: true}".into()
                    }
                });
                cx.note(l, format!("services.{name}.gpus: carried as optional: true, so the group also runs where there is no GPU; remove `optional` to require it"));
            }
            "volumes" => volumes(name, v, cx, &mut g),
            "networks" => {
                private = true;
                g.network = Some("private".into());
                if let Some(es) = entries(v) {
                    for n in es {
                        if !is_null(&n.value) {
                            cx.note(line(&n.key), format!("services.{name}.networks.{}: aliases, addresses and priorities are not carried; the group gets an address on the host's group bridge", key_text(n)));
                        }
                    }
                }
            }
            "network_mode" => match scalar(v).unwrap_or("") {
                "host" => g.network = Some("host".into()),
                "bridge" => {
                    private = true;
                    g.network = Some("private".into());
                }
                "none" => {
                    private = true;
                    g.network = Some("{mode: private, egress: false}".into());
                    cx.note(l, format!("services.{name}.network_mode: none becomes a private network without egress (it still has the group bridge)"));
                }
                other => cx.note(l, format!("services.{name}.network_mode: {other:?} is not carried (only host, bridge and none)")),
            },
            "command" => {
                if let Some(a) = argv(v, cx, name, "command") {
                    command = Some((a, l));
                }
            }
            "entrypoint" => {
                if let Some(a) = argv(v, cx, name, "entrypoint") {
                    entrypoint = Some((a, l));
                }
            }
            "working_dir" => workdir = scalar(v).map(String::from),
            "user" => cx.note(l, format!("services.{name}.user: agents run as root in their sandbox (user namespaces are not mapped); not carried")),
            "stop_grace_period" => match scalar(v).and_then(duration_ms) {
                Some(ms) => g.stop_timeout = Some(dur_text(ms)),
                None => cx.note(l, format!("services.{name}.stop_grace_period: not a duration")),
            },
            "stop_signal" => stop_signal = scalar(v).map(String::from),
            "cap_add" => g.cap_add = strings(v).unwrap_or_default().into_iter().map(|s| s.0).collect(),
            "cap_drop" => g.cap_drop = strings(v).unwrap_or_default().into_iter().map(|s| s.0).collect(),
            "security_opt" => {
                for (s, il) in strings(v).unwrap_or_default() {
                    if s == "seccomp:unconfined" || s == "seccomp=unconfined" {
                        g.seccomp = Some("unconfined".into());
                    } else if s == "no-new-privileges:true" || s == "no-new-privileges" || s == "no-new-privileges=true" {
                        // Agents always run with no_new_privs.
                    } else {
                        cx.note(il, format!("services.{name}.security_opt: {s:?} is not carried (only seccomp:unconfined; agents always have no_new_privs)"));
                    }
                }
            }
            "ulimits" => ulimits(name, v, cx, &mut g),
            "x-agent-supervisor" => {
                g.x_host = get(v, "host").and_then(scalar).map(String::from);
                g.x_group = get(v, "group").and_then(scalar).map(String::from);
                for x in entries(v).unwrap_or_default() {
                    let xk = key_text(x);
                    if xk != "host" && xk != "group" {
                        cx.note(line(&x.key), format!("services.{name}.x-agent-supervisor.{xk}: unknown key (host and group are read)"));
                    }
                }
            }
            other if other.starts_with("x-") => cx.note(l, format!("services.{name}.{other}: extension, not carried")),
            other => match unsupported(other) {
                Some(why) => cx.note(l, format!("services.{name}.{other}: not carried: {why}")),
                None => cx.note(l, format!("services.{name}.{other}: unknown Compose key, not carried")),
            },
        }
    }
    if !has_restart {
        g.restart = Some("never".into());
    }
    // The command: Compose's entrypoint/command over the image's.
    let (cmd, from) = match (entrypoint, command) {
        (Some((e, _)), Some((c, _))) => {
            (Some([e, c].concat()), "entrypoint and command".to_string())
        }
        (Some((e, _)), None) => (Some(e), "entrypoint".into()),
        (None, Some((c, _))) => (
            Some([facts.entrypoint.clone().unwrap_or_default(), c].concat()),
            if facts.entrypoint.is_some() {
                "the image's ENTRYPOINT and command"
            } else {
                "command"
            }
            .into(),
        ),
        (None, None) => match (&facts.entrypoint, &facts.cmd) {
            (Some(e), c) => (
                Some([e.clone(), c.clone().unwrap_or_default()].concat()),
                "the Dockerfile's ENTRYPOINT/CMD".into(),
            ),
            (None, Some(c)) => (Some(c.clone()), "the Dockerfile's CMD".into()),
            (None, None) => (None, String::new()),
        },
    };
    let cmd = cmd.filter(|c| !c.is_empty());
    if let (Some(c), Some(_)) = (&cmd, &g.image) {
        let first = c[0].rsplit('/').next().unwrap_or("");
        let script = if first.starts_with("python") && !c.iter().any(|a| a == "-m" || a == "-c") {
            c[1..].iter().find(|a| a.ends_with(".py"))
        } else {
            c.first().filter(|a| a.ends_with(".py"))
        };
        if let Some(sc) = script {
            cx.note(g.line, format!("services.{name}: the command runs {sc} out of the image; `check` looks for it on this machine (under the agent's workdir) and reports it missing unless it is there too (`python3 -m module` is not looked up)"));
        }
    }
    if cmd.is_none() {
        cx.note(g.line, format!("services.{name}: no command (no command, entrypoint, or Dockerfile CMD/ENTRYPOINT the import could read); the agents got a placeholder that exits 78 — set their `command`"));
    }
    let workdir = workdir.or(facts.workdir.clone());
    let stop_signal = stop_signal.or(facts.stop_signal.clone());
    if health_off {
        health.clear();
    }
    // Agents: one per port named by a comment, else one named after the service.
    let named = |c: &Option<String>| {
        c.as_deref()
            .filter(|c| valid_name(c) && c.chars().next().is_some_and(|x| x.is_ascii_alphabetic()))
            .map(String::from)
    };
    let mut agents: Vec<AgentPlan> = Vec::new();
    if !expose.is_empty() && ports.is_empty() {
        for p in &expose {
            ports.push(PortEntry {
                spec: PortSpec {
                    container: *p,
                    host: None,
                    host_ip: None,
                },
                comment: None,
                line: g.line,
            });
        }
    } else if ports.is_empty() {
        for p in &facts.expose {
            ports.push(PortEntry {
                spec: PortSpec {
                    container: *p,
                    host: None,
                    host_ip: None,
                },
                comment: None,
                line: g.line,
            });
        }
    }
    let any_named = ports.iter().any(|p| named(&p.comment).is_some());
    for p in &ports {
        let new_agent = any_named && named(&p.comment).is_some();
        if new_agent || agents.is_empty() {
            let nm = if new_agent {
                named(&p.comment).unwrap_or_default()
            } else {
                sanitize(name)
            };
            agents.push(AgentPlan {
                name: nm,
                comment: if new_agent { None } else { p.comment.clone() },
                line: p.line,
                ..AgentPlan::default()
            });
        }
        let Some(a) = agents.last_mut() else {
            continue;
        };
        if !a.ports.contains(&p.spec.container) {
            a.ports.push(p.spec.container);
        }
        if !new_agent && p.comment.is_some() && a.comment.is_none() {
            a.comment = p.comment.clone();
        }
        match (p.spec.host, private) {
            (Some(h), true) => {
                let mut s = format!("{{host_port: {h}, port: {}", p.spec.container);
                if let Some(ip) = &p.spec.host_ip {
                    s.push_str(&format!(", address: {}", q(ip)));
                }
                s.push('}');
                a.publish.push(s);
            }
            (Some(h), false) if h != p.spec.container => cx.note(p.line, format!("services.{name}.ports: {h}:{}: on the host network the agent listens on its own port {} itself; the host port {h} is not carried (use networks: to get a private network with published ports)", p.spec.container, p.spec.container)),
            (Some(_), false) if p.spec.host_ip.is_some() => cx.note(p.line, format!("services.{name}.ports: the host address {} is not carried on the host network (the agent chooses where it listens)", p.spec.host_ip.clone().unwrap_or_default())),
            _ => {}
        }
    }
    if agents.is_empty() {
        agents.push(AgentPlan {
            name: sanitize(name),
            line: g.line,
            ..AgentPlan::default()
        });
    }
    if facts.user.is_some() {
        cx.note(g.line, format!("services.{name}: the Dockerfile's USER is in the image config, but agents run as root in their sandbox"));
    }
    for a in &mut agents {
        a.command = cmd.clone();
        a.command_from = from.clone();
        a.workdir = workdir.clone();
        a.health = health.clone();
        a.stop_signal = stop_signal.clone();
    }
    // The image's ENV is not applied by the launcher: carry it as the group's environment.
    let mut env: Vec<(String, String)> =
        facts.env.into_iter().filter(|(k, _)| k != "PATH").collect();
    for (k, v) in std::mem::take(&mut g.env) {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    g.env = env;
    g.agents = agents;
    Some(g)
}

fn long_port(n: &Node) -> Result<Vec<PortSpec>, String> {
    let target = get(n, "target")
        .and_then(scalar)
        .ok_or("a long-syntax port needs `target`")?;
    let proto = get(n, "protocol").and_then(scalar).unwrap_or("tcp");
    if proto != "tcp" {
        return Err(format!(
            "{proto} ports are not carried (agents' ports are TCP)"
        ));
    }
    let container = target
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or(format!("target {target:?} is not a port"))?;
    let host = match get(n, "published").and_then(scalar) {
        Some(p) if !p.is_empty() => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or(
            format!("published {p:?} is not a port (ranges only in the short syntax)"),
        )?),
        _ => None,
    };
    let host_ip = get(n, "host_ip").and_then(scalar).map(String::from);
    Ok(vec![PortSpec {
        container,
        host,
        host_ip,
    }])
}

fn argv(v: &Node, cx: &mut Ctx, name: &str, what: &str) -> Option<Vec<String>> {
    if let Some(s) = scalar(v) {
        if is_null(v) {
            return None;
        }
        match shell_words::split(s) {
            Ok(a) => Some(a),
            Err(e) => {
                cx.note(
                    line(v),
                    format!("services.{name}.{what}: cannot split {s:?}: {e}"),
                );
                None
            }
        }
    } else if let Some(list) = strings(v) {
        Some(list.into_iter().map(|s| s.0).collect())
    } else {
        cx.note(
            line(v),
            format!("services.{name}.{what}: expected a string or a list"),
        );
        None
    }
}

fn build(name: &str, v: &Node, cx: &mut Ctx, g: &mut GroupPlan, facts: &mut ImageFacts) {
    let (context, dockerfile, mut args, target) = if let Some(s) = scalar(v) {
        (
            s.to_string(),
            "Dockerfile".to_string(),
            indexmap::IndexMap::new(),
            None,
        )
    } else {
        let mut args = indexmap::IndexMap::new();
        let mut context = ".".to_string();
        let mut dockerfile = "Dockerfile".to_string();
        let mut target = None;
        for e in entries(v).unwrap_or_default() {
            let k = key_text(e);
            let l = line(&e.key);
            match k.as_str() {
                "context" => context = scalar(&e.value).unwrap_or(".").to_string(),
                "dockerfile" => dockerfile = scalar(&e.value).unwrap_or("Dockerfile").to_string(),
                "target" => target = scalar(&e.value).map(String::from),
                "args" => {
                    let mut pairs = Vec::new();
                    env_of(name, &e.value, cx, &mut pairs);
                    for (k, v) in pairs {
                        args.insert(k, Some(v));
                    }
                }
                "dockerfile_inline" => cx.note(l, format!("services.{name}.build.dockerfile_inline: not carried; write the Dockerfile to a file")),
                other => cx.note(l, format!("services.{name}.build.{other}: not carried by the recipe")),
            }
        }
        (context, dockerfile, args, target)
    };
    if context.contains("://") || context.starts_with("git@") {
        cx.note(
            line(v),
            format!("services.{name}.build.context: a remote context ({context}) is not carried"),
        );
        return;
    }
    args.retain(|_, v| v.is_some());
    let ctx_dir = normalize(&cx.dir.join(&context));
    let df_path = normalize(&ctx_dir.join(&dockerfile));
    let img = sanitize(name);
    let rel = PathBuf::from("images").join(format!("{img}.yaml"));
    let recipe_dir = normalize(&cx.out_dir.join("images"));
    let context_rel = relative(&recipe_dir, &ctx_dir);
    let Some(text) = (cx.read)(&df_path) else {
        cx.note(line(v), format!("services.{name}.build: the Dockerfile {} cannot be read; the recipe is left with no steps", df_path.display()));
        cx.files.push((
            rel.clone(),
            format!("base: scratch\ncontext: {}\nsteps: []\n", q(&context_rel)),
        ));
        g.image = Some((img, rel.display().to_string()));
        return;
    };
    let own_ignore = df_path.with_file_name(format!(
        "{}.dockerignore",
        df_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let ignore = if (cx.read)(&own_ignore).is_some() {
        Some(relative(&ctx_dir, &own_ignore))
    } else if (cx.read)(&ctx_dir.join(".dockerignore")).is_some() {
        Some(".dockerignore".to_string())
    } else {
        None
    };
    let c = recipe::convert(
        &text,
        &args,
        target.as_deref(),
        &context_rel,
        ignore.as_deref(),
    );
    for (l, m) in c.notes {
        cx.notes.push((df_path.clone(), l, m));
    }
    let head = format!(
        "# {}\n",
        comment(&format!(
            "From {} (service {name}); see docs/import-export.md.",
            df_path.display()
        ))
    );
    cx.files.push((rel.clone(), head + &c.text));
    *facts = c.facts;
    g.image = Some((img, rel.display().to_string()));
}
