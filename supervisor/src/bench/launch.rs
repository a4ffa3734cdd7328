//! `agent-supervisor bench launch`: the time from launch to exit of `/bin/true` in a group,
//! beside its peers, in one run: plain fork+exec, `unshare` (+`chroot`), `crun run` and
//! `runc run` of an equivalent OCI bundle. Prints a Markdown table (median, p90, min, ratio to
//! unshare+chroot), where the time of a whole group goes, and whether the target (a new group
//! with its agent within 1.5× unshare+chroot) is met.
//!
//! Order matters: agent-supervisor's own contenders and the plain peers run in the host's
//! mount namespace; only then does this process detach the cgroup2 mount in a private mount
//! namespace for crun and runc (see [`super::oci`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::oci::{self, Bundle, CgroupView};
use super::ours::{BenchSystem, Phases};
use super::table::{measure, ms, render, Row, Stats};

/// agent-supervisor: `Pod::start`, the agent until it exits, `Pod::stop`, every run.
pub const NEW_GROUP: &str = "agent-supervisor: new group + agent";
/// agent-supervisor: one agent per run in a group started once.
pub const IN_GROUP: &str = "agent-supervisor: agent in a running group";
pub const FORK_EXEC: &str = "fork+exec /bin/true";
pub const UNSHARE: &str = "unshare -pfmnui --fork /bin/true";
/// The baseline of the ratios and of the target.
pub const UNSHARE_CHROOT: &str = "unshare -pfmnui --fork chroot / /bin/true";
pub const CRUN: &str = "crun run";
pub const RUNC: &str = "runc run";
/// Every row of the table starts with one of these labels, in this order.
pub const CONTENDERS: &[&str] = &[
    NEW_GROUP,
    IN_GROUP,
    FORK_EXEC,
    UNSHARE,
    UNSHARE_CHROOT,
    CRUN,
    RUNC,
];

/// Untimed runs of each contender before its timed runs.
pub const WARMUP: usize = 5;
/// The target: the median of [`NEW_GROUP`] at most this many times unshare+chroot's.
pub const TARGET_RATIO: f64 = 1.5;

/// Why the benchmark could not run at all (a contender that fails gets a row saying why).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "must run as root: groups need namespaces and cgroups, and so do unshare, crun and runc \
         (run it as root, e.g. sudo agent-supervisor bench launch)"
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
    let mut rows = Vec::new();
    let phases = ours(runs, &mut rows, &mut notes);
    rows.push(Row {
        label: FORK_EXEC.into(),
        result: measure(WARMUP, runs, || spawn(Command::new("/bin/true"))),
    });
    rows.push(unshare_row(UNSHARE, &[], runs));
    rows.push(unshare_row(UNSHARE_CHROOT, &["chroot", "/"], runs));
    oci_rows(runs, &mut rows, &mut notes);

    let baseline = rows
        .iter()
        .find(|r| r.label == UNSHARE_CHROOT)
        .and_then(|r| r.result.as_ref().ok())
        .map(|s| s.median);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bench launch: launch to exit of /bin/true, {runs} timed runs per contender after \
         {WARMUP} warm-up runs (kernel {}, {} CPUs)\n",
        kernel(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    out.push_str(&render(&rows, baseline, "unshare+chroot"));
    out.push('\n');
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
    Ok(out)
}

