//! A llama forward pass over GGUF weights, with the KV cache kept outside the weights so that
//! one loaded model serves many generations at once.
//!
//! The arithmetic is that of `candle_transformers::models::quantized_llama` (interleaved rotary
//! embedding, grouped-query attention, SiLU-gated feed-forward, RMS norms), run on this crate's
//! own kernels ([`crate::kernels`]): weights stay in the file's Q4_1 and Q8_0 blocks. Prompt
//! tokens are processed in f32 (each weight block dequantized in registers serves eight tokens);
//! a generated token's layer products quantize its activations to 8 bits and use integer dot
//! products, as llama.cpp does; the logits always come from f32 activations. The matrix products of a layer that read the same
//! input (query/key/value; gate/up) are one stacked matrix, so each layer costs four parallel
//! regions. The rotary angles cover the whole context from the metadata, and the prompt is
//! processed in chunks that attend to the cached positions.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Seek};

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use rayon::prelude::*;

use super::error::ChatError;
use crate::kernels::{self, Matrix};

/// How the matrix weights are held in memory after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Keep Q4_1 and Q8_0 matrices in their blocks (0.75 and 1.125 bytes per weight),
    /// dequantized in registers at each product; other types are widened to f32. The default.
    #[default]
    AsStored,
    /// Dequantize every matrix to f32 at load (4 bytes per weight): the reference arithmetic,
    /// for checking the quantized path.
    F32,
}

/// Prompt tokens processed per forward pass; bounds the activation buffers.
const PREFILL_CHUNK: usize = 256;

/// The weights of a llama model and the pool its products run on.
pub(crate) struct Llama {
    /// Token embeddings `(vocab, hidden)`; also the output projection when the file ties them.
    embeddings: Matrix,
    /// A separate output projection, when the file has one.
    output: Option<Matrix>,
    /// [`kernels::block_l1_max`] of the output projection.
    output_l1: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// Rotary frequencies, one per pair of dimensions of a head.
    inv_freq: Vec<f32>,
    eps: f32,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    hidden: usize,
    ff: usize,
    pub(crate) context_length: usize,
    pool: rayon::ThreadPool,
}

struct Layer {
    /// Query, key and value projections stacked: `(hidden + 2·kv, hidden)`.
    qkv: Matrix,
    wo: Matrix,
    /// Gate and up projections stacked: `(2·ff, hidden)`.
    gate_up: Matrix,
    down: Matrix,
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
}

/// Keys and values of the positions seen so far in one generation, per layer:
/// `positions × (kv heads · head size)`.
#[derive(Debug)]
pub(crate) struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl fmt::Debug for Llama {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Llama")
            .field("layers", &self.layers.len())
            .field("hidden", &self.hidden)
            .field("heads", &self.n_head)
            .field("kv_heads", &self.n_kv_head)
            .field("context_length", &self.context_length)
            .field("weight_bytes", &self.weight_bytes())
            .field("threads", &self.pool.current_num_threads())
            .finish_non_exhaustive()
    }
}

