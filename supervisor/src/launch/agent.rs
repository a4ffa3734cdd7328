//! `agent-supervisor __agent SPEC`: starts one agent inside a running group and stays as its
//! parent (a shim, like conmon): it forwards signals, records the exit and exits with the
//! agent's status, so an agent's end is never lost, even while no daemon runs.
//!
//! The forked child joins the agent's cgroup, a new cgroup namespace, the group's ipc, uts,
//! (net) and mount namespaces (the pid namespace applies from the fork), then applies rlimits,
//! capabilities, `no_new_privs` and seccomp, and execs the agent.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::sandbox;
use super::spec::{read, AgentSpec, ExitRecord};
use super::{close_inherited_fds, join_cgroup, proc_start_time, LaunchError};

/// Signals the shim passes on to the agent.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Entry point; returns the agent's exit status (code, 128 + signal, or 127).
pub fn main(spec_path: &Path) -> i32 {
    close_inherited_fds();
    let spec: AgentSpec = match read(spec_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("agent-supervisor __agent: {e}");
            return 127;
        }
    };
    match run(&spec) {
        Ok(record) => {
            write_exit(&spec, &record);
            record.status()
        }
        Err(e) => {
            eprintln!("agent-supervisor: agent {}:{}: {e}", spec.group, spec.agent);
            write_exit(
                &spec,
                &ExitRecord {
                    pid: 0,
                    code: None,
                    signal: None,
                    error: Some(e.to_string()),
                },
            );
            127
        }
    }
}

fn write_exit(spec: &AgentSpec, record: &ExitRecord) {
    if let Some(p) = &spec.exit_file {
        if let Err(e) = super::spec::write(p, record) {
            eprintln!("agent-supervisor: agent {}:{}: {e}", spec.group, spec.agent);
        }
    }
}

/// Namespace files of the group init, opened before anything changes.
struct Namespaces {
    pid: OwnedFd,
    ipc: OwnedFd,
    uts: OwnedFd,
    net: Option<OwnedFd>,
    mnt: OwnedFd,
}

fn open_ns(spec: &AgentSpec) -> Result<Namespaces, LaunchError> {
    let open = |name: &str| -> Result<OwnedFd, LaunchError> {
        let p = PathBuf::from(format!("/proc/{}/ns/{name}", spec.init_pid));
        std::fs::File::open(&p)
            .map(OwnedFd::from)
            .map_err(|e| LaunchError::Io {
                step: "open namespace",
                group: spec.group.clone(),
                source: std::io::Error::new(e.kind(), format!("{}: {e}", p.display())),
            })
    };
    let ns = Namespaces {
        pid: open("pid")?,
        ipc: open("ipc")?,
        uts: open("uts")?,
        net: if spec.private_network {
            Some(open("net")?)
        } else {
            None
        },
        mnt: open("mnt")?,
    };
    // The pid could have been recycled between the spec and now: compare start times.
    if proc_start_time(spec.init_pid) != Some(spec.init_start_time) {
        return Err(LaunchError::Init {
            group: spec.group.clone(),
            message: format!("the group init (pid {}) is gone", spec.init_pid),
        });
    }
    Ok(ns)
}

fn run(spec: &AgentSpec) -> Result<ExitRecord, LaunchError> {
    let g = spec.group.as_str();
    let ns = open_ns(spec)?;
    // Everything the child needs is allocated before the fork.
    let filters = if spec.seccomp {
        sandbox::default_filters().map_err(|e| LaunchError::Sandbox {
            group: g.into(),
            source: e,
        })?
    } else {
        Vec::new()
    };
    let caps = sandbox::parse_caps(&spec.capabilities).map_err(|e| LaunchError::Sandbox {
        group: g.into(),
        source: e,
    })?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(|m| LaunchError::Spec {
            group: g.into(),
            message: m,
        })?;
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()
        .map_err(|m| LaunchError::Spec {
            group: g.into(),
            message: m,
        })?;
    if argv.is_empty() {
        return Err(LaunchError::Spec {
            group: g.into(),
            message: "empty command".into(),
        });
    }
    let path_var = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            |(_, v)| v.as_str(),
        )
        .to_string();

    // Block the signals we wait for before forking, so none is lost.
    let mut waited = SigSet::empty();
    waited.add(Signal::SIGCHLD);
    for s in FORWARDED {
        waited.add(*s);
    }
    waited
        .thread_block()
        .map_err(|e| LaunchError::sys("block signals", g, e))?;
    setns(&ns.pid, CloneFlags::CLONE_NEWPID).map_err(|e| LaunchError::sys("setns pid", g, e))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LaunchError::sys("pipe", g, e))?;
    // SAFETY: the shim is single-threaded, so the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| LaunchError::sys("fork agent", g, e))? {
        ForkResult::Child => {
            drop(err_r);
            let e = child(spec, &ns, &caps, &filters, &argv, &env, &path_var);
            let _ = nix::unistd::write(&err_w, e.to_string().as_bytes());
            // SAFETY: leave without running the parent's atexit handlers or destructors.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            drop(ns);
            let mut failure = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut failure);
            if !failure.is_empty() {
                let _ = waitpid(child, None);
                return Err(LaunchError::Exec {
                    agent: spec.agent.clone(),
                    message: failure,
                });
            }
            if let Some(p) = &spec.pid_file {
                let _ = std::fs::write(p, format!("{}\n", child.as_raw()));
            }
            Ok(supervise(child, &waited))
        }
    }
}

