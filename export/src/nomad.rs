//! `export nomad`: one job in the JSON form of Nomad's HTTP API (`{"Job": {...}}`, the
//! `api.Job` struct): a task group per group (bridge network: its tasks share it, as a pod's
//! containers do), pinned to its host by a constraint on `${node.unique.name}`, a task per
//! agent, a service per agent port with the agent's health check.

use std::path::{Path, PathBuf};

use agent_config::model::Policy;
use agent_plan::{GroupPlan, HostPlan, Probe};
use serde_json::{json, Map, Value};

use crate::names::Names;
use crate::nomad_task::{tasks, wait_task};
use crate::{add_push, ExportError, Input, Notes, Push};

/// Nanoseconds: how the API spells a `time.Duration`.
pub(crate) fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The job of an export.
#[derive(Debug, Clone)]
pub struct NomadExport {
    /// `{"Job": {...}}`.
    pub job: Value,
    pub notes: Notes,
    pub pushes: Vec<Push>,
}

/// The job of `input`'s hosts, named `job`.
pub fn nomad(input: &Input, job: &str) -> Result<NomadExport, ExportError> {
    let names = Names::new(input.loaded)?;
    let mut notes = Notes::default();
    notes.system(
        "names: agents are Nomad services (provider nomad) named like the Kubernetes Services \
         (lower case); their addresses reach the tasks through templates (nomadService), not \
         DNS: <agent>.<group> does not resolve inside a task",
    );
    notes.system(
        "each group is pinned to its host: the Nomad client's node name must be the host's name",
    );
    let mut pushes = Vec::new();
    let mut groups = Vec::new();
    for hp in input.plans {
        for g in hp.groups.values() {
            groups.push(task_group(input, &names, hp, g, &mut notes, &mut pushes));
        }
    }
    let job = json!({"Job": {
        "ID": job,
        "Name": job,
        "Type": "service",
        "Datacenters": ["*"],
        "Meta": {"agent-supervisor.file": input.loaded.file.display().to_string()},
        "TaskGroups": groups,
    }});
    Ok(NomadExport { job, notes, pushes })
}

impl NomadExport {
    /// Writes the job to `out`: a file, or `<out>/<job>.nomad.json` when `out` is a directory
    /// (existing, or written with a trailing `/`). Returns the file written.
    pub fn write(&self, out: &Path) -> Result<PathBuf, ExportError> {
        let is_dir = out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/');
        let file = if is_dir {
            std::fs::create_dir_all(out).map_err(|source| ExportError::Write {
                path: out.to_path_buf(),
                source,
            })?;
            let id = self.job["Job"]["ID"].as_str().unwrap_or("system");
            out.join(format!("{id}.nomad.json"))
        } else {
            out.to_path_buf()
        };
        let mut text = serde_json::to_string_pretty(&self.job).unwrap_or_default();
        text.push('\n');
        std::fs::write(&file, text).map_err(|source| ExportError::Write {
            path: file.clone(),
            source,
        })?;
        Ok(file)
    }
}

