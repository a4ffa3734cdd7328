//! The `debootstrap` base: a Debian root file system made by the real `debootstrap` from the
//! host's apt sources, turned into one reproducible layer and cached in the store's step cache.
//!
//! The cache key is (suite, variant, mirror, include, architecture) plus the layer settings
//! (compression, level, entry mtime), so a rebuild finds the layer without running
//! `debootstrap`. `debootstrap` runs in a private mount namespace (`unshare --mount`), so the
//! `/proc` and `/sys` it mounts in the tree never reach the host's mount table, and the tree
//! lives in a temporary directory of the store that is always removed (never across a mount).
//!
//! What the layer leaves out of the tree: downloaded `.deb` files and apt's package lists and
//! caches, the files under `/var/log`, `*-old` backups of dpkg and debconf, ldconfig's
//! `aux-cache`, and the host's `/etc/hostname` and `/etc/resolv.conf` that `debootstrap`
//! copies in. Device nodes, FIFOs and sockets are skipped (`/dev` is the launcher's); setuid
//! and setgid bits are dropped (agents run with `no_new_privs`); everything is owned by root.

mod sources;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::build::BuildOptions;
use crate::digest::{Digest, KeyHasher};
use crate::layer::{self, Entry, LayerError, Source, Tree};
use crate::oci::{host_architecture, Descriptor};
use crate::recipe::Recipe;
use crate::store::write_atomic;
use crate::Store;

pub use sources::{host_codename, host_mirror};

/// The debootstrap variant used when the recipe names none.
pub const DEFAULT_VARIANT: &str = "minbase";
/// The variants a recipe may name (`default` runs debootstrap without `--variant`).
pub const VARIANTS: &[&str] = &["minbase", "buildd", "default"];

/// Why the debootstrap base could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DebootstrapError {
    #[error("debootstrap is not installed (install the Debian package `debootstrap`: apt-get install debootstrap)")]
    NotInstalled,
    #[error(
        "suite: not set and the host's {path} has no VERSION_CODENAME; set `suite:` in the recipe"
    )]
    NoSuite { path: PathBuf },
    #[error("mirror: not set and the host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list, *.sources) name no `deb` URI; set `mirror:` in the recipe")]
    NoMirror,
    #[error("`{command}` failed ({status}); the end of its output:\n{tail}")]
    Failed {
        command: String,
        status: String,
        tail: String,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the layer: {0}")]
    Layer(#[from] LayerError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DebootstrapError + '_ {
    move |source| DebootstrapError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to debootstrap, with every default resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub suite: String,
    pub variant: String,
    pub mirror: String,
    /// Sorted and without duplicates.
    pub include: Vec<String>,
    /// The Debian architecture (`amd64`, `arm64`, ...).
    pub arch: String,
}

impl Spec {
    /// The recipe's `suite`, `variant`, `mirror` and `include`, defaults taken from the host.
    pub fn from_recipe(recipe: &Recipe) -> Result<Spec, DebootstrapError> {
        let suite = match &recipe.suite {
            Some(s) => s.clone(),
            None => host_codename(Path::new("/etc/os-release")).ok_or_else(|| {
                DebootstrapError::NoSuite {
                    path: PathBuf::from("/etc/os-release"),
                }
            })?,
        };
        let mirror = match &recipe.mirror {
            Some(m) => m.clone(),
            None => host_mirror(Path::new("/etc/apt"), &suite).ok_or(DebootstrapError::NoMirror)?,
        };
        let mut include = recipe.include.clone();
        include.sort();
        include.dedup();
        Ok(Spec {
            suite,
            variant: recipe
                .variant
                .clone()
                .unwrap_or_else(|| DEFAULT_VARIANT.to_string()),
            mirror,
            include,
            arch: debian_arch().to_string(),
        })
    }

    /// How the base is shown in reports and history.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "debootstrap suite={} variant={} arch={} mirror={}",
            self.suite, self.variant, self.arch, self.mirror
        );
        if !self.include.is_empty() {
            s.push_str(&format!(" include={}", self.include.join(",")));
        }
        s
    }

    /// The `debootstrap` arguments (target directory last but one, mirror last).
    fn args(&self, target: &Path) -> Vec<String> {
        let mut a = Vec::new();
        // A Release file that cannot be verified fails the build (debootstrap would only
        // warn): the packages' maintainer scripts run as root on this host.
        a.push("--force-check-gpg".to_string());
        if self.variant != "default" {
            a.push(format!("--variant={}", self.variant));
        }
        a.push(format!("--arch={}", self.arch));
        if !self.include.is_empty() {
            a.push(format!("--include={}", self.include.join(",")));
        }
        a.push(self.suite.clone());
        a.push(target.to_string_lossy().into_owned());
        a.push(self.mirror.clone());
        a
    }

    /// The step cache key of the layer made with these layer settings.
    fn key(&self, opts: &BuildOptions) -> Digest {
        let mut k = KeyHasher::new();
        k.field("agent-images debootstrap v1")
            .field(&self.suite)
            .field(&self.variant)
            .field(&self.mirror)
            .field(self.include.join(","))
            .field(&self.arch)
            .field(opts.compression.name())
            .field(format!("{:?}", opts.level))
            .field(opts.source_date_epoch.to_le_bytes());
        k.finish()
    }
}

