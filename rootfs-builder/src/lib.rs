//! Root file systems a group can run in: the built-in `host` rootfs (the host's own system
//! directories bound read-only into the group), and images: layers unpacked safely
//! ([`unpack_layer`]), cached once each and stacked with overlayfs, or unpacked into a copy
//! ([`prepare_rootfs`]).

use std::path::{Path, PathBuf};

mod image;
mod safefs;
mod unpack;

pub use image::{
    digest_dir, overlay_probe, overlay_supported, prepare_rootfs, LayerCache, LayerRef,
    PreparedRootfs,
};
pub use unpack::{
    unpack_layer, unpack_layer_with, Compression, LayerStats, Refusal, UnpackError, UnpackOptions,
    Whiteouts,
};

/// Host directories the `host` rootfs binds read-only, in mount order.
pub const HOST_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc", "/opt",
];

/// One read-only bind of the host rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    /// A real directory, bound read-only at the same path.
    Dir(PathBuf),
    /// A symlink (usrmerge: `/bin -> usr/bin`), recreated as the same symlink.
    Symlink { path: PathBuf, target: PathBuf },
}

/// Why the host rootfs cannot be assembled.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("host rootfs: cannot inspect {path}: {source}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host rootfs: {0} is missing, so no program can run from the host rootfs")]
    NoUsr(PathBuf),
}

/// The entries of the host rootfs on this machine, below `root` (normally `/`).
pub fn host_rootfs(root: &Path) -> Result<Vec<HostEntry>, RootfsError> {
    let mut out = Vec::new();
    for d in HOST_DIRS {
        let path = root.join(d.trim_start_matches('/'));
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(RootfsError::Inspect { path, source }),
        };
        let inside = PathBuf::from(d);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|source| RootfsError::Inspect {
                path: path.clone(),
                source,
            })?;
            out.push(HostEntry::Symlink {
                path: inside,
                target,
            });
        } else if meta.is_dir() {
            out.push(HostEntry::Dir(inside));
        }
    }
    if !out
        .iter()
        .any(|e| matches!(e, HostEntry::Dir(d) if d == Path::new("/usr")))
    {
        return Err(RootfsError::NoUsr(root.join("usr")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rootfs_sees_this_machine() {
        let entries = host_rootfs(Path::new("/")).unwrap();
        assert!(entries.contains(&HostEntry::Dir("/usr".into())));
        assert!(entries.iter().any(|e| match e {
            HostEntry::Dir(p) => p == Path::new("/etc"),
            _ => false,
        }));
    }

    #[test]
    fn a_root_without_usr_is_refused() {
        let dir = std::env::temp_dir().join(format!("rootfs-nousr-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        let err = host_rootfs(&dir).unwrap_err().to_string();
        assert!(err.contains("usr is missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
