//! Unit tests on plain directory trees standing in for cgroup mounts: which files get which
//! values. Real cgroups (hybrid host, and unified in a VM) are tested in `tests/cgroup.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A temporary directory removed on drop.
struct Tree(PathBuf);

impl Tree {
    fn new() -> Tree {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "as-cgroup-fake-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the fake tree");
        Tree(dir)
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let d = self.0.join(rel);
        fs::create_dir_all(&d).expect("mkdir in the fake tree");
        d
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

const HYBRID_MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
30 25 0:28 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
31 25 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
32 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

#[test]
fn kernel_release_comparison() {
    assert_eq!(
        layout::kernel_at_least("6.1.0-18-amd64", (5, 14)),
        Some(true)
    );
    assert_eq!(layout::kernel_at_least("5.14.0", (5, 14)), Some(true));
    assert_eq!(layout::kernel_at_least("5.10.209-1", (5, 14)), Some(false));
    assert_eq!(layout::kernel_at_least("4.19.0", (5, 14)), Some(false));
    assert_eq!(layout::kernel_at_least("garbage", (5, 14)), None);
}

#[test]
fn hybrid_with_cgroup2_skips_cpuacct_and_freezer_only_hierarchies() {
    let t = Tree::new();
    let mut v1 = BTreeMap::new();
    for c in ["memory", "pids", "cpu", "cpuacct", "freezer"] {
        v1.insert(c.to_string(), t.mkdir(c));
    }
    let layout = Layout::Hybrid {
        unified: Some(t.mkdir("unified")),
        v1: v1.clone(),
    };
    let used: Vec<Vec<String>> = layout
        .hierarchies()
        .iter()
        .map(|h| h.controllers.clone())
        .collect();
    if layout::cgroup_kill_supported() {
        assert_eq!(used, [vec![], vec!["cpu"], vec!["memory"], vec!["pids"]]);
    } else {
        assert_eq!(used.len(), 6, "{used:?}");
    }
    // Without cgroup2 (legacy v1), cpuacct and freezer are what tracks and kills.
    let legacy = Layout::Hybrid { unified: None, v1 };
    assert_eq!(legacy.hierarchies().len(), 5);
}

#[test]
fn hybrid_groups_join_the_v1_cpu_hierarchy_only_with_cpu_limits() {
    let t = Tree::new();
    let mut v1 = BTreeMap::new();
    for c in ["memory", "pids", "cpu"] {
        v1.insert(c.to_string(), t.mkdir(c));
    }
    let layout = Layout::Hybrid {
        unified: Some(t.mkdir("unified")),
        v1,
    };
    let root = Cgroup::root(&layout, "as.slice").expect("root");
    assert_eq!(root.dirs().len(), 4);

    let plain = root
        .create_child("plain", &Limits::default())
        .expect("group");
    let agent = plain.create_child("a", &Limits::default()).expect("agent");
    assert!(!t.0.join("cpu/as.slice/plain").exists());
    assert!(!t.0.join("cpu/as.slice/plain/a").exists());
    assert!(t.0.join("memory/as.slice/plain/a").is_dir());
    assert_eq!(agent.dirs().len(), 3);
    assert_eq!(agent.procs_files().len(), 3);
    assert_eq!(plain.controller_dir("cpu"), None);

    let limited = Limits {
        cpu_weight: Some(50),
        ..Limits::default()
    };
    let busy = root.create_child("busy", &limited).expect("group");
    let worker = busy.create_child("w", &Limits::default()).expect("agent");
    assert_eq!(read(&t.0.join("cpu/as.slice/busy/cpu.shares")), "512");
    assert!(t.0.join("cpu/as.slice/busy/w").is_dir());
    assert_eq!(worker.dirs().len(), 4);

    // Found again from the root (a new daemon adopting the groups): the same hierarchies.
    let found = root.open_child("plain").expect("plain exists");
    assert_eq!(found.dirs(), plain.dirs());
    assert_eq!(
        found.open_child("a").expect("agent exists").dirs(),
        agent.dirs()
    );
    assert_eq!(root.open_child("busy").expect("busy").dirs(), busy.dirs());
    // (Limit files make `busy` a non-empty directory in a plain tree; `plain` has none.)
    found.remove().expect("remove plain");
    assert!(!plain.exists() && !agent.exists());
}

#[test]
fn detects_hybrid_unified_and_legacy() {
    let Some(Layout::Hybrid { unified, v1 }) = Layout::from_mountinfo(HYBRID_MOUNTINFO) else {
        panic!("expected hybrid");
    };
    assert_eq!(unified, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    assert_eq!(v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
    assert_eq!(v1["devices"], PathBuf::from("/sys/fs/cgroup/devices"));
    assert!(!v1.contains_key("name=systemd"));

    let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(
        Layout::from_mountinfo(unified),
        Some(Layout::Unified {
            mount: "/sys/fs/cgroup".into()
        })
    );

    // Co-mounted cpu,cpuacct share one hierarchy; no cgroup2 at all is legacy.
    let legacy = "26 25 0:24 / /sys/fs/cgroup/cpu\\054cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
    let layout = Layout::from_mountinfo(legacy).expect("legacy layout");
    let Layout::Hybrid { unified: None, v1 } = &layout else {
        panic!("expected legacy v1, got {layout:?}");
    };
    assert_eq!(v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(layout.hierarchies().len(), 1);
    assert_eq!(layout.hierarchies()[0].controllers, ["cpu", "cpuacct"]);

    assert_eq!(
        Layout::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda1 rw\n"),
        None
    );
}

#[test]
fn unified_tree_gets_controllers_and_v2_limits() {
    let t = Tree::new();
    fs::write(
        t.0.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .expect("write");
    fs::write(t.0.join("cgroup.subtree_control"), "cpuset\n").expect("write");
    let layout = Layout::Unified { mount: t.0.clone() };
    let root = Cgroup::root(&layout, "as-test.slice").expect("root");
    assert_eq!(root.path(), "as-test.slice");
    assert_eq!(
        read(&t.0.join("cgroup.subtree_control")),
        "+memory +pids +cpu +io"
    );
    let limits = Limits {
        memory_max: Some(64 << 20),
        memory_high: Some(48 << 20),
        memory_swap_max: Some(0),
        cpu_max: Some(1.5),
        cpu_weight: Some(200),
        pids_max: Some(32),
    };
    let g = root.create_child("g", &limits).expect("group");
    let d = t.0.join("as-test.slice/g");
    assert_eq!(read(&d.join("memory.max")), "67108864");
    assert_eq!(read(&d.join("memory.high")), "50331648");
    assert_eq!(read(&d.join("memory.swap.max")), "0");
    assert_eq!(read(&d.join("pids.max")), "32");
    assert_eq!(read(&d.join("cpu.max")), "150000 100000");
    assert_eq!(read(&d.join("cpu.weight")), "200");
    assert_eq!(g.procs_files(), vec![d.join("cgroup.procs")]);
    assert_eq!(g.controller_dir("memory"), Some(d.clone()));

    fs::write(
        d.join("memory.events"),
        "low 0\nhigh 3\nmax 9\noom 2\noom_kill 2\n",
    )
    .expect("w");
    fs::write(d.join("memory.current"), "1234\n").expect("w");
    fs::write(d.join("cpu.stat"), "usage_usec 2500000\nuser_usec 1\n").expect("w");
    assert_eq!(g.oom_kills(), 2);
    let s = g.stats();
    assert_eq!(s.memory_usage, Some(1234));
    assert_eq!(s.memory_limit, Some(64 << 20));
    assert_eq!(s.cpu_usage_seconds, Some(2.5));
    assert_eq!(s.pids_current, None);
}

#[test]
fn hybrid_tree_gets_v1_limits_and_tracks_through_cgroup2() {
    let t = Tree::new();
    let mut v1 = BTreeMap::new();
    for c in ["memory", "pids", "cpuacct", "freezer"] {
        v1.insert(c.to_string(), t.mkdir(c));
    }
    v1.insert("cpu".to_string(), t.0.join("cpuacct"));
    v1.insert("devices".to_string(), t.mkdir("devices"));
    let layout = Layout::Hybrid {
        unified: Some(t.mkdir("unified")),
        v1,
    };
    let root = Cgroup::root(&layout, "as.slice").expect("root");
    // cgroup2 first, then memory, pids, cpu+cpuacct (cpuacct stays: co-mounted with cpu);
    // freezer only on kernels without cgroup.kill; devices for the groups' device lists.
    let dirs = root.dirs();
    assert_eq!(dirs[0], t.0.join("unified/as.slice"));
    let with_freezer = !layout::cgroup_kill_supported();
    assert_eq!(dirs.len(), if with_freezer { 6 } else { 5 });
    assert_eq!(t.0.join("freezer/as.slice").exists(), with_freezer);
    assert!(t.0.join("devices/as.slice").exists());

    let limits = Limits {
        memory_max: Some(64 << 20),
        memory_high: Some(32 << 20),
        memory_swap_max: Some(0),
        cpu_max: Some(0.005),
        cpu_weight: Some(50),
        pids_max: Some(32),
    };
    let g = root.create_child("g", &limits).expect("group");
    let mem = g.controller_dir("memory").expect("memory dir");
    assert_eq!(mem, t.0.join("memory/as.slice/g"));
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(&mem.join("memory.soft_limit_in_bytes")), "33554432");
    let pids = g.controller_dir("pids").expect("pids dir");
    assert_eq!(read(&pids.join("pids.max")), "32");
    let cpu = g.controller_dir("cpu").expect("cpu dir");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "1000"); // the kernel's minimum
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.shares")), "512");
    assert!(!t.0.join("unified/as.slice/g/memory.max").exists());
    assert_eq!(
        g.controller_dir("cgroup2"),
        Some(t.0.join("unified/as.slice/g"))
    );

    // v1 counts an OOM kill in the victim's cgroup only: the group sums its agents.
    let a = g.create_child("a", &Limits::default()).expect("agent");
    let b = g.create_child("b", &Limits::default()).expect("agent");
    for (cg, n) in [(&a, 2), (&b, 1)] {
        let d = cg.controller_dir("memory").expect("memory dir");
        fs::write(
            d.join("memory.oom_control"),
            format!("oom_kill_disable 0\noom_kill {n}\n"),
        )
        .expect("w");
    }
    assert_eq!(g.oom_kills(), 3);
    assert_eq!(a.oom_kills(), 2);
    assert_eq!(g.children(), ["a", "b"]);
    assert!(g.open_child("a").is_some());
    assert!(g.open_child("zz").is_none());

    fs::write(t.0.join("unified/as.slice/g/a/cgroup.procs"), "41\n42\n").expect("w");
    fs::write(t.0.join("pids/as.slice/g/b/cgroup.procs"), "43\n").expect("w");
    assert_eq!(g.pids(), [41, 42, 43]);
}

#[test]
fn remove_names_the_directory_that_stays() {
    let t = Tree::new();
    let layout = Layout::Unified { mount: t.0.clone() };
    let root = Cgroup::root(&layout, "as.slice").expect("root");
    let g = root.create_child("g", &Limits::default()).expect("group");
    // A plain file makes the directory non-empty, as processes make a cgroup busy.
    fs::write(t.0.join("as.slice/g/stray"), "x").expect("w");
    let err = root
        .remove()
        .expect_err("cannot remove a non-empty directory");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}", t.0.join("as.slice/g").display())),
        "{msg}"
    );
    fs::remove_file(t.0.join("as.slice/g/stray")).expect("rm");
    root.remove().expect("remove");
    assert!(!g.exists());
    assert!(!root.exists());
}

#[test]
fn rejects_bad_names_and_limits() {
    let t = Tree::new();
    let layout = Layout::Unified { mount: t.0.clone() };
    let root = Cgroup::root(&layout, "as.slice").expect("root");
    for bad in ["", "..", "a/b", "cgroup.procs"] {
        let e = root.create_child(bad, &Limits::default()).expect_err(bad);
        assert!(e.to_string().contains("as.slice"), "{e}");
    }
    let e = root
        .create_child(
            "g",
            &Limits {
                cpu_weight: Some(0),
                ..Limits::default()
            },
        )
        .expect_err("weight 0");
    assert_eq!(
        e.to_string(),
        "invalid limit for cgroup as.slice/g: cpu_weight must be 1-10000, got 0"
    );
    assert!(!t.0.join("as.slice/g").exists());
}

#[test]
fn limits_from_resources_default_swap_to_zero() {
    use agent_config::model::Resources;
    use agent_config::units::{ByteSize, Cpus};
    let r = Resources {
        memory: Some(ByteSize(1 << 30)),
        memory_high: None,
        memory_swap: None,
        cpus: Some(Cpus(2.0)),
        cpu_weight: Some(300),
        pids: Some(100),
    };
    let l = Limits::from(&r);
    assert_eq!(l.memory_max, Some(1 << 30));
    assert_eq!(l.memory_swap_max, Some(0));
    assert_eq!(l.cpu_max, Some(2.0));
    assert_eq!(l.cpu_weight, Some(300));
    assert_eq!(l.pids_max, Some(100));
    let r = Resources {
        memory: None,
        memory_high: None,
        memory_swap: None,
        cpus: None,
        cpu_weight: None,
        pids: None,
    };
    assert_eq!(Limits::from(&r), Limits::default());
    assert_eq!(v1::cpu_shares(100), 1024);
    assert_eq!(v1::cpu_shares(10_000), 102_400);
    assert_eq!(v1::cpu_shares(1), 10);
}
