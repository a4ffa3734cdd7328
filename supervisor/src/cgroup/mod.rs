//! A small cgroup library: one slice of cgroups per host, one cgroup per group, one per agent.
//!
//! # Why self-written
//!
//! `cgroups-rs` 0.5 reads no v2 `memory.events` (so no OOM-kill count on unified hosts) and has no
//! v2 device control; youki's `libcgroups` is tied to `oci-spec` types and has no hybrid mode
//! (v1 controllers for limits, cgroup2 for tracking). What we need is a few files per cgroup, so
//! this module writes them itself: plain synchronous file I/O, no daemon, no D-Bus.
//!
//! # Layouts
//!
//! - **Unified** (`/sys/fs/cgroup` is cgroup2, e.g. a systemd host): one hierarchy. Controllers
//!   (`memory pids cpu`, and `io` when available) are enabled in `cgroup.subtree_control` from the
//!   hierarchy's root down to every cgroup that gets children; limits are `memory.max`,
//!   `memory.high`, `memory.swap.max`, `pids.max`, `cpu.max`, `cpu.weight`; stop is `cgroup.kill`;
//!   OOM kills come from `memory.events` (`oom_kill`, hierarchical).
//! - **Hybrid** (`/sys/fs/cgroup` is a tmpfs with v1 controllers in subdirectories and cgroup2 at
//!   `/sys/fs/cgroup/unified`): processes are tracked and killed through the cgroup2 tree
//!   (`cgroup.procs`, `cgroup.kill`, `cgroup.events`), limits go to the v1 `memory`
//!   (`memory.limit_in_bytes`, `memory.soft_limit_in_bytes`, `memory.memsw.limit_in_bytes`),
//!   `pids` (`pids.max`) and `cpu` (`cpu.cfs_quota_us`, `cpu.shares`) hierarchies, OOM kills come
//!   from `memory.oom_control` (`oom_kill`, counted where the victim lived, so summed over the
//!   subtree). v1 memory is hierarchical (`memory.use_hierarchy` is always 1 on kernels >= 6.x
//!   and is checked on the root), and limits are written parent before child because a cgroup is
//!   created and limited before its children exist. The same layout without cgroup2 (pure v1)
//!   tracks processes through the v1 hierarchies and kills with the freezer and `SIGKILL`.
//!
//! # Tree
//!
//! `<root>/<group>` carries the group's limits. On cgroup2 it never holds processes itself
//! (the no-internal-process rule): the group's init runs in `<root>/<group>/init`; v1
//! hierarchies have no such rule, and there the init runs in `<root>/<group>` itself (see
//! [`Cgroup::join_leaf`]). Each agent runs in `<root>/<group>/<agent>`, which may have limits
//! of its own. On a unified host the root is the
//! daemon's own cgroup when systemd delegated it (`Delegate=yes`, see [`default_root`]), else
//! [`DEFAULT_ROOT`] at the top of the hierarchy; on a hybrid host it is [`DEFAULT_ROOT`] at the
//! top of every hierarchy.
//!
//! Moves into a cgroup wait for an RCU grace period unless the cgroup2 mount has
//! `favordynmods`, which the daemon sets (see [`set_favordynmods`]).
//!
//! Not done: `io`/`blkio` limits, `cpuset`.

mod dynmods;
mod files;
mod layout;
mod limits;
mod v1;
mod v2;

#[cfg(test)]
mod fake_tests;

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub use dynmods::{set_favordynmods, DynMods};
use files::{
    collect_pids, keyed_value, mkdir, mkdir_all, read_pids, read_u64, read_words, remove_tree,
    signal_kill, subdirs, write_file,
};
use layout::Hier;
pub use layout::Layout;
pub use limits::{Limits, Stats};
pub use v2::{delegated_cgroup, own_cgroup};

/// The slice created at the top of each hierarchy when the daemon has no delegated cgroup.
pub const DEFAULT_ROOT: &str = "agent-supervisor.slice";

/// The leaf the daemon moves itself into when its own delegated cgroup becomes the root.
pub const DAEMON_LEAF: &str = "supervisor";

