//! The `docker-archive:` base and import: archives written by skopeo (plain tar layers), the
//! same image with gzip layers and several images in one archive (rewritten from skopeo's),
//! and hostile archives, all read back by skopeo and umoci.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use agent_images::{BuildOptions, Digest, StepOutcome, Store};
use sha2::{Digest as _, Sha256};
use support::{have, run, write, TempDir};

/// Every regular entry of a tar, by name.
fn read_tar(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut ar = tar::Archive::new(std::fs::File::open(path).expect("open archive"));
    let mut out = BTreeMap::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).expect("read entry");
        out.insert(name, buf);
    }
    out
}

fn write_tar(path: &Path, entries: &BTreeMap<String, Vec<u8>>) {
    let mut b = tar::Builder::new(std::fs::File::create(path).expect("create archive"));
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice())
            .expect("append");
    }
    b.finish().expect("finish archive");
}

fn manifest_of(entries: &BTreeMap<String, Vec<u8>>) -> serde_json::Value {
    serde_json::from_slice(&entries["manifest.json"]).expect("manifest.json")
}

fn sha256(bytes: &[u8]) -> String {
    let mut s = String::from("sha256:");
    for b in Sha256::digest(bytes) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Checks each layer blob's digest and, decompressed, its diff_id.
fn check_digests(store: &Store, name: &str) {
    let info = store.inspect(name).expect("inspect");
    assert_eq!(info.layers.len(), info.config.rootfs.diff_ids.len());
    for l in &info.layers {
        let blob = std::fs::read(&l.path).expect("read blob");
        assert_eq!(sha256(&blob), l.descriptor.digest.as_str(), "{name}");
        assert_eq!(blob.len() as u64, l.descriptor.size);
        let tar = if l.descriptor.media_type.ends_with("+gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(blob.as_slice())
                .read_to_end(&mut out)
                .expect("gunzip");
            out
        } else {
            assert!(l.descriptor.media_type.ends_with(".tar"), "{l:?}");
            blob
        };
        let diff_id = l.diff_id.as_ref().map(Digest::as_str);
        assert_eq!(Some(sha256(&tar).as_str()), diff_id, "{name}: {l:?}");
    }
}

/// `skopeo inspect` and `umoci unpack` read the image; returns the unpacked rootfs.
fn unpack(store: &Store, name: &str, t: &TempDir) -> std::path::PathBuf {
    let root = store.root().display().to_string();
    let out = run(Command::new("skopeo").args(["inspect", &format!("oci:{root}:{name}")]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("skopeo inspect JSON");
    assert_eq!(
        v["Digest"].as_str(),
        Some(store.inspect(name).expect("inspect").digest.as_str()),
        "{out}"
    );
    let bundle = t.join(&format!("bundle-{name}"));
    run(Command::new("umoci")
        .args(["unpack", "--image", &format!("{root}:{name}")])
        .arg(&bundle));
    bundle.join("rootfs")
}

#[test]
fn docker_archives_become_bases_and_imports() {
    if !have("skopeo") || !have("umoci") {
        return;
    }
    let t = TempDir::new("docker-archive");
    let ctx = t.join("ctx");
    write(&ctx, "base/etc/base-marker", "from the base\n");
    write(&ctx, "base/usr/bin/tool", "#!/bin/sh\necho tool\n");
    write(&ctx, "more/etc/more-marker", "second base layer\n");
    write(&ctx, "app/main.py", "print('app')\n");
    write(
        &ctx,
        "base.yaml",
        "base: scratch\nsteps:\n  - copy: {src: base, dst: /}\n  - copy: {src: more, dst: /}\n  - env: {BASE_VAR: from-base}\n  - workdir: /srv\n  - entrypoint: [/usr/bin/tool]\n",
    );
    let store = Store::open(&t.join("state")).expect("open store");
    let opts = BuildOptions::default();
    store
        .build(&ctx.join("base.yaml"), "base", &opts)
        .expect("build base");
    let root = store.root().display().to_string();
    let archive = t.join("base-docker.tar");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{root}:base"),
        &format!("docker-archive:{}:example/base:v1", archive.display()),
    ]));

    // A recipe on the docker archive, the image chosen by name:tag.
    write(
        &ctx,
        "app.yaml",
        &format!(
            "base: docker-archive:{}:example/base:v1\nsteps:\n  - copy: {{src: app, dst: /app}}\n  - cmd: [/app/main.py]\n",
            archive.display()
        ),
    );
    let report = store
        .build(&ctx.join("app.yaml"), "app", &opts)
        .expect("build on the docker archive");
    assert_eq!(report.steps[0].outcome, StepOutcome::Imported { layers: 2 });
    assert_eq!(report.layers_built, 1, "{report:?}");
    let info = store.inspect("app").expect("inspect app");
    assert_eq!(info.layers.len(), 3);
    let env = &info.config.config.env;
    assert!(env.contains(&"BASE_VAR=from-base".to_string()), "{env:?}");
    assert_eq!(info.config.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(
        info.config.config.entrypoint.as_deref(),
        Some(&["/usr/bin/tool".to_string()][..])
    );
    assert_eq!(
        info.config.config.cmd.as_deref(),
        Some(&["/app/main.py".to_string()][..])
    );
    // The base's layers are the same content as our original ones (same diff_ids).
    let orig = store.inspect("base").expect("inspect base");
    assert_eq!(
        info.config.rootfs.diff_ids[..2],
        orig.config.rootfs.diff_ids[..]
    );
    check_digests(&store, "app");
    let rootfs = unpack(&store, "app", &t);
    for (p, want) in [
        ("etc/base-marker", "from the base\n"),
        ("etc/more-marker", "second base layer\n"),
        ("usr/bin/tool", "#!/bin/sh\necho tool\n"),
        ("app/main.py", "print('app')\n"),
    ] {
        let got = std::fs::read_to_string(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(got, want, "{p}");
    }
    // The same build again: the base is imported again, the copy layer is cached.
    let again = store
        .build(&ctx.join("app.yaml"), "app", &opts)
        .expect("rebuild");
    assert_eq!((again.layers_built, again.digest), (0, report.digest));
    // The import is remembered (keyed by the archive's metadata), so that rebuild read nothing.
    let memos = std::fs::read_dir(store.root().join("cache"))
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("docker-archive-")
        })
        .count();
    assert_eq!(memos, 1);

    // `images import docker-archive:FILE NAME`; skopeo reads the import.
    let imported = store
        .import(&format!("docker-archive:{}", archive.display()), "imported")
        .expect("import docker-archive");
    assert_eq!(imported.layers, 2);
    check_digests(&store, "imported");
    unpack(&store, "imported", &t);

    // gzip layers and two images in one archive (rewritten from skopeo's).
    let entries = read_tar(&archive);
    let m = manifest_of(&entries);
    let mut gz = entries.clone();
    let mut gz_m = m.clone();
    for l in gz_m[0]["Layers"].as_array_mut().expect("Layers") {
        let name = l.as_str().expect("layer name").to_string();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&entries[&name]).expect("gzip");
        gz.insert(format!("{name}.gz"), enc.finish().expect("gzip"));
        *l = serde_json::Value::String(format!("{name}.gz"));
    }
    gz_m[0]["RepoTags"] = serde_json::json!(["example/gz:v2"]);
    let mut both = serde_json::json!([m[0].clone(), gz_m[0].clone()]);
    gz.insert(
        "manifest.json".to_string(),
        serde_json::to_vec(&both).expect("json"),
    );
    let multi = t.join("multi.tar");
    write_tar(&multi, &gz);
    let err = store
        .import(&format!("docker-archive:{}", multi.display()), "x")
        .expect_err("two images and no choice");
    let msg = err.to_string();
    assert!(
        msg.contains(&multi.display().to_string())
            && msg.contains("2 images")
            && msg.contains("example/base:v1")
            && msg.contains("example/gz:v2"),
        "{msg}"
    );
    let by_tag = store
        .import(&format!("docker-archive:{}:v2", multi.display()), "gz")
        .expect("import by tag");
    let gz_info = store.inspect("gz").expect("inspect gz");
    assert!(gz_info
        .layers
        .iter()
        .all(|l| l.descriptor.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"));
    assert_eq!(gz_info.config.rootfs.diff_ids, orig.config.rootfs.diff_ids);
    check_digests(&store, "gz");
    let gz_root = unpack(&store, "gz", &t);
    assert!(gz_root.join("etc/more-marker").is_file());
    let by_index = store
        .import(&format!("docker-archive:{}:@1", multi.display()), "gz1")
        .expect("import by index");
    assert_eq!(by_index.digest, by_tag.digest);
    let by_name = store
        .import(
            &format!("docker-archive:{}:example/base:v1", multi.display()),
            "plain",
        )
        .expect("import by name");
    assert_eq!(by_name.digest, imported.digest);

    // Hostile and broken archives are refused, naming the archive and the entry.
    let layer0 = m[0]["Layers"][0].as_str().expect("layer").to_string();
    for (case, layers, want) in [
        (
            "dotdot",
            serde_json::json!(["../../etc/passwd"]),
            "Layers[0] \"../../etc/passwd\" is not a path inside the archive",
        ),
        (
            "absolute",
            serde_json::json!([layer0.clone(), "/etc/shadow"]),
            "Layers[1] \"/etc/shadow\" is not a path inside the archive",
        ),
        (
            "missing",
            serde_json::json!([layer0.clone(), "nope/layer.tar"]),
            "Layers[1] \"nope/layer.tar\": the archive has no entry",
        ),
    ] {
        let mut bad = entries.clone();
        both = m.clone();
        both[0]["Layers"] = layers;
        bad.insert(
            "manifest.json".to_string(),
            serde_json::to_vec(&both).expect("json"),
        );
        let path = t.join(&format!("{case}.tar"));
        write_tar(&path, &bad);
        write(
            &ctx,
            &format!("{case}.yaml"),
            &format!("base: docker-archive:{}\n", path.display()),
        );
        let err = store
            .build(&ctx.join(format!("{case}.yaml")), case, &opts)
            .expect_err(case)
            .to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(want),
            "{case}: {err}"
        );
        assert!(store.inspect(case).is_err(), "{case}: no image made");
    }
    // A layer whose content is not what the config says.
    let mut tampered = entries.clone();
    tampered
        .get_mut(&layer0)
        .expect("layer entry")
        .extend_from_slice(&[0u8; 1024]);
    let path = t.join("tampered.tar");
    write_tar(&path, &tampered);
    let err = store
        .import(&format!("docker-archive:{}", path.display()), "tampered")
        .expect_err("diff_id mismatch")
        .to_string();
    assert!(
        err.contains(&format!("Layers[0] {layer0:?}: uncompressed digest")),
        "{err}"
    );
    // The remembered import does not hide a changed archive: the recipe's archive, rewritten
    // with the tampered layer, is read again and refused.
    std::fs::copy(&path, &archive).expect("overwrite the base archive");
    let err = store
        .build(&ctx.join("app.yaml"), "app", &opts)
        .expect_err("the rewritten archive is read again")
        .to_string();
    assert!(err.contains("uncompressed digest"), "{err}");
    // An OCI archive is not a docker archive.
    let oci_tar = t.join("oci.tar");
    store.export("base", &oci_tar).expect("export");
    let err = store
        .import(&format!("docker-archive:{}", oci_tar.display()), "no")
        .expect_err("not a docker archive")
        .to_string();
    assert!(err.contains("no manifest.json"), "{err}");
}
