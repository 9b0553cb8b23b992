//! Training and evaluating the n-gram model from labelled examples (`enclave safety train` and
//! `enclave safety eval`). Pure: the caller reads the files and passes their text.
//!
//! Examples are JSON lines `{"text", "labels": [category…], "ignore": [category…]}`: a text is
//! a positive for each category in `labels`, is not used for the categories in `ignore` (its
//! source says nothing about them), and is a negative for every other category. Each text goes
//! to the train, calibration or test split by a hash of its text (70 / 15 / 15), so the split is
//! the same on every machine and a text never lands in two splits. Files whose source name
//! contains `heldout` are never trained on: they measure false positives on benign work.
//!
//! Training: per category, logistic regression over the hashed features of
//! [`crate::NgramModel`], AdaGrad with L2 regularization, a fixed number of epochs over the
//! train split in an order shuffled by a seeded generator (deterministic); weights quantized to
//! `i8`; then Platt scaling fitted on the calibration split's logits of the quantized model.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Deserialize;

use crate::category::Category;
use crate::engine::Engine;
use crate::ngram::{Head, NgramModel, features_whole, sigmoid};

/// Which split a text belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Trained on.
    Train,
    /// Used to fit the calibration (Platt scaling) only.
    Calibration,
    /// Never seen by training: evaluation only.
    Test,
}

impl Split {
    /// Its name in reports and on the command line (`train`, `calibration`, `test`).
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Calibration => "calibration",
            Split::Test => "test",
        }
    }

    /// Its name at the start of a sentence (`Test`).
    pub fn title(self) -> &'static str {
        match self {
            Split::Train => "Train",
            Split::Calibration => "Calibration",
            Split::Test => "Test",
        }
    }
}

/// One labelled text.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// The text.
    pub text: String,
    /// The categories it is a positive for.
    pub labels: Vec<Category>,
    /// The categories it says nothing about.
    pub ignore: Vec<Category>,
    /// Where it came from (the data folder's name).
    pub source: String,
    /// Its split.
    pub split: Split,
}

impl Example {
    /// The label of this example for `c`: `Some(true)` positive, `Some(false)` negative, `None`
    /// not used.
    pub fn label(&self, c: Category) -> Option<bool> {
        if self.labels.contains(&c) {
            Some(true)
        } else if self.ignore.contains(&c) {
            None
        } else {
            Some(false)
        }
    }

    /// Whether the example is benign work held out of training.
    pub fn is_heldout(&self) -> bool {
        self.source.contains("heldout")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    text: String,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
}

/// The split of a text: FNV-1a (64 bits) of its bytes, modulo 100.
pub fn split_of(text: &str) -> Split {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.trim().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    match h % 100 {
        0..70 => Split::Train,
        70..85 => Split::Calibration,
        _ => Split::Test,
    }
}

/// Parses one JSON-lines file of examples from `source`.
///
/// # Errors
///
/// A message naming the source and line when a line is not an example or names an unknown
/// category.
pub fn parse_examples(source: &str, text: &str) -> Result<Vec<Example>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawExample =
            serde_json::from_str(line).map_err(|e| format!("{source} line {}: {e}", n + 1))?;
        let cats = |names: &[String]| -> Result<Vec<Category>, String> {
            names
                .iter()
                .map(|s| {
                    Category::parse(s)
                        .ok_or_else(|| format!("{source} line {}: unknown category {s:?}", n + 1))
                })
                .collect()
        };
        let split = split_of(&raw.text);
        out.push(Example {
            labels: cats(&raw.labels)?,
            ignore: cats(&raw.ignore)?,
            split,
            text: raw.text,
            source: source.to_owned(),
        });
    }
    Ok(out)
}

/// Training settings. [`TrainConfig::default`] is what made the committed weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// `log2` of the number of hash buckets.
    pub buckets_log2: u32,
    /// Passes over the train split.
    pub epochs: u32,
    /// AdaGrad's base learning rate.
    pub learning_rate: f32,
    /// L2 penalty per update.
    pub l2: f32,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Upper bound of the positive-class weight (`√(negatives / positives)`, capped).
    pub max_positive_weight: f32,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            buckets_log2: 18,
            epochs: 8,
            learning_rate: 0.2,
            l2: 1e-6,
            seed: 0x5afe_2026,
            max_positive_weight: 6.0,
        }
    }
}

