//! The pod of one group: a container per agent (image, command, environment, ports,
//! resources, probes, security), the init containers that wait for its dependencies, and
//! its volumes.

use agent_config::model::{GpuDevices, Policy};
use agent_plan::{AgentPlan, GroupPlan, HealthPlan, Probe};
use serde_json::{json, Map, Value};

use crate::names::{lower, Names, Rewrite};
use crate::{secs, Notes};

/// The image every wait-for-a-dependency init container runs (`nc -z`).
pub const WAIT_IMAGE: &str = "busybox:1.36";

/// At most this many other groups' namespaces go into a pod's DNS search list (the
/// cluster allows 32 search domains; the kubelet adds three of its own).
pub const MAX_SEARCHES: usize = 28;

/// What the containers of a group share.
pub struct PodCtx<'a> {
    pub names: &'a Names,
    pub g: &'a GroupPlan,
    pub image: String,
    /// The group's `env_file` variables (in its ConfigMap), if it has one.
    pub env_file: Option<(String, Vec<(String, String)>)>,
    /// GPUs the group asks for (the first container gets them).
    pub gpus: u32,
    /// The bind volumes.
    pub mounts: Vec<Mount>,
}

/// A bind of the group as a volume of its pod.
pub struct Mount {
    pub volume: String,
    pub source: String,
    pub target: String,
    /// Read-only: a `hostPath` volume; writable: a claim of the StatefulSet.
    pub readonly: bool,
}

/// The number of GPUs a `gpus:` request asks for; `all` has no count (noted, 1).
pub fn gpu_count(
    req: Option<&agent_config::model::GpuRequest>,
    group: &str,
    notes: &mut Notes,
) -> u32 {
    let Some(req) = req else { return 0 };
    let n = match &req.devices {
        GpuDevices::Count(n) => *n,
        GpuDevices::List(ids) => {
            notes.group(
                group,
                "gpus names particular GPUs: the cluster picks any GPUs of the node, as many",
            );
            u32::try_from(ids.len()).unwrap_or(u32::MAX)
        }
        GpuDevices::All => {
            notes.group(
                group,
                "gpus: all has no count in Kubernetes: the pod asks for nvidia.com/gpu: 1; \
                 set the node's count",
            );
            1
        }
    };
    if n > 0 && req.optional {
        notes.group(
            group,
            "gpus are optional here, but a pod that asks for nvidia.com/gpu only runs on a \
             node that has them",
        );
    }
    if n > 0 && req.shared {
        notes.group(
            group,
            "shared GPUs need the NVIDIA device plugin's time-slicing; the pod asks for whole ones",
        );
    }
    n
}

/// The pod spec of the group.
pub fn pod_spec(ctx: &PodCtx, notes: &mut Notes) -> Value {
    let g = ctx.g;
    let mut containers = Vec::new();
    for (i, a) in g.agents.values().enumerate() {
        containers.push(container(ctx, a, i == 0, notes));
    }
    let grace = g
        .agents
        .values()
        .map(|a| secs(a.stop_timeout, 1))
        .max()
        .unwrap_or(30);
    let mut spec = Map::new();
    spec.insert("shareProcessNamespace".into(), json!(true));
    spec.insert("restartPolicy".into(), json!("Always"));
    spec.insert("terminationGracePeriodSeconds".into(), json!(grace));
    let own = ctx.names.namespace(&g.name);
    let mut searches: Vec<String> = ctx
        .names
        .groups
        .values()
        .filter(|ns| **ns != own)
        .map(|ns| format!("{ns}.svc.cluster.local"))
        .collect();
    if searches.len() > MAX_SEARCHES {
        notes.group(
            &g.name,
            format!(
                "only {MAX_SEARCHES} other groups' namespaces fit the pod's DNS search list: \
                 the bare <agent> and <group> names of the rest do not resolve (use <agent>.<group>)"
            ),
        );
        searches.truncate(MAX_SEARCHES);
    }
    if !searches.is_empty() {
        spec.insert("dnsConfig".into(), json!({ "searches": searches }));
    }
    let inits = init_containers(ctx, notes);
    if !inits.is_empty() {
        spec.insert("initContainers".into(), Value::Array(inits));
    }
    spec.insert("containers".into(), Value::Array(containers));
    let volumes: Vec<Value> = ctx
        .mounts
        .iter()
        .filter(|m| m.readonly)
        .map(|m| json!({"name": m.volume, "hostPath": {"path": m.source}}))
        .collect();
    if !volumes.is_empty() {
        spec.insert("volumes".into(), Value::Array(volumes));
    }
    Value::Object(spec)
}

