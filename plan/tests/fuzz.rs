//! Fuzz target of plan resolution (`docs/fuzzing.md`): structure-aware mutations of the
//! example and of the broken-input corpus, loaded, then every host's plan resolved with
//! `Plan::resolve_partial` (no image store; the GPUs are those of the CDI fixtures of
//! `cdi/tests/fixtures`, so NVML is never asked). Properties: nothing panics, resolving is deterministic, every finding names
//! the system file, and a plan diffed with itself is empty. Runs for `FUZZ_SECS`.

use std::path::Path;

use agent_config::Finding;
use agent_plan::{diff, Plan};
use agent_supervisor_tests::fuzz::{budget, keep_on_panic, system_file_seeds, Edit, Tally};

/// Resolves every host of `text`; with `host_rootfs`, every group runs on the host's own
/// directories (no store is given, so groups with an image would only be findings).
fn resolve_all(path: &Path, text: &str, host_rootfs: bool) -> &'static str {
    // `check` goes on with what loaded despite errors; so does this target.
    let (Some(mut loaded), findings) = agent_config::load::parse_all(path, text) else {
        return "not loaded";
    };
    let valid = !findings.iter().any(Finding::is_error)
        && !agent_config::validate::validate(&loaded)
            .iter()
            .any(Finding::is_error);
    let cdi = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cdi/tests/fixtures");
    loaded.system.daemon.cdi_spec_dirs = Some(vec![cdi.clone()]);
    for h in loaded.system.hosts.values_mut() {
        if let Some(d) = &mut h.daemon {
            d.cdi_spec_dirs = Some(vec![cdi.clone()]);
        }
    }
    if host_rootfs {
        for g in loaded.system.groups.values_mut() {
            g.image = None;
        }
    }
    let mut outcome = "resolved";
    for host in loaded.system.hosts.keys() {
        let first = Plan::resolve_partial(&loaded, host, None);
        let again = Plan::resolve_partial(&loaded, host, None);
        assert_eq!(
            format!("{first:?}"),
            format!("{again:?}"),
            "resolving host {host} is not deterministic"
        );
        match first {
            Ok((plan, findings)) => {
                for f in &findings {
                    assert_eq!(
                        f.file.as_deref(),
                        Some(path),
                        "a finding of host {host}'s plan names no file: {f}"
                    );
                }
                if findings.iter().any(Finding::is_error) {
                    outcome = "findings";
                    if std::env::var_os("FUZZ_SHOW").is_some() {
                        eprintln!("{findings:?}");
                    }
                }
                // Only for a valid file: the daemon never resolves another (two agents of one
                // name, say, are a `validate` error, and `diff` keys agents by name).
                if valid {
                    let d = diff(&plan, &plan);
                    assert!(
                        d.is_empty(),
                        "host {host}'s plan differs from itself: {d:?}"
                    );
                }
            }
            Err(findings) => panic!("host {host} is in the file, yet: {findings:?}"),
        }
    }
    outcome
}

#[test]
fn fuzz_resolve_mutated_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let (m, paths) = system_file_seeds(root);
    let tally = Tally::new("plan mutated");
    bolero::check!()
        .with_type::<(u16, bool, Vec<Edit>)>()
        .with_test_time(budget())
        .for_each(|(seed, host_rootfs, edits)| {
            let path = &paths[*seed as usize % paths.len()];
            let bytes = m.apply(*seed, edits);
            let text = String::from_utf8_lossy(&bytes);
            keep_on_panic("plan-mutated", text.as_bytes(), || {
                tally.hit(resolve_all(path, &text, *host_rootfs));
            });
        });
}

/// The example resolves for each of its hosts: on the host rootfs without an error but
/// the GPU nodes this machine lacks; with its images, each group is an `image-missing`.
#[test]
fn the_example_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let (m, paths) = system_file_seeds(root);
    let text = String::from_utf8_lossy(&m.seeds()[0]);
    let gpu = Path::new("/dev/nvidia0").exists();
    let outcome = resolve_all(&paths[0], &text, true);
    assert!(
        outcome == "resolved" || !gpu && outcome == "findings",
        "{outcome}"
    );
    assert_eq!(resolve_all(&paths[0], &text, false), "findings");
}
