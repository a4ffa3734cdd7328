//! [`Plan::resolve`]: a loaded system file, one host and its image store in, a [`HostPlan`]
//! out, or every finding that stops it, each naming the field it is about.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use agent_config::model::{Agent, Group, NetworkMode, SeccompMode, TcpTarget};
use agent_config::{defaults, Finding, Loaded, Severity};
use agent_images::Store;
use indexmap::IndexMap;

use crate::env::{group_base, Env};
use crate::net::{self, SystemNet};
use crate::{
    log_file, AgentPlan, BindPlan, GroupPlan, HealthPlan, HostNetPlan, HostPlan, ImagePlan,
    LogPlan, NetworkPlan, PrivateNet, Probe, PublishPlan, RootfsPlan, SecurityPlan,
};

/// What stops a plan: every finding at once, each with its place.
pub type Findings = Vec<Finding>;

/// The finding code of a group whose image is not in the store: `check` reports it as a
/// warning (the images are built after the check), the daemon as an error.
pub const IMAGE_MISSING: &str = "image-missing";

/// Codes of findings that depend on the system file only, not on the machine a host's plan
/// is resolved on (networks, published ports): `check` reports them for every host.
pub const STATIC_CODES: &[&str] = &["network", "publish", "bridge"];

/// The resolver.
pub struct Plan;

impl Plan {
    /// Loads and validates the system file and resolves `host`'s plan, with the host's image
    /// store when it has one (`state_dir/images`; none is created here). With `only`, just
    /// that group has to resolve (`run-group`, `bundle`): the plan holds the groups that did.
    pub fn load(
        file: &Path,
        host: &str,
        only: Option<&str>,
    ) -> Result<(Loaded, HostPlan), Findings> {
        let l = agent_config::load(file).map_err(|e| e.findings())?;
        let errors: Findings = agent_config::validate::validate(&l)
            .into_iter()
            .filter(Finding::is_error)
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let store = Self::store(&l, host).map_err(|f| vec![f])?;
        let plan = match only {
            None => Plan::resolve(&l, host, store.as_ref())?,
            Some(group) => {
                let (plan, findings) = Plan::resolve_partial(&l, host, store.as_ref())?;
                let prefix = format!("groups.{group}");
                let mine: Findings = findings
                    .into_iter()
                    .filter(|f| {
                        f.is_error()
                            && f.field.as_deref().is_some_and(|p| {
                                p == prefix || p.starts_with(&format!("{prefix}."))
                            })
                    })
                    .collect();
                if !mine.is_empty() {
                    return Err(mine);
                }
                plan
            }
        };
        Ok((l, plan))
    }

    /// The image store of `host` if it exists on this machine.
    pub fn store(l: &Loaded, host: &str) -> Result<Option<Store>, Finding> {
        let state_dir = defaults::daemon(&l.system, host).state_dir;
        if !state_dir.join("images").join("index.json").exists() {
            return Ok(None);
        }
        Store::open(&state_dir).map(Some).map_err(|e| {
            Finding::error("image-store", format!("image store of host {host}: {e}"))
                .in_file(l.file.clone(), None)
        })
    }

    /// Resolves `host`'s share of `l`. `store` is the host's image store (`None`: there is
    /// none on this machine; groups that run from a built image are then findings).
    pub fn resolve(l: &Loaded, host: &str, store: Option<&Store>) -> Result<HostPlan, Findings> {
        let (plan, findings) = Self::resolve_partial(l, host, store)?;
        if findings.iter().any(Finding::is_error) {
            return Err(findings);
        }
        Ok(plan)
    }

    /// [`Plan::resolve`] that leaves out the groups and agents with errors: the plan of what
    /// could be resolved, and every finding. `Err` only when the host is unknown.
    pub fn resolve_partial(
        l: &Loaded,
        host: &str,
        store: Option<&Store>,
    ) -> Result<(HostPlan, Findings), Findings> {
        Self::resolve_inner(l, host, store, false)
    }

