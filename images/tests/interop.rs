//! Other OCI tools read our images (skopeo, umoci), images they write are imported back, and
//! the example recipes build images that run (checked in a chroot of the unpacked rootfs).

mod support;

use std::process::Command;

use agent_images::{BuildOptions, Store};
use support::{example_dir, have, run, write, TempDir};

#[test]
fn example_images_are_read_by_skopeo_and_umoci_and_run() {
    if !have("skopeo") || !have("umoci") {
        return;
    }
    let t = TempDir::new("example");
    let store = Store::open(&t.join("state")).unwrap();
    // gzip (umoci 0.4 reads no zstd), fast level: the stdlib layer is ~30 MB and tests run
    // unoptimised.
    let opts = BuildOptions {
        level: Some(1),
        ..Default::default()
    };
    let images = example_dir().join("images");
    let py = store
        .build(&images.join("agent-python.yaml"), "agent-python", &opts)
        .unwrap();
    assert_eq!(py.layers_built, 2, "{py:?}");
    assert!(py.warnings.is_empty(), "{:?}", py.warnings);
    let redis = store
        .build(&images.join("redis.yaml"), "redis", &opts)
        .unwrap();
    let again = store
        .build(&images.join("agent-python.yaml"), "agent-python", &opts)
        .unwrap();
    assert_eq!(
        (again.layers_built, again.digest.clone()),
        (0, py.digest.clone())
    );

    let root = store.root().to_str().unwrap().to_string();
    for (name, digest) in [("agent-python", &py.digest), ("redis", &redis.digest)] {
        let out = run(Command::new("skopeo").args(["inspect", &format!("oci:{root}:{name}")]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Digest"].as_str(), Some(digest.as_str()), "{out}");
        let bundle = t.join(&format!("bundle-{name}"));
        run(Command::new("umoci")
            .args(["unpack", "--image", &format!("{root}:{name}")])
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        let out = if name == "redis" {
            run(Command::new("chroot")
                .arg(&rootfs)
                .args(["/usr/bin/redis-server", "--version"]))
        } else {
            run(Command::new("chroot").arg(&rootfs).args([
                "/usr/bin/python3",
                "-c",
                "import http.server, json, socket, argparse, ssl, sqlite3; print('stdlib ok')",
            ]));
            run(Command::new("chroot").arg(&rootfs).args([
                "/usr/bin/python3",
                "-I",
                "/app/agents/stand_in_agent.py",
                "--help",
            ]))
        };
        assert!(!out.is_empty(), "{name}: no output");
    }
    let info = store.inspect("agent-python").unwrap();
    assert_eq!(
        info.config.config.entrypoint.as_deref(),
        Some(
            &[
                "/usr/bin/python3".to_string(),
                "/app/agents/stand_in_agent.py".to_string()
            ][..]
        )
    );
    assert_eq!(info.config.config.working_dir.as_deref(), Some("/app"));
}

#[test]
fn layouts_written_by_skopeo_and_umoci_import_back() {
    if !have("skopeo") || !have("umoci") {
        return;
    }
    let t = TempDir::new("import");
    let ctx = t.join("ctx");
    write(&ctx, "app/run.sh", "#!/bin/sh\necho hi\n");
    write(
        &ctx,
        "r.yaml",
        "base: scratch\nsteps:\n  - copy: {src: app, dst: /app}\n  - cmd: [/app/run.sh]\n",
    );
    let store = Store::open(&t.join("state")).unwrap();
    let built = store
        .build(&ctx.join("r.yaml"), "app", &BuildOptions::default())
        .unwrap();
    let root = store.root().to_str().unwrap().to_string();

    // skopeo copies our image into a layout of its own; we import it back unchanged.
    let other = t.join("other");
    let other_s = other.to_str().unwrap();
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{root}:app"),
        &format!("oci:{other_s}:copied"),
    ]));
    let imported = store
        .import(&format!("{other_s}:copied"), "app-copy")
        .unwrap();
    assert_eq!(imported.layers, 1);
    assert_eq!(
        store.inspect("app-copy").unwrap().manifest.layers,
        store.inspect("app").unwrap().manifest.layers
    );

    // umoci unpacks, we add a file, umoci repacks a new layer: the import has two layers.
    let bundle = t.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &format!("{other_s}:copied")])
        .arg(&bundle));
    write(&bundle.join("rootfs"), "etc/added", "by umoci\n");
    run(Command::new("umoci")
        .args(["repack", "--image", &format!("{other_s}:repacked")])
        .arg(&bundle));
    let rep = store
        .import(&format!("{other_s}:repacked"), "app-repacked")
        .unwrap();
    assert_eq!(rep.layers, 2);
    // A base that is an OCI layout: build on top of umoci's image.
    write(
        &ctx,
        "on-top.yaml",
        &format!(
            "base: oci:{other_s}:repacked\nsteps:\n  - copy: {{src: app/run.sh, dst: /bin/}}\n"
        ),
    );
    let top = store
        .build(&ctx.join("on-top.yaml"), "on-top", &BuildOptions::default())
        .unwrap();
    assert_eq!(store.inspect("on-top").unwrap().layers.len(), 3);
    assert_eq!(top.layers_built, 1);

    // Export as a layout and as an archive; both import back to the same digest.
    let exp = t.join("exported");
    store.export("on-top", &exp).unwrap();
    run(Command::new("skopeo").args(["inspect", &format!("oci:{}:on-top", exp.display())]));
    let tar = t.join("on-top.tar");
    store.export("on-top", &tar).unwrap();
    run(Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", tar.display())]));
    // An OCI archive as a recipe's base.
    write(
        &ctx,
        "from-tar.yaml",
        &format!(
            "base: oci-archive:{}\nsteps:\n  - env: {{X: y}}\n",
            tar.display()
        ),
    );
    store
        .build(
            &ctx.join("from-tar.yaml"),
            "from-tar",
            &BuildOptions::default(),
        )
        .unwrap();
    let ft = store.inspect("from-tar").unwrap();
    assert_eq!(
        ft.manifest.layers,
        store.inspect("on-top").unwrap().manifest.layers
    );
    assert!(ft.config.config.env.contains(&"X=y".to_string()));
    store.remove("from-tar").unwrap();
    let s2 = Store::open(&t.join("state2")).unwrap();
    assert_eq!(
        s2.import(tar.to_str().unwrap(), "x").unwrap().digest,
        top.digest
    );
    assert_eq!(
        s2.import(exp.to_str().unwrap(), "y").unwrap().digest,
        top.digest
    );

    // remove + prune: only unreferenced blobs go; what is left still reads.
    let names: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["app", "app-copy", "app-repacked", "on-top"]);
    store.remove("on-top").unwrap();
    store.remove("app-repacked").unwrap();
    let p = store.prune().unwrap();
    assert!(p.blobs_removed >= 3, "{p:?}");
    assert!(store.remove("on-top").is_err());
    assert_eq!(store.inspect("app").unwrap().digest, built.digest);
    run(Command::new("skopeo").args(["inspect", &format!("oci:{root}:app")]));
    let again = store
        .build(&ctx.join("r.yaml"), "app", &BuildOptions::default())
        .unwrap();
    assert_eq!(
        again.layers_cached, 1,
        "cache entries of kept layers survive a prune"
    );
}
