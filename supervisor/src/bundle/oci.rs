//! `config.json` of a bundle, built with the `oci-spec` crate: the group's process, mounts,
//! namespaces, sandbox (capabilities, `noNewPrivileges`, seccomp, masked and read-only paths)
//! and resources, mirroring `crate::pod` and `crate::launch`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscallBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use super::{Bind, BundleError};
use crate::cgroup::Limits;
use crate::launch::mounts::{HOST_MASKED, MASKED_PATHS, READONLY_PATHS};

/// The runtime-spec version the bundle is written for (crun and runc accept 1.0.x).
pub const OCI_VERSION: &str = "1.0.2";

/// The CFS period of the CPU quota, in microseconds (as `crate::cgroup` writes it).
pub const CPU_PERIOD_US: u64 = 100_000;

/// `(name, number)` of each syscall, the name taken from the `libc::SYS_*` constant, so a
/// name that does not resolve does not compile.
macro_rules! syscalls {
    ($($sys:ident),* $(,)?) => {
        &[$((strip_sys(stringify!($sys)), libc::$sys)),*]
    };
}

const fn strip_sys(s: &'static str) -> &'static str {
    match s.as_bytes() {
        [b'S', b'Y', b'S', b'_', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(r) => r,
            Err(_) => s,
        },
        _ => s,
    }
}

/// Syscalls the default filter refuses with EPERM: the list of `docs/launcher.md` (what
/// Docker's default profile blocks without `CAP_SYS_ADMIN`), as
/// `crate::launch::sandbox::default_filters` installs it. A unit test runs that filter to
/// check both lists are the same.
pub const BLOCKED_SYSCALLS: &[(&str, i64)] = syscalls![
    SYS_acct,
    SYS_add_key,
    SYS_bpf,
    SYS_clock_adjtime,
    SYS_clock_settime,
    SYS_delete_module,
    SYS_finit_module,
    SYS_init_module,
    SYS_kcmp,
    SYS_kexec_file_load,
    SYS_kexec_load,
    SYS_keyctl,
    SYS_lookup_dcookie,
    SYS_mount,
    SYS_move_mount,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_open_tree,
    SYS_mount_setattr,
    SYS_name_to_handle_at,
    SYS_open_by_handle_at,
    SYS_perf_event_open,
    SYS_pivot_root,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_quotactl,
    SYS_reboot,
    SYS_request_key,
    SYS_setns,
    SYS_settimeofday,
    SYS_swapon,
    SYS_swapoff,
    SYS_umount2,
    SYS_unshare,
    SYS_userfaultfd,
];

/// Blocked syscalls that only x86_64 has.
#[cfg(target_arch = "x86_64")]
pub const BLOCKED_SYSCALLS_ARCH: &[(&str, i64)] = syscalls![
    SYS_ioperm,
    SYS_iopl,
    SYS_nfsservctl,
    SYS_sysfs,
    SYS__sysctl,
    SYS_uselib,
    SYS_ustat,
];
#[cfg(not(target_arch = "x86_64"))]
pub const BLOCKED_SYSCALLS_ARCH: &[(&str, i64)] = &[];

/// What goes into `config.json`.
pub(super) struct Inputs<'a> {
    pub group: &'a str,
    pub agent: &'a str,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub host_entries: &'a [agent_rootfs::HostEntry],
    pub binds: &'a [Bind],
    pub limits: Limits,
    /// Capabilities the agent keeps (the group's `security`, applied to the default set).
    pub caps: Vec<String>,
    /// Whether the default seccomp filter applies.
    pub seccomp: bool,
    /// The group's device nodes, device cgroup and GPU masks.
    pub devices: &'a agent_plan::DevicePlan,
}

