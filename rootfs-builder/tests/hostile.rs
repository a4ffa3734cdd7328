//! Hostile layers: every trick to write outside the target is refused with an error naming
//! the layer and the entry, and nothing appears outside the target.

mod common;

use std::path::{Path, PathBuf};

use agent_rootfs::{unpack_layer, Compression, Refusal, UnpackError};
use common::{write_layer, TestDir, E};

/// A test bed: `base/target` (unpack here), `base/sentinel` (must stay empty), `base/blobs`.
struct Bed {
    dir: TestDir,
    target: PathBuf,
    sentinel: PathBuf,
}

impl Bed {
    fn new(tag: &str) -> Bed {
        let dir = TestDir::new(tag);
        let target = dir.sub("work/target");
        let sentinel = dir.sub("work/sentinel");
        dir.sub("blobs");
        Bed {
            dir,
            target,
            sentinel,
        }
    }

    fn unpack(&self, entries: &[E]) -> Result<agent_rootfs::LayerStats, UnpackError> {
        let blob = self.dir.path().join("blobs/layer.tar");
        write_layer(&blob, entries, Compression::None);
        unpack_layer(&blob, Compression::None, &self.target)
    }

    /// Nothing was written next to the target or in the sentinel.
    fn assert_contained(&self) {
        let work = self.dir.path().join("work");
        let mut names: Vec<_> = std::fs::read_dir(&work)
            .expect("read work")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["sentinel", "target"],
            "something appeared next to the target"
        );
        assert_eq!(
            std::fs::read_dir(&self.sentinel)
                .expect("read sentinel")
                .count(),
            0,
            "the sentinel directory was written to"
        );
    }
}

fn refusal(r: Result<agent_rootfs::LayerStats, UnpackError>, entry: &str) -> (Refusal, String) {
    match r {
        Err(e @ UnpackError::Refused { .. }) => {
            let msg = e.to_string();
            let UnpackError::Refused {
                entry: got, reason, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(got, entry, "{msg}");
            assert!(
                msg.contains("layer.tar"),
                "message names the layer file: {msg}"
            );
            assert!(
                msg.contains(&format!("`{entry}`")),
                "message names the entry: {msg}"
            );
            (reason, msg)
        }
        other => panic!("expected `{entry}` to be refused, got {other:?}"),
    }
}

#[test]
fn dot_dot_path_is_refused() {
    let bed = Bed::new("dotdot");
    let r = bed.unpack(&[E::File("ok", "fine"), E::File("../escape", "pwned")]);
    let (reason, msg) = refusal(r, "../escape");
    eprintln!("{msg}");
    assert_eq!(reason, Refusal::DotDot);
    assert!(msg.contains(".."), "{msg}");
    bed.assert_contained();
    // Also hidden in the middle of a path.
    let r = bed.unpack(&[E::File("a/../../sentinel/x", "pwned")]);
    assert_eq!(refusal(r, "a/../../sentinel/x").0, Refusal::DotDot);
    bed.assert_contained();
}

#[test]
fn absolute_path_is_refused() {
    let bed = Bed::new("abs");
    let abs = bed.sentinel.join("abs-file");
    let abs_s = abs.display().to_string();
    let (reason, _) = refusal(bed.unpack(&[E::File(&abs_s, "pwned")]), &abs_s);
    assert_eq!(reason, Refusal::Absolute);
    let (reason, _) = refusal(bed.unpack(&[E::File("/abs/path", "pwned")]), "/abs/path");
    assert_eq!(reason, Refusal::Absolute);
    assert!(!Path::new("/abs/path").exists());
    assert!(!bed.target.join("abs").exists());
    bed.assert_contained();
}

#[test]
fn file_through_absolute_symlink_is_refused() {
    let bed = Bed::new("symabs");
    let outside = bed.sentinel.display().to_string();
    let r = bed.unpack(&[E::Sym("link", &outside), E::File("link/pwned", "pwned")]);
    let (reason, msg) = refusal(r, "link/pwned");
    eprintln!("{msg}");
    assert_eq!(reason, Refusal::ThroughSymlink("link".into()), "{msg}");
    assert!(msg.contains("symlink"), "{msg}");
    bed.assert_contained();
    // The literal case of the issue: `link -> /tmp/outside`.
    let r = bed.unpack(&[E::Sym("l2", "/tmp/outside"), E::File("l2/pwned", "x")]);
    assert_eq!(
        refusal(r, "l2/pwned").0,
        Refusal::ThroughSymlink("l2".into())
    );
    assert!(!Path::new("/tmp/outside/pwned").exists());
    // A directory through a symlink, deeper in the path.
    let r = bed.unpack(&[E::Dir("d"), E::Sym("d/s", &outside), E::Dir("d/s/sub")]);
    assert_eq!(
        refusal(r, "d/s/sub").0,
        Refusal::ThroughSymlink("d/s".into())
    );
    bed.assert_contained();
}

#[test]
fn file_through_relative_up_symlink_is_refused() {
    let bed = Bed::new("symup");
    let name = format!("pwned-{}", std::process::id());
    let entry = format!("up/{name}");
    let r = bed.unpack(&[E::Sym("up", "../.."), E::File(&entry, "pwned")]);
    assert_eq!(refusal(r, &entry).0, Refusal::ThroughSymlink("up".into()));
    let would_be = bed.target.join("../..").join(&name);
    assert!(!would_be.exists(), "{} was written", would_be.display());
    bed.assert_contained();
}

#[test]
fn escaping_or_dangling_hard_links_are_refused() {
    let bed = Bed::new("hard");
    let r = bed.unpack(&[E::Hard("hl", "../../etc/passwd")]);
    let (reason, msg) = refusal(r, "hl");
    eprintln!("{msg}");
    assert_eq!(reason, Refusal::LinkEscapes("../../etc/passwd".into()));
    assert!(msg.contains("../../etc/passwd"), "{msg}");
    let r = bed.unpack(&[E::Hard("hl", "/etc/passwd")]);
    assert_eq!(
        refusal(r, "hl").0,
        Refusal::LinkEscapes("/etc/passwd".into())
    );
    let r = bed.unpack(&[E::Hard("hl", "nope")]);
    assert_eq!(refusal(r, "hl").0, Refusal::LinkMissing("nope".into()));
    // Through a symlink to the host's /etc.
    let r = bed.unpack(&[E::Sym("etc", "/etc"), E::Hard("hl", "etc/passwd")]);
    assert_eq!(refusal(r, "hl").0, Refusal::ThroughSymlink("etc".into()));
    assert!(!bed.target.join("hl").exists());
    bed.assert_contained();
}

#[test]
fn hard_link_to_a_symlink_links_the_symlink_not_its_target() {
    let bed = Bed::new("hardsym");
    let passwd_links = std::fs::metadata("/etc/passwd").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    });
    let stats = bed
        .unpack(&[E::Sym("s", "/etc/passwd"), E::Hard("h", "s")])
        .expect("unpack");
    assert_eq!(stats.hardlinks, 1);
    let h = std::fs::symlink_metadata(bed.target.join("h")).expect("lstat h");
    assert!(h.file_type().is_symlink());
    let after = std::fs::metadata("/etc/passwd").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    });
    assert_eq!(passwd_links.ok(), after.ok());
    bed.assert_contained();
}

