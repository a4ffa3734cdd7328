//! An image's root file system for one group: its layers unpacked once each into a shared
//! cache and stacked with overlayfs (read-only lowers, a per-group upper), or, where the
//! kernel has no overlayfs (or we are not root), unpacked one over the other into a copy.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::unpack::{unpack_layer_with, Compression, UnpackError, UnpackOptions, Whiteouts};

/// One layer of an image, bottom layer first in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// `sha256:<hex>` (any `algorithm:hex`): the cache key. Not re-verified here: the image
    /// store checked the blob against it.
    pub digest: String,
    /// The layer blob on disk.
    pub blob: PathBuf,
    pub media: Compression,
}

/// A group's root file system, ready to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreparedRootfs {
    /// Mount `overlay` with `lowerdir=lowers.join(":")` (top layer first), `upperdir`,
    /// `workdir`: see [`PreparedRootfs::overlay_mount_data`].
    Overlay {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
    /// Bind this directory (`RootfsSpec::Dir`).
    Copy { dir: PathBuf },
}

impl PreparedRootfs {
    /// The data argument of `mount("overlay", target, "overlay", flags, data)` for an
    /// `Overlay`; `None` for a `Copy`. Refuses paths with `,` `:` `\` or a newline (they would
    /// need escaping) and options longer than one page minus one (4095 bytes), the limit of
    /// `mount(2)`'s data.
    pub fn overlay_mount_data(&self) -> Result<Option<String>, UnpackError> {
        let PreparedRootfs::Overlay {
            lowers,
            upper,
            work,
        } = self
        else {
            return Ok(None);
        };
        let check = |p: &Path| -> Result<String, UnpackError> {
            let s = p.to_str().ok_or_else(|| {
                UnpackError::OverlayOptions(format!("{} is not UTF-8", p.display()))
            })?;
            if !p.is_absolute() || s.contains([',', ':', '\\', '\n']) {
                return Err(UnpackError::OverlayOptions(format!(
                    "{s} must be absolute and free of `,` `:` `\\`"
                )));
            }
            Ok(s.to_owned())
        };
        let lowers = lowers
            .iter()
            .map(|l| check(l))
            .collect::<Result<Vec<_>, _>>()?;
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            check(upper)?,
            check(work)?
        );
        if data.len() > 4095 {
            return Err(UnpackError::OverlayOptions(format!(
                "{} bytes of options, more than mount(2) takes (4095): use a shorter cache path",
                data.len()
            )));
        }
        Ok(Some(data))
    }
}

/// Whether this kernel has overlayfs: `/proc/filesystems` lists `overlay` (the module may
/// also load on first mount; we do not count on that).
pub fn overlay_supported() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

/// Tries a tiny overlay mount with its lower in `cache` and its upper and work in `group_dir`
/// (so both file systems are checked: an upper cannot live on overlayfs or NFS), then
/// unmounts it and removes the scratch directories. Needs root; mounts in the caller's mount
/// namespace for a moment.
pub fn overlay_probe(cache: &Path, group_dir: &Path) -> Result<(), UnpackError> {
    let tag = format!(".probe-{}", std::process::id());
    let lower = cache.join(&tag);
    let base = group_dir.join(&tag);
    let (upper, work, merged) = (base.join("u"), base.join("w"), base.join("m"));
    for d in [&lower, &upper, &work, &merged] {
        mkdirs(d)?;
    }
    let probe = PreparedRootfs::Overlay {
        lowers: vec![lower.clone()],
        upper,
        work,
    };
    let r = probe.overlay_mount_data().and_then(|data| {
        let data = data.unwrap_or_default();
        let flags = nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOSUID;
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            flags,
            Some(data.as_str()),
        )
        .map_err(|e| cache_err("test-mount overlay on", &merged)(e.into()))?;
        let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
        Ok(())
    });
    let _ = fs::remove_dir_all(&lower);
    let _ = fs::remove_dir_all(&base);
    r
}

/// Checks that `digest` is `algorithm:hex` and returns the cache sub-path `algorithm/hex`.
/// (Not `algorithm:hex` as one name: `:` separates overlayfs' lower directories.)
pub fn digest_dir(digest: &str) -> Result<PathBuf, UnpackError> {
    let bad = || UnpackError::BadDigest(digest.to_owned());
    let (algo, hex) = digest.split_once(':').ok_or_else(bad)?;
    let algo_ok = !algo.is_empty()
        && algo
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && !algo.starts_with('.');
    let hex_ok = hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !algo_ok || !hex_ok {
        return Err(bad());
    }
    Ok(Path::new(algo).join(hex))
}

/// Layers unpacked once each, in overlayfs' form, under `<root>/<algorithm>/<hex>/`; shared
/// read-only by every group using them. A layer directory appears only complete (unpacked
/// into a temporary directory, then renamed), so a crash never leaves a half layer in use.
#[derive(Debug, Clone)]
pub struct LayerCache {
    root: PathBuf,
}

