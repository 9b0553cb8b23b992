//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), decoded
//! incrementally.
//!
//! ConverseStream answers with a sequence of messages, each framed as:
//!
//! ```text
//! total length u32 BE | headers length u32 BE | prelude CRC32 u32 BE   (the 12-byte prelude)
//! headers (headers length bytes)
//! payload (total length - headers length - 16 bytes)
//! message CRC32 u32 BE (over everything before it)
//! ```
//!
//! A header is a name (length u8, then UTF-8 bytes), a type byte (0 to 9) and a typed value.
//! [`Decoder`] is fed bytes in pieces of any size and yields whole [`Message`]s; a bad CRC, a
//! message over its size cap, or a malformed header is an [`EventStreamError`], after which the
//! stream is unusable (the framing cannot be trusted to find the next message).
//!
//! The decoder is a synchronous state machine: no I/O, no async.

use bytes::{Buf, Bytes, BytesMut};

/// The largest message [`Decoder::new`] accepts by default (16 MiB, AWS's own limit).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Prelude (12 bytes) and message CRC (4 bytes): the smallest message has no headers and no
/// payload.
const MIN_MESSAGE_BYTES: usize = 16;
const PRELUDE_BYTES: usize = 12;

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its headers, in order (names are unique).
    pub headers: Vec<Header>,
    /// Its payload (JSON for Bedrock's events and exceptions).
    pub payload: Bytes,
}

/// A header of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its name (`:message-type`, `:event-type`, …).
    pub name: String,
    /// Its typed value.
    pub value: HeaderValue,
}

/// The typed value of a [`Header`]; the wire type byte is in each variant's doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// 0 (true) or 1 (false): no value bytes.
    Bool(bool),
    /// 2: one signed byte.
    Byte(i8),
    /// 3: i16 BE.
    Short(i16),
    /// 4: i32 BE.
    Int(i32),
    /// 5: i64 BE.
    Long(i64),
    /// 6: u16 BE length, then bytes.
    Bytes(Bytes),
    /// 7: u16 BE length, then UTF-8.
    String(String),
    /// 8: i64 BE milliseconds since the Unix epoch.
    Timestamp(i64),
    /// 9: 16 bytes.
    Uuid([u8; 16]),
}

/// Why an event stream cannot be read further.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventStreamError {
    /// The prelude's CRC does not match its first 8 bytes.
    #[error(
        "event stream: prelude checksum mismatch (expected {expected:#010x}, computed {computed:#010x})"
    )]
    PreludeChecksum {
        /// The CRC the message carries.
        expected: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// The message's CRC does not match its bytes.
    #[error(
        "event stream: message checksum mismatch (expected {expected:#010x}, computed {computed:#010x})"
    )]
    MessageChecksum {
        /// The CRC the message carries.
        expected: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// The prelude announces a message larger than the cap.
    #[error("event stream: a message of {length} bytes is over the limit of {max} bytes")]
    TooLong {
        /// The announced total length.
        length: usize,
        /// The cap.
        max: usize,
    },
    /// The prelude's lengths do not fit together.
    #[error(
        "event stream: invalid lengths (total {total}, headers {headers}): the total must be at least 16 and hold the headers"
    )]
    BadLengths {
        /// The announced total length.
        total: usize,
        /// The announced headers length.
        headers: usize,
    },
    /// A header is malformed.
    #[error("event stream: malformed header: {0}")]
    BadHeader(String),
    /// The stream ended inside a message.
    #[error("event stream: the stream ended inside a message ({0} bytes left over)")]
    Truncated(usize),
}

