//! `agent-supervisor import compose` on the seed's own Compose fragments: the system file it
//! writes passes `check` on both hosts, keeps the port comments as agent names, and one of
//! its groups runs (as root) once its placeholder commands are replaced by a stand-in.

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_supervisor_tests::fixture::{root_or_skip, text};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for e in std::fs::read_dir(from).expect("read a fixture directory") {
        let e = e.expect("a directory entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("a file type").is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy a fixture file");
        }
    }
}

/// A copy of `compose/tests/fixtures/seed` in a fresh directory, removed on drop.
struct Seed(PathBuf);

impl Seed {
    fn new(tag: &str) -> Seed {
        let dir = PathBuf::from(format!("/tmp/as-import-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/tests/fixtures/seed");
        copy_tree(&fixtures, &dir);
        Seed(dir)
    }

    fn import(&self) -> std::process::Output {
        Command::new(BIN)
            .current_dir(&self.0)
            .args([
                "import",
                "compose",
                "docker/mainpc/docker-compose.mainpc.yml",
                "docker/pc2/docker-compose.pc2.yml",
                "--host",
                "mainpc",
                "--host",
                "pc2",
                "-o",
                "system.yaml",
            ])
            .output()
            .expect("run agent-supervisor import compose")
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_seed_imports_and_passes_check_on_both_hosts() {
    let seed = Seed::new("check");
    let out = seed.import();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Notes on stderr, with the Compose file's path and line.
    assert!(
        t.contains("docker/mainpc/docker-compose.mainpc.yml:12: services.gpu-infrastructure-group.container_name"),
        "{t}"
    );
    assert!(
        t.contains("docker/pc2/docker-compose.pc2.yml:2: version"),
        "{t}"
    );
    assert!(
        t.contains("docker/pc2/docker-compose.pc2.yml:7: services.redis.image: redis:7-alpine"),
        "{t}"
    );
    let path = seed.0.join("system.yaml");
    let written = std::fs::read_to_string(&path).expect("read the system file");
    // The same notes at the top of the file, and the seed's comments carried over.
    assert!(
        written.starts_with("# Imported by `agent-supervisor import compose`"),
        "{written}"
    );
    assert!(
        written.contains("#   docker/mainpc/docker-compose.mainpc.yml:12: "),
        "{written}"
    );
    assert!(
        written.contains("  # GPU INFRASTRUCTURE GROUP (1 agent)\n  gpu-infrastructure-group:\n"),
        "{written}"
    );
    assert!(
        written.contains("      # Forwards to MainPC\n      - name: observability-hub-forwarder\n"),
        "{written}"
    );

    let l = agent_config::load(&path).expect("the imported file loads");
    let s = &l.system;
    assert_eq!(s.hosts.keys().collect::<Vec<_>>(), ["mainpc", "pc2"]);
    let groups: Vec<&str> = s.groups.keys().map(String::as_str).collect();
    assert_eq!(
        groups,
        [
            "gpu-infrastructure-group",
            "reasoning-services-group",
            "vision-processing-group",
            "learning-knowledge-group",
            "speech-services-group",
            "audio-interface-group",
            "emotion-system-group",
            "redis",
            "observability-hub-forwarder",
            "memory-services-group",
            "ai-reasoning-group",
            "web-services-group",
            "infrastructure-group",
        ]
    );
    let names = |g: &str| -> Vec<(String, Vec<u16>)> {
        s.groups[g]
            .agents
            .iter()
            .map(|a| (a.name.clone(), a.all_ports().iter().map(|p| p.0).collect()))
            .collect()
    };
    assert_eq!(
        names("reasoning-services-group"),
        [
            ("ChainOfThoughtAgent".to_string(), vec![5612]),
            ("GoTToTAgent".to_string(), vec![5646]),
            ("CognitiveModelAgent".to_string(), vec![5641]),
        ]
    );
    assert_eq!(names("audio-interface-group").len(), 8);
    assert_eq!(names("infrastructure-group").len(), 9);
    // The build: a recipe from the Dockerfile, the build arg substituted, CMD as the command.
    let gpu = &s.groups["gpu-infrastructure-group"];
    assert_eq!(gpu.host, "mainpc");
    assert_eq!(gpu.image.as_deref(), Some("gpu-infrastructure-group"));
    let req = gpu.gpus.as_ref().expect("the GPU reservation is carried");
    assert_eq!(req.devices, agent_config::model::GpuDevices::Count(1));
    assert_eq!(
        gpu.env.get("AGENT_GROUP_NAME").map(String::as_str),
        Some("gpu_infrastructure")
    );
    assert_eq!(
        gpu.agents[0].command.0,
        ["python3", "-m", "agents.stand_in_agent"]
    );
    assert_eq!(gpu.agents[0].workdir.as_deref(), Some(Path::new("/app")));
    let recipe =
        agent_images::recipe::load_recipe(&seed.0.join("images/gpu-infrastructure-group.yaml"))
            .expect("the recipe loads");
    assert_eq!(recipe.base, "docker-archive:python-3.11-slim.tar");
    assert_eq!(recipe.context.as_deref(), Some(Path::new("..")));
    assert_eq!(
        recipe.ignore_file.as_deref(),
        Some(Path::new(".dockerignore"))
    );
    assert!(recipe.steps.contains(&agent_images::recipe::Step::Copy {
        src: "main_pc_code/agents".into(),
        dst: "/app/agents".into()
    }));
    let hub = &s.groups["observability-hub-forwarder"];
    assert_eq!(
        hub.env.get("HUB_MODE").map(String::as_str),
        Some("forwarder")
    );
    assert_eq!(
        s.hosts["pc2"]
            .daemon
            .as_ref()
            .and_then(|d| d.http_listen.as_deref()),
        Some("127.0.0.1:9001")
    );

    for host in ["mainpc", "pc2"] {
        let c = Command::new(BIN)
            .arg("check")
            .arg(&path)
            .args(["--host", host])
            .output()
            .expect("run agent-supervisor check");
        assert!(c.status.success(), "check --host {host}:\n{}", text(&c));
        assert!(text(&c).contains("0 error(s)"), "{}", text(&c));
    }
}

#[test]
fn an_imported_group_runs() {
    if !root_or_skip("an_imported_group_runs") {
        return;
    }
    let seed = Seed::new("run");
    let out = seed.import();
    assert!(out.status.success(), "{}", text(&out));
    let path = seed.0.join("system.yaml");
    let written = std::fs::read_to_string(&path).expect("read the system file");
    // What a user does next: give the agents the command the Compose file did not have.
    let slice = format!("as-test-import-{}.slice", std::process::id());
    let d = seed.0.display();
    let mut edited = String::new();
    for line in written.lines() {
        if line.trim_start().starts_with("command:")
            && (line.contains("STTService: no command") || line.contains("TTSService: no command"))
        {
            edited.push_str("        command: [\"python3\", \"stand_in.py\"]\n");
        } else {
            edited.push_str(line);
            edited.push('\n');
        }
        if line == "version: 1" {
            edited.push_str(&format!(
                "daemon:\n  run_dir: {d}/run\n  log_dir: {d}/logs\n  state_dir: {d}/state\n  control_socket: {d}/control.sock\n  cgroup_root: {slice}\n"
            ));
        }
    }
    std::fs::write(&path, edited).expect("write the edited system file");
    std::fs::write(
        seed.0.join("stand_in.py"),
        // One write(2) per line: the two agents share the output, and a short write is atomic.
        "import os\ne = os.environ\nos.write(1, ('RAN %s %s %s %s\\n' % (e['AGENT_NAME'], e['AGENT_PORT'], e['AGENT_GROUP'], e['AGENT_HOST'])).encode())\n",
    )
    .expect("write the stand-in");
    let run = Command::new(BIN)
        .arg("run-group")
        .arg(&path)
        .args(["--host", "mainpc", "speech-services-group", "--until-exit"])
        .output()
        .expect("run agent-supervisor run-group");
    let t = text(&run);
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&slice));
    if let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hier.flatten() {
            let _ = std::fs::remove_dir(h.path().join(&slice));
        }
    }
    eprintln!("{t}");
    assert!(run.status.success(), "{t}");
    assert!(
        t.contains("RAN STTService 5800 speech-services-group mainpc"),
        "{t}"
    );
    assert!(
        t.contains("RAN TTSService 5801 speech-services-group mainpc"),
        "{t}"
    );
}

#[test]
fn an_existing_output_is_kept_without_force() {
    let seed = Seed::new("force");
    assert!(seed.import().status.success());
    let again = seed.import();
    assert!(!again.status.success());
    assert!(
        text(&again).contains("system.yaml: exists; pass --force to replace it"),
        "{}",
        text(&again)
    );
    let bad = Command::new(BIN)
        .current_dir(&seed.0)
        .args([
            "import",
            "compose",
            "docker/pc2/docker-compose.pc2.yml",
            "--join",
            "nogroup",
            "-o",
            "x.yaml",
        ])
        .output()
        .expect("run agent-supervisor import compose");
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("--join \"nogroup\": expected GROUP=svc1,svc2"),
        "{}",
        text(&bad)
    );
    let missing = Command::new(BIN)
        .current_dir(&seed.0)
        .args(["import", "compose", "nope.yml", "-o", "y.yaml"])
        .output()
        .expect("run agent-supervisor import compose");
    assert!(text(&missing).contains("nope.yml: "), "{}", text(&missing));
    assert!(!seed.0.join("y.yaml").exists());
}
