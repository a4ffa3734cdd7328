//! Layers stacked: whiteouts and opaque directories across three layers in the unpacked-copy
//! mode and with a real overlayfs mount (root only), metadata, compression, the layer cache
//! and `prepare_rootfs`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agent_rootfs::{
    overlay_probe, overlay_supported, prepare_rootfs, unpack_layer, unpack_layer_with, Compression,
    LayerCache, LayerRef, PreparedRootfs, UnpackOptions, Whiteouts,
};
use common::{need_root, snapshot, write_layer, TestDir, E};

const SHA1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const SHA2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const SHA3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

/// Three layers exercising whiteouts, opaque directories and replacements; bottom first.
fn three_layers(dir: &Path, media: Compression) -> Vec<LayerRef> {
    let l1 = [
        E::Dir("bin/"),
        E::File("bin/sh", "1"),
        E::Dir("etc/"),
        E::File("etc/keep", "1"),
        E::File("etc/gone", "1"),
        E::Dir("etc/gonedir/"),
        E::File("etc/gonedir/inner", "1"),
        E::Dir("opq/"),
        E::File("opq/a", "1"),
        E::Dir("opq/sub/"),
        E::File("opq/sub/b", "1"),
        E::File("replace", "1"),
        E::Dir("dir2file/"),
        E::File("dir2file/x", "1"),
        E::Sym("abs", "/etc/keep"),
    ];
    let l2 = [
        E::Dir("etc/"),
        E::File("etc/.wh.gone", ""),
        E::File("etc/.wh.gonedir", ""),
        E::Dir("opq/"),
        // Before the opaque marker on purpose: a layer's own files survive its marker.
        E::File("opq/new", "2"),
        E::File("opq/implicit/f", "2"), // its directory has no entry of its own
        E::File("opq/.wh..wh..opq", ""),
        E::File("replace", "2"),
        E::File("dir2file", "2"),
        E::File("added", "2"),
    ];
    let l3 = [
        E::Dir("etc/"),
        E::File("etc/gone", "3"),
        E::Dir("opq/sub/"),
        E::File("opq/sub/c", "3"),
        E::File(".wh.added", ""),
        E::Dir("newdir/"),
        E::File("newdir/f", "3"),
    ];
    let ext = match media {
        Compression::None => "tar",
        Compression::Gzip => "tar.gz",
        Compression::Zstd => "tar.zst",
    };
    [(SHA1, &l1[..]), (SHA2, &l2[..]), (SHA3, &l3[..])]
        .iter()
        .enumerate()
        .map(|(i, (digest, entries))| {
            let blob = dir.join(format!("l{}.{ext}", i + 1));
            write_layer(&blob, entries, media);
            LayerRef {
                digest: digest.to_string(),
                blob,
                media,
            }
        })
        .collect()
}

/// An overlay mount, detached on drop (also when an assertion fails).
struct Mounted(PathBuf);

