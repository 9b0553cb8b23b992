//! CPU kernels for the embedded models: matrix products over weights held as GGUF Q4_1/Q8_0
//! blocks (exactly as stored in the file) or as f32, and the small vector operations around
//! them.
//!
//! Prompt tokens run with f32 activations, each weight block dequantized in registers and used
//! for up to eight tokens. A generated token's activations are quantized to 8 bits per block and
//! multiplied with integer dot products, as llama.cpp does ([`matmul`]); where the last bits
//! decide something (the largest logit, [`matmul_top_exact`]) the candidates are recomputed in
//! f32.
//!
//! Every kernel has a portable version and, on x86-64 CPUs with AVX2, FMA and F16C (detected
//! at run time), a vectorized one in [`x86`]; the tests check that the two agree.
//!
//! Matrix products split the output rows across the current rayon pool: callers run them inside
//! [`rayon::ThreadPool::install`] to choose the threads.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Weights per quantization block.
pub(crate) const QK: usize = 32;

/// One GGUF Q4_1 block, 20 bytes as in the file: weight `j` of the block is `d * q + m`, where
/// `q` is the low nibble of `qs[j]` for `j < 16` and the high nibble of `qs[j - 16]` otherwise
/// (ggml's layout). The scale and minimum stay half-precision: generation reads every weight
/// once per token and is bound by memory traffic, so widening them to f32 (24-byte blocks) cost
/// a fifth more bytes per token; the vector kernels widen them in registers.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct BlockQ4_1 {
    /// The bits of the f16 `d` and `m`.
    pub(crate) dm: [u16; 2],
    pub(crate) qs: [u8; 16],
}

impl BlockQ4_1 {
    /// The scale `d`.
    pub(crate) fn d(&self) -> f32 {
        half::f16::from_bits(self.dm[0]).to_f32()
    }

    /// The minimum `m`.
    pub(crate) fn m(&self) -> f32 {
        half::f16::from_bits(self.dm[1]).to_f32()
    }
}

/// One GGUF Q8_0 block, 34 bytes as in the file (its scale half-precision, for the reason given
/// at [`BlockQ4_1`]): weight `j` is `d * qs[j]`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct BlockQ8_0 {
    /// The bits of the f16 `d`.
    pub(crate) d: u16,
    pub(crate) qs: [i8; QK],
}

impl BlockQ8_0 {
    /// The scale `d`.
    pub(crate) fn d(&self) -> f32 {
        half::f16::from_bits(self.d).to_f32()
    }
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
        blocks: Blocks<BlockQ4_1>,
    },
    /// Q8_0 blocks, `cols / 32` per row (`cols` a multiple of 32).
    Q8_0 {
        rows: usize,
        cols: usize,
        blocks: Blocks<BlockQ8_0>,
    },
    /// Plain f32 weights.
    F32 {
        rows: usize,
        cols: usize,
        data: Vec<f32>,
    },
}

/// The blocks of one matrix: a range of a buffer that several matrices may share, so a model's
/// layers can sit in one large allocation backed by huge pages ([`Matrix::gather`]); reads as
/// a slice.
#[derive(Clone)]
pub(crate) struct Blocks<B> {
    buffer: std::sync::Arc<Vec<B>>,
    range: std::ops::Range<usize>,
}

impl<B> Blocks<B> {
    fn new(blocks: Vec<B>) -> Blocks<B> {
        let range = 0..blocks.len();
        Blocks {
            buffer: std::sync::Arc::new(blocks),
            range,
        }
    }
}

impl<B> std::ops::Deref for Blocks<B> {
    type Target = [B];

    fn deref(&self) -> &[B] {
        &self.buffer[self.range.clone()]
    }
}

impl<B> std::fmt::Debug for Blocks<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} blocks", self.range.len())
    }
}

/// Rows of token activations processed together, so each weight block dequantized in
/// registers serves this many tokens.
const TOKEN_TILE: usize = 8;

impl Block for BlockQ4_1 {
    const GGML_BYTES: usize = 20;

    /// ggml's block: f16 `d`, f16 `m`, 16 bytes of nibbles.
    fn from_ggml(bytes: &[u8]) -> BlockQ4_1 {
        let d = u16::from_le_bytes([bytes[0], bytes[1]]);
        let m = u16::from_le_bytes([bytes[2], bytes[3]]);
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&bytes[4..20]);
        BlockQ4_1 { dm: [d, m], qs }
    }

    fn dequantize(&self) -> [f32; QK] {
        let mut out = [0f32; QK];
        let (d, m) = (self.d(), self.m());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = f32::from(q & 0x0F) * d + m;
            out[j + 16] = f32::from(q >> 4) * d + m;
        }
        out
    }
}

impl Block for BlockQ8_0 {
    const GGML_BYTES: usize = 34;

    /// ggml's block: f16 `d`, 32 signed bytes.
    fn from_ggml(bytes: &[u8]) -> BlockQ8_0 {
        let d = u16::from_le_bytes([bytes[0], bytes[1]]);
        let mut qs = [0i8; QK];
        for (q, b) in qs.iter_mut().zip(&bytes[2..34]) {
            *q = i8::from_le_bytes([*b]);
        }
        BlockQ8_0 { d, qs }
    }

