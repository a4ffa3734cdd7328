//! A recipe's `run` step: the command runs inside the image being built, in the launcher's
//! sandbox (own pid namespace and hostname), its writes become a layer (deletions as
//! whiteouts, a replaced directory as opaque) that umoci and our groups read the same way;
//! an unchanged rebuild does not run it again; a failing command fails the build naming the
//! recipe, the step, the status and the output, and leaves nothing behind.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::path::Path;
use std::process::Command;

use agent_supervisor_tests::fixture::{root_or_skip, text, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

const RECIPE: &str = r#"base: host-closure
binaries: [sh, rm, mkdir, cat, ls, hostname]
context: ..
steps:
  - copy: {src: files, dst: /data}
  - run: [sh, -c, 'echo $$ > /data/pid; hostname > /data/host; rm /data/old.txt; rm -r /data/dir; mkdir /data/dir; echo new > /data/dir/y.txt; echo made > /made.txt']
  - run: [sh, -c, 'cat /made.txt > /data/seen; echo $GREETING > /data/env']
  - env: {LATE: x}
"#;

const PROBE: &str = "[sh, -c, 'cat /data/pid /data/host /data/seen /data/env; echo LS; ls /data; echo DIR; ls /data/dir']";

/// `name` is also the fixture's cgroup tag: tests running side by side see only their own.
fn fixture(name: &str, recipe: &str) -> Fixture {
    let f = Fixture::new(
        BIN,
        name,
        name,
        &format!("  boxed:\n    host: h1\n    image: tiny\n    agents:\n      - name: probe\n        command: {PROBE}\n"),
    );
    let path = f.dir.join("system.yaml");
    let s = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("images:\n  tiny: {{recipe: images/tiny.yaml}}\n{s}"),
    )
    .unwrap();
    f.file("images/tiny.yaml", recipe);
    f.file("files/msg.txt", "kept\n");
    f.file("files/old.txt", "deleted by the run step\n");
    f.file("files/dir/x.txt", "replaced with the directory\n");
    f
}

fn build(f: &Fixture) -> std::process::Output {
    Command::new(BIN)
        .arg("build")
        .arg(f.dir.join("system.yaml"))
        .args(["--host", "h1"])
        .output()
        .unwrap()
}

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing, and CI must have it"
        );
        eprintln!("SKIP the {tool} half: {tool} is not installed");
    }
    ok
}

/// Nothing of a build's sandboxes is left: no cgroup, no pod directory, no scratch space.
fn assert_nothing_left(f: &Fixture) {
    let build_dir = f.dir.join("run/build");
    let left: Vec<_> = std::fs::read_dir(&build_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "sandbox dirs left: {left:?}");
    let tmp = f.dir.join("state/images/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch dirs left: {left:?}");
    for hier in ["unified", "memory", "pids"] {
        let p = Path::new("/sys/fs/cgroup").join(hier).join(&f.slice);
        let kids: Vec<_> = std::fs::read_dir(&p)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            kids.is_empty(),
            "cgroups left under {}: {kids:?}",
            p.display()
        );
    }
}

#[test]
fn a_run_step_becomes_a_layer_with_whiteouts() {
    if !root_or_skip("a_run_step_becomes_a_layer_with_whiteouts") {
        return;
    }
    let f = fixture("img-run", RECIPE);
    // The image's env reaches the command.
    let recipe = RECIPE.replace(
        "  - run: [sh, -c, 'cat",
        "  - env: {GREETING: hi-from-env}\n  - run: [sh, -c, 'cat",
    );
    f.file("images/tiny.yaml", &recipe);
    let out = build(&f);
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&f);
    // Unchanged: neither command runs again, every layer comes from the cache.
    let again = build(&f);
    assert!(
        text(&again).contains("(0 layer(s) built"),
        "{}",
        text(&again)
    );

    let out = f.run_group("boxed");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let lines: Vec<&str> = t.lines().map(str::trim).collect();
    // The command ran in its own pid namespace (the sandbox's init is pid 1) and hostname.
    let pid: u32 = lines
        .iter()
        .find_map(|l| l.rsplit(' ').next().and_then(|w| w.parse().ok()))
        .unwrap_or_else(|| panic!("no pid in:\n{t}"));
    assert!(
        pid < 10,
        "the run step's shell is pid {pid}, not in a fresh namespace:\n{t}"
    );
    assert!(t.contains("build"), "hostname:\n{t}");
    assert!(
        t.contains("made"),
        "the second run sees the first one's file:\n{t}"
    );
    assert!(t.contains("hi-from-env"), "{t}");
    let ls = t.split("LS").nth(1).unwrap_or_default();
    assert!(ls.contains("msg.txt"), "{t}");
    assert!(!ls.contains("old.txt"), "the deleted file is gone:\n{t}");
    let dir = t.split("DIR").nth(1).unwrap_or_default();
    assert!(
        dir.contains("y.txt") && !dir.contains("x.txt"),
        "opaque dir:\n{t}"
    );

    // Other tools read the whiteouts the same way.
    if have("umoci") {
        let bundle = f.dir.join("bundle");
        let store = f.dir.join("state/images");
        let out = Command::new("umoci")
            .args(["unpack", "--image", &format!("{}:tiny", store.display())])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let r = bundle.join("rootfs");
        assert!(r.join("data/msg.txt").exists());
        assert!(
            !r.join("data/old.txt").exists(),
            "umoci honours the whiteout"
        );
        assert!(r.join("data/dir/y.txt").exists());
        assert!(
            !r.join("data/dir/x.txt").exists(),
            "umoci honours the opaque dir"
        );
        assert_eq!(
            std::fs::read_to_string(r.join("made.txt")).unwrap(),
            "made\n"
        );
    }
}

