//! The `host-closure` base: named host binaries, Debian packages (`dpkg -L`) and host paths,
//! copied with the shared libraries they need (`ldd`), symlinks kept as symlinks.
//!
//! Offline and fast: nothing is downloaded; the layer is made of host files. Its cache key is
//! made of every entry's path, mode and link target and, for files, size, mtime, inode and
//! device, so an `apt upgrade` of one of them rebuilds the layer.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::digest::{Digest, KeyHasher};
use crate::layer::{add_parents, Entry, Source, Tree};

/// Why the closure cannot be gathered.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("binary {0:?} not found on the host (searched /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; give an absolute path for others)")]
    NoBinary(String),
    #[error("host path {0} does not exist")]
    NoPath(PathBuf),
    #[error("dpkg -L {packages}: {message}")]
    Dpkg { packages: String, message: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: symlink loop")]
    Loop { path: PathBuf },
}

/// The gathered base layer.
#[derive(Debug, Default)]
pub struct Closure {
    pub tree: Tree,
    pub key: Option<Digest>,
    /// Libraries `ldd` reported as not found, as `library (needed by path)`.
    pub warnings: Vec<String>,
}

/// Directories every host-closure image has (mount points and `/tmp`).
const SKELETON: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
];

/// Gathers binaries, packages and paths with their library closure.
///
/// `memo_dir`, when given, keeps `ldd`'s answers keyed by the ELF files' metadata, so an
/// unchanged closure is gathered without running `ldd` (a file whose metadata changed gives a
/// new key; the libraries' own metadata is in the layer key either way).
pub fn gather(
    binaries: &[String],
    packages: &[String],
    paths: &[String],
    memo_dir: Option<&Path>,
) -> Result<Closure, ClosureError> {
    let mut c = Closure::default();
    for (d, mode) in SKELETON {
        c.tree.insert(
            d.to_string(),
            Entry {
                mode: *mode,
                source: Source::Dir,
            },
        );
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    for b in binaries {
        roots.push(find_binary(b)?);
    }
    for p in paths {
        let p = PathBuf::from(p);
        if std::fs::symlink_metadata(&p).is_err() {
            return Err(ClosureError::NoPath(p));
        }
        roots.push(p);
    }
    if !packages.is_empty() {
        roots.extend(dpkg_list(packages)?);
    }
    let mut seen = BTreeSet::new();
    for r in &roots {
        add_host_path(&mut c.tree, r, &mut seen, 0, true)?;
    }
    // Shared-library closure of every ELF file gathered so far (one `ldd` run).
    let elves: Vec<(PathBuf, ElfInfo)> = c
        .tree
        .values()
        .filter_map(|e| match &e.source {
            Source::File(p) if e.mode & 0o111 != 0 || is_so_name(p) => Some(p.clone()),
            _ => None,
        })
        .filter_map(|p| elf_info(&p).map(|i| (p, i)))
        .collect();
    let elf_paths: Vec<PathBuf> = elves.iter().map(|(p, _)| p.clone()).collect();
    let memo = match memo_dir {
        Some(dir) => Some(dir.join(format!("ldd-{}.json", metadata_key(&elf_paths)?.hex()))),
        None => None,
    };
    let remembered: Option<(BTreeSet<PathBuf>, Vec<String>)> = memo
        .as_ref()
        .and_then(|m| std::fs::read(m).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|(libs, _): &(BTreeSet<PathBuf>, Vec<String>)| {
            libs.iter().all(|l| std::fs::symlink_metadata(l).is_ok())
        });
    let (libs, warnings) = match remembered {
        Some(r) => r,
        None => {
            let mut warnings = Vec::new();
            let libs = shared_libraries(&elves, &mut warnings)?;
            if let Some(m) = &memo {
                // Only a speed-up: a memo that cannot be written is recomputed next time.
                if let Ok(bytes) = serde_json::to_vec(&(&libs, &warnings)) {
                    let tmp = crate::layer::temp_path(m.parent().unwrap_or(Path::new("/tmp")));
                    if std::fs::write(&tmp, bytes).is_ok() {
                        let _ = std::fs::rename(&tmp, m);
                    }
                }
            }
            (libs, warnings)
        }
    };
    c.warnings = warnings;
    for lib in libs {
        add_host_path(&mut c.tree, &lib, &mut seen, 0, false)?;
    }
    c.key = Some(key(&c.tree)?);
    Ok(c)
}

fn is_so_name(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().contains(".so"))
}

