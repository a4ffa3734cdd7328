//! A small hardened HTTP/1.1 server for the control socket and the metrics port.
//!
//! Hand-rolled on tokio (no hyper): the daemon needs a dozen routes, one request per
//! connection, and strict limits more than it needs a general server. What it guarantees:
//!
//! - every connection runs in its own task, so a slow client never holds up another;
//! - the whole request (head and body) must arrive within [`ServerLimits::request_timeout`]
//!   (5 s), else `408`;
//! - the request head is at most 16 KiB (`431`), the body at most 64 KiB and only with
//!   `Content-Length` (`413`; `Transfer-Encoding` on a request is `411`);
//! - anything malformed is `400` (bad request line, header without a colon, obs-fold,
//!   bad or conflicting `Content-Length`, HTTP/1.1 without `Host`, a head that is not UTF-8);
//! - errors are JSON: `{"error": "..."}`; every response says `Connection: close`;
//! - at most [`ServerLimits::max_connections`] connections at once; more get `503`;
//! - streamed responses (`logs -f`) use chunked transfer encoding (or close-delimited for
//!   HTTP/1.0 clients) and end when the client goes away or the server is cancelled.
//!
//! Nothing here panics on input: parsing is bounds-checked and every error becomes a status.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Limits of the server; [`Default`] is what the daemon uses.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest request line plus headers.
    pub max_head_bytes: usize,
    /// Largest request body (`Content-Length`).
    pub max_body_bytes: usize,
    /// Time from accepting a connection to having the whole request.
    pub request_timeout: Duration,
    /// Time to write a full response, or one chunk of a streamed one.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_head_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_connections: 128,
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

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The percent-decoded path, without the query.
    pub path: String,
    /// Percent-decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `HTTP/1.0` rather than `HTTP/1.1`.
    pub http10: bool,
}

impl Request {
    /// The first query parameter named `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response body: all at once, or chunks from a channel until it closes.
#[derive(Debug)]
pub enum Body {
    Full(Vec<u8>),
    Stream(mpsc::Receiver<Vec<u8>>),
}

/// A response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    /// `value` as JSON (a serialization failure becomes a 500).
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Response::bytes(status, "application/json", body)
            }
            Err(e) => Response::error(500, format!("cannot serialize the answer: {e}")),
        }
    }

    /// `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        let body = serde_json::json!({ "error": message.into() });
        let mut bytes = body.to_string().into_bytes();
        bytes.push(b'\n');
        Response::bytes(status, "application/json", bytes)
    }

    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            body: Body::Full(body),
        }
    }

    /// A streamed body: each message on `rx` is one chunk; the response ends when every
    /// sender is dropped.
    pub fn stream(status: u16, content_type: &str, rx: mpsc::Receiver<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            body: Body::Stream(rx),
        }
    }

    /// `404` naming the path.
    pub fn not_found(path: &str) -> Response {
        Response::error(404, format!("no route {path}"))
    }

    /// `405` naming the method and path, with `Allow`.
    pub fn method_not_allowed(method: &str, path: &str, allow: &str) -> Response {
        let mut r = Response::error(
            405,
            format!("method {method} not allowed on {path} (allowed: {allow})"),
        );
        r.headers.push(("Allow".to_string(), allow.to_string()));
        r
    }
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
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
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
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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

fn spawn_conn<S, H>(
    stream: S,
    peer: Peer,
    limits: &ServerLimits,
    handler: &Arc<H>,
    slots: &Arc<Semaphore>,
    cancel: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let limits = limits.clone();
    let handler = Arc::clone(handler);
    let cancel = cancel.clone();
    let permit = Arc::clone(slots).try_acquire_owned();
    tokio::spawn(async move {
        let mut stream = stream;
        let Ok(_permit) = permit else {
            let resp = Response::error(503, "too many connections; try again");
            let _ = write_response(&mut stream, resp, false, &limits, &cancel).await;
            return;
        };
        serve_conn(stream, peer, &limits, &*handler, &cancel).await;
    });
}

/// An error while reading a request: a status to answer with, or a connection to drop.
#[derive(Debug)]
enum ReadError {
    /// Answer with this status and message.
    Status(u16, String),
    /// The peer went away (or never said anything): close silently.
    Gone,
}

