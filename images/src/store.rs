//! The image store: one OCI image layout under `<state_dir>/images/`, images named by the
//! `org.opencontainers.image.ref.name` annotation of their `index.json` entry, plus the step
//! cache in `cache/` (one small JSON file per step key).
//!
//! Other OCI tools read it as is: `skopeo inspect oci:<state_dir>/images:<name>`,
//! `umoci unpack --image <state_dir>/images:<name> DIR`.
//!
//! Concurrency: `.lock-index` (exclusive) serialises every read-modify-write of `index.json`;
//! `.lock-gc` is held shared by builds and imports and exclusive by `prune`, so a prune never
//! deletes the blobs of a build in progress.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::digest::{Digest, HashWriter};
use crate::layer::{commit_blob, temp_path};
use crate::oci::{
    host_architecture, Descriptor, ImageConfig, Index, Manifest, DOCKER_MANIFEST, MEDIA_INDEX,
    MEDIA_MANIFEST, OCI_LAYOUT, REF_NAME,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no image named {name:?} in {store}")]
    NotFound { name: String, store: PathBuf },
    #[error("{path} is not an OCI image layout (no oci-layout or index.json)")]
    NotALayout { path: PathBuf },
    #[error("{path}: {message}")]
    Select { path: PathBuf, message: String },
    #[error("{path}: blob {expected} has digest {actual}")]
    DigestMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{path}: {what} is not supported yet")]
    Unsupported { path: PathBuf, what: String },
    #[error(
        "image {image:?}: its {what} blob {blob} is missing from the store: rebuild or \
         re-import the image"
    )]
    MissingBlob {
        image: String,
        what: &'static str,
        /// `DIGEST (PATH)`.
        blob: String,
    },
    #[error(
        "invalid image name {name:?}: use letters, digits, `.`, `_`, `-` (first a letter or digit)"
    )]
    BadName { name: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An image as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub name: String,
    /// The manifest digest (the image's identity).
    pub digest: Digest,
    /// Compressed size: manifest, config and layers.
    pub size: u64,
    pub layers: usize,
}

/// One layer of an inspected image, with where its blob lives.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    pub descriptor: Descriptor,
    /// The uncompressed digest (from the config's `rootfs.diff_ids`).
    pub diff_id: Option<Digest>,
    pub path: PathBuf,
}

/// Everything about one image, for `images inspect` and for unpacking it into a rootfs.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub name: String,
    pub digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
    /// Layers bottom to top.
    pub layers: Vec<LayerInfo>,
    pub size: u64,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub cache_entries_removed: usize,
}

/// An advisory `flock` held until dropped.
pub(crate) struct Lock {
    _held: Flock<File>,
}

impl Lock {
    fn take(path: &Path, exclusive: bool) -> Result<Lock, StoreError> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        match Flock::lock(f, arg) {
            Ok(held) => Ok(Lock { _held: held }),
            Err((_, e)) => Err(io_err(path)(io::Error::from(e))),
        }
    }
}

/// Checks an image name (an `images:` key of the system file).
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName {
            name: name.to_string(),
        })
    }
}

