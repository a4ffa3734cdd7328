//! The bpf(2) commands [`crate::apply_v2`] uses, each with its own `#[repr(C)]` prefix of
//! `union bpf_attr` (zero-initialised; the kernel takes a shorter attr and treats the rest as
//! zero). The only `unsafe` of the crate is here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::Insn;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `enum bpf_attach_type`'s `BPF_CGROUP_DEVICE`.
const BPF_CGROUP_DEVICE: u32 = 6;
/// Several programs on one cgroup, all of which must allow.
pub const BPF_F_ALLOW_MULTI: u32 = 2;

/// `BPF_PROG_LOAD`'s part of `union bpf_attr`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `BPF_PROG_ATTACH` / `BPF_PROG_DETACH`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `BPF_PROG_QUERY`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// `BPF_PROG_GET_FD_BY_ID`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The buffer handed to the kernel: the attr, then zeros. Newer kernels write some results
/// into fields past what this crate knows of (`BPF_PROG_QUERY`'s `revision`, whatever the
/// size passed), so it is larger than today's `union bpf_attr` (the kernel accepts a zero
/// tail), and it is zeroed byte by byte first, so no padding byte reaches the kernel.
const BUF_WORDS: usize = 64;

/// bpf(2) with `attr`; the result (an fd or 0) or errno. `attr` is updated with what the
/// kernel wrote back.
///
/// # Safety
/// `T` must be one of the attr structs above (no padding inside), matching `cmd`, and every
/// pointer stored in it must be valid for what the kernel does with it during the call.
unsafe fn bpf<T: Copy>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    const { assert!(std::mem::size_of::<T>() <= BUF_WORDS * 8) };
    let mut buf = [0u64; BUF_WORDS];
    let n = std::mem::size_of::<T>();
    // SAFETY: `attr` is valid for `n` bytes, `buf` (8-aligned, at least as aligned as `T`)
    // for more; they do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (attr as *const T).cast::<u8>(),
            buf.as_mut_ptr().cast::<u8>(),
            n,
        )
    };
    let size = std::mem::size_of_val(&buf) as libc::c_uint;
    // SAFETY: `buf` is a live buffer of `size` bytes that the kernel may read and write; the
    // caller guarantees the pointers inside `attr`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, buf.as_mut_ptr(), size) };
    let result = if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    };
    // SAFETY: `buf` holds a `T` at its start (the kernel writes only plain integers there).
    *attr = unsafe { std::ptr::read(buf.as_ptr().cast::<T>()) };
    result
}

/// Takes ownership of the fd a bpf(2) command returned.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let raw = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned `raw` as a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program, license "Apache". On failure the verifier's
/// log comes with the error.
pub fn prog_load(insns: &[Insn]) -> Result<OwnedFd, (io::Error, String)> {
    const LICENSE: &[u8] = b"Apache\0";
    let mut log = vec![0u8; 1 << 16];
    let mut attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).unwrap_or(u32::MAX),
        log_buf: log.as_mut_ptr() as u64,
        ..LoadAttr::default()
    };
    attr.prog_name[..7].copy_from_slice(b"devices");
    // SAFETY: `insns` (of `insn_cnt` `#[repr(C)]` 8-byte instructions), `LICENSE` (NUL
    // terminated) and `log` (writable, `log_size` bytes) outlive the call.
    let r = unsafe { bpf(BPF_PROG_LOAD, &mut attr) };
    match r.and_then(owned) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((
                e,
                String::from_utf8_lossy(&log[..end]).trim_end().to_string(),
            ))
        }
    }
}

/// Attaches `prog` to the cgroup `cgroup` as a device program, with `flags`
/// (`BPF_F_ALLOW_MULTI`).
pub fn prog_attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: flags,
        ..AttachAttr::default()
    };
    // SAFETY: the attr holds no pointers.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
}

/// Detaches the device program `prog` from the cgroup `cgroup`.
pub fn prog_detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: BPF_CGROUP_DEVICE,
        ..AttachAttr::default()
    };
    // SAFETY: the attr holds no pointers.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(drop)
}

/// The ids of the device programs attached to the cgroup itself (not inherited), and the
/// attach flags.
pub fn prog_query(cgroup: BorrowedFd<'_>) -> io::Result<(Vec<u32>, u32)> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = QueryAttr {
            target_fd: fd_u32(cgroup),
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            ..QueryAttr::default()
        };
        // SAFETY: `ids` is writable for `prog_cnt` u32s and outlives the call.
        match unsafe { bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok((ids, attr.attach_flags));
            }
            // More than fit: the kernel said how many there are.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && ids.len() < 1 << 16 => {
                let n = (attr.prog_cnt as usize).max(ids.len() * 2);
                ids = vec![0u32; n];
            }
            Err(e) => return Err(e),
        }
    }
}

/// An fd of the program with id `id`.
pub fn prog_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdAttr {
        prog_id: id,
        ..GetFdAttr::default()
    };
    // SAFETY: the attr holds no pointers.
    unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }.and_then(owned)
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // An open fd is never negative.
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(std::mem::offset_of!(LoadAttr, insns), 8);
        assert_eq!(std::mem::offset_of!(LoadAttr, log_buf), 32);
        assert_eq!(std::mem::offset_of!(LoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(LoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(AttachAttr, replace_bpf_fd), 16);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_ids), 16);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_cnt), 24);
        assert_eq!(std::mem::offset_of!(GetFdAttr, open_flags), 8);
    }

    /// As root: a program the verifier refuses (r0 never set) gives its log.
    #[test]
    fn load_error_carries_the_verifier_log() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP load_error_carries_the_verifier_log: needs root for bpf(2)");
            return;
        }
        let exit = Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        };
        let (e, log) = prog_load(&[exit]).expect_err("the verifier refuses it");
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
        assert!(log.contains("R0"), "{log}");
    }
}
