//! The control API: HTTP over the daemon's Unix socket, mapped to [`api::Request`]s for the
//! core (the mapping is documented in `docs/api.md`).
//!
//! Access: the socket is mode 0600 (owner: the daemon's user, root), or 0660 with group
//! `control_group` when the system file sets one. On top of the file mode every connection's
//! `SO_PEERCRED` is checked: root, the daemon's own user, and members of the control group
//! (primary group, or a supplementary group of the connecting process) are served; anyone
//! else gets `403`.
//!
//! Logs are served from the files the agent shim writes (`api::log_file`, rotated to `.1`,
//! `.2`, ...), not through the core. An agent is known to `/v1/logs/{agent}` when one of its
//! log files exists, or else when the core's status knows it (an agent that never wrote a
//! line); otherwise `404`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::api::{self, ApiError, ControlMsg, Request, Response};
use super::http::{self, Handler, Peer, ServerLimits};

/// Errors of [`serve_control`]; each names the socket or group it is about.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control_group {0:?} does not exist on this machine")]
    UnknownGroup(String),
    #[error("cannot look up control_group {name:?}: {source}")]
    GroupLookup { name: String, source: nix::Error },
    #[error("cannot create the control socket's directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("another daemon already answers on the control socket {path}")]
    InUse { path: PathBuf },
    #[error("cannot bind the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set the owner or mode of the control socket {path}: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Serves the control API on `socket` until `cancel`, then removes the socket.
pub async fn serve_control(
    socket: &Path,
    control_group: Option<String>,
    core: mpsc::Sender<ControlMsg>,
    log_dir: PathBuf,
    cancel: CancellationToken,
) -> Result<(), ControlError> {
    let limits = ServerLimits::default();
    serve_control_with(socket, control_group, core, log_dir, limits, cancel).await
}

/// [`serve_control`] with explicit limits (tests use short timeouts).
pub async fn serve_control_with(
    socket: &Path,
    control_group: Option<String>,
    core: mpsc::Sender<ControlMsg>,
    log_dir: PathBuf,
    limits: ServerLimits,
    cancel: CancellationToken,
) -> Result<(), ControlError> {
    let group = match control_group {
        Some(name) => match nix::unistd::Group::from_name(&name) {
            Ok(Some(g)) => Some((name, g.gid.as_raw())),
            Ok(None) => return Err(ControlError::UnknownGroup(name)),
            Err(source) => return Err(ControlError::GroupLookup { name, source }),
        },
        None => None,
    };
    let (listener, ino) = bind(socket, group.as_ref().map(|(_, gid)| *gid))?;
    let handler = Arc::new(Control {
        core,
        log_dir,
        group,
        own_uid: nix::unistd::geteuid().as_raw(),
        cancel: cancel.clone(),
    });
    http::serve_unix(listener, limits, handler, cancel).await;
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.ino() == ino) {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}

/// Binds `socket` with its final mode before it appears under its name: bound under a
/// temporary name, chmod/chown'ed, then renamed over a stale socket. Returns the inode.
fn bind(socket: &Path, gid: Option<u32>) -> Result<(UnixListener, u64), ControlError> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(|source| ControlError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    }
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(ControlError::NotASocket {
                path: socket.to_path_buf(),
            });
        }
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(ControlError::InUse {
                path: socket.to_path_buf(),
            });
        }
    }
    // Short: socket paths are limited to 107 bytes.
    let tmp = dir.join(format!(".{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let bind_err = |source| ControlError::Bind {
        path: socket.to_path_buf(),
        source,
    };
    let std_listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(bind_err)?;
    let finish = || -> Result<u64, ControlError> {
        let perm_err = |source| ControlError::Permissions {
            path: socket.to_path_buf(),
            source,
        };
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid)).map_err(perm_err)?;
        }
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(perm_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        std::fs::rename(&tmp, socket).map_err(bind_err)?;
        Ok(std::fs::symlink_metadata(socket).map_err(bind_err)?.ino())
    };
    let ino = finish().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    let listener = UnixListener::from_std(std_listener).map_err(bind_err)?;
    Ok((listener, ino))
}

struct Control {
    core: mpsc::Sender<ControlMsg>,
    log_dir: PathBuf,
    /// The control group's name and gid.
    group: Option<(String, u32)>,
    own_uid: u32,
    cancel: CancellationToken,
}

/// Body of start/stop/restart.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsBody {
    targets: Vec<String>,
}

/// Body of signal.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    signal: String,
    targets: Vec<String>,
}

