//! `agent-supervisor export kubernetes|nomad`: the system's hosts as Kubernetes manifests or
//! a Nomad job (the mapping is `agent-export`'s; `docs/import-export.md`).
//!
//! Each host is planned with [`agent_plan::Plan::resolve_portable`]: its image store is read
//! for digests where this machine has it, and its absence (a laptop) is a warning, not an
//! error (images are then referenced by name).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agent_config::Finding;
use agent_export::{Input, Notes, Push};
use agent_plan::{HostPlan, Plan};

/// The registry the manifests name unless `--registry` says another.
pub const DEFAULT_REGISTRY: &str = "registry.example.com/agent-supervisor";

/// `export` subcommands.
#[derive(clap::Subcommand)]
pub enum ExportCmd {
    /// Kubernetes manifests: a YAML file per group (Namespace, ConfigMap, Services,
    /// Deployment or StatefulSet) and NOTES.md (images to push, what was not carried) in DIR.
    Kubernetes {
        /// The system file (YAML).
        config: PathBuf,
        /// Only this host (default: every host of the system).
        #[arg(long)]
        host: Option<String>,
        /// The directory to write (created).
        #[arg(long, short = 'o')]
        out: PathBuf,
        /// The registry the images are pushed to.
        #[arg(long, default_value = DEFAULT_REGISTRY)]
        registry: String,
    },
    /// A Nomad job in the API's JSON form (`{"Job": ...}`, for `nomad job run -json`).
    Nomad {
        /// The system file (YAML).
        config: PathBuf,
        /// Only this host (default: every host of the system).
        #[arg(long)]
        host: Option<String>,
        /// The file to write, or a directory (`<job>.nomad.json` in it).
        #[arg(long, short = 'o')]
        out: PathBuf,
        /// The registry the images are pushed to.
        #[arg(long, default_value = DEFAULT_REGISTRY)]
        registry: String,
        /// The job's ID (default: the system file's directory name).
        #[arg(long)]
        job: Option<String>,
    },
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportCliError {
    /// The system file does not load or validate, or a host's plan does not resolve.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Findings(Vec<Finding>),
    #[error(transparent)]
    Export(#[from] agent_export::ExportError),
}

/// Runs the command: what it wrote, the images to push and the notes, as text.
pub fn run(cmd: ExportCmd) -> Result<String, ExportCliError> {
    match cmd {
        ExportCmd::Kubernetes {
            config,
            host,
            out,
            registry,
        } => {
            let (l, plans) = plans(&config, host.as_deref())?;
            let input = Input {
                loaded: &l,
                plans: &plans,
                registry,
            };
            let k = agent_export::kubernetes(&input)?;
            k.write(&out)?;
            let mut s = format!(
                "wrote {} manifest files and NOTES.md to {}\n",
                k.files.len(),
                out.display()
            );
            s.push_str(&summary(&k.pushes, &k.notes));
            Ok(s)
        }
        ExportCmd::Nomad {
            config,
            host,
            out,
            registry,
            job,
        } => {
            let (l, plans) = plans(&config, host.as_deref())?;
            let input = Input {
                loaded: &l,
                plans: &plans,
                registry,
            };
            let job = job.unwrap_or_else(|| job_name(&l.dir));
            let n = agent_export::nomad(&input, &job)?;
            let file = n.write(&out)?;
            let mut s = format!("wrote job {job} to {}\n", file.display());
            s.push_str(&summary(&n.pushes, &n.notes));
            Ok(s)
        }
    }
}

/// [`run`], printed; exit 1 on an error.
pub fn main(cmd: ExportCmd) -> ExitCode {
    match run(cmd) {
        Ok(text) => {
            crate::out!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agent-supervisor export: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The job name of a system: its directory's name, as a DNS label (`ai-system`).
fn job_name(dir: &Path) -> String {
    let name: String = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "agent-system".to_string()
    } else {
        name
    }
}

/// Loads and validates the file and plans `host` (or every host), printing the warnings.
fn plans(
    file: &Path,
    host: Option<&str>,
) -> Result<(agent_config::Loaded, Vec<HostPlan>), ExportCliError> {
    let l = agent_config::load(file).map_err(|e| ExportCliError::Findings(e.findings()))?;
    // A bind source is a path of the host the group runs on, which this machine (a laptop)
    // need not have: a warning here, as in the portable plan.
    let (missing_binds, errors): (Vec<Finding>, Vec<Finding>) =
        agent_config::validate::validate(&l)
            .into_iter()
            .filter(Finding::is_error)
            .partition(|f| f.code == "bind" && f.message.ends_with("does not exist"));
    for f in missing_binds {
        eprintln!(
            "warning: {} (not on this machine: kept as written)",
            f.message
        );
    }
    if !errors.is_empty() {
        return Err(ExportCliError::Findings(errors));
    }
    let hosts: Vec<String> = match host {
        Some(h) => vec![h.to_string()],
        None => l.system.hosts.keys().cloned().collect(),
    };
    let mut plans = Vec::new();
    for h in &hosts {
        let store = match Plan::store(&l, h) {
            Ok(s) => s,
            Err(f) => {
                eprintln!("{f} (images are referenced by name)");
                None
            }
        };
        let (plan, warnings) =
            Plan::resolve_portable(&l, h, store.as_ref()).map_err(ExportCliError::Findings)?;
        for w in warnings {
            eprintln!("{w}");
        }
        plans.push(plan);
    }
    Ok((l, plans))
}

fn summary(pushes: &[Push], notes: &Notes) -> String {
    let mut s = String::new();
    if !pushes.is_empty() {
        s.push_str("push the images first, on the host that built them:\n");
        for p in pushes {
            s.push_str(&format!("  [{}] {}\n", p.host, p.command));
        }
    }
    s.push_str("not carried as is:\n");
    for n in notes.lines() {
        s.push_str(&format!("  {n}\n"));
    }
    s
}
