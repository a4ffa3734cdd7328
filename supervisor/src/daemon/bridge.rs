//! The bridge task: brings the host's end of the WireGuard bridge up, keeps it configured
//! (a new plan from `reload` comes over its channel), supervises the `agent-bridge` process
//! (restarted when it dies) and every [`PROBE_EVERY`] reads the device and measures each
//! peer's round-trip time, publishing a [`BridgeStatus`] that `status`, `supervisorctl
//! bridge` and `/metrics` show. Every step runs on a blocking thread (see
//! [`crate::bridge`]); this task only waits.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_plan::BridgePlan;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::api::{BridgePeerStatus, BridgeStatus};
use crate::bridge::{self, ping, Device};

/// How often the device is read and the peers pinged.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one echo may take.
const ECHO_WAIT: Duration = Duration::from_secs(1);

/// The core's handle on the bridge task.
#[derive(Debug, Clone)]
pub struct BridgeHandle {
    pub status: watch::Receiver<Option<BridgeStatus>>,
    pub plans: mpsc::UnboundedSender<Option<BridgePlan>>,
}

/// Brings the bridge up before any group starts (so the first agents find their peers
/// routed), then starts the task. An error here (a key file others can read, a key that does
/// not match) stops the daemon; later errors are reported in the status and retried.
pub async fn start(
    host: String,
    plan: Option<BridgePlan>,
    run_dir: PathBuf,
    log: PathBuf,
    cancel: CancellationToken,
) -> Result<BridgeHandle, String> {
    let (status_tx, status) = watch::channel(None);
    let (plans, plans_rx) = mpsc::unbounded_channel();
    let mut device = None;
    if let Some(p) = &plan {
        let (h, p2, r, l) = (host.clone(), p.clone(), run_dir.clone(), log.clone());
        let up = tokio::task::spawn_blocking(move || up(&h, &p2, &r, &l))
            .await
            .map_err(|e| format!("bridge: {e}"))?;
        match up {
            Ok(d) => device = Some(d),
            Err(e @ bridge::BridgeError::Key(_))
            | Err(e @ bridge::BridgeError::KeyMismatch { .. }) => return Err(e.to_string()),
            Err(e) => {
                eprintln!("agent-supervisor: {e} (retried every {PROBE_EVERY:?})");
                let _ = status_tx.send(Some(down_status(p, &e.to_string())));
            }
        }
    }
    let task = Task {
        host,
        plan,
        device,
        run_dir,
        log,
        status: status_tx,
        seq: 0,
    };
    tokio::spawn(task.run(plans_rx, cancel));
    Ok(BridgeHandle { status, plans })
}

fn up(
    host: &str,
    plan: &BridgePlan,
    run_dir: &std::path::Path,
    log: &std::path::Path,
) -> Result<Device, bridge::BridgeError> {
    let key = bridge::read_key(host, plan)?;
    let device = bridge::bring_up(plan, run_dir, log)?;
    bridge::configure(plan, device, key)?;
    Ok(device)
}

struct Task {
    host: String,
    plan: Option<BridgePlan>,
    device: Option<Device>,
    run_dir: PathBuf,
    log: PathBuf,
    status: watch::Sender<Option<BridgeStatus>>,
    seq: u16,
}

