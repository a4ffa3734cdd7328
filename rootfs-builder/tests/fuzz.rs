//! Fuzz targets of the layer unpacker (`docs/fuzzing.md`): arbitrary bytes (plain, gzip and
//! zstd) and hostile archives built entry by entry (`..` and absolute paths, symlinks out
//! and files written through them, hard links out, whiteouts, device nodes, sizes larger
//! than the data), unpacked into a fresh directory, two layers one over the other, in both
//! whiteout modes. Property: nothing outside the target changes (a sibling sentinel with a
//! file in it, and the whole temporary tree around the target, are compared before and
//! after), nothing panics. Each runs for `FUZZ_SECS`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use agent_rootfs::{unpack_layer_with, Compression, UnpackError, UnpackOptions, Whiteouts};
use agent_supervisor_tests::fuzz::{budget, keep_on_panic, regression_files, Tally};
use agent_supervisor_tests::fuzz_tar::{snapshot, Snapshot, TarDict, TarEntry};

/// `root/outside` (the sentinel: a file `secret`) and `root/w/w/w/w/w/target`, deep enough
/// that no `..` chain of the dictionaries leaves `root` even if one were followed.
struct Bed {
    root: PathBuf,
    outside: PathBuf,
    target: PathBuf,
    layer: PathBuf,
}

static N: AtomicU64 = AtomicU64::new(0);

impl Bed {
    fn new(tag: &str) -> Bed {
        let root = std::env::temp_dir().join(format!(
            "fuzz-unpack-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let outside = root.join("outside");
        std::fs::create_dir_all(&outside).expect("create the sentinel");
        std::fs::write(outside.join("secret"), b"keep").expect("write the sentinel file");
        let layer = root.join("layer");
        let target = root.join("w/w/w/w/w/target");
        Bed {
            root,
            outside,
            target,
            layer,
        }
    }

    /// Everything under `root` but the target and the layer file.
    fn around(&self) -> Snapshot {
        let (t, l) = (self.target.clone(), self.layer.clone());
        snapshot(&self.root, &move |p: &Path| p == t || p == l)
    }

    /// Unpacks each layer into a fresh target and checks nothing else changed; says how the
    /// last layer ended.
    fn unpack(&self, layers: &[Vec<u8>], media: Compression, opts: &UnpackOptions) -> &'static str {
        let _ = std::fs::remove_dir_all(&self.target);
        std::fs::create_dir_all(&self.target).expect("create the target");
        let before = self.around();
        let mut outcome = "none";
        for bytes in layers {
            std::fs::write(&self.layer, bytes).expect("write the layer");
            outcome = match unpack_layer_with(&self.layer, media, &self.target, opts) {
                Ok(_) => "unpacked",
                Err(UnpackError::Refused { .. }) => "refused",
                Err(_) => "error",
            };
            assert_eq!(
                before,
                self.around(),
                "unpacking wrote outside the target {}",
                self.target.display()
            );
        }
        outcome
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn options() -> [UnpackOptions; 2] {
    [
        UnpackOptions {
            whiteouts: Whiteouts::Apply,
            devices: true,
            same_owner: true,
        },
        UnpackOptions {
            whiteouts: Whiteouts::Overlay,
            devices: true,
            same_owner: false,
        },
    ]
}

#[test]
fn fuzz_unpack_bytes() {
    let bed = Bed::new("bytes");
    let tally = Tally::new("unpack bytes");
    bolero::check!()
        .with_type::<(u8, Vec<u8>)>()
        .with_test_time(budget())
        .for_each(|(how, bytes)| {
            let media =
                [Compression::None, Compression::Gzip, Compression::Zstd][*how as usize % 3];
            let opts = &options()[(*how as usize / 3) % 2];
            keep_on_panic("unpack-bytes", bytes, || {
                tally.hit(bed.unpack(std::slice::from_ref(bytes), media, opts));
            });
        });
}

#[test]
fn fuzz_unpack_hostile_layers() {
    let bed = Bed::new("hostile");
    let dict = TarDict::new(&bed.outside, Vec::new());
    let tally = Tally::new("unpack hostile");
    bolero::check!()
        .with_type::<(bool, Vec<TarEntry>, Vec<TarEntry>)>()
        .with_test_time(budget())
        .for_each(|(overlay, lower, upper)| {
            let layers = [dict.build(lower), dict.build(upper)];
            keep_on_panic("unpack-hostile", &layers.concat(), || {
                let opts = &options()[usize::from(*overlay)];
                tally.hit(bed.unpack(&layers, Compression::None, opts));
            });
        });
}

/// The same archives through gzip, whose reader errors differ from the plain one's.
#[test]
fn fuzz_unpack_hostile_gzip() {
    use std::io::Write;
    let bed = Bed::new("gzip");
    let dict = TarDict::new(&bed.outside, Vec::new());
    let tally = Tally::new("unpack gzip");
    bolero::check!()
        .with_type::<(Vec<TarEntry>, u16)>()
        .with_test_time(budget() / 2)
        .for_each(|(entries, cut)| {
            let tar = dict.build(entries);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar).expect("gzip in memory");
            let mut bytes = gz.finish().expect("gzip in memory");
            // Sometimes cut short.
            if *cut % 4 == 0 {
                bytes.truncate(*cut as usize % (bytes.len() + 1));
            }
            keep_on_panic("unpack-gzip", &bytes, || {
                tally.hit(bed.unpack(&[bytes.clone()], Compression::Gzip, &options()[0]));
            });
        });
}

/// The property can fail: a file written in the sentinel, or beside the target, shows.
#[test]
fn the_snapshot_sees_writes_outside_the_target() {
    let bed = Bed::new("sanity");
    std::fs::create_dir_all(&bed.target).expect("create the target");
    let before = bed.around();
    std::fs::write(bed.target.join("inside"), b"x").expect("write inside");
    assert_eq!(before, bed.around(), "the target is not compared");
    std::fs::write(bed.outside.join("secret"), b"changed").expect("write outside");
    assert_ne!(before, bed.around(), "a changed sentinel file is not seen");
    let beside = bed.target.parent().expect("a parent").join("beside");
    std::fs::write(&beside, b"x").expect("write beside");
    assert!(
        bed.around().contains_key(&beside),
        "a file beside the target is not seen"
    );
}

/// Hostile inputs checked in under `tests/fuzz_regressions/` (a symlink out and a file
/// written through it, a hard link out and a file written over it): each is one layer,
/// unpacked plain in both modes, and refused.
#[test]
fn regressions() {
    let bed = Bed::new("regressions");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let files = regression_files(&dir);
    assert!(
        !files.is_empty(),
        "no regression input in {}",
        dir.display()
    );
    for (name, bytes) in files {
        for opts in &options() {
            let outcome = bed.unpack(std::slice::from_ref(&bytes), Compression::None, opts);
            // Each checked-in archive tries to write outside: it must be refused.
            assert_eq!(outcome, "refused", "{name}");
        }
    }
}