    fn dequantize(&self) -> [f32; QK] {
        let mut out = [0f32; QK];
        let d = self.d();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
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
    let mut blocks = crate::memory::huge_vec(bytes.len() / B::GGML_BYTES);
    blocks.extend(bytes.chunks_exact(B::GGML_BYTES).map(B::from_ggml));
    Some(blocks)
}

impl Matrix {
    /// A Q4_1 matrix from ggml's packed blocks (20 bytes per 32 weights, row-major).
    ///
    /// Returns `None` when `cols` is not a multiple of 32 or `bytes` has the wrong length.
    pub(crate) fn from_q4_1_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Option<Matrix> {
        let blocks = Blocks::new(parse_blocks(rows, cols, bytes)?);
        Some(Matrix::Q4_1 { rows, cols, blocks })
    }

    /// A Q8_0 matrix from ggml's packed blocks (34 bytes per 32 weights, row-major).
    ///
    /// Returns `None` when `cols` is not a multiple of 32 or `bytes` has the wrong length.
    pub(crate) fn from_q8_0_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Option<Matrix> {
        let blocks = Blocks::new(parse_blocks(rows, cols, bytes)?);
        Some(Matrix::Q8_0 { rows, cols, blocks })
    }

    /// An f32 matrix; `None` unless `data.len() == rows * cols`.
    pub(crate) fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Option<Matrix> {
        (rows.checked_mul(cols)? == data.len()).then_some(Matrix::F32 { rows, cols, data })
    }

    /// Moves the Q4_1 blocks of all `matrices` into one buffer advised for huge pages (see
    /// `crate::memory`): a model's layers are each too small to get huge pages alone. Values are
    /// unchanged; other matrices are left alone.
    pub(crate) fn gather(matrices: &mut [&mut Matrix]) {
        let total: usize = matrices
            .iter()
            .map(|m| match m {
                Matrix::Q4_1 { blocks, .. } => blocks.len(),
                _ => 0,
            })
            .sum();
        let mut buffer = crate::memory::huge_vec(total);
        let mut ranges = Vec::with_capacity(matrices.len());
        for m in matrices.iter() {
            if let Matrix::Q4_1 { blocks, .. } = m {
                let start = buffer.len();
                buffer.extend_from_slice(blocks);
                ranges.push(Some(start..buffer.len()));
            } else {
                ranges.push(None);
            }
        }
        let buffer = std::sync::Arc::new(buffer);
        for (m, range) in matrices.iter_mut().zip(ranges) {
            if let (Matrix::Q4_1 { blocks, .. }, Some(range)) = (&mut **m, range) {
                *blocks = Blocks {
                    buffer: std::sync::Arc::clone(&buffer),
                    range,
                };
            }
        }
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
            Matrix::Q4_1 { blocks, .. } => std::mem::size_of_val(&**blocks),
            Matrix::Q8_0 { blocks, .. } => std::mem::size_of_val(&**blocks),
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
                    Matrix::Q4_1 { rows, cols, blocks },
                    Matrix::Q4_1 {
                        rows: r2,
                        cols: c2,
                        blocks: b2,
                    },
                ) if cols == c2 => {
                    let mut all = Vec::with_capacity(blocks.len() + b2.len());
                    all.extend_from_slice(&blocks);
                    all.extend_from_slice(&b2);
                    Matrix::Q4_1 {
                        rows: rows + r2,
                        cols,
                        blocks: Blocks::new(all),
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

/// `out = x · Wᵀ` for `tokens` rows of `x` that are single tokens of separate sequences (batched
/// generation): each row is quantized and multiplied with exactly the arithmetic [`matmul`] uses
/// for one token, so whether a sequence ran alone or batched never changes its result, while
/// each weight block is unpacked once for all the rows.
pub(crate) fn matmul_each(w: &Matrix, x: &[f32], tokens: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert_eq!(x.len(), tokens * cols, "matmul input shape");
    assert_eq!(out.len(), tokens * rows, "matmul output shape");
    if tokens <= 1 || matches!(w, Matrix::F32 { .. }) {
        for (x, out) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rows)) {
            product(w, x, 1, out, true);
        }
        return;
    }
    let xqs: Vec<Vec<BlockQ8_1>> = x.chunks_exact(cols).map(quantize_q8_1).collect();
    let threads = rayon::current_num_threads().max(1);
    let per_task = rows.div_ceil(threads * 2).next_multiple_of(4).max(4);
    let mut by_row = vec![0f32; rows * tokens];
    by_row
        .par_chunks_mut(per_task * tokens)
        .enumerate()
        .for_each(|(i, chunk)| rows_for_many_q8(w, &xqs, i * per_task, chunk));
    for (r, per_token) in by_row.chunks_exact(tokens).enumerate() {
        for (t, &v) in per_token.iter().enumerate() {
            out[t * rows + r] = v;
        }
    }
}

/// Rows `first..` of a quantized `W` against each token of `xqs`; `out` is
/// `(out.len() / xqs.len()) × xqs.len()`.
fn rows_for_many_q8(w: &Matrix, xqs: &[Vec<BlockQ8_1>], first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::rows_for_many_q8(w, xqs, first, out);
        return;
    }
    for (i, per_token) in out.chunks_exact_mut(xqs.len()).enumerate() {
        for (o, xq) in per_token.iter_mut().zip(xqs) {
            *o = portable::dot_row_q8(w, first + i, xq);
        }
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

/// `out[j] = dot(q, row j) · scale`, where row `j` is `rows[j * stride..][..q.len()]` (the keys of
/// one attention head in a cache): the same arithmetic as [`dot`] row by row.
///
/// # Panics
///
/// When `rows` is too short for `out.len()` rows.
pub(crate) fn scaled_dots(q: &[f32], rows: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::scaled_dots(q, rows, stride, scale, out);
        return;
    }
    for (j, o) in out.iter_mut().enumerate() {
        *o = portable::dot(q, &rows[j * stride..j * stride + q.len()]) * scale;
    }
}

/// `out = Σ_j weights[j] · row j`, where row `j` is `rows[j * stride..][..out.len()]` (the
/// values of one attention head): the same arithmetic as zeroing `out` and calling [`axpy`] row
/// by row.
///
/// # Panics
///
/// When `rows` is too short for `weights.len()` rows.
pub(crate) fn weighted_sum(weights: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::weighted_sum(weights, rows, stride, out);
        return;
    }
    out.fill(0.0);
    let width = out.len();
    for (j, &w) in weights.iter().enumerate() {
        for (y, x) in out.iter_mut().zip(&rows[j * stride..j * stride + width]) {
            *y = w.mul_add(*x, *y);
        }
    }
}

/// `y += a · x` (the reference for [`weighted_sum`]).
#[cfg(test)]
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
                        b.d() * x.d * sum as f32 + b.m() * x.s
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
                        b.d() * x.d * sum as f32
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

// === Packed f32 linear layers (the BERT encoder) ===
//
// The products above read each weight row once per token tile and reduce horizontally; for
// f32 weights used by many tokens (the embedding model) this block holds the weights packed in
// panels of output features instead, so the vector kernel keeps a register tile of 6 tokens ×
// 16 features and needs no horizontal sums (the layout of BLAS micro-kernels).

/// Output features per panel of a [`PackedF32`].
const PANEL: usize = 16;

/// Tokens per register tile of [`linear`].
const PANEL_TOKENS: usize = 6;

/// How a packed linear layer stores its weights: `f32`, or `half::f16` (half the bytes to
/// stream, widened to f32 in registers; the products and sums stay f32).
pub(crate) trait Weight: Copy + Default + Send + Sync + 'static {
    /// The stored value of `v` (rounded to nearest for f16).
    fn from_f32(v: f32) -> Self;
    /// The stored value as f32 (exact).
    fn to_f32(self) -> f32;
    /// The vector register tile of [`panel_tile`] for `MR` tokens over these weights.
    #[cfg(target_arch = "x86_64")]
    fn x86_tile<const MR: usize>(panel: &[Self], tile: Tile<'_, Self>);
}

/// What a register tile reads and writes besides its panel: `bias` (16), `x` (`MR × cols`),
/// `out` (token `t`'s 16 features at `t * stride`), and `next`, the panel to prefetch, or empty.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Tile<'a, W> {
    bias: &'a [f32],
    x: &'a [f32],
    cols: usize,
    out: &'a mut [f32],
    stride: usize,
    next: &'a [W],
}

