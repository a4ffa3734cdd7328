//! `agent-bench launch`: the time from launch to exit of `/bin/true` in a group,
//! beside its peers, in one run: plain fork+exec, `unshare` (+`chroot`), `crun run` and
//! `runc run` of an equivalent OCI bundle. Prints a Markdown table (median, p90, min, ratio to
//! unshare+chroot), where the time of a whole group goes, and whether the target (a new group
//! with its agent within 1.5× unshare+chroot) is met.
//!
//! Each run is timed whole, cleanup included, as `crun run` cleans up before it returns:
//! "new group + agent" is `Pod::start`, the `__agent` shim until `/bin/true` exited, and
//! `Pod::stop`; "agent in a running group" is `Pod::agent_command`, the shim until the exit,
//! and the removal of the agent's cgroup.
//!
//! Contenders are measured interleaved (one run of each in turn), so a load that comes and
//! goes on a shared machine weighs on all of them alike. Order matters: agent-supervisor's
//! contenders and the plain peers run in the host's mount namespace; only then does this
//! process detach the cgroup2 mount in a private mount namespace for crun and runc (see
//! [`super::oci`]), whose runs are interleaved with each other.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::oci::{self, Bundle, CgroupView};
use super::ours::{BenchSystem, Phases};
use super::supervise_procs::which;
use super::table::{measure, measure_interleaved, ms, render, Contender, Row, Stats};

/// agent-supervisor: `Pod::start`, the agent until it exits, `Pod::stop`, every run.
pub const NEW_GROUP: &str = "agent-supervisor: new group + agent";
/// agent-supervisor: one agent per run in a group started once.
pub const IN_GROUP: &str = "agent-supervisor: agent in a running group";
/// The same two, the group on a private network (veth pair, bridge port, address, route).
pub const NEW_GROUP_NET: &str = "agent-supervisor: new group + agent, private network";
pub const IN_GROUP_NET: &str = "agent-supervisor: agent in a running private group";
pub const FORK_EXEC: &str = "fork+exec /bin/true";
pub const UNSHARE: &str = "unshare -pfmnui --fork /bin/true";
/// The baseline of the ratios and of the target.
pub const UNSHARE_CHROOT: &str = "unshare -pfmnui --fork chroot / /bin/true";
/// The floor of a private network with the usual tools.
pub const NETNS_FLOOR: &str = "ip netns add + veth + address + ip netns exec true";
pub const CRUN: &str = "crun run";
pub const RUNC: &str = "runc run";
/// Every row of the table starts with one of these labels, in this order.
pub const CONTENDERS: &[&str] = &[
    NEW_GROUP,
    IN_GROUP,
    NEW_GROUP_NET,
    IN_GROUP_NET,
    FORK_EXEC,
    UNSHARE,
    UNSHARE_CHROOT,
    NETNS_FLOOR,
    CRUN,
    RUNC,
];

/// The target of the private network: it adds at most this much to a new group's median.
pub const NET_TARGET: Duration = Duration::from_millis(1);

/// Untimed runs of each contender before its timed runs.
pub const WARMUP: usize = 5;
/// The target: the median of [`NEW_GROUP`] at most this many times unshare+chroot's.
pub const TARGET_RATIO: f64 = 1.5;

/// Why the benchmark could not run at all (a contender that fails gets a row saying why).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "must run as root: groups need namespaces and cgroups, and so do unshare, crun and runc \
         (run it as root, e.g. sudo agent-bench launch)"
    )]
    NotRoot,
    #[error("--runs must be at least 1")]
    NoRuns,
}