fn container(ctx: &PodCtx, a: &AgentPlan, first: bool, notes: &mut Notes) -> Value {
    let g = ctx.g;
    let name = lower(&a.name);
    let mut c = Map::new();
    c.insert("name".into(), json!(name));
    c.insert("image".into(), json!(ctx.image));
    c.insert("command".into(), json!(a.argv));
    c.insert("workingDir".into(), json!(a.workdir.display().to_string()));
    let env = env(ctx, a, notes);
    if !env.is_empty() {
        c.insert("env".into(), Value::Array(env));
    }
    if let Some((cm, _)) = &ctx.env_file {
        c.insert(
            "envFrom".into(),
            json!([{ "configMapRef": { "name": cm } }]),
        );
    }
    let ports: Vec<Value> = a
        .ports
        .iter()
        .map(|p| {
            let mut port = json!({"name": format!("p{p}"), "containerPort": p, "protocol": "TCP"});
            if let agent_plan::NetworkPlan::Private(net) = &g.network {
                for publish in net
                    .publish
                    .iter()
                    .filter(|x| x.agent == a.name && x.port == *p)
                {
                    port["hostPort"] = json!(publish.host_port);
                    if let Some(ip) = publish.host_addr {
                        port["hostIP"] = json!(ip.to_string());
                    }
                }
            }
            port
        })
        .collect();
    if !ports.is_empty() {
        c.insert("ports".into(), Value::Array(ports));
    }
    if let Some(r) = resources(ctx, first) {
        c.insert("resources".into(), r);
    }
    if let Some(h) = &a.health {
        probes(&mut c, h, a.restart.on_unhealthy);
    }
    c.insert("securityContext".into(), security(g, notes));
    let mounts: Vec<Value> = ctx
        .mounts
        .iter()
        .map(|m| json!({"name": m.volume, "mountPath": m.target, "readOnly": m.readonly}))
        .collect();
    if !mounts.is_empty() {
        c.insert("volumeMounts".into(), Value::Array(mounts));
    }
    if a.restart.policy != Policy::Always {
        notes.agent(
            &g.name,
            &a.name,
            format!(
                "restart policy {:?} is not carried: a Deployment's or StatefulSet's pods always \
                 restart their containers",
                a.restart.policy
            ),
        );
    }
    if a.stop_signal != "SIGTERM" && a.stop_signal != "TERM" {
        notes.agent(
            &g.name,
            &a.name,
            format!(
                "stop signal {} is not carried: the kubelet sends SIGTERM (or the image's \
                 STOPSIGNAL)",
                a.stop_signal
            ),
        );
    }
    if !first && ctx.gpus > 0 {
        notes.agent(
            &g.name,
            &a.name,
            "sees no GPU: in Kubernetes a GPU belongs to one container, the group's first agent's",
        );
    }
    Value::Object(c)
}

/// The agent's environment for the cluster: the plan's, less what the ConfigMap gives, with
/// our names and addresses rewritten to the Services'.
fn env(ctx: &PodCtx, a: &AgentPlan, notes: &mut Notes) -> Vec<Value> {
    let from_file: &[(String, String)] = ctx.env_file.as_ref().map_or(&[], |(_, v)| v);
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    let system_names: std::collections::HashSet<&str> =
        a.visible_names().map(|(k, _)| k.as_str()).collect();
    let env = a.full_env();
    for (k, v) in &env {
        if from_file.iter().any(|(fk, fv)| fk == k && fv == v) {
            continue;
        }
        let value = if k == "AGENT_DEPENDENCIES" {
            ctx.names.dependencies(v, |x| x.dns())
        } else if system_names.contains(k.as_str()) {
            match ctx.names.rewrite(k, |x| x.dns()) {
                Rewrite::Keep => v.clone(),
                Rewrite::Value(x) => x,
                Rewrite::Drop(why) => {
                    dropped.push(format!("{k} ({why})"));
                    continue;
                }
            }
        } else {
            v.clone()
        };
        out.push(json!({"name": k, "value": value}));
    }
    if !dropped.is_empty() {
        notes.group(
            &ctx.g.name,
            format!("environment variables left out: {}", dropped.join(", ")),
        );
    }
    out
}

/// Requests: the group's limits split evenly between its containers (the scheduler reserves
/// the group's total); limits: the group's whole limit per container (one agent may use all
/// of it, as in the group's cgroup).
fn resources(ctx: &PodCtx, first: bool) -> Option<Value> {
    let l = &ctx.g.limits;
    let n = ctx.g.agents.len().max(1) as u64;
    let mut limits = Map::new();
    let mut requests = Map::new();
    if let Some(m) = l.memory {
        limits.insert("memory".into(), json!(quantity(m.0)));
        requests.insert("memory".into(), json!(quantity((m.0 / n).max(1))));
    }
    if let Some(c) = l.cpus {
        let milli = (c.0 * 1000.0).round().max(1.0) as u64;
        limits.insert("cpu".into(), json!(format!("{milli}m")));
        requests.insert("cpu".into(), json!(format!("{}m", (milli / n).max(1))));
    }
    if first && ctx.gpus > 0 {
        limits.insert("nvidia.com/gpu".into(), json!(ctx.gpus));
    }
    if limits.is_empty() {
        return None;
    }
    let mut r = Map::new();
    r.insert("limits".into(), Value::Object(limits));
    if !requests.is_empty() {
        r.insert("requests".into(), Value::Object(requests));
    }
    Some(Value::Object(r))
}

