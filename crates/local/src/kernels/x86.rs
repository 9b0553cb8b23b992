//! AVX2 + FMA versions of the kernels, chosen at run time by [`available`].
//!
//! The only `unsafe` in the crate: calling `#[target_feature]` functions (sound once
//! [`available`] has confirmed the features) and unaligned vector loads from slices whose bounds
//! are checked before each loop.
#![allow(
    unsafe_code,
    reason = "SIMD intrinsics; every use carries a SAFETY comment"
)]

use std::arch::x86_64::{
    __m128i, __m256, __m256i, _mm_add_ps, _mm_add_ss, _mm_and_si128, _mm_cvtph_ps,
    _mm_cvtsi32_si128, _mm_cvtss_f32, _mm_loadu_si128, _mm_movehdup_ps, _mm_movehl_ps,
    _mm_set1_epi8, _mm_srli_epi16, _mm_srli_si128, _mm256_abs_epi8, _mm256_add_ps,
    _mm256_castps256_ps128, _mm256_castsi256_si128, _mm256_cvtepi8_epi32, _mm256_cvtepi32_ps,
    _mm256_cvtepu8_epi32, _mm256_extractf128_ps, _mm256_extracti128_si256, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps,
    _mm256_set_m128i, _mm256_set1_epi16, _mm256_set1_ps, _mm256_setzero_ps, _mm256_sign_epi8,
    _mm256_storeu_ps,
};

use super::{BlockQ4_1, BlockQ8_0, BlockQ8_1, Matrix, QK};

/// Whether this CPU has AVX2, FMA and F16C (the standard library caches the detection).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// A Q4_1 block's scale and minimum, widened from half precision in one instruction.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_dm(b: &BlockQ4_1) -> (f32, f32) {
    let bits = u32::from(b.dm[0]) | (u32::from(b.dm[1]) << 16);
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// A Q8_0 block's scale, widened from half precision.
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_d(b: &BlockQ8_0) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(b.d))))
}

/// Rows `first..first + out.len()` of `w` against one token `x`.
pub(super) fn rows_for_one(w: &Matrix, x: &[f32], first: usize, out: &mut [f32]) {
    match w {
        Matrix::Q4_1 { cols, blocks, .. } => {
            let per_row = cols / QK;
            assert_eq!(x.len(), *cols, "input width");
            let blocks = &blocks[first * per_row..(first + out.len()) * per_row];
            // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
            unsafe { q4_1_rows_one(blocks, per_row, x, out) }
        }
        Matrix::Q8_0 { cols, blocks, .. } => {
            let per_row = cols / QK;
            assert_eq!(x.len(), *cols, "input width");
            let blocks = &blocks[first * per_row..(first + out.len()) * per_row];
            // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
            unsafe { q8_0_rows_one(blocks, per_row, x, out) }
        }
        Matrix::F32 { cols, data, .. } => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = dot(&data[(first + i) * cols..(first + i + 1) * cols], x);
            }
        }
    }
}

/// Rows `first..first + out.len()` of a quantized `w` against one token quantized to Q8_1.
pub(super) fn rows_for_one_q8(w: &Matrix, xq: &[BlockQ8_1], first: usize, out: &mut [f32]) {
    match w {
        Matrix::Q4_1 { cols, blocks, .. } => {
            let per_row = cols / QK;
            assert_eq!(xq.len(), per_row, "input width");
            let blocks = &blocks[first * per_row..(first + out.len()) * per_row];
            // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
            unsafe { q4_1_q8_rows(blocks, per_row, xq, out) }
        }
        Matrix::Q8_0 { cols, blocks, .. } => {
            let per_row = cols / QK;
            assert_eq!(xq.len(), per_row, "input width");
            let blocks = &blocks[first * per_row..(first + out.len()) * per_row];
            // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
            unsafe { q8_0_q8_rows(blocks, per_row, xq, out) }
        }
        Matrix::F32 { .. } => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = super::portable::dot_row_q8(w, first + i, xq);
            }
        }
    }
}