/// The image store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `<state_dir>/images`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        Store::open_layout(&state_dir.join("images"))
    }

    /// Opens (creating if needed) a store whose OCI layout is `root` itself.
    pub fn open_layout(root: &Path) -> Result<Store, StoreError> {
        let s = Store {
            root: root.to_path_buf(),
        };
        for d in [s.blobs_dir(), s.cache_dir()] {
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, OCI_LAYOUT.as_bytes())?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let _l = s.lock_index()?;
            if !index.exists() {
                s.write_index(&Index::default())?;
            }
        }
        Ok(s)
    }

    /// The OCI layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `blobs/sha256`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Where the blob with this digest lives (it may not exist).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    pub(crate) fn lock_index(&self) -> Result<Lock, StoreError> {
        Lock::take(&self.root.join(".lock-index"), true)
    }

    pub(crate) fn lock_gc(&self, exclusive: bool) -> Result<Lock, StoreError> {
        Lock::take(&self.root.join(".lock-gc"), exclusive)
    }

    pub(crate) fn read_index(&self) -> Result<Index, StoreError> {
        read_json(&self.root.join("index.json"))
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.root.join("index.json");
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes)
    }

    /// Points `name` at the manifest `desc` (replacing what it named before).
    pub(crate) fn tag(&self, name: &str, desc: &Descriptor) -> Result<(), StoreError> {
        check_name(name)?;
        let _l = self.lock_index()?;
        let mut index = self.read_index()?;
        index.manifests.retain(|m| m.ref_name() != Some(name));
        let mut d = desc.clone();
        d.annotations.insert(REF_NAME.to_string(), name.to_string());
        index.manifests.push(d);
        index
            .manifests
            .sort_by(|a, b| a.ref_name().cmp(&b.ref_name()));
        self.write_index(&index)
    }

    /// Stores `bytes` as a blob; returns its descriptor.
    pub(crate) fn put_blob(
        &self,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Descriptor, StoreError> {
        let d = Digest::of(bytes);
        let path = self.blob_path(&d);
        if !path.exists() {
            let tmp = temp_path(&self.blobs_dir());
            std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
        Ok(Descriptor::new(media_type, d, bytes.len() as u64))
    }

    /// Reads a (small) blob and checks its digest.
    pub(crate) fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        read_verified(&self.blob_path(d), d)
    }

    /// The images in the store, by name.
    pub fn list(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let mut out = Vec::new();
        for m in self.read_index()?.manifests {
            let Some(name) = m.ref_name() else { continue };
            let info = self.info(name, &m)?;
            out.push(ImageSummary {
                name: info.name,
                digest: info.digest,
                size: info.size,
                layers: info.layers.len(),
            });
        }
        Ok(out)
    }

    /// The manifest, config and layers of image `name`.
    pub fn inspect(&self, name: &str) -> Result<ImageInfo, StoreError> {
        let index = self.read_index()?;
        let m = index
            .manifests
            .iter()
            .find(|m| m.ref_name() == Some(name))
            .ok_or_else(|| StoreError::NotFound {
                name: name.to_string(),
                store: self.root.clone(),
            })?;
        self.info(name, m)
    }

    fn info(&self, name: &str, m: &Descriptor) -> Result<ImageInfo, StoreError> {
        let missing = |what: &'static str, d: &Digest| StoreError::MissingBlob {
            image: name.to_string(),
            what,
            blob: format!("{d} ({})", self.blob_path(d).display()),
        };
        let read = |what: &'static str, d: &Digest| {
            if self.blob_path(d).exists() {
                self.read_blob(d)
            } else {
                Err(missing(what, d))
            }
        };
        let manifest: Manifest =
            parse_json(&self.blob_path(&m.digest), &read("manifest", &m.digest)?)?;
        let config: ImageConfig = parse_json(
            &self.blob_path(&manifest.config.digest),
            &read("config", &manifest.config.digest)?,
        )?;
        if let Some(l) = manifest
            .layers
            .iter()
            .find(|l| !self.blob_path(&l.digest).exists())
        {
            return Err(missing("layer", &l.digest));
        }
        let layers = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerInfo {
                descriptor: l.clone(),
                diff_id: config.rootfs.diff_ids.get(i).cloned(),
                path: self.blob_path(&l.digest),
            })
            .collect();
        let size =
            m.size + manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        Ok(ImageInfo {
            name: name.to_string(),
            digest: m.digest.clone(),
            manifest,
            config,
            layers,
            size,
        })
    }

    /// Removes the name `name`; its blobs stay until [`Store::prune`].
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let _l = self.lock_index()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        index.manifests.retain(|m| m.ref_name() != Some(name));
        if index.manifests.len() == before {
            return Err(StoreError::NotFound {
                name: name.to_string(),
                store: self.root.clone(),
            });
        }
        self.write_index(&index)
    }

    /// Deletes every blob no image references, and the cache entries pointing at them.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let _gc = self.lock_gc(true)?;
        let _l = self.lock_index()?;
        let mut keep = BTreeSet::new();
        for m in self.read_index()?.manifests {
            keep.insert(m.digest.hex().to_string());
            let manifest: Manifest =
                parse_json(&self.blob_path(&m.digest), &self.read_blob(&m.digest)?)?;
            keep.insert(manifest.config.digest.hex().to_string());
            keep.extend(manifest.layers.iter().map(|l| l.digest.hex().to_string()));
        }
        let mut report = PruneReport::default();
        let blobs = self.blobs_dir();
        for e in std::fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let e = e.map_err(io_err(&blobs))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            report.blobs_removed += 1;
            report.bytes_freed += len;
        }
        let cache = self.cache_dir();
        for e in std::fs::read_dir(&cache).map_err(io_err(&cache))? {
            let e = e.map_err(io_err(&cache))?;
            let alive =
                crate::build::cache_entry_blob(&e.path()).is_some_and(|d| keep.contains(d.hex()));
            if !alive {
                std::fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
                report.cache_entries_removed += 1;
            }
        }
        Ok(report)
    }

    /// Imports an image as `name` from an OCI layout directory (`DIR` or `DIR:REF`), an
    /// OCI archive (a tar of a layout) or a Docker archive (`docker save`). A skopeo-style
    /// transport prefix may say which: `oci:`, `oci-archive:`, or `docker-archive:FILE` with
    /// an optional `:NAME:TAG`, `:TAG` or `:@INDEX` choosing among the archive's images.
    pub fn import(&self, source: &str, name: &str) -> Result<ImageSummary, StoreError> {
        check_name(name)?;
        let _gc = self.lock_gc(false)?;
        let desc = match source.strip_prefix("docker-archive:") {
            Some(rest) => crate::docker_archive::import_source(self, rest)?,
            None => self.import_manifest(
                source
                    .strip_prefix("oci-archive:")
                    .or_else(|| source.strip_prefix("oci:"))
                    .unwrap_or(source),
            )?,
        };
        self.tag(name, &desc)?;
        let info = self.inspect(name)?;
        Ok(ImageSummary {
            name: info.name,
            digest: info.digest,
            size: info.size,
            layers: info.layers.len(),
        })
    }

    /// Copies the blobs of the image named by `source` into the store (no name).
    pub(crate) fn import_manifest(&self, source: &str) -> Result<Descriptor, StoreError> {
        let (path, reference) = split_ref(source);
        if path.is_file() {
            return crate::archive::import_archive(self, &path, reference.as_deref());
        }
        if !path.join("index.json").is_file() {
            return Err(StoreError::NotALayout { path });
        }
        let index: Index = read_json(&path.join("index.json"))?;
        let src_blobs = path.join("blobs").join("sha256");
        let fetch = |d: &Descriptor| -> Result<Vec<u8>, StoreError> {
            read_verified(&src_blobs.join(d.digest.hex()), &d.digest)
        };
        let manifest = select_manifest(&path, &index, reference.as_deref(), &fetch)?;
        let bytes = fetch(&manifest)?;
        let m: Manifest = parse_json(&path, &bytes)?;
        for d in std::iter::once(&m.config).chain(&m.layers) {
            self.copy_blob_in(&src_blobs.join(d.digest.hex()), &d.digest)?;
        }
        self.put_blob(&manifest.media_type, &bytes)?;
        Ok(Descriptor::new(
            &manifest.media_type,
            manifest.digest,
            manifest.size,
        ))
    }

    /// Copies a blob file into the store, checking its digest on the way.
    pub(crate) fn copy_blob_in(&self, src: &Path, d: &Digest) -> Result<(), StoreError> {
        if self.blob_path(d).exists() {
            return Ok(());
        }
        let mut f = File::open(src).map_err(io_err(src))?;
        self.write_blob_from(&mut f, src, d)
    }

    /// Writes a blob from a reader, checking it has digest `d`.
    pub(crate) fn write_blob_from(
        &self,
        r: &mut dyn Read,
        src: &Path,
        d: &Digest,
    ) -> Result<(), StoreError> {
        let tmp = temp_path(&self.blobs_dir());
        let out = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w = HashWriter::new(out);
        let copied = io::copy(r, &mut w).map_err(io_err(src));
        let (file, actual, _) = w.finish();
        let synced = file.sync_all().map_err(io_err(&tmp));
        if let Err(e) = copied.and(synced) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if actual != *d {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::DigestMismatch {
                path: src.to_path_buf(),
                expected: d.clone(),
                actual,
            });
        }
        commit_blob(&tmp, &self.blobs_dir(), d).map_err(|e| StoreError::Io {
            path: e.path,
            source: e.source,
        })?;
        Ok(())
    }

    /// Writes image `name` as an OCI layout at `dest` (created or added to), or as an OCI
    /// archive when `dest` ends in `.tar`.
    pub fn export(&self, name: &str, dest: &Path) -> Result<(), StoreError> {
        let info = self.inspect(name)?;
        let mut blobs = vec![
            Descriptor::new(MEDIA_MANIFEST, info.digest.clone(), 0),
            info.manifest.config.clone(),
        ];
        blobs.extend(info.manifest.layers.iter().cloned());
        let mut entry = Descriptor::new(
            info.manifest
                .media_type
                .as_deref()
                .unwrap_or(MEDIA_MANIFEST),
            info.digest.clone(),
            std::fs::metadata(self.blob_path(&info.digest))
                .map_err(io_err(&self.blob_path(&info.digest)))?
                .len(),
        );
        entry
            .annotations
            .insert(REF_NAME.to_string(), name.to_string());
        if dest.extension().is_some_and(|e| e == "tar") {
            return crate::archive::export_archive(self, &entry, &blobs, dest);
        }
        let dst_blobs = dest.join("blobs").join("sha256");
        std::fs::create_dir_all(&dst_blobs).map_err(io_err(&dst_blobs))?;
        for b in &blobs {
            let to = dst_blobs.join(b.digest.hex());
            if to.exists() {
                continue;
            }
            let from = self.blob_path(&b.digest);
            if std::fs::hard_link(&from, &to).is_err() {
                let tmp = temp_path(&dst_blobs);
                std::fs::copy(&from, &tmp).map_err(io_err(&from))?;
                std::fs::rename(&tmp, &to).map_err(io_err(&to))?;
            }
        }
        write_atomic(&dest.join("oci-layout"), OCI_LAYOUT.as_bytes())?;
        let index_path = dest.join("index.json");
        let mut index = if index_path.exists() {
            read_json(&index_path)?
        } else {
            Index::default()
        };
        index.manifests.retain(|m| m.ref_name() != Some(name));
        index.manifests.push(entry);
        let bytes = serde_json::to_vec_pretty(&index).map_err(|source| StoreError::Json {
            path: index_path.clone(),
            source,
        })?;
        write_atomic(&index_path, &bytes)
    }
}

