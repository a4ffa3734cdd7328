//! Temporary systems for end-to-end tests: a directory with a one-host system file whose
//! run directory and cgroup root are the test's own, removed when the fixture drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Root is needed for namespaces and cgroups: on a laptop the test is skipped with a printed
/// reason; in CI (`CI` set) it fails instead.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc_geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root, and CI must run it");
    }
    eprintln!("SKIP {test}: needs root");
    false
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A system file with host `h1` in a fresh directory.
pub struct Fixture {
    pub dir: PathBuf,
    /// The cgroup root of this fixture's groups (`as-test-<tag>-<pid>-<n>.slice`), its own: a
    /// fixture that ends removes its slice, which must not pull it from under another test.
    pub slice: String,
    /// The daemon's HTTP port (`/metrics`), free when the fixture was made.
    pub port: u16,
    bin: PathBuf,
}

impl Fixture {
    /// `groups` is the YAML of the `groups:` map, indented by two spaces; `@DIR@` in it
    /// becomes the fixture directory. `bin` is the `agent-supervisor` binary.
    pub fn new(bin: &str, name: &str, tag: &str, groups: &str) -> Fixture {
        let dir = PathBuf::from(format!("/tmp/as-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("agents")).expect("create fixture dir");
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slice = format!("as-test-{tag}-{}-{n}.slice", std::process::id());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let system = format!(
            "hosts:\n  h1: {{address: 127.0.0.1, role: primary}}\ndaemon:\n  run_dir: {d}/run\n  log_dir: {d}/logs\n  state_dir: {d}/state\n  control_socket: {d}/control.sock\n  cgroup_root: {slice}\n  http_listen: '127.0.0.1:{port}'\ngroups:\n{}",
            groups.replace("@DIR@", &dir.to_string_lossy()),
            d = dir.display(),
        );
        std::fs::write(dir.join("system.yaml"), system).expect("write system.yaml");
        Fixture {
            dir,
            slice,
            port,
            bin: PathBuf::from(bin),
        }
    }

    /// What group `group` of this fixture left behind: its cgroup in any hierarchy (unified,
    /// v1 memory and pids, or the top of a unified host) and its state directory.
    pub fn group_leftovers(&self, group: &str) -> Vec<PathBuf> {
        let mut left: Vec<PathBuf> = [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
        ]
        .iter()
        .map(|base| Path::new(base).join(&self.slice).join(group))
        .collect();
        left.push(self.dir.join("run/groups").join(group));
        left.retain(|p| p.exists());
        left
    }

    /// Writes a file under the fixture directory.
    pub fn file(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("a file has a parent")).expect("create parent");
        std::fs::write(&p, text).expect("write fixture file");
        p
    }

    /// `agent-supervisor run-group ... --until-exit`, waited for.
    pub fn run_group(&self, group: &str) -> Output {
        self.run_group_cmd(group)
            .arg("--until-exit")
            .output()
            .expect("run agent-supervisor run-group")
    }

    /// `agent-supervisor run-group ...` in the background (stop it with SIGINT).
    pub fn spawn_group(&self, group: &str) -> Child {
        self.run_group_cmd(group)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent-supervisor run-group")
    }

    /// Replaces the `groups:` part of the system file (for reload tests).
    pub fn set_groups(&self, groups: &str) {
        let path = self.dir.join("system.yaml");
        let text = std::fs::read_to_string(&path).expect("read system.yaml");
        let head =
            &text[..text.find("groups:\n").expect("the fixture has groups") + "groups:\n".len()];
        let new = format!(
            "{head}{}",
            groups.replace("@DIR@", &self.dir.to_string_lossy())
        );
        std::fs::write(&path, new).expect("write system.yaml");
    }

    /// The control socket of this fixture's daemon.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// `agent-supervisor daemon` for this system, in the background, output to `daemon.log`.
    pub fn spawn_daemon(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("open daemon.log");
        let err = log.try_clone().expect("clone daemon.log");
        Command::new(&self.bin)
            .arg("daemon")
            .arg("--config")
            .arg(self.dir.join("system.yaml"))
            .args(["--host", "h1"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn agent-supervisor daemon")
    }

    /// [`Fixture::spawn_daemon`], returned once its control socket exists (panics with the
    /// daemon's log after 30 s).
    pub fn start_daemon(&self) -> Child {
        let child = self.spawn_daemon();
        let t = std::time::Instant::now();
        while !self.socket().exists() {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(30),
                "no control socket; daemon log:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child
    }

    /// `supervisorctl` (the binary `ctl`) with this fixture's control socket and `args`.
    pub fn ctl(&self, ctl: &str, args: &[&str]) -> Output {
        Command::new(ctl)
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("run supervisorctl")
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Every agent log file in the fixture's `logs/` so far, one after another.
    pub fn agent_logs(&self) -> String {
        std::fs::read_dir(self.dir.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    }

    fn run_group_cmd(&self, group: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("run-group")
            .arg(self.dir.join("system.yaml"))
            .args(["--host", "h1", group]);
        c
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // The slice itself outlives its groups; remove it in every hierarchy (best effort).
        if let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hier.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.slice));
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.slice));
    }
}

/// Whether the binaries `bins` are next to the binary `exe` (a test's own binary, e.g.
/// agent-bench, whose siblings `cargo test -p` of its crate alone does not build); a missing
/// one skips the test with a line that names it, and under `CI` fails it.
pub fn siblings_or_skip(test: &str, exe: &str, bins: &[&str]) -> bool {
    for bin in bins {
        let sibling = Path::new(exe).with_file_name(bin);
        if !sibling.is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: no {} next to {exe}",
                sibling.display()
            );
            eprintln!(
                "SKIP {test}: no {} (cargo build --workspace)",
                sibling.display()
            );
            return false;
        }
    }
    true
}

/// Stops a daemon (or any child) the way a service manager would: `SIGTERM`, up to 20 s for
/// it to exit, then `SIGKILL`; reaped either way.
pub fn stop_child(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// stdout followed by stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `promtool check metrics` of an exposition: panics with promtool's words and the text when
/// it fails, returns what it printed (lint remarks; empty when none). `None` when promtool is
/// not installed on a developer's machine (in CI that is a failure).
pub fn promtool_check(exposition: &str) -> Option<String> {
    use std::io::Write as _;
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing (apt-get install prometheus)"
        );
        eprintln!("SKIP promtool check: promtool is not installed");
        return None;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{text}\n{exposition}"
    );
    Some(text)
}