#[test]
fn a_failing_run_step_fails_the_build_and_leaves_nothing() {
    if !root_or_skip("a_failing_run_step_fails_the_build_and_leaves_nothing") {
        return;
    }
    let f = fixture(
        "img-run-fail",
        "base: host-closure\nbinaries: [sh]\ncontext: ..\nsteps:\n  - run: [sh, -c, 'echo boom-output; echo more >&2; sleep 1000 & exit 3']\n",
    );
    let out = build(&f);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    for want in [
        "images/tiny.yaml",
        "step 1",
        "exited with status 3",
        "boom-output",
        "more",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    assert_nothing_left(&f);

    // Without a shell in the image the command cannot start: said so.
    f.file(
        "images/tiny.yaml",
        "base: host-closure\nbinaries: [cat]\ncontext: ..\nsteps:\n  - run: [/bin/nonexistent-tool, x]\n",
    );
    let out = build(&f);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("step 1") && t.contains("nonexistent-tool"),
        "{t}"
    );
    assert_nothing_left(&f);
}

/// Writes a pure-Python wheel of `hello-agent-dep` (a wheel is a zip with a dist-info).
fn write_wheel(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"
import base64, hashlib, sys, zipfile
d = sys.argv[1]
files = {
    "hello_agent_dep/__init__.py": b'GREETING = "hi from a wheel"\n',
    "hello_agent_dep-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: hello-agent-dep\nVersion: 0.1\n",
    "hello_agent_dep-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
rec = [f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},{len(v)}" for k, v in files.items()]
rec.append("hello_agent_dep-0.1.dist-info/RECORD,,")
files["hello_agent_dep-0.1.dist-info/RECORD"] = ("\n".join(rec) + "\n").encode()
with zipfile.ZipFile(d + "/hello_agent_dep-0.1-py3-none-any.whl", "w") as z:
    for k, v in files.items():
        z.writestr(k, v)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn pip_installs_requirements_in_a_run_step() {
    if !root_or_skip("pip_installs_requirements_in_a_run_step") {
        return;
    }
    if !Path::new("/usr/lib/python3/dist-packages/pip").is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-pip is missing, and CI must have it"
        );
        eprintln!("SKIP pip_installs_requirements_in_a_run_step: python3-pip is not installed");
        return;
    }
    // The seed's pattern (`pip install -r requirements.txt` in the group's image), offline:
    // the requirement is served from a wheel in the build context.
    let f = fixture(
        "img-run-pip",
        r#"base: host-closure
binaries: [python3]
packages: [python3.11-minimal, libpython3.11-minimal, libpython3.11-stdlib, python3-pip, python3-setuptools, python3-wheel, python3-distutils, python3-pkg-resources]
context: ..
steps:
  - copy: {src: pyapp, dst: /app}
  - env: {PIP_BREAK_SYSTEM_PACKAGES: "1", PIP_NO_INDEX: "1", PIP_FIND_LINKS: /app/wheels}
  - run: [python3, -m, pip, install, --no-cache-dir, -r, /app/requirements.txt]
"#,
    );
    f.file("pyapp/requirements.txt", "hello-agent-dep==0.1\n");
    write_wheel(&f.dir.join("pyapp/wheels"));
    f.set_groups(
        "  boxed:\n    host: h1\n    image: tiny\n    agents:\n      - name: probe\n        command: [python3, -c, 'import hello_agent_dep as h; print(h.GREETING, h.__file__)']\n",
    );
    let out = build(&f);
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&f);
    let out = f.run_group("boxed");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("hi from a wheel"),
        "the group imports what pip installed:\n{t}"
    );
    assert!(t.contains("/usr/local/lib/python3"), "{t}");
}
