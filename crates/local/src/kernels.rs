//! CPU kernels for the embedded models: matrix products over weights held as GGUF Q4_1 blocks or
//! as f32, and the small vector operations around them.
//!
//! Activations stay in f32 throughout. llama.cpp quantizes activations to 8 bits before its
//! quantized dot products; we dequantize each weight block in registers instead, so the result
//! equals the f32 reference (the weights dequantized to f32, as `smollm2_reference.json` was
//! made) up to the order of additions.
//!
//! Every kernel has a portable version and, on x86-64 CPUs with AVX2 and FMA (detected at run
//! time), a vectorized one in [`x86`]; the tests check that the two agree.
//!
//! Matrix products split the output rows across the current rayon pool: callers run them inside
//! [`rayon::ThreadPool::install`] to choose the threads.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Weights per quantization block.
pub(crate) const QK: usize = 32;

/// One GGUF Q4_1 block with its scale and minimum widened to f32: weight `j` of the block is
/// `d * q + m`, where `q` is the low nibble of `qs[j]` for `j < 16` and the high nibble of
/// `qs[j - 16]` otherwise (ggml's layout).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct BlockQ4_1 {
    pub(crate) d: f32,
    pub(crate) m: f32,
    pub(crate) qs: [u8; 16],
}

/// One GGUF Q8_0 block with its scale widened to f32: weight `j` is `d * qs[j]`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct BlockQ8_0 {
    pub(crate) d: f32,
    pub(crate) qs: [i8; QK],
}

/// One token's activations for 32 inputs quantized to 8 bits (ggml's Q8_1): `x[j] ≈ d * qs[j]`,
/// and `s = d * Σ qs[j]` for the minimum term of Q4_1 products.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct BlockQ8_1 {
    pub(crate) d: f32,
    pub(crate) s: f32,
    pub(crate) qs: [i8; QK],
}

/// A quantization block of 32 weights.
pub(crate) trait Block: Copy + Send + Sync {
    /// Bytes of one block in a GGUF file.
    const GGML_BYTES: usize;
    /// Parses one block from its GGUF bytes (`GGML_BYTES` long).
    fn from_ggml(bytes: &[u8]) -> Self;
    /// The 32 weights of the block.
    fn dequantize(&self) -> [f32; QK];
}

/// A row-major `rows × cols` weight matrix; a product computes `x · Wᵀ`, as a linear layer.
#[derive(Debug, Clone)]
pub(crate) enum Matrix {
    /// Q4_1 blocks, `cols / 32` per row (`cols` a multiple of 32).
    Q4_1 {
        rows: usize,
        cols: usize,
        blocks: Vec<BlockQ4_1>,
    },
    /// Q8_0 blocks, `cols / 32` per row (`cols` a multiple of 32).
    Q8_0 {
        rows: usize,
        cols: usize,
        blocks: Vec<BlockQ8_0>,
    },
    /// Plain f32 weights.
    F32 {
        rows: usize,
        cols: usize,
        data: Vec<f32>,
    },
}

/// Rows of token activations processed together, so each weight block dequantized in
/// registers serves this many tokens.
const TOKEN_TILE: usize = 8;

impl Block for BlockQ4_1 {
    const GGML_BYTES: usize = 20;

    /// ggml's block: f16 `d`, f16 `m`, 16 bytes of nibbles.
    fn from_ggml(bytes: &[u8]) -> BlockQ4_1 {
        let d = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        let m = half::f16::from_le_bytes([bytes[2], bytes[3]]).to_f32();
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&bytes[4..20]);
        BlockQ4_1 { d, m, qs }
    }

    fn dequantize(&self) -> [f32; QK] {
        let mut out = [0f32; QK];
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = f32::from(q & 0x0F) * self.d + self.m;
            out[j + 16] = f32::from(q >> 4) * self.d + self.m;
        }
        out
    }
}

impl Block for BlockQ8_0 {
    const GGML_BYTES: usize = 34;

    /// ggml's block: f16 `d`, 32 signed bytes.
    fn from_ggml(bytes: &[u8]) -> BlockQ8_0 {
        let d = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        let mut qs = [0i8; QK];
        for (q, b) in qs.iter_mut().zip(&bytes[2..34]) {
            *q = i8::from_le_bytes([*b]);
        }
        BlockQ8_0 { d, qs }
    }

