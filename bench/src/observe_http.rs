//! `bench observe`'s HTTP side: a blocking HTTP/1.1 GET over a `std` [`TcpStream`] (one
//! connection per request, `Connection: close`, as a scraper without keep-alive does), the
//! parsing of its answer (`Content-Length`, chunked, or up to the end of the stream), and
//! [`in_netns`], which runs a closure on a thread that entered a network namespace, so that
//! the client talks to `127.0.0.1` of a "host" without any process start in the timings.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

/// An HTTP answer: its status code and its (de-chunked) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` from `addr` on a new connection, read to the end.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Reply, String> {
    let what = format!("GET http://{addr}{path}");
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{what}: cannot connect: {e}"))?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{what}: cannot set a timeout: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: agent-bench\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{what}: cannot send the request: {e}"))?;
    let mut raw = Vec::with_capacity(64 * 1024);
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{what}: cannot read the answer: {e}"))?;
    parse_response(&raw).map_err(|e| format!("{what}: {e}"))
}

/// The status and body of a whole HTTP/1.x answer (the connection closed after it).
pub fn parse_response(raw: &[u8]) -> Result<Reply, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of the header in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let status = first
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| first.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP/1.x status line: {first:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| {
                format!(
                    "body cut short: {} of {n} bytes (Content-Length)",
                    rest.len()
                )
            })?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply { status, body })
}

/// The body of a chunked transfer (`SIZE[;ext]\r\nDATA\r\n`... `0\r\n\r\n`).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunked body: no chunk size line")?;
        let line = String::from_utf8_lossy(&rest[..eol]);
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| format!("chunked body: bad chunk size {hex:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        let data = rest
            .get(..size)
            .ok_or_else(|| format!("chunked body: chunk of {size} bytes cut short"))?;
        body.extend_from_slice(data);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

/// Runs `f` on a new thread that first entered the network namespace `/run/netns/NS`; the
/// rest of this process stays where it is.
pub fn in_netns<T, F>(netns: &str, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let path = std::path::Path::new("/run/netns").join(netns);
    let file = std::fs::File::open(&path)
        .map_err(|e| format!("cannot open the namespace {}: {e}", path.display()))?;
    let thread = std::thread::Builder::new()
        .name(format!("bench-{netns}"))
        .spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns({}, CLONE_NEWNET): {e}", path.display()))?;
            drop(file);
            f()
        })
        .map_err(|e| format!("cannot start a thread for the namespace {netns}: {e}"))?;
    thread
        .join()
        .map_err(|_| format!("the thread in the namespace {netns} panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_eof_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").expect("len");
        assert_eq!((r.status, r.text()), (200, "hello".to_string()));
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\nwiki\r\n6;x=y\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!(
            (r.status, r.text()),
            (503, "wikipedia in \r\n\r\nchunks.".to_string())
        );
        let r = parse_response(b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP\r\n\r\nto the end")
            .expect("eof");
        assert_eq!(r.text(), "to the end");
    }

    #[test]
    fn rejects_broken_answers_by_what_is_wrong() {
        let e = parse_response(b"HTTP/1.1 200 OK\r\n").expect_err("no header end");
        assert!(e.contains("no end of the header"), "{e}");
        let e = parse_response(b"SSH-2.0 hi\r\n\r\n").expect_err("not http");
        assert!(e.contains("not an HTTP/1.x status line"), "{e}");
        let e = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort")
            .expect_err("short");
        assert!(e.contains("5 of 9 bytes"), "{e}");
    }

    #[test]
    fn gets_from_a_local_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).expect("read the request");
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .expect("answer");
            req
        });
        let r = get(addr, "/metrics", Duration::from_secs(5)).expect("get");
        assert_eq!((r.status, r.text()), (200, "ok".to_string()));
        let req = server.join().expect("server thread");
        assert!(req.starts_with("GET /metrics HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Connection: close\r\n"), "{req}");
    }
}
