//! File-descriptor based file system steps that never leave a root directory: every path is
//! walked one component at a time with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or
//! `openat(O_NOFOLLOW)` on kernels without `openat2`), so no symlink already in the tree —
//! absolute, relative or `..`-laden — is ever followed, and nothing is removed through one.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Why a path inside the root could not be walked.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// This prefix of the path is a symlink: nothing is written or looked up through it.
    Symlink(PathBuf),
    /// This prefix of the path exists and is not a directory.
    NotDir(PathBuf),
    /// Any other failure.
    Io(Errno),
}

/// Flags of every directory handle we open: readable (for `fchmod`, `fsetxattr`, listing),
/// never following a final symlink.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens the directory `name` (one component, never `..`) below `parent` without following
/// a symlink.
pub(crate) fn open_child_dir<Fd: AsFd>(parent: Fd, name: &OsStr) -> Result<OwnedFd, Errno> {
    debug_assert!(name != ".." && !name.as_bytes().contains(&b'/'));
    let how = OpenHow::new().flags(dir_flags()).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match openat2(parent.as_fd(), name, how) {
        Err(Errno::ENOSYS) => openat(parent, name, dir_flags(), Mode::empty()),
        r => r,
    }
}

/// Opens the root directory itself (the caller's own path: followed as given).
pub(crate) fn open_root(path: &std::path::Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// `fstatat` without following a final symlink; `None` when nothing is there.
pub(crate) fn lstat_at<Fd: AsFd>(dir: Fd, name: &OsStr) -> Result<Option<FileStat>, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file type bits of a stat result.
pub(crate) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Walks `comps` below `root`, one directory at a time. With `create`, missing directories
/// are made (mode 0755); without it a missing one gives `Ok(None)`.
pub(crate) fn walk(
    root: &OwnedFd,
    comps: &[OsString],
    create: bool,
) -> Result<Option<OwnedFd>, WalkError> {
    let mut cur = root
        .try_clone()
        .map_err(|e| WalkError::Io(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    let mut so_far = PathBuf::new();
    for c in comps {
        so_far.push(c);
        let next = match open_child_dir(&cur, c) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(&cur, c.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(WalkError::Io(e)),
                }
                open_child_dir(&cur, c).map_err(|e| classify(&cur, c, &so_far, e))?
            }
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(classify(&cur, c, &so_far, e)),
        };
        cur = next;
    }
    Ok(Some(cur))
}

/// Turns a failed directory open into a clear reason (symlink, not a directory, other).
fn classify(parent: &OwnedFd, name: &OsStr, so_far: &std::path::Path, e: Errno) -> WalkError {
    match lstat_at(parent, name) {
        Ok(Some(st)) if kind(&st) == SFlag::S_IFLNK => WalkError::Symlink(so_far.to_path_buf()),
        Ok(Some(st)) if kind(&st) != SFlag::S_IFDIR => WalkError::NotDir(so_far.to_path_buf()),
        _ => WalkError::Io(e),
    }
}

/// Removes `name` below `dir` and, for a directory, everything in it; symlinks are removed,
/// never followed. Returns whether a directory was removed (cached handles may be stale).
pub(crate) fn remove_all_at(dir: &OwnedFd, name: &OsStr) -> Result<bool, Errno> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(false);
    };
    if kind(&st) != SFlag::S_IFDIR {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
        return Ok(false);
    }
    let child = open_child_dir(dir, name)?;
    clear_dir(&child, &|_| false)?;
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(true)
}

/// Removes every entry of the open directory `dir` for which `keep(name)` is false.
pub(crate) fn clear_dir(dir: &OwnedFd, keep: &dyn Fn(&OsStr) -> bool) -> Result<(), Errno> {
    for name in list_dir(dir)? {
        if !keep(&name) {
            remove_all_at(dir, &name)?;
        }
    }
    Ok(())
}

/// The names in the open directory `dir`, without `.` and `..`.
pub(crate) fn list_dir(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    let fd = dir
        .try_clone()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for ent in d.iter() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(names)
}

/// Sets one extended attribute on an open file or directory.
pub(crate) fn fsetxattr(fd: &OwnedFd, name: &str, value: &[u8]) -> Result<(), Errno> {
    let cname = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `fd` is an open descriptor we own for the whole call; `cname` is a
    // NUL-terminated string and `value` a valid slice of `value.len()` bytes, both alive
    // across the call; the kernel only reads them.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}
