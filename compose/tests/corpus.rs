//! The corpus of Compose files (`tests/fixtures/corpus/`): each imports without a panic into
//! a system file the config crate loads; carried keys become fields, the rest notes at lines.

use std::path::{Path, PathBuf};

use agent_compose::{import, HostArg, Imported, Options};
use agent_config::model::{Condition, GpuDevices, NetworkMode, Policy, System};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Imports `files` (relative to the corpus) with the output in the corpus directory.
fn run(
    files: &[&str],
    hosts: Vec<HostArg>,
    joins: Vec<(String, Vec<String>)>,
    env: Vec<(String, String)>,
) -> Imported {
    let dir = corpus();
    let inputs: Vec<(PathBuf, String)> = files
        .iter()
        .map(|f| {
            let p = dir.join(f);
            let t = std::fs::read_to_string(&p).expect("read a corpus file");
            (p, t)
        })
        .collect();
    let opts = Options {
        hosts,
        joins,
        output: dir.join("system.yaml"),
        env,
    };
    import(&inputs, &read, &opts).expect("the import succeeds")
}

fn one(file: &str) -> Imported {
    run(&[file], vec![], vec![], vec![])
}

/// The system file, loaded by the config crate (as `check` loads it).
fn system(i: &Imported) -> System {
    match agent_config::load::parse(&corpus().join("system.yaml"), &i.system) {
        Ok(l) => l.system,
        Err(e) => panic!("the output does not load: {e}\n{}", i.system),
    }
}

/// The notes at `line` of a file whose name ends with `file`.
fn at(i: &Imported, file: &str, line: usize) -> Vec<String> {
    i.notes
        .iter()
        .filter(|n| n.file.to_string_lossy().ends_with(file) && n.line == line)
        .map(|n| n.message.clone())
        .collect()
}

fn has(i: &Imported, file: &str, line: usize, words: &str) {
    let n = at(i, file, line);
    assert!(
        n.iter().any(|m| m.contains(words)),
        "no note {words:?} at {file}:{line}; notes there: {n:?}\nall: {:#?}",
        i.notes
    );
}

#[test]
fn dump() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    names.sort();
    for p in names {
        let f = p.file_name().expect("name").to_string_lossy().into_owned();
        let i = one(&f);
        eprintln!("=== {f}\n{}", i.system);
        for (r, t) in &i.files {
            eprintln!("--- {}\n{t}", r.display());
        }
        let _ = system(&i);
    }
}
