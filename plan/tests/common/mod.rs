//! A system file in a temporary directory (with an `agents/a.py`), shared by the plan's tests.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report
#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;

use agent_plan::{HostPlan, Plan};

pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("plan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("agents")).unwrap();
        std::fs::write(d.join("agents/a.py"), "print('a')\n").unwrap();
        Dir(d)
    }

    /// Writes `rel` (relative to the directory).
    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.0.join(rel), text).unwrap();
    }

    /// `host`'s plan of `system.yaml`, which must resolve.
    pub fn plan(&self, host: &str) -> HostPlan {
        let l = agent_config::load(&self.0.join("system.yaml")).unwrap();
        Plan::resolve(&l, host, None).unwrap()
    }

    /// What stops `host`'s plan, as `field: message` lines.
    pub fn errors(&self, host: &str) -> Vec<String> {
        let l = agent_config::load(&self.0.join("system.yaml")).unwrap();
        Plan::resolve(&l, host, None)
            .unwrap_err()
            .iter()
            .map(|f| format!("{}: {}", f.field.as_deref().unwrap_or("-"), f.message))
            .collect()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