/// The whole `config.json`.
pub(super) fn spec(i: &Inputs) -> Result<Spec, BundleError> {
    let err = |what: &'static str| {
        move |source| BundleError::Spec {
            group: i.group.to_string(),
            what,
            source,
        }
    };
    let caps = capabilities(i.group, &i.caps)?;
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(caps)
        .build()
        .map_err(err("process.capabilities"))?;
    // The builder starts from oci-spec's defaults; the launcher clears the ambient set.
    capabilities.set_ambient(None);
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(err("process.user"))?,
        )
        .args(i.argv.clone())
        .env(
            i.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(i.cwd.clone())
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()
        .map_err(err("process"))?;
    // No rlimits, as the launcher sets none (oci-spec's default has RLIMIT_NOFILE 1024).
    process.set_rlimits(None);
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()
    .map_err(err("linux.namespaces"))?;
    let masked: Vec<String> = MASKED_PATHS
        .iter()
        .chain(HOST_MASKED)
        .map(|s| s.to_string())
        .chain(i.devices.masked.iter().map(|p| p.display().to_string()))
        .collect();
    let devices = i
        .devices
        .nodes
        .iter()
        .map(|n| {
            let mut d = LinuxDeviceBuilder::default()
                .path(n.path.clone())
                .typ(device_type(n.kind))
                .major(i64::from(n.major))
                .minor(i64::from(n.minor))
                .file_mode(n.file_mode);
            if let Some(uid) = n.uid {
                d = d.uid(uid);
            }
            if let Some(gid) = n.gid {
                d = d.gid(gid);
            }
            d.build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err("linux.devices"))?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .devices(devices)
        .masked_paths(masked)
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .rootfs_propagation("rprivate")
        .resources(resources(i.group, &i.limits, &i.devices.rules)?)
        .build()
        .map_err(err("linux"))?;
    let mut linux = linux;
    if i.seccomp {
        linux.set_seccomp(Some(seccomp().map_err(err("linux.seccomp"))?));
    }
    let annotations = [
        ("io.agent-supervisor.group", i.group),
        ("io.agent-supervisor.agent", i.agent),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect::<std::collections::HashMap<_, _>>();
    SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(true)
                .build()
                .map_err(err("root"))?,
        )
        .hostname(i.group)
        .process(process)
        .mounts(mounts(i).map_err(err("mounts"))?)
        .annotations(annotations)
        .linux(linux)
        .build()
        .map_err(err("the spec"))
}

/// `config.json`'s text, the same for the same input: oci-spec keeps capabilities and
/// maps in hash sets, so they are sorted here.
pub(super) fn to_json(group: &str, spec: &Spec) -> Result<Vec<u8>, BundleError> {
    let json_err = |e: serde_json::Error| BundleError::Spec {
        group: group.to_string(),
        what: "the JSON text",
        source: e.into(),
    };
    let mut v = serde_json::to_value(spec).map_err(json_err)?;
    if let Some(caps) = v
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    for map in ["/annotations", "/linux/resources/unified"] {
        if let Some(m) = v.pointer_mut(map).and_then(|m| m.as_object_mut()) {
            let mut entries: Vec<(String, serde_json::Value)> =
                std::mem::take(m).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            m.extend(entries);
        }
    }
    let mut text = serde_json::to_vec_pretty(&v).map_err(json_err)?;
    text.push(b'\n');
    Ok(text)
}

/// Capability names as oci-spec capabilities.
fn capabilities(
    group: &str,
    names: &[String],
) -> Result<oci_spec::runtime::Capabilities, BundleError> {
    names
        .iter()
        .map(|name| {
            serde_json::from_value::<Capability>(serde_json::Value::String(name.to_string()))
                .map_err(|e| BundleError::Spec {
                    group: group.to_string(),
                    what: "process.capabilities",
                    source: e.into(),
                })
        })
        .collect()
}

fn mount(
    dest: &str,
    typ: &str,
    source: &Path,
    options: &[&str],
) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
}

