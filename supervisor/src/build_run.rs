//! The sandbox of a recipe's `run` step (`agent_images::StepRunner`): the image's layers
//! stacked with overlayfs under the step's upper directory, the command run there by the same
//! launcher as a group (`__group-init` then `__agent`: own mount, pid, uts, ipc and cgroup
//! namespaces, pivot_root, masked paths, default capabilities and seccomp, its own cgroup),
//! with the host's network so package managers can fetch (`pip install ...`).
//!
//! Its output is collected; on failure the error carries the exit status and the output's
//! last lines. Everything it made (cgroups, the pod's directory, the processes) is gone when
//! `run` returns; the upper directory stays for the builder to read.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use agent_images::{RunError, RunRequest, StepRunner};
use agent_rootfs::{Compression, LayerCache, LayerRef, PreparedRootfs};

use crate::cgroup::{Cgroup, Layout, Limits};
use crate::launch::mounts::{MASKED_PATHS, READONLY_PATHS};
use crate::launch::spec::{self, AgentSpec, BindSpec, GroupSpec, RootfsSpec};

/// Lines of output quoted when a `run` step fails.
const TAIL_LINES: usize = 20;

/// Runs `run` steps with the launcher of this binary.
#[derive(Debug, Clone)]
pub struct SandboxRunner {
    /// The `agent-supervisor` binary with the hidden launcher subcommands.
    pub launcher: PathBuf,
    /// Unpacked layers are cached in `<state_dir>/layers`, shared with the groups.
    pub state_dir: PathBuf,
    /// The pod's spec files live in `<run_dir>/build/`.
    pub run_dir: PathBuf,
    /// The build's cgroup goes under this root (`cgroup_root`), as `build-<pid>-<n>`.
    pub cgroup_root: String,
}

impl SandboxRunner {
    /// A runner for the host settings `d`, with the daemon's launcher (`agent-launch` next to
    /// this executable, else this executable).
    pub fn for_daemon(
        d: &agent_config::defaults::EffectiveDaemon,
    ) -> Result<Self, crate::pod::PodError> {
        Ok(SandboxRunner {
            launcher: crate::pod::launcher()?,
            state_dir: d.state_dir.clone(),
            run_dir: d.run_dir.clone(),
            cgroup_root: d.cgroup_root.clone(),
        })
    }
}