/// The Debian name of this machine's architecture.
fn debian_arch() -> &'static str {
    match host_architecture() {
        "ppc64le" => "ppc64el",
        "arm" => "armhf",
        other => other,
    }
}

/// A step cache entry; the same shape as the builder's, so `prune` treats it alike.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    layer: Descriptor,
    diff_id: Digest,
}

/// The base layer and how it was obtained.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    /// `false` when it came from the step cache (no debootstrap ran).
    pub built: bool,
    /// Bytes of files archived (0 when cached).
    pub bytes_read: u64,
    pub warnings: Vec<String>,
}

/// The layer of `spec`: from the step cache, or made by running `debootstrap`.
pub fn base_layer(
    store: &Store,
    spec: &Spec,
    opts: &BuildOptions,
) -> Result<BaseLayer, DebootstrapError> {
    let key = spec.key(opts);
    let entry_path = store.cache_dir().join(format!("{}.json", key.hex()));
    if !opts.no_cache {
        let cached = std::fs::read(&entry_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
            .filter(|e| {
                std::fs::metadata(store.blob_path(&e.layer.digest))
                    .is_ok_and(|m| m.len() == e.layer.size)
            });
        if let Some(e) = cached {
            return Ok(BaseLayer {
                descriptor: e.layer,
                diff_id: e.diff_id,
                built: false,
                bytes_read: 0,
                warnings: Vec::new(),
            });
        }
    }
    let program = find_debootstrap().ok_or(DebootstrapError::NotInstalled)?;
    let tmp = TempTree::create(store.root())?;
    let target = tmp.0.join("root");
    run_debootstrap(&program, spec, &target, &tmp.0.join("output.log"))?;
    let tree = tree_of(&target)?;
    let blob = layer::write_layer(
        &tree.tree,
        opts.compression,
        opts.level,
        opts.source_date_epoch,
        &store.blobs_dir(),
    )?;
    let mut warnings = Vec::new();
    if tree.skipped > 0 {
        warnings.push(format!(
            "debootstrap: {} device nodes, FIFOs or sockets left out of the layer",
            tree.skipped
        ));
    }
    let entry = CacheEntry {
        layer: blob.descriptor.clone(),
        diff_id: blob.diff_id.clone(),
    };
    // A cache entry that cannot be written only costs a debootstrap next time.
    if let Ok(bytes) = serde_json::to_vec(&entry) {
        if let Err(e) = write_atomic(&entry_path, &bytes) {
            warnings.push(format!("debootstrap: cache entry not saved: {e}"));
        }
    }
    if let Err(e) = tmp.remove() {
        warnings.push(format!("debootstrap: temporary tree not removed: {e}"));
    }
    Ok(BaseLayer {
        descriptor: blob.descriptor,
        diff_id: blob.diff_id,
        built: true,
        bytes_read: blob.bytes_read,
        warnings,
    })
}

/// `debootstrap` in the standard system directories (never the caller's `PATH`).
fn find_debootstrap() -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join("debootstrap"))
        .find(|p| p.is_file())
}

fn run_debootstrap(
    program: &Path,
    spec: &Spec,
    target: &Path,
    log: &Path,
) -> Result<(), DebootstrapError> {
    let out = File::create(log).map_err(io_err(log))?;
    let err = out.try_clone().map_err(io_err(log))?;
    let args = spec.args(target);
    let command = format!("{} {}", program.display(), args.join(" "));
    // A private mount namespace: whatever debootstrap mounts in the tree dies with it.
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(program)
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|source| DebootstrapError::Spawn {
            program: "unshare (util-linux)".to_string(),
            source,
        })?;
    if status.success() {
        return Ok(());
    }
    let mut tail = tail_lines(log, 20);
    let inner = target.join("debootstrap").join("debootstrap.log");
    if inner.is_file() {
        tail.push_str(&format!("\n-- {} --\n", "debootstrap/debootstrap.log"));
        tail.push_str(&tail_lines(&inner, 20));
    }
    Err(DebootstrapError::Failed {
        command,
        status: status.to_string(),
        tail,
    })
}

