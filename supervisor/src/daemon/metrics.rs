//! Prometheus metrics: the exposition of one host or of every host (the listener is `observe.rs`).
//!
//! [`render`] builds a fresh `prometheus_client::Registry` from one [`Snapshot`] on every
//! scrape. Series of agents and groups that no longer exist (removed by `reload`) therefore
//! disappear by construction. That is why this uses `prometheus-client` rather than
//! `metrics` + `metrics-exporter-prometheus`: their global recorder keeps every series it has
//! ever seen until it is explicitly removed, so a removed agent would be reported forever
//! with its last values.
//!
//! `prometheus-client` writes OpenMetrics text; `/metrics` serves it to clients that ask for it
//! (`Accept: application/openmetrics-text`, as Prometheus does) and otherwise the classic
//! Prometheus text format 0.0.4 ([`render`]; `curl`, `promtool check metrics`), which differs in
//! the counters' `# HELP`/`# TYPE` names (`x_total`, not `x`) and has no `# UNIT`/`# EOF`.
//! Samples are sorted within each family, so the output is stable from scrape to scrape.
//!
//! Series (labels `host`, `group`, `agent` per agent; `host`, `group` per group):
//!
//! | name | type | meaning |
//! |------|------|---------|
//! | `agent_supervisor_agent_state{state}` | gauge | 1 for the agent's state, 0 for the six others |
//! | `agent_supervisor_agent_up` | gauge | 1 when RUNNING |
//! | `agent_supervisor_agent_healthy` | gauge | 1 healthy, 0 unhealthy; absent while unknown |
//! | `agent_supervisor_agent_restarts_total` | counter | restarts by the supervisor |
//! | `container_oom_events_total` | counter | OOM kills (cAdvisor's name) |
//! | `agent_supervisor_agent_last_exit_code` | gauge | exit code of the last exit that had one |
//! | `agent_supervisor_agent_start_time_seconds` | gauge | Unix time the current run started |
//! | `agent_supervisor_log_dropped_bytes_total` | counter | bytes of the agent's output its shim could not write to the log files (this run) |
//! | `container_memory_usage_bytes` | gauge | memory of the agent's cgroup, and of the group's (no `agent` label) |
//! | `container_spec_memory_limit_bytes` | gauge | the group's `memory.max`; absent when unlimited |
//! | `container_cpu_usage_seconds_total` | counter | CPU time of the group |
//! | `agent_supervisor_group_pids` | gauge | processes in the group (cAdvisor has no exact equivalent) |
//! | `container_network_receive_bytes_total` | counter | bytes a private group received through its veth (cAdvisor's name) |
//! | `container_network_transmit_bytes_total` | counter | bytes a private group sent through its veth |
//! | `agent_supervisor_group_gpus` | gauge | GPUs given to the group (only groups with `gpus:`) |
//! | `agent_supervisor_group_gpu_absent` | gauge | 1 when an `optional: true` group runs without its GPUs |
//! | `agent_supervisor_build_info{version}` | gauge | always 1 |
//! | `agent_supervisor_daemon_start_time_seconds` | gauge | Unix time the daemon started |
//! | `process_resident_memory_bytes`, `process_threads`, `process_open_fds`, `process_cpu_seconds_total` | | the daemon's own process (labels `host`) |
//! | `agent_supervisor_daemon_anon_memory_bytes` | gauge | the daemon's resident anonymous memory (`RssAnon`: heap and stacks, not code) |
//! | `agent_supervisor_daemon_heap_in_use_bytes`, `_heap_free_bytes` | gauge | glibc's heap: bytes held from malloc, bytes free in the arena |
//! | `agent_supervisor_bridge_up{peer}`, `_handshake_age_seconds`, `_rtt_seconds`, `_receive_bytes_total`, `_transmit_bytes_total` | | the WireGuard bridge, per peer |
//! | `agent_supervisor_host_up`, `agent_supervisor_host_last_seen_seconds` | gauge | every host (the primary's fleet exposition) |
//! | `agent_supervisor_gpu_nvml_available` | gauge | 1 when NVML is there; then `DCGM_FI_DEV_{GPU_UTIL,FB_USED,FB_FREE,GPU_TEMP,POWER_USAGE}{gpu,UUID,modelName}` and `agent_supervisor_group_gpu_memory_bytes` |
//!
//! `agent_supervisor_agent_healthy` is absent rather than -1 when the health is unknown (no
//! health check, or none finished yet): -1 would poison `min()`/`avg()` and alert rules such as
//! `agent_supervisor_agent_healthy < 1`; `absent()` and the state series cover the unknown case.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use super::api::{AgentState, Health, Snapshot};
use super::metrics_host::{register_bridge, register_gpus, register_process};

