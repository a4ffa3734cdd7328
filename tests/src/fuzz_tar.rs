//! Hostile tar archives for the fuzz targets of the unpacker and the archive readers
//! (`docs/fuzzing.md`): entries bolero generates, written header by header without the `tar`
//! crate's path checks (`..` paths, absolute paths, symlinks out and files written through
//! them, hard links out, whiteouts, device nodes, sizes larger than the data), and a
//! snapshot of a directory tree to prove nothing was written outside a target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bolero::TypeGenerator;

/// One entry of a generated archive; indices pick from the dictionaries below (modulo).
#[derive(Debug, Clone, TypeGenerator)]
pub struct TarEntry {
    pub kind: EntryKind,
    /// Index into [`PATHS`] and [`TarDict::paths`] (or, past their end, a path built from
    /// [`NAMES`]).
    pub path: u16,
    /// Symlink or hard-link target: index into [`TARGETS`].
    pub target: u8,
    /// Contents: index into the data dictionary ([`TarDict::data`]).
    pub data: u8,
    pub mode: u16,
    /// Claim a size this much larger than the data (0: the true size).
    pub lie: u8,
}

/// The entry's type.
#[derive(Debug, Clone, Copy, TypeGenerator)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// `.wh.NAME` beside the entry's path.
    Whiteout,
    /// `.wh..wh..opq` in the entry's directory.
    Opaque,
    /// A PAX header that renames the next entry.
    PaxPath,
    /// A GNU long-name entry for the next entry.
    GnuLongName,
    /// A type byte that is none of the above.
    Other(u8),
}

/// Entry paths that try to leave the target, or name the same place twice.
pub const PATHS: &[&str] = &[
    "a",
    "a/b",
    "a/b/c",
    "d",
    "d/f",
    "link",
    "link/f",
    "link/a/b",
    "../x",
    "../../x",
    "OUT/abs",
    "OUT/../abs",
    "a/../../x",
    "a/../b",
    ".",
    "./",
    "",
    "./a",
    "a//b",
    "a/./b",
    "lnk2/x",
    "link/../../x",
    "up",
    "up/escaped",
    "hl",
    ".wh.a",
    "a/.wh.b",
    ".wh..wh..opq",
    "a/.wh..wh..opq",
    ".wh.",
    "a/.wh.",
    ".wh...",
    "..",
    "a/..",
    "/",
    "//",
    "dev",
    "fifo",
    "manifest.json",
    "index.json",
    "oci-layout",
    "repositories",
    "config.json",
    "layer.tar",
    "l/layer.tar",
    "blobs/sha256/0000000000000000000000000000000000000000000000000000000000000000",
    "blobs/sha256/..",
    "blobs/sha256/../../x",
];
/// Path components for generated paths.
pub const NAMES: &[&str] = &[
    "a", "b", "..", ".", "link", "up", "", "\u{e9}", "x y", "\\", "*",
];
/// Link targets. `OUT` (here and in [`PATHS`]) is replaced by the absolute path of a
/// directory that must stay untouched: the targets run as root on developer machines, so no
/// absolute path or `..` chain of the dictionaries reaches out of the caller's temporary
/// directory even if the code under test followed it (keep the target 6 levels below it).
pub const TARGETS: &[&str] = &[
    "a",
    "a/b",
    "link",
    "up",
    "..",
    "../..",
    "../../..",
    "OUT",
    "OUT/secret",
    "OUT/x",
    "OUT/..",
    "../OUT",
    "link/..",
    "",
    ".",
    "a/../../..",
    "hl",
    "d/f",
    "manifest.json",
    "layer.tar",
];

/// The data entries get; the archive readers' own formats are added by each target.
#[derive(Debug, Clone)]
pub struct TarDict {
    pub data: Vec<Vec<u8>>,
    /// Entry paths of the caller's format (`blobs/sha256/<digest>` of its blobs, say).
    pub paths: Vec<String>,
    pub outside: PathBuf,
}

impl TarDict {
    /// A dictionary whose link targets `OUT` mean `outside`, with `data` plus a few blobs.
    pub fn new(outside: &Path, mut data: Vec<Vec<u8>>) -> TarDict {
        data.extend([
            Vec::new(),
            b"x".to_vec(),
            vec![0u8; 513],
            b"ESCAPED".to_vec(),
            b"{}".to_vec(),
            b"[]".to_vec(),
        ]);
        TarDict {
            data,
            paths: Vec::new(),
            outside: outside.to_path_buf(),
        }
    }

    /// The same with the entry paths `paths` added to [`PATHS`].
    pub fn with_paths(mut self, paths: Vec<String>) -> TarDict {
        self.paths = paths;
        self
    }

