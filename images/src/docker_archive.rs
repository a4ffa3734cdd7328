//! `docker-archive:` images: a tar written by `docker save` or `skopeo copy ... docker-archive:F`
//! (a `manifest.json` listing each image's `Config`, `Layers` and `RepoTags`), imported into the
//! store as an OCI image.
//!
//! Layers are streamed from the archive into blobs, never held in memory. They are stored as
//! they are: a plain tar layer as `application/vnd.oci.image.layer.v1.tar` (its digest is its
//! diff_id), a gzip or zstd layer with the matching `+gzip`/`+zstd` type, its diff_id computed by
//! decompressing it on the way in. Every computed diff_id must equal the one in the image's
//! config. The Docker config becomes an OCI config (run config, rootfs, history, platform).
//!
//! An import is remembered in the store's `cache/` under the archive's path, size, mtime,
//! inode and device and the reference: importing an unchanged archive again (every build of a
//! recipe on it) reads nothing but the small manifest and config blobs.
//!
//! Entry names in `manifest.json` are paths inside the archive: an absolute name or one with
//! `..` is refused, as is a name the archive does not hold; symlinks and hard links between
//! entries (newer `docker save` writes them for shared layers) are followed inside the archive.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::{Digest, HashWriter, KeyHasher};
use crate::layer::{commit_blob, temp_path};
use crate::oci::{
    Descriptor, ImageConfig, Manifest, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR,
    MEDIA_LAYER_ZSTD, MEDIA_MANIFEST,
};
use crate::store::{io_err, write_atomic, StoreError};
use crate::Store;

/// The largest `manifest.json` or config we read into memory.
const MAX_JSON: u64 = 16 << 20;
/// How many links are followed to find an entry.
const MAX_LINKS: usize = 16;

/// One image of `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

impl DockerImage {
    fn tags(&self) -> &[String] {
        self.repo_tags.as_deref().unwrap_or(&[])
    }
}

/// What an archive entry is (pass one).
#[derive(Debug, Clone)]
enum Kind {
    File,
    /// A symlink or hard link, with its target as an archive path.
    Link(String),
}

fn bad(path: &Path, message: String) -> StoreError {
    StoreError::Select {
        path: path.to_path_buf(),
        message,
    }
}

/// Splits `FILE[:REF]` where `REF` may itself hold `:` (`name:tag`): `FILE` is the longest
/// prefix naming an existing file.
pub(crate) fn split_source(source: &str) -> (PathBuf, Option<String>) {
    if Path::new(source).exists() {
        return (PathBuf::from(source), None);
    }
    let mut best = None;
    for (i, _) in source.match_indices(':') {
        if Path::new(&source[..i]).is_file() {
            best = Some(i);
        }
    }
    match best {
        Some(i) if i + 1 < source.len() => (
            PathBuf::from(&source[..i]),
            Some(source[i + 1..].to_string()),
        ),
        Some(i) => (PathBuf::from(&source[..i]), None),
        None => (PathBuf::from(source), None),
    }
}

/// Imports the image `source` (`FILE`, `FILE:TAG`, `FILE:NAME:TAG` or `FILE:@INDEX`) names.
pub(crate) fn import_source(store: &Store, source: &str) -> Result<Descriptor, StoreError> {
    let (path, reference) = split_source(source);
    import(store, &path, reference.as_deref())
}

