//! The corpus, continued: restart, resources, GPUs, volumes, networks, commands, builds,
//! images, extensions, interpolation, unsupported keys, security, joins and hosts.

mod common;

use std::path::Path;

use agent_compose::{import, HostArg, Options};
use agent_config::model::{GpuDevices, NetworkMode, Policy};
use common::{at, corpus, has, one, read, run, system};

#[test]
fn restart_policies() {
    let i = one("08-restart.yml");
    let s = system(&i);
    let p = |g: &str| s.groups[g].restart.as_ref().and_then(|r| r.0.policy);
    assert_eq!(p("a"), Some(Policy::Never));
    assert_eq!(p("b"), Some(Policy::Always));
    assert_eq!(p("c"), Some(Policy::OnFailure));
    assert_eq!(
        s.groups["c"].restart.as_ref().and_then(|r| r.0.max_retries),
        Some(3)
    );
    assert_eq!(p("d"), Some(Policy::Always));
    assert!(s.groups["e"].restart.is_none());
    assert_eq!(
        s.groups["f"].restart.as_ref().and_then(|r| r.0.max_retries),
        Some(5)
    );
    has(&i, "08-restart.yml", 13, "unless-stopped becomes always");
    has(
        &i,
        "08-restart.yml",
        16,
        "\"sometimes\" is not a Compose restart policy",
    );
    has(
        &i,
        "08-restart.yml",
        23,
        "restart_policy.delay: not carried",
    );
}

#[test]
fn resource_limits() {
    let i = one("09-resources.yml");
    let s = system(&i);
    let a = &s.groups["a"].resources;
    assert_eq!(a.cpus.map(|c| c.0), Some(0.5));
    assert_eq!(a.memory.map(|m| m.0), Some(512 << 20));
    assert_eq!(a.pids, Some(100));
    let b = &s.groups["b"].resources;
    assert_eq!(b.memory.map(|m| m.0), Some(1 << 30));
    assert_eq!(b.memory_swap.map(|m| m.0), Some(2 << 30));
    assert_eq!(b.cpus.map(|c| c.0), Some(1.5));
    assert_eq!(b.pids, Some(50));
    assert_eq!(b.cpu_weight, Some(50));
    assert!(s.groups["c"].resources.memory.is_none());
    has(&i, "09-resources.yml", 11, "reservations are not carried");
    has(&i, "09-resources.yml", 12, "reservations are not carried");
    has(&i, "09-resources.yml", 22, "below the 4M minimum");
}

#[test]
fn gpu_reservations() {
    let i = one("10-gpus.yml");
    let s = system(&i);
    let all = s.groups["all"].gpus.clone().expect("all GPUs");
    assert_eq!(all.devices, GpuDevices::All);
    assert!(all.optional);
    let ids = s.groups["ids"].gpus.clone().expect("GPU ids");
    assert_eq!(
        ids.devices,
        GpuDevices::List(vec![
            agent_config::model::GpuId::Index(0),
            agent_config::model::GpuId::Uuid("GPU-8f2c1a2b-0000-0000-0000-000000000000".into())
        ])
    );
    assert!(s.groups["amd"].gpus.is_none());
    assert_eq!(
        s.groups["short"].gpus.clone().map(|g| g.devices),
        Some(GpuDevices::All)
    );
    has(&i, "10-gpus.yml", 8, "optional: true");
    has(&i, "10-gpus.yml", 25, "only NVIDIA GPUs");
}

#[test]
fn volumes_become_binds() {
    let i = one("11-volumes.yml");
    let binds = &system(&i).groups["a"].binds;
    let b: Vec<(String, String, bool)> = binds
        .iter()
        .map(|b| {
            (
                b.source.display().to_string(),
                b.target.display().to_string(),
                b.readonly,
            )
        })
        .collect();
    assert_eq!(
        b,
        [
            ("data".to_string(), "/data".to_string(), true),
            ("/etc/hostname".into(), "/host-hostname".into(), false),
            (
                "/var/lib/agent-supervisor/volumes/cache".into(),
                "/cache".into(),
                false
            ),
            ("data".into(), "/data2".into(), true),
        ]
    );
    has(
        &i,
        "11-volumes.yml",
        7,
        "the named volume cache is the directory /var/lib/agent-supervisor/volumes/cache",
    );
    has(&i, "11-volumes.yml", 8, "anonymous volume /anonymous");
    has(&i, "11-volumes.yml", 13, "volumes.bind: not carried");
    has(&i, "11-volumes.yml", 15, "type tmpfs is not carried");
    has(&i, "11-volumes.yml", 17, "`~` is not expanded");
    has(&i, "11-volumes.yml", 19, "volumes.cache: its driver");
}

