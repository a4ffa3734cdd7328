//! The group's file system, built by the group init inside its new mount namespace:
//! rootfs, `/proc`, a minimal `/dev`, read-only `/sys`, `/tmp`, binds, `pivot_root`, masked
//! and read-only paths. The steps run in the order of `docs/launcher.md`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use super::spec::{BindSpec, DeviceSpec, GroupSpec, RootEntry, RootfsSpec};

/// Device nodes of the minimal `/dev`, bound from the host.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Paths masked by default, as runc and crun do.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths read-only by default, as runc and crun do.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host files hidden from groups on the `host` rootfs (its `/etc` is the host's).
pub const HOST_MASKED: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
];

/// A failed mount step, naming it and the path.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}: {source}")]
pub struct MountError {
    pub step: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: nix::Error,
}

fn err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> MountError + 'a {
    move |source| MountError {
        step,
        path: path.to_path_buf(),
        source,
    }
}

fn mnt(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    step: &'static str,
) -> Result<(), MountError> {
    mount(src, target, fstype, flags, data).map_err(err(step, target))
}

/// Opens `path` inside `root` without ever leaving it (`RESOLVE_IN_ROOT`: `..` and symlinks,
/// absolute ones included, resolve as if `root` were `/`), creating missing directories, and
/// the last component as a directory or an empty file.
pub fn open_in_root(root: &OwnedFd, path: &Path, dir: bool) -> Result<OwnedFd, MountError> {
    let how = |flags: OFlag| {
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    // Usually the path exists (mount points of the skeleton or image): one lookup.
    match openat2(root, path, how(OFlag::O_PATH)) {
        Ok(fd) => return Ok(fd),
        Err(nix::Error::ENOENT) => {}
        Err(e) => {
            return Err(MountError {
                step: "open",
                path: path.to_path_buf(),
                source: e,
            })
        }
    }
    let mut so_far = PathBuf::from("/");
    let comps: Vec<Component> = path.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(name) = c else { continue };
        let parent = openat2(root, &so_far, how(OFlag::O_PATH | OFlag::O_DIRECTORY))
            .map_err(err("open", &so_far))?;
        so_far.push(name);
        let last = i + 1 == comps.len();
        match openat2(root, &so_far, how(OFlag::O_PATH)) {
            Ok(fd) if last => return Ok(fd),
            Ok(_) => continue,
            Err(nix::Error::ENOENT) => {
                if !last || dir {
                    nix::sys::stat::mkdirat(&parent, *name, Mode::from_bits_truncate(0o755))
                        .map_err(err("mkdir", &so_far))?;
                } else {
                    // Create an empty file to bind a file onto.
                    let dirfd = openat2(
                        root,
                        so_far.parent().unwrap_or(Path::new("/")),
                        how(OFlag::O_DIRECTORY | OFlag::O_RDONLY),
                    )
                    .map_err(err("open", &so_far))?;
                    let f = nix::fcntl::openat(
                        &dirfd,
                        *name,
                        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map_err(err("create", &so_far))?;
                    drop(f);
                }
                if last {
                    return openat2(root, &so_far, how(OFlag::O_PATH))
                        .map_err(err("open", &so_far));
                }
            }
            Err(e) => {
                return Err(MountError {
                    step: "open",
                    path: so_far,
                    source: e,
                })
            }
        }
    }
    openat2(root, &so_far, how(OFlag::O_PATH)).map_err(err("open", &so_far))
}

/// The `/proc/self/fd/N` path naming an open fd, for mount targets.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Binds `source` (a host path) onto `target` inside `root`, read-only (`ro, nosuid, nodev`,
/// submounts included) if asked; see [`clone_onto`].
pub fn bind_into(
    root: &OwnedFd,
    source: &Path,
    target: &Path,
    readonly: bool,
    step: &'static str,
) -> Result<(), MountError> {
    let is_dir = source
        .metadata()
        .map(|m| m.is_dir())
        .map_err(|e| MountError {
            step,
            path: source.to_path_buf(),
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::ENOENT)),
        })?;
    let fd = open_in_root(root, target, is_dir)?;
    let flags = if readonly {
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
    } else {
        0
    };
    match clone_onto(source, &fd, flags) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e) => {
            return Err(MountError {
                step,
                path: target.to_path_buf(),
                source: e,
            })
        }
    }
    let t = fd_path(&fd);
    mnt(
        Some(source),
        &t,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        step,
    )
    .map_err(|e| MountError {
        path: target.to_path_buf(),
        ..e
    })?;
    if readonly {
        // Re-open: the old fd names the directory under the new mount.
        let fd = open_in_root(root, target, is_dir)?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV;
        mnt(None, &fd_path(&fd), None, flags, None, "remount read-only").map_err(|e| {
            MountError {
                path: target.to_path_buf(),
                ..e
            }
        })?;
    }
    Ok(())
}

