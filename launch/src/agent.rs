//! `agent-supervisor __agent SPEC`: starts one agent inside a running group and stays as its
//! parent (a shim, like conmon): it forwards signals, records the exit and exits with the
//! agent's status, so an agent's end is never lost, even while no daemon runs. With a log spec
//! it also writes the agent's stdout and stderr to rotated, timestamped files
//! ([`super::logfile`]), so the agent never writes to a pipe of a daemon that may die.
//!
//! The forked child joins the agent's cgroup, a new cgroup namespace, the group's ipc, uts,
//! (net) and mount namespaces (the pid namespace applies from the fork), then applies rlimits,
//! capabilities, `no_new_privs` and seccomp, and execs the agent.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::logdrops::{Publisher, Stream};
use super::logfile::{self, RotatingFile, StreamPump};
use super::sandbox;
use super::spec::{read, AgentSpec, ExitRecord, LogSpec};
use super::{close_inherited_fds, join_cgroup, proc_start_time, LaunchError};

/// Signals the shim passes on to the agent (a group's init handles the same ones).
pub(crate) const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// After the agent ended: how long the shim reads what is left in its pipes (its children
/// may hold them open and keep writing).
const DRAIN_FOR: Duration = Duration::from_secs(1);
/// After the agent ended: how long the shim waits for the log writers before it writes the
/// exit record, and in all before it exits (then the rest of a slow disk's backlog is lost).
const FLUSH_BEFORE_RECORD: Duration = Duration::from_secs(5);
const FLUSH_BEFORE_EXIT: Duration = Duration::from_secs(30);

/// Entry point; returns the agent's exit status (code, 128 + signal, or 127).
pub fn main(spec_path: &Path) -> i32 {
    close_inherited_fds();
    let mut spec: AgentSpec = match read(spec_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("agent-supervisor __agent: {e}");
            return 127;
        }
    };
    if spec_path == Path::new(super::spec::ON_STDIN) {
        // The spec came on stdin (a pipe, now at its end): the agent gets /dev/null there.
        if let Ok(null) = std::fs::File::open("/dev/null") {
            let _ = nix::unistd::dup2_stdin(&null);
        }
    }
    let mut logs = Logs::default();
    // The agent's command and environment are the shim's largest data (every agent of the
    // system by name is in it): `run` owns and frees them once the agent runs.
    let command = (
        std::mem::take(&mut spec.argv),
        std::mem::take(&mut spec.env),
    );
    let status = match run(&spec, command, &mut logs) {
        Ok(record) => {
            finish_logs(&mut logs, FLUSH_BEFORE_RECORD);
            write_exit(&spec, &record);
            record.status()
        }
        Err(e) => {
            let msg = match &e {
                LaunchError::Exec { message, .. } => message.clone(),
                other => other.to_string(),
            };
            let msg = format!("agent {}:{}: {msg}", spec.group, spec.agent);
            if let Some(err) = logs.pumps.get_mut(1) {
                err.note(&msg);
            }
            finish_logs(&mut logs, FLUSH_BEFORE_RECORD);
            report(&msg);
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
    };
    finish_logs(&mut logs, FLUSH_BEFORE_EXIT);
    status
}

/// A message of the shim on its stderr, which may be gone (a dead daemon's pipe): never
/// panics.
fn report(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "agent-supervisor: {msg}");
}

/// The agent's log pumps (stdout, stderr) and the publisher of what they lost.
#[derive(Default)]
struct Logs {
    pumps: Vec<StreamPump>,
    drops: Option<Publisher>,
}

/// Waits for the log writers to write what they hold, then for the last counts of what was
/// lost, for at most `within`.
fn finish_logs(logs: &mut Logs, within: Duration) {
    let deadline = Instant::now() + within;
    for l in &mut logs.pumps {
        l.finish(deadline);
    }
    if let Some(d) = &mut logs.drops {
        d.finish(deadline);
    }
}

fn write_exit(spec: &AgentSpec, record: &ExitRecord) {
    if let Some(p) = &spec.exit_file {
        if let Err(e) = super::spec::write(p, record) {
            report(&format!("agent {}:{}: {e}", spec.group, spec.agent));
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

/// The agent's stdout and stderr pipes when the shim writes its logs: (read, write) each.
struct LogPipes {
    out: (OwnedFd, OwnedFd),
    err: (OwnedFd, OwnedFd),
}

fn log_pipes(g: &str) -> Result<LogPipes, LaunchError> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| LaunchError::sys("create log pipe", g, e))
    };
    Ok(LogPipes {
        out: pipe()?,
        err: pipe()?,
    })
}

