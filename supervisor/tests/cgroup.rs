//! `agent_supervisor::cgroup` against real cgroups, as root: limits land in the kernel's files, a
//! memory hog is OOM-killed and counted while a sibling group is untouched, `pids.max` stops a
//! fork bomb, `kill` empties a cgroup and `remove` leaves no directory in any hierarchy. Run on
//! this host's layout (hybrid here) and, through the QEMU harness, on a unified cgroup v2 host.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use agent_supervisor::cgroup::{self, Cgroup, Layout, Limits};
use agent_supervisor_tests::vm::{self, shell_quote, VmOptions};

/// The tests of this file run one at a time: the OOM scenario in the emulated VM must not
/// compete for the two cores with the host's own OOM scenario (under TCG the VM's reclaim
/// then crawls for minutes before the OOM killer acts).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Set in the VM by [`vm_unified_v2_host`] for the inner tests it runs there.
const IN_VM: &str = "AS_IN_VM";

const MIB: u64 = 1 << 20;

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
    let reason = "needs root to create cgroups";
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
    false
}

/// A root slice removed (processes killed, every hierarchy) when the test ends, even by panic.
struct Slice {
    name: String,
    root: Cgroup,
}

impl Slice {
    fn new(layout: &Layout, tag: &str) -> Slice {
        let name = format!("agent-supervisor-test-{}-{tag}.slice", std::process::id());
        let root = Cgroup::root(layout, &name).expect("create the test root slice");
        Slice { name, root }
    }
}

impl Drop for Slice {
    fn drop(&mut self) {
        if let Err(e) = self.root.remove() {
            eprintln!("cleanup of {} failed: {e}", self.name);
        }
    }
}