/// Rows `first..` of a quantized `w` against each token of `xqs` (`out` is rows × tokens), each
/// row and token with the arithmetic of [`rows_for_one_q8`], up to four tokens per pass over a
/// row's blocks.
pub(super) fn rows_for_many_q8(w: &Matrix, xqs: &[Vec<BlockQ8_1>], first: usize, out: &mut [f32]) {
    let tokens = xqs.len();
    let per_row = w.cols() / QK;
    assert!(xqs.iter().all(|x| x.len() == per_row), "input width");
    for (i, per_token) in out.chunks_exact_mut(tokens).enumerate() {
        let r = first + i;
        let mut t = 0;
        while t < tokens {
            let n = (tokens - t).min(4);
            let xs = &xqs[t..t + n];
            let outs = &mut per_token[t..t + n];
            // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
            unsafe {
                match (w, n) {
                    (Matrix::Q4_1 { blocks, .. }, _) => {
                        let row = &blocks[r * per_row..(r + 1) * per_row];
                        match n {
                            1 => outs.copy_from_slice(&q4_1_q8_tile::<1>(row, [&xs[0]])),
                            2 => outs.copy_from_slice(&q4_1_q8_tile::<2>(row, [&xs[0], &xs[1]])),
                            3 => outs
                                .copy_from_slice(&q4_1_q8_tile::<3>(row, [&xs[0], &xs[1], &xs[2]])),
                            _ => outs.copy_from_slice(&q4_1_q8_tile::<4>(
                                row,
                                [&xs[0], &xs[1], &xs[2], &xs[3]],
                            )),
                        }
                    }
                    (Matrix::Q8_0 { blocks, .. }, _) => {
                        let row = &blocks[r * per_row..(r + 1) * per_row];
                        for (o, x) in outs.iter_mut().zip(xs) {
                            *o = q8_0_q8_single(row, x);
                        }
                    }
                    (Matrix::F32 { .. }, _) => {
                        for (o, x) in outs.iter_mut().zip(xs) {
                            *o = super::portable::dot_row_q8(w, r, x);
                        }
                    }
                }
            }
            t += n;
        }
    }
}

/// One Q4_1 row against `T` tokens' Q8_1 activations; per token the same operations in the same
/// order as [`q4_1_q8_rows`], each block's nibbles unpacked once for all `T`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_q8_tile<const T: usize>(row: &[BlockQ4_1], xs: [&Vec<BlockQ8_1>; T]) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let mut min = [0f32; T];
    for (i, b) in row.iter().enumerate() {
        let w = q4_1_bytes(b);
        let (d, m) = q4_1_dm(b);
        for t in 0..T {
            let x = &xs[t][i];
            acc[t] = _mm256_fmadd_ps(byte_dot(w, q8_1_bytes(x)), _mm256_set1_ps(d * x.d), acc[t]);
            min[t] = m.mul_add(x.s, min[t]);
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum(acc[t]) + min[t];
    }
    out
}

/// One Q8_0 row against one token, with the arithmetic of [`q8_0_q8_rows`].
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_q8_single(row: &[BlockQ8_0], xq: &[BlockQ8_1]) -> f32 {
    let mut out = [0f32; 1];
    q8_0_q8_rows(row, row.len(), xq, &mut out);
    out[0]
}

/// Q4_1 bytes of one block as 32 unsigned bytes: the low nibbles (weights 0..16), then the
/// high ones (weights 16..32).
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_bytes(b: &BlockQ4_1) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes; the load is unaligned.
    let q = unsafe { _mm_loadu_si128(b.qs.as_ptr().cast()) };
    let mask = _mm_set1_epi8(0x0F);
    _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16::<4>(q), mask),
        _mm_and_si128(q, mask),
    )
}

/// The eight 32-bit sums of byte products `w · x` (`w` unsigned, `x` signed) as floats.
#[target_feature(enable = "avx2,fma,f16c")]
fn byte_dot(w: __m256i, x: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_madd_epi16(
        _mm256_maddubs_epi16(w, x),
        _mm256_set1_epi16(1),
    ))
}

