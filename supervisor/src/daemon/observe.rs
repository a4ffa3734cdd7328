//! The observability listener: `/metrics`, `/health`, `/health_summary`, the status page at
//! `/`, and `/v1/snapshot` (this host's own state, which the other hosts' daemons ask for).
//! It serves `daemon.http_listen` and, on a host with a bridge, the host's overlay address
//! (where only the other hosts, through the tunnel, reach it). On the primary, `/metrics` is
//! every host's exposition; every host's `/health_summary` and `/` show every host.
//!
//! Nothing here waits on another host: the other hosts' views come from the fleet's last
//! poll ([`super::fleet`]), so an unreachable host never makes an endpoint hang.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::api::{ControlMsg, Request, Response, Snapshot};
use super::fleet::{self, HostView};
use super::http::{self, Handler, Peer, ServerLimits};
use super::metrics::{health_report, render, render_fleet, render_openmetrics, CONTENT_TYPE};
use super::metrics::{render_fleet_openmetrics, OPENMETRICS_CONTENT_TYPE};

/// Errors of [`serve_http`].
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr} for /metrics and /health: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Who this daemon is among the hosts.
#[derive(Debug, Clone)]
pub struct Identity {
    pub host: String,
    pub role: String,
    /// Every host of the system file, in its order.
    pub order: Vec<String>,
}

impl Identity {
    /// A lone host (tests, hosts without a bridge).
    pub fn alone(host: &str) -> Identity {
        Identity {
            host: host.to_string(),
            role: "primary".to_string(),
            order: vec![host.to_string()],
        }
    }
}

/// The listener's state: the core's channel and who this daemon is.
pub struct Observability {
    core: mpsc::Sender<ControlMsg>,
    me: Identity,
}

impl Observability {
    pub fn new(core: mpsc::Sender<ControlMsg>, me: Identity) -> Arc<Observability> {
        Arc::new(Observability { core, me })
    }
}

/// Serves `GET /metrics` and `GET /health` (and the rest) on `listen` until `cancel`.
pub async fn serve_http(
    listen: SocketAddr,
    core: mpsc::Sender<ControlMsg>,
    cancel: CancellationToken,
) -> Result<(), MetricsError> {
    serve_http_with(listen, core, ServerLimits::default(), cancel).await
}

/// [`serve_http`] with explicit limits (tests use short timeouts), as a lone host.
pub async fn serve_http_with(
    listen: SocketAddr,
    core: mpsc::Sender<ControlMsg>,
    limits: ServerLimits,
    cancel: CancellationToken,
) -> Result<(), MetricsError> {
    let me = Identity::alone("");
    let listener = bind(listen)?;
    serve(listener, Observability::new(core, me), limits, cancel).await;
    Ok(())
}

/// Connections the kernel queues for the listener until it accepts them (capped by
/// `net.core.somaxconn`). `TcpListener::bind`'s 128 is too few for a burst of clients: the
/// kernel drops the SYNs over it, and those clients retry after a second.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds the HTTP listener on `listen` (with [`LISTEN_BACKLOG`]), before the control
/// socket appears: whoever sees the socket finds the listener there too.
pub fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, MetricsError> {
    let bind = |source| MetricsError::Bind {
        addr: listen,
        source,
    };
    let socket = match listen {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(bind)?;
    socket.set_reuseaddr(true).map_err(bind)?;
    socket.bind(listen).map_err(bind)?;
    socket.listen(LISTEN_BACKLOG).map_err(bind)
}

/// Serves `obs` on a listener from [`bind`] until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    obs: Arc<Observability>,
    limits: ServerLimits,
    cancel: CancellationToken,
) {
    http::serve_tcp(listener, limits, obs, cancel).await;
}

/// Serves `obs` on the host's overlay address `addr` (bound before the tunnel's address is
/// there: `IP_FREEBIND`), answering only clients whose address is in the overlay `net`: a
/// connection from elsewhere cannot complete, as its answers are routed into the tunnel.
pub async fn serve_overlay(
    addr: SocketAddr,
    net: (Ipv4Addr, u8),
    obs: Arc<Observability>,
    cancel: CancellationToken,
) -> Result<(), MetricsError> {
    let bind = |source| MetricsError::Bind { addr, source };
    let socket = tokio::net::TcpSocket::new_v4().map_err(bind)?;
    socket.set_reuseaddr(true).map_err(bind)?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpFreebind, &true)
        .map_err(|e| bind(e.into()))?;
    socket.bind(addr).map_err(bind)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(bind)?;
    let guarded = Arc::new(OverlayOnly { obs, net });
    http::serve_tcp(listener, ServerLimits::default(), guarded, cancel).await;
    Ok(())
}

struct OverlayOnly {
    obs: Arc<Observability>,
    net: (Ipv4Addr, u8),
}