impl Mounted {
    fn new(at: &Path, data: &str) -> Mounted {
        nix::mount::mount(
            Some("overlay"),
            at,
            Some("overlay"),
            nix::mount::MsFlags::MS_NODEV,
            Some(data),
        )
        .expect("mount overlay");
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn expected() -> BTreeMap<String, String> {
    [
        ("abs", "l:/etc/keep"),
        ("bin", "d"),
        ("bin/sh", "f:1"),
        ("dir2file", "f:2"),
        ("etc", "d"),
        ("etc/gone", "f:3"),
        ("etc/keep", "f:1"),
        ("newdir", "d"),
        ("newdir/f", "f:3"),
        ("opq", "d"),
        ("opq/implicit", "d"),
        ("opq/implicit/f", "f:2"),
        ("opq/new", "f:2"),
        ("opq/sub", "d"),
        ("opq/sub/c", "f:3"),
        ("replace", "f:2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn copy_mode_applies_whiteouts_and_opaque_dirs_across_three_layers() {
    for media in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let t = TestDir::new("copy");
        let layers = three_layers(&t.sub("blobs"), media);
        let target = t.sub("rootfs");
        let mut whiteouts = 0;
        for l in &layers {
            let s = unpack_layer(&l.blob, l.media, &target).expect("unpack");
            whiteouts += s.whiteouts + s.opaque_dirs;
        }
        assert_eq!(whiteouts, 4);
        assert_eq!(snapshot(&target), expected(), "{media:?}");
    }
}

#[test]
fn overlay_mode_layers_mount_to_the_same_tree() {
    if !need_root("overlay mount test") {
        return;
    }
    assert!(
        overlay_supported(),
        "this host lists no overlay in /proc/filesystems"
    );
    let probe = TestDir::new("probe");
    overlay_probe(&probe.sub("cache"), &probe.sub("group")).expect("probe mount");
    assert_eq!(
        std::fs::read_dir(probe.path().join("cache"))
            .expect("ls")
            .count(),
        0
    );
    let t = TestDir::new("ovl");
    let layers = three_layers(&t.sub("blobs"), Compression::Gzip);
    let cache = LayerCache::new(t.path().join("cache"));
    let dirs: Vec<PathBuf> = layers
        .iter()
        .map(|l| cache.ensure(l).expect("unpack into cache"))
        .collect();
    assert_eq!(dirs[0], t.path().join("cache/sha256").join(&SHA1[7..]));
    // The overlay form: a 0/0 character device per whiteout, no `.wh.` files.
    let l2 = snapshot(&dirs[1]);
    assert_eq!(l2.get("etc/gone").map(String::as_str), Some("c:0:0"));
    assert_eq!(l2.get("etc/gonedir").map(String::as_str), Some("c:0:0"));
    assert!(l2.keys().all(|k| !k.contains(".wh.")), "{l2:?}");
    let merged = t.sub("merged");
    let prepared = PreparedRootfs::Overlay {
        lowers: dirs.iter().rev().cloned().collect(),
        upper: t.sub("upper"),
        work: t.sub("work"),
    };
    let data = prepared
        .overlay_mount_data()
        .expect("options")
        .expect("overlay");
    let mounted = Mounted::new(&merged, &data);
    let seen = snapshot(&merged);
    // Writes go to the upper, never to the shared lowers.
    std::fs::write(merged.join("etc/keep"), "changed").expect("write through overlay");
    std::fs::remove_file(merged.join("bin/sh")).expect("rm through overlay");
    let after = snapshot(&merged);
    drop(mounted);
    assert_eq!(seen, expected());
    assert_eq!(after.get("etc/keep").map(String::as_str), Some("f:changed"));
    assert!(!after.contains_key("bin/sh"));
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("etc/keep")).expect("lower"),
        "1"
    );
    assert!(dirs[0].join("bin/sh").exists());
    // And the copy mode agrees.
    let copy = t.sub("copy");
    for l in &layers {
        unpack_layer(&l.blob, l.media, &copy).expect("unpack copy");
    }
    assert_eq!(snapshot(&copy), seen);
}

#[test]
fn prepare_rootfs_copy_and_overlay() {
    let t = TestDir::new("prep");
    let layers = three_layers(&t.sub("blobs"), Compression::Zstd);
    let cache = t.path().join("cache");
    let copy = prepare_rootfs(&layers, &cache, &t.path().join("g1"), false).expect("copy");
    let PreparedRootfs::Copy { dir } = &copy else {
        panic!("expected a copy, got {copy:?}")
    };
    assert_eq!(snapshot(dir), expected());
    assert_eq!(copy.overlay_mount_data().expect("none"), None);
    // Kept while the layers stay the same (the group's writes survive a restart).
    std::fs::write(dir.join("state"), "x").expect("write");
    let again = prepare_rootfs(&layers, &cache, &t.path().join("g1"), false).expect("again");
    assert_eq!(again, copy);
    assert!(dir.join("state").exists());
    // A different layer list starts afresh.
    let fewer = prepare_rootfs(&layers[..1], &cache, &t.path().join("g1"), false).expect("new");
    assert_eq!(fewer, copy);
    assert!(!dir.join("state").exists() && dir.join("opq/a").exists());

    if !need_root("overlay prepare_rootfs") {
        return;
    }
    let ovl = prepare_rootfs(&layers, &cache, &t.path().join("g2"), true).expect("overlay");
    let PreparedRootfs::Overlay {
        lowers,
        upper,
        work,
    } = &ovl
    else {
        panic!("expected overlay, got {ovl:?}")
    };
    assert_eq!(lowers.len(), 3);
    assert!(lowers[0].ends_with(&SHA3[7..]), "top first: {lowers:?}");
    assert!(upper.is_dir() && work.is_dir());
    // A second group shares the cached lowers, even with the blobs gone.
    for l in &layers {
        std::fs::remove_file(&l.blob).expect("rm blob");
    }
    let ovl2 = prepare_rootfs(&layers, &cache, &t.path().join("g3"), true).expect("cached");
    let PreparedRootfs::Overlay { lowers: l2, .. } = &ovl2 else {
        panic!("expected overlay")
    };
    assert_eq!(l2, lowers);
    let data = ovl2.overlay_mount_data().expect("ok").expect("some");
    assert!(
        data.starts_with(&format!("lowerdir={}:", lowers[0].display())),
        "{data}"
    );
}

#[test]
fn bad_digests_and_long_options_are_refused() {
    let t = TestDir::new("digest");
    let blob = t.path().join("l.tar");
    write_layer(&blob, &[E::File("f", "x")], Compression::None);
    for d in [
        "sha256:../../etc",
        "sha256",
        "../x:abcdef0123",
        "sha256:abc/def0123",
    ] {
        let l = LayerRef {
            digest: d.into(),
            blob: blob.clone(),
            media: Compression::None,
        };
        let e = prepare_rootfs(&[l], t.path(), &t.path().join("g"), false).unwrap_err();
        assert!(e.to_string().contains(d), "{e}");
    }
    let long = PreparedRootfs::Overlay {
        lowers: vec![PathBuf::from(format!("/{}", "x".repeat(4100)))],
        upper: "/u".into(),
        work: "/w".into(),
    };
    assert!(long.overlay_mount_data().is_err());
    let colon = PreparedRootfs::Overlay {
        lowers: vec!["/a:b".into()],
        upper: "/u".into(),
        work: "/w".into(),
    };
    assert!(colon.overlay_mount_data().is_err());
}

#[test]
fn metadata_devices_and_xattrs() {
    let t = TestDir::new("meta");
    let blob = t.path().join("l.tar");
    write_layer(
        &blob,
        &[
            E::DirMode("ro/", 0o555),
            E::File("ro/inside", "x"),
            E::FileMeta("suid", "s", 0o4755, 1234, 2345, 1_000_000),
            E::Char("dev/null", 1, 3),
            E::Pax(&[
                ("SCHILY.xattr.user.test", b"hello"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ]),
            E::File("xa", "x"),
            E::Hard("suid-link", "suid"),
            E::Sym("abs", "/usr/bin/python3"),
        ],
        Compression::None,
    );
    let target = t.sub("root");
    let s = unpack_layer(&blob, Compression::None, &target).expect("unpack");
    assert_eq!(s.devices_skipped, 1);
    assert_eq!(s.devices, 0);
    assert_eq!(s.hardlinks, 1);
    assert!(!target.join("dev/null").exists());
    let ro = std::fs::metadata(target.join("ro")).expect("ro");
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
    assert!(target.join("ro/inside").exists());
    let suid = std::fs::metadata(target.join("suid")).expect("suid");
    assert_eq!(suid.mtime(), 1_000_000);
    assert_eq!(suid.nlink(), 2);
    assert_eq!(
        std::fs::read_link(target.join("abs")).expect("link"),
        Path::new("/usr/bin/python3")
    );
    if nix::unistd::geteuid().is_root() {
        assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
        assert_eq!((suid.uid(), suid.gid()), (1234, 2345));
        // `trusted.*` is never restored from a layer.
        assert_eq!(s.xattrs_skipped, 1);
        // Devices on request, as root.
        let devs = t.sub("devs");
        let opts = UnpackOptions {
            devices: true,
            whiteouts: Whiteouts::Apply,
            same_owner: true,
        };
        let s = unpack_layer_with(&blob, Compression::None, &devs, &opts).expect("devices");
        assert_eq!(s.devices, 1);
        assert_eq!(
            snapshot(&devs).get("dev/null").map(String::as_str),
            Some("c:1:3")
        );
    }
}

#[test]
fn media_types() {
    use Compression::*;
    for (m, c) in [
        ("application/vnd.oci.image.layer.v1.tar", Some(None)),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Some(Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Some(Gzip),
        ),
        ("application/vnd.oci.image.config.v1+json", Option::None),
    ] {
        assert_eq!(Compression::from_media_type(m), c, "{m}");
    }
}

#[test]
fn a_corrupt_blob_names_the_layer() {
    let t = TestDir::new("corrupt");
    let blob = t.path().join("bad.tar.gz");
    std::fs::write(&blob, b"not gzip at all").expect("write");
    let e = unpack_layer(&blob, Compression::Gzip, &t.sub("r")).unwrap_err();
    assert!(e.to_string().contains("bad.tar.gz"), "{e}");
}
