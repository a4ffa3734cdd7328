//! `agent_export::nomad` against Nomad's API: the job is decoded field by field against the
//! Go structs of `api.Job` (`data/nomad_api_fields.txt`, extracted from the nomad
//! repository's `api/` package), as `encoding/json` with `DisallowUnknownFields` would, and
//! checked for the rules Nomad's job validation applies to what we write (unique names,
//! port labels that exist, `Interval >= Attempts * Delay`, prestart hooks). No Nomad binary
//! can be installed here (its licence) and no Go module proxy is reachable, so this is the
//! check that runs offline.

mod common;

use std::collections::HashMap;

use agent_export::{nomad, Input};
use common::{example, plans, TempDir};
use serde_json::Value;

/// Struct name -> (JSON field, Go type).
fn api() -> HashMap<String, Vec<(String, String)>> {
    let text = include_str!("data/nomad_api_fields.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().expect("struct name").to_string();
            let fields = words
                .map(|w| {
                    let (f, t) = w.split_once(':').expect("field:type");
                    (f.to_string(), t.to_string())
                })
                .collect();
            (name, fields)
        })
        .collect()
}

/// Decodes `v` as Go type `ty`, naming every mismatch with its path.
fn decode(
    api: &HashMap<String, Vec<(String, String)>>,
    v: &Value,
    ty: &str,
    path: &str,
    errs: &mut Vec<String>,
) {
    let ty = ty.trim_start_matches('*');
    if v.is_null() {
        return; // a nil pointer, slice or map
    }
    if let Some(elem) = ty.strip_prefix("[]") {
        match v.as_array() {
            Some(a) => {
                for (i, x) in a.iter().enumerate() {
                    decode(api, x, elem, &format!("{path}[{i}]"), errs);
                }
            }
            None => errs.push(format!("{path}: expected an array ({ty}), got {v}")),
        }
        return;
    }
    if let Some(elem) = ty.strip_prefix("map[string]") {
        match v.as_object() {
            Some(m) if elem != "any" => {
                for (k, x) in m {
                    decode(api, x, elem, &format!("{path}.{k}"), errs);
                }
            }
            Some(_) => {}
            None => errs.push(format!("{path}: expected an object ({ty}), got {v}")),
        }
        return;
    }
    let ok = match ty {
        "string" => v.is_string(),
        "bool" => v.is_boolean(),
        "int" | "int64" => v.is_i64(),
        "uint64" => v.is_u64(),
        // A time.Duration is nanoseconds.
        "time.Duration" => v.is_i64(),
        "any" => true,
        name => {
            let Some(fields) = api.get(name) else {
                errs.push(format!("{path}: struct {name} is not in the table"));
                return;
            };
            let Some(m) = v.as_object() else {
                errs.push(format!("{path}: expected an object ({name}), got {v}"));
                return;
            };
            for (k, x) in m {
                match fields.iter().find(|(f, _)| f == k) {
                    Some((_, t)) => decode(api, x, t, &format!("{path}.{k}"), errs),
                    None => errs.push(format!("{path}: unknown field {k:?} in {name}")),
                }
            }
            true
        }
    };
    if !ok {
        errs.push(format!("{path}: expected {ty}, got {v}"));
    }
}