    /// The plan as the system file describes it, independent of this machine (`export`,
    /// which may run on a laptop): a group whose image is not in `store` (or with no store)
    /// names the image only ([`ImagePlan::digest`] empty, no layers), a bind source that is
    /// not here is kept as written, GPUs are not allocated from this machine
    /// ([`crate::GpuState::Absent`]); each of those is a warning. `Err` with every finding
    /// when any other finding is an error.
    pub fn resolve_portable(
        l: &Loaded,
        host: &str,
        store: Option<&Store>,
    ) -> Result<(HostPlan, Findings), Findings> {
        let (plan, findings) = Self::resolve_inner(l, host, store, true)?;
        if findings.iter().any(Finding::is_error) {
            return Err(findings);
        }
        Ok((plan, findings))
    }

    fn resolve_inner(
        l: &Loaded,
        host: &str,
        store: Option<&Store>,
        portable: bool,
    ) -> Result<(HostPlan, Findings), Findings> {
        let mut out = Findings::new();
        if !l.system.hosts.contains_key(host) {
            let known: Vec<&str> = l.system.hosts.keys().map(String::as_str).collect();
            out.push(
                Finding::error(
                    "plan-host",
                    format!(
                        "host {host:?} is not in the system file (hosts: {})",
                        known.join(", ")
                    ),
                )
                .in_file(l.file.clone(), None),
            );
            return Err(out);
        }
        let daemon = defaults::daemon(&l.system, host);
        let sysnet = match SystemNet::resolve(l) {
            Ok(n) => Some(n),
            Err(errors) => {
                for (field, message) in errors {
                    out.push(l.at(Severity::Error, "network", &field, message));
                }
                None
            }
        };
        let host_net = sysnet
            .as_ref()
            .filter(|n| n.bridged.contains(host))
            .and_then(|n| n.subnets.get(host))
            .map(|subnet| HostNetPlan {
                subnet: *subnet,
                bridge: net::bridge_name(&daemon.run_dir),
                table: net::table_name(&daemon.run_dir),
            });
        let bridge = match crate::bridge::resolve(l, host, &daemon.run_dir, sysnet.as_ref()) {
            Ok(b) => b,
            Err(errors) => {
                for (field, message) in errors {
                    out.push(l.at(Severity::Error, "bridge", &field, message));
                }
                None
            }
        };
        let mut r = Resolver {
            l,
            store,
            gpus: crate::gpu::Allocator::new(daemon.cdi_spec_dirs.clone()),
            layer_cache: daemon.state_dir.join("layers"),
            host_entries: None,
            sysnet: sysnet.as_ref(),
            host_net: host_net.as_ref(),
            out: &mut out,
            portable,
            names: std::collections::HashMap::new(),
            agents: agent_config::validate::agent_index(l),
        };
        let mut groups = IndexMap::new();
        for (name, g) in l.system.groups.iter().filter(|(_, g)| g.host == host) {
            let before = r.out.len();
            if let Some(gp) = r.group(name, g, &daemon) {
                if !r.out[before..].iter().any(Finding::is_error) {
                    groups.insert(name.clone(), gp);
                }
            }
        }
        let plan = HostPlan {
            host: host.to_string(),
            file: l.file.clone(),
            dir: l.dir.clone(),
            daemon,
            network: host_net,
            role: crate::fleet::role_name(l, host),
            hosts: l.system.hosts.keys().cloned().collect(),
            fleet: crate::fleet::peers(l, host, bridge.as_ref()),
            bridge,
            groups,
        };
        Ok((plan, out))
    }
}

struct Resolver<'a> {
    l: &'a Loaded,
    store: Option<&'a Store>,
    /// The host's GPUs, handed out to its groups in file order.
    gpus: crate::gpu::Allocator,
    layer_cache: PathBuf,
    /// The host rootfs, read once per plan.
    host_entries: Option<Vec<agent_rootfs::HostEntry>>,
    /// The system's group networks (`None` after an error there, already reported).
    sysnet: Option<&'a SystemNet>,
    host_net: Option<&'a HostNetPlan>,
    out: &'a mut Findings,
    /// [`Plan::resolve_portable`]: what depends on this machine is a warning, not an error.
    portable: bool,
    /// The system's names as the groups of one host and network mode see them, made once:
    /// every such group shares one table (with small groups, one per group would make the
    /// plan grow with groups × agents).
    names: std::collections::HashMap<(String, bool), SharedNames>,
    /// Every agent of the system by name, for each agent's `AGENT_DEPENDENCIES`.
    agents: std::collections::HashMap<String, agent_config::validate::AgentRef>,
}

