//! Unpacking one image layer (a tar, plain or gzip/zstd compressed) into a directory, never
//! writing outside it, with OCI whiteouts either applied (the unpacked-copy mode) or converted
//! to overlayfs' form (per-layer lower directories).
//!
//! Safety rules, checked for every entry before anything is written:
//! - a path that is absolute or has a `..` component is refused;
//! - every parent directory is opened one component at a time without following symlinks
//!   (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), so an entry that would be written
//!   *through* a symlink (`a -> /etc` then `a/passwd`, `up -> ../..` then `up/x`) is refused;
//! - a hard link's target must be a relative path without `..` naming an existing non-directory
//!   inside the target, looked up the same way;
//! - symlink entries themselves are created as given, absolute targets included (images are
//!   full of `/etc/alternatives/...` links; they resolve inside the group's root at run time),
//!   and are never followed while unpacking.
//!
//! Devices are skipped (and counted) unless asked for and running as root; extended attributes
//! are restored only in the `user.*` namespace and `security.capability`, so a layer cannot
//! plant `trusted.overlay.*` attributes that change how overlayfs reads the lower layers.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, futimens, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, mkfifoat, symlinkat, Gid, Uid};

use crate::safefs::{self, WalkError};

/// How a layer blob is compressed (from its media type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// `tar+gzip` (also Docker's `tar.gzip`).
    Gzip,
    /// `tar+zstd`.
    Zstd,
}

impl Compression {
    /// The compression of an OCI or Docker layer media type, or `None` for a type that is
    /// not a layer tar (`application/vnd.oci.image.config.v1+json`, ...).
    pub fn from_media_type(media: &str) -> Option<Compression> {
        let m = media.trim();
        let layer = m.starts_with("application/vnd.oci.image.layer.")
            || m.starts_with("application/vnd.docker.image.rootfs.");
        if !layer {
            return None;
        }
        if m.ends_with("+gzip") || m.ends_with(".tar.gzip") || m.ends_with("tar.gzip") {
            Some(Compression::Gzip)
        } else if m.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if m.ends_with(".tar") || m.ends_with("diff.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// What to do with OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Unpacked-copy mode: layers are unpacked one over the other into the same directory;
    /// `.wh.NAME` deletes `NAME` of the layers below, an opaque marker empties the directory
    /// of what the layers below put there.
    Apply,
    /// Overlay mode: each layer gets its own directory; `.wh.NAME` becomes a character
    /// device 0/0 named `NAME`, an opaque marker the `trusted.overlay.opaque=y` attribute on
    /// its directory. Needs root (`CAP_MKNOD`, `CAP_SYS_ADMIN` for `trusted.*`).
    Overlay,
}

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub whiteouts: Whiteouts,
    /// Create character and block devices (only effective as root); otherwise skip them.
    pub devices: bool,
    /// Give entries their uid/gid from the tar (default: when running as root).
    pub same_owner: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            whiteouts: Whiteouts::Apply,
            devices: false,
            same_owner: nix::unistd::geteuid().is_root(),
        }
    }
}

/// What one layer contained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub fifos: u64,
    pub devices: u64,
    pub devices_skipped: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub xattrs_skipped: u64,
    /// Entries of other types (sockets, unknown), skipped.
    pub other_skipped: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Why an entry is refused: it would write outside the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("its path is absolute")]
    Absolute,
    #[error("its path has a `..` component")]
    DotDot,
    #[error("it names the target directory itself")]
    IsRoot,
    #[error("`{0}` is a symlink, and nothing is written through a symlink")]
    ThroughSymlink(PathBuf),
    #[error("`{0}` is not a directory")]
    ParentNotDir(PathBuf),
    #[error("hard link target `{0}` is absolute or has a `..` component")]
    LinkEscapes(PathBuf),
    #[error("hard link target `{0}` does not exist inside the target")]
    LinkMissing(PathBuf),
    #[error("hard link target `{0}` is a directory")]
    LinkToDir(PathBuf),
    #[error("whiteout `{0}` names no file")]
    BadWhiteout(String),
}

