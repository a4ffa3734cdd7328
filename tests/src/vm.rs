//! Throwaway QEMU VM for end-to-end tests: boots Debian's kernel with a busybox initramfs,
//! shares the host's root file system read-only over virtio-9p, gives the guest a full
//! cgroup v2 hierarchy and runs one shell script chrooted into the host's file system.
//!
//! How a run works:
//! - The kernel is Debian's `linux-image-amd64` (resolved with `apt-cache depends`, fetched
//!   with `apt-get download`, unpacked with `dpkg -x`, `depmod -b`), by `tests/vm/fetch-kernel.sh`
//!   into the cache directory ([`cache_dir`]), which also extracts the uncompressed `vmlinux`
//!   that QEMU boots directly (PVH). The `-cloud-` flavour cannot be used: it is built without 9p.
//! - The initramfs (busybox-static, `tests/vm/init.sh` as `/init`, the modules of [`MODULES`] and
//!   their dependencies with a matching `modules.dep`) is built once per kernel and init script
//!   and cached too; a run writes nothing into the cache.
//! - Per run, a temporary directory is shared read-write as 9p tag `vmio`: the harness writes the
//!   script there (`run.sh`, `shares`), the guest writes back `output` (stdout and stderr),
//!   `status`, `dmesg` and its uptimes. The serial console (ttyS0) goes to a file, returned as
//!   [`VmRun::console`].
//! - In the guest, `/init` mounts the host's `/` (read-only) on `/newroot`, fresh proc, sysfs,
//!   devtmpfs, devpts, cgroup2 (every controller enabled in the root's `cgroup.subtree_control`),
//!   tmpfs on `/tmp`, `/run`, `/var/tmp`, `/dev/shm`, each [`VmOptions::share_rw`] directory
//!   read-write at its own path, and runs the script with `chroot /newroot /bin/sh -c`. So the
//!   test binaries, python3 and anything else installed on the host are there at their paths
//!   (except under `/tmp`, `/run` and `/var/tmp`, hidden by the guest's tmpfs unless shared).
//! - The guest powers off (`-no-reboot`); a run that outlives [`VmOptions::timeout`] is killed.
//!
//! VMs of one test process run one at a time (a 2-core machine gains nothing from two TCG
//! guests at once, and timeouts stay meaningful).
//!
//! Environment: `AGENT_SUPERVISOR_VM_CACHE` (cache directory), `AGENT_SUPERVISOR_VM_ACCEL`
//! (`tcg` by default; `kvm` where nested KVM works), `CI` (see [`require_or_skip`]).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod image;

use image::{cached_kernel, find_static_busybox, initramfs, kernel, Kernel};

/// Modules loaded at boot, with their dependencies: `virtio_pci`, `9pnet_virtio` and `9p` to
/// reach the host's files, the rest for tests of the supervisor's networking (`nf_tables`,
/// `nft_chain_nat` and `nft_masq` for the nftables table a daemon with private groups
/// writes; `crc32c_generic` first, as `libcrc32c`, which they need, only names it as a
/// soft dependency and fails to load without it), its bridge (`wireguard`) and images.
/// In Debian's 6.1 kernel all of them are modules (`=m`), none built in.
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "veth",
    "bridge",
    "tun",
    "wireguard",
    "overlay",
    "crc32c_generic",
    "nf_tables",
    "nft_chain_nat",
    "nft_masq",
];

/// Where kernel and initramfs are cached when `AGENT_SUPERVISOR_VM_CACHE` is not set.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/agent-supervisor-tests/vm";

const CACHE_ENV: &str = "AGENT_SUPERVISOR_VM_CACHE";
const ACCEL_ENV: &str = "AGENT_SUPERVISOR_VM_ACCEL";
const QEMU: &str = "qemu-system-x86_64";
/// The generated `run.sh` travels as one argument of `sh -c`; Linux caps one at 128 KiB.
const MAX_RUN_SH: usize = 120 * 1024;
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a script run in the VM gave back.
#[derive(Debug, Clone)]
pub struct VmRun {
    /// The script's standard output and standard error, interleaved as written.
    pub stdout: String,
    /// The script's exit status (`128 + N` when killed by signal N).
    pub exit_code: i32,
    /// The serial console: kernel messages of level warning and above, and `/init`'s own lines.
    pub console: String,
    /// The guest kernel's full log (`dmesg`) taken after the script ended.
    pub dmesg: String,
    /// Guest uptime when the script was about to start: kernel boot plus `/init`'s setup.
    pub boot_time: Duration,
    /// Wall time from starting QEMU to its exit (firmware and kernel decompression included).
    pub elapsed: Duration,
}