/// Normalises an entry name as the tar stores it (`./a/b/` → `a/b`).
fn entry_name(raw: &str) -> String {
    raw.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Normalises a path inside the archive, refusing absolute paths and `..` that leaves it.
fn inside(base_dir: &str, name: &str) -> Option<String> {
    if name.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = base_dir.split('/').filter(|c| !c.is_empty()).collect();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Checks a name `manifest.json` gives (`field` says which) and finds the file it means.
fn resolve(
    archive: &Path,
    entries: &BTreeMap<String, Kind>,
    field: &str,
    name: &str,
) -> Result<String, StoreError> {
    let hostile = name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|c| c == "..")
        || name.contains('\0');
    if hostile {
        return Err(bad(
            archive,
            format!("manifest.json: {field} {name:?} is not a path inside the archive (absolute or with `..`)"),
        ));
    }
    let mut cur = entry_name(name);
    for _ in 0..MAX_LINKS {
        match entries.get(&cur) {
            Some(Kind::File) => return Ok(cur),
            Some(Kind::Link(target)) => cur = target.clone(),
            None => {
                return Err(bad(
                    archive,
                    format!("manifest.json: {field} {name:?}: the archive has no entry {cur:?}"),
                ))
            }
        }
    }
    Err(bad(
        archive,
        format!("manifest.json: {field} {name:?}: too many links"),
    ))
}

/// Pass one: the entries of the archive and the bytes of `manifest.json` (data is skipped).
fn scan(archive: &Path) -> Result<(BTreeMap<String, Kind>, Vec<u8>), StoreError> {
    let f = File::open(archive).map_err(io_err(archive))?;
    let mut ar = tar::Archive::new(f);
    let mut entries = BTreeMap::new();
    let mut manifest = None;
    for entry in ar.entries_with_seek().map_err(io_err(archive))? {
        let mut entry = entry.map_err(io_err(archive))?;
        let raw = entry.path_bytes();
        let name = entry_name(&String::from_utf8_lossy(&raw));
        let kind = entry.header().entry_type();
        if kind.is_file() {
            if name == "manifest.json" {
                let size = entry.header().size().map_err(io_err(archive))?;
                if size > MAX_JSON {
                    return Err(bad(
                        archive,
                        format!("manifest.json is {size} bytes (more than {MAX_JSON})"),
                    ));
                }
                let mut buf = Vec::new();
                entry.read_to_end(&mut buf).map_err(io_err(archive))?;
                manifest = Some(buf);
            }
            entries.insert(name, Kind::File);
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            // A symlink is relative to its directory, a hard link to the archive root.
            let dir = if kind.is_symlink() {
                name.rsplit_once('/').map_or("", |(d, _)| d)
            } else {
                ""
            };
            if let Some(t) = inside(dir, &target) {
                entries.insert(name, Kind::Link(t));
            }
        }
    }
    let manifest = manifest.ok_or_else(|| {
        bad(
            archive,
            "not a docker archive: no manifest.json (for an OCI archive use oci-archive:)"
                .to_string(),
        )
    })?;
    Ok((entries, manifest))
}

/// Picks the image `reference` names: `@N` (0-based), `NAME:TAG`, `TAG`, or the only one.
fn select<'a>(
    archive: &Path,
    images: &'a [DockerImage],
    reference: Option<&str>,
) -> Result<&'a DockerImage, StoreError> {
    let choices = || {
        images
            .iter()
            .enumerate()
            .map(|(i, im)| match im.tags() {
                [] => format!("@{i} (untagged)"),
                t => format!("@{i} {}", t.join(" ")),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(r) = reference else {
        return match images {
            [one] => Ok(one),
            [] => Err(bad(archive, "manifest.json lists no image".to_string())),
            _ => Err(bad(
                archive,
                format!(
                    "{} images; name one with FILE:NAME:TAG, FILE:TAG or FILE:@INDEX ({})",
                    images.len(),
                    choices()
                ),
            )),
        };
    };
    if let Some(i) = r.strip_prefix('@') {
        return i
            .parse::<usize>()
            .ok()
            .and_then(|i| images.get(i))
            .ok_or_else(|| bad(archive, format!("no image {r} (images: {})", choices())));
    }
    let want = normalise(r);
    let exact: Vec<&DockerImage> = images
        .iter()
        .filter(|im| im.tags().iter().any(|t| normalise(t) == want))
        .collect();
    let by_tag: Vec<&DockerImage> = if exact.is_empty() && !r.contains(':') {
        images
            .iter()
            .filter(|im| im.tags().iter().any(|t| tag_of(t) == r))
            .collect()
    } else {
        exact
    };
    match by_tag.as_slice() {
        [one] => Ok(one),
        [] => Err(bad(
            archive,
            format!("no image tagged {r:?} (images: {})", choices()),
        )),
        _ => Err(bad(
            archive,
            format!(
                "{r:?} matches {} images; name one with NAME:TAG or @INDEX ({})",
                by_tag.len(),
                choices()
            ),
        )),
    }
}

/// `docker.io/library/x:t` and `x:t` are the same; a name without a tag means `:latest`.
fn normalise(r: &str) -> String {
    let r = r
        .strip_prefix("docker.io/library/")
        .or_else(|| r.strip_prefix("docker.io/"))
        .unwrap_or(r);
    let has_tag = r.rsplit_once(':').is_some_and(|(_, t)| !t.contains('/'));
    if has_tag || r.contains('@') {
        r.to_string()
    } else {
        format!("{r}:latest")
    }
}

/// The tag of `name:tag` (empty when there is none).
fn tag_of(r: &str) -> &str {
    match r.rsplit_once(':') {
        Some((_, t)) if !t.contains('/') => t,
        _ => "",
    }
}

/// A writer passing everything to two writers.
struct Tee<A, B>(A, B);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

/// A layer stored as a blob: its descriptor and diff_id.
struct Stored {
    descriptor: Descriptor,
    diff_id: Digest,
}

/// Streams one layer into a temporary blob file; returns media type, digest, size, diff_id.
fn write_layer(r: &mut dyn Read, tmp: &Path) -> io::Result<(&'static str, Digest, u64, Digest)> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let mut input = (&head[..n]).chain(r);
    let file = HashWriter::new(BufWriter::with_capacity(1 << 20, File::create(tmp)?));
    let sink = HashWriter::new(io::sink());
    let (media, file, diff_id) = if head[..n].starts_with(&[0x1f, 0x8b]) {
        let mut tee = Tee(file, flate2::write::MultiGzDecoder::new(sink));
        io::copy(&mut input, &mut tee)?;
        let (_, diff_id, _) = tee.1.finish()?.finish();
        (MEDIA_LAYER_GZIP, tee.0, diff_id)
    } else if head[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
        let mut tee = Tee(file, zstd::stream::write::Decoder::new(sink)?);
        io::copy(&mut input, &mut tee)?;
        tee.1.flush()?;
        let (_, diff_id, _) = tee.1.into_inner().finish();
        (MEDIA_LAYER_ZSTD, tee.0, diff_id)
    } else {
        let mut file = file;
        io::copy(&mut input, &mut file)?;
        (MEDIA_LAYER_TAR, file, Digest::of(b""))
    };
    let (buf, digest, size) = file.finish();
    let f = buf.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    let diff_id = if media == MEDIA_LAYER_TAR {
        digest.clone()
    } else {
        diff_id
    };
    Ok((media, digest, size, diff_id))
}

fn store_layer(store: &Store, r: &mut dyn Read, entry_path: &Path) -> Result<Stored, StoreError> {
    let blobs = store.blobs_dir();
    let tmp = temp_path(&blobs);
    let (media, digest, size, diff_id) = match write_layer(r, &tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(entry_path)(e));
        }
    };
    commit_blob(&tmp, &blobs, &digest).map_err(|e| StoreError::Io {
        path: e.path,
        source: e.source,
    })?;
    Ok(Stored {
        descriptor: Descriptor::new(media, digest, size),
        diff_id,
    })
}