/// 32 signed activation bytes of a Q8_1 block.
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_1_bytes(x: &BlockQ8_1) -> __m256i {
    // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(x.qs.as_ptr().cast()) }
}

/// Q4_1 rows against Q8_1 activations, two rows at a time sharing each activation block: per
/// block, unsigned nibbles times signed bytes summed in 16 then 32 bits, scaled by both blocks'
/// scales, plus the minimum times the activations' sum.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_q8_rows(blocks: &[BlockQ4_1], per_row: usize, xq: &[BlockQ8_1], out: &mut [f32]) {
    let mut rows = blocks.chunks_exact(per_row);
    let mut outs = out.chunks_exact_mut(2);
    for pair in &mut outs {
        let (Some(a), Some(b)) = (rows.next(), rows.next()) else {
            break;
        };
        let (mut acc_a, mut acc_b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut min_a, mut min_b) = (0f32, 0f32);
        for ((ba, bb), x) in a.iter().zip(b).zip(xq) {
            let xv = q8_1_bytes(x);
            let ((da, ma), (db, mb)) = (q4_1_dm(ba), q4_1_dm(bb));
            acc_a = _mm256_fmadd_ps(
                byte_dot(q4_1_bytes(ba), xv),
                _mm256_set1_ps(da * x.d),
                acc_a,
            );
            acc_b = _mm256_fmadd_ps(
                byte_dot(q4_1_bytes(bb), xv),
                _mm256_set1_ps(db * x.d),
                acc_b,
            );
            min_a = ma.mul_add(x.s, min_a);
            min_b = mb.mul_add(x.s, min_b);
        }
        pair[0] = hsum(acc_a) + min_a;
        pair[1] = hsum(acc_b) + min_b;
    }
    for (o, row) in outs.into_remainder().iter_mut().zip(rows) {
        let mut acc = _mm256_setzero_ps();
        let mut min = 0f32;
        for (b, x) in row.iter().zip(xq) {
            let (d, m) = q4_1_dm(b);
            acc = _mm256_fmadd_ps(
                byte_dot(q4_1_bytes(b), q8_1_bytes(x)),
                _mm256_set1_ps(d * x.d),
                acc,
            );
            min = m.mul_add(x.s, min);
        }
        *o = hsum(acc) + min;
    }
}

/// Q8_0 rows against Q8_1 activations, two rows at a time (the sign of the weights moved onto
/// the activations, since the byte product takes one unsigned operand).
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_q8_rows(blocks: &[BlockQ8_0], per_row: usize, xq: &[BlockQ8_1], out: &mut [f32]) {
    let one = |b: &BlockQ8_0, xv: __m256i| {
        // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
        let wv = unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) };
        byte_dot(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv))
    };
    let mut rows = blocks.chunks_exact(per_row);
    let mut outs = out.chunks_exact_mut(2);
    for pair in &mut outs {
        let (Some(a), Some(b)) = (rows.next(), rows.next()) else {
            break;
        };
        let (mut acc_a, mut acc_b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for ((ba, bb), x) in a.iter().zip(b).zip(xq) {
            let xv = q8_1_bytes(x);
            acc_a = _mm256_fmadd_ps(one(ba, xv), _mm256_set1_ps(q8_0_d(ba) * x.d), acc_a);
            acc_b = _mm256_fmadd_ps(one(bb, xv), _mm256_set1_ps(q8_0_d(bb) * x.d), acc_b);
        }
        pair[0] = hsum(acc_a);
        pair[1] = hsum(acc_b);
    }
    for (o, row) in outs.into_remainder().iter_mut().zip(rows) {
        let mut acc = _mm256_setzero_ps();
        for (b, x) in row.iter().zip(xq) {
            acc = _mm256_fmadd_ps(one(b, q8_1_bytes(x)), _mm256_set1_ps(q8_0_d(b) * x.d), acc);
        }
        *o = hsum(acc);
    }
}