/// How to run the VM.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// QEMU is killed when the VM has not powered off after this long.
    pub timeout: Duration,
    /// Guest memory.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Host directories shared read-write, mounted at the same path in the guest (also under
    /// `/tmp`, which is otherwise a fresh tmpfs). Absolute paths of existing directories.
    pub share_rw: Vec<PathBuf>,
    /// Environment of the script, on top of `PATH`, `HOME=/root` and `LANG=C.UTF-8`.
    pub env: Vec<(String, String)>,
    /// Working directory of the script. `None`: the test's current directory when it exists in
    /// the guest, `/` otherwise.
    pub cwd: Option<PathBuf>,
    /// Boot the host root's systemd as PID 1 into a target whose one service runs the
    /// script (units may be added in `/run/systemd/system`; `/var/log`, `/var/lib` and
    /// `/usr/local/bin` are tmpfs and `/etc` a copy in tmpfs, the rest of the root stays
    /// read-only). Booting takes about 10 s under TCG.
    pub systemd: bool,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            timeout: Duration::from_secs(50),
            memory_mb: 1024,
            cpus: 2,
            share_rw: Vec::new(),
            env: Vec::new(),
            cwd: None,
            systemd: false,
        }
    }
}

/// What went wrong starting, preparing or running the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("the test VM is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid VM options: {0}")]
    InvalidOptions(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("fetching the VM kernel with {} failed ({status}): {stderr}", script.display())]
    KernelFetch {
        script: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("kernel module {module} is not in {}", modules_dep.display())]
    ModuleMissing {
        module: String,
        modules_dep: PathBuf,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the VM did not power off within {timeout:?} (QEMU killed); console tail:\n{console_tail}\n\
         script output so far:\n{output}"
    )]
    Timeout {
        timeout: Duration,
        console_tail: String,
        output: String,
    },
    #[error(
        "the VM stopped ({qemu_status}) without reporting the script's exit status; {init_error}\
         QEMU's stderr: {qemu_stderr}\nconsole tail:\n{console_tail}"
    )]
    NoStatus {
        qemu_status: String,
        init_error: String,
        qemu_stderr: String,
        console_tail: String,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VmError {
    let path = path.to_path_buf();
    move |source| VmError::Io { what, path, source }
}

/// The cache directory: `AGENT_SUPERVISOR_VM_CACHE` or [`DEFAULT_CACHE_DIR`].
pub fn cache_dir() -> PathBuf {
    match std::env::var_os(CACHE_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_CACHE_DIR),
    }
}

/// Whether a VM can be run here; `Err` names what is missing and how to get it.
pub fn available() -> Result<(), String> {
    let mut missing = Vec::new();
    if find_program(QEMU).is_none() {
        missing.push(format!("{QEMU} (apt-get install qemu-system-x86)"));
    }
    if let Err(why) = find_static_busybox() {
        missing.push(why);
    }
    for program in ["cpio", "depmod"] {
        if find_program(program).is_none() {
            missing.push(format!("{program} (apt-get install cpio kmod)"));
        }
    }
    let cache = cache_dir();
    if cached_kernel(&cache).is_none() {
        let fetchers: Vec<&str> = ["apt-get", "apt-cache", "dpkg"]
            .into_iter()
            .filter(|p| find_program(p).is_none())
            .collect();
        if !fetchers.is_empty() {
            missing.push(format!(
                "a kernel in {} (run .ci/vm-prereqs.sh; fetching needs {})",
                cache.display(),
                fetchers.join(", ")
            ));
        }
    }
    if let Err(e) = fs::create_dir_all(&cache) {
        missing.push(format!(
            "a writable cache directory {} ({e}; set {CACHE_ENV})",
            cache.display()
        ));
    }
    if accel() == "kvm" && fs::metadata("/dev/kvm").is_err() {
        missing.push(format!("/dev/kvm (asked for by {ACCEL_ENV}=kvm)"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {}", missing.join("; ")))
    }
}

/// Decides whether a test that needs the VM runs: `true` when the VM is available. Otherwise
/// it prints `SKIP test: reason` to stderr and returns `false` on a developer's machine, but
/// panics with the reason when the `CI` environment variable is set: CI never skips silently.
pub fn require_or_skip(test: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: the VM test cannot run in CI: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIP {test}: {reason}");
            false
        }
    }
}