fn in_net(ip: Ipv4Addr, (base, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}

impl Handler for OverlayOnly {
    async fn handle(&self, req: http::Request, peer: Peer) -> http::Response {
        match peer.addr {
            Some(SocketAddr::V4(a)) if in_net(*a.ip(), self.net) => {
                self.obs.handle(req, peer).await
            }
            other => http::error(
                403,
                format!(
                    "the overlay listener answers the bridge's hosts only, not {}",
                    other.map_or("an unknown peer".to_string(), |a| a.to_string())
                ),
            ),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This host's own view beside the others', in the system file's order.
pub fn all_views(me: &Identity, own: &Snapshot) -> Vec<HostView> {
    let mut mine = own.clone();
    let others = std::mem::take(&mut mine.others);
    let mut views = vec![HostView {
        host: me.host.clone(),
        role: me.role.clone(),
        up: true,
        stale: false,
        last_seen: Some(unix_now()),
        error: None,
        snapshot: Some(mine),
    }];
    views.extend(others);
    views.sort_by_key(|v| {
        me.order
            .iter()
            .position(|h| *h == v.host)
            .unwrap_or(usize::MAX)
    });
    views
}

impl Observability {
    async fn snapshot(&self) -> Result<Snapshot, http::Response> {
        let (reply, rx) = oneshot::channel();
        let msg = ControlMsg {
            request: Request::Status { targets: vec![] },
            reply,
        };
        let unavailable = || http::error(503, "the daemon's core is not answering");
        self.core.send(msg).await.map_err(|_| unavailable())?;
        match rx.await {
            Ok(Ok(Response::Status { snapshot })) => Ok(snapshot),
            Ok(Ok(other)) => Err(http::error(
                500,
                format!("the core answered a status request with {other:?}"),
            )),
            Ok(Err(e)) => Err(http::error(e.status, e.message)),
            Err(_) => Err(unavailable()),
        }
    }

    /// `GET /metrics`: on the primary every host that answers (and `host_up` of each), else
    /// this host's own series; OpenMetrics when the client asks for it.
    async fn metrics(&self, req: &http::Request) -> Result<http::Response, http::Response> {
        let snapshot = self.snapshot().await?;
        let openmetrics = req
            .header("accept")
            .is_some_and(|a| a.contains("application/openmetrics-text"));
        let text = if self.me.role == "primary" && !snapshot.others.is_empty() {
            let views = all_views(&self.me, &snapshot);
            let live: Vec<&Snapshot> = views
                .iter()
                .filter(|v| v.up)
                .filter_map(|v| v.snapshot.as_ref())
                .collect();
            if openmetrics {
                render_fleet_openmetrics(&live, &views)
            } else {
                render_fleet(&live, &views)
            }
        } else if openmetrics {
            render_openmetrics(&snapshot)
        } else {
            render(&snapshot)
        };
        let content_type = if openmetrics {
            OPENMETRICS_CONTENT_TYPE
        } else {
            CONTENT_TYPE
        };
        Ok(http::bytes(200, content_type, text))
    }

    /// `GET /health`: `200` when every agent of this host is RUNNING and healthy, else `503`.
    async fn health(&self) -> Result<http::Response, http::Response> {
        let report = health_report(&self.snapshot().await?);
        Ok(http::json(if report.ok { 200 } else { 503 }, &report))
    }

    /// `GET /health_summary`: every host; `200` when all is well, else `503`.
    async fn summary(&self) -> Result<http::Response, http::Response> {
        let views = all_views(&self.me, &self.snapshot().await?);
        let (code, s) = fleet::health_summary(&views);
        Ok(http::json(code, &s))
    }

    /// `GET /`: the status page.
    async fn page(&self) -> Result<http::Response, http::Response> {
        let views = all_views(&self.me, &self.snapshot().await?);
        let (_, s) = fleet::health_summary(&views);
        Ok(http::bytes(
            200,
            "text/html; charset=utf-8",
            super::page::status_page(&s),
        ))
    }

    /// `GET /v1/snapshot`: this host's own state (what the other hosts' daemons poll).
    async fn own(&self) -> Result<http::Response, http::Response> {
        let mut s = self.snapshot().await?;
        s.others.clear();
        Ok(http::json(200, &s))
    }
}

/// The method a path of this listener takes (`Allow` of a `405`); `None`: no such route.
fn allowed(path: &str) -> Option<&'static str> {
    matches!(
        path,
        "/metrics" | "/health" | "/health_summary" | "/" | "/v1/snapshot"
    )
    .then_some("GET")
}

impl Handler for Observability {
    /// The routes of the observability listener.
    async fn handle(&self, req: http::Request, _peer: Peer) -> http::Response {
        let answer = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => self.metrics(&req).await,
            ("GET", "/health") => self.health().await,
            ("GET", "/health_summary") => self.summary().await,
            ("GET", "/") => self.page().await,
            ("GET", "/v1/snapshot") => self.own().await,
            (_, path) => Ok(http::unrouted(&req.method, path, allowed(path))),
        };
        answer.unwrap_or_else(|resp| resp)
    }
}

/// One snapshot from another host's daemon: `GET url` over a fresh connection (bounded by
/// the fleet's timeout).
pub async fn fetch_snapshot(url: String) -> Result<Snapshot, String> {
    let (status, body) = fetch(&url).await?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not a snapshot: {e}"))
}

/// `GET url` (plain HTTP/1.1, one connection): the status and the body. Unbounded in time:
/// callers put a timeout around it.
pub async fn fetch(url: &str) -> Result<(u16, Bytes), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{url}: no host"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(uri.path())
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_overlay_addresses_pass() {
        let net = (Ipv4Addr::new(10, 77, 0, 0), 24);
        assert!(in_net(Ipv4Addr::new(10, 77, 0, 2), net));
        assert!(!in_net(Ipv4Addr::new(10, 77, 1, 2), net));
        assert!(!in_net(Ipv4Addr::new(192, 168, 100, 17), net));
    }
}