    fn dequantize(&self) -> [f32; QK] {
        let mut out = [0f32; QK];
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * self.d;
        }
        out
    }
}

/// Parses `rows × cols` weights of packed GGUF blocks; `None` on a wrong length or width.
fn parse_blocks<B: Block>(rows: usize, cols: usize, bytes: &[u8]) -> Option<Vec<B>> {
    if !cols.is_multiple_of(QK)
        || bytes.len() != rows.checked_mul(cols / QK)?.checked_mul(B::GGML_BYTES)?
    {
        return None;
    }
    Some(
        bytes
            .chunks_exact(B::GGML_BYTES)
            .map(B::from_ggml)
            .collect(),
    )
}

impl Matrix {
    /// A Q4_1 matrix from ggml's packed blocks (20 bytes per 32 weights, row-major).
    ///
    /// Returns `None` when `cols` is not a multiple of 32 or `bytes` has the wrong length.
    pub(crate) fn from_q4_1_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Option<Matrix> {
        let blocks = parse_blocks(rows, cols, bytes)?;
        Some(Matrix::Q4_1 { rows, cols, blocks })
    }

    /// A Q8_0 matrix from ggml's packed blocks (34 bytes per 32 weights, row-major).
    ///
    /// Returns `None` when `cols` is not a multiple of 32 or `bytes` has the wrong length.
    pub(crate) fn from_q8_0_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Option<Matrix> {
        let blocks = parse_blocks(rows, cols, bytes)?;
        Some(Matrix::Q8_0 { rows, cols, blocks })
    }

    /// An f32 matrix; `None` unless `data.len() == rows * cols`.
    pub(crate) fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Option<Matrix> {
        (rows.checked_mul(cols)? == data.len()).then_some(Matrix::F32 { rows, cols, data })
    }

    /// Output features.
    pub(crate) fn rows(&self) -> usize {
        match self {
            Matrix::Q4_1 { rows, .. } | Matrix::Q8_0 { rows, .. } | Matrix::F32 { rows, .. } => {
                *rows
            }
        }
    }

    /// Input features.
    pub(crate) fn cols(&self) -> usize {
        match self {
            Matrix::Q4_1 { cols, .. } | Matrix::Q8_0 { cols, .. } | Matrix::F32 { cols, .. } => {
                *cols
            }
        }
    }

    /// Bytes held.
    pub(crate) fn size_bytes(&self) -> usize {
        match self {
            Matrix::Q4_1 { blocks, .. } => std::mem::size_of_val(blocks.as_slice()),
            Matrix::Q8_0 { blocks, .. } => std::mem::size_of_val(blocks.as_slice()),
            Matrix::F32 { data, .. } => std::mem::size_of_val(data.as_slice()),
        }
    }

