//! The cgroup2 mount's `favordynmods` option: cgroup moves without an RCU grace period.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing. That per-CPU semaphore makes its writer wait for an
//! RCU grace period unless another writer held it a moment ago: on this project's 2-CPU VM
//! about 14 ms, which was most of an agent's restart (`agent-bench supervise`). With the
//! cgroup2 mount option `favordynmods` (Linux 6.0 and later) the semaphore stays in its slow
//! reader mode and a move takes microseconds; the kernel's documentation names the price:
//! forks and exits get a little dearer (`agent-bench launch` measures it). The semaphore is
//! global, so the option on any cgroup2 mount (the unified one of a hybrid host too) serves
//! every hierarchy.
//!
//! A remount reconfigures the whole superblock: the kernel resets every cgroup2 option that it
//! is not given (`nsdelegate`, `memory_recursiveprot`, ...) and the mount's flags (`nosuid`,
//! `nodev`, `noexec`, atime) to what `mount(2)` gets. [`set_favordynmods`] therefore passes
//! back every option the mount has, from `/proc/self/mountinfo`, and only adds or drops
//! `favordynmods`; it then reads the options again to say what the kernel did.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::layout::unescape_mountinfo;
use super::CgroupError;

/// The cgroup2 option this module sets.
pub const OPTION: &str = "favordynmods";

/// What [`set_favordynmods`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynMods {
    /// The mount had the wanted setting already: nothing was remounted.
    Already { mount: PathBuf, on: bool },
    /// The mount was remounted with the option added (`on`) or dropped.
    Changed { mount: PathBuf, on: bool },
    /// The kernel refused the option (before Linux 6.0) or ignored it (a daemon in a cgroup
    /// namespace of its own): moves keep waiting for a grace period.
    Unsupported { mount: PathBuf, reason: String },
    /// No cgroup2 file system is mounted (a cgroup v1-only host).
    NoCgroup2,
}

impl DynMods {
    /// One line for the daemon's log.
    pub fn describe(&self) -> String {
        match self {
            DynMods::Already { mount, on: true } => format!(
                "cgroup2 at {} has {OPTION}: moves into agent cgroups do not wait for an RCU \
                 grace period",
                mount.display()
            ),
            DynMods::Already { mount, on: false } => format!(
                "cgroup2 at {} is without {OPTION}: a restart waits for an RCU grace period \
                 (several ms) when it moves the agent into its cgroup",
                mount.display()
            ),
            DynMods::Changed { mount, on: true } => format!(
                "cgroup2 at {} remounted with {OPTION} (its other options kept): moves into \
                 agent cgroups no longer wait for an RCU grace period; \
                 daemon.cgroup_favordynmods: false leaves the mount as it is",
                mount.display()
            ),
            DynMods::Changed { mount, on: false } => format!(
                "cgroup2 at {} remounted without {OPTION} (its other options kept)",
                mount.display()
            ),
            DynMods::Unsupported { mount, reason } => format!(
                "cgroup2 at {}: cannot turn on {OPTION} ({reason}): a restart waits for an \
                 RCU grace period (several ms) when it moves the agent into its cgroup",
                mount.display()
            ),
            DynMods::NoCgroup2 => format!(
                "no cgroup2 mount: {OPTION} not set, a restart waits for an RCU grace period \
                 (several ms) when it moves the agent into its cgroup"
            ),
        }
    }
}

/// A cgroup2 mount as `/proc/self/mountinfo` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount: PathBuf,
    /// The mount's own options (`rw,nosuid,nodev,noexec,relatime`).
    pub mount_options: Vec<String>,
    /// The file system's options (`rw,nsdelegate,memory_recursiveprot`).
    pub super_options: Vec<String>,
}

