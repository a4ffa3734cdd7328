//! A group as a pod, from the daemon's side: creates its cgroups and state directory, starts
//! `__group-init`, starts (or prepares commands for) `__agent` shims of its agents, and tears
//! everything down.
//!
//! Architecture Invariant: this module only starts programs (`Command` without `pre_exec`,
//! or a request to the launch server, [`crate::spawner`]); all namespace and mount work
//! happens in the launcher (`crate::launch`).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use agent_plan::{AgentPlan, GroupPlan, HostPlan, SecurityPlan};

use crate::cgroup::{Cgroup, CgroupError, Layout, Limits};
use crate::launch::spec::{self, AgentSpec, GroupSpec, LogSpec};
use crate::spawner::{Io, Launched, Request, Spawner, Verb};

mod rootfs;
pub mod spec_of;
pub use rootfs::host_entries;
use rootfs::rootfs;
use spec_of::InitRef;

/// Where a pod keeps its things.
#[derive(Debug, Clone)]
pub struct PodOptions {
    /// The binary with the launcher subcommands (`__group-init`, `__agent`): see [`launcher`].
    pub launcher: PathBuf,
    /// Runtime directory (`run_dir`); the pod uses `groups/<group>/` in it.
    pub run_dir: PathBuf,
    /// Cgroup root, relative to the cgroup mount (`cgroup_root`).
    pub cgroup_root: String,
    /// The launch server that forks launchers instead of exec'ing them (the daemon and the
    /// benchmark start one); `None`: exec [`PodOptions::launcher`].
    pub spawner: Option<Arc<Spawner>>,
}

impl PodOptions {
    /// Options from the host plan's daemon settings, with [`launcher`] as the launcher.
    pub fn for_host(plan: &HostPlan) -> Result<PodOptions, PodError> {
        let launcher = launcher()?;
        Ok(PodOptions {
            launcher,
            run_dir: plan.daemon.run_dir.clone(),
            cgroup_root: plan.daemon.cgroup_root.clone(),
            spawner: None,
        })
    }

    /// Starts a launch server for these options ([`Spawner`]); on failure says why on stderr
    /// and keeps exec'ing the launcher.
    pub fn with_spawner(mut self) -> PodOptions {
        match Spawner::start(&self.launcher) {
            Ok(s) => self.spawner = Some(Arc::new(s)),
            Err(e) => eprintln!(
                "agent-supervisor: cannot start the launch server ({} __spawner): {e}; \
                 exec'ing the launcher for every start instead",
                self.launcher.display()
            ),
        }
        self
    }
}

/// The name of the small launcher binary installed next to `agent-supervisor`.
pub const LAUNCHER_BIN: &str = "agent-launch";

/// The program to exec for `__group-init` and `__agent`: [`LAUNCHER_BIN`] next to this
/// executable when it is there (a tenth of the size, so each launch maps and relocates
/// less), else this executable, which has the same hidden subcommands.
pub fn launcher() -> Result<PathBuf, PodError> {
    let me = std::env::current_exe().map_err(|e| PodError::Io {
        what: "find the agent-supervisor binary".into(),
        source: e,
    })?;
    let small = me.with_file_name(LAUNCHER_BIN);
    let usable =
        small.is_file() && nix::unistd::access(&small, nix::unistd::AccessFlags::X_OK).is_ok();
    Ok(if usable { small } else { me })
}

/// Errors of pod management; each names the group or agent.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("group {group}: {source}")]
    Cgroup {
        group: String,
        #[source]
        source: CgroupError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("group {group}: the launcher failed: {message}")]
    Launch { group: String, message: String },
}

/// A running group.
#[derive(Debug)]
pub struct Pod {
    pub group: String,
    /// The group init's pid (host pid namespace).
    pub init_pid: i32,
    pub init_start_time: u64,
    pub cgroup: Cgroup,
    /// `run_dir/groups/<group>`.
    pub dir: PathBuf,
    private_network: bool,
    /// The group's sandbox, and the capabilities its agents keep.
    security: SecurityPlan,
    capabilities: Vec<String>,
    launcher: PathBuf,
    spawner: Option<Arc<Spawner>>,
    /// A pidfd of the `__group-init` launcher that started this pod, which exits once the
    /// init is ready: reaped by [`Pod::stop`] or when the pod is dropped.
    launcher_proc: Option<OwnedFd>,
}

