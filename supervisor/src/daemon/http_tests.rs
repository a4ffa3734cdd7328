//! Unit tests of the HTTP/1.1 request parser and its helpers.
use super::*;

#[test]
fn parsing() {
    let end = |b: &[u8]| find_head_end(b, 0);
    assert_eq!(
        end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"),
        Some((25, 27))
    );
    assert_eq!(end(b"GET / HTTP/1.1\nHost: x\n\nbody"), Some((23, 24)));
    assert_eq!(end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    assert_eq!(
        find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 23),
        Some((25, 27))
    );
    let r = parse_head(b"GET /v1/status?targets=a%2Cb,g:*&x HTTP/1.1\r\nHost: h\r\n");
    let r = r.expect("valid head");
    assert_eq!(
        (r.path.as_str(), r.query("targets")),
        ("/v1/status", Some("a,b,g:*"))
    );
    let bad: [&[u8]; 10] = [
        b"GET /\r\n",
        b"GET / HTTP/1.1 x\r\nHost: h\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: h\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n",
        b"GET / HTTP/1.1\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: h\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: h\r\n",
        b"GET nopath HTTP/1.1\r\nHost: h\r\n",
        b"GET / XYZ\r\nHost: h\r\n",
    ];
    for head in bad {
        let r = parse_head(head);
        assert!(matches!(r, Err(ReadError::Status(400, _))), "{head:?}");
    }
    let r = parse_head(b"GET / HTTP/2.0\r\nHost: h\r\n");
    assert!(matches!(r, Err(ReadError::Status(505, _))));
    let len = |h: &str| content_length(&parse_head(h.as_bytes()).expect("head"));
    let post = "POST / HTTP/1.1\r\nHost: h\r\n";
    assert_eq!(len(post).ok(), Some(0));
    assert_eq!(len(&format!("{post}Content-Length: 12\r\n")).ok(), Some(12));
    assert!(len(&format!("{post}Content-Length: -1\r\n")).is_err());
    assert!(len(&format!("{post}Content-Length: 1\r\nContent-Length: 2\r\n")).is_err());
    let r = len(&format!("{post}Transfer-Encoding: chunked\r\n"));
    assert!(matches!(r, Err(ReadError::Status(411, _))));
    assert_eq!(percent_encode("g:*,a b", b":*,"), "g:*,a%20b");
    assert_eq!(percent_decode("g%3A*+x", true).as_deref(), Some("g:* x"));
    assert_eq!(percent_decode("%4", false), None);
}
