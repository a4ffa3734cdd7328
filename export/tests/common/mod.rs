//! Helpers of the export tests: systems in temporary directories, planned as `export` plans
//! them (no image store, no GPUs of this machine), and the validators.
#![allow(dead_code)] // each test file uses some of them

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_config::Loaded;
use agent_plan::{HostPlan, Plan};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("agent-export-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's example system.
pub fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ai-system/system.yaml")
}

/// Loads `file` and plans every host without a store (images by name), as `export` does on
/// a machine without the hosts' stores.
pub fn plans(file: &Path) -> (Loaded, Vec<HostPlan>) {
    let l = agent_config::load(file).expect("the system file loads");
    let errors: Vec<_> = agent_config::validate::validate(&l)
        .into_iter()
        .filter(agent_config::Finding::is_error)
        .collect();
    assert!(errors.is_empty(), "validation errors: {errors:?}");
    let plans = l
        .system
        .hosts
        .keys()
        .map(|h| {
            Plan::resolve_portable(&l, h, None)
                .unwrap_or_else(|f| panic!("host {h} plans: {f:?}"))
                .0
        })
        .collect();
    (l, plans)
}

/// Runs `kubernetes-validate --strict` on every file of `dir`; `None` when it is not
/// installed (then the test skips, and fails in CI).
pub fn kubernetes_validate(dir: &Path, test: &str) -> Option<std::process::Output> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the manifest dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    match Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: kubernetes-validate is needed ({e}; scripts/install-prereqs.sh)"
            );
            eprintln!("SKIP {test}: kubernetes-validate is not installed ({e})");
            None
        }
    }
}

/// Asserts that `kubernetes-validate --strict` accepts every manifest of `dir`.
pub fn assert_valid_manifests(dir: &Path, test: &str) {
    if let Some(out) = kubernetes_validate(dir, test) {
        assert!(
            out.status.success(),
            "kubernetes-validate rejects manifests in {}:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
