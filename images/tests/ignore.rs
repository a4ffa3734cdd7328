//! Ignore rules: an ignored directory is never opened, proven with inotify (the kernel reports
//! every open of a watched directory or of a file in it, even by root).

mod support;

use std::path::Path;

use agent_images::{BuildOptions, Store};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use support::{run, write, TempDir};

/// An inotify instance watching directories for opens and reads.
struct Watch(Inotify);

impl Watch {
    fn new() -> Watch {
        Watch(Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).expect("inotify_init1"))
    }

    fn add(&self, dir: &Path) {
        let mask =
            AddWatchFlags::IN_OPEN | AddWatchFlags::IN_ACCESS | AddWatchFlags::IN_CLOSE_NOWRITE;
        if let Err(e) = self.0.add_watch(dir, mask) {
            panic!("inotify_add_watch {}: {e}", dir.display());
        }
    }

    /// Pending events (0: nothing happened).
    fn pending(&self) -> usize {
        match self.0.read_events() {
            Ok(events) => events.len(),
            Err(nix::errno::Errno::EAGAIN) => 0,
            Err(e) => panic!("inotify read: {e}"),
        }
    }
}

#[test]
fn an_ignored_directory_is_never_opened() {
    let t = TempDir::new("ignore");
    let ctx = t.join("ctx");
    write(&ctx, "app/main.py", "print('hi')\n");
    write(&ctx, "app/__pycache__/main.cpython-311.pyc", "junk");
    write(
        &ctx,
        ".dockerignore",
        "# big things\nmodels\n**/__pycache__\n*.yaml\n",
    );
    write(
        &ctx,
        "r.yaml",
        "base: scratch\nsteps:\n  - copy: {src: ., dst: /srv}\n",
    );
    // The ignored tree: many files, a 16 GiB sparse file and a FIFO (opening it would block).
    let models = ctx.join("models");
    for d in 0..20 {
        for f in 0..50 {
            write(&models, &format!("d{d}/f{f}.bin"), "weights");
        }
    }
    let huge = std::fs::File::create(models.join("huge.bin")).unwrap();
    huge.set_len(16 << 30).unwrap();
    run(std::process::Command::new("mkfifo").arg(models.join("pipe")));

    let w = Watch::new();
    w.add(&models);
    for d in 0..20 {
        w.add(&models.join(format!("d{d}")));
    }
    w.add(&ctx.join("app/__pycache__"));
    assert_eq!(w.pending(), 0);

    let store = Store::open(&t.join("state")).unwrap();
    let r = store
        .build(&ctx.join("r.yaml"), "srv", &BuildOptions::default())
        .unwrap();
    assert_eq!(
        w.pending(),
        0,
        "the build opened something in an ignored directory"
    );
    assert_eq!(
        r.walk.dirs_read, 2,
        "the context root and app/ only: {:?}",
        r.walk
    );
    assert_eq!(
        r.walk.files_opened, 2,
        "main.py and .dockerignore: {:?}",
        r.walk
    );
    assert_eq!(
        r.walk.excluded, 3,
        "models, __pycache__, r.yaml: {:?}",
        r.walk
    );

    // The watch works: reading the directory ourselves is reported.
    let _ = std::fs::read_dir(&models).unwrap().count();
    assert!(
        w.pending() > 0,
        "inotify saw nothing: the proof above would be void"
    );

    // And the layer has exactly the included files.
    let info = store.inspect("srv").unwrap();
    let out = run(std::process::Command::new("tar")
        .arg("tzf")
        .arg(&info.layers[0].path));
    let mut names: Vec<&str> = out.lines().collect();
    names.sort();
    assert_eq!(
        names,
        ["srv/", "srv/.dockerignore", "srv/app/", "srv/app/main.py"]
    );
}

#[test]
fn negated_patterns_reach_into_excluded_directories() {
    let t = TempDir::new("negate");
    let ctx = t.join("ctx");
    write(&ctx, "models/keep.txt", "k");
    write(&ctx, "models/drop.bin", "d");
    write(&ctx, "models/sub/x.bin", "x");
    write(&ctx, "app/a.txt", "a");
    write(&ctx, "ignore.txt", "models\n!models/keep.txt\n");
    write(
        &ctx,
        "r.yaml",
        "base: scratch\nignore_file: ignore.txt\nignore: [r.yaml, ignore.txt]\nsteps:\n  - copy: {src: ., dst: /}\n",
    );
    let store = Store::open(&t.join("state")).unwrap();
    store
        .build(&ctx.join("r.yaml"), "n", &BuildOptions::default())
        .unwrap();
    let info = store.inspect("n").unwrap();
    let out = run(std::process::Command::new("tar")
        .arg("tzf")
        .arg(&info.layers[0].path));
    let mut names: Vec<&str> = out.lines().collect();
    names.sort();
    assert_eq!(names, ["app/", "app/a.txt", "models/", "models/keep.txt"]);

    // A FIFO that is not ignored is an error naming it.
    run(std::process::Command::new("mkfifo").arg(ctx.join("app/fifo")));
    let e = store
        .build(&ctx.join("r.yaml"), "n", &BuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("app/fifo: FIFO files cannot be copied"), "{e}");
}