/// Splits `PATH[:REF]`: the whole string when it names an existing path, else at the last `:`.
pub fn split_ref(source: &str) -> (PathBuf, Option<String>) {
    if Path::new(source).exists() {
        return (PathBuf::from(source), None);
    }
    match source.rsplit_once(':') {
        Some((p, r)) if !r.is_empty() && !r.contains('/') => {
            (PathBuf::from(p), Some(r.to_string()))
        }
        _ => (PathBuf::from(source), None),
    }
}

/// Picks the image manifest an index names: by `ref.name` or the only one; an image index
/// entry is resolved to the manifest for this machine's architecture.
pub(crate) fn select_manifest(
    path: &Path,
    index: &Index,
    reference: Option<&str>,
    fetch: &dyn Fn(&Descriptor) -> Result<Vec<u8>, StoreError>,
) -> Result<Descriptor, StoreError> {
    let candidates: Vec<&Descriptor> = match reference {
        Some(r) => index
            .manifests
            .iter()
            .filter(|m| m.ref_name() == Some(r))
            .collect(),
        None => index.manifests.iter().collect(),
    };
    let sel = |message: String| StoreError::Select {
        path: path.to_path_buf(),
        message,
    };
    let d = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(sel(match reference {
                Some(r) => format!("no manifest named {r:?}"),
                None => "the index lists no manifest".to_string(),
            }))
        }
        many => {
            let names: Vec<&str> = many.iter().filter_map(|m| m.ref_name()).collect();
            return Err(sel(format!(
                "{} manifests; name one with PATH:REF (names: {})",
                many.len(),
                names.join(", ")
            )));
        }
    };
    match d.media_type.as_str() {
        MEDIA_MANIFEST | DOCKER_MANIFEST => Ok(d),
        MEDIA_INDEX => {
            let nested: Index = parse_json(path, &fetch(&d)?)?;
            let arch = host_architecture();
            let m = nested
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p["architecture"] == arch && p["os"] == "linux")
                })
                .ok_or_else(|| sel(format!("the image index has no linux/{arch} manifest")))?;
            Ok(m.clone())
        }
        other => Err(StoreError::Unsupported {
            path: path.to_path_buf(),
            what: format!("manifest media type {other}"),
        }),
    }
}

pub(crate) fn read_verified(path: &Path, d: &Digest) -> Result<Vec<u8>, StoreError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let actual = Digest::of(&bytes);
    if actual != *d {
        return Err(StoreError::DigestMismatch {
            path: path.to_path_buf(),
            expected: d.clone(),
            actual,
        });
    }
    Ok(bytes)
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    parse_json(path, &std::fs::read(path).map_err(io_err(path))?)
}

/// Writes a file through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(dir);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
