//! The safety stack on any input: no panic; every detector span lies on character boundaries
//! inside the text; the streaming redactor, fed the text cut at fuzzer-chosen points, returns
//! exactly what redacting the whole text returns; the engine screens the text whole and as a
//! stream; and the weight parsers reject or round-trip any bytes.
#![no_main]

use std::sync::OnceLock;

use enclave_safety::{
    Category, ContextualModel, Direction, Engine, NgramModel, StreamRedactor, StreamStep, detect,
    redact_text,
};
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::builtin().expect("the committed pack and weights load"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ContextualModel::from_bytes(data) {
        assert_eq!(ContextualModel::from_bytes(&m.to_bytes()).ok(), Some(m));
    }
    if let Ok(m) = NgramModel::from_bytes(data) {
        assert_eq!(m.to_bytes(), data);
    }
    let Some((&seed, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    for f in detect(text) {
        assert!(f.span.start <= f.span.end && f.span.end <= text.len());
        assert!(text.is_char_boundary(f.span.start) && text.is_char_boundary(f.span.end));
    }
    // Cut points: every `step`-th character boundary, `step` from the seed.
    let step = usize::from(seed % 17) + 1;
    let cuts: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .filter(|i| *i > 0)
        .step_by(step)
        .chain([text.len()])
        .collect();
    let cats = [Category::Pii, Category::Secrets];
    let mut redactor = StreamRedactor::new(&cats);
    let mut screen = engine().stream();
    let (mut streamed, mut at) = (String::new(), 0);
    let mut stopped = false;
    for cut in cuts {
        let Some(chunk) = text.get(at..cut) else { continue };
        at = cut;
        streamed.push_str(&redactor.push(chunk));
        if !stopped {
            stopped = matches!(screen.push(chunk), StreamStep::Stop(_));
        }
    }
    streamed.push_str(&redactor.finish());
    if !stopped {
        let _ = screen.finish();
    }
    assert_eq!(streamed, redact_text(text, &cats));
    let v = engine().screen(text, Direction::Output);
    let _ = v.redacted(text);
});
