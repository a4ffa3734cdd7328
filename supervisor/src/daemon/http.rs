//! The HTTP server of the control socket and the metrics port, on hyper (HTTP/1.1).
//!
//! hyper parses and writes HTTP; this module adds what the daemon needs on top of it, the
//! same for both listeners:
//!
//! - every connection runs in its own task, one request per connection (`Connection: close`);
//! - the whole request (head and body) must arrive within [`ServerLimits::request_timeout`]
//!   (5 s), else `408`; a response (or one chunk of a streamed one) must be written within
//!   [`ServerLimits::write_timeout`], else the connection is dropped;
//! - the request head is at most 16 KiB and 100 headers (hyper answers `431`), the body at most
//!   64 KiB and only with `Content-Length` (`413`; `Transfer-Encoding` on a request is `411`);
//! - a head hyper cannot parse gets hyper's bare `400`; HTTP/1.1 without `Host` and bad
//!   percent-encoding are `400` with a message;
//! - errors of this module and of the routes are JSON: `{"error": "..."}`;
//! - at most [`ServerLimits::max_connections`] connections are served at once; more wait
//!   for a slot, in order of arrival, up to [`ServerLimits::max_waiting`] of them for at most
//!   [`ServerLimits::queue_timeout`] each (nothing is read from a waiting connection, and
//!   its request timeout starts once it has a slot); beyond that they get `503`;
//! - a streamed body (`logs -f`) is chunked (close-delimited for HTTP/1.0 clients) and ends
//!   when its channel closes, the client goes away or the server is cancelled.
//!
//! A listener is a [`Handler`]: one routing function, a `match (method, path)`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_io_timeout::TimeoutStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// Limits of the server; [`Default`] is what the daemon uses.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest request line plus headers (hyper's read buffer; at least 8 KiB).
    pub max_head_bytes: usize,
    /// Largest request body (`Content-Length`).
    pub max_body_bytes: usize,
    /// Time from accepting a connection to having the whole request.
    pub request_timeout: Duration,
    /// Time to write a full response, or one chunk of a streamed one.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections waiting for a slot when all are taken; more get `503` at once.
    pub max_waiting: usize,
    /// How long a connection waits for a slot before it gets `503`.
    pub queue_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_head_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_connections: 128,
            max_waiting: 512,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Credentials of a Unix socket peer (`SO_PEERCRED`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
    /// A TCP peer's address.
    pub addr: Option<std::net::SocketAddr>,
}

/// A request, read whole, with its target decoded.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The percent-decoded path, without the query.
    pub path: String,
    /// Percent-decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// The first query parameter named `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first header named `name`, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A response body: all at once, or streamed.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;
/// A response.
pub type Response = hyper::Response<Body>;

/// A response with `status` (500 when it is not a status), `content_type` and `body`.
fn respond(status: u16, content_type: &str, body: Body) -> Response {
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// `body` as one piece.
pub fn bytes(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
    respond(status, content_type, Full::new(body.into()).boxed_unsync())
}

/// `value` as JSON (a serialization failure becomes a 500).
pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            bytes(status, "application/json", body)
        }
        Err(e) => error(500, format!("cannot serialize the answer: {e}")),
    }
}

/// `{"error": message}`.
pub fn error(status: u16, message: impl Into<String>) -> Response {
    let text = serde_json::json!({ "error": message.into() }).to_string() + "\n";
    bytes(status, "application/json", text)
}

/// A streamed body: each message on `rx` is one chunk; the response ends when every sender
/// is dropped.
pub fn stream(status: u16, content_type: &str, rx: mpsc::Receiver<Vec<u8>>) -> Response {
    let chunks = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))));
    respond(status, content_type, StreamBody::new(chunks).boxed_unsync())
}