impl LayerCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LayerCache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `layer`, unpacking it first if it is not in the cache.
    pub fn ensure(&self, layer: &LayerRef) -> Result<PathBuf, UnpackError> {
        let rel = digest_dir(&layer.digest)?;
        let dir = self.root.join(&rel);
        if dir.is_dir() {
            return Ok(dir);
        }
        let parent = dir.parent().unwrap_or(&self.root).to_path_buf();
        mkdirs(&parent)?;
        // Unique per process and call: two threads may unpack the same layer at once.
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tmp = self.root.join(format!(
            ".tmp-{}-{}-{}",
            rel.file_name().and_then(|n| n.to_str()).unwrap_or("layer"),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        remove_dir_all_if_any(&tmp)?;
        fs::create_dir(&tmp).map_err(cache_err("create", &tmp))?;
        let opts = UnpackOptions {
            whiteouts: Whiteouts::Overlay,
            ..UnpackOptions::default()
        };
        if let Err(e) = unpack_layer_with(&layer.blob, layer.media, &tmp, &opts) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &dir) {
            Ok(()) => Ok(dir),
            // Another process unpacked it meanwhile: use theirs.
            Err(_) if dir.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(dir)
            }
            Err(e) => Err(cache_err("rename", &dir)(e)),
        }
    }
}

fn cache_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UnpackError {
    let path = path.to_path_buf();
    move |source| UnpackError::Cache { op, path, source }
}

fn mkdirs(p: &Path) -> Result<(), UnpackError> {
    fs::create_dir_all(p).map_err(cache_err("create", p))
}

fn remove_dir_all_if_any(p: &Path) -> Result<(), UnpackError> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(cache_err("remove", p)(e)),
        _ => Ok(()),
    }
}

/// The file in `group_dir` naming the layers its rootfs was made from.
const LAYERS_FILE: &str = "layers";

/// Prepares the root file system of one group from `layers` (bottom first).
///
/// With `prefer_overlay`, overlayfs in the kernel, root, and a successful [`overlay_probe`]
/// (call it yourself to log why the copy was chosen): each layer is unpacked once into
/// `cache` and the result is `Overlay` with `group_dir/upper` and `group_dir/work`. Otherwise
/// the layers are unpacked one over the other into `group_dir/rootfs` (`Copy`). What a group
/// wrote (the upper, or the copy) is kept while the layers stay the same; a different layer
/// list starts the group afresh. `group_dir` must be on a file system that can hold an
/// overlay upper (ext4, xfs, btrfs, tmpfs; not overlayfs itself).
pub fn prepare_rootfs(
    layers: &[LayerRef],
    cache: &Path,
    group_dir: &Path,
    prefer_overlay: bool,
) -> Result<PreparedRootfs, UnpackError> {
    if layers.is_empty() {
        return Err(UnpackError::NoLayers);
    }
    for l in layers {
        digest_dir(&l.digest)?;
    }
    mkdirs(group_dir)?;
    let overlay = prefer_overlay
        && overlay_supported()
        && nix::unistd::geteuid().is_root()
        && overlay_probe(cache, group_dir).is_ok();
    let record = format!(
        "{}\n{}\n",
        if overlay { "overlay" } else { "copy" },
        layers
            .iter()
            .map(|l| l.digest.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let record_path = group_dir.join(LAYERS_FILE);
    let same = fs::read_to_string(&record_path).is_ok_and(|r| r == record);
    if !same {
        for d in ["upper", "work", "rootfs", "rootfs.partial"] {
            remove_dir_all_if_any(&group_dir.join(d))?;
        }
        let _ = fs::remove_file(&record_path);
    }
    let prepared = if overlay {
        let cache = LayerCache::new(cache);
        let mut lowers = layers
            .iter()
            .map(|l| cache.ensure(l))
            .collect::<Result<Vec<_>, _>>()?;
        lowers.reverse();
        let (upper, work) = (group_dir.join("upper"), group_dir.join("work"));
        mkdirs(&upper)?;
        mkdirs(&work)?;
        PreparedRootfs::Overlay {
            lowers,
            upper,
            work,
        }
    } else {
        let dir = group_dir.join("rootfs");
        if !dir.is_dir() {
            let partial = group_dir.join("rootfs.partial");
            remove_dir_all_if_any(&partial)?;
            fs::create_dir(&partial).map_err(cache_err("create", &partial))?;
            let opts = UnpackOptions::default();
            for l in layers {
                unpack_layer_with(&l.blob, l.media, &partial, &opts)?;
            }
            fs::rename(&partial, &dir).map_err(cache_err("rename", &dir))?;
        }
        PreparedRootfs::Copy { dir }
    };
    fs::write(&record_path, record).map_err(cache_err("write", &record_path))?;
    Ok(prepared)
}