impl Weight for f32 {
    fn from_f32(v: f32) -> f32 {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    fn x86_tile<const MR: usize>(panel: &[f32], t: Tile<'_, f32>) {
        x86::panel_tile::<MR>(panel, t.bias, t.x, t.cols, t.out, t.stride, t.next);
    }
}

impl Weight for half::f16 {
    fn from_f32(v: f32) -> half::f16 {
        half::f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    fn x86_tile<const MR: usize>(panel: &[half::f16], t: Tile<'_, half::f16>) {
        x86::panel_tile_f16::<MR>(panel, t.bias, t.x, t.cols, t.out, t.stride, t.next);
    }
}

/// A linear layer (`rows × cols` weights in PyTorch's layout, and a bias of `rows`) packed for
/// [`linear`]: the output features in panels of [`PANEL`], each panel stored input by input
/// (`cols × PANEL`), the last one padded with zero weights; the bias (always f32) padded alike.
#[derive(Debug, Clone, Default)]
pub(crate) struct Packed<W> {
    rows: usize,
    cols: usize,
    /// The panels start at `data[offset]`, 64-byte aligned when the allocation allows.
    data: Vec<W>,
    offset: usize,
    bias: Vec<f32>,
}

/// A linear layer with f32 weights.
pub(crate) type PackedF32 = Packed<f32>;

/// A linear layer with f16 weights.
pub(crate) type PackedF16 = Packed<half::f16>;

impl<W: Weight> Packed<W> {
    /// Packs row-major `weights` (`rows × cols`) and `bias` (`rows`); `None` on other lengths.
    pub(crate) fn new(rows: usize, cols: usize, weights: &[f32], bias: &[f32]) -> Option<Self> {
        let mut packed = Packed::default();
        packed.repack(rows, cols, weights, bias)?;
        Some(packed)
    }