/// Quotes `s` for a POSIX shell: `'...'` with each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

static VM_LOCK: Mutex<()> = Mutex::new(());

/// [`run`] for the test `test`, begun at `started`: panics when the VM cannot run the script,
/// and prints the test's time, the VM's, its boot, the script's exit status and its output
/// (what the test's assertions then read, so a failure's report has it above).
pub fn run_reported(test: &str, started: Instant, script: &str, opts: &VmOptions) -> VmRun {
    let run =
        run(script, opts).unwrap_or_else(|e| panic!("{test}: the VM did not run the script: {e}"));
    eprintln!(
        "{test}: {:.1?} (VM {:.1?}, boot {:.1?}, exit {})\n{}",
        started.elapsed(),
        run.elapsed,
        run.boot_time,
        run.exit_code,
        run.stdout
    );
    run
}

/// Boots a VM, runs `sh -c script` in it (chrooted into the host's root file system, with a
/// full cgroup v2 hierarchy) and returns its output and exit status. A non-zero exit status
/// is a successful run: only failures of the harness or the VM are errors.
///
/// A run whose guest kernel stalled (a soft lockup or an RCU stall on the console, then the
/// timeout) is tried once more: under TCG on a busy two-core host the guest can be starved
/// past its watchdogs, which says nothing about the code under test. A second stall is the
/// error, with both console tails.
pub fn run(script: &str, opts: &VmOptions) -> Result<VmRun, VmError> {
    match run_once(script, opts) {
        Err(VmError::Timeout { console_tail, .. }) if guest_stalled(&console_tail) => {
            eprintln!("vm: the guest kernel stalled (console below); running the script once more\n{console_tail}");
            run_once(script, opts)
        }
        other => other,
    }
}

/// Whether a console shows the guest kernel's own stall detectors firing.
fn guest_stalled(console: &str) -> bool {
    console.contains("soft lockup") || console.contains("rcu_preempt detected stalls")
}

fn run_once(script: &str, opts: &VmOptions) -> Result<VmRun, VmError> {
    let run_sh = run_script(script, opts)?;
    let shares = share_list(opts)?;
    available().map_err(VmError::Unavailable)?;
    let _serial = VM_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());

    let cache = cache_dir();
    let kernel = kernel(&cache)?;
    let initramfs = initramfs(&cache, &kernel)?;

    let dir = TempDir::new("agent-supervisor-vm")?;
    let io_dir = dir.path.join("io");
    fs::create_dir(&io_dir).map_err(io_err("cannot create", &io_dir))?;
    write_file(&io_dir.join("run.sh"), run_sh.as_bytes())?;
    let mut share_lines = String::new();
    for (tag, path) in &shares {
        let _ = writeln!(share_lines, "{tag} {}", path.display());
    }
    write_file(&io_dir.join("shares"), share_lines.as_bytes())?;
    if opts.systemd {
        write_file(&io_dir.join("systemd"), b"")?;
    }

    let console = dir.path.join("console.log");
    let qemu_log = dir.path.join("qemu.log");
    let mut cmd = qemu_command(&kernel, &initramfs, &io_dir, &console, &shares, opts);
    let log = fs::File::create(&qemu_log).map_err(io_err("cannot create", &qemu_log))?;
    let log2 = log
        .try_clone()
        .map_err(io_err("cannot reopen", &qemu_log))?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);

    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| VmError::Spawn {
        program: PathBuf::from(QEMU),
        source,
    })?;
    let status = wait_timeout(&mut child, opts.timeout, &qemu_log)?;
    let elapsed = start.elapsed();

    let read = |name: &str| {
        fs::read(io_dir.join(name))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    let console_text = fs::read_to_string(&console).unwrap_or_default();
    let Some(status) = status else {
        return Err(VmError::Timeout {
            timeout: opts.timeout,
            console_tail: tail(&console_text, 40),
            output: tail(&read("output"), 40),
        });
    };
    let exit_code = match read("status").trim().parse::<i32>() {
        Ok(code) => code,
        Err(_) => {
            let init_error = read("init-error");
            return Err(VmError::NoStatus {
                qemu_status: status.to_string(),
                init_error: if init_error.is_empty() {
                    String::new()
                } else {
                    format!("{}; ", init_error.trim())
                },
                qemu_stderr: fs::read_to_string(&qemu_log).unwrap_or_default(),
                console_tail: tail(&console_text, 40),
            });
        }
    };
    Ok(VmRun {
        stdout: read("output"),
        exit_code,
        console: console_text,
        dmesg: read("dmesg"),
        boot_time: parse_uptime(&read("uptime-start")),
        elapsed,
    })
}

