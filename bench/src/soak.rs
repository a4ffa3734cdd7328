//! `agent-bench soak`: the two-host main job (the `observe` lab: two network namespaces, the
//! bridge between them, stand-in agents in private groups, plus an OOM group on h1) under a
//! stream of faults for N minutes. Faults come in rounds, each a seeded shuffle of every
//! [`Kind`], 2 to 8 s apart; the seed is printed, so a run can be repeated. Every 500 ms
//! (100 ms while a fault is being recovered from) it
//! checks that each agent runs exactly once (a `/proc` census), asks h1's `/health_summary`
//! (3 s timeout: an answer that takes longer is a hang), and every 5 s samples both daemons'
//! RSS and open fds. After each fault it waits (up to 60 s) until exactly the agents the
//! fault should restart have new processes, every other agent kept its pid, a killed daemon
//! or bridge was replaced, and h1's summary is `ok` again; then every host's
//! `restarts_total` must equal the restarts the faults caused. At the end the daemons shut
//! down and nothing may be left: processes, cgroups, mounts, links, nftables rules.
//! A daemon is killed once per round: h1's in the first, h2's in the others, so that one
//! daemon process (h1's second) lives through nearly the whole run and its RSS and fd slopes
//! mean something. Once per run the underlay between the hosts is cut (every packet dropped) for a sixth of
//! the run, at least 15 s and at most 5 minutes (see [`partition`]).

mod partition;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::bridge::{catch_signals, interrupted};
use super::bridge_lab::output;
use super::deploy::sibling;
use super::observe_http::{get, in_netns};
use super::observe_lab::{Lab, Tools, HTTP_PORT};
use super::soak_faults::{
    census, doubled, restarts_from_metrics, single, Expect, Judged, Kind, OOMER, OOMER_NAME,
};
use super::soak_report::{left_behind, render, Baseline, Report, Sample};
use super::supervise_procs as procs;

/// How long a fault may take to be recovered from.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// How long the system may take to come up.
const READY_LIMIT: Duration = Duration::from_secs(180);
/// The period of the checks between faults, and while waiting for a recovery.
const TICK: Duration = Duration::from_millis(500);
const RECOVERY_TICK: Duration = Duration::from_millis(100);
/// A `/health_summary` that takes longer has hung.
const SUMMARY_TIMEOUT: Duration = Duration::from_secs(3);
/// The period of the RSS and fd samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long `restarts_total` may lag behind a recovery.
const METRICS_LAG: Duration = Duration::from_secs(5);
/// The stand-in agents' health check: a stopped agent is caught within about 8 s.
const HEALTH: &str = "{http: /health, interval: 2s, timeout: 1s, retries: 3}";
/// The OOM group (on h1) and its memory limit.
const OOM_GROUP: &str = "h1oom";

fn progress(what: &str) {
    eprintln!("bench soak: {what}");
}