/// The launcher's mounts in its order: `/proc`, `/dev` (+ `pts`, `shm`; the runtime adds
/// the default device nodes), `/sys` read-only, `/tmp`, `/run`, `/var/tmp`; then the host
/// directories read-only, then the binds (the system file's directory first).
fn mounts(i: &Inputs) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let mut m = vec![
        mount(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "nodev", "noexec"],
        )?,
        mount(
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "nodev", "noexec", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "nodev", "noexec", "ro"],
        )?,
        mount(
            "/tmp",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "nodev", "mode=1777"],
        )?,
        mount(
            "/run",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "nodev", "mode=755"],
        )?,
        mount(
            "/var/tmp",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "nodev", "mode=1777"],
        )?,
    ];
    for e in i.host_entries {
        if let agent_rootfs::HostEntry::Dir(d) = e {
            let dest = d.to_string_lossy();
            m.push(mount(
                &dest,
                "bind",
                d,
                &["rbind", "ro", "nosuid", "nodev"],
            )?);
        }
    }
    for b in i.binds {
        let opts: &[&str] = if b.readonly {
            &["rbind", "ro", "nosuid", "nodev"]
        } else {
            &["rbind", "rw"]
        };
        m.push(mount(&b.target.to_string_lossy(), "bind", &b.source, opts)?);
    }
    Ok(m)
}

fn device_type(t: agent_devices::DeviceType) -> LinuxDeviceType {
    match t {
        agent_devices::DeviceType::All => LinuxDeviceType::A,
        agent_devices::DeviceType::Char => LinuxDeviceType::C,
        agent_devices::DeviceType::Block => LinuxDeviceType::B,
    }
}

/// `linux.resources` from the group's limits, as `crate::cgroup` applies them: memory
/// limit, swap (OCI's `swap` is memory + swap), `memory_high` as cgroup v2 `memory.high`
/// (in `unified`; no OCI field has its meaning), CPU quota per 100 ms, CPU shares from the
/// weight (cgroup v1's formula; a runtime on cgroup v2 converts shares back to a weight with
/// its own formula), pids limit.
fn resources(
    group: &str,
    l: &Limits,
    rules: &[agent_devices::DeviceRule],
) -> Result<LinuxResources, BundleError> {
    let spec_err = |what: &'static str| {
        move |source| BundleError::Spec {
            group: group.to_string(),
            what,
            source,
        }
    };
    let int = |field: &'static str, v: u64| {
        i64::try_from(v).map_err(|_| BundleError::Value {
            group: group.to_string(),
            field,
            value: v.to_string(),
            why: "larger than 2^63 - 1",
        })
    };
    // The device cgroup, the same list the daemon sets (deny all, the defaults, the grants).
    let devices = rules
        .iter()
        .map(|d| {
            let mut c = LinuxDeviceCgroupBuilder::default()
                .allow(d.allow)
                .typ(device_type(d.kind))
                .access(d.access.to_string());
            if let Some(m) = d.major {
                c = c.major(i64::from(m));
            }
            if let Some(m) = d.minor {
                c = c.minor(i64::from(m));
            }
            c.build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(spec_err("linux.resources.devices"))?;
    let mut r = LinuxResourcesBuilder::default().devices(devices);
    if let Some(max) = l.memory_max {
        let mut mem = LinuxMemoryBuilder::default().limit(int("resources.memory", max)?);
        if let Some(swap) = l.memory_swap_max {
            let total = max.checked_add(swap).ok_or_else(|| BundleError::Value {
                group: group.to_string(),
                field: "resources.memory_swap",
                value: swap.to_string(),
                why: "memory + swap overflows",
            })?;
            mem = mem.swap(int("resources.memory_swap", total)?);
        }
        r = r.memory(mem.build().map_err(spec_err("linux.resources.memory"))?);
    }
    if let Some(high) = l.memory_high {
        let unified = [("memory.high".to_string(), high.to_string())]
            .into_iter()
            .collect();
        r = r.unified::<std::collections::HashMap<String, String>>(unified);
    }
    if l.cpu_max.is_some() || l.cpu_weight.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(cores) = l.cpu_max {
            if !cores.is_finite() || cores <= 0.0 {
                return Err(BundleError::Value {
                    group: group.to_string(),
                    field: "resources.cpus",
                    value: cores.to_string(),
                    why: "not a positive number of cores",
                });
            }
            let quota = ((cores * CPU_PERIOD_US as f64).round() as i64).max(1000);
            cpu = cpu.quota(quota).period(CPU_PERIOD_US);
        }
        if let Some(w) = l.cpu_weight {
            cpu = cpu.shares((u64::from(w) * 1024 / 100).clamp(2, 262_144));
        }
        r = r.cpu(cpu.build().map_err(spec_err("linux.resources.cpu"))?);
    }
    if let Some(p) = l.pids_max {
        let pids = LinuxPidsBuilder::default()
            .limit(int("resources.pids", p)?)
            .build()
            .map_err(spec_err("linux.resources.pids"))?;
        r = r.pids(pids);
    }
    r.build().map_err(spec_err("linux.resources"))
}

