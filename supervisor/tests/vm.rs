//! End-to-end tests in a throwaway VM (see `agent_supervisor_tests::vm`): the guest has every
//! cgroup v2 controller and the modules the supervisor needs, `agent-supervisor check` passes
//! on the example system there, and the harness returns output, exit status and shared files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_supervisor_tests::vm::{self, shell_quote, VmOptions, VmRun};

/// The lines after `@@ name` up to the next `@@` marker.
fn section<'a>(run: &'a VmRun, name: &str) -> &'a str {
    let marker = format!("@@ {name}\n");
    let start = run
        .stdout
        .find(&marker)
        .map(|i| i + marker.len())
        .unwrap_or_else(|| panic!("no section {name} in the VM's output:\n{}", run.stdout));
    let rest = &run.stdout[start..];
    &rest[..rest.find("@@ ").unwrap_or(rest.len())]
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root exists")
}

fn report(test: &str, run: &VmRun, started: Instant) {
    eprintln!(
        "{test}: guest boot to script {:.2?}, QEMU run {:.2?}, whole test {:.2?}",
        run.boot_time,
        run.elapsed,
        started.elapsed()
    );
}

#[test]
fn vm_has_cgroup_controllers_and_modules_and_check_passes() {
    let test = "vm_has_cgroup_controllers_and_modules_and_check_passes";
    if !vm::require_or_skip(test) {
        return;
    }
    let started = Instant::now();
    let bin = env!("CARGO_BIN_EXE_agent-supervisor");
    let system = repo_root().join("examples/ai-system/system.yaml");
    let system = system.to_str().expect("the repository path is UTF-8");
    let script = format!(
        r#"
echo "@@ controllers"
cat /sys/fs/cgroup/cgroup.controllers
echo "@@ subtree"
for c in memory pids cpu; do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || echo "cannot enable $c"
done
cat /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/vm-test && ls /sys/fs/cgroup/vm-test
echo "@@ modules"
for m in veth tun wireguard overlay; do echo "$m $(cat /sys/module/$m/initstate)"; done
ip link add vm-a type veth peer name vm-b && echo "veth pair created"
echo "@@ check"
{bin} check {system}
echo "check exit status $?"
echo "@@ end"
"#,
        bin = shell_quote(bin),
        system = shell_quote(system),
    );
    let run = vm::run(&script, &VmOptions::default()).expect("the VM runs the script");
    report(test, &run, started);
    assert_eq!(
        run.exit_code, 0,
        "output:\n{}\nconsole:\n{}",
        run.stdout, run.console
    );

    let controllers: Vec<&str> = section(&run, "controllers").split_whitespace().collect();
    for c in ["memory", "pids", "cpu"] {
        assert!(
            controllers.contains(&c),
            "controller {c} missing: {controllers:?}"
        );
    }

    let subtree = section(&run, "subtree");
    let enabled: Vec<&str> = subtree
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    for c in ["memory", "pids", "cpu"] {
        assert!(
            enabled.contains(&c),
            "root subtree_control lacks {c}:\n{subtree}"
        );
    }
    for file in ["memory.max", "pids.max", "cpu.max"] {
        assert!(
            subtree.lines().any(|l| l == file),
            "a child cgroup has no {file}:\n{subtree}"
        );
    }

    let modules = section(&run, "modules");
    for m in ["veth", "tun", "wireguard", "overlay"] {
        assert!(
            modules.lines().any(|l| l == format!("{m} live")),
            "module {m} is not loaded:\n{modules}\n{}",
            run.console
        );
    }
    assert!(modules.contains("veth pair created"), "{modules}");

    let check = section(&run, "check");
    assert!(check.contains("check exit status 0"), "{check}");
    for expected in ["50/50 agents compile", "host mainpc", "host pc2"] {
        assert!(check.contains(expected), "no {expected:?} in:\n{check}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the VM test took {:?}",
        started.elapsed()
    );
}

#[test]
fn vm_returns_output_status_env_and_rw_shares() {
    let test = "vm_returns_output_status_env_and_rw_shares";
    if !vm::require_or_skip(test) {
        return;
    }
    let started = Instant::now();
    let share =
        std::env::temp_dir().join(format!("agent-supervisor-vm-share-{}", std::process::id()));
    fs::create_dir_all(&share).expect("create the shared temporary directory");
    let share_str = share
        .to_str()
        .expect("the temporary directory is UTF-8")
        .to_string();
    let opts = VmOptions {
        share_rw: vec![share.clone()],
        env: vec![("GREETING".into(), "it's a \"VM\"".into())],
        cwd: Some(PathBuf::from("/usr")),
        ..VmOptions::default()
    };
    let script = r#"
echo "greeting: $GREETING"
echo "cwd: $(pwd)"
echo "to stderr" >&2
echo written-in-vm > "$SHARE/from-vm"
touch /etc/agent-supervisor-vm-test 2>/dev/null && echo "root is writable" || echo "root is read-only"
exit 7
"#;
    let script = format!("SHARE={}\n{script}", shell_quote(&share_str));
    let run = vm::run(&script, &opts);
    let from_vm = fs::read_to_string(share.join("from-vm"));
    let _ = fs::remove_dir_all(&share);
    let run = run.expect("the VM runs the script");
    report(test, &run, started);

    assert_eq!(
        run.exit_code, 7,
        "output:\n{}\nconsole:\n{}",
        run.stdout, run.console
    );
    assert!(
        run.stdout.contains("greeting: it's a \"VM\"\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("cwd: /usr\n"), "{}", run.stdout);
    assert!(run.stdout.contains("to stderr\n"), "{}", run.stdout);
    assert!(run.stdout.contains("root is read-only\n"), "{}", run.stdout);
    assert_eq!(
        from_vm.expect("the VM wrote into the share").trim(),
        "written-in-vm"
    );
    assert!(!run.dmesg.is_empty(), "no dmesg came back");
}

#[test]
fn vm_that_does_not_power_off_is_killed_at_the_timeout() {
    let test = "vm_that_does_not_power_off_is_killed_at_the_timeout";
    if !vm::require_or_skip(test) {
        return;
    }
    let opts = VmOptions {
        timeout: Duration::from_secs(5),
        ..VmOptions::default()
    };
    let started = Instant::now();
    let result = vm::run("echo started; sleep 600", &opts);
    let took = started.elapsed();
    match result {
        Err(vm::VmError::Timeout { timeout, .. }) => assert_eq!(timeout, opts.timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(20),
        "the timed-out run took {took:?}"
    );
}