    /// Packs other weights into this matrix, as [`Packed::new`] but reusing its memory (for
    /// the small products of attention); `None`, and the matrix unchanged, on wrong lengths.
    pub(crate) fn repack(
        &mut self,
        rows: usize,
        cols: usize,
        weights: &[f32],
        bias: &[f32],
    ) -> Option<()> {
        if weights.len() != rows.checked_mul(cols)? || bias.len() != rows {
            return None;
        }
        let panels = rows.div_ceil(PANEL);
        let len = panels.checked_mul(PANEL)?.checked_mul(cols)?;
        // Extra room to start the panels on a cache line: each input's 16 weights then fill
        // whole lines (f32) or half of one (f16), and no vector load straddles two.
        let line = 64 / std::mem::size_of::<W>();
        let total = len.checked_add(line)?;
        if self.data.len() < total {
            self.data = vec![W::default(); total];
        }
        let misalignment = (self.data.as_ptr() as usize % 64) / std::mem::size_of::<W>();
        let offset = (line - misalignment) % line;
        let data = &mut self.data[offset..offset + len];
        if !rows.is_multiple_of(PANEL) {
            // Zero weights for the padding rows of the last panel.
            data[(panels - 1) * PANEL * cols..].fill(W::default());
        }
        for (r, row) in weights.chunks_exact(cols.max(1)).enumerate().take(rows) {
            let base = (r / PANEL) * PANEL * cols + r % PANEL;
            for (k, &v) in row.iter().enumerate() {
                data[base + k * PANEL] = W::from_f32(v);
            }
        }
        self.bias.clear();
        self.bias.extend_from_slice(bias);
        self.bias.resize(panels * PANEL, 0.0);
        (self.rows, self.cols, self.offset) = (rows, cols, offset);
        Some(())
    }

    /// Panel `p`: `cols × PANEL` weights, input by input.
    fn panel(&self, p: usize) -> &[W] {
        let len = self.cols * PANEL;
        &self.data[self.offset + p * len..self.offset + (p + 1) * len]
    }
}

/// `out = x · Wᵀ + bias` for `tokens` rows of activations: `x` is `tokens × cols`, `out` is
/// `tokens × rows`, both row-major. Runs on the calling thread: callers split the tokens into
/// blocks across their pool, so a block goes through several layers without waiting for the
/// others. Each output is the bias plus the products in input order, whatever the number of
/// tokens, so a token's result does not depend on the other tokens.
///
/// # Panics
///
/// When the slice lengths do not match the shapes (a bug in the caller).
pub(crate) fn linear<W: Weight>(w: &Packed<W>, x: &[f32], tokens: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    assert_eq!(x.len(), tokens * cols, "linear input shape");
    assert_eq!(out.len(), tokens * rows, "linear output shape");
    if tokens == 0 || rows == 0 {
        return;
    }
    if cols == 0 {
        for row in out.chunks_exact_mut(rows) {
            row.copy_from_slice(&w.bias[..rows]);
        }
        return;
    }
    linear_panels(w, x, tokens, 0..rows.div_ceil(PANEL), out, rows);
}

/// [`linear`] with the output features split over the current rayon pool in up to `parts`
/// groups of panels, each computed by one task into its own buffer and copied into place.
/// For a few tokens: [`linear`]'s callers split the tokens over the pool, so every thread
/// would stream all of the weights for its handful of tokens, and a short text is bound by
/// that traffic; split by features, each thread streams its share once. Each output is
/// computed exactly as [`linear`] computes it (same panel, same order of products), so the
/// result is the same bits.
///
/// # Panics
///
/// As [`linear`].
pub(crate) fn linear_split<W: Weight>(
    w: &Packed<W>,
    x: &[f32],
    tokens: usize,
    out: &mut [f32],
    parts: usize,
) {
    let (rows, cols) = (w.rows, w.cols);
    let panels = rows.div_ceil(PANEL);
    let parts = parts.min(panels);
    if parts <= 1 || tokens == 0 || cols == 0 {
        linear(w, x, tokens, out);
        return;
    }
    assert_eq!(x.len(), tokens * cols, "linear input shape");
    assert_eq!(out.len(), tokens * rows, "linear output shape");
    let per = panels.div_ceil(parts);
    let pieces: Vec<(usize, usize, Vec<f32>)> = (0..parts)
        .into_par_iter()
        .map(|i| {
            let (p0, p1) = (i * per, ((i + 1) * per).min(panels));
            let (f0, f1) = (p0 * PANEL, (p1 * PANEL).min(rows));
            let width = f1.saturating_sub(f0);
            let mut buf = vec![0f32; tokens * width];
            if width > 0 {
                linear_panels(w, x, tokens, p0..p1, &mut buf, width);
            }
            (f0, width, buf)
        })
        .collect();
    for (f0, width, buf) in pieces {
        for (t, part) in buf.chunks_exact(width.max(1)).enumerate().take(tokens) {
            out[t * rows + f0..t * rows + f0 + width].copy_from_slice(part);
        }
    }
}

/// The panels `panels` of `w` for `tokens` rows of `x`: token `t`'s feature `f` (of the first
/// panel's features on) goes to `out[t * stride + f - first feature]`, `stride` at least the
/// features of `panels`.
fn linear_panels<W: Weight>(
    w: &Packed<W>,
    x: &[f32],
    tokens: usize,
    panels: std::ops::Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    let (rows, cols) = (w.rows, w.cols);
    let f0 = panels.start * PANEL;
    // Tiles of nearly equal size: 15 tokens as 5 + 5 + 5 rather than 6 + 6 + 3.
    let tiles = tokens.div_ceil(PANEL_TOKENS);
    let (base, extra) = (tokens / tiles, tokens % tiles);
    for p in panels.clone() {
        let (panel, bias) = (w.panel(p), &w.bias[p * PANEL..(p + 1) * PANEL]);
        let width = (rows - p * PANEL).min(PANEL);
        let mut t = 0;
        for tile in 0..tiles {
            let n = base + usize::from(tile < extra);
            let xs = &x[t * cols..(t + n) * cols];
            // The first tile brings in the next panel while the weights stream from memory.
            let next = if tile == 0 && p + 1 < panels.end {
                w.panel(p + 1)
            } else {
                &[]
            };
            if width == PANEL {
                let start = t * stride + p * PANEL - f0;
                let end = (t + n - 1) * stride + (p + 1) * PANEL - f0;
                panel_tile(panel, bias, xs, cols, &mut out[start..end], stride, next);
            } else {
                // The last, partial panel: through a buffer, then the features that exist.
                let mut buf = [0f32; PANEL_TOKENS * PANEL];
                panel_tile(panel, bias, xs, cols, &mut buf[..n * PANEL], PANEL, next);
                for (i, b) in buf.chunks_exact(PANEL).take(n).enumerate() {
                    let o = (t + i) * stride + p * PANEL - f0;
                    out[o..o + width].copy_from_slice(&b[..width]);
                }
            }
            t += n;
        }
    }
}

/// Up to [`PANEL_TOKENS`] tokens (`x`, `n × cols`) against one panel, from its bias; writes
/// token `i`'s 16 features at `out[i * stride..]`. `next` is the panel to prefetch on the way,
/// or empty.
fn panel_tile<W: Weight>(
    panel: &[W],
    bias: &[f32],
    x: &[f32],
    cols: usize,
    out: &mut [f32],
    stride: usize,
    next: &[W],
) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        macro_rules! tile {
            ($x:expr, $out:expr) => {
                Tile {
                    bias,
                    x: $x,
                    cols,
                    out: $out,
                    stride,
                    next,
                }
            };
        }
        match x.len() / cols.max(1) {
            6 => W::x86_tile::<6>(panel, tile!(x, out)),
            5 => W::x86_tile::<5>(panel, tile!(x, out)),
            4 => W::x86_tile::<4>(panel, tile!(x, out)),
            3 => W::x86_tile::<3>(panel, tile!(x, out)),
            2 => W::x86_tile::<2>(panel, tile!(x, out)),
            _ => {
                for (i, x) in x.chunks_exact(cols).enumerate() {
                    W::x86_tile::<1>(panel, tile!(x, &mut out[i * stride..]));
                }
            }
        }
        return;
    }
    let _ = next;
    panel_tile_portable(panel, bias, x, cols, out, stride);
}