/// An incremental decoder: [`push`](Decoder::push) bytes as they arrive, then take
/// [`next_message`](Decoder::next_message) until it returns `None`.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_message_bytes: usize,
    /// A message failed: nothing more is decoded.
    failed: Option<EventStreamError>,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl Decoder {
    /// A decoder refusing messages over `max_message_bytes` (prelude and CRC included).
    pub fn new(max_message_bytes: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            max_message_bytes,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next whole message, `None` if more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`EventStreamError`] for a bad CRC, a message over the cap, impossible lengths or a
    /// malformed header; the same error again on every later call.
    pub fn next_message(&mut self) -> Result<Option<Message>, EventStreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.decode() {
            Ok(m) => Ok(m),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf.clear();
                Err(e)
            }
        }
    }

    /// Checks that the stream ended between messages.
    ///
    /// # Errors
    ///
    /// [`EventStreamError::Truncated`] when bytes of an unfinished message remain, or the error
    /// that stopped decoding.
    pub fn finish(&self) -> Result<(), EventStreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(EventStreamError::Truncated(self.buf.len()))
        }
    }

    fn decode(&mut self) -> Result<Option<Message>, EventStreamError> {
        let Some(prelude) = self.buf.get(..PRELUDE_BYTES) else {
            return Ok(None);
        };
        let total = be_u32(prelude, 0) as usize;
        let headers_len = be_u32(prelude, 4) as usize;
        let prelude_crc = be_u32(prelude, 8);
        // The prelude is checked before waiting for the rest, so a corrupt length cannot make
        // the decoder wait for (or buffer) bytes that will never form a message.
        let computed = crc32fast::hash(prelude.get(..8).unwrap_or_default());
        if computed != prelude_crc {
            return Err(EventStreamError::PreludeChecksum {
                expected: prelude_crc,
                computed,
            });
        }
        if total > self.max_message_bytes {
            return Err(EventStreamError::TooLong {
                length: total,
                max: self.max_message_bytes,
            });
        }
        if total < MIN_MESSAGE_BYTES || headers_len > total - MIN_MESSAGE_BYTES {
            return Err(EventStreamError::BadLengths {
                total,
                headers: headers_len,
            });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        let body_end = total - 4;
        let message_crc = be_u32(&frame, body_end);
        let computed = crc32fast::hash(frame.get(..body_end).unwrap_or_default());
        if computed != message_crc {
            return Err(EventStreamError::MessageChecksum {
                expected: message_crc,
                computed,
            });
        }
        let headers_end = PRELUDE_BYTES + headers_len;
        let headers = parse_headers(frame.slice(PRELUDE_BYTES..headers_end))?;
        Ok(Some(Message {
            headers,
            payload: frame.slice(headers_end..body_end),
        }))
    }
}

