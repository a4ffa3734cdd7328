//! A pod's root file system as the launcher needs it: the host's system directories, or a
//! built image's layers (stacked with overlayfs, or unpacked into a copy).

use std::path::Path;

use agent_plan::{GroupPlan, ImagePlan, RootfsPlan};

use super::PodError;
use crate::launch::spec::{RootEntry, RootfsSpec};

/// The host rootfs's entries as launcher spec entries (pure).
pub fn host_entries(entries: &[agent_rootfs::HostEntry]) -> Vec<RootEntry> {
    entries
        .iter()
        .map(|e| match e {
            agent_rootfs::HostEntry::Dir(d) => RootEntry::Dir(d.clone()),
            agent_rootfs::HostEntry::Symlink { path, target } => RootEntry::Symlink {
                path: path.clone(),
                target: target.clone(),
            },
        })
        .collect()
}

/// The group's root file system; `dir` is the group's state dir. An image's layers are
/// unpacked once into the shared cache and stacked with overlayfs (a fresh upper per start)
/// or, without overlayfs, unpacked into a copy.
pub(super) fn rootfs(g: &GroupPlan, dir: &Path) -> Result<RootfsSpec, PodError> {
    match &g.rootfs {
        RootfsPlan::Host { entries } => Ok(RootfsSpec::Host(host_entries(entries))),
        RootfsPlan::Image(image) => image_rootfs(&g.name, image, dir),
    }
}

fn image_rootfs(group: &str, image: &ImagePlan, dir: &Path) -> Result<RootfsSpec, PodError> {
    let launch = |message: String| PodError::Launch {
        group: group.to_string(),
        message: format!("image {}: {message}", image.name),
    };
    // A fresh upper and work directory per start: the overlay of the previous start may
    // live on for a moment in its dying mount namespace, and overlayfs refuses a work
    // directory in use.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prepared = agent_rootfs::prepare_rootfs(
        &image.layers,
        &image.layer_cache,
        &dir.join(format!("image-{nonce}")),
        true,
    )
    .map_err(|e| launch(e.to_string()))?;
    match prepared
        .overlay_mount_data()
        .map_err(|e| launch(e.to_string()))?
    {
        Some(data) => Ok(RootfsSpec::Overlay { data }),
        None => match prepared {
            agent_rootfs::PreparedRootfs::Copy { dir } => Ok(RootfsSpec::Dir {
                path: dir,
                readonly: false,
            }),
            agent_rootfs::PreparedRootfs::Overlay { .. } => {
                Err(launch("overlay without mount data".into()))
            }
        },
    }
}