/// `/etc/hosts` lines and the environment of [`net::Names`], shared by the groups that
/// see the system alike.
#[derive(Clone)]
struct SharedNames {
    hosts: std::sync::Arc<Vec<(Ipv4Addr, Vec<String>)>>,
    env: std::sync::Arc<Vec<(String, String)>>,
}

impl Resolver<'_> {
    /// The names of the system as a group on `host` sees them, private network or not.
    fn names_of(&mut self, host: &str, private: bool) -> SharedNames {
        let (l, sysnet) = (self.l, self.sysnet);
        self.names
            .entry((host.to_string(), private))
            .or_insert_with(|| {
                let n = sysnet
                    .map(|n| n.names(l, host, private))
                    .unwrap_or_default();
                SharedNames {
                    hosts: std::sync::Arc::new(n.hosts),
                    env: std::sync::Arc::new(n.env),
                }
            })
            .clone()
    }

    fn err(&mut self, code: &'static str, field: &str, message: impl Into<String>) {
        let f = self.l.at(Severity::Error, code, field, message);
        self.out.push(f);
    }

    fn warn(&mut self, code: &'static str, field: &str, message: impl Into<String>) {
        let f = self.l.at(Severity::Warning, code, field, message);
        self.out.push(f);
    }

    /// A portable plan's stand-in for an image that is not in this machine's store.
    fn image_by_name(
        &mut self,
        field: &str,
        name: &str,
        why: String,
    ) -> Option<(ImagePlan, Vec<String>, Option<PathBuf>)> {
        self.warn(
            IMAGE_MISSING,
            field,
            format!("image {name}: {why}: referenced by name, without digest"),
        );
        Some((
            ImagePlan {
                name: name.to_string(),
                digest: String::new(),
                layers: Vec::new(),
                layer_cache: self.layer_cache.clone(),
                working_dir: None,
            },
            Vec::new(),
            None,
        ))
    }

    fn group(
        &mut self,
        name: &str,
        g: &Group,
        daemon: &defaults::EffectiveDaemon,
    ) -> Option<GroupPlan> {
        let gp = format!("groups.{name}");
        let mut binds = Vec::new();
        // Everything else is still resolved when the root file system is not: every
        // finding of the group at once.
        let (rootfs, image_env, working_dir) = if defaults::image(g) == defaults::HOST_IMAGE {
            // The host image also shows the system file's directory (agents' code), read-only.
            match std::fs::canonicalize(&self.l.dir) {
                Ok(dir) => binds.push(BindPlan {
                    source: dir.clone(),
                    target: dir,
                    readonly: true,
                }),
                Err(e) => self.err(
                    "system-dir",
                    &gp,
                    format!("cannot resolve {}: {e}", self.l.dir.display()),
                ),
            }
            (self.host_rootfs(&gp), Vec::new(), None)
        } else {
            match self.image(&gp, defaults::image(g)) {
                Some((image, env, wd)) => (Some(RootfsPlan::Image(image)), env, wd),
                None => (None, Vec::new(), None),
            }
        };
        for (i, b) in g.binds.iter().enumerate() {
            let src = self.l.resolve(&b.source);
            match std::fs::canonicalize(&src) {
                Ok(source) => binds.push(BindPlan {
                    source,
                    target: b.target.clone(),
                    readonly: b.readonly,
                }),
                Err(e) if self.portable => {
                    self.warn(
                        "bind-source",
                        &format!("{gp}.binds[{i}].source"),
                        format!("bind source {}: {e} (kept as written)", src.display()),
                    );
                    binds.push(BindPlan {
                        source: src,
                        target: b.target.clone(),
                        readonly: b.readonly,
                    });
                }
                Err(e) => self.err(
                    "bind-source",
                    &format!("{gp}.binds[{i}].source"),
                    format!("bind source {}: {e}", src.display()),
                ),
            }
        }
        let env_file = match &g.env_file {
            None => Vec::new(),
            Some(f) => self.env_file(&format!("{gp}.env_file"), &self.l.resolve(f)),
        };
        let private = g
            .network
            .as_ref()
            .is_some_and(|n| n.mode == NetworkMode::Private);
        let names = self.names_of(&g.host, private);
        let asks_gpus = g
            .gpus
            .as_ref()
            .is_some_and(|r| r.devices != agent_config::model::GpuDevices::Count(0));
        let (devices, gpu_findings) = if self.portable && asks_gpus {
            let reason = "not allocated: a portable plan takes no machine's GPUs".to_string();
            let devices = crate::gpu::DevicePlan {
                gpus: crate::gpu::GpuState::Absent { reason },
                ..crate::gpu::DevicePlan::default()
            };
            (devices, Vec::new())
        } else {
            self.gpus.group(name, g.gpus.as_ref())
        };
        for f in gpu_findings {
            let sev = if f.error {
                Severity::Error
            } else {
                Severity::Warning
            };
            let at = self.l.at(sev, "gpu", &format!("{gp}.gpus"), f.message);
            self.out.push(at);
        }
        // The GPUs' variables come right after the image's: the group's own env wins.
        let image_env: Vec<String> = image_env
            .into_iter()
            .chain(devices.env.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let base = group_base(&image_env, env_file, g);
        let mut agents = IndexMap::new();
        for (i, a) in g.agents.iter().enumerate() {
            let ap = format!("{gp}.agents[{i}]");
            if let Some(mut plan) =
                self.agent(&ap, name, g, a, &base, working_dir.as_deref(), daemon)
            {
                if private {
                    by_name(&mut plan.env);
                    // The daemon probes from the host: at the group's address.
                    if let Some(addr) = self.sysnet.and_then(|n| n.addresses.get(name)) {
                        if let Some(h) = plan.health.as_mut() {
                            h.probe.reach_at(*addr);
                        }
                    }
                }
                plan.system_names = names.env.clone();
                agents.insert(a.name.clone(), plan);
            }
        }
        let network = self.network(&gp, name, g, private, daemon)?;
        Some(GroupPlan {
            name: name.to_string(),
            limits: g.resources.clone(),
            rootfs: rootfs?,
            binds,
            security: SecurityPlan {
                cap_add: g.security.cap_add.clone(),
                cap_drop: g.security.cap_drop.clone(),
                seccomp: g.security.seccomp == SeccompMode::Default,
                rlimits: g
                    .security
                    .rlimits
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            },
            network,
            names: names.hosts,
            devices,
            depends_on: g
                .depends_on
                .0
                .iter()
                .map(|(k, c)| (k.clone(), *c))
                .collect(),
            agents,
        })
    }

    /// The group's network; `None` after an error (reported).
    fn network(
        &mut self,
        gp: &str,
        name: &str,
        g: &Group,
        private: bool,
        daemon: &defaults::EffectiveDaemon,
    ) -> Option<NetworkPlan> {
        let mut publish = Vec::new();
        let mut ok = true;
        for (i, a) in g.agents.iter().enumerate() {
            let ports: Vec<u16> = a.all_ports().iter().map(|p| p.0).collect();
            for (j, p) in a.publish.iter().enumerate() {
                let field = format!("{gp}.agents[{i}].publish[{j}]");
                if !private {
                    self.err(
                        "publish",
                        &field,
                        format!(
                            "agent {} publishes a port, but its group is on the host's network \
                             (its ports are the host's already); give the group `network: private`",
                            a.name
                        ),
                    );
                    ok = false;
                    continue;
                }
                let port = match p.port.or_else(|| ports.first().copied()) {
                    Some(port) if ports.contains(&port) => port,
                    Some(port) => {
                        self.err(
                            "publish",
                            &field,
                            format!("agent {} has no port {port} to publish", a.name),
                        );
                        ok = false;
                        continue;
                    }
                    None => {
                        self.err(
                            "publish",
                            &field,
                            format!("agent {} has no port to publish", a.name),
                        );
                        ok = false;
                        continue;
                    }
                };
                let host_addr = match &p.address {
                    None => None,
                    Some(s) => match s.parse() {
                        Ok(ip) => Some(ip),
                        Err(_) => {
                            self.err("publish", &field, format!("{s:?} is not an IPv4 address"));
                            ok = false;
                            continue;
                        }
                    },
                };
                publish.push(PublishPlan {
                    agent: a.name.clone(),
                    host_addr,
                    host_port: p.host_port,
                    port,
                });
            }
        }
        if !ok {
            return None;
        }
        if !private {
            return Some(NetworkPlan::Host);
        }
        // Errors of the system's networks were reported where they are.
        let address = *self.sysnet?.addresses.get(name)?;
        let host = self.host_net?;
        Some(NetworkPlan::Private(PrivateNet {
            address,
            prefix: host.subnet.prefix,
            gateway: host.subnet.gateway(),
            bridge: host.bridge.clone(),
            veth_prefix: net::veth_prefix(&daemon.run_dir, name),
            egress: g.network.as_ref().and_then(|n| n.egress).unwrap_or(true),
            publish,
        }))
    }

    fn host_rootfs(&mut self, gp: &str) -> Option<RootfsPlan> {
        if self.host_entries.is_none() {
            match agent_rootfs::host_rootfs(Path::new("/")) {
                Ok(e) => self.host_entries = Some(e),
                Err(e) if self.portable => {
                    self.warn("host-rootfs", &format!("{gp}.image"), e.to_string());
                    self.host_entries = Some(Vec::new());
                }
                Err(e) => {
                    self.err("host-rootfs", &format!("{gp}.image"), e.to_string());
                    return None;
                }
            }
        }
        Some(RootfsPlan::Host {
            entries: self.host_entries.clone().unwrap_or_default(),
        })
    }

    /// The image's plan, its `Env` and `WorkingDir`.
    fn image(&mut self, gp: &str, name: &str) -> Option<(ImagePlan, Vec<String>, Option<PathBuf>)> {
        let field = format!("{gp}.image");
        let build = format!(
            "build it with `agent-supervisor build {}`",
            self.l.file.display()
        );
        let Some(store) = self.store else {
            if self.portable {
                return self.image_by_name(&field, name, "no image store on this machine".into());
            }
            self.err(
                IMAGE_MISSING,
                &field,
                format!("image {name}: no image store on this machine ({build})"),
            );
            return None;
        };
        let info = match store.inspect(name) {
            Ok(i) => i,
            Err(e) if self.portable => return self.image_by_name(&field, name, e.to_string()),
            Err(e) => {
                self.err(
                    IMAGE_MISSING,
                    &field,
                    format!("image {name}: {e} ({build})"),
                );
                return None;
            }
        };
        let mut layers = Vec::new();
        for li in &info.layers {
            let Some(media) = agent_rootfs::Compression::from_media_type(&li.descriptor.media_type)
            else {
                self.err(
                    "image-layer",
                    &field,
                    format!(
                        "image {name}: layer {} has media type {} that cannot be unpacked",
                        li.descriptor.digest, li.descriptor.media_type
                    ),
                );
                return None;
            };
            layers.push(agent_rootfs::LayerRef {
                digest: li.descriptor.digest.to_string(),
                blob: li.path.clone(),
                media,
            });
        }
        let working_dir = info
            .config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .map(PathBuf::from);
        Some((
            ImagePlan {
                name: name.to_string(),
                digest: info.digest.to_string(),
                layers,
                layer_cache: self.layer_cache.clone(),
                working_dir: working_dir.clone(),
            },
            info.config.config.env.clone(),
            working_dir,
        ))
    }

    fn env_file(&mut self, field: &str, path: &Path) -> Vec<(String, String)> {
        let text =
            match agent_config::fsread::read_regular(path, agent_config::envfile::MAX_ENV_FILE)
                .and_then(|b| {
                    String::from_utf8(b).map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8")
                    })
                }) {
                Ok(t) => t,
                Err(e) => {
                    self.err(
                        "env-file",
                        field,
                        format!("env_file {}: {e}", path.display()),
                    );
                    return Vec::new();
                }
            };
        match crate::env::parse_env_file(&text) {
            Ok(vars) => vars,
            Err((line, message)) => {
                self.err(
                    "env-file",
                    field,
                    format!("{}:{line}: {message}", path.display()),
                );
                Vec::new()
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn agent(
        &mut self,
        ap: &str,
        group: &str,
        g: &Group,
        a: &Agent,
        base: &Env,
        image_workdir: Option<&Path>,
        daemon: &defaults::EffectiveDaemon,
    ) -> Option<AgentPlan> {
        let mut env = base.clone();
        env.extend(a.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(agent_config::scripts::agent_env(
            self.l,
            &self.agents,
            group,
            a,
        ));
        let workdir = if defaults::image(g) == defaults::HOST_IMAGE {
            let w = agent_config::scripts::workdir(self.l, g, a);
            std::fs::canonicalize(&w).unwrap_or(w)
        } else {
            a.workdir
                .clone()
                .or_else(|| image_workdir.map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("/"))
        };
        let ports: Vec<u16> = a.all_ports().iter().map(|p| p.0).collect();
        let health = match &a.health {
            None => None,
            Some(h) => match probe(h, ports.first().copied()) {
                Some(probe) => Some(HealthPlan {
                    probe,
                    timing: defaults::health_timing(h),
                }),
                None => {
                    self.err(
                        "health",
                        &format!("{ap}.health"),
                        format!("agent {} has no port for its health check", a.name),
                    );
                    return None;
                }
            },
        };
        Some(AgentPlan {
            name: a.name.clone(),
            group: group.to_string(),
            argv: a.command.0.clone(),
            env: env.0,
            workdir,
            ports,
            restart: defaults::restart(g, a),
            health,
            log: LogPlan {
                stdout: log_file(&daemon.log_dir, &a.name, false),
                stderr: log_file(&daemon.log_dir, &a.name, true),
                max_size: daemon.log_max_size.0,
                keep: daemon.log_keep,
            },
            stop_signal: a
                .stop_signal
                .clone()
                .unwrap_or_else(|| defaults::STOP_SIGNAL.to_string()),
            stop_timeout: defaults::stop_timeout(g, a),
            system_names: std::sync::Arc::default(),
            depends_on: a
                .depends_on
                .0
                .iter()
                .map(|(k, c)| (k.clone(), *c))
                .collect(),
        })
    }
}

/// The probe of a health section, with the agent's first port; `None` when it needs a port
/// and the agent has none.
fn probe(h: &agent_config::model::Health, port: Option<u16>) -> Option<Probe> {
    if let Some(t) = h.tcp {
        return Some(Probe::Tcp {
            addr: Ipv4Addr::LOCALHOST,
            port: match t {
                TcpTarget::Port(p) => p.0,
                TcpTarget::AgentPort => port?,
            },
        });
    }
    if let Some(path) = &h.http {
        return Some(Probe::Http {
            addr: Ipv4Addr::LOCALHOST,
            port: port?,
            path: path.clone(),
        });
    }
    h.exec.as_ref().map(|c| Probe::Exec(c.0.clone()))
}

/// In a private group, `AGENT_DEPENDENCIES` names each dependency by its name (resolved by the
/// group's `/etc/hosts`) instead of an address: `api=api:8100`.
fn by_name(env: &mut [(String, String)]) {
    for (k, v) in env.iter_mut() {
        if k != "AGENT_DEPENDENCIES" || v.is_empty() {
            continue;
        }
        let named: Vec<String> = v
            .split(',')
            .map(|d| match d.split_once('=') {
                Some((name, addr)) => {
                    let port = addr.rsplit(':').next().unwrap_or_default();
                    format!("{name}={name}:{port}")
                }
                None => d.to_string(),
            })
            .collect();
        *v = named.join(",");
    }
}
