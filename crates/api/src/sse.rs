//! Reading server-sent events incrementally, as a backend streams them.
//!
//! Bytes arrive in frames that split events anywhere; [`SseParser`] buffers at most one event
//! (bounded) and hands out each complete event with its exact bytes, so an event can be
//! forwarded unchanged after its data was read. Lines end in LF, CRLF or CR; comment lines and
//! events without data (keep-alives) are dropped, as the WHATWG event-stream rules say.

use bytes::{Bytes, BytesMut};

/// The default bound on one event's size.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `data` lines, joined with `\n`.
    pub data: String,
    /// Its `event` type, if it named one.
    pub event: Option<String>,
    /// Its exact bytes, from the first line through the blank line that ended it.
    pub raw: Bytes,
}

/// Why a stream could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event grew past the bound.
    #[error("a server-sent event is larger than {0} bytes")]
    TooLarge(usize),
    /// A line is not UTF-8.
    #[error("a server-sent event is not UTF-8")]
    NotUtf8,
    /// The stream ended inside an event.
    #[error("the stream ended in the middle of an event")]
    Truncated,
}

/// An incremental event-stream reader.
#[derive(Debug)]
pub struct SseParser {
    /// The current event's bytes and whatever follows.
    buf: BytesMut,
    /// Where the next unread line of the current event starts, in `buf`.
    line: usize,
    data: String,
    has_data: bool,
    event: Option<String>,
    max_event_bytes: usize,
    started: bool,
}

