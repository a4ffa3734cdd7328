//! The launch server (`__spawner`), for real, as root: a group init and an agent shim forked
//! by it look and behave like exec'd ones, bad requests are refused while it keeps serving,
//! and agents outlive it.

use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_supervisor::pod::{Pod, PodOptions};
use agent_supervisor::spawner::{Io, Proc};
use agent_supervisor_tests::fixture::{root_or_skip, Fixture};
use nix::sys::socket::{sendmsg, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn ppid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn alive(pid: i32) -> bool {
    // A zombie still has /proc/PID: only a running or sleeping process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Pod options for a fixture, with a launch server.
fn served(f: &Fixture) -> PodOptions {
    PodOptions {
        launcher: PathBuf::from(BIN),
        run_dir: f.dir.join("run"),
        cgroup_root: f.slice.clone(),
        spawner: None,
    }
    .with_spawner()
}

fn fixture(name: &str, command: &str) -> (Fixture, agent_plan::HostPlan, PodOptions) {
    let f = Fixture::new(
        BIN,
        &format!("spawner-{name}"),
        "spawner",
        &format!("  {name}:\n    host: h1\n    agents:\n      - name: {name}-a\n        command: {command}\n"),
    );
    let l = agent_plan::Plan::load(&f.dir.join("system.yaml"), "h1", None)
        .expect("plan the fixture")
        .1;
    let opts = served(&f);
    (f, l, opts)
}

#[test]
fn group_init_and_agent_shim_are_forked_by_the_server() {
    if !root_or_skip("group_init_and_agent_shim_are_forked_by_the_server") {
        return;
    }
    let (_f, l, opts) = fixture(
        "sp-fork",
        "[/bin/sh, -c, 'echo hello-from-agent; sleep 0.5; exit 3']",
    );
    let server = opts
        .spawner
        .as_ref()
        .expect("the launch server started")
        .pid();
    assert!(cmdline(server).contains("__spawner"), "{}", cmdline(server));
    let pod = Pod::start(&l.groups["sp-fork"], &opts).expect("start the group through the server");
    // The init's command line reads as an exec'd launcher's.
    let init = cmdline(pod.init_pid);
    assert!(
        init.contains("__group-init") && init.contains("sp-fork"),
        "init cmdline: {init}"
    );
    // cgroup2 keeps the init in a leaf of the group; v1 hierarchies (hybrid hosts) in the
    // group itself.
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", pod.init_pid))
        .expect("read the init's cgroups");
    for line in cgroups.lines() {
        if line.starts_with("0::") {
            assert!(line.ends_with("/sp-fork/init"), "{cgroups}");
        } else if line.contains(":memory:") || line.contains(":pids:") {
            assert!(line.ends_with("/sp-fork"), "{cgroups}");
        }
    }
    let agent = &l.groups["sp-fork"].agents[0];
    let (shim, cg) = pod
        .spawn_agent(agent, None, [Io::Null, Io::Piped, Io::Null])
        .expect("start the agent through the server");
    assert!(matches!(shim.proc, Proc::Forked(_)), "{:?}", shim.proc);
    let pid = shim.pid;
    // Forked by the server, not exec'd by us; its command line names the verb and the agent.
    assert_eq!(ppid(pid), Some(server), "the shim's parent is the server");
    // (The child renames itself right after the fork.)
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut line = cmdline(pid);
    while !line.contains("__agent") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        line = cmdline(pid);
    }
    assert!(
        line.contains("__agent") && line.contains("sp-fork:sp-fork-a"),
        "shim cmdline: {line}"
    );
    // The spec file for people holds the environment: root only.
    let spec_file = pod.dir.join("agents/sp-fork-a.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&spec_file)
            .expect("the agent's spec file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", spec_file.display());
    let (out, _) = shim.finish();
    assert_eq!(String::from_utf8_lossy(&out).trim(), "hello-from-agent");
    let record = pod
        .exit_record("sp-fork-a")
        .expect("the shim wrote its exit record");
    assert_eq!(record.code, Some(3), "{record:?}");
    // The server reaped its child: no zombie left behind.
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "shim {pid} not reaped"
    );
    let _ = cg.remove();
    pod.stop().expect("stop the group");
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pod.init_pid), None);
    // The last holder of the server's socket goes: the server ends.
    drop(pod);
    drop(opts);
    assert!(
        wait_gone(server, Duration::from_secs(5)),
        "the server did not exit"
    );
}