/// The last `n` lines of a file (at most its last 64 KiB are read).
fn tail_lines(path: &Path, n: usize) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 << 10)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The tree of the layer, and how many entries were skipped.
struct Gathered {
    tree: Tree,
    skipped: usize,
}

/// Whether an entry of the debootstrapped tree stays out of the layer.
fn dropped(rel: &str, is_dir: bool) -> bool {
    if is_dir {
        return false;
    }
    let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    matches!(
        rel,
        "etc/hostname" | "etc/resolv.conf" | "var/cache/ldconfig/aux-cache"
    ) || (dir == "var/cache/apt/archives" && name.ends_with(".deb"))
        || (dir == "var/cache/apt" && name.ends_with(".bin"))
        || dir == "var/lib/apt/lists"
        || rel.starts_with("var/log/")
        || ((dir == "var/lib/dpkg" || dir == "var/cache/debconf") && name.ends_with("-old"))
}

/// Walks the debootstrapped tree into a layer tree (no symlink followed, no mount crossed).
fn tree_of(root: &Path) -> Result<Gathered, DebootstrapError> {
    let dev = std::fs::symlink_metadata(root).map_err(io_err(root))?.dev();
    let mut g = Gathered {
        tree: Tree::new(),
        skipped: 0,
    };
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let ft = m.file_type();
            if dropped(&rel, ft.is_dir()) {
                continue;
            }
            let mode = m.mode() & 0o7777;
            let source = if ft.is_dir() {
                if m.dev() == dev {
                    stack.push((path.clone(), rel.clone()));
                }
                Source::Dir
            } else if ft.is_symlink() {
                Source::Symlink(std::fs::read_link(&path).map_err(io_err(&path))?)
            } else if ft.is_file() {
                Source::File(path.clone())
            } else {
                debug_assert!(
                    ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket()
                );
                g.skipped += 1;
                continue;
            };
            let mode = match source {
                Source::Dir => mode,
                _ => mode & !0o6000,
            };
            g.tree.insert(rel, Entry { mode, source });
        }
    }
    Ok(g)
}

/// A temporary directory in the store, removed when dropped (unless a mount is below it).
struct TempTree(PathBuf);

impl TempTree {
    fn create(store_root: &Path) -> Result<TempTree, DebootstrapError> {
        let p = layer::temp_path(store_root);
        let p = p.with_file_name(format!(
            "{}-debootstrap",
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ));
        std::fs::create_dir(&p).map_err(io_err(&p))?;
        Ok(TempTree(p))
    }

    fn remove(mut self) -> Result<(), DebootstrapError> {
        let p = std::mem::take(&mut self.0);
        remove_tree(&p)
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = remove_tree(&self.0);
        }
    }
}

/// Removes `path` recursively, refusing when something is mounted below it (removing through
/// a leaked bind mount of `/dev` or `/proc` would reach the host).
fn remove_tree(path: &Path) -> Result<(), DebootstrapError> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err(Path::new("/proc/self/mountinfo")))?;
    let prefix = format!("{}/", path.display());
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|mp| mp.starts_with(&prefix) || *mp == path.to_string_lossy())
    {
        return Err(DebootstrapError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(format!(
                "{m} is mounted below it; unmount it and remove the directory by hand"
            )),
        });
    }
    std::fs::remove_dir_all(path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_caches_and_host_files_are_left_out() {
        for p in [
            "var/cache/apt/archives/bash_5.2_amd64.deb",
            "var/cache/apt/pkgcache.bin",
            "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
            "var/log/dpkg.log",
            "var/log/apt/history.log",
            "var/lib/dpkg/status-old",
            "etc/resolv.conf",
        ] {
            assert!(dropped(p, false), "{p}");
        }
        for p in [
            "var/lib/dpkg/status",
            "etc/debian_version",
            "usr/bin/dpkg",
            "var/cache/apt/archives/lock",
        ] {
            assert!(!dropped(p, false), "{p}");
        }
        assert!(!dropped("var/log/apt", true));
    }
}