/// How long [`Cgroup::kill`] and [`Cgroup::remove`] wait for a cgroup to empty.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long [`Cgroup::remove`] first retries an rmdir that fails with `EBUSY` before it
/// looks for processes left in v1 directories.
const BUSY_RETRY: Duration = Duration::from_millis(100);

/// v1 controllers this module uses (others, such as cpuset, are left alone). `devices` holds
/// each group's device list ([`Cgroup::set_devices`]).
const V1_USED: &[&str] = &["memory", "pids", "cpu", "cpuacct", "freezer", "devices"];

/// Something went wrong with a cgroup; every variant names the path and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot detect the cgroup layout from {path}: {reason}")]
    Detect { path: PathBuf, reason: String },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enable the {controller} controller in {path}: {source}{hint}")]
    EnableController {
        path: PathBuf,
        controller: String,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {path}: the {controller} controller is not available ({why})")]
    ControllerMissing {
        path: String,
        controller: &'static str,
        why: String,
    },
    #[error("invalid cgroup name {name:?} under {path:?}: {why}")]
    InvalidName {
        path: String,
        name: String,
        why: &'static str,
    },
    #[error("invalid limit for cgroup {path}: {why}")]
    InvalidLimit { path: String, why: String },
    #[error("cgroup {path} contains this process ({pid}); refusing to kill it")]
    ContainsSelf { path: String, pid: u32 },
    #[error("cgroup {path} still has processes {pids:?} after {waited:?}")]
    StillPopulated {
        path: String,
        pids: Vec<u32>,
        waited: Duration,
    },
    #[error("cgroup {path}: cannot set its device list: {source}")]
    Devices {
        path: String,
        #[source]
        source: Box<agent_devices::DevicesError>,
    },
    #[error("cannot remove cgroup {path}: {source}{left}")]
    Remove {
        path: PathBuf,
        /// `" (processes left: [..])"` when the directory still had processes, else empty.
        left: String,
        #[source]
        source: std::io::Error,
    },
}

/// A cgroup: a path relative to the mount point of every hierarchy of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The hierarchies this cgroup has a directory in: every one of the layout for a root;
    /// below a root, those the group was created (or found) in, inherited by its children.
    hiers: Vec<Hier>,
    rel: String,
    /// Whether this is a cgroup below a root (its `hiers` are its group's).
    below_root: bool,
}

/// The root a daemon should use: its own cgroup when systemd delegated it (the daemon's
/// processes are then moved into `<own>/`[`DAEMON_LEAF`] so the root can have controllers
/// enabled), else [`DEFAULT_ROOT`].
pub fn default_root(layout: &Layout) -> Result<Cgroup, CgroupError> {
    if let Some(own) = delegated_cgroup(layout) {
        let root = Cgroup::open(layout, &own)?;
        root.evacuate(DAEMON_LEAF)?;
        return Cgroup::root(layout, &own);
    }
    Cgroup::root(layout, DEFAULT_ROOT)
}

impl Cgroup {
    /// The cgroup at `rel` (`a/b` under each mount point), created where missing; on cgroup2
    /// the controllers are enabled in every ancestor's `cgroup.subtree_control` down to it.
    pub fn root(layout: &Layout, rel: &str) -> Result<Cgroup, CgroupError> {
        let cg = Cgroup::open(layout, rel)?;
        for h in &cg.hiers {
            if h.v2 {
                v2::create_down_to(&h.mount, &cg.rel)?;
            } else {
                if h.has("memory") {
                    v1::check_use_hierarchy(&h.mount)?;
                }
                mkdir_all(&cg.dir(h))?;
            }
        }
        Ok(cg)
    }

    /// [`Cgroup::root`], but when `rel` already has its directory in every hierarchy (a
    /// daemon starts many groups under one root) nothing is read or written.
    pub fn existing_root(layout: &Layout, rel: &str) -> Result<Cgroup, CgroupError> {
        let cg = Cgroup::open(layout, rel)?;
        if !cg.rel.is_empty() && cg.hiers.iter().all(|h| cg.dir(h).is_dir()) {
            return Ok(cg);
        }
        Cgroup::root(layout, rel)
    }