#[test]
fn agents_outlive_the_server() {
    if !root_or_skip("agents_outlive_the_server") {
        return;
    }
    let (_f, l, opts) = fixture("sp-live", "[sleep, '30']");
    let server = opts
        .spawner
        .as_ref()
        .expect("the launch server started")
        .pid();
    let pod = Pod::start(&l.groups["sp-live"], &opts).expect("start the group");
    let agent = &l.groups["sp-live"].agents[0];
    let (shim, _cg) = pod
        .spawn_agent(agent, None, [Io::Null; 3])
        .expect("start the agent");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pod.agent_pid("sp-live-a").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let agent_pid = pod.agent_pid("sp-live-a").expect("the agent started");
    // The daemon goes away (the server's socket closes): the server ends, the agent runs on,
    // and a new daemon adopts the group.
    drop(pod);
    let exec_opts = PodOptions {
        spawner: None,
        ..opts.clone()
    };
    drop(opts);
    assert!(
        wait_gone(server, Duration::from_secs(5)),
        "the server did not exit"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(shim.pid), "the shim died with the server");
    assert!(alive(agent_pid), "the agent died with the server");
    let pod = Pod::adopt(&l.groups["sp-live"], &exec_opts)
        .expect("adopt the group")
        .expect("the group still runs");
    pod.stop().expect("stop the group");
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pod.init_pid), None);
    shim.wait();
    assert!(!alive(agent_pid), "the agent outlived its group");
}

/// One exchange with a server: the request with `fds` and, last, a fresh reply socket; the
/// reply text and descriptor read from that socket.
fn ask(sock: RawFd, payload: &[u8], fds: &[RawFd]) -> (String, Option<OwnedFd>) {
    agent_supervisor::launch::client::ask(sock, payload, fds).expect("a request and its reply")
}

#[test]
fn bad_requests_are_refused_and_the_server_goes_on() {
    if !root_or_skip("bad_requests_are_refused_and_the_server_goes_on") {
        return;
    }
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    let mut server = Command::new(BIN)
        .arg("__spawner")
        .stdin(Stdio::from(theirs))
        .spawn()
        .expect("run __spawner");
    let s = ours.as_raw_fd();
    // Without a reply socket a request is dropped unanswered; the server goes on.
    sendmsg::<()>(s, &[IoSlice::new(b"ping")], &[], MsgFlags::empty(), None)
        .expect("send a request without descriptors");
    let (text, fd) = ask(s, b"nonsense\0x", &[]);
    assert!(text.starts_with("error: unknown request"), "{text}");
    assert!(fd.is_none());
    let (text, _) = ask(s, b"__agent\0/x.json", &[]);
    assert!(
        text.contains("needs a spec path and 3 descriptors"),
        "{text}"
    );
    assert_eq!(ask(s, b"ping", &[]).0, "pong");
    let null = std::fs::File::open("/dev/null").expect("open /dev/null");
    // Too many descriptors: refused (and closed by the server), nothing started.
    let many = [null.as_raw_fd(); 5];
    let (text, fd) = ask(s, b"__agent\0/x.json", &many);
    assert!(text.contains("at most 4"), "{text}");
    assert!(fd.is_none());
    // A launch whose spec does not exist: started, and it says why on the stderr we gave it.
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let raw = [null.as_raw_fd(), null.as_raw_fd(), w.as_raw_fd()];
    let (text, pidfd) = ask(s, b"__agent\0/nonexistent/spec.json", &raw);
    drop(w);
    assert!(text.starts_with("ok "), "{text}");
    assert!(pidfd.is_some(), "no pidfd with the reply");
    let mut err = String::new();
    std::fs::File::from(r)
        .read_to_string(&mut err)
        .expect("read the shim's stderr");
    assert!(err.contains("/nonexistent/spec.json"), "stderr: {err}");
    // Still serving; end of file ends it with status 0.
    assert_eq!(ask(s, b"ping", &[]).0, "pong");
    drop(ours);
    let status = server.wait().expect("wait for the server");
    assert!(status.success(), "{status}");
}

#[test]
fn a_failing_group_start_through_the_server_names_the_reason_and_leaves_nothing() {
    if !root_or_skip("a_failing_group_start_through_the_server_names_the_reason_and_leaves_nothing")
    {
        return;
    }
    // The bind target would have to be made inside the host's read-only /usr.
    let f = Fixture::new(
        BIN,
        "spawner-badroot",
        "spawner",
        "  sp-bad:\n    host: h1\n    binds: ['@DIR@/agents:/usr/as-no-such-dir/x:rw']\n    agents:\n      - name: never\n        command: ['true']\n",
    );
    let l = agent_plan::Plan::load(&f.dir.join("system.yaml"), "h1", None)
        .expect("plan the fixture")
        .1;
    let opts = served(&f);
    assert!(opts.spawner.is_some(), "the launch server started");
    let e = Pod::start(&l.groups["sp-bad"], &opts)
        .expect_err("the group cannot start")
        .to_string();
    assert!(
        e.contains("/usr/as-no-such-dir") && e.contains("Read-only file system"),
        "the path and the reason are named: {e}"
    );
    let left = f.group_leftovers("sp-bad");
    assert!(left.is_empty(), "left behind: {left:?}");
    // The server still serves the next start.
    let server = opts.spawner.as_ref().expect("server").pid();
    assert!(alive(server), "the server died with the failed launch");
}