/// Nomad's job rules for what the export writes.
fn rules(job: &Value, errs: &mut Vec<String>) {
    let mut groups = Vec::new();
    let mut services = Vec::new();
    for tg in job["TaskGroups"].as_array().expect("task groups") {
        let name = tg["Name"].as_str().expect("group name");
        if groups.contains(&name) {
            errs.push(format!("task group {name} twice"));
        }
        groups.push(name);
        let labels: Vec<&str> = tg["Networks"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| {
                ["DynamicPorts", "ReservedPorts"]
                    .into_iter()
                    .flat_map(move |k| n[k].as_array().into_iter().flatten())
            })
            .filter_map(|p| p["Label"].as_str())
            .collect();
        for s in tg["Services"].as_array().into_iter().flatten() {
            let sname = s["Name"].as_str().expect("service name");
            let valid = sname.len() <= 63
                && sname.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !sname.starts_with('-');
            if !valid || services.contains(&sname) {
                errs.push(format!("service name {sname:?} invalid or twice"));
            }
            services.push(sname);
            for l in std::iter::once(&s["PortLabel"]).chain(
                s["Checks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| &c["PortLabel"]),
            ) {
                if let Some(l) = l.as_str() {
                    if !labels.contains(&l) {
                        errs.push(format!(
                            "{name}: port label {l} is not in the group's network"
                        ));
                    }
                }
            }
        }
        let r = &tg["RestartPolicy"];
        if let (Some(i), Some(a), Some(d)) = (
            r["Interval"].as_u64(),
            r["Attempts"].as_u64(),
            r["Delay"].as_u64(),
        ) {
            if i < a * d {
                errs.push(format!(
                    "{name}: restart Interval {i} < Attempts {a} * Delay {d}"
                ));
            }
        }
        let mut tasks = Vec::new();
        for t in tg["Tasks"].as_array().expect("tasks") {
            let tname = t["Name"].as_str().expect("task name");
            if tasks.contains(&tname) {
                errs.push(format!("{name}: task {tname} twice"));
            }
            tasks.push(tname);
            if !matches!(t["Driver"].as_str(), Some("docker" | "exec")) {
                errs.push(format!("{name}.{tname}: driver {}", t["Driver"]));
            }
            if let Some(h) = t["Lifecycle"]["Hook"].as_str() {
                if !["prestart", "poststart", "poststop"].contains(&h) {
                    errs.push(format!("{name}.{tname}: lifecycle hook {h}"));
                }
            }
        }
    }
}

fn check_job(job: &Value) {
    let api = api();
    let mut errs = Vec::new();
    let Some(m) = job.as_object() else {
        panic!("the job is not an object");
    };
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["Job"],
        "the API's {{\"Job\": ...}} wrapper"
    );
    decode(&api, &job["Job"], "*Job", "Job", &mut errs);
    rules(&job["Job"], &mut errs);
    assert!(
        errs.is_empty(),
        "the job does not decode as api.Job:\n{}",
        errs.join("\n")
    );
}

