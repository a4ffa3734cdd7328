//! The hosts of the system as this daemon sees them: its own snapshot and, for every other
//! host, the last snapshot fetched from that host's daemon (over the bridge), with whether
//! it is current. [`Fleet`] polls the other hosts every [`POLL_EVERY`] with a bounded
//! timeout, so a host that is down shows as down within two polls and never makes an
//! endpoint wait; [`health_summary`] and [`status_page`] render the views.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::api::{AgentState, Health, Snapshot};

/// How often every other host is asked for its snapshot.
pub const POLL_EVERY: Duration = Duration::from_secs(5);
/// How long one ask may take.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// One host of the system, as this daemon last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub host: String,
    /// `primary` or `secondary`.
    pub role: String,
    /// Its daemon answered the latest ask (always, for this daemon's own host).
    pub up: bool,
    /// `snapshot` is the last one that came, not a current one.
    pub stale: bool,
    /// Unix time of the last snapshot.
    pub last_seen: Option<f64>,
    /// Why the latest ask failed.
    pub error: Option<String>,
    pub snapshot: Option<Snapshot>,
}

pub use agent_plan::FleetPeer as Peer;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The other hosts' views, kept current by a polling task; the hosts to ask can change
/// (`reload`).
#[derive(Debug, Clone)]
pub struct Fleet {
    pub views: watch::Receiver<Vec<HostView>>,
    peers: std::sync::Arc<watch::Sender<Vec<Peer>>>,
}

fn initial(p: &Peer) -> HostView {
    HostView {
        host: p.host.clone(),
        role: p.role.clone(),
        up: false,
        stale: true,
        last_seen: None,
        error: Some("not asked yet".into()),
        snapshot: None,
    }
}

impl Fleet {
    /// A fleet with no other host (nothing is polled).
    pub fn none() -> Fleet {
        Fleet {
            views: watch::channel(Vec::new()).1,
            peers: std::sync::Arc::new(watch::channel(Vec::new()).0),
        }
    }

    /// Starts polling `peers` with `fetch` (one snapshot from a URL, or why not) until
    /// `cancel`.
    pub fn start<F, Fut>(peers: Vec<Peer>, fetch: F, cancel: CancellationToken) -> Fleet
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Snapshot, String>> + Send + 'static,
    {
        let (tx, views) = watch::channel(peers.iter().map(initial).collect());
        let (peers_tx, peers_rx) = watch::channel(peers);
        tokio::spawn(poll(peers_rx, fetch, tx, cancel));
        Fleet {
            views,
            peers: std::sync::Arc::new(peers_tx),
        }
    }

    /// Asks these hosts from the next poll on (a host that stays keeps its view).
    pub fn set_peers(&self, peers: Vec<Peer>) {
        let _ = self.peers.send(peers);
    }
}

async fn poll<F, Fut>(
    peers: watch::Receiver<Vec<Peer>>,
    fetch: F,
    tx: watch::Sender<Vec<HostView>>,
    cancel: CancellationToken,
) where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Snapshot, String>> + Send + 'static,
{
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let peers = peers.borrow().clone();
        if peers.is_empty() && tx.borrow().is_empty() {
            continue;
        }
        // Every host at once, each bounded by the timeout.
        let asks: Vec<_> = peers
            .iter()
            .map(|p| {
                let fut = p
                    .base
                    .as_ref()
                    .map(|base| fetch(format!("{base}/v1/snapshot")))
                    .map_err(Clone::clone);
                tokio::spawn(async move {
                    match fut {
                        Err(why) => Err(why),
                        Ok(fut) => match tokio::time::timeout(POLL_TIMEOUT, fut).await {
                            Ok(r) => r,
                            Err(_) => Err(format!("no answer within {POLL_TIMEOUT:?}")),
                        },
                    }
                })
            })
            .collect();
        let mut results = Vec::new();
        for a in asks {
            results.push(a.await.unwrap_or_else(|e| Err(e.to_string())));
        }
        tx.send_modify(|views| {
            let mut next = Vec::new();
            for (p, result) in peers.iter().zip(results) {
                let mut view = views
                    .iter()
                    .find(|v| v.host == p.host)
                    .cloned()
                    .unwrap_or_else(|| initial(p));
                view.role = p.role.clone();
                match result {
                    Ok(s) => {
                        view.up = true;
                        view.stale = false;
                        view.last_seen = Some(unix_now());
                        view.error = None;
                        view.snapshot = Some(s);
                    }
                    Err(e) => {
                        view.up = false;
                        view.stale = true;
                        view.error = Some(e);
                    }
                }
                next.push(view);
            }
            *views = next;
        });
    }
}

