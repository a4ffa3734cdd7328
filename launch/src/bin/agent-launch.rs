//! `agent-launch`: the launcher alone (`__group-init SPEC`, `__agent SPEC`, and `__spawner`,
//! the fork server that runs those two without an exec each), a small binary, so each launch
//! maps and relocates a fraction of `agent-supervisor` (which keeps the same hidden
//! subcommands).
//!
//! It has its own C `main` (`no_main`): Rust's runtime start-up, which reads
//! `/proc/self/maps` to place a stack guard and installs stack-overflow handlers, is skipped,
//! as nothing here needs it; what this program relies on from it is done here: `SIGPIPE` is
//! ignored, so a write to a closed stderr fails with `EPIPE` instead of killing the shim.
#![no_main]

use agent_launch as launch;

/// The process entry point, called by the C runtime.
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // Raw: nix's `signal` is an `unsafe fn` over the same call, so it adds nothing here.
    // SAFETY: setting SIGPIPE's disposition to "ignore" installs no handler; this process is
    // single-threaded here.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // std reads the arguments from the C runtime's own copy (glibc's init array).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let status = launch::run_subcommand(args.get(1..).unwrap_or_default()).unwrap_or_else(|| {
        eprintln!("usage: agent-launch __group-init SPEC | __agent SPEC | __spawner");
        2
    });
    // Flush what Rust buffered (the init's pid on stdout) before the C runtime exits.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    status
}
