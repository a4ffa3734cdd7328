//! agent-supervisor's own contenders in `bench launch`: a whole pod lifecycle per run
//! (`Pod::start`, one `__agent` running `/bin/true`, `Pod::stop`), and one agent per run in a
//! group that keeps running. Both use a tiny system file in a temporary directory whose run
//! directory and cgroup root are the benchmark's own, removed afterwards.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_plan::{AgentPlan, HostPlan};

use agent_supervisor::cgroup::{Cgroup, Layout};
use agent_supervisor::pod::{Pod, PodOptions};
use agent_supervisor::spawner::Io;

/// The groups of the benchmark's system file: one started and stopped every run, one
/// started once (their contenders are measured interleaved, so they must not share a name).
const GROUP: &str = "bench-new";
const RUNNING_GROUP: &str = "bench-running";
/// The same two on a private network (`network: private`, no egress: no nftables rule).
pub const NET_GROUP: &str = "bench-net-new";
pub const RUNNING_NET_GROUP: &str = "bench-net-running";
/// The bench host's group subnet: its own, so no other bridge on this machine has it.
const SUBNET: &str = "10.199.77.0/24";
/// Each group's one agent (agent names are unique across a system): `<group>-true`.
fn agent_name(group: &str) -> String {
    format!("{group}-true")
}
const HOST: &str = "h1";

/// Where the time of one "new group + agent" run went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// `Pod::start`: cgroups, spec, `__group-init` until the init is ready.
    pub start: Duration,
    /// `Pod::agent_command` (agent cgroup, spec file) until the shim exited.
    pub agent: Duration,
    /// `Pod::stop` and reaping the init: kill, wait for empty cgroups, remove them.
    pub stop: Duration,
}

/// The benchmark's system: a temporary directory with `system.yaml`, loaded.
pub struct BenchSystem {
    plan: HostPlan,
    opts: PodOptions,
    _cleanup: Cleanup,
}

/// Removes the benchmark's directories and cgroup slice when dropped.
struct Cleanup {
    dir: PathBuf,
    run_dir: PathBuf,
    slice: String,
}

/// A directory for run-time state named `name`: on the tmpfs `/dev/shm` when there is one
/// (as `/run`, the default `run_dir` and the OCI runtimes' default state root, is a tmpfs on
/// a usual host), else in `/tmp`.
pub fn state_dir(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let tmpfs = nix::sys::statfs::statfs(shm)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if tmpfs {
        shm.join(name)
    } else {
        std::env::temp_dir().join(name)
    }
}

impl BenchSystem {
    /// Writes and loads the system file in `/tmp/as-bench-<pid>`.
    pub fn new() -> Result<BenchSystem, String> {
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/as-bench-{pid}"));
        let slice = format!("as-bench-{pid}.slice");
        let run_dir = state_dir(&format!("as-bench-{pid}-run"));
        for d in [&dir, &run_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let file = dir.join("system.yaml");
        let group = |name: &str, network: &str| {
            format!(
                "  {name}:\n    host: {HOST}\n    image: host\n    network: {network}\n    agents:\n\
                 \x20     - name: {}\n        command: [/bin/true]\n",
                agent_name(name)
            )
        };
        let private = "{mode: private, egress: false}";
        let text = format!(
            "hosts:\n  {HOST}: {{address: 127.0.0.1, role: primary, network: {{subnet: {SUBNET}}}}}\n\
             daemon: {{run_dir: {run}, cgroup_root: {slice}}}\ngroups:\n{}{}{}{}",
            group(GROUP, "host"),
            group(RUNNING_GROUP, "host"),
            group(NET_GROUP, private),
            group(RUNNING_NET_GROUP, private),
            run = run_dir.display(),
        );
        // From here on, dropping `cleanup` removes the directory and the slice.
        let cleanup = Cleanup {
            dir,
            run_dir,
            slice,
        };
        std::fs::write(&file, text).map_err(|e| format!("write {}: {e}", file.display()))?;
        let (_, plan) = agent_plan::Plan::load(&file, HOST, None).map_err(|f| {
            let f: Vec<String> = f.iter().map(|f| f.to_string()).collect();
            format!("bench system file: {}", f.join("; "))
        })?;
        // As the daemon: launchers forked by a launch server.
        let opts = PodOptions::for_host(&plan)
            .map_err(|e| e.to_string())?
            .with_spawner();
        Ok(BenchSystem {
            plan,
            opts,
            _cleanup: cleanup,
        })
    }

    /// The launcher binary (this executable).
    pub fn launcher(&self) -> &Path {
        &self.opts.launcher
    }

    /// Whether launchers are forked by a launch server (else exec'd).
    pub fn forked(&self) -> bool {
        self.opts.spawner.is_some()
    }

    fn agent(&self, group: &str) -> Result<&AgentPlan, String> {
        self.plan
            .groups
            .get(group)
            .and_then(|g| g.agents.get(&agent_name(group)))
            .ok_or_else(|| format!("group {group} has no agent in the bench system"))
    }

    fn group(&self, group: &str) -> Result<&agent_plan::GroupPlan, String> {
        self.plan
            .groups
            .get(group)
            .ok_or_else(|| format!("group {group} is not in the bench system"))
    }

    /// One whole lifecycle: start the group, run the agent to its exit, stop the group.
    pub fn new_group_and_agent(&self) -> Result<Phases, String> {
        self.lifecycle(GROUP)
    }

    /// [`BenchSystem::new_group_and_agent`] of the group on the private network.
    pub fn new_private_group_and_agent(&self) -> Result<Phases, String> {
        self.lifecycle(NET_GROUP)
    }

    fn lifecycle(&self, group: &str) -> Result<Phases, String> {
        let t0 = Instant::now();
        let pod = Pod::start(self.group(group)?, &self.opts).map_err(|e| e.to_string())?;
        let t1 = Instant::now();
        let ran = self.run_agent(&pod, false);
        let t2 = Instant::now();
        let stopped = stop(&pod);
        let t3 = Instant::now();
        ran?;
        stopped?;
        Ok(Phases {
            start: t1 - t0,
            agent: t2 - t1,
            stop: t3 - t2,
        })
    }

    /// Starts the long-lived group once, for [`RunningGroup::agent_in`].
    pub fn start_group(&self) -> Result<RunningGroup<'_>, String> {
        self.start(RUNNING_GROUP)
    }