/// Rows `first..` of `w` against `tokens` tokens; `out` is `rows × tokens`.
pub(super) fn rows_for_many(w: &Matrix, x: &[f32], tokens: usize, first: usize, out: &mut [f32]) {
    let cols = w.cols();
    assert_eq!(x.len(), tokens * cols, "input shape");
    for (i, per_token) in out.chunks_exact_mut(tokens).enumerate() {
        let r = first + i;
        let mut t = 0;
        while t + super::TOKEN_TILE <= tokens {
            let xs = &x[t * cols..(t + super::TOKEN_TILE) * cols];
            // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
            let v: [f32; super::TOKEN_TILE] = unsafe { tile(w, r, xs) };
            per_token[t..t + super::TOKEN_TILE].copy_from_slice(&v);
            t += super::TOKEN_TILE;
        }
        while t < tokens {
            let xs = &x[t * cols..(t + 1) * cols];
            // SAFETY: as above.
            let [v]: [f32; 1] = unsafe { tile(w, r, xs) };
            per_token[t] = v;
            t += 1;
        }
    }
}

/// `Σ a[i] · b[i]`.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
    unsafe { dot_avx2(a, b) }
}

/// `y += a · x`.
#[cfg(test)]
pub(super) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
    unsafe { axpy_avx2(y, a, x) }
}

/// [`super::scaled_dots`]: one feature check for all the rows instead of one per row.
pub(super) fn scaled_dots(q: &[f32], rows: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
    unsafe { scaled_dots_avx2(q, rows, stride, scale, out) }
}

/// [`super::weighted_sum`], likewise.
pub(super) fn weighted_sum(weights: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
    unsafe { weighted_sum_avx2(weights, rows, stride, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn scaled_dots_avx2(q: &[f32], rows: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot_avx2(q, &rows[j * stride..j * stride + q.len()]) * scale;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_sum_avx2(weights: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    out.fill(0.0);
    let width = out.len();
    for (j, &w) in weights.iter().enumerate() {
        axpy_avx2(out, w, &rows[j * stride..j * stride + width]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The 32 weights of a Q8_0 block as four vectors of eight.
#[target_feature(enable = "avx2,fma,f16c")]
fn dequantize_q8_0(b: &BlockQ8_0) -> [__m256; 4] {
    // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
    let q: __m256i = unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) };
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    let d = _mm256_set1_ps(q8_0_d(b));
    let widen = |v: __m128i| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d);
    [
        widen(lo),
        widen(_mm_srli_si128::<8>(lo)),
        widen(hi),
        widen(_mm_srli_si128::<8>(hi)),
    ]
}

/// The 32 weights of a Q4_1 block as four vectors of eight.
#[target_feature(enable = "avx2,fma,f16c")]
fn dequantize_q4_1(b: &BlockQ4_1) -> [__m256; 4] {
    // SAFETY: `qs` is 16 readable bytes; the load is unaligned.
    let q: __m128i = unsafe { _mm_loadu_si128(b.qs.as_ptr().cast()) };
    let mask = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(q, mask);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
    let (d, m) = q4_1_dm(b);
    let (d, m) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
    let widen = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
    [
        _mm256_fmadd_ps(widen(lo), d, m),
        _mm256_fmadd_ps(widen(_mm_srli_si128::<8>(lo)), d, m),
        _mm256_fmadd_ps(widen(hi), d, m),
        _mm256_fmadd_ps(widen(_mm_srli_si128::<8>(hi)), d, m),
    ]
}

/// Quantized rows (`per_row` blocks each) against one token, two rows at a time.
macro_rules! rows_one {
    ($name:ident, $block:ty, $dequantize:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        fn $name(blocks: &[$block], per_row: usize, x: &[f32], out: &mut [f32]) {
            assert!(x.len() >= per_row * QK && blocks.len() == out.len() * per_row);
            let mut rows = blocks.chunks_exact(per_row);
            let mut outs = out.chunks_exact_mut(2);
            for pair in &mut outs {
                let (Some(a), Some(b)) = (rows.next(), rows.next()) else {
                    break;
                };
                let mut acc_a = [_mm256_setzero_ps(); 4];
                let mut acc_b = [_mm256_setzero_ps(); 4];
                for (i, (ba, bb)) in a.iter().zip(b).enumerate() {
                    let wa = $dequantize(ba);
                    let wb = $dequantize(bb);
                    for k in 0..4 {
                        // SAFETY: `i * 32 + k * 8 + 8 <= per_row * 32 <= x.len()`.
                        let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(i * QK + k * 8)) };
                        acc_a[k] = _mm256_fmadd_ps(wa[k], xv, acc_a[k]);
                        acc_b[k] = _mm256_fmadd_ps(wb[k], xv, acc_b[k]);
                    }
                }
                pair[0] = hsum(sum4(acc_a));
                pair[1] = hsum(sum4(acc_b));
            }
            for (o, row) in outs.into_remainder().iter_mut().zip(rows) {
                let mut acc = [_mm256_setzero_ps(); 4];
                for (i, b) in row.iter().enumerate() {
                    let w = $dequantize(b);
                    for k in 0..4 {
                        // SAFETY: as above.
                        let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(i * QK + k * 8)) };
                        acc[k] = _mm256_fmadd_ps(w[k], xv, acc[k]);
                    }
                }
                *o = hsum(sum4(acc));
            }
        }
    };
}

