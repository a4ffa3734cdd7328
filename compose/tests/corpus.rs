//! The corpus of Compose files (`tests/fixtures/corpus/`): each imports without a panic into
//! a system file the config crate loads; carried keys become fields, the rest notes at lines.
//! (More of the corpus: `corpus_keys.rs`.)

mod common;

use std::path::{Path, PathBuf};

use agent_compose::{import, HostArg, Options};
use agent_config::model::{Condition, NetworkMode};
use common::{corpus, has, one, run, system};

fn yml_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus())
        .expect("list the corpus")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.push("interp/compose.yml".into());
    names.sort();
    names
}

#[test]
fn every_file_imports_and_loads() {
    let names = yml_files();
    assert!(names.len() >= 20, "{names:?}");
    for f in &names {
        let i = run(&[f], vec![], vec![], vec![("NEEDED".into(), "x".into())]);
        let s = system(&i);
        assert!(!s.hosts.is_empty(), "{f}");
        assert!(
            i.system.contains("# Not carried over ("),
            "{f}: {}",
            i.system
        );
        for n in &i.notes {
            assert!(
                i.system.contains(&n.to_string().replace('\n', " ")),
                "{f}: note {n} is not in the file"
            );
        }
        for (rel, text) in &i.files {
            // Every recipe is one the images crate reads.
            // Beside the corpus, so that the recipes' contexts (`../build`) exist.
            let dir = corpus().join(format!("images-{}", std::process::id()));
            let p = dir.join(rel.file_name().expect("a recipe file name"));
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write the recipe");
            let loaded = agent_images::recipe::load_recipe(&p);
            let _ = std::fs::remove_dir_all(&dir);
            match loaded {
                // The build context that is not there (and noted as such).
                Err(e) if rel.ends_with("missing.yaml") => {
                    assert!(e.to_string().contains("is not a directory"), "{e}")
                }
                Err(e) => panic!("{f}: {}: {e}\n{text}", rel.display()),
                Ok(_) => {}
            }
        }
    }
}

#[test]
fn no_panic_on_truncated_or_mangled_files() {
    for f in yml_files() {
        let text = std::fs::read_to_string(corpus().join(&f)).expect("read");
        let cuts: Vec<usize> = (0..text.len())
            .step_by(5)
            .filter(|&c| text.is_char_boundary(c))
            .collect();
        for c in cuts {
            for t in [
                text[..c].to_string(),
                text[..c].replace(':', " "),
                text[..c].replace("- ", ""),
            ] {
                let opts = Options {
                    output: PathBuf::from("out/system.yaml"),
                    ..Options::default()
                };
                let _ = import(&[(PathBuf::from(&f), t)], &|_| None, &opts);
            }
        }
    }
    let opts = Options::default();
    for t in ["", "[]", "services: 5", "services:\n  a: ~", "- a\n- b", "services: {a: {ports: [{}], volumes: [{}], deploy: {resources: {reservations: {devices: [{}]}}}}}", "services: {a: {build: {}, healthcheck: {test: []}, env_file: [{}], depends_on: {b: 5}}}"] {
        let _ = import(&[(PathBuf::from("x.yml"), t.to_string())], &|_| Some("FROM\nRUN <<\nCOPY\nENV\nARG\nUSER\nCMD [\"\nEXPOSE x\n".into()), &opts);
    }
}

#[test]
fn errors_name_the_file() {
    let opts = Options::default();
    let e = import(
        &[(PathBuf::from("bad.yml"), "services: [".into())],
        &|_| None,
        &opts,
    )
    .expect_err("a syntax error");
    assert!(e.to_string().starts_with("bad.yml:1:"), "{e}");
    let e = import(
        &[(PathBuf::from("list.yml"), "- a\n".into())],
        &|_| None,
        &opts,
    )
    .expect_err("not a mapping");
    assert!(
        e.to_string().starts_with("list.yml: expected a mapping"),
        "{e}"
    );
    assert!(matches!(
        import(&[], &|_| None, &opts),
        Err(agent_compose::Error::NoFiles)
    ));
    let two = Options {
        hosts: vec![HostArg::Name("a".into()), HostArg::Name("b".into())],
        ..Options::default()
    };
    let e = import(
        &[(PathBuf::from("x.yml"), "services: {}".into())],
        &|_| None,
        &two,
    )
    .expect_err("too many hosts");
    assert!(
        e.to_string().contains("2 host names for 1 compose files"),
        "{e}"
    );
}