/// Runs the soak for `minutes` with `agents` stand-in agents and the RNG seeded with `seed`
/// (the time when `None`); the table, or why it failed (with the table when there is one).
pub fn run(minutes: u64, seed: Option<u64>, agents: usize) -> Result<String, String> {
    if minutes == 0 {
        return Err("--minutes must be at least 1".into());
    }
    if agents < 2 {
        return Err("--agents must be at least 2 (one per host)".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "must run as root: it creates network namespaces, cgroups and the bridge \
                    (e.g. sudo agent-bench soak)"
                .into(),
        );
    }
    let need = |name: &str, pkg: &str| {
        procs::which(name).ok_or_else(|| format!("{name} is not installed: apt-get install {pkg}"))
    };
    let tools = Tools {
        ip: need("ip", "iproute2")?,
        nsenter: need("nsenter", "util-linux")?,
        daemon: sibling("agent-supervisor")?,
        ctl: sibling("supervisorctl")?,
    };
    let nft = need("nft", "nftables")?;
    let python = procs::system_python()
        .ok_or("python3 not found in /usr/local/bin, /usr/bin or /bin (apt-get install python3)")?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    progress(&format!("seed {seed} (repeat this run with --seed {seed})"));
    let mut r = Report::new(seed, minutes, agents);
    if cfg!(debug_assertions) {
        r.notes
            .push("a debug build: recovery times are slower than a release build's".into());
    }
    if let Err(e) = catch_signals() {
        r.notes
            .push(format!("Ctrl-C will leave the namespaces behind: {e}"));
    }
    let mut lab = Lab::new(tools, &python, agents).map_err(|e| format!("set-up: {e}"))?;
    lab.health = HEALTH.into();
    let oomer = lab.dir.join("oomer.py");
    std::fs::write(&oomer, OOMER).map_err(|e| format!("cannot write {}: {e}", oomer.display()))?;
    lab.extra_groups = oom_group(&python);
    lab.write_config()?;
    let baseline = Baseline::take(&lab, &nft);
    let result = Soak::new(&mut lab, &mut r, seed, nft.clone()).and_then(|mut s| {
        s.cut_for = partition::length(minutes);
        s.run(minutes)
    });
    if let Err(e) = result {
        r.violations.push(e);
    }
    progress("shutting both daemons down");
    r.notes.extend(lab.stop_daemons());
    r.left = left_behind(&lab, &baseline, &nft);
    r.notes.extend(lab.teardown());
    let table = render(&r);
    if r.failed() {
        Err(format!("the soak failed:\n{table}"))
    } else {
        Ok(table)
    }
}

/// The OOM group's YAML (under `groups:`): one idle agent in a 64 MiB group on h1.
fn oom_group(python: &Path) -> String {
    let py = serde_json::to_string(&python.to_string_lossy()).unwrap_or_default();
    format!(
        "  {OOM_GROUP}:\n    host: h1\n    network: private\n    resources: {{memory: 64M}}\n    \
         restart: {{policy: always, backoff: {{initial: 100ms, max: 30s}}}}\n    agents:\n      \
         - name: {OOMER_NAME}\n        command: [{py}, oomer.py]\n"
    )
}

/// The daemon's HTTP address inside each host's namespace.
fn daemon_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], HTTP_PORT))
}

/// Why h1's summary is not `ok` with all `total` agents RUNNING and healthy; `Ok` when it is.
pub fn summary_ok(v: &Value, total: usize) -> Result<(), String> {
    let agents = v["agents"].as_u64().unwrap_or(0) as usize;
    let healthy = v["agents_healthy"].as_u64().unwrap_or(0) as usize;
    if v["status"] != "ok" || agents != total || healthy != total {
        return Err(format!(
            "summary {}: {healthy} of {agents} agents healthy (of {total})",
            v["status"]
        ));
    }
    Ok(())
}

/// The soak's running state.
struct Soak<'a> {
    lab: &'a mut Lab,
    r: &'a mut Report,
    rng: fastrand::Rng,
    /// Every agent's name, the OOM agent last.
    names: Vec<String>,
    /// Agent name → its host (index) and group.
    place: HashMap<String, (usize, String)>,
    /// The restarts each agent's `restarts_total` must show.
    expected: HashMap<String, u64>,
    last: BTreeMap<String, Vec<i32>>,
    summary: Result<Value, String>,
    /// Ticks in a row in which some agent did not run exactly once (outside a fault).
    not_single: usize,
    next_sample: Instant,
    t0: Instant,
    generation: u64,
    /// The `nft` tool (the partition is an nftables table).
    nft: std::path::PathBuf,
    /// How long the underlay is cut for.
    cut_for: Duration,
    /// The round of faults under way (1, 2, ...).
    round: usize,
}

