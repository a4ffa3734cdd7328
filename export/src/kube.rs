//! `export kubernetes`: one YAML file per group (its Namespace, the ConfigMap of its
//! `env_file`, a Service per agent with ports and one for the group, and a Deployment — a
//! StatefulSet where the group binds writable host paths — whose pod has a container per
//! agent), and `NOTES.md` with the images to push and everything not carried.

use std::path::Path;

use agent_plan::{GroupPlan, HostPlan};
use serde_json::{json, Value};

use crate::kube_pod::{gpu_count, pod_spec, Mount, PodCtx, WAIT_IMAGE};
use crate::names::{lower, Names};
use crate::{add_push, host_placeholder, image_ref, ExportError, Input, Notes, Push};

/// The label every object carries with its group's namespace; the Services select on it.
pub const GROUP_LABEL: &str = "agent-supervisor/group";

/// The manifests of an export.
#[derive(Debug, Clone)]
pub struct KubeExport {
    /// `(file name, YAML documents)`, one file per group: `<namespace>.yaml`.
    pub files: Vec<(String, String)>,
    /// Each group's objects, as written (for tests and other consumers).
    pub objects: Vec<(String, Vec<Value>)>,
    pub notes: Notes,
    /// The images to push, with their `skopeo` commands.
    pub pushes: Vec<Push>,
}

/// The manifests of `input`'s hosts.
pub fn kubernetes(input: &Input) -> Result<KubeExport, ExportError> {
    let names = Names::new(input.loaded)?;
    let mut notes = Notes::default();
    notes.system(
        "names: a group is a namespace, an agent a Service in it: <agent>.<group> resolves \
         everywhere, <agent> and <group> through each pod's DNS search list; \
         <agent>.<group>.<host> and <host> do not resolve (hosts do not exist in a cluster)",
    );
    notes.system(
        "pods are not pinned to nodes: the scheduler places them (the file's hosts are only \
         the agent-supervisor/host label)",
    );
    let mut pushes = Vec::new();
    let mut files = Vec::new();
    let mut objects = Vec::new();
    for hp in input.plans {
        for g in hp.groups.values() {
            let docs = group_objects(input, &names, hp, g, &mut notes, &mut pushes)?;
            let ns = names.namespace(&g.name);
            files.push((format!("{ns}.yaml"), render(&docs)));
            objects.push((g.name.clone(), docs));
        }
    }
    Ok(KubeExport {
        files,
        objects,
        notes,
        pushes,
    })
}

impl KubeExport {
    /// `NOTES.md`: how to push the images, how names and resources map, what was not carried.
    pub fn notes_md(&self) -> String {
        let mut s = String::from(
            "# Kubernetes export\n\nWritten by `agent-supervisor export kubernetes`; \
             docs/import-export.md describes the mapping.\n\n## Images\n\n",
        );
        if self.pushes.is_empty() {
            s.push_str("No group runs from a built image.\n");
        } else {
            s.push_str(
                "Push each host's images (OCI layouts in its store) to the registry before \
                 applying the manifests; run on the host that built them:\n\n```sh\n",
            );
            let mut host = "";
            for p in &self.pushes {
                if p.host != host {
                    host = &p.host;
                    s.push_str(&format!("# on host {host}\n"));
                }
                s.push_str(&format!("{}\n", p.command));
            }
            s.push_str("```\n\n");
            for p in self.pushes.iter().filter(|p| p.digest.is_empty()) {
                s.push_str(&format!(
                    "- image {} (host {}) was not in this machine's store: referenced by tag, \
                     not digest. Export on the host that built it for a digest reference.\n",
                    p.image, p.host
                ));
            }
        }
        s.push_str(&format!(
            "\nInit containers that wait for dependencies run `{WAIT_IMAGE}`.\n\n\
             ## Resources\n\nA group's limits are the pod's: each container's limit is the \
             whole group limit (any agent may use all of it, as in the group's cgroup) and its \
             request the group's limit divided by its number of agents (the scheduler reserves \
             the group's total). The pod's summed limits can exceed the group's.\n\n\
             ## Not carried as is\n\n"
        ));
        s.push_str(&self.notes.markdown());
        s
    }