/// Bytes as a Kubernetes quantity: `512Mi`, `1Gi`, or plain bytes when not a whole unit.
pub fn quantity(bytes: u64) -> String {
    for (unit, size) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// The probe handler of a health check.
pub fn handler(p: &Probe) -> Value {
    match p {
        Probe::Tcp { port, .. } => json!({"tcpSocket": {"port": port}}),
        Probe::Http { port, path, .. } => json!({"httpGet": {"path": path, "port": port}}),
        Probe::Exec(argv) => json!({"exec": {"command": argv}}),
    }
}

/// Readiness (the Service sends traffic to healthy agents only, which is what the
/// dependency waits rely on), liveness when an unhealthy agent is restarted, and a startup
/// probe covering the start period.
pub fn probes(c: &mut Map<String, Value>, h: &HealthPlan, liveness: bool) {
    let t = &h.timing;
    let period = secs(t.interval, 1);
    let timeout = secs(t.timeout, 1);
    let mut probe = handler(&h.probe);
    probe["periodSeconds"] = json!(period);
    probe["timeoutSeconds"] = json!(timeout);
    probe["failureThreshold"] = json!(t.retries.max(1));
    probe["successThreshold"] = json!(1);
    c.insert("readinessProbe".into(), probe.clone());
    if liveness {
        c.insert("livenessProbe".into(), probe.clone());
    }
    if !t.start_period.is_zero() {
        let within = secs(t.start_period, 1).div_ceil(period);
        let mut startup = probe;
        startup["failureThreshold"] = json!(within + u64::from(t.retries.max(1)));
        c.insert("startupProbe".into(), startup);
    }
}

/// Capabilities (Kubernetes spells them without `CAP_`) and the seccomp profile.
fn security(g: &GroupPlan, notes: &mut Notes) -> Value {
    let cap = |c: &String| {
        let up = c.to_ascii_uppercase();
        up.strip_prefix("CAP_").map(str::to_string).unwrap_or(up)
    };
    let mut caps = Map::new();
    if !g.security.cap_add.is_empty() {
        caps.insert(
            "add".into(),
            json!(g.security.cap_add.iter().map(cap).collect::<Vec<_>>()),
        );
    }
    if !g.security.cap_drop.is_empty() {
        caps.insert(
            "drop".into(),
            json!(g.security.cap_drop.iter().map(cap).collect::<Vec<_>>()),
        );
    }
    if !caps.is_empty() {
        notes.group(
            &g.name,
            "cap_add/cap_drop apply to the container runtime's default capability set, which \
             differs from agent-launch's (docs/launcher.md)",
        );
    }
    if !g.security.rlimits.is_empty() {
        let names: Vec<String> = g
            .security
            .rlimits
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        notes.group(
            &g.name,
            format!(
                "rlimits {} are not carried: a pod has no per-container rlimits (the container \
                 runtime's defaults apply)",
                names.join(", ")
            ),
        );
    }
    let profile = if g.security.seccomp {
        "RuntimeDefault"
    } else {
        "Unconfined"
    };
    let mut s = Map::new();
    if !caps.is_empty() {
        s.insert("capabilities".into(), Value::Object(caps));
    }
    s.insert("seccompProfile".into(), json!({ "type": profile }));
    Value::Object(s)
}

/// One init container per dependency with a port: it waits until the dependency's Service
/// takes connections (a Service lists ready pods only: the dependency is healthy).
fn init_containers(ctx: &PodCtx, notes: &mut Notes) -> Vec<Value> {
    let g = ctx.g;
    let mut waits: Vec<(String, u16)> = Vec::new();
    let mut add = |dns: String, port: u16| {
        if !waits.iter().any(|(d, _)| *d == dns) {
            waits.push((dns, port));
        }
    };
    for (dep, _) in &g.depends_on {
        let agents: Vec<_> = ctx
            .names
            .agents
            .values()
            .filter(|a| a.group == *dep && !a.ports.is_empty())
            .collect();
        if agents.is_empty() {
            notes.group(
                &g.name,
                format!(
                    "depends on group {dep}, none of whose agents has a port: the pod does not \
                     wait for it"
                ),
            );
        }
        for a in agents {
            add(a.dns(), a.ports[0]);
        }
    }
    for a in g.agents.values() {
        for (dep, _) in &a.depends_on {
            match ctx.names.agents.get(dep) {
                Some(d) if d.group == g.name => notes.agent(
                    &g.name,
                    &a.name,
                    format!(
                        "depends on {dep} of its own group: the containers of a pod start \
                         together, the agent must retry until {dep} answers"
                    ),
                ),
                Some(d) => match d.ports.first() {
                    Some(p) => {
                        notes.agent(
                            &g.name,
                            &a.name,
                            format!("waits for {dep}: the whole pod waits (an init container)"),
                        );
                        add(d.dns(), *p);
                    }
                    None => notes.agent(
                        &g.name,
                        &a.name,
                        format!("depends on {dep}, which has no port: not waited for"),
                    ),
                },
                None => {}
            }
        }
    }
    waits
        .into_iter()
        .map(|(dns, port)| {
            let mut name = format!("wait-{}", dns.replace('.', "-"));
            name.truncate(63);
            let name = name.trim_end_matches('-').to_string();
            json!({
                "name": name,
                "image": WAIT_IMAGE,
                "command": ["sh", "-c", format!(
                    "until nc -z -w 2 {dns} {port}; do echo waiting for {dns}:{port}; sleep 2; done"
                )],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use agent_config::defaults::HealthTiming;
    use agent_config::model::{GpuDevices, GpuId, GpuRequest};

    use super::*;

    fn timing(interval_ms: u64, timeout_ms: u64, retries: u32, start_s: u64) -> HealthTiming {
        HealthTiming {
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            retries,
            start_period: Duration::from_secs(start_s),
        }
    }

    #[test]
    fn probes_map_kind_and_timing() {
        let h = HealthPlan {
            probe: Probe::Http {
                addr: Ipv4Addr::new(10, 88, 1, 5),
                port: 8080,
                path: "/ready".into(),
            },
            timing: timing(2500, 200, 4, 9),
        };
        let mut c = Map::new();
        probes(&mut c, &h, true);
        let r = &c["readinessProbe"];
        assert_eq!(r["httpGet"], json!({"path": "/ready", "port": 8080}));
        // 2.5 s -> 3 s, 0.2 s -> 1 s: whole seconds, rounded up.
        assert_eq!(r["periodSeconds"], 3);
        assert_eq!(r["timeoutSeconds"], 1);
        assert_eq!(r["failureThreshold"], 4);
        assert_eq!(c["livenessProbe"], *r);
        // 9 s of start period at 3 s: 3 periods, plus the 4 retries.
        assert_eq!(c["startupProbe"]["failureThreshold"], 7);

        let mut c = Map::new();
        let tcp = HealthPlan {
            probe: Probe::Tcp {
                addr: Ipv4Addr::LOCALHOST,
                port: 6379,
            },
            timing: timing(1000, 1000, 0, 0),
        };
        probes(&mut c, &tcp, false);
        assert_eq!(c["readinessProbe"]["tcpSocket"]["port"], 6379);
        assert_eq!(
            c["readinessProbe"]["failureThreshold"], 1,
            "at least one failure"
        );
        assert!(!c.contains_key("livenessProbe") && !c.contains_key("startupProbe"));
        assert_eq!(
            handler(&Probe::Exec(vec!["redis-cli".into(), "ping".into()])),
            json!({"exec": {"command": ["redis-cli", "ping"]}})
        );
    }

    #[test]
    fn memory_is_a_quantity_in_whole_units() {
        assert_eq!(quantity(512 << 20), "512Mi");
        assert_eq!(quantity(2 << 30), "2Gi");
        assert_eq!(quantity(3072), "3Ki");
        assert_eq!(quantity(1536), "1536");
        assert_eq!(quantity(1000), "1000");
    }

    #[test]
    fn gpu_requests_become_counts_with_notes() {
        let req = |devices, optional| GpuRequest {
            devices,
            optional,
            shared: false,
        };
        let mut notes = Notes::default();
        assert_eq!(gpu_count(None, "g", &mut notes), 0);
        assert_eq!(
            gpu_count(Some(&req(GpuDevices::Count(2), false)), "g", &mut notes),
            2
        );
        assert!(notes.0.is_empty());
        let list = GpuDevices::List(vec![GpuId::Index(0), GpuId::Uuid("GPU-1".into())]);
        assert_eq!(gpu_count(Some(&req(list, false)), "g", &mut notes), 2);
        assert_eq!(
            gpu_count(Some(&req(GpuDevices::All, true)), "g", &mut notes),
            1
        );
        let text = notes.lines().join("\n");
        assert!(
            text.contains("gpus: all") && text.contains("optional"),
            "{text}"
        );
    }
}