/// Pass two: reads the config and streams the layers named in `wanted`.
fn read_entries(
    store: &Store,
    archive: &Path,
    config_name: &str,
    layer_names: &[String],
) -> Result<(Vec<u8>, BTreeMap<String, Stored>), StoreError> {
    let f = File::open(archive).map_err(io_err(archive))?;
    let mut ar = tar::Archive::new(f);
    let mut config = None;
    let mut layers = BTreeMap::new();
    for entry in ar.entries_with_seek().map_err(io_err(archive))? {
        let mut entry = entry.map_err(io_err(archive))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry_name(&String::from_utf8_lossy(&entry.path_bytes()));
        let entry_path = archive.join(&name);
        if name == config_name && config.is_none() {
            let size = entry.header().size().map_err(io_err(&entry_path))?;
            if size > MAX_JSON {
                return Err(bad(
                    archive,
                    format!("config {name:?} is {size} bytes (more than {MAX_JSON})"),
                ));
            }
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(io_err(&entry_path))?;
            config = Some(buf);
        }
        if layer_names.contains(&name) && !layers.contains_key(&name) {
            let stored = store_layer(store, &mut entry, &entry_path)?;
            layers.insert(name, stored);
        }
    }
    let config = config.ok_or_else(|| {
        bad(
            archive,
            format!("config {config_name:?} vanished while reading"),
        )
    })?;
    Ok((config, layers))
}

/// Turns a Docker image config into our OCI config model (`null`s dropped first).
fn parse_config(archive: &Path, name: &str, bytes: &[u8]) -> Result<ImageConfig, StoreError> {
    let json_err = |source| StoreError::Json {
        path: archive.join(name),
        source,
    };
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(json_err)?;
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|_, x| !x.is_null());
        for key in ["config", "rootfs"] {
            if let Some(inner) = obj.get_mut(key).and_then(|c| c.as_object_mut()) {
                inner.retain(|_, x| !x.is_null());
            }
        }
    }
    serde_json::from_value(v).map_err(json_err)
}

/// Where the import of `archive` (as it is now) with `reference` is remembered.
fn memo_path(store: &Store, archive: &Path, reference: Option<&str>) -> Option<PathBuf> {
    let m = std::fs::metadata(archive).ok()?;
    let canon = std::fs::canonicalize(archive).ok()?;
    let mut k = KeyHasher::new();
    k.field("agent-images docker-archive import v1")
        .field(canon.as_os_str().as_bytes())
        .field(reference.unwrap_or(""))
        .field(m.len().to_le_bytes())
        .field(m.mtime().to_le_bytes())
        .field(m.mtime_nsec().to_le_bytes())
        .field(m.ino().to_le_bytes())
        .field(m.dev().to_le_bytes());
    Some(
        store
            .cache_dir()
            .join(format!("docker-archive-{}.json", k.finish().hex())),
    )
}

