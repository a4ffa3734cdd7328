//! `agent-supervisor bundle CONFIG --host H GROUP DIR`: a group as an OCI runtime bundle
//! (`config.json` + `rootfs/`), so the same group can run under crun or runc for comparison.
//!
//! The bundle mirrors what `crate::pod` and the launcher build (`docs/launcher.md`): the same
//! namespaces, the `host` rootfs skeleton with the host's system directories bound read-only,
//! `/proc`, a minimal `/dev`, read-only `/sys`, tmpfs `/tmp` and `/run`, the group's binds,
//! masked and read-only paths, the kept capabilities, `no_new_privs`, the default seccomp
//! filter and the group's resource limits. `oci` builds `config.json`.

mod oci;

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use agent_plan::{AgentPlan, GroupPlan, Plan, RootfsPlan};

use crate::cgroup::Limits;

/// Why a group could not be exported; each names the file, group, agent or field.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("group {group}: security: {message}")]
    Security { group: String, message: String },
    #[error("system file {path} has errors:\n{}", .errors.join("\n"))]
    Invalid { path: PathBuf, errors: Vec<String> },
    #[error("--host {host:?} is not a host of {path}")]
    NoHost { host: String, path: PathBuf },
    #[error("group {group:?} is not in {path}")]
    NoGroup { group: String, path: PathBuf },
    #[error("group {group} runs on host {runs_on}, not {host}")]
    WrongHost {
        group: String,
        runs_on: String,
        host: String,
    },
    #[error("group {group} has no agents: an OCI bundle needs a process")]
    NoAgents { group: String },
    #[error("group {group} has no agent {agent:?} (agents: {})", .known.join(", "))]
    NoAgent {
        group: String,
        agent: String,
        known: Vec<String>,
    },
    #[error(
        "group {group} runs from image {image:?}: only groups on the `host` image can be exported"
    )]
    FromImage { group: String, image: String },
    #[error("group {group}: {source}")]
    Rootfs {
        group: String,
        #[source]
        source: agent_rootfs::RootfsError,
    },
    #[error("bundle directory {dir} is not empty: give a new or empty directory")]
    DirNotEmpty { dir: PathBuf },
    #[error("bundle directory {dir} exists and is not a directory")]
    NotADir { dir: PathBuf },
    #[error("group {group}: bind target {target}: {why}")]
    BadBind {
        group: String,
        target: PathBuf,
        why: &'static str,
    },
    #[error("group {group}: {field} = {value} does not fit an OCI bundle ({why})")]
    Value {
        group: String,
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("group {group}: cannot build {what} of config.json: {source}")]
    Spec {
        group: String,
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |source| BundleError::Io { what, path, source }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// `DIR/config.json`.
    pub config_json: PathBuf,
    /// The agent that is the bundle's process.
    pub agent: String,
    /// The group's other agents, which are not in the bundle.
    pub left_out: Vec<String>,
}

/// Writes `group` of `host` from the system file `config` as an OCI runtime bundle in `dir`
/// (created; refused when it exists and is not empty): `config.json` and `rootfs/`.
///
/// An OCI bundle runs one process, and a group is a pod of several agents. The bundle's
/// process is the group's **first agent as written in the system file**; the other agents
/// are left out (listed in [`Exported::left_out`]; use [`export_agent`] to pick another one).
/// Everything else (namespaces, root file system, binds, limits, sandbox) is the group's.
///
/// Only groups on the `host` image can be exported today: other images are not built yet.
pub fn export(config: &Path, host: &str, group: &str, dir: &Path) -> Result<Exported, BundleError> {
    export_agent(config, host, group, None, dir)
}

/// [`export`] with the bundle's process chosen by name (`None`: the first agent).
pub fn export_agent(
    config: &Path,
    host: &str,
    group: &str,
    agent: Option<&str>,
    dir: &Path,
) -> Result<Exported, BundleError> {
    let (l, plan) = Plan::load(config, host, Some(group)).map_err(|findings| {
        if findings.iter().any(|f| f.code == "plan-host") {
            return BundleError::NoHost {
                host: host.to_string(),
                path: config.to_path_buf(),
            };
        }
        BundleError::Invalid {
            path: config.to_path_buf(),
            errors: findings.iter().map(|f| f.to_string()).collect(),
        }
    })?;
    let Some(g) = plan.groups.get(group) else {
        return Err(match l.system.groups.get(group) {
            Some(other) => BundleError::WrongHost {
                group: group.to_string(),
                runs_on: other.host.clone(),
                host: host.to_string(),
            },
            None => BundleError::NoGroup {
                group: group.to_string(),
                path: config.to_path_buf(),
            },
        });
    };
    let a = pick_agent(group, g, agent)?;
    let host_entries = match &g.rootfs {
        RootfsPlan::Host { entries } => entries,
        RootfsPlan::Image(image) => {
            return Err(BundleError::FromImage {
                group: group.to_string(),
                image: image.name.clone(),
            })
        }
    };
    let binds = binds(g)?;
    let inputs = oci::Inputs {
        group,
        agent: &a.name,
        argv: a.argv.clone(),
        env: a.full_env(),
        cwd: a.workdir.clone(),
        host_entries,
        binds: &binds,
        limits: Limits::from(&g.limits),
        caps: crate::pod::spec_of::capabilities(&g.security).map_err(|message| {
            BundleError::Security {
                group: group.to_string(),
                message,
            }
        })?,
        seccomp: g.security.seccomp,
        devices: &g.devices,
    };
    let spec = oci::spec(&inputs)?;
    let json = oci::to_json(group, &spec)?;

    let created = prepare_dir(dir)?;
    let config_json = dir.join("config.json");
    let written = write_rootfs(&dir.join("rootfs"), host_entries, &binds)
        .and_then(|()| write_private(&config_json, &json));
    if let Err(e) = written {
        // Leave the directory as it was: gone, or empty.
        if created {
            let _ = std::fs::remove_dir_all(dir);
        } else {
            let _ = std::fs::remove_dir_all(dir.join("rootfs"));
            let _ = std::fs::remove_file(&config_json);
        }
        return Err(e);
    }
    Ok(Exported {
        config_json,
        agent: a.name.clone(),
        left_out: g.agents.keys().filter(|x| **x != a.name).cloned().collect(),
    })
}

