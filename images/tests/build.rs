//! Builder tests: reproducible digests, the step cache, the Python check, unsupported steps.

mod support;

use std::io::Read;

use agent_images::{BuildOptions, Compression, StepOutcome, Store};
use support::{write, TempDir};

/// A context with two copy steps and some config steps.
fn context(t: &TempDir) -> std::path::PathBuf {
    let ctx = t.join("ctx");
    write(&ctx, "agents/a.py", "print('a')\n");
    write(&ctx, "agents/sub/b.py", "import os\n");
    write(&ctx, "data/x.txt", "x\n");
    write(&ctx, "data/y.txt", "y\n");
    std::os::unix::fs::symlink("x.txt", ctx.join("data/link")).expect("symlink");
    write(
        &ctx,
        "recipe.yaml",
        "base: scratch\nsteps:\n  - copy: {src: agents, dst: /app/agents}\n  - env: {A: b}\n  - copy: {src: data, dst: /data}\n  - copy: {src: data/x.txt, dst: /etc/}\n  - entrypoint: [/app/agents/a.py]\n",
    );
    ctx
}

fn built(r: &agent_images::BuildReport) -> Vec<usize> {
    r.steps
        .iter()
        .filter(|s| matches!(s.outcome, StepOutcome::Built { .. }))
        .map(|s| s.index)
        .collect()
}

#[test]
fn builds_are_reproducible_and_cached_per_step() {
    let t = TempDir::new("repro");
    let ctx = context(&t);
    let recipe = ctx.join("recipe.yaml");
    let opts = BuildOptions::default();
    let a = Store::open(&t.join("state-a")).unwrap();
    let b = Store::open(&t.join("state-b")).unwrap();
    let ra = a.build(&recipe, "app", &opts).unwrap();
    let rb = b.build(&recipe, "app", &opts).unwrap();
    assert_eq!(
        ra.digest, rb.digest,
        "two clean builds give the same manifest"
    );
    assert_eq!((ra.layers_built, ra.layers_cached), (3, 0));
    assert_eq!(ra.python_checked, 2);

    // No change: no layer work at all.
    let again = a.build(&recipe, "app", &opts).unwrap();
    assert_eq!(again.digest, ra.digest);
    assert_eq!((again.layers_built, again.layers_cached), (0, 3));
    assert_eq!(again.bytes_archived, 0);
    assert_eq!(again.python_checked, 0);

    // One file of step 3 changes: steps 1 is reused, 3 and 4 are rebuilt.
    write(&ctx, "data/y.txt", "changed\n");
    let r = a.build(&recipe, "app", &opts).unwrap();
    assert_eq!(built(&r), vec![3, 4]);
    assert_eq!(r.layers_cached, 1);
    assert_ne!(r.digest, ra.digest);
    // The same change in a fresh store gives the same image.
    let fresh = Store::open(&t.join("state-c")).unwrap();
    assert_eq!(fresh.build(&recipe, "app", &opts).unwrap().digest, r.digest);

    // A change in the first copy rebuilds it and the next layer step (its parent changed);
    // step 3 comes out byte-identical, so step 4, whose key has step 3's digest as parent,
    // is reused.
    write(&ctx, "agents/a.py", "print('A')\n");
    let r = a.build(&recipe, "app", &opts).unwrap();
    assert_eq!(built(&r), vec![1, 3]);
    assert_eq!(r.layers_cached, 1);

    // no_cache rebuilds but gives the same digest.
    let nc = a
        .build(
            &recipe,
            "app",
            &BuildOptions {
                no_cache: true,
                ..opts.clone()
            },
        )
        .unwrap();
    assert_eq!((nc.layers_built, nc.digest.clone()), (3, r.digest.clone()));

    // zstd: another image, also reproducible.
    let z = BuildOptions {
        compression: Compression::Zstd,
        ..opts.clone()
    };
    let z1 = a.build(&recipe, "app-zstd", &z).unwrap();
    let z2 = fresh.build(&recipe, "app-zstd", &z).unwrap();
    assert_eq!(z1.digest, z2.digest);
    assert_ne!(z1.digest, r.digest);
    let info = a.inspect("app-zstd").unwrap();
    assert!(info
        .layers
        .iter()
        .all(|l| l.descriptor.media_type.ends_with("+zstd")));
}