/// Runs the launch benchmark with `runs` timed runs per contender; returns the report.
pub fn run(runs: usize) -> Result<String, BenchError> {
    if runs == 0 {
        return Err(BenchError::NoRuns);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    let mut notes = Vec::new();
    if cfg!(debug_assertions) {
        notes.push("this is a debug build: build with --release for meaningful numbers".into());
    }
    // Group inits outlive their launcher; as the daemon does, collect them ourselves.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        notes.push(format!(
            "cannot become a subreaper ({e}): group inits are reaped by PID 1"
        ));
    }
    let (mut rows, phases) = host_view_rows(runs, &mut notes);
    rows.extend(oci_rows(runs, &mut notes));

    let baseline = rows
        .iter()
        .find(|r| r.label == UNSHARE_CHROOT)
        .and_then(|r| r.result.as_ref().ok())
        .map(|s| s.median);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bench launch: launch to exit of /bin/true, {runs} timed runs per contender after \
         {WARMUP} warm-up runs, contenders interleaved (kernel {}, {} CPUs)\n",
        kernel(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    out.push_str(&render(&rows, baseline, "unshare+chroot"));
    out.push('\n');
    out.push_str(&legend());
    if let Some(p) = phases {
        out.push_str(&breakdown(&p));
    }
    for n in &notes {
        let _ = writeln!(out, "note: {n}");
    }
    let ours = rows
        .iter()
        .find(|r| r.label == NEW_GROUP)
        .and_then(|r| r.result.as_ref().ok());
    out.push_str(&verdict(ours, baseline));
    let net = rows
        .iter()
        .find(|r| r.label == NEW_GROUP_NET)
        .and_then(|r| r.result.as_ref().ok());
    out.push_str(&net_verdict(ours, net));
    Ok(out)
}

/// A table line decided before measuring (why a contender cannot run), or a contender.
enum Slot<'a> {
    Ready(Row),
    Run(Contender<'a>),
}

/// Measures the runnable slots interleaved; returns every row in slot order.
fn measure_slots(slots: Vec<Slot<'_>>, runs: usize) -> Vec<Row> {
    let mut order = Vec::new();
    let mut contenders = Vec::new();
    for s in slots {
        match s {
            Slot::Ready(r) => order.push(Some(r)),
            Slot::Run(c) => {
                order.push(None);
                contenders.push(c);
            }
        }
    }
    let mut measured = measure_interleaved(contenders, WARMUP, runs).into_iter();
    order
        .into_iter()
        .filter_map(|r| r.or_else(|| measured.next()))
        .collect()
}

fn reason(label: &str, why: String) -> Slot<'static> {
    Slot::Ready(Row {
        label: label.into(),
        result: Err(why),
    })
}