/// What the library closure needs to know about an ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ElfInfo {
    /// `EI_CLASS` (1: 32-bit, 2: 64-bit), `EI_DATA` (byte order) and `e_machine`.
    class: u8,
    data: u8,
    machine: u16,
    /// Has a `PT_DYNAMIC` segment (links shared libraries at run time).
    dynamic: bool,
    /// The `PT_INTERP` path (programs only).
    interp: Option<PathBuf>,
}

/// The dynamic loader an ELF file names (`PT_INTERP`): `None` if `p` is not a readable ELF
/// file, `Some(None)` for a static executable or a library.
pub fn elf_interpreter(p: &Path) -> Option<Option<PathBuf>> {
    elf_info(p).map(|i| i.interp)
}

/// Reads the ELF header and program headers of `p`; `None` if it is not an ELF file.
fn elf_info(p: &Path) -> Option<ElfInfo> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(p).ok()?;
    let mut h = [0u8; 64];
    let n = read_up_to(&mut f, &mut h)?;
    if n < 52 || h[..4] != *b"\x7fELF" {
        return None;
    }
    let (class, data) = (h[4], h[5]);
    let u16_at = |b: &[u8], o: usize| -> Option<u16> {
        let a: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(if data == 2 {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        })
    };
    let u32_at = |b: &[u8], o: usize| -> Option<u32> {
        let a: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(if data == 2 {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    };
    let u64_at = |b: &[u8], o: usize| -> Option<u64> {
        let a: [u8; 8] = b.get(o..o + 8)?.try_into().ok()?;
        Some(if data == 2 {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        })
    };
    let machine = u16_at(&h, 18)?;
    // (phoff, phentsize, phnum) and, per program header, (type, offset, filesz) offsets.
    let ((phoff, phentsize, phnum), (o_off, o_size)) = match class {
        1 => (
            (u64::from(u32_at(&h, 28)?), u16_at(&h, 42)?, u16_at(&h, 44)?),
            (4, 16),
        ),
        2 if n >= 64 => ((u64_at(&h, 32)?, u16_at(&h, 54)?, u16_at(&h, 56)?), (8, 32)),
        _ => return None,
    };
    let mut info = ElfInfo {
        class,
        data,
        machine,
        dynamic: false,
        interp: None,
    };
    let entsize = usize::from(phentsize);
    if entsize < if class == 1 { 32 } else { 56 } {
        return Some(info);
    }
    let mut ph = vec![0u8; entsize * usize::from(phnum)];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut ph).ok()?;
    let at = |b: &[u8], o: usize| -> Option<u64> {
        if class == 1 {
            u32_at(b, o).map(u64::from)
        } else {
            u64_at(b, o)
        }
    };
    for e in ph.chunks_exact(entsize) {
        match u32_at(e, 0)? {
            2 => info.dynamic = true,
            3 => {
                let (off, size) = (at(e, o_off)?, at(e, o_size)?.min(4096));
                let mut s = vec![0u8; usize::try_from(size).ok()?];
                f.seek(SeekFrom::Start(off)).ok()?;
                f.read_exact(&mut s).ok()?;
                let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                s.truncate(end);
                info.interp = Some(PathBuf::from(
                    <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(s),
                ));
            }
            _ => {}
        }
    }
    Some(info)
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(n)
}

fn find_binary(name: &str) -> Result<PathBuf, ClosureError> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p
            .exists()
            .then_some(p)
            .ok_or_else(|| ClosureError::NoBinary(name.to_string()));
    }
    // The system PATH, not the builder's: the image must not depend on who builds it.
    let found = agent_launch::DEFAULT_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found.ok_or_else(|| ClosureError::NoBinary(name.to_string()))
}