    fn path(&self, i: u16) -> String {
        // Mostly the dictionaries, else one of 64 generated paths.
        let i = i as usize % (PATHS.len() + self.paths.len() + 64);
        if i < PATHS.len() {
            return PATHS[i].replace("OUT", &self.outside.display().to_string());
        }
        if let Some(p) = self.paths.get(i - PATHS.len()) {
            return p.clone();
        }
        // Past the dictionaries: a path of up to 4 components from the bits of `i`.
        let mut parts = Vec::new();
        let mut n = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24) as usize;
        for _ in 0..=(n % 4) {
            n /= 4;
            parts.push(NAMES[n % NAMES.len()]);
            n /= NAMES.len();
        }
        parts.join("/")
    }

    fn target(&self, i: u8) -> String {
        let t = TARGETS[i as usize % TARGETS.len()];
        t.replace("OUT", &self.outside.display().to_string())
    }

    /// The bytes of a tar archive of `entries` (at most 64), ended by two zero blocks.
    pub fn build(&self, entries: &[TarEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries.iter().take(64) {
            let path = self.path(e.path);
            let data = &self.data[e.data as usize % self.data.len()];
            let (kind, name, link, body): (tar::EntryType, String, String, &[u8]) = match e.kind {
                EntryKind::File => (tar::EntryType::Regular, path, String::new(), data),
                EntryKind::Dir => (tar::EntryType::Directory, path, String::new(), &[]),
                EntryKind::Symlink => (tar::EntryType::Symlink, path, self.target(e.target), &[]),
                EntryKind::Hardlink => (tar::EntryType::Link, path, self.target(e.target), &[]),
                EntryKind::Char => (tar::EntryType::Char, path, String::new(), &[]),
                EntryKind::Block => (tar::EntryType::Block, path, String::new(), &[]),
                EntryKind::Fifo => (tar::EntryType::Fifo, path, String::new(), &[]),
                EntryKind::Whiteout => {
                    let (dir, base) = path.rsplit_once('/').unwrap_or(("", &path));
                    let name = if dir.is_empty() {
                        format!(".wh.{base}")
                    } else {
                        format!("{dir}/.wh.{base}")
                    };
                    (tar::EntryType::Regular, name, String::new(), &[])
                }
                EntryKind::Opaque => {
                    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                    let name = if dir.is_empty() {
                        ".wh..wh..opq".to_string()
                    } else {
                        format!("{dir}/.wh..wh..opq")
                    };
                    (tar::EntryType::Regular, name, String::new(), &[])
                }
                EntryKind::PaxPath => {
                    let record = pax_record("path", &self.target(e.target));
                    out.extend(raw_entry(
                        tar::EntryType::XHeader,
                        "pax",
                        "",
                        &record,
                        e.mode,
                        0,
                    ));
                    continue;
                }
                EntryKind::GnuLongName => {
                    let mut long = self.target(e.target).into_bytes();
                    long.push(0);
                    out.extend(raw_entry(
                        tar::EntryType::GNULongName,
                        "././@LongLink",
                        "",
                        &long,
                        e.mode,
                        0,
                    ));
                    continue;
                }
                EntryKind::Other(b) => (tar::EntryType::new(b), path, String::new(), data),
            };
            let lie = if e.lie == 255 {
                // A size no disk has.
                1u64 << 40
            } else {
                u64::from(e.lie) * 512
            };
            out.extend(raw_entry(kind, &name, &link, body, e.mode, lie));
        }
        out.extend([0u8; 1024]);
        out
    }
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    // `LEN key=value\n`, LEN counting itself.
    let rest = format!(" {key}={value}\n");
    let mut len = rest.len() + 1;
    while format!("{len}{rest}").len() != len {
        len += 1;
    }
    format!("{len}{rest}").into_bytes()
}

/// One header (names written as they are, cut to the field) and the data, padded.
fn raw_entry(
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
    mode: u16,
    lie: u64,
) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = name.as_bytes();
        let k = n.len().min(old.name.len());
        old.name[..k].copy_from_slice(&n[..k]);
        let l = link.as_bytes();
        let k = l.len().min(old.linkname.len());
        old.linkname[..k].copy_from_slice(&l[..k]);
    }
    h.set_entry_type(kind);
    h.set_mode(u32::from(mode) & 0o7777);
    h.set_size(data.len() as u64 + lie);
    h.set_mtime(0);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.resize(out.len() + pad, 0);
    out
}

/// What a directory tree holds: every path below it with its type, size and mode, and
/// file contents (symlinks are not followed).
pub type Snapshot = BTreeMap<PathBuf, String>;

/// A [`Snapshot`] of `dir`, leaving out the paths for which `skip` is true.
pub fn snapshot(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Snapshot {
    let mut out = Snapshot::new();
    walk(dir, skip, &mut out);
    out
}

fn walk(dir: &Path, skip: &dyn Fn(&Path) -> bool, out: &mut Snapshot) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if skip(&p) {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let what = if md.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(&p).ok())
        } else if md.is_file() {
            let data = std::fs::read(&p).unwrap_or_default();
            format!("file {:o} {} {:?}", md.mode(), md.nlink(), data)
        } else {
            format!("{:o} {}", md.mode(), md.nlink())
        };
        out.insert(p.clone(), what);
        if md.is_dir() {
            walk(&p, skip, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_written_as_they_are() {
        let d = TarDict::new(Path::new("/nowhere"), Vec::new());
        let e = TarEntry {
            kind: EntryKind::Symlink,
            path: PATHS.iter().position(|p| *p == "../x").expect("a path") as u16,
            target: TARGETS.iter().position(|p| *p == "OUT").expect("a target") as u8,
            data: 0,
            mode: 0o777,
            lie: 0,
        };
        let bytes = d.build(&[e]);
        let mut ar = tar::Archive::new(bytes.as_slice());
        let mut entries = ar.entries().expect("entries");
        let first = entries.next().expect("one entry").expect("a good entry");
        assert_eq!(first.path_bytes().as_ref(), b"../x");
        assert_eq!(
            first.link_name_bytes().as_deref(),
            Some(b"/nowhere".as_slice())
        );
        assert!(entries.next().is_none());
    }

    #[test]
    fn pax_records_count_their_own_length() {
        assert_eq!(pax_record("path", "a"), b"9 path=a\n".to_vec());
        for n in [1, 90, 95, 200] {
            let r = pax_record("path", &"x".repeat(n));
            let text = String::from_utf8(r.clone()).expect("ASCII");
            let len = text.split(' ').next().expect("a length");
            assert_eq!(len, r.len().to_string(), "{text:?}");
        }
    }
}
