//! `agent_export::kubernetes` on the example system and on a system with the cases the
//! example lacks: every manifest is accepted by `kubernetes-validate --strict`, GPUs, probes,
//! Services, names (resolved as a cluster's DNS would), dependencies, env files, binds, the
//! `host` image, and the notes of what is not carried.

mod common;

use agent_export::{kubernetes, Input, Names};
use common::{assert_valid_manifests, example, plans, TempDir};
use serde_json::Value;

fn kinds<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The pod template of a group's workload.
fn pod(docs: &[Value]) -> &Value {
    docs.iter()
        .find(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .map(|d| &d["spec"]["template"]["spec"])
        .expect("a workload")
}

/// Every `(namespace, name)` of a Service with its ports.
fn services(k: &agent_export::KubeExport) -> Vec<(String, String, Vec<u64>)> {
    k.objects
        .iter()
        .flat_map(|(_, docs)| kinds(docs, "Service"))
        .map(|s| {
            let ports = s["spec"]["ports"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p["port"].as_u64()).collect())
                .unwrap_or_default();
            (
                s["metadata"]["namespace"].as_str().expect("ns").to_string(),
                s["metadata"]["name"].as_str().expect("name").to_string(),
                ports,
            )
        })
        .collect()
}

/// Resolves `name` as a pod in `ns` with `searches` would (ndots 5: the search list first,
/// case-insensitively): the `(namespace, service)` it reaches.
fn resolve(
    name: &str,
    ns: &str,
    searches: &[String],
    svcs: &[(String, String, Vec<u64>)],
) -> Option<(String, String)> {
    let name = name.to_ascii_lowercase();
    let mut domains = vec![
        format!("{ns}.svc.cluster.local"),
        "svc.cluster.local".to_string(),
        "cluster.local".to_string(),
    ];
    domains.extend(searches.iter().cloned());
    for d in domains {
        let fqdn = format!("{name}.{d}");
        for (sns, sname, _) in svcs {
            if fqdn == format!("{sname}.{sns}.svc.cluster.local") {
                return Some((sns.clone(), sname.clone()));
            }
        }
    }
    None
}

