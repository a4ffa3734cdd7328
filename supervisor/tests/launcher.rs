//! The launcher for real, as root: a group's sandbox seen from inside, hostile agents,
//! memory and pids limits with OOM attribution. (100 start/stop cycles: `cycles.rs`.)
//! Runs `agent-supervisor run-group` on this (hybrid cgroup) host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_supervisor_tests::fixture::{root_or_skip, text, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

/// The capability mask of the default set (see docs/launcher.md).
fn default_capeff() -> u64 {
    [0u32, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31]
        .iter()
        .map(|b| 1u64 << b)
        .sum()
}

#[test]
fn inside_a_group() {
    if !root_or_skip("inside_a_group") {
        return;
    }
    let f = Fixture::new(BIN, "launch-inside", "launch", 
        "  probe-group:\n    host: h1\n    agents:\n      - name: probe\n        command: [python3, agents/probe.py]\n",
    );
    f.file("agents/probe.py", r#"
import os, socket
print("PID1", open("/proc/1/cmdline").read().replace("\0", " "))
print("HOSTNAME", socket.gethostname())
print("PROCS", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print("MOUNTS", [l.split()[4] for l in open("/proc/self/mountinfo")])
for l in open("/proc/self/mountinfo"):
    f = l.split()
    print("OPTS", f[4], f[5])
for p in ["/proc/keys", "/proc/timer_list", "/proc/kcore"]:
    try:
        print("MASK", p, len(open(p, "rb").read()))
    except OSError as e:
        print("MASK", p, "unreadable", e.errno)
for line in open("/proc/self/status"):
    if line.split(":")[0] in ("CapEff", "NoNewPrivs", "Seccomp"):
        print("STATUS", line.strip().replace("\t", " "))
print("SHADOW", len(open("/etc/shadow", "rb").read()) if os.path.exists("/etc/shadow") else "absent")
"#);
    let out = f.run_group("probe-group");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let line = |k: &str| {
        t.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("no {k} in {t}"))
            .to_string()
    };
    assert!(line("PID1 ").contains("__group-init"), "{t}");
    assert_eq!(line("HOSTNAME "), "HOSTNAME probe-group");
    // Only the group's processes: init (1), the agent, nothing of the host.
    let procs = line("PROCS ");
    assert!(procs.starts_with("PROCS [1, "), "{procs}");
    assert!(
        procs.matches(',').count() <= 3,
        "too many processes visible: {procs}"
    );
    assert!(
        !procs.contains(&format!(" {},", std::process::id())),
        "{procs}"
    );
    // Host mounts are not visible: only the group's own mount points.
    let mounts = line("MOUNTS ");
    assert!(
        !mounts.contains("'/work'") && !mounts.contains("'/root'") && !mounts.contains("'/boot'"),
        "{mounts}"
    );
    assert!(
        mounts.contains("'/usr'") && mounts.contains("'/proc'") && mounts.contains("'/dev/pts'"),
        "{mounts}"
    );
    // Host directories, the system file's directory and /etc/hosts: read-only, nosuid, nodev.
    let here = std::fs::canonicalize(&f.dir).expect("resolve the fixture dir");
    let ro_points = ["/usr", "/etc", "/etc/hosts"].map(String::from);
    let ro_points = ro_points
        .iter()
        .cloned()
        .chain([here.to_string_lossy().into_owned()]);
    for p in ro_points {
        let opts = t
            .lines()
            .filter_map(|l| l.strip_prefix("OPTS "))
            .filter_map(|l| l.split_once(' '))
            .filter(|(m, _)| *m == p)
            .map(|(_, o)| o.to_string())
            .next_back()
            .unwrap_or_else(|| panic!("{p} is not a mount point: {t}"));
        let opts: Vec<&str> = opts.split(',').collect();
        for want in ["ro", "nosuid", "nodev"] {
            assert!(opts.contains(&want), "{p} is mounted {opts:?}, not {want}");
        }
    }
    for l in t.lines().filter(|l| l.starts_with("MASK ")) {
        assert!(
            l.ends_with(" 0") || l.contains("unreadable"),
            "masked path readable: {l}"
        );
    }
    assert_eq!(
        line("STATUS CapEff"),
        format!("STATUS CapEff: {:016x}", default_capeff())
    );
    assert_eq!(line("STATUS NoNewPrivs"), "STATUS NoNewPrivs: 1");
    assert_eq!(line("STATUS Seccomp:"), "STATUS Seccomp: 2");
    assert!(
        line("SHADOW ").ends_with(" 0") || line("SHADOW ").ends_with("absent"),
        "{t}"
    );
}

#[test]
fn hostile_agent_is_contained() {
    if !root_or_skip("hostile_agent_is_contained") {
        return;
    }
    let secret = PathBuf::from(format!("/var/tmp/as-secret-{}", std::process::id()));
    std::fs::write(&secret, "secret").unwrap();
    let f = Fixture::new(BIN, "launch-hostile", "launch", 
        "  jail:\n    host: h1\n    binds: ['@DIR@/shared:/data:rw']\n    agents:\n      - name: hostile\n        command: [python3, agents/hostile.py]\n",
    );
    std::fs::create_dir_all(f.dir.join("shared")).unwrap();
    std::os::unix::fs::symlink("/", f.dir.join("shared/root-link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", f.dir.join("shared/up-link")).unwrap();
    f.file(
        "agents/hostile.py",
        &format!(
            r#"
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
SECRET = "{secret}"
OUTSIDE_PID = {outside}
def attempt(name, fn):
    try:
        r = fn()
    except OSError as e:
        print("BLOCKED", name, e.errno); return
    if r is False or r is None or (isinstance(r, int) and r < 0):
        print("BLOCKED", name, ctypes.get_errno())
    else:
        print("ESCAPED", name, r)
attempt("mount", lambda: libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))
attempt("kcore", lambda: len(open("/proc/kcore", "rb").read(16)) > 0 or False)
def sysrq():
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("h")
    return True
attempt("sysrq", sysrq)
attempt("init_module", lambda: libc.syscall(175, None, 0, b""))
attempt("finit_module", lambda: libc.syscall(313, 0, b"", 0))
attempt("mknod", lambda: os.mknod("/tmp/null2", 0o600 | 0o020000, os.makedev(1, 3)) or True)
attempt("ptrace", lambda: libc.ptrace(16, OUTSIDE_PID, None, None))
attempt("kill-outside", lambda: os.kill(OUTSIDE_PID, 0) or True)
attempt("dotdot", lambda: open("/data/../../../../.." + SECRET).read())
attempt("symlink-abs", lambda: open("/data/root-link" + SECRET).read())
attempt("symlink-up", lambda: open("/data/up-link" + SECRET).read())
attempt("unshare-user", lambda: libc.unshare(0x10000000))
attempt("write-usr", lambda: open("/usr/as-hostile", "w") and True)
print("DONE")
"#,
            outside = std::process::id(),
            secret = secret.display()
        ),
    );
    let out = f.run_group("jail");
    let _ = std::fs::remove_file(&secret);
    let t = text(&out);
    eprintln!("{t}");
    assert!(t.contains("DONE"), "{t}");
    for name in [
        "mount",
        "kcore",
        "sysrq",
        "init_module",
        "finit_module",
        "mknod",
        "ptrace",
        "kill-outside",
        "dotdot",
        "symlink-abs",
        "symlink-up",
        "unshare-user",
        "write-usr",
    ] {
        assert!(
            t.lines()
                .any(|l| l.starts_with(&format!("BLOCKED {name} "))),
            "{name} was not blocked:\n{t}"
        );
    }
    assert!(!t.contains("ESCAPED"), "{t}");
    assert!(!Path::new("/usr/as-hostile").exists());
}

#[test]
fn oom_kill_is_attributed_to_the_agent_and_other_groups_are_untouched() {
    if !root_or_skip("oom_kill_is_attributed") {
        return;
    }
    let f = Fixture::new(BIN, "launch-oom", "launch", 
        "  hungry:\n    host: h1\n    resources: {memory: 64M}\n    agents:\n      - name: hog\n        command: [python3, agents/hog.py]\n      - name: calm\n        command: [python3, -c, 'print(\"calm ok\")']\n  bystander:\n    host: h1\n    resources: {memory: 64M}\n    agents:\n      - name: sleeper\n        command: [sleep, '600']\n",
    );
    f.file(
        "agents/hog.py",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n",
    );
    let mut bystander = f.spawn_group("bystander");
    std::thread::sleep(Duration::from_millis(300));
    let out = f.run_group("hungry");
    let t = text(&out);
    assert!(
        t.contains("hungry:hog: killed by SIGKILL (OOM-killed)"),
        "{t}"
    );
    assert!(t.contains("hungry:calm: exit 0"), "{t}");
    // The other group's agent still runs.
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander group died"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bystander.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = bystander.wait_with_output().unwrap();
    let t = text(&out);
    assert!(t.contains("bystander:sleeper: killed by SIGTERM"), "{t}");
    assert!(!t.contains("OOM"), "{t}");
}

#[test]
fn pids_limit_contains_a_fork_bomb() {
    if !root_or_skip("pids_limit_contains_a_fork_bomb") {
        return;
    }
    let f = Fixture::new(BIN, "launch-forkbomb", "launch", 
        "  bomb:\n    host: h1\n    resources: {pids: 40}\n    agents:\n      - name: bomb\n        command: [python3, agents/bomb.py]\n",
    );
    f.file(
        "agents/bomb.py",
        r#"
import os, time
children, failed = [], 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(2); os._exit(0)
    children.append(pid)
print("FORKED", len(children), "FAILED", failed, flush=True)
for c in children:
    os.waitpid(c, 0)
"#,
    );
    let out = f.run_group("bomb");
    let t = text(&out);
    let line = t
        .lines()
        .find(|l| l.starts_with("FORKED"))
        .unwrap_or_else(|| panic!("{t}"));
    let n: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let failed: usize = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(n < 40, "{line}");
    assert!(failed > 150, "{line}");
}

#[test]
fn security_settings_change_the_sandbox() {
    if !root_or_skip("security_settings_change_the_sandbox") {
        return;
    }
    let f = Fixture::new(
        BIN,
        "launch-security",
        "launch",
        "  loose:\n    host: h1\n    security: {cap_add: [NET_RAW], cap_drop: [CAP_KILL], seccomp: unconfined, rlimits: {nofile: 256}}\n    agents:\n      - name: probe\n        command: [sh, -c, 'grep -E \"CapEff|Seccomp:\" /proc/self/status; ulimit -n']\n",
    );
    let out = f.run_group("loose");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let expect = (default_capeff() | (1 << 13)) & !(1 << 5);
    assert!(t.contains(&format!("CapEff:\t{expect:016x}")), "{t}");
    assert!(t.contains("Seccomp:\t0"), "{t}");
    assert!(t.lines().any(|l| l.trim() == "256"), "{t}");
}

#[test]
fn a_group_whose_root_cannot_be_built_fails_with_the_reason_and_leaves_nothing() {
    if !root_or_skip("a_group_whose_root_cannot_be_built_fails_with_the_reason_and_leaves_nothing")
    {
        return;
    }
    // The bind target would have to be made inside the host's read-only /usr.
    let f = Fixture::new(
        BIN,
        "launch-badroot",
        "launch",
        "  badroot:\n    host: h1\n    binds: ['@DIR@/agents:/usr/as-no-such-dir/x:rw']\n    agents:\n      - name: never\n        command: ['true']\n",
    );
    let out = f.run_group("badroot");
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("/usr/as-no-such-dir"),
        "the failing path is named: {t}"
    );
    assert!(
        t.contains("Read-only file system"),
        "the reason is given: {t}"
    );
    // Neither the group's cgroup nor its state directory is left behind.
    let left = f.group_leftovers("badroot");
    assert!(left.is_empty(), "left behind: {left:?}");
}