/// The state directory of a group.
pub fn group_dir(run_dir: &Path, group: &str) -> PathBuf {
    run_dir.join("groups").join(group)
}

/// Rewrites a running group's `/etc/hosts` in place (the same file, which the group sees
/// through its bind mount): the names of the system changed, nothing else about it.
pub fn rewrite_hosts(run_dir: &Path, g: &GroupPlan) -> Result<(), PodError> {
    let path = group_dir(run_dir, &g.name).join("hosts");
    let text = spec_of::hosts_file(std::fs::read_to_string("/etc/hosts").ok(), g);
    std::fs::write(&path, text).map_err(io(format!("write {}", path.display())))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PodError {
    let what = what.into();
    move |source| PodError::Io { what, source }
}

impl Pod {
    /// Creates the group's cgroups and runs its init.
    pub fn start(g: &GroupPlan, opts: &PodOptions) -> Result<Pod, PodError> {
        let group = g.name.as_str();
        let capabilities =
            spec_of::capabilities(&g.security).map_err(|message| PodError::Launch {
                group: group.to_string(),
                message,
            })?;
        let cg_err = |source| PodError::Cgroup {
            group: group.to_string(),
            source,
        };
        let layout = Layout::detect().map_err(cg_err)?;
        let root = Cgroup::existing_root(&layout, &opts.cgroup_root).map_err(cg_err)?;
        if let Some(stale) = root.open_child(group) {
            stale.remove().map_err(cg_err)?;
        }
        // The launcher starts first: while the launch server forks it (or it is exec'd and
        // loaded), the cgroups and the spec are made here and written to its stdin; it reads
        // them before anything else.
        let (launcher, prepared) = Launched::start_with(
            &opts.launcher,
            opts.spawner.as_deref(),
            Request {
                verb: Verb::GroupInit,
                spec: Path::new(spec::ON_STDIN),
                label: group,
                io: [Io::Piped; 3],
            },
            |stdin| Self::prepare(g, opts, &root, stdin),
        )
        .map_err(|failed| {
            // The server refused or died after the cgroups and the spec were made: they go
            // (killing whatever joined the cgroups meanwhile).
            if let Some(Ok((cgroup, dir))) = failed.during {
                let _ = cgroup.remove();
                let _ = std::fs::remove_dir_all(dir);
            }
            PodError::Io {
                what: format!("run {} __group-init", opts.launcher.display()),
                source: failed.error,
            }
        })?;
        let (cgroup, dir) = match prepared {
            Ok(x) => x,
            Err(e) => {
                abandon(launcher);
                let _ = std::fs::remove_dir_all(group_dir(&opts.run_dir, group));
                return Err(e);
            }
        };
        match Self::await_init(group, opts, &dir, launcher) {
            Ok((init_pid, init_start_time, launcher)) => Ok(Pod {
                group: group.to_string(),
                init_pid,
                init_start_time,
                cgroup,
                dir,
                private_network: spec_of::private_network(g),
                security: g.security.clone(),
                capabilities,
                launcher: opts.launcher.clone(),
                spawner: opts.spawner.clone(),
                launcher_proc: launcher,
            }),
            Err(e) => {
                let _ = cgroup.remove();
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// The group's cgroups, state directory and spec, the spec written to the launcher's
    /// `stdin` (then closed). Whatever this made is removed again when it fails.
    fn prepare(
        g: &GroupPlan,
        opts: &PodOptions,
        root: &Cgroup,
        stdin: &mut Option<std::fs::File>,
    ) -> Result<(Cgroup, PathBuf), PodError> {
        let group = g.name.as_str();
        let cgroup = root
            .create_child(group, &Limits::from(&g.limits))
            .map_err(|source| PodError::Cgroup {
                group: group.to_string(),
                source,
            })?;
        // The device list before any process of the group exists (docs/launcher.md).
        if let Err(source) = cgroup.set_devices(&g.devices.rules) {
            let _ = cgroup.remove();
            return Err(PodError::Cgroup {
                group: group.to_string(),
                source,
            });
        }
        let dir = group_dir(&opts.run_dir, group);
        let bytes = Self::group_spec(g, &dir, &cgroup).and_then(|spec| {
            serde_json::to_vec(&spec).map_err(|e| PodError::Launch {
                group: group.to_string(),
                message: format!("encode the launch spec: {e}"),
            })
        });
        match bytes {
            Ok(bytes) => {
                // A launcher that died early closed the pipe: its stderr says why, later.
                if let Some(mut stdin) = stdin.take() {
                    let _ = stdin.write_all(&bytes);
                }
                Ok((cgroup, dir))
            }
            Err(e) => {
                let _ = cgroup.remove();
                Err(e)
            }
        }
    }

    /// Waits for the init's pid line; returns its pid, start time and a pidfd of the
    /// launcher when it is our child.
    fn await_init(
        group: &str,
        opts: &PodOptions,
        dir: &Path,
        mut launcher: Launched,
    ) -> Result<(i32, u64, Option<OwnedFd>), PodError> {
        // Names the launcher (not yet reaped, so its pid cannot be reused) for its reaping,
        // when it is our child (the launch server reaps its own).
        let reaper = launcher.child_pidfd();
        // The init prints its pid once it is ready; the launcher exits meanwhile (reaped in
        // `Pod::stop` or when the pod is dropped). Without that line, the launcher's stderr
        // says what failed.
        if let Some(line) = launcher.stdout.as_mut().and_then(read_line) {
            return match Self::started(group, dir, &line) {
                Ok((pid, start)) => Ok((pid, start, reaper)),
                Err(e) => {
                    // Reaped here when it is our child, not left a zombie.
                    let _ = launcher.finish();
                    Err(e)
                }
            };
        }
        let (stdout, stderr) = launcher.finish();
        // The launcher says why it failed on stderr (and exits 1).
        let msg = String::from_utf8_lossy(&stderr).trim().to_string();
        if !msg.is_empty() {
            let msg = msg
                .strip_prefix("agent-supervisor __group-init: ")
                .unwrap_or(&msg)
                .to_string();
            return Err(PodError::Launch {
                group: group.to_string(),
                message: msg,
            });
        }
        if stdout.is_empty() {
            return Err(PodError::Launch {
                group: group.to_string(),
                message: format!(
                    "{} __group-init exited without starting the init",
                    opts.launcher.display()
                ),
            });
        }
        let (pid, start) = Self::started(group, dir, &stdout)?;
        Ok((pid, start, None))
    }

    /// The launch spec of the group's init: its cgroup (created), the state directory, the
    /// root file system and binds.
    fn group_spec(g: &GroupPlan, dir: &Path, cgroup: &Cgroup) -> Result<GroupSpec, PodError> {
        let group = g.name.as_str();
        let init_procs = cgroup
            .join_leaf("init")
            .map_err(|source| PodError::Cgroup {
                group: group.to_string(),
                source,
            })?;
        let _ = std::fs::remove_dir_all(dir);
        for d in ["root", "agents"] {
            std::fs::create_dir_all(dir.join(d))
                .map_err(io(format!("create {}", dir.join(d).display())))?;
        }
        let rootfs = rootfs(g, dir)?;
        let hosts = dir.join("hosts");
        let text = spec_of::hosts_file(std::fs::read_to_string("/etc/hosts").ok(), g);
        std::fs::write(&hosts, text).map_err(io(format!("write {}", hosts.display())))?;
        Ok(spec_of::group_spec(g, dir, init_procs, rootfs, hosts))
    }

    /// The init's pid (the launcher's output) and start time, recorded in `init.pid`.
    fn started(group: &str, dir: &Path, stdout: &[u8]) -> Result<(i32, u64), PodError> {
        let (pid, start) =
            crate::launch::init::started(stdout).map_err(|message| PodError::Launch {
                group: group.to_string(),
                message,
            })?;
        std::fs::write(dir.join("init.pid"), format!("{pid} {start}\n"))
            .map_err(io(format!("write {}", dir.join("init.pid").display())))?;
        Ok((pid, start))
    }

    /// Prepares one agent: its cgroup, its spec and the `__agent` command to spawn (stdin,
    /// stdout and stderr are the caller's to set; the agent inherits the shim's stdout and
    /// stderr). Returns the command and the agent's cgroup.
    pub fn agent_command(&self, agent: &AgentPlan) -> Result<(Command, Cgroup), PodError> {
        self.agent_command_with_log(agent, None)
    }

    /// [`Pod::agent_command`], and with `log` the shim writes the agent's stdout and stderr
    /// to those files itself (timestamped, rotated), so the agent never writes to a pipe of
    /// the caller and keeps running when the caller dies.
    pub fn agent_command_with_log(
        &self,
        agent: &AgentPlan,
        log: Option<LogSpec>,
    ) -> Result<(Command, Cgroup), PodError> {
        let (spec_path, cg) = self.prepare_agent(agent, log)?;
        let mut cmd = Command::new(&self.launcher);
        cmd.arg("__agent").arg(spec_path);
        Ok((cmd, cg))
    }

    /// Starts one agent's shim, through the launch server when the pod has one, with stdin
    /// `/dev/null` and `io[1]`, `io[2]` as stdout and stderr (`io[0]` is not used). While the
    /// shim starts, its cgroup and spec are made here (the spec goes to the shim's stdin, and
    /// to `agents/<agent>.json` for people to read). The shim's exit record
    /// ([`Pod::exit_record`]) says how the agent ended.
    pub fn spawn_agent(
        &self,
        agent: &AgentPlan,
        log: Option<LogSpec>,
        io: [Io; 3],
    ) -> Result<(Launched, Cgroup), PodError> {
        let label = format!("{}:{}", self.group, agent.name);
        let started = Launched::start_with(
            &self.launcher,
            self.spawner.as_deref(),
            Request {
                verb: Verb::Agent,
                spec: Path::new(spec::ON_STDIN),
                label: &label,
                io: [Io::Piped, io[1], io[2]],
            },
            |stdin| {
                let (spec, spec_path, cg) = self.agent_spec(agent, log)?;
                let bytes = match serde_json::to_vec(&spec) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = cg.remove();
                        return Err(PodError::Launch {
                            group: self.group.clone(),
                            message: format!("agent {}: encode the launch spec: {e}", agent.name),
                        });
                    }
                };
                if let Some(mut stdin) = stdin.take() {
                    // A shim that died early closed the pipe: it said why on its stderr.
                    let _ = stdin.write_all(&bytes);
                }
                // Root only (the environment may hold secrets), like every spec file.
                let _ = spec::write_bytes(&spec_path, &bytes);
                Ok(cg)
            },
        )
        .map_err(|failed| {
            // The server refused or died after the agent's cgroup was made: it goes (killing
            // whatever joined it meanwhile).
            if let Some(Ok(cg)) = failed.during {
                let _ = cg.remove();
            }
            PodError::Launch {
                group: self.group.clone(),
                message: format!(
                    "agent {}: cannot run {} __agent: {}",
                    agent.name,
                    self.launcher.display(),
                    failed.error
                ),
            }
        })?;
        match started {
            (shim, Ok(cg)) => Ok((shim, cg)),
            (shim, Err(e)) => {
                // Its stdin closes empty: it fails at once.
                let _ = shim.finish();
                Err(e)
            }
        }
    }

    /// The agent's cgroup and spec file, for its shim.
    fn prepare_agent(
        &self,
        agent: &AgentPlan,
        log: Option<LogSpec>,
    ) -> Result<(PathBuf, Cgroup), PodError> {
        let (spec, spec_path, cg) = self.agent_spec(agent, log)?;
        if let Err(e) = spec::write(&spec_path, &spec) {
            let _ = cg.remove();
            return Err(e.into());
        }
        Ok((spec_path, cg))
    }

    /// The agent's cgroup (made afresh) and launch spec, and where the spec file goes; the
    /// shim's old pid and exit files are removed. The cgroup is removed again on failure.
    fn agent_spec(
        &self,
        agent: &AgentPlan,
        log: Option<LogSpec>,
    ) -> Result<(AgentSpec, PathBuf, Cgroup), PodError> {
        let cg_err = |source| PodError::Cgroup {
            group: self.group.clone(),
            source,
        };
        if let Some(old) = self.cgroup.open_child(&agent.name) {
            old.remove().map_err(cg_err)?;
        }
        let cg = self
            .cgroup
            .create_child(&agent.name, &Limits::default())
            .map_err(cg_err)?;
        let agents = self.dir.join("agents");
        let spec = spec_of::agent_spec(
            agent,
            InitRef {
                pid: self.init_pid,
                start_time: self.init_start_time,
            },
            self.private_network,
            &self.security,
            self.capabilities.clone(),
            cg.procs_files(),
            &agents,
            log,
        );
        let _ = std::fs::remove_file(agents.join(format!("{}.exit", agent.name)));
        let _ = std::fs::remove_file(agents.join(format!("{}.pid", agent.name)));
        let _ = std::fs::remove_file(crate::launch::logdrops::file(&agents, &agent.name));
        Ok((spec, agents.join(format!("{}.json", agent.name)), cg))
    }

    /// Where the shim of `agent` counts the log output it could not write
    /// ([`crate::launch::logdrops`]).
    pub fn log_drops_file(&self, agent: &str) -> PathBuf {
        crate::launch::logdrops::file(&self.dir.join("agents"), agent)
    }

    /// The exit record the shim wrote for `agent`, if it ended.
    pub fn exit_record(&self, agent: &str) -> Option<spec::ExitRecord> {
        spec::read(&self.dir.join("agents").join(format!("{agent}.exit"))).ok()
    }

    /// Stops the group: ends its init (and with it the pid namespace), kills whatever is left
    /// in its cgroups, removes them and the state directory.
    ///
    /// The state directory goes while the kernel is still tearing down the group's
    /// namespaces (on another CPU): nothing in it is needed any more, and a daemon that dies
    /// in between finds a cgroup without `init.pid`, which [`Pod::adopt`] removes.
    pub fn stop(&self) -> Result<(), PodError> {
        let cg_err = |source| PodError::Cgroup {
            group: self.group.clone(),
            source,
        };
        // A pidfd names this init even if its pid were reused, and becomes readable once it
        // has exited: after the kernel killed every other process of its pid namespace.
        let init = crate::launch::pidfd_open(self.init_pid).ok().filter(|_| {
            crate::launch::proc_start_time(self.init_pid) == Some(self.init_start_time)
        });
        if let Some(fd) = &init {
            crate::launch::pidfd_kill(fd);
        }
        let dir_removed = std::fs::remove_dir_all(&self.dir);
        // Agents' cgroups (their processes die with the pid namespace) go meanwhile too; what
        // cannot go yet is removed, or reported, with the group's cgroup below.
        for name in self.cgroup.children() {
            if name != "init" {
                if let Some(cg) = self.cgroup.open_child(&name) {
                    let _ = cg.remove();
                }
            }
        }
        if let Some(fd) = &self.launcher_proc {
            reap_launcher(fd);
        }
        if let Some(fd) = &init {
            crate::launch::wait_readable(fd, crate::cgroup::KILL_WAIT);
        }
        // Kills what is left (cgroup.kill), waits until empty, removes every directory.
        self.cgroup.remove().map_err(cg_err)?;
        // A shim that was still running when the first removal went through the directory
        // may have written a file into it (its agent's pid or exit record); every process
        // of the group is gone now, so a second pass finds nothing new.
        if dir_removed.is_err() && self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .map_err(io(format!("remove {}", self.dir.display())))?;
        }
        Ok(())
    }
}

/// Reads from the launcher's stdout up to the end of the first line (the init's pid, written
/// at once); `None` when it closes without one.
fn read_line(out: &mut std::fs::File) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut line = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match out.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                line.extend_from_slice(&buf[..n]);
                if line.ends_with(b"\n") {
                    return Some(line);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

/// Reaps the launcher a pidfd names, if it is still our unreaped child (waits for its exit,
/// which follows the init's readiness at once).
fn reap_launcher(fd: &OwnedFd) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    use std::os::fd::AsFd;
    let _ = waitid(Id::PIDFd(fd.as_fd()), WaitPidFlag::WEXITED);
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(fd) = self.launcher_proc.take() {
            reap_launcher(&fd);
        }
    }
}

