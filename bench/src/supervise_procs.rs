//! What `bench supervise` reads from `/proc`: processes by command line, resident and
//! proportional memory, CPU time, listening TCP ports; and the stand-in agents both
//! supervisors run (their script, interpreter, names and ports).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The stand-in agent, compiled in so the benchmark runs from any directory.
pub const STAND_IN_AGENT: &str = include_str!("../../examples/ai-system/agents/stand_in_agent.py");
/// Where the scan for a contiguous range of free ports starts.
pub const FIRST_PORT: u16 = 21000;

/// The N stand-in agents: the same command lines under every supervisor.
#[derive(Debug, Clone)]
pub struct Agents {
    /// The benchmark's temporary directory (the script lives in it).
    pub dir: PathBuf,
    pub python: PathBuf,
    pub script: PathBuf,
    pub names: Vec<String>,
    pub ports: Vec<u16>,
    index: HashMap<String, usize>,
}

impl Agents {
    /// `n` agents `a1`..`aN` on `ports` (`n` of them), running `script` with `python`.
    pub fn new(dir: &Path, python: &Path, script: &Path, ports: Vec<u16>) -> Agents {
        let names: Vec<String> = (1..=ports.len()).map(|i| format!("a{i}")).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Agents {
            dir: dir.to_path_buf(),
            python: python.to_path_buf(),
            script: script.to_path_buf(),
            names,
            ports,
            index,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The command line of agent `i`.
    pub fn argv(&self, i: usize) -> Vec<String> {
        vec![
            self.python.to_string_lossy().into_owned(),
            self.script.to_string_lossy().into_owned(),
            "--name".into(),
            self.names[i].clone(),
            "--port".into(),
            self.ports[i].to_string(),
        ]
    }

    /// Which agent a command line is (the script, then `--name NAME`), if any.
    pub fn which(&self, args: &[String]) -> Option<usize> {
        let script = self.script.to_string_lossy();
        if !args.iter().any(|a| *a == script) {
            return None;
        }
        let at = args.iter().position(|a| a == "--name")?;
        self.index.get(args.get(at + 1)?).copied()
    }

    /// The pids of the agents now running, by agent index (from `/proc`, not a supervisor).
    pub fn pids(&self) -> HashMap<usize, i32> {
        let mut out = HashMap::new();
        for pid in pids() {
            if let Some(i) = cmdline(pid).and_then(|a| self.which(&a)) {
                out.insert(i, pid);
            }
        }
        out
    }

    /// Every process whose command line names the benchmark's directory: agents, and the
    /// daemons, shims and group inits started for them.
    pub fn leftovers(&self) -> Vec<i32> {
        let dir = self.dir.to_string_lossy();
        pids()
            .into_iter()
            .filter(|&p| p != std::process::id() as i32)
            .filter(|&p| cmdline(p).is_some_and(|a| a.iter().any(|x| x.contains(&*dir))))
            .collect()
    }

    /// Whether every agent port has a listening socket.
    pub fn all_listening(&self) -> bool {
        let l = listening_ports();
        self.ports.iter().all(|p| l.contains(p))
    }
}

/// The numeric entries of `/proc`.
pub fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The arguments of `pid` (`None` when it is gone; empty for a zombie or a kernel thread).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// The first `pid` not in `known` whose command line is agent `which`'s.
pub fn new_agent(agents: &Agents, which: usize, known: &HashSet<i32>) -> Option<i32> {
    pids()
        .into_iter()
        .filter(|p| !known.contains(p))
        .find(|&p| cmdline(p).and_then(|a| agents.which(&a)) == Some(which))
}

/// A `kB` field of `/proc/PID/status` or `smaps_rollup`, in KiB.
fn kib_field(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident memory (`VmRSS`) of `pid`, KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS")
}

/// Proportional set size (`Pss` of `smaps_rollup`) of `pid`, KiB: shared pages divided
/// among the processes that map them.
pub fn pss_kib(pid: i32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss")
}

/// CPU time a process used so far, two ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// Sum of the first field of each thread's `schedstat` (nanoseconds on a CPU).
    pub ns: u64,
    /// `utime + stime` of `/proc/PID/stat`, in clock ticks (also counts ended threads).
    pub ticks: u64,
}

/// The CPU time of `pid` (`None` when it is gone).
pub fn cpu_time(pid: i32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let mut ns = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(CpuTime { ns, ticks })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t.unsigned_abs(),
        _ => 100,
    }
}