/// The answer when no route matched: `405` with `Allow` when `allow` names the methods the
/// path takes, else `404` naming the path.
pub fn unrouted(method: &Method, path: &str, allow: Option<&str>) -> Response {
    let Some(allow) = allow else {
        return error(404, format!("no route {path}"));
    };
    let message = format!("method {method} not allowed on {path} (allowed: {allow})");
    let mut resp = error(405, message);
    if let Ok(v) = HeaderValue::from_str(allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

/// What a server does with a request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request, peer: Peer) -> impl Future<Output = Response> + Send;
}

/// Serves `listener` until `cancel`; every connection in its own task.
pub async fn serve_unix<H: Handler>(
    listener: UnixListener,
    limits: ServerLimits,
    handler: Arc<H>,
    cancel: CancellationToken,
) {
    let slots = Slots::new(&limits);
    let limits = Arc::new(limits);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                // The credentials come from the socket itself, before hyper owns it.
                let peer = match stream.peer_cred() {
                    Ok(c) => Peer {
                        uid: Some(c.uid()),
                        gid: Some(c.gid()),
                        pid: c.pid(),
                        addr: None,
                    },
                    Err(_) => Peer::default(),
                };
                spawn_conn(stream, peer, &limits, &handler, &slots, &cancel);
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Serves `listener` until `cancel`; every connection in its own task.
pub async fn serve_tcp<H: Handler>(
    listener: TcpListener,
    limits: ServerLimits,
    handler: Arc<H>,
    cancel: CancellationToken,
) {
    let slots = Slots::new(&limits);
    let limits = Arc::new(limits);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let peer = Peer {
                    addr: Some(addr),
                    ..Peer::default()
                };
                spawn_conn(stream, peer, &limits, &handler, &slots, &cancel);
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Out of file descriptors or similar: say so and back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    eprintln!("agent-supervisor: http: accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The connections being served and those waiting for a slot.
#[derive(Clone)]
struct Slots {
    serving: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
}

impl Slots {
    fn new(limits: &ServerLimits) -> Slots {
        Slots {
            serving: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            waiting: Arc::new(Semaphore::new(limits.max_waiting)),
        }
    }

    /// A slot: at once, or after waiting in line (tokio's semaphore is first come, first
    /// served) when the line is not full; `None` when the line is full, the wait ran out or
    /// the server is cancelled.
    async fn admit(
        &self,
        queue_timeout: Duration,
        cancel: &CancellationToken,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = Arc::clone(&self.serving).try_acquire_owned() {
            return Some(p);
        }
        let _in_line = Arc::clone(&self.waiting).try_acquire_owned().ok()?;
        tokio::select! {
            p = Arc::clone(&self.serving).acquire_owned() => p.ok(),
            _ = tokio::time::sleep(queue_timeout) => None,
            _ = cancel.cancelled() => None,
        }
    }
}

fn spawn_conn<S, H>(
    stream: S,
    peer: Peer,
    limits: &Arc<ServerLimits>,
    handler: &Arc<H>,
    slots: &Slots,
    cancel: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let (limits, handler, cancel) = (Arc::clone(limits), Arc::clone(handler), cancel.clone());
    let slots = slots.clone();
    tokio::spawn(async move {
        // Without a slot the connection is still read, to answer it `503`.
        let permit = slots.admit(limits.queue_timeout, &cancel).await;
        serve_conn(stream, peer, limits, handler, permit.is_some(), cancel).await;
        drop(permit);
    });
}

/// Serves one connection: one request, answered by `handler` (or `503` when not `admitted`),
/// within the limits.
async fn serve_conn<S, H>(
    stream: S,
    peer: Peer,
    limits: Arc<ServerLimits>,
    handler: Arc<H>,
    admitted: bool,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let deadline = Instant::now() + limits.request_timeout;
    let mut io = TimeoutStream::new(stream);
    io.set_write_timeout(Some(limits.write_timeout));
    let io = TokioIo::new(Box::pin(io));
    // Set when hyper has the request head; until then nothing has been written.
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let (started, limits) = (Arc::clone(&started), Arc::clone(&limits));
        hyper::service::service_fn(move |req| {
            started.store(true, Ordering::Release);
            let (handler, peer, limits) = (Arc::clone(&handler), peer.clone(), Arc::clone(&limits));
            async move {
                let resp = if admitted {
                    answer(req, peer, &limits, deadline, &*handler).await
                } else {
                    let message = format!(
                        "too many connections ({} served and {} waiting at once); try again",
                        limits.max_connections, limits.max_waiting
                    );
                    error(503, message)
                };
                Ok::<_, Infallible>(finish(resp))
            }
        })
    };
    let mut conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .serve_connection(io, service);
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    let mut timing = true;
    loop {
        tokio::select! {
            _ = &mut conn => return,
            _ = &mut timer, if timing => {
                timing = false;
                if !started.load(Ordering::Acquire) {
                    // hyper is still waiting for the head: take the socket back to say why.
                    let mut io = conn.into_parts().io.into_inner();
                    let _ = io.write_all(&request_timeout_answer(&limits)).await;
                    let _ = io.shutdown().await;
                    return;
                }
            }
            _ = cancel.cancelled() => {
                if started.load(Ordering::Acquire) {
                    std::pin::Pin::new(&mut conn).graceful_shutdown();
                    let _ = conn.await;
                }
                return;
            }
        }
    }
}

fn request_timeout_message(limits: &ServerLimits) -> String {
    format!(
        "the request was not received within {} ms",
        limits.request_timeout.as_millis()
    )
}

/// The `408` written on the raw socket when the head did not arrive in time.
fn request_timeout_answer(limits: &ServerLimits) -> Vec<u8> {
    let body = serde_json::json!({ "error": request_timeout_message(limits) }).to_string() + "\n";
    let head = format!(
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    (head + &body).into_bytes()
}

/// The headers every answer carries.
fn finish(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Checks the request, reads its body within the limits, and hands it to `handler`.
async fn answer<H: Handler>(
    req: hyper::Request<Incoming>,
    peer: Peer,
    limits: &ServerLimits,
    deadline: Instant,
    handler: &H,
) -> Response {
    let (parts, body) = req.into_parts();
    if parts.version == Version::HTTP_11 && !parts.headers.contains_key(header::HOST) {
        return error(400, "HTTP/1.1 request without a Host header");
    }
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        let message = "request bodies must be sent with Content-Length, not Transfer-Encoding";
        return error(411, message);
    }
    // hyper has checked that Content-Length is one well-formed number.
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    let max = limits.max_body_bytes;
    if length > max as u64 {
        let message =
            format!("request body of {length} bytes is larger than the limit of {max} bytes");
        return error(413, message);
    }
    let (path, query) = match parse_target(parts.uri.path(), parts.uri.query().unwrap_or_default())
    {
        Ok(target) => target,
        Err(message) => return error(400, message),
    };
    let body = match tokio::time::timeout_at(deadline, Limited::new(body, max).collect()).await {
        Err(_) => return error(408, request_timeout_message(limits)),
        Ok(Err(e)) => return error(400, format!("cannot read the request body: {e}")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let req = Request {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body,
    };
    handler.handle(req, peer).await
}

/// The decoded path and query pairs of a request target; the error is the `400` message.
fn parse_target(path: &str, query: &str) -> Result<(String, Vec<(String, String)>), String> {
    let malformed = |what: &str| {
        let what: String = what.chars().take(100).collect();
        format!("malformed percent-encoding in {what:?}")
    };
    let decoded = percent_decode(path, false).ok_or_else(|| malformed(path))?;
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
            return Err(format!("{} (query)", malformed(pair)));
        };
        pairs.push((k, v));
        if pairs.len() > 64 {
            return Err("more than 64 query parameters".to_string());
        }
    }
    Ok((decoded, pairs))
}

/// Decodes `%XX` (and `+` as space in queries); `None` on bad escapes or non-UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes everything but unreserved characters (RFC 3986) and `extra` (supervisorctl's
/// request targets).
pub fn percent_encode(s: &str, extra: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || extra.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_percent_encoding() {
        let (path, query) = parse_target("/v1/status", "targets=a%2Cb,g:*&x").expect("valid");
        assert_eq!(path, "/v1/status");
        assert_eq!(
            query,
            [
                ("targets".into(), "a,b,g:*".into()),
                ("x".into(), "".into())
            ]
        );
        assert!(parse_target("/%zz", "").is_err());
        assert!(parse_target("/%ff", "").is_err(), "not UTF-8");
        assert!(parse_target("/", "a=%4").is_err());
        assert_eq!(percent_encode("g:*,a b", b":*,"), "g:*,a%20b");
        assert_eq!(percent_decode("g%3A*+x", true).as_deref(), Some("g:* x"));
        assert_eq!(percent_decode("%4", false), None);
        let answer = String::from_utf8(request_timeout_answer(&ServerLimits::default()));
        let answer = answer.expect("text");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{answer}"
        );
        assert!(body.contains("not received within 5000 ms"), "{answer}");
    }
}
