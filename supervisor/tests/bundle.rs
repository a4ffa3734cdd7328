//! `agent-supervisor bundle`: a group exported as an OCI runtime bundle. On this host the
//! `config.json` is read back with oci-spec and checked field by field; in the test VM (full
//! cgroup v2, which crun needs) crun runs the bundle and the agent reports its sandbox.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use agent_supervisor::launch::mounts::{HOST_MASKED, MASKED_PATHS, READONLY_PATHS};
use agent_supervisor::launch::sandbox::DEFAULT_CAPS;
use agent_supervisor_tests::fixture::{root_or_skip, text, Fixture};
use agent_supervisor_tests::vm::{self, shell_quote, VmOptions};
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccompAction, Spec};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

fn bundle_cmd(f: &Fixture, group: &str, dir: &Path) -> Output {
    Command::new(BIN)
        .arg("bundle")
        .arg(f.dir.join("system.yaml"))
        .args(["--host", "h1", group])
        .arg(dir)
        .output()
        .expect("run agent-supervisor bundle")
}

/// A group with limits, an env file, a read-write directory bind and a file bind, two agents.
fn web_fixture(name: &str) -> Fixture {
    let f = Fixture::new(
        BIN,
        name,
        "bundle",
        "  web:\n    host: h1\n    resources: {memory: 128M, cpus: 0.5, cpu_weight: 50, pids: 32}\n    env: {GROUP_VAR: g, SHARED: from-group}\n    env_file: web.env\n    binds: ['@DIR@/data:/data:rw', '@DIR@/conf.txt:/config/conf.txt']\n    agents:\n      - name: api\n        command: python3 agents/api.py --port 8100\n        port: 8100\n        env: {SHARED: from-agent}\n      - name: worker\n        command: [python3, agents/worker.py]\n        depends_on: [api]\n  pyg:\n    host: h1\n    image: py\n    agents:\n      - name: a\n        command: [python3, agents/api.py]\nimages:\n  py: {recipe: py.yaml}\n",
    );
    f.file("agents/api.py", "print('api')\n");
    f.file("agents/worker.py", "print('worker')\n");
    f.file("web.env", "# secrets\nTOKEN=s3cret\nSHARED=from-file\n");
    f.file("conf.txt", "conf\n");
    std::fs::create_dir_all(f.dir.join("data")).expect("create the data directory");
    f
}

fn caps(set: &Option<oci_spec::runtime::Capabilities>) -> HashSet<String> {
    set.as_ref()
        .expect("the capability set is present")
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect()
}

