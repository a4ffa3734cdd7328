//! The agent sandbox: capabilities, `no_new_privs`, the default seccomp filter and rlimits.
//!
//! Runs in the launcher's forked child, a single-threaded process, right before `execve`.

use caps::{CapSet, Capability, CapsHashSet};
use seccompiler::BpfProgram;

use super::bpf::Verdict;

use super::spec::Rlimit;

/// Capabilities an agent keeps by default: Docker's default set without `CAP_MKNOD` and
/// `CAP_NET_RAW`.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Errors of the sandbox steps; each names the step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("unknown capability {0:?}")]
    UnknownCap(String),
    #[error("cannot set capabilities ({step}): {source}")]
    Caps {
        step: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("cannot build the seccomp filter: {0}")]
    SeccompBuild(super::bpf::BpfError),
    #[error("cannot install the seccomp filter: {0}")]
    SeccompApply(seccompiler::Error),
    #[error("unknown rlimit {0:?} (use nofile, nproc, core, memlock, stack, as, fsize, cpu)")]
    UnknownRlimit(String),
    #[error("cannot set rlimit {name}: {source}")]
    Rlimit {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Parses capability names (`CAP_CHOWN` or `chown`).
pub fn parse_caps(names: &[String]) -> Result<CapsHashSet, SandboxError> {
    let mut set = CapsHashSet::new();
    for n in names {
        let canon = caps::to_canonical(n);
        let cap: Capability = canon
            .parse()
            .map_err(|_| SandboxError::UnknownCap(n.clone()))?;
        set.insert(cap);
    }
    Ok(set)
}

/// The default set with `add` added and `drop` removed (`ALL` allowed in both).
pub fn effective_caps(add: &[String], drop: &[String]) -> Result<Vec<String>, SandboxError> {
    let mut set: std::collections::BTreeSet<String> =
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    for a in add {
        if a.eq_ignore_ascii_case("all") {
            set.extend(caps::all().iter().map(|c| c.to_string()));
        } else {
            parse_caps(std::slice::from_ref(a))?;
            set.insert(caps::to_canonical(a));
        }
    }
    for d in drop {
        if d.eq_ignore_ascii_case("all") {
            set.clear();
        } else {
            parse_caps(std::slice::from_ref(d))?;
            set.remove(&caps::to_canonical(d));
        }
    }
    Ok(set.into_iter().collect())
}

/// Drops every capability not in `keep` from the bounding, inheritable, permitted and
/// effective sets, and clears the ambient set.
pub fn apply_caps(keep: &CapsHashSet) -> Result<(), SandboxError> {
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // Ignore caps the running kernel does not know.
            if let Err(e) = caps::drop(None, CapSet::Bounding, cap) {
                if caps::runtime::thread_all_supported().contains(&cap) {
                    return Err(SandboxError::Caps {
                        step: "bounding",
                        source: e,
                    });
                }
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|source| SandboxError::Caps {
        step: "ambient",
        source,
    })?;
    caps::set(None, CapSet::Inheritable, keep).map_err(|source| SandboxError::Caps {
        step: "inheritable",
        source,
    })?;
    caps::set(None, CapSet::Effective, keep).map_err(|source| SandboxError::Caps {
        step: "effective",
        source,
    })?;
    caps::set(None, CapSet::Permitted, keep).map_err(|source| SandboxError::Caps {
        step: "permitted",
        source,
    })?;
    Ok(())
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
pub fn no_new_privs() -> Result<(), SandboxError> {
    nix::sys::prctl::set_no_new_privs().map_err(SandboxError::NoNewPrivs)
}

/// Syscalls the default filter refuses with EPERM, as Docker's default profile does for a
/// container without `CAP_SYS_ADMIN`: mounts, kernel modules, kexec, bpf, keyrings, reboot,
/// swap, clock setting, namespace changes, process_vm_*, perf, handles.
fn blocked_syscalls() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_acct,
        libc::SYS_add_key,
        libc::SYS_bpf,
        libc::SYS_clock_adjtime,
        libc::SYS_clock_settime,
        libc::SYS_delete_module,
        libc::SYS_finit_module,
        libc::SYS_init_module,
        libc::SYS_kcmp,
        libc::SYS_kexec_file_load,
        libc::SYS_kexec_load,
        libc::SYS_keyctl,
        libc::SYS_lookup_dcookie,
        libc::SYS_mount,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_name_to_handle_at,
        libc::SYS_open_by_handle_at,
        libc::SYS_perf_event_open,
        libc::SYS_pivot_root,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_quotactl,
        libc::SYS_reboot,
        libc::SYS_request_key,
        libc::SYS_setns,
        libc::SYS_settimeofday,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_umount2,
        libc::SYS_unshare,
        libc::SYS_userfaultfd,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_ioperm,
        libc::SYS_iopl,
        libc::SYS_nfsservctl,
        libc::SYS_sysfs,
        libc::SYS__sysctl,
        libc::SYS_uselib,
        libc::SYS_ustat,
    ]);
    v
}

/// The default filters: EPERM for the blocked syscalls and for `clone` with
/// `CLONE_NEWUSER`; ENOSYS for `clone3` (its flags live in memory a filter cannot read, so
/// libc falls back to `clone`). One program ([`super::bpf`]).
pub fn default_filters() -> Result<Vec<BpfProgram>, SandboxError> {
    let eperm = libc::EPERM as u32;
    let mut rules: Vec<(i64, Verdict)> = blocked_syscalls()
        .into_iter()
        .map(|nr| (nr, Verdict::Errno(eperm)))
        .collect();
    rules.push((
        libc::SYS_clone,
        Verdict::ErrnoIfArg0Has {
            mask: libc::CLONE_NEWUSER as u32,
            errno: eperm,
        },
    ));
    rules.push((libc::SYS_clone3, Verdict::Errno(libc::ENOSYS as u32)));
    Ok(vec![
        super::bpf::program(&rules).map_err(SandboxError::SeccompBuild)?
    ])
}

/// Installs filters built by [`default_filters`]; needs `no_new_privs` or `CAP_SYS_ADMIN`.
pub fn apply_filters(filters: &[BpfProgram]) -> Result<(), SandboxError> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(SandboxError::SeccompApply)?;
    }
    Ok(())
}

/// Sets every rlimit.
pub fn apply_rlimits(limits: &[Rlimit]) -> Result<(), SandboxError> {
    use nix::sys::resource::{setrlimit, Resource};
    for l in limits {
        let r = match l.name.as_str() {
            "nofile" => Resource::RLIMIT_NOFILE,
            "nproc" => Resource::RLIMIT_NPROC,
            "core" => Resource::RLIMIT_CORE,
            "memlock" => Resource::RLIMIT_MEMLOCK,
            "stack" => Resource::RLIMIT_STACK,
            "as" => Resource::RLIMIT_AS,
            "fsize" => Resource::RLIMIT_FSIZE,
            "cpu" => Resource::RLIMIT_CPU,
            other => return Err(SandboxError::UnknownRlimit(other.to_string())),
        };
        setrlimit(r, l.soft, l.hard).map_err(|source| SandboxError::Rlimit {
            name: l.name.clone(),
            source,
        })?;
    }
    Ok(())
}
