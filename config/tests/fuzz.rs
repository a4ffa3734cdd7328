//! Fuzz targets of the system-file loader and the static checks (`docs/fuzzing.md`):
//! arbitrary bytes, and structure-aware mutations of `examples/ai-system/system.yaml` and of
//! the broken-input corpus (`supervisor/tests/corpus/`), through `load_all`, `parse` and
//! `validate`. Properties: nothing panics, every loader finding names the file and a
//! line/column, loading and validating are deterministic. Each runs for `FUZZ_SECS`.

use std::path::{Path, PathBuf};

use agent_config::{load_all, validate::validate, Finding};
use agent_supervisor_tests::fuzz::{
    budget, keep_on_panic, regression_files, system_file_seeds, Edit, Mutator, Tally,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn seeds() -> (Mutator, Vec<PathBuf>) {
    system_file_seeds(&root())
}

/// Loads `text` as the file `path` (which need not exist: only the files it names are read)
/// and checks the properties; returns the findings.
fn load_once(path: &Path, text: &str) -> Vec<Finding> {
    let (first, findings) = agent_config::load::parse_all(path, text);
    let (again, findings_again) = agent_config::load::parse_all(path, text);
    assert_eq!(findings, findings_again, "loading is not deterministic");
    assert_eq!(
        format!("{:?}", first.as_ref().map(|l| &l.system)),
        format!("{:?}", again.as_ref().map(|l| &l.system)),
        "loading is not deterministic"
    );
    for f in &findings {
        assert_eq!(
            f.file.as_deref(),
            Some(path),
            "a loader finding names no file: {f}"
        );
        assert!(f.at.is_some(), "a loader finding has no line: {f}");
    }
    let strict = agent_config::load::parse(path, text);
    assert_eq!(
        strict.is_ok(),
        first.is_some() && !findings.iter().any(Finding::is_error),
        "parse and parse_all disagree"
    );
    let Some(loaded) = first else {
        assert!(
            findings.iter().any(Finding::is_error),
            "nothing loaded, and no error says why"
        );
        return findings;
    };
    let checked = validate(&loaded);
    assert_eq!(checked, validate(&loaded), "validate is not deterministic");
    for f in &checked {
        assert!(f.file.is_some(), "a finding of validate names no file: {f}");
        if let Some(field) = &f.field {
            if loaded.source.locate(field).is_some() {
                assert!(f.at.is_some(), "a finding of validate has no line: {f}");
            }
        }
    }
    findings.into_iter().chain(checked).collect()
}

/// The first error's code, or `clean`.
fn outcome(findings: &[Finding]) -> &'static str {
    findings
        .iter()
        .find(|f| f.is_error())
        .map_or("clean", |f| f.code)
}

#[test]
fn fuzz_load_bytes() {
    let dir = root().join("examples/ai-system");
    let path = dir.join("fuzz.yaml");
    let tally = Tally::new("config bytes");
    bolero::check!()
        .with_test_time(budget())
        .for_each(|bytes: &[u8]| {
            // Not UTF-8 is one finding before parsing (`fuzz_load_file_not_utf8`).
            let text = String::from_utf8_lossy(bytes);
            keep_on_panic("config-bytes", text.as_bytes(), || {
                tally.hit(outcome(&load_once(&path, &text)));
            });
        });
}

/// A file that is not UTF-8 is one finding at the first bad byte's line.
#[test]
fn fuzz_load_file_not_utf8() {
    let dir = std::env::temp_dir().join(format!("fuzz-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the temp dir");
    let path = dir.join("system.yaml");
    bolero::check!()
        .with_test_time(budget() / 4)
        .for_each(|bytes: &[u8]| {
            std::fs::write(&path, bytes).expect("write the input");
            let (loaded, findings) = load_all(&path);
            if std::str::from_utf8(bytes).is_err() {
                assert!(loaded.is_none());
                assert_eq!(findings.len(), 1, "{findings:?}");
                assert!(findings[0].at.is_some() && findings[0].file.is_some());
            }
        });
    std::fs::remove_dir_all(&dir).expect("remove the temp dir");
}

#[test]
fn fuzz_load_mutated_seeds() {
    let (m, paths) = seeds();
    let tally = Tally::new("config mutated");
    bolero::check!()
        .with_type::<(u16, Vec<Edit>)>()
        .with_test_time(budget())
        .for_each(|(seed, edits)| {
            let path = &paths[*seed as usize % paths.len()];
            let bytes = m.apply(*seed, edits);
            match std::str::from_utf8(&bytes) {
                Ok(text) => keep_on_panic("config-mutated", &bytes, || {
                    tally.hit(outcome(&load_once(path, text)));
                }),
                Err(_) => tally.hit("not utf-8"),
            }
        });
}

/// The seeds themselves load as the corpus test expects: the example without an error.
#[test]
fn seeds_load() {
    let (m, paths) = seeds();
    let text = std::str::from_utf8(&m.seeds()[0]).expect("the example is UTF-8");
    let findings = load_once(&paths[0], text);
    assert!(
        !findings.iter().any(Finding::is_error),
        "the example has errors: {findings:?}"
    );
    for (p, s) in paths.iter().zip(m.seeds()).skip(1) {
        load_once(p, std::str::from_utf8(s).expect("a corpus file is UTF-8"));
    }
}

/// Inputs that once failed a target, checked in under `tests/fuzz_regressions/`.
#[test]
fn regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let path = root().join("examples/ai-system/fuzz.yaml");
    for (_, bytes) in regression_files(&dir) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            load_once(&path, text);
        }
    }
}

/// Found while fuzzing by hand: nine aliases of nine aliases ("billion laughs") made the
/// loader expand 9^10 nodes, minutes and gigabytes; it now stops at `MAX_NODES`.
#[test]
fn alias_bombs_stop_quickly() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/billion-laughs.yaml");
    let text = std::fs::read_to_string(&path).expect("read the regression input");
    let start = std::time::Instant::now();
    let findings = load_once(&path, &text);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        findings
            .iter()
            .any(|f| f.message.contains("aliases expand the document past")),
        "{findings:?}"
    );
}
