//! `agent-supervisor validate FILE [--host H] [--json]` (the seed's `validate-deployment.sh`):
//! from any machine, asks every host's daemon for its state and checks, per host: the daemon
//! answers; every agent of the system file that runs there is RUNNING and not unhealthy
//! (healthy where it has a check); the bridge's peers answer through the tunnel with a fresh
//! handshake (at most [`HANDSHAKE_FRESH`] old) and a round trip under [`RTT_LIMIT`]; the
//! primary's `/metrics` has series of every host; each group's image has the digest built on
//! this machine (skipped where this machine has no such image). A table (or `--json`) and
//! exit status 1 when anything fails.
//!
//! Where a host is asked: this machine's own host on its `http_listen`; the others as this
//! host's daemon asks them (through the bridge, else on a reachable `http_listen`); from a
//! machine outside the system, on each host's `http_listen` at its address.

use std::time::Duration;

use agent_config::Loaded;
use serde::Serialize;

use crate::daemon::api::Snapshot;
use crate::daemon::observe::{fetch, fetch_snapshot};

/// A WireGuard session is rekeyed every 2 minutes: an older handshake means a dead peer.
pub const HANDSHAKE_FRESH: f64 = 180.0;
/// The seed's cross-host limit.
pub const RTT_LIMIT_MS: f64 = 100.0;
/// How long one host may take to answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub host: String,
    pub check: String,
    pub result: Outcome,
    pub detail: String,
}

/// Everything `validate` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub rows: Vec<Row>,
}

fn row(host: &str, check: &str, result: Outcome, detail: impl Into<String>) -> Row {
    Row {
        host: host.to_string(),
        check: check.to_string(),
        result,
        detail: detail.into(),
    }
}

/// Where each host's daemon is asked from this machine (`me`: its host, if it is one).
fn bases(l: &Loaded, me: Option<&str>) -> Vec<(String, Result<String, String>)> {
    let mut out = Vec::new();
    let own_listen = |h: &str| {
        let listen = agent_config::defaults::daemon(&l.system, h).http_listen;
        match listen.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_unspecified() => Ok(format!("http://127.0.0.1:{}", a.port())),
            Ok(a) => Ok(format!("http://{a}")),
            Err(_) => Err(format!("daemon.http_listen {listen:?} is not ADDRESS:PORT")),
        }
    };
    let peers = match me {
        Some(me) => agent_plan::Plan::resolve_partial(l, me, None)
            .map(|(p, _)| p.fleet)
            .unwrap_or_default(),
        // Outside the system: every host as seen from no bridge.
        None => agent_plan::fleet::peers(l, "", None),
    };
    for host in l.system.hosts.keys() {
        let base = if Some(host.as_str()) == me {
            own_listen(host)
        } else {
            peers
                .iter()
                .find(|p| &p.host == host)
                .map(|p| p.base.clone())
                .unwrap_or_else(|| Err(format!("no way to reach host {host} from here")))
        };
        out.push((host.clone(), base));
    }
    out
}

async fn ask(base: &Result<String, String>) -> Result<Snapshot, String> {
    let base = base.clone()?;
    let url = format!("{base}/v1/snapshot");
    match tokio::time::timeout(ASK_TIMEOUT, fetch_snapshot(url.clone())).await {
        Ok(r) => r,
        Err(_) => Err(format!("{url}: no answer within {ASK_TIMEOUT:?}")),
    }
}

/// The checks of one host whose daemon answered.
fn host_rows(l: &Loaded, host: &str, s: &Snapshot, out: &mut Vec<Row>) {
    // Agents: the system file's, as the daemon reports them.
    let mut bad = Vec::new();
    let mut total = 0;
    for (gname, g) in l.system.groups.iter().filter(|(_, g)| g.host == host) {
        for a in &g.agents {
            total += 1;
            let Some(st) = s.agents.iter().find(|x| x.agent == a.name) else {
                bad.push(format!(
                    "{} (group {gname}): not known to the daemon",
                    a.name
                ));
                continue;
            };
            let state = format!("{:?}", st.state).to_uppercase();
            let health = format!("{:?}", st.health).to_lowercase();
            let healthy = match (a.health.is_some(), health.as_str()) {
                (true, h) => h == "healthy",
                (false, h) => h != "unhealthy",
            };
            if state != "RUNNING" || !healthy {
                let why = st
                    .health_detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                bad.push(format!("{} {state} ({health}){why}", a.name));
            }
        }
    }
    out.push(if bad.is_empty() {
        row(
            host,
            "agents",
            Outcome::Pass,
            format!("{total}/{total} RUNNING and healthy"),
        )
    } else {
        row(
            host,
            "agents",
            Outcome::Fail,
            format!("{}/{total} not: {}", bad.len(), bad.join("; ")),
        )
    });
    // The bridge.
    if let Some(b) = &s.bridge {
        let mut bad = Vec::new();
        let mut seen = Vec::new();
        let mut worst: Option<f64> = None;
        for p in &b.peers {
            let age = p.handshake_age_seconds;
            if !p.up || age.is_none_or(|a| a > HANDSHAKE_FRESH) {
                bad.push(format!(
                    "{}: {} (handshake {})",
                    p.host,
                    if p.up {
                        "up"
                    } else {
                        "no answer through the tunnel"
                    },
                    age.map_or("never".to_string(), |a| format!("{a:.0} s ago"))
                ));
            } else {
                seen.push(format!(
                    "{} handshake {:.0} s ago",
                    p.host,
                    age.unwrap_or(0.0)
                ));
            }
            if let Some(r) = p.rtt_ms {
                worst = Some(worst.map_or(r, |w: f64| w.max(r)));
            }
        }
        if let Some(e) = &b.error {
            bad.push(e.clone());
        }
        out.push(if bad.is_empty() {
            row(host, "bridge", Outcome::Pass, seen.join(", "))
        } else {
            row(host, "bridge", Outcome::Fail, bad.join("; "))
        });
        out.push(match worst {
            Some(w) if w < RTT_LIMIT_MS => row(
                host,
                "rtt",
                Outcome::Pass,
                format!("worst {w:.2} ms (limit {RTT_LIMIT_MS} ms)"),
            ),
            Some(w) => row(
                host,
                "rtt",
                Outcome::Fail,
                format!("worst {w:.2} ms, over {RTT_LIMIT_MS} ms"),
            ),
            None => row(host, "rtt", Outcome::Fail, "no peer answered an echo"),
        });
    }
    // Images: the digests this machine built.
    for g in s.groups.iter().filter(|g| g.image.is_some()) {
        let (Some(name), Some(digest)) = (&g.image, &g.image_digest) else {
            continue;
        };
        let local = agent_plan::Plan::store(l, host)
            .ok()
            .flatten()
            .and_then(|st| st.inspect(name).ok());
        out.push(match local {
            None => row(
                host,
                &format!("image {name}"),
                Outcome::Skip,
                "not built on this machine",
            ),
            Some(i) if i.digest.to_string() == *digest => row(
                host,
                &format!("image {name}"),
                Outcome::Pass,
                digest.clone(),
            ),
            Some(i) => row(
                host,
                &format!("image {name}"),
                Outcome::Fail,
                format!("group {} runs {digest}, built here: {}", g.group, i.digest),
            ),
        });
    }
}