fn down_status(p: &BridgePlan, error: &str) -> BridgeStatus {
    BridgeStatus {
        interface: p.interface.clone(),
        implementation: None,
        pid: None,
        address: format!("{}/{}", p.address, p.prefix),
        listen_port: p.listen_port,
        public_key: p.public_key.to_base64(),
        error: Some(error.to_string()),
        peers: p
            .peers
            .iter()
            .map(|peer| BridgePeerStatus {
                host: peer.host.clone(),
                public_key: peer.public_key.to_base64(),
                endpoint: Some(peer.endpoint.clone()),
                address: peer.overlay.to_string(),
                latest_handshake: None,
                handshake_age_seconds: None,
                rx_bytes: 0,
                tx_bytes: 0,
                rtt_ms: None,
                up: false,
            })
            .collect(),
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One probe: an echo to every peer (in parallel threads, so one silent peer does not delay
/// the others), then the device's counters.
fn probe(p: &BridgePlan, device: Device, seq: u16) -> Result<BridgeStatus, String> {
    let echoes: Vec<(Ipv4Addr, std::thread::JoinHandle<Option<Duration>>)> = p
        .peers
        .iter()
        .map(|peer| {
            let to = peer.overlay;
            (
                to,
                std::thread::spawn(move || ping::rtt(to, seq, ECHO_WAIT).ok().flatten()),
            )
        })
        .collect();
    let mut rtts = Vec::new();
    for (to, h) in echoes {
        rtts.push((to, h.join().ok().flatten()));
    }
    // Read after the echoes, so the counters include the handshake an echo may have caused.
    let stats = bridge::read(p, device).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    let mut s = down_status(p, "");
    s.error = None;
    s.implementation = Some(device.name().to_string());
    s.pid = match device {
        Device::Userspace { pid } => Some(pid),
        Device::Kernel => None,
    };
    for row in &mut s.peers {
        let Some(peer) = p.peers.iter().find(|x| x.host == row.host) else {
            continue;
        };
        if let Some(d) = stats.peers.iter().find(|x| x.public_key == peer.public_key) {
            row.endpoint = d.endpoint.map(|e| e.to_string()).or(row.endpoint.take());
            row.latest_handshake = d.last_handshake.map(unix);
            row.handshake_age_seconds = d
                .last_handshake
                .and_then(|t| now.duration_since(t).ok())
                .map(|a| a.as_secs_f64());
            row.rx_bytes = d.rx_bytes;
            row.tx_bytes = d.tx_bytes;
        }
        let rtt = rtts
            .iter()
            .find(|(to, _)| *to == peer.overlay)
            .and_then(|(_, r)| *r);
        row.rtt_ms = rtt.map(|d| d.as_secs_f64() * 1e3);
        row.up = rtt.is_some();
    }
    Ok(s)
}

impl Task {
    async fn run(
        mut self,
        mut plans: mpsc::UnboundedReceiver<Option<BridgePlan>>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                new = plans.recv() => match new {
                    None => return,
                    Some(new) => self.replan(new).await,
                },
                _ = tick.tick() => self.tick().await,
            }
        }
    }

    /// A reload's plan: the old end goes when the new one has none (or another interface),
    /// then the device is configured as the new plan says.
    async fn replan(&mut self, new: Option<BridgePlan>) {
        let old = std::mem::replace(&mut self.plan, new);
        if let Some(o) = old {
            if self.plan.as_ref().map(|p| &p.interface) != Some(&o.interface) {
                let run_dir = self.run_dir.clone();
                let _ =
                    tokio::task::spawn_blocking(move || bridge::tear_down(&o.interface, &run_dir))
                        .await;
                self.device = None;
                let _ = self.status.send(None);
            }
        }
        self.device = None;
        self.tick().await;
    }

    /// Brings the device up when it is not (or its process died), else probes it.
    async fn tick(&mut self) {
        let Some(p) = self.plan.clone() else { return };
        if let Some(Device::Userspace { pid }) = self.device {
            if !tokio::task::spawn_blocking(move || bridge::alive(pid))
                .await
                .unwrap_or(false)
            {
                eprintln!("agent-supervisor: bridge {}: agent-bridge (pid {pid}) is gone; starting it again", p.interface);
                self.device = None;
            }
        }
        if self.device.is_none() {
            let (h, p2, r, l) = (
                self.host.clone(),
                p.clone(),
                self.run_dir.clone(),
                self.log.clone(),
            );
            match tokio::task::spawn_blocking(move || up(&h, &p2, &r, &l)).await {
                Ok(Ok(d)) => self.device = Some(d),
                Ok(Err(e)) => {
                    let _ = self.status.send(Some(down_status(&p, &e.to_string())));
                    return;
                }
                Err(_) => return,
            }
        }
        let Some(device) = self.device else { return };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let p2 = p.clone();
        match tokio::task::spawn_blocking(move || probe(&p2, device, seq)).await {
            Ok(Ok(s)) => {
                let _ = self.status.send(Some(s));
            }
            Ok(Err(e)) => {
                // The device went away under us: brought up again on the next tick.
                self.device = None;
                let _ = self.status.send(Some(down_status(&p, &e)));
            }
            Err(_) => {}
        }
    }
}
