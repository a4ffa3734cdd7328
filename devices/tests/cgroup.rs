//! `agent_devices` against real device cgroups, as root: fake NVIDIA nodes (char 195) under
//! `/dev`, a group granted nvidia0 and nvidiactl, and a child process in the group that may
//! open those and /dev/null but gets EPERM for nvidia1 and a block device. On this host's v1
//! `devices` hierarchy, on its cgroup2 mount (hybrid: the eBPF program decides there too),
//! and through the QEMU harness on a unified cgroup v2 host (Debian's kernel), where applying
//! a second list replaces the program.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use agent_devices::{
    apply_v1, apply_v2, attached_programs, group_rules, Access, DeviceRule, DevicesError,
};
use agent_supervisor_tests::vm::{self, shell_quote, VmOptions};

/// Set in the VM by [`vm_unified_v2_host`] for the inner test it runs there.
const IN_VM: &str = "AS_IN_VM";

/// `true` when running as root; otherwise prints `SKIP` (or panics when `CI` is set).
fn need_root(test: &str) -> bool {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    if euid.as_deref() == Some("0") {
        return true;
    }
    let reason = "needs root to create cgroups and device nodes";
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
    false
}

/// A fresh directory under `/dev` (devtmpfs: device nodes work there) with fake nodes,
/// removed when the test ends, even by panic.
struct Nodes {
    dir: PathBuf,
}