/// agent-supervisor's two rows; returns the per-run phases of the whole-group contender.
fn ours(runs: usize, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Option<Vec<Phases>> {
    let sys = match BenchSystem::new() {
        Ok(s) => s,
        Err(e) => {
            for label in [NEW_GROUP, IN_GROUP] {
                rows.push(Row {
                    label: label.into(),
                    result: Err(format!("cannot set up the bench system: {e}")),
                });
            }
            return None;
        }
    };
    let mut phases = Vec::with_capacity(WARMUP + runs);
    let result = measure(WARMUP, runs, || {
        phases.push(sys.new_group_and_agent()?);
        Ok(())
    });
    let phases = result.is_ok().then(|| phases.split_off(WARMUP));
    rows.push(Row {
        label: NEW_GROUP.into(),
        result,
    });
    let result = match sys.start_group() {
        Ok(group) => {
            let r = measure(WARMUP, runs, || group.agent_in());
            if let Err(e) = group.stop() {
                notes.push(format!("stopping the group of \"{IN_GROUP}\": {e}"));
            }
            r
        }
        Err(e) => Err(format!("cannot start the group: {e}")),
    };
    rows.push(Row {
        label: IN_GROUP.into(),
        result,
    });
    notes.push(format!(
        "launcher: {} (hidden subcommands __group-init and __agent)",
        sys.launcher().display()
    ));
    phases
}

/// `unshare -pfmnui --fork [prefix...] /bin/true`.
fn unshare_row(label: &str, prefix: &[&str], runs: usize) -> Row {
    let result = match which("unshare") {
        None => Err("not installed: apt-get install util-linux".into()),
        Some(unshare) => measure(WARMUP, runs, || {
            let mut c = Command::new(&unshare);
            c.args(["-pfmnui", "--fork"]).args(prefix).arg("/bin/true");
            spawn(c)
        }),
    };
    Row {
        label: label.into(),
        result,
    }
}

/// crun's and runc's rows, in a cgroup v1-only view on a hybrid host.
fn oci_rows(runs: usize, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let crun = which("crun");
    let runc = which("runc");
    if crun.is_none() && runc.is_none() {
        for (label, pkg) in [(CRUN, "crun"), (RUNC, "runc")] {
            rows.push(Row {
                label: label.into(),
                result: Err(format!("not installed: apt-get install {pkg}")),
            });
        }
        return;
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
    let dir = PathBuf::from(format!("/tmp/as-bench-{}-oci", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bundle = Bundle::write(&dir, &format!("as-bench-{}", std::process::id()));
    let mut ids = 0u64;
    let mut next_id = || {
        ids += 1;
        format!("as-bench-{}-{ids}", std::process::id())
    };
    for (label, pkg, bin) in [(CRUN, "crun", &crun), (RUNC, "runc", &runc)] {
        let row = match (bin, &bundle) {
            (None, _) => Row {
                label: label.into(),
                result: Err(format!("not installed: apt-get install {pkg}")),
            },
            (Some(_), Err(e)) => Row {
                label: label.into(),
                result: Err(format!("cannot write the OCI bundle: {e}")),
            },
            (Some(bin), Ok(b)) => {
                let mut row = Row {
                    label: format!("{label}{suffix}"),
                    result: measure(WARMUP, runs, || b.run(bin, &[], &next_id())),
                };
                if let Some(left) = b.clean(bin, &[]) {
                    notes.push(format!("{pkg}: {left}"));
                }
                if pkg == "crun" {
                    if let Err(why) = &row.result {
                        // crun may refuse this host's cgroups: measure it without them.
                        let global = ["--cgroup-manager=disabled"];
                        let r = measure(WARMUP, runs, || b.run(bin, &global, &next_id()));
                        if r.is_ok() {
                            notes.push(format!(
                                "crun with cgroups failed, measured with \
                                 --cgroup-manager=disabled: {why}"
                            ));
                            row = Row {
                                label: format!(
                                    "{label} --cgroup-manager=disabled (no cgroup){suffix}"
                                ),
                                result: r,
                            };
                        }
                        let _ = b.clean(bin, &global);
                    }
                }
                row
            }
        };
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&dir);
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

/// The program `name` on `PATH` or in the usual system directories.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok());
    found
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Medians of each phase of [`NEW_GROUP`].
fn breakdown(phases: &[Phases]) -> String {
    let median = |f: fn(&Phases) -> Duration| {
        let v: Vec<Duration> = phases.iter().map(f).collect();
        Stats::of(&v).map_or_else(|| "-".to_string(), |s| ms(s.median))
    };
    let mut out = format!("where the time of \"{NEW_GROUP}\" goes (medians, ms):\n");
    for (what, f) in [
        (
            "Pod::start (cgroups, spec, __group-init until the init is ready)",
            (|p: &Phases| p.start) as fn(&Phases) -> Duration,
        ),
        (
            "agent (cgroup, spec, __agent shim until /bin/true exited)",
            |p: &Phases| p.agent,
        ),
        (
            "Pod::stop (kill the init, wait for empty cgroups, remove them)",
            |p: &Phases| p.stop,
        ),
    ] {
        let _ = writeln!(out, "  {:>7}  {what}", median(f));
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