async fn serve_conn<S, H>(
    mut stream: S,
    peer: Peer,
    limits: &ServerLimits,
    handler: &H,
    cancel: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let read = tokio::select! {
        _ = cancel.cancelled() => return,
        r = tokio::time::timeout(limits.request_timeout, read_request(&mut stream, limits)) => r,
    };
    let req = match read {
        Err(_) => Err(ReadError::Status(
            408,
            format!(
                "the request was not received within {} ms",
                limits.request_timeout.as_millis()
            ),
        )),
        Ok(r) => r,
    };
    match req {
        Ok(req) => {
            let http10 = req.http10;
            let resp = handler.handle(req, peer).await;
            let _ = write_response(&mut stream, resp, http10, limits, cancel).await;
        }
        Err(ReadError::Gone) => {}
        Err(ReadError::Status(status, message)) => {
            let resp = Response::error(status, message);
            if write_response(&mut stream, resp, false, limits, cancel)
                .await
                .is_ok()
            {
                linger(&mut stream).await;
            }
        }
    }
}

/// After an error answer the client may still be sending: read (and drop) a little of it so
/// closing does not reset the connection before the client has read the answer.
async fn linger<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut scratch = [0u8; 4096];
    let mut left: usize = 256 * 1024;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while left > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// Reads and parses one request, within the head and body limits.
async fn read_request<S>(stream: &mut S, limits: &ServerLimits) -> Result<Request, ReadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut scanned: usize = 0;
    let (head_len, body_start) = loop {
        // Only the new bytes (and the two before them) can complete the terminator.
        if let Some(end) = find_head_end(&buf, scanned.saturating_sub(2)) {
            break end;
        }
        if buf.len() > limits.max_head_bytes {
            return Err(too_big_head(limits));
        }
        let n = stream.read(&mut chunk).await.map_err(|_| ReadError::Gone)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                ReadError::Gone
            } else {
                ReadError::Status(
                    400,
                    "the connection was closed before the request head was complete".into(),
                )
            });
        }
        scanned = buf.len();
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_len > limits.max_head_bytes {
        return Err(too_big_head(limits));
    }
    let mut req = parse_head(&buf[..head_len])?;
    let length = content_length(&req)?;
    if length > limits.max_body_bytes {
        return Err(ReadError::Status(
            413,
            format!(
                "request body of {length} bytes is larger than the limit of {} bytes",
                limits.max_body_bytes
            ),
        ));
    }
    let mut body = buf.get(body_start..).unwrap_or_default().to_vec();
    if body.len() < length
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| ReadError::Gone)?;
    }
    while body.len() < length {
        let n = stream.read(&mut chunk).await.map_err(|_| ReadError::Gone)?;
        if n == 0 {
            return Err(ReadError::Status(
                400,
                format!(
                    "the connection was closed after {} of {length} body bytes",
                    body.len()
                ),
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    req.body = body;
    Ok(req)
}

fn too_big_head(limits: &ServerLimits) -> ReadError {
    ReadError::Status(
        431,
        format!(
            "request head is larger than the limit of {} bytes",
            limits.max_head_bytes
        ),
    )
}

/// End of the head: `(head length, body start)`, searching from `from`. Lines end in CRLF or
/// a bare LF.
fn find_head_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(off) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some((nl + 1, nl + 2)),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some((nl + 1, nl + 3)),
            _ => i = nl + 1,
        }
    }
    None
}

fn bad(message: impl Into<String>) -> ReadError {
    ReadError::Status(400, message.into())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses the request line and headers (without the final empty line).
fn parse_head(head: &[u8]) -> Result<Request, ReadError> {
    let head = std::str::from_utf8(head).map_err(|_| bad("the request head is not valid UTF-8"))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!(
            "malformed request line {:?} (expected METHOD /path HTTP/1.1)",
            truncate(request_line, 100)
        )));
    };
    if !is_token(method) || method.len() > 16 {
        return Err(bad(format!("malformed method {:?}", truncate(method, 20))));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") && v.len() <= 8 => {
            return Err(ReadError::Status(
                505,
                format!("HTTP version {v} is not supported (use HTTP/1.1)"),
            ))
        }
        v => return Err(bad(format!("malformed HTTP version {:?}", truncate(v, 20)))),
    };
    let (path, query) = parse_target(target)?;
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            return Err(bad("folded header lines (obs-fold) are not accepted"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!(
                "malformed header line {:?} (no colon)",
                truncate(line, 100)
            )));
        };
        if !is_token(name) {
            return Err(bad(format!(
                "malformed header name {:?}",
                truncate(name, 100)
            )));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad(format!("control characters in header {name}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        if headers.len() > 100 {
            return Err(ReadError::Status(
                431,
                "more than 100 request headers".into(),
            ));
        }
    }
    let req = Request {
        method: method.to_string(),
        path,
        query,
        headers,
        body: Vec::new(),
        http10,
    };
    if !http10 && req.header("host").is_none() {
        return Err(bad("HTTP/1.1 request without a Host header"));
    }
    Ok(req)
}