/// The categories the n-gram model learns (the rest are the detectors').
pub const LEARNED: [Category; 18] = [
    Category::Harassment,
    Category::HarassmentThreatening,
    Category::Hate,
    Category::HateThreatening,
    Category::Illicit,
    Category::IllicitViolent,
    Category::SelfHarm,
    Category::SelfHarmIntent,
    Category::SelfHarmInstructions,
    Category::Sexual,
    Category::SexualMinors,
    Category::Violence,
    Category::ViolenceGraphic,
    Category::SurveillanceUsPersons,
    Category::WeaponsAutonomousTargeting,
    Category::WeaponsCbrn,
    Category::CyberOffensive,
    Category::PromptInjection,
];

/// A sparse, length-normalized feature vector: `(bucket, value)`.
fn sparse(text: &str, mask: u32) -> Vec<(u32, f32)> {
    let feats = features_whole(text);
    // Presence, as inference reads it (see `ngram`): each bucket once.
    let mut counts: HashMap<u32, f32> = HashMap::new();
    for f in &feats {
        counts.insert(f & mask, 1.0);
    }
    #[expect(clippy::cast_precision_loss, reason = "feature counts are small")]
    let norm = 1.0 / (counts.len() as f32 + crate::ngram::NORM_SMOOTHING).sqrt();
    *counts
        .entry(crate::ngram::pad_feature() & mask)
        .or_insert(0.0) += crate::ngram::NORM_SMOOTHING.sqrt();
    let mut v: Vec<(u32, f32)> = counts.into_iter().map(|(k, c)| (k, c * norm)).collect();
    v.sort_unstable_by_key(|(k, _)| *k);
    v
}

