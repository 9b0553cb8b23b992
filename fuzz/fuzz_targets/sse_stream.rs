//! Any bytes as a backend's event stream, fed whole and fed in pieces at fuzzer-chosen cuts:
//! no panic, the same events either way, each event's bytes found in the input in order, and
//! every event's data read as a chunk or an error without panicking.
#![no_main]

use enclave_api::{Chunk, ErrorBody, SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

fn events(pieces: &[&[u8]]) -> (Vec<SseEvent>, bool) {
    let mut p = SseParser::new(4096);
    let mut out = Vec::new();
    for piece in pieces {
        if p.push(piece).is_err() {
            return (out, false);
        }
        loop {
            match p.next_event() {
                Ok(Some(e)) => out.push(e),
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    (out, true)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, stream)) = data.split_first() else { return };
    let (whole, ok_whole) = events(&[stream]);
    // Cut the stream every `step` bytes.
    let step = usize::from(cuts).max(1);
    let pieces: Vec<&[u8]> = stream.chunks(step).collect();
    let (split, ok_split) = events(&pieces);
    if ok_whole && ok_split {
        assert_eq!(whole, split, "framing changed the events");
    }
    let mut from = 0;
    for e in &whole {
        let at = stream[from..]
            .windows(e.raw.len().max(1))
            .position(|w| w == &e.raw[..])
            .expect("an event's bytes come from the input");
        from += at + e.raw.len();
        let _ = ErrorBody::from_event(&e.data);
        if let Ok(c) = Chunk::parse(&e.data, Some(e.raw.clone())) {
            assert_eq!(c.event(), e.raw);
            let _ = c.render();
            let _ = c.text();
        }
    }
});
