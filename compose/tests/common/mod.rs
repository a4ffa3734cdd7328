//! Helpers of the corpus tests: the corpus directory, an import of some of its files, the
//! output loaded by the config crate, and the notes at a line.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use agent_compose::{import, HostArg, Imported, Options};
use agent_config::model::System;

pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

pub fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Imports `files` (relative to the corpus) with the output in the corpus directory.
pub fn run(
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

pub fn one(file: &str) -> Imported {
    run(&[file], vec![], vec![], vec![])
}

/// The system file, loaded by the config crate (as `check` loads it).
pub fn system(i: &Imported) -> System {
    match agent_config::load::parse(&corpus().join("system.yaml"), &i.system) {
        Ok(l) => l.system,
        Err(e) => panic!("the output does not load: {e}\n{}", i.system),
    }
}

/// The notes at `line` of a file whose name ends with `file`.
pub fn at(i: &Imported, file: &str, line: usize) -> Vec<String> {
    i.notes
        .iter()
        .filter(|n| n.file.to_string_lossy().ends_with(file) && n.line == line)
        .map(|n| n.message.clone())
        .collect()
}

pub fn has(i: &Imported, file: &str, line: usize, words: &str) {
    let n = at(i, file, line);
    assert!(
        n.iter().any(|m| m.contains(words)),
        "no note {words:?} at {file}:{line}; notes there: {n:?}\nall: {:#?}",
        i.notes
    );
}
