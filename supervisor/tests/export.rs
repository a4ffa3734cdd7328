//! `agent-supervisor export kubernetes|nomad` end to end: the example system (both hosts, or
//! one with `--host`) becomes manifests `kubernetes-validate --strict` accepts and a Nomad
//! job; a host whose image store (or bind source) is not on this machine is exported with
//! images by name (the path as written) and a warning, not an error; a system file with
//! errors is refused, naming them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ai-system/system.yaml")
}

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("as-export-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run agent-supervisor")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// `kubernetes-validate --strict` accepts every manifest (skipped without it, failed in CI).
fn validate(dir: &Path, test: &str) {
    let files = yaml_files(dir);
    match Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
    {
        Ok(out) => assert!(out.status.success(), "kubernetes-validate: {}", text(&out)),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: kubernetes-validate is needed ({e}; scripts/install-prereqs.sh)"
            );
            eprintln!("SKIP {test} validation: kubernetes-validate is not installed ({e})");
        }
    }
}

#[test]
fn example_exports_every_host_to_valid_manifests() {
    let tmp = Tmp::new("k8s");
    let out = tmp.0.join("k8s");
    let example = example();
    let o = run(&[
        "export",
        "kubernetes",
        example.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("wrote 15 manifest files and NOTES.md"), "{t}");
    assert!(t.contains("skopeo copy --preserve-digests oci:"), "{t}");
    // Both hosts' groups.
    assert!(out.join("gpu-infrastructure.yaml").is_file());
    assert!(out.join("web-services.yaml").is_file());
    let gpu = std::fs::read_to_string(out.join("gpu-infrastructure.yaml")).expect("read");
    assert!(gpu.contains("nvidia.com/gpu: 1"), "{gpu}");
    assert!(gpu.contains("name: vramoptimizeragent"), "{gpu}");
    let notes = std::fs::read_to_string(out.join("NOTES.md")).expect("notes");
    assert!(notes.contains("## Not carried as is"), "{notes}");
    validate(&out, "example_exports_every_host_to_valid_manifests");

    // One host only.
    let pc2 = tmp.0.join("pc2");
    let o = run(&[
        "export",
        "kubernetes",
        example.to_str().expect("path"),
        "--host",
        "pc2",
        "-o",
        pc2.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let names: Vec<String> = yaml_files(&pc2)
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "ai-reasoning.yaml",
            "infrastructure.yaml",
            "memory-services.yaml",
            "pc2-redis.yaml",
            "web-services.yaml"
        ]
    );
}

#[test]
fn example_exports_to_a_nomad_job() {
    let tmp = Tmp::new("nomad");
    let file = tmp.0.join("job.json");
    let o = run(&[
        "export",
        "nomad",
        example().to_str().expect("path"),
        "-o",
        file.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let job: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("job file")).expect("JSON");
    assert_eq!(job["Job"]["ID"], "ai-system");
    assert_eq!(
        job["Job"]["TaskGroups"].as_array().expect("groups").len(),
        15
    );
    // Into a directory: <job>.nomad.json.
    let o = run(&[
        "export",
        "nomad",
        example().to_str().expect("path"),
        "--host",
        "mainpc",
        "--job",
        "main",
        "-o",
        tmp.0.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let job: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.0.join("main.nomad.json")).expect("job file"),
    )
    .expect("JSON");
    assert_eq!(
        job["Job"]["TaskGroups"].as_array().expect("groups").len(),
        10
    );
}

#[test]
fn without_the_image_store_images_are_named_and_the_export_goes_on() {
    let tmp = Tmp::new("nostore");
    std::fs::write(tmp.0.join("a.py"), "print('a')\n").expect("script");
    let yaml = format!(
        "version: 1\ndaemon: {{state_dir: {}/state}}\nimages:\n  app: {{recipe: app.yaml}}\nhosts:\n  h1: {{address: 127.0.0.1, role: primary}}\ngroups:\n  g:\n    host: h1\n    image: app\n    binds: [\"/srv/not-on-this-machine/models:/models:ro\"]\n    agents:\n      - {{name: A, command: python3 a.py, port: 7001}}\n",
        tmp.0.display()
    );
    std::fs::write(tmp.0.join("app.yaml"), "from: scratch\n").expect("recipe");
    std::fs::write(tmp.0.join("system.yaml"), yaml).expect("system file");
    let out = tmp.0.join("out");
    let o = run(&[
        "export",
        "kubernetes",
        tmp.0.join("system.yaml").to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
        "--registry",
        "reg.example/team",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("no image store on this machine"), "{t}");
    let g = std::fs::read_to_string(out.join("g.yaml")).expect("manifest");
    assert!(g.contains("image: reg.example/team/app:latest"), "{g}");
    // A bind source of the host, not of this machine: kept as written, with a warning.
    assert!(
        t.contains("/srv/not-on-this-machine/models") && t.contains("kept as written"),
        "{t}"
    );
    assert!(g.contains("path: /srv/not-on-this-machine/models"), "{g}");
    let notes = std::fs::read_to_string(out.join("NOTES.md")).expect("notes");
    assert!(notes.contains("referenced by tag, not digest"), "{notes}");
    validate(
        &out,
        "without_the_image_store_images_are_named_and_the_export_goes_on",
    );
}

#[test]
fn a_system_file_with_errors_is_refused() {
    let tmp = Tmp::new("bad");
    std::fs::write(
        tmp.0.join("system.yaml"),
        "version: 1\nhosts:\n  h1: {address: 127.0.0.1, role: primary}\ngroups:\n  g:\n    host: h9\n    agents: []\n",
    )
    .expect("system file");
    let o = run(&[
        "export",
        "kubernetes",
        tmp.0.join("system.yaml").to_str().expect("path"),
        "-o",
        tmp.0.join("out").to_str().expect("path"),
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("h9") && t.contains("system.yaml"), "{t}");
    assert!(!tmp.0.join("out").exists());
}