#[test]
fn exports_a_group_that_reads_back_as_an_oci_spec() {
    let f = web_fixture("bundle-export");
    let out_dir = f.dir.join("out");
    let out = bundle_cmd(&f, "web", &out_dir);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("group web (agent api)"), "{t}");
    assert!(t.contains("agents worker are not in it"), "{t}");

    let config = out_dir.join("config.json");
    let mode = std::fs::metadata(&config)
        .expect("config.json exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "config.json holds env_file secrets");
    let spec = Spec::load(&config).expect("oci-spec parses config.json");
    let dir = f
        .dir
        .canonicalize()
        .expect("the fixture directory resolves");

    assert_eq!(spec.version(), "1.0.2");
    assert_eq!(spec.hostname().as_deref(), Some("web"));
    let root = spec.root().as_ref().expect("root");
    assert_eq!(root.path(), Path::new("rootfs"));
    assert_eq!(root.readonly(), Some(true));

    let p = spec.process().as_ref().expect("process");
    assert_eq!(
        p.args().as_deref(),
        Some(&["python3", "agents/api.py", "--port", "8100"].map(String::from)[..])
    );
    assert_eq!(p.cwd(), &dir);
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert!(p.rlimits().is_none(), "the launcher sets no rlimits");
    let env = p.env().as_ref().expect("env");
    for want in [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "PYTHONUNBUFFERED=1",
        "TOKEN=s3cret",
        "GROUP_VAR=g",
        "SHARED=from-agent",
        "AGENT_NAME=api",
        "AGENT_GROUP=web",
        "AGENT_HOST=h1",
        "AGENT_PORT=8100",
        "AGENT_DEPENDENCIES=",
    ] {
        assert!(env.iter().any(|e| e == want), "no {want} in {env:?}");
    }
    assert_eq!(env.iter().filter(|e| e.starts_with("SHARED=")).count(), 1);

    let c = p.capabilities().as_ref().expect("capabilities");
    let want: HashSet<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    for (name, set) in [
        ("bounding", c.bounding()),
        ("effective", c.effective()),
        ("permitted", c.permitted()),
        ("inheritable", c.inheritable()),
    ] {
        assert_eq!(caps(set), want, "{name} capabilities");
    }
    assert!(
        c.ambient().is_none(),
        "ambient capabilities: {:?}",
        c.ambient()
    );

    let linux = spec.linux().as_ref().expect("linux");
    let ns: HashSet<LinuxNamespaceType> = linux
        .namespaces()
        .as_ref()
        .expect("namespaces")
        .iter()
        .map(|n| n.typ())
        .collect();
    use LinuxNamespaceType::*;
    assert_eq!(
        ns,
        HashSet::from([Pid, Mount, Ipc, Uts, Cgroup]),
        "network: host"
    );
    let masked = linux.masked_paths().as_ref().expect("maskedPaths");
    for m in MASKED_PATHS.iter().chain(HOST_MASKED) {
        assert!(
            masked.iter().any(|x| x == m),
            "{m} is not masked: {masked:?}"
        );
    }
    let ro = linux.readonly_paths().as_ref().expect("readonlyPaths");
    assert_eq!(
        ro,
        &READONLY_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );

    let r = linux.resources().as_ref().expect("resources");
    let mem = r.memory().as_ref().expect("memory");
    assert_eq!(mem.limit(), Some(128 << 20));
    assert_eq!(mem.swap(), Some(128 << 20), "memory + 0 swap");
    let cpu = r.cpu().as_ref().expect("cpu");
    assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
    assert_eq!(cpu.shares(), Some(512));
    assert_eq!(r.pids().expect("pids").limit(), 32);

    let sc = linux.seccomp().as_ref().expect("seccomp");
    assert_eq!(sc.default_action(), LinuxSeccompAction::ScmpActAllow);
    let rule = |name: &str| {
        sc.syscalls()
            .as_ref()
            .expect("syscalls")
            .iter()
            .find(|s| s.names().iter().any(|n| n == name) && s.args().is_none())
            .unwrap_or_else(|| panic!("no seccomp rule for {name}"))
    };
    for name in [
        "mount",
        "umount2",
        "pivot_root",
        "unshare",
        "setns",
        "bpf",
        "keyctl",
    ] {
        assert_eq!(
            rule(name).action(),
            LinuxSeccompAction::ScmpActErrno,
            "{name}"
        );
        assert_eq!(rule(name).errno_ret(), Some(libc::EPERM as u32), "{name}");
    }
    assert_eq!(rule("clone3").errno_ret(), Some(libc::ENOSYS as u32));

    // Mounts: runtime file systems, host directories read-only, then the binds.
    let mounts = spec.mounts().as_ref().expect("mounts");
    let m = |dest: &Path| {
        mounts
            .iter()
            .find(|m| m.destination() == dest)
            .unwrap_or_else(|| panic!("no mount at {}: {mounts:?}", dest.display()))
    };
    let opts = |dest: &Path| m(dest).options().clone().unwrap_or_default();
    for (dest, typ) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/sys", "sysfs"),
        ("/tmp", "tmpfs"),
        ("/run", "tmpfs"),
    ] {
        assert_eq!(m(Path::new(dest)).typ().as_deref(), Some(typ), "{dest}");
    }
    assert!(opts(Path::new("/sys")).contains(&"ro".to_string()));
    let ro_bind = ["rbind", "ro", "nosuid", "nodev"]
        .map(String::from)
        .to_vec();
    assert_eq!(opts(Path::new("/usr")), ro_bind);
    assert_eq!(opts(&dir), ro_bind, "the system file's directory");
    assert_eq!(m(&dir).source().as_deref(), Some(dir.as_path()));
    assert_eq!(opts(Path::new("/data")), vec!["rbind", "rw"]);
    assert_eq!(
        m(Path::new("/data")).source().as_deref(),
        Some(dir.join("data").as_path())
    );
    assert_eq!(opts(Path::new("/config/conf.txt")), ro_bind);
    let pos = |dest: &str| {
        mounts
            .iter()
            .position(|m| m.destination() == Path::new(dest))
    };
    assert!(
        pos("/tmp") < pos("/usr") && pos("/usr") < pos("/data"),
        "mount order"
    );

    // rootfs/: the host skeleton, with the same symlinks as the host.
    let rootfs = out_dir.join("rootfs");
    for e in agent_rootfs::host_rootfs(Path::new("/")).expect("host rootfs") {
        match e {
            agent_rootfs::HostEntry::Dir(d) => {
                let inside = rootfs.join(d.strip_prefix("/").expect("absolute"));
                assert!(inside.is_dir(), "{} is not a directory", inside.display());
                assert_eq!(std::fs::read_dir(&inside).expect("readable").count(), 0);
                assert!(
                    opts(&d) == ro_bind,
                    "{} is not bound read-only",
                    d.display()
                );
            }
            agent_rootfs::HostEntry::Symlink { path, target } => {
                let inside = rootfs.join(path.strip_prefix("/").expect("absolute"));
                assert_eq!(std::fs::read_link(&inside).expect("a symlink"), target);
            }
        }
    }
    for d in ["proc", "dev", "sys", "tmp", "run", "data"] {
        assert!(rootfs.join(d).is_dir(), "rootfs/{d}");
    }
    assert!(rootfs.join("config/conf.txt").is_file(), "file mount point");

    // Another agent of the group: its own argv and dependencies, the same sandbox.
    let worker_dir = f.dir.join("out-worker");
    let w = agent_supervisor::bundle::export_agent(
        &f.dir.join("system.yaml"),
        "h1",
        "web",
        Some("worker"),
        &worker_dir,
    )
    .expect("export the worker");
    assert_eq!(w.agent, "worker");
    assert_eq!(w.left_out, vec!["api".to_string()]);
    let ws = Spec::load(&w.config_json).expect("parse the worker's config.json");
    let wp = ws.process().as_ref().expect("process");
    assert_eq!(wp.args().as_ref().expect("args")[1], "agents/worker.py");
    let wenv = wp.env().as_ref().expect("env");
    assert!(
        wenv.iter()
            .any(|e| e == "AGENT_DEPENDENCIES=api=127.0.0.1:8100"),
        "{wenv:?}"
    );
    assert_eq!(ws.linux(), spec.linux());

    // The same input gives the same bytes.
    let again = f.dir.join("out-again");
    assert!(bundle_cmd(&f, "web", &again).status.success());
    assert_eq!(
        std::fs::read(&config).expect("read"),
        std::fs::read(again.join("config.json")).expect("read"),
        "config.json is not deterministic"
    );
}