    /// Writes row `r`, dequantized, into `out` (`cols` long). Used for embedding lookups.
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        fn blocks_into<B: Block>(blocks: &[B], cols: usize, r: usize, out: &mut [f32]) {
            let per_row = cols / QK;
            for (chunk, b) in out
                .chunks_exact_mut(QK)
                .zip(&blocks[r * per_row..(r + 1) * per_row])
            {
                chunk.copy_from_slice(&b.dequantize());
            }
        }
        match self {
            Matrix::Q4_1 { cols, blocks, .. } => blocks_into(blocks, *cols, r, out),
            Matrix::Q8_0 { cols, blocks, .. } => blocks_into(blocks, *cols, r, out),
            Matrix::F32 { cols, data, .. } => {
                out.copy_from_slice(&data[r * cols..(r + 1) * cols]);
            }
        }
    }

    /// All weights as f32, row-major.
    fn into_f32(self) -> Vec<f32> {
        match self {
            Matrix::F32 { data, .. } => data,
            Matrix::Q4_1 { blocks, .. } => blocks.iter().flat_map(Block::dequantize).collect(),
            Matrix::Q8_0 { blocks, .. } => blocks.iter().flat_map(Block::dequantize).collect(),
        }
    }

    /// The same rows stacked after each other: `[self; other...]`, both of one kind and width.
    pub(crate) fn stack(parts: Vec<Matrix>) -> Option<Matrix> {
        let mut iter = parts.into_iter();
        let mut acc = iter.next()?;
        for next in iter {
            acc = match (acc, next) {
                (
                    Matrix::Q4_1 {
                        rows,
                        cols,
                        mut blocks,
                    },
                    Matrix::Q4_1 {
                        rows: r2,
                        cols: c2,
                        blocks: b2,
                    },
                ) if cols == c2 => {
                    blocks.extend(b2);
                    Matrix::Q4_1 {
                        rows: rows + r2,
                        cols,
                        blocks,
                    }
                }
                (
                    Matrix::F32 {
                        rows,
                        cols,
                        mut data,
                    },
                    Matrix::F32 {
                        rows: r2,
                        cols: c2,
                        data: d2,
                    },
                ) if cols == c2 => {
                    data.extend(d2);
                    Matrix::F32 {
                        rows: rows + r2,
                        cols,
                        data,
                    }
                }
                (a, b) if a.cols() == b.cols() => {
                    // Mixed quantizations: hold the stack as f32.
                    let (rows, cols) = (a.rows() + b.rows(), a.cols());
                    let mut data = a.into_f32();
                    data.extend(b.into_f32());
                    Matrix::F32 { rows, cols, data }
                }
                _ => return None,
            };
        }
        Some(acc)
    }
}

/// One token's activations (`cols` long, a multiple of 32) quantized per block of 32 to 8 bits,
/// rounding to nearest as ggml does.
pub(crate) fn quantize_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    x.chunks_exact(QK)
        .map(|x| {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; QK];
            let mut sum = 0i32;
            for (q, v) in qs.iter_mut().zip(x) {
                // |v * id| <= 127 by construction; the cast saturates anyway.
                *q = (v * id).round() as i8;
                sum += i32::from(*q);
            }
            BlockQ8_1 {
                d,
                s: d * sum as f32,
                qs,
            }
        })
        .collect()
}

/// `out = x · Wᵀ` for `tokens` rows of activations: `x` is `tokens × cols`, `out` is
/// `tokens × rows`, both row-major. The rows of `W` are split across the current rayon pool.
///
/// # Panics
///
/// When the slice lengths do not match the shapes (a bug in the caller).
pub(crate) fn matmul(w: &Matrix, x: &[f32], tokens: usize, out: &mut [f32]) {
    product(w, x, tokens, out, true);
}

#[cfg(test)]
/// As [`matmul`], but never quantizes the activations: for products whose result is sensitive
/// to the last bits, such as the logits a token is chosen from.
pub(crate) fn matmul_exact(w: &Matrix, x: &[f32], tokens: usize, out: &mut [f32]) {
    product(w, x, tokens, out, false);
}

/// For each block of 32 columns, the largest sum of absolute weights over all rows: bounds how
/// far quantizing one token's activations can move any output (see [`matmul_top_exact`]).
pub(crate) fn block_l1_max(w: &Matrix) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let mut max = vec![0f32; cols.div_ceil(QK)];
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        w.row_into(r, &mut row);
        for (m, chunk) in max.iter_mut().zip(row.chunks(QK)) {
            *m = m.max(chunk.iter().map(|v| v.abs()).sum());
        }
    }
    max
}