impl Message {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// The string value of header `name`, if present and a string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        match self.header(name)? {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The message in wire form (for tests and fuzzing seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut headers = Vec::new();
        for h in &self.headers {
            let name = h.name.as_bytes();
            headers.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            headers.extend_from_slice(name.get(..usize::from(u8::MAX)).unwrap_or(name));
            match &h.value {
                HeaderValue::Bool(true) => headers.push(0),
                HeaderValue::Bool(false) => headers.push(1),
                HeaderValue::Byte(v) => {
                    headers.push(2);
                    headers.extend_from_slice(&v.to_be_bytes());
                }
                HeaderValue::Short(v) => {
                    headers.push(3);
                    headers.extend_from_slice(&v.to_be_bytes());
                }
                HeaderValue::Int(v) => {
                    headers.push(4);
                    headers.extend_from_slice(&v.to_be_bytes());
                }
                HeaderValue::Long(v) => {
                    headers.push(5);
                    headers.extend_from_slice(&v.to_be_bytes());
                }
                HeaderValue::Bytes(b) => {
                    headers.push(6);
                    push_short_bytes(&mut headers, b);
                }
                HeaderValue::String(s) => {
                    headers.push(7);
                    push_short_bytes(&mut headers, s.as_bytes());
                }
                HeaderValue::Timestamp(v) => {
                    headers.push(8);
                    headers.extend_from_slice(&v.to_be_bytes());
                }
                HeaderValue::Uuid(u) => {
                    headers.push(9);
                    headers.extend_from_slice(u);
                }
            }
        }
        let total = MIN_MESSAGE_BYTES + headers.len() + self.payload.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(
            &u32::try_from(headers.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        let prelude_crc = crc32fast::hash(&out);
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        out.extend_from_slice(&headers);
        out.extend_from_slice(&self.payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }
}

fn push_short_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let b = b.get(..usize::from(u16::MAX)).unwrap_or(b);
    out.extend_from_slice(&u16::try_from(b.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

/// The u32 BE at `at` (0 when out of range; callers check lengths first).
fn be_u32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn parse_headers(mut b: Bytes) -> Result<Vec<Header>, EventStreamError> {
    let bad = |m: &str| EventStreamError::BadHeader(m.to_owned());
    let mut out: Vec<Header> = Vec::new();
    while b.has_remaining() {
        let name_len = usize::from(b.get_u8());
        if name_len == 0 {
            return Err(bad("a header has an empty name"));
        }
        let name = take(&mut b, name_len).ok_or_else(|| bad("a header name runs past the end"))?;
        let name =
            String::from_utf8(name.to_vec()).map_err(|_| bad("a header name is not UTF-8"))?;
        if out.iter().any(|h| h.name == name) {
            return Err(EventStreamError::BadHeader(format!(
                "header `{}` appears twice",
                name.escape_debug()
            )));
        }
        if !b.has_remaining() {
            return Err(bad("a header has no type"));
        }
        let kind = b.get_u8();
        let short = |b: &mut Bytes, n: usize| {
            take(b, n).ok_or_else(|| {
                EventStreamError::BadHeader(format!(
                    "the value of `{}` runs past the end",
                    name.escape_debug()
                ))
            })
        };
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(short(&mut b, 1)?.get_i8()),
            3 => HeaderValue::Short(short(&mut b, 2)?.get_i16()),
            4 => HeaderValue::Int(short(&mut b, 4)?.get_i32()),
            5 => HeaderValue::Long(short(&mut b, 8)?.get_i64()),
            6 | 7 => {
                let len = usize::from(short(&mut b, 2)?.get_u16());
                let v = short(&mut b, len)?;
                if kind == 6 {
                    HeaderValue::Bytes(v)
                } else {
                    HeaderValue::String(String::from_utf8(v.to_vec()).map_err(|_| {
                        EventStreamError::BadHeader(format!(
                            "the value of `{}` is not UTF-8",
                            name.escape_debug()
                        ))
                    })?)
                }
            }
            8 => HeaderValue::Timestamp(short(&mut b, 8)?.get_i64()),
            9 => {
                let v = short(&mut b, 16)?;
                let mut u = [0u8; 16];
                u.copy_from_slice(&v);
                HeaderValue::Uuid(u)
            }
            other => {
                return Err(EventStreamError::BadHeader(format!(
                    "`{}` has unknown type {other}",
                    name.escape_debug()
                )));
            }
        };
        out.push(Header { name, value });
    }
    Ok(out)
}

/// The next `n` bytes, if there are that many.
fn take(b: &mut Bytes, n: usize) -> Option<Bytes> {
    (b.remaining() >= n).then(|| b.split_to(n))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(kind: &str, payload: &str) -> Message {
        Message {
            headers: vec![
                Header {
                    name: ":event-type".into(),
                    value: HeaderValue::String(kind.into()),
                },
                Header {
                    name: ":content-type".into(),
                    value: HeaderValue::String("application/json".into()),
                },
                Header {
                    name: ":message-type".into(),
                    value: HeaderValue::String("event".into()),
                },
            ],
            payload: Bytes::from(payload.to_owned()),
        }
    }

    fn all_types() -> Message {
        let h = |name: &str, value| Header {
            name: name.into(),
            value,
        };
        Message {
            headers: vec![
                h("t", HeaderValue::Bool(true)),
                h("f", HeaderValue::Bool(false)),
                h("byte", HeaderValue::Byte(-3)),
                h("short", HeaderValue::Short(-300)),
                h("int", HeaderValue::Int(70_000)),
                h("long", HeaderValue::Long(-5_000_000_000)),
                h("bytes", HeaderValue::Bytes(Bytes::from_static(b"\x00\xff"))),
                h("string", HeaderValue::String("héllo".into())),
                h("ts", HeaderValue::Timestamp(1_700_000_000_000)),
                h("uuid", HeaderValue::Uuid([7; 16])),
            ],
            payload: Bytes::from_static(b"{}"),
        }
    }

    fn decode_all(pieces: &[&[u8]]) -> Result<Vec<Message>, EventStreamError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for p in pieces {
            d.push(p);
            while let Some(m) = d.next_message()? {
                out.push(m);
            }
        }
        d.finish()?;
        Ok(out)
    }

    /// A frame written byte by byte from the format's description (an int32 header, as in the
    /// "int32 header" case of AWS's event-stream test suite), its CRCs computed independently
    /// with Python's `zlib.crc32`: the framing and the CRC-32 variant are AWS's, not merely
    /// consistent with our own encoder.
    #[test]
    fn a_frame_written_from_the_format_decodes() {
        let frame: &[u8] = &[
            0x00, 0x00, 0x00, 0x2d, 0x00, 0x00, 0x00, 0x10, 0x41, 0xc4, 0x24, 0xb8, 0x0a, b'e',
            b'v', b'e', b'n', b't', b'-', b't', b'y', b'p', b'e', 0x04, 0x00, 0x00, 0xa0, 0x0c,
            b'{', b'\'', b'f', b'o', b'o', b'\'', b':', b'\'', b'b', b'a', b'r', b'\'', b'}', 0x36,
            0xf4, 0x80, 0xa0,
        ];
        let msgs = decode_all(&[frame]).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].header("event-type"), Some(&HeaderValue::Int(40972)));
        assert_eq!(msgs[0].payload, "{'foo':'bar'}");
        assert_eq!(msgs[0].encode(), frame);
    }

    #[test]
    fn every_header_type_round_trips() {
        let m = all_types();
        let msgs = decode_all(&[&m.encode()]).unwrap();
        assert_eq!(msgs, vec![m]);
    }

