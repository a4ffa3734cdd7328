//! Fuzz targets of the CDI parser (`docs/fuzzing.md`): arbitrary bytes and structure-aware
//! mutations of the fixtures through `parse`, and arbitrary strings through
//! `parse_qualified`. Each runs for `FUZZ_SECS` (default 2 s) under `cargo test`.

use std::path::{Path, PathBuf};

use agent_cdi::{parse, parse_qualified};
use agent_supervisor_tests::fuzz::{budget, keep_on_panic, regression_files, Edit, Mutator};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Parses `bytes` as `name`: must return, twice the same way; an error names the file.
fn parse_once(name: &str, bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let path = Path::new(name);
    let first = parse(path, text);
    let again = parse(path, text);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "parse is not deterministic"
    );
    if let Err(e) = first {
        assert!(
            e.to_string().contains(name),
            "the error does not name the file {name}: {e}"
        );
    }
}

#[test]
fn fuzz_parse_bytes() {
    bolero::check!()
        .with_test_time(budget())
        .for_each(|bytes: &[u8]| {
            keep_on_panic("cdi-bytes", bytes, || {
                parse_once("/etc/cdi/fuzz.yaml", bytes);
                parse_once("/etc/cdi/fuzz.json", bytes);
            });
        });
}

#[test]
fn fuzz_parse_mutated_fixtures() {
    let m = Mutator::from_dir(
        &fixtures(),
        &[".yaml", ".json"],
        Vec::new(),
        &[
            "0.3.0",
            "1.1.0",
            "9.9.9",
            "c",
            "b",
            "hooks",
            "createContainer",
            "major",
        ],
    );
    bolero::check!()
        .with_type::<(u16, bool, Vec<Edit>)>()
        .with_test_time(budget())
        .for_each(|(seed, json, edits)| {
            let name = if *json { "/cdi/m.json" } else { "/cdi/m.yaml" };
            let bytes = m.apply(*seed, edits);
            keep_on_panic("cdi-mutated", &bytes, || parse_once(name, &bytes));
        });
}

#[test]
fn fuzz_parse_qualified() {
    bolero::check!()
        .with_type::<String>()
        .with_test_time(budget())
        .for_each(|name| {
            if let Ok((vendor, class, device)) = parse_qualified(name) {
                assert_eq!(&format!("{vendor}/{class}={device}"), name);
            }
        });
}

/// Inputs that once failed a target, checked in under `tests/fuzz_regressions/`.
#[test]
fn regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for (name, bytes) in regression_files(&dir) {
        parse_once(&format!("{name}.yaml"), &bytes);
        parse_once(&format!("{name}.json"), &bytes);
    }
}
