//! The `debootstrap` base against the real `debootstrap` and the host's Debian mirror (about
//! 30 s and network, so it is a test binary of its own): the image unpacks with umoci and holds
//! a Debian system, a rebuild runs no debootstrap, a failing debootstrap shows its output.

mod support;

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent_images::debootstrap::{host_codename, host_mirror};
use agent_images::{BuildOptions, StepOutcome, Store};
use support::{have, run, write, TempDir};

/// Whether the mirror's host answers on its port; `Err` says why not.
fn reachable(mirror: &str) -> Result<(), String> {
    let (default_port, rest) = if let Some(r) = mirror.strip_prefix("https://") {
        (443, r)
    } else if let Some(r) = mirror.strip_prefix("http://") {
        (80, r)
    } else {
        return Ok(()); // file:/ mirrors need no network
    };
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    };
    let addrs = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?;
    for a in addrs {
        if TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok() {
            return Ok(());
        }
    }
    Err(format!("no answer from {hostport}"))
}

/// Leftover temporary trees in the store (there must be none after a build, failed or not).
fn leftovers(store: &Store) -> Vec<String> {
    std::fs::read_dir(store.root())
        .expect("read store root")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("debootstrap"))
        .collect()
}

#[test]
fn debootstrap_base_builds_a_debian_image_once() {
    if !have("debootstrap") || !have("umoci") || !have("skopeo") {
        return;
    }
    let in_ci = std::env::var_os("CI").is_some();
    let suite = host_codename(Path::new("/etc/os-release")).expect("host VERSION_CODENAME");
    let mirror = host_mirror(Path::new("/etc/apt"), &suite).expect("a deb URI in apt sources");
    if let Err(why) = reachable(&mirror) {
        assert!(!in_ci, "mirror {mirror} unreachable in CI: {why}");
        eprintln!("SKIPPED: the host's mirror {mirror} is unreachable ({why})");
        return;
    }
    let t = TempDir::new("debootstrap");
    let ctx = t.join("ctx");
    write(&ctx, "app/hello.txt", "hello from the app layer\n");
    write(
        &ctx,
        "deb.yaml",
        "base: debootstrap\nsteps:\n  - copy: {src: app, dst: /app}\n  - cmd: [/bin/cat, /app/hello.txt]\n",
    );
    let store = Store::open(&t.join("state")).expect("open store");
    // Tests run unoptimised: the fastest gzip level keeps the ~120 MB layer quick.
    let opts = BuildOptions {
        level: Some(1),
        ..Default::default()
    };
    let first = store
        .build(&ctx.join("deb.yaml"), "deb", &opts)
        .expect("debootstrap build");
    assert!(
        matches!(first.steps[0].outcome, StepOutcome::Built { .. }),
        "{first:?}"
    );
    assert!(
        first.steps[0]
            .what
            .contains(&format!("suite={suite} variant=minbase")),
        "{:?}",
        first.steps[0].what
    );
    assert_eq!(first.layers_built, 2, "{first:?}");
    assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
    eprintln!(
        "debootstrap base: {:?}, {} bytes archived",
        first.steps[0].elapsed, first.bytes_archived
    );

    let root = store.root().display().to_string();
    run(Command::new("skopeo").args(["inspect", &format!("oci:{root}:deb")]));
    let bundle = t.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &format!("{root}:deb")])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let version = std::fs::read_to_string(rootfs.join("etc/debian_version"))
        .expect("/etc/debian_version in the image");
    assert!(!version.trim().is_empty());
    assert!(rootfs.join("usr/bin/dpkg").is_file(), "no /usr/bin/dpkg");
    assert!(rootfs.join("var/lib/dpkg/status").is_file());
    assert!(rootfs.join("app/hello.txt").is_file());
    // Downloaded packages, apt lists, logs and the host's resolv.conf stay out.
    let debs = std::fs::read_dir(rootfs.join("var/cache/apt/archives"))
        .expect("archives dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".deb"))
        .count();
    assert_eq!(debs, 0);
    assert!(!rootfs.join("etc/resolv.conf").exists());
    assert!(!rootfs.join("var/log/dpkg.log").exists());
    // The image's programs run (dpkg knows its own package).
    let out = run(Command::new("chroot").arg(&rootfs).args([
        "/usr/bin/dpkg-query",
        "-W",
        "-f=${Status}",
        "dpkg",
    ]));
    assert_eq!(out, "install ok installed");

    // Rebuild: no debootstrap, no layer written, the same image.
    let second = store
        .build(&ctx.join("deb.yaml"), "deb", &opts)
        .expect("rebuild");
    assert!(
        matches!(second.steps[0].outcome, StepOutcome::Cached { .. }),
        "{second:?}"
    );
    assert_eq!(
        (
            second.layers_built,
            second.layers_cached,
            second.bytes_archived
        ),
        (0, 2, 0)
    );
    assert_eq!(second.digest, first.digest);

    // A mirror path without the suite: debootstrap fails, its output is shown, nothing stays.
    let bad_mirror = format!("{}/no-such-archive", mirror.trim_end_matches('/'));
    write(
        &ctx,
        "bad.yaml",
        &format!("base: debootstrap\nmirror: {bad_mirror}\n"),
    );
    let err = store
        .build(&ctx.join("bad.yaml"), "bad", &opts)
        .expect_err("mirror without the suite")
        .to_string();
    assert!(
        err.contains("bad.yaml: base debootstrap: `")
            && err.contains(&bad_mirror)
            && err.contains("failed (exit status: 1)")
            && err.contains(&format!("dists/{suite}/")),
        "{err}"
    );
    eprintln!("failing debootstrap reported as:\n{err}");
    assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
}
