//! Fuzz targets of the archive readers (`docs/fuzzing.md`): `Store::import` of
//! `docker-archive:` and `oci-archive:` files that are arbitrary bytes, byte-level mutations
//! of a valid Docker archive, and hostile archives built entry by entry (`manifest.json`
//! naming `..` and absolute paths, symlinks out, huge sizes). Property: nothing panics, and
//! nothing outside the store changes (a sentinel directory beside it and the rest of the
//! temporary tree are compared before and after). Each runs for `FUZZ_SECS`.

use std::path::{Path, PathBuf};

use agent_images::{Digest, Store};
use agent_supervisor_tests::fuzz::{budget, keep_on_panic, Edit, Mutator, Tally};
use agent_supervisor_tests::fuzz_tar::{snapshot, TarDict, TarEntry};

/// `root/outside` (a sentinel with a file), `root/w/w/w/store`, the archive `root/in.tar`.
struct Bed {
    root: PathBuf,
    store: PathBuf,
    archive: PathBuf,
}

impl Bed {
    fn new(tag: &str) -> Bed {
        let root = std::env::temp_dir().join(format!("fuzz-archive-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("outside")).expect("create the sentinel");
        std::fs::write(root.join("outside/secret"), b"keep").expect("write the sentinel");
        Bed {
            store: root.join("w/w/w/store"),
            archive: root.join("in.tar"),
            root,
        }
    }

    fn import(&self, bytes: &[u8]) -> &'static str {
        let _ = std::fs::remove_dir_all(&self.store);
        let store = Store::open_layout(&self.store).expect("open the store");
        std::fs::write(&self.archive, bytes).expect("write the archive");
        let (s, a) = (self.store.clone(), self.archive.clone());
        let skip = move |p: &Path| p == s || p == a;
        let before = snapshot(&self.root, &skip);
        let arch = self.archive.display();
        let docker = store.import(&format!("docker-archive:{arch}"), "fuzz");
        let oci = store.import(&format!("oci-archive:{arch}"), "fuzz");
        assert_eq!(
            before,
            snapshot(&self.root, &skip),
            "import wrote outside the store"
        );
        match (docker.is_ok(), oci.is_ok()) {
            (true, _) => "docker imported",
            (_, true) => "oci imported",
            _ => "refused",
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A valid `docker save` archive of one layer, its parts, and their names.
fn docker_parts() -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    layer
        .append_data(&mut h, "hello", &b"hello"[..])
        .expect("build the layer");
    let layer = layer.into_inner().expect("build the layer");
    let diff = Digest::of(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
    )
    .into_bytes();
    let manifest =
        br#"[{"Config":"config.json","RepoTags":["fuzz:1"],"Layers":["layer.tar"]}]"#.to_vec();
    let mut ar = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("manifest.json", &manifest),
        ("config.json", &config),
        ("layer.tar", &layer),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        ar.append_data(&mut h, name, data.as_slice())
            .expect("build the archive");
    }
    let archive = ar.into_inner().expect("build the archive");
    let hostile = [
        r#"[{"Config":"../outside/secret","Layers":["/etc/passwd"]}]"#,
        r#"[{"Config":"config.json","Layers":["link/layer.tar","../../x"]}]"#,
        r#"[{"Config":"config.json","RepoTags":["a:b","fuzz:1"],"Layers":["layer.tar","layer.tar"]}]"#,
        r#"[{"Config":"manifest.json","Layers":[]}]"#,
        r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}]}"#,
    ];
    let mut data = vec![manifest, config, layer];
    data.extend(hostile.iter().map(|h| h.as_bytes().to_vec()));
    (archive, data)
}

#[test]
fn the_valid_seed_imports() {
    let bed = Bed::new("seed");
    assert_eq!(bed.import(&docker_parts().0), "docker imported");
}

#[test]
fn fuzz_import_bytes() {
    let bed = Bed::new("bytes");
    let tally = Tally::new("archive bytes");
    bolero::check!()
        .with_test_time(budget() / 2)
        .for_each(|bytes: &[u8]| {
            keep_on_panic("archive-bytes", bytes, || tally.hit(bed.import(bytes)));
        });
}

#[test]
fn fuzz_import_mutated() {
    let bed = Bed::new("mutated");
    let m = Mutator::new(vec![docker_parts().0], &["..", "/", "layer.tar", "link"]);
    let tally = Tally::new("archive mutated");
    bolero::check!()
        .with_type::<Vec<Edit>>()
        .with_test_time(budget())
        .for_each(|edits| {
            let bytes = m.apply(0, edits);
            keep_on_panic("archive-mutated", &bytes, || tally.hit(bed.import(&bytes)));
        });
}

#[test]
fn fuzz_import_hostile() {
    let bed = Bed::new("hostile");
    let dict = TarDict::new(&bed.root.join("outside"), docker_parts().1);
    let tally = Tally::new("archive hostile");
    bolero::check!()
        .with_type::<Vec<TarEntry>>()
        .with_test_time(budget())
        .for_each(|entries| {
            let bytes = dict.build(entries);
            keep_on_panic("archive-hostile", &bytes, || tally.hit(bed.import(&bytes)));
        });
}
