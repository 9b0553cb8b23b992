//! A llama forward pass over GGUF weights, with the KV cache kept outside the weights so that
//! one loaded model serves many generations at once.
//!
//! Follows `candle_transformers::models::quantized_llama`, with three differences: the rotary
//! tables cover the whole context from the metadata (candle's stop at 4096 positions), the
//! prompt is processed in chunks with a causal mask that accounts for the cached positions, and
//! grouped-query attention reshapes the queries instead of copying the keys and values.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::error::ChatError;

/// How the matrix weights are held in memory after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Keep each tensor in the file's quantization (Q4_1 for the SmolLM2 file).
    AsStored,
    /// Re-quantize every matrix to Q8_0 at load.
    Q8_0,
    /// Dequantize every matrix to f16 (about 2x the memory of Q8_0); activations stay
    /// unquantized. The default: with SmolLM2 the quantized formats (which also quantize the
    /// activations to 8 bits) give wrong greedy tokens from the first one, and without
    /// `-C target-cpu` candle's quantized kernels are scalar and 4x slower than f16 `gemm`.
    #[default]
    F16,
    /// Dequantize every matrix to f32 (about 4x the memory of Q8_0).
    F32,
}

/// Prompt tokens processed per forward pass; bounds the attention matrix to
/// `heads * CHUNK * context` floats.
const PREFILL_CHUNK: usize = 256;

#[derive(Debug)]
pub(crate) struct Llama {
    /// Token embeddings, `(vocab, hidden)`, f16 to halve their memory.
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    eps: f32,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    pub(crate) context_length: usize,
    device: Device,
}

#[derive(Debug)]
struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    attn_norm: Tensor,
    ffn_norm: Tensor,
}