/// Starts the writers of the agent's two log files, and the publisher of what they lose
/// (threads: only after the fork).
fn start_logs(
    spec: &AgentSpec,
    log: &LogSpec,
    out: OwnedFd,
    err: OwnedFd,
) -> Result<Logs, LaunchError> {
    let who = format!("agent {}:{}", spec.group, spec.agent);
    let drops = match &log.drops {
        Some(p) => Some(
            Publisher::new(p, who.clone()).map_err(|source| LaunchError::Io {
                step: "remove the last run's log drop counts",
                group: spec.group.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let mut pumps = Vec::new();
    for (name, stream, fd, path) in [
        ("stdout", Stream::Stdout, out, &log.stdout),
        ("stderr", Stream::Stderr, err, &log.stderr),
    ] {
        let journal =
            super::journal::Journal::for_agent(&spec.group, &spec.agent, name == "stderr");
        let file = RotatingFile::new(path, log.max_size, log.keep).with_journal(journal);
        let counter = drops.as_ref().map(|d| d.counter(stream));
        let pump = StreamPump::start(format!("{who} {name}"), fd, file, counter).map_err(|e| {
            LaunchError::Io {
                step: "start the log writer",
                group: spec.group.clone(),
                source: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            }
        })?;
        pumps.push(pump);
    }
    Ok(Logs { pumps, drops })
}

/// Runs the agent; `logs` gets the pumps of its log files when the spec has them (the
/// caller finishes them, also when this fails).
fn run(
    spec: &AgentSpec,
    (spec_argv, spec_env): (Vec<String>, Vec<(String, String)>),
    logs: &mut Logs,
) -> Result<ExitRecord, LaunchError> {
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
    let path_var = spec_env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(super::DEFAULT_PATH, |(_, v)| v.as_str())
        .to_string();
    let env: Vec<CString> = spec_env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(|m| LaunchError::Spec {
            group: g.into(),
            message: m,
        })?;
    drop(spec_env);
    let argv: Vec<CString> = spec_argv
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
    drop(spec_argv);

    // Block the signals we wait for before forking, so none is lost.
    let mut waited = SigSet::empty();
    waited.add(Signal::SIGCHLD);
    for s in FORWARDED {
        waited.add(*s);
    }
    waited
        .thread_block()
        .map_err(|e| LaunchError::sys("block signals", g, e))?;
    let signals = SignalFd::with_flags(&waited, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| LaunchError::sys("signalfd", g, e))?;
    let pipes = spec.log.as_ref().map(|_| log_pipes(g)).transpose()?;
    // The kernel refuses threads while the pid namespace for children is not the process's
    // own: the shim goes back to its own after the fork, before its log writers start.
    let own_pid_ns = std::fs::File::open("/proc/self/ns/pid").map_err(|e| LaunchError::Io {
        step: "open namespace",
        group: g.into(),
        source: std::io::Error::new(e.kind(), format!("/proc/self/ns/pid: {e}")),
    })?;
    setns(&ns.pid, CloneFlags::CLONE_NEWPID).map_err(|e| LaunchError::sys("setns pid", g, e))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LaunchError::sys("pipe", g, e))?;
    // SAFETY: the shim is single-threaded (log writer threads start after the fork), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| LaunchError::sys("fork agent", g, e))? {
        ForkResult::Child => {
            drop(err_r);
            let e = match &pipes {
                Some(p) => redirect_output(g, &p.out.1, &p.err.1).err(),
                None => None,
            };
            let e = e.unwrap_or_else(|| child(spec, &ns, &caps, &filters, &argv, &env, &path_var));
            let _ = nix::unistd::write(&err_w, e.to_string().as_bytes());
            // Raw: leave without running the parent's atexit handlers or destructors, which
            // `std::process::exit` would; nix 0.31 has no `_exit` wrapper.
            // SAFETY: `_exit` ends this forked process at once and touches no memory.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            drop(ns);
            if let (Some(p), Some(log)) = (pipes, &spec.log) {
                // Only the agent holds the write ends now: end of file when it (and its
                // children) closed them.
                drop(p.out.1);
                drop(p.err.1);
                let started = setns(&own_pid_ns, CloneFlags::CLONE_NEWPID)
                    .map_err(|e| LaunchError::sys("setns back to the shim's pid namespace", g, e))
                    .and_then(|()| start_logs(spec, log, p.out.0, p.err.0));
                match started {
                    Ok(started) => *logs = started,
                    Err(e) => {
                        let _ = kill(child, Signal::SIGKILL);
                        let _ = waitpid(child, None);
                        return Err(e);
                    }
                }
            }
            let mut failure = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut failure);
            if !failure.is_empty() {
                let _ = waitpid(child, None);
                // The child's error already names the agent when it is an exec error.
                let prefix = format!("agent {}: ", spec.agent);
                let message = failure
                    .strip_prefix(&prefix)
                    .unwrap_or(&failure)
                    .to_string();
                return Err(LaunchError::Exec {
                    agent: spec.agent.clone(),
                    message,
                });
            }
            if let Some(p) = &spec.pid_file {
                let _ = std::fs::write(p, format!("{}\n", child.as_raw()));
            }
            // The agent runs: what only the child needed goes, and the heap's free pages go
            // back to the kernel, for the shim's whole life (77 shims on one host).
            drop((env, argv, path_var, filters, caps));
            // SAFETY: malloc_trim only releases free heap memory; no pointer is invalidated.
            unsafe { libc::malloc_trim(0) };
            let record = supervise(child, &signals, &mut logs.pumps);
            drain(&mut logs.pumps);
            Ok(record)
        }
    }
}

/// In the child: the log pipes become stdout and stderr.
fn redirect_output(g: &str, out: &OwnedFd, err: &OwnedFd) -> Result<(), LaunchError> {
    nix::unistd::dup2_stdout(out).map_err(|e| LaunchError::sys("dup2 stdout", g, e))?;
    nix::unistd::dup2_stderr(err).map_err(|e| LaunchError::sys("dup2 stderr", g, e))
}

/// How the agent ended, if it did.
fn reaped(child: Pid) -> Option<ExitRecord> {
    let record = |code, signal, error: Option<&str>| ExitRecord {
        pid: child.as_raw(),
        code,
        signal,
        error: error.map(str::to_string),
    };
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(record(Some(code), None, None)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(record(None, Some(sig as i32), None)),
        Err(nix::Error::ECHILD) => Some(record(None, None, Some("the agent vanished"))),
        _ => None,
    }
}

/// Waits for the agent, forwarding signals and pumping its output into the log writers;
/// returns how it ended. One `poll` over the signalfd and the open pipes.
fn supervise(child: Pid, signals: &SignalFd, logs: &mut [StreamPump]) -> ExitRecord {
    let mut buf = logfile::read_buffer();
    loop {
        if let Some(record) = reaped(child) {
            return record;
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let mut which = Vec::new();
        for (i, l) in logs.iter().enumerate() {
            if let Some(fd) = l.pipe() {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        let now = Instant::now();
        let timeout =
            logs.iter()
                .filter_map(StreamPump::due)
                .min()
                .map_or(PollTimeout::NONE, |t| {
                    // Rounded up to whole milliseconds, so the wake-up is never early.
                    let ms = t.saturating_duration_since(now).as_micros().div_ceil(1000);
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                });
        if poll(&mut fds, timeout).is_err() {
            // EINTR: look again. (Nothing else can fail with valid fds.)
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) | Err(_) => {}
                    Ok(sig) => {
                        let _ = kill(child, sig);
                    }
                }
            }
        }
        for (&readable, i) in ready[1..].iter().zip(which) {
            if readable {
                // At most 1 MiB per stream and round, so signals are never starved.
                logs[i].read_available(&mut buf, 16);
            }
        }
        let now = Instant::now();
        for l in logs.iter_mut() {
            l.flush_partial(now, false);
        }
    }
}

/// After the agent ended: reads what is left in its pipes, without waiting for writers that
/// keep them open (the agent's children), for at most [`DRAIN_FOR`].
fn drain(logs: &mut [StreamPump]) {
    if logs.is_empty() {
        return;
    }
    let mut buf = logfile::read_buffer();
    let deadline = Instant::now() + DRAIN_FOR;
    for l in logs.iter_mut() {
        while l.read_available(&mut buf, 16) == logfile::Pumped::More && Instant::now() < deadline {
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
        join_cgroup(g, &spec.cgroup_procs)?;
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
        // An ignored signal stays ignored across exec (Rust ignores SIGPIPE; a shell ignores
        // SIGINT and SIGQUIT for background jobs): the agent starts with every default back.
        for sig in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
            // SAFETY: restoring a default disposition installs no handler.
            unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) }
                .map_err(|e| LaunchError::sys("reset signal dispositions", g, e))?;
        }
        // (`run` checked that there is one; the spec's own copy is gone by now.)
        let arg0 = argv
            .first()
            .map(|a| a.to_string_lossy())
            .unwrap_or_default();
        let prog = resolve(&arg0, path_var).ok_or_else(|| LaunchError::Exec {
            agent: spec.agent.clone(),
            message: format!("{arg0}: not found in the group (PATH={path_var})"),
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
