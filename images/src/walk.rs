//! Collecting a `copy` step's files from the build context, honouring the ignore rules.
//!
//! Only included paths are ever opened: the walk reads a directory's entries, decides from
//! names alone (`d_type`, no `stat`) which are excluded, and never descends into an excluded
//! directory unless a `!` rule could re-include something below it. [`WalkStats`] counts the
//! directories read and files opened so callers (and tests) can see it.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::digest::{Digest, KeyHasher};
use crate::ignore::Ignore;
use crate::layer::{add_parents, Entry, Source, Tree};

/// What the walk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Directories whose entries were read.
    pub dirs_read: u64,
    /// Files opened to hash their content.
    pub files_opened: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Entries skipped by ignore rules (an excluded directory counts once).
    pub excluded: u64,
}

/// The result of collecting one `copy` step.
#[derive(Debug, Default)]
pub struct Collected {
    pub tree: Tree,
    /// Digest of everything the layer is made from: paths, modes, link targets, contents.
    pub content_key: Option<Digest>,
    /// Python sources: (context-relative path, host path).
    pub py_files: Vec<(String, PathBuf)>,
    pub stats: WalkStats,
}

/// Why a `copy` step cannot collect its files.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("src {src:?} is outside the build context")]
    Outside { src: String },
    #[error("dst {dst:?} must be an absolute path without `..`")]
    BadDst { dst: String },
    #[error(
        "src {src:?} not found in the build context {context} or excluded by the ignore rules"
    )]
    NotFound { src: String, context: PathBuf },
    #[error("{path}: {kind} files cannot be copied into an image")]
    Special { path: PathBuf, kind: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalkError + '_ {
    move |source| WalkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Cleans a context-relative `src`: `/`-separated, no `..` escaping, `""` for the root.
fn clean_rel(src: &str) -> Result<String, WalkError> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(src.trim_start_matches('/')).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(WalkError::Outside {
                        src: src.to_string(),
                    });
                }
            }
            Component::Prefix(_) => {
                return Err(WalkError::Outside {
                    src: src.to_string(),
                })
            }
        }
    }
    Ok(out.join("/"))
}

/// Cleans an absolute image path into the relative form used in trees (`""` is `/`).
pub fn clean_dst(dst: &str) -> Result<String, WalkError> {
    let bad = || WalkError::BadDst {
        dst: dst.to_string(),
    };
    if !dst.starts_with('/') {
        return Err(bad());
    }
    let mut out = Vec::new();
    for c in dst.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad()),
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// Collects `src` (relative to `context`) for copying to `dst` (absolute, in the image).
///
/// A directory's contents go under `dst`; a file goes to `dst`, or into it if `dst` ends in `/`.
pub fn collect(
    context: &Path,
    ignore: &Ignore,
    src: &str,
    dst: &str,
) -> Result<Collected, WalkError> {
    let rel = clean_rel(src)?;
    let dst_rel = clean_dst(dst)?;
    let not_found = || WalkError::NotFound {
        src: src.to_string(),
        context: context.to_path_buf(),
    };
    if !rel.is_empty() && ignore.is_excluded(&rel) && ignore.can_prune(&rel) {
        return Err(not_found());
    }
    let host = if rel.is_empty() {
        context.to_path_buf()
    } else {
        context.join(&rel)
    };
    // A symlink among src's parents must not lead out of the context.
    let canon_ctx = context.canonicalize().map_err(io(context))?;
    if let Some(parent) = host.parent().filter(|_| !rel.is_empty()) {
        let canon = parent.canonicalize().map_err(|_| not_found())?;
        if !canon.starts_with(&canon_ctx) {
            return Err(WalkError::Outside {
                src: src.to_string(),
            });
        }
    }
    let meta = std::fs::symlink_metadata(&host).map_err(|_| not_found())?;
    let mut c = Collected::default();
    if meta.is_dir() {
        if !dst_rel.is_empty() {
            add_parents(&mut c.tree, &dst_rel);
            c.tree.insert(dst_rel.clone(), entry_for(&host, &meta)?);
        }
        walk_dir(ignore, &rel, &host, &dst_rel, &mut c)?;
    } else {
        if ignore.is_excluded(&rel) {
            return Err(not_found());
        }
        let name = host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = if dst.ends_with('/') || dst_rel.is_empty() {
            join(&dst_rel, &name)
        } else {
            dst_rel.clone()
        };
        add_parents(&mut c.tree, &target);
        let e = entry_for(&host, &meta)?;
        note_py(&rel, &host, &e, &mut c);
        c.tree.insert(target, e);
    }
    c.content_key = Some(hash_tree(&mut c)?);
    Ok(c)
}