impl<'a> Soak<'a> {
    /// Starts both daemons and waits until every agent runs once and h1's summary is `ok`.
    fn new(
        lab: &'a mut Lab,
        r: &'a mut Report,
        seed: u64,
        nft: std::path::PathBuf,
    ) -> Result<Soak<'a>, String> {
        let mut names = lab.agents.names.clone();
        names.push(OOMER_NAME.to_string());
        let mut place = HashMap::new();
        for (i, h) in lab.hosts.iter().enumerate() {
            for (g, members) in &h.groups {
                for &m in members {
                    place.insert(lab.agents.names[m].clone(), (i, g.clone()));
                }
            }
        }
        place.insert(OOMER_NAME.to_string(), (0, OOM_GROUP.to_string()));
        progress("starting h1's and h2's daemons");
        let t0 = Instant::now();
        for i in 0..2 {
            lab.start(i)?;
        }
        let mut s = Soak {
            lab,
            r,
            rng: fastrand::Rng::with_seed(seed),
            names,
            place,
            expected: HashMap::new(),
            last: BTreeMap::new(),
            summary: Err("not asked yet".into()),
            not_single: 0,
            next_sample: Instant::now(),
            t0,
            generation: 0,
            nft,
            cut_for: Duration::from_secs(15),
            round: 0,
        };
        progress(&format!(
            "waiting until all {} agents run and are healthy",
            s.names.len()
        ));
        loop {
            s.tick(None, TICK);
            let why = match (&s.summary, single(&s.last, &s.names)) {
                (Ok(v), Some(_)) => match summary_ok(v, s.names.len()) {
                    Ok(()) => break,
                    Err(e) => e,
                },
                (Ok(_), None) => "some agent does not run exactly once".into(),
                (Err(e), _) => e.clone(),
            };
            if let Some(e) = (0..2).find_map(|i| s.lab.exited(i)) {
                return Err(e);
            }
            if t0.elapsed() > READY_LIMIT || interrupted() {
                return Err(format!(
                    "the system did not come up in {READY_LIMIT:?}: {why}; {}; {}",
                    s.lab.hosts[0].log_tail(),
                    s.lab.hosts[1].log_tail()
                ));
            }
        }
        s.r.ready = Some(t0.elapsed());
        s.expected = s.restarts_now()?;
        Ok(s)
    }

    /// Rounds of faults until `minutes` have passed (the first round always completes).
    fn run(&mut self, minutes: u64) -> Result<(), String> {
        let start = Instant::now();
        let until = start + Duration::from_secs(minutes * 60);
        let mut round = 0;
        while round == 0 || Instant::now() < until {
            round += 1;
            self.round = round;
            let mut kinds = Kind::ALL.to_vec();
            if round > 1 {
                kinds.retain(|k| *k != Kind::Partition);
            }
            self.rng.shuffle(&mut kinds);
            progress(&format!("round {round}: {kinds:?}"));
            for kind in kinds {
                if interrupted() {
                    return Err("interrupted (everything it set up is removed)".into());
                }
                if round > 1 && Instant::now() >= until {
                    break;
                }
                let gap = Duration::from_millis(self.rng.u64(2000..=8000));
                self.steady(gap);
                self.fault(kind)?;
            }
        }
        self.steady(Duration::from_secs(3));
        self.r.duration = start.elapsed();
        self.r.rounds = round;
        Ok(())
    }

    /// One check: the census, h1's summary, maybe a sample; then sleeps out the `period`.
    /// `down`: the host whose daemon is down on purpose (h1's: a refused summary is
    /// expected).
    fn tick(&mut self, down: Option<usize>, period: Duration) {
        let t = Instant::now();
        let c = census(&self.lab.tag());
        for (name, pids) in doubled(&self.last, &c) {
            let at = self.t0.elapsed().as_secs_f64();
            self.r
                .doubled
                .entry(name)
                .or_insert_with(|| format!("{pids:?} at {at:.1} s"));
        }
        self.last = c;
        let ns = self.lab.hosts[0].netns.clone();
        let asked = Instant::now();
        let answer = in_netns(&ns, || {
            get(daemon_addr(), "/health_summary", SUMMARY_TIMEOUT)
        });
        let took = asked.elapsed();
        self.summary = match answer {
            Ok(a) => {
                self.r.summary.push(took);
                serde_json::from_slice(&a.body)
                    .map_err(|e| format!("HTTP {}: not JSON: {e}", a.status))
            }
            Err(e) => {
                if took >= SUMMARY_TIMEOUT - Duration::from_millis(100) {
                    self.r.summary_hangs.push(format!("{e} ({took:?})"));
                } else if down == Some(0) {
                    self.r.summary_refused_down += 1;
                } else {
                    self.r.summary_errors.push(e.clone());
                }
                Err(e)
            }
        };
        if Instant::now() >= self.next_sample {
            self.next_sample = Instant::now() + SAMPLE_EVERY;
            self.sample();
        }
        if let Some(rest) = period.checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
    }

    /// Both daemons' RSS and open fds.
    fn sample(&mut self) {
        let at = self.t0.elapsed().as_secs_f64();
        for (i, h) in self.lab.hosts.iter().enumerate() {
            let Some(pid) = h.daemon_pid() else { continue };
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count());
            let own = in_netns(&h.netns, || {
                get(daemon_addr(), "/v1/snapshot", SUMMARY_TIMEOUT)
            })
            .ok()
            .and_then(|a| serde_json::from_slice::<Value>(&a.body).ok());
            let kib = |field: &str| {
                own.as_ref()
                    .and_then(|v| v["process"][field].as_u64())
                    .map(|b| b / 1024)
            };
            if let (Some(rss_kib), Ok(fds)) = (procs::rss_kib(pid), fds) {
                self.r.samples.push(Sample {
                    host: i,
                    pid,
                    at,
                    rss_kib,
                    fds,
                    anon_kib: kib("anon_bytes"),
                    heap_kib: kib("heap_in_use_bytes"),
                });
            }
        }
    }

    /// Checks for `d` with no fault: every agent must run exactly once all along.
    fn steady(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.tick(None, TICK);
            match single(&self.last, &self.names) {
                Some(_) => self.not_single = 0,
                None => {
                    self.not_single += 1;
                    // Two ticks in a row: not a census that caught an exit and its successor.
                    if self.not_single == 2 {
                        let bad: Vec<String> = self
                            .names
                            .iter()
                            .filter_map(|n| match self.last.get(n).map(Vec::len) {
                                Some(1) => None,
                                k => Some(format!("{n} ({} processes)", k.unwrap_or(0))),
                            })
                            .collect();
                        let at = self.t0.elapsed().as_secs_f64();
                        self.r.lost.push(format!(
                            "at {at:.1} s, outside any fault: {}",
                            bad.join(", ")
                        ));
                    }
                }
            }
        }
    }

    /// Injects one fault of `kind` and waits for the recovery.
    fn fault(&mut self, kind: Kind) -> Result<(), String> {
        let Some(before) = single(&self.last, &self.names) else {
            self.r
                .outcome(kind)
                .skipped
                .push("not every agent ran exactly once before it".into());
            return Ok(());
        };
        if kind == Kind::Partition {
            return self.partition(before);
        }
        let mut down = None;
        let expect = match self.inject(kind, &before, &mut down) {
            Ok(e) => e,
            Err(why) => {
                self.r.outcome(kind).skipped.push(why);
                return Ok(());
            }
        };
        progress(&format!("{}: {}", kind.label(), expect.target));
        if kind.counts_restart() {
            for n in &expect.restart {
                *self.expected.entry(n.clone()).or_default() += 1;
            }
        }
        let t = Instant::now();
        let outcome = loop {
            self.tick(down, RECOVERY_TICK);
            if down.is_some() && t.elapsed() >= Duration::from_secs(1) {
                // The daemon has been down for a second: start a new one.
                let i = down.take().unwrap_or_default();
                self.lab.start(i)?;
            }
            let judged = expect.judge(&self.last).and_then(|()| match &self.summary {
                Ok(v) => summary_ok(v, self.names.len()).map_err(Judged::Waiting),
                Err(e) => Err(Judged::Waiting(format!("h1's summary: {e}"))),
            });
            match judged {
                Ok(()) => break Ok(t.elapsed()),
                Err(Judged::Wrong(w)) => break Err(w),
                Err(Judged::Waiting(w)) if t.elapsed() > RECOVERY_LIMIT => {
                    break Err(format!("not recovered after {RECOVERY_LIMIT:?}: {w}"))
                }
                Err(Judged::Waiting(_)) => {}
            }
        };
        let at = self.t0.elapsed().as_secs_f64();
        let o = self.r.outcome(kind);
        o.injected += 1;
        match outcome {
            Ok(took) => o.recovered.push(took),
            Err(why) => o
                .failures
                .push(format!("{} at {at:.1} s: {why}", expect.target)),
        }
        if kind == Kind::Oom {
            self.check_oom_exit();
        }
        self.check_restarts(&expect);
        Ok(())
    }

    /// Does what `kind` does to the system; what it must change. `down` is set to the host
    /// whose daemon was killed.
    fn inject(
        &mut self,
        kind: Kind,
        before: &HashMap<String, i32>,
        down: &mut Option<usize>,
    ) -> Result<Expect, String> {
        let stand_ins = self.names.len() - 1;
        let pick = self.names[self.rng.usize(..stand_ins)].clone();
        let mut e = Expect {
            kind,
            target: String::new(),
            restart: Vec::new(),
            before: before.clone(),
            replaced: None,
        };
        let signal = |name: &str, sig: Signal| {
            let pid = before[name];
            kill(Pid::from_raw(pid), sig).map_err(|e| format!("kill -{sig} {name} ({pid}): {e}"))
        };
        match kind {
            Kind::AgentKill | Kind::AgentHang => {
                let sig = if kind == Kind::AgentKill {
                    Signal::SIGKILL
                } else {
                    Signal::SIGSTOP
                };
                signal(&pick, sig)?;
                e.target = self.describe(&pick);
                e.restart = vec![pick];
            }
            Kind::Oom => {
                signal(OOMER_NAME, Signal::SIGUSR1)?;
                e.target = self.describe(OOMER_NAME);
                e.restart = vec![OOMER_NAME.to_string()];
            }
            Kind::DaemonKill => {
                // h1's daemon in the first round only, h2's after: h1's next daemon then runs
                // to the end, so its RSS and fd slopes span nearly the whole soak.
                let i = usize::from(self.round > 1);
                let h = &self.lab.hosts[i];
                let pid = h
                    .daemon_pid()
                    .ok_or(format!("{} has no daemon.pid", h.name))?;
                e.target = format!("{}'s daemon (pid {pid})", h.name);
                e.replaced = Some((h.dir.join("run/daemon.pid"), pid));
                self.lab.kill_daemon(i)?;
                *down = Some(i);
            }
            Kind::BridgeKill => {
                let i = self.rng.usize(..2);
                let h = &self.lab.hosts[i];
                let pid = h
                    .bridge_pid()
                    .ok_or(format!("{}'s bridge does not run as a process", h.name))?;
                kill(Pid::from_raw(pid), Signal::SIGKILL)
                    .map_err(|err| format!("kill -9 {}'s bridge ({pid}): {err}", h.name))?;
                e.target = format!("{}'s bridge (pid {pid})", h.name);
                e.replaced = Some((h.dir.join("run/bridge.pid"), pid));
            }
            Kind::Reload => {
                let idx = self.lab.agents.names.iter().position(|n| *n == pick);
                let idx = idx.ok_or(format!("{pick} is not a stand-in agent"))?;
                self.generation += 1;
                self.lab.env.insert(idx, self.generation.to_string());
                self.lab.write_config()?;
                let host = self.place[&pick].0;
                self.ctl(host, &["reload"])?;
                e.target = format!(
                    "{} (SOAK_GENERATION={})",
                    self.describe(&pick),
                    self.generation
                );
                e.restart = vec![pick];
            }
            Kind::Partition => return Err("a partition is not injected here".into()),
            Kind::GroupRestart => {
                let (host, group) = self.place[&pick].clone();
                self.ctl(host, &["restart", &format!("{group}:*")])?;
                e.target = format!("{group} on {}", self.lab.hosts[host].name);
                e.restart = self
                    .place
                    .iter()
                    .filter(|(_, (h, g))| *h == host && *g == group)
                    .map(|(n, _)| n.clone())
                    .collect();
            }
        }
        Ok(e)
    }

    /// `a12 in h1g2 on h1`.
    fn describe(&self, agent: &str) -> String {
        match self.place.get(agent) {
            Some((h, g)) => format!("{agent} in {g} on {}", self.lab.hosts[*h].name),
            None => agent.to_string(),
        }
    }

    /// `supervisorctl -s SOCKET ARGS` for host `i`.
    fn ctl(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new(&self.lab.tools.ctl);
        c.arg("-s").arg(self.lab.hosts[i].socket()).args(args);
        output(c, None)
    }

    /// Every host's `restarts_total`, by agent, from its own `/metrics`.
    fn restarts_now(&self) -> Result<HashMap<String, u64>, String> {
        let mut all = HashMap::new();
        for h in &self.lab.hosts {
            let a = in_netns(&h.netns, || get(daemon_addr(), "/metrics", SUMMARY_TIMEOUT))?;
            if a.status != 200 {
                return Err(format!("GET /metrics of {}: HTTP {}", h.name, a.status));
            }
            all.extend(restarts_from_metrics(&a.text(), &h.name));
        }
        Ok(all)
    }

    /// `restarts_total` must show what the faults caused (within [`METRICS_LAG`]); a
    /// mismatch is reported and the expectation set to what the metrics say.
    fn check_restarts(&mut self, after: &Expect) {
        let t = Instant::now();
        let mut got = self.restarts_now();
        while got.as_ref().map_or(true, |g| *g != self.expected) && t.elapsed() < METRICS_LAG {
            std::thread::sleep(Duration::from_millis(250));
            got = self.restarts_now();
        }
        match got {
            Ok(g) if g == self.expected => {}
            Ok(g) => {
                let mut bad: Vec<String> = self
                    .names
                    .iter()
                    .filter(|n| g.get(*n) != self.expected.get(*n))
                    .map(|n| {
                        let show = |v: Option<&u64>| v.map_or("none".into(), u64::to_string);
                        format!(
                            "{n}: restarts_total {} where {} restarts happened",
                            show(g.get(n)),
                            show(self.expected.get(n))
                        )
                    })
                    .collect();
                bad.sort();
                self.r.restarts.push(format!(
                    "after {} ({}): {}",
                    after.kind.label(),
                    after.target,
                    bad.join(", ")
                ));
                self.expected = g;
            }
            Err(e) => self
                .r
                .restarts
                .push(format!("after {}: {e}", after.kind.label())),
        }
    }

    /// After an OOM fault, h1's summary must say the OOM agent's last exit was an OOM kill.
    fn check_oom_exit(&mut self) {
        let Ok(v) = &self.summary else { return };
        let last = v["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["groups"].as_array())
            .flatten()
            .filter_map(|g| g["agents"].as_array())
            .flatten()
            .find(|a| a["agent"] == OOMER_NAME)
            .map(|a| a["last_exit"].clone());
        if last != Some(Value::from("OOM-killed")) {
            self.r.outcome(Kind::Oom).failures.push(format!(
                "{OOMER_NAME}'s last exit in h1's summary is {last:?}, not \"OOM-killed\""
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_is_ok_only_with_every_agent_healthy() {
        let v = serde_json::json!({"status": "ok", "agents": 3, "agents_healthy": 3});
        assert_eq!(summary_ok(&v, 3), Ok(()));
        let e = summary_ok(&v, 4).expect_err("one missing");
        assert!(e.contains("3 of 3 agents healthy (of 4)"), "{e}");
        let v = serde_json::json!({"status": "degraded", "agents": 3, "agents_healthy": 2});
        assert!(summary_ok(&v, 3).is_err());
    }

    #[test]
    fn the_oom_group_is_a_64_mib_group_on_h1() {
        let y = oom_group(Path::new("/usr/bin/python3"));
        assert!(y.contains("  h1oom:\n    host: h1\n"), "{y}");
        assert!(y.contains("resources: {memory: 64M}"), "{y}");
        assert!(
            y.contains("command: [\"/usr/bin/python3\", oomer.py]"),
            "{y}"
        );
    }
}
