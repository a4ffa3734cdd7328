//! The OCI peers of `bench launch`: `crun run` and `runc run` of a bundle equivalent to a
//! `host`-image group (same namespaces but net, the host's system directories bound
//! read-only, the same `/dev`, `/proc`, `/sys`, tmpfs mounts, masked and read-only paths,
//! capabilities, `no_new_privs` and seccomp denials), in a cgroup of their own.
//!
//! crun refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported"), so on a hybrid
//! host this process first enters a private mount namespace where the cgroup2 mount is
//! detached: the runtimes see a cgroup v1-only host. That is done once, before the runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde_json::{json, Value};

use agent_launch::mounts::{HOST_MASKED, MASKED_PATHS, READONLY_PATHS};
use agent_launch::sandbox::DEFAULT_CAPS;
use agent_supervisor::cgroup::Layout;

/// Syscalls denied with EPERM, the same list as the agent sandbox's default filter.
const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "init_module",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "mount_setattr",
    "name_to_handle_at",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapon",
    "swapoff",
    "umount2",
    "unshare",
    "userfaultfd",
    "ioperm",
    "iopl",
    "nfsservctl",
    "sysfs",
    "_sysctl",
    "uselib",
    "ustat",
];

/// What the cgroup view of this process is, for the row labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupView {
    /// The host had cgroup2 next to v1 controllers; it is detached in our mount namespace.
    V1Only,
    /// The host's own layout (unified, or v1 only) is used as it is.
    Host,
}

/// On a hybrid host, enters a private mount namespace (`/` recursively private, so nothing
/// propagates back) and detaches the cgroup2 mount there. Every later mount, and every
/// process spawned after, sees only the v1 hierarchies. Call it once, single-threaded.
pub fn enter_v1_only_view() -> Result<CgroupView, String> {
    let layout = Layout::detect().map_err(|e| e.to_string())?;
    let Layout::Hybrid {
        unified: Some(unified),
        ..
    } = layout
    else {
        return Ok(CgroupView::Host);
    };
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare a private mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private in the bench mount namespace: {e}"))?;
    umount2(&unified, MntFlags::MNT_DETACH)
        .map_err(|e| format!("detach the cgroup2 mount {}: {e}", unified.display()))?;
    Ok(CgroupView::V1Only)
}

/// An OCI bundle in `dir` (`config.json` and `rootfs/`), its state root and cgroup parent.
pub struct Bundle {
    pub dir: PathBuf,
    /// `--root` for the runtime's state, private to the benchmark.
    pub state: PathBuf,
    /// The cgroup parent of the containers (relative to each hierarchy's mount point).
    pub cgroup_parent: String,
}