impl StepRunner for SandboxRunner {
    fn run(&self, req: &RunRequest<'_>) -> Result<(), RunError> {
        if let Some(u) = req.user.filter(|u| !matches!(*u, "root" | "0" | "0:0")) {
            return Err(RunError::Unsupported(format!(
                "the image's user is {u:?}; run steps run as root only for now (put `user` after the run steps)"
            )));
        }
        if !agent_rootfs::overlay_supported() {
            return Err(RunError::Unsupported(
                "run steps need overlayfs, and this kernel has none".to_string(),
            ));
        }
        let name = format!(
            "build-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let dir = self.run_dir.join("build").join(&name);
        let cg = |e: crate::cgroup::CgroupError| sandbox(format!("cgroup {name}"), e);
        let layout = Layout::detect().map_err(cg)?;
        let root = Cgroup::root(&layout, &self.cgroup_root).map_err(cg)?;
        let cgroup = root.create_child(&name, &Limits::default()).map_err(cg)?;
        // A recipe's `run` step gets the default device list, as a group does.
        let result = match cgroup.set_devices(&agent_devices::group_rules(&[])) {
            Ok(()) => self.run_in(req, &name, &dir, &cgroup),
            Err(e) => Err(cg(e)),
        };
        // Whatever happened: nothing of the sandbox outlives the step.
        let _ = cgroup.kill();
        let cleanup = cgroup.remove().map_err(cg);
        let _ = std::fs::remove_dir_all(&dir);
        result.and(cleanup)
    }
}

impl SandboxRunner {
    fn run_in(
        &self,
        req: &RunRequest<'_>,
        name: &str,
        dir: &Path,
        cgroup: &Cgroup,
    ) -> Result<(), RunError> {
        for d in ["root", "agent"] {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).map_err(RunError::io("create", &p))?;
        }
        let cache = LayerCache::new(self.state_dir.join("layers"));
        let mut lowers = Vec::new();
        for l in &req.layers {
            let media = Compression::from_media_type(&l.media_type).ok_or_else(|| {
                RunError::Unsupported(format!(
                    "layer {} has media type {}, which cannot be unpacked",
                    l.digest, l.media_type
                ))
            })?;
            let layer = LayerRef {
                digest: l.digest.clone(),
                blob: l.blob.clone(),
                media,
            };
            lowers.push(
                cache
                    .ensure(&layer)
                    .map_err(|e| sandbox(format!("unpack layer {}", l.digest), e))?,
            );
        }
        if lowers.is_empty() {
            // A scratch image: overlayfs needs one lower directory.
            let empty = dir.join("empty-lower");
            std::fs::create_dir_all(&empty).map_err(RunError::io("create", &empty))?;
            lowers.push(empty);
        }
        lowers.reverse();
        let data = PreparedRootfs::Overlay {
            lowers,
            upper: req.upper.clone(),
            work: req.work.clone(),
        }
        .overlay_mount_data()
        .map_err(|e| sandbox("overlay", e))?
        .ok_or_else(|| sandbox("overlay", "no mount data for the overlay"))?;
        // The upper directory becomes the layer, so it must hold full copies: no metadata-only
        // copy-ups, no renamed directories that point at their lower. Turned off explicitly
        // where the kernel has the options (its defaults come from its build and module
        // parameters).
        let mut data = data;
        for opt in ["metacopy", "redirect_dir"] {
            if Path::new("/sys/module/overlay/parameters")
                .join(opt)
                .exists()
            {
                data.push_str(&format!(",{opt}=off"));
            }
        }
        let mut binds = Vec::new();
        let resolv = Path::new("/etc/resolv.conf");
        if let Ok(src) = std::fs::canonicalize(resolv) {
            binds.push(BindSpec {
                source: src,
                target: resolv.to_path_buf(),
                readonly: true,
            });
        }
        let init_procs = cgroup
            .join_leaf("init")
            .map_err(|e| sandbox(format!("cgroup {name}/init"), e))?;
        let group = GroupSpec {
            group: name.to_string(),
            hostname: "build".to_string(),
            cgroup_procs: init_procs,
            root_dir: dir.join("root"),
            rootfs: RootfsSpec::Overlay { data },
            binds,
            private_network: false,
            network: None,
            masked_paths: MASKED_PATHS.iter().map(PathBuf::from).collect(),
            readonly_paths: READONLY_PATHS.iter().map(PathBuf::from).collect(),
            devices: Vec::new(),
            symlinks: Vec::new(),
        };
        let group_spec = dir.join("group.json");
        spec::write(&group_spec, &group).map_err(|e| sandbox("group spec", e))?;
        let out = Command::new(&self.launcher)
            .arg("__group-init")
            .arg(&group_spec)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| sandbox(format!("run {} __group-init", self.launcher.display()), e))?;
        if !out.status.success() {
            return Err(sandbox(
                "the sandbox did not start",
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        let (init_pid, init_start_time) = crate::launch::init::started(&out.stdout)
            .map_err(|e| sandbox("the sandbox did not start", e))?;
        let agent_cg = cgroup
            .create_child("run", &Limits::default())
            .map_err(|e| sandbox(format!("cgroup {name}/run"), e))?;
        let env: Vec<(String, String)> = req
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let agent = AgentSpec {
            group: name.to_string(),
            agent: "run".to_string(),
            init_pid,
            init_start_time,
            private_network: false,
            cgroup_procs: agent_cg.procs_files(),
            argv: req.argv.to_vec(),
            env,
            workdir: PathBuf::from(req.workdir.unwrap_or("/")),
            capabilities: crate::launch::sandbox::effective_caps(&[], &[])
                .map_err(|e| sandbox("capabilities", e))?,
            seccomp: true,
            rlimits: Vec::new(),
            pid_file: None,
            exit_file: Some(dir.join("agent/run.exit")),
            log: None,
        };
        let agent_spec = dir.join("agent/run.json");
        spec::write(&agent_spec, &agent).map_err(|e| sandbox("agent spec", e))?;
        // stdout and stderr share one pipe, so the quoted tail keeps their order.
        let (reader, writer) = std::io::pipe().map_err(|e| sandbox("pipe", e))?;
        let writer2 = writer.try_clone().map_err(|e| sandbox("pipe", e))?;
        let mut child = Command::new(&self.launcher)
            .arg("__agent")
            .arg(&agent_spec)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            .spawn()
            .map_err(|e| sandbox(format!("run {} __agent", self.launcher.display()), e))?;
        // Read on a thread: a process the command left in the background may hold the pipe
        // until the sandbox's init, and with it its pid namespace, is killed below.
        let reading = std::thread::spawn(move || read_all(reader));
        let status = child.wait().map_err(|e| sandbox("wait for the command", e));
        // The init, and with it its pid namespace; checked by start time, so a pid the
        // kernel gave to another process since is never signalled.
        if crate::launch::proc_start_time(init_pid) == Some(init_start_time) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = cgroup.kill();
        let output = reading.join().unwrap_or_default();
        let status = status?;
        let record: Option<spec::ExitRecord> = spec::read(&dir.join("agent/run.exit")).ok();
        let how = match &record {
            Some(r) if r.error.is_some() => format!(
                "could not start: {}",
                r.error.as_deref().unwrap_or_default()
            ),
            Some(r) if r.code == Some(0) => return Ok(()),
            Some(r) => match (r.code, r.signal) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(s)) => format!("was killed by signal {s}"),
                _ => "ended without a status".to_string(),
            },
            None if status.success() => return Ok(()),
            None => format!("ended with {status}"),
        };
        Err(RunError::Command {
            argv: req.argv.to_vec(),
            how,
            output: tail(&output),
        })
    }
}

