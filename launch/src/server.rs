//! `agent-launch __spawner`: a fork server for the launch path. The daemon execs it once and
//! asks it for every group init launcher and agent shim; each request is served by a `fork`
//! of this single-threaded, already loaded program, which then runs the same code an exec'd
//! `__group-init SPEC` or `__agent SPEC` runs. Each launch thus skips an `exec` and the C
//! library's start-up (on a VM, glibc's CPU and cache probing traps to the hypervisor: about
//! 0.25 ms per exec on the machine we measured).
//!
//! The protocol, on the `SOCK_SEQPACKET` socket that is this program's stdin:
//! - request: `VERB\0ARG[\0LABEL]` (`__group-init` or `__agent`, the spec path, and who it is
//!   for, shown on its command line) with four descriptors (`SCM_RIGHTS`): the launched
//!   process's stdin, stdout and stderr, and last the request's own socket for the reply
//!   (so concurrent requesters never read each other's replies);
//! - reply, on that socket: `ok PID` with a pidfd of the launched process, or `error: WHY`
//!   (the request is refused, nothing was started, the server goes on);
//! - `ping` with a reply socket is answered `pong` (the client checks the server is there);
//!   a request without any descriptor is dropped unanswered;
//! - end of file (the daemon is gone): the server exits; what it launched keeps running.
//!
//! The server reaps its children (launchers exit once their init is ready; shims when their
//! agent ended), so the daemon watches them by pidfd and reads the shim's exit record.
//!
//! Architecture Invariant: the server never threads, so a forked child may run any code; the
//! child's first steps (stdio from the request, every signal unblocked — the server installs
//! no handler, so dispositions are the defaults but `SIGPIPE`'s, ignored as in the exec'd
//! program —, the command line renamed to the verb's) make it indistinguishable
//! from the exec'd program, which then closes every inherited descriptor as its step 1.

use std::ffi::{OsStr, OsString};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// The verbs a request may carry (the hidden subcommands of the same names).
pub const GROUP_INIT: &str = "__group-init";
pub const AGENT: &str = "__agent";
/// The request that only checks the server answers.
pub const PING: &str = "ping";

/// The longest request: a verb and a spec path.
const MAX_REQUEST: usize = 8192;

/// Entry point (`__spawner`): serves requests on stdin until it closes; returns the exit
/// status.
pub fn main() -> i32 {
    super::close_inherited_fds();
    let mut children = SigSet::empty();
    children.add(Signal::SIGCHLD);
    if let Err(e) = children.thread_block() {
        eprintln!("agent-launch __spawner: block SIGCHLD: {e}");
        return 1;
    }
    let signals =
        match SignalFd::with_flags(&children, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("agent-launch __spawner: signalfd: {e}");
                return 1;
            }
        };
    let sock: RawFd = 0;
    loop {
        // `sock` is stdin (fd 0).
        let stdin = std::io::stdin();
        let mut fds = [
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (request, signalled) = (ready(&fds[0]), ready(&fds[1]));
        if signalled {
            while let Ok(Some(_)) = signals.read_signal() {}
            reap_children();
        }
        if request && serve_one(sock) == Served::End {
            break;
        }
    }
    reap_children();
    0
}

/// What one turn of the server loop did.
#[derive(PartialEq)]
enum Served {
    More,
    /// The daemon closed the socket.
    End,
}

fn reap_children() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Receives one request and answers it (the forked child of a launch never returns).
fn serve_one(sock: RawFd) -> Served {
    let mut buf = vec![0u8; MAX_REQUEST];
    // Room for more descriptors than a request may carry, so a request with too many is
    // refused (and its descriptors closed) instead of truncated.
    let mut cmsg = nix::cmsg_space!([RawFd; 16]);
    let (len, mut passed, truncated) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut passed: Vec<OwnedFd> = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            // SAFETY: the kernel just installed these descriptors in this
                            // process for us; nothing else owns them.
                            passed.extend(
                                fds.into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                }
                let truncated = msg
                    .flags
                    .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                (msg.bytes, passed, truncated)
            }
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => return Served::More,
            Err(_) => return Served::End,
        }
    };
    if len == 0 && passed.is_empty() {
        return Served::End;
    }
    // The last descriptor is the request's own socket for the reply; without one there is
    // nobody to answer (and nothing is started).
    let Some(answer) = passed.pop() else {
        return Served::More;
    };
    let to = answer.as_raw_fd();
    let request = &buf[..len];
    let mut fields = request.splitn(3, |&b| b == 0);
    let verb = fields.next().unwrap_or_default();
    let arg = fields.next().unwrap_or_default();
    let label = fields.next().unwrap_or_default();
    let verb = String::from_utf8_lossy(verb).to_string();
    if truncated {
        reply(to, "error: request too long or too many descriptors", None);
        return Served::More;
    }
    match verb.as_str() {
        PING => {
            reply(to, "pong", None);
            Served::More
        }
        _ if passed.len() > 3 => {
            let n = passed.len() + 1;
            reply(
                to,
                &format!("error: {n} descriptors: at most 4 (stdio and the reply socket)"),
                None,
            );
            Served::More
        }
        GROUP_INIT | AGENT if passed.len() == 3 && !arg.is_empty() => launch(
            answer,
            &verb,
            OsStr::from_bytes(arg),
            OsStr::from_bytes(label),
            passed,
        ),
        GROUP_INIT | AGENT => {
            reply(
                to,
                &format!(
                    "error: {verb} needs a spec path and 3 descriptors (got {} bytes, {} descriptors)",
                    arg.len(),
                    passed.len()
                ),
                None,
            );
            Served::More
        }
        other => {
            reply(to, &format!("error: unknown request {other:?}"), None);
            Served::More
        }
    }
}

