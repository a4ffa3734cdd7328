//! The `run` step: a command executed inside the image being built, in a sandbox the caller
//! provides ([`StepRunner`], the launcher of `agent-supervisor`), whose writes land in an
//! overlayfs upper directory that becomes the step's layer.
//!
//! The runner stacks the image's layers read-only under an empty upper directory and runs
//! the command with the image's environment, working directory and user. What the command
//! changed is then read from the upper directory: new and changed files as they are,
//! overlayfs whiteouts (character devices 0:0) as OCI `.wh.<name>` entries, and opaque
//! directories (`trusted.overlay.opaque=y`) as `.wh..wh..opq`.
//!
//! The step's cache key is the parent layer, the command and the configuration it runs with
//! (environment, working directory, user): like Docker, what the command fetches from the
//! network is not part of the key, so `--no-cache` reruns it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{BuildError, Builder, Image};
use crate::digest::KeyHasher;
use crate::layer::{Entry, Source, Tree};

/// Runs a `run` step's command in a sandbox over the image's layers.
pub trait StepRunner: Send + Sync {
    /// Runs `req.argv` with `req.layers` (bottom first) stacked read-only under `req.upper`
    /// (writable, initially empty; `req.work` is overlayfs's work directory on the same file
    /// system) and returns when it ended. `Err` says why it failed, e.g. its exit status
    /// and the tail of its output.
    fn run(&self, req: &RunRequest<'_>) -> Result<(), RunError>;
}

/// Why a `run` step did not give a layer.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// This step cannot run here: an image user other than root, a kernel without
    /// overlayfs, a build without the sandboxed launcher.
    #[error("{0}")]
    Unsupported(String),
    /// Setting up or tearing down the sandbox failed; `what` names the part of it.
    #[error("{what}: {message}")]
    Sandbox { what: String, message: String },
    /// A file-system operation on `path` failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The command ran and did not succeed; `output` quotes the tail of what it printed.
    #[error("the command {argv:?} {how}{output}")]
    Command {
        argv: Vec<String>,
        how: String,
        output: String,
    },
    /// The command left something in the upper directory that a layer cannot hold.
    #[error("{path}: {message}")]
    Upper { path: String, message: String },
}

impl RunError {
    /// An [`RunError::Io`] for `op` on `path`.
    pub fn io<'p>(
        op: &'static str,
        path: &'p Path,
    ) -> impl FnOnce(std::io::Error) -> RunError + 'p {
        move |source| RunError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One layer of the image a `run` step sits on.
#[derive(Debug, Clone)]
pub struct RunLayer {
    pub digest: String,
    pub blob: PathBuf,
    pub media_type: String,
}

/// What a [`StepRunner`] runs.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    /// The recipe's path and the step number, to name in messages.
    pub recipe: &'a Path,
    pub step: usize,
    pub layers: Vec<RunLayer>,
    pub argv: &'a [String],
    /// `KEY=VALUE`, as the image's config has them so far.
    pub env: &'a [String],
    pub workdir: Option<&'a str>,
    pub user: Option<&'a str>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Paths the launcher creates as mount points when the image lacks them; dropped from a
/// `run` step's layer when they are all it left there (an empty directory or file).
const MOUNT_POINTS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "tmp",
    "run",
    "var/tmp",
    "var",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
];

