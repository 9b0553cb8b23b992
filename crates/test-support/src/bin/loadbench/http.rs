//! A small HTTP/1.1 client: one keep-alive connection, one request at a time.
//!
//! The load generators send the same pre-serialized request millions of times, so the request is
//! bytes built once ([`request_bytes`]) and the response is parsed only as far as framing needs:
//! the status line and headers (`httparse`), then `Content-Length`, chunked transfer encoding or
//! read-to-close. A client that costs little CPU per request leaves more of the two shared cores
//! to the proxies being measured (the generator's own CPU time is reported beside them).

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// Most headers a response may carry before the client gives up on it.
const MAX_HEADERS: usize = 48;
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Builds an HTTP/1.1 request: request line, `Host`, the given headers, `Content-Length` when
/// there is a body or the method is `POST`, then the body.
pub(crate) fn request_bytes(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n").as_bytes());
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// What the client learned from one response.
#[derive(Debug, Default)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// Whether the connection may carry another request.
    pub(crate) keep_alive: bool,
    /// Header names (lowercase) and values, only when asked for ([`Conn::exchange_full`]).
    pub(crate) headers: Vec<(String, String)>,
    /// The decoded body, only when asked for.
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first value of a header, by lowercase name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One client connection.
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Chunked,
    Length(usize),
    None,
    UntilClose,
}

impl Conn {
    /// Opens a connection, from `source` (an address to bind, port chosen by the kernel) if given.
    pub(crate) async fn connect(
        addr: SocketAddr,
        source: Option<SocketAddr>,
    ) -> anyhow::Result<Conn> {
        let stream = match source {
            None => TcpStream::connect(addr).await,
            Some(src) => {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()
                } else {
                    TcpSocket::new_v6()
                }?;
                socket.bind(src).with_context(|| format!("bind {src}"))?;
                socket.connect(addr).await
            }
        }
        .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
        })
    }

    /// Sends a request and reads the response to its end, keeping only status and framing.
    pub(crate) async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        self.exchange_inner(request, false).await
    }

    /// Like [`Conn::exchange`], and keeps the headers and the decoded body.
    pub(crate) async fn exchange_full(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        self.exchange_inner(request, true).await
    }

    async fn exchange_inner(&mut self, request: &[u8], keep: bool) -> anyhow::Result<Response> {
        self.compact();
        self.stream.write_all(request).await.context("send")?;
        let (mut response, framing) = loop {
            let parsed = self.parse_head(keep)?;
            match parsed {
                Some((r, _)) if (100..200).contains(&r.status) && r.status != 101 => continue,
                Some(head) => break head,
                None => {
                    if self.buf.len() - self.pos > MAX_HEAD_BYTES {
                        bail!("response head longer than {MAX_HEAD_BYTES} bytes");
                    }
                    if self.read_more().await? == 0 {
                        bail!("connection closed before a response");
                    }
                }
            }
        };
        let sink = if keep { Some(&mut response.body) } else { None };
        match framing {
            Framing::None => {}
            Framing::Length(n) => self.body_length(n, sink).await?,
            Framing::Chunked => self.body_chunked(sink).await?,
            Framing::UntilClose => {
                self.body_until_close(sink).await?;
                response.keep_alive = false;
            }
        }
        Ok(response)
    }

    /// Parses a complete response head at `pos` and consumes it; `None` if more bytes are needed.
    fn parse_head(&mut self, keep: bool) -> anyhow::Result<Option<(Response, Framing)>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let len = match parsed.parse(rest).context("response head")? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        let status = parsed.code.unwrap_or(0);
        let mut response = Response {
            status,
            keep_alive: parsed.version == Some(1),
            ..Response::default()
        };
        let mut framing = if matches!(status, 100..=199 | 204 | 304) {
            Framing::None
        } else {
            Framing::UntilClose
        };
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .context("content-length is not a number")?;
                if !matches!(framing, Framing::Chunked | Framing::None) {
                    framing = Framing::Length(n);
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if h.value.to_ascii_lowercase().ends_with(b"chunked")
                    && !matches!(framing, Framing::None)
                {
                    framing = Framing::Chunked;
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                let v = h.value.to_ascii_lowercase();
                if v == b"close" {
                    response.keep_alive = false;
                } else if v == b"keep-alive" {
                    response.keep_alive = true;
                }
            }
            if keep {
                response.headers.push((
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                ));
            }
        }
        self.pos += len;
        Ok(Some((response, framing)))
    }

    async fn body_length(
        &mut self,
        n: usize,
        mut sink: Option<&mut Vec<u8>>,
    ) -> anyhow::Result<()> {
        while self.buf.len() - self.pos < n {
            if self.read_more().await? == 0 {
                bail!("connection closed inside a body");
            }
        }
        if let Some(s) = sink.as_mut() {
            s.extend_from_slice(self.buf.get(self.pos..self.pos + n).unwrap_or_default());
        }
        self.pos += n;
        Ok(())
    }

    async fn body_chunked(&mut self, mut sink: Option<&mut Vec<u8>>) -> anyhow::Result<()> {
        loop {
            match chunk_at(self.buf.get(self.pos..).unwrap_or_default())? {
                Chunk::Incomplete => {
                    if self.read_more().await? == 0 {
                        bail!("connection closed inside a chunked body");
                    }
                }
                Chunk::Data { start, len, next } => {
                    if let Some(s) = sink.as_mut() {
                        let at = self.pos + start;
                        s.extend_from_slice(self.buf.get(at..at + len).unwrap_or_default());
                    }
                    self.pos += next;
                    self.compact();
                }
                Chunk::Last { next } => {
                    self.pos += next;
                    return Ok(());
                }
            }
        }
    }

    async fn body_until_close(&mut self, mut sink: Option<&mut Vec<u8>>) -> anyhow::Result<()> {
        loop {
            if let Some(s) = sink.as_mut() {
                s.extend_from_slice(self.buf.get(self.pos..).unwrap_or_default());
            }
            self.pos = self.buf.len();
            self.compact();
            if self.read_more().await? == 0 {
                return Ok(());
            }
        }
    }

    /// Drops consumed bytes from the front of the buffer.
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    async fn read_more(&mut self) -> anyhow::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await.context("receive")
    }
}