rows_one!(q4_1_rows_one, BlockQ4_1, dequantize_q4_1);
rows_one!(q8_0_rows_one, BlockQ8_0, dequantize_q8_0);

#[target_feature(enable = "avx2,fma,f16c")]
fn sum4(v: [__m256; 4]) -> __m256 {
    _mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3]))
}

/// Row `r` of `w` against `T` tokens (`xs` is `T × cols`): each dequantized block or loaded
/// vector of weights serves all `T` tokens.
#[target_feature(enable = "avx2,fma,f16c")]
fn tile<const T: usize>(w: &Matrix, r: usize, xs: &[f32]) -> [f32; T] {
    let cols = w.cols();
    assert_eq!(xs.len(), T * cols, "tile shape");
    let mut acc = [_mm256_setzero_ps(); T];
    let mut out = [0f32; T];
    match w {
        Matrix::Q8_0 { blocks, .. } => {
            let per_row = cols / QK;
            for (i, b) in blocks[r * per_row..(r + 1) * per_row].iter().enumerate() {
                block_into(&dequantize_q8_0(b), xs, cols, i, &mut acc);
            }
        }
        Matrix::Q4_1 { blocks, .. } => {
            let per_row = cols / QK;
            for (i, b) in blocks[r * per_row..(r + 1) * per_row].iter().enumerate() {
                block_into(&dequantize_q4_1(b), xs, cols, i, &mut acc);
            }
        }
        Matrix::F32 { data, .. } => {
            let row = &data[r * cols..(r + 1) * cols];
            let full = cols / 8 * 8;
            let mut c = 0;
            while c < full {
                // SAFETY: `c + 8 <= cols == row.len()`.
                let wv = unsafe { _mm256_loadu_ps(row.as_ptr().add(c)) };
                for (t, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: `t * cols + c + 8 <= T * cols == xs.len()`.
                    let xv = unsafe { _mm256_loadu_ps(xs.as_ptr().add(t * cols + c)) };
                    *acc = _mm256_fmadd_ps(wv, xv, *acc);
                }
                c += 8;
            }
            for (t, o) in out.iter_mut().enumerate() {
                *o = row[full..]
                    .iter()
                    .zip(&xs[t * cols + full..(t + 1) * cols])
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        *o += hsum(acc);
    }
    out
}

/// Adds the dequantized block `i` of a row (`wv`, 32 weights) times each of the `T` tokens of
/// `xs` (`T × cols`) to that token's accumulator.
#[target_feature(enable = "avx2,fma,f16c")]
fn block_into<const T: usize>(
    wv: &[__m256; 4],
    xs: &[f32],
    cols: usize,
    i: usize,
    acc: &mut [__m256; T],
) {
    assert!(xs.len() >= T * cols && (i + 1) * QK <= cols, "block shape");
    for (t, acc) in acc.iter_mut().enumerate() {
        let base = t * cols + i * QK;
        for (k, wk) in wv.iter().enumerate() {
            // SAFETY: `base + k * 8 + 8 <= t * cols + (i + 1) * 32 <= T * cols <= xs.len()`.
            let xv = unsafe { _mm256_loadu_ps(xs.as_ptr().add(base + k * 8)) };
            *acc = _mm256_fmadd_ps(*wk, xv, *acc);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i + k * 8 + 8 <= i + 32 <= n`, within both slices.
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_ps(a.as_ptr().add(i + k * 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + k * 8)),
                )
            };
            *acc = _mm256_fmadd_ps(va, vb, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`.
        let (va, vb) = unsafe {
            (
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            )
        };
        acc[0] = _mm256_fmadd_ps(va, vb, acc[0]);
        i += 8;
    }
    let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
    hsum(sum4(acc)) + tail
}

#[target_feature(enable = "avx2,fma,f16c")]
fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, within both slices.
        unsafe {
            let yv = _mm256_loadu_ps(y.as_ptr().add(i));
            let xv = _mm256_loadu_ps(x.as_ptr().add(i));
            _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_fmadd_ps(av, xv, yv));
        }
        i += 8;
    }
    for (y, x) in y[i..n].iter_mut().zip(&x[i..n]) {
        *y = a.mul_add(*x, *y);
    }
}