    /// A handle on `rel` without creating anything.
    fn open(layout: &Layout, rel: &str) -> Result<Cgroup, CgroupError> {
        let rel = rel.trim_matches('/');
        for part in rel.split('/') {
            check_name("", part)?;
        }
        Ok(Cgroup {
            hiers: layout.hierarchies(),
            rel: rel.to_string(),
            below_root: false,
        })
    }

    /// Creates (or reuses) the child `name` in every hierarchy and applies `limits` to it. On
    /// cgroup2 the controllers are first enabled in this cgroup's `cgroup.subtree_control`, so
    /// this cgroup must hold no processes itself. On failure the new directories are removed.
    pub fn create_child(&self, name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        check_name(&self.rel, name)?;
        let mut child = self.child(name);
        if !self.below_root {
            // A group gets the v1 cpu hierarchy only when it has CPU limits; its init and
            // agents then inherit it (and are limited by it), else they stay out of it too.
            let with_v2 = self.hiers.iter().any(|h| h.v2);
            child
                .hiers
                .retain(|h| !(with_v2 && h.cpu_only()) || limits.wants_cpu());
        }
        limits.validate(&child.rel)?;
        for h in &self.hiers {
            if h.v2 {
                v2::enable_subtree(&self.dir(h))?;
            }
        }
        let mut created = Vec::new();
        let result = (|| {
            for h in &child.hiers {
                let dir = child.dir(h);
                if !dir.is_dir() {
                    mkdir(&dir)?;
                    created.push(dir);
                }
            }
            child.set_limits(limits)
        })();
        if let Err(e) = result {
            for dir in created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e);
        }
        Ok(child)
    }

    /// Where a process joins to be accounted to this cgroup without living in it where that
    /// is not allowed: on cgroup2 (no processes beside controlled children) the leaf `name`,
    /// made below this cgroup; in v1 hierarchies, which have no such rule, this cgroup itself
    /// (a directory less to make and remove). Returns the `cgroup.procs` files to write to,
    /// cgroup2 first.
    pub fn join_leaf(&self, name: &str) -> Result<Vec<PathBuf>, CgroupError> {
        check_name(&self.rel, name)?;
        let leaf = self.child(name);
        let (mut v2_files, mut v1_files) = (Vec::new(), Vec::new());
        for h in &self.hiers {
            if h.v2 {
                v2::enable_subtree(&self.dir(h))?;
                let dir = leaf.dir(h);
                if !dir.is_dir() {
                    mkdir(&dir)?;
                }
                v2_files.push(dir.join("cgroup.procs"));
            } else {
                v1_files.push(self.dir(h).join("cgroup.procs"));
            }
        }
        v2_files.extend(v1_files);
        Ok(v2_files)
    }

    /// The existing child `name`, if its directory exists.
    pub fn open_child(&self, name: &str) -> Option<Cgroup> {
        check_name(&self.rel, name).ok()?;
        let mut child = self.child(name);
        let exists = child.hiers.first().map(|h| child.dir(h))?.is_dir();
        if exists && !self.below_root {
            // A group's hierarchies are those it has a directory in (see `create_child`).
            let dirs: Vec<bool> = child.hiers.iter().map(|h| child.dir(h).is_dir()).collect();
            let mut keep = dirs.into_iter();
            child.hiers.retain(|_| keep.next().unwrap_or(false));
        }
        exists.then_some(child)
    }

    /// Names of the existing children (from the first hierarchy).
    pub fn children(&self) -> Vec<String> {
        let Some(h) = self.hiers.first() else {
            return Vec::new();
        };
        let mut names: Vec<String> = subdirs(&self.dir(h))
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    }

    /// Applies `limits` (values left `None` are not touched).
    pub fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        limits.validate(&self.rel)?;
        if limits.is_empty() {
            return Ok(());
        }
        if self.unified() {
            return v2::apply(&self.rel, &self.dir(&self.hiers[0]), limits);
        }
        // v1 (hybrid): each controller in its own hierarchy.
        let need = [
            ("memory", limits.wants_memory()),
            ("pids", limits.pids_max.is_some()),
            ("cpu", limits.wants_cpu()),
        ];
        for (controller, wanted) in need {
            if wanted && !self.hiers.iter().any(|h| !h.v2 && h.has(controller)) {
                return Err(CgroupError::ControllerMissing {
                    path: self.rel.clone(),
                    controller,
                    why: "no v1 hierarchy has it mounted".into(),
                });
            }
        }
        for h in self.hiers.iter().filter(|h| !h.v2) {
            v1::apply(&h.controllers, &self.dir(h), limits)?;
        }
        Ok(())
    }

    /// The `cgroup.procs` file of this cgroup in every hierarchy; a launcher joins the cgroup
    /// by writing `0` to each (cgroup2 first).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.hiers
            .iter()
            .map(|h| self.dir(h).join("cgroup.procs"))
            .collect()
    }

    /// The directory holding `controller`'s files (`"memory"`, `"pids"`, ...; `"cgroup2"`
    /// for the cgroup2 directory), if that controller is mounted.
    pub fn controller_dir(&self, controller: &str) -> Option<PathBuf> {
        let h = self.hiers.iter().find(|h| {
            if controller == "cgroup2" {
                h.v2
            } else if h.v2 {
                self.hiers.iter().all(|o| o.v2)
            } else {
                h.has(controller)
            }
        })?;
        Some(self.dir(h))
    }

    /// Every directory of this cgroup, one per hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.hiers.iter().map(|h| self.dir(h)).collect()
    }

    /// Moves the process (all its threads) `pid` into this cgroup in every hierarchy.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        for f in self.procs_files() {
            write_file(&f, &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process in this cgroup and its descendants, in any hierarchy, sorted.
    pub fn pids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for h in &self.hiers {
            collect_pids(&self.dir(h), &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether any process lives in this cgroup or below (cgroup2 `cgroup.events`, plus the v1
    /// directories' process lists).
    pub fn populated(&self) -> bool {
        self.hiers.iter().any(|h| {
            let dir = self.dir(h);
            if h.v2 {
                v2::populated(&dir)
            } else {
                let mut pids = Vec::new();
                collect_pids(&dir, &mut pids);
                !pids.is_empty()
            }
        })
    }

    /// Kills every process in this cgroup and below and waits up to [`KILL_WAIT`] until empty.
    pub fn kill(&self) -> Result<(), CgroupError> {
        self.kill_within(KILL_WAIT)
    }

    /// [`Cgroup::kill`] with a chosen wait. Uses `cgroup.kill` where the kernel has it (5.14+);
    /// else freezes the cgroup (cgroup2 `cgroup.freeze` or the v1 freezer), sends `SIGKILL` to
    /// every process and thaws it, until the cgroup is empty. Refuses when the calling process
    /// is inside.
    pub fn kill_within(&self, wait: Duration) -> Result<(), CgroupError> {
        let me = std::process::id();
        if self.tracked_pids().contains(&me) {
            return Err(CgroupError::ContainsSelf {
                path: self.rel.clone(),
                pid: me,
            });
        }
        let start = Instant::now();
        let v2dir = self.v2_dir();
        let kill_file = v2dir
            .as_ref()
            .map(|d| d.join("cgroup.kill"))
            .filter(|f| f.exists());
        if let (Some(f), Some(d)) = (&kill_file, &v2dir) {
            if v2::populated(d) {
                write_file(f, "1")?;
                // Woken by the kernel when the last process has left, not by polling.
                v2::wait_unpopulated(d, start + wait);
            }
        }
        let mut round = 0u32;
        loop {
            if !self.populated() {
                return Ok(());
            }
            if start.elapsed() >= wait {
                return Err(CgroupError::StillPopulated {
                    path: self.rel.clone(),
                    pids: self.pids(),
                    waited: wait,
                });
            }
            // After cgroup.kill, signal directly only processes that stay (v1-only members).
            if kill_file.is_none() || round >= 14 {
                self.freeze(true);
                for pid in self.pids() {
                    if pid != me {
                        signal_kill(pid);
                    }
                }
                self.freeze(false);
            }
            round += 1;
            // Killed processes are usually gone within a millisecond: poll fast first, then
            // back off to 10 ms.
            sleep(Duration::from_micros(100u64 << round.min(7)).min(Duration::from_millis(10)));
        }
    }

    /// This cgroup's cgroup2 directory, when a cgroup2 hierarchy is used.
    fn v2_dir(&self) -> Option<PathBuf> {
        self.hiers.iter().find(|h| h.v2).map(|h| self.dir(h))
    }

    /// The processes of this cgroup and below as the layout tracks them: the cgroup2
    /// subtree when there is one (every process is in exactly one cgroup2 cgroup, and
    /// launchers join cgroup2 first), else every v1 hierarchy.
    fn tracked_pids(&self) -> Vec<u32> {
        match self.v2_dir() {
            Some(d) => {
                let mut out = Vec::new();
                collect_pids(&d, &mut out);
                out
            }
            None => self.pids(),
        }
    }

    /// Freezes (or thaws) through cgroup2 `cgroup.freeze` or the v1 freezer; best effort.
    fn freeze(&self, frozen: bool) {
        for h in &self.hiers {
            let dir = self.dir(h);
            if h.v2 {
                let f = dir.join("cgroup.freeze");
                if f.exists() {
                    let _ = write_file(&f, if frozen { "1" } else { "0" });
                    return;
                }
            } else if h.has("freezer") {
                v1::freeze(&dir, frozen);
                return;
            }
        }
    }

    /// OOM kills in this cgroup and below (v2 `memory.events`, v1 `memory.oom_control` summed
    /// over the subtree); 0 where the memory controller is absent.
    pub fn oom_kills(&self) -> u64 {
        if let Some(h) = self.hiers.iter().find(|h| !h.v2 && h.has("memory")) {
            return v1::oom_kills(&self.dir(h));
        }
        if self.unified() {
            return v2::oom_kills(&self.dir(&self.hiers[0]));
        }
        0
    }

    /// The memory this cgroup and below use, in bytes: one file read (`memory.current`, or
    /// v1 `memory.usage_in_bytes`), for the per-agent rows that show nothing else.
    pub fn memory_usage(&self) -> Option<u64> {
        if self.unified() {
            return read_u64(&self.dir(&self.hiers[0]).join("memory.current"));
        }
        let h = self
            .hiers
            .iter()
            .find(|h| !h.v2 && h.controllers.iter().any(|c| c == "memory"))?;
        read_u64(&self.dir(h).join("memory.usage_in_bytes"))
    }

    /// Sets which devices this cgroup's processes may open or make: v1 `devices.deny` and
    /// `devices.allow` where the host has the v1 `devices` hierarchy, else a
    /// `BPF_PROG_TYPE_CGROUP_DEVICE` program on the cgroup2 directory (replacing the one
    /// set before). Children inherit it (v1 copies the list; cgroup2 runs every ancestor's
    /// program).
    pub fn set_devices(&self, rules: &[agent_devices::DeviceRule]) -> Result<(), CgroupError> {
        let wrap = |source| CgroupError::Devices {
            path: self.rel.clone(),
            source: Box::new(source),
        };
        if let Some(h) = self
            .hiers
            .iter()
            .find(|h| !h.v2 && h.controllers.iter().any(|c| c == "devices"))
        {
            return agent_devices::apply_v1(&self.dir(h), rules).map_err(wrap);
        }
        match self.v2_dir() {
            Some(dir) => agent_devices::apply_v2(&dir, rules).map_err(wrap),
            None => Err(CgroupError::ControllerMissing {
                path: self.rel.clone(),
                controller: "devices",
                why: "neither a v1 devices hierarchy nor cgroup2 is mounted".into(),
            }),
        }
    }

    /// Memory, CPU and process figures for this cgroup and below.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        if self.unified() {
            v2::stats(&self.dir(&self.hiers[0]), &mut s);
            return s;
        }
        for h in &self.hiers {
            if !h.v2 {
                v1::stats(&h.controllers, &self.dir(h), &mut s);
            }
        }
        if s.cpu_usage_seconds.is_none() {
            if let Some(h) = self.hiers.iter().find(|h| h.v2) {
                s.cpu_usage_seconds = v2::cpu_seconds(&self.dir(h));
            }
        }
        s
    }

    /// Removes this cgroup and its descendants in every hierarchy, children first, after killing
    /// whatever still runs there (bounded by [`KILL_WAIT`]). Keeps going after a failure and
    /// reports the first directory that could not be removed.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first: Option<CgroupError> = None;
        // With cgroup2, its `populated` flag covers the subtree: one read instead of a walk
        // of every hierarchy. A process left only in a v1 directory (moved in cgroup2 by
        // someone else) makes that rmdir fail; it is killed below and the rmdir retried.
        let populated = match self.v2_dir() {
            Some(d) => v2::populated(&d),
            None => self.populated(),
        };
        if populated {
            if let Err(e) = self.kill() {
                first = Some(e);
            }
        }
        let mut failed = Vec::new();
        for h in &self.hiers {
            if let Err(e) = remove_tree(&self.dir(h), BUSY_RETRY) {
                failed.push(h);
                first.get_or_insert(e);
            }
        }
        if !failed.is_empty() && first.is_some() && self.populated() {
            first = self.kill().err();
            for h in failed {
                if let Err(e) = remove_tree(&self.dir(h), KILL_WAIT) {
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            // A kill that timed out but whose directories went away anyway is not a failure.
            Some(CgroupError::StillPopulated { .. }) if !self.exists() => Ok(()),
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether any directory of this cgroup still exists.
    pub fn exists(&self) -> bool {
        self.hiers.iter().any(|h| self.dir(h).exists())
    }

    /// The path relative to the mount points, for messages (`agent-supervisor.slice/web/api`).
    pub fn path(&self) -> String {
        self.rel.clone()
    }

    /// Moves every process of this cgroup into its child `leaf` (created), so that this cgroup
    /// can enable controllers for its children (cgroup2 no-internal-process rule).
    pub fn evacuate(&self, leaf: &str) -> Result<Cgroup, CgroupError> {
        check_name(&self.rel, leaf)?;
        let child = self.child(leaf);
        for h in &self.hiers {
            let dir = child.dir(h);
            if !dir.is_dir() {
                mkdir(&dir)?;
            }
            for pid in read_pids(&self.dir(h).join("cgroup.procs")) {
                match write_file(&dir.join("cgroup.procs"), &pid.to_string()) {
                    // The process exited meanwhile.
                    Err(CgroupError::Io { source, .. })
                        if source.raw_os_error() == Some(libc::ESRCH) => {}
                    other => other?,
                }
            }
        }
        Ok(child)
    }

    /// One cgroup2 hierarchy holds everything.
    fn unified(&self) -> bool {
        !self.hiers.is_empty() && self.hiers.iter().all(|h| h.v2)
    }

    fn child(&self, name: &str) -> Cgroup {
        Cgroup {
            below_root: true,
            hiers: self.hiers.clone(),
            rel: if self.rel.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", self.rel)
            },
        }
    }

    fn dir(&self, h: &Hier) -> PathBuf {
        if self.rel.is_empty() {
            h.mount.clone()
        } else {
            h.mount.join(&self.rel)
        }
    }
}

fn check_name(parent: &str, name: &str) -> Result<(), CgroupError> {
    let why = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." {
        "not a directory name"
    } else if name.contains(['/', '\0', '\n']) {
        "contains '/', NUL or a newline"
    } else if name.starts_with("cgroup.") {
        "names starting with \"cgroup.\" are reserved"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(CgroupError::InvalidName {
        path: parent.to_string(),
        name: name.to_string(),
        why,
    })
}