/// Assembles the group's root under `spec.root_dir` and switches to it with `pivot_root`.
/// Runs as PID 1 of the new pid namespace, inside the new mount namespace.
pub fn build_root(spec: &GroupSpec) -> Result<(), MountError> {
    let root = spec.root_dir.as_path();
    // 1. Nothing we mount propagates back to the host.
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
        "make / private",
    )?;
    // 2. The root file system.
    let host_rootfs = matches!(spec.rootfs, RootfsSpec::Host(_));
    match &spec.rootfs {
        RootfsSpec::Host(entries) => {
            mnt(
                Some(Path::new("tmpfs")),
                root,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=755,size=4m"),
                "mount root tmpfs",
            )?;
            let root_fd = open_dir(root)?;
            for e in entries {
                match e {
                    RootEntry::Dir(d) => bind_host_dir(&root_fd, d)?,
                    RootEntry::Symlink { path, target } => {
                        let name = path.strip_prefix("/").unwrap_or(path);
                        nix::unistd::symlinkat(target, &root_fd, name)
                            .map_err(err("symlink", path))?;
                    }
                }
            }
            for d in [
                "proc", "dev", "sys", "tmp", "run", "var", "var/tmp", "root", "home",
            ] {
                match nix::sys::stat::mkdirat(&root_fd, d, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::Error::EEXIST) => {}
                    Err(e) => return Err(err("mkdir", &root.join(d))(e)),
                }
            }
        }
        RootfsSpec::Dir { path, .. } => {
            mnt(
                Some(path),
                root,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                "bind rootfs directory",
            )?;
        }
        RootfsSpec::Overlay { data } => {
            mnt(
                Some(Path::new("overlay")),
                root,
                Some("overlay"),
                MsFlags::MS_NODEV,
                Some(data),
                "mount image overlay",
            )?;
        }
    }
    let root_fd = open_dir(root)?;
    // 3. /proc of the new pid namespace.
    let proc_fd = open_in_root(&root_fd, Path::new("/proc"), true)?;
    mnt(
        Some(Path::new("proc")),
        &fd_path(&proc_fd),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
        "mount /proc",
    )?;
    // 4. A minimal /dev.
    let dev_fd = open_in_root(&root_fd, Path::new("/dev"), true)?;
    mnt(
        Some(Path::new("tmpfs")),
        &fd_path(&dev_fd),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=64k"),
        "mount /dev",
    )?;
    // The earlier handle names the directory under the new tmpfs: open the tmpfs itself.
    let dev_dir = open_in_root(&root_fd, Path::new("/dev"), true)?;
    for n in DEV_NODES {
        let host = Path::new("/dev").join(n);
        if !make_device(&dev_dir, n, &host) {
            bind_into(&root_fd, &host, &host, false, "bind device")?;
        }
    }
    for d in &spec.devices {
        if !make_spec_device(&root_fd, d)? {
            bind_into(&root_fd, &d.host_path, &d.path, false, "bind device")?;
        }
    }
    let pts = open_in_root(&root_fd, Path::new("/dev/pts"), true)?;
    mnt(
        Some(Path::new("devpts")),
        &fd_path(&pts),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
        "mount /dev/pts",
    )?;
    let shm = open_in_root(&root_fd, Path::new("/dev/shm"), true)?;
    mnt(
        Some(Path::new("shm")),
        &fd_path(&shm),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=64m"),
        "mount /dev/shm",
    )?;
    let dev = root.join("dev");
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(|e| MountError {
            step: "symlink",
            path: dev.join(link),
            source: io_errno(&e),
        })?;
    }
    // 5. /sys read-only.
    let sys = open_in_root(&root_fd, Path::new("/sys"), true)?;
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if mount(
        Some("sysfs"),
        &fd_path(&sys),
        Some("sysfs"),
        ro,
        None::<&str>,
    )
    .is_err()
    {
        // Without a private network namespace some kernels refuse a new sysfs: bind it.
        bind_into(
            &root_fd,
            Path::new("/sys"),
            Path::new("/sys"),
            true,
            "bind /sys",
        )?;
    }
    // 6. /tmp and /run.
    for (p, opts) in [
        ("/tmp", "mode=1777"),
        ("/run", "mode=755"),
        ("/var/tmp", "mode=1777"),
    ] {
        let fd = open_in_root(&root_fd, Path::new(p), true)?;
        mnt(
            Some(Path::new("tmpfs")),
            &fd_path(&fd),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts),
            "mount tmpfs",
        )?;
    }
    // 7. The config's binds, resolved inside the new root.
    for BindSpec {
        source,
        target,
        readonly,
    } in &spec.binds
    {
        bind_into(&root_fd, source, target, *readonly, "bind")?;
    }
    // 7b. Symlinks (CDI hooks): one that exists is kept; one that cannot be made (a
    // read-only directory of the host's) is said on stderr, and the group starts.
    for (target, link) in &spec.symlinks {
        make_symlink(&root_fd, target, link);
    }
    drop((proc_fd, dev_fd, dev_dir, pts, shm, sys));
    drop(root_fd);
    // 8. pivot_root into it and drop the old root.
    nix::unistd::chdir(root).map_err(err("chdir", root))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root", root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detach old root", root))?;
    nix::unistd::chdir("/").map_err(err("chdir", Path::new("/")))?;
    // 9. Masked and read-only paths.
    let mut masked: Vec<PathBuf> = spec.masked_paths.clone();
    if host_rootfs {
        masked.extend(HOST_MASKED.iter().map(PathBuf::from));
    }
    for p in &masked {
        mask(p)?;
    }
    for p in &spec.readonly_paths {
        match mount(
            Some(p.as_path()),
            p.as_path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Err(nix::Error::ENOENT) => continue,
            r => r.map_err(err("bind read-only path", p))?,
        }
        mnt(
            None,
            p,
            None,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None,
            "remount read-only path",
        )?;
    }
    // 10. The host rootfs skeleton itself becomes read-only.
    if host_rootfs || matches!(spec.rootfs, RootfsSpec::Dir { readonly: true, .. }) {
        mnt(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None,
            "remount / read-only",
        )?;
    }
    Ok(())
}

