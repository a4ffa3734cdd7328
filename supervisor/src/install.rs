//! `agent-supervisor install --config FILE --host H` and `uninstall [--purge]`: this machine
//! as host H of the system, run by systemd.
//!
//! `install`, in steps, each skipped when what is there is already the same (so a second
//! install changes nothing and restarts nothing):
//! 1. the binaries next to this one (`agent-supervisor`, `agent-launch`, `supervisorctl`,
//!    `agent-bridge`) to [`BIN_DIR`];
//! 2. the system file's directory (the file and what it names relative to itself: agent code,
//!    env files, keys; not `.git`, `target` or the daemon's own directories) to [`ETC_DIR`];
//! 3. the host's images, built from their recipes (which came with the directory) into the
//!    host's store when a group runs from one; the build cache makes an unchanged image a
//!    no-op with the same digest;
//! 4. the unit (`systemd/agent-supervisor.service`, built in) to [`UNIT_PATH`] and
//!    `AGENT_SUPERVISOR_ARGS=--host H` to [`DEFAULT_PATH`];
//! 5. `systemctl daemon-reload`, `enable`, and `start` — or, when something changed and the
//!    daemon runs, `restart` (the agents stay: see the unit's `ExecStop=`), or `reload`
//!    when only the system directory changed.
//!
//! Where systemd is not running (`/run/systemd/system` absent: a container, a chroot, a
//! test's namespace host), step 3 is skipped and step 4 starts the daemon itself, detached in
//! its own session (output to `log_dir/daemon.log`), and waits for its control socket; a
//! second install sends a running daemon SIGQUIT and starts the new binaries when they
//! changed (the agents stay and are re-adopted), or asks it to reload when only the system
//! directory did. Such a daemon does not come back after a reboot; the report says so.
//!
//! `uninstall`: `systemctl disable --now` (the daemon stops every agent, removes its
//! cgroups, namespaces and nftables table), then the unit, the defaults file, the binaries
//! and [`ETC_DIR`]; `--purge` also removes the state and log directories.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the binaries go.
pub const BIN_DIR: &str = "/usr/local/bin";
/// The system file and what it refers to.
pub const ETC_DIR: &str = "/etc/agent-supervisor";
pub const UNIT_PATH: &str = "/etc/systemd/system/agent-supervisor.service";
pub const DEFAULT_PATH: &str = "/etc/default/agent-supervisor";
pub const UNIT: &str = "agent-supervisor.service";
/// The binaries installed.
pub const BINARIES: &[&str] = &[
    "agent-supervisor",
    "agent-launch",
    "supervisorctl",
    "agent-bridge",
];
/// The unit file, as in the repository.
pub const UNIT_TEXT: &str = include_str!("../../systemd/agent-supervisor.service");
/// Names never copied from the system file's directory.
const SKIP: &[&str] = &[
    ".git",
    "target",
    "run",
    "state",
    "logs",
    "node_modules",
    "__pycache__",
];

/// What went wrong; each names the path or command.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{0}")]
    Config(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}

fn systemctl(args: &[&str]) -> Result<(), InstallError> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| InstallError::Command {
            command: format!("systemctl {}", args.join(" ")),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InstallError::Command {
            command: format!("systemctl {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn active() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", UNIT])
        .status()
        .is_ok_and(|s| s.success())
}

/// Writes `bytes` to `path` (mode `mode`) unless it holds them already; `true` if written.
fn put(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, InstallError> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    // Through a new file and a rename: a running binary is replaced, not written over.
    let tmp = path.with_extension("agent-supervisor-new");
    std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    Ok(true)
}

