//! GPU passthrough with fake GPUs: device nodes made with `mknod` (NVIDIA's major 195) and a
//! CDI spec naming them. A group given GPU 0 opens its node and `/dev/nvidiactl` (the open
//! passes the device cgroup and fails in the absent driver: `ENXIO`), while GPU 1's node and
//! a disk's node, reachable through a bind, are refused by the device cgroup (`EPERM`), even
//! for root in the group; `mknod` of a disk node works (runc's default list) and opening it
//! is refused. On this hybrid host that is the v1 `devices` controller; in the VM (cgroup v2)
//! the eBPF program. Also: an optional GPU group without GPUs runs and says so; a required
//! one fails with the reason.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_supervisor_tests::fixture::{root_or_skip, text, Fixture};
use agent_supervisor_tests::vm::{self, shell_quote, VmOptions};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const IN_VM: &str = "AGENT_SUPERVISOR_GPU_TEST_IN_VM";

/// The fake host nodes, in a directory of devtmpfs (device nodes work there), removed on drop.
struct FakeGpus(PathBuf);

impl FakeGpus {
    fn new() -> FakeGpus {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!("/dev/as-gpu-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, kind, major, minor) in [
            ("nvidia0", "c", 195, 0),
            ("nvidia1", "c", 195, 1),
            ("nvidiactl", "c", 195, 255),
            ("disk", "b", 8, 0),
        ] {
            let st = std::process::Command::new("mknod")
                .arg(dir.join(name))
                .args([kind, &major.to_string(), &minor.to_string()])
                .status()
                .unwrap();
            assert!(st.success(), "mknod {name}");
        }
        FakeGpus(dir)
    }
}

impl Drop for FakeGpus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The CDI spec nvidia-ctk would write for the two fake GPUs (host nodes in `dir`).
fn spec(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "cdiVersion: \"0.6.0\"\nkind: nvidia.com/gpu\ndevices:\n\
         - name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - {{path: /dev/nvidia0, hostPath: {d}/nvidia0}}\n\
         - name: \"1\"\n  containerEdits:\n    deviceNodes:\n    - {{path: /dev/nvidia1, hostPath: {d}/nvidia1}}\n\
         containerEdits:\n  env: [\"NVIDIA_DRIVER_CAPABILITIES=compute,utility\"]\n  deviceNodes:\n  - {{path: /dev/nvidiactl, hostPath: {d}/nvidiactl}}\n"
    )
}

/// What the agent prints: each path with `OK` or the errno's name.
const PROBE: &str = r#"
import errno, os, stat
def try_open(p):
    try:
        os.close(os.open(p, os.O_RDWR))
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
for p in ["/dev/null", "/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia1", "/hostdev/nvidia1", "/hostdev/disk"]:
    print("open", p, try_open(p))
try:
    os.mknod("/dev/disk0", 0o600 | stat.S_IFBLK, os.makedev(8, 0))
    print("mknod /dev/disk0 OK")
except OSError as e:
    print("mknod /dev/disk0", errno.errorcode[e.errno])