#[test]
fn concurrent_launches_each_get_their_own_reply() {
    if !root_or_skip("concurrent_launches_each_get_their_own_reply") {
        return;
    }
    let agents: String = (0..6)
        .map(|i| format!("      - name: many-{i}\n        command: [sleep, '2']\n"))
        .collect();
    let f = Fixture::new(
        BIN,
        "spawner-many",
        "spawner",
        &format!("  sp-many:\n    host: h1\n    agents:\n{agents}"),
    );
    let l = agent_plan::Plan::load(&f.dir.join("system.yaml"), "h1", None)
        .expect("plan the fixture")
        .1;
    let opts = served(&f);
    let pod = Pod::start(&l.groups["sp-many"], &opts).expect("start the group");
    let group = &l.groups["sp-many"];
    // Six threads ask at once; each reply names the shim of that thread's agent.
    let shims: Vec<(String, i32)> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .agents
            .values()
            .map(|a| {
                let pod = &pod;
                s.spawn(move || {
                    let (shim, _cg) = pod
                        .spawn_agent(a, None, [Io::Null; 3])
                        .expect("start an agent");
                    (a.name.clone(), shim.pid)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a launching thread"))
            .collect()
    });
    for (name, pid) in &shims {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut line = cmdline(*pid);
        while !line.contains("__agent") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            line = cmdline(*pid);
        }
        assert!(
            line.ends_with(&format!("sp-many:{name} ")),
            "pid {pid} for {name}: {line}"
        );
    }
    pod.stop().expect("stop the group");
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pod.init_pid), None);
}

/// Processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| ppid(p) == Some(pid))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn hundred_cycles_through_the_server_leave_nothing_behind() {
    if !root_or_skip("hundred_cycles_through_the_server_leave_nothing_behind") {
        return;
    }
    let (f, l, opts) = fixture("sp-cycle", "[/bin/true]");
    let server = opts
        .spawner
        .as_ref()
        .expect("the launch server started")
        .pid();
    let mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| m.lines().count())
            .unwrap_or(0)
    };
    let before = mounts();
    let agent = &l.groups["sp-cycle"].agents[0];
    for i in 0..100 {
        let pod =
            Pod::start(&l.groups["sp-cycle"], &opts).unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        let (shim, cg) = pod
            .spawn_agent(agent, None, [Io::Null; 3])
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        shim.wait();
        let record = pod.exit_record("sp-cycle-a").expect("an exit record");
        assert_eq!(record.code, Some(0), "cycle {i}: {record:?}");
        let _ = cg.remove();
        pod.stop().unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pod.init_pid), None);
    }
    // The server reaped every launcher and shim it forked.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !children_of(server).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        children_of(server),
        Vec::<i32>::new(),
        "left under the server"
    );
    assert_eq!(mounts(), before, "mounts left in the host's namespace");
    for base in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
    ] {
        let slice = std::path::Path::new(base).join(&f.slice);
        let left: Vec<_> = std::fs::read_dir(&slice)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "cgroups left: {left:?}");
    }
    let state = f.dir.join("run/groups/sp-cycle");
    assert!(!state.exists(), "{} is left", state.display());
}