/// Runs every check (on a current-thread runtime of its own).
pub fn run(l: &Loaded, from: Option<&str>) -> Result<Report, String> {
    let me = crate::check::local_host(l, from).ok();
    if let (Some(h), None) = (from, me.as_ref()) {
        return Err(format!("host {h:?} is not in {}", l.file.display()));
    }
    let bases = bases(l, me.as_deref());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mut rows = Vec::new();
    rt.block_on(async {
        let asks: Vec<_> = bases
            .iter()
            .map(|(_, b)| {
                let b = b.clone();
                tokio::spawn(async move { ask(&b).await })
            })
            .collect();
        for ((host, base), a) in bases.iter().zip(asks) {
            let snap = a.await.unwrap_or_else(|e| Err(e.to_string()));
            match snap {
                Ok(s) => {
                    rows.push(row(
                        host,
                        "daemon",
                        Outcome::Pass,
                        format!("up: pid {}, version {}", s.daemon_pid, s.version),
                    ));
                    host_rows(l, host, &s, &mut rows);
                }
                Err(e) => rows.push(row(
                    host,
                    "daemon",
                    Outcome::Fail,
                    format!("host {host}: the daemon does not answer: {e}"),
                )),
            }
            if agent_plan::fleet::role_name(l, host) == "primary" {
                if let Ok(b) = base {
                    rows.push(metrics_row(l, host, &format!("{b}/metrics")).await);
                }
            }
        }
    });
    let ok = rows.iter().all(|r| r.result != Outcome::Fail);
    Ok(Report { ok, rows })
}

/// The primary's `/metrics` has series of every host.
async fn metrics_row(l: &Loaded, primary: &str, url: &str) -> Row {
    let got = tokio::time::timeout(ASK_TIMEOUT, fetch(url)).await;
    let text = match got {
        Ok(Ok((200, body))) => String::from_utf8_lossy(&body).to_string(),
        Ok(Ok((code, _))) => {
            return row(
                primary,
                "metrics",
                Outcome::Fail,
                format!("{url}: status {code}"),
            )
        }
        Ok(Err(e)) => return row(primary, "metrics", Outcome::Fail, e),
        Err(_) => {
            return row(
                primary,
                "metrics",
                Outcome::Fail,
                format!("{url}: no answer within {ASK_TIMEOUT:?}"),
            )
        }
    };
    let missing: Vec<&str> = l
        .system
        .hosts
        .keys()
        .filter(|h| !text.contains(&format!("agent_supervisor_build_info{{host=\"{h}\"")))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        row(
            primary,
            "metrics",
            Outcome::Pass,
            format!("every host's series on {url}"),
        )
    } else {
        row(
            primary,
            "metrics",
            Outcome::Fail,
            format!("{url} has no series of host {}", missing.join(", ")),
        )
    }
}

/// The table.
pub fn table(r: &Report) -> String {
    let w =
        |f: &dyn Fn(&Row) -> usize, min: usize| r.rows.iter().map(f).max().unwrap_or(0).max(min);
    let (wh, wc) = (w(&|x| x.host.len(), 4), w(&|x| x.check.len(), 5));
    let mut out = format!("| {:wh$} | {:wc$} | result | detail\n", "host", "check");
    for x in &r.rows {
        let res = match x.result {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        };
        out.push_str(&format!(
            "| {:wh$} | {:wc$} | {res:6} | {}\n",
            x.host, x.check, x.detail
        ));
    }
    out.push_str(if r.ok {
        "validate: every check passed\n"
    } else {
        "validate: FAILED\n"
    });
    out
}