#[test]
fn refuses_non_empty_dirs_unknown_groups_and_unbuilt_images() {
    let f = web_fixture("bundle-refuse");
    let sys = f.dir.join("system.yaml");

    let busy = f.dir.join("busy");
    std::fs::create_dir_all(&busy).expect("create busy dir");
    std::fs::write(busy.join("keep"), "mine").expect("write a file");
    let out = bundle_cmd(&f, "web", &busy);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("bundle directory {} is not empty", busy.display())),
        "{t}"
    );
    let left: Vec<PathBuf> = std::fs::read_dir(&busy)
        .expect("read busy")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(left, vec![busy.join("keep")], "the directory was touched");

    let file = f.dir.join("conf.txt");
    let t = text(&bundle_cmd(&f, "web", &file));
    assert!(
        t.contains(&format!("{} exists and is not a directory", file.display())),
        "{t}"
    );

    let out = bundle_cmd(&f, "nope", &f.dir.join("out-nope"));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("group \"nope\" is not in {}", sys.display())),
        "{t}"
    );
    assert!(
        !f.dir.join("out-nope").exists(),
        "nothing is written on error"
    );

    let t = text(&bundle_cmd(&f, "pyg", &f.dir.join("out-pyg")));
    // The plan names the field and how to build the image.
    assert!(
        t.contains("groups.pyg.image: image py:") && t.contains("agent-supervisor build"),
        "{t}"
    );
    assert!(!f.dir.join("out-pyg").exists());

    let e = agent_supervisor::bundle::export_agent(&sys, "h1", "web", Some("db"), &f.dir.join("x"))
        .expect_err("no agent db")
        .to_string();
    assert!(
        e.contains("group web has no agent \"db\" (agents: api, worker)"),
        "{e}"
    );
    let e = agent_supervisor::bundle::export(&sys, "h9", "web", &f.dir.join("x"))
        .expect_err("no host h9")
        .to_string();
    assert!(e.contains("--host \"h9\" is not a host of"), "{e}");
}

/// The first of `names` found in the usual program directories.
fn program(names: &[&str]) -> Option<PathBuf> {
    names
        .iter()
        .flat_map(|n| {
            ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]
                .map(|d| Path::new(d).join(n))
        })
        .find(|p| p.exists())
}