/// xorshift64*: a small deterministic generator for the shuffle.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Trains the model on the train split of `examples` and calibrates it on the calibration
/// split. Categories without a positive in the train split get no head.
pub fn train(examples: &[Example], config: &TrainConfig) -> NgramModel {
    let buckets = 1usize << config.buckets_log2;
    let mask = u32::try_from(buckets - 1).unwrap_or(u32::MAX);
    let train: Vec<&Example> = examples
        .iter()
        .filter(|e| e.split == Split::Train && !e.is_heldout())
        .collect();
    let cats: Vec<Category> = LEARNED
        .into_iter()
        .filter(|c| train.iter().any(|e| e.label(*c) == Some(true)))
        .collect();
    let k = cats.len();
    let xs: Vec<Vec<(u32, f32)>> = train.iter().map(|e| sparse(&e.text, mask)).collect();
    let ys: Vec<Vec<Option<bool>>> = train
        .iter()
        .map(|e| cats.iter().map(|c| e.label(*c)).collect())
        .collect();
    let pos_weight: Vec<f32> = (0..k)
        .map(|j| {
            let pos = ys.iter().filter(|y| y.get(j) == Some(&Some(true))).count();
            let neg = ys.iter().filter(|y| y.get(j) == Some(&Some(false))).count();
            #[expect(clippy::cast_precision_loss, reason = "counts are small")]
            let r = (neg.max(1) as f32 / pos.max(1) as f32).sqrt();
            r.clamp(1.0, config.max_positive_weight)
        })
        .collect();
    let mut w = vec![0f32; buckets * k];
    let mut g2 = vec![0f32; buckets * k];
    // The bias starts at the weighted prior log-odds: AdaGrad's step on a parameter every
    // example touches shrinks fast, so a bias started at 0 stays near 0, and a text with little
    // evidence (a word or two) would score near the middle instead of near the prior.
    let mut bias: Vec<f32> = (0..k)
        .map(|j| {
            let pos = ys.iter().filter(|y| y.get(j) == Some(&Some(true))).count();
            let neg = ys.iter().filter(|y| y.get(j) == Some(&Some(false))).count();
            #[expect(clippy::cast_precision_loss, reason = "counts are small")]
            let odds =
                pos.max(1) as f32 * pos_weight.get(j).copied().unwrap_or(1.0) / neg.max(1) as f32;
            odds.ln()
        })
        .collect();
    let mut bias_g2 = vec![0f32; k];
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut rng = Rng(config.seed | 1);
    let lr = config.learning_rate;
    for _ in 0..config.epochs {
        for i in (1..order.len()).rev() {
            #[expect(clippy::cast_possible_truncation, reason = "modulo a usize")]
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &i in &order {
            let (Some(x), Some(y)) = (xs.get(i), ys.get(i)) else {
                continue;
            };
            for (h, label) in y.iter().enumerate() {
                let Some(label) = label else { continue };
                let mut z = bias.get(h).copied().unwrap_or(0.0);
                for (b, v) in x {
                    z += w.get(*b as usize * k + h).copied().unwrap_or(0.0) * v;
                }
                let target = if *label { 1.0 } else { 0.0 };
                let weight = if *label {
                    pos_weight.get(h).copied().unwrap_or(1.0)
                } else {
                    1.0
                };
                let g = (sigmoid(z) - target) * weight;
                for (b, v) in x {
                    let at = *b as usize * k + h;
                    if let (Some(wi), Some(gi)) = (w.get_mut(at), g2.get_mut(at)) {
                        let grad = g * v + config.l2 * *wi;
                        *gi += grad * grad;
                        *wi -= lr * grad / (gi.sqrt() + 1e-6);
                    }
                }
                if let (Some(bi), Some(gi)) = (bias.get_mut(h), bias_g2.get_mut(h)) {
                    *gi += g * g;
                    *bi -= lr * g / (gi.sqrt() + 1e-6);
                }
            }
        }
    }
    // Quantize: one scale per head, the largest magnitude maps to 127.
    let mut heads = Vec::with_capacity(k);
    let mut q = vec![0i8; buckets * k];
    for (h, c) in cats.iter().enumerate() {
        let max = (0..buckets)
            .filter_map(|b| w.get(b * k + h))
            .fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        for b in 0..buckets {
            if let (Some(src), Some(dst)) = (w.get(b * k + h), q.get_mut(b * k + h)) {
                #[expect(clippy::cast_possible_truncation, reason = "clamped to i8's range")]
                let v = (src / scale).round().clamp(-127.0, 127.0) as i8;
                *dst = v;
            }
        }
        heads.push(Head {
            category: *c,
            bias: bias.get(h).copied().unwrap_or(0.0),
            scale,
            platt_a: 1.0,
            platt_b: 0.0,
        });
    }
    let mut model = match NgramModel::from_parts(config.buckets_log2, heads.clone(), q.clone()) {
        Ok(m) => m,
        Err(_) => return NgramModel::empty(),
    };
    // Platt scaling on the calibration split.
    let calib: Vec<(&Example, Vec<f32>)> = examples
        .iter()
        .filter(|e| e.split == Split::Calibration && !e.is_heldout())
        .map(|e| (e, model.raw_logits(&e.text)))
        .collect();
    for (h, head) in heads.iter_mut().enumerate() {
        let pairs: Vec<(f32, bool)> = calib
            .iter()
            .filter_map(|(e, l)| Some((*l.get(h)?, e.label(head.category)?)))
            .collect();
        let (a, b) = platt(&pairs);
        head.platt_a = a;
        head.platt_b = b;
    }
    if let Ok(m) = NgramModel::from_parts(config.buckets_log2, heads, q) {
        model = m;
    }
    model
}

/// Per head, the threshold on the calibrated probability that maximizes F1 on the calibration
/// split (what the `us-federal` pack's thresholds were set from): `(category, threshold, F1)`.
/// The candidates are 0.05, 0.10, … 0.90.
pub fn suggest_thresholds(model: &NgramModel, examples: &[Example]) -> Vec<(Category, f32, f64)> {
    let calib: Vec<(&Example, Vec<f32>)> = examples
        .iter()
        .filter(|e| e.split == Split::Calibration && !e.is_heldout())
        .map(|e| (e, model.score_heads(&e.text)))
        .collect();
    let mut out = Vec::new();
    for (h, head) in model.heads().iter().enumerate() {
        let pairs: Vec<(f32, bool)> = calib
            .iter()
            .filter_map(|(e, p)| Some((*p.get(h)?, e.label(head.category)?)))
            .collect();
        let mut best = (0.5f32, 0.0f64);
        for step in 1..=18u8 {
            let t = f32::from(step) * 0.05;
            let tp = pairs.iter().filter(|(p, y)| *y && *p >= t).count();
            let fp = pairs.iter().filter(|(p, y)| !*y && *p >= t).count();
            let pos = pairs.iter().filter(|(_, y)| *y).count();
            let f1 = if tp == 0 {
                0.0
            } else {
                2.0 * ratio(tp, tp + fp) * ratio(tp, pos) / (ratio(tp, tp + fp) + ratio(tp, pos))
            };
            if f1 > best.1 {
                best = (t, f1);
            }
        }
        out.push((head.category, best.0, best.1));
    }
    out
}

/// Fits `p = σ(a·z + b)` to `(logit, label)` pairs by Newton's method on the log loss with
/// Platt's smoothed targets. `(1, 0)` when a class is missing.
pub fn platt(pairs: &[(f32, bool)]) -> (f32, f32) {
    let pos = pairs.iter().filter(|(_, y)| *y).count();
    let neg = pairs.len() - pos;
    if pos == 0 || neg == 0 {
        return (1.0, 0.0);
    }
    #[expect(clippy::cast_precision_loss, reason = "counts are small")]
    let (hi, lo) = (
        (pos as f64 + 1.0) / (pos as f64 + 2.0),
        1.0 / (neg as f64 + 2.0),
    );
    let loss = |a: f64, b: f64| -> f64 {
        pairs
            .iter()
            .map(|(z, y)| {
                let t = if *y { hi } else { lo };
                let m = a * f64::from(*z) + b;
                // log(1 + e^m) - t·m, computed stably.
                let softplus = if m > 0.0 {
                    m + (-m).exp().ln_1p()
                } else {
                    m.exp().ln_1p()
                };
                softplus - t * m
            })
            .sum()
    };
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let mut current = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for (z, y) in pairs {
            let z = f64::from(*z);
            let t = if *y { hi } else { lo };
            let p = 1.0 / (1.0 + (-(a * z + b)).exp());
            let d = p - t;
            ga += d * z;
            gb += d;
            let s = p * (1.0 - p);
            haa += s * z * z;
            hab += s * z;
            hbb += s;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-12 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        // Backtracking: halve the Newton step until the loss goes down.
        let mut step = 1.0;
        let mut improved = false;
        while step > 1e-6 {
            let (na, nb) = (a - step * da, b - step * db);
            let l = loss(na, nb);
            if l < current {
                a = na;
                b = nb;
                current = l;
                improved = true;
                break;
            }
            step /= 2.0;
        }
        if !improved || (da.abs() < 1e-7 && db.abs() < 1e-7) {
            break;
        }
    }
    #[expect(clippy::cast_possible_truncation, reason = "parameters are small")]
    (a as f32, b as f32)
}

/// Fits `p = σ(a·x₀ + b·x₁ + c)` to `(features, label)` rows by Newton's method on the log
/// loss with Platt's smoothed targets and a small ridge; returns `[a, b, c]`. `[1, 0, 0]` when a
/// class is missing.
#[expect(
    clippy::indexing_slicing,
    reason = "fixed 2- and 3-element arrays indexed by loops bounded by their length"
)]
pub fn platt_fit(rows: &[([f32; 2], bool)]) -> [f32; 3] {
    let pos = rows.iter().filter(|(_, y)| *y).count();
    let neg = rows.len() - pos;
    if pos == 0 || neg == 0 {
        return [1.0, 0.0, 0.0];
    }
    #[expect(clippy::cast_precision_loss, reason = "counts are small")]
    let (hi, lo) = (
        (pos as f64 + 1.0) / (pos as f64 + 2.0),
        1.0 / (neg as f64 + 2.0),
    );
    let ridge = 1e-3;
    let feats = |x: &[f32; 2]| [f64::from(x[0]), f64::from(x[1]), 1.0];
    let loss = |w: &[f64; 3]| -> f64 {
        rows.iter()
            .map(|(x, y)| {
                let t = if *y { hi } else { lo };
                let f = feats(x);
                let m = w[0] * f[0] + w[1] * f[1] + w[2];
                let softplus = if m > 0.0 {
                    m + (-m).exp().ln_1p()
                } else {
                    m.exp().ln_1p()
                };
                softplus - t * m
            })
            .sum::<f64>()
            + ridge * (w[0] * w[0] + w[1] * w[1])
    };
    let mut w = [1.0f64, 0.0, 0.0];
    let mut current = loss(&w);
    for _ in 0..100 {
        let mut g = [0.0f64; 3];
        let mut h = [[0.0f64; 3]; 3];
        for (x, y) in rows {
            let t = if *y { hi } else { lo };
            let f = feats(x);
            let p = 1.0 / (1.0 + (-(w[0] * f[0] + w[1] * f[1] + w[2])).exp());
            let s = p * (1.0 - p);
            for a in 0..3 {
                g[a] += (p - t) * f[a];
                for b in 0..3 {
                    h[a][b] += s * f[a] * f[b];
                }
            }
        }
        for a in 0..2 {
            g[a] += 2.0 * ridge * w[a];
            h[a][a] += 2.0 * ridge;
        }
        h[2][2] += 1e-9;
        let Some(d) = solve3(h, g) else {
            break;
        };
        let mut step = 1.0;
        let mut improved = false;
        while step > 1e-6 {
            let next = [w[0] - step * d[0], w[1] - step * d[1], w[2] - step * d[2]];
            let l = loss(&next);
            if l < current {
                w = next;
                current = l;
                improved = true;
                break;
            }
            step /= 2.0;
        }
        if !improved || d.iter().all(|v| v.abs() < 1e-7) {
            break;
        }
    }
    #[expect(clippy::cast_possible_truncation, reason = "parameters are small")]
    [w[0] as f32, w[1] as f32, w[2] as f32]
}

