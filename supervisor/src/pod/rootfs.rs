//! A pod's root file system as the launcher needs it: the host's system directories, or a
//! built image's layers (stacked with overlayfs, or unpacked into a copy), plus the binds.

use std::path::Path;

use agent_config::model::Group;
use agent_config::{defaults, Loaded};

use super::{io, PodError};
use crate::launch::spec::{BindSpec, RootEntry, RootfsSpec};

/// The image store of the host a group runs on.
pub(super) fn image_store(l: &Loaded, g: &Group) -> Result<agent_images::Store, PodError> {
    let d = defaults::daemon(&l.system, &g.host);
    agent_images::Store::open(&d.state_dir).map_err(|e| PodError::Launch {
        group: String::new(),
        message: format!("image store: {e}"),
    })
}

/// The built image of a group (not the `host` image): its config and layers.
pub(super) fn image_info(l: &Loaded, g: &Group) -> Result<agent_images::ImageInfo, PodError> {
    let image = defaults::image(g);
    image_store(l, g)?
        .inspect(image)
        .map_err(|e| PodError::Launch {
            group: String::new(),
            message: format!(
                "image {image}: {e} (build it with `agent-supervisor build {}`)",
                l.file.display()
            ),
        })
}

/// The environment an image sets (`Env` of its config), for agents of groups running from it.
pub(super) fn image_env(l: &Loaded, g: &Group) -> Vec<(String, String)> {
    if defaults::image(g) == defaults::HOST_IMAGE {
        return Vec::new();
    }
    image_info(l, g)
        .map(|info| {
            info.config
                .config
                .env
                .iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The group's root file system as the launcher needs it; `dir` is the group's state dir.
pub(super) fn rootfs(
    l: &Loaded,
    g: &Group,
    dir: &Path,
) -> Result<(RootfsSpec, Vec<BindSpec>), PodError> {
    let mut binds = Vec::new();
    let image = defaults::image(g);
    let rootfs = if image == defaults::HOST_IMAGE {
        let entries = agent_rootfs::host_rootfs(Path::new("/")).map_err(|e| PodError::Launch {
            group: String::new(),
            message: e.to_string(),
        })?;
        // The host image also shows the system file's directory (agents' code), read-only.
        let dir =
            std::fs::canonicalize(&l.dir).map_err(io(format!("resolve {}", l.dir.display())))?;
        binds.push(BindSpec {
            source: dir.clone(),
            target: dir,
            readonly: true,
        });
        RootfsSpec::Host(
            entries
                .into_iter()
                .map(|e| match e {
                    agent_rootfs::HostEntry::Dir(d) => RootEntry::Dir(d),
                    agent_rootfs::HostEntry::Symlink { path, target } => {
                        RootEntry::Symlink { path, target }
                    }
                })
                .collect(),
        )
    } else {
        // Layers unpacked once into a shared cache, stacked with overlayfs (a fresh upper per
        // start) or, without overlayfs, unpacked into a copy.
        let info = image_info(l, g)?;
        let launch = |message: String| PodError::Launch {
            group: String::new(),
            message,
        };
        let layers = info
            .layers
            .iter()
            .map(|li| {
                let media = agent_rootfs::Compression::from_media_type(&li.descriptor.media_type)
                    .ok_or_else(|| {
                    launch(format!(
                        "image {image}: layer {} has media type {} we cannot unpack",
                        li.descriptor.digest, li.descriptor.media_type
                    ))
                })?;
                Ok(agent_rootfs::LayerRef {
                    digest: li.descriptor.digest.to_string(),
                    blob: li.path.clone(),
                    media,
                })
            })
            .collect::<Result<Vec<_>, PodError>>()?;
        let cache = defaults::daemon(&l.system, &g.host)
            .state_dir
            .join("layers");
        // A fresh upper and work directory per start: the overlay of the previous start may
        // live on for a moment in its dying mount namespace, and overlayfs refuses a work
        // directory in use.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prepared = agent_rootfs::prepare_rootfs(
            &layers,
            &cache,
            &dir.join(format!("image-{nonce}")),
            true,
        )
        .map_err(|e| launch(format!("image {image}: {e}")))?;
        match prepared
            .overlay_mount_data()
            .map_err(|e| launch(format!("image {image}: {e}")))?
        {
            Some(data) => RootfsSpec::Overlay { data },
            None => match prepared {
                agent_rootfs::PreparedRootfs::Copy { dir } => RootfsSpec::Dir {
                    path: dir,
                    readonly: false,
                },
                agent_rootfs::PreparedRootfs::Overlay { .. } => {
                    return Err(launch(format!("image {image}: overlay without mount data")))
                }
            },
        }
    };
    for b in &g.binds {
        let source = std::fs::canonicalize(l.resolve(&b.source))
            .map_err(io(format!("bind source {}", b.source.display())))?;
        binds.push(BindSpec {
            source,
            target: b.target.clone(),
            readonly: b.readonly,
        });
    }
    Ok((rootfs, binds))
}