/// One token's product with activations quantized to 8 bits (fast), then the rows whose value
/// could be the largest recomputed in f32: the largest output comes out exactly as
/// f32 activations would give it, so greedy decoding picks the same token, at about the cost of
/// [`matmul`]. `l1_max` is [`block_l1_max`] of `w`.
///
/// Quantizing a block of activations with step `d` moves each by at most `d / 2`, so any output
/// moves by at most `eps = Σ_b d_b / 2 · l1_max[b]`; a row can only be the true maximum if its
/// quantized value is within `2 · eps` of the quantized maximum.
pub(crate) fn matmul_top_exact(w: &Matrix, l1_max: &[f32], x: &[f32], out: &mut [f32]) {
    /// Beyond this many candidates the whole product is recomputed exactly.
    const MAX_CANDIDATES: usize = 1024;
    if matches!(w, Matrix::F32 { .. }) || l1_max.len() != w.cols().div_ceil(QK) {
        product(w, x, 1, out, false);
        return;
    }
    product(w, x, 1, out, true);
    let xq = quantize_q8_1(x);
    // Rounding in the float arithmetic adds a little on top of the quantization bound.
    let eps: f32 = xq
        .iter()
        .zip(l1_max)
        .map(|(b, l1)| b.d / 2.0 * l1)
        .sum::<f32>()
        * 1.01
        + 1e-4;
    let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let candidates: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, v)| **v >= max - 2.0 * eps)
        .map(|(i, _)| i)
        .take(MAX_CANDIDATES + 1)
        .collect();
    if candidates.len() > MAX_CANDIDATES {
        product(w, x, 1, out, false);
        return;
    }
    for r in candidates {
        rows_for_one(w, x, r, &mut out[r..=r]);
    }
}

fn product(w: &Matrix, x: &[f32], tokens: usize, out: &mut [f32], quantize: bool) {
    let (rows, cols) = (w.rows(), w.cols());
    assert_eq!(x.len(), tokens * cols, "matmul input shape");
    assert_eq!(out.len(), tokens * rows, "matmul output shape");
    if tokens == 0 || rows == 0 {
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    // Whole tasks of a few rows each, a multiple of 4 so the vector kernels pair rows.
    let per_task = rows.div_ceil(threads * 2).next_multiple_of(4).max(4);
    if quantize && tokens == 1 && !matches!(w, Matrix::F32 { .. }) {
        // One token (generation): quantize the activations to 8 bits and use integer dot
        // products, as llama.cpp does; several times fewer instructions per weight than
        // widening every weight to f32, and the step that is memory-bound anyway.
        let xq = quantize_q8_1(x);
        out.par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(i, chunk)| rows_for_one_q8(w, &xq, i * per_task, chunk));
        return;
    }
    if tokens == 1 {
        out.par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(i, chunk)| rows_for_one(w, x, i * per_task, chunk));
        return;
    }
    // Each task writes its rows for every token (`rows × tokens`), transposed afterwards.
    let mut by_row = vec![0f32; rows * tokens];
    by_row
        .par_chunks_mut(per_task * tokens)
        .enumerate()
        .for_each(|(i, chunk)| rows_for_many(w, x, tokens, i * per_task, chunk));
    for (r, per_token) in by_row.chunks_exact(tokens).enumerate() {
        for (t, &v) in per_token.iter().enumerate() {
            out[t * rows + r] = v;
        }
    }
}

/// Rows `first..first + out.len()` of `W` against one token.
fn rows_for_one(w: &Matrix, x: &[f32], first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::rows_for_one(w, x, first, out);
        return;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = portable::dot_row(w, first + i, x);
    }
}

/// Rows `first..first + out.len()` of a quantized `W` against one token quantized to Q8_1.
fn rows_for_one_q8(w: &Matrix, xq: &[BlockQ8_1], first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::rows_for_one_q8(w, xq, first, out);
        return;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = portable::dot_row_q8(w, first + i, xq);
    }
}

/// Rows `first..` of `W` against every token; `out` is `(out.len() / tokens) × tokens`.
fn rows_for_many(w: &Matrix, x: &[f32], tokens: usize, first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::rows_for_many(w, x, tokens, first, out);
        return;
    }
    let cols = w.cols();
    for (i, per_token) in out.chunks_exact_mut(tokens).enumerate() {
        for (t, o) in per_token.iter_mut().enumerate() {
            *o = portable::dot_row(w, first + i, &x[t * cols..(t + 1) * cols]);
        }
    }
}

/// `Σ a[i] · b[i]`.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        return x86::dot(a, b);
    }
    portable::dot(a, b)
}

/// `y += a · x`.
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(y.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::axpy(y, a, x);
        return;
    }
    for (y, x) in y.iter_mut().zip(x) {
        *y = a.mul_add(*x, *y);
    }
}