impl SseParser {
    /// A reader that refuses events larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> SseParser {
        SseParser {
            buf: BytesMut::new(),
            line: 0,
            data: String::new(),
            has_data: false,
            event: None,
            max_event_bytes,
            started: false,
        }
    }

    /// Adds received bytes.
    ///
    /// # Errors
    ///
    /// [`SseError::TooLarge`] when the unread bytes exceed the bound.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        const BOM: &[u8; 3] = b"\xEF\xBB\xBF";
        self.buf.extend_from_slice(bytes);
        // A byte-order mark is skipped only at the very start of the stream. Until the stream's
        // first three bytes have arrived they are still at the front of the buffer: a partial
        // mark holds no line end, so `next_event` cannot have consumed any of them.
        if !self.started {
            let seen = self.buf.len().min(BOM.len());
            if self.buf.get(..seen) != BOM.get(..seen) {
                self.started = true;
            } else if seen == BOM.len() {
                self.started = true;
                let _ = self.buf.split_to(BOM.len());
            }
        }
        // Unread bytes may hold several whole events; only the event in progress is bounded,
        // which `next` checks. Bound the buffer as a whole at twice that.
        if self.buf.len() > self.max_event_bytes.saturating_mul(2) {
            return Err(SseError::TooLarge(self.max_event_bytes));
        }
        Ok(())
    }

    /// The next complete event, if one has arrived.
    ///
    /// # Errors
    ///
    /// [`SseError::NotUtf8`] or [`SseError::TooLarge`]; the stream cannot be read further.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            let rest = self.buf.get(self.line..).unwrap_or_default();
            let Some(at) = memchr::memchr2(b'\n', b'\r', rest) else {
                if self.buf.len() > self.max_event_bytes {
                    return Err(SseError::TooLarge(self.max_event_bytes));
                }
                return Ok(None);
            };
            let end = self.line + at;
            let terminator = match self.buf.get(end) {
                Some(b'\r') => match self.buf.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A CR at the end of what arrived: a LF may follow.
                    None => return Ok(None),
                },
                _ => 1,
            };
            if end > self.max_event_bytes {
                return Err(SseError::TooLarge(self.max_event_bytes));
            }
            let line_start = self.line;
            self.line = end + terminator;
            if end == line_start {
                // A blank line ends the event.
                let raw = self.buf.split_to(self.line).freeze();
                self.line = 0;
                let has_data = std::mem::take(&mut self.has_data);
                let data = std::mem::take(&mut self.data);
                let event = self.event.take();
                if has_data {
                    return Ok(Some(SseEvent { data, event, raw }));
                }
                continue;
            }
            let line = self.buf.get(line_start..end).unwrap_or_default();
            let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                }
                "event" => self.event = Some(value.to_owned()),
                _ => {} // `id`, `retry` and unknown fields do not matter here
            }
        }
    }

    /// Checks that the stream did not end inside an event.
    ///
    /// # Errors
    ///
    /// [`SseError::Truncated`] when unread bytes hold a started event.
    pub fn finish(&self) -> Result<(), SseError> {
        if self.has_data || self.buf.iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(SseError::Truncated);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut SseParser) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = parser.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    const STREAM: &[u8] = b": comment\n\ndata: {\"a\":1}\n\nevent: x\r\ndata: line1\r\ndata:line2\r\n\r\nid: 3\ndata\n\ndata: [DONE]\n\n";

    #[test]
    fn events_with_their_exact_bytes() {
        let mut p = SseParser::new(1024);
        p.push(STREAM).unwrap();
        let events = all(&mut p);
        let datas: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(datas, ["{\"a\":1}", "line1\nline2", "", "[DONE]"]);
        assert_eq!(events[0].raw, Bytes::from_static(b"data: {\"a\":1}\n\n"));
        assert_eq!(events[1].event.as_deref(), Some("x"));
        assert_eq!(events[3].raw, Bytes::from_static(b"data: [DONE]\n\n"));
        p.finish().unwrap();
    }

    #[test]
    fn a_split_at_every_byte_gives_the_same_events() {
        let mut whole = SseParser::new(1024);
        whole.push(STREAM).unwrap();
        let expected = all(&mut whole);
        for cut in 0..=STREAM.len() {
            let mut p = SseParser::new(1024);
            p.push(&STREAM[..cut]).unwrap();
            let mut got = all(&mut p);
            p.push(&STREAM[cut..]).unwrap();
            got.extend(all(&mut p));
            assert_eq!(got, expected, "cut at {cut}");
        }
        // One byte at a time.
        let mut p = SseParser::new(1024);
        let mut got = Vec::new();
        for b in STREAM {
            p.push(&[*b]).unwrap();
            got.extend(all(&mut p));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn a_byte_order_mark_is_skipped_only_at_the_start_of_the_stream() {
        // Found by the `sse_stream` fuzz target: fed a byte at a time, a mark after a first
        // blank line was taken for the stream's own.
        for stream in [
            &b"\xEF\xBB\xBFdata: a\n\n"[..],
            &b"\n\xEF\xBB\xBFdata: a\n\n"[..],
            &b"\n\xEF\xBB\xBF:x\ndata: a\n\n"[..],
        ] {
            let mut whole = SseParser::new(4096);
            whole.push(stream).unwrap();
            let want = all(&mut whole);
            let mut split = SseParser::new(4096);
            let mut got = Vec::new();
            for b in stream {
                split.push(&[*b]).unwrap();
                got.extend(all(&mut split));
            }
            assert_eq!(got, want, "{stream:?}");
        }
        let mut p = SseParser::new(4096);
        p.push(b"\xEF\xBB\xBFdata: a\n\n").unwrap();
        assert_eq!(all(&mut p)[0].data, "a");
    }

    #[test]
    fn bounds_and_truncation() {
        let mut p = SseParser::new(16);
        p.push(b"data: 0123456789abcdefghij").unwrap();
        assert_eq!(p.next_event(), Err(SseError::TooLarge(16)));
        let mut p = SseParser::new(16);
        assert!(p.push(&[b'x'; 40]).is_err());
        let mut p = SseParser::new(64);
        p.push(b"data: half").unwrap();
        assert_eq!(p.next_event(), Ok(None));
        assert_eq!(p.finish(), Err(SseError::Truncated));
        let mut p = SseParser::new(64);
        p.push(b"data: \xff\n\n").unwrap();
        assert_eq!(p.next_event(), Err(SseError::NotUtf8));
    }
}