#[test]
fn an_entry_replacing_a_symlink_replaces_it_rather_than_writing_through() {
    let bed = Bed::new("replace");
    let victim = bed.sentinel.join("victim");
    let v = victim.display().to_string();
    bed.unpack(&[E::Sym("a", &v), E::File("a", "mine")])
        .expect("unpack");
    assert!(!victim.exists());
    let a = bed.target.join("a");
    assert!(std::fs::symlink_metadata(&a).expect("lstat").is_file());
    assert_eq!(std::fs::read_to_string(&a).expect("read"), "mine");
    // And a hard link onto the name of a symlink.
    bed.unpack(&[E::File("f", "x"), E::Sym("b", &v), E::Hard("b", "f")])
        .expect("unpack");
    assert!(!victim.exists());
    bed.assert_contained();
}

#[test]
fn whiteouts_cannot_reach_outside_either() {
    let bed = Bed::new("wh");
    std::fs::write(bed.sentinel.join("keep"), "x").expect("write");
    let outside = bed.sentinel.display().to_string();
    let r = bed.unpack(&[E::Sym("s", &outside), E::File("s/.wh.keep", "")]);
    assert_eq!(
        refusal(r, "s/.wh.keep").0,
        Refusal::ThroughSymlink("s".into())
    );
    let r = bed.unpack(&[E::Sym("o", &outside), E::File("o/.wh..wh..opq", "")]);
    assert_eq!(
        refusal(r, "o/.wh..wh..opq").0,
        Refusal::ThroughSymlink("o".into())
    );
    assert!(bed.sentinel.join("keep").exists());
    let r = bed.unpack(&[E::File(".wh...", "")]);
    assert!(matches!(refusal(r, ".wh...").0, Refusal::BadWhiteout(_)));
    std::fs::remove_file(bed.sentinel.join("keep")).expect("rm");
    bed.assert_contained();
}
