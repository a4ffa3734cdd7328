//! Writing one layer: a sorted file tree to a reproducible tar, compressed, stored as a blob.
//!
//! Every entry has uid/gid 0, empty user/group names and the same mtime (the build's
//! `source_date_epoch`, 0 by default); entries are in path order, so parents come before
//! children; the gzip header has no mtime and no file name. Same tree, same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Digest, HashWriter};
use crate::oci::{Descriptor, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD};

/// How layers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    /// Plain tar (fastest, biggest).
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_LAYER_GZIP,
            Compression::Zstd => MEDIA_LAYER_ZSTD,
            Compression::None => MEDIA_LAYER_TAR,
        }
    }

    /// The name used in cache keys and messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression {other:?} (use gzip, zstd or none)"
            )),
        }
    }
}

/// What an entry of a layer is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Dir,
    /// A regular file, read from this host path when the layer is written.
    File(PathBuf),
    Symlink(PathBuf),
}

/// One entry of a layer: permission bits and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub source: Source,
}

/// A layer's content: image path (relative, `/`-separated, no leading `/`) to entry.
pub type Tree = BTreeMap<String, Entry>;

/// Adds the parent directories of `path` (mode 0755) that are not in the tree yet.
pub fn add_parents(tree: &mut Tree, path: &str) {
    for (i, _) in path.match_indices('/') {
        tree.entry(path[..i].to_string()).or_insert(Entry {
            mode: 0o755,
            source: Source::Dir,
        });
    }
}

/// The bytes of the regular files of `tree` (what writing it reads), by their current size.
pub fn file_bytes(tree: &Tree) -> u64 {
    tree.values()
        .filter_map(|e| match &e.source {
            Source::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            _ => None,
        })
        .sum()
}

/// A written layer.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Bytes read from source files.
    pub bytes_read: u64,
}

/// Why a layer could not be written; `path` is the host file or the blob.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LayerError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| LayerError {
        path: path.to_path_buf(),
        source,
    }
}

/// A reader yielding exactly `remaining` bytes, failing if the file shrank meanwhile.
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

enum Encoder<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

/// zstd worker threads: one per CPU, at most 4 (a layer is rarely big enough for more).
fn zstd_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4) as u32)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary file name in `dir` (same file system as the blob it becomes).
pub fn temp_path(dir: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{}-{n}", std::process::id()))
}

/// Moves a finished temporary file to `blobs/sha256/<hex>` (or drops it if the blob exists).
pub fn commit_blob(tmp: &Path, blobs: &Path, digest: &Digest) -> Result<PathBuf, LayerError> {
    let dst = blobs.join(digest.hex());
    if dst.exists() {
        std::fs::remove_file(tmp).map_err(err(tmp))?;
    } else {
        std::fs::rename(tmp, &dst).map_err(err(&dst))?;
    }
    Ok(dst)
}

/// Called with the running total of bytes read from files while a layer is written.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// Writes `tree` as a layer blob into `blobs` (the `blobs/sha256` directory).
pub fn write_layer(
    tree: &Tree,
    compression: Compression,
    level: Option<i32>,
    mtime: u64,
    blobs: &Path,
) -> Result<LayerBlob, LayerError> {
    write_layer_with_progress(tree, compression, level, mtime, blobs, &mut |_| {})
}

/// [`write_layer`], calling `progress` after each file with the bytes read so far.
pub fn write_layer_with_progress(
    tree: &Tree,
    compression: Compression,
    level: Option<i32>,
    mtime: u64,
    blobs: &Path,
    progress: Progress<'_>,
) -> Result<LayerBlob, LayerError> {
    let tmp = temp_path(blobs);
    let result = write_layer_to(tree, compression, level, mtime, &tmp, progress);
    let (diff_id, digest, size, bytes_read) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    commit_blob(&tmp, blobs, &digest)?;
    Ok(LayerBlob {
        descriptor: Descriptor::new(compression.media_type(), digest, size),
        diff_id,
        bytes_read,
    })
}

fn write_layer_to(
    tree: &Tree,
    compression: Compression,
    level: Option<i32>,
    mtime: u64,
    tmp: &Path,
    progress: Progress<'_>,
) -> Result<(Digest, Digest, u64, u64), LayerError> {
    let file = File::create(tmp).map_err(err(tmp))?;
    let outer = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
    let enc = match compression {
        Compression::Gzip => {
            let lvl = level.map_or(flate2::Compression::default(), |l| {
                flate2::Compression::new(l.clamp(0, 9) as u32)
            });
            // No mtime, no file name: GzBuilder writes a zero mtime by default.
            Encoder::Gzip(flate2::GzBuilder::new().write(outer, lvl))
        }
        Compression::Zstd => {
            let mut e = zstd::Encoder::new(outer, level.unwrap_or(3)).map_err(err(tmp))?;
            // Compression on worker threads while this one reads, tars and hashes. The frame
            // is the same for any number of workers >= 1 (zstd cuts jobs by size, not by
            // worker), so the digest does not depend on the machine's CPU count.
            e.multithread(zstd_workers()).map_err(err(tmp))?;
            Encoder::Zstd(e)
        }
        Compression::None => Encoder::None(outer),
    };
    let inner = HashWriter::new(enc);
    let mut builder = tar::Builder::new(inner);
    let mut bytes_read = 0u64;
    for (path, entry) in tree {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(entry.mode);
        match &entry.source {
            Source::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                builder
                    .append_data(&mut h, format!("{path}/"), io::empty())
                    .map_err(err(tmp))?;
            }
            Source::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                builder
                    .append_link(&mut h, path, target)
                    .map_err(err(Path::new(path)))?;
            }
            Source::File(host) => {
                let f = File::open(host).map_err(err(host))?;
                let len = f.metadata().map_err(err(host))?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                builder
                    .append_data(
                        &mut h,
                        path,
                        Exact {
                            inner: f,
                            remaining: len,
                        },
                    )
                    .map_err(err(host))?;
                bytes_read += len;
                progress(bytes_read);
            }
        }
    }
    let inner = builder.into_inner().map_err(err(tmp))?;
    let (enc, diff_id, _) = inner.finish();
    let outer = enc.finish().map_err(err(tmp))?;
    let (mut buf, digest, size) = outer.finish();
    buf.flush().map_err(err(tmp))?;
    let file = buf.into_inner().map_err(|e| err(tmp)(e.into_error()))?;
    file.sync_all().map_err(err(tmp))?;
    Ok((diff_id, digest, size, bytes_read))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layers do not depend on the builder's CPU count: zstd's frame is the same for any
    /// number of workers.
    #[test]
    fn zstd_frames_do_not_depend_on_the_worker_count() {
        // ~12 MiB of compressible but varied data: several zstd jobs.
        let data: Vec<u8> = (0u32..3 << 20)
            .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> (i % 23)).to_le_bytes())
            .collect();
        let frames: Vec<Vec<u8>> = [1, 2, 4]
            .iter()
            .map(|&w| {
                let mut e = zstd::Encoder::new(Vec::new(), 3).expect("encoder");
                e.multithread(w).expect("zstdmt is compiled in");
                e.write_all(&data).expect("compress");
                e.finish().expect("finish")
            })
            .collect();
        assert!(frames[0].len() < data.len());
        assert_eq!(frames[0], frames[1]);
        assert_eq!(frames[0], frames[2]);
    }
}