// === Packed f32 linear layers and elementwise functions (the BERT encoder) ===

pub(super) use packed::{exp_in_place, gelu_erf, panel_tile, panel_tile_f16};

/// Kept in their own module (with its own imports) so this block merges apart from the rest.
mod packed {
    use std::arch::x86_64::*;

    /// `MR` tokens (`x`, `MR × cols`, row-major) against one panel of 16 output features (`cols ×
    /// 16`, input by input), starting from `bias` (16); writes token `t`'s 16 features at
    /// `out[t * stride..]`. When `next` (the next panel) is as long, it is prefetched into the
    /// L2 cache on the way, one input's 16 weights per step.
    pub(in crate::kernels) fn panel_tile<const MR: usize>(
        panel: &[f32],
        bias: &[f32],
        x: &[f32],
        cols: usize,
        out: &mut [f32],
        stride: usize,
        next: &[f32],
    ) {
        // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
        unsafe {
            if next.len() >= cols * 16 {
                panel_tile_avx2::<MR, true>(panel, bias, x, cols, out, stride, next)
            } else {
                panel_tile_avx2::<MR, false>(panel, bias, x, cols, out, stride, next)
            }
        }
    }

    /// [`panel_tile`] over f16 weights, widened in registers.
    pub(in crate::kernels) fn panel_tile_f16<const MR: usize>(
        panel: &[half::f16],
        bias: &[f32],
        x: &[f32],
        cols: usize,
        out: &mut [f32],
        stride: usize,
        next: &[half::f16],
    ) {
        // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
        unsafe {
            if next.len() >= cols * 16 {
                panel_tile_f16_avx2::<MR, true>(panel, bias, x, cols, out, stride, next)
            } else {
                panel_tile_f16_avx2::<MR, false>(panel, bias, x, cols, out, stride, next)
            }
        }
    }