/// The next piece of a chunked body.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// More bytes are needed.
    Incomplete,
    /// A data chunk: its bytes are `start..start + len`; the next piece starts at `next`.
    Data {
        start: usize,
        len: usize,
        next: usize,
    },
    /// The last chunk and the (empty or ignored) trailer section; the body ends before `next`.
    Last { next: usize },
}

/// Parses the chunk at the start of `b`.
fn chunk_at(b: &[u8]) -> anyhow::Result<Chunk> {
    let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
        if b.len() > 1024 {
            bail!("chunk size line longer than 1 KiB");
        }
        return Ok(Chunk::Incomplete);
    };
    let line = b.get(..eol).unwrap_or_default();
    let digits = line
        .iter()
        .position(|&c| c == b';' || c == b' ')
        .map_or(line, |i| line.get(..i).unwrap_or_default());
    let size = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| usize::from_str_radix(d, 16).ok())
        .with_context(|| format!("bad chunk size line {:?}", String::from_utf8_lossy(line)))?;
    let start = eol + 2;
    if size == 0 {
        // Trailer fields, then an empty line.
        let mut at = start;
        loop {
            let rest = b.get(at..).unwrap_or_default();
            let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                return Ok(Chunk::Incomplete);
            };
            at += end + 2;
            if end == 0 {
                return Ok(Chunk::Last { next: at });
            }
        }
    }
    let next = start + size + 2;
    match b.get(start + size..next) {
        None => Ok(Chunk::Incomplete),
        Some(b"\r\n") => Ok(Chunk::Data {
            start,
            len: size,
            next,
        }),
        Some(_) => bail!("chunk of {size} bytes not followed by CRLF"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_parsed_incrementally() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n";
        assert_eq!(chunk_at(&body[..2]).unwrap(), Chunk::Incomplete);
        assert_eq!(chunk_at(&body[..8]).unwrap(), Chunk::Incomplete);
        assert_eq!(
            chunk_at(body).unwrap(),
            Chunk::Data {
                start: 3,
                len: 5,
                next: 10
            }
        );
        assert_eq!(
            chunk_at(&body[10..]).unwrap(),
            Chunk::Data {
                start: 9,
                len: 3,
                next: 14
            }
        );
        assert_eq!(chunk_at(&body[24..]).unwrap(), Chunk::Last { next: 5 });
        assert_eq!(chunk_at(b"0\r\nx: y\r\n").unwrap(), Chunk::Incomplete);
        assert_eq!(
            chunk_at(b"0\r\nx: y\r\n\r\n").unwrap(),
            Chunk::Last { next: 11 }
        );
        assert!(chunk_at(b"zz\r\n").is_err());
        assert!(chunk_at(b"2\r\nabXY").is_err());
    }

    #[test]
    fn request_has_length_and_host() {
        let r = request_bytes(
            "POST",
            "127.0.0.1:1",
            "/v1/x",
            &[("a".into(), "b".into())],
            b"{}",
        );
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:1\r\na: b\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    #[tokio::test]
    async fn talks_to_the_mock_upstream_json_and_sse() {
        let mock =
            enclave_test_support::MockUpstream::start(enclave_test_support::Behavior::default())
                .await
                .unwrap();
        let mut conn = Conn::connect(mock.addr(), None).await.unwrap();
        let host = mock.addr().to_string();
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        for stream in [false, true, false] {
            let body = format!(
                r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            let req = request_bytes(
                "POST",
                &host,
                "/v1/chat/completions",
                &headers,
                body.as_bytes(),
            );
            let r = conn.exchange_full(&req).await.unwrap();
            assert_eq!(r.status, 200);
            assert!(r.keep_alive);
            let text = String::from_utf8(r.body).unwrap();
            if stream {
                assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
            } else {
                assert!(text.contains("chat.completion"), "{text}");
            }
            let r = conn.exchange(&req).await.unwrap();
            assert_eq!(r.status, 200);
        }
        assert_eq!(mock.requests(), 6);
    }
}
