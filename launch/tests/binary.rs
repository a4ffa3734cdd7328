//! The `agent-launch` binary itself (its C `main`, `no_main`), without root: the usage on a
//! wrong command line, and its launch server answering, forking a launch that fails with the
//! reason on the stderr it was given, and ending at end of file. (Real launches, as root:
//! `agent-supervisor`'s `launcher` and `spawner` tests.)

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};

use agent_launch::client::seqpacket_pair;

const BIN: &str = env!("CARGO_BIN_EXE_agent-launch");

fn ask(sock: RawFd, payload: &[u8], fds: &[RawFd]) -> (String, Option<OwnedFd>) {
    agent_launch::client::ask(sock, payload, fds).expect("a request and its reply")
}

#[test]
fn a_wrong_command_line_prints_the_usage() {
    for args in [
        &[][..],
        &["__agent"][..],
        &["__spawner", "x"][..],
        &["run"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .output()
            .expect("run agent-launch");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("usage: agent-launch"), "{args:?}: {err}");
    }
}

#[test]
fn the_launch_server_answers_forks_and_ends_at_end_of_file() {
    let (ours, theirs) = seqpacket_pair().expect("socketpair");
    let mut server = Command::new(BIN)
        .arg("__spawner")
        .stdin(Stdio::from(theirs))
        .spawn()
        .expect("run agent-launch __spawner");
    let s = ours.as_raw_fd();
    assert_eq!(ask(s, b"ping", &[]).0, "pong");

    // A launch whose spec does not exist: forked (a pidfd comes back), and it says why on
    // the stderr it was given.
    let null = std::fs::File::open("/dev/null").expect("open /dev/null");
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let stdio = [null.as_raw_fd(), null.as_raw_fd(), w.as_raw_fd()];
    let (text, pidfd) = ask(s, b"__agent\0/nonexistent/spec.json", &stdio);
    drop(w);
    assert!(text.starts_with("ok "), "{text}");
    let pidfd = pidfd.expect("a pidfd with the reply");
    let mut err = String::new();
    std::fs::File::from(r)
        .read_to_string(&mut err)
        .expect("read the launch's stderr");
    assert!(err.contains("/nonexistent/spec.json"), "stderr: {err}");
    assert!(
        agent_launch::wait_readable(&pidfd, std::time::Duration::from_secs(10)),
        "the failed launch did not exit"
    );

    drop(ours);
    let status = server.wait().expect("wait for the server");
    assert!(status.success(), "{status}");
}