/// A failed unpack; every variant names the layer file, entry errors also the entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {layer}: cannot open: {source}")]
    Open {
        layer: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {layer}: cannot read the tar stream: {source}")]
    Read {
        layer: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {layer}: cannot open target directory {target}: {source}")]
    Target {
        layer: PathBuf,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {layer}: entry `{entry}` refused: {reason}")]
    Refused {
        layer: PathBuf,
        entry: String,
        reason: Refusal,
    },
    #[error("layer {layer}: entry `{entry}`: {op}: {source}")]
    Entry {
        layer: PathBuf,
        entry: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("layer cache: {op} {path}: {source}")]
    Cache {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer cache: digest `{0}` is not `algorithm:hex`")]
    BadDigest(String),
    #[error("an image needs at least one layer")]
    NoLayers,
    #[error("overlay mount options: {0}")]
    OverlayOptions(String),
}

/// Unpacks `blob` into the directory `target` in the unpacked-copy mode (whiteouts applied
/// to what earlier layers left in `target`), with default options.
pub fn unpack_layer(
    blob: &Path,
    media: Compression,
    target: &Path,
) -> Result<LayerStats, UnpackError> {
    unpack_layer_with(blob, media, target, &UnpackOptions::default())
}

/// Unpacks `blob` into the directory `target` with `opts`.
pub fn unpack_layer_with(
    blob: &Path,
    media: Compression,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let file = File::open(blob).map_err(|source| UnpackError::Open {
        layer: blob.to_path_buf(),
        source,
    })?;
    let buf = BufReader::with_capacity(256 * 1024, file);
    let reader: Box<dyn Read> = match media {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf).map_err(
            |source| UnpackError::Read {
                layer: blob.to_path_buf(),
                source,
            },
        )?),
    };
    let root = safefs::open_root(target).map_err(|e| UnpackError::Target {
        layer: blob.to_path_buf(),
        target: target.to_path_buf(),
        source: e.into(),
    })?;
    let mut u = Unpacker {
        layer: blob,
        root,
        opts,
        stats: LayerStats::default(),
        created: HashSet::new(),
        dirs: Vec::new(),
        cached: None,
        root_user: nix::unistd::geteuid().is_root(),
    };
    let mut archive = tar::Archive::new(reader);
    let read_err = |source| UnpackError::Read {
        layer: blob.to_path_buf(),
        source,
    };
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        u.entry(&mut entry)?;
    }
    u.finish_dirs();
    Ok(u.stats)
}

/// Splits an entry path into its normal components, refusing absolute paths and `..`.
pub(crate) fn components(path: &Path) -> Result<Vec<OsString>, Refusal> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::DotDot),
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::Absolute),
        }
    }
    Ok(out)
}

/// A directory whose mode and mtime are set once the layer is done (adding children changes
/// a directory's mtime; a read-only mode would stop them being added).
struct DirMeta {
    comps: Vec<OsString>,
    mode: u32,
    mtime: i64,
}

struct Unpacker<'a> {
    layer: &'a Path,
    root: OwnedFd,
    opts: &'a UnpackOptions,
    stats: LayerStats,
    /// Paths this layer created (whiteouts and opaque markers spare them).
    created: HashSet<Vec<OsString>>,
    dirs: Vec<DirMeta>,
    /// The last parent directory opened. Valid while no directory is removed: paths are
    /// walked without symlinks, so an unremoved directory stays at the same path.
    cached: Option<(Vec<OsString>, OwnedFd)>,
    root_user: bool,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