/// A test that needs `program`: skipped with a reason, but failing in CI.
fn program_or_skip(test: &str, name: &str) -> Option<PathBuf> {
    let found = program(&[name]);
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: {name} is not installed (scripts/install-prereqs.sh installs it)");
        }
        eprintln!("SKIP {test}: {name} is not installed (apt-get install {name})");
    }
    found
}

#[test]
fn runc_runs_an_exported_bundle_on_this_host() {
    let test = "runc_runs_an_exported_bundle_on_this_host";
    if !root_or_skip(test) {
        return;
    }
    let Some(runc) = program_or_skip(test, "runc") else {
        return;
    };
    let f = Fixture::new(
        BIN,
        "bundle-runc",
        "bundlerunc",
        "  runc-probe:\n    host: h1\n    resources: {memory: 64M, pids: 32}\n    agents:\n      - name: probe\n        command: [python3, agents/probe.py]\n",
    );
    f.file(
        "agents/probe.py",
        r#"
import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
print("HOSTNAME", socket.gethostname())
for line in open("/proc/self/status"):
    if line.split(":")[0] in ("CapEff", "NoNewPrivs", "Seccomp"):
        print("STATUS", line.strip().replace("\t", " "))
print("PROCS", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
r = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)
print("MOUNT", "ok" if r == 0 else errno.errorcode[ctypes.get_errno()])
"#,
    );
    let bundle = f.dir.join("bundle");
    agent_supervisor::bundle::export(&f.dir.join("system.yaml"), "h1", "runc-probe", &bundle)
        .expect("export the group");
    let state = f.dir.join("runc-state");
    let id = format!("as-bundle-runc-{}", std::process::id());
    let started = Instant::now();
    let out = Command::new(&runc)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .expect("run runc");
    let took = started.elapsed();
    let _ = Command::new(&runc)
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &id])
        .output();
    let t = text(&out);
    eprintln!("{test}: runc run took {took:.1?}\n{t}");
    assert!(out.status.success(), "{t}");
    for want in [
        "HOSTNAME runc-probe\n",
        "STATUS CapEff: 00000000a00405fb\n",
        "STATUS NoNewPrivs: 1\n",
        "STATUS Seccomp: 2\n",
        "PROCS [1]\n",
        "MOUNT EPERM\n",
    ] {
        assert!(t.contains(want), "no {want:?} in:\n{t}");
    }
}

