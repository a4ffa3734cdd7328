//! Groups run from OCI images: `agent-supervisor build` builds an image from a recipe and a
//! group runs from it (overlayfs over the cached layers, or an unpacked copy); an image laid
//! out by skopeo is imported into the store and a group runs from it too.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::process::Command;

use agent_supervisor_tests::fixture::{root_or_skip, text, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

fn with_images(f: &Fixture, images: &str) {
    let path = f.dir.join("system.yaml");
    let s = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("images:\n{images}{s}")).unwrap();
}

const PROBE: &str = "[sh, -c, 'echo GREETING=$GREETING; echo PWD=$(pwd); ls /; cat /data/msg.txt; grep \" / / \" /proc/self/mountinfo']";

#[test]
fn a_group_runs_from_a_built_image() {
    if !root_or_skip("a_group_runs_from_a_built_image") {
        return;
    }
    let f = Fixture::new(BIN, "img-built", "img", &format!("  boxed:\n    host: h1\n    image: tiny\n    agents:\n      - name: probe\n        command: {PROBE}\n"));
    with_images(&f, "  tiny: {recipe: images/tiny.yaml}\n");
    f.file("images/tiny.yaml", "base: host-closure\nbinaries: [sh, ls, cat, grep]\ncontext: ..\nsteps:\n  - copy: {src: files, dst: /data}\n  - env: {GREETING: hello-from-image}\n  - workdir: /data\n");
    f.file("files/msg.txt", "message in the image\n");
    let sys = f.dir.join("system.yaml");
    let build = |extra: &[&str]| {
        Command::new(BIN)
            .arg("build")
            .arg(&sys)
            .args(["--host", "h1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = build(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("image tiny: sha256:"), "{}", text(&out));
    // Unchanged: nothing is rebuilt.
    let again = build(&[]);
    assert!(
        text(&again).contains("(0 layer(s) built"),
        "{}",
        text(&again)
    );
    let out = f.run_group("boxed");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("GREETING=hello-from-image"),
        "the image's Env reaches the agent:\n{t}"
    );
    assert!(
        t.contains("PWD=/data"),
        "the image's WorkingDir is the default workdir:\n{t}"
    );
    assert!(t.contains("message in the image"), "{t}");
    // Only the image's tree: no host /opt, /home or /boot.
    assert!(!t.lines().any(|l| l == "boot" || l == "opt"), "{t}");
    let overlay = std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .contains("overlay");
    if overlay {
        assert!(
            t.contains(" - overlay overlay "),
            "the root is an overlay of the layers:\n{t}"
        );
    }
    // The image's layers stay untouched by the group: a second run sees the same tree.
    let out = f.run_group("boxed");
    assert!(
        text(&out).contains("message in the image"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_group_runs_from_an_image_laid_out_by_skopeo() {
    if !root_or_skip("a_group_runs_from_an_image_laid_out_by_skopeo") {
        return;
    }
    let Ok(skopeo) = which("skopeo") else {
        if std::env::var_os("CI").is_some() {
            panic!("skopeo is not installed (apt-get install skopeo), and CI must run this test");
        }
        eprintln!("SKIP a_group_runs_from_an_image_laid_out_by_skopeo: skopeo is not installed");
        return;
    };
    let f = Fixture::new(
        BIN,
        "img-skopeo",
        "img",
        &format!("  origin:\n    host: h1\n    image: tiny\n  imported:\n    host: h1\n    image: copied\n    agents:\n      - name: probe\n        command: {PROBE}\n"),
    );
    with_images(&f, "  tiny: {recipe: images/tiny.yaml}\n  copied: {}\n");
    f.file("images/tiny.yaml", "base: host-closure\nbinaries: [sh, ls, cat, grep]\ncontext: ..\nsteps:\n  - copy: {src: files, dst: /data}\n  - env: {GREETING: hello-via-skopeo}\n");
    f.file("files/msg.txt", "copied by skopeo\n");
    let sys = f.dir.join("system.yaml");
    let out = Command::new(BIN)
        .arg("build")
        .arg(&sys)
        .args(["--host", "h1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("image copied: no recipe"),
        "{}",
        text(&out)
    );
    let store = f.dir.join("state/images");
    let layout = f.dir.join("skopeo-layout");
    let out = Command::new(skopeo)
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:tiny", store.display()))
        .arg(format!("oci:{}:other", layout.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", text(&out));
    let out = Command::new(BIN)
        .args(["images", "--state-dir"])
        .arg(f.dir.join("state"))
        .arg("import")
        .arg(format!("{}:other", layout.display()))
        .arg("copied")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = f.run_group("imported");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("GREETING=hello-via-skopeo") && t.contains("copied by skopeo"),
        "{t}"
    );
}

fn which(prog: &str) -> Result<std::path::PathBuf, ()> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .ok_or(())
}