/// The files and symlinks of installed packages (directories come as parents).
fn dpkg_list(packages: &[String]) -> Result<Vec<PathBuf>, ClosureError> {
    let out = Command::new("dpkg")
        .arg("-L")
        .args(packages)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| ClosureError::Spawn {
            program: "dpkg",
            source,
        })?;
    if !out.status.success() {
        return Err(ClosureError::Dpkg {
            packages: packages.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('/') && *l != "/.")
        .map(PathBuf::from)
        .filter(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir() || m.file_type().is_symlink())
        })
        .collect())
}

/// Libraries needed by the dynamically linked `files`.
///
/// `ldd` is a shell script that runs the dynamic loader twice per file (`--verify`, then the
/// trace); this asks the loader directly, once per file (`ld.so --list FILE`, the trace `ldd`
/// prints), spread over the CPUs. Only files of this process's own ELF class and machine go to
/// its loader (`PT_INTERP` of `/proc/self/exe`); any other file, or every file when this
/// process has no loader, goes to `ldd`. Static files need nothing.
fn shared_libraries(
    files: &[(PathBuf, ElfInfo)],
    warnings: &mut Vec<String>,
) -> Result<BTreeSet<PathBuf>, ClosureError> {
    let mut libs = BTreeSet::new();
    let own = elf_info(Path::new("/proc/self/exe"));
    let loader = own
        .as_ref()
        .and_then(|o| o.interp.clone())
        .filter(|l| l.is_file());
    let mut direct = Vec::new();
    let mut rest = Vec::new();
    for (p, info) in files.iter().filter(|(_, i)| i.dynamic) {
        // Same class, byte order and machine, and this loader (or none: a library); a file
        // with another loader (musl, say) is ldd's.
        let same = own
            .as_ref()
            .is_some_and(|o| (o.class, o.data, o.machine) == (info.class, info.data, info.machine))
            && (info.interp.is_none()
                || info.interp == own.as_ref().and_then(|o| o.interp.clone()));
        if same && loader.is_some() {
            direct.push(p.clone());
        } else {
            rest.push(p.clone());
        }
    }
    if let Some(loader) = &loader {
        for (file, out) in direct.iter().zip(loader_list(loader, &direct)?) {
            parse_trace(&out, &file.display().to_string(), &mut libs, warnings);
        }
    }
    libs.extend(ldd(&rest, warnings)?);
    Ok(libs)
}

/// `loader --list FILE` for every file, on as many threads as there are CPUs; the outputs in
/// the order of `files`.
fn loader_list(loader: &Path, files: &[PathBuf]) -> Result<Vec<Vec<u8>>, ClosureError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(files.len().max(1));
    let run = |f: &PathBuf| -> Result<Vec<u8>, ClosureError> {
        // The exit status is not checked: like ldd's, the trace is usable when a library is
        // missing (it says `not found`), and that becomes a warning.
        Command::new(loader)
            .arg("--list")
            .arg(f)
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .map(|o| o.stdout)
            .map_err(|source| ClosureError::Io {
                path: loader.to_path_buf(),
                source,
            })
    };
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(run).collect::<Result<Vec<_>, _>>()))
            .collect();
        let mut out = Vec::with_capacity(files.len());
        for h in handles {
            out.extend(h.join().expect("a loader thread does not panic")?);
        }
        Ok(out)
    })
}

/// Libraries needed by `files`, from one `ldd` run.
fn ldd(files: &[PathBuf], warnings: &mut Vec<String>) -> Result<BTreeSet<PathBuf>, ClosureError> {
    let mut libs = BTreeSet::new();
    if files.is_empty() {
        return Ok(libs);
    }
    let out = Command::new("ldd")
        .args(files)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| ClosureError::Spawn {
            program: "ldd",
            source,
        })?;
    // ldd exits non-zero when one file is not dynamic; its output is still usable.
    let first = files
        .first()
        .map(|f| f.display().to_string())
        .unwrap_or_default();
    parse_trace(&out.stdout, &first, &mut libs, warnings);
    Ok(libs)
}