#[test]
fn example_system_exports_to_manifests_the_validator_accepts() {
    let (l, plans) = plans(&example());
    let input = Input {
        loaded: &l,
        plans: &plans,
        registry: "registry.example.com/ai".into(),
    };
    let k = kubernetes(&input).expect("the example exports");
    let out = TempDir::new("example");
    k.write(&out.0).expect("write the manifests");
    // One file per group of both hosts, and the notes.
    assert_eq!(k.files.len(), l.system.groups.len());
    assert!(out.0.join("NOTES.md").is_file());
    assert!(out.0.join("gpu-infrastructure.yaml").is_file());
    assert!(out.0.join("pc2-redis.yaml").is_file());
    assert_valid_manifests(
        &out.0,
        "example_system_exports_to_manifests_the_validator_accepts",
    );

    let names = Names::new(&l).expect("names");
    let svcs = services(&k);
    for (gname, g) in &l.system.groups {
        let docs = &k.objects.iter().find(|(n, _)| n == gname).expect("group").1;
        if g.agents.is_empty() {
            assert!(
                kinds(docs, "Deployment").is_empty(),
                "{gname} has no agents"
            );
            continue;
        }
        let pod = pod(docs);
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(
            containers.len(),
            g.agents.len(),
            "one container per agent of {gname}"
        );
        let ns = names.namespace(gname);
        let searches: Vec<String> = pod["dnsConfig"]["searches"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for a in &g.agents {
            let c = containers
                .iter()
                .find(|c| c["name"] == a.name.to_ascii_lowercase())
                .unwrap_or_else(|| panic!("container of {}", a.name));
            // Probes where health is configured.
            if let Some(h) = &a.health {
                for p in ["readinessProbe", "livenessProbe"] {
                    assert!(c[p].is_object(), "{}: {p}", a.name);
                }
                assert_eq!(
                    c["startupProbe"].is_object(),
                    h.start_period.is_some(),
                    "{}",
                    a.name
                );
                match (&h.http, h.tcp) {
                    (Some(path), _) => {
                        assert_eq!(c["readinessProbe"]["httpGet"]["path"], path.as_str())
                    }
                    (None, Some(_)) => assert!(c["readinessProbe"]["tcpSocket"]["port"].is_u64()),
                    _ => panic!("the example's checks are http or tcp"),
                }
            } else {
                assert!(c["readinessProbe"].is_null(), "{}", a.name);
            }
            // Every port has a Service, named after the agent, in its group's namespace.
            for p in a.all_ports() {
                assert!(
                    svcs.iter().any(|(sns, sname, ports)| *sns == ns
                        && *sname == a.name.to_ascii_lowercase()
                        && ports.contains(&u64::from(p.0))),
                    "no Service for {}:{}",
                    a.name,
                    p.0
                );
            }
            // From this pod, every agent resolves as <agent> and <agent>.<group>, and every
            // group as <group>, to the agent's own Service.
            for (other_g, og) in &l.system.groups {
                for oa in &og.agents {
                    let want = Some((names.namespace(other_g), oa.name.to_ascii_lowercase()));
                    if oa.all_ports().is_empty() {
                        continue;
                    }
                    assert_eq!(
                        resolve(&oa.name, &ns, &searches, &svcs),
                        want,
                        "{} from {gname}",
                        oa.name
                    );
                    let qualified = format!("{}.{other_g}", oa.name);
                    assert_eq!(
                        resolve(&qualified, &ns, &searches, &svcs),
                        want,
                        "{qualified}"
                    );
                }
                if og.agents.iter().any(|a| !a.all_ports().is_empty()) {
                    let got = resolve(other_g, &ns, &searches, &svcs).map(|(n, _)| n);
                    assert_eq!(
                        got,
                        Some(names.namespace(other_g)),
                        "{other_g} from {gname}"
                    );
                }
            }
        }
    }
    // The GPU group asks for one GPU.
    let gpu = &k
        .objects
        .iter()
        .find(|(n, _)| n == "gpu-infrastructure")
        .expect("gpu group")
        .1;
    let c = &pod(gpu)["containers"][0];
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    // Limits per container: the group's; requests: its share.
    let audio = &k
        .objects
        .iter()
        .find(|(n, _)| n == "audio-interface")
        .expect("audio")
        .1;
    let c = &pod(audio)["containers"][0];
    assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(c["resources"]["limits"]["cpu"], "1000m");
    assert_eq!(c["resources"]["requests"]["cpu"], "125m");
    // Dependencies: core-services waits for redis's Service.
    let core = &k
        .objects
        .iter()
        .find(|(n, _)| n == "core-services")
        .expect("core")
        .1;
    let init = &pod(core)["initContainers"][0];
    assert!(init["command"][2]
        .as_str()
        .expect("script")
        .contains("nc -z -w 2 redis.redis 6379"));
    // Addresses in the environment are the Services'.
    let env = pod(core)["containers"][0]["env"]
        .as_array()
        .expect("env")
        .clone();
    let var = |k: &str| {
        env.iter()
            .find(|e| e["name"] == k)
            .map(|e| e["value"].clone())
    };
    assert_eq!(var("REDIS_ADDR"), Some(Value::from("redis.redis:6379")));
    assert_eq!(
        var("AGENT_DEPENDENCIES"),
        Some(Value::from("redis=redis.redis:6379"))
    );
    assert_eq!(var("MAINPC_IP"), None);
    // No store here: images by tag, and the push commands in the notes.
    assert_eq!(c["image"], "registry.example.com/ai/agent-python:latest");
    let notes = std::fs::read_to_string(out.0.join("NOTES.md")).expect("notes");
    assert!(
        notes.contains("skopeo copy --preserve-digests oci:/var/lib/agent-supervisor/images:agent-python docker://registry.example.com/ai/agent-python:latest"),
        "{notes}"
    );
    assert!(notes.contains("referenced by tag, not digest"), "{notes}");
    assert!(notes.contains("pids 512 is not carried"), "{notes}");
}

/// A system with the cases the example lacks.
fn features(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    for script in ["kv.py", "check.py", "front.py", "worker.py"] {
        std::fs::write(dir.join(script), "print('hi')\n").expect("script");
    }
    std::fs::write(dir.join("app.env"), "MODE=dev\nTOKEN=abc\n").expect("env file");
    let yaml = format!(
        r#"version: 1
daemon: {{state_dir: {d}/state, run_dir: {d}/run, log_dir: {d}/log}}
hosts:
  h1: {{address: 127.0.0.1, role: primary}}
groups:
  store:
    host: h1
    binds: ["data:/data:rw"]
    env_file: app.env
    env: {{MODE: prod}}
    resources: {{memory: 256M, memory_high: 200M}}
    security: {{cap_add: [CAP_NET_ADMIN], cap_drop: [chown], rlimits: {{nofile: 4096}}}}
    agents:
      - name: KV
        command: python3 kv.py
        port: 7000
        health: {{exec: [python3, check.py], interval: 1500ms, retries: 2}}
  web:
    host: h1
    network: {{mode: private, egress: false}}
    depends_on: {{store: healthy}}
    gpus: 2
    agents:
      - name: Front
        command: python3 front.py
        ports: [8080, 8081]
        publish: ["18080:8080"]
        health: {{tcp: true, start_period: 10s, interval: 2s}}
        restart: {{on_unhealthy: false}}
      - name: Worker
        command: python3 worker.py
        restart: never
        stop_signal: SIGINT
"#,
        d = dir.display()
    );
    let file = dir.join("system.yaml");
    std::fs::write(&file, yaml).expect("system file");
    file
}

#[test]
fn host_image_binds_env_files_probes_and_notes() {
    let tmp = TempDir::new("features");
    let (l, plans) = plans(&features(&tmp.0));
    let input = Input {
        loaded: &l,
        plans: &plans,
        registry: "reg.example/x".into(),
    };
    let k = kubernetes(&input).expect("exports");
    let out = tmp.0.join("out");
    k.write(&out).expect("write");
    assert_valid_manifests(&out, "host_image_binds_env_files_probes_and_notes");

    let store = &k
        .objects
        .iter()
        .find(|(n, _)| n == "store")
        .expect("store")
        .1;
    // A writable bind: a StatefulSet with a claim mounted at the target.
    let sts = kinds(store, "StatefulSet");
    assert_eq!(sts.len(), 1, "a StatefulSet for the writable bind");
    assert_eq!(sts[0]["spec"]["serviceName"], "store");
    assert_eq!(
        sts[0]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "bind-0"
    );
    let c = &pod(store)["containers"][0];
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/data");
    // The env_file is a ConfigMap; the group's env overrides MODE in the container.
    let cm = kinds(store, "ConfigMap");
    assert_eq!(cm[0]["data"]["TOKEN"], "abc");
    assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "store-env");
    let env = c["env"].as_array().expect("env");
    assert!(env
        .iter()
        .any(|e| e["name"] == "MODE" && e["value"] == "prod"));
    assert!(
        !env.iter().any(|e| e["name"] == "TOKEN"),
        "TOKEN comes from the ConfigMap"
    );
    // The exec health check, timing rounded up to whole seconds.
    assert_eq!(c["readinessProbe"]["exec"]["command"][0], "python3");
    assert_eq!(c["readinessProbe"]["periodSeconds"], 2);
    assert_eq!(c["readinessProbe"]["failureThreshold"], 2);
    assert!(c["startupProbe"].is_null(), "no start period");
    // Capabilities without CAP_; the host image is a placeholder.
    assert_eq!(c["securityContext"]["capabilities"]["add"][0], "NET_ADMIN");
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "CHOWN");
    assert_eq!(c["image"], "reg.example/x/host-rootfs-store:replace-me");

    let web = &k.objects.iter().find(|(n, _)| n == "web").expect("web").1;
    let p = pod(web);
    let front = &p["containers"][0];
    assert_eq!(front["resources"]["limits"]["nvidia.com/gpu"], 2);
    assert!(p["containers"][1]["resources"]["limits"]["nvidia.com/gpu"].is_null());
    assert_eq!(front["readinessProbe"]["tcpSocket"]["port"], 8080);
    assert!(front["livenessProbe"].is_null(), "on_unhealthy: false");
    // 10 s start period / 2 s interval + 3 retries.
    assert_eq!(front["startupProbe"]["failureThreshold"], 8);
    assert_eq!(front["ports"][0]["hostPort"], 18080);
    assert!(front["ports"][1]["hostPort"].is_null());
    assert!(p["initContainers"][0]["command"][2]
        .as_str()
        .expect("script")
        .contains("kv.store 7000"));
    // Both ports of Front have a Service; Worker (no port) has none.
    let svcs = services(&k);
    assert!(svcs.contains(&("web".into(), "front".into(), vec![8080, 8081])));
    assert!(!svcs.iter().any(|(_, n, _)| n == "worker"));

    let notes = k.notes.lines().join("\n");
    for want in [
        "image: host",
        "rlimits nofile=4096",
        "memory_high",
        "egress: false",
        "restart policy Never",
        "stop signal SIGINT",
        "sees no GPU",
        "PersistentVolumeClaim",
        "cap_add/cap_drop",
    ] {
        assert!(notes.contains(want), "notes lack {want:?}:\n{notes}");
    }
}

#[test]
fn names_that_lower_case_into_one_are_errors_naming_both() {
    let tmp = TempDir::new("collide");
    for s in ["a.py", "b.py"] {
        std::fs::write(tmp.0.join(s), "").expect("script");
    }
    let yaml = "version: 1\nhosts:\n  h1: {address: 127.0.0.1, role: primary}\ngroups:\n  one:\n    host: h1\n    agents:\n      - {name: CacheAgent, command: python3 a.py, port: 7001}\n  two:\n    host: h1\n    agents:\n      - {name: cacheagent, command: python3 b.py, port: 7002}\n      - {name: bad_name, command: python3 b.py, port: 7003}\n";
    std::fs::write(tmp.0.join("system.yaml"), yaml).expect("system file");
    let l = agent_config::load(&tmp.0.join("system.yaml")).expect("loads");
    let err = Names::new(&l).expect_err("a collision").to_string();
    assert!(
        err.contains("CacheAgent") && err.contains("cacheagent"),
        "{err}"
    );
    assert!(err.contains("\"cacheagent\""), "{err}");
    assert!(err.contains("bad_name"), "{err}");
}
