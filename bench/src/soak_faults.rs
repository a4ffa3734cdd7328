//! The faults `agent-bench soak` injects, what each must change (and leave alone), and the
//! census of the stand-in agents' processes it checks them against.

use std::collections::{BTreeMap, HashMap};

use super::supervise_procs as procs;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `SIGKILL` to an agent: the supervisor restarts it.
    AgentKill,
    /// `SIGSTOP` to an agent: its health check fails and the supervisor restarts it.
    AgentHang,
    /// The OOM group's agent allocates past its group's memory limit.
    Oom,
    /// `kill -9` of a daemon, then a new one: it re-adopts every agent, restarting none.
    DaemonKill,
    /// `SIGKILL` to a host's bridge process: the daemon starts a new one.
    BridgeKill,
    /// One agent's environment changes and its host reloads: that agent alone restarts.
    Reload,
    /// `supervisorctl restart GROUP:*`: every agent of the group restarts, no other.
    GroupRestart,
    /// The underlay between the hosts drops every packet for a while (once per run, in the
    /// first round): each host shows the other down within 10 s, no agent restarts, and
    /// the whole system is `ok` again once the underlay is back.
    Partition,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::AgentKill,
        Kind::AgentHang,
        Kind::Oom,
        Kind::DaemonKill,
        Kind::BridgeKill,
        Kind::Reload,
        Kind::GroupRestart,
        Kind::Partition,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::AgentKill => "agent SIGKILL",
            Kind::AgentHang => "agent SIGSTOP (hang)",
            Kind::Oom => "agent OOM",
            Kind::DaemonKill => "daemon kill -9 + restart",
            Kind::BridgeKill => "bridge process SIGKILL",
            Kind::Reload => "reload (changed env)",
            Kind::GroupRestart => "group restart",
            Kind::Partition => "peer unreachable (underlay cut)",
        }
    }

    /// Whether the supervisor counts the restart it causes in `restarts_total` (its own
    /// restarts after an exit or a failed health check; not the ones asked for).
    pub fn counts_restart(self) -> bool {
        matches!(self, Kind::AgentKill | Kind::AgentHang | Kind::Oom)
    }
}

/// The script of the OOM group's agent: it idles until `SIGUSR1`, then allocates and fills
/// 512 MiB (a filled bytes object: `bytearray(n)` would get untouched zero pages), past its
/// group's limit.
pub const OOMER: &str = "\
import signal, time
def grow(*_):
    hog = b'\\x01' * (512 << 20)
    time.sleep(60 + len(hog) % 2)
signal.signal(signal.SIGUSR1, grow)
print('oomer: waiting for SIGUSR1', flush=True)
while True:
    time.sleep(3600)
";

/// The OOM group's agent's name.
pub const OOMER_NAME: &str = "oomer";

/// Which soak agent a command line is: a stand-in (`stand_in_agent.py --name NAME`) or the
/// OOM group's agent (`oomer.py`).
pub fn agent_of(args: &[String]) -> Option<String> {
    if args.iter().any(|a| a.ends_with("oomer.py")) {
        return Some(OOMER_NAME.to_string());
    }
    if !args.iter().any(|a| a.ends_with("stand_in_agent.py")) {
        return None;
    }
    let at = args.iter().position(|a| a == "--name")?;
    args.get(at + 1).cloned()
}

/// Whether a `/proc/PID/cgroup` text puts the process under a cgroup whose path has `tag`
/// (the lab's cgroup roots are named after it), in any hierarchy.
pub fn in_cgroup_tagged(cgroup: &str, tag: &str) -> bool {
    cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|path| path.contains(tag))
}

/// Every soak agent's processes now, by name (from `/proc`; zombies have no command line):
/// the stand-in and OOM agents in a cgroup under one of the lab's roots (whose names have
/// `tag`), so that the same stand-in agent run by anything else on the machine is not
/// counted.
pub fn census(tag: &str) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for pid in procs::pids() {
        let Some(name) = procs::cmdline(pid).and_then(|a| agent_of(&a)) else {
            continue;
        };
        let mine = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| in_cgroup_tagged(&c, tag));
        if mine {
            out.entry(name).or_default().push(pid);
        }
    }
    out
}

/// The agents with more than one process in both of two censuses (a single census can see
/// an exiting process and its successor: `/proc` is not read atomically).
pub fn doubled(
    a: &BTreeMap<String, Vec<i32>>,
    b: &BTreeMap<String, Vec<i32>>,
) -> Vec<(String, Vec<i32>)> {
    b.iter()
        .filter(|(n, p)| p.len() > 1 && a.get(*n).is_some_and(|q| q.len() > 1))
        .map(|(n, p)| (n.clone(), p.clone()))
        .collect()
}

/// What a fault must change: these agents get a new process; every other agent keeps its
/// pid.
#[derive(Debug, Clone)]
pub struct Expect {
    pub kind: Kind,
    /// What the fault hit, for the report (`a12 on h2`, `h1's daemon`).
    pub target: String,
    /// The agents that must restart.
    pub restart: Vec<String>,
    /// Every agent's pid before the fault.
    pub before: HashMap<String, i32>,
    /// A process that must be replaced (a daemon's or a bridge's pid), with its pid file.
    pub replaced: Option<(std::path::PathBuf, i32)>,
}

