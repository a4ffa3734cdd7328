//! The fixture of the `check` tests: a directory with a system file and a good script.
#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A temporary directory with a system file and a good agent script.
pub struct Fixture {
    pub dir: PathBuf,
}

impl Fixture {
    pub fn new(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("as-check-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("agents")).unwrap();
        std::fs::write(dir.join("agents/ok.py"), "print('ok')\n").unwrap();
        Fixture { dir }
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        std::fs::write(self.dir.join(rel), text).unwrap();
        self
    }

    /// Runs check on system.yaml; returns (exit code, stdout).
    pub fn check(&self, extra: &[&str]) -> (i32, String) {
        let out = Command::new(BIN)
            .arg("check")
            .arg(self.dir.join("system.yaml"))
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A valid two-group system; tests replace parts of it.
pub const BASE: &str = "\
hosts:
  h1: {address: 10.0.0.1, role: primary}
groups:
  web:
    host: h1
    agents:
      - name: front
        command: python3 agents/ok.py
        port: 18080
      - name: back
        command: [python3, agents/ok.py]
        port: 18081
  db:
    host: h1
    depends_on: [web]
    agents:
      - name: store
        command: python3 agents/ok.py
        port: 18082
";

pub fn fails_with(name: &str, system: &str, expect: &[&str]) {
    let f = Fixture::new(name);
    f.write("system.yaml", system);
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{name}: check should fail:\n{out}");
    for e in expect {
        assert!(out.contains(e), "{name}: expected {e:?} in:\n{out}");
    }
}