/// Solves `h · x = g` for a 3×3 system by Cramer's rule; `None` when singular.
#[expect(clippy::indexing_slicing, reason = "fixed 3×3 arrays")]
fn solve3(h: [[f64; 3]; 3], g: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(h);
    if d.abs() < 1e-12 {
        return None;
    }
    let mut x = [0.0; 3];
    for (c, xc) in x.iter_mut().enumerate() {
        let mut m = h;
        for r in 0..3 {
            m[r][c] = g[r];
        }
        *xc = det(m) / d;
    }
    Some(x)
}

/// Average precision (the area under the precision-recall curve, step-wise) of `(score,
/// label)` pairs; `None` without positives.
pub fn auprc(pairs: &[(f32, bool)]) -> Option<f64> {
    let pos = pairs.iter().filter(|(_, y)| *y).count();
    if pos == 0 {
        return None;
    }
    let mut sorted: Vec<(f32, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut seen, mut ap) = (0usize, 0usize, 0f64);
    let mut i = 0;
    while i < sorted.len() {
        // Ties share one step.
        let s = sorted.get(i).map_or(0.0, |p| p.0);
        let mut new_tp = 0;
        while let Some((score, y)) = sorted.get(i)
            && *score == s
        {
            seen += 1;
            new_tp += usize::from(*y);
            i += 1;
        }
        tp += new_tp;
        #[expect(clippy::cast_precision_loss, reason = "counts are small")]
        {
            ap += (new_tp as f64 / pos as f64) * (tp as f64 / seen as f64);
        }
    }
    Some(ap)
}