    /// Writes the files and `NOTES.md` into `dir` (made if missing).
    pub fn write(&self, dir: &Path) -> Result<(), ExportError> {
        let w = |path: std::path::PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|source| ExportError::Write { path, source })
        };
        std::fs::create_dir_all(dir).map_err(|source| ExportError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        for (name, text) in &self.files {
            w(dir.join(name), text)?;
        }
        w(dir.join("NOTES.md"), &self.notes_md())
    }
}

fn render(docs: &[Value]) -> String {
    let mut out = String::from("# Generated by agent-supervisor export kubernetes.\n");
    for d in docs {
        out.push_str("---\n");
        out.push_str(&crate::yaml::to_yaml(d));
    }
    out
}

/// A label value from a name, if it is one (63 characters of `[A-Za-z0-9._-]`, alphanumeric
/// at both ends).
fn label_value(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    ok.then(|| s.to_string())
}

fn labels(ns: &str, hp: &HostPlan) -> Value {
    let mut l = json!({
        "app.kubernetes.io/managed-by": "agent-supervisor",
        GROUP_LABEL: ns,
    });
    if let Some(h) = label_value(&hp.host) {
        l["agent-supervisor/host"] = json!(h);
    }
    l
}

fn group_objects(
    input: &Input,
    names: &Names,
    hp: &HostPlan,
    g: &GroupPlan,
    notes: &mut Notes,
    pushes: &mut Vec<Push>,
) -> Result<Vec<Value>, ExportError> {
    let ns = names.namespace(&g.name);
    let labels = labels(&ns, hp);
    let meta = |name: &str| json!({"name": name, "namespace": ns, "labels": labels});
    let mut docs = vec![json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": labels},
    })];
    let cfg = input.loaded.system.groups.get(&g.name);
    // The env_file, as a ConfigMap the containers take with envFrom.
    let env_file = match cfg.and_then(|c| c.env_file.as_ref()) {
        None => None,
        Some(f) => {
            let path = input.loaded.resolve(f);
            let vars =
                agent_config::envfile::parse(&path).map_err(|source| ExportError::EnvFile {
                    group: g.name.clone(),
                    source,
                })?;
            let name = format!("{ns}-env");
            let data: serde_json::Map<String, Value> =
                vars.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            docs.push(json!({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&name), "data": data,
            }));
            Some((name, vars))
        }
    };
    // A Service per agent with ports, and one named after the group with all of them.
    let mut group_ports = Vec::new();
    let mut group_is_agent = false;
    for a in g.agents.values() {
        let service = lower(&a.name);
        group_is_agent |= service == ns;
        if a.ports.is_empty() {
            continue;
        }
        let ports: Vec<Value> = a
            .ports
            .iter()
            .map(
                |p| json!({"name": format!("p{p}"), "port": p, "targetPort": p, "protocol": "TCP"}),
            )
            .collect();
        group_ports.extend(ports.iter().cloned());
        docs.push(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": meta(&service),
            "spec": {"selector": {GROUP_LABEL: ns}, "ports": ports},
        }));
    }
    let stateful = g
        .binds
        .iter()
        .any(|b| !b.readonly && !is_system_dir(hp, g, b));
    if !group_is_agent && (!group_ports.is_empty() || stateful) {
        let mut spec = json!({"selector": {GROUP_LABEL: ns}, "ports": group_ports});
        if group_ports.is_empty() {
            spec["clusterIP"] = json!("None");
        }
        docs.push(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": meta(&ns), "spec": spec,
        }));
    }
    let image = match image_ref(input, hp, g) {
        Some((reference, push)) => {
            add_push(pushes, push, notes, &g.name);
            reference
        }
        None => {
            let placeholder = host_placeholder(input, &g.name);
            notes.group(
                &g.name,
                format!(
                    "runs from the host's own root file system (image: host), which cannot move \
                     to a cluster: its containers name the placeholder image {placeholder}; build \
                     an image with the agents' code and interpreter (docs/images.md) and put it there"
                ),
            );
            placeholder
        }
    };
    if g.agents.is_empty() {
        notes.group(&g.name, "has no agents: only its namespace is written");
        return Ok(docs);
    }
    let (mounts, claims) = binds(hp, g, notes);
    let gpus = gpu_count(cfg.and_then(|c| c.gpus.as_ref()), &g.name, notes);
    group_notes(g, notes);
    let ctx = PodCtx {
        names,
        g,
        image,
        env_file,
        gpus,
        mounts,
    };
    let pod = pod_spec(&ctx, notes);
    let mut spec = json!({
        "replicas": 1,
        "selector": {"matchLabels": {GROUP_LABEL: ns}},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    });
    let kind = if stateful {
        // The group's Service (or its agent's of the same name).
        spec["serviceName"] = json!(ns);
        spec["volumeClaimTemplates"] = Value::Array(claims);
        "StatefulSet"
    } else {
        // One pod of the group at a time, as the daemon runs it.
        spec["strategy"] = json!({"type": "Recreate"});
        "Deployment"
    };
    docs.push(json!({"apiVersion": "apps/v1", "kind": kind, "metadata": meta(&ns), "spec": spec}));
    Ok(docs)
}