/// Body of reload and shutdown: nothing, or `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

impl Handler for Control {
    async fn handle(&self, req: http::Request, peer: Peer) -> http::Response {
        if let Err(message) = self.authorize(&peer) {
            return http::error(403, message);
        }
        match self.route(&req).await {
            Ok(resp) => resp,
            Err(e) => http::error(e.status, e.message),
        }
    }
}

impl Control {
    /// Root, the daemon's user, or a member of the control group.
    fn authorize(&self, peer: &Peer) -> Result<(), String> {
        let Some(uid) = peer.uid else {
            return Err("permission denied: cannot read the peer's credentials".to_string());
        };
        if uid == 0 || uid == self.own_uid {
            return Ok(());
        }
        match &self.group {
            Some((name, gid)) => {
                if peer.gid == Some(*gid) || peer.pid.is_some_and(|p| in_group(p, *gid)) {
                    return Ok(());
                }
                Err(format!(
                    "permission denied: uid {uid} is neither root nor in the control group \
                     {name:?}; run supervisorctl as root or join the group {name:?}"
                ))
            }
            None => Err(format!(
                "permission denied: uid {uid} is not root; run supervisorctl as root (or set \
                 daemon.control_group in the system file and join that group)"
            )),
        }
    }

    /// The routes of the control API.
    async fn route(&self, req: &http::Request) -> Result<http::Response, ApiError> {
        let path = req.path.as_str();
        let request = match (req.method.as_str(), path) {
            ("GET", "/v1/version") => Request::Version,
            ("GET", "/v1/status") => Request::Status {
                targets: query_targets(req)?,
            },
            ("POST", "/v1/start" | "/v1/stop" | "/v1/restart") => {
                let body: TargetsBody = parse_body(req)?;
                let targets = checked_targets(body.targets, path)?;
                match path {
                    "/v1/start" => Request::Start { targets },
                    "/v1/stop" => Request::Stop { targets },
                    _ => Request::Restart { targets },
                }
            }
            ("POST", "/v1/signal") => {
                let body: SignalBody = parse_body(req)?;
                let targets = checked_targets(body.targets, path)?;
                let signal = body.signal;
                if signal.is_empty()
                    || signal.len() > 16
                    || !signal
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+')
                {
                    return Err(ApiError::bad_request(format!(
                        "{path}: malformed signal {signal:?} (expected a name like HUP or a number)"
                    )));
                }
                Request::Signal { signal, targets }
            }
            ("POST", "/v1/reload" | "/v1/shutdown") => {
                if !req.body.iter().all(u8::is_ascii_whitespace) {
                    let _: EmptyBody = parse_body(req)?;
                }
                if path == "/v1/reload" {
                    Request::Reload
                } else {
                    Request::Shutdown
                }
            }
            ("GET", _) if path.starts_with("/v1/logs/") => {
                let agent = path.strip_prefix("/v1/logs/").unwrap_or_default();
                return self.logs(agent, req).await;
            }
            _ => return Ok(http::unrouted(&req.method, path, allowed(path))),
        };
        Ok(http::json(200, &self.ask(request).await?))
    }

    /// Sends `request` to the core and waits for its answer.
    async fn ask(&self, request: Request) -> Result<Response, ApiError> {
        let unavailable = || ApiError {
            status: 503,
            message: "the daemon's core is not answering".into(),
        };
        let (reply, rx) = oneshot::channel();
        self.core
            .send(ControlMsg { request, reply })
            .await
            .map_err(|_| unavailable())?;
        tokio::select! {
            r = rx => r.map_err(|_| unavailable())?,
            _ = self.cancel.cancelled() => Err(ApiError {
                status: 503,
                message: "the daemon is shutting down".into(),
            }),
        }
    }