#[test]
fn crun_runs_an_exported_bundle_in_the_vm() {
    let test = "crun_runs_an_exported_bundle_in_the_vm";
    if !vm::require_or_skip(test) {
        return;
    }
    let Some(crun) = program_or_skip(test, "crun") else {
        return;
    };
    let started = Instant::now();
    let f = Fixture::new(
        BIN,
        "bundle-vm",
        "bundlevm",
        "  probe:\n    host: h1\n    resources: {memory: 96M, cpus: 0.5, pids: 48}\n    binds: ['@DIR@/shared:/shared:rw']\n    agents:\n      - name: probe\n        command: [python3, agents/probe.py]\n        env: {GREETING: hello}\n  noop:\n    host: h1\n    agents:\n      - name: 'true'\n        command: ['true']\n",
    );
    std::fs::create_dir_all(f.dir.join("shared")).expect("create the shared directory");
    f.file(
        "agents/probe.py",
        r#"
import ctypes, errno, os, socket, time
libc = ctypes.CDLL(None, use_errno=True)
def err(r):
    return "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
print("HOSTNAME", socket.gethostname())
for line in open("/proc/self/status"):
    if line.split(":")[0] in ("CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
        print("STATUS", line.strip().replace("\t", " "))
print("PROCS", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print("CWD", os.getcwd())
print("ENV", os.environ.get("GREETING"), os.environ.get("AGENT_NAME"), os.environ.get("AGENT_GROUP"))
print("MOUNT", err(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)))
print("UNSHARE", err(libc.unshare(0x10000000)))
print("CLONE3", err(libc.syscall(435, None, 0)))
def write(p):
    try:
        open(p, "w").write("x")
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
print("WRITE /", write("/probe-root"))
print("WRITE cwd", write("probe-cwd"))
print("WRITE /tmp", write("/tmp/probe"))
print("WRITE /shared", write("/shared/probe"))
print("SHADOW", len(open("/etc/shadow", "rb").read()) if os.path.exists("/etc/shadow") else "absent")
print("CGROUP", open("/proc/self/cgroup").read().strip())
open("/shared/ready", "w").close()
for _ in range(600):
    if os.path.exists("/shared/go"):
        break
    time.sleep(0.1)
print("DONE")
"#,
    );
    let out_dir = PathBuf::from(format!("/tmp/as-bundle-vm-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let sys = f.dir.join("system.yaml");
    let exported = agent_supervisor::bundle::export(&sys, "h1", "probe", &out_dir.join("probe"))
        .expect("export the probe group");
    agent_supervisor::bundle::export(&sys, "h1", "noop", &out_dir.join("noop"))
        .expect("export the noop group");
    assert_eq!(exported.agent, "probe");
    let shared = f.dir.join("shared");
    let script = format!(
        r#"
CRUN={crun}; B={bundle}; SH={shared}
ms() {{ date +%s%3N; }}
T0=$(ms)
$CRUN --root /run/crun run --bundle "$B" as-bundle > /tmp/crun.out 2>&1 &
CPID=$!
PID=
for i in $(seq 600); do
    [ -e "$SH/ready" ] && PID=$($CRUN --root /run/crun state as-bundle | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p') && break
    kill -0 $CPID 2>/dev/null || break
    sleep 0.05
done
T1=$(ms)
echo "@@ limits"
if [ -n "$PID" ]; then
    CG=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$PID/cgroup)
    echo "cgroup $CG"
    cat $CG/memory.max $CG/memory.swap.max $CG/cpu.max $CG/pids.max
fi
touch "$SH/go"
wait $CPID
echo "crun exit $?"
T2=$(ms)
echo "@@ times"
echo "ready_ms $((T1 - T0)) total_ms $((T2 - T0))"
for i in 1 2 3; do
    T3=$(ms)
    $CRUN --root /run/crun run --bundle "$B/../noop" as-noop-$i
    echo "noop_$i exit $? ms $(($(ms) - T3))"
done
echo "@@ output"
cat /tmp/crun.out
echo "@@ end"
"#,
        crun = shell_quote(&crun.to_string_lossy()),
        bundle = shell_quote(&out_dir.join("probe").to_string_lossy()),
        shared = shell_quote(&shared.to_string_lossy()),
    );
    let opts = VmOptions {
        share_rw: vec![f.dir.clone(), out_dir.clone()],
        timeout: std::time::Duration::from_secs(120),
        ..VmOptions::default()
    };
    let run = vm::run(&script, &opts);
    let _ = std::fs::remove_dir_all(&out_dir);
    let run = run.expect("the VM runs the script");
    eprintln!(
        "{test}: {:.1?} (boot {:.1?}, QEMU {:.1?})\n{}",
        started.elapsed(),
        run.boot_time,
        run.elapsed,
        run.stdout
    );
    let out = &run.stdout;
    assert!(
        out.contains("crun exit 0"),
        "{out}\nconsole:\n{}",
        run.console
    );
    for want in [
        "HOSTNAME probe\n",
        "STATUS NoNewPrivs: 1\n",
        "STATUS Seccomp: 2\n",
        "STATUS CapEff: 00000000a00405fb\n",
        "STATUS CapBnd: 00000000a00405fb\n",
        "STATUS CapAmb: 0000000000000000\n",
        "PROCS [1]\n",
        "ENV hello probe probe\n",
        "MOUNT EPERM\n",
        "UNSHARE EPERM\n",
        "CLONE3 ENOSYS\n",
        "WRITE / EROFS\n",
        "WRITE cwd EROFS\n",
        "WRITE /tmp ok\n",
        "WRITE /shared ok\n",
        "CGROUP 0::/\n",
        "DONE\n",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    let dir = f.dir.canonicalize().expect("fixture dir");
    assert!(out.contains(&format!("CWD {}\n", dir.display())), "{out}");
    assert!(
        out.contains("SHADOW 0\n") || out.contains("SHADOW absent\n"),
        "{out}"
    );
    assert!(
        out.contains("100663296\n0\n50000 100000\n48\n"),
        "memory.max, memory.swap.max, cpu.max, pids.max of the container's cgroup:\n{out}"
    );
    for i in 1..=3 {
        assert!(out.contains(&format!("noop_{i} exit 0 ")), "{out}");
    }
    assert_eq!(
        std::fs::read_to_string(shared.join("probe")).expect("the probe wrote into /shared"),
        "x"
    );
}