/// The default filter of `crate::launch::sandbox`: allow by default; EPERM for the blocked
/// syscalls and for `clone` with `CLONE_NEWUSER`; ENOSYS for `clone3`.
fn seccomp() -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let eperm = libc::EPERM as u32;
    let blocked = LinuxSyscallBuilder::default()
        .names(
            BLOCKED_SYSCALLS
                .iter()
                .chain(BLOCKED_SYSCALLS_ARCH)
                .map(|(n, _)| n.to_string())
                .collect::<Vec<_>>(),
        )
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(eperm)
        .build()?;
    let newuser = libc::CLONE_NEWUSER as u64;
    let clone_newuser = LinuxSyscallBuilder::default()
        .names(vec!["clone".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(eperm)
        .args(vec![LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(newuser)
            .value_two(newuser)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()?])
        .build()?;
    let clone3 = LinuxSyscallBuilder::default()
        .names(vec!["clone3".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(libc::ENOSYS as u32)
        .build()?;
    let mut b = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![blocked, clone_newuser, clone3]);
    if let Some(arch) = native_arch() {
        b = b.architectures(vec![arch]);
    }
    b.build()
}

/// The seccomp architecture of this build (the filter of `crate::launch` checks only it).
fn native_arch() -> Option<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(Arch::ScmpArchX86_64),
        "aarch64" => Some(Arch::ScmpArchAarch64),
        "riscv64" => Some(Arch::ScmpArchRiscv64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Runs a classic-BPF seccomp program (the instructions seccompiler emits) on
    /// `seccomp_data {nr, arch, ip = 0, args}`.
    fn run_bpf(prog: &[seccompiler::sock_filter], nr: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&(nr as u32).to_ne_bytes());
        data.extend_from_slice(
            &seccompiler::TargetArch::try_from(std::env::consts::ARCH)
                .map(audit_arch)
                .expect("a supported architecture")
                .to_ne_bytes(),
        );
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = &prog[pc];
            let k = ins.k;
            pc += 1;
            match ins.code {
                0x20 => {
                    // BPF_LD | BPF_W | BPF_ABS
                    let o = k as usize;
                    acc = u32::from_ne_bytes(data[o..o + 4].try_into().expect("4 bytes"));
                }
                0x54 => acc &= k,         // BPF_ALU | BPF_AND | BPF_K
                0x05 => pc += k as usize, // BPF_JMP | BPF_JA
                0x15 | 0x25 | 0x35 => {
                    let taken = match ins.code {
                        0x15 => acc == k,
                        0x25 => acc > k,
                        _ => acc >= k,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                0x06 => return k, // BPF_RET | BPF_K
                c => panic!("BPF instruction {c:#x} is not interpreted by this test"),
            }
        }
    }

    fn audit_arch(a: seccompiler::TargetArch) -> u32 {
        match a {
            seccompiler::TargetArch::x86_64 => 62 | 0x8000_0000 | 0x4000_0000,
            seccompiler::TargetArch::aarch64 => 183 | 0x8000_0000 | 0x4000_0000,
            seccompiler::TargetArch::riscv64 => 243 | 0x8000_0000 | 0x4000_0000,
        }
    }

    const RET_ERRNO: u32 = 0x0005_0000;

    /// Syscall numbers for which any of `filters` returns ERRNO(`errno`).
    fn refused(filters: &[seccompiler::BpfProgram], errno: i32, args: [u64; 6]) -> BTreeSet<i64> {
        (0..1024)
            .filter(|&nr| {
                filters
                    .iter()
                    .any(|f| run_bpf(f, nr, args) == RET_ERRNO | errno as u32)
            })
            .collect()
    }

    #[test]
    fn blocked_names_match_the_launchers_filter() {
        let filters = crate::launch::sandbox::default_filters().expect("the default filter builds");
        let ours: BTreeSet<i64> = BLOCKED_SYSCALLS
            .iter()
            .chain(BLOCKED_SYSCALLS_ARCH)
            .map(|(_, nr)| *nr)
            .collect();
        assert_eq!(
            ours.len(),
            BLOCKED_SYSCALLS.len() + BLOCKED_SYSCALLS_ARCH.len(),
            "a syscall is listed twice"
        );
        let launcher = refused(&filters, libc::EPERM, [0; 6]);
        let name = |nr: &i64| {
            BLOCKED_SYSCALLS
                .iter()
                .chain(BLOCKED_SYSCALLS_ARCH)
                .find(|(_, n)| n == nr)
                .map_or_else(|| format!("syscall {nr}"), |(n, _)| n.to_string())
        };
        let missing: Vec<String> = launcher.difference(&ours).map(name).collect();
        let extra: Vec<String> = ours.difference(&launcher).map(name).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "bundle seccomp list drifted from launch::sandbox: the launcher blocks {missing:?} \
             that the bundle does not; the bundle blocks {extra:?} that the launcher does not"
        );
        // clone with CLONE_NEWUSER: EPERM; clone3: ENOSYS.
        let newuser = refused(
            &filters,
            libc::EPERM,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        );
        assert_eq!(
            newuser.difference(&ours).copied().collect::<Vec<_>>(),
            vec![libc::SYS_clone]
        );
        assert_eq!(
            refused(&filters, libc::ENOSYS, [0; 6])
                .into_iter()
                .collect::<Vec<_>>(),
            vec![libc::SYS_clone3]
        );
    }

    #[test]
    fn syscall_names_are_the_libc_names() {
        let names: Vec<&str> = BLOCKED_SYSCALLS.iter().map(|(n, _)| *n).collect();
        for n in [
            "mount",
            "umount2",
            "pivot_root",
            "setns",
            "unshare",
            "bpf",
            "keyctl",
        ] {
            assert!(names.contains(&n), "{n} is not blocked: {names:?}");
        }
        assert!(names
            .iter()
            .all(|n| !n.starts_with("SYS_") && !n.is_empty()));
        let spec = serde_json::to_value(seccomp().expect("seccomp builds")).expect("JSON");
        assert_eq!(spec["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(spec["syscalls"][0]["errnoRet"], libc::EPERM);
        assert_eq!(spec["syscalls"][2]["names"][0], "clone3");
        assert_eq!(spec["syscalls"][2]["errnoRet"], libc::ENOSYS);
    }

    #[test]
    fn resources_follow_the_cgroup_limits() {
        let l = Limits {
            memory_max: Some(256 << 20),
            memory_high: Some(200 << 20),
            memory_swap_max: Some(0),
            cpu_max: Some(1.5),
            cpu_weight: Some(100),
            pids_max: Some(64),
        };
        let r = serde_json::to_value(
            resources("g", &l, &agent_devices::group_rules(&[])).expect("resources build"),
        )
        .expect("JSON");
        assert_eq!(r["memory"]["limit"], 256 << 20);
        assert_eq!(r["memory"]["swap"], 256 << 20);
        assert_eq!(r["unified"]["memory.high"], (200 << 20).to_string());
        assert_eq!(r["cpu"]["quota"], 150_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 1024);
        assert_eq!(r["pids"]["limit"], 64);
        let empty = serde_json::to_value(resources("g", &Limits::default(), &[]).expect("builds"))
            .expect("JSON");
        assert_eq!(empty, serde_json::json!({"devices": []}));
        let huge = Limits {
            pids_max: Some(u64::MAX),
            ..Limits::default()
        };
        let e = resources("big", &huge, &[])
            .expect_err("u64::MAX pids do not fit")
            .to_string();
        assert!(
            e.contains("group big") && e.contains("resources.pids"),
            "{e}"
        );
    }
}
