//! `agent-supervisor __systemd-stop UNIT PID` (the unit's `ExecStop=`): tells a stop from a
//! restart. systemd runs `ExecStop=` for both and says nothing about which; its job queue
//! does: while `systemctl restart` stops the unit, the unit's job is of type `restart` (it
//! becomes `start` only after the stop). For a restart the daemon gets SIGQUIT and exits
//! leaving the agents for the next daemon to re-adopt; for a stop, SIGTERM, and it stops
//! them in reverse dependency order. Then this waits for the daemon to exit (systemd's
//! `TimeoutStopSec=` bounds the wait).

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The type of the job systemd is running for `unit` (`stop`, `restart`, ...), if any.
fn job_type(unit: &str) -> Option<String> {
    let out = Command::new("systemctl")
        .args(["list-jobs", "--no-legend", "--no-pager", "--full"])
        .output()
        .ok()?;
    parse_job_type(&String::from_utf8_lossy(&out.stdout), unit)
}

/// From `systemctl list-jobs --no-legend` lines: `ID UNIT TYPE STATE`.
fn parse_job_type(list: &str, unit: &str) -> Option<String> {
    list.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[1] == unit).then(|| f[2].to_string())
    })
}

/// Whether a job of this type ends with the unit running again.
fn restarts(job: Option<&str>) -> bool {
    matches!(
        job,
        Some("restart" | "try-restart" | "reload-or-restart" | "reload-or-try-restart")
    )
}

/// Signals the daemon `pid` of `unit` as the job wants and waits for it to exit.
pub fn run(unit: &str, pid: i32) -> Result<String, String> {
    let job = job_type(unit);
    let (sig, what) = if restarts(job.as_deref()) {
        (
            Signal::SIGQUIT,
            "restart: the daemon exits, the agents stay for the next one",
        )
    } else {
        (
            Signal::SIGTERM,
            "stop: the daemon stops every agent, dependents first",
        )
    };
    let target = Pid::from_raw(pid);
    match kill(target, sig) {
        Ok(()) => {}
        Err(nix::Error::ESRCH) => return Ok(format!("{unit}: daemon {pid} already gone")),
        Err(e) => return Err(format!("{unit}: cannot signal daemon {pid}: {e}")),
    }
    eprintln!(
        "agent-supervisor: {unit}: {what} (job {})",
        job.as_deref().unwrap_or("none")
    );
    while kill(target, None).is_ok() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(format!("{unit}: daemon {pid} exited"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_queue_says_restart_or_stop() {
        let list =
            "  93 agent-supervisor.service restart running\n  94 other.service start waiting\n";
        assert_eq!(
            parse_job_type(list, "agent-supervisor.service").as_deref(),
            Some("restart")
        );
        assert!(restarts(Some("restart")));
        assert!(!restarts(Some("stop")));
        assert!(!restarts(None));
        assert_eq!(parse_job_type(list, "x.service"), None);
    }
}
