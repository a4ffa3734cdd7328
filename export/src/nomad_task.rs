//! The tasks of a Nomad task group: one per agent (driver, config, environment, resources,
//! the template that fills in other agents' addresses), and the prestart task that waits for
//! the group's dependencies.

use agent_plan::{AgentPlan, GroupPlan};
use serde_json::{json, Map, Value};

use crate::kube_pod::WAIT_IMAGE;
use crate::names::{AgentName, Names, Rewrite};
use crate::nomad::ns;
use crate::Notes;

/// Nomad CPU shares per CPU of the system file (Nomad counts CPU in MHz).
pub const MHZ_PER_CPU: f64 = 1000.0;

/// The template expression of an agent's address: the node's address and port of its service.
fn addr_of(a: &AgentName) -> String {
    format!(
        "{{{{ range nomadService \"{}\" }}}}{{{{ .Address }}}}:{{{{ .Port }}}}{{{{ end }}}}",
        a.service
    )
}

/// The agents' tasks, in order.
pub fn tasks(
    names: &Names,
    g: &GroupPlan,
    image: &str,
    gpus: u32,
    notes: &mut Notes,
) -> Vec<Value> {
    let n = g.agents.len().max(1) as u64;
    g.agents
        .values()
        .enumerate()
        .map(|(i, a)| {
            let mut t = Map::new();
            t.insert("Name".into(), json!(a.name));
            if image.is_empty() {
                t.insert("Driver".into(), json!("exec"));
                let mut config = json!({"command": a.argv.first().cloned().unwrap_or_default()});
                config["args"] = json!(a.argv.iter().skip(1).collect::<Vec<_>>());
                t.insert("Config".into(), config);
            } else {
                t.insert("Driver".into(), json!("docker"));
                t.insert(
                    "Config".into(),
                    json!({"image": image, "entrypoint": a.argv, "work_dir": a.workdir.display().to_string()}),
                );
            }
            let (env, template) = env(names, g, a, notes);
            t.insert("Env".into(), Value::Object(env));
            if let Some(tmpl) = template {
                t.insert(
                    "Templates".into(),
                    json!([{
                        "EmbeddedTmpl": tmpl,
                        "DestPath": "local/names.env",
                        "Envvars": true,
                        "ChangeMode": "restart",
                    }]),
                );
            }
            let mut r = Map::new();
            let l = &g.limits;
            if let Some(c) = l.cpus {
                let mhz = (c.0 * MHZ_PER_CPU).round().max(1.0) as u64;
                r.insert("CPU".into(), json!((mhz / n).max(1)));
            }
            if let Some(m) = l.memory {
                let mb = (m.0 / (1024 * 1024)).max(1);
                r.insert("MemoryMB".into(), json!((mb / n).max(1)));
                r.insert("MemoryMaxMB".into(), json!(mb));
            }
            if i == 0 && gpus > 0 {
                r.insert("Devices".into(), json!([{"Name": "nvidia/gpu", "Count": gpus}]));
            }
            if !r.is_empty() {
                t.insert("Resources".into(), Value::Object(r));
            }
            t.insert("KillTimeout".into(), json!(ns(a.stop_timeout)));
            t.insert("KillSignal".into(), json!(signal(&a.stop_signal)));
            Value::Object(t)
        })
        .collect()
}

/// `TERM` -> `SIGTERM`.
fn signal(s: &str) -> String {
    if s.starts_with("SIG") {
        s.to_string()
    } else {
        format!("SIG{s}")
    }
}

/// The task's `Env`, and the template of the variables that name other agents' addresses.
fn env(
    names: &Names,
    g: &GroupPlan,
    a: &AgentPlan,
    notes: &mut Notes,
) -> (Map<String, Value>, Option<String>) {
    let mut env = Map::new();
    let mut tmpl = String::new();
    let mut dropped = Vec::new();
    let system_names: std::collections::HashSet<&str> =
        a.visible_names().map(|(k, _)| k.as_str()).collect();
    let full = a.full_env();
    for (k, v) in &full {
        if k == "AGENT_DEPENDENCIES" {
            if !v.is_empty() {
                tmpl.push_str(&format!("{k}={}\n", names.dependencies(v, addr_of)));
            }
            continue;
        }
        if system_names.contains(k.as_str()) {
            match names.rewrite(k, addr_of) {
                Rewrite::Keep => {}
                Rewrite::Value(x) => {
                    tmpl.push_str(&format!("{k}={x}\n"));
                    continue;
                }
                Rewrite::Drop(why) => {
                    dropped.push(format!("{k} ({why})"));
                    continue;
                }
            }
        }
        env.insert(k.clone(), json!(v));
    }
    if !dropped.is_empty() {
        notes.group(
            &g.name,
            format!("environment variables left out: {}", dropped.join(", ")),
        );
    }
    (env, (!tmpl.is_empty()).then_some(tmpl))
}

/// A prestart task that waits until every dependency's service takes connections (the
/// group's `depends_on` and its agents' on other groups), or `None` without dependencies.
pub fn wait_task(names: &Names, g: &GroupPlan, notes: &mut Notes) -> Option<Value> {
    let mut deps: Vec<&AgentName> = Vec::new();
    for (dep, _) in &g.depends_on {
        for a in names
            .agents
            .values()
            .filter(|a| a.group == *dep && !a.ports.is_empty())
        {
            if !deps.contains(&a) {
                deps.push(a);
            }
        }
    }
    for a in g.agents.values() {
        for (dep, _) in &a.depends_on {
            match names.agents.get(dep) {
                Some(d) if d.group == g.name => notes.agent(
                    &g.name,
                    &a.name,
                    format!("depends on {dep} of its own group: the tasks start together"),
                ),
                Some(d) if !d.ports.is_empty() && !deps.contains(&d) => deps.push(d),
                _ => {}
            }
        }
    }
    if deps.is_empty() {
        return None;
    }
    let mut tmpl = String::new();
    let mut vars = Vec::new();
    for (i, d) in deps.iter().enumerate() {
        tmpl.push_str(&format!("DEP{i}={}\n", addr_of(d)));
        vars.push(format!("DEP{i}"));
    }
    // No `${...}` in the script: Nomad would interpolate it.
    let script = format!(
        "for v in {}; do eval a=\\$$v; until [ -n \"$a\" ] && nc -z -w 2 $(echo $a | cut -d: -f1) \
         $(echo $a | cut -d: -f2); do echo waiting for $v; sleep 2; done; done",
        vars.join(" ")
    );
    Some(json!({
        "Name": "wait-dependencies",
        "Driver": "docker",
        "Lifecycle": {"Hook": "prestart", "Sidecar": false},
        "Config": {"image": WAIT_IMAGE, "command": "sh", "args": ["-c", script]},
        "Templates": [{
            "EmbeddedTmpl": tmpl,
            "DestPath": "local/deps.env",
            "Envvars": true,
            "ChangeMode": "restart",
        }],
        "Resources": {"CPU": 50, "MemoryMB": 32},
    }))
}
