//! What a build tells its observer while it runs (`BuildOptions::observer`): the progress bars
//! and plain lines of `agent-supervisor build` are drawn from these events.

use std::sync::Arc;
use std::time::Duration;

use super::StepReport;
use crate::digest::Digest;

/// What a build reports while it runs, in this order: `Started`, then per step
/// `StepStarted`, any `LayerBytes`, `StepFinished`; then `Done` (not after an error).
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// `steps` counts the base (step 0) and every step of the recipe.
    Started {
        image: String,
        steps: usize,
    },
    StepStarted {
        index: usize,
        what: String,
    },
    /// A layer is being written: bytes read from files so far, of `total`.
    LayerBytes {
        index: usize,
        done: u64,
        total: u64,
    },
    /// The step's report: built, cached, imported or a configuration change.
    StepFinished(StepReport),
    Done {
        image: String,
        digest: Digest,
        elapsed: Duration,
    },
}

/// The observer of [`BuildOptions`]: called on the building thread for every [`BuildEvent`].
#[derive(Clone)]
pub struct BuildObserver(pub Arc<dyn Fn(&BuildEvent) + Send + Sync>);

impl std::fmt::Debug for BuildObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuildObserver")
    }
}