impl Expect {
    /// Why the system has not (yet) recovered from this fault, judged by `now` (one pid per
    /// agent); `Ok` when it has. Agents that changed pid but should not have are reported
    /// in `Err(Wrong)`.
    pub fn judge(&self, now: &BTreeMap<String, Vec<i32>>) -> Result<(), Judged> {
        let mut wrong = Vec::new();
        let mut waiting = Vec::new();
        for (name, old) in &self.before {
            let pids = now.get(name).map(Vec::as_slice).unwrap_or_default();
            let must = self.restart.contains(name);
            match pids {
                [] => waiting.push(format!("{name} not running")),
                [p] if must && p == old => waiting.push(format!("{name} not restarted yet")),
                [p] if !must && p != old => {
                    wrong.push(format!("{name} restarted (pid {old} -> {p})"))
                }
                [_] => {}
                many => waiting.push(format!("{name} has {} processes {many:?}", many.len())),
            }
        }
        if let Some((file, old)) = &self.replaced {
            let now = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            match now {
                Some(p) if p != *old && procs::cmdline(p).is_some() => {}
                _ => waiting.push(format!("{} still names pid {old}", file.display())),
            }
        }
        if !wrong.is_empty() {
            Err(Judged::Wrong(wrong.join(", ")))
        } else if !waiting.is_empty() {
            Err(Judged::Waiting(waiting.join(", ")))
        } else {
            Ok(())
        }
    }
}

/// Why a fault has not been recovered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// Not yet.
    Waiting(String),
    /// Something that the fault should have left alone changed: a defect.
    Wrong(String),
}

/// One pid per agent from a census, `None` if an agent has none or several.
pub fn single(c: &BTreeMap<String, Vec<i32>>, names: &[String]) -> Option<HashMap<String, i32>> {
    names
        .iter()
        .map(|n| match c.get(n).map(Vec::as_slice) {
            Some([p]) => Some((n.clone(), *p)),
            _ => None,
        })
        .collect()
}

/// `agent="NAME"` → value of each `agent_supervisor_agent_restarts_total` series of `host`
/// (the primary's exposition also has the other hosts' series).
pub fn restarts_from_metrics(text: &str, host: &str) -> HashMap<String, u64> {
    let host = format!("host=\"{host}\"");
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("agent_supervisor_agent_restarts_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == host) {
            continue;
        }
        let agent = labels
            .split(',')
            .find_map(|l| l.strip_prefix("agent=\""))
            .and_then(|v| v.strip_suffix('"'));
        if let (Some(agent), Ok(v)) = (agent, value.trim().parse::<f64>()) {
            out.insert(agent.to_string(), v as u64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_lines_name_their_agent() {
        let a = s(&[
            "/usr/bin/python3",
            "stand_in_agent.py",
            "--name",
            "a7",
            "--port",
            "1",
        ]);
        assert_eq!(agent_of(&a).as_deref(), Some("a7"));
        assert_eq!(
            agent_of(&s(&["python3", "/x/oomer.py"])).as_deref(),
            Some("oomer")
        );
        assert_eq!(
            agent_of(&s(&["agent-supervisor", "__agent", "x.json"])),
            None
        );
        assert_eq!(agent_of(&s(&["python3", "stand_in_agent.py"])), None);
    }

    #[test]
    fn a_fault_is_judged_by_who_restarted() {
        let before: HashMap<String, i32> = [("a1".into(), 10), ("a2".into(), 20)].into();
        let e = Expect {
            kind: Kind::AgentKill,
            target: "a1".into(),
            restart: vec!["a1".into()],
            before,
            replaced: None,
        };
        let c = |v: &[(&str, &[i32])]| -> BTreeMap<String, Vec<i32>> {
            v.iter().map(|(n, p)| (n.to_string(), p.to_vec())).collect()
        };
        assert!(matches!(
            e.judge(&c(&[("a2", &[20])])),
            Err(Judged::Waiting(_))
        ));
        assert!(matches!(
            e.judge(&c(&[("a1", &[10]), ("a2", &[20])])),
            Err(Judged::Waiting(_))
        ));
        assert_eq!(e.judge(&c(&[("a1", &[11]), ("a2", &[20])])), Ok(()));
        assert!(matches!(
            e.judge(&c(&[("a1", &[11]), ("a2", &[21])])),
            Err(Judged::Wrong(w)) if w.contains("a2")
        ));
    }

    #[test]
    fn only_processes_under_the_labs_cgroups_are_counted() {
        let hybrid =
            "12:memory:/abench-obs-77-h1.slice/h1g1/a1\n1:name=systemd:/user.slice\n0::/\n";
        assert!(in_cgroup_tagged(hybrid, "abench-obs-77-"));
        assert!(!in_cgroup_tagged(hybrid, "abench-obs-78-"));
        assert!(in_cgroup_tagged(
            "0::/abench-obs-77-h2.slice/g/a\n",
            "abench-obs-77-"
        ));
        assert!(!in_cgroup_tagged(
            "0::/user.slice/abench\n",
            "abench-obs-77-"
        ));
    }

    #[test]
    fn doubles_must_show_in_two_censuses() {
        let one: BTreeMap<String, Vec<i32>> = [("a1".to_string(), vec![1, 2])].into();
        let fine: BTreeMap<String, Vec<i32>> = [("a1".to_string(), vec![2])].into();
        assert!(doubled(&fine, &one).is_empty());
        assert_eq!(doubled(&one, &one).len(), 1);
    }

    #[test]
    fn restarts_are_read_from_the_metrics() {
        let text = "# HELP x\nagent_supervisor_agent_restarts_total{host=\"h1\",group=\"g\",agent=\"a3\"} 2\n\
                    agent_supervisor_agent_restarts_total{host=\"h2\",group=\"g\",agent=\"b1\"} 4\n\
                    agent_supervisor_agent_up{host=\"h1\",group=\"g\",agent=\"a3\"} 1\n";
        let r = restarts_from_metrics(text, "h1");
        assert_eq!(r.get("a3"), Some(&2));
        assert_eq!(r.len(), 1);
        assert_eq!(restarts_from_metrics(text, "h2").get("b1"), Some(&4));
    }
}
