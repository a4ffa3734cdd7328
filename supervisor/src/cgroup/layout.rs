//! Where the cgroup hierarchies are mounted: unified cgroup2, or hybrid/legacy v1 (+cgroup2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{read_words, CgroupError, V1_USED};

/// Where the cgroup hierarchies are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One cgroup2 hierarchy holding every controller.
    Unified { mount: PathBuf },
    /// v1 controllers (name → mount point; co-mounted controllers share a mount point) and,
    /// when mounted, a cgroup2 hierarchy used to track and kill processes.
    Hybrid {
        unified: Option<PathBuf>,
        v1: BTreeMap<String, PathBuf>,
    },
}

impl Layout {
    /// Reads `/proc/self/mountinfo`.
    pub fn detect() -> Result<Layout, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|e| CgroupError::Detect {
            path: path.into(),
            reason: e.to_string(),
        })?;
        Layout::from_mountinfo(&text).ok_or_else(|| CgroupError::Detect {
            path: path.into(),
            reason: "no cgroup or cgroup2 file system is mounted".into(),
        })
    }

    /// The layout described by the text of a `mountinfo` file; `None` without any cgroup mount.
    /// cgroup2 at `/sys/fs/cgroup` is unified; otherwise v1 mounts make it hybrid (cgroup2
    /// preferably at `/sys/fs/cgroup/unified`); cgroup2 alone elsewhere is unified.
    pub fn from_mountinfo(text: &str) -> Option<Layout> {
        let mut v2_mounts: Vec<PathBuf> = Vec::new();
        let mut v1: BTreeMap<String, PathBuf> = BTreeMap::new();
        for line in text.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            let (Some(mountpoint), Some(fstype)) = (fields.get(4), rfields.first()) else {
                continue;
            };
            let mountpoint = PathBuf::from(unescape_mountinfo(mountpoint));
            match *fstype {
                "cgroup2" => v2_mounts.push(mountpoint),
                "cgroup" => {
                    let options = rfields.get(2).copied().unwrap_or("");
                    for opt in options.split(',') {
                        if V1_USED.contains(&opt) || is_v1_controller(opt) {
                            v1.entry(opt.to_string())
                                .or_insert_with(|| mountpoint.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let sys = Path::new("/sys/fs/cgroup");
        if v2_mounts.iter().any(|m| m == sys) {
            return Some(Layout::Unified { mount: sys.into() });
        }
        if !v1.is_empty() {
            let unified = v2_mounts
                .iter()
                .find(|m| m.as_path() == sys.join("unified"))
                .or_else(|| v2_mounts.first())
                .cloned();
            return Some(Layout::Hybrid { unified, v1 });
        }
        v2_mounts
            .into_iter()
            .next()
            .map(|mount| Layout::Unified { mount })
    }

    /// One line for logs and `check`: which hierarchies do what.
    pub fn describe(&self) -> String {
        match self {
            Layout::Unified { mount } => {
                let ctrls = read_words(&mount.join("cgroup.controllers")).join(" ");
                format!(
                    "unified cgroup v2 at {} (controllers: {})",
                    mount.display(),
                    if ctrls.is_empty() { "none" } else { &ctrls }
                )
            }
            Layout::Hybrid { unified, v1 } => {
                let mut by_mount: BTreeMap<&PathBuf, Vec<&str>> = BTreeMap::new();
                let mut unused: Vec<&str> = Vec::new();
                for (c, m) in v1 {
                    if V1_USED.contains(&c.as_str()) {
                        by_mount.entry(m).or_default().push(c);
                    } else {
                        unused.push(c);
                    }
                }
                let mut v1s: Vec<String> = by_mount
                    .iter()
                    .map(|(m, cs)| format!("{} at {}", cs.join(","), m.display()))
                    .collect();
                if !unused.is_empty() {
                    v1s.push(format!("not used: {}", unused.join(",")));
                }
                match unified {
                    Some(u) => format!(
                        "hybrid: cgroup2 at {} tracks and kills processes; v1 {}",
                        u.display(),
                        v1s.join("; ")
                    ),
                    None => format!("legacy cgroup v1 only: {}", v1s.join("; ")),
                }
            }
        }
    }

    /// The hierarchies a cgroup has a directory in: cgroup2 first, then each v1 mount used.
    pub(super) fn hierarchies(&self) -> Vec<Hier> {
        match self {
            Layout::Unified { mount } => vec![Hier {
                mount: mount.clone(),
                v2: true,
                controllers: Vec::new(),
            }],
            Layout::Hybrid { unified, v1 } => {
                let mut out: Vec<Hier> = unified
                    .iter()
                    .map(|m| Hier {
                        mount: m.clone(),
                        v2: true,
                        controllers: Vec::new(),
                    })
                    .collect();
                for (c, m) in v1 {
                    if !V1_USED.contains(&c.as_str()) {
                        continue;
                    }
                    match out.iter_mut().find(|h| !h.v2 && &h.mount == m) {
                        Some(h) => h.controllers.push(c.clone()),
                        None => out.push(Hier {
                            mount: m.clone(),
                            v2: false,
                            controllers: vec![c.clone()],
                        }),
                    }
                }
                // With cgroup2 tracking processes, a v1 hierarchy holding only `cpuacct`
                // and/or `freezer` adds nothing: CPU time comes from cgroup2's `cpu.stat`
                // (in every cgroup2 cgroup) and a kill is `cgroup.kill` (5.14+; it also
                // freezes through `cgroup.freeze`). Skipping them saves a mkdir, a
                // `cgroup.procs` write and an rmdir per hierarchy and cgroup.
                if unified.is_some() && cgroup_kill_supported() {
                    out.retain(|h| {
                        h.v2 || h
                            .controllers
                            .iter()
                            .any(|c| !matches!(c.as_str(), "cpuacct" | "freezer"))
                    });
                }
                out
            }
        }
    }
}

/// Whether the running kernel has cgroup2's `cgroup.kill` (Linux 5.14 and later), from
/// `/proc/sys/kernel/osrelease`; read once.
pub(super) fn cgroup_kill_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| kernel_at_least(&r, (5, 14)))
            .unwrap_or(false)
    })
}

/// Whether a kernel release string (`6.1.0-18-amd64`) is at least `(major, minor)`.
pub(super) fn kernel_at_least(release: &str, want: (u32, u32)) -> Option<bool> {
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major, minor) >= want)
}

fn is_v1_controller(opt: &str) -> bool {
    matches!(
        opt,
        "cpuset" | "devices" | "blkio" | "net_cls" | "net_prio" | "perf_event" | "hugetlb" | "rdma"
    )
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(super) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One mounted hierarchy: cgroup2, or a v1 mount with the controllers mounted there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hier {
    pub(super) mount: PathBuf,
    pub(super) v2: bool,
    pub(super) controllers: Vec<String>,
}

impl Hier {
    pub(super) fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// A v1 hierarchy holding `cpu` and nothing this module needs besides (`cpuacct` at
    /// most): needed for CPU limits only, as cgroup2 tracks processes and their CPU time.
    pub(super) fn cpu_only(&self) -> bool {
        !self.v2
            && self.has("cpu")
            && self
                .controllers
                .iter()
                .all(|c| matches!(c.as_str(), "cpu" | "cpuacct"))
    }
}
