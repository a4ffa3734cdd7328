//! A fixture's daemon for the end-to-end tests: started, asked (`supervisorctl`, `/metrics`),
//! waited on, killed and restarted, and stopped with its agents when dropped.

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::{stop_child, text, Fixture};

/// A running daemon of a [`Fixture`]; dropped, it is stopped as a service manager would
/// (a daemon the test killed is started again first, so that it stops the agents it
/// re-adopts).
pub struct Daemon<'a> {
    /// The fixture whose system file, socket and logs it uses.
    pub f: &'a Fixture,
    child: Option<Child>,
    ctl: &'static str,
}

impl<'a> Daemon<'a> {
    /// Starts the fixture's daemon and waits for its control socket; `ctl` is the path of
    /// the `supervisorctl` binary the test was built with.
    pub fn start(f: &'a Fixture, ctl: &'static str) -> Daemon<'a> {
        Daemon {
            f,
            child: Some(f.start_daemon()),
            ctl,
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon runs").id() as i32
    }

    /// SIGKILL (its agents stay), reaped; its control socket is removed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL the daemon");
            c.wait().expect("reap the daemon");
        }
        let _ = std::fs::remove_file(self.f.socket());
    }

    /// Starts the daemon again after [`Daemon::kill9`] and waits for its socket.
    pub fn restart(&mut self) {
        self.child = Some(self.f.start_daemon());
    }

    /// `supervisorctl -s SOCKET ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.f.ctl(self.ctl, args)
    }

    /// `status --json`, parsed (panics with what supervisorctl printed).
    pub fn status(&self) -> Value {
        let out = self.ctl(&["status", "--json"]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out)))
    }

    /// The agents of `status --json`.
    pub fn agents(&self) -> Vec<Value> {
        self.status()["agents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// One agent of `status --json` (panics when there is none of that name).
    pub fn agent(&self, name: &str) -> Value {
        self.agents()
            .into_iter()
            .find(|a| a["agent"] == name)
            .unwrap_or_else(|| panic!("no agent {name} in {}", self.status()))
    }

    /// Waits until `cond` holds for the agent, or fails after `timeout` with the daemon log.
    pub fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let t = Instant::now();
        loop {
            let a = self.agent(name);
            if cond(&a) {
                return a;
            }
            assert!(
                t.elapsed() < timeout,
                "{name}: {what} not reached in {timeout:?}: {a}\ndaemon log:\n{}",
                self.f.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /metrics` on the fixture's metrics port: the whole answer, head included.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.f.port)).expect("connect to /metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send the /metrics request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read /metrics");
        out
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if self.child.is_none() {
            self.restart();
        }
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }
}