/// [`panel_tile`] in portable code: the same order of additions, each product rounded.
fn panel_tile_portable<W: Weight>(
    panel: &[W],
    bias: &[f32],
    x: &[f32],
    cols: usize,
    out: &mut [f32],
    stride: usize,
) {
    for (i, x) in x.chunks_exact(cols.max(1)).enumerate() {
        let out = &mut out[i * stride..i * stride + PANEL];
        out.copy_from_slice(bias);
        for (k, &v) in x.iter().enumerate() {
            for (o, &w) in out.iter_mut().zip(&panel[k * PANEL..(k + 1) * PANEL]) {
                *o += w.to_f32() * v;
            }
        }
    }
}

/// `x = exp(x)`, elementwise; within a few ulp of the correctly rounded result.
pub(crate) fn exp_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::exp_in_place(x);
        return;
    }
    for v in x.iter_mut() {
        *v = v.exp();
    }
}

/// GELU with the exact normal distribution function, `x · Φ(x) = x · (1 + erf(x / √2)) / 2`,
/// elementwise; within 1.5e-7 · (1 + |x|) of the exact value.
pub(crate) fn gelu_erf(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::gelu_erf(x);
        return;
    }
    for v in x.iter_mut() {
        *v = gelu_erf_f64(f64::from(*v)) as f32;
    }
}

/// Layer normalization of each `weight.len()`-wide row of `x`, in place: each row less its mean,
/// divided by `sqrt(variance + eps)`, times `weight`, plus `bias`.
pub(crate) fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = weight.len();
    if n == 0 {
        return;
    }
    for row in x.chunks_exact_mut(n) {
        normalize_row(row, weight, bias, eps);
    }
}

/// `x = layer_norm(x + y)`, row by row (a residual connection, then [`layer_norm`]).
pub(crate) fn add_layer_norm(x: &mut [f32], y: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = weight.len();
    if n == 0 {
        return;
    }
    for (row, add) in x.chunks_exact_mut(n).zip(y.chunks_exact(n)) {
        for (a, b) in row.iter_mut().zip(add) {
            *a += b;
        }
        normalize_row(row, weight, bias, eps);
    }
}