/// Keys and values of the positions seen so far in one generation.
#[derive(Debug)]
pub(crate) struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl Llama {
    pub(crate) fn load<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        format: WeightFormat,
    ) -> Result<Llama, ChatError> {
        let device = Device::Cpu;
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

        let mut tensor = |name: &str| {
            content
                .tensor(reader, name, &device)
                .map_err(ChatError::Model)
        };
        let embd = tensor("token_embd.weight")?;
        let embeddings = embd.dequantize_f16(&device).map_err(ChatError::Model)?;
        let norm = tensor("output_norm.weight")?
            .dequantize(&device)
            .map_err(ChatError::Model)?;
        // SmolLM2 ties the output projection to the token embeddings.
        let output = match content.tensor_infos.contains_key("output.weight") {
            true => matmul(tensor("output.weight")?, format)?,
            false => matmul(embd, format)?,
        };
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut w = |n: &str| tensor(&format!("blk.{i}.{n}.weight"));
            let mut mm = |n: &str| matmul(w(n)?, format);
            let wq = mm("attn_q")?;
            let wk = mm("attn_k")?;
            let wv = mm("attn_v")?;
            let wo = mm("attn_output")?;
            let gate = mm("ffn_gate")?;
            let up = mm("ffn_up")?;
            let down = mm("ffn_down")?;
            let mut w = |n: &str| tensor(&format!("blk.{i}.{n}.weight"));
            let attn_norm = w("attn_norm")?
                .dequantize(&device)
                .map_err(ChatError::Model)?;
            let ffn_norm = w("ffn_norm")?
                .dequantize(&device)
                .map_err(ChatError::Model)?;
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                gate,
                up,
                down,
                attn_norm,
                ffn_norm,
            });
        }
        let (cos, sin) =
            rope_tables(head_dim, rope_base, context_length, &device).map_err(ChatError::Model)?;
        Ok(Llama {
            embeddings,
            layers,
            norm,
            output,
            cos,
            sin,
            eps,
            n_head,
            n_kv_head,
            head_dim,
            context_length,
            device,
        })
    }

    pub(crate) fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// Runs `tokens` through the model after the positions already in `cache`, and returns the
    /// logits (f32, `vocab`) of the last token.
    pub(crate) fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> Result<Tensor, candle_core::Error> {
        let mut last = None;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            last = Some(self.forward_chunk(chunk, cache)?);
        }
        last.ok_or_else(|| candle_core::Error::Msg("forward pass over no tokens".into()))
    }

    fn forward_chunk(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let t = tokens.len();
        let pos = cache.len;
        if pos + t > self.context_length {
            candle_core::bail!("position {} beyond the context", pos + t);
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self
            .embeddings
            .index_select(&ids, 0)?
            .to_dtype(DType::F32)?
            .unsqueeze(0)?;
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        let mask = if t > 1 {
            Some(causal_mask(t, pos, &self.device)?)
        } else {
            None
        };
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, self.eps)?;
            let h = self.attention(layer, &h, &cos, &sin, mask.as_ref(), kv)?;
            x = (x + h)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, self.eps)?;
            let g = candle_nn::ops::silu(&layer.gate.forward(&h)?)?;
            let u = layer.up.forward(&h)?;
            let h = layer.down.forward(&(g * u)?)?;
            x = (x + h)?;
        }
        cache.len = pos + t;
        let x = x.narrow(1, t - 1, 1)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.eps)?;
        self.output.forward(&x)?.flatten_all()
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: &mut Option<(Tensor, Tensor)>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, hidden) = x.dims3()?;
        let (hd, nh, nkv) = (self.head_dim, self.n_head, self.n_kv_head);
        let q = layer
            .wq
            .forward(x)?
            .reshape((b, t, nh, hd))?
            .transpose(1, 2)?;
        let k = layer
            .wk
            .forward(x)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?;
        let v = layer
            .wv
            .forward(x)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?;
        let q = candle_nn::rotary_emb::rope_i(&q.contiguous()?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k.contiguous()?, cos, sin)?;
        let v = v.contiguous()?;
        let (k, v) = match kv.take() {
            None => (k, v),
            Some((kc, vc)) => (Tensor::cat(&[&kc, &k], 2)?, Tensor::cat(&[&vc, &v], 2)?),
        };
        *kv = Some((k.clone(), v.clone()));
        let kv_len = k.dim(2)?;
        // Query heads h*n_rep .. (h+1)*n_rep share KV head h: fold them into the rows.
        let n_rep = nh / nkv;
        let q = q.reshape((b, nkv, n_rep * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?;
        let att = match mask {
            None => att,
            Some(m) => att
                .reshape((b, nkv, n_rep, t, kv_len))?
                .broadcast_add(m)?
                .reshape((b, nkv, n_rep * t, kv_len))?,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?.reshape((b, nh, t, hd))?;
        let y = y.transpose(1, 2)?.reshape((b, t, hidden))?;
        layer.wo.forward(&y)
    }
}

/// `(t, pos + t)` additive mask: query `i` (at position `pos + i`) sees keys `0..=pos + i`.
fn causal_mask(t: usize, pos: usize, device: &Device) -> candle_core::Result<Tensor> {
    let kv = pos + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..kv).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, kv), device)
}

fn rope_tables(
    head_dim: usize,
    base: f32,
    positions: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv_freq: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let n = inv_freq.len();
    let inv_freq = Tensor::from_vec(inv_freq, (1, n), device)?;
    let pos = Tensor::arange(0u32, positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    let freqs = pos.matmul(&inv_freq)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

fn matmul(t: QTensor, format: WeightFormat) -> Result<QMatMul, ChatError> {
    if format == WeightFormat::F32 {
        let f = t.dequantize(&Device::Cpu).map_err(ChatError::Model)?;
        return Ok(QMatMul::Tensor(f));
    }
    if format == WeightFormat::F16 {
        let f = t.dequantize_f16(&Device::Cpu).map_err(ChatError::Model)?;
        return Ok(QMatMul::TensorF16(f));
    }
    let t = match (format, t.dtype()) {
        (WeightFormat::Q8_0, GgmlDType::Q8_0 | GgmlDType::F32 | GgmlDType::F16) => t,
        (WeightFormat::Q8_0, _) if t.shape().dims().last().is_some_and(|k| k % 32 == 0) => {
            let f = t.dequantize(&Device::Cpu).map_err(ChatError::Model)?;
            QTensor::quantize(&f, GgmlDType::Q8_0).map_err(ChatError::Model)?
        }
        _ => t,
    };
    QMatMul::from_arc(Arc::new(t)).map_err(ChatError::Model)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_accounts_for_cached_positions() {
        let m = causal_mask(2, 3, &Device::Cpu)
            .and_then(|m| m.to_vec2::<f32>())
            .unwrap_or_default();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![vec![0.0, 0.0, 0.0, 0.0, inf], vec![0.0; 5]]);
    }
}