/// The body of `GET /health_summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSummary {
    /// `ok` (every host up, every agent RUNNING and none unhealthy), `degraded` (some agent
    /// is not), `down` (a host does not answer).
    pub status: String,
    pub hosts_up: usize,
    pub hosts: Vec<HostSummary>,
    pub agents: usize,
    pub agents_healthy: usize,
}

/// One host in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    pub host: String,
    pub role: String,
    pub up: bool,
    pub stale: bool,
    pub last_seen: Option<f64>,
    pub error: Option<String>,
    pub agents: usize,
    pub agents_healthy: usize,
    pub groups: Vec<GroupSummary>,
    pub bridge: Option<super::api::BridgeStatus>,
}

/// One group in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: String,
    pub address: Option<String>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub agents: Vec<AgentSummary>,
}

/// One agent in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub agent: String,
    pub state: AgentState,
    pub health: Health,
    pub restarts: u64,
    pub last_exit: Option<String>,
    pub memory_bytes: Option<u64>,
    /// Log output its shim could not write this run (a full log disk), and why.
    #[serde(default)]
    pub log_dropped_bytes: u64,
    #[serde(default)]
    pub log_error: Option<String>,
}

/// Healthy: RUNNING and not failing its health check.
fn healthy(state: AgentState, health: Health) -> bool {
    state == AgentState::Running && health != Health::Unhealthy
}