/// Everything measured in the host's own mount namespace: agent-supervisor's two rows,
/// fork+exec and unshare (+chroot), interleaved. Returns the rows and the per-run phases of
/// [`NEW_GROUP`] (timed runs only).
fn host_view_rows(runs: usize, notes: &mut Vec<String>) -> (Vec<Row>, Option<Vec<Phases>>) {
    let phases: RefCell<Vec<Phases>> = RefCell::new(Vec::with_capacity(WARMUP + runs));
    let sys = BenchSystem::new();
    let group = sys.as_ref().ok().map(BenchSystem::start_group);
    let net_group = sys.as_ref().ok().map(BenchSystem::start_private_group);
    if let Ok(s) = &sys {
        let how = if s.forked() {
            "forked by its launch server (`__spawner`), as the daemon does".to_string()
        } else {
            format!(
                "exec'd per launch, the launch server did not start; {}",
                match has_interpreter(s.launcher()) {
                    Some(true) => "dynamically linked: `quickstart.sh` links it statically, ~0.3 ms less per exec",
                    Some(false) => "statically linked",
                    None => "not an ELF file we could read",
                }
            )
        };
        notes.push(format!(
            "launcher: {} (__group-init and __agent {how})",
            s.launcher().display()
        ));
    }
    let unshare = which("unshare");
    let rows = {
        let mut slots = Vec::new();
        let mut net_slots = Vec::new();
        match &sys {
            Ok(sys) => {
                slots.push(Slot::Run(Contender::new(NEW_GROUP, || {
                    let p = sys.new_group_and_agent()?;
                    phases.borrow_mut().push(p);
                    Ok(())
                })));
                match &group {
                    Some(Ok(g)) => slots.push(Slot::Run(Contender::new(IN_GROUP, || g.agent_in()))),
                    Some(Err(e)) => {
                        slots.push(reason(IN_GROUP, format!("cannot start the group: {e}")))
                    }
                    None => {}
                }
                net_slots.push(Slot::Run(Contender::new(NEW_GROUP_NET, || {
                    sys.new_private_group_and_agent().map(drop)
                })));
                match &net_group {
                    Some(Ok(g)) => {
                        net_slots.push(Slot::Run(Contender::new(IN_GROUP_NET, || g.agent_in())))
                    }
                    Some(Err(e)) => {
                        net_slots.push(reason(IN_GROUP_NET, format!("cannot start the group: {e}")))
                    }
                    None => {}
                }
            }
            Err(e) => {
                for label in [NEW_GROUP, IN_GROUP, NEW_GROUP_NET, IN_GROUP_NET] {
                    slots.push(reason(
                        label,
                        format!("cannot set up the bench system: {e}"),
                    ));
                }
            }
        }
        slots.push(Slot::Run(Contender::new(FORK_EXEC, || {
            spawn(Command::new("/bin/true"))
        })));
        for (label, prefix) in [(UNSHARE, &[][..]), (UNSHARE_CHROOT, &["chroot", "/"][..])] {
            match &unshare {
                None => slots.push(reason(
                    label,
                    "not installed: apt-get install util-linux".into(),
                )),
                Some(u) => slots.push(Slot::Run(Contender::new(label, move || {
                    let mut c = Command::new(u);
                    c.args(["-pfmnui", "--fork"]).args(prefix).arg("/bin/true");
                    spawn(c)
                }))),
            }
        }
        match which("ip") {
            None => net_slots.push(reason(
                NETNS_FLOOR,
                "not installed: apt-get install iproute2".into(),
            )),
            Some(ip) => net_slots.push(Slot::Run(Contender::new(NETNS_FLOOR, move || {
                netns_floor(&ip)
            }))),
        }
        // The network rows are measured after the others, among themselves: the kernel tears
        // a network namespace with a veth down in the background (RCU grace periods under the
        // rtnl lock), which would slow the contenders interleaved with them.
        let mut rows = measure_slots(slots, runs);
        rows.extend(measure_slots(net_slots, runs));
        rows.sort_by_key(|r| CONTENDERS.iter().position(|c| r.label == *c));
        rows
    };
    for (g, label) in [(group, IN_GROUP), (net_group, IN_GROUP_NET)] {
        if let Some(Ok(g)) = g {
            if let Err(e) = g.stop() {
                notes.push(format!("stopping the group of \"{label}\": {e}"));
            }
        }
    }
    // The bench system (its directory and cgroup slice) goes before the mount namespace
    // changes for crun and runc.
    drop(sys);
    let new_group_ok = rows
        .iter()
        .any(|r| r.label == NEW_GROUP && r.result.is_ok());
    let mut phases = phases.into_inner();
    let phases = (new_group_ok && phases.len() >= WARMUP).then(|| phases.split_off(WARMUP));
    (rows, phases)
}

/// crun's and runc's rows, interleaved, in a cgroup v1-only view on a hybrid host.
fn oci_rows(runs: usize, notes: &mut Vec<String>) -> Vec<Row> {
    let crun = which("crun");
    let runc = which("runc");
    let missing = |label: &str, pkg: &str| Row {
        label: label.into(),
        result: Err(format!("not installed: apt-get install {pkg}")),
    };
    if crun.is_none() && runc.is_none() {
        return vec![missing(CRUN, "crun"), missing(RUNC, "runc")];
    }
    let view = match oci::enter_v1_only_view() {
        Ok(v) => v,
        Err(e) => {
            notes.push(format!("no cgroup v1-only view for crun/runc: {e}"));
            CgroupView::Host
        }
    };
    let suffix = match view {
        CgroupView::V1Only => " (equivalent bundle, cgroup v1-only view)",
        CgroupView::Host => " (equivalent bundle)",
    };
    let pid = std::process::id();
    let dir = PathBuf::from(format!("/tmp/as-bench-{pid}-oci"));
    let _ = std::fs::remove_dir_all(&dir);
    let bundle = match Bundle::write(&dir, &format!("as-bench-{pid}")) {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            let why = format!("cannot write the OCI bundle: {e}");
            return vec![
                Row {
                    label: CRUN.into(),
                    result: Err(why.clone()),
                },
                Row {
                    label: RUNC.into(),
                    result: Err(why),
                },
            ];
        }
    };
    let ids = Cell::new(0u64);
    let next_id = || {
        ids.set(ids.get() + 1);
        format!("as-bench-{pid}-{}", ids.get())
    };
    let runtimes = [(CRUN, "crun", &crun), (RUNC, "runc", &runc)];
    let slots = runtimes
        .iter()
        .map(|(label, pkg, bin)| match bin {
            None => Slot::Ready(missing(label, pkg)),
            Some(bin) => Slot::Run(Contender::new(format!("{label}{suffix}"), || {
                bundle.run(bin, &[], &next_id())
            })),
        })
        .collect();
    let mut rows = measure_slots(slots, runs);
    for (_, pkg, bin) in &runtimes {
        if let Some(left) = bin.as_ref().and_then(|b| bundle.clean(b, &[])) {
            notes.push(format!("{pkg}: {left}"));
        }
    }
    // crun may refuse this host's cgroups: then measure it without them, and say so.
    if let (Some(bin), Some(row)) = (&crun, rows.first_mut()) {
        if let Err(why) = &row.result {
            let global = ["--cgroup-manager=disabled"];
            let r = measure(WARMUP, runs, || bundle.run(bin, &global, &next_id()));
            if r.is_ok() {
                notes.push(format!(
                    "crun with cgroups failed, measured with --cgroup-manager=disabled: {why}"
                ));
                *row = Row {
                    label: format!("{CRUN} --cgroup-manager=disabled (no cgroup){suffix}"),
                    result: r,
                };
            }
            let _ = bundle.clean(bin, &global);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&bundle.state);
    rows
}