/// Creates the character device `name` in the directory `dir` as the host's `host` is
/// (same device number and mode, owned by root), as crun does; `false` when that is refused
/// (e.g. without `CAP_MKNOD`) and the caller binds the host's node instead.
fn make_device(dir: &OwnedFd, name: &str, host: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::metadata(host) else {
        return false;
    };
    if !meta.file_type().is_char_device() {
        return false;
    }
    let perm = Mode::from_bits_truncate(meta.mode() & 0o777);
    let made =
        nix::sys::stat::mknodat(dir, name, nix::sys::stat::SFlag::S_IFCHR, perm, meta.rdev());
    // mknod applies the umask: set the host's permissions exactly (the node was just made in
    // a fresh tmpfs, so there is no symlink to follow).
    made.is_ok()
        && nix::sys::stat::fchmodat(
            dir,
            name,
            perm,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .is_ok()
}

/// Makes a [`DeviceSpec`]'s node in the new `/dev` (its directories too); `false` when it is
/// not under `/dev` or `mknod` is refused, and the caller binds the host's node instead.
fn make_spec_device(root: &OwnedFd, d: &DeviceSpec) -> Result<bool, MountError> {
    let Ok(rel) = d.path.strip_prefix("/dev") else {
        return Ok(false);
    };
    let (Some(name), parent) = (rel.file_name(), d.path.parent()) else {
        return Ok(false);
    };
    let parent = parent.unwrap_or(Path::new("/dev"));
    let dir = open_in_root(root, parent, true)?;
    // An O_PATH handle cannot be used with mknodat: reopen the directory itself.
    let dir = nix::fcntl::openat(
        &dir,
        ".",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open", parent))?;
    let kind = if d.block {
        nix::sys::stat::SFlag::S_IFBLK
    } else {
        nix::sys::stat::SFlag::S_IFCHR
    };
    let perm = Mode::from_bits_truncate(d.file_mode & 0o777);
    let dev = nix::sys::stat::makedev(u64::from(d.major), u64::from(d.minor));
    if nix::sys::stat::mknodat(&dir, name, kind, perm, dev).is_err() {
        return Ok(false);
    }
    nix::sys::stat::fchmodat(
        &dir,
        name,
        perm,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(err("chmod device", &d.path))?;
    if d.uid.is_some() || d.gid.is_some() {
        nix::unistd::fchownat(
            &dir,
            name,
            d.uid.map(nix::unistd::Uid::from_raw),
            d.gid.map(nix::unistd::Gid::from_raw),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(err("chown device", &d.path))?;
    }
    Ok(true)
}

/// `link` -> `target` in the new root, its directory resolved inside the root (never through
/// a symlink out of it). An existing `link` is kept.
fn make_symlink(root: &OwnedFd, target: &Path, link: &Path) {
    let (Some(parent), Some(name)) = (link.parent(), link.file_name()) else {
        return;
    };
    let made = open_in_root(root, parent, true)
        .map_err(|e| e.to_string())
        .and_then(|dir| match nix::unistd::symlinkat(target, &dir, name) {
            Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
            Err(e) => Err(e.to_string()),
        });
    if let Err(e) = made {
        eprintln!(
            "agent-launch: symlink {} -> {}: {e} (left out)",
            link.display(),
            target.display()
        );
    }
}

/// Hides a path: `/dev/null` over a file, an empty read-only tmpfs over a directory; a path
/// that does not exist is skipped. No stat first: the mount for the usual kind of the path is
/// tried, and the other one when the kernel says the kind differs (`ENOTDIR`).
fn mask(p: &Path) -> Result<(), MountError> {
    let dir = || {
        mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
    };
    let file = || {
        mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    let (first, then): (&dyn Fn() -> nix::Result<()>, &dyn Fn() -> nix::Result<()>) =
        if MASKED_DIRS.iter().any(|d| Path::new(d) == p) {
            (&dir, &file)
        } else {
            (&file, &dir)
        };
    match first() {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(nix::Error::ENOTDIR) => match then() {
            Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
            Err(e) => Err(err("mask", p)(e)),
        },
        Err(e) => Err(err("mask", p)(e)),
    }
}

/// The masked paths that are directories on Linux (the others are files).
const MASKED_DIRS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Binds the host directory `dir` at the same place in the fresh skeleton `root`, read-only,
/// `nosuid` and `nodev`, submounts included (see [`clone_onto`]); kernels without the new
/// mount API get a bind and a remount of its top mount, as [`bind_into`] does.
fn bind_host_dir(root: &OwnedFd, dir: &Path) -> Result<(), MountError> {
    let name = dir.strip_prefix("/").unwrap_or(dir);
    if name.components().count() != 1 {
        // Only top-level directories are made here, in the fresh skeleton.
        return bind_into(root, dir, dir, true, "bind host directory");
    }
    match nix::sys::stat::mkdirat(root, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(err("mkdir", dir)(e)),
    }
    let fd = nix::fcntl::openat(
        root,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open", dir))?;
    let flags = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if clone_onto(dir, &fd, flags).map_err(err("bind host directory", dir))? {
        return Ok(());
    }
    bind_into(root, dir, dir, true, "bind host directory")
}

/// Binds `source` (a host path, submounts included) onto the directory or file `target`
/// names, with the mount attributes `attrs` set on every mount of the copy: a clone of the
/// host's tree (`open_tree`), its attributes set at once (`mount_setattr`), moved into place
/// (`move_mount`). `Ok(false)` when the kernel lacks that API (before 5.12, or a seccomp
/// profile refuses it) and nothing was mounted: the caller binds the old way.
fn clone_onto(source: &Path, target: &OwnedFd, attrs: u64) -> Result<bool, nix::Error> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let src = CString::new(source.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    // Raw syscalls: nix 0.31 wraps none of the new mount API (open_tree, mount_setattr,
    // move_mount).
    // SAFETY: open_tree with a NUL-terminated path; returns a new fd or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::AT_RECURSIVE as libc::c_uint | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return match nix::Error::last() {
            nix::Error::ENOSYS | nix::Error::EPERM => Ok(false),
            e => Err(e),
        };
    }
    // SAFETY: `tree` is a descriptor just returned to us and owned by nothing else.
    let tree: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(tree as i32) };
    if attrs != 0 {
        let attr = MountAttr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: mount_setattr on our detached tree with a valid mount_attr and its size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r < 0 {
            // The detached tree goes away with its fd.
            return match nix::Error::last() {
                nix::Error::ENOSYS | nix::Error::EPERM => Ok(false),
                e => Err(e),
            };
        }
    }
    // SAFETY: move_mount of our detached tree onto what `target` names.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(nix::Error::last());
    }
    Ok(true)
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn open_dir(p: &Path) -> Result<OwnedFd, MountError> {
    nix::fcntl::open(
        p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open", p))
}

fn io_errno(e: &std::io::Error) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