    /// The register tile over weights of type `$w`, loaded as two vectors of eight f32 by
    /// `$load`: `2 · MR` accumulators of eight features; per input, two weight loads and `MR`
    /// broadcasts feed `2 · MR` fused multiply-adds.
    macro_rules! tile_kernel {
        ($name:ident, $w:ty, $load:expr) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            fn $name<const MR: usize, const PREFETCH: bool>(
                panel: &[$w],
                bias: &[f32],
                x: &[f32],
                cols: usize,
                out: &mut [f32],
                stride: usize,
                next: &[$w],
            ) {
                assert!(
                    panel.len() == cols * 16
                        && bias.len() == 16
                        && x.len() == MR * cols
                        && stride >= 16
                        && out.len() > (MR - 1) * stride + 15,
                    "panel tile shape"
                );
                // SAFETY: `bias` is 16 long.
                let (b0, b1) = unsafe {
                    (
                        _mm256_loadu_ps(bias.as_ptr()),
                        _mm256_loadu_ps(bias.as_ptr().add(8)),
                    )
                };
                let mut acc0 = [b0; MR];
                let mut acc1 = [b1; MR];
                let (w, xp) = (panel.as_ptr(), x.as_ptr());
                for k in 0..cols {
                    if PREFETCH {
                        // SAFETY: `k * 16 < cols * 16 <= next.len()`; a prefetch does not
                        // fault anyway.
                        unsafe { _mm_prefetch::<_MM_HINT_T1>(next.as_ptr().add(k * 16).cast()) };
                    }
                    // SAFETY: `k * 16 + 16 <= cols * 16 == panel.len()`.
                    let (w0, w1) = unsafe { $load(w.add(k * 16)) };
                    for t in 0..MR {
                        // SAFETY: `t * cols + k < MR * cols == x.len()`.
                        let xv = _mm256_set1_ps(unsafe { *xp.add(t * cols + k) });
                        acc0[t] = _mm256_fmadd_ps(w0, xv, acc0[t]);
                        acc1[t] = _mm256_fmadd_ps(w1, xv, acc1[t]);
                    }
                }
                for t in 0..MR {
                    // SAFETY: `t * stride + 16 <= (MR - 1) * stride + 16 <= out.len()`.
                    unsafe {
                        _mm256_storeu_ps(out.as_mut_ptr().add(t * stride), acc0[t]);
                        _mm256_storeu_ps(out.as_mut_ptr().add(t * stride + 8), acc1[t]);
                    }
                }
            }
        };
    }

    tile_kernel!(panel_tile_avx2, f32, |p: *const f32| (
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8))
    ));
    tile_kernel!(panel_tile_f16_avx2, half::f16, |p: *const half::f16| (
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
        _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast()))
    ));

    /// `x = exp(x)`, elementwise (for `x <= 88`).
    pub(in crate::kernels) fn exp_in_place(x: &mut [f32]) {
        // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
        unsafe { exp_slice(x) }
    }

    /// GELU with the exact normal distribution function, elementwise.
    pub(in crate::kernels) fn gelu_erf(x: &mut [f32]) {
        // SAFETY: `available()` confirmed AVX2, FMA and F16C before the caller got here.
        unsafe { gelu_slice(x) }
    }

    /// A function applying `$f` to a slice, 32 then eight values at a time (the tail through a
    /// padded copy), with `$f` inlined.
    macro_rules! map_slice {
        ($name:ident, $f:ident) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            fn $name(x: &mut [f32]) {
                // Four vectors at a time, step by step: four independent chains of dependent
                // operations interleaved, which the core overlaps.
                let mut wide = x.chunks_exact_mut(32);
                for c in &mut wide {
                    let p = c.as_mut_ptr();
                    // SAFETY: `c` is 32 long.
                    unsafe {
                        let v = $f([
                            _mm256_loadu_ps(p),
                            _mm256_loadu_ps(p.add(8)),
                            _mm256_loadu_ps(p.add(16)),
                            _mm256_loadu_ps(p.add(24)),
                        ]);
                        for (k, v) in v.into_iter().enumerate() {
                            _mm256_storeu_ps(p.add(k * 8), v);
                        }
                    }
                }
                let mut chunks = wide.into_remainder().chunks_exact_mut(8);
                for c in &mut chunks {
                    // SAFETY: `c` is 8 long.
                    unsafe {
                        let [v] = $f([_mm256_loadu_ps(c.as_ptr())]);
                        _mm256_storeu_ps(c.as_mut_ptr(), v);
                    }
                }
                let tail = chunks.into_remainder();
                if !tail.is_empty() {
                    let mut buf = [0f32; 8];
                    buf[..tail.len()].copy_from_slice(tail);
                    // SAFETY: `buf` is 8 long.
                    unsafe {
                        let [v] = $f([_mm256_loadu_ps(buf.as_ptr())]);
                        _mm256_storeu_ps(buf.as_mut_ptr(), v);
                    }
                    tail.copy_from_slice(&buf[..tail.len()]);
                }
            }
        };
    }

    map_slice!(exp_slice, exp_ps);
    map_slice!(gelu_slice, gelu_ps);

    /// `exp` of `N` vectors of eight values (Cephes' `expf`: `2^n · e^r` with `|r| <= ln 2 / 2`
    /// and a degree-5 polynomial for `e^r`), for inputs up to 88; below -87 the result is about
    /// 1e-38.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn exp_ps<const N: usize>(x: [__m256; N]) -> [__m256; N] {
        let (lo, hi) = (_mm256_set1_ps(-87.0), _mm256_set1_ps(88.0));
        let mut r = x;
        let mut n = x;
        for k in 0..N {
            r[k] = _mm256_min_ps(_mm256_max_ps(x[k], lo), hi);
            n[k] = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(r[k], _mm256_set1_ps(std::f32::consts::LOG2_E)),
            );
        }
        // ln 2 in two parts, so that `n · 0.693359375` is exact.
        for k in 0..N {
            r[k] = _mm256_fnmadd_ps(n[k], _mm256_set1_ps(0.693_359_4), r[k]);
        }
        for k in 0..N {
            r[k] = _mm256_fnmadd_ps(n[k], _mm256_set1_ps(-2.121_944_4e-4), r[k]);
        }
        let mut p = [_mm256_set1_ps(1.987_569_1e-4); N];
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            let c = _mm256_set1_ps(c);
            for k in 0..N {
                p[k] = _mm256_fmadd_ps(p[k], r[k], c);
            }
        }
        let mut out = x;
        for k in 0..N {
            let e = _mm256_fmadd_ps(
                p[k],
                _mm256_mul_ps(r[k], r[k]),
                _mm256_add_ps(r[k], _mm256_set1_ps(1.0)),
            );
            let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n[k]),
                _mm256_set1_epi32(127),
            )));
            out[k] = _mm256_mul_ps(e, scale);
        }
        out
    }

    /// GELU of `N` vectors of eight values: `x · Φ(x)`, with `erfc` from Abramowitz and Stegun
    /// 7.1.26 (absolute error below 1.5e-7, and cheaper than the portable `gelu_erf_f64`'s
    /// longer fit).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn gelu_ps<const N: usize>(x: [__m256; N]) -> [__m256; N] {
        let one = _mm256_set1_ps(1.0);
        let mut z = x;
        let mut t = x;
        for k in 0..N {
            let abs = _mm256_and_ps(x[k], _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF)));
            z[k] = _mm256_mul_ps(abs, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
            t[k] = _mm256_div_ps(one, _mm256_fmadd_ps(z[k], _mm256_set1_ps(0.327_591_1), one));
        }
        let mut p = [_mm256_set1_ps(1.061_405_4); N];
        for c in [-1.453_152, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
            let c = _mm256_set1_ps(c);
            for k in 0..N {
                p[k] = _mm256_fmadd_ps(p[k], t[k], c);
            }
        }
        for k in 0..N {
            // erfc(z) = t · p · exp(-z²); fold the half of Φ into `t`.
            t[k] = _mm256_mul_ps(_mm256_mul_ps(t[k], _mm256_set1_ps(0.5)), p[k]);
            p[k] = _mm256_mul_ps(z[k], z[k]);
            p[k] = _mm256_sub_ps(_mm256_setzero_ps(), p[k]);
        }
        let e = exp_ps(p);
        let mut out = x;
        for k in 0..N {
            let half_erfc = _mm256_mul_ps(t[k], e[k]);
            let positive = _mm256_cmp_ps::<_CMP_GE_OQ>(x[k], _mm256_setzero_ps());
            let phi = _mm256_blendv_ps(half_erfc, _mm256_sub_ps(one, half_erfc), positive);
            out[k] = _mm256_mul_ps(x[k], phi);
        }
        out
    }
}