/// Waits for the agent, forwarding signals; returns how it ended.
fn supervise(child: Pid, waited: &SigSet) -> ExitRecord {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                return ExitRecord {
                    pid: child.as_raw(),
                    code: Some(code),
                    signal: None,
                    error: None,
                }
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return ExitRecord {
                    pid: child.as_raw(),
                    code: None,
                    signal: Some(sig as i32),
                    error: None,
                }
            }
            Err(nix::Error::ECHILD) => {
                return ExitRecord {
                    pid: child.as_raw(),
                    code: None,
                    signal: None,
                    error: Some("the agent vanished".into()),
                }
            }
            _ => {}
        }
        match waited.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = kill(child, sig);
            }
        }
    }
}

/// The child: steps 2-9 of the agent path in `docs/launcher.md`. Returns only on failure.
fn child(
    spec: &AgentSpec,
    ns: &Namespaces,
    caps: &caps::CapsHashSet,
    filters: &[seccompiler::BpfProgram],
    argv: &[CString],
    env: &[CString],
    path_var: &str,
) -> LaunchError {
    let g = spec.group.as_str();
    let step = || -> Result<std::convert::Infallible, LaunchError> {
        join_cgroup(&spec.cgroup_procs)?;
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| LaunchError::sys("unshare cgroup namespace", g, e))?;
        setns(&ns.ipc, CloneFlags::CLONE_NEWIPC)
            .map_err(|e| LaunchError::sys("setns ipc", g, e))?;
        setns(&ns.uts, CloneFlags::CLONE_NEWUTS)
            .map_err(|e| LaunchError::sys("setns uts", g, e))?;
        if let Some(net) = &ns.net {
            setns(net, CloneFlags::CLONE_NEWNET)
                .map_err(|e| LaunchError::sys("setns net", g, e))?;
        }
        setns(&ns.mnt, CloneFlags::CLONE_NEWNS).map_err(|e| LaunchError::sys("setns mnt", g, e))?;
        nix::unistd::chdir(&spec.workdir)
            .map_err(|e| LaunchError::sys("chdir to workdir", g, e).with_path(&spec.workdir))?;
        sandbox::apply_rlimits(&spec.rlimits).map_err(|e| LaunchError::Sandbox {
            group: g.into(),
            source: e,
        })?;
        SigSet::all()
            .thread_unblock()
            .map_err(|e| LaunchError::sys("unblock signals", g, e))?;
        let prog = resolve(&spec.argv[0], path_var).ok_or_else(|| LaunchError::Exec {
            agent: spec.agent.clone(),
            message: format!("{}: not found in the group (PATH={path_var})", spec.argv[0]),
        })?;
        let prog = cstring(&prog.to_string_lossy()).map_err(|m| LaunchError::Spec {
            group: g.into(),
            message: m,
        })?;
        sandbox::apply_caps(caps).map_err(|e| LaunchError::Sandbox {
            group: g.into(),
            source: e,
        })?;
        sandbox::no_new_privs().map_err(|e| LaunchError::Sandbox {
            group: g.into(),
            source: e,
        })?;
        sandbox::apply_filters(filters).map_err(|e| LaunchError::Sandbox {
            group: g.into(),
            source: e,
        })?;
        let e = nix::unistd::execve(&prog, argv, env).unwrap_err();
        Err(LaunchError::Exec {
            agent: spec.agent.clone(),
            message: format!("exec {}: {e}", spec.argv[0]),
        })
    };
    match step() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Finds a program like `execvp` does, in the group's file system.
fn resolve(prog: &str, path_var: &str) -> Option<PathBuf> {
    let ok =
        |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file();
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return ok(&p).then_some(p);
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| ok(p))
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}