/// The body length the request declares (0 without `Content-Length`).
fn content_length(req: &Request) -> Result<usize, ReadError> {
    if req.header("transfer-encoding").is_some() {
        return Err(ReadError::Status(
            411,
            "request bodies must be sent with Content-Length, not Transfer-Encoding".into(),
        ));
    }
    let mut length: Option<usize> = None;
    for (_, v) in req.headers.iter().filter(|(k, _)| k == "content-length") {
        if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!(
                "malformed Content-Length {:?}",
                truncate(v, 30)
            )));
        }
        let n: usize = v
            .parse()
            .map_err(|_| bad(format!("malformed Content-Length {v:?}")))?;
        if length.is_some_and(|l| l != n) {
            return Err(bad("conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

/// `/path?query` (or `http://host/path?query`) into a decoded path and query pairs.
fn parse_target(target: &str) -> Result<(String, Vec<(String, String)>), ReadError> {
    if target.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(bad(
            "the request target contains spaces, controls or non-ASCII",
        ));
    }
    let origin = if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        target
    };
    if !origin.starts_with('/') {
        return Err(bad(format!(
            "malformed request target {:?} (expected /path)",
            truncate(target, 100)
        )));
    }
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    let path = percent_decode(path, false).ok_or_else(|| {
        bad(format!(
            "malformed percent-encoding in {:?}",
            truncate(path, 100)
        ))
    })?;
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
            return Err(bad(format!(
                "malformed percent-encoding in query {:?}",
                truncate(pair, 100)
            )));
        };
        pairs.push((k, v));
        if pairs.len() > 64 {
            return Err(bad("more than 64 query parameters"));
        }
    }
    Ok((path, pairs))
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

/// Encodes everything but unreserved characters (RFC 3986) and `extra`.
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

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The reason phrase of the statuses this server uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A header value that cannot break the response (no CR/LF).
fn clean(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// Writes `resp`; a streamed body is written chunk by chunk until its channel closes, the
/// client goes away, or `cancel`.
async fn write_response<S>(
    stream: &mut S,
    resp: Response,
    http10: bool,
    limits: &ServerLimits,
    cancel: &CancellationToken,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let status = if (100..1000).contains(&resp.status) {
        resp.status
    } else {
        500
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        reason(status),
        clean(&resp.content_type)
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{}: {}\r\n", clean(k), clean(v)));
    }
    let d = limits.write_timeout;
    match resp.body {
        Body::Full(body) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut all = head.into_bytes();
            all.extend_from_slice(&body);
            within(d, stream.write_all(&all)).await?;
            within(d, stream.flush()).await?;
            let _ = within(d, stream.shutdown()).await;
            Ok(())
        }
        Body::Stream(mut rx) => {
            if !http10 {
                head.push_str("Transfer-Encoding: chunked\r\n");
            }
            head.push_str("\r\n");
            within(d, stream.write_all(head.as_bytes())).await?;
            within(d, stream.flush()).await?;
            let mut scratch = [0u8; 1024];
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => None,
                    c = rx.recv() => c,
                    // Reading tells us when the client goes away; what it sends is dropped.
                    r = stream.read(&mut scratch) => match r {
                        Ok(n) if n > 0 => continue,
                        _ => return Ok(()),
                    },
                };
                let Some(chunk) = next else { break };
                if chunk.is_empty() {
                    continue;
                }
                let mut framed = Vec::with_capacity(chunk.len() + 16);
                if http10 {
                    framed.extend_from_slice(&chunk);
                } else {
                    framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    framed.extend_from_slice(&chunk);
                    framed.extend_from_slice(b"\r\n");
                }
                within(d, stream.write_all(&framed)).await?;
                within(d, stream.flush()).await?;
            }
            if !http10 {
                within(d, stream.write_all(b"0\r\n\r\n")).await?;
            }
            let _ = within(d, stream.shutdown()).await;
            Ok(())
        }
    }
}

/// `fut`, or a `TimedOut` error after `d`.
async fn within<T>(
    d: Duration,
    fut: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(d, fut).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "writing the response timed out",
        )),
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
