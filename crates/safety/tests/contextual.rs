//! The cascade: the contextual stage runs only on texts the inline stages leave uncertain,
//! reads every window of a long text, and fails closed when the sentence model fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use enclave_safety::contextual::{DenseHead, MAX_WINDOWS, WINDOW_BYTES};
use enclave_safety::{
    Action, BUILTIN_CONTEXTUAL_MODEL, Category, Classifier, ContextualModel, Direction, Embed,
    Engine, Pack, Scores,
};

/// Inline stand-in: `surveillance/us-persons` 0.5 (uncertain) when the text says "track",
/// 0.99 (certain) when it says "TRACK-FOR-SURE".
struct Inline;

impl Classifier for Inline {
    fn name(&self) -> &'static str {
        "inline"
    }
    fn score(&self, text: &str) -> Scores {
        let mut s = Scores::default();
        if text.contains("TRACK-FOR-SURE") {
            s.set(Category::SurveillanceUsPersons, 0.99);
        } else if text.contains("track") {
            s.set(Category::SurveillanceUsPersons, 0.5);
        }
        s
    }
}

/// Embedding stand-in: dimension 0 is 1 when the window mentions a neighbour, else -1; counts
/// windows; fails when asked to.
struct Fake {
    windows: AtomicUsize,
    fail: bool,
}

impl Embed for Fake {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        if self.fail {
            return Err("model unavailable".into());
        }
        self.windows.fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts
            .iter()
            .map(|t| vec![if t.contains("neighbour") { 1.0 } else { -1.0 }, 0.0])
            .collect())
    }
}

fn model() -> ContextualModel {
    ContextualModel::from_parts(
        2,
        0.1,
        0.95,
        vec![DenseHead {
            category: Category::SurveillanceUsPersons,
            weights: vec![6.0, 0.0],
            bias: 0.0,
            fuse_inline: 0.0,
            fuse_context: 1.0,
            fuse_bias: 0.0,
            band_lo: 0.1,
        }],
    )
}

fn engine(fail: bool) -> (Engine, Arc<Fake>) {
    let fake = Arc::new(Fake {
        windows: AtomicUsize::new(0),
        fail,
    });
    let engine = Engine::with_contextual(
        Pack::builtin("us-federal").unwrap(),
        vec![Box::new(Inline)],
        model(),
        fake.clone(),
    )
    .unwrap();
    (engine, fake)
}

#[test]
fn only_uncertain_texts_reach_the_contextual_stage() {
    let (e, fake) = engine(false);
    // Certain either way: no embedding.
    assert_eq!(
        e.screen("summarize the memo", Direction::Input).action,
        Action::Allow
    );
    assert_eq!(
        e.screen("TRACK-FOR-SURE", Direction::Input).action,
        Action::Block
    );
    assert_eq!(fake.windows.load(Ordering::SeqCst), 0);
    // Uncertain: the contextual stage decides, both ways.
    assert!(e.inline("track the shipment").uncertain);
    assert_eq!(
        e.screen("track the shipment", Direction::Input).action,
        Action::Allow
    );
    assert_eq!(
        e.screen("track my neighbour", Direction::Input).action,
        Action::Block
    );
    assert_eq!(fake.windows.load(Ordering::SeqCst), 2);
}

#[test]
fn an_appended_phrase_in_a_long_text_is_read() {
    let (e, fake) = engine(false);
    let text = format!("{}track my neighbour", "lorem ipsum dolor ".repeat(2000));
    let v = e.screen(&text, Direction::Input);
    assert_eq!(v.action, Action::Block, "{v:?}");
    let seen = fake.windows.load(Ordering::SeqCst);
    assert!(seen > 1 && seen <= MAX_WINDOWS, "{seen}");
    // Longer than MAX_WINDOWS windows: the suspect windows are still the ones embedded.
    let text = format!(
        "{}track my neighbour{}",
        "lorem ipsum dolor ".repeat(WINDOW_BYTES * MAX_WINDOWS / 9),
        " and so on".repeat(3000)
    );
    assert_eq!(e.screen(&text, Direction::Input).action, Action::Block);
}

#[test]
fn a_failed_sentence_model_fails_closed() {
    let (e, _) = engine(true);
    let v = e.screen("track the shipment", Direction::Input);
    assert_eq!(v.action, Action::Block);
    assert!(v.unchecked);
    // Texts the inline stages are sure of do not need it.
    assert_eq!(
        e.screen("summarize the memo", Direction::Input).action,
        Action::Allow
    );
}

#[test]
fn the_committed_heads_load_and_cover_the_contract_categories() {
    let m = ContextualModel::from_bytes(BUILTIN_CONTEXTUAL_MODEL).unwrap();
    assert_eq!(m.dims(), 384);
    for c in [
        Category::SurveillanceUsPersons,
        Category::WeaponsAutonomousTargeting,
        Category::WeaponsCbrn,
        Category::PromptInjection,
    ] {
        assert!(m.heads().iter().any(|h| h.category == c), "{c}");
    }
    assert!(m.band_lo > 0.0 && m.band_lo < m.band_hi && m.band_hi <= 1.0);
}
