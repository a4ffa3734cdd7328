//! The launch specs as pure functions of the plan and of what the pod made at start (its
//! cgroups, state directory, init): no file, cgroup or process is touched here.

use std::path::{Path, PathBuf};

use agent_plan::{AgentPlan, GroupPlan, LogPlan, NetworkPlan, SecurityPlan};

use crate::launch::mounts::{MASKED_PATHS, READONLY_PATHS};
use crate::launch::spec::{
    AgentSpec, BindSpec, DeviceSpec, GroupSpec, LogSpec, NetSpec, Rlimit, RootfsSpec,
};

/// What a started pod is, for its agents' specs.
#[derive(Debug, Clone, Copy)]
pub struct InitRef {
    pub pid: i32,
    pub start_time: u64,
}

/// The group init's spec. `hosts` is the generated `/etc/hosts` in the state directory.
pub fn group_spec(
    g: &GroupPlan,
    dir: &Path,
    init_procs: Vec<PathBuf>,
    rootfs: RootfsSpec,
    hosts: PathBuf,
) -> GroupSpec {
    let mut binds: Vec<BindSpec> = g
        .binds
        .iter()
        .map(|b| BindSpec {
            source: b.source.clone(),
            target: b.target.clone(),
            readonly: b.readonly,
        })
        .collect();
    binds.push(BindSpec {
        source: hosts,
        target: PathBuf::from("/etc/hosts"),
        readonly: true,
    });
    // The GPUs' driver files after the group's own binds.
    binds.extend(g.devices.mounts.iter().map(|b| BindSpec {
        source: b.source.clone(),
        target: b.target.clone(),
        readonly: b.readonly,
    }));
    let mut masked_paths: Vec<PathBuf> = MASKED_PATHS.iter().map(PathBuf::from).collect();
    masked_paths.extend(g.devices.masked.iter().cloned());
    GroupSpec {
        group: g.name.clone(),
        hostname: g.name.clone(),
        cgroup_procs: init_procs,
        root_dir: dir.join("root"),
        rootfs,
        binds,
        private_network: private_network(g),
        network: net_spec(g),
        masked_paths,
        readonly_paths: READONLY_PATHS.iter().map(PathBuf::from).collect(),
        devices: g.devices.nodes.iter().map(device_spec).collect(),
        symlinks: g.devices.symlinks.clone(),
    }
}

/// The launcher's part of a device node.
pub fn device_spec(n: &agent_plan::DeviceNode) -> DeviceSpec {
    DeviceSpec {
        path: n.path.clone(),
        host_path: n.host_path.clone(),
        block: n.kind == agent_devices::DeviceType::Block,
        major: n.major,
        minor: n.minor,
        file_mode: n.file_mode,
        uid: n.uid,
        gid: n.gid,
    }
}

/// The launcher's part of a private network.
pub fn net_spec(g: &GroupPlan) -> Option<NetSpec> {
    match &g.network {
        NetworkPlan::Host => None,
        NetworkPlan::Private(n) => Some(NetSpec {
            address: n.address,
            prefix: n.prefix,
            gateway: n.gateway,
            bridge: n.bridge.clone(),
            veth_prefix: n.veth_prefix.clone(),
        }),
    }
}

/// Whether the group has a network namespace of its own.
pub fn private_network(g: &GroupPlan) -> bool {
    matches!(g.network, NetworkPlan::Private(_))
}