/// One row of [`layer_norm`]: mean and variance in two passes, eight partial sums each.
fn normalize_row(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum8(row, |v| v) / n;
    let var = sum8(row, |v| (v - mean) * (v - mean)) / n;
    let scale = 1.0 / (var + eps).sqrt();
    for ((v, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
        *v = (*v - mean) * scale * w + b;
    }
}

/// `Σ f(v)` over `values` with eight partial sums (vectorizable, and more accurate than one
/// running sum).
fn sum8(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
    acc.iter().sum()
}

/// GELU of one value in f64: `x · Φ(x)` with `erfc` from Numerical Recipes' Chebyshev fit
/// (`erfcc`, relative error below 1.2e-7 everywhere), the formula the vector version evaluates
/// in f32.
fn gelu_erf_f64(x: f64) -> f64 {
    let z = x.abs() * std::f64::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = [
        -0.822_152_23,
        1.488_515_87,
        -1.135_203_98,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_68,
        -1.265_512_23,
    ]
    .iter()
    .fold(0.170_872_77, |p, c| p * t + c);
    let half_erfc = 0.5 * t * (poly - z * z).exp();
    x * if x >= 0.0 { 1.0 - half_erfc } else { half_erfc }
}

#[cfg(test)]
mod packed_tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn linear_split_over_features_gives_linears_bits() {
        split_gives_linears_bits::<f32>();
        split_gives_linears_bits::<half::f16>();
    }

    fn split_gives_linears_bits<W: Weight>() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap_or_else(|_| unreachable!());
        for (rows, cols) in [(1, 4), (16, 8), (37, 96), (130, 200), (1536, 384)] {
            let w = values(rows * cols, 11);
            let b = values(rows, 12);
            let packed = Packed::<W>::new(rows, cols, &w, &b).unwrap_or_else(|| unreachable!());
            for tokens in [1, 5, 6, 7, 13, 24] {
                let x = values(tokens * cols, 13 + tokens as u32);
                let mut want = vec![0f32; tokens * rows];
                linear(&packed, &x, tokens, &mut want);
                for parts in [1, 2, 3, 7, 1000] {
                    let mut got = vec![f32::NAN; tokens * rows];
                    pool.install(|| linear_split(&packed, &x, tokens, &mut got, parts));
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{rows}×{cols}, {tokens} tokens, {parts} parts"
                    );
                }
            }
        }
    }

    #[test]
    fn f16_weights_give_the_product_of_the_rounded_weights() {
        let (rows, cols) = (37, 96);
        let w = values(rows * cols, 21);
        let b = values(rows, 22);
        let rounded: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        let half = PackedF16::new(rows, cols, &w, &b).unwrap_or_else(|| unreachable!());
        let full = PackedF32::new(rows, cols, &rounded, &b).unwrap_or_else(|| unreachable!());
        for tokens in [1, 4, 6, 13] {
            let x = values(tokens * cols, 23);
            let (mut got, mut want) = (vec![0f32; tokens * rows], vec![0f32; tokens * rows]);
            linear(&half, &x, tokens, &mut got);
            linear(&full, &x, tokens, &mut want);
            assert_eq!(got, want, "{tokens} tokens");
        }
        for n in 1..=PANEL_TOKENS {
            let x = values(n * cols, 24);
            let (mut fast, mut slow) = (vec![0f32; n * 20], vec![0f32; n * 20]);
            panel_tile(
                half.panel(0),
                &half.bias[..PANEL],
                &x,
                cols,
                &mut fast,
                20,
                &[],
            );
            panel_tile_portable(half.panel(0), &half.bias[..PANEL], &x, cols, &mut slow, 20);
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn linear_agrees_with_a_naive_product() {
        for (rows, cols) in [(1, 1), (5, 3), (16, 32), (37, 96), (130, 200)] {
            let w = values(rows * cols, 1);
            let b = values(rows, 2);
            let packed = PackedF32::new(rows, cols, &w, &b).unwrap_or_else(|| unreachable!());
            for tokens in [1, 2, 5, 6, 7, 13, 29] {
                let x = values(tokens * cols, 3 + tokens as u32);
                let mut out = vec![0f32; tokens * rows];
                linear(&packed, &x, tokens, &mut out);
                for t in 0..tokens {
                    for r in 0..rows {
                        let want: f64 = f64::from(b[r])
                            + (0..cols)
                                .map(|k| f64::from(w[r * cols + k]) * f64::from(x[t * cols + k]))
                                .sum::<f64>();
                        let got = out[t * rows + r];
                        assert!(
                            (f64::from(got) - want).abs() < 1e-5 * (1.0 + want.abs()),
                            "{rows}×{cols}, {tokens} tokens, ({t}, {r}): {got} vs {want}"
                        );
                    }
                }
                // One token alone gives the same bits as inside a batch.
                let mut one = vec![0f32; rows];
                let last = &x[(tokens - 1) * cols..];
                linear(&packed, last, 1, &mut one);
                assert_eq!(one, out[(tokens - 1) * rows..]);
            }
        }
        // Repacking a smaller matrix into a larger one's memory.
        let mut packed =
            PackedF32::new(40, 20, &values(800, 4), &[0.5; 40]).unwrap_or_else(|| unreachable!());
        let (w, b) = (values(17 * 9, 5), values(17, 6));
        packed
            .repack(17, 9, &w, &b)
            .unwrap_or_else(|| unreachable!());
        let x = values(2 * 9, 7);
        let mut got = vec![0f32; 2 * 17];
        linear(&packed, &x, 2, &mut got);
        let mut want = vec![0f32; 2 * 17];
        let fresh = PackedF32::new(17, 9, &w, &b).unwrap_or_else(|| unreachable!());
        linear(&fresh, &x, 2, &mut want);
        assert_eq!(got, want);
        assert!(packed.repack(2, 2, &[0.0; 3], &[0.0; 2]).is_none());
        assert!(PackedF32::new(2, 2, &[0.0; 3], &[0.0; 2]).is_none());
        assert!(PackedF32::new(2, 2, &[0.0; 4], &[0.0; 1]).is_none());
    }

    #[test]
    fn vector_tiles_agree_with_portable_ones() {
        let cols = 37;
        let w = PackedF32::new(16, cols, &values(16 * cols, 11), &values(16, 12))
            .unwrap_or_else(|| unreachable!());
        for n in 1..=PANEL_TOKENS {
            let x = values(n * cols, 13);
            let (mut fast, mut slow) = (vec![0f32; n * 20], vec![0f32; n * 20]);
            panel_tile(w.panel(0), &w.bias, &x, cols, &mut fast, 20, w.panel(0));
            panel_tile_portable(w.panel(0), &w.bias, &x, cols, &mut slow, 20);
            // The vector tile fuses each multiply-add: the last bits may differ.
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn gelu_and_exp_are_accurate() {
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 / 200.0).collect();
        xs.extend([-1e4, -90.0, -30.0, 30.0, 1e4, 0.0, -0.0, 1e-20, -1e-20]);
        let mut g = xs.clone();
        gelu_erf(&mut g);
        for (&x, &y) in xs.iter().zip(&g) {
            let x = f64::from(x);
            let want = x * 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x / 2f64.sqrt()));
            let portable = gelu_erf_f64(x);
            assert!((portable - want).abs() <= 1e-7 * (1.0 + want.abs()), "{x}");
            assert!(
                (f64::from(y) - want).abs() <= 1.5e-7 * (1.0 + x.abs()),
                "gelu({x}) = {y}, want {want}"
            );
        }
        // Known values of the normal distribution function.
        for (x, phi) in [
            (1.0, 0.841_344_746_068_542_9),
            (-2.0, 0.022_750_131_948_179_2),
        ] {
            assert!((gelu_erf_f64(x) / x - phi).abs() < 1.5e-7 * phi);
        }
        let mut e: Vec<f32> = (-1000..=100).map(|i| i as f32 / 10.0).collect();
        let inputs = e.clone();
        exp_in_place(&mut e);
        for (&x, &y) in inputs.iter().zip(&e) {
            let want = f64::from(x).exp();
            assert!(
                (f64::from(y) - want).abs() <= 3e-7 * want + 1e-37,
                "exp({x}) = {y}, want {want}"
            );
        }
    }

    #[test]
    fn layer_norm_normalizes() {
        let mut x = values(3 * 40, 9);
        let w = vec![1.0; 40];
        let b = vec![0.0; 40];
        layer_norm(&mut x, &w, &b, 1e-12);
        for row in x.chunks_exact(40) {
            let mean: f32 = row.iter().sum::<f32>() / 40.0;
            let var: f32 = row.iter().map(|v| v * v).sum::<f32>() / 40.0;
            assert!(
                mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
                "{mean} {var}"
            );
        }
    }
}

