//! The wall clock jumping under a running daemon (in the test VM, whose clock is its own):
//! an hour back, then a day forward. Timers run on the monotonic clock, so nothing may
//! notice: no healthy agent restarts or turns unhealthy, a crash-looping agent's backoff
//! keeps its pace (a jump back must not stall it for an hour, a jump forward must not
//! make it spin), uptimes grow by the time that really passed, the daemon and its HTTP
//! listener keep answering, and the agent's log goes on (its time stamps follow the wall
//! clock, as a log's should).

use std::time::Instant;

use agent_supervisor_tests::fixture::Fixture;
use agent_supervisor_tests::vm::{self, shell_quote, VmOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");
const CTL: &str = env!("CARGO_BIN_EXE_supervisorctl");

/// Runs in the VM: waits for the system to be up, then watches three 8-second windows
/// (before any jump, after the clock went an hour back, after it went a day forward) and
/// prints one `WINDOW {json}` line for each.
const JUDGE: &str = r#"
import json, subprocess, sys, time, urllib.request
ctl, sock, port = sys.argv[1], sys.argv[2], sys.argv[3]

def status():
    out = subprocess.run([ctl, "-s", sock, "status", "--json"], capture_output=True, timeout=10)
    return {a["agent"]: a for a in json.loads(out.stdout)["agents"]}

def metrics_ok():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.status == 200 and b"agent_supervisor_agent_up" in r.read()
    except OSError as e:
        return False

deadline = time.monotonic() + 60
while True:
    s = status()
    if s.get("web", {}).get("health") == "healthy" and s.get("sleeper", {}).get("state") == "RUNNING":
        break
    if time.monotonic() > deadline:
        print("NOT UP", json.dumps(s), flush=True)
        sys.exit(1)
    time.sleep(0.2)

def window(name, jump):
    if jump:
        subprocess.run(["date", "-s", "@%d" % (time.time() + jump)], check=True, capture_output=True)
    t0, a = time.monotonic(), status()
    worst = []
    while time.monotonic() - t0 < 8:
        time.sleep(0.5)
        s = status()
        for n in ("web", "sleeper"):
            if s[n]["state"] != "RUNNING" or s[n]["health"] == "unhealthy":
                worst.append(f'{n} {s[n]["state"]} {s[n]["health"]}')
    b, took = status(), time.monotonic() - t0
    print("WINDOW", json.dumps({
        "name": name,
        "seconds": took,
        "crash_restarts": b["crash"]["restarts"] - a["crash"]["restarts"],
        "pids_kept": all(a[n]["pid"] == b[n]["pid"] for n in ("web", "sleeper")),
        "restarts": b["web"]["restarts"] + b["sleeper"]["restarts"],
        "uptime_growth": b["sleeper"]["uptime_seconds"] - a["sleeper"]["uptime_seconds"],
        "bad": worst,
        "metrics": metrics_ok(),
    }), flush=True)

window("steady", 0)
window("an hour back", -3600)
window("a day forward", 86400 + 3600)
"#;

#[test]
fn a_wall_clock_jump_changes_nothing_the_daemon_times() {
    let test = "a_wall_clock_jump_changes_nothing_the_daemon_times";
    if !vm::require_or_skip(test) {
        return;
    }
    let started = Instant::now();
    let f = Fixture::new(
        BIN,
        "clock-vm",
        "vm",
        "  svc:\n    host: h1\n    restart: {policy: always, backoff: {initial: 1s, max: 1s}, max_retries: 1000}\n    agents:\n      - name: web\n        command: [python3, -m, http.server, '8011']\n        port: 8011\n        health: {http: /, interval: 1s, timeout: 2s, retries: 3, start_period: 30s}\n      - name: sleeper\n        command: [sleep, '3600']\n      - name: crash\n        command: [sh, -c, 'sleep 0.5; exit 1']\n",
    );
    f.file("agents/judge.py", JUDGE);
    let sys = f.dir.join("system.yaml");
    let script = format!(
        r#"
B={bin}; C={ctl}; D={dir}
# The run and state directories and the control socket on the guest's own /run (a unix
# socket on the 9p share cannot be connected to).
mkdir -p /run/clk
sed -e "s#$D/run#/run/clk/run#; s#$D/state#/run/clk/state#; s#$D/control.sock#/run/clk/control.sock#" \
  {sys} > /run/clk/system.yaml
SOCK=/run/clk/control.sock
$B daemon --config /run/clk/system.yaml --host h1 > /tmp/daemon.log 2>&1 &
DPID=$!
for i in $(seq 300); do [ -S $SOCK ] && break; sleep 0.1; done
python3 $D/agents/judge.py $C $SOCK {port}
echo "@@ daemon"
kill -0 $DPID && echo "daemon alive"
echo "TODAY $(date -u +%Y-%m-%d)"
find $D/logs -name web.stderr.log -exec grep 'GET / HTTP' {{}} \; | tail -n 1
$C -s $SOCK shutdown || kill -TERM $DPID
wait $DPID
echo "daemon exit $?"
cat /tmp/daemon.log | tail -n 20
echo "@@ end"
"#,
        bin = shell_quote(BIN),
        ctl = shell_quote(CTL),
        sys = shell_quote(&sys.to_string_lossy()),
        dir = shell_quote(&f.dir.to_string_lossy()),
        port = f.port,
    );
    let opts = VmOptions {
        // Under TCG: about 15 s to the daemon's agents being up, 30 s of windows.
        timeout: std::time::Duration::from_secs(180),
        share_rw: vec![f.dir.clone()],
        ..VmOptions::default()
    };
    let run = vm::run_reported(test, started, &script, &opts);
    let out = &run.stdout;
    let windows: Vec<Value> = out
        .lines()
        .filter_map(|l| l.strip_prefix("WINDOW "))
        .map(|j| serde_json::from_str(j).expect("a window's JSON"))
        .collect();
    assert_eq!(windows.len(), 3, "{out}\nconsole:\n{}", run.console);
    let steady = windows[0]["crash_restarts"].as_i64().unwrap_or(0);
    // About one restart per 1.5 s (0.5 s run + 1 s backoff); a slow VM gets fewer.
    assert!(
        steady >= 2,
        "the crash loop before any jump: {}",
        windows[0]
    );
    for w in &windows {
        let name = &w["name"];
        assert_eq!(w["pids_kept"], true, "{name}: an agent was restarted: {w}");
        assert_eq!(w["restarts"], 0, "{name}: {w}");
        assert_eq!(w["bad"], serde_json::json!([]), "{name}: {w}");
        assert_eq!(w["metrics"], true, "{name}: /metrics did not answer: {w}");
        let n = w["crash_restarts"].as_i64().unwrap_or(-1);
        assert!(
            n >= 1 && n <= 2 * steady + 2,
            "{name}: the crash loop's pace changed ({n} restarts, {steady} before): {w}"
        );
        let growth = w["uptime_growth"].as_f64().unwrap_or(f64::NAN);
        let took = w["seconds"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (growth - took).abs() < 3.0,
            "{name}: uptime grew {growth:.1} s in {took:.1} s: {w}"
        );
    }
    let tail = out
        .split("@@ daemon\n")
        .nth(1)
        .and_then(|s| s.split("@@ end").next())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(tail.contains("daemon alive"), "{tail}");
    assert!(tail.contains("daemon exit 0"), "{tail}");
    // The web agent's log went on after the jumps, stamped with the day-later wall clock.
    let today = tail
        .lines()
        .find_map(|l| l.strip_prefix("TODAY "))
        .unwrap_or_else(|| panic!("{tail}"));
    let last = tail
        .lines()
        .rfind(|l| l.contains("GET / HTTP"))
        .unwrap_or_else(|| panic!("no health check in the agent's log:\n{tail}"));
    assert!(last.starts_with(today), "{last} (today is {today})");
}