/// Parses the loader's trace (`name => /path (addr)` lines; `file:` headers when `ldd` was
/// given several files) into `libs`; missing libraries become warnings.
fn parse_trace(out: &[u8], first: &str, libs: &mut BTreeSet<PathBuf>, warnings: &mut Vec<String>) {
    let mut current = Some(first.to_string());
    for line in String::from_utf8_lossy(out).lines() {
        if !line.starts_with(char::is_whitespace) && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_string());
            continue;
        }
        let l = line.trim();
        if let Some((name, rest)) = l.split_once(" => ") {
            if rest.starts_with("not found") {
                warnings.push(format!(
                    "{name} (needed by {}) not found on the host",
                    current.as_deref().unwrap_or("?")
                ));
            } else if let Some(p) = rest.split(" (").next().filter(|p| p.starts_with('/')) {
                libs.insert(PathBuf::from(p));
            }
        } else if l.starts_with('/') {
            if let Some(p) = l.split(" (").next() {
                libs.insert(PathBuf::from(p));
            }
        }
    }
}

/// Lexically joins a symlink's target onto the directory holding the link.
fn resolve(link_dir: &Path, target: &Path) -> PathBuf {
    let mut out = if target.is_absolute() {
        PathBuf::from("/")
    } else {
        link_dir.to_path_buf()
    };
    for c in target.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
            _ => {}
        }
    }
    out
}

fn image_path(host: &Path) -> String {
    host.to_string_lossy().trim_start_matches('/').to_string()
}

