//! Fuzz target of the Compose importer (`docs/fuzzing.md`): arbitrary bytes and
//! structure-aware mutations of the Compose corpus through `agent_compose::import`. Each runs
//! for `FUZZ_SECS` (default 2 s) under `cargo test`. Properties: no panic; the same input
//! gives the same result; an error names the Compose file; a system file it writes is valid
//! YAML to the system-file loader.

use std::path::{Path, PathBuf};

use agent_compose::{import, Error, Options};
use agent_supervisor_tests::fuzz::{budget, keep_on_panic, regression_files, Edit, Mutator};

const NAME: &str = "/fuzz/docker-compose.yml";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

/// Imports `bytes` as one Compose file (other files: an empty Dockerfile, no `.env`).
fn import_once(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let files = vec![(PathBuf::from(NAME), text.to_string())];
    let read = |p: &Path| -> Option<String> {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("Dockerfile"))
            .then(|| "FROM scratch\nCMD [\"true\"]\n".to_string())
    };
    let opts = Options {
        hosts: Vec::new(),
        joins: Vec::new(),
        output: PathBuf::from("/fuzz/out/system.yaml"),
        env: Vec::new(),
    };
    let first = import(&files, &read, &opts);
    let again = import(&files, &read, &opts);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "import is not deterministic"
    );
    match first {
        Ok(out) => {
            let (_, findings) =
                agent_config::load::parse_all(Path::new("/fuzz/out/system.yaml"), &out.system);
            let yaml: Vec<String> = findings
                .iter()
                .filter(|f| f.code == "yaml")
                .map(|f| f.message.clone())
                .collect();
            assert!(
                yaml.is_empty(),
                "the imported system file is not YAML: {yaml:?}\n{}",
                out.system
            );
        }
        Err(e @ (Error::Syntax { .. } | Error::Shape { .. })) => {
            assert!(
                e.to_string().contains(NAME),
                "the error does not name the file: {e}"
            );
        }
        Err(_) => {}
    }
}

#[test]
fn fuzz_import_bytes() {
    bolero::check!()
        .with_test_time(budget())
        .for_each(|bytes: &[u8]| {
            keep_on_panic("compose-bytes", bytes, || import_once(bytes));
        });
}

#[test]
fn fuzz_import_mutated_corpus() {
    let m = Mutator::from_dir(
        &corpus(),
        &[".yml", ".yaml"],
        Vec::new(),
        &[
            "services",
            "image",
            "build",
            "ports",
            "volumes",
            "depends_on",
            "environment",
            "env_file",
            "healthcheck",
            "deploy",
            "resources",
            "networks",
            "x-agent-supervisor",
            "${VAR:-x}",
            "<<: *a",
            "# Agent",
        ],
    );
    bolero::check!()
        .with_type::<(u16, Vec<Edit>)>()
        .with_test_time(budget())
        .for_each(|(seed, edits)| {
            let bytes = m.apply(*seed, edits);
            keep_on_panic("compose-mutated", &bytes, || import_once(&bytes));
        });
}

/// Inputs that once failed a target, checked in under `tests/fuzz_regressions/`.
#[test]
fn regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for (_, bytes) in regression_files(&dir) {
        import_once(&bytes);
    }
}
