//! cgroup2: the rules as a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the group's
//! directory, replacing what was attached before (as runc's `LoadAttachCgroupDeviceFilter`).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{program, sys, DeviceRule, DevicesError};

fn open_dir(dir: &Path) -> Result<File, DevicesError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|source| DevicesError::Bpf {
            dir: dir.to_path_buf(),
            step: "open the cgroup directory",
            source,
        })
}

fn query(dir: &Path, cg: &File) -> Result<(Vec<u32>, u32), DevicesError> {
    sys::prog_query(cg.as_fd()).map_err(|source| DevicesError::Bpf {
        dir: dir.to_path_buf(),
        step: "query (BPF_PROG_QUERY)",
        source,
    })
}

/// The ids of the device programs attached to the cgroup2 directory `dir` itself.
pub fn attached_programs(dir: &Path) -> Result<Vec<u32>, DevicesError> {
    let cg = open_dir(dir)?;
    Ok(query(dir, &cg)?.0)
}

/// cgroup2: `dir` is the group's cgroup2 directory. Builds the program for `rules`, loads it
/// (license "Apache"; the verifier's log goes into the error), attaches it with
/// `BPF_CGROUP_DEVICE` + `BPF_F_ALLOW_MULTI`, then detaches the programs attached before
/// (found with `BPF_PROG_QUERY`), so applying twice leaves exactly one program. A failure
/// before the attach leaves the old programs in force; the new one is in force from the
/// attach on (with `ALLOW_MULTI` every attached program must allow, so during the swap the
/// group gets at most what both lists allow).
///
/// Where the old program was attached without `BPF_F_ALLOW_MULTI` (by another tool), the new
/// one is attached with the old flags, which replaces it in place.
pub fn apply_v2(dir: &Path, rules: &[DeviceRule]) -> Result<(), DevicesError> {
    let bpf_err = |step: &'static str| {
        move |source: std::io::Error| DevicesError::Bpf {
            dir: dir.to_path_buf(),
            step,
            source,
        }
    };
    let cg = open_dir(dir)?;
    let (old_ids, old_flags) = query(dir, &cg)?;
    let mut old: Vec<OwnedFd> = Vec::with_capacity(old_ids.len());
    for id in old_ids {
        match sys::prog_get_fd_by_id(id) {
            Ok(fd) => old.push(fd),
            // Detached and freed since the query: nothing to replace.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(bpf_err("get fd (BPF_PROG_GET_FD_BY_ID)")(e)),
        }
    }
    let prog = sys::prog_load(&program(rules)).map_err(|(source, log)| DevicesError::Load {
        dir: dir.to_path_buf(),
        source,
        log,
    })?;
    let replace_in_place = !old.is_empty() && old_flags & sys::BPF_F_ALLOW_MULTI == 0;
    let flags = if replace_in_place {
        old_flags
    } else {
        sys::BPF_F_ALLOW_MULTI
    };
    sys::prog_attach(cg.as_fd(), prog.as_fd(), flags)
        .map_err(bpf_err("attach (BPF_PROG_ATTACH)"))?;
    if replace_in_place {
        return Ok(());
    }
    for fd in &old {
        match sys::prog_detach(cg.as_fd(), fd.as_fd()) {
            Ok(()) => {}
            // Detached by someone else in between.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(bpf_err("detach (BPF_PROG_DETACH)")(e)),
        }
    }
    Ok(())
}