fn note_py(rel: &str, host: &Path, e: &Entry, c: &mut Collected) {
    if matches!(e.source, Source::File(_)) && rel.ends_with(".py") {
        c.py_files.push((rel.to_string(), host.to_path_buf()));
    }
}

fn entry_for(host: &Path, meta: &std::fs::Metadata) -> Result<Entry, WalkError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mode = meta.permissions().mode() & 0o777;
    let ft = meta.file_type();
    let source = if ft.is_dir() {
        Source::Dir
    } else if ft.is_file() {
        Source::File(host.to_path_buf())
    } else if ft.is_symlink() {
        Source::Symlink(std::fs::read_link(host).map_err(io(host))?)
    } else {
        let kind = if ft.is_fifo() {
            "FIFO"
        } else if ft.is_socket() {
            "socket"
        } else {
            "device"
        };
        return Err(WalkError::Special {
            path: host.to_path_buf(),
            kind,
        });
    };
    Ok(Entry { mode, source })
}

/// Depth-first, sorted walk of `host` (context-relative `rel`) into `dst` of the image.
fn walk_dir(
    ignore: &Ignore,
    rel: &str,
    host: &Path,
    dst: &str,
    c: &mut Collected,
) -> Result<(), WalkError> {
    c.stats.dirs_read += 1;
    let mut names = Vec::new();
    for de in std::fs::read_dir(host).map_err(io(host))? {
        let de = de.map_err(io(host))?;
        // d_type from readdir: no stat of entries that turn out to be excluded.
        let is_dir = de.file_type().map_err(io(&de.path()))?.is_dir();
        names.push((de.file_name().to_string_lossy().into_owned(), is_dir));
    }
    names.sort();
    for (name, is_dir) in names {
        let child_rel = join(rel, &name);
        let child_host = host.join(&name);
        let child_dst = join(dst, &name);
        let excluded = ignore.is_excluded(&child_rel);
        if excluded && (!is_dir || ignore.can_prune(&child_rel)) {
            c.stats.excluded += 1;
            continue;
        }
        let meta = std::fs::symlink_metadata(&child_host).map_err(io(&child_host))?;
        if meta.is_dir() {
            if !excluded {
                c.tree
                    .insert(child_dst.clone(), entry_for(&child_host, &meta)?);
            }
            let before = c.tree.len();
            walk_dir(ignore, &child_rel, &child_host, &child_dst, c)?;
            if excluded && c.tree.len() > before {
                // Re-included files below an excluded directory: it exists as their parent.
                add_parents(&mut c.tree, &join(&child_dst, "x"));
            }
        } else {
            let e = entry_for(&child_host, &meta)?;
            note_py(&child_rel, &child_host, &e, c);
            c.tree.insert(child_dst, e);
        }
    }
    Ok(())
}

/// Hashes the tree: every path, mode, kind, link target and file content.
fn hash_tree(c: &mut Collected) -> Result<Digest, WalkError> {
    let mut h = KeyHasher::new();
    let mut buf = vec![0u8; 1 << 16];
    for (path, e) in &c.tree {
        h.field(path).field(e.mode.to_le_bytes());
        match &e.source {
            Source::Dir => {
                h.field("d");
            }
            Source::Symlink(t) => {
                h.field("l").field(t.as_os_str().as_encoded_bytes());
            }
            Source::File(host) => {
                h.field("f");
                let mut f = std::fs::File::open(host).map_err(io(host))?;
                c.stats.files_opened += 1;
                let mut len = 0u64;
                loop {
                    let n = f.read(&mut buf).map_err(io(host))?;
                    if n == 0 {
                        break;
                    }
                    h.raw(&buf[..n]);
                    len += n as u64;
                }
                h.field(len.to_le_bytes());
                c.stats.bytes_hashed += len;
            }
        }
    }
    Ok(h.finish())
}
