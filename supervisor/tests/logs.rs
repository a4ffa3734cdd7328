//! Agents' log files written by their shim, for real, as root: timestamped stdout and stderr,
//! rotation by size, an agent that never waits for a slow log sink, and an agent that keeps
//! logging after the process that started its shim is gone.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use agent_supervisor::launch::spec::LogSpec;
use agent_supervisor::pod::{Pod, PodOptions};
use agent_supervisor_tests::fixture::{root_or_skip, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

/// A running one-agent group; stopped when dropped.
struct Group {
    pod: Pod,
    l: agent_plan::HostPlan,
    agent: String,
    f: Fixture,
}

impl Group {
    /// Group `name` with agent `log-agent` running `python3 agents/a.py` (the `script`).
    fn start(name: &str, script: &str) -> Group {
        Group::start_with(name, "[python3, agents/a.py]", script)
    }

    /// Group `name` with agent `log-agent` running `command` (YAML), `script` in
    /// `agents/a.py`.
    fn start_with(name: &str, command: &str, script: &str) -> Group {
        let f = Fixture::new(
            BIN,
            &format!("logs-{name}"),
            "logs",
            &format!(
                "  {name}:\n    host: h1\n    agents:\n      - name: log-agent\n        command: {command}\n"
            ),
        );
        f.file("agents/a.py", script);
        let l = agent_plan::Plan::load(&f.dir.join("system.yaml"), "h1", None)
            .expect("plan the fixture")
            .1;
        let opts = PodOptions {
            launcher: PathBuf::from(BIN),
            run_dir: f.dir.join("run"),
            cgroup_root: f.slice.clone(),
            spawner: None,
        };
        let pod = Pod::start(&l.groups[name], &opts).expect("start the pod");
        Group {
            pod,
            l,
            agent: "log-agent".into(),
            f,
        }
    }

    /// Log files under a directory that does not exist yet.
    fn log_spec(&self, max_size: u64, keep: u32) -> LogSpec {
        let dir = self.f.dir.join("logs").join(&self.pod.group);
        LogSpec {
            stdout: dir.join("a.stdout.log"),
            stderr: dir.join("a.stderr.log"),
            max_size,
            keep,
            drops: None,
        }
    }

    /// The `__agent` command writing to `log`.
    fn command(&self, log: LogSpec) -> Command {
        let agent = &self.l.groups[&self.pod.group].agents[&self.agent];
        let (mut cmd, _cgroup) = self
            .pod
            .agent_command_with_log(agent, Some(log))
            .expect("prepare the agent");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        cmd
    }

    fn spawn(&self, log: LogSpec) -> Child {
        self.command(log).spawn().expect("spawn the shim")
    }

    fn agent_pid(&self) -> Option<i32> {
        let p = self
            .pod
            .dir
            .join("agents")
            .join(format!("{}.pid", self.agent));
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Err(e) = self.pod.stop() {
            eprintln!("stop {}: {e}", self.pod.group);
        }
    }
}

/// Waits for the shim (its exit status) at most `limit`.
fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait for the shim") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the shim did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Splits `2026-11-24T02:33:00.123Z text` and checks the timestamp is a recent RFC 3339 UTC
/// time with milliseconds.
fn split_line(line: &str) -> (&str, &str) {
    let (ts, text) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    assert_eq!(ts.len(), 24, "{line:?}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{line:?}");
    let t = humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let age = SystemTime::now()
        .duration_since(t)
        .expect("a timestamp in the past");
    assert!(age < Duration::from_secs(300), "{line:?}");
    (ts, text)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn stdout_and_stderr_land_timestamped_in_their_files() {
    if !root_or_skip("stdout_and_stderr_land_timestamped_in_their_files") {
        return;
    }
    let g = Group::start(
        "log-basic",
        "import sys, time\n\
         for i in range(5):\n\
         \x20   print(f'out {i}', flush=True)\n\
         \x20   print(f'err {i}', file=sys.stderr, flush=True)\n\
         \x20   time.sleep(0.02)\n\
         sys.stdout.write('no newline at the end')\n",
    );
    let log = g.log_spec(1 << 20, 3);
    let mut shim = g.spawn(log.clone());
    let status = wait_for(&mut shim, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let rec = g.pod.exit_record(&g.agent).expect("an exit record");
    assert_eq!(rec.code, Some(0), "{rec:?}");

    for (path, want) in [
        (
            &log.stdout,
            [
                "out 0",
                "out 1",
                "out 2",
                "out 3",
                "out 4",
                "no newline at the end",
            ]
            .as_slice(),
        ),
        (
            &log.stderr,
            ["err 0", "err 1", "err 2", "err 3", "err 4"].as_slice(),
        ),
    ] {
        let text = read(path);
        assert!(text.ends_with('\n'), "{text:?}");
        let lines: Vec<(&str, &str)> = text.lines().map(split_line).collect();
        let texts: Vec<&str> = lines.iter().map(|(_, t)| *t).collect();
        assert_eq!(texts, want, "{}", path.display());
        assert!(
            lines.windows(2).all(|w| w[0].0 <= w[1].0),
            "timestamps out of order: {text}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .expect("stat log")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640, "{}", path.display());
    }
}

#[test]
fn a_start_failure_is_in_the_stderr_log() {
    if !root_or_skip("a_start_failure_is_in_the_stderr_log") {
        return;
    }
    let g = Group::start_with("log-nostart", "[no-such-program-xyz]", "");
    let log = g.log_spec(1 << 20, 1);
    let mut shim = g.spawn(log.clone());
    let status = wait_for(&mut shim, Duration::from_secs(30));
    assert_eq!(status.code(), Some(127));
    let rec = g.pod.exit_record(&g.agent).expect("an exit record");
    assert!(rec.error.is_some(), "{rec:?}");
    let err = read(&log.stderr);
    let line = err.lines().next().expect("a line in the stderr log");
    let (_, text) = split_line(line);
    assert!(
        text.starts_with("[agent-supervisor: agent log-nostart:log-agent: ")
            && text.contains("no-such-program-xyz: not found"),
        "{err}"
    );
}

#[test]
fn files_rotate_by_size_keeping_n() {
    if !root_or_skip("files_rotate_by_size_keeping_n") {
        return;
    }
    // 2500 lines of 100 bytes (125 with the timestamp): ~4.8 files of 64 KiB.
    let g = Group::start(
        "log-rotate",
        "import os\n\
         data = b''.join(b'%08d ' % i + b'r' * 90 + b'\\n' for i in range(2500))\n\
         while data:\n\
         \x20   data = data[os.write(1, data[:8192]):]\n",
    );
    let max = 64 << 10;
    let log = g.log_spec(max, 2);
    let mut shim = g.spawn(log.clone());
    assert!(wait_for(&mut shim, Duration::from_secs(30)).success());
    let numbered = |i: u32| PathBuf::from(format!("{}.{i}", log.stdout.display()));
    assert!(
        !numbered(3).exists(),
        "keep=2 but {} exists",
        numbered(3).display()
    );
    // Oldest first: .2, .1, then the current file; line numbers run on without a gap.
    let mut numbers = Vec::new();
    for p in [numbered(2), numbered(1), log.stdout.clone()] {
        let len = std::fs::metadata(&p).expect("rotated file").len();
        assert!(len <= max, "{} is {len} bytes", p.display());
        for line in read(&p).lines() {
            let (_, text) = split_line(line);
            numbers.push(text[..8].parse::<u32>().expect("a line number"));
        }
    }
    assert_eq!(numbers.last(), Some(&2499));
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "lines missing or out of order across rotated files"
    );
    assert!(numbers.len() > 1000, "{} lines kept", numbers.len());
}

#[test]
fn a_slow_log_sink_never_blocks_the_agent() {
    if !root_or_skip("a_slow_log_sink_never_blocks_the_agent") {
        return;
    }
    // 20 MiB in lines of 1 KiB, as fast as the agent can, then how long that took.
    let g = Group::start(
        "log-slow",
        "import os, sys, time\n\
         t = time.time()\n\
         line = b'x' * 1014 + b'\\n'\n\
         for block in range(320):\n\
         \x20   data = b''.join(b'%08d ' % (block * 64 + i) + line for i in range(64))\n\
         \x20   while data:\n\
         \x20       data = data[os.write(1, data):]\n\
         print(f'ELAPSED {time.time() - t:.3f}', file=sys.stderr, flush=True)\n",
    );
    let mut log = g.log_spec(0, 0);
    // A real slow sink: stdout goes to a FIFO read at ~1.3 MB/s (64 KiB every 50 ms).
    std::fs::create_dir_all(log.stdout.parent().expect("a log dir")).expect("create log dir");
    log.stdout = log.stdout.with_extension("fifo");
    nix::unistd::mkfifo(&log.stdout, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .expect("mkfifo");
    let fifo = log.stdout.clone();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(&fifo).expect("open the FIFO");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    let mut shim = g.spawn(log.clone());
    let status = wait_for(&mut shim, Duration::from_secs(60));
    let shim_time = started.elapsed();
    assert!(status.success(), "{status}");
    let err = read(&log.stderr);
    let elapsed: f64 = err
        .lines()
        .find_map(|l| split_line(l).1.strip_prefix("ELAPSED ").map(str::to_string))
        .unwrap_or_else(|| panic!("no ELAPSED in {err}"))
        .parse()
        .expect("seconds");
    let got = String::from_utf8(reader.join().expect("the FIFO reader")).expect("utf-8");
    eprintln!(
        "20 MiB to a ~1.3 MB/s sink: the agent took {elapsed:.3} s, the shim {:.3} s; {} bytes reached the sink",
        shim_time.as_secs_f64(),
        got.len()
    );
    // At the sink's pace the 20 MiB alone would take ~16 s.
    assert!(
        elapsed < 5.0,
        "the agent waited for the log sink: {elapsed} s"
    );
    // Every line either reached the sink whole, in order, or is counted in a "dropped" line.
    let mut dropped = 0u64;
    let mut numbers: Vec<u32> = Vec::new();
    for line in got.lines() {
        let (_, text) = split_line(line);
        if let Some(note) = text.strip_prefix("… [agent-supervisor: ") {
            assert!(
                note.ends_with(" bytes dropped: log writer too slow]"),
                "{line:?}"
            );
            dropped += note
                .split(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{line:?}"));
        } else {
            numbers.push(text[..8].parse().expect("a line number"));
        }
    }
    eprintln!(
        "{} lines reached the sink, {dropped} bytes dropped",
        numbers.len()
    );
    assert!(dropped >= 10 << 20, "only {dropped} bytes dropped");
    assert_eq!(numbers.len() as u64 * 1024 + dropped, 20 << 20);
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "lines out of order"
    );
}

#[test]
fn the_agent_keeps_logging_when_its_starter_is_gone() {
    if !root_or_skip("the_agent_keeps_logging_when_its_starter_is_gone") {
        return;
    }
    let g = Group::start(
        "log-orphan",
        "import time\n\
         i = 0\n\
         while True:\n\
         \x20   print(f'tick {i}', flush=True)\n\
         \x20   i += 1\n\
         \x20   time.sleep(0.05)\n",
    );
    let log = g.log_spec(1 << 20, 1);
    // A short-lived "daemon" starts the shim with its own stdout and stderr on a pipe to us,
    // prints the shim's pid and exits; then we close our end of the pipe too.
    let shim_cmd = g.command(log.clone());
    let mut starter = Command::new("sh");
    starter
        .arg("-c")
        .arg("\"$@\" </dev/null & echo $!")
        .arg("sh")
        .arg(shim_cmd.get_program())
        .args(shim_cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut starter = starter.spawn().expect("spawn the starter");
    let mut out = BufReader::new(starter.stdout.take().expect("starter stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read the shim pid");
    let shim: i32 = first.trim().parse().expect("the shim's pid");
    drop(out);
    drop(starter.stderr.take());
    assert!(starter.wait().expect("wait for the starter").success());

    let ticks = || -> Option<u32> {
        let text = std::fs::read_to_string(&log.stdout).ok()?;
        let last = text.lines().last()?;
        split_line(last).1.strip_prefix("tick ")?.parse().ok()
    };
    std::thread::sleep(Duration::from_millis(700));
    let before = ticks().expect("the agent logged");
    std::thread::sleep(Duration::from_millis(700));
    let after = ticks().expect("the agent logged");
    assert!(
        after >= before + 5,
        "the agent stopped logging after its starter left: tick {before} then {after}"
    );
    let agent = g.agent_pid().expect("the agent's pid file");
    assert!(
        Path::new(&format!("/proc/{agent}")).exists(),
        "the agent died"
    );

    // SIGTERM to the shim is forwarded; the shim records the end and exits.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the shim");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{shim}")).exists()
        && std::fs::read_to_string(format!("/proc/{shim}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "the shim did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec = g.pod.exit_record(&g.agent).expect("an exit record");
    assert_eq!(rec.signal, Some(15), "{rec:?}");
}