/// One category's figures on the test split.
#[derive(Clone, Debug, PartialEq)]
pub struct CategoryReport {
    /// The category.
    pub category: Category,
    /// Positives and negatives in the test split.
    pub positives: usize,
    /// Negatives in the test split.
    pub negatives: usize,
    /// Precision at the pack's threshold.
    pub precision: f64,
    /// Recall at the pack's threshold.
    pub recall: f64,
    /// F1 at the pack's threshold.
    pub f1: f64,
    /// Area under the precision-recall curve.
    pub auprc: Option<f64>,
    /// Share of the held-out benign texts on which the category fired.
    pub benign_fpr: f64,
    /// The threshold (0.05 to 0.95 in steps of 0.05) at which the engine's F1 on this split is
    /// highest, with that F1: on the calibration split, where a pack's thresholds are chosen.
    pub f1_best: (f32, f64),
}

/// The evaluation: per category, and over the held-out benign texts.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The split evaluated (the test split unless a threshold is being chosen).
    pub split: Split,
    /// Per category with test positives.
    pub categories: Vec<CategoryReport>,
    /// Held-out benign texts.
    pub benign: usize,
    /// Share of held-out benign texts on which any hazard category (not `pii`, `secrets`,
    /// `classified-marking`) fired.
    pub benign_any_fpr: f64,
    /// Binary "unsafe = any OpenAI category" AUPRC on the test split.
    pub binary_auprc: Option<f64>,
    /// Test examples.
    pub test: usize,
    /// Share of the held-out benign texts the contextual stage was asked to see (0 without one).
    pub benign_contextual: f64,
    /// Share of the test split the contextual stage was asked to see.
    pub test_contextual: f64,
}