#[cfg(test)]
mod packed_measure {
    //! `cargo test -p enclave-local --lib -- --ignored --nocapture packed_measure`
    use super::*;

    /// MiniLM's four products per layer, as (output, input) features.
    const SHAPES: [(usize, usize); 4] = [(1152, 384), (384, 384), (1536, 384), (384, 1536)];

    fn matrix(rows: usize, cols: usize, seed: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i + seed) % 13) as f32 * 0.01)
            .collect()
    }

    /// Both f32 products on one thread, the weights warm in the caches.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn packed_against_matmul() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap_or_else(|_| unreachable!());
        for (rows, cols) in SHAPES {
            let w = matrix(rows, cols, 0);
            let p =
                PackedF32::new(rows, cols, &w, &vec![0.1; rows]).unwrap_or_else(|| unreachable!());
            let m = Matrix::from_f32(rows, cols, w).unwrap_or_else(|| unreachable!());
            for tokens in [29, 928] {
                let x: Vec<f32> = (0..tokens * cols).map(|i| (i % 7) as f32 * 0.1).collect();
                let mut out = vec![0f32; tokens * rows];
                let reps = 20_000 / tokens;
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    linear(&p, &x, tokens, &mut out);
                }
                let packed = t.elapsed().as_secs_f64() / reps as f64;
                let t = std::time::Instant::now();
                pool.install(|| {
                    for _ in 0..reps {
                        matmul(&m, &x, tokens, &mut out);
                    }
                });
                let tiled = t.elapsed().as_secs_f64() / reps as f64;
                let macs = (rows * cols * tokens) as f64;
                eprintln!(
                    "{rows}×{cols}, {tokens} tokens: linear {:.1} GMAC/s, matmul {:.1} GMAC/s",
                    macs / packed / 1e9,
                    macs / tiled / 1e9
                );
            }
        }
    }

    /// A whole model's products (42 MB of weights, more than the caches hold), as one block of
    /// tokens goes through them.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn packed_with_cold_weights() {
        let layers: Vec<PackedF32> = (0..6)
            .flat_map(|l| {
                SHAPES.map(|(rows, cols)| {
                    PackedF32::new(rows, cols, &matrix(rows, cols, l), &vec![0.0; rows])
                        .unwrap_or_else(|| unreachable!())
                })
            })
            .collect();
        let per_token: usize = layers.iter().map(|w| w.rows * w.cols).sum();
        for tokens in [29, 15] {
            let x: Vec<f32> = (0..tokens * 1536).map(|i| (i % 7) as f32 * 0.1).collect();
            let mut out = vec![0f32; tokens * 1536];
            let reps = 50;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                for w in &layers {
                    let (x, out) = (&x[..tokens * w.cols], &mut out[..tokens * w.rows]);
                    linear(w, x, tokens, out);
                }
            }
            let per = t.elapsed().as_secs_f64() / reps as f64;
            eprintln!(
                "{tokens} tokens: {:.2} ms per pass, {:.1} GMAC/s",
                per * 1e3,
                (per_token * tokens) as f64 / per / 1e9
            );
        }
    }

    /// The register tile alone, its weights and activations in the L1 cache: the ceiling.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn tile_in_l1() {
        let cols = 128;
        let panel = vec![0.01f32; cols * PANEL];
        let bias = vec![0f32; PANEL];
        let x = vec![0.5f32; PANEL_TOKENS * cols];
        let mut out = vec![0f32; PANEL_TOKENS * PANEL];
        let reps = 200_000;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let x = std::hint::black_box(&x);
            panel_tile(&panel, &bias, x, cols, &mut out, PANEL, &[]);
        }
        let per = t.elapsed().as_secs_f64() / reps as f64;
        eprintln!(
            "6 × 16 tile, {cols} inputs: {:.1} GMAC/s",
            (cols * PANEL * PANEL_TOKENS) as f64 / per / 1e9
        );
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
    fn batched_single_tokens_equal_one_at_a_time_bit_for_bit() {
        let mut rng = Rng(0x5EED);
        for w in [rng.q4_1(70, 96), rng.q8_0(70, 96)] {
            for tokens in [2, 3, 4, 5, 9] {
                let x = rng.vec(tokens * 96);
                let mut batched = vec![0f32; tokens * 70];
                matmul_each(&w, &x, tokens, &mut batched);
                for (x, b) in x.chunks_exact(96).zip(batched.chunks_exact(70)) {
                    let mut alone = vec![0f32; 70];
                    matmul(&w, x, 1, &mut alone);
                    assert_eq!(alone, b);
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
    fn gathering_matrices_into_one_buffer_keeps_their_products() {
        let mut rng = Rng(11);
        let mut a = rng.q4_1(8, 64);
        let mut b = rng.q8_0(4, 64);
        let mut c = rng.q4_1(16, 32);
        let (xa, xc) = (rng.vec(64), rng.vec(32));
        let before = [naive(&a, &xa, 1), naive(&b, &xa, 1), naive(&c, &xc, 1)];
        Matrix::gather(&mut [&mut a, &mut b, &mut c]);
        assert_eq!(naive(&a, &xa, 1), before[0]);
        assert_eq!(naive(&b, &xa, 1), before[1]);
        assert_eq!(naive(&c, &xc, 1), before[2]);
        assert_eq!((a.rows(), a.cols(), c.rows(), c.cols()), (8, 64, 16, 32));
        // The two Q4_1 matrices now share one buffer; the Q8_0 one is left alone.
        match (&a, &c) {
            (Matrix::Q4_1 { blocks: ba, .. }, Matrix::Q4_1 { blocks: bc, .. }) => {
                assert!(std::sync::Arc::ptr_eq(&ba.buffer, &bc.buffer));
                assert_eq!((ba.len(), bc.len()), (8 * 2, 16));
            }
            _ => panic!("gather changed a matrix's kind"),
        }
    }

    #[test]
    fn attention_helpers_equal_row_by_row_products_bit_for_bit() {
        let mut rng = Rng(7);
        for (width, stride, rows) in [(64, 192, 37), (8, 8, 1), (16, 40, 5), (64, 64, 0)] {
            let q = rng.vec(width);
            let cache = rng.vec(rows * stride + width);
            let mut scores = vec![0f32; rows];
            scaled_dots(&q, &cache[3..], stride, 0.125, &mut scores);
            for (j, s) in scores.iter().enumerate() {
                let row = &cache[3 + j * stride..3 + j * stride + width];
                assert_eq!(s.to_bits(), (dot(&q, row) * 0.125).to_bits());
            }
            let mut out = vec![1f32; width];
            weighted_sum(&scores, &cache[3..], stride, &mut out);
            let mut want = vec![0f32; width];
            for (j, &s) in scores.iter().enumerate() {
                axpy(&mut want, s, &cache[3 + j * stride..3 + j * stride + width]);
            }
            assert_eq!(out, want);
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