#[test]
fn layers_are_deterministic_tars() {
    let t = TempDir::new("tars");
    let ctx = context(&t);
    let store = Store::open(&t.join("state")).unwrap();
    store
        .build(&ctx.join("recipe.yaml"), "app", &BuildOptions::default())
        .unwrap();
    let info = store.inspect("app").unwrap();
    assert_eq!(
        info.config.config.env,
        vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "A=b".to_string()
        ]
    );
    assert!(info.config.created.is_none());
    assert_eq!(info.config.rootfs.diff_ids.len(), 3);
    let raw = std::fs::read(&info.layers[1].path).unwrap();
    assert_eq!(&raw[..2], b"\x1f\x8b");
    assert_eq!(raw[3] & 0x08, 0, "no file name in the gzip header");
    assert_eq!(&raw[4..8], &[0, 0, 0, 0], "no mtime in the gzip header");
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    let mut ar = tar::Archive::new(tar.as_slice());
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(
            (h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0, 0, 0)
        );
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if name == "data/link" {
            assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("x.txt"));
        }
        names.push(name);
    }
    assert_eq!(names, ["data/", "data/link", "data/x.txt", "data/y.txt"]);
}

#[test]
fn python_syntax_errors_fail_the_build_with_path_and_line() {
    let t = TempDir::new("py");
    let ctx = t.join("ctx");
    write(&ctx, "agents/ok.py", "x = 1\n");
    write(&ctx, "agents/bad.py", "x = 1\ndef f(:\n    pass\n");
    write(
        &ctx,
        "r.yaml",
        "base: scratch\nsteps:\n  - copy: {src: agents, dst: /app}\n",
    );
    let store = Store::open(&t.join("state")).unwrap();
    let err = store
        .build(&ctx.join("r.yaml"), "py", &BuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("r.yaml: step 1 (copy agents -> /app): agents/bad.py:2: SyntaxError"),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty(), "no image on failure");
    write(
        &ctx,
        "r.yaml",
        "base: scratch\ncheck_python: false\nsteps:\n  - copy: {src: agents, dst: /app}\n",
    );
    store
        .build(&ctx.join("r.yaml"), "py", &BuildOptions::default())
        .unwrap();
}

#[test]
fn unsupported_parts_say_so() {
    let t = TempDir::new("unsup");
    let ctx = t.join("ctx");
    let store = Store::open(&t.join("state")).unwrap();
    let o = BuildOptions::default();
    write(&ctx, "run.yaml", "base: scratch\nsteps:\n  - run: [make]\n");
    let e = store
        .build(&ctx.join("run.yaml"), "x", &o)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("run.yaml: step 1 (run [\"make\"]): a run step needs the sandboxed launcher"),
        "{e}"
    );
    // (debootstrap and docker-archive bases are supported: images/tests/bases*.rs)
    write(&ctx, "dock.yaml", "base: docker-archive:img.tar\n");
    let e = store
        .build(&ctx.join("dock.yaml"), "x", &o)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dock.yaml: base docker-archive:img.tar: ")
            && e.contains("img.tar: No such file"),
        "{e}"
    );
    write(
        &ctx,
        "esc.yaml",
        "base: scratch\nsteps:\n  - copy: {src: ../.., dst: /x}\n",
    );
    let e = store
        .build(&ctx.join("esc.yaml"), "x", &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside the build context"), "{e}");
    write(
        &ctx,
        "miss.yaml",
        "base: scratch\nsteps:\n  - copy: {src: nope, dst: /x}\n",
    );
    let e = store
        .build(&ctx.join("miss.yaml"), "x", &o)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("miss.yaml: step 1 (copy nope -> /x): src \"nope\" not found"),
        "{e}"
    );
    let e = store
        .build(&ctx.join("miss.yaml"), "bad name", &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid image name"), "{e}");
}

#[test]
fn a_blob_missing_from_the_store_is_an_error_naming_the_image() {
    let t = TempDir::new("missing-blob");
    let ctx = context(&t);
    let store = Store::open(&t.join("state")).unwrap();
    store
        .build(&ctx.join("recipe.yaml"), "app", &BuildOptions::default())
        .unwrap();
    let info = store.inspect("app").unwrap();
    let layer = info.layers[0].path.clone();
    std::fs::remove_file(&layer).unwrap();
    let e = store
        .inspect("app")
        .expect_err("a layer is gone")
        .to_string();
    assert!(e.contains("image \"app\""), "{e}");
    assert!(e.contains("layer blob"), "{e}");
    assert!(e.contains(&layer.display().to_string()), "{e}");
    let config = store.blob_path(&info.manifest.config.digest);
    std::fs::remove_file(&config).unwrap();
    let e = store
        .inspect("app")
        .expect_err("the config is gone")
        .to_string();
    assert!(e.contains("image \"app\": its config blob"), "{e}");
}