/// Directories named `name` at the top of every mounted hierarchy.
fn leftovers(name: &str) -> Vec<PathBuf> {
    let mut tops = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        tops.extend(
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    tops.into_iter()
        .map(|t| t.join(name))
        .filter(|p| p.exists())
        .collect()
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// `sh -c` that joins `cg` by writing 0 to each of its `cgroup.procs` files, then runs `body`.
fn spawn_in(cg: &Cgroup, body: &str) -> Child {
    let mut script = String::new();
    for f in cg.procs_files() {
        script += &format!(
            "echo 0 > {} || exit 99\n",
            shell_quote(&f.to_string_lossy())
        );
    }
    script += body;
    Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn /bin/sh")
}

fn wait_until(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        sleep(Duration::from_millis(20));
    }
    None
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The whole scenario, on whatever layout this machine has.
fn scenario(tag: &str) {
    let layout = Layout::detect().expect("detect the cgroup layout");
    println!("layout: {}", layout.describe());
    let slice = Slice::new(&layout, tag);
    let root = &slice.root;

    // A group with memory 64M (no swap) and 32 pids; its init and agents below it.
    let g1 = root
        .create_child(
            "g1",
            &Limits {
                memory_max: Some(64 * MIB),
                memory_swap_max: Some(0),
                pids_max: Some(32),
                cpu_weight: Some(100),
                ..Limits::default()
            },
        )
        .expect("create group g1");
    let _init = g1.create_child("init", &Limits::default()).expect("init");
    let hog = g1
        .create_child("hog", &Limits::default())
        .expect("agent hog");
    let bomb = g1
        .create_child("bomb", &Limits::default())
        .expect("agent bomb");
    let g2 = root
        .create_child(
            "g2",
            &Limits {
                memory_max: Some(256 * MIB),
                cpu_max: Some(0.5),
                ..Limits::default()
            },
        )
        .expect("create group g2");
    let calm = g2
        .create_child("calm", &Limits::default())
        .expect("agent calm");

    // The limits are in the kernel's files.
    match &layout {
        Layout::Unified { .. } => {
            let d = g1.controller_dir("memory").expect("memory dir");
            assert_eq!(read_trim(&d.join("memory.max")), (64 * MIB).to_string());
            assert_eq!(read_trim(&d.join("memory.swap.max")), "0");
            assert_eq!(read_trim(&d.join("pids.max")), "32");
            let d2 = g2.controller_dir("cpu").expect("cpu dir");
            assert_eq!(read_trim(&d2.join("cpu.max")), "50000 100000");
            // Agents get memory accounting of their own (for per-agent OOM counts).
            let a = hog.controller_dir("memory").expect("memory dir");
            assert!(a.join("memory.events").exists(), "{}", a.display());
        }
        Layout::Hybrid { .. } => {
            let d = g1.controller_dir("memory").expect("v1 memory");
            assert_eq!(
                read_trim(&d.join("memory.limit_in_bytes")),
                (64 * MIB).to_string()
            );
            let memsw = d.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                assert_eq!(read_trim(&memsw), (64 * MIB).to_string());
            }
            let p = g1.controller_dir("pids").expect("v1 pids");
            assert_eq!(read_trim(&p.join("pids.max")), "32");
            let c = g2.controller_dir("cpu").expect("v1 cpu");
            assert_eq!(read_trim(&c.join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read_trim(&c.join("cpu.cfs_period_us")), "100000");
        }
    }
    assert_eq!(g1.stats().memory_limit, Some(64 * MIB));

    // A sibling in the other group, moved in with add_pid.
    let mut calm_proc = Command::new("sleep")
        .arg("120")
        .spawn()
        .expect("spawn sleep");
    calm.add_pid(calm_proc.id()).expect("add sleep to calm");
    assert_eq!(calm.pids(), [calm_proc.id()]);
    assert!(calm.populated() && g2.populated() && root.populated());
    // The one-file memory read agrees with the full stats (a sleeping process: no churn;
    // on v1 its pages stay charged where they were allocated, so 0 there is right).
    let (one, full) = (calm.memory_usage(), calm.stats().memory_usage);
    assert!(one.is_some(), "calm memory_usage {one:?}");
    assert!(
        one.zip(full).is_some_and(|(a, b)| a.abs_diff(b) < 4 * MIB),
        "calm memory_usage {one:?} vs stats {full:?}"
    );

    // The hog allocates 200 MB in 1 MB steps and must die by the OOM killer. Its interpreter
    // is loaded once outside the limited cgroup first: page cache is charged to the cgroup
    // that reads it, and if the hog's own cgroup held the interpreter's pages, reclaim there
    // would evict and re-read them (over 9p in the VM) for minutes before the OOM killer acts.
    let warm = Command::new(python())
        .args(["-c", "import sys"])
        .status()
        .expect("run the interpreter once");
    assert!(warm.success());
    let start = Instant::now();
    let mut hog_proc = spawn_in(
        &hog,
        &format!(
            "exec {} -c 'c = [bytearray(b\"x\") * (1 << 20) for _ in range(200)]; print(\"survived\")'",
            python()
        ),
    );
    let st = wait_until(&mut hog_proc, Duration::from_secs(120)).expect("the hog ends");
    let out = hog_proc.wait_with_output().expect("hog output");
    println!(
        "hog ended after {:?}: {st:?}; stdout {:?}",
        start.elapsed(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(st.signal(), Some(9), "the hog was not SIGKILLed: {st:?}");
    assert!(hog.oom_kills() >= 1, "hog oom_kills = {}", hog.oom_kills());
    assert!(g1.oom_kills() >= 1, "g1 oom_kills = {}", g1.oom_kills());
    assert_eq!(calm.oom_kills(), 0);
    assert_eq!(g2.oom_kills(), 0);
    assert!(
        calm_proc.try_wait().expect("try_wait").is_none(),
        "calm died"
    );
    println!(
        "oom_kills: hog {} g1 {} calm 0",
        hog.oom_kills(),
        g1.oom_kills()
    );

    // A fork bomb stops at pids.max: sh forks sleeps until fork fails.
    let mut bomb_proc = spawn_in(
        &bomb,
        "n=0; while [ $n -lt 200 ]; do sleep 60 >/dev/null 2>&1 & n=$((n+1)); echo $n; done; echo no-limit",
    );
    let st = wait_until(&mut bomb_proc, Duration::from_secs(60)).expect("the bomb ends");
    let pids_now = g1.stats().pids_current;
    let out = bomb_proc.wait_with_output().expect("bomb output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let forks = stdout.lines().filter_map(|l| l.parse::<u32>().ok()).max();
    println!("fork bomb: {st:?}, forks {forks:?}, g1 pids.current {pids_now:?}, stderr {stderr:?}");
    assert!(
        !stdout.contains("no-limit"),
        "the fork bomb was not stopped"
    );
    assert!(stderr.to_lowercase().contains("fork"), "stderr: {stderr}");
    assert!(
        pids_now.is_some_and(|n| n <= 32),
        "pids.current {pids_now:?}"
    );
    assert!(forks.is_some_and(|n| n < 32), "forks {forks:?}");

    // kill() empties a cgroup with several processes (the bomb's ~30 sleeps).
    let before = bomb.pids().len();
    assert!(before >= 10, "bomb has {before} processes");
    let start = Instant::now();
    bomb.kill().expect("kill bomb");
    println!("kill() of {before} processes took {:?}", start.elapsed());
    assert!(!bomb.populated());
    assert!(bomb.pids().is_empty());

    // remove() of a group with live processes kills them and removes every directory.
    let mut more: Vec<Child> = (0..3).map(|_| spawn_in(&calm, "exec sleep 120")).collect();
    sleep(Duration::from_millis(200));
    assert_eq!(calm.pids().len(), 4, "calm pids {:?}", calm.pids());
    let start = Instant::now();
    g2.remove().expect("remove g2");
    println!("remove() of g2 with 4 processes took {:?}", start.elapsed());
    assert!(!g2.exists());
    let st = wait_until(&mut calm_proc, Duration::from_secs(5)).expect("calm killed");
    assert_eq!(st.signal(), Some(9));
    for p in &mut more {
        let st = wait_until(p, Duration::from_secs(5)).expect("killed");
        assert_eq!(st.signal(), Some(9));
    }

    root.remove().expect("remove the root slice");
    for d in root.dirs() {
        assert!(!d.exists(), "{} is left", d.display());
    }
    assert_eq!(leftovers(&slice.name), Vec::<PathBuf>::new());
}

#[test]
fn host_limits_oom_fork_bomb_kill_remove() {
    let _serial = serial();
    if !need_root("host_limits_oom_fork_bomb_kill_remove") {
        return;
    }
    scenario("host");
}

/// Creation errors name the path; a group cannot be created below a missing controller.
#[test]
fn host_errors_name_the_path() {
    let _serial = serial();
    if !need_root("host_errors_name_the_path") {
        return;
    }
    let layout = Layout::detect().expect("detect");
    let slice = Slice::new(&layout, "errors");
    let e = slice
        .root
        .create_child("x/y", &Limits::default())
        .expect_err("a slash is not a name");
    assert!(e.to_string().contains(&slice.name), "{e}");
    let e = slice
        .root
        .create_child(
            "g",
            &Limits {
                pids_max: Some(0),
                ..Limits::default()
            },
        )
        .expect_err("pids 0");
    assert!(e.to_string().contains(&format!("{}/g", slice.name)), "{e}");
}

/// The cgroup2 mount of this system: where, its mount options and its file system options.
fn cgroup2_options() -> (PathBuf, Vec<String>, Vec<String>) {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let point = match Layout::from_mountinfo(&text).expect("a cgroup layout") {
        Layout::Unified { mount } => mount,
        Layout::Hybrid { unified, .. } => unified.expect("a cgroup2 mount"),
    };
    let line = text
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .rfind(|l| l.split(' ').nth(4) == Some(&*point.to_string_lossy()))
        .expect("the cgroup2 line")
        .to_string();
    let (left, right) = line.split_once(" - ").expect("separator");
    let words = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s.split(',').map(str::to_string).collect();
        v.sort();
        v
    };
    let mount_opts = words(left.split(' ').nth(5).expect("mount options"));
    let super_opts = words(right.split(' ').nth(2).expect("super options"));
    (point, mount_opts, super_opts)
}

/// `favordynmods` off, then on again, through the daemon's own function: the kernel shows the
/// option come and go, and every other option of the file system and of the mount stays.
fn favordynmods_scenario() {
    use cgroup::DynMods;
    let (point, mount_before, super_before) = cgroup2_options();
    let without = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|o| o.as_str() != "favordynmods")
            .cloned()
            .collect()
    };
    let got = cgroup::set_favordynmods(false).expect("turn favordynmods off");
    assert!(
        matches!(
            &got,
            DynMods::Changed { on: false, .. } | DynMods::Already { on: false, .. }
        ),
        "{got:?}"
    );
    let (_, mount_off, super_off) = cgroup2_options();
    assert_eq!(
        mount_off,
        mount_before,
        "mount options of {}",
        point.display()
    );
    assert_eq!(super_off, without(&super_before), "file system options");
    assert_eq!(
        cgroup::set_favordynmods(false).expect("again"),
        DynMods::Already {
            mount: point.clone(),
            on: false
        }
    );
    let got = cgroup::set_favordynmods(true).expect("turn favordynmods on");
    assert_eq!(
        got,
        DynMods::Changed {
            mount: point.clone(),
            on: true
        }
    );
    assert!(
        got.describe().contains("favordynmods"),
        "{}",
        got.describe()
    );
    let (_, mount_on, super_on) = cgroup2_options();
    assert_eq!(mount_on, mount_before, "mount options");
    let mut want = without(&super_before);
    want.push("favordynmods".into());
    want.sort();
    assert_eq!(super_on, want, "file system options");
    println!("favordynmods OK: {} {super_on:?}", point.display());
}

/// On this host (hybrid: the option goes on the unified hierarchy, and serves all).
#[test]
fn host_favordynmods_on_and_off_keeps_every_other_option() {
    let _serial = serial();
    if !need_root("host_favordynmods_on_and_off_keeps_every_other_option") {
        return;
    }
    favordynmods_scenario();
}

/// The daemon turns `favordynmods` on at start, and leaves the mount alone with
/// `daemon.cgroup_favordynmods: false`.
#[test]
fn host_daemon_turns_favordynmods_on_unless_told_not_to() {
    use agent_supervisor_tests::daemon::Daemon;
    use agent_supervisor_tests::fixture::Fixture;
    let _serial = serial();
    if !need_root("host_daemon_turns_favordynmods_on_unless_told_not_to") {
        return;
    }
    let has = || cgroup2_options().2.iter().any(|o| o == "favordynmods");
    let f = Fixture::new(
        env!("CARGO_BIN_EXE_agent-supervisor"),
        "cg-dynmods",
        "cgdyn",
        "  g:\n    host: h1\n    agents:\n      - name: sleeper\n        command: [sleep, '600']\n",
    );
    let system = f.dir.join("system.yaml");
    let text = fs::read_to_string(&system).expect("read the fixture's system file");
    let off = text.replace(
        "  http_listen:",
        "  cgroup_favordynmods: false\n  http_listen:",
    );
    assert_ne!(off, text, "the daemon section has http_listen");
    cgroup::set_favordynmods(false).expect("turn favordynmods off");
    fs::write(&system, &off).expect("write the system file");
    {
        let _d = Daemon::start(&f, env!("CARGO_BIN_EXE_supervisorctl"));
        assert!(
            !has(),
            "cgroup_favordynmods: false, and the daemon remounted"
        );
    }
    fs::write(&system, &text).expect("write the system file");
    {
        let _d = Daemon::start(&f, env!("CARGO_BIN_EXE_supervisorctl"));
        assert!(
            has(),
            "the daemon did not turn favordynmods on:\n{}",
            f.daemon_log()
        );
        assert!(
            f.daemon_log().contains("remounted with favordynmods"),
            "{}",
            f.daemon_log()
        );
    }
}

/// In the VM only: on a unified host whose cgroup2 has `nsdelegate`, as systemd mounts it.
#[test]
fn vm_inner_favordynmods() {
    if std::env::var_os(IN_VM).is_none() {
        println!("vm_inner_favordynmods: runs inside the VM only (see vm_unified_v2_host)");
        return;
    }
    let (point, _, super_opts) = cgroup2_options();
    if !super_opts.iter().any(|o| o == "nsdelegate") {
        let out = Command::new("mount")
            .args(["-o", "remount,nsdelegate"])
            .arg(&point)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "{out:?}");
    }
    let (_, _, super_opts) = cgroup2_options();
    assert!(
        super_opts.iter().any(|o| o == "nsdelegate"),
        "{super_opts:?}"
    );
    favordynmods_scenario();
}

/// Runs the inner tests of this binary in a VM whose `/sys/fs/cgroup` is a full cgroup2.
#[test]
fn vm_unified_v2_host() {
    let _serial = serial();
    let test = "vm_unified_v2_host";
    if !vm::require_or_skip(test) {
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let exe = shell_quote(&exe.to_string_lossy());
    let script = format!(
        "echo layout; cat /proc/self/cgroup; cat /sys/fs/cgroup/cgroup.subtree_control\n\
         {exe} --exact vm_inner_scenario --nocapture --test-threads=1 || exit $?\n\
         {exe} --exact vm_inner_delegated_root --nocapture --test-threads=1 || exit $?\n\
         {exe} --exact vm_inner_favordynmods --nocapture --test-threads=1 || exit $?\n\
         echo ALL-INNER-OK\n"
    );
    let opts = VmOptions {
        timeout: Duration::from_secs(300),
        env: vec![
            (IN_VM.into(), "1".into()),
            ("RUST_BACKTRACE".into(), "1".into()),
        ],
        ..VmOptions::default()
    };
    let run = vm::run(&script, &opts).expect("the VM runs the inner tests");
    println!(
        "VM: boot {:?}, total {:?}, exit {}\n{}",
        run.boot_time, run.elapsed, run.exit_code, run.stdout
    );
    assert_eq!(run.exit_code, 0, "console:\n{}", run.console);
    assert!(run.stdout.contains("ALL-INNER-OK"));
    assert_eq!(run.stdout.matches("test result: ok. 1 passed").count(), 3);
}

/// In the VM only: the scenario on a unified cgroup v2 host.
#[test]
fn vm_inner_scenario() {
    if std::env::var_os(IN_VM).is_none() {
        println!("vm_inner_scenario: runs inside the VM only (see vm_unified_v2_host)");
        return;
    }
    let layout = Layout::detect().expect("detect");
    assert!(matches!(layout, Layout::Unified { .. }), "{layout:?}");
    // The VM runs the test in the root cgroup: no delegation, the default slice.
    assert_eq!(cgroup::delegated_cgroup(&layout), None);
    scenario("vm");
}

/// In the VM only: a daemon in a cgroup systemd delegated to it (xattr `trusted.delegate`)
/// uses that cgroup as its root, moving itself into the `supervisor` leaf first.
#[test]
fn vm_inner_delegated_root() {
    if std::env::var_os(IN_VM).is_none() {
        println!("vm_inner_delegated_root: runs inside the VM only (see vm_unified_v2_host)");
        return;
    }
    let layout = Layout::detect().expect("detect");
    let Layout::Unified { mount } = &layout else {
        panic!("not unified: {layout:?}");
    };
    // A two-level root gets the controllers enabled level by level.
    let svc_rel = "as-test.slice/as-test.service";
    let service = Cgroup::root(&layout, svc_rel).expect("create the service cgroup");
    let service = service.controller_dir("cgroup2").expect("dir");
    let enabled = read_trim(&mount.join("as-test.slice/cgroup.subtree_control"));
    assert!(
        enabled.contains("memory") && enabled.contains("pids"),
        "{enabled}"
    );
    assert!(service.join("memory.max").exists());
    assert_eq!(cgroup::delegated_cgroup(&layout), None, "not in it yet");
    // Like systemd's Delegate=yes: mark the service cgroup and start the daemon inside it.
    set_xattr(&service, "trusted.delegate", "1");
    fs::write(service.join("cgroup.procs"), "0").expect("join the service cgroup");
    assert_eq!(cgroup::own_cgroup().as_deref(), Some(svc_rel));
    assert_eq!(cgroup::delegated_cgroup(&layout).as_deref(), Some(svc_rel));

    let root = cgroup::default_root(&layout).expect("default_root");
    assert_eq!(root.path(), svc_rel);
    assert_eq!(
        cgroup::own_cgroup().as_deref(),
        Some("as-test.slice/as-test.service/supervisor")
    );
    assert_eq!(cgroup::delegated_cgroup(&layout).as_deref(), Some(svc_rel));
    let g = root
        .create_child(
            "g",
            &Limits {
                memory_max: Some(32 * MIB),
                ..Limits::default()
            },
        )
        .expect("a group under the delegated root");
    let d = g.controller_dir("memory").expect("dir");
    assert_eq!(read_trim(&d.join("memory.max")), (32 * MIB).to_string());
    g.remove().expect("remove g");

    // Back to the top so the whole test slice can go.
    fs::write(mount.join("cgroup.procs"), "0").expect("leave");
    let top = Cgroup::root(&layout, "as-test.slice").expect("open");
    top.remove().expect("remove as-test.slice");
    assert!(!mount.join("as-test.slice").exists());
    println!("delegated root OK");
}

fn set_xattr(path: &Path, name: &str, value: &str) {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let n = CString::new(name).expect("name without NUL");
    // SAFETY: `p` and `n` are NUL-terminated and outlive the call; `value` is readable for
    // `value.len()` bytes.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}
