//! Fuzz target of the control API's request handling (`docs/fuzzing.md`): the real control
//! server (`serve_control_with`: hyper's parser, this crate's limits, target decoding,
//! routing, JSON bodies) on a Unix socket in a temporary directory, sent arbitrary bytes and
//! requests built from the API's own methods, paths, headers and bodies. Its core channel is
//! read and dropped, so a well-formed request is answered `503` without a daemon. Property:
//! every request gets an HTTP reply (`408` at the latest, when it is incomplete) within a
//! bound, never a closed connection (a panicking connection task) or a hang. Runs for
//! `FUZZ_SECS`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agent_supervisor::daemon::api::ControlMsg;
use agent_supervisor::daemon::control::serve_control_with;
use agent_supervisor::daemon::http::ServerLimits;
use agent_supervisor_tests::fuzz::{budget, keep_on_panic, Tally};
use bolero::TypeGenerator;
use tokio_util::sync::CancellationToken;

/// The control server on a temporary socket, for the life of the value.
struct Server {
    dir: PathBuf,
    socket: PathBuf,
    cancel: CancellationToken,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Server {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fuzz-api-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).expect("create the temp dir");
        let socket = dir.join("control.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ControlMsg>(64);
        rt.spawn(async move {
            // No core: each request is dropped, which the server answers 503.
            while let Some(msg) = rx.recv().await {
                drop(msg);
            }
        });
        let limits = ServerLimits {
            request_timeout: Duration::from_millis(100),
            write_timeout: Duration::from_secs(2),
            ..ServerLimits::default()
        };
        let (s, l, c) = (socket.clone(), dir.join("logs"), cancel.clone());
        rt.spawn(async move {
            serve_control_with(&s, None, tx, l, limits, c)
                .await
                .expect("serve the control API");
        });
        let t = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the control socket never came up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Server {
            dir,
            socket,
            cancel,
            _rt: rt,
        }
    }