/// The system file's directory, which the `host` image shows read-only (not a bind of the file).
fn is_system_dir(hp: &HostPlan, g: &GroupPlan, b: &agent_plan::BindPlan) -> bool {
    g.is_host_image()
        && b.readonly
        && std::fs::canonicalize(&hp.dir).is_ok_and(|d| d == b.source && d == b.target)
}

/// The group's bind volumes `(name, target, read-only)`: read-only binds are `hostPath`
/// volumes, writable ones claims of a StatefulSet.
fn binds(hp: &HostPlan, g: &GroupPlan, notes: &mut Notes) -> (Vec<Mount>, Vec<Value>) {
    let mut mounts = Vec::new();
    let mut claims = Vec::new();
    for b in &g.binds {
        if is_system_dir(hp, g, b) {
            continue;
        }
        let name = format!("bind-{}", mounts.len());
        let target = b.target.display().to_string();
        if b.readonly {
            notes.group(
                &g.name,
                format!(
                    "read-only bind {} -> {target} is a hostPath volume: the path must exist on \
                     the node",
                    b.source.display()
                ),
            );
        } else {
            notes.group(
                &g.name,
                format!(
                    "writable bind {} -> {target} is a PersistentVolumeClaim of 1Gi (a \
                     StatefulSet): size it, and copy the host directory's content into it",
                    b.source.display()
                ),
            );
            claims.push(json!({
                "metadata": {"name": name},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }));
        }
        mounts.push(Mount {
            volume: name,
            source: b.source.display().to_string(),
            target,
            readonly: b.readonly,
        });
    }
    (mounts, claims)
}

/// What of the group's settings has no place in a pod.
fn group_notes(g: &GroupPlan, notes: &mut Notes) {
    let l = &g.limits;
    if let Some(m) = l.memory_high {
        notes.group(
            &g.name,
            format!("memory_high {} is not carried (cgroup memory.high)", m.0),
        );
    }
    if let Some(m) = l.memory_swap {
        notes.group(&g.name, format!("memory_swap {} is not carried", m.0));
    }
    if let Some(w) = l.cpu_weight {
        notes.group(
            &g.name,
            format!("cpu_weight {w} is not carried (requests weigh CPU instead)"),
        );
    }
    if let Some(p) = l.pids {
        notes.group(
            &g.name,
            format!(
                "pids {p} is not carried: the pid limit is the kubelet's (podPidsLimit), per node"
            ),
        );
    }
    if let Some(a) = g.agents.values().next() {
        let r = &a.restart;
        notes.group(
            &g.name,
            format!(
                "restart backoff (initial {:?}, max {:?}), max_retries {} and reset_after {:?} \
                 are not carried: the kubelet restarts containers with its own backoff (10 s \
                 doubling to 5 min), without a limit",
                r.backoff_initial, r.backoff_max, r.max_retries, r.reset_after
            ),
        );
        let timeouts: Vec<_> = g.agents.values().map(|a| a.stop_timeout).collect();
        if timeouts.iter().any(|t| *t != timeouts[0]) {
            notes.group(
                &g.name,
                "its agents' stop timeouts differ: the pod's terminationGracePeriodSeconds is the longest",
            );
        }
    }
    match &g.network {
        agent_plan::NetworkPlan::Host => notes.group(
            &g.name,
            "was on the host's network: its pod is on the cluster's pod network",
        ),
        agent_plan::NetworkPlan::Private(n) => {
            if !n.egress {
                notes.group(
                    &g.name,
                    "egress: false is not carried: add a NetworkPolicy that denies egress",
                );
            }
            if !n.publish.is_empty() {
                notes.group(
                    &g.name,
                    "published ports are hostPorts of the node the pod runs on",
                );
            }
        }
    }
}
