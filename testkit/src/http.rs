//! Plain HTTP/1.1 over a TCP stream: enough for the exporter's and
//! Prometheus' APIs, and for malformed requests no client library sends.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Sends `raw` as is and reads the answer until the server closes.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may close before reading all of a huge request: its
    // answer is still there to read.
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    Response::parse(&buf)
}

pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Response {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{accept}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub struct Response {
    pub status: u16,
    /// Lower-cased header lines.
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn parse(raw: &[u8]) -> Self {
        let raw = String::from_utf8_lossy(raw);
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let head = head.to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Self { status, head, body }
    }
}

/// The payload of a chunked body (sizes in hex, each chunk ending in CRLF).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}