/// Adds a host path: symlinks among its parents and itself become symlink entries and their
/// targets are added too; directories are added recursively when `recurse`.
fn add_host_path(
    tree: &mut Tree,
    path: &Path,
    seen: &mut BTreeSet<(PathBuf, bool)>,
    depth: u32,
    recurse: bool,
) -> Result<(), ClosureError> {
    if depth > 40 {
        return Err(ClosureError::Loop {
            path: path.to_path_buf(),
        });
    }
    if seen.contains(&(path.to_path_buf(), true)) || !seen.insert((path.to_path_buf(), recurse)) {
        return Ok(());
    }
    // A symlinked parent (usrmerge's /lib -> usr/lib): keep the link, continue at its target.
    let mut prefix = PathBuf::from("/");
    let comps: Vec<_> = path.components().skip(1).collect();
    for (i, c) in comps.iter().enumerate().take(comps.len().saturating_sub(1)) {
        prefix.push(c);
        let m = std::fs::symlink_metadata(&prefix).map_err(|source| ClosureError::Io {
            path: prefix.clone(),
            source,
        })?;
        if m.file_type().is_symlink() {
            add_host_path(tree, &prefix, seen, depth + 1, false)?;
            let link_dir = prefix.parent().unwrap_or(Path::new("/"));
            let target = std::fs::read_link(&prefix).map_err(|source| ClosureError::Io {
                path: prefix.clone(),
                source,
            })?;
            let mut real = resolve(link_dir, &target);
            for rest in &comps[i + 1..] {
                real.push(rest);
            }
            return add_host_path(tree, &real, seen, depth + 1, recurse);
        }
    }
    let m = std::fs::symlink_metadata(path).map_err(|source| ClosureError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let rel = image_path(path);
    if rel.is_empty() {
        return Ok(());
    }
    add_parents(tree, &rel);
    let mode = m.mode() & 0o7777;
    let ft = m.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(|source| ClosureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        tree.insert(
            rel,
            Entry {
                mode: 0o777,
                source: Source::Symlink(target.clone()),
            },
        );
        let real = resolve(path.parent().unwrap_or(Path::new("/")), &target);
        if std::fs::symlink_metadata(&real).is_ok() {
            add_host_path(tree, &real, seen, depth + 1, recurse)?;
        }
    } else if ft.is_dir() {
        tree.insert(
            rel,
            Entry {
                mode,
                source: Source::Dir,
            },
        );
        if recurse {
            let mut names: Vec<_> = std::fs::read_dir(path)
                .map_err(|source| ClosureError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .filter_map(Result::ok)
                .map(|d| d.path())
                .collect();
            names.sort();
            for n in names {
                add_host_path(tree, &n, seen, depth + 1, true)?;
            }
        }
    } else if ft.is_file() {
        tree.insert(
            rel,
            Entry {
                mode: mode & 0o777,
                source: Source::File(path.to_path_buf()),
            },
        );
    }
    // Sockets, FIFOs and devices of the host are never copied.
    Ok(())
}

/// A key made of files' paths and metadata.
fn metadata_key(files: &[PathBuf]) -> Result<Digest, ClosureError> {
    let mut h = KeyHasher::new();
    h.field("ldd v1");
    for p in files {
        let m = std::fs::metadata(p).map_err(|source| ClosureError::Io {
            path: p.clone(),
            source,
        })?;
        h.field(p.as_os_str().as_encoded_bytes())
            .field(m.len().to_le_bytes())
            .field(m.mtime().to_le_bytes())
            .field(m.mtime_nsec().to_le_bytes())
            .field(m.ino().to_le_bytes());
    }
    Ok(h.finish())
}

/// The cache key of a gathered closure (metadata, not content; see the module docs).
fn key(tree: &Tree) -> Result<Digest, ClosureError> {
    let mut h = KeyHasher::new();
    for (path, e) in tree {
        h.field(path).field(e.mode.to_le_bytes());
        match &e.source {
            Source::Dir => {
                h.field("d");
            }
            Source::Symlink(t) => {
                h.field("l").field(t.as_os_str().as_encoded_bytes());
            }
            Source::File(p) => {
                let m = std::fs::metadata(p).map_err(|source| ClosureError::Io {
                    path: p.clone(),
                    source,
                })?;
                h.field("f")
                    .field(m.len().to_le_bytes())
                    .field(m.mtime().to_le_bytes())
                    .field(m.mtime_nsec().to_le_bytes())
                    .field(m.ino().to_le_bytes())
                    .field(m.dev().to_le_bytes());
            }
        }
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loader asked directly gives the same libraries and warnings as `ldd` itself.
    #[test]
    fn loader_trace_matches_ldd() {
        let mut files: Vec<PathBuf> = ["/usr/bin/python3", "/bin/sh", "/usr/bin/ldd"]
            .iter()
            .map(PathBuf::from)
            .collect();
        if let Ok(rd) = std::fs::read_dir("/usr/lib/python3.11/lib-dynload") {
            files.extend(rd.filter_map(Result::ok).map(|d| d.path()));
        }
        let elves: Vec<(PathBuf, ElfInfo)> = files
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .filter_map(|p| elf_info(&p).map(|i| (p, i)))
            .collect();
        // /usr/bin/ldd is a shell script: not an ELF file.
        assert!(elf_info(Path::new("/usr/bin/ldd")).is_none());
        if elves.is_empty() {
            assert!(std::env::var_os("CI").is_none(), "no ELF files found");
            eprintln!("skipped: none of {files:?} is an ELF file");
            return;
        }
        let (mut w1, mut w2) = (Vec::new(), Vec::new());
        let direct = shared_libraries(&elves, &mut w1).expect("loader trace");
        let paths: Vec<PathBuf> = elves.iter().map(|(p, _)| p.clone()).collect();
        let reference = ldd(&paths, &mut w2).expect("ldd");
        assert!(direct
            .iter()
            .any(|l| l.to_string_lossy().contains("libc.so")));
        assert_eq!(direct, reference);
        w1.sort();
        w2.sort();
        assert_eq!(w1, w2);
    }

    #[test]
    fn resolve_is_lexical() {
        assert_eq!(
            resolve(Path::new("/usr/bin"), Path::new("../lib/x")),
            PathBuf::from("/usr/lib/x")
        );
        assert_eq!(
            resolve(Path::new("/"), Path::new("usr/lib")),
            PathBuf::from("/usr/lib")
        );
        assert_eq!(
            resolve(Path::new("/a"), Path::new("/etc/alternatives/x")),
            PathBuf::from("/etc/alternatives/x")
        );
    }
}