impl Cgroup2Mount {
    /// The cgroup2 mount at `mount` in the text of a mountinfo file (the last one there,
    /// which is the one a path lookup sees).
    pub fn from_mountinfo(text: &str, mount: &Path) -> Option<Cgroup2Mount> {
        let mut found = None;
        for line in text.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            if rfields.first() != Some(&"cgroup2") {
                continue;
            }
            let Some(point) = fields.get(4) else { continue };
            if Path::new(&unescape_mountinfo(point)) != mount {
                continue;
            }
            let split = |s: Option<&&str>| -> Vec<String> {
                s.map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default()
            };
            found = Some(Cgroup2Mount {
                mount: mount.to_path_buf(),
                mount_options: split(fields.get(5)),
                super_options: split(rfields.get(2)),
            });
        }
        found
    }

    /// Whether the file system has `favordynmods`.
    pub fn favors_dynmods(&self) -> bool {
        self.super_options.iter().any(|o| o == OPTION)
    }

    /// The `mount(2)` flags and data of a remount that keeps everything but sets
    /// `favordynmods` to `on`. `rw`/`ro` and the mount's flags become flags; `seclabel` is
    /// shown by SELinux, not an option one passes.
    pub fn remount_args(&self, on: bool) -> (MsFlags, String) {
        let mut flags = MsFlags::MS_REMOUNT;
        for o in &self.mount_options {
            flags |= match o.as_str() {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                "strictatime" => MsFlags::MS_STRICTATIME,
                _ => MsFlags::empty(),
            };
        }
        let mut data: Vec<&str> = self
            .super_options
            .iter()
            .map(String::as_str)
            .filter(|o| !matches!(*o, "rw" | "ro" | "seclabel" | OPTION))
            .collect();
        if on {
            data.push(OPTION);
        }
        (flags, data.join(","))
    }
}

/// The cgroup2 mount point of the running system, if any.
fn cgroup2_mount(text: &str) -> Option<PathBuf> {
    match super::Layout::from_mountinfo(text)? {
        super::Layout::Unified { mount } => Some(mount),
        super::Layout::Hybrid { unified, .. } => unified,
    }
}

fn mountinfo() -> Result<String, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    std::fs::read_to_string(path).map_err(|e| CgroupError::Detect {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// Turns `favordynmods` on (or off) on this system's cgroup2 mount, keeping every other
/// option; a mount that has the wanted setting is left alone.
pub fn set_favordynmods(on: bool) -> Result<DynMods, CgroupError> {
    let text = mountinfo()?;
    let Some(point) = cgroup2_mount(&text) else {
        return Ok(DynMods::NoCgroup2);
    };
    let Some(before) = Cgroup2Mount::from_mountinfo(&text, &point) else {
        return Ok(DynMods::NoCgroup2);
    };
    if before.favors_dynmods() == on {
        return Ok(DynMods::Already { mount: point, on });
    }
    let (flags, data) = before.remount_args(on);
    let done = nix::mount::mount(
        None::<&str>,
        &point,
        None::<&str>,
        flags,
        Some(data.as_str()),
    );
    match done {
        Ok(()) => {}
        Err(nix::errno::Errno::EINVAL) if on => {
            return Ok(DynMods::Unsupported {
                mount: point,
                reason: format!("the kernel refused `{OPTION}`: Linux 6.0 or later has it"),
            })
        }
        Err(e) => {
            return Err(CgroupError::Io {
                op: format!("remount (options {data:?})"),
                path: point,
                source: e.into(),
            })
        }
    }
    let after = Cgroup2Mount::from_mountinfo(&mountinfo()?, &point);
    match after {
        Some(m) if m.favors_dynmods() == on => Ok(DynMods::Changed { mount: point, on }),
        _ => Ok(DynMods::Unsupported {
            mount: point,
            reason: "the kernel took the remount but the option did not change (a cgroup \
                     namespace of its own?)"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEMD: &str = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 \
         - cgroup2 cgroup2 rw,seclabel,nsdelegate,memory_recursiveprot\n";
    const HYBRID: &str = "30 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 \
         rw,favordynmods\n31 25 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup \
         rw,memory\n";

    #[test]
    fn a_remount_keeps_every_option_and_only_adds_favordynmods() {
        let m = Cgroup2Mount::from_mountinfo(SYSTEMD, Path::new("/sys/fs/cgroup"))
            .expect("the mount is found");
        assert!(!m.favors_dynmods());
        let (flags, data) = m.remount_args(true);
        assert_eq!(data, "nsdelegate,memory_recursiveprot,favordynmods");
        assert_eq!(
            flags,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_RELATIME
        );
        let (_, off) = m.remount_args(false);
        assert_eq!(off, "nsdelegate,memory_recursiveprot");
    }

    #[test]
    fn the_hybrid_hosts_unified_mount_is_the_one_changed() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let m = Cgroup2Mount::from_mountinfo(HYBRID, Path::new("/sys/fs/cgroup/unified"))
            .expect("the mount is found");
        assert!(m.favors_dynmods());
        let (_, off) = m.remount_args(false);
        assert_eq!(off, "");
        assert_eq!(
            Cgroup2Mount::from_mountinfo(HYBRID, Path::new("/sys/fs/cgroup/memory")),
            None
        );
    }
}
