//! The privileged launch path, in the style of Firecracker's jailer: small, single-threaded
//! programs (the `agent-launch` binary, and the same hidden subcommands of `agent-supervisor`)
//! that the daemon execs or has its launch server fork. Nothing here runs inside the tokio
//! daemon, and this crate has no async runtime in its dependency tree. The order of steps is
//! documented in `docs/launcher.md`.
//!
//! - [`init`]: `__group-init SPEC` builds a group's namespaces, root and PID 1;
//! - [`agent`]: `__agent SPEC` starts one agent in a running group and stays as its shim;
//! - [`server`]: `__spawner` forks those two on request, so each launch skips an exec.

pub mod agent;
pub mod bpf;
pub mod client;
pub mod init;
pub mod journal;
pub mod logdrops;
pub mod logfile;
pub mod mounts;
pub mod net;
pub mod rtnl;
pub mod sandbox;
pub mod server;
mod shim_sync;
pub mod spec;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Errors of the launch path; each names the group or agent and the step.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    SpecFile(#[from] spec::SpecError),
    #[error("group {group}: {step}{}: {source}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Sys {
        step: &'static str,
        group: String,
        path: Option<PathBuf>,
        #[source]
        source: nix::Error,
    },
    #[error("group {group}: {step}: {source}")]
    Io {
        step: &'static str,
        group: String,
        #[source]
        source: std::io::Error,
    },
    #[error("group {group}: cannot join cgroup {path}: {source}")]
    Cgroup {
        group: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("group {group}: {source}")]
    Mount {
        group: String,
        #[source]
        source: mounts::MountError,
    },
    #[error("group {group}: {source}")]
    Sandbox {
        group: String,
        #[source]
        source: sandbox::SandboxError,
    },
    #[error("group {group}: {message}")]
    Init { group: String, message: String },
    #[error("group {group}: network: {source}")]
    Net {
        group: String,
        #[source]
        source: crate::rtnl::RtnlError,
    },
    #[error("group {group}: bad launch spec: {message}")]
    Spec { group: String, message: String },
    #[error("agent {agent}: {message}")]
    Exec { agent: String, message: String },
}

impl LaunchError {
    fn sys(step: &'static str, group: &str, source: nix::Error) -> LaunchError {
        LaunchError::Sys {
            step,
            group: group.to_string(),
            path: None,
            source,
        }
    }

    fn with_path(self, p: &Path) -> LaunchError {
        match self {
            LaunchError::Sys {
                step,
                group,
                source,
                ..
            } => LaunchError::Sys {
                step,
                group,
                path: Some(p.to_path_buf()),
                source,
            },
            other => other,
        }
    }
}

/// Runs the launcher subcommand `args` names (a program's arguments after its name:
/// `__group-init SPEC`, `__agent SPEC` or `__spawner`) and returns its exit status; `None`
/// when `args` is none of them. For a binary that has the launch path built in (the
/// launcher `Pod` execs is `agent-launch`, or the running program when none is next to it).
pub fn run_subcommand(args: &[std::ffi::OsString]) -> Option<i32> {
    let spec = || args.get(1).map(Path::new);
    match (args.first().and_then(|a| a.to_str()), args.len()) {
        (Some("__group-init"), 2) => spec().map(init::main),
        (Some("__agent"), 2) => spec().map(agent::main),
        (Some("__spawner"), 1) => Some(server::main()),
        _ => None,
    }
}

/// The `PATH` a launched program is searched on, and that an agent gets, when nothing sets
/// one (its image or configuration).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Closes every fd above 2 (step 1 of every launch path).
pub fn close_inherited_fds() {
    // Raw: nix 0.31 has no close_range wrapper.
    // SAFETY: close_range only closes descriptors; nothing of ours above 2 is open yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Moves the calling process into a cgroup of `group` by writing 0 to each `cgroup.procs`.
pub fn join_cgroup(group: &str, procs: &[PathBuf]) -> Result<(), LaunchError> {
    for p in procs {
        std::fs::write(p, "0").map_err(|source| LaunchError::Cgroup {
            group: group.to_string(),
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

/// A pidfd for `pid` (`pidfd_open(2)`, Linux 5.3+); an error (`ESRCH`) if it is gone.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // Raw: nix 0.31 has no pidfd_open wrapper.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let raw = i32::try_from(raw).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `raw` is a descriptor just returned to us and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sends SIGKILL to the process a pidfd names (never to a process that reused its pid).
pub fn pidfd_kill(fd: &OwnedFd) {
    // Raw: nix 0.31 has no pidfd_send_signal wrapper.
    // SAFETY: pidfd_send_signal with a live pidfd, no siginfo and no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Waits up to `timeout` until `fd` is readable (a pidfd: its process has exited).
pub fn wait_readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            // EINTR: wait again for what is left.
            Err(_) => continue,
        }
    }
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22): with the
/// pid, it names one process (a recycled pid has another start time).
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields count from its end.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}