    /// `GET /v1/logs/{agent}?stream=stdout|stderr&lines=N&follow=1`.
    async fn logs(&self, agent: &str, req: &http::Request) -> Result<http::Response, ApiError> {
        if agent.is_empty()
            || agent.len() > 63
            || !agent
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ApiError::bad_request(format!(
                "/v1/logs: malformed agent name {agent:?}"
            )));
        }
        let stderr = match req.query("stream") {
            None | Some("stdout") => false,
            Some("stderr") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "/v1/logs/{agent}: stream must be stdout or stderr, not {other:?}"
                )))
            }
        };
        let lines = match req.query("lines") {
            None => DEFAULT_LINES,
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_LINES)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "/v1/logs/{agent}: lines must be a number 0-{MAX_LINES}, not {n:?}"
                    ))
                })?,
        };
        let follow = match req.query("follow") {
            None | Some("0" | "false" | "no" | "") => false,
            Some("1" | "true" | "yes") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "/v1/logs/{agent}: follow must be 1 or 0, not {other:?}"
                )))
            }
        };
        let path = api::log_file(&self.log_dir, agent, stderr);
        let any_file = [false, true].iter().any(|&e| {
            let p = api::log_file(&self.log_dir, agent, e);
            p.exists() || rotated(&p, 1).exists()
        });
        if !any_file {
            let known = match self
                .ask(Request::Status {
                    targets: vec![agent.to_string()],
                })
                .await
            {
                Ok(Response::Status { snapshot }) => {
                    snapshot.agents.iter().any(|a| a.agent == agent)
                }
                Ok(_) => false,
                Err(e) if e.status == 404 || e.status == 400 => false,
                Err(e) => return Err(e),
            };
            if !known {
                return Err(ApiError::not_found(format!(
                    "no agent named {agent:?} (the daemon does not know it and there is no log \
                     file {})",
                    path.display()
                )));
            }
        }
        if !follow {
            let tail = tokio::task::spawn_blocking(move || {
                let mut f = File::open(&path).ok();
                tail_all(&path, f.as_mut(), lines).map(|(bytes, _)| bytes)
            })
            .await
            .map_err(|e| ApiError::internal(format!("/v1/logs/{agent}: {e}")))?
            .map_err(|e| ApiError::internal(format!("/v1/logs/{agent}: {e}")))?;
            return Ok(http::bytes(200, "text/plain; charset=utf-8", tail));
        }
        let (tx, rx) = mpsc::channel(16);
        let cancel = self.cancel.clone();
        // A follower lives as long as its client: a thread of its own, not one of the
        // blocking pool's few (see `BLOCKING_THREADS`).
        std::thread::Builder::new()
            .name("logs-follow".to_string())
            .spawn(move || follow_file(&path, lines, &tx, &cancel))
            .map_err(|e| {
                ApiError::internal(format!(
                    "/v1/logs/{agent}: cannot start a follower thread: {e}"
                ))
            })?;
        Ok(http::stream(200, "text/plain; charset=utf-8", rx))
    }
}

const DEFAULT_LINES: usize = 100;
const MAX_LINES: usize = 100_000;
/// At most this much of old log is sent at once.
const MAX_TAIL_BYTES: u64 = 32 * 1024 * 1024;
const BLOCK: u64 = 64 * 1024;
/// Rotated files looked at, at most.
const MAX_ROTATED: u32 = 100;
const POLL: Duration = Duration::from_millis(200);

/// The method a path of the control API takes (`Allow` of a `405`); `None`: no such route.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/v1/version" | "/v1/status" => Some("GET"),
        "/v1/start" | "/v1/stop" | "/v1/restart" | "/v1/signal" | "/v1/reload" | "/v1/shutdown" => {
            Some("POST")
        }
        _ if path.starts_with("/v1/logs/") => Some("GET"),
        _ => None,
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(req: &http::Request) -> Result<T, ApiError> {
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("{}: malformed JSON body: {e}", req.path)))
}

/// `targets=a,b&targets=g:*` (none: every agent).
fn query_targets(req: &http::Request) -> Result<Vec<String>, ApiError> {
    let targets: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k == "targets")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    for t in &targets {
        check_target(t, &req.path)?;
    }
    Ok(targets)
}

/// The targets of an action: at least one, each well-formed.
fn checked_targets(targets: Vec<String>, route: &str) -> Result<Vec<String>, ApiError> {
    if targets.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{route}: no targets; name agents, GROUP:* or all"
        )));
    }
    for t in &targets {
        check_target(t, route)?;
    }
    Ok(targets)
}

/// `NAME`, `GROUP:*`, `GROUP:NAME` or `all`, in name characters.
fn check_target(t: &str, route: &str) -> Result<(), ApiError> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let ok = match t.split_once(':') {
        Some((g, a)) => name_ok(g) && (a == "*" || name_ok(a)),
        None => name_ok(t),
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{route}: malformed target {:?} (expected NAME, GROUP:* or all)",
            t.chars().take(80).collect::<String>()
        )))
    }
}