/// RMS normalization of each `weight.len()`-wide row of `x` into `out`, scaled by `weight`.
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (row, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean_sq = dot(row, row) / n as f32;
        let scale = 1.0 / (mean_sq + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// Softmax over `x`, in place.
pub(crate) fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `gate = silu(gate) · up`, elementwise (the llama feed-forward's gating).
pub(crate) fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Portable reference versions of the kernels.
pub(crate) mod portable {
    use super::{Block, BlockQ8_1, Matrix, QK};

    /// Row `r` of `w` dotted with `x`.
    pub(crate) fn dot_row(w: &Matrix, r: usize, x: &[f32]) -> f32 {
        match w {
            Matrix::Q4_1 { cols, blocks, .. } => {
                let per_row = cols / QK;
                blocks_dot(&blocks[r * per_row..(r + 1) * per_row], x)
            }
            Matrix::Q8_0 { cols, blocks, .. } => {
                let per_row = cols / QK;
                blocks_dot(&blocks[r * per_row..(r + 1) * per_row], x)
            }
            Matrix::F32 { cols, data, .. } => dot(&data[r * cols..(r + 1) * cols], x),
        }
    }

    /// Row `r` of a quantized `w` dotted with Q8_1 activations, in integer arithmetic per
    /// block.
    pub(crate) fn dot_row_q8(w: &Matrix, r: usize, xq: &[BlockQ8_1]) -> f32 {
        match w {
            Matrix::Q4_1 { cols, blocks, .. } => {
                let per_row = cols / QK;
                blocks[r * per_row..(r + 1) * per_row]
                    .iter()
                    .zip(xq)
                    .map(|(b, x)| {
                        let mut sum = 0i32;
                        for (j, &q) in b.qs.iter().enumerate() {
                            sum += i32::from(q & 0x0F) * i32::from(x.qs[j]);
                            sum += i32::from(q >> 4) * i32::from(x.qs[j + 16]);
                        }
                        b.d * x.d * sum as f32 + b.m * x.s
                    })
                    .sum()
            }
            Matrix::Q8_0 { cols, blocks, .. } => {
                let per_row = cols / QK;
                blocks[r * per_row..(r + 1) * per_row]
                    .iter()
                    .zip(xq)
                    .map(|(b, x)| {
                        let sum: i32 =
                            b.qs.iter()
                                .zip(&x.qs)
                                .map(|(a, b)| i32::from(*a) * i32::from(*b))
                                .sum();
                        b.d * x.d * sum as f32
                    })
                    .sum()
            }
            Matrix::F32 { cols, data, .. } => {
                let x: Vec<f32> = xq
                    .iter()
                    .flat_map(|b| b.qs.map(|q| f32::from(q) * b.d))
                    .collect();
                dot(&data[r * cols..(r + 1) * cols], &x)
            }
        }
    }

    /// Blocks of one row dotted with `x`.
    pub(crate) fn blocks_dot<B: Block>(blocks: &[B], x: &[f32]) -> f32 {
        blocks
            .iter()
            .zip(x.chunks_exact(QK))
            .map(|(b, x)| dot(&b.dequantize(), x))
            .sum()
    }

    /// `Σ a[i] · b[i]` with eight partial sums (the same association as the vector version).
    pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let mut ca = a.chunks_exact(8);
        let mut cb = b.chunks_exact(8);
        for (a, b) in (&mut ca).zip(&mut cb) {
            for i in 0..8 {
                acc[i] = a[i].mul_add(b[i], acc[i]);
            }
        }
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(a, b)| a * b)
            .sum();
        acc.iter().sum::<f32>() + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }

        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }

        fn q4_1(&mut self, rows: usize, cols: usize) -> Matrix {
            let mut bytes = Vec::new();
            for _ in 0..rows * cols / QK {
                bytes.extend(half::f16::from_f32(self.next() * 0.1).to_le_bytes());
                bytes.extend(half::f16::from_f32(self.next() * 0.5).to_le_bytes());
                for _ in 0..16 {
                    bytes.push((self.next().abs() * 255.0) as u8);
                }
            }
            Matrix::from_q4_1_bytes(rows, cols, &bytes).unwrap_or_else(|| unreachable!())
        }

        fn q8_0(&mut self, rows: usize, cols: usize) -> Matrix {
            let mut bytes = Vec::new();
            for _ in 0..rows * cols / QK {
                bytes.extend(half::f16::from_f32(self.next() * 0.05).to_le_bytes());
                for _ in 0..QK {
                    bytes.push((self.next() * 127.0) as i8 as u8);
                }
            }
            Matrix::from_q8_0_bytes(rows, cols, &bytes).unwrap_or_else(|| unreachable!())
        }
    }

    fn naive(w: &Matrix, x: &[f32], tokens: usize) -> Vec<f32> {
        let (rows, cols) = (w.rows(), w.cols());
        let mut row = vec![0f32; cols];
        let mut out = vec![0f32; tokens * rows];
        for r in 0..rows {
            w.row_into(r, &mut row);
            for t in 0..tokens {
                let x = &x[t * cols..(t + 1) * cols];
                out[t * rows + r] = row
                    .iter()
                    .zip(x)
                    .map(|(a, b)| f64::from(a * b))
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "element {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn q4_1_block_layout_matches_ggml() {
        let mut bytes = [0u8; 20];
        bytes[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        bytes[2..4].copy_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
        bytes[4] = 0x3A; // weight 0 = 0xA, weight 16 = 0x3
        let w = BlockQ4_1::from_ggml(&bytes).dequantize();
        let mut q8 = [0u8; 34];
        q8[..2].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
        q8[2] = 0xFF; // -1
        q8[33] = 4;
        let w8 = BlockQ8_0::from_ggml(&q8).dequantize();
        assert_eq!((w8[0], w8[1], w8[31]), (-0.25, 0.0, 1.0));
        assert_eq!(w[0], 10.0 * 0.5 - 1.0);
        assert_eq!(w[16], 3.0 * 0.5 - 1.0);
        assert_eq!(w[1], -1.0);
    }

    #[test]
    fn products_agree_with_a_naive_product_for_every_shape() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for (rows, cols) in [(1, 32), (5, 64), (37, 96), (130, 576)] {
            let q = rng.q4_1(rows, cols);
            let q8 = rng.q8_0(rows, cols);
            let f = Matrix::from_f32(rows, cols, rng.vec(rows * cols))
                .unwrap_or_else(|| unreachable!());
            for w in [&q, &q8, &f] {
                for tokens in [1, 2, 7, 8, 9, 17] {
                    let x = rng.vec(tokens * cols);
                    let mut out = vec![0f32; tokens * rows];
                    matmul(w, &x, tokens, &mut out);
                    if tokens == 1 && !matches!(w, Matrix::F32 { .. }) {
                        // Integer path: exact against the same arithmetic in scalar code, and
                        // within the 8-bit quantization of the activations of the f32 result.
                        let xq = quantize_q8_1(&x);
                        let want: Vec<f32> =
                            (0..rows).map(|r| portable::dot_row_q8(w, r, &xq)).collect();
                        assert_close(&out, &want);
                        // Each activation moves by at most half its block's step.
                        let exact = naive(w, &x, 1);
                        let mut row = vec![0f32; cols];
                        for (r, (a, b)) in out.iter().zip(&exact).enumerate() {
                            w.row_into(r, &mut row);
                            let bound: f32 = row
                                .chunks_exact(QK)
                                .zip(&xq)
                                .map(|(ws, q)| ws.iter().map(|v| v.abs()).sum::<f32>() * q.d / 2.0)
                                .sum();
                            assert!((a - b).abs() <= bound * 1.01 + 1e-5, "{a} vs {b}");
                        }
                    } else {
                        assert_close(&out, &naive(w, &x, tokens));
                    }
                }
            }
        }
    }

    #[test]
    fn top_exact_products_find_the_exact_maximum() {
        let mut rng = Rng(0xDEAD_BEEF);
        for w in [rng.q4_1(300, 96), rng.q8_0(300, 96)] {
            let l1 = block_l1_max(&w);
            for _ in 0..20 {
                let x = rng.vec(96);
                let mut fast = vec![0f32; 300];
                matmul_top_exact(&w, &l1, &x, &mut fast);
                let mut exact = vec![0f32; 300];
                matmul_exact(&w, &x, 1, &mut exact);
                let argmax = |v: &[f32]| {
                    v.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(i, _)| i)
                };
                assert_eq!(argmax(&fast), argmax(&exact));
                let i = argmax(&exact).unwrap_or_default();
                assert_eq!(fast[i], exact[i]);
            }
        }
    }

    #[test]
    fn f32_products_handle_widths_that_are_not_multiples_of_eight() {
        let mut rng = Rng(7);
        let w = Matrix::from_f32(9, 13, rng.vec(9 * 13)).unwrap_or_else(|| unreachable!());
        for tokens in [1, 3, 10] {
            let x = rng.vec(tokens * 13);
            let mut out = vec![0f32; tokens * 9];
            matmul(&w, &x, tokens, &mut out);
            assert_close(&out, &naive(&w, &x, tokens));
        }
    }

    #[test]
    fn vector_helpers_agree_with_portable_ones() {
        let mut rng = Rng(99);
        for n in [0, 1, 7, 8, 9, 64, 100] {
            let a = rng.vec(n);
            let b = rng.vec(n);
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4);
            assert!((portable::dot(&a, &b) - naive).abs() < 1e-4);
            let mut y = b.clone();
            axpy(&mut y, 0.5, &a);
            let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 0.5 * x + y).collect();
            assert_close(&y, &want);
        }
    }

    #[test]
    fn malformed_shapes_are_refused() {
        assert!(Matrix::from_q4_1_bytes(2, 33, &[0; 40]).is_none());
        assert!(Matrix::from_q4_1_bytes(2, 32, &[0; 39]).is_none());
        assert!(Matrix::from_f32(2, 2, vec![0.0; 3]).is_none());
        assert!(Matrix::from_q4_1_bytes(usize::MAX, 32, &[]).is_none());
        assert!(Matrix::from_q8_0_bytes(1, 32, &[0; 33]).is_none());
    }

    #[test]
    fn softmax_and_norms_are_normalized() {
        let mut x = vec![1.0, 2.0, 3.0, -1000.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] == 0.0);
        let mut out = vec![0f32; 4];
        rms_norm(&[2.0, 2.0, 2.0, 2.0], &[1.0; 4], 0.0, &mut out);
        assert_close(&out, &[1.0; 4]);
    }
}