/// The `run.sh` that `/init` hands to `chroot /newroot /bin/sh -c`: environment, working
/// directory, then `exec /bin/sh -c SCRIPT`.
fn run_script(script: &str, opts: &VmOptions) -> Result<String, VmError> {
    let mut out = String::new();
    let mut env: Vec<(&str, &str)> =
        vec![("PATH", GUEST_PATH), ("HOME", "/root"), ("LANG", "C.UTF-8")];
    for (k, v) in &opts.env {
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || v.contains('\0') {
            return Err(VmError::InvalidOptions(format!(
                "environment variable {k:?} is not a shell variable name or its value has a NUL"
            )));
        }
        env.retain(|(name, _)| name != k);
        env.push((k, v));
    }
    for (k, v) in env {
        let _ = writeln!(out, "export {k}={}", shell_quote(v));
    }
    match &opts.cwd {
        Some(cwd) => {
            let cwd = cwd.to_str().ok_or_else(|| {
                VmError::InvalidOptions(format!("working directory {} is not UTF-8", cwd.display()))
            })?;
            let _ = writeln!(out, "cd {} || exit 125", shell_quote(cwd));
        }
        None => {
            if let Some(cwd) = std::env::current_dir()
                .ok()
                .and_then(|d| d.to_str().map(String::from))
            {
                let _ = writeln!(out, "cd {} 2>/dev/null || cd /", shell_quote(&cwd));
            }
        }
    }
    if script.contains('\0') {
        return Err(VmError::InvalidOptions(
            "the script contains a NUL byte".into(),
        ));
    }
    let _ = writeln!(out, "exec /bin/sh -c {}", shell_quote(script));
    if out.len() > MAX_RUN_SH {
        return Err(VmError::InvalidOptions(format!(
            "script and environment are {} bytes; at most {MAX_RUN_SH} fit in one argument",
            out.len()
        )));
    }
    Ok(out)
}

/// The read-write shares as (9p tag, path), checked to be absolute existing directories.
fn share_list(opts: &VmOptions) -> Result<Vec<(String, PathBuf)>, VmError> {
    let mut shares = Vec::new();
    for (i, path) in opts.share_rw.iter().enumerate() {
        if !path.is_absolute() || !path.is_dir() {
            return Err(VmError::InvalidOptions(format!(
                "share_rw {} is not an absolute path of an existing directory",
                path.display()
            )));
        }
        let printable = matches!(path.to_str(), Some(p) if !p.contains('\n'));
        if !printable {
            return Err(VmError::InvalidOptions(format!(
                "share_rw {} is not UTF-8 or has a newline",
                path.display()
            )));
        }
        shares.push((format!("rw{i}"), path.clone()));
    }
    // The guest mounts fresh tmpfs on these; a checkout or target directory below one of them
    // (a CI runner's workspace in /tmp, say) is shared automatically so tests find their
    // binaries and fixtures.
    let hidden = [Path::new("/tmp"), Path::new("/run"), Path::new("/var/tmp")];
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().and_then(Path::parent).map(Path::to_path_buf));
    for auto in [
        repo.canonicalize().ok(),
        exe_dir.and_then(|d| d.canonicalize().ok()),
    ]
    .into_iter()
    .flatten()
    {
        let covered = shares.iter().any(|(_, p)| auto.starts_with(p));
        if !covered && hidden.iter().any(|h| auto.starts_with(h)) && auto.to_str().is_some() {
            shares.push((format!("rw{}", shares.len()), auto));
        }
    }
    Ok(shares)
}