/// The errors of `split` (the test split, or the calibration split when a threshold is being
/// chosen) for `category` at the pack's input threshold: each text the engine scored under it
/// though labelled positive (`missed` true), or at or over it though labelled negative, with
/// its score — for reading what the model gets wrong (`enclave safety eval --errors
/// CATEGORY`).
pub fn errors<'a>(
    engine: &Engine,
    examples: &'a [Example],
    category: Category,
    split: Split,
) -> Vec<(bool, f32, &'a str)> {
    let threshold = engine
        .pack()
        .rule(crate::Direction::Input, category)
        .threshold;
    examples
        .iter()
        .filter(|e| e.split == split && !e.is_heldout())
        .filter_map(|e| {
            let y = e.label(category)?;
            let p = engine.score(&e.text).0.get(category);
            (y != (p >= threshold)).then_some((y, p, e.text.as_str()))
        })
        .collect()
}

/// The threshold among 0.05, 0.10, … 0.95 at which `pairs` (score, label) have the highest F1
/// (the lowest such threshold on a tie), with that F1.
fn f1_best(pairs: &[(f32, bool)]) -> (f32, f64) {
    let positives = pairs.iter().filter(|(_, y)| *y).count();
    let mut best = (0.5f32, 0.0f64);
    for step in 1..20u8 {
        let t = f32::from(step) * 0.05;
        let tp = pairs.iter().filter(|(s, y)| *y && *s >= t).count();
        let predicted = pairs.iter().filter(|(s, _)| *s >= t).count();
        if tp == 0 {
            continue;
        }
        #[expect(clippy::cast_precision_loss, reason = "counts are small")]
        let f1 = 2.0 * tp as f64 / (predicted + positives) as f64;
        if f1 > best.1 {
            best = (t, f1);
        }
    }
    best
}

/// Evaluates `engine` (detectors, model and pack thresholds, direction input) on the test split
/// and the held-out benign texts.
pub fn evaluate(engine: &Engine, examples: &[Example]) -> Report {
    evaluate_split(engine, examples, Split::Test)
}