/// The manifest a memo names, if it and every blob it needs are still in the store.
fn remembered(store: &Store, memo: &Path) -> Option<Descriptor> {
    let d: Descriptor = serde_json::from_slice(&std::fs::read(memo).ok()?).ok()?;
    let m: Manifest = serde_json::from_slice(&store.read_blob(&d.digest).ok()?).ok()?;
    std::iter::once(&m.config)
        .chain(&m.layers)
        .all(|b| std::fs::metadata(store.blob_path(&b.digest)).is_ok_and(|md| md.len() == b.size))
        .then_some(d)
}

/// Imports the image `reference` selects from the docker archive at `archive`; returns the
/// descriptor of the OCI manifest written to the store.
pub(crate) fn import(
    store: &Store,
    archive: &Path,
    reference: Option<&str>,
) -> Result<Descriptor, StoreError> {
    let memo = memo_path(store, archive, reference);
    if let Some(d) = memo.as_deref().and_then(|m| remembered(store, m)) {
        return Ok(d);
    }
    let desc = import_uncached(store, archive, reference)?;
    if let (Some(m), Ok(bytes)) = (memo, serde_json::to_vec(&desc)) {
        // A memo that cannot be written only costs a re-read next time.
        let _ = write_atomic(&m, &bytes);
    }
    Ok(desc)
}

fn import_uncached(
    store: &Store,
    archive: &Path,
    reference: Option<&str>,
) -> Result<Descriptor, StoreError> {
    let (entries, manifest) = scan(archive)?;
    let images: Vec<DockerImage> =
        serde_json::from_slice(&manifest).map_err(|source| StoreError::Json {
            path: archive.join("manifest.json"),
            source,
        })?;
    let image = select(archive, &images, reference)?;
    let config_name = resolve(archive, &entries, "Config", &image.config)?;
    let mut layer_names = Vec::with_capacity(image.layers.len());
    for (i, l) in image.layers.iter().enumerate() {
        layer_names.push(resolve(archive, &entries, &format!("Layers[{i}]"), l)?);
    }
    let (config_bytes, stored) = read_entries(store, archive, &config_name, &layer_names)?;
    let mut config = parse_config(archive, &config_name, &config_bytes)?;
    let mut layers = Vec::with_capacity(layer_names.len());
    let mut diff_ids = Vec::with_capacity(layer_names.len());
    for (i, name) in layer_names.iter().enumerate() {
        let s = stored.get(name).ok_or_else(|| {
            bad(
                archive,
                format!("Layers[{i}] {name:?} vanished while reading"),
            )
        })?;
        layers.push(s.descriptor.clone());
        diff_ids.push(s.diff_id.clone());
    }
    let declared = &config.rootfs.diff_ids;
    {
        if declared.len() != diff_ids.len() {
            return Err(bad(
                archive,
                format!(
                    "config {config_name:?} lists {} layers (rootfs.diff_ids), manifest.json {}",
                    declared.len(),
                    diff_ids.len()
                ),
            ));
        }
        for (i, (want, got)) in declared.iter().zip(&diff_ids).enumerate() {
            if want != got {
                return Err(bad(
                    archive,
                    format!(
                        "Layers[{i}] {:?}: uncompressed digest {got}, but config {config_name:?} says {want}",
                        layer_names[i]
                    ),
                ));
            }
        }
    }
    config.rootfs.kind = "layers".to_string();
    config.rootfs.diff_ids = diff_ids;
    let json = |source| StoreError::Json {
        path: archive.join(&config_name),
        source,
    };
    let config_desc = store.put_blob(MEDIA_CONFIG, &serde_json::to_vec(&config).map_err(json)?)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.to_string()),
        config: config_desc,
        layers,
        annotations: Default::default(),
    };
    store.put_blob(
        MEDIA_MANIFEST,
        &serde_json::to_vec(&manifest).map_err(json)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_archive() {
        assert_eq!(inside("a", "../b/c").as_deref(), Some("b/c"));
        assert_eq!(inside("a", "../../b"), None);
        assert_eq!(inside("", "/etc/passwd"), None);
        assert_eq!(entry_name("./x//y/"), "x/y");
        assert_eq!(normalise("docker.io/library/base:v1"), "base:v1");
        assert_eq!(normalise("base"), "base:latest");
        assert_eq!(
            normalise("localhost:5000/base"),
            "localhost:5000/base:latest"
        );
        assert_eq!(tag_of("localhost:5000/base"), "");
        assert_eq!(tag_of("base:v1"), "v1");
    }
}