#[test]
fn network_modes() {
    let i = one("12-networks.yml");
    let s = system(&i);
    let mode = |g: &str| s.groups[g].network.as_ref().map(|n| (n.mode, n.egress));
    assert_eq!(mode("priv"), Some((NetworkMode::Private, None)));
    assert_eq!(mode("hostnet"), Some((NetworkMode::Host, None)));
    assert_eq!(mode("none"), Some((NetworkMode::Private, Some(false))));
    assert_eq!(mode("shared"), None);
    has(
        &i,
        "12-networks.yml",
        5,
        "aliases, addresses and priorities are not carried",
    );
    has(&i, "12-networks.yml", 15, "\"service:priv\" is not carried");
}

#[test]
fn commands_and_entrypoints() {
    let i = one("13-command-entrypoint.yml");
    let s = system(&i);
    let cmd = |g: &str| s.groups[g].agents[0].command.0.clone();
    assert_eq!(
        cmd("s"),
        ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"]
    );
    assert_eq!(cmd("e"), ["/usr/bin/env", "python3", "-m", "http.server"]);
    assert_eq!(cmd("only-entry"), ["/bin/sleep", "5"]);
    assert_eq!(cmd("bad")[0], "/bin/sh");
    has(&i, "13-command-entrypoint.yml", 12, "cannot split");
    has(&i, "13-command-entrypoint.yml", 13, "no command");
}