impl Unpacker<'_> {
    fn refused(&self, entry: &Path, reason: Refusal) -> UnpackError {
        UnpackError::Refused {
            layer: self.layer.to_path_buf(),
            entry: entry.display().to_string(),
            reason,
        }
    }

    fn failed(&self, entry: &Path, op: &'static str, e: impl Into<std::io::Error>) -> UnpackError {
        UnpackError::Entry {
            layer: self.layer.to_path_buf(),
            entry: entry.display().to_string(),
            op,
            source: e.into(),
        }
    }

    fn walk_err(&self, entry: &Path, e: WalkError) -> UnpackError {
        match e {
            WalkError::Symlink(p) => self.refused(entry, Refusal::ThroughSymlink(p)),
            WalkError::NotDir(p) => self.refused(entry, Refusal::ParentNotDir(p)),
            WalkError::Io(errno) => self.failed(entry, "open parent directory", errno),
        }
    }

    /// Opens (creating) the parent directory `comps` of `entry`.
    fn parent(&mut self, entry: &Path, comps: &[OsString]) -> Result<OwnedFd, UnpackError> {
        if let Some((p, fd)) = &self.cached {
            if p.as_slice() == comps {
                return fd.try_clone().map_err(|e| self.failed(entry, "dup", e));
            }
        }
        let fd = safefs::walk(&self.root, comps, true)
            .map_err(|e| self.walk_err(entry, e))?
            .ok_or_else(|| self.failed(entry, "open parent directory", Errno::ENOENT))?;
        let keep = fd.try_clone().map_err(|e| self.failed(entry, "dup", e))?;
        self.cached = Some((comps.to_vec(), keep));
        Ok(fd)
    }

    /// Removes what is at `name` unless it is a directory and `keep_dir`.
    fn clear(
        &mut self,
        entry: &Path,
        dir: &OwnedFd,
        name: &OsStr,
        keep_dir: bool,
    ) -> Result<(), UnpackError> {
        let st = safefs::lstat_at(dir, name).map_err(|e| self.failed(entry, "stat", e))?;
        match st {
            None => Ok(()),
            Some(st) if keep_dir && safefs::kind(&st) == SFlag::S_IFDIR => Ok(()),
            Some(_) => {
                let was_dir = safefs::remove_all_at(dir, name)
                    .map_err(|e| self.failed(entry, "remove existing", e))?;
                if was_dir {
                    self.cached = None;
                }
                Ok(())
            }
        }
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>) -> Result<(), UnpackError> {
        let path = PathBuf::from(OsStr::from_bytes(&e.path_bytes()));
        let ty = e.header().entry_type();
        if matches!(
            ty,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        self.stats.entries += 1;
        let comps = components(&path).map_err(|r| self.refused(&path, r))?;
        let Some((name, parent)) = comps.split_last() else {
            if ty.is_dir() {
                return Ok(()); // `./`: the target itself keeps its own metadata.
            }
            return Err(self.refused(&path, Refusal::IsRoot));
        };
        let name_s = name.to_string_lossy();
        if name_s == OPAQUE {
            self.stats.opaque_dirs += 1;
            return self.opaque(&path, parent);
        }
        if let Some(base) = name_s.strip_prefix(WHITEOUT) {
            self.stats.whiteouts += 1;
            if base.is_empty() || base == "." || base == ".." {
                return Err(self.refused(&path, Refusal::BadWhiteout(name_s.into_owned())));
            }
            let base = OsStr::from_bytes(&name.as_bytes()[WHITEOUT.len()..]).to_os_string();
            return self.whiteout(&path, parent, &base);
        }
        let dir = self.parent(&path, parent)?;
        let header = e.header();
        let mode = header
            .mode()
            .map_err(|err| self.failed(&path, "mode", err))?
            & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0);
        let owner = self
            .opts
            .same_owner
            .then(|| (Uid::from_raw(uid as u32), Gid::from_raw(gid as u32)));
        let times = TimeSpec::new(mtime, 0);
        match ty {
            tar::EntryType::Directory => {
                self.clear(&path, &dir, name, true)?;
                match nix::sys::stat::mkdirat(
                    &dir,
                    name.as_os_str(),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(err) => return Err(self.failed(&path, "mkdir", err)),
                }
                let fd = safefs::open_child_dir(&dir, name)
                    .map_err(|err| self.failed(&path, "open directory", err))?;
                if let Some((u, g)) = owner {
                    fchown(&fd, Some(u), Some(g))
                        .map_err(|err| self.failed(&path, "chown", err))?;
                }
                self.xattrs(&path, e, &fd)?;
                self.stats.dirs += 1;
                self.dirs.push(DirMeta {
                    comps: comps.clone(),
                    mode,
                    mtime,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&path, &dir, name, false)?;
                let flags = OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                let fd = openat(
                    &dir,
                    name.as_os_str(),
                    flags,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|err| self.failed(&path, "create", err))?;
                let mut f = File::from(fd);
                let n = std::io::copy(e, &mut f).map_err(|err| self.failed(&path, "write", err))?;
                self.stats.bytes += n;
                let fd = OwnedFd::from(f);
                if let Some((u, g)) = owner {
                    fchown(&fd, Some(u), Some(g))
                        .map_err(|err| self.failed(&path, "chown", err))?;
                }
                fchmod(&fd, Mode::from_bits_truncate(mode))
                    .map_err(|err| self.failed(&path, "chmod", err))?;
                self.xattrs(&path, e, &fd)?;
                futimens(&fd, &times, &times).map_err(|err| self.failed(&path, "utimes", err))?;
                self.stats.files += 1;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .map(|b| OsStr::from_bytes(&b).to_os_string())
                    .unwrap_or_default();
                self.clear(&path, &dir, name, false)?;
                symlinkat(target.as_os_str(), &dir, name.as_os_str())
                    .map_err(|err| self.failed(&path, "symlink", err))?;
                if let Some((u, g)) = owner {
                    fchownat(
                        &dir,
                        name.as_os_str(),
                        Some(u),
                        Some(g),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|err| self.failed(&path, "chown", err))?;
                }
                utimensat(
                    &dir,
                    name.as_os_str(),
                    &times,
                    &times,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|err| self.failed(&path, "utimes", err))?;
                self.stats.symlinks += 1;
            }
            tar::EntryType::Link => self.hardlink(&path, e, &dir, name)?,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (kind, label) = match ty {
                    tar::EntryType::Char => (SFlag::S_IFCHR, "mknod"),
                    tar::EntryType::Block => (SFlag::S_IFBLK, "mknod"),
                    _ => (SFlag::S_IFIFO, "mkfifo"),
                };
                if kind != SFlag::S_IFIFO && !(self.opts.devices && self.root_user) {
                    self.stats.devices_skipped += 1;
                    return Ok(());
                }
                self.clear(&path, &dir, name, false)?;
                let perm = Mode::from_bits_truncate(mode);
                let made = if kind == SFlag::S_IFIFO {
                    mkfifoat(&dir, name.as_os_str(), perm)
                } else {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
                    mknodat(&dir, name.as_os_str(), kind, perm, dev)
                };
                made.map_err(|err| self.failed(&path, label, err))?;
                if let Some((u, g)) = owner {
                    fchownat(
                        &dir,
                        name.as_os_str(),
                        Some(u),
                        Some(g),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|err| self.failed(&path, "chown", err))?;
                }
                // Just made by us as a non-symlink; nothing else writes into the target.
                fchmodat(&dir, name.as_os_str(), perm, FchmodatFlags::FollowSymlink)
                    .map_err(|err| self.failed(&path, "chmod", err))?;
                utimensat(
                    &dir,
                    name.as_os_str(),
                    &times,
                    &times,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|err| self.failed(&path, "utimes", err))?;
                if kind == SFlag::S_IFIFO {
                    self.stats.fifos += 1;
                } else {
                    self.stats.devices += 1;
                }
            }
            _ => {
                self.stats.other_skipped += 1;
                return Ok(());
            }
        }
        if self.opts.whiteouts == Whiteouts::Apply {
            // With its parents: a directory made implicitly for `d/f` is this layer's too.
            for n in 1..comps.len() {
                if !self.created.contains(&comps[..n]) {
                    self.created.insert(comps[..n].to_vec());
                }
            }
            self.created.insert(comps);
        }
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        path: &Path,
        e: &tar::Entry<R>,
        dir: &OwnedFd,
        name: &OsStr,
    ) -> Result<(), UnpackError> {
        let raw = e
            .link_name_bytes()
            .map(|b| PathBuf::from(OsStr::from_bytes(&b)))
            .unwrap_or_default();
        let lcomps =
            components(&raw).map_err(|_| self.refused(path, Refusal::LinkEscapes(raw.clone())))?;
        let Some((lname, lparent)) = lcomps.split_last() else {
            return Err(self.refused(path, Refusal::LinkToDir(raw)));
        };
        let src_dir = match safefs::walk(&self.root, lparent, false) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Err(self.refused(path, Refusal::LinkMissing(raw))),
            Err(WalkError::Symlink(p)) => {
                return Err(self.refused(path, Refusal::ThroughSymlink(p)))
            }
            Err(WalkError::NotDir(_)) => return Err(self.refused(path, Refusal::LinkMissing(raw))),
            Err(WalkError::Io(err)) => return Err(self.failed(path, "open link target", err)),
        };
        let st = safefs::lstat_at(&src_dir, lname)
            .map_err(|err| self.failed(path, "stat link target", err))?;
        let Some(st) = st else {
            return Err(self.refused(path, Refusal::LinkMissing(raw)));
        };
        if safefs::kind(&st) == SFlag::S_IFDIR {
            return Err(self.refused(path, Refusal::LinkToDir(raw)));
        }
        if let Ok(Some(dst)) = safefs::lstat_at(dir, name) {
            if dst.st_ino == st.st_ino && dst.st_dev == st.st_dev {
                self.stats.hardlinks += 1;
                return Ok(()); // Already the same file.
            }
        }
        self.clear(path, dir, name, false)?;
        // No AT_SYMLINK_FOLLOW: a symlink source is linked as the symlink itself.
        linkat(&src_dir, lname.as_os_str(), dir, name, AtFlags::empty())
            .map_err(|err| self.failed(path, "link", err))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Restores the allowed extended attributes from the entry's PAX headers.
    fn xattrs<R: Read>(
        &mut self,
        path: &Path,
        e: &mut tar::Entry<R>,
        fd: &OwnedFd,
    ) -> Result<(), UnpackError> {
        let Some(exts) = e
            .pax_extensions()
            .map_err(|err| self.failed(path, "read PAX headers", err))?
        else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.map_err(|err| self.failed(path, "read PAX headers", err))?;
            let Some(key) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) else {
                continue;
            };
            let allowed = key.starts_with("user.") || key == "security.capability";
            if !allowed || safefs::fsetxattr(fd, key, ext.value_bytes()).is_err() {
                self.stats.xattrs_skipped += 1;
            }
        }
        Ok(())
    }

    /// `.wh.NAME` in directory `parent`.
    fn whiteout(
        &mut self,
        path: &Path,
        parent: &[OsString],
        base: &OsStr,
    ) -> Result<(), UnpackError> {
        match self.opts.whiteouts {
            Whiteouts::Apply => {
                let mut victim = parent.to_vec();
                victim.push(base.to_os_string());
                if self.created.contains(&victim) {
                    return Ok(()); // Whiteouts hide lower layers only.
                }
                let dir = match safefs::walk(&self.root, parent, false) {
                    Ok(Some(d)) => d,
                    Ok(None) | Err(WalkError::NotDir(_)) => return Ok(()),
                    Err(e) => return Err(self.walk_err(path, e)),
                };
                let was_dir = safefs::remove_all_at(&dir, base)
                    .map_err(|e| self.failed(path, "apply whiteout", e))?;
                if was_dir {
                    self.cached = None;
                }
                Ok(())
            }
            Whiteouts::Overlay => {
                let dir = self.parent(path, parent)?;
                if safefs::lstat_at(&dir, base)
                    .map_err(|e| self.failed(path, "stat", e))?
                    .is_some()
                {
                    return Ok(()); // This layer has the file itself; it wins.
                }
                mknodat(
                    &dir,
                    base,
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    nix::sys::stat::makedev(0, 0),
                )
                .map_err(|e| self.failed(path, "mknod overlay whiteout (needs root)", e))
            }
        }
    }

    /// `.wh..wh..opq` in directory `parent`.
    fn opaque(&mut self, path: &Path, parent: &[OsString]) -> Result<(), UnpackError> {
        match self.opts.whiteouts {
            Whiteouts::Apply => {
                let dir = match safefs::walk(&self.root, parent, false) {
                    Ok(Some(d)) => d,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(self.walk_err(path, e)),
                };
                self.cached = None;
                self.clear_lower(path, &dir, parent.to_vec())
            }
            Whiteouts::Overlay => {
                let dir = self.parent(path, parent)?;
                safefs::fsetxattr(&dir, "trusted.overlay.opaque", b"y")
                    .map_err(|e| self.failed(path, "set trusted.overlay.opaque (needs root)", e))
            }
        }
    }

    /// Removes from `dir` (at `comps`) everything this layer did not create, recursing into
    /// directories it did create (they may still hold lower files).
    fn clear_lower(
        &self,
        path: &Path,
        dir: &OwnedFd,
        comps: Vec<OsString>,
    ) -> Result<(), UnpackError> {
        let names =
            safefs::list_dir(dir).map_err(|e| self.failed(path, "list opaque directory", e))?;
        for n in names {
            let mut c = comps.clone();
            c.push(n.clone());
            if !self.created.contains(&c) {
                safefs::remove_all_at(dir, &n)
                    .map_err(|e| self.failed(path, "apply opaque directory", e))?;
                continue;
            }
            if let Ok(sub) = safefs::open_child_dir(dir, &n) {
                self.clear_lower(path, &sub, c)?;
            }
        }
        Ok(())
    }

    /// Sets the deferred modes and mtimes of the directories this layer made.
    fn finish_dirs(&mut self) {
        for d in std::mem::take(&mut self.dirs) {
            // A later entry may have replaced it; then it is not ours to touch.
            let Ok(Some(fd)) = safefs::walk(&self.root, &d.comps, false) else {
                continue;
            };
            let t = TimeSpec::new(d.mtime, 0);
            let _ = fchmod(&fd, Mode::from_bits_truncate(d.mode));
            let _ = futimens(&fd, &t, &t);
        }
    }
}
