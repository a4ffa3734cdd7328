//! `agent-supervisor install --config FILE --host H` and `uninstall [--purge]`: this machine
//! as host H of the system, run by systemd.
//!
//! `install`, in steps, each skipped when what is there is already the same (so a second
//! install changes nothing and restarts nothing):
//! 1. the binaries next to this one (`agent-supervisor`, `agent-launch`, `supervisorctl`,
//!    `agent-bridge`) to [`BIN_DIR`];
//! 2. the system file's directory (the file and what it names relative to itself: agent code,
//!    env files, keys; not `.git`, `target` or the daemon's own directories) to [`ETC_DIR`];
//! 3. the unit (`systemd/agent-supervisor.service`, built in) to [`UNIT_PATH`] and
//!    `AGENT_SUPERVISOR_ARGS=--host H` to [`DEFAULT_PATH`];
//! 4. `systemctl daemon-reload`, `enable`, and `start` — or, when something changed and the
//!    daemon runs, `restart` (the agents stay: see the unit's `ExecStop=`), or `reload`
//!    when only the system directory changed.
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
/// if anything changed. Files of `to` that `from` does not have are removed.
fn sync_tree(from: &Path, to: &Path) -> Result<bool, InstallError> {
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
            changed |= sync_tree(&src, &dst)?;
        } else if meta.is_file() {
            let bytes = std::fs::read(&src).map_err(io("read", &src))?;
            changed |= put(&dst, &bytes, meta.permissions().mode() & 0o7777)?;
        }
        names.push(name);
    }
    for e in std::fs::read_dir(to).map_err(io("read", to))?.flatten() {
        if !names.contains(&e.file_name()) {
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
    let mut system = sync_tree(&dir, Path::new(ETC_DIR))?;
    if name != "system.yaml" {
        // The unit reads /etc/agent-supervisor/system.yaml.
        let bytes = std::fs::read(config).map_err(io("read", config))?;
        system |= put(&Path::new(ETC_DIR).join("system.yaml"), &bytes, 0o644)?;
    }
    log.push_str(&format!(
        "system file and its directory in {ETC_DIR}: {}\n",
        if system { "updated" } else { "unchanged" }
    ));
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
    systemctl(&["daemon-reload"])?;
    Ok(log)
}