impl Nodes {
    fn new(tag: &str) -> Nodes {
        let dir = PathBuf::from(format!(
            "/dev/agent-devices-test-{}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let nodes = Nodes { dir };
        for (name, minor) in [("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255)] {
            let st = Command::new("mknod")
                .arg(nodes.dir.join(name))
                .args(["c", "195", &minor.to_string()])
                .status()
                .expect("run mknod");
            assert!(st.success(), "mknod {name}");
        }
        nodes
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup of {} failed: {e}", self.dir.display());
        }
    }
}

/// A cgroup directory removed when the test ends (its processes have exited by then).
struct Group {
    dir: PathBuf,
}

impl Group {
    fn new(parent: &Path, tag: &str) -> Group {
        let dir = parent.join(format!("agent-devices-test-{}-{tag}", std::process::id()));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Group { dir }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The child may still be leaving the cgroup for a moment after it was reaped.
        for _ in 0..50 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("cleanup of {} failed", self.dir.display());
    }
}

/// The host's root disk's `major:minor` from mountinfo, or sda's when it has none (9p).
fn root_disk() -> (u32, u32) {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|mm| mm.split_once(':'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .filter(|&(major, _)| major != 0)
        .unwrap_or((8, 0))
}

/// Runs a child that joins the cgroup (writes its pid to `procs`), opens each path read-write
/// and mknods then opens a block node `blk`; returns path => "OK" or the errno's name.
fn probe(procs: &Path, paths: &[String], blk: &str) -> BTreeMap<String, String> {
    let (major, minor) = root_disk();
    let script = r#"
import errno, os, stat, sys
procs, blk, major, minor = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(procs, "w") as f:
    f.write(str(os.getpid()))
def res(fn):
    try:
        fn()
        return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def open_rw(p):
    os.close(os.open(p, os.O_RDWR))
for p in sys.argv[5:]:
    print(p, res(lambda: open_rw(p)))
print("mknod", res(lambda: os.mknod(blk, 0o600 | stat.S_IFBLK, os.makedev(major, minor))))
print(blk, res(lambda: open_rw(blk)))
"#;
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(procs)
        .arg(blk)
        .arg(major.to_string())
        .arg(minor.to_string())
        .args(paths)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("probe ({}:{} as the block device):\n{stdout}", major, minor);
    stdout
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect()
}

/// Passed the device cgroup: anything but EPERM (a node with no driver gives ENXIO).
fn passed(results: &BTreeMap<String, String>, p: &str) -> bool {
    let r = results
        .get(p)
        .unwrap_or_else(|| panic!("no result for {p}: {results:?}"));
    r != "EPERM"
}

fn gpu_grants() -> Vec<DeviceRule> {
    vec![
        DeviceRule::allow_char(195, Some(0), Access::RW),
        DeviceRule::allow_char(195, Some(255), Access::RW),
    ]
}

/// The checks for a group granted nvidia0 and nvidiactl: `procs` is its `cgroup.procs`.
fn check_gpu_grants(nodes: &Nodes, procs: &Path) {
    let (n0, n1, ctl) = (
        nodes.path("nvidia0"),
        nodes.path("nvidia1"),
        nodes.path("nvidiactl"),
    );
    let blk = nodes.path("blk");
    let r = probe(
        procs,
        &[n0.clone(), n1.clone(), ctl.clone(), "/dev/null".into()],
        &blk,
    );
    assert!(passed(&r, &n0), "nvidia0 is granted: {r:?}");
    assert!(passed(&r, &ctl), "nvidiactl is granted: {r:?}");
    assert_eq!(r[&n1], "EPERM", "nvidia1 is not granted: {r:?}");
    assert_eq!(r["/dev/null"], "OK", "{r:?}");
    assert_eq!(
        r["mknod"], "OK",
        "mknod of any node is allowed (b *:* m): {r:?}"
    );
    assert_eq!(r[&blk], "EPERM", "a block device is not granted: {r:?}");
}

#[test]
fn host_v1_gpu_grants() {
    let test = "host_v1_gpu_grants";
    if !need_root(test) {
        return;
    }
    let v1 = Path::new("/sys/fs/cgroup/devices");
    if !v1.join("devices.allow").exists() {
        eprintln!(
            "SKIP {test}: no cgroup v1 devices hierarchy at {}",
            v1.display()
        );
        return;
    }
    let nodes = Nodes::new("v1");
    let group = Group::new(v1, "v1");
    apply_v1(&group.dir, &group_rules(&gpu_grants())).expect("apply_v1");
    let list = fs::read_to_string(group.dir.join("devices.list")).expect("devices.list");
    println!("devices.list:\n{list}");
    assert!(list.contains("c 195:0 rw\n") && list.contains("c 195:255 rw\n"));
    check_gpu_grants(&nodes, &group.dir.join("cgroup.procs"));
    // Applying again (the group has no processes left) gives the same list.
    apply_v1(&group.dir, &group_rules(&gpu_grants())).expect("apply_v1 again");
    assert_eq!(
        fs::read_to_string(group.dir.join("devices.list")).expect("devices.list"),
        list
    );
}

/// Errors name the file or directory and the step.
#[test]
fn errors_name_the_path_and_step() {
    let dir = std::env::temp_dir().join(format!("agent-devices-errors-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("mkdir");
    let e = apply_v1(&dir, &group_rules(&[])).expect_err("not a devices cgroup");
    assert!(matches!(e, DevicesError::Write { .. }), "{e:?}");
    let s = e.to_string();
    assert!(
        s.contains(&format!("{}/devices.deny", dir.display())),
        "{s}"
    );
    assert!(!dir.join("devices.deny").exists(), "no file was created");
    let missing = dir.join("missing");
    let e = apply_v2(&missing, &group_rules(&[])).expect_err("no such directory");
    let s = e.to_string();
    assert!(
        s.contains(&missing.display().to_string()) && s.contains("open"),
        "{s}"
    );
    fs::remove_dir_all(&dir).expect("rm");
}

/// The cgroup2 scenario below `parent`: apply, probe, apply another list, probe, one program.
fn v2_scenario(parent: &Path, tag: &str) {
    let nodes = Nodes::new(tag);
    let group = Group::new(parent, tag);
    apply_v2(&group.dir, &group_rules(&gpu_grants())).expect("apply_v2");
    let first = attached_programs(&group.dir).expect("query");
    assert_eq!(first.len(), 1, "one program: {first:?}");
    let procs = group.dir.join("cgroup.procs");
    check_gpu_grants(&nodes, &procs);

    // A second list: nvidia1 only. It replaces the first program.
    let second = vec![DeviceRule::allow_char(195, Some(1), Access::RW)];
    apply_v2(&group.dir, &group_rules(&second)).expect("apply_v2 again");
    let now = attached_programs(&group.dir).expect("query");
    assert_eq!(
        now.len(),
        1,
        "exactly one program after the second apply: {now:?}"
    );
    assert_ne!(now, first, "the program was replaced");
    let (n0, n1, ctl) = (
        nodes.path("nvidia0"),
        nodes.path("nvidia1"),
        nodes.path("nvidiactl"),
    );
    let r = probe(
        &procs,
        &[n0.clone(), n1.clone(), ctl.clone()],
        &nodes.path("blk2"),
    );
    assert_eq!(r[&n0], "EPERM", "{r:?}");
    assert_eq!(r[&ctl], "EPERM", "{r:?}");
    assert!(passed(&r, &n1), "nvidia1 is granted now: {r:?}");

    // Applying the same list a third time still leaves one.
    apply_v2(&group.dir, &group_rules(&second)).expect("apply_v2 a third time");
    assert_eq!(attached_programs(&group.dir).expect("query").len(), 1);
}

/// On a hybrid host the cgroup2 mount has no controllers, but device programs attached there
/// are checked for every open as well (the v1 group of the child is the root, which allows all).
#[test]
fn host_v2_on_hybrid_unified() {
    let test = "host_v2_on_hybrid_unified";
    if !need_root(test) {
        return;
    }
    let unified = Path::new("/sys/fs/cgroup/unified");
    if !unified.join("cgroup.procs").exists() {
        eprintln!("SKIP {test}: no cgroup2 mount at {}", unified.display());
        return;
    }
    v2_scenario(unified, "v2host");
}

/// Runs [`vm_inner_v2`] in a VM whose `/sys/fs/cgroup` is a full cgroup2.
#[test]
fn vm_unified_v2_host() {
    let test = "vm_unified_v2_host";
    if !vm::require_or_skip(test) {
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let exe = shell_quote(&exe.to_string_lossy());
    let script = format!(
        "uname -r; cat /sys/fs/cgroup/cgroup.controllers\n\
         {exe} --exact vm_inner_v2 --nocapture --test-threads=1 || exit $?\n\
         echo ALL-INNER-OK\n"
    );
    let opts = VmOptions {
        timeout: Duration::from_secs(240),
        env: vec![
            (IN_VM.into(), "1".into()),
            ("RUST_BACKTRACE".into(), "1".into()),
        ],
        ..VmOptions::default()
    };
    let run = vm::run(&script, &opts).expect("the VM runs the inner test");
    println!(
        "VM: boot {:?}, total {:?}, exit {}\n{}",
        run.boot_time, run.elapsed, run.exit_code, run.stdout
    );
    assert_eq!(run.exit_code, 0, "console:\n{}", run.console);
    assert!(run.stdout.contains("ALL-INNER-OK"));
    assert_eq!(run.stdout.matches("test result: ok. 1 passed").count(), 1);
}

/// In the VM only: the cgroup2 scenario on a unified host.
#[test]
fn vm_inner_v2() {
    if std::env::var_os(IN_VM).is_none() {
        println!("vm_inner_v2: runs inside the VM only (see vm_unified_v2_host)");
        return;
    }
    let root = Path::new("/sys/fs/cgroup");
    assert!(
        root.join("cgroup.subtree_control").exists(),
        "cgroup2 at /sys/fs/cgroup"
    );
    v2_scenario(root, "vm");
}
