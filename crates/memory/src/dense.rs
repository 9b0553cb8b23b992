//! Dense retrieval over unit vectors: cosine is a dot product. Small sets are scanned exactly;
//! large ones are first narrowed by the Hamming distance of one-bit-per-dimension sign codes
//! (48 bytes for 384 dimensions, a few popcounts per vector), and the closest
//! [`RESCORE`] candidates are then scored exactly.
//!
//! Scoring exactly reads each candidate's 1.5 KiB vector, which at 100,000 memories is not in
//! any cache. So each vector also has a code of one signed byte per component, with a bound on
//! what the code gets wrong: the codes give every candidate an interval that surely holds its
//! exact score, and only the candidates whose interval reaches the best lower bounds are
//! scored exactly. The result is the same, scores bit for bit, as scoring them all.

/// Above this many visible vectors, the sign-code prefilter runs before the exact scores.
pub(crate) const EXACT_UP_TO: usize = 8192;

/// Candidates kept by the prefilter for exact scoring.
pub(crate) const RESCORE: usize = 1024;

/// `v` scaled to unit length; `None` for a zero, non-finite or empty vector.
pub(crate) fn normalized(v: &[f32]) -> Option<Vec<f32>> {
    if v.is_empty() || !v.iter().all(|x| x.is_finite()) {
        return None;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_normal() {
        return None;
    }
    Some(v.iter().map(|x| x / norm).collect())
}

/// The dot product of two vectors of one length (8 lanes, so the compiler vectorizes it).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// What the byte codes may get wrong besides the quantization error of the vector: the
/// rounding of the `f32` sums in [`dot_bytes`] and [`dot`] (each below 1e-4 for unit vectors
/// of 384 dimensions: at most 51 sequential additions per lane, so under 51 · 2⁻²⁴ of the sum of
/// the magnitudes of the products, which is at most √384 · 127 · scale for the codes and 1 for
/// the vectors), with room to spare.
pub(crate) const SLACK: f32 = 1e-3;

/// A unit vector as one signed byte per component: `v ≈ scale · codes`, and the Euclidean
/// length of what that leaves out is at most `error`, so that for a unit query `q`,
/// `|q·v − scale · q·codes| ≤ error`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bytes {
    pub(crate) codes: Vec<i8>,
    pub(crate) scale: f32,
    pub(crate) error: f32,
}

/// `v` as bytes (any finite vector; the index passes unit ones).
pub(crate) fn to_bytes(v: &[f32]) -> Bytes {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max.is_normal() { max / 127.0 } else { 1.0 };
    let codes: Vec<i8> = v
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    // The residual in f64, where each product of an f32 and a byte is exact.
    let residual: f64 = v
        .iter()
        .zip(&codes)
        .map(|(&x, &c)| {
            let d = f64::from(x) - f64::from(scale) * f64::from(c);
            d * d
        })
        .sum();
    // Rounded up, never down.
    let error = (residual.sqrt() * (1.0 + 1e-6)) as f32 + f32::MIN_POSITIVE;
    Bytes {
        codes,
        scale,
        error,
    }
}

/// `q · codes` for a vector and a byte code of one length (8 lanes, like [`dot`]).
pub(crate) fn dot_bytes(q: &[f32], codes: &[i8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let cq = q.chunks_exact(8);
    let cc = codes.chunks_exact(8);
    let tail: f32 = cq
        .remainder()
        .iter()
        .zip(cc.remainder())
        .map(|(x, &y)| x * f32::from(y))
        .sum();
    for (x, y) in cq.zip(cc) {
        for i in 0..8 {
            acc[i] += x[i] * f32::from(y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// [`dot_bytes`] of `q` with four codes at once, each summed exactly as [`dot_bytes`] sums it:
/// the four rows' loads are interleaved, so that their cache misses overlap instead of
/// following one another.
pub(crate) fn dot_bytes4(q: &[f32], codes: [&[i8]; 4]) -> [f32; 4] {
    let mut acc = [[0.0f32; 8]; 4];
    let [a, b, c, d] = codes.map(|c| c.chunks_exact(8));
    let tails = [a.remainder(), b.remainder(), c.remainder(), d.remainder()];
    let cq = q.chunks_exact(8);
    let q_tail = cq.remainder();
    for ((((x, ya), yb), yc), yd) in cq.zip(a).zip(b).zip(c).zip(d) {
        for (acc, y) in acc.iter_mut().zip([ya, yb, yc, yd]) {
            for i in 0..8 {
                acc[i] += x[i] * f32::from(y[i]);
            }
        }
    }
    let mut out = [0.0f32; 4];
    for ((o, acc), t) in out.iter_mut().zip(&acc).zip(tails) {
        let tail: f32 = q_tail.iter().zip(t).map(|(x, &y)| x * f32::from(y)).sum();
        *o = acc.iter().sum::<f32>() + tail;
    }
    out
}

/// One bit per dimension: set where the component is positive.
pub(crate) fn sign_code(v: &[f32]) -> Vec<u64> {
    let mut code = vec![0u64; v.len().div_ceil(64)];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0
            && let Some(w) = code.get_mut(i / 64)
        {
            *w |= 1 << (i % 64);
        }
    }
    code
}

/// Hamming distance between two codes of one length.
pub(crate) fn hamming(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }

    #[test]
    fn degenerate_vectors_are_refused() {
        assert!(normalized(&[]).is_none());
        assert!(normalized(&[0.0, 0.0]).is_none());
        assert!(normalized(&[f32::NAN, 1.0]).is_none());
        assert!(normalized(&[f32::INFINITY, 1.0]).is_none());
        let n = normalized(&[3.0, 4.0]).unwrap();
        assert!((n[0] - 0.6).abs() < 1e-6 && (n[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn byte_codes_bound_the_exact_score() {
        // Deterministic pseudo-random unit vectors.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut unit = || {
            let v: Vec<f32> = (0..384)
                .map(|_| {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            normalized(&v).unwrap()
        };
        let q = unit();
        for _ in 0..200 {
            let v = unit();
            let b = to_bytes(&v);
            let approx = b.scale * dot_bytes(&q, &b.codes);
            let exact = dot(&q, &v);
            assert!(
                (approx - exact).abs() <= b.error + SLACK,
                "{approx} vs {exact}"
            );
            // The bound is useful: well under the spread of scores.
            assert!(b.error < 0.02, "{}", b.error);
        }
        // Four at a time is the same arithmetic.
        let rows: Vec<Bytes> = (0..4).map(|_| to_bytes(&unit())).collect();
        let four = dot_bytes4(&q, [0, 1, 2, 3].map(|i| rows[i].codes.as_slice()));
        for (r, d) in rows.iter().zip(four) {
            assert_eq!(d.to_bits(), dot_bytes(&q, &r.codes).to_bits());
        }
        // The query itself: its code's score is close to 1.
        let b = to_bytes(&q);
        assert!((b.scale * dot_bytes(&q, &b.codes) - 1.0).abs() <= b.error + SLACK);
    }

    #[test]
    fn codes_and_distances() {
        let a = sign_code(&[1.0, -1.0, 0.5, -0.5]);
        let b = sign_code(&[1.0, 1.0, 0.5, -0.5]);
        assert_eq!(a, vec![0b0101]);
        assert_eq!(hamming(&a, &b), 1);
        assert_eq!(sign_code(&vec![1.0; 384]).len(), 6);
    }
}