    /// [`BenchSystem::start_group`] on the private network.
    pub fn start_private_group(&self) -> Result<RunningGroup<'_>, String> {
        self.start(RUNNING_NET_GROUP)
    }

    fn start(&self, group: &str) -> Result<RunningGroup<'_>, String> {
        let pod = Pod::start(self.group(group)?, &self.opts).map_err(|e| e.to_string())?;
        Ok(RunningGroup { sys: self, pod })
    }

    /// Prepares, starts and waits for the agent's shim (as the daemon does); checks the
    /// agent exited 0. With `remove_cgroup`, also removes the agent's cgroup (as the daemon
    /// does after an exit).
    fn run_agent(&self, pod: &Pod, remove_cgroup: bool) -> Result<(), String> {
        let agent = self.agent(&pod.group)?;
        let (shim, cg) = pod
            .spawn_agent(agent, None, [Io::Null, Io::Null, Io::Piped])
            .map_err(|e| e.to_string())?;
        let (_, stderr) = shim.finish();
        let record = pod.exit_record(&agent.name);
        if record.as_ref().map(|r| r.status()) != Some(0) {
            let why = record
                .and_then(|r| r.error.or(r.code.map(|c| format!("exit status {c}"))))
                .unwrap_or_else(|| String::from_utf8_lossy(&stderr).trim().to_string());
            return Err(format!("agent {}:{}: {why}", pod.group, agent.name));
        }
        if remove_cgroup {
            cg.remove().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A group started once; agents are run in it one after the other.
pub struct RunningGroup<'a> {
    sys: &'a BenchSystem,
    pod: Pod,
}

impl RunningGroup<'_> {
    /// One agent run: agent cgroup and spec, shim spawn until `/bin/true` exited, agent
    /// cgroup removed.
    pub fn agent_in(&self) -> Result<(), String> {
        self.sys.run_agent(&self.pod, true)
    }

    /// The group init's pid (host pid namespace).
    pub fn init_pid(&self) -> i32 {
        self.pod.init_pid
    }

    /// Stops the group.
    pub fn stop(self) -> Result<(), String> {
        stop(&self.pod)
    }
}

/// `Pod::stop`, then reaps the init (it was reparented to this process, a subreaper). A
/// stop that succeeded left the cgroups empty, so the init is dead and the wait is immediate;
/// after a failed stop the init is only collected if it already ended.
fn stop(pod: &Pod) -> Result<(), String> {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let r = pod.stop().map_err(|e| e.to_string());
    let flags = if r.is_ok() {
        None
    } else {
        Some(WaitPidFlag::WNOHANG)
    };
    let _ = waitpid(nix::unistd::Pid::from_raw(pod.init_pid), flags);
    r
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.run_dir);
        // The private groups' bridge (their veths went with their namespaces).
        let _ = agent_supervisor::launch::rtnl::delete_link(&agent_plan::net::bridge_name(
            &self.run_dir,
        ));
        if let Ok(layout) = Layout::detect() {
            if let Ok(root) = Cgroup::root(&layout, &self.slice) {
                let _ = root.remove();
            }
        }
    }
}
