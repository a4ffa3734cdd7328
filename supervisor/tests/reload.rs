//! `reload` in the real daemon, as root: a changed `env_file` content, a rebuilt image, a
//! changed group default and a changed daemon setting each restart exactly the agents whose
//! plan they change (their pids change), and every other agent keeps its process.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use agent_supervisor_tests::daemon::Daemon;
use agent_supervisor_tests::fixture::{root_or_skip, text, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

/// What the reload tests ask of the daemon beyond [`Daemon`]'s own questions.
trait Reloads {
    fn running(&self, name: &str, not: i64) -> i64;
    fn pids(&self, names: &[&str]) -> BTreeMap<String, i64>;
    fn reload_restarts(&self, all: &[&str], restarted: &[&str]) -> BTreeMap<String, i64>;
}

impl Reloads for Daemon<'_> {
    /// Waits until `name` is RUNNING with a pid other than `not`; returns the pid.
    fn running(&self, name: &str, not: i64) -> i64 {
        let t = Instant::now();
        loop {
            let a = self.agent(name);
            let pid = a["pid"].as_i64().unwrap_or(0);
            if a["state"] == "RUNNING" && pid > 0 && pid != not {
                return pid;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{name} not RUNNING with a new pid (old {not}): {a}\ndaemon log:\n{}",
                self.f.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pids(&self, names: &[&str]) -> BTreeMap<String, i64> {
        names
            .iter()
            .map(|n| (n.to_string(), self.running(n, 0)))
            .collect()
    }

    /// Reloads and checks that exactly `restarted` got new processes; the other agents of
    /// `all` keep theirs. Returns the pids after the reload.
    fn reload_restarts(&self, all: &[&str], restarted: &[&str]) -> BTreeMap<String, i64> {
        let before = self.pids(all);
        let out = self.ctl(&["reload"]);
        assert!(out.status.success(), "reload: {}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        for n in restarted {
            assert!(said.contains(&format!("{n}: changed")), "{n} in {said}");
        }
        let mut after = BTreeMap::new();
        for n in restarted {
            after.insert(n.to_string(), self.running(n, before[*n]));
        }
        // Anything a reload would restart has been stopped by now; give a late one a moment.
        std::thread::sleep(Duration::from_millis(300));
        for n in all.iter().filter(|n| !restarted.contains(n)) {
            let a = self.agent(n);
            assert_eq!(a["state"], "RUNNING", "{n} untouched: {a}");
            assert_eq!(a["pid"].as_i64(), Some(before[*n]), "{n} kept its process");
            assert!(!said.contains(&format!("{n}: changed")), "{n} in {said}");
            after.insert(n.to_string(), before[*n]);
        }
        for n in restarted {
            assert!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(before[*n] as i32), None)
                    .is_err(),
                "{n}'s old process is gone"
            );
        }
        after
    }
}

/// The environment of a running process.
fn environ(pid: i64) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

/// Edits the system file's text.
fn edit(f: &Fixture, from: &str, to: &str) {
    let path = f.dir.join("system.yaml");
    let s = std::fs::read_to_string(&path).expect("read system.yaml");
    assert!(s.contains(from), "{from:?} in {s}");
    std::fs::write(&path, s.replacen(from, to, 1)).expect("write system.yaml");
}

const PLAIN: &str =
    "  plain:\n    host: h1\n    agents:\n      - name: other\n        command: [sleep, '600']\n";

#[test]
fn a_changed_env_file_content_restarts_only_its_groups_agents() {
    if !root_or_skip("a_changed_env_file_content_restarts_only_its_groups_agents") {
        return;
    }
    let f = Fixture::new(
        BIN,
        "r-envfile",
        "renvfile",
        &format!("  withfile:\n    host: h1\n    env_file: app.env\n    agents:\n      - name: r1\n        command: [sleep, '600']\n      - name: r2\n        command: [sleep, '601']\n{PLAIN}"),
    );
    f.file("app.env", "TOKEN=one\n");
    let d = Daemon::start(&f, CTL);
    let all = ["r1", "r2", "other"];
    assert!(environ(d.running("r1", 0)).contains("TOKEN=one"));
    // Only the file's content changes; the system file stays as it was.
    f.file("app.env", "TOKEN=two\n");
    let after = d.reload_restarts(&all, &["r1", "r2"]);
    assert!(environ(after["r1"]).contains("TOKEN=two"));
    // Nothing changed: nothing restarts.
    d.reload_restarts(&all, &[]);
}

#[test]
fn a_changed_group_default_restarts_only_the_agents_that_inherit_it() {
    if !root_or_skip("a_changed_group_default_restarts_only_the_agents_that_inherit_it") {
        return;
    }
    let group = |timeout: &str, mode: &str| {
        format!("  g:\n    host: h1\n    stop_timeout: {timeout}\n    env: {{MODE: {mode}}}\n    agents:\n      - name: inherits\n        command: [sleep, '600']\n      - name: owns\n        command: [sleep, '601']\n        stop_timeout: 3s\n        env: {{MODE: own}}\n{PLAIN}")
    };
    let f = Fixture::new(BIN, "r-default", "rdefault", &group("5s", "a"));
    let d = Daemon::start(&f, CTL);
    let all = ["inherits", "owns", "other"];
    d.pids(&all);
    // The group's stop timeout: only the agent without its own.
    f.set_groups(&group("4s", "a"));
    d.reload_restarts(&all, &["inherits"]);
    // The group's env: only the agent that does not set the variable itself.
    f.set_groups(&group("4s", "b"));
    let after = d.reload_restarts(&all, &["inherits"]);
    assert!(environ(after["inherits"]).contains("MODE=b"));
    assert!(environ(after["owns"]).contains("MODE=own"));
}

#[test]
fn a_changed_daemon_setting_restarts_the_agents_it_reaches() {
    if !root_or_skip("a_changed_daemon_setting_restarts_the_agents_it_reaches") {
        return;
    }
    let f = Fixture::new(
        BIN,
        "r-daemon",
        "rdaemon",
        &format!("  g:\n    host: h1\n    agents:\n      - name: one\n        command: [sleep, '600']\n{PLAIN}"),
    );
    let d = Daemon::start(&f, CTL);
    let all = ["one", "other"];
    d.pids(&all);
    // A setting no agent's plan holds: nothing restarts (it applies at a daemon restart).
    edit(&f, "daemon:\n", "daemon:\n  min_free_disk: 1M\n");
    d.reload_restarts(&all, &[]);
    // The log rotation every shim is started with: every agent restarts.
    edit(&f, "daemon:\n", "daemon:\n  log_keep: 2\n");
    d.reload_restarts(&all, &["one", "other"]);
}

#[test]
fn a_rebuilt_image_restarts_only_the_groups_on_it() {
    if !root_or_skip("a_rebuilt_image_restarts_only_the_groups_on_it") {
        return;
    }
    let f = Fixture::new(
        BIN,
        "r-image",
        "rimage",
        &format!("  boxed:\n    host: h1\n    image: tiny\n    agents:\n      - name: b1\n        command: [sleep, '600']\n      - name: b2\n        command: [sleep, '601']\n{PLAIN}"),
    );
    let path = f.dir.join("system.yaml");
    let s = std::fs::read_to_string(&path).expect("read system.yaml");
    std::fs::write(
        &path,
        format!("images:\n  tiny: {{recipe: images/tiny.yaml}}\n{s}"),
    )
    .expect("write system.yaml");
    f.file(
        "images/tiny.yaml",
        "base: host-closure\nbinaries: [sleep, cat]\ncontext: ..\nsteps:\n  - copy: {src: files, dst: /data}\n",
    );
    let build = || {
        let out = Command::new(BIN)
            .arg("build")
            .arg(&path)
            .args(["--host", "h1"])
            .output()
            .expect("run agent-supervisor build");
        assert!(out.status.success(), "build: {}", text(&out));
    };
    f.file("files/version.txt", "1\n");
    build();
    let d = Daemon::start(&f, CTL);
    let all = ["b1", "b2", "other"];
    d.pids(&all);
    // The same recipe and inputs: the same digest, nothing restarts.
    build();
    d.reload_restarts(&all, &[]);
    // A new input: a new digest, the group's pod is made anew on it.
    f.file("files/version.txt", "2\n");
    build();
    let after = d.reload_restarts(&all, &["b1", "b2"]);
    let root = format!("/proc/{}/root/data/version.txt", after["b1"]);
    assert_eq!(std::fs::read_to_string(&root).unwrap_or_default(), "2\n");
}

#[test]
fn a_removed_group_is_torn_down_and_comes_back_when_added_again() {
    if !root_or_skip("a_removed_group_is_torn_down_and_comes_back_when_added_again") {
        return;
    }
    let g = "  g:\n    host: h1\n    agents:\n      - name: one\n        command: [sleep, '600']\n";
    let f = Fixture::new(BIN, "r-group", "rgroup", &format!("{g}{PLAIN}"));
    let d = Daemon::start(&f, CTL);
    let before = d.pids(&["one", "other"]);
    f.set_groups(g);
    let out = d.ctl(&["reload"]);
    assert!(text(&out).contains("other: removed"), "{}", text(&out));
    let t = Instant::now();
    while !f.group_leftovers("plain").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "group plain left {:?}\ndaemon log:\n{}",
            f.group_leftovers("plain"),
            f.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(before["other"] as i32), None).is_err(),
        "other's process is gone"
    );
    assert!(d.agents().iter().all(|a| a["agent"] != "other"));
    // Added again at once: a new pod in the same place.
    f.set_groups(&format!("{g}{PLAIN}"));
    let out = d.ctl(&["reload"]);
    assert!(text(&out).contains("other: added"), "{}", text(&out));
    d.running("other", before["other"]);
    assert_eq!(d.running("one", 0), before["one"], "one kept its process");
}