#[cfg(test)]
mod measure {
    use super::*;

    /// `cargo test -p enclave-local --lib -- --ignored --nocapture kernel_speed`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn kernel_speed() {
        let (rows, cols) = (3072, 576);
        let mut bytes = Vec::new();
        for i in 0..rows * cols / QK {
            bytes.extend(half::f16::from_f32(0.01).to_le_bytes());
            bytes.extend(half::f16::from_f32(-0.05).to_le_bytes());
            bytes.extend((0..16).map(|j| ((i + j) % 256) as u8));
        }
        let w = Matrix::from_q4_1_bytes(rows, cols, &bytes).unwrap_or_else(|| unreachable!());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap_or_else(|_| unreachable!());
        for tokens in [1, 8, 64] {
            let x: Vec<f32> = (0..tokens * cols).map(|i| (i % 7) as f32 * 0.1).collect();
            let mut out = vec![0f32; tokens * rows];
            let reps = 6000 / tokens;
            // CPU time, not wall time: other processes share this machine's two cores.
            let cpu = || {
                std::fs::read_to_string("/proc/self/stat")
                    .ok()
                    .and_then(|s| {
                        let f: Vec<u64> = s
                            .rsplit(')')
                            .next()?
                            .split_whitespace()
                            .skip(11)
                            .take(2)
                            .filter_map(|v| v.parse().ok())
                            .collect();
                        Some(f.iter().sum::<u64>() as f64 / 100.0)
                    })
                    .unwrap_or(0.0)
            };
            let t = cpu();
            pool.install(|| {
                for _ in 0..reps {
                    matmul(&w, &x, tokens, &mut out);
                }
            });
            let per = (cpu() - t) / reps as f64;
            let macs = (rows * cols * tokens) as f64;
            eprintln!(
                "tokens={tokens}: {:.3} ms per product, {:.2} GMAC/s, {:.1} cycles/block/token at 3 GHz",
                per * 1e3,
                macs / per / 1e9,
                per * 3e9 / (rows * cols / QK * tokens) as f64
            );
        }
    }
}