pub(super) type Labels = Vec<(String, String)>;
pub(super) type IntGauge = Family<Labels, Gauge<i64, AtomicI64>>;
pub(super) type FloatGauge = Family<Labels, Gauge<f64, AtomicU64>>;
pub(super) type IntCounter = Family<Labels, Counter<u64, AtomicU64>>;
pub(super) type FloatCounter = Family<Labels, Counter<f64, AtomicU64>>;

const STATES: [AgentState; 7] = [
    AgentState::Stopped,
    AgentState::Starting,
    AgentState::Running,
    AgentState::Backoff,
    AgentState::Stopping,
    AgentState::Exited,
    AgentState::Fatal,
];

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of [`render_openmetrics`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The snapshot in the Prometheus text format (0.0.4).
pub fn render(snapshot: &Snapshot) -> String {
    to_classic(&render_openmetrics(snapshot))
}

/// The snapshot in the OpenMetrics text format.
pub fn render_openmetrics(snapshot: &Snapshot) -> String {
    render_fleet_openmetrics(&[snapshot], &[])
}

/// Every host's series in one exposition (the primary's `/metrics`): the snapshots of the
/// hosts that answered (a `host` label on every series), and per host of `hosts`
/// `agent_supervisor_host_up` and `agent_supervisor_host_last_seen_seconds`.
pub fn render_fleet(snapshots: &[&Snapshot], hosts: &[super::fleet::HostView]) -> String {
    to_classic(&render_fleet_openmetrics(snapshots, hosts))
}

/// [`render_fleet`] in the OpenMetrics text format.
pub fn render_fleet_openmetrics(
    snapshots: &[&Snapshot],
    hosts: &[super::fleet::HostView],
) -> String {
    let mut registry = Registry::default();
    let state = IntGauge::default();
    let up = IntGauge::default();
    let healthy = IntGauge::default();
    let restarts = IntCounter::default();
    let ooms = IntCounter::default();
    let last_exit = IntGauge::default();
    let start_time = FloatGauge::default();
    let log_dropped = IntCounter::default();
    let memory = IntGauge::default();
    let memory_limit = IntGauge::default();
    let cpu = FloatCounter::default();
    let pids = IntGauge::default();
    let net_rx = IntCounter::default();
    let net_tx = IntCounter::default();
    let group_gpus = IntGauge::default();
    let gpu_absent = IntGauge::default();
    let build = IntGauge::default();
    let daemon_start = FloatGauge::default();

    let host_up = IntGauge::default();
    let last_seen = FloatGauge::default();
    for h in hosts {
        let l = labels(&[("host", &h.host)]);
        host_up.get_or_create(&l).set(i64::from(h.up));
        if let Some(t) = h.last_seen {
            last_seen.get_or_create(&l).set(t);
        }
    }
    let mut bridges = Vec::new();
    let mut gpus = Vec::new();
    let mut processes = Vec::new();
    for snapshot in snapshots {
        let host = snapshot.host.as_str();
        build
            .get_or_create(&labels(&[("host", host), ("version", &snapshot.version)]))
            .set(1);
        daemon_start
            .get_or_create(&labels(&[("host", host)]))
            .set(snapshot.daemon_started_at);
        if let Some(b) = &snapshot.bridge {
            bridges.push((host, b.as_ref()));
        }
        if let Some(g) = &snapshot.gpu {
            gpus.push((host, g.as_ref()));
        }
        if let Some(p) = &snapshot.process {
            processes.push((host, p));
        }

        for a in &snapshot.agents {
            let l = labels(&[("host", &a.host), ("group", &a.group), ("agent", &a.agent)]);
            for s in STATES {
                let mut with_state = l.clone();
                with_state.push(("state".to_string(), s.as_str().to_string()));
                state
                    .get_or_create(&with_state)
                    .set(i64::from(s == a.state));
            }
            up.get_or_create(&l)
                .set(i64::from(a.state == AgentState::Running));
            match a.health {
                Health::Healthy => {
                    healthy.get_or_create(&l).set(1);
                }
                Health::Unhealthy => {
                    healthy.get_or_create(&l).set(0);
                }
                Health::Unknown => {}
            }
            restarts.get_or_create(&l).inc_by(a.restarts);
            ooms.get_or_create(&l).inc_by(a.oom_kills);
            if let Some(code) = a.last_exit_code {
                last_exit.get_or_create(&l).set(i64::from(code));
            }
            if let Some(t) = a.started_at {
                start_time.get_or_create(&l).set(t);
            }
            if let Some(m) = a.memory_bytes {
                memory.get_or_create(&l).set(saturating_i64(m));
            }
            log_dropped.get_or_create(&l).inc_by(a.log_dropped_bytes);
        }
        for g in &snapshot.groups {
            let l = labels(&[("host", &g.host), ("group", &g.group)]);
            if let Some(m) = g.memory_usage_bytes {
                memory.get_or_create(&l).set(saturating_i64(m));
            }
            if let Some(m) = g.memory_limit_bytes {
                memory_limit.get_or_create(&l).set(saturating_i64(m));
            }
            if let Some(c) = g.cpu_seconds {
                cpu.get_or_create(&l).inc_by(c.max(0.0));
            }
            if let Some(p) = g.pids {
                pids.get_or_create(&l).set(saturating_i64(p));
            }
            if let Some(b) = g.network_rx_bytes {
                net_rx.get_or_create(&l).inc_by(b);
            }
            if let Some(b) = g.network_tx_bytes {
                net_tx.get_or_create(&l).inc_by(b);
            }
            if !g.gpus.is_empty() || g.gpu_absent.is_some() {
                group_gpus.get_or_create(&l).set(g.gpus.len() as i64);
                gpu_absent
                    .get_or_create(&l)
                    .set(i64::from(g.gpu_absent.is_some()));
            }
        }
    }

    registry.register(
        "agent_supervisor_agent_state",
        "Agent state: 1 for the current state, 0 for the others",
        state,
    );
    registry.register(
        "agent_supervisor_agent_up",
        "1 when the agent is RUNNING",
        up,
    );
    registry.register(
        "agent_supervisor_agent_healthy",
        "1 when the agent's health check passes, 0 when it fails; absent while unknown",
        healthy,
    );
    registry.register(
        "agent_supervisor_agent_restarts",
        "Restarts of the agent by the supervisor",
        restarts,
    );
    registry.register(
        "container_oom_events",
        "Times the kernel's OOM killer killed the agent",
        ooms,
    );
    registry.register(
        "agent_supervisor_agent_last_exit_code",
        "Exit code of the agent's last exit that had one",
        last_exit,
    );
    registry.register_with_unit(
        "agent_supervisor_agent_start_time",
        "Unix time the agent's current run started",
        Unit::Seconds,
        start_time,
    );
    registry.register_with_unit(
        "agent_supervisor_log_dropped",
        "Bytes of the agent's stdout and stderr its shim could not write to the log files (full disk, slow writer) since the agent started",
        Unit::Bytes,
        log_dropped,
    );
    registry.register_with_unit(
        "container_memory_usage",
        "Memory in use by the agent's (with an agent label) or the group's cgroup",
        Unit::Bytes,
        memory,
    );
    registry.register_with_unit(
        "container_spec_memory_limit",
        "Memory limit of the group (memory.max); absent when unlimited",
        Unit::Bytes,
        memory_limit,
    );
    registry.register_with_unit(
        "container_cpu_usage",
        "CPU time used by the group",
        Unit::Seconds,
        cpu,
    );
    registry.register(
        "agent_supervisor_group_pids",
        "Processes (tasks) in the group's cgroup",
        pids,
    );
    registry.register_with_unit(
        "container_network_receive",
        "Bytes the group received through its veth pair (private groups)",
        Unit::Bytes,
        net_rx,
    );
    registry.register_with_unit(
        "container_network_transmit",
        "Bytes the group sent through its veth pair (private groups)",
        Unit::Bytes,
        net_tx,
    );
    registry.register(
        "agent_supervisor_group_gpus",
        "GPUs given to the group (groups that ask for GPUs)",
        group_gpus,
    );
    registry.register(
        "agent_supervisor_group_gpu_absent",
        "1 when an optional-GPU group runs without the GPUs it asked for",
        gpu_absent,
    );
    registry.register(
        "agent_supervisor_build_info",
        "The daemon's version; always 1",
        build,
    );
    registry.register_with_unit(
        "agent_supervisor_daemon_start_time",
        "Unix time the daemon started",
        Unit::Seconds,
        daemon_start,
    );

    if !hosts.is_empty() {
        registry.register(
            "agent_supervisor_host_up",
            "1 when the host's daemon answered the latest ask (this host: always)",
            host_up,
        );
        registry.register_with_unit(
            "agent_supervisor_host_last_seen",
            "Unix time of the host's latest snapshot",
            Unit::Seconds,
            last_seen,
        );
    }
    if !bridges.is_empty() {
        register_bridge(&mut registry, &bridges);
    }
    if !gpus.is_empty() {
        register_gpus(&mut registry, &gpus);
    }
    if !processes.is_empty() {
        register_process(&mut registry, &processes);
    }

    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        // Writing to a String cannot fail; keep the scrape valid if it ever does.
        return format!("# encoding failed: {e}\n# EOF\n");
    }
    sort_samples(&out, true)
}