#[test]
fn ports_become_agents_and_published_ports() {
    let i = one("01-ports.yml");
    let s = system(&i);
    let g = &s.groups["web"];
    assert_eq!(
        g.network.as_ref().map(|n| n.mode),
        Some(NetworkMode::Private)
    );
    let names: Vec<&str> = g.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["WebFront", "WebTls"]);
    assert_eq!(g.agents[0].port.map(|p| p.0), Some(80));
    assert_eq!(g.agents[0].publish[0].host_port, 8080);
    let tls = &g.agents[1];
    assert_eq!(
        tls.all_ports().iter().map(|p| p.0).collect::<Vec<_>>(),
        [443, 9000, 9001, 8081, 7000]
    );
    assert_eq!(tls.publish[0].address.as_deref(), Some("127.0.0.1"));
    assert_eq!(tls.publish[3].host_port, 18081);
    has(&i, "01-ports.yml", 9, "udp ports are not carried");
    has(
        &i,
        "01-ports.yml",
        19,
        "services.api.ports.mode: not carried",
    );
    has(
        &i,
        "01-ports.yml",
        20,
        "services.api.ports.app_protocol: not carried",
    );
    assert_eq!(s.groups["api"].agents[0].port.map(|p| p.0), Some(8082));
    has(
        &i,
        "01-ports.yml",
        22,
        "networks.front: its driver and options are not carried",
    );
    has(
        &i,
        "01-ports.yml",
        3,
        "nginx:1.25 becomes the recipe images/web.yaml with base docker-archive:nginx-1.25.tar",
    );
    // The daemon's port moves off the agent's 9000.
    let h = s.hosts.values().next().expect("a host");
    assert_eq!(
        h.daemon.as_ref().and_then(|d| d.http_listen.as_deref()),
        Some("127.0.0.1:9002")
    );
}

#[test]
fn environment_list_and_map() {
    let i = one("02-environment-list.yml");
    let g = &system(&i).groups["app"];
    assert_eq!(g.env.get("MODE").map(String::as_str), Some("prod"));
    assert_eq!(
        g.env.get("URL").map(String::as_str),
        Some("http://x:1/?a=b")
    );
    assert_eq!(g.env.get("EMPTY").map(String::as_str), Some(""));
    assert!(!g.env.contains_key("FROM_SHELL"));
    has(&i, "02-environment-list.yml", 7, "FROM_SHELL has no value");
    let i = one("03-environment-map.yml");
    let g = &system(&i).groups["app"];
    assert_eq!(g.env.get("PORT").map(String::as_str), Some("8000"));
    assert_eq!(g.env.get("DEBUG").map(String::as_str), Some("true"));
    assert_eq!(g.agents[0].command.0, ["python3", "-c", "print(2)"]);
    has(&i, "03-environment-map.yml", 8, "UNSET has no value");
}

#[test]
fn env_files() {
    let i = one("04-env-file.yml");
    let s = system(&i);
    for g in ["one", "two", "three"] {
        assert_eq!(
            s.groups[g].env_file.as_deref(),
            Some(Path::new("app.env")),
            "{g}"
        );
    }
    has(&i, "04-env-file.yml", 9, "other.env is not carried");
    has(
        &i,
        "04-env-file.yml",
        13,
        "missing.env (required: false) does not exist",
    );
}

#[test]
fn dependencies_and_conditions() {
    let i = one("05-depends-list.yml");
    let s = system(&i);
    assert_eq!(
        s.groups["api"].depends_on.0.get("db"),
        Some(&Condition::Started)
    );
    has(&i, "05-depends-list.yml", 8, "no service \"nosuch\"");
    let i = one("06-depends-conditions.yml");
    let d = &system(&i).groups["api"].depends_on.0;
    assert_eq!(d.get("db"), Some(&Condition::Healthy));
    assert_eq!(d.get("cache"), Some(&Condition::Started));
    assert_eq!(d.get("migrate"), Some(&Condition::Started));
    has(
        &i,
        "06-depends-conditions.yml",
        15,
        "depends_on.db.restart: not carried",
    );
    has(
        &i,
        "06-depends-conditions.yml",
        16,
        "cache has no healthcheck",
    );
    has(
        &i,
        "06-depends-conditions.yml",
        18,
        "service_completed_successfully has no equivalent",
    );
}

#[test]
fn healthchecks() {
    let i = one("07-healthcheck.yml");
    let s = system(&i);
    let h = s.groups["a"].agents[0]
        .health
        .clone()
        .expect("a health check");
    assert_eq!(
        h.exec.map(|c| c.0),
        Some(vec![
            "curl".into(),
            "-f".into(),
            "http://localhost/health".into()
        ])
    );
    assert_eq!(h.interval.map(|d| d.0.as_secs()), Some(90));
    assert_eq!(h.timeout.map(|d| d.0.as_secs()), Some(10));
    assert_eq!(h.retries, Some(3));
    assert_eq!(h.start_period.map(|d| d.0.as_secs()), Some(40));
    let b = s.groups["b"].agents[0].health.clone().expect("CMD-SHELL");
    assert_eq!(
        b.exec.map(|c| c.0),
        Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "pg_isready -U postgres".into()
        ])
    );
    let c = s.groups["c"].agents[0]
        .health
        .clone()
        .expect("a string test");
    assert_eq!(c.interval.map(|d| d.0.as_millis()), Some(500));
    assert!(s.groups["d"].agents[0].health.is_none());
    assert!(s.groups["e"].agents[0].health.is_none());
    has(&i, "07-healthcheck.yml", 10, "start_interval: not carried");
}