impl Builder<'_> {
    /// Builds the layer of a `run` step (from the cache when its key is known).
    pub(super) fn run_step(
        &mut self,
        index: usize,
        what: &str,
        argv: &[String],
        image: &mut Image,
        t: Instant,
    ) -> Result<(), BuildError> {
        let rc = &image.config.config;
        let mut k = KeyHasher::new();
        k.field("run v1");
        argv.iter().for_each(|a| {
            k.field(a);
        });
        k.field("env");
        rc.env.iter().for_each(|e| {
            k.field(e);
        });
        k.field(rc.working_dir.as_deref().unwrap_or("-"))
            .field(rc.user.as_deref().unwrap_or("-"));
        let content = k.finish();
        let entry = self.cache_entry_path(image, what, &content, false);
        if !self.opts.no_cache && self.cached(&entry).is_some() {
            return self.layer(index, what, &content, None, image, t);
        }
        let fail = |error: RunError| BuildError::Run {
            recipe: self.recipe_path.to_path_buf(),
            step: index,
            what: what.to_string(),
            error: Box::new(error),
        };
        let runner = self.opts.runner.clone().ok_or_else(|| {
            fail(RunError::Unsupported(
                "a run step needs the sandboxed launcher: build with `agent-supervisor build`"
                    .into(),
            ))
        })?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self
            .store
            .root()
            .join("tmp")
            .join(format!("run-{}-{nonce}", std::process::id()));
        let result = self.run_in(&dir, &runner, index, what, argv, image, &content, t);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                self.report
                    .warnings
                    .push(format!("step {index}: remove {}: {e}", dir.display()));
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn run_in(
        &mut self,
        dir: &Path,
        runner: &std::sync::Arc<dyn StepRunner>,
        index: usize,
        what: &str,
        argv: &[String],
        image: &mut Image,
        content: &crate::digest::Digest,
        t: Instant,
    ) -> Result<(), BuildError> {
        let fail = |error: RunError| BuildError::Run {
            recipe: self.recipe_path.to_path_buf(),
            step: index,
            what: what.to_string(),
            error: Box::new(error),
        };
        let (upper, work, empty) = (dir.join("upper"), dir.join("work"), dir.join("empty"));
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).map_err(|e| fail(RunError::io("create", d)(e)))?;
        }
        std::fs::write(&empty, b"").map_err(|e| fail(RunError::io("create", &empty)(e)))?;
        let rc = &image.config.config;
        let req = RunRequest {
            recipe: self.recipe_path,
            step: index,
            layers: image
                .layers
                .iter()
                .map(|d| RunLayer {
                    digest: d.digest.to_string(),
                    blob: self.store.blob_path(&d.digest),
                    media_type: d.media_type.clone(),
                })
                .collect(),
            argv,
            env: &rc.env,
            workdir: rc.working_dir.as_deref().filter(|w| !w.is_empty()),
            user: rc.user.as_deref().filter(|u| !u.is_empty()),
            upper: upper.clone(),
            work,
        };
        runner.run(&req).map_err(fail)?;
        let tree = upper_tree(&upper, &empty).map_err(fail)?;
        self.layer(index, what, content, Some(&tree), image, t)
    }
}

/// The layer content of an overlayfs upper directory: files, directories and symlinks as
/// they are; whiteouts and opaque directories in their OCI form (`empty` is an empty file
/// the whiteout entries are read from). Launcher mount points left empty are dropped.
pub fn upper_tree(upper: &Path, empty: &Path) -> Result<Tree, RunError> {
    let mut tree = Tree::new();
    let mut stack = vec![(upper.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(RunError::io("read", &dir))?;
        for ent in rd {
            let ent = ent.map_err(RunError::io("read", &dir))?;
            let name = ent.file_name();
            let name = name.to_str().ok_or_else(|| RunError::Upper {
                path: ent.path().display().to_string(),
                message: "the name is not UTF-8".to_string(),
            })?;
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let host = ent.path();
            let md = std::fs::symlink_metadata(&host).map_err(RunError::io("stat", &host))?;
            let ft = md.file_type();
            let mode = md.mode() & 0o7777;
            let whiteout_name = || {
                if rel.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{rel}/.wh.{name}")
                }
            };
            // Overlayfs features that leave an incomplete upper (a metadata-only copy, a
            // renamed directory pointing at its lower) are turned off for run steps; refuse
            // rather than ship a file without its data should a kernel still use them.
            for x in ["trusted.overlay.metacopy", "trusted.overlay.redirect"] {
                if has_xattr(&host, x) {
                    return Err(RunError::Upper {
                        path,
                        message: format!(
                            "overlayfs left it as {x}, not a full copy; mount the overlay \
                             with metacopy=off,redirect_dir=off"
                        ),
                    });
                }
            }
            if ft.is_dir() {
                tree.insert(
                    path.clone(),
                    Entry {
                        mode,
                        source: Source::Dir,
                    },
                );
                if opaque(&host) {
                    tree.insert(
                        format!("{path}/.wh..wh..opq"),
                        Entry {
                            mode: 0o644,
                            source: Source::File(empty.to_path_buf()),
                        },
                    );
                }
                stack.push((host, path));
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&host).map_err(RunError::io("read link", &host))?;
                tree.insert(
                    path,
                    Entry {
                        mode: 0o777,
                        source: Source::Symlink(target),
                    },
                );
            } else if ft.is_file() {
                if MOUNT_POINTS.contains(&path.as_str()) && md.len() == 0 {
                    continue;
                }
                tree.insert(
                    path,
                    Entry {
                        mode,
                        source: Source::File(host),
                    },
                );
            } else if ft.is_char_device() && md.rdev() == 0 {
                tree.insert(
                    whiteout_name(),
                    Entry {
                        mode: 0o644,
                        source: Source::File(empty.to_path_buf()),
                    },
                );
            } else {
                return Err(RunError::Upper {
                    path,
                    message: "the command left a special file (device, fifo or socket) in the \
                              image; layers hold files, directories and symlinks only"
                        .to_string(),
                });
            }
        }
    }
    // Mount point directories the launcher made (deepest first), when nothing else is in them.
    for m in MOUNT_POINTS {
        let prefix = format!("{m}/");
        if tree.get(*m).is_some_and(|e| e.source == Source::Dir)
            && !tree.keys().any(|k| k.starts_with(&prefix))
        {
            tree.remove(*m);
        }
    }
    Ok(tree)
}