/// The summary of `views` and the HTTP status it is served with: 200 when `ok`, else 503.
pub fn health_summary(views: &[HostView]) -> (u16, HealthSummary) {
    let mut hosts = Vec::new();
    for v in views {
        let mut h = HostSummary {
            host: v.host.clone(),
            role: v.role.clone(),
            up: v.up,
            stale: v.stale,
            last_seen: v.last_seen,
            error: v.error.clone(),
            agents: 0,
            agents_healthy: 0,
            groups: Vec::new(),
            bridge: None,
        };
        if let Some(s) = &v.snapshot {
            h.bridge = s.bridge.as_deref().cloned();
            for g in &s.groups {
                h.groups.push(GroupSummary {
                    group: g.group.clone(),
                    address: g.address.clone(),
                    memory_usage_bytes: g.memory_usage_bytes,
                    memory_limit_bytes: g.memory_limit_bytes,
                    agents: Vec::new(),
                });
            }
            for a in &s.agents {
                h.agents += 1;
                // A stale snapshot proves nothing about now.
                if v.up && healthy(a.state, a.health) {
                    h.agents_healthy += 1;
                }
                let row = AgentSummary {
                    agent: a.agent.clone(),
                    state: a.state,
                    health: a.health,
                    restarts: a.restarts,
                    last_exit: a.last_exit.as_ref().map(ToString::to_string),
                    memory_bytes: a.memory_bytes,
                    log_dropped_bytes: a.log_dropped_bytes,
                    log_error: a.log_error.clone(),
                };
                match h.groups.iter_mut().find(|g| g.group == a.group) {
                    Some(g) => g.agents.push(row),
                    None => h.groups.push(GroupSummary {
                        group: a.group.clone(),
                        address: None,
                        memory_usage_bytes: None,
                        memory_limit_bytes: None,
                        agents: vec![row],
                    }),
                }
            }
        }
        hosts.push(h);
    }
    let hosts_up = hosts.iter().filter(|h| h.up).count();
    let agents = hosts.iter().map(|h| h.agents).sum();
    let agents_healthy = hosts.iter().map(|h| h.agents_healthy).sum();
    let status = if hosts_up < hosts.len() {
        "down"
    } else if agents_healthy < agents {
        "degraded"
    } else {
        "ok"
    };
    let code = if status == "ok" { 200 } else { 503 };
    (
        code,
        HealthSummary {
            status: status.to_string(),
            hosts_up,
            hosts,
            agents,
            agents_healthy,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::api::{AgentStatus, GroupStatus};

    fn agent(
        host: &str,
        group: &str,
        name: &str,
        state: AgentState,
        health: Health,
    ) -> AgentStatus {
        AgentStatus {
            host: host.into(),
            group: group.into(),
            agent: name.into(),
            state,
            health,
            health_detail: None,
            pid: Some(7),
            started_at: None,
            uptime_seconds: None,
            restarts: 2,
            oom_kills: 0,
            memory_bytes: Some(3 << 20),
            last_exit: None,
            last_exit_code: None,
            backoff_seconds: None,
            log_dropped_bytes: 0,
            log_error: None,
        }
    }

    fn view(host: &str, up: bool, agents: Vec<AgentStatus>) -> HostView {
        HostView {
            host: host.into(),
            role: "secondary".into(),
            up,
            stale: !up,
            last_seen: Some(1.0),
            error: (!up).then(|| "connection refused".to_string()),
            snapshot: Some(Snapshot {
                host: host.into(),
                version: "t".into(),
                daemon_pid: 1,
                daemon_started_at: 0.0,
                groups: vec![GroupStatus {
                    host: host.into(),
                    group: "web".into(),
                    init_pid: None,
                    memory_usage_bytes: Some(5 << 20),
                    memory_limit_bytes: Some(256 << 20),
                    cpu_seconds: None,
                    pids: None,
                    address: Some("10.88.1.5".into()),
                    network_rx_bytes: None,
                    network_tx_bytes: None,
                    gpus: Vec::new(),
                    gpu_absent: None,
                    image: None,
                    image_digest: None,
                }],
                agents,
                bridge: None,
                gpu: None,
                process: None,
                others: Vec::new(),
            }),
        }
    }

    #[test]
    fn the_summary_says_ok_degraded_or_down_with_its_status_code() {
        let ok = view(
            "h1",
            true,
            vec![agent(
                "h1",
                "web",
                "a",
                AgentState::Running,
                Health::Healthy,
            )],
        );
        let (code, s) = health_summary(std::slice::from_ref(&ok));
        assert_eq!(
            (code, s.status.as_str(), s.agents, s.agents_healthy),
            (200, "ok", 1, 1)
        );
        assert_eq!(s.hosts[0].groups[0].agents[0].agent, "a");
        let sick = view(
            "h2",
            true,
            vec![agent(
                "h2",
                "web",
                "b",
                AgentState::Running,
                Health::Unhealthy,
            )],
        );
        let (code, s) = health_summary(&[ok.clone(), sick]);
        assert_eq!(
            (code, s.status.as_str(), s.agents_healthy),
            (503, "degraded", 1)
        );
        // A host that does not answer: down, and its last-known agents are not counted healthy.
        let gone = view(
            "h2",
            false,
            vec![agent(
                "h2",
                "web",
                "b",
                AgentState::Running,
                Health::Healthy,
            )],
        );
        let (code, s) = health_summary(&[ok, gone]);
        assert_eq!(
            (
                code,
                s.status.as_str(),
                s.hosts_up,
                s.agents,
                s.agents_healthy
            ),
            (503, "down", 1, 2, 1)
        );
        assert!(s.hosts[1].stale);
    }

    #[test]
    fn the_page_names_every_host_and_agent_and_escapes() {
        let v = view(
            "h1",
            false,
            vec![agent(
                "h1",
                "web",
                "<script>",
                AgentState::Fatal,
                Health::Unknown,
            )],
        );
        let (_, s) = health_summary(&[v]);
        let page = crate::daemon::page::status_page(&s);
        assert!(page.contains("id=\"host-h1\""), "{page}");
        assert!(
            page.contains("&lt;script&gt;") && !page.contains("<script>"),
            "{page}"
        );
        assert!(
            page.contains("DOWN") && page.contains("connection refused"),
            "{page}"
        );
        assert!(page.contains("5.0 MiB of 256.0 MiB"), "{page}");
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(!page.contains("logs dropped"), "{page}");
    }

    #[test]
    fn the_page_says_when_an_agent_lost_log_output() {
        let mut a = agent("h1", "web", "chatty", AgentState::Running, Health::Healthy);
        a.log_dropped_bytes = 3 << 20;
        a.log_error = Some("cannot write log file /l/chatty.stdout.log: No space left".into());
        let (_, s) = health_summary(&[view("h1", true, vec![a])]);
        assert_eq!(s.hosts[0].groups[0].agents[0].log_dropped_bytes, 3 << 20);
        let page = crate::daemon::page::status_page(&s);
        assert!(
            page.contains(
                "logs dropped: 3.0 MiB (cannot write log file /l/chatty.stdout.log: No space left)"
            ),
            "{page}"
        );
    }
}
