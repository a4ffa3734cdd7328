//! `agent-launch`: the launcher alone (`__group-init SPEC`, `__agent SPEC`), a small binary
//! the daemon execs for every group and agent, so each launch maps and relocates a fraction
//! of `agent-supervisor` (which keeps the same hidden subcommands).

use std::path::Path;
use std::process::ExitCode;

use agent_supervisor::launch;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let status = match (
        args.get(1).and_then(|a| a.to_str()),
        args.get(2),
        args.len(),
    ) {
        (Some("__group-init"), Some(spec), 3) => launch::init::main(Path::new(spec)),
        (Some("__agent"), Some(spec), 3) => launch::agent::main(Path::new(spec)),
        _ => {
            eprintln!("usage: agent-launch __group-init SPEC | __agent SPEC");
            2
        }
    };
    ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX))
}