/// Copies the tree `from` into `to` (files whose bytes differ, with their mode); `true`
/// if anything changed. Files of `to` that `from` does not have are removed, but for the
/// names in `keep` (at the top only).
fn sync_tree(from: &Path, to: &Path, keep: &[&str]) -> Result<bool, InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let mut changed = false;
    std::fs::create_dir_all(to).map_err(io("create", to))?;
    let mut names = Vec::new();
    for e in std::fs::read_dir(from).map_err(io("read", from))? {
        let e = e.map_err(io("read", from))?;
        let name = e.file_name();
        if SKIP.iter().any(|s| name == *s) {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        let meta = std::fs::metadata(&src).map_err(io("stat", &src))?;
        if meta.is_dir() {
            changed |= sync_tree(&src, &dst, &[])?;
        } else if meta.is_file() {
            let bytes = std::fs::read(&src).map_err(io("read", &src))?;
            changed |= put(&dst, &bytes, meta.permissions().mode() & 0o7777)?;
        }
        names.push(name);
    }
    for e in std::fs::read_dir(to).map_err(io("read", to))?.flatten() {
        if !names.contains(&e.file_name()) && !keep.iter().any(|k| e.file_name() == *k) {
            let p = e.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(io("remove", &p))?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Whether systemd runs this machine (`sd_booted()`).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The daemon settings `host` gets from the installed system file.
fn installed_daemon(host: &str) -> Result<agent_config::defaults::EffectiveDaemon, InstallError> {
    let f = Path::new(ETC_DIR).join("system.yaml");
    let l = agent_config::load(&f).map_err(|e| InstallError::Config(e.to_string()))?;
    Ok(agent_config::defaults::daemon(&l.system, host))
}

/// The pid of the daemon answering on `socket`, if one does.
fn running_daemon(socket: &Path) -> Option<i32> {
    let out = Command::new(Path::new(BIN_DIR).join("supervisorctl"))
        .arg("-s")
        .arg(socket)
        .args(["status", "--json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["daemon_pid"].as_i64().and_then(|p| i32::try_from(p).ok())
}

fn wait_gone(pid: i32, within: std::time::Duration) -> bool {
    let t = std::time::Instant::now();
    let p = nix::unistd::Pid::from_raw(pid);
    while nix::sys::signal::kill(p, None).is_ok() {
        if t.elapsed() > within {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// Starts the installed daemon in a session of its own and waits for its control socket.
fn start_detached(host: &str) -> Result<i32, InstallError> {
    use std::os::unix::process::CommandExt;
    let d = installed_daemon(host)?;
    std::fs::create_dir_all(&d.log_dir).map_err(io("create", &d.log_dir))?;
    let log_path = d.log_dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io("open", &log_path))?;
    let log2 = log.try_clone().map_err(io("open", &log_path))?;
    let exe = Path::new(BIN_DIR).join("agent-supervisor");
    let mut cmd = Command::new(&exe);
    cmd.arg("daemon")
        .arg("--config")
        .arg(Path::new(ETC_DIR).join("system.yaml"))
        .args(["--host", host])
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: between fork and exec the child only calls setsid(2), which is
    // async-signal-safe; no allocation, no lock. A session of its own: the daemon outlives
    // the ssh session or terminal that ran `install` (no SIGHUP).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().map_err(io("start", &exe))?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    // Not waited for: it outlives this command (and is reaped by init when it ends).
    drop(child);
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(60) {
        if running_daemon(&d.control_socket) == Some(pid) {
            return Ok(pid);
        }
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(10).collect();
    Err(InstallError::Command {
        command: format!("{} daemon --host {host}", exe.display()),
        detail: format!(
            "no control socket at {} (log {}: {})",
            d.control_socket.display(),
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ),
    })
}

/// Step 4 without systemd.
fn run_without_systemd(
    host: &str,
    bins: bool,
    system: bool,
    log: &mut String,
) -> Result<(), InstallError> {
    let d = installed_daemon(host)?;
    match running_daemon(&d.control_socket) {
        None => {
            let pid = start_detached(host)?;
            log.push_str(&format!(
                "started the daemon (pid {pid}) without systemd: it will not come back after a reboot\n"
            ));
        }
        Some(pid) if bins => {
            // The agents stay for the new daemon (SIGQUIT).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
            if !wait_gone(pid, std::time::Duration::from_secs(30)) {
                return Err(InstallError::Command {
                    command: format!("kill -QUIT {pid}"),
                    detail: "the old daemon did not exit within 30 s".into(),
                });
            }
            let new = start_detached(host)?;
            log.push_str(&format!(
                "restarted the daemon ({pid} -> {new}; the agents kept running and were re-adopted)\n"
            ));
        }
        Some(_) if system => {
            let out = Command::new(Path::new(BIN_DIR).join("supervisorctl"))
                .arg("-s")
                .arg(&d.control_socket)
                .arg("reload")
                .output()
                .map_err(io("run", &Path::new(BIN_DIR).join("supervisorctl")))?;
            if !out.status.success() {
                return Err(InstallError::Command {
                    command: "supervisorctl reload".into(),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            log.push_str(&format!(
                "reloaded the system file: {}\n",
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .replace('\n', "; ")
            ));
        }
        Some(_) => log.push_str("running, nothing to do\n"),
    }
    Ok(())
}

/// The digests of the images in `host`'s store, by name (empty where there is no store).
fn image_digests(config: &Path, host: &str) -> Vec<(String, String)> {
    let Ok(l) = agent_config::load(config) else {
        return Vec::new();
    };
    let Ok(Some(store)) = agent_plan::Plan::store(&l, host) else {
        return Vec::new();
    };
    store
        .list()
        .map(|v| {
            v.into_iter()
                .map(|i| (i.name, i.digest.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Installs this machine as `host` of `config`; returns what it did, line by line.
pub fn install(config: &Path, host: &str) -> Result<String, InstallError> {
    let l = agent_config::load(config).map_err(|e| InstallError::Config(e.to_string()))?;
    if let Some(errors) = agent_config::validate::errors(&l) {
        return Err(InstallError::Config(errors.join("\n")));
    }
    if !l.system.hosts.contains_key(host) {
        return Err(InstallError::Config(format!(
            "host {host:?} is not in {}",
            config.display()
        )));
    }
    let mut log = String::new();
    let here = std::env::current_exe().map_err(io("find", Path::new("the running binary")))?;
    let bin_from = here.parent().unwrap_or(Path::new("."));
    let mut bins = false;
    for b in BINARIES {
        let src = bin_from.join(b);
        let bytes = std::fs::read(&src).map_err(io("read", &src))?;
        bins |= put(&Path::new(BIN_DIR).join(b), &bytes, 0o755)?;
    }
    log.push_str(&format!(
        "binaries in {BIN_DIR}: {}\n",
        if bins { "updated" } else { "unchanged" }
    ));
    let name = config
        .file_name()
        .ok_or_else(|| InstallError::Config(format!("{} names no file", config.display())))?;
    let dir = l.dir.clone();
    // A system file of another name is also installed as `system.yaml` (what the unit reads),
    // which the next sync must not take for a leftover.
    let keep: &[&str] = if name == "system.yaml" {
        &[]
    } else {
        &["system.yaml"]
    };
    let mut system = sync_tree(&dir, Path::new(ETC_DIR), keep)?;
    if name != "system.yaml" {
        // The unit reads /etc/agent-supervisor/system.yaml.
        let bytes = std::fs::read(config).map_err(io("read", config))?;
        system |= put(&Path::new(ETC_DIR).join("system.yaml"), &bytes, 0o644)?;
    }
    log.push_str(&format!(
        "system file and its directory in {ETC_DIR}: {}\n",
        if system { "updated" } else { "unchanged" }
    ));
    // The host's images, before any daemon resolves a plan that names them.
    let installed = Path::new(ETC_DIR).join("system.yaml");
    let wants_images = l.system.groups.values().any(|g| {
        g.host == host && agent_config::defaults::image(g) != agent_config::defaults::HOST_IMAGE
    });
    if wants_images {
        let before = image_digests(&installed, host);
        crate::images_cli::build(&installed, Some(host), None, false, Default::default()).map_err(
            |e| InstallError::Config(format!("building the images of host {host}: {e}")),
        )?;
        let after = image_digests(&installed, host);
        let changed = before != after;
        system |= changed;
        log.push_str(&format!(
            "images built: {}\n",
            if changed { "new digests" } else { "unchanged" }
        ));
    }
    if !systemd_running() {
        run_without_systemd(host, bins, system, &mut log)?;
        return Ok(log);
    }
    let mut unit = put(Path::new(UNIT_PATH), UNIT_TEXT.as_bytes(), 0o644)?;
    unit |= put(
        Path::new(DEFAULT_PATH),
        format!("AGENT_SUPERVISOR_ARGS=--host {host}\n").as_bytes(),
        0o644,
    )?;
    log.push_str(&format!(
        "unit {UNIT_PATH}: {}\n",
        if unit { "updated" } else { "unchanged" }
    ));
    if unit {
        systemctl(&["daemon-reload"])?;
    }
    systemctl(&["enable", "--quiet", UNIT])?;
    if !active() {
        systemctl(&["start", UNIT])?;
        log.push_str("started (systemctl start returned: every agent is at its target)\n");
    } else if bins || unit {
        systemctl(&["restart", UNIT])?;
        log.push_str("restarted (the agents kept running and were re-adopted)\n");
    } else if system {
        systemctl(&["reload", UNIT])?;
        log.push_str("reloaded the system file\n");
    } else {
        log.push_str("running, nothing to do\n");
    }
    Ok(log)
}

/// Removes what [`install`] put in place, after stopping the daemon and its agents.
pub fn uninstall(purge: bool) -> Result<String, InstallError> {
    let mut log = String::new();
    if !systemd_running() {
        // The daemon this machine runs without systemd: every host of the installed file
        // whose control socket answers here.
        if let Ok(l) = agent_config::load(&Path::new(ETC_DIR).join("system.yaml")) {
            for h in l.system.hosts.keys() {
                let socket = agent_config::defaults::daemon(&l.system, h).control_socket;
                if let Some(pid) = running_daemon(&socket) {
                    let _ = Command::new(Path::new(BIN_DIR).join("supervisorctl"))
                        .arg("-s")
                        .arg(&socket)
                        .arg("shutdown")
                        .output();
                    if !wait_gone(pid, std::time::Duration::from_secs(120)) {
                        return Err(InstallError::Command {
                            command: "supervisorctl shutdown".into(),
                            detail: format!("daemon {pid} still runs after 120 s"),
                        });
                    }
                    log.push_str(&format!("stopped the daemon of host {h} and its agents\n"));
                }
            }
        }
    }
    if Path::new(UNIT_PATH).exists() {
        // Stops every agent (reverse dependency order), their cgroups, namespaces, rules.
        systemctl(&["disable", "--now", "--quiet", UNIT])?;
        log.push_str("stopped and disabled the service\n");
    }
    let mut state = Vec::new();
    if purge {
        if let Ok(l) = agent_config::load(&Path::new(ETC_DIR).join("system.yaml")) {
            for h in l.system.hosts.keys() {
                let d = agent_config::defaults::daemon(&l.system, h);
                state.extend([d.state_dir, d.log_dir, d.run_dir]);
            }
        }
    }
    let mut gone: Vec<PathBuf> = vec![PathBuf::from(UNIT_PATH), PathBuf::from(DEFAULT_PATH)];
    gone.extend(BINARIES.iter().map(|b| Path::new(BIN_DIR).join(b)));
    gone.push(PathBuf::from(ETC_DIR));
    gone.extend(state);
    for p in gone {
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match r {
            Ok(()) => log.push_str(&format!("removed {}\n", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &p)(e)),
        }
    }
    if systemd_running() {
        systemctl(&["daemon-reload"])?;
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_tree_writes_what_differs_and_removes_what_is_gone() {
        let base = std::env::temp_dir().join(format!("install-sync-{}", std::process::id()));
        let (from, to) = (base.join("from"), base.join("to"));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(from.join("agents")).expect("dirs");
        std::fs::write(from.join("mine.yaml"), "hosts: {}\n").expect("write");
        std::fs::write(from.join("agents/a.py"), "print(1)\n").expect("write");
        std::fs::create_dir_all(from.join(".git")).expect("dirs");
        assert!(sync_tree(&from, &to, &["system.yaml"]).expect("first sync"));
        assert!(to.join("agents/a.py").is_file() && !to.join(".git").exists());
        // The installed `system.yaml` beside a file of another name survives the next sync.
        std::fs::write(to.join("system.yaml"), "hosts: {}\n").expect("write");
        assert!(!sync_tree(&from, &to, &["system.yaml"]).expect("second sync"));
        assert!(to.join("system.yaml").is_file());
        // A file gone from the source goes from the target too.
        std::fs::remove_file(from.join("agents/a.py")).expect("remove");
        assert!(sync_tree(&from, &to, &["system.yaml"]).expect("third sync"));
        assert!(!to.join("agents/a.py").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
