//! The BERT encoder, written for CPU inference of small batches.
//!
//! Same arithmetic as `candle_transformers::models::bert::BertModel` (which reads the same
//! weight names), laid out for speed: every linear layer keeps its weight transposed and
//! contiguous (`in × out`) and runs on the batch flattened to `(tokens, hidden)`, and query,
//! key and value are one fused matrix. On this project's 2-core machine that is about three
//! times faster than `BertModel` for a 30-token text.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

/// BERT weights ready for inference.
pub(crate) struct Bert {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// Row 0 of the token type embeddings: every token is of type 0.
    token_type: Tensor,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    head_size: usize,
    hidden_act: HiddenAct,
}

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

struct Linear {
    /// `in × out`, contiguous.
    weight: Tensor,
    bias: Tensor,
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Bert {
    /// Loads the weights under `embeddings.` and `encoder.` (or with a `bert.` prefix).
    pub(crate) fn load(vb: &VarBuilder<'_>, config: &Config) -> Result<Bert> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb.clone()
        } else {
            vb.pp("bert")
        };
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps as f32;
        let emb = vb.pp("embeddings");
        let word_embeddings = emb.get((config.vocab_size, hidden), "word_embeddings.weight")?;
        let position_embeddings = emb.get(
            (config.max_position_embeddings, hidden),
            "position_embeddings.weight",
        )?;
        let token_type = emb
            .get(
                (config.type_vocab_size, hidden),
                "token_type_embeddings.weight",
            )?
            .get(0)?;
        let embeddings_norm = Norm::load(&emb.pp("LayerNorm"), hidden, eps)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(&vb.pp(format!("encoder.layer.{i}")), config, eps))
            .collect::<Result<Vec<_>>>()?;
        Ok(Bert {
            word_embeddings,
            position_embeddings,
            token_type,
            embeddings_norm,
            layers,
            heads: config.num_attention_heads,
            head_size: hidden / config.num_attention_heads,
            hidden_act: config.hidden_act,
        })
    }

    /// Hidden states `(batch, len, hidden)` for token ids `(batch, len)` with the attention
    /// mask `(batch, len)` (1 for tokens, 0 for padding).
    pub(crate) fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let hidden = self.heads * self.head_size;
        let words = self.word_embeddings.index_select(&ids.flatten_all()?, 0)?;
        let positions = self.position_embeddings.narrow(0, 0, len)?;
        let embedded = words
            .reshape((batch, len, hidden))?
            .broadcast_add(&positions)?
            .broadcast_add(&self.token_type)?
            .reshape((batch * len, hidden))?;
        let mut xs = self.embeddings_norm.forward(&embedded)?;
        // Padding gets the lowest float added to its attention scores, as in transformers.
        let bias = ((mask.ones_like()? - mask)? * f64::from(f32::MIN))?
            .to_dtype(DType::F32)?
            .reshape((batch, 1, 1, len))?;
        for layer in &self.layers {
            xs = self.layer(layer, &xs, &bias, batch, len)?;
        }
        xs.reshape((batch, len, hidden))
    }

    fn layer(
        &self,
        layer: &Layer,
        xs: &Tensor,
        bias: &Tensor,
        batch: usize,
        len: usize,
    ) -> Result<Tensor> {
        let hidden = self.heads * self.head_size;
        let qkv = layer.qkv.forward(xs)?;
        let split = |part: usize| -> Result<Tensor> {
            qkv.narrow(1, part * hidden, hidden)?
                .reshape((batch, len, self.heads, self.head_size))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * len, hidden))?;
        let attended = layer
            .attention_norm
            .forward(&(layer.attention_out.forward(&context)? + xs)?)?;
        let up = layer.up.forward(&attended)?;
        let activated = match self.hidden_act {
            HiddenAct::Gelu => up.gelu_erf()?,
            HiddenAct::GeluApproximate => up.gelu()?,
            HiddenAct::Relu => up.relu()?,
        };
        layer
            .output_norm
            .forward(&(layer.down.forward(&activated)? + attended)?)
    }
}

impl Layer {
    fn load(vb: &VarBuilder<'_>, config: &Config, eps: f32) -> Result<Layer> {
        let hidden = config.hidden_size;
        let attention = vb.pp("attention");
        let part = |name: &str| -> Result<(Tensor, Tensor)> {
            let vb = attention.pp("self").pp(name);
            Ok((vb.get((hidden, hidden), "weight")?, vb.get(hidden, "bias")?))
        };
        let (q, k, v) = (part("query")?, part("key")?, part("value")?);
        let qkv = Linear {
            weight: Tensor::cat(&[&q.0, &k.0, &v.0], 0)?.t()?.contiguous()?,
            bias: Tensor::cat(&[&q.1, &k.1, &v.1], 0)?,
        };
        Ok(Layer {
            qkv,
            attention_out: Linear::load(&attention.pp("output.dense"), hidden, hidden)?,
            attention_norm: Norm::load(&attention.pp("output.LayerNorm"), hidden, eps)?,
            up: Linear::load(
                &vb.pp("intermediate.dense"),
                hidden,
                config.intermediate_size,
            )?,
            down: Linear::load(&vb.pp("output.dense"), config.intermediate_size, hidden)?,
            output_norm: Norm::load(&vb.pp("output.LayerNorm"), hidden, eps)?,
        })
    }
}

impl Linear {
    fn load(vb: &VarBuilder<'_>, inputs: usize, outputs: usize) -> Result<Linear> {
        Ok(Linear {
            weight: vb.get((outputs, inputs), "weight")?.t()?.contiguous()?,
            bias: vb.get(outputs, "bias")?,
        })
    }
}

impl Module for Linear {
    /// `(rows, in)` → `(rows, out)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.matmul(&self.weight)?.broadcast_add(&self.bias)
    }
}

impl Norm {
    fn load(vb: &VarBuilder<'_>, size: usize, eps: f32) -> Result<Norm> {
        Ok(Norm {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }
}
