//! `agent-supervisor bench supervise` (being written): agent-supervisor against supervisord.

/// Runs the benchmark and returns the table to print.
pub fn run(_agents: usize, _kills: usize) -> Result<String, String> {
    Err("the supervise benchmark is being written".to_string())
}