/// Forks the launched process; the parent answers on `answer` with its pid and a pidfd.
fn launch(answer: OwnedFd, verb: &str, arg: &OsStr, label: &OsStr, stdio: Vec<OwnedFd>) -> Served {
    let to = answer.as_raw_fd();
    // SAFETY: this server is single-threaded, so the child may run arbitrary code after fork.
    match unsafe { fork() } {
        Err(e) => {
            reply(to, &format!("error: fork: {e}"), None);
            Served::More
        }
        Ok(ForkResult::Child) => {
            drop(answer);
            become_launched(verb, arg, label, stdio)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(stdio);
            match super::pidfd_open(child.as_raw()) {
                Ok(pidfd) => reply(to, &format!("ok {}", child.as_raw()), Some(&pidfd)),
                Err(_) => {
                    // Not ours to watch: it must not run ("error" means nothing started).
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    reply(to, "error: pidfd_open of the launched process failed", None)
                }
            }
            Served::More
        }
    }
}

/// In the forked child: the request's descriptors become stdio, every signal is unblocked
/// (the server installs no handler, so dispositions are the defaults), the command line says
/// what runs; then the launch path itself, and exit with its
/// status (never back into the server's loop, whose descriptors the launch path closed).
fn become_launched(verb: &str, arg: &OsStr, label: &OsStr, stdio: Vec<OwnedFd>) -> ! {
    let onto = [
        nix::unistd::dup2_stdin::<&OwnedFd>,
        nix::unistd::dup2_stdout,
        nix::unistd::dup2_stderr,
    ];
    for (dup2, fd) in onto.iter().zip(&stdio) {
        let _ = dup2(fd);
    }
    drop(stdio);
    let _ = SigSet::all().thread_unblock();
    if label.is_empty() {
        rename_cmdline(&[verb.as_ref(), arg]);
    } else {
        rename_cmdline(&[verb.as_ref(), arg, label]);
    }
    let spec = Path::new(arg);
    let status = if verb == GROUP_INIT {
        super::init::main(spec)
    } else {
        super::agent::main(spec)
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(status)
}

/// Sends one reply, with a descriptor when there is one.
fn reply(sock: RawFd, text: &str, fd: Option<&OwnedFd>) {
    let iov = [std::io::IoSlice::new(text.as_bytes())];
    let raw: Vec<RawFd> = fd.map(AsRawFd::as_raw_fd).into_iter().collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    // A daemon that went away meanwhile reads nothing: the next recvmsg sees the end.
    let _ = sendmsg::<()>(sock, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None);
}

/// Makes `/proc/self/cmdline` read `EXE ARGS...`, as if the verb had been exec'd, so `ps`
/// and tools that look for `__agent`/`__group-init` see what runs: the arguments are copied
/// to a new mapping and the kernel told so with `PR_SET_MM_MAP` (which needs no capability
/// when the executable stays the same). On failure the command line stays the server's.
fn rename_cmdline(args: &[&OsStr]) {
    let exe: OsString = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("agent-launch"));
    let mut text: Vec<u8> = exe.into_vec();
    text.push(0);
    for a in args {
        text.extend_from_slice(a.as_bytes());
        text.push(0);
    }
    let Some(mut map) = mm_map() else { return };
    let len = text.len();
    // Raw: nix 0.31 has no wrapper for `PR_SET_MM`; its `mmap_anonymous` is as unsafe as this.
    // SAFETY: a fresh private anonymous mapping of `len` bytes, written within its bounds and
    // never unmapped (the kernel reads the command line from it for the process's life);
    // prctl reads the `PrctlMmMap` we pass for the duration of the call.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return;
        }
        std::ptr::copy_nonoverlapping(text.as_ptr(), p.cast::<u8>(), len);
        map.arg_start = p as u64;
        map.arg_end = p as u64 + len as u64;
        libc::prctl(
            libc::PR_SET_MM,
            PR_SET_MM_MAP,
            &map as *const PrctlMmMap as libc::c_ulong,
            std::mem::size_of::<PrctlMmMap>() as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

/// `PR_SET_MM_MAP` of `<linux/prctl.h>` (not in the libc crate).
const PR_SET_MM_MAP: libc::c_ulong = 14;

/// `struct prctl_mm_map` of `<linux/prctl.h>`.
#[repr(C)]
struct PrctlMmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: *const u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// This process's memory map as the kernel has it (`/proc/self/stat` fields 26-28, 45-51
/// and the current break), auxv and executable unchanged.
fn mm_map() -> Option<PrctlMmMap> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<u64> = stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Field N of proc(5) is fields[N - 3] (the split starts at field 3, the state).
    let field = |n: usize| fields.get(n - 3).copied();
    // SAFETY: sbrk(0) only reads the current program break.
    let brk = unsafe { libc::sbrk(0) } as u64;
    Some(PrctlMmMap {
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        brk,
        arg_start: field(48)?,
        arg_end: field(49)?,
        env_start: field(50)?,
        env_end: field(51)?,
        auxv: std::ptr::null(),
        auxv_size: 0,
        exe_fd: u32::MAX,
    })
}