fn task_group(
    input: &Input,
    names: &Names,
    hp: &HostPlan,
    g: &GroupPlan,
    notes: &mut Notes,
    pushes: &mut Vec<Push>,
) -> Value {
    let mut tg = Map::new();
    tg.insert("Name".into(), json!(g.name));
    tg.insert("Count".into(), json!(1));
    tg.insert(
        "Constraints".into(),
        json!([{"LTarget": "${node.unique.name}", "RTarget": hp.host, "Operand": "="}]),
    );
    // Every agent port: dynamic on the node unless published, mapped to the agent's port.
    let publish = match &g.network {
        agent_plan::NetworkPlan::Private(n) => n.publish.clone(),
        agent_plan::NetworkPlan::Host => Vec::new(),
    };
    let mut dynamic = Vec::new();
    let mut reserved = Vec::new();
    for a in g.agents.values() {
        for p in &a.ports {
            let label = format!("p{p}");
            match publish.iter().find(|x| x.agent == a.name && x.port == *p) {
                Some(x) => reserved.push(json!({"Label": label, "Value": x.host_port, "To": p})),
                None => dynamic.push(json!({"Label": label, "To": p})),
            }
        }
    }
    let mut net = json!({"Mode": "bridge"});
    if !dynamic.is_empty() {
        net["DynamicPorts"] = Value::Array(dynamic);
    }
    if !reserved.is_empty() {
        net["ReservedPorts"] = Value::Array(reserved);
    }
    tg.insert("Networks".into(), json!([net]));
    let services = services(names, g, notes);
    if !services.is_empty() {
        tg.insert("Services".into(), Value::Array(services));
    }
    if let Some(a) = g.agents.values().next() {
        let r = &a.restart;
        let attempts = if r.policy == Policy::Never {
            0
        } else {
            r.max_retries
        };
        let delay = ns(r.backoff_initial);
        // Nomad requires Interval >= Attempts * Delay.
        let interval = ns(r.reset_after).max(delay.saturating_mul(u64::from(attempts)));
        tg.insert(
            "RestartPolicy".into(),
            json!({"Attempts": attempts, "Interval": interval, "Delay": delay, "Mode": "fail"}),
        );
        notes.group(
            &g.name,
            format!(
                "restarts: {attempts} attempts within reset_after, {:?} apart (Nomad's delay is \
                 fixed: the backoff up to {:?} is not carried; policy per agent is the group's)",
                r.backoff_initial, r.backoff_max
            ),
        );
    }
    let (image, push) = match crate::image_ref(input, hp, g) {
        Some((reference, push)) => (reference, Some(push)),
        None => {
            notes.group(
                &g.name,
                "runs from the host's own root file system (image: host): its tasks use the exec \
                 driver (a chroot of the node's directories); the agents' code must be at the \
                 same path on the node",
            );
            (String::new(), None)
        }
    };
    if let Some(push) = push {
        add_push(pushes, push, notes, &g.name);
    }
    let gpus = crate::kube_pod::gpu_count(
        input
            .loaded
            .system
            .groups
            .get(&g.name)
            .and_then(|c| c.gpus.as_ref()),
        &g.name,
        notes,
    );
    let mut all = Vec::new();
    if let Some(w) = wait_task(names, g, notes) {
        all.push(w);
    }
    all.extend(tasks(names, g, &image, gpus, notes));
    tg.insert("Tasks".into(), Value::Array(all));
    if !g.binds.is_empty() {
        notes.group(
            &g.name,
            "binds are not carried: add host volumes (client config) and VolumeMounts",
        );
    }
    if !g.security.rlimits.is_empty()
        || !g.security.cap_add.is_empty()
        || !g.security.cap_drop.is_empty()
    {
        notes.group(
            &g.name,
            "rlimits and capabilities are not carried: set cap_add/cap_drop in the docker \
             driver's config where the client allows them",
        );
    }
    Value::Object(tg)
}

/// A service per agent port (`<agent>` for the first, `<agent>-p<port>` for the others), the
/// first with the agent's health check.
fn services(names: &Names, g: &GroupPlan, notes: &mut Notes) -> Vec<Value> {
    let script = g
        .agents
        .values()
        .any(|a| matches!(a.health.as_ref().map(|h| &h.probe), Some(Probe::Exec(_))));
    let provider = if script { "consul" } else { "nomad" };
    if script {
        notes.group(
            &g.name,
            "an exec health check is a script check, which only Consul runs: the group's \
             services use provider consul",
        );
    }
    let mut out = Vec::new();
    for a in g.agents.values() {
        let Some(n) = names.agents.get(&a.name) else {
            continue;
        };
        for (i, p) in a.ports.iter().enumerate() {
            let name = if i == 0 {
                n.service.clone()
            } else {
                format!("{}-p{p}", n.service)
            };
            let mut s = json!({"Name": name, "PortLabel": format!("p{p}"), "Provider": provider});
            if let (0, Some(h)) = (i, &a.health) {
                let t = &h.timing;
                let mut c = json!({
                    "Name": format!("{name}-health"),
                    "Interval": ns(t.interval),
                    "Timeout": ns(t.timeout),
                });
                match &h.probe {
                    Probe::Tcp { port, .. } => {
                        c["Type"] = json!("tcp");
                        check_port(&mut c, g, a, *port, notes);
                    }
                    Probe::Http { port, path, .. } => {
                        c["Type"] = json!("http");
                        c["Path"] = json!(path);
                        check_port(&mut c, g, a, *port, notes);
                    }
                    Probe::Exec(argv) => {
                        c["Type"] = json!("script");
                        c["Command"] = json!(argv.first().cloned().unwrap_or_default());
                        c["Args"] = json!(argv.iter().skip(1).collect::<Vec<_>>());
                        c["TaskName"] = json!(a.name);
                    }
                }
                if a.restart.on_unhealthy {
                    c["CheckRestart"] =
                        json!({"Limit": t.retries.max(1), "Grace": ns(t.start_period)});
                }
                s["Checks"] = json!([c]);
            }
            out.push(s);
        }
    }
    out
}

/// The check's port: one of the agent's ports has a label; another is checked on the
/// service's port instead (noted).
fn check_port(
    c: &mut Value,
    g: &GroupPlan,
    a: &agent_plan::AgentPlan,
    port: u16,
    notes: &mut Notes,
) {
    if a.ports.contains(&port) {
        c["PortLabel"] = json!(format!("p{port}"));
    } else {
        notes.agent(
            &g.name,
            &a.name,
            format!(
                "its health check's port {port} is not one of its ports: checked on its first port"
            ),
        );
    }
}
