//! Helpers of the layer tests: raw tar writing (so hostile paths the `tar` crate's builder
//! refuses can be written), temporary directories, tree snapshots, root checks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use agent_rootfs::Compression;

/// One tar entry to write.
pub enum E<'a> {
    Dir(&'a str),
    DirMode(&'a str, u32),
    File(&'a str, &'a str),
    /// path, content, mode, uid, gid, mtime
    FileMeta(&'a str, &'a str, u32, u64, u64, u64),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str, u32, u32),
    /// A PAX extended header (`key=value` records) for the next entry.
    Pax(&'a [(&'a str, &'a [u8])]),
}

fn put(field: &mut [u8], s: &[u8]) {
    assert!(s.len() <= field.len(), "name too long for a raw header");
    field.fill(0);
    field[..s.len()].copy_from_slice(s);
}

/// A header with `path` and `link` written as raw bytes: no sanitising.
pub fn raw_header(path: &str, ty: tar::EntryType, link: &str, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    put(&mut h.as_old_mut().name, path.as_bytes());
    put(&mut h.as_old_mut().linkname, link.as_bytes());
    h.set_cksum();
    h
}

/// The raw (uncompressed) tar bytes of `entries`.
pub fn tar_bytes(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (tar::Header, Vec<u8>) = match e {
            E::Dir(p) => (
                raw_header(p, tar::EntryType::Directory, "", 0, 0o755),
                vec![],
            ),
            E::DirMode(p, m) => (raw_header(p, tar::EntryType::Directory, "", 0, *m), vec![]),
            E::File(p, c) => (
                raw_header(p, tar::EntryType::Regular, "", c.len() as u64, 0o644),
                c.as_bytes().to_vec(),
            ),
            E::FileMeta(p, c, mode, uid, gid, mtime) => {
                let mut h = raw_header(p, tar::EntryType::Regular, "", c.len() as u64, *mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_mtime(*mtime);
                h.set_cksum();
                (h, c.as_bytes().to_vec())
            }
            E::Sym(p, t) => (raw_header(p, tar::EntryType::Symlink, t, 0, 0o777), vec![]),
            E::Hard(p, t) => (raw_header(p, tar::EntryType::Link, t, 0, 0o644), vec![]),
            E::Char(p, maj, min) => {
                let mut h = raw_header(p, tar::EntryType::Char, "", 0, 0o666);
                h.set_device_major(*maj)
                    .expect("gnu header has device fields");
                h.set_device_minor(*min)
                    .expect("gnu header has device fields");
                h.set_cksum();
                (h, vec![])
            }
            E::Pax(recs) => {
                let mut data = Vec::new();
                for (k, v) in recs.iter() {
                    let body = 1 + k.len() + 1 + v.len() + 1; // ' ' k '=' v '\n'
                    let mut len = body + 1;
                    while len != body + len.to_string().len() {
                        len = body + len.to_string().len();
                    }
                    data.extend_from_slice(format!("{len} {k}=").as_bytes());
                    data.extend_from_slice(v);
                    data.push(b'\n');
                }
                let h = raw_header(
                    "PaxHeaders/x",
                    tar::EntryType::XHeader,
                    "",
                    data.len() as u64,
                    0o644,
                );
                (h, data)
            }
        };
        b.append(&h, data.as_slice()).expect("append to a Vec");
    }
    b.into_inner().expect("finish tar")
}

/// Writes `entries` as a layer blob at `path`, compressed as `media` says.
pub fn write_layer(path: &Path, entries: &[E], media: Compression) {
    let raw = tar_bytes(entries);
    let bytes = match media {
        Compression::None => raw,
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&raw).expect("gzip");
            enc.finish().expect("gzip")
        }
        Compression::Zstd => zstd::stream::encode_all(raw.as_slice(), 1).expect("zstd"),
    };
    std::fs::write(path, bytes).expect("write layer blob");
}

/// A temporary directory removed on drop (unmounting nothing: tests unmount themselves).
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "rfs-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create test dir");
        TestDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A new sub-directory.
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p).expect("create sub dir");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tree as `relative path -> kind`: `d`, `f:<content>`, `l:<target>`, `c:<maj>:<min>`.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    names.sort();
    for p in names {
        let rel = p
            .strip_prefix(root)
            .expect("below root")
            .display()
            .to_string();
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        let v = if ft.is_symlink() {
            format!("l:{}", std::fs::read_link(&p).expect("readlink").display())
        } else if ft.is_dir() {
            walk(root, &p, out);
            "d".into()
        } else if ft.is_char_device() {
            format!("c:{}:{}", m.rdev() >> 8, m.rdev() & 0xff)
        } else {
            format!("f:{}", std::fs::read_to_string(&p).expect("read file"))
        };
        out.insert(rel, v);
    }
}

/// Whether tests needing root can run: skip with a reason when not, fail under `CI`.
pub fn need_root(what: &str) -> bool {
    if nix_is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} needs root, and CI is set");
    }
    eprintln!("skipping {what}: needs root");
    false
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
