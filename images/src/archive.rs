//! OCI archives: a tar of an OCI image layout (`oci-archive:` in skopeo's terms), read on
//! import and written on export. A Docker archive (`docker save`: `manifest.json`, no
//! `index.json`) is handed to `docker_archive`.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use crate::digest::Digest;
use crate::layer::temp_path;
use crate::oci::{Descriptor, Index, Manifest, OCI_LAYOUT};
use crate::store::{io_err, parse_json, select_manifest, StoreError};
use crate::Store;

/// Reads every blob of the archive into the store (checking digests) and returns the manifest
/// `reference` names (or the only one).
pub(crate) fn import_archive(
    store: &Store,
    path: &Path,
    reference: Option<&str>,
) -> Result<Descriptor, StoreError> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut ar = tar::Archive::new(f);
    let mut index: Option<Vec<u8>> = None;
    let mut docker = false;
    for entry in ar.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()
            .map_err(io_err(path))?
            .to_string_lossy()
            .into_owned();
        let name = name.trim_start_matches("./");
        if name == "index.json" {
            let mut buf = Vec::new();
            io::Read::read_to_end(&mut entry, &mut buf).map_err(io_err(path))?;
            index = Some(buf);
        } else if name == "manifest.json" {
            docker = true;
        } else if let Some(d) = name
            .strip_prefix("blobs/sha256/")
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")))
        {
            if !store.blob_path(&d).exists() {
                store.write_blob_from(&mut entry, path, &d)?;
            }
        }
    }
    let Some(index) = index else {
        return if docker {
            crate::docker_archive::import(store, path, reference)
        } else {
            Err(StoreError::NotALayout {
                path: path.to_path_buf(),
            })
        };
    };
    let index: Index = parse_json(path, &index)?;
    let fetch = |d: &Descriptor| store.read_blob(&d.digest);
    let desc = select_manifest(path, &index, reference, &fetch)?;
    let m: Manifest = parse_json(path, &store.read_blob(&desc.digest)?)?;
    for d in std::iter::once(&m.config).chain(&m.layers) {
        if !store.blob_path(&d.digest).exists() {
            return Err(StoreError::Select {
                path: path.to_path_buf(),
                message: format!("blob {} is missing from the archive", d.digest),
            });
        }
    }
    Ok(Descriptor::new(&desc.media_type, desc.digest, desc.size))
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes a one-image OCI archive at `dest`.
pub(crate) fn export_archive(
    store: &Store,
    entry: &Descriptor,
    blobs: &[Descriptor],
    dest: &Path,
) -> Result<(), StoreError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(dir);
    let result = (|| -> io::Result<()> {
        let mut b = tar::Builder::new(BufWriter::new(File::create(&tmp)?));
        let mut index = Index::default();
        index.manifests.push(entry.clone());
        let index = serde_json::to_vec_pretty(&index)?;
        b.append_data(
            &mut header(tar::EntryType::Regular, OCI_LAYOUT.len() as u64, 0o644),
            "oci-layout",
            OCI_LAYOUT.as_bytes(),
        )?;
        b.append_data(
            &mut header(tar::EntryType::Regular, index.len() as u64, 0o644),
            "index.json",
            index.as_slice(),
        )?;
        for d in ["blobs/", "blobs/sha256/"] {
            b.append_data(
                &mut header(tar::EntryType::Directory, 0, 0o755),
                d,
                io::empty(),
            )?;
        }
        for d in blobs {
            let p = store.blob_path(&d.digest);
            let f = File::open(&p)?;
            let len = f.metadata()?.len();
            b.append_data(
                &mut header(tar::EntryType::Regular, len, 0o644),
                format!("blobs/sha256/{}", d.digest.hex()),
                f,
            )?;
        }
        let w = b.into_inner()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(dest)(e));
    }
    std::fs::rename(&tmp, dest).map_err(io_err(dest))
}