/// Evaluates `engine` as [`evaluate`] does, on `split` instead of the test split: the
/// calibration split is where pack thresholds may be chosen without reading the test split.
pub fn evaluate_split(engine: &Engine, examples: &[Example], split: Split) -> Report {
    let test: Vec<&Example> = examples
        .iter()
        .filter(|e| e.split == split && !e.is_heldout())
        .collect();
    let benign: Vec<&Example> = examples.iter().filter(|e| e.is_heldout()).collect();
    let dir = crate::Direction::Input;
    let test_scores: Vec<crate::Scores> = test.iter().map(|e| engine.score(&e.text).0).collect();
    let benign_verdicts: Vec<crate::Verdict> =
        benign.iter().map(|e| engine.screen(&e.text, dir)).collect();
    let mut categories = Vec::new();
    for c in LEARNED {
        let threshold = engine.pack().rule(dir, c).threshold;
        let pairs: Vec<(f32, bool)> = test
            .iter()
            .zip(&test_scores)
            .filter_map(|(e, s)| Some((s.get(c), e.label(c)?)))
            .collect();
        let positives = pairs.iter().filter(|(_, y)| *y).count();
        if positives == 0 {
            continue;
        }
        let tp = pairs.iter().filter(|(s, y)| *y && *s >= threshold).count();
        let fp = pairs.iter().filter(|(s, y)| !*y && *s >= threshold).count();
        #[expect(clippy::cast_precision_loss, reason = "counts are small")]
        let (precision, recall) = (
            if tp + fp == 0 {
                0.0
            } else {
                tp as f64 / (tp + fp) as f64
            },
            tp as f64 / positives as f64,
        );
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        let fired = benign_verdicts
            .iter()
            .filter(|v| v.categories.contains(&c))
            .count();
        categories.push(CategoryReport {
            category: c,
            positives,
            negatives: pairs.len() - positives,
            precision,
            recall,
            f1,
            auprc: auprc(&pairs),
            benign_fpr: ratio(fired, benign.len()),
            f1_best: f1_best(&pairs),
        });
    }
    let any = benign_verdicts
        .iter()
        .filter(|v| {
            v.categories.iter().any(|c| {
                !matches!(
                    c,
                    Category::Pii | Category::Secrets | Category::ClassifiedMarking
                )
            })
        })
        .count();
    let binary: Vec<(f32, bool)> = test
        .iter()
        .zip(&test_scores)
        .filter(|(e, _)| {
            e.labels.iter().any(|c| c.is_openai()) || !e.ignore.iter().any(|c| c.is_openai())
        })
        .map(|(e, s)| {
            let p = s
                .iter()
                .filter(|(c, _)| c.is_openai())
                .fold(0f32, |m, (_, p)| m.max(p));
            (p, e.labels.iter().any(|c| c.is_openai()))
        })
        .collect();
    let asked = |xs: &[&Example]| {
        xs.iter()
            .filter(|e| engine.inline(&e.text).uncertain)
            .count()
    };
    Report {
        split,
        benign_contextual: ratio(asked(&benign), benign.len()),
        test_contextual: ratio(asked(&test), test.len()),
        categories,
        benign: benign.len(),
        benign_any_fpr: ratio(any, benign.len()),
        binary_auprc: auprc(&binary),
        test: test.len(),
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "counts are small")]
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Report {
    /// The report as a Markdown table (what `docs/SAFETY.md` shows).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        // The F1-best threshold is printed for the calibration split only: choosing a threshold
        // on the test split would make its figures optimistic.
        let choosing = self.split == Split::Calibration;
        let _ = writeln!(
            s,
            "| category | {} pos / neg | precision | recall | F1 | AUPRC | benign FPR |{}",
            self.split.as_str(),
            if choosing {
                " F1-best threshold (F1) |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "| --- | --- | --- | --- | --- | --- | --- |{}",
            if choosing { " --- |" } else { "" }
        );
        for r in &self.categories {
            let _ = writeln!(
                s,
                "| `{}` | {} / {} | {:.3} | {:.3} | {:.3} | {} | {:.2} % |{}",
                r.category,
                r.positives,
                r.negatives,
                r.precision,
                r.recall,
                r.f1,
                r.auprc
                    .map_or_else(|| "–".to_owned(), |a| format!("{a:.3}")),
                r.benign_fpr * 100.0,
                if choosing {
                    format!(" {:.2} ({:.3}) |", r.f1_best.0, r.f1_best.1)
                } else {
                    String::new()
                }
            );
        }
        let openai: Vec<f64> = self
            .categories
            .iter()
            .filter(|r| r.category.is_openai())
            .filter_map(|r| r.auprc)
            .collect();
        #[expect(clippy::cast_precision_loss, reason = "counts are small")]
        let mean = if openai.is_empty() {
            0.0
        } else {
            openai.iter().sum::<f64>() / openai.len() as f64
        };
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{} split: {} texts. Mean AUPRC over the {} OpenAI-named categories present: {mean:.3}. Binary (any OpenAI category) AUPRC: {}. Held-out benign government texts: {}, any hazard category fired on {:.2} %.",
            self.split.title(),
            self.test,
            openai.len(),
            self.binary_auprc
                .map_or_else(|| "–".to_owned(), |a| format!("{a:.3}")),
            self.benign,
            self.benign_any_fpr * 100.0
        );
        let _ = writeln!(
            s,
            "\nThe contextual stage saw {:.2} % of the held-out benign texts and {:.2} % of the {} split.",
            self.benign_contextual * 100.0,
            self.test_contextual * 100.0,
            self.split.as_str()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auprc_of_a_perfect_and_a_useless_ranking() {
        assert_eq!(auprc(&[(0.9, true), (0.8, true), (0.1, false)]), Some(1.0));
        let tie = auprc(&[(0.5, true), (0.5, false)]).unwrap();
        assert!((tie - 0.5).abs() < 1e-9);
        assert_eq!(auprc(&[(0.5, false)]), None);
    }

    #[test]
    fn the_f1_best_threshold_separates_and_prefers_the_lowest_on_a_tie() {
        // Positives at 0.62 and 0.7, negatives at 0.3 and 0.55: every threshold in (0.55, 0.62]
        // is perfect; the first step there is 0.6.
        let pairs = [(0.7, true), (0.62, true), (0.55, false), (0.3, false)];
        let (t, f1) = f1_best(&pairs);
        assert!((t - 0.6).abs() < 1e-6, "{t}");
        assert!((f1 - 1.0).abs() < 1e-9);
        // One positive under a negative: the best keeps both positives (F1 0.8 at every step
        // up to 0.2; the lowest, 0.05, is chosen).
        let (t, f1) = f1_best(&[(0.9, true), (0.5, false), (0.2, true)]);
        assert!((t - 0.05).abs() < 1e-6, "{t}");
        assert!((f1 - 0.8).abs() < 1e-9);
        // No positive scores at any step: the default 0.5 and F1 0.
        assert_eq!(f1_best(&[(0.01, true), (0.9, false)]), (0.5, 0.0));
    }

    #[test]
    fn platt_recovers_a_monotone_map() {
        let pairs: Vec<(f32, bool)> = (0..200)
            .map(|i| {
                let z = (i as f32 - 100.0) / 20.0;
                (z, (i * 7919) % 200 < i)
            })
            .collect();
        let (a, _) = platt(&pairs);
        assert!(a > 0.0);
    }

    #[test]
    fn training_learns_a_separable_toy_problem_deterministically() {
        let mut ex = Vec::new();
        for i in 0..300 {
            let (text, labels) = if i % 2 == 0 {
                (
                    format!(
                        "please track the location of my neighbor number {i} without a warrant"
                    ),
                    vec![Category::SurveillanceUsPersons],
                )
            } else {
                (
                    format!("please summarize budget memo number {i} for the staff meeting"),
                    vec![],
                )
            };
            ex.extend(parse_examples("toy", &serde_json::json!({"text": text, "labels": labels.iter().map(|c: &Category| c.as_str()).collect::<Vec<_>>()}).to_string()).unwrap());
        }
        let cfg = TrainConfig {
            buckets_log2: 12,
            epochs: 3,
            ..TrainConfig::default()
        };
        let a = train(&ex, &cfg);
        let b = train(&ex, &cfg);
        assert_eq!(a, b);
        assert_eq!(a.heads().len(), 1);
        let p = a.score_heads("track where my neighbor goes without a warrant");
        let n = a.score_heads("summarize the budget memo");
        assert!(
            p[0] > 0.5 && n[0] < 0.5,
            "{p:?} {n:?} {:?} {:?} {:?}",
            a.heads(),
            a.raw_logits("track where my neighbor goes without a warrant"),
            a.raw_logits("summarize the budget memo")
        );
    }
}