/// Whether `p` (not followed) has the extended attribute `name`.
fn has_xattr(p: &Path, name: &str) -> bool {
    let (Ok(c), Ok(n)) = (CString::new(p.as_os_str().as_bytes()), CString::new(name)) else {
        return false;
    };
    // SAFETY: `c` and `n` are NUL-terminated strings that live across the call; a null buffer
    // of size 0 asks only for the value's size.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    r >= 0
}

/// Whether overlayfs marked the directory opaque (it replaced a lower directory whole).
fn opaque(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 4];
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let name = CString::new(*name).expect("xattr names have no NUL");
            // SAFETY: `c` and `name` are NUL-terminated strings that live across the call;
            // `buf` is a writable buffer of the length passed.
            let n = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            n == 1 && buf[0] == b'y'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_tree_maps_files_whiteouts_and_opaque_dirs() {
        let tmp = std::env::temp_dir().join(format!("as-upper-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let up = tmp.join("upper");
        std::fs::create_dir_all(up.join("app/sub")).expect("mkdir");
        std::fs::create_dir_all(up.join("proc")).expect("mkdir");
        std::fs::create_dir_all(up.join("etc")).expect("mkdir");
        std::fs::write(up.join("etc/hosts"), b"").expect("write");
        std::fs::write(up.join("app/sub/f.txt"), b"x").expect("write");
        std::os::unix::fs::symlink("sub/f.txt", up.join("app/l")).expect("symlink");
        let empty = tmp.join("empty");
        std::fs::write(&empty, b"").expect("write");
        let root = nix_is_root();
        if root {
            // A whiteout as overlayfs writes it: a 0:0 character device.
            nix::sys::stat::mknod(
                &up.join("app/gone"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                0,
            )
            .expect("mknod whiteout");
            let d = CString::new(up.join("app/sub").as_os_str().as_bytes()).expect("path");
            let n = CString::new("trusted.overlay.opaque").expect("name");
            // SAFETY: valid NUL-terminated strings and a 1-byte value that live across the call.
            let r = unsafe { libc::lsetxattr(d.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
            assert_eq!(r, 0, "set opaque xattr");
        }
        let t = upper_tree(&up, &empty).expect("tree");
        assert!(!t.contains_key("proc"), "empty mount point dropped");
        assert!(!t.contains_key("etc/hosts"), "empty bind target dropped");
        assert!(t.contains_key("etc"));
        assert_eq!(
            t["app/sub/f.txt"].source,
            Source::File(up.join("app/sub/f.txt"))
        );
        assert_eq!(
            t["app/l"].source,
            Source::Symlink(PathBuf::from("sub/f.txt"))
        );
        if root {
            assert_eq!(t["app/.wh.gone"].source, Source::File(empty.clone()));
            assert!(t.contains_key("app/sub/.wh..wh..opq"));
            assert!(!t.contains_key("app/gone"));
        } else {
            eprintln!("skipped the whiteout half: creating a 0:0 device needs root");
        }
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }

    fn nix_is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }
}