/// A [`RunError::Sandbox`]: `what` part of the sandbox failed with `e`.
fn sandbox(what: impl Into<String>, e: impl std::fmt::Display) -> RunError {
    RunError::Sandbox {
        what: what.into(),
        message: e.to_string(),
    }
}

/// Whether `name` is the cgroup of a `run` step whose build (`build-<pid>-<n>`) is still
/// running: the daemon's stray sweep leaves it alone.
pub fn is_live_build(name: &str) -> bool {
    name.strip_prefix("build-")
        .and_then(|r| r.split('-').next())
        .and_then(|pid| pid.parse::<i32>().ok())
        .is_some_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

/// Reads the pipe to its end (every writer closed).
fn read_all(mut r: std::io::PipeReader) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut r, &mut buf);
    buf
}

/// The last lines of the output, indented, for an error message.
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return " (no output)".to_string();
    }
    let from = lines.len().saturating_sub(TAIL_LINES);
    let mut s = String::from("; its output ends with:");
    for l in &lines[from..] {
        s.push_str("\n    ");
        s.push_str(l);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_cgroup_is_live_while_its_process_is() {
        assert!(is_live_build(&format!("build-{}-7", std::process::id())));
        assert!(!is_live_build("build-2147483646-1"), "no such process");
        assert!(!is_live_build("web"), "a group, not a build");
        assert!(!is_live_build("build-x-1"));
    }

    #[test]
    fn the_tail_quotes_the_last_lines() {
        let out: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let t = tail(out.as_bytes());
        assert!(t.contains("line 30") && t.contains("line 11") && !t.contains("line 10\n"));
        assert_eq!(tail(b""), " (no output)");
    }
}