#[test]
fn the_decoder_rejects_what_nomad_would() {
    let api = api();
    let mut errs = Vec::new();
    let bad = serde_json::json!({"ID": "x", "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "KillTimeout": "5s", "Bogus": 1}]}]});
    decode(&api, &bad, "*Job", "Job", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("Bogus")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("KillTimeout")), "{errs:?}");
}

#[test]
fn example_system_is_a_job_nomad_decodes() {
    let (l, plans) = plans(&example());
    let input = Input {
        loaded: &l,
        plans: &plans,
        registry: "registry.example.com/ai".into(),
    };
    let n = nomad(&input, "ai-system").expect("exports");
    check_job(&n.job);
    let job = &n.job["Job"];
    assert_eq!(job["ID"], "ai-system");
    let groups = job["TaskGroups"].as_array().expect("groups");
    assert_eq!(groups.len(), l.system.groups.len());
    let tg = |name: &str| groups.iter().find(|g| g["Name"] == name).expect("group");
    // Pinned to the host; one task per agent; a service per port with its check.
    let infra = tg("infrastructure");
    assert_eq!(infra["Constraints"][0]["RTarget"], "pc2");
    assert_eq!(infra["Constraints"][0]["LTarget"], "${node.unique.name}");
    let tasks = infra["Tasks"].as_array().expect("tasks");
    assert_eq!(tasks[0]["Name"], "wait-dependencies");
    assert_eq!(tasks[0]["Lifecycle"]["Hook"], "prestart");
    assert!(tasks[0]["Templates"][0]["EmbeddedTmpl"]
        .as_str()
        .expect("template")
        .contains("nomadService \"pc2-redis\""));
    assert_eq!(
        tasks.len(),
        1 + l.system.groups["infrastructure"].agents.len()
    );
    let svc = infra["Services"].as_array().expect("services");
    assert_eq!(svc.len(), 9);
    assert_eq!(svc[0]["Name"], "tieredresponder");
    assert_eq!(svc[0]["Checks"][0]["Type"], "http");
    assert_eq!(svc[0]["Checks"][0]["Interval"], 5_000_000_000u64);
    // GPUs: a device request on the first task.
    let gpu = tg("gpu-infrastructure");
    let t = &gpu["Tasks"]
        .as_array()
        .expect("tasks")
        .last()
        .expect("agent task")
        .clone();
    assert_eq!(t["Resources"]["Devices"][0]["Name"], "nvidia/gpu");
    assert_eq!(t["Resources"]["Devices"][0]["Count"], 1);
    assert_eq!(t["Driver"], "docker");
    assert_eq!(
        t["Config"]["image"],
        "registry.example.com/ai/agent-python:latest"
    );
    // Other agents' addresses come from a template, not the host's addresses.
    assert!(t["Env"].get("REDIS_ADDR").is_none());
    let tmpl = t["Templates"][0]["EmbeddedTmpl"]
        .as_str()
        .expect("names template");
    assert!(
        tmpl.contains(
            "REDIS_ADDR={{ range nomadService \"redis\" }}{{ .Address }}:{{ .Port }}{{ end }}"
        ),
        "{tmpl}"
    );
    assert_eq!(t["Resources"]["MemoryMaxMB"], 512);
}

#[test]
fn host_image_groups_use_the_exec_driver() {
    let tmp = TempDir::new("nomad");
    for s in ["a.py", "b.py"] {
        std::fs::write(tmp.0.join(s), "").expect("script");
    }
    let yaml = "version: 1\nhosts:\n  h1: {address: 127.0.0.1, role: primary}\ngroups:\n  one:\n    host: h1\n    resources: {memory: 100M, cpus: 0.5}\n    agents:\n      - {name: A, command: python3 a.py, port: 7001, health: {exec: [python3, b.py]}, stop_signal: SIGINT}\n      - {name: B, command: python3 b.py, ports: [7002, 7003], health: {tcp: 9999}}\n";
    std::fs::write(tmp.0.join("system.yaml"), yaml).expect("system file");
    let (l, plans) = plans(&tmp.0.join("system.yaml"));
    let input = Input {
        loaded: &l,
        plans: &plans,
        registry: "r.example".into(),
    };
    let n = nomad(&input, "one").expect("exports");
    check_job(&n.job);
    let tg = &n.job["Job"]["TaskGroups"][0];
    assert_eq!(tg["Tasks"][0]["Driver"], "exec");
    assert_eq!(tg["Tasks"][0]["Config"]["command"], "python3");
    assert_eq!(tg["Tasks"][0]["KillSignal"], "SIGINT");
    assert_eq!(tg["Tasks"][0]["Resources"]["CPU"], 250);
    // A script check: Consul's.
    assert_eq!(tg["Services"][0]["Provider"], "consul");
    assert_eq!(tg["Services"][0]["Checks"][0]["Type"], "script");
    assert_eq!(tg["Services"][0]["Checks"][0]["TaskName"], "A");
    assert_eq!(tg["Services"][2]["Name"], "b-p7003");
    let notes = n.notes.lines().join("\n");
    assert!(notes.contains("exec driver"), "{notes}");
    assert!(
        notes.contains("port 9999 is not one of its ports"),
        "{notes}"
    );
    // The job file: into a directory, or a file.
    let file = n.write(&tmp.0.join("out/")).expect("write");
    assert_eq!(file, tmp.0.join("out/one.nomad.json"));
    let back: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    assert_eq!(back, n.job);
}