#[test]
fn a_build_becomes_a_recipe() {
    let i = one("14-build-dockerfile.yml");
    let s = system(&i);
    let app = &s.groups["app"];
    assert_eq!(app.image.as_deref(), Some("app"));
    assert_eq!(
        s.images["app"].recipe.as_deref(),
        Some(Path::new("images/app.yaml"))
    );
    assert_eq!(app.agents[0].command.0, ["/usr/local/bin/app", "--serve"]);
    assert_eq!(app.agents[0].port.map(|p| p.0), Some(8080));
    assert_eq!(app.agents[0].stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(
        app.env.get("APP_VERSION").map(String::as_str),
        Some("1.2.3")
    );
    assert_eq!(
        s.groups["plain"].env.get("APP_VERSION").map(String::as_str),
        Some("dev")
    );
    let (_, recipe) = i
        .files
        .iter()
        .find(|(p, _)| p == Path::new("images/app.yaml"))
        .expect("the recipe");
    assert!(recipe.contains("base: \"docker-archive:debian-bookworm-slim.tar\"\ncontext: \"../build\"\nignore_file: \".dockerignore\"\n"), "{recipe}");
    assert!(
        recipe.contains("- copy: {src: \"config/\", dst: \"/etc/app/\"}"),
        "{recipe}"
    );
    has(
        &i,
        "14-build-dockerfile.yml",
        7,
        "build.cache_from: not carried",
    );
    has(
        &i,
        "14-build-dockerfile.yml",
        8,
        "its tag \"app:latest\" is not used",
    );
    has(&i, "14-build-dockerfile.yml", 13, "cannot be read");
    has(&i, "14-build-dockerfile.yml", 16, "remote context");
    has(&i, "build/Dockerfile", 1, "an earlier build stage");
    has(&i, "build/Dockerfile", 8, "COPY --from=builder");
    has(&i, "build/Dockerfile", 9, "remote sources are not carried");
    has(&i, "build/Dockerfile", 11, "heredocs");
    // One note per place, though two services build the same Dockerfile.
    assert_eq!(at(&i, "build/Dockerfile", 11).len(), 1);
}

#[test]
fn images_become_docker_archive_bases() {
    let i = one("15-image-only.yml");
    let s = system(&i);
    assert_eq!(s.groups["redis"].image.as_deref(), Some("redis"));
    let (_, r) = i
        .files
        .iter()
        .find(|(p, _)| p == Path::new("images/redis.yaml"))
        .expect("a recipe");
    assert!(
        r.contains("base: \"docker-archive:redis-7-alpine.tar\""),
        "{r}"
    );
    let (_, sc) = i
        .files
        .iter()
        .find(|(p, _)| p == Path::new("images/scratchy.yaml"))
        .expect("a recipe");
    assert!(sc.starts_with("base: scratch"), "{sc}");
    has(&i, "15-image-only.yml", 3, "skopeo copy docker://redis:7-alpine docker-archive:images/redis-7-alpine.tar:redis:7-alpine");
}

#[test]
fn extensions_anchors_and_merge_keys() {
    let i = one("16-extensions.yml");
    let s = system(&i);
    let pair = &s.groups["pair"];
    assert_eq!(pair.host, "edge");
    assert!(s.hosts.contains_key("edge"));
    assert_eq!(
        pair.agents
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    // `<<: *common` merged restart and environment.
    assert_eq!(
        pair.restart.as_ref().and_then(|r| r.0.policy),
        Some(Policy::Always)
    );
    assert_eq!(pair.env.get("SHARED").map(String::as_str), Some("1"));
    has(&i, "16-extensions.yml", 1, "x-common: extension");
    has(
        &i,
        "16-extensions.yml",
        17,
        "x-agent-supervisor.replicas: unknown key",
    );
    has(&i, "16-extensions.yml", 20, "x-custom: extension");
}

#[test]
fn interpolation_from_the_environment_and_dotenv() {
    let i = run(
        &["interp/compose.yml"],
        vec![],
        vec![],
        vec![
            ("PY_VERSION".into(), "3.12".into()),
            ("NEEDED".into(), "yes".into()),
        ],
    );
    let s = system(&i);
    let g = &s.groups["app"];
    assert_eq!(g.env.get("TAG").map(String::as_str), Some("from-dotenv"));
    assert_eq!(g.env.get("REGION").map(String::as_str), Some("eu"));
    assert_eq!(g.env.get("MISSING").map(String::as_str), Some(""));
    assert_eq!(g.env.get("NEEDED").map(String::as_str), Some("yes"));
    assert_eq!(
        g.agents[0].command.0,
        ["python3", "-c", "print('${NOT_VAR}')"]
    );
    has(&i, "interp/compose.yml", 3, "python:3.12");
    has(&i, "interp/compose.yml", 8, "variable NOPE is not set");
    let i = run(&["interp/compose.yml"], vec![], vec![], vec![]);
    has(
        &i,
        "interp/compose.yml",
        9,
        "variable NEEDED is required: set NEEDED",
    );
}

#[test]
fn unsupported_keys_are_listed_with_their_lines() {
    let i = one("18-unsupported.yml");
    let _ = system(&i);
    for (line, words) in [
        (1, "name: the project name"),
        (5, "privileged"),
        (6, "devices"),
        (8, "labels"),
        (10, "logging"),
        (12, "container_name"),
        (13, "hostname"),
        (14, "frobnicate: unknown Compose key"),
        (15, "user"),
        (16, "secrets"),
        (19, "include"),
        (21, "unknown_top: unknown top-level Compose key"),
    ] {
        has(&i, "18-unsupported.yml", line, words);
    }
}

#[test]
fn security_settings() {
    let i = one("19-security.yml");
    let sec = &system(&i).groups["a"].security;
    assert_eq!(sec.cap_add, ["NET_ADMIN", "SYS_TIME"]);
    assert_eq!(sec.cap_drop, ["ALL"]);
    assert_eq!(sec.seccomp, agent_config::model::SeccompMode::Unconfined);
    assert_eq!(sec.rlimits.get("nofile"), Some(&40000));
    assert_eq!(sec.rlimits.get("nproc"), Some(&65535));
    has(&i, "19-security.yml", 8, "apparmor:unconfined");
    has(&i, "19-security.yml", 11, "soft and hard differ");
    has(&i, "19-security.yml", 15, "rttime: not carried");
}

#[test]
fn stopping_and_working_directory() {
    let i = one("20-stop.yml");
    let g = &system(&i).groups["a"];
    assert_eq!(g.stop_timeout.map(|d| d.0.as_secs()), Some(90));
    assert_eq!(g.agents[0].stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(g.agents[0].workdir.as_deref(), Some(Path::new("/srv")));
    has(&i, "20-stop.yml", 7, "user");
}

#[test]
fn services_joined_into_one_group() {
    let i = run(
        &["21-join.yml"],
        vec![],
        vec![("web".into(), vec!["front".into(), "back".into()])],
        vec![],
    );
    let s = system(&i);
    assert_eq!(s.groups.keys().collect::<Vec<_>>(), ["web", "solo"]);
    let web = &s.groups["web"];
    assert_eq!(
        web.agents
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["front", "back"]
    );
    assert_eq!(web.env.get("ROLE").map(String::as_str), Some("front"));
    assert_eq!(
        web.agents[1].env.get("ROLE").map(String::as_str),
        Some("back")
    );
    assert_eq!(
        s.groups["solo"].depends_on.0.keys().collect::<Vec<_>>(),
        ["web"]
    );
    has(&i, "21-join.yml", 6, "joined into group web");
    let e = import(
        &[(corpus().join("21-join.yml"), "services: {a: {}}".into())],
        &read,
        &Options {
            joins: vec![("g".into(), vec!["zz".into()])],
            ..Options::default()
        },
    )
    .expect_err("no such service");
    assert!(e.to_string().contains("no service \"zz\""), "{e}");
}

#[test]
fn one_file_several_hosts() {
    let i = run(
        &["22-several-hosts.yml"],
        vec![
            HostArg::Name("main".into()),
            HostArg::Services("gpubox".into(), vec!["gpu".into()]),
        ],
        vec![],
        vec![],
    );
    let s = system(&i);
    assert_eq!(s.hosts.keys().collect::<Vec<_>>(), ["main", "gpubox"]);
    assert_eq!(s.groups["redis"].host, "main");
    assert_eq!(s.groups["gpu"].host, "gpubox");
    assert_eq!(s.hosts["main"].role, agent_config::model::Role::Primary);
    assert_eq!(s.hosts["gpubox"].role, agent_config::model::Role::Secondary);
}

#[test]
fn several_files_several_hosts_and_unique_agent_names() {
    let i = run(
        &["15-image-only.yml", "22-several-hosts.yml"],
        vec![HostArg::Name("a".into()), HostArg::Name("b".into())],
        vec![],
        vec![],
    );
    let s = system(&i);
    assert_eq!(s.groups["redis"].host, "a");
    // Both files have a service redis: the group keys clash, so the second is joined; the
    // agent names stay unique.
    let names: Vec<&str> = s
        .groups
        .values()
        .flat_map(|g| g.agents.iter().map(|a| a.name.as_str()))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "{names:?}");
    assert!(names.contains(&"redis-b"), "{names:?}");
}

#[test]
fn odd_values_are_notes_not_panics() {
    let i = one("23-odd.yml");
    let s = system(&i);
    assert!(!s.groups.contains_key("list-not-map"));
    assert!(s.groups.contains_key("bad-name-"));
    has(
        &i,
        "23-odd.yml",
        2,
        "expected a mapping, got a list; skipped",
    );
    has(&i, "23-odd.yml", 3, "the group is named bad-name-");
    has(&i, "23-odd.yml", 7, "ports: expected a list");
    has(
        &i,
        "23-odd.yml",
        10,
        "expected a list of KEY=VALUE or a mapping",
    );
    has(&i, "23-odd.yml", 12, "expected CMD, CMD-SHELL or NONE");
    has(&i, "23-odd.yml", 13, "not a duration");
    has(&i, "23-odd.yml", 15, "replicas are not carried");
    has(&i, "23-odd.yml", 16, "placement: not carried");
    has(&i, "23-odd.yml", 19, "is not SOURCE:TARGET[:MODE]");
    has(&i, "23-odd.yml", 21, "\"abc\" is not a port");
}

#[test]
fn a_script_inside_an_image_is_a_note() {
    let i = one("24-image-script.yml");
    let s = system(&i);
    assert_eq!(
        s.groups["py"].agents[0].command.0,
        ["python3", "-u", "main.py"]
    );
    assert_eq!(
        s.groups["py"].agents[0].workdir.as_deref(),
        Some(Path::new("/app"))
    );
    has(
        &i,
        "24-image-script.yml",
        2,
        "runs main.py out of the image",
    );
    assert!(at(&i, "24-image-script.yml", 6)
        .iter()
        .all(|m| !m.contains("out of the image")));
}
