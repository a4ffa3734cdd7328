//! What the daemon keeps under its run directory so a new daemon can re-adopt running agents:
//! per agent the shim's pid and start time, and counters that must survive a daemon restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Counters and times of one agent that outlive a daemon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub restarts: u64,
    pub oom_kills: u64,
    /// Unix time the current run started.
    pub started_at: Option<f64>,
    /// The shim of the current run: pid and start time (`/proc/PID/stat` field 22).
    pub shim: Option<(i32, u64)>,
    /// The agent's own pid.
    pub pid: Option<i32>,
    /// The agent's cgroup OOM count when the current run started.
    pub oom_base: u64,
}

/// The whole persisted state (`run_dir/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub agents: BTreeMap<String, AgentRecord>,
}

/// Where the state lives.
pub fn state_path(run_dir: &Path) -> PathBuf {
    run_dir.join("state.json")
}

/// Reads the state; a missing or unreadable file is an empty state (reported by the caller).
pub fn load(path: &Path) -> Result<State, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the state atomically (temporary file + rename).
pub fn save(path: &Path, state: &State) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(state).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