impl Llama {
    pub(crate) fn load<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        format: WeightFormat,
    ) -> Result<Llama, ChatError> {
        let md = &content.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .map_or("llama", String::as_str);
        if arch != "llama" {
            return Err(ChatError::metadata(
                "general.architecture",
                format!("`{arch}` is not supported, only `llama` is"),
            ));
        }
        let n_head = usize_md(md, "llama.attention.head_count")?;
        let n_kv_head = usize_md(md, "llama.attention.head_count_kv")?;
        let n_layer = usize_md(md, "llama.block_count")?;
        let hidden = usize_md(md, "llama.embedding_length")?;
        let context_length = usize_md(md, "llama.context_length")?;
        let eps = f32_md(md, "llama.attention.layer_norm_rms_epsilon")?;
        let rope_base = match md.get("llama.rope.freq_base") {
            Some(v) => v
                .to_f32()
                .map_err(|e| ChatError::metadata("llama.rope.freq_base", e.to_string()))?,
            None => 10_000.0,
        };
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 || hidden % n_head != 0 {
            return Err(ChatError::metadata(
                "llama.attention.head_count",
                format!("{n_head} heads and {n_kv_head} KV heads do not divide {hidden}"),
            ));
        }
        let head_dim = hidden / n_head;
        if head_dim % 2 != 0 {
            return Err(ChatError::metadata(
                "llama.embedding_length",
                "gives an odd head size",
            ));
        }
        let kv = n_kv_head * head_dim;

        let mut load = |name: &str, rows: usize, cols: usize| -> Result<Matrix, ChatError> {
            let t = content
                .tensor(reader, name, &Device::Cpu)
                .map_err(ChatError::Model)?;
            matrix(name, &t, rows, cols, format)
        };
        let embeddings = {
            let info = content
                .tensor_infos
                .get("token_embd.weight")
                .ok_or_else(|| {
                    ChatError::Model(candle_core::Error::Msg(
                        "tensor `token_embd.weight` is missing".into(),
                    ))
                })?;
            let vocab = info.shape.dims().first().copied().unwrap_or(0);
            load("token_embd.weight", vocab, hidden)?
        };
        let vocab = embeddings.rows();
        if vocab == 0 {
            return Err(ChatError::Model(candle_core::Error::Msg(
                "the vocabulary is empty".into(),
            )));
        }
        let norm = vector(&mut load, "output_norm.weight", hidden)?;
        // SmolLM2 ties the output projection to the token embeddings.
        let output = match content.tensor_infos.contains_key("output.weight") {
            true => Some(load("output.weight", vocab, hidden)?),
            false => None,
        };
        let ff = match md.get("llama.feed_forward_length") {
            Some(_) => usize_md(md, "llama.feed_forward_length")?,
            None => content
                .tensor_infos
                .get("blk.0.ffn_gate.weight")
                .and_then(|i| i.shape.dims().first().copied())
                .unwrap_or(0),
        };
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut w = |n: &str, rows: usize, cols: usize| {
                load(&format!("blk.{i}.{n}.weight"), rows, cols)
            };
            let qkv = stack(
                vec![
                    w("attn_q", hidden, hidden)?,
                    w("attn_k", kv, hidden)?,
                    w("attn_v", kv, hidden)?,
                ],
                i,
            )?;
            let wo = w("attn_output", hidden, hidden)?;
            let gate_up = stack(
                vec![w("ffn_gate", ff, hidden)?, w("ffn_up", ff, hidden)?],
                i,
            )?;
            let down = w("ffn_down", hidden, ff)?;
            let attn_norm = vector(&mut load, &format!("blk.{i}.attn_norm.weight"), hidden)?;
            let ffn_norm = vector(&mut load, &format!("blk.{i}.ffn_norm.weight"), hidden)?;
            layers.push(Layer {
                qkv,
                wo,
                gate_up,
                down,
                attn_norm,
                ffn_norm,
            });
        }
        // One buffer for all layers' weights, so they can sit in huge pages.
        Matrix::gather(
            &mut layers
                .iter_mut()
                .flat_map(|l| [&mut l.qkv, &mut l.wo, &mut l.gate_up, &mut l.down])
                .collect::<Vec<_>>(),
        );
        crate::memory::release_free_memory();
        let output_l1 = kernels::block_l1_max(output.as_ref().unwrap_or(&embeddings));
        let inv_freq = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / rope_base.powf(i as f32 / head_dim as f32))
            .collect();
        // Zero threads means rayon's default: `RAYON_NUM_THREADS`, else one per core.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(0)
            .thread_name(|i| format!("enclave-chat-{i}"))
            .build()
            .map_err(|e| ChatError::Model(candle_core::Error::Msg(e.to_string())))?;
        Ok(Llama {
            embeddings,
            output,
            output_l1,
            layers,
            norm,
            inv_freq,
            eps,
            n_head,
            n_kv_head,
            head_dim,
            hidden,
            ff,
            context_length,
            pool,
        })
    }

    /// Threads of the pool the products run on.
    pub(crate) fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Bytes of weights held.
    pub(crate) fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.size_bytes()
                    + l.wo.size_bytes()
                    + l.gate_up.size_bytes()
                    + l.down.size_bytes()
            })
            .sum();
        layers + self.embeddings.size_bytes() + self.output.as_ref().map_or(0, Matrix::size_bytes)
    }

    pub(crate) fn new_cache(&self) -> KvCache {
        KvCache {
            k: vec![Vec::new(); self.layers.len()],
            v: vec![Vec::new(); self.layers.len()],
            len: 0,
        }
    }

    /// Runs `tokens` through the model after the positions already in `cache`, and returns the
    /// logits (`vocab` long) of the last token. Between chunks of [`PREFILL_CHUNK`] tokens it
    /// asks `go_on`, and returns `Ok(None)` as soon as that says no.
    pub(crate) fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        go_on: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Vec<f32>>, candle_core::Error> {
        self.pool.install(|| {
            let mut last = None;
            for chunk in tokens.chunks(PREFILL_CHUNK) {
                if last.is_some() && !go_on() {
                    return Ok(None);
                }
                last = Some(self.forward_chunk(chunk, cache)?);
            }
            last.ok_or_else(|| candle_core::Error::Msg("forward pass over no tokens".into()))
                .map(Some)
        })
    }

    /// One generated token for each of several sequences (token `i` continues `caches[i]`), in
    /// one pass over the weights; returns each sequence's logits. Every sequence gets exactly
    /// the result a pass of its own token alone would give.
    pub(crate) fn forward_step(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Vec<Vec<f32>>, candle_core::Error> {
        if tokens.len() != caches.len() {
            candle_core::bail!("{} tokens for {} sequences", tokens.len(), caches.len());
        }
        self.pool.install(|| self.step_inner(tokens, caches))
    }

    fn step_inner(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Vec<Vec<f32>>, candle_core::Error> {
        let n = tokens.len();
        let hidden = self.hidden;
        for cache in caches.iter() {
            if cache.len + 1 > self.context_length {
                candle_core::bail!("position {} beyond the context", cache.len + 1);
            }
        }
        let mut x = self.embed(tokens)?;
        let mut b = Scratch::new(self, n);
        let width = b.qkv.len() / n;
        // Each sequence's rotation, computed once for all layers.
        let rotations: Vec<Rotation> = caches
            .iter()
            .map(|cache| self.rotation(cache.len, 1))
            .collect();
        for (l, layer) in self.layers.iter().enumerate() {
            kernels::rms_norm(&x, &layer.attn_norm, self.eps, &mut b.h);
            kernels::matmul_each(&layer.qkv, &b.h, n, &mut b.qkv);
            for (i, cache) in caches.iter_mut().enumerate() {
                let pos = cache.len;
                let row = &mut b.qkv[i * width..(i + 1) * width];
                let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
                self.rotate_and_cache(row, &rotations[i], kc, vc);
                self.attend(
                    row,
                    pos,
                    1,
                    kc,
                    vc,
                    &mut b.att[i * hidden..(i + 1) * hidden],
                );
            }
            self.finish_layer(layer, &mut x, &mut b, n, kernels::matmul_each);
        }
        let output = self.output.as_ref().unwrap_or(&self.embeddings);
        let mut all = Vec::with_capacity(n);
        for (row, cache) in x.chunks_exact(hidden).zip(caches.iter_mut()) {
            cache.len += 1;
            let mut normed = vec![0f32; hidden];
            kernels::rms_norm(row, &self.norm, self.eps, &mut normed);
            let mut logits = vec![0f32; output.rows()];
            kernels::matmul_top_exact(output, &self.output_l1, &normed, &mut logits);
            all.push(logits);
        }
        Ok(all)
    }

    fn forward_chunk(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, candle_core::Error> {
        let t = tokens.len();
        let pos = cache.len;
        if pos + t > self.context_length {
            candle_core::bail!("position {} beyond the context", pos + t);
        }
        let hidden = self.hidden;
        let mut x = self.embed(tokens)?;
        let mut b = Scratch::new(self, t);
        let rotation = self.rotation(pos, t);
        for ((layer, kc), vc) in self.layers.iter().zip(&mut cache.k).zip(&mut cache.v) {
            kernels::rms_norm(&x, &layer.attn_norm, self.eps, &mut b.h);
            kernels::matmul(&layer.qkv, &b.h, t, &mut b.qkv);
            self.rotate_and_cache(&mut b.qkv, &rotation, kc, vc);
            self.attend(&b.qkv, pos, t, kc, vc, &mut b.att);
            self.finish_layer(layer, &mut x, &mut b, t, kernels::matmul);
        }
        cache.len = pos + t;
        let last = &x[(t - 1) * hidden..];
        let mut normed = vec![0f32; hidden];
        kernels::rms_norm(last, &self.norm, self.eps, &mut normed);
        let output = self.output.as_ref().unwrap_or(&self.embeddings);
        let mut logits = vec![0f32; output.rows()];
        // With the activations quantized to 8 bits, the first greedy token of the reference
        // prompt "What is the capital of France?" flips from "The" to "L'" (the two logits are
        // that close, and candle's quantized path flips it too): the candidates for the largest
        // logit are recomputed in f32.
        kernels::matmul_top_exact(output, &self.output_l1, &normed, &mut logits);
        Ok(logits)
    }

    /// The token embeddings of `tokens`, one `hidden`-wide row each.
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, candle_core::Error> {
        let vocab = self.embeddings.rows();
        let mut x = vec![0f32; tokens.len() * self.hidden];
        for (row, &id) in x.chunks_exact_mut(self.hidden).zip(tokens) {
            let id = id as usize;
            if id >= vocab {
                candle_core::bail!("token id {id} outside the vocabulary of {vocab}");
            }
            self.embeddings.row_into(id, row);
        }
        Ok(x)
    }

    /// The rest of a layer once the attention output is in `b.att`: output projection and
    /// residual, then the gated feed-forward and residual, with `product` for the products.
    fn finish_layer(
        &self,
        layer: &Layer,
        x: &mut [f32],
        b: &mut Scratch,
        n: usize,
        product: fn(&Matrix, &[f32], usize, &mut [f32]),
    ) {
        let ff = self.ff;
        product(&layer.wo, &b.att, n, &mut b.proj);
        add(x, &b.proj);
        kernels::rms_norm(x, &layer.ffn_norm, self.eps, &mut b.h);
        product(&layer.gate_up, &b.h, n, &mut b.gate_up);
        for (gu, a) in b
            .gate_up
            .chunks_exact_mut(2 * ff)
            .zip(b.act.chunks_exact_mut(ff))
        {
            let (g, u) = gu.split_at_mut(ff);
            kernels::silu_mul(g, u);
            a.copy_from_slice(g);
        }
        product(&layer.down, &b.act, n, &mut b.proj);
        add(x, &b.proj);
    }

    /// The rotary embedding's cosines and sines for the `t` positions from `pos`: the same for
    /// every layer, so computed once per pass.
    fn rotation(&self, pos: usize, t: usize) -> Rotation {
        let half = self.inv_freq.len();
        let mut r = Rotation {
            cos: Vec::with_capacity(t * half),
            sin: Vec::with_capacity(t * half),
        };
        for i in 0..t {
            let p = (pos + i) as f32;
            for f in &self.inv_freq {
                let angle = p * f;
                r.cos.push(angle.cos());
                r.sin.push(angle.sin());
            }
        }
        r
    }

    /// Applies the rotary embedding (`rotation`, one position per token) to the queries and keys
    /// of `qkv` (`tokens × (hidden + 2kv)`) and appends the keys and values to the cache.
    fn rotate_and_cache(
        &self,
        qkv: &mut [f32],
        rotation: &Rotation,
        kc: &mut Vec<f32>,
        vc: &mut Vec<f32>,
    ) {
        let (hidden, hd) = (self.hidden, self.head_dim);
        let kv = self.n_kv_head * hd;
        let width = hidden + 2 * kv;
        let half = hd / 2;
        for (i, row) in qkv.chunks_exact_mut(width).enumerate() {
            let cos = &rotation.cos[i * half..(i + 1) * half];
            let sin = &rotation.sin[i * half..(i + 1) * half];
            // Queries and keys are contiguous heads of `hd`; rotate adjacent pairs.
            for head in row[..hidden + kv].chunks_exact_mut(hd) {
                for (j, pair) in head.chunks_exact_mut(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos[j] - b * sin[j];
                    pair[1] = a * sin[j] + b * cos[j];
                }
            }
            kc.extend_from_slice(&row[hidden..hidden + kv]);
            vc.extend_from_slice(&row[hidden + kv..]);
        }
    }

    /// Causal attention of the `t` new queries in `qkv` over the cache (which already holds
    /// their own keys and values); writes `t × hidden` into `out`.
    fn attend(&self, qkv: &[f32], pos: usize, t: usize, kc: &[f32], vc: &[f32], out: &mut [f32]) {
        let (hidden, hd, nh) = (self.hidden, self.head_dim, self.n_head);
        let kv = self.n_kv_head * hd;
        let width = hidden + 2 * kv;
        let n_rep = nh / self.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        let one = |idx: usize, y: &mut [f32]| {
            let (i, head) = (idx / nh, idx % nh);
            let g = head / n_rep;
            let q = &qkv[i * width + head * hd..i * width + (head + 1) * hd];
            let seen = pos + i + 1;
            let mut scores = vec![0f32; seen];
            kernels::scaled_dots(q, &kc[g * hd..], kv, scale, &mut scores);
            kernels::softmax(&mut scores);
            kernels::weighted_sum(&scores, &vc[g * hd..], kv, y);
        };
        let out = &mut out[..t * hidden];
        // Very short contexts are cheaper on this thread than as parallel tasks; from a few
        // dozen positions on, a generated token's attention is worth splitting (serial, it kept
        // the other threads waiting for a tenth of the step).
        if t * (pos + t) < 32 {
            out.chunks_exact_mut(hd)
                .enumerate()
                .for_each(|(idx, y)| one(idx, y));
        } else {
            out.par_chunks_mut(hd)
                .enumerate()
                .for_each(|(idx, y)| one(idx, y));
        }
    }
}

/// Rotary embedding factors for consecutive positions: `head_dim / 2` cosines and sines each.
struct Rotation {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Activation buffers for `n` token rows through one layer.
struct Scratch {
    h: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
}

impl Scratch {
    fn new(llama: &Llama, n: usize) -> Scratch {
        let (hidden, ff) = (llama.hidden, llama.ff);
        let qkv_width = llama.layers.first().map_or(0, |l| l.qkv.rows());
        Scratch {
            h: vec![0f32; n * hidden],
            qkv: vec![0f32; n * qkv_width],
            att: vec![0f32; n * hidden],
            proj: vec![0f32; n * hidden],
            gate_up: vec![0f32; n * 2 * ff],
            act: vec![0f32; n * ff],
        }
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// A matrix of the expected shape from a GGUF tensor.
fn matrix(
    name: &str,
    t: &QTensor,
    rows: usize,
    cols: usize,
    format: WeightFormat,
) -> Result<Matrix, ChatError> {
    let misshapen = || {
        ChatError::Model(candle_core::Error::Msg(format!(
            "tensor `{name}` has shape {:?}, expected ({rows}, {cols})",
            t.shape().dims()
        )))
    };
    if t.shape().elem_count() != rows.saturating_mul(cols)
        || t.shape().dims().last().copied() != Some(cols)
    {
        return Err(misshapen());
    }
    if format == WeightFormat::AsStored {
        match t.dtype() {
            GgmlDType::Q4_1 => {
                let bytes = t.data().map_err(ChatError::Model)?;
                return Matrix::from_q4_1_bytes(rows, cols, &bytes).ok_or_else(misshapen);
            }
            GgmlDType::Q8_0 => {
                let bytes = t.data().map_err(ChatError::Model)?;
                return Matrix::from_q8_0_bytes(rows, cols, &bytes).ok_or_else(misshapen);
            }
            _ => {}
        }
    }
    let data = t
        .dequantize(&Device::Cpu)
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.to_vec1::<f32>())
        .map_err(ChatError::Model)?;
    Matrix::from_f32(rows, cols, data).ok_or_else(misshapen)
}

/// A 1-D weight (a norm) of `len` values.
fn vector(
    load: &mut dyn FnMut(&str, usize, usize) -> Result<Matrix, ChatError>,
    name: &str,
    len: usize,
) -> Result<Vec<f32>, ChatError> {
    let m = load(name, 1, len)?;
    let mut out = vec![0f32; len];
    m.row_into(0, &mut out);
    Ok(out)
}

fn stack(parts: Vec<Matrix>, layer: usize) -> Result<Matrix, ChatError> {
    Matrix::stack(parts).ok_or_else(|| {
        ChatError::Model(candle_core::Error::Msg(format!(
            "layer {layer}: projections of one layer mix quantizations or widths"
        )))
    })
}

fn usize_md(md: &HashMap<String, Value>, key: &str) -> Result<usize, ChatError> {
    let v = md
        .get(key)
        .ok_or_else(|| ChatError::metadata(key, "is missing"))?;
    let n = match v {
        Value::U64(n) => *n,
        other => u64::from(
            other
                .to_u32()
                .map_err(|e| ChatError::metadata(key, e.to_string()))?,
        ),
    };
    usize::try_from(n).map_err(|_| ChatError::metadata(key, "is too large"))
}

fn f32_md(md: &HashMap<String, Value>, key: &str) -> Result<f32, ChatError> {
    md.get(key)
        .ok_or_else(|| ChatError::metadata(key, "is missing"))?
        .to_f32()
        .map_err(|e| ChatError::metadata(key, e.to_string()))
}