fn accel() -> String {
    std::env::var(ACCEL_ENV)
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "tcg".to_string())
}

/// QEMU's option syntax doubles commas inside a value.
fn qemu_escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

fn qemu_command(
    kernel: &Kernel,
    initramfs: &Path,
    io_dir: &Path,
    console: &Path,
    shares: &[(String, PathBuf)],
    opts: &VmOptions,
) -> Command {
    let mut cmd = Command::new(find_program(QEMU).unwrap_or_else(|| PathBuf::from(QEMU)));
    let accel = accel();
    let cpu = if accel == "tcg" { "max" } else { "host" };
    cmd.args(["-M", "q35", "-accel", &accel, "-cpu", cpu])
        .args(["-smp", &opts.cpus.max(1).to_string()])
        .args(["-m", &opts.memory_mb.max(128).to_string()])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-kernel")
        .arg(&kernel.boot_image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=vmio,security_model=none",
            qemu_escape(io_dir)
        ));
    for (tag, path) in shares {
        cmd.arg("-virtfs").arg(format!(
            "local,path={},mount_tag={tag},security_model=none,multidevs=remap",
            qemu_escape(path)
        ));
    }
    cmd
}

/// Waits for QEMU; `Ok(None)` when it was killed at the timeout.
fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
    log: &Path,
) -> Result<Option<ExitStatus>, VmError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io_err("cannot wait for QEMU, log", log))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn parse_uptime(text: &str) -> Duration {
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or_default()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn check_status(command: &str, status: ExitStatus, stderr: &[u8]) -> Result<(), VmError> {
    if status.success() {
        Ok(())
    } else {
        Err(VmError::Command {
            command: command.to_string(),
            status: status.to_string(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
        })
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), VmError> {
    fs::write(path, bytes).map_err(io_err("cannot write", path))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), VmError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err("cannot chmod", path))
}

/// `name` in `PATH`, or in the sbin directories that a non-root `PATH` lacks.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A directory removed (with its contents) on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(prefix: &str) -> Result<TempDir, VmError> {
        TempDir::new_in(&std::env::temp_dir(), prefix)
    }

    fn new_in(parent: &Path, prefix: &str) -> Result<TempDir, VmError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let mut last = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_err("cannot create", &path)(e)),
            }
        }
        Err(io_err("cannot create a temporary directory in", parent)(
            last.unwrap_or_else(|| io::Error::other("no free name")),
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_guest_kernels_stall_detectors_count_as_a_stall() {
        assert!(guest_stalled(
            "[ 48.5] watchdog: BUG: soft lockup - CPU#0 stuck for 45s!"
        ));
        assert!(guest_stalled(
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"
        ));
        assert!(!guest_stalled(
            "vm-init: running the script\nhungry exit 137"
        ));
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let opts = VmOptions {
            env: vec![("X".into(), "a 'b'".into())],
            cwd: Some("/w d".into()),
            ..VmOptions::default()
        };
        let sh = run_script("echo 'hi'", &opts).unwrap();
        assert!(sh.contains(r"export X='a '\''b'\'''"), "{sh}");
        assert!(sh.contains("cd '/w d' || exit 125"), "{sh}");
        assert!(
            sh.ends_with("exec /bin/sh -c 'echo '\\''hi'\\'''\n"),
            "{sh}"
        );
        let bad = VmOptions {
            env: vec![("1X".into(), String::new())],
            ..VmOptions::default()
        };
        assert!(run_script("true", &bad).is_err());
    }
}