impl Bundle {
    /// Writes the bundle: an empty rootfs skeleton (mount points, usrmerge symlinks) and a
    /// config that binds the host's system directories into it, like the `host` image.
    pub fn write(dir: &Path, name: &str) -> Result<Bundle, String> {
        let rootfs = dir.join("rootfs");
        // The runtime's state on tmpfs, as its default `/run/<runtime>` and our `run_dir`.
        let state = super::ours::state_dir(&format!("{name}-oci-state"));
        for d in [&rootfs, &state] {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let entries = agent_rootfs::host_rootfs(Path::new("/")).map_err(|e| e.to_string())?;
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc",
                   "options": ["nosuid", "nodev", "noexec"]}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "strictatime", "mode=755", "size=64k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                   "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=64m"]}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                   "options": ["nosuid", "noexec", "nodev", "ro"]}),
            json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=1777"]}),
            json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=755"]}),
            json!({"destination": "/var/tmp", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=1777"]}),
        ];
        for e in entries {
            match e {
                agent_rootfs::HostEntry::Dir(d) => {
                    let inside = rootfs.join(d.strip_prefix("/").unwrap_or(&d));
                    std::fs::create_dir_all(&inside)
                        .map_err(|e| format!("create {}: {e}", inside.display()))?;
                    mounts.push(json!({"destination": d, "type": "bind", "source": d,
                                       "options": ["rbind", "ro", "nosuid", "nodev"]}));
                }
                agent_rootfs::HostEntry::Symlink { path, target } => {
                    let link = rootfs.join(path.strip_prefix("/").unwrap_or(&path));
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(&target, &link)
                        .map_err(|e| format!("symlink {}: {e}", link.display()))?;
                }
            }
        }
        for d in ["proc", "dev", "sys", "tmp", "run", "var/tmp", "root"] {
            let p = rootfs.join(d);
            std::fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
        }
        let cgroup_parent = format!("{name}.oci");
        let config = config(mounts, &cgroup_parent);
        let path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| format!("encode {}: {e}", path.display()))?;
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            state,
            cgroup_parent,
        })
    }

    /// `RUNTIME [global...] --root STATE run --bundle DIR ID`, waited for; on failure the
    /// container is force-deleted and the runtime's message returned.
    pub fn run(&self, runtime: &Path, global: &[&str], id: &str) -> Result<(), String> {
        let out = Command::new(runtime)
            .args(global)
            .arg("--root")
            .arg(&self.state)
            .arg("run")
            .arg("--bundle")
            .arg(&self.dir)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("run {}: {e}", runtime.display()))?;
        if out.status.success() {
            return Ok(());
        }
        self.delete(runtime, global, id);
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(format!(
            "{} run failed ({}): {}",
            name_of(runtime),
            out.status,
            if msg.is_empty() { "no message" } else { &msg }
        ))
    }

    /// `RUNTIME --root STATE delete -f ID`, best effort.
    pub fn delete(&self, runtime: &Path, global: &[&str], id: &str) {
        let _ = Command::new(runtime)
            .args(global)
            .arg("--root")
            .arg(&self.state)
            .args(["delete", "-f", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Deletes every container the state root still knows, then the containers' cgroup
    /// parent in every mounted hierarchy. Returns what is left over, if anything.
    pub fn clean(&self, runtime: &Path, global: &[&str]) -> Option<String> {
        let ids: Vec<String> = std::fs::read_dir(&self.state)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for id in &ids {
            self.delete(runtime, global, id);
        }
        let mut left = Vec::new();
        // A unified host has the parent at the top; a v1 or hybrid one in each hierarchy.
        let top = Path::new("/sys/fs/cgroup");
        let mut dirs = vec![top.join(&self.cgroup_parent)];
        if let Ok(rd) = std::fs::read_dir(top) {
            dirs.extend(rd.flatten().map(|h| h.path().join(&self.cgroup_parent)));
        }
        for p in dirs {
            if p.is_dir() && remove_cgroup_tree(&p).is_err() {
                left.push(p.display().to_string());
            }
        }
        (!left.is_empty()).then(|| format!("cgroups left: {}", left.join(", ")))
    }
}

/// Removes a cgroup directory and its children, deepest first. In the v1-only view crun
/// also "creates cgroups" under the detached cgroup2 mount point, which is then a plain
/// directory of the `/sys/fs/cgroup` tmpfs: such a tree is removed as ordinary files.
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    let on_tmpfs = nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if on_tmpfs {
        return std::fs::remove_dir_all(dir);
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// The bundle's `config.json`.
fn config(mounts: Vec<Value>, cgroup_parent: &str) -> Value {
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let mut masked: Vec<&str> = MASKED_PATHS.to_vec();
    masked.extend_from_slice(HOST_MASKED);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "env": [
                format!("PATH={}", agent_launch::DEFAULT_PATH),
                "HOME=/root"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": caps, "ambient": []
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "bench",
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "cgroup"}
            ],
            "cgroupsPath": format!("/{cgroup_parent}/c"),
            "maskedPaths": masked,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": native_arch(),
                "syscalls": [
                    {"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM},
                    {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM,
                     "args": [{"index": 0, "value": libc::CLONE_NEWUSER,
                               "valueTwo": libc::CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]},
                    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}
                ]
            }
        }
    })
}

/// The seccomp architecture of this build only, like our own filter (fewer arches, a
/// smaller filter for the runtimes too).
fn native_arch() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64"],
        _ => Vec::new(),
    }
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
