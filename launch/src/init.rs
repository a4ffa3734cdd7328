//! `agent-supervisor __group-init SPEC`: creates a group's namespaces and its PID 1.
//!
//! The launching process joins the group's init cgroup, unshares the namespaces and forks;
//! the child, PID 1 of the new pid namespace, builds the root file system, reports "ok" on a
//! pipe and becomes the group's init: it reaps orphans and forwards SIGHUP/SIGUSR1/SIGUSR2 to
//! every process of the group; SIGTERM/SIGINT end it (and with it the whole pid namespace).
//! The init itself prints its pid (host pid namespace, sent by the launcher) on the
//! launcher's stdout once it is ready, so the caller may go on while the launcher exits; the
//! launcher exits 0 once the init is ready, or 1 with the init's error on stderr.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::spec::{read, GroupSpec};
use super::{close_inherited_fds, join_cgroup, LaunchError};

/// The init's pid and start time from what `__group-init` printed on stdout (its pid, once
/// the init is ready); the error says what went wrong, for the caller to prefix.
pub fn started(stdout: &[u8]) -> Result<(i32, u64), String> {
    let text = String::from_utf8_lossy(stdout);
    let pid: i32 = text.trim().parse().map_err(|_| {
        format!(
            "the launcher printed {:?} instead of the init's pid",
            text.trim()
        )
    })?;
    let start = super::proc_start_time(pid)
        .ok_or_else(|| format!("the group init (pid {pid}) died right after starting"))?;
    Ok((pid, start))
}

/// Entry point; returns the process exit status.
pub fn main(spec_path: &Path) -> i32 {
    match launch(spec_path) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("agent-supervisor __group-init: {e}");
            1
        }
    }
}

fn launch(spec_path: &Path) -> Result<(), LaunchError> {
    // Step 1: close inherited fds.
    close_inherited_fds();
    let spec: GroupSpec = read(spec_path)?;
    // Step 2: join the group's init cgroup (the init and all it forks are accounted there).
    join_cgroup(&spec.group, &spec.cgroup_procs)?;
    // Step 3: new namespaces. The pid namespace applies to the child forked next.
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    if spec.private_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // The host's rtnetlink socket stays in the host's network namespace after the unshare.
    let mut host_net = match &spec.network {
        Some(_) => Some(super::net::host_socket().map_err(|e| LaunchError::Net {
            group: spec.group.clone(),
            source: e,
        })?),
        None => None,
    };
    unshare(flags).map_err(|e| LaunchError::sys("unshare namespaces", &spec.group, e))?;
    // Step 3b: the private network (veth pair, bridge, address, route), before the init
    // is forked into it.
    if let (Some(n), Some(host)) = (&spec.network, host_net.as_mut()) {
        super::net::connect(host, n).map_err(|e| LaunchError::Net {
            group: spec.group.clone(),
            source: e,
        })?;
    }
    drop(host_net);
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LaunchError::sys("pipe", &spec.group, e))?;
    // The init's pid as this (the caller's) pid namespace sees it, for the init to print.
    let (pid_r, pid_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LaunchError::sys("pipe", &spec.group, e))?;
    // SAFETY: this launcher is single-threaded (no threads were spawned), so the child may
    // run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| LaunchError::sys("fork group init", &spec.group, e))? {
        ForkResult::Child => {
            drop((ready_r, pid_w));
            become_init(&spec, ready_w, pid_r)
        }
        ForkResult::Parent { child } => {
            drop((ready_w, pid_r));
            let _ = nix::unistd::write(&pid_w, child.as_raw().to_string().as_bytes());
            drop(pid_w);
            let mut status = String::new();
            let _ = std::fs::File::from(ready_r).read_to_string(&mut status);
            if status == "ok" {
                Ok(())
            } else {
                let _ = waitpid(child, None);
                let why = status
                    .strip_prefix("error: ")
                    .unwrap_or(if status.is_empty() {
                        "the group init died before it was ready"
                    } else {
                        &status
                    });
                Err(LaunchError::Init {
                    group: spec.group.clone(),
                    message: why.to_string(),
                })
            }
        }
    }
}

/// PID 1 of the group: builds the root, prints its pid on stdout and reports ready (closing
/// the pipe), then serves.
fn become_init(spec: &GroupSpec, ready: OwnedFd, pid: OwnedFd) -> ! {
    let null = match prepare(spec) {
        Ok(null) => null,
        Err(e) => {
            let _ = nix::unistd::write(&ready, format!("error: {e}").as_bytes());
            std::process::exit(1);
        }
    };
    let mut host_pid = String::new();
    let _ = std::fs::File::from(pid).read_to_string(&mut host_pid);
    if host_pid.is_empty() {
        let _ = nix::unistd::write(&ready, b"error: the launcher sent no pid");
        std::process::exit(1);
    }
    // The caller reads this line and goes on; the launcher exits meanwhile.
    host_pid.push('\n');
    let _ = nix::unistd::write(std::io::stdout(), host_pid.as_bytes());
    let _ = nix::unistd::write(&ready, b"ok");
    drop(ready);
    // The init holds no host file: stdio goes to the group's /dev/null.
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&null);
    let _ = nix::unistd::dup2_stderr(&null);
    drop(null);
    init_loop()
}

/// Steps 4 onwards of `docs/launcher.md`, run by the init itself; returns the group's
/// `/dev/null`, opened for the init's stdio.
fn prepare(spec: &GroupSpec) -> Result<std::fs::File, LaunchError> {
    SigSet::all()
        .thread_block()
        .map_err(|e| LaunchError::sys("block signals", &spec.group, e))?;
    // Step 4: hostname.
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| LaunchError::sys("sethostname", &spec.group, e))?;
    // Steps 5-11: the file system.
    super::mounts::build_root(spec).map_err(|e| LaunchError::Mount {
        group: spec.group.clone(),
        source: e,
    })?;
    if spec.private_network && spec.network.is_none() {
        super::net::loopback_up().map_err(|e| LaunchError::Net {
            group: spec.group.clone(),
            source: e,
        })?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| LaunchError::Io {
            step: "open /dev/null",
            group: spec.group.clone(),
            source: e,
        })
}

/// The init's life: wait for signals, reap every exited process, forward some signals.
fn init_loop() -> ! {
    // The signals a shim forwards to its agent, and the children's exits.
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in super::agent::FORWARDED {
        set.add(*s);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    loop {
        let Ok(sig) = set.wait() else { continue };
        match sig {
            Signal::SIGCHLD => reap_all(),
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => std::process::exit(0),
            other => {
                let _ = kill(Pid::from_raw(-1), other);
            }
        }
    }
}

fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}