/// Processes alive now whose command line contains `needle`.
fn running(needle: &str) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| alive(p))
                .map(|p| (p, cmdline(p)))
                .filter(|(_, c)| c.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

/// Attaches `strace` to the server `pid` so that it is killed (`SIGKILL`) on entering its
/// next `syscall`: its `recvmsg` of the next request (it dies before reading it) or the
/// `sendmsg` of the reply (it dies after the fork, before answering). Returns once the
/// tracer is attached.
fn kill_server_at(pid: i32, syscall: &str) -> std::process::Child {
    let tracer = Command::new("strace")
        .args(["-qq", "-p", &pid.to_string(), "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={syscall}:signal=SIGKILL"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run strace (apt-get install strace)");
    let traced = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("TracerPid:"))
                    .map(|v| v.trim() != "0")
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !traced() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(traced(), "strace did not attach to the server {pid}");
    tracer
}

#[test]
fn a_server_killed_between_a_request_and_its_reply_leaves_no_agent_behind() {
    if !root_or_skip("a_server_killed_between_a_request_and_its_reply_leaves_no_agent_behind") {
        return;
    }
    // The agent's command line is unique to this test: `sleep 4711`.
    let (f, l, opts) = fixture("sp-kill", "[sleep, '4711']");
    let group = &l.groups["sp-kill"];
    let agent = &group.agents[0];
    let exec_opts = PodOptions {
        spawner: None,
        ..opts.clone()
    };
    drop(opts);
    let pod = Pod::start(group, &exec_opts).expect("start the group");
    let left = || {
        let mut v = running("sleep 4711");
        v.extend(running("sp-kill:sp-kill-a"));
        v
    };
    // Before it read the request; after it forked the shim (which got its spec) but
    // before it answered.
    for (syscall, when) in [
        ("recvmsg", "before reading"),
        ("sendmsg", "before answering"),
    ] {
        let opts = served(&f);
        let server = opts.spawner.as_ref().expect("a launch server").pid();
        let mut tracer = kill_server_at(server, syscall);
        let served_pod = Pod::adopt(group, &opts)
            .expect("adopt the group")
            .expect("the group runs");
        let e = match served_pod.spawn_agent(agent, None, [Io::Null; 3]) {
            Ok((shim, _)) => panic!("killed {when}, the server answered: shim {}", shim.pid),
            Err(e) => e.to_string(),
        };
        let _ = tracer.wait();
        assert!(!alive(server), "{when}: the server {server} still runs");
        // The error names the agent and the launch; whatever the server had forked goes (a
        // shim that got its spec finds its cgroup removed and its agent killed).
        assert!(
            e.contains("sp-kill-a") && e.contains("__agent"),
            "{when}: {e}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !left().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(left(), Vec::new(), "{when}: left running after: {e}");
        // Killed before answering, the server had forked the shim, which got its spec: its
        // exit record says it found its cgroup gone, or that its agent was killed with the
        // cgroup (whichever came first).
        if syscall == "sendmsg" {
            let record = served_pod.exit_record("sp-kill-a");
            let why = record
                .as_ref()
                .and_then(|r| r.error.clone())
                .unwrap_or_default();
            let killed = record.as_ref().is_some_and(|r| r.signal == Some(9));
            assert!(
                killed
                    || (why.contains("group sp-kill: cannot join cgroup")
                        && why.contains("sp-kill-a")),
                "the forked shim's exit record: {record:?}"
            );
        }
        // The next launch starts a new server and goes through it: it works, once.
        let (shim, cg) = served_pod
            .spawn_agent(agent, None, [Io::Null; 3])
            .unwrap_or_else(|e| panic!("{when}: the next launch: {e}"));
        assert!(
            matches!(shim.proc, Proc::Forked(_)),
            "{when}: {:?}",
            shim.proc
        );
        let revived = opts.spawner.as_ref().expect("a launch server").pid();
        assert!(revived != server && alive(revived), "{when}: no new server");
        assert!(
            cmdline(revived).contains("__spawner"),
            "{}",
            cmdline(revived)
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while running("sleep 4711").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(running("sleep 4711").len(), 1, "{when}: {:?}", left());
        cg.remove().expect("remove the agent's cgroup");
        shim.wait();
        drop(served_pod);
        drop(opts);
    }
    pod.stop().expect("stop the group");
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pod.init_pid), None);
    assert_eq!(left(), Vec::new());
}

#[test]
fn a_dead_server_is_replaced_at_most_once_a_second_and_launches_exec_meanwhile() {
    if !root_or_skip("a_dead_server_is_replaced_at_most_once_a_second_and_launches_exec_meanwhile")
    {
        return;
    }
    let (_f, l, opts) = fixture("sp-revive", "[/bin/true]");
    let group = &l.groups["sp-revive"];
    let agent = &group.agents[0];
    let spawner = opts.spawner.clone().expect("a launch server");
    let pod = Pod::start(group, &opts).expect("start the group");
    let kill_server = || {
        let pid = spawner.pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the server");
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        pid
    };
    let launch = |what: &str| {
        let (shim, cg) = pod
            .spawn_agent(agent, None, [Io::Null; 3])
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let forked = matches!(shim.proc, Proc::Forked(_));
        shim.wait();
        let record = pod.exit_record("sp-revive-a").expect("an exit record");
        assert_eq!(record.code, Some(0), "{what}: {record:?}");
        let _ = cg.remove();
        forked
    };
    // Found dead by the launch that fails to send to it (that one execs); the next one
    // starts a new server.
    let first = kill_server();
    assert!(!launch("the launch to the dead server"), "it was forked");
    let since = Instant::now();
    assert!(launch("the launch after"), "not through a new server");
    let second = spawner.pid();
    assert_ne!(first, second);
    // The new one dies too: within a second of the last start, launches exec.
    kill_server();
    assert!(!launch("to the second dead server"));
    let execd = !launch("within the second");
    // (A machine so slow that the second was over by now proves nothing either way.)
    if since.elapsed() < Duration::from_millis(900) {
        assert!(execd, "forked within the second");
        assert_eq!(spawner.pid(), second, "a server started within the second");
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert!(launch("a second later"), "not through a third server");
    assert!(![first, second].contains(&spawner.pid()));
    pod.stop().expect("stop the group");
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pod.init_pid), None);
}