/// CPU use between two readings over `wall`, as a percentage of one core: (precise from
/// schedstat, from clock ticks).
pub fn cpu_percent(before: CpuTime, after: CpuTime, wall: Duration) -> (f64, f64) {
    let wall = wall.as_secs_f64().max(1e-9);
    let precise = after.ns.saturating_sub(before.ns) as f64 / 1e9 / wall * 100.0;
    let ticks =
        after.ticks.saturating_sub(before.ticks) as f64 / clock_ticks() as f64 / wall * 100.0;
    (precise, ticks)
}

/// Ports with a TCP socket in state LISTEN (`/proc/net/tcp` and `tcp6`).
pub fn listening_ports() -> HashSet<u16> {
    let mut out = HashSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&"0A") {
                continue;
            }
            let port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let Some(p) = port {
                out.insert(p);
            }
        }
    }
    out
}

/// `n` contiguous ports, from [`FIRST_PORT`] on, that nothing listens on and that can be
/// bound on all addresses (the stand-in agents bind 0.0.0.0).
pub fn free_ports(n: usize) -> Option<Vec<u16>> {
    let listening = listening_ports();
    let free =
        |p: u16| !listening.contains(&p) && std::net::TcpListener::bind(("0.0.0.0", p)).is_ok();
    let mut base = FIRST_PORT as usize;
    while base + n <= u16::MAX as usize {
        match (base..base + n).find(|&p| !free(p as u16)) {
            None => return Some((base..base + n).map(|p| p as u16).collect()),
            Some(taken) => base = taken + 1,
        }
    }
    None
}

/// `python3` in the system directories (not a shim on `PATH` such as pyenv's): the groups
/// of the `host` image see only those, and both supervisors must run the same interpreter.
pub fn system_python() -> Option<PathBuf> {
    ["/usr/local/bin/python3", "/usr/bin/python3", "/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok())
}

/// The program `name` on `PATH` or in the usual system directories (the launcher's
/// [`agent_launch::DEFAULT_PATH`]).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(agent_launch::DEFAULT_PATH.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok())
}

/// Removes the cgroup root `slice` (in every hierarchy, killing what is left in it); why
/// not, if it could not be.
pub fn remove_cgroup_root(slice: &str) -> Option<String> {
    use agent_supervisor::cgroup::{Cgroup, Layout};
    match Layout::detect().and_then(|l| Cgroup::root(&l, slice)) {
        Ok(root) => root
            .remove()
            .err()
            .map(|e| format!("cannot remove the cgroup {slice}: {e}")),
        Err(e) => Some(format!("cgroup root {slice}: {e}")),
    }
}

/// Ends a supervisor: SIGKILL to its process (`child`, if it still runs), then to every
/// process of the benchmark it left; notes what survived.
pub fn end(child: Option<std::process::Child>, agents: &Agents) -> Vec<String> {
    if let Some(mut c) = child {
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    let left = kill_leftovers(agents, Duration::from_secs(5));
    if left > 0 {
        vec![format!("{left} processes survived SIGKILL for 5 s")]
    } else {
        Vec::new()
    }
}

/// Kills every process of the benchmark (by pid) until none is left, for at most `limit`;
/// returns how many were left then.
pub fn kill_leftovers(agents: &Agents, limit: Duration) -> usize {
    let t = std::time::Instant::now();
    loop {
        let left = agents.leftovers();
        if left.is_empty() || t.elapsed() > limit {
            return left.len();
        }
        kill_all(&left);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGKILL to each of `pids`.
pub fn kill_all(pids: &[i32]) {
    for &p in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_found_by_script_and_name() {
        let a = Agents::new(
            Path::new("/tmp/x"),
            Path::new("/usr/bin/python3"),
            Path::new("/tmp/x/agent.py"),
            vec![21000, 21001],
        );
        assert_eq!(a.which(&a.argv(1)), Some(1));
        let other = vec![
            "python3".to_string(),
            "/tmp/x/agent.py".into(),
            "--name".into(),
        ];
        assert_eq!(a.which(&other), None);
        let elsewhere: Vec<String> = ["python3", "/srv/agent.py", "--name", "a1"]
            .map(String::from)
            .to_vec();
        assert_eq!(a.which(&elsewhere), None);
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id() as i32;
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        let t = cpu_time(me).expect("own stat");
        assert!(t.ns > 0);
        let (p, _) = cpu_percent(
            CpuTime { ns: 0, ticks: 0 },
            CpuTime {
                ns: 50_000_000,
                ticks: 0,
            },
            Duration::from_secs(5),
        );
        assert!((p - 1.0).abs() < 1e-9, "{p}");
    }
}