    #[test]
    fn an_empty_message_is_sixteen_bytes() {
        let m = Message {
            headers: Vec::new(),
            payload: Bytes::new(),
        };
        let wire = m.encode();
        assert_eq!(wire.len(), 16);
        assert_eq!(decode_all(&[&wire]).unwrap(), vec![m]);
    }

    #[test]
    fn a_corrupted_byte_anywhere_is_refused() {
        let wire = event("contentBlockDelta", r#"{"delta":{"text":"hi"}}"#).encode();
        for i in 0..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x01;
            let e = decode_all(&[&bad]).unwrap_err();
            assert!(
                matches!(
                    e,
                    EventStreamError::PreludeChecksum { .. }
                        | EventStreamError::MessageChecksum { .. }
                ),
                "byte {i}: {e}"
            );
        }
    }

    #[test]
    fn an_oversized_message_is_refused_from_its_prelude() {
        let wire = event("x", &"a".repeat(100)).encode();
        let mut d = Decoder::new(64);
        d.push(&wire[..12]);
        let e = d.next_message().unwrap_err();
        assert!(
            matches!(e, EventStreamError::TooLong { max: 64, .. }),
            "{e}"
        );
        // And stays refused.
        d.push(&wire[12..]);
        assert_eq!(d.next_message().unwrap_err(), e);
        assert!(d.finish().is_err());
    }

    #[test]
    fn impossible_lengths_are_refused() {
        for (total, headers) in [(8u32, 0u32), (20, 5), (16, 1)] {
            let mut wire = Vec::new();
            wire.extend_from_slice(&total.to_be_bytes());
            wire.extend_from_slice(&headers.to_be_bytes());
            let crc = crc32fast::hash(&wire);
            wire.extend_from_slice(&crc.to_be_bytes());
            let e = decode_all(&[&wire]).unwrap_err();
            assert!(matches!(e, EventStreamError::BadLengths { .. }), "{e}");
        }
    }

    /// A frame with the given raw header bytes and valid CRCs.
    fn with_headers(headers: &[u8]) -> Vec<u8> {
        let total = (16 + headers.len()) as u32;
        let mut wire = Vec::new();
        wire.extend_from_slice(&total.to_be_bytes());
        wire.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&wire);
        wire.extend_from_slice(&crc.to_be_bytes());
        wire.extend_from_slice(headers);
        let crc = crc32fast::hash(&wire);
        wire.extend_from_slice(&crc.to_be_bytes());
        wire
    }

    #[test]
    fn malformed_headers_are_refused() {
        for (headers, want) in [
            (&b"\x00"[..], "empty name"),
            (b"\x05ab", "runs past the end"),
            (b"\x01a", "no type"),
            (b"\x01a\x0a", "unknown type 10"),
            (b"\x01a\x04\x00\x01", "runs past the end"),
            (b"\x01a\x07\x00\x05abc", "runs past the end"),
            (b"\x01a\x07\x00\x01\xff", "not UTF-8"),
            (b"\x01\xff\x00", "not UTF-8"),
            (b"\x01a\x00\x01a\x01", "appears twice"),
        ] {
            let e = decode_all(&[&with_headers(headers)]).unwrap_err();
            assert!(
                matches!(&e, EventStreamError::BadHeader(m) if m.contains(want)),
                "{headers:?}: {e}"
            );
        }
    }

    #[test]
    fn a_stream_ending_inside_a_message_is_truncated() {
        let wire = event("x", "{}").encode();
        let e = decode_all(&[&wire[..wire.len() - 1]]).unwrap_err();
        assert_eq!(e, EventStreamError::Truncated(wire.len() - 1));
        assert_eq!(
            decode_all(&[&wire[..5]]).unwrap_err(),
            EventStreamError::Truncated(5)
        );
    }

    proptest! {
        #[test]
        fn splitting_at_every_position_yields_the_same_messages(
            payloads in proptest::collection::vec(".{0,40}", 1..4),
        ) {
            let messages: Vec<Message> = payloads
                .iter()
                .map(|p| event("contentBlockDelta", p))
                .chain([all_types()])
                .collect();
            let wire: Vec<u8> = messages.iter().flat_map(Message::encode).collect();
            for cut in 0..=wire.len() {
                let (a, b) = wire.split_at(cut);
                prop_assert_eq!(&decode_all(&[a, b]).unwrap(), &messages);
            }
            // And one byte at a time.
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            prop_assert_eq!(&decode_all(&bytes).unwrap(), &messages);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_all(&[&bytes]);
        }
    }
}
