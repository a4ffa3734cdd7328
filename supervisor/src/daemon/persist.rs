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

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads the state; a missing file is an empty state, an unreadable one an error (the
/// caller reports it and starts empty).
pub fn load(path: &Path) -> Result<State, PersistError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| PersistError::Json {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(source) => Err(PersistError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes the state atomically (temporary file + rename).
pub fn save(path: &Path, state: &State) -> Result<(), PersistError> {
    let tmp = path.with_extension("json.tmp");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PersistError::Io { path, source }
    };
    let bytes = serde_json::to_vec(state).map_err(|source| PersistError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}