fn pick_agent<'a>(
    group: &str,
    g: &'a GroupPlan,
    agent: Option<&str>,
) -> Result<&'a AgentPlan, BundleError> {
    match agent {
        None => g
            .agents
            .values()
            .next()
            .ok_or_else(|| BundleError::NoAgents {
                group: group.to_string(),
            }),
        Some(name) => g.agents.get(name).ok_or_else(|| BundleError::NoAgent {
            group: group.to_string(),
            agent: name.to_string(),
            known: g.agents.keys().cloned().collect(),
        }),
    }
}

/// A bind of the bundle: host source, target inside the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

/// The group's binds as the plan resolved them (the system file's directory first, for
/// groups on the `host` image); targets must be plain absolute paths.
fn binds(g: &GroupPlan) -> Result<Vec<Bind>, BundleError> {
    // The group's binds, then its GPUs' driver files.
    g.binds
        .iter()
        .chain(&g.devices.mounts)
        .map(|b| {
            let ok = b.target.is_absolute()
                && b.target
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !ok {
                return Err(BundleError::BadBind {
                    group: g.name.clone(),
                    target: b.target.clone(),
                    why: "must be an absolute path without `.` or `..`",
                });
            }
            Ok(Bind {
                source: b.source.clone(),
                target: b.target.clone(),
                readonly: b.readonly,
            })
        })
        .collect()
}

/// Creates `dir` or accepts it empty; `true` when it was created.
fn prepare_dir(dir: &Path) -> Result<bool, BundleError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => Err(BundleError::NotADir {
            dir: dir.to_path_buf(),
        }),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(io("read bundle directory", dir))?;
            if entries.next().is_some() {
                return Err(BundleError::DirNotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io("create bundle directory", dir))?;
            Ok(true)
        }
        Err(e) => Err(io("inspect bundle directory", dir)(e)),
    }
}

/// Directories of the skeleton that the runtime mounts over (as the launcher's host rootfs).
const SKELETON_DIRS: &[&str] = &[
    "proc", "dev", "sys", "tmp", "run", "var", "var/tmp", "root", "home",
];

/// Mount points whose contents the runtime provides: binds under them need no mount point
/// in `rootfs/` (the runtime creates it in the tmpfs).
const RUNTIME_MOUNTS: &[&str] = &["/proc", "/dev", "/sys", "/tmp", "/run", "/var/tmp"];

/// `rootfs/`: the `host` skeleton (an empty directory per host system directory, usrmerge
/// symlinks as symlinks, the runtime's mount points) and mount points of the binds outside
/// the host directories and the runtime's tmpfs mounts.
fn write_rootfs(
    rootfs: &Path,
    host_entries: &[agent_rootfs::HostEntry],
    binds: &[Bind],
) -> Result<(), BundleError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o755);
    let mkdir = |p: &Path| builder.create(p).map_err(io("create directory", p));
    mkdir(rootfs)?;
    let inside = |p: &Path| rootfs.join(p.strip_prefix("/").unwrap_or(p));
    let mut covered: Vec<PathBuf> = RUNTIME_MOUNTS.iter().map(PathBuf::from).collect();
    for e in host_entries {
        match e {
            agent_rootfs::HostEntry::Dir(d) => {
                mkdir(&inside(d))?;
                covered.push(d.clone());
            }
            agent_rootfs::HostEntry::Symlink { path, target } => {
                let link = inside(path);
                std::os::unix::fs::symlink(target, &link).map_err(io("create symlink", &link))?;
                covered.push(path.clone());
            }
        }
    }
    for d in SKELETON_DIRS {
        let p = rootfs.join(d);
        if std::fs::symlink_metadata(&p).is_err() {
            mkdir(&p)?;
        }
    }
    for b in binds {
        if covered.iter().any(|c| b.target.starts_with(c)) {
            continue;
        }
        let p = inside(&b.target);
        if b.source.is_dir() {
            mkdir(&p)?;
        } else {
            if let Some(parent) = p.parent() {
                mkdir(parent)?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p)
                .map_err(io("create mount point", &p))?;
        }
    }
    Ok(())
}

/// Writes `config.json` readable by its owner only: the environment may hold secrets from
/// the group's `env_file`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    f.write_all(bytes).map_err(io("write", path))
}