print("open /dev/disk0", try_open("/dev/disk0"))
print("env NVIDIA_VISIBLE_DEVICES", os.environ.get("NVIDIA_VISIBLE_DEVICES"))
print("env CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
print("env NVIDIA_DRIVER_CAPABILITIES", os.environ.get("NVIDIA_DRIVER_CAPABILITIES"))
"#;

/// What the probe prints for the devices of a group given GPU 0, wherever it runs.
const DEVICE_LINES: &[&str] = &[
    "open /dev/null OK",
    // Granted: passes the device cgroup, no driver behind the fake node.
    "open /dev/nvidia0 ENXIO",
    "open /dev/nvidiactl ENXIO",
    // Not granted: not made in the group's /dev ...
    "open /dev/nvidia1 ENOENT",
    // ... and refused by the device cgroup where a bind shows the host's node.
    "open /hostdev/nvidia1 EPERM",
    "open /hostdev/disk EPERM",
];

/// A fixture with `groups` whose daemon reads CDI specs from its own `cdi/`.
fn fixture(tag: &str, groups: &str, fake: &FakeGpus) -> Fixture {
    let f = Fixture::new(BIN, tag, tag, groups);
    let cdi = f.dir.join("cdi");
    f.file("cdi/nvidia.yaml", &spec(&fake.0));
    f.file("probe.py", PROBE);
    let path = f.dir.join("system.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "daemon:\n",
        &format!("daemon:\n  cdi_spec_dirs: [{}]\n", cdi.display()),
        1,
    );
    std::fs::write(&path, text).unwrap();
    f
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn scenario(layout: &str) {
    let fake = FakeGpus::new();
    let groups = format!(
        "  gpu-infra:\n    host: h1\n    gpus: [0]\n    security: {{cap_add: [MKNOD]}}\n    binds: ['{d}:/hostdev:rw']\n    agents:\n      - name: probe\n        command: [{py}, '@DIR@/probe.py']\n",
        d = fake.0.display(),
        py = python()
    );
    let f = fixture("gpu", &groups, &fake);
    // run-group shows the agents' output.
    let out = f.run_group("gpu-infra");
    let got = text(&out);
    println!("[{layout}] run-group:\n{got}");
    assert!(out.status.success(), "{}", text(&out));
    let want = DEVICE_LINES.iter().copied().chain([
        // runc's default list: mknod of any node, but no open of it.
        "mknod /dev/disk0 OK",
        "open /dev/disk0 EPERM",
        "env NVIDIA_VISIBLE_DEVICES 0",
        "env CUDA_VISIBLE_DEVICES 0",
        "env NVIDIA_DRIVER_CAPABILITIES compute,utility",
    ]);
    for w in want {
        assert!(
            got.lines().any(|l| l == w),
            "[{layout}] missing {w:?} in:\n{got}"
        );
    }
    assert!(
        f.group_leftovers("gpu-infra").is_empty(),
        "{:?}",
        f.group_leftovers("gpu-infra")
    );
}

#[test]
fn granted_gpu_opens_others_refused_by_the_device_cgroup() {
    if !root_or_skip("granted_gpu_opens_others_refused_by_the_device_cgroup") {
        return;
    }
    scenario("host");
}

#[test]
fn optional_gpu_group_runs_without_and_a_required_one_says_why() {
    if !root_or_skip("optional_gpu_group_runs_without_and_a_required_one_says_why") {
        return;
    }
    let fake = FakeGpus::new();
    let groups = format!(
        "  spare:\n    host: h1\n    gpus: {{devices: 3, optional: true}}\n    agents:\n      - name: spare-probe\n        command: [{py}, '@DIR@/probe.py']\n  big:\n    host: h1\n    gpus: 3\n    agents:\n      - name: big-probe\n        command: [/bin/true]\n",
        py = python()
    );
    let f = fixture("gpuopt", &groups, &fake);
    let check = std::process::Command::new(BIN)
        .args(["check", "--host", "h1"])
        .arg(f.dir.join("system.yaml"))
        .output()
        .unwrap();
    let c = text(&check);
    println!("check:\n{c}");
    assert!(!check.status.success(), "{c}");
    assert!(
        c.contains("groups.big.gpus") && c.contains("group big: 3 GPU(s) requested, 2 present"),
        "{c}"
    );
    assert!(
        c.contains(
            "group spare: 3 GPU(s) requested, 2 present (optional: the group runs without GPU)"
        ),
        "{c}"
    );
    // The optional group runs, without GPU variables.
    let out = f.run_group("spare");
    assert!(out.status.success(), "{}", text(&out));
    let got = text(&out);
    assert!(got.contains("env NVIDIA_VISIBLE_DEVICES None"), "{got}");
    assert!(got.contains("open /dev/null OK"), "{got}");
    // The required one does not start, and says why.
    let out = f.run_group("big");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("group big: 3 GPU(s) requested, 2 present"),
        "{}",
        text(&out)
    );
}

#[test]
fn no_cdi_spec_and_no_nvml_is_said_exactly() {
    if !root_or_skip("no_cdi_spec_and_no_nvml_is_said_exactly") {
        return;
    }
    let fake = FakeGpus::new();
    let f = fixture(
        "gpunone",
        "  g:\n    host: h1\n    gpus: 1\n    agents:\n      - name: g-true\n        command: [/bin/true]\n",
        &fake,
    );
    std::fs::remove_file(f.dir.join("cdi/nvidia.yaml")).unwrap();
    let check = std::process::Command::new(BIN)
        .args(["check", "--host", "h1"])
        .arg(f.dir.join("system.yaml"))
        .output()
        .unwrap();
    let c = text(&check);
    println!("check:\n{c}");
    assert!(!check.status.success());
    assert!(
        c.contains("no CDI spec names nvidia.com/gpu devices")
            && c.contains(&f.dir.join("cdi").display().to_string()),
        "{c}"
    );
    // On a machine with NVIDIA's driver NVML answers; CI and this VM have none.
    if !Path::new("/dev/nvidiactl").exists() {
        assert!(
            c.contains("NVML is not available: libnvidia-ml.so.1 could not be loaded"),
            "{c}"
        );
    }
}

/// The scenario in a VM whose `/sys/fs/cgroup` is a full cgroup2: the eBPF device program.
#[test]
fn vm_unified_v2_gpu() {
    let test = "vm_unified_v2_gpu";
    if !vm::require_or_skip(test) {
        return;
    }
    let exe = shell_quote(&std::env::current_exe().unwrap().to_string_lossy());
    let script = format!(
        "{exe} --exact vm_inner_gpu --nocapture --test-threads=1 || exit $?\necho ALL-INNER-OK\n"
    );
    let opts = VmOptions {
        timeout: Duration::from_secs(300),
        env: vec![
            (IN_VM.into(), "1".into()),
            ("RUST_BACKTRACE".into(), "1".into()),
        ],
        ..VmOptions::default()
    };
    let run = vm::run(&script, &opts).expect("the VM runs the inner test");
    println!(
        "VM: {:?}, exit {}\n{}",
        run.elapsed, run.exit_code, run.stdout
    );
    assert_eq!(run.exit_code, 0, "console:\n{}", run.console);
    assert!(run.stdout.contains("ALL-INNER-OK"));
    assert!(run.stdout.contains("test result: ok. 1 passed"));
}

/// In the VM only (see [`vm_unified_v2_gpu`]).
#[test]
fn vm_inner_gpu() {
    if std::env::var_os(IN_VM).is_none() {
        println!("vm_inner_gpu: runs inside the VM only (see vm_unified_v2_gpu)");
        return;
    }
    scenario("vm");
}

/// `bundle` writes the GPU's node and the device cgroup into `config.json`; crun in the VM
/// (cgroup v2) runs it: the granted node opens, the other GPU's and a disk's are refused.
#[test]
fn crun_runs_the_gpu_bundle_in_the_vm() {
    let test = "crun_runs_the_gpu_bundle_in_the_vm";
    if !vm::require_or_skip(test) {
        return;
    }
    let Some(crun) = ["/usr/bin/crun", "/usr/local/bin/crun"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: crun is not installed, and CI must run it");
        }
        eprintln!("SKIP {test}: crun is not installed");
        return;
    };
    let fake = FakeGpus::new();
    let groups = format!(
        "  gpu-infra:\n    host: h1\n    gpus: [0]\n    binds: ['{d}:/hostdev:rw']\n    agents:\n      - name: probe\n        command: [{py}, '@DIR@/probe.py']\n",
        d = fake.0.display(),
        py = python()
    );
    let f = fixture("gpubundle", &groups, &fake);
    let out_dir = PathBuf::from(format!("/tmp/as-gpu-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    agent_supervisor::bundle::export(&f.dir.join("system.yaml"), "h1", "gpu-infra", &out_dir)
        .expect("export the GPU group");
    let config = std::fs::read_to_string(out_dir.join("config.json")).unwrap();
    let spec: serde_json::Value = serde_json::from_str(&config).unwrap();
    let devices = spec["linux"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let paths: Vec<&str> = devices.iter().filter_map(|d| d["path"].as_str()).collect();
    assert_eq!(paths, ["/dev/nvidiactl", "/dev/nvidia0"], "{config}");
    let rules = spec["linux"]["resources"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        rules.first().map(|r| r["allow"].clone()),
        Some(false.into()),
        "{config}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r["allow"] == true && r["major"] == 195 && r["minor"] == 0),
        "{config}"
    );
    // The VM has its own /dev: the same fake nodes at the same place for the bind.
    let d = fake.0.display();
    let script = format!(
        "mkdir -p {d} && mknod {d}/nvidia0 c 195 0 && mknod {d}/nvidia1 c 195 1 && mknod {d}/nvidiactl c 195 255 && mknod {d}/disk b 8 0\n\
         {crun} --root /run/crun run --bundle {b} as-gpu > /tmp/crun.out 2>&1\necho \"crun exit $?\"\ncat /tmp/crun.out\n",
        crun = shell_quote(&crun.to_string_lossy()),
        b = shell_quote(&out_dir.to_string_lossy()),
    );
    let opts = VmOptions {
        share_rw: vec![f.dir.clone(), out_dir.clone()],
        timeout: Duration::from_secs(120),
        ..VmOptions::default()
    };
    let run = vm::run(&script, &opts);
    let _ = std::fs::remove_dir_all(&out_dir);
    let run = run.expect("the VM runs the script");
    println!("{test}:\n{}", run.stdout);
    let out = &run.stdout;
    assert!(
        out.contains("crun exit 0"),
        "{out}\nconsole:\n{}",
        run.console
    );
    for w in DEVICE_LINES
        .iter()
        .copied()
        .chain(["env NVIDIA_VISIBLE_DEVICES 0"])
    {
        assert!(out.lines().any(|l| l == w), "missing {w:?} in:\n{out}");
    }
}
