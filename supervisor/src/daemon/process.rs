//! Watching processes without polling: a pidfd per shim (it works for the daemon's own
//! children and for shims adopted from an earlier daemon alike), readable the moment the
//! process exits.

use std::os::fd::OwnedFd;
use std::process::Child;

use tokio::io::unix::AsyncFd;

pub use crate::launch::pidfd_open;

/// A process to wait for: the daemon's own child (reaped after it exits), one the launch
/// server forked (its pidfd, from the server; the server reaps it) or an adopted one.
pub enum Watched {
    Own(Child),
    Forked(i32, OwnedFd),
    Adopted(i32),
}

impl Watched {
    pub fn pid(&self) -> i32 {
        match self {
            Watched::Own(c) => c.id() as i32,
            Watched::Forked(p, _) | Watched::Adopted(p) => *p,
        }
    }
}

impl From<crate::spawner::Launched> for Watched {
    fn from(l: crate::spawner::Launched) -> Watched {
        match l.proc {
            crate::spawner::Proc::Child(c) => Watched::Own(c),
            crate::spawner::Proc::Forked(fd) => Watched::Forked(l.pid, fd),
        }
    }
}

/// Waits until the process exits. Returns at once if it is already gone.
pub async fn wait_exit(w: Watched) {
    let pid = w.pid();
    // ESRCH: it is already gone (an own child may be a zombie: reaped below).
    let fd = match w {
        Watched::Forked(_, ref fd) => fd.try_clone(),
        _ => pidfd_open(pid),
    };
    if let Ok(fd) = fd {
        // SAFETY: the OwnedFd moves into the AsyncFd, which owns it until dropped, so the fd
        // stays open and refers to the same pidfd for the AsyncFd's whole life.
        match unsafe { AsyncFd::register(fd) } {
            Ok(afd) => {
                let _ = afd.readable().await;
            }
            Err(_) => poll_gone(pid).await,
        }
    }
    if let Watched::Own(mut child) = w {
        let _ = child.wait();
    }
}

/// Fallback when a pidfd cannot be polled: check every 50 ms.
async fn poll_gone(pid: i32) {
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether `pid` runs and started at `start_time` (so a recycled pid is not mistaken).
pub fn alive(pid: i32, start_time: u64) -> bool {
    crate::launch::proc_start_time(pid) == Some(start_time)
}

/// The shim of agent process `pid` (its parent, when that is an `__agent` shim, or a fork
/// of the launch server whose command line could not be renamed), with its start time.
pub fn shim_of(pid: i32) -> Option<(i32, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ppid: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .any(|a| a == b"__agent" || a == b"__spawner")
        .then_some(())?;
    Some((ppid, crate::launch::proc_start_time(ppid)?))
}

/// When process `pid` started, from its start time in clock ticks after boot (`/proc/stat`
/// `btime`).
pub fn started_at(pid: i32) -> Option<std::time::SystemTime> {
    let ticks = crate::launch::proc_start_time(pid)?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&h| h > 0)?;
    let at =
        std::time::Duration::from_secs(btime) + std::time::Duration::from_millis(ticks * 1000 / hz);
    Some(std::time::UNIX_EPOCH + at)
}