/// OpenMetrics text (as `prometheus-client` writes it) to the classic Prometheus text format.
fn to_classic(om: &str) -> String {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match header {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(kind);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    sort_samples(&out, false)
}

/// Sorts the sample lines of each family (they come from a hash map); keeps `# EOF` last.
fn sort_samples(text: &str, eof: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut samples: Vec<&str> = Vec::new();
    let flush = |out: &mut String, samples: &mut Vec<&str>| {
        samples.sort_unstable();
        for s in samples.drain(..) {
            out.push_str(s);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut out, &mut samples);
            if line == "# EOF" {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        } else if !line.is_empty() {
            samples.push(line);
        }
    }
    flush(&mut out, &mut samples);
    if eof {
        out.push_str("# EOF\n");
    }
    out
}

pub(super) fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HealthReport {
    pub host: String,
    /// Every agent is RUNNING and none is unhealthy.
    pub ok: bool,
    pub agents: usize,
    /// Agents per state (only states that occur).
    pub states: BTreeMap<String, usize>,
    /// Agents that are not RUNNING, or are unhealthy.
    pub not_healthy: Vec<NotHealthy>,
}

/// An agent listed in [`HealthReport::not_healthy`].
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NotHealthy {
    pub group: String,
    pub agent: String,
    pub state: AgentState,
    pub health: Health,
    /// The health check's last failure, or why the agent last stopped.
    pub detail: Option<String>,
}

/// The `/health` report of a snapshot.
pub fn health_report(snapshot: &Snapshot) -> HealthReport {
    let mut states = BTreeMap::new();
    let mut not_healthy = Vec::new();
    for a in &snapshot.agents {
        *states.entry(a.state.as_str().to_string()).or_insert(0) += 1;
        if a.state != AgentState::Running || a.health == Health::Unhealthy {
            let detail = match a.health {
                Health::Unhealthy => a.health_detail.clone(),
                _ => a.last_exit.as_ref().map(|e| e.to_string()),
            };
            not_healthy.push(NotHealthy {
                group: a.group.clone(),
                agent: a.agent.clone(),
                state: a.state,
                health: a.health,
                detail,
            });
        }
    }
    HealthReport {
        host: snapshot.host.clone(),
        ok: not_healthy.is_empty(),
        agents: snapshot.agents.len(),
        states,
        not_healthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::api::AgentStatus;

    fn snapshot(agents: &[&str]) -> Snapshot {
        Snapshot {
            host: "h1".into(),
            version: "1.2.3".into(),
            daemon_pid: 1,
            daemon_started_at: 10.0,
            agents: agents
                .iter()
                .map(|a| AgentStatus {
                    host: "h1".into(),
                    group: "g".into(),
                    agent: a.to_string(),
                    state: AgentState::Running,
                    health: Health::Unknown,
                    health_detail: None,
                    pid: Some(7),
                    started_at: Some(11.0),
                    uptime_seconds: Some(1.0),
                    restarts: 2,
                    oom_kills: 0,
                    memory_bytes: None,
                    last_exit: None,
                    last_exit_code: None,
                    backoff_seconds: None,
                    log_dropped_bytes: 0,
                    log_error: None,
                })
                .collect(),
            groups: vec![],
            bridge: None,
            gpu: None,
            process: None,
            others: Vec::new(),
        }
    }

    #[test]
    fn the_fleet_exposition_has_every_host_and_whether_it_answered() {
        let mut other = snapshot(&["c"]);
        other.host = "h2".into();
        for a in &mut other.agents {
            a.host = "h2".into();
        }
        let view = |host: &str, up: bool| super::super::fleet::HostView {
            host: host.into(),
            role: "secondary".into(),
            up,
            stale: !up,
            last_seen: Some(5.0),
            error: None,
            snapshot: None,
        };
        let text = render_fleet(
            &[&snapshot(&["a"]), &other],
            &[view("h1", true), view("h2", false)],
        );
        assert!(
            text.contains("agent_supervisor_agent_up{host=\"h1\",group=\"g\",agent=\"a\"} 1"),
            "{text}"
        );
        assert!(text.contains("host=\"h2\""), "{text}");
        assert!(
            text.contains("agent_supervisor_host_up{host=\"h2\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("agent_supervisor_host_last_seen_seconds{host=\"h1\"} 5"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE agent_supervisor_agent_up ").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn the_daemons_process_is_in_the_standard_process_series() {
        use crate::daemon::memory::ProcessStats;
        let mut s = snapshot(&["a"]);
        assert!(!render(&s).contains("process_"));
        s.process = Some(ProcessStats {
            resident_bytes: 13 << 20,
            anon_bytes: 4 << 20,
            heap_in_use_bytes: Some(1_500_000),
            heap_free_bytes: None,
            threads: 9,
            open_fds: 97,
            cpu_seconds: 2.5,
        });
        let text = render(&s);
        for line in [
            "process_resident_memory_bytes{host=\"h1\"} 13631488",
            "agent_supervisor_daemon_anon_memory_bytes{host=\"h1\"} 4194304",
            "process_threads{host=\"h1\"} 9",
            "process_open_fds{host=\"h1\"} 97",
            "process_cpu_seconds_total{host=\"h1\"} 2.5",
            "agent_supervisor_daemon_heap_in_use_bytes{host=\"h1\"} 1500000",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Unknown off glibc: absent, not 0.
        assert!(
            !text.contains("agent_supervisor_daemon_heap_free_bytes{"),
            "{text}"
        );
    }

    #[test]
    fn gpu_series_use_dcgm_names_and_a_missing_nvml_is_said() {
        use crate::gpu_stats::{GpuDevice, GpuReport};
        let mut s = snapshot(&["a"]);
        s.gpu = Some(Box::new(GpuReport {
            nvml: false,
            error: Some("NVML is not available".into()),
            ..GpuReport::default()
        }));
        let text = render(&s);
        assert!(
            text.contains("agent_supervisor_gpu_nvml_available{host=\"h1\"} 0"),
            "{text}"
        );
        assert!(!text.contains("DCGM_FI_DEV_GPU_UTIL{"), "{text}");
        s.gpu = Some(Box::new(GpuReport {
            nvml: true,
            error: None,
            devices: vec![GpuDevice {
                index: 0,
                uuid: "GPU-1".into(),
                name: "NVIDIA H100".into(),
                utilization_percent: Some(37),
                memory_used_bytes: Some(2 << 30),
                memory_free_bytes: Some(78 << 30),
                temperature_celsius: Some(41),
                power_watts: Some(123.5),
            }],
            groups: vec![("g".into(), 3 << 20)],
        }));
        let text = render(&s);
        let l = "host=\"h1\",gpu=\"0\",UUID=\"GPU-1\",modelName=\"NVIDIA H100\"";
        for want in [
            format!("DCGM_FI_DEV_GPU_UTIL{{{l}}} 37"),
            format!("DCGM_FI_DEV_FB_USED{{{l}}} 2048"),
            format!("DCGM_FI_DEV_FB_FREE{{{l}}} 79872"),
            format!("DCGM_FI_DEV_GPU_TEMP{{{l}}} 41"),
            format!("DCGM_FI_DEV_POWER_USAGE{{{l}}} 123.5"),
            "agent_supervisor_group_gpu_memory_bytes{host=\"h1\",group=\"g\"} 3145728".to_string(),
            "agent_supervisor_gpu_nvml_available{host=\"h1\"} 1".to_string(),
        ] {
            assert!(text.contains(&want), "{want} in\n{text}");
        }
    }

    #[test]
    fn formats_and_removed_agents() {
        let om = render_openmetrics(&snapshot(&["b", "a"]));
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(
            om.contains("# TYPE agent_supervisor_agent_restarts counter\n"),
            "{om}"
        );
        let classic = render(&snapshot(&["b", "a"]));
        assert!(
            !classic.contains("# EOF") && !classic.contains("# UNIT"),
            "{classic}"
        );
        assert!(classic.contains("# TYPE agent_supervisor_agent_restarts_total counter\n"));
        let a = classic.find("agent=\"a\"").expect("a");
        assert!(
            a < classic.find("agent=\"b\"").expect("b"),
            "sorted: {classic}"
        );
        assert_eq!(classic, render(&snapshot(&["b", "a"])), "stable");
        // Every agent has its log drop counter, 0 until something is lost.
        assert!(
            classic.contains("# TYPE agent_supervisor_log_dropped_bytes_total counter\n")
                && classic.contains(
                    "agent_supervisor_log_dropped_bytes_total{host=\"h1\",group=\"g\",agent=\"a\"} 0\n"
                ),
            "{classic}"
        );
        let mut lossy = snapshot(&["a"]);
        lossy.agents[0].log_dropped_bytes = 12_345;
        assert!(render(&lossy).contains(
            "agent_supervisor_log_dropped_bytes_total{host=\"h1\",group=\"g\",agent=\"a\"} 12345\n"
        ));
        // A fresh registry per scrape: a removed agent has no series left.
        assert!(!render(&snapshot(&["a"])).contains("agent=\"b\""));
    }
}