    /// Sends `bytes` (the write side stays open) and returns the whole reply.
    fn ask(&self, bytes: &[u8]) -> Vec<u8> {
        let mut s = UnixStream::connect(&self.socket).expect("connect to the control socket");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set a read timeout");
        // The server may answer and close before reading everything: a broken pipe is fine.
        let _ = s.write_all(bytes);
        let start = Instant::now();
        let mut reply = Vec::new();
        let r = s.read_to_end(&mut reply);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no reply within 5 s (a hang) to {:?}",
            String::from_utf8_lossy(bytes)
        );
        if let Err(e) = r {
            // A reset after the reply was written (the server stopped reading) is fine.
            assert!(!reply.is_empty(), "reading the reply failed: {e}");
        }
        reply
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The status of `reply`, which must be an HTTP response.
fn status(request: &[u8], reply: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(reply);
    assert!(
        text.starts_with("HTTP/1."),
        "no HTTP reply to {:?}: got {text:?}",
        String::from_utf8_lossy(request)
    );
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn label(code: u16) -> &'static str {
    match code {
        200..=299 => "2xx",
        400 => "400",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        411 => "411",
        413 => "413",
        431 => "431",
        503 => "503",
        _ => "other",
    }
}

/// A request made of the API's pieces (indices modulo the dictionaries).
#[derive(Debug, Clone, TypeGenerator)]
struct Req {
    method: u8,
    path: u8,
    query: Vec<u8>,
    version: u8,
    headers: Vec<u8>,
    body: u8,
    /// Without a `Host` header (HTTP/1.1 needs one: `400`).
    no_host: bool,
    /// `Content-Length`: mostly the true one; `% 8` 5: none, 6: one too many, 7: `/ 8`.
    length: u16,
}

const METHODS: &[&str] = &[
    "GET", "POST", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "get", "", "G\0T",
];
const PATHS: &[&str] = &[
    "/v1/version",
    "/v1/status",
    "/v1/start",
    "/v1/stop",
    "/v1/restart",
    "/v1/signal",
    "/v1/reload",
    "/v1/shutdown",
    "/v1/logs/a",
    "/v1/logs/",
    "/v1/logs/../../etc/passwd",
    "/v1/logs/%2e%2e%2fx",
    "/v1/logs/a%00b",
    "/v1/logs/%zz",
    "/",
    "*",
    "/v2/x",
    "//v1/status",
    "http://localhost/v1/status",
    "/v1/status%",
    "/v1/logs/g:a",
];
const QUERY: &[&str] = &[
    "targets=a",
    "targets=g:*",
    "targets=all",
    "targets=",
    "targets=a,b",
    "targets=%zz",
    "targets=../x",
    "lines=10",
    "lines=-1",
    "lines=99999999999999999999",
    "follow=1",
    "follow=yes",
    "since=x",
    "&",
    "=",
    "%",
    "targets=a%00",
    "a=b=c",
    "+=+",
];
const VERSIONS: &[&str] = &[
    "HTTP/1.1",
    "HTTP/1.1",
    "HTTP/1.1",
    "HTTP/1.1",
    "HTTP/1.0",
    "HTTP/2.0",
    "HTTP/1.1 x",
    "",
    "http/1.1",
];
const HEADERS: &[&str] = &[
    "Host: localhost",
    "Content-Type: application/json",
    "Transfer-Encoding: chunked",
    "Connection: keep-alive",
    "Expect: 100-continue",
    "Content-Length: 5",
    "Content-Length: -1",
    "Content-Length: 1, 2",
    "X: \u{e9}",
    "Host:",
    ": x",
    "NoColon",
    "Upgrade: h2c",
    "Host: a\r\nHost: b",
];
const BODIES: &[&str] = &[
    "",
    "{}",
    "{\"targets\":[\"a\"]}",
    "{\"targets\":[]}",
    "{\"targets\":[\"g:*\"]}",
    "{\"targets\":[\"all\"],\"signal\":\"HUP\"}",
    "{\"targets\":[\"a\"],\"signal\":\"\"}",
    "{\"targets\":[\"a\"],\"signal\":\"SIG HUP;\"}",
    "{\"targets\":\"a\"}",
    "{\"x\":1}",
    "[",
    "null",
    "{\"targets\":[\"a\"],\"targets\":[\"b\"]}",
    "{\"targets\":[\"\\u0000\"]}",
    " \n ",
    "\u{feff}{}",
];

fn pick<'a>(dict: &[&'a str], i: u8) -> &'a str {
    dict[i as usize % dict.len()]
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        let mut target = pick(PATHS, self.path).to_string();
        let query: Vec<&str> = self
            .query
            .iter()
            .take(self.query.len() % 3)
            .map(|q| pick(QUERY, *q))
            .collect();
        if !query.is_empty() {
            target = format!("{target}?{}", query.join("&"));
        }
        let body = pick(BODIES, self.body);
        let mut head = format!(
            "{} {target} {}\r\n",
            pick(METHODS, self.method),
            pick(VERSIONS, self.version)
        );
        if !self.no_host {
            head.push_str("Host: localhost\r\n");
        }
        for h in self.headers.iter().take(self.headers.len() % 3) {
            head.push_str(pick(HEADERS, *h));
            head.push_str("\r\n");
        }
        match self.length % 8 {
            5 => {}
            6 => head.push_str(&format!("Content-Length: {}\r\n", body.len() + 1)),
            7 => head.push_str(&format!("Content-Length: {}\r\n", self.length / 8)),
            _ => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
        }
        head.push_str("\r\n");
        head.push_str(body);
        head.into_bytes()
    }
}

#[test]
fn fuzz_api_bytes() {
    let server = Server::start();
    let tally = Tally::new("api bytes");
    bolero::check!()
        .with_test_time(budget())
        .for_each(|bytes: &[u8]| {
            keep_on_panic("api-bytes", bytes, || {
                tally.hit(label(status(bytes, &server.ask(bytes))));
            });
        });
}

#[test]
fn fuzz_api_requests() {
    let server = Server::start();
    let tally = Tally::new("api requests");
    bolero::check!()
        .with_type::<Req>()
        .with_test_time(budget())
        .for_each(|req| {
            let bytes = req.bytes();
            keep_on_panic("api-requests", &bytes, || {
                let reply = server.ask(&bytes);
                if std::env::var_os("FUZZ_SHOW").is_some() {
                    eprintln!(
                        "{:?} -> {:?}",
                        String::from_utf8_lossy(&bytes),
                        String::from_utf8_lossy(&reply)
                    );
                }
                tally.hit(label(status(&bytes, &reply)));
            });
        });
}

/// A well-formed request gets past parsing and routing to the (absent) core: `503`; the
/// same with a malformed target is `400` with a JSON error naming it.
#[test]
fn well_formed_and_malformed_requests() {
    let server = Server::start();
    let ok = b"GET /v1/status?targets=a HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(status(ok, &server.ask(ok)), 503);
    let bad = b"GET /v1/status?targets=a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = server.ask(bad);
    assert_eq!(status(bad, &reply), 400);
    assert!(String::from_utf8_lossy(&reply).contains("malformed target"));
}