/// Whether process `pid` has `gid` among its supplementary groups.
fn in_group(pid: i32, gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

use crate::launch::logfile::rotated;

/// The last `n` lines of `f` (whose length is `len`), and how many lines that is. `full` is
/// false when [`MAX_TAIL_BYTES`] stopped the search early.
fn tail_file(f: &mut File, len: u64, n: usize) -> std::io::Result<(Vec<u8>, usize, bool)> {
    if n == 0 || len == 0 {
        return Ok((Vec::new(), 0, true));
    }
    let mut pos = len;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut seen = 0usize;
    let mut start = None;
    while pos > 0 && len - pos < MAX_TAIL_BYTES {
        let size = BLOCK.min(pos);
        pos -= size;
        let mut block = vec![0u8; usize::try_from(size).unwrap_or(0)];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut block)?;
        let mut end = block.len();
        if blocks.is_empty() && block.last() == Some(&b'\n') {
            end -= 1;
        }
        for i in (0..end).rev() {
            if block.get(i) == Some(&b'\n') {
                seen += 1;
                if seen == n {
                    start = Some(i + 1);
                    break;
                }
            }
        }
        blocks.push(block);
        if start.is_some() {
            break;
        }
    }
    let full = start.is_some() || pos == 0;
    let count = if start.is_some() { n } else { seen + 1 };
    let mut out = Vec::new();
    let last = blocks.len().saturating_sub(1);
    for (k, b) in blocks.iter().enumerate().rev() {
        let from = if k == last { start.unwrap_or(0) } else { 0 };
        out.extend_from_slice(b.get(from..).unwrap_or_default());
    }
    Ok((out, count, full))
}

/// The last `n` lines of the log at `path` (open as `current`) and of its rotated files
/// before it; returns them with the current file's length.
fn tail_all(path: &Path, current: Option<&mut File>, n: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut need = n;
    let mut current_len = 0;
    if let Some(f) = current {
        current_len = f.metadata()?.len();
        let (bytes, count, full) = tail_file(f, current_len, need)?;
        need = if full { need.saturating_sub(count) } else { 0 };
        parts.push(bytes);
    }
    let mut i = 1;
    while need > 0 && i <= MAX_ROTATED {
        let Ok(mut f) = File::open(rotated(path, i)) else {
            break;
        };
        let len = f.metadata()?.len();
        let (mut bytes, count, full) = tail_file(&mut f, len, need)?;
        if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        need = if full { need.saturating_sub(count) } else { 0 };
        parts.push(bytes);
        i += 1;
    }
    let mut out = Vec::new();
    for p in parts.iter().rev() {
        out.extend_from_slice(p);
    }
    Ok((out, current_len))
}

/// Sends the last `lines` lines, then whatever is appended to `path`, following rotation
/// (a new inode: the rest of the old file, then the new one from its start) and truncation,
/// until the client goes away (`tx` closed) or `cancel`. Runs on a blocking thread.
fn follow_file(path: &Path, lines: usize, tx: &mpsc::Sender<Vec<u8>>, cancel: &CancellationToken) {
    let mut current = File::open(path).ok();
    let Ok((tail, len)) = tail_all(path, current.as_mut(), lines) else {
        return;
    };
    if !tail.is_empty() && tx.blocking_send(tail).is_err() {
        return;
    }
    let mut offset = len;
    let mut ino = current
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map(|m| m.ino());
    loop {
        std::thread::sleep(POLL);
        if tx.is_closed() || cancel.is_cancelled() {
            return;
        }
        if let Some(f) = current.as_mut() {
            // Whatever the old file got, whether or not it was renamed meanwhile.
            if !send_from(f, &mut offset, tx) {
                return;
            }
        }
        match std::fs::metadata(path) {
            Ok(meta) if Some(meta.ino()) != ino => {
                // Rotated (or created): the old file is drained above; start the new one.
                current = File::open(path).ok();
                ino = current
                    .as_ref()
                    .and_then(|f| f.metadata().ok())
                    .map(|m| m.ino());
                offset = 0;
                if let Some(f) = current.as_mut() {
                    if !send_from(f, &mut offset, tx) {
                        return;
                    }
                }
            }
            Ok(meta) if meta.len() < offset => {
                // Truncated in place.
                offset = 0;
                if let Some(f) = current.as_mut() {
                    if !send_from(f, &mut offset, tx) {
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sends `f` from `offset` to its end; false when the client is gone.
fn send_from(f: &mut File, offset: &mut u64, tx: &mpsc::Sender<Vec<u8>>) -> bool {
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return true;
    }
    let mut buf = vec![0u8; BLOCK as usize];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                *offset += n as u64;
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return false;
                }
            }
        }
    }
}