/// Spawns `cmd` with no stdin or stdout, waits, and fails with its stderr unless it exits 0.
fn spawn(mut cmd: Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace with a veth pair, an address and a process in it, with `ip`, then
/// all of it removed: what a private network costs with the usual tools.
fn netns_floor(ip: &std::path::Path) -> Result<(), String> {
    // A new name every run: the kernel removes the last run's veth in the background, after
    // its namespace is gone (as it does for ours).
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ns = format!("asb{:x}{n:x}", std::process::id());
    let run = |args: &[&str]| {
        let mut c = Command::new(ip);
        c.args(args);
        spawn(c)
    };
    let made = run(&["netns", "add", &ns])
        .and_then(|()| {
            run(&[
                "link",
                "add",
                &format!("{ns}h"),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ])
        })
        .and_then(|()| run(&["-n", &ns, "addr", "add", "10.199.78.2/24", "dev", "eth0"]))
        .and_then(|()| run(&["-n", &ns, "link", "set", "eth0", "up"]))
        .and_then(|()| run(&["netns", "exec", &ns, "/bin/true"]));
    let removed = run(&["netns", "del", &ns]);
    made.and(removed)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What each row measures, one line per contender (every run is timed from spawn to the
/// moment everything it set up is gone again).
fn legend() -> String {
    let rows: [(&str, &str); 10] = [
        (
            NEW_GROUP,
            "Pod::start (group and init cgroups, spec, __group-init until the init is \
             ready: namespaces, root file system, pivot_root) + the __agent shim until \
             /bin/true exited + Pod::stop (init killed, state directory and cgroups removed); \
             like one `crun run`",
        ),
        (
            IN_GROUP,
            "agent cgroup and spec, the __agent shim until /bin/true exited, the agent's \
             cgroup removed (the supervisor's restart path)",
        ),
        (
            NEW_GROUP_NET,
            "the same with the group on a private network: the launcher adds a veth pair \
             (one end moved into the group), a port on the host's bridge, the group's address, \
             loopback and a default route over rtnetlink; the kernel removes the pair with the \
             namespace",
        ),
        (
            IN_GROUP_NET,
            "an agent in a running private group (the shim joins its network namespace too)",
        ),
        (FORK_EXEC, "spawn and wait, no isolation"),
        (
            UNSHARE,
            "new pid, mount, net, uts and ipc namespaces; no cgroup, no new root",
        ),
        (
            UNSHARE_CHROOT,
            "the same and chroot to / (the baseline of the ratios and the target)",
        ),
        (
            NETNS_FLOOR,
            "the private network's floor with iproute2: `ip netns add`, a veth pair into it, \
             an address, the link up, `ip netns exec` of /bin/true, `ip netns del` (six \
             processes)",
        ),
        (
            CRUN,
            "create, start, wait and delete of the equivalent bundle (same mounts, masked \
             paths, capabilities, seccomp; its own cgroup; state root in /dev/shm when that is \
             a tmpfs, as our run directory)",
        ),
        (RUNC, "the same as crun"),
    ];
    let mut out = String::from("what each row measures:\n");
    for (label, what) in rows {
        let _ = writeln!(out, "  {label}: {what}");
    }
    out.push('\n');
    out
}

/// Median and p90 of each phase of [`NEW_GROUP`] (medians of parts need not add up to the
/// median of the whole).
fn breakdown(phases: &[Phases]) -> String {
    let stats = |f: fn(&Phases) -> Duration| {
        let v: Vec<Duration> = phases.iter().map(f).collect();
        Stats::of(&v).map_or_else(
            || format!("{:>7}  {:>7}", "-", "-"),
            |s| format!("{:>7}  {:>7}", ms(s.median), ms(s.p90)),
        )
    };
    let mut out = format!("where the time of \"{NEW_GROUP}\" goes (ms):\n   median      p90\n");
    type Part = (&'static str, fn(&Phases) -> Duration);
    let rows: [Part; 3] = [
        (
            "Pod::start (cgroups, spec, __group-init until the init is ready)",
            |p| p.start,
        ),
        (
            "agent (cgroup, spec, __agent shim until /bin/true exited)",
            |p| p.agent,
        ),
        (
            "Pod::stop (kill the init, wait for empty cgroups, remove them)",
            |p| p.stop,
        ),
    ];
    for (what, f) in rows {
        let _ = writeln!(out, "  {}  {what}", stats(f));
    }
    out.push('\n');
    out
}

/// The closing line: is the target met?
fn verdict(ours: Option<&Stats>, baseline: Option<Duration>) -> String {
    match (ours, baseline) {
        (Some(s), Some(b)) => {
            let allowed = b.mul_f64(TARGET_RATIO);
            let ratio = s.median.as_secs_f64() / b.as_secs_f64().max(1e-9);
            format!(
                "target: median of \"{NEW_GROUP}\" <= {TARGET_RATIO} x unshare+chroot: {} ms vs \
                 {} ms allowed ({ratio:.2}x): {}\n",
                ms(s.median),
                ms(allowed),
                if s.median <= allowed {
                    "MET"
                } else {
                    "NOT MET"
                }
            )
        }
        _ => format!(
            "target: cannot be evaluated: \"{NEW_GROUP}\" or \"{UNSHARE_CHROOT}\" has no numbers\n"
        ),
    }
}

/// The private network's target: what it adds to a new group's median.
fn net_verdict(host: Option<&Stats>, private: Option<&Stats>) -> String {
    match (host, private) {
        (Some(h), Some(p)) => {
            let added = p.median.saturating_sub(h.median);
            format!(
                "target: the private network adds <= {} ms to the median of a new group: {} ms \
                 ({} vs {} ms): {}\n",
                ms(NET_TARGET),
                ms(added),
                ms(p.median),
                ms(h.median),
                if added <= NET_TARGET {
                    "MET"
                } else {
                    "NOT MET"
                }
            )
        }
        _ => format!(
            "target: cannot be evaluated: \"{NEW_GROUP}\" or \"{NEW_GROUP_NET}\" has no numbers\n"
        ),
    }
}

/// Whether the ELF executable at `path` names a dynamic loader (has a `PT_INTERP` program
/// header); `None` if it is not a readable ELF file.
fn has_interpreter(path: &std::path::Path) -> Option<bool> {
    agent_images::closure::elf_interpreter(path).map(|i| i.is_some())
}

#[cfg(test)]
mod tests {
    use super::has_interpreter;

    #[test]
    fn tells_dynamic_from_static_executables() {
        // Debian's coreutils are dynamically linked; the bench's own test binary too.
        assert_eq!(
            has_interpreter(std::path::Path::new("/bin/true")),
            Some(true)
        );
        let not_elf = std::env::temp_dir().join(format!("as-not-elf-{}", std::process::id()));
        std::fs::write(&not_elf, b"#!/bin/sh\n").expect("write");
        assert_eq!(has_interpreter(&not_elf), None);
        std::fs::remove_file(&not_elf).expect("remove");
    }
}
