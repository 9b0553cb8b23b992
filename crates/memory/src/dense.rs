//! Dense retrieval over unit vectors: cosine is a dot product. Small sets are scanned exactly;
//! large ones are first narrowed by the Hamming distance of one-bit-per-dimension sign codes
//! (48 bytes for 384 dimensions, a few popcounts per vector), and the closest
//! [`RESCORE`] candidates are then scored exactly.

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
    fn codes_and_distances() {
        let a = sign_code(&[1.0, -1.0, 0.5, -0.5]);
        let b = sign_code(&[1.0, 1.0, 0.5, -0.5]);
        assert_eq!(a, vec![0b0101]);
        assert_eq!(hamming(&a, &b), 1);
        assert_eq!(sign_code(&vec![1.0; 384]).len(), 6);
    }
}
