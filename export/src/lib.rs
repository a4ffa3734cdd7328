//! Exports a system to an existing distributed engine: Kubernetes manifests
//! ([`kubernetes`]) and a Nomad job in the API's JSON form ([`nomad`]).
//!
//! Both take the resolved plans of the exported hosts ([`agent_plan::HostPlan`], usually from
//! [`agent_plan::Plan::resolve_portable`], which needs neither this machine's GPUs nor its
//! image store) and the loaded system file, which is read for two things the plan resolves
//! away on purpose: a group's GPU *request* (the plan holds the GPUs this machine granted)
//! and its `env_file` (the plan holds the merged environment; the export turns the file into
//! a ConfigMap). A group is a Kubernetes pod (or a Nomad task group): one container (task) per
//! agent, sharing the network. What cannot be carried is never dropped silently: it is a
//! [`Note`] naming the group or agent and why, written to `NOTES.md` (Kubernetes) or
//! printed (both). `docs/import-export.md` describes the mapping.

use std::path::PathBuf;

use agent_config::Loaded;
use agent_plan::HostPlan;

pub mod kube;
mod kube_pod;
pub mod names;
pub mod nomad;
mod nomad_task;
mod yaml;

pub use kube::{kubernetes, KubeExport};
pub use names::Names;
pub use nomad::{nomad, NomadExport};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A name that cannot become a Kubernetes (or Nomad) name, or two that become the same.
    #[error("{0}")]
    Name(String),
    /// A group's `env_file` could not be read.
    #[error("group {group}: {source}")]
    EnvFile {
        group: String,
        #[source]
        source: agent_config::envfile::EnvFileError,
    },
    /// Writing an output file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an export reads: the system file and the plans of the hosts it exports.
pub struct Input<'a> {
    pub loaded: &'a Loaded,
    /// The exported hosts' plans, in the file's order of hosts.
    pub plans: &'a [HostPlan],
    /// Where the images are pushed: `REGISTRY/<image>@<digest>` (e.g. `registry.example.com/ai`).
    pub registry: String,
}

/// Something the export could not carry as it is, about one group or agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `group redis`, `agent redis (group redis)`, or `system`.
    pub scope: String,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.scope, self.message)
    }
}

/// The notes of one export, in the order they were made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes(pub Vec<Note>);

impl Notes {
    pub fn group(&mut self, group: &str, message: impl Into<String>) {
        self.push(format!("group {group}"), message.into());
    }

    pub fn agent(&mut self, group: &str, agent: &str, message: impl Into<String>) {
        self.push(format!("agent {agent} (group {group})"), message.into());
    }

    pub fn system(&mut self, message: impl Into<String>) {
        self.push("system".to_string(), message.into());
    }

    fn push(&mut self, scope: String, message: String) {
        let n = Note { scope, message };
        if !self.0.contains(&n) {
            self.0.push(n);
        }
    }

    /// The notes with one message for many groups or agents said once:
    /// `(scopes, message)`, in the order of each message's first note.
    pub fn merged(&self) -> Vec<(Vec<String>, String)> {
        let mut out: Vec<(Vec<String>, String)> = Vec::new();
        for n in &self.0 {
            match out.iter_mut().find(|(_, m)| *m == n.message) {
                Some((scopes, _)) => scopes.push(n.scope.clone()),
                None => out.push((vec![n.scope.clone()], n.message.clone())),
            }
        }
        out
    }

    /// The notes as text lines, one per message (`groups a, b: ...`).
    pub fn lines(&self) -> Vec<String> {
        self.merged()
            .into_iter()
            .map(|(scopes, m)| format!("{}: {m}", scopes.join(", ")))
            .collect()
    }

    /// The notes as a Markdown list.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        for (scopes, m) in self.merged() {
            s.push_str(&format!("- **{}**: {m}\n", scopes.join(", ")));
        }
        if s.is_empty() {
            s.push_str("- (nothing: every setting was carried)\n");
        }
        s
    }
}

/// An image to push to the registry before the cluster can pull it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub host: String,
    pub image: String,
    /// The manifest digest (empty when this machine has no store holding the image).
    pub digest: String,
    /// `skopeo copy --preserve-digests oci:<store>:<image> docker://<registry>/<image>:latest`
    pub command: String,
}

/// The image reference and the push of a group's image; `None` for the `host` image.
pub(crate) fn image_ref(
    input: &Input,
    hp: &HostPlan,
    g: &agent_plan::GroupPlan,
) -> Option<(String, Push)> {
    let agent_plan::RootfsPlan::Image(img) = &g.rootfs else {
        return None;
    };
    let registry = input.registry.trim_end_matches('/');
    let reference = if img.digest.is_empty() {
        format!("{registry}/{}:latest", img.name)
    } else {
        format!("{registry}/{}@{}", img.name, img.digest)
    };
    let store = hp.daemon.state_dir.join("images");
    let command = format!(
        "skopeo copy --preserve-digests oci:{}:{} docker://{registry}/{}:latest",
        store.display(),
        img.name,
        img.name
    );
    Some((
        reference,
        Push {
            host: hp.host.clone(),
            image: img.name.clone(),
            digest: img.digest.clone(),
            command,
        },
    ))
}

/// The placeholder image of a group that runs from the host's own directories.
pub(crate) fn host_placeholder(input: &Input, group: &str) -> String {
    format!(
        "{}/host-rootfs-{}:replace-me",
        input.registry.trim_end_matches('/'),
        names::lower(group)
    )
}

/// Adds `push` unless the same image of the same host is there already.
/// Also notes, for group `group`, an image referenced by tag (not in this machine's store).
pub(crate) fn add_push(pushes: &mut Vec<Push>, push: Push, notes: &mut Notes, group: &str) {
    if push.digest.is_empty() {
        notes.group(
            group,
            format!(
                "image {} is not in this machine's store: referenced by tag, not digest",
                push.image
            ),
        );
    }
    if !pushes
        .iter()
        .any(|p| p.host == push.host && p.image == push.image)
    {
        pushes.push(push);
    }
}

/// Whole seconds, rounded up, at least `min`.
pub(crate) fn secs(d: std::time::Duration, min: u64) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(min)
}
