//! File-level helpers: reading and writing cgroup interface files, walking and removing trees.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::CgroupError;

pub(super) fn signal_kill(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else { return };
    // ESRCH (already gone) is fine; nothing else can be done about other errors here.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Removes `dir` and its subdirectories, deepest first, retrying for up to `busy` while a
/// directory is busy.
pub(super) fn remove_tree(dir: &Path, busy: Duration) -> Result<(), CgroupError> {
    // Most cgroups are leaves: try the rmdir before listing the directory.
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let mut first = None;
    for sub in subdirs(dir) {
        if let Err(e) = remove_tree(&sub, busy) {
            first.get_or_insert(e);
        }
    }
    if let Some(e) = first {
        return Err(e);
    }
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < busy => {
                sleep(Duration::from_millis(5));
            }
            Err(source) => {
                let pids = read_pids(&dir.join("cgroup.procs"));
                return Err(CgroupError::Remove {
                    path: dir.into(),
                    left: if pids.is_empty() {
                        String::new()
                    } else {
                        format!(" (processes left: {pids:?})")
                    },
                    source,
                });
            }
        }
    }
}

pub(super) fn collect_pids(dir: &Path, out: &mut Vec<u32>) {
    out.extend(read_pids(&dir.join("cgroup.procs")));
    for sub in subdirs(dir) {
        collect_pids(&sub, out);
    }
}

pub(super) fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

pub(super) fn read_pids(file: &Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whitespace-separated words of a file (empty when unreadable).
pub(super) fn read_words(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The value of `key` in a flat-keyed file (`key value` lines: `memory.events`, `cpu.stat`).
pub(super) fn keyed_value(file: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A single-number file; `None` when absent or `max`.
pub(super) fn read_u64(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

pub(super) fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Io {
            op: "create cgroup".into(),
            path: dir.into(),
            source,
        }),
    }
}

pub(super) fn mkdir_all(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|source| CgroupError::Io {
        op: "create cgroup".into(),
        path: dir.into(),
        source,
    })
}

/// Writes `value` in one `write(2)` (cgroup files take one value per write). Unit tests run
/// against a plain directory tree, where the file is created.
pub(super) fn write_file(file: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Io {
        op: format!("write {value:?} to"),
        path: file.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(cfg!(test))
        .truncate(cfg!(test))
        .open(file)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}