/// The `/etc/hosts` of a group: the group's own name (Python's `http.server`, for one, looks
/// its own name up), then every name of the system (`docs/network.md`). A host-network
/// group starts from the host's file; a private one from the loopback names only (the
/// host's own entries would name addresses it cannot reach).
pub fn hosts_file(host_hosts: Option<String>, g: &GroupPlan) -> String {
    let base = match (&g.network, host_hosts) {
        (NetworkPlan::Host, Some(h)) => h,
        _ => "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string(),
    };
    let mut text = base;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let own = match &g.network {
        NetworkPlan::Private(n) => n.address.to_string(),
        NetworkPlan::Host => "127.0.1.1".to_string(),
    };
    text.push_str(&format!("{own}\t{}\n", g.name));
    text.push_str("# every group and agent of the system (agent-supervisor)\n");
    for (ip, names) in g.names.iter() {
        text.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    text
}

/// The capabilities an agent keeps, from the group's security plan.
pub fn capabilities(s: &SecurityPlan) -> Result<Vec<String>, String> {
    crate::launch::sandbox::effective_caps(&s.cap_add, &s.cap_drop)
        .map_err(|e| format!("security: {e}"))
}

/// The shim's log files from the plan.
pub fn log_spec(l: &LogPlan) -> LogSpec {
    LogSpec {
        stdout: l.stdout.clone(),
        stderr: l.stderr.clone(),
        max_size: l.max_size,
        keep: l.keep,
        drops: None,
    }
}

#[allow(clippy::too_many_arguments)]
/// An agent's spec; `agents` is the pod's `agents/` directory, `capabilities` the
/// group's ([`capabilities`]).
pub fn agent_spec(
    a: &AgentPlan,
    init: InitRef,
    private_network: bool,
    security: &SecurityPlan,
    capabilities: Vec<String>,
    cgroup_procs: Vec<PathBuf>,
    agents: &Path,
    log: Option<LogSpec>,
) -> AgentSpec {
    AgentSpec {
        group: a.group.clone(),
        agent: a.name.clone(),
        init_pid: init.pid,
        init_start_time: init.start_time,
        private_network,
        cgroup_procs,
        argv: a.argv.clone(),
        env: a.full_env(),
        workdir: a.workdir.clone(),
        capabilities,
        seccomp: security.seccomp,
        rlimits: security
            .rlimits
            .iter()
            .map(|(name, v)| Rlimit {
                name: name.clone(),
                soft: *v,
                hard: *v,
            })
            .collect(),
        pid_file: Some(agents.join(format!("{}.pid", a.name))),
        exit_file: Some(agents.join(format!("{}.exit", a.name))),
        // What the shim could not write to the log files is counted beside the pid file, in
        // the run directory (never on the log disk).
        log: log.map(|l| LogSpec {
            drops: Some(crate::launch::logdrops::file(agents, &a.name)),
            ..l
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_plan::{BindPlan, HealthPlan, Probe, RootfsPlan};
    use std::time::Duration;

    fn group() -> GroupPlan {
        GroupPlan {
            name: "web".into(),
            limits: Default::default(),
            rootfs: RootfsPlan::Host { entries: vec![] },
            binds: vec![BindPlan {
                source: "/srv/code".into(),
                target: "/code".into(),
                readonly: true,
            }],
            security: SecurityPlan {
                cap_add: vec!["NET_ADMIN".into()],
                cap_drop: vec!["CHOWN".into()],
                seccomp: true,
                rlimits: vec![("nofile".into(), 4096)],
            },
            network: NetworkPlan::Host,
            names: vec![(
                "10.88.1.7".parse().unwrap(),
                vec!["api".into(), "api.api".into()],
            )]
            .into(),
            devices: agent_plan::DevicePlan {
                nodes: vec![agent_plan::DeviceNode {
                    path: "/dev/nvidia0".into(),
                    host_path: "/dev/nvidia0".into(),
                    kind: agent_devices::DeviceType::Char,
                    major: 195,
                    minor: 0,
                    file_mode: 0o666,
                    uid: None,
                    gid: None,
                    access: "rw".parse().unwrap(),
                }],
                mounts: vec![BindPlan {
                    source: "/usr/bin/nvidia-smi".into(),
                    target: "/usr/bin/nvidia-smi".into(),
                    readonly: true,
                }],
                masked: vec!["/proc/driver/nvidia/gpus/0000:02:00.0".into()],
                ..Default::default()
            },
            depends_on: vec![],
            agents: Default::default(),
        }
    }

    fn agent() -> AgentPlan {
        AgentPlan {
            name: "front".into(),
            group: "web".into(),
            argv: vec!["python3".into(), "a.py".into()],
            env: vec![("A".into(), "1".into())],
            workdir: "/code".into(),
            ports: vec![7001],
            system_names: std::sync::Arc::default(),
            restart: agent_config::defaults::EffectiveRestart {
                policy: agent_config::model::Policy::Always,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                max_retries: 3,
                reset_after: Duration::from_secs(60),
                on_unhealthy: true,
            },
            health: Some(HealthPlan {
                probe: Probe::Tcp {
                    addr: std::net::Ipv4Addr::LOCALHOST,
                    port: 7001,
                },
                timing: agent_config::defaults::HealthTiming {
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    retries: 1,
                    start_period: Duration::ZERO,
                },
            }),
            log: LogPlan {
                stdout: "/log/front.stdout.log".into(),
                stderr: "/log/front.stderr.log".into(),
                max_size: 10,
                keep: 2,
            },
            stop_signal: "SIGTERM".into(),
            stop_timeout: Duration::from_secs(1),
            depends_on: vec![],
        }
    }

    #[test]
    fn group_spec_binds_then_hosts_file_and_devices() {
        let g = group();
        let s = group_spec(
            &g,
            Path::new("/run/as/groups/web"),
            vec!["/sys/fs/cgroup/x/cgroup.procs".into()],
            RootfsSpec::Host(vec![]),
            "/run/as/groups/web/hosts".into(),
        );
        assert_eq!(s.hostname, "web");
        assert_eq!(s.root_dir, Path::new("/run/as/groups/web/root"));
        assert_eq!(s.binds.len(), 3);
        assert_eq!(s.binds[0].target, Path::new("/code"));
        assert_eq!(s.binds[1].target, Path::new("/etc/hosts"));
        assert!(s.binds[1].readonly);
        assert_eq!(s.binds[2].target, Path::new("/usr/bin/nvidia-smi"));
        assert!(s.binds[2].readonly);
        assert_eq!(s.devices.len(), 1);
        assert_eq!(
            (
                s.devices[0].path.as_path(),
                s.devices[0].major,
                s.devices[0].minor
            ),
            (Path::new("/dev/nvidia0"), 195, 0)
        );
        assert!(s
            .masked_paths
            .iter()
            .any(|p| p == Path::new("/proc/driver/nvidia/gpus/0000:02:00.0")));
        assert!(!s.private_network);
        assert!(s.masked_paths.iter().any(|p| p == Path::new("/proc/kcore")));
    }

    #[test]
    fn agent_spec_carries_the_plan() {
        let g = group();
        let caps = capabilities(&g.security).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        let s = agent_spec(
            &agent(),
            InitRef {
                pid: 42,
                start_time: 7,
            },
            false,
            &g.security,
            caps,
            vec![],
            Path::new("/run/as/groups/web/agents"),
            Some(log_spec(&agent().log)),
        );
        assert_eq!(s.agent, "front");
        assert_eq!((s.init_pid, s.init_start_time), (42, 7));
        assert_eq!(s.argv, ["python3", "a.py"]);
        assert_eq!(s.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(s.rlimits[0].name, "nofile");
        assert_eq!(
            s.pid_file.as_deref(),
            Some(Path::new("/run/as/groups/web/agents/front.pid"))
        );
        let log = s.log.unwrap();
        assert_eq!(log.keep, 2);
        assert_eq!(
            log.drops.as_deref(),
            Some(Path::new("/run/as/groups/web/agents/front.logdrops"))
        );
    }

    #[test]
    fn bad_capability_is_named() {
        let mut g = group();
        g.security.cap_add = vec!["CAP_NOPE".into()];
        assert!(capabilities(&g.security).unwrap_err().contains("NOPE"));
    }

    #[test]
    fn hosts_file_adds_the_group() {
        assert_eq!(
            hosts_file(Some("127.0.0.1 localhost".into()), &group()),
            "127.0.0.1 localhost\n127.0.1.1\tweb\n\
             # every group and agent of the system (agent-supervisor)\n\
             10.88.1.7\tapi api.api\n"
        );
    }
}