/// Ends a launcher that will get no spec: its stdin closes empty, so it fails and exits.
fn abandon(launcher: Launched) {
    let _ = launcher.finish();
}

/// Reads `init.pid` (`PID START_TIME`) of a group directory.
fn read_init(dir: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(dir.join("init.pid")).ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl Pod {
    /// Re-attaches to a group an earlier daemon left running. `Ok(None)` when its init is
    /// gone; whatever it left (processes in its cgroups, the state directory) is removed then.
    pub fn adopt(g: &GroupPlan, opts: &PodOptions) -> Result<Option<Pod>, PodError> {
        let group = g.name.as_str();
        let capabilities =
            spec_of::capabilities(&g.security).map_err(|message| PodError::Launch {
                group: group.to_string(),
                message,
            })?;
        let cg_err = |source| PodError::Cgroup {
            group: group.to_string(),
            source,
        };
        let dir = group_dir(&opts.run_dir, group);
        let layout = Layout::detect().map_err(cg_err)?;
        let root = Cgroup::root(&layout, &opts.cgroup_root).map_err(cg_err)?;
        let cgroup = root.open_child(group);
        match (read_init(&dir), cgroup) {
            (Some((pid, start)), Some(cgroup))
                if crate::launch::proc_start_time(pid) == Some(start) =>
            {
                Ok(Some(Pod {
                    group: group.to_string(),
                    init_pid: pid,
                    init_start_time: start,
                    cgroup,
                    dir,
                    private_network: spec_of::private_network(g),
                    security: g.security.clone(),
                    capabilities,
                    launcher: opts.launcher.clone(),
                    spawner: opts.spawner.clone(),
                    launcher_proc: None,
                }))
            }
            (init, cgroup) => {
                if let Some((pid, start)) = init {
                    if crate::launch::proc_start_time(pid) == Some(start) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                if let Some(cg) = cgroup {
                    cg.remove().map_err(cg_err)?;
                }
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .map_err(io(format!("remove {}", dir.display())))?;
                }
                Ok(None)
            }
        }
    }

    /// The agent's pid as its shim recorded it.
    pub fn agent_pid(&self, agent: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("agents").join(format!("{agent}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Tears down groups left in the run directory or the cgroup root that are not in
    /// `keep` (removed from the system file while no daemon ran).
    pub fn remove_strays(opts: &PodOptions, keep: &[String]) {
        if let Ok(entries) = std::fs::read_dir(opts.run_dir.join("groups")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if keep.contains(&name) {
                    continue;
                }
                if let Some((pid, start)) = read_init(&e.path()) {
                    if crate::launch::proc_start_time(pid) == Some(start) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        if let Ok(layout) = Layout::detect() {
            if let Ok(root) = Cgroup::root(&layout, &opts.cgroup_root) {
                for child in root.children() {
                    if !keep.contains(&child) && !crate::build_run::is_live_build(&child) {
                        if let Some(cg) = root.open_child(&child) {
                            if let Err(e) = cg.remove() {
                                eprintln!(
                                    "agent-supervisor: stray group cgroup {}: {e}",
                                    cg.path()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
