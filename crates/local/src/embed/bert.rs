//! The BERT encoder, written for CPU inference of short texts.
//!
//! The arithmetic of `candle_transformers::models::bert::BertModel` (which reads the same
//! weight names) on this crate's own kernels ([`crate::kernels`]) and plain `Vec<f32>`
//! buffers: every linear layer is packed for [`kernels::linear`] (query, key and value as one
//! matrix), and the texts of a batch are run back to back without padding. Attention stays
//! within each text, so the result equals that of a padded batch whose padding keys get the
//! lowest float added to their scores (their weights are exactly zero), and a text's vector does
//! not depend on the other texts of its batch. The products run on a rayon pool the model owns.

use candle_core::{Error, Result};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use rayon::prelude::*;

use crate::embed::Precision;
use crate::kernels::{self, PackedF16, PackedF32};

/// BERT weights ready for inference, and the threads they run on.
pub(crate) struct Bert {
    /// `vocab × hidden`, at the model's [`Precision`] (the largest table: 47 MB in f32 for
    /// all-MiniLM-L6-v2, of which a text reads only its tokens' rows).
    word_embeddings: Table,
    /// `positions × hidden`.
    position_embeddings: Vec<f32>,
    /// Row 0 of the token type embeddings: every token is of type 0.
    token_type: Vec<f32>,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    vocab: usize,
    positions: usize,
    hidden: usize,
    intermediate: usize,
    head_size: usize,
    hidden_act: HiddenAct,
    pool: rayon::ThreadPool,
}

struct Layer {
    /// Query, key and value stacked: `3·hidden × hidden`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

/// An embedding table, kept at the model's [`Precision`].
enum Table {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

/// A layer's linear product, its weights kept at the model's [`Precision`].
enum Linear {
    F32(PackedF32),
    F16(PackedF16),
}

impl Linear {
    /// [`kernels::linear`].
    fn run(&self, x: &[f32], tokens: usize, out: &mut [f32]) {
        match self {
            Linear::F32(w) => kernels::linear(w, x, tokens, out),
            Linear::F16(w) => kernels::linear(w, x, tokens, out),
        }
    }

    /// [`kernels::linear_split`].
    fn split(&self, x: &[f32], tokens: usize, out: &mut [f32], parts: usize) {
        match self {
            Linear::F32(w) => kernels::linear_split(w, x, tokens, out, parts),
            Linear::F16(w) => kernels::linear_split(w, x, tokens, out, parts),
        }
    }
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// Activation buffers of one block of tokens.
#[derive(Default)]
struct Buffers {
    context: Vec<f32>,
    projected: Vec<f32>,
    up: Vec<f32>,
    attention: Scratch,
}

/// Buffers of one text and head in attention.
#[derive(Default)]
struct Scratch {
    /// The queries, scaled: `m × head_size`.
    q: Vec<f32>,
    /// The keys: `len × head_size`.
    k: Vec<f32>,
    /// The values transposed: `head_size × len`.
    vt: Vec<f32>,
    /// Scores, then probabilities: `m × len`.
    scores: Vec<f32>,
    /// `k` packed as weights.
    keys: PackedF32,
    /// `vt` packed as weights.
    values: PackedF32,
    /// The weighted values: `m × head_size`.
    context: Vec<f32>,
    zeros: Vec<f32>,
}

/// Tokens per parallel task at most, once every thread has one: keeps a task's activations in
/// its core's L2 cache.
const MAX_BLOCK_TOKENS: usize = 64;

/// Up to this many tokens in all (one block's worth), the layers run once for every token with
/// each product's features split over the pool ([`kernels::linear_split`]) instead of each
/// thread running a block of tokens: a block costs a thread a pass over all the weights (42 MB
/// for all-MiniLM-L6-v2) whatever its size, so a short text (a query) is bound by that traffic.
/// On two threads a 10-piece query went from 4.4 to 3.5 ms and a 30-piece text from 6.4–8.0 to
/// 5.5–6.8 ms (`local_bench embed`, 2026-12-07).
const SHORT_TOKENS: usize = MAX_BLOCK_TOKENS;

impl Bert {
    /// Loads the weights under `embeddings.` and `encoder.` (or with a `bert.` prefix), the
    /// layers' products and the word table at `precision`, and starts the pool: `RAYON_NUM_THREADS` threads, else
    /// one per core.
    pub(crate) fn load(vb: &VarBuilder<'_>, config: &Config, precision: Precision) -> Result<Bert> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb.clone()
        } else {
            vb.pp("bert")
        };
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        if hidden == 0
            || config.intermediate_size == 0
            || heads == 0
            || !hidden.is_multiple_of(heads)
        {
            return Err(Error::Msg("the model's sizes do not fit together".into()));
        }
        let eps = config.layer_norm_eps as f32;
        let emb = vb.pp("embeddings");
        let word_embeddings = values(&emb, &[config.vocab_size, hidden], "word_embeddings.weight")?;
        let word_embeddings = match precision {
            Precision::F32 => Table::F32(word_embeddings),
            Precision::F16 => Table::F16(
                word_embeddings
                    .into_iter()
                    .map(half::f16::from_f32)
                    .collect(),
            ),
        };
        let position_embeddings = values(
            &emb,
            &[config.max_position_embeddings, hidden],
            "position_embeddings.weight",
        )?;
        let mut token_type = values(
            &emb,
            &[config.type_vocab_size, hidden],
            "token_type_embeddings.weight",
        )?;
        if token_type.len() < hidden {
            return Err(Error::Msg("`type_vocab_size` is 0".into()));
        }
        token_type.truncate(hidden);
        let embeddings_norm = Norm::load(&emb.pp("LayerNorm"), hidden, eps)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(&vb.pp(format!("encoder.layer.{i}")), config, eps, precision))
            .collect::<Result<Vec<_>>>()?;
        // Zero threads means rayon's default: `RAYON_NUM_THREADS`, else one per core.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(0)
            .thread_name(|i| format!("enclave-embed-{i}"))
            .build()
            .map_err(|e| Error::Msg(format!("cannot start the embedding threads: {e}")))?;
        Ok(Bert {
            word_embeddings,
            position_embeddings,
            token_type,
            embeddings_norm,
            layers,
            vocab: config.vocab_size,
            positions: config.max_position_embeddings,
            hidden,
            intermediate: config.intermediate_size,
            head_size: hidden / heads,
            hidden_act: config.hidden_act,
            pool,
        })
    }

    /// Hidden states (`tokens × hidden`, row-major) of texts given back to back: `ids` holds
    /// the token ids of every text, `lengths` how many belong to each.
    pub(crate) fn forward(&self, ids: &[u32], lengths: &[usize]) -> Result<Vec<f32>> {
        if lengths.iter().sum::<usize>() != ids.len() {
            return Err(Error::Msg("token counts do not add up".into()));
        }
        if let Some(&len) = lengths.iter().find(|&&len| len > self.positions) {
            return Err(Error::Msg(format!(
                "{len} tokens exceed the {} positions",
                self.positions
            )));
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(Error::Msg(format!(
                "token id {id} outside the vocabulary of {}",
                self.vocab
            )));
        }
        self.pool.install(|| self.encode(ids, lengths))
    }

    /// The forward pass, on the pool. The tokens are split into blocks, one parallel task
    /// each; a block goes from one layer's attention through its feed-forward to the next
    /// layer's query, key and value projection on its own, so the threads meet only once per
    /// layer, when attention needs the keys and values of every token.
    fn encode(&self, ids: &[u32], lengths: &[usize]) -> Result<Vec<f32>> {
        let (hidden, tokens) = (self.hidden, ids.len());
        let threads = rayon::current_num_threads().max(1);
        if threads > 1 && tokens <= SHORT_TOKENS {
            return self.encode_short(ids, lengths, threads);
        }
        let tasks = threads.max(tokens.div_ceil(MAX_BLOCK_TOKENS));
        let block = tokens.div_ceil(tasks).max(1);
        let (positions, spans) = token_places(lengths);
        let mut x = vec![0f32; tokens * hidden];
        let width = 3 * hidden;
        let mut qkv = vec![0f32; tokens * width];
        let mut next_qkv = vec![0f32; tokens * width];
        let first = self.layers.first();
        x.par_chunks_mut(block * hidden)
            .zip(qkv.par_chunks_mut(block * width))
            .enumerate()
            .for_each(|(b, (x, qkv))| {
                let first_token = b * block;
                self.embed_tokens(ids, &positions, first_token, x);
                if let Some(layer) = first {
                    layer.qkv.run(x, x.len() / hidden, qkv);
                }
            });
        // Each block's buffers, kept from layer to layer.
        let mut buffers: Vec<Buffers> = (0..tokens.div_ceil(block))
            .map(|_| Buffers::default())
            .collect();
        for (l, layer) in self.layers.iter().enumerate() {
            let next = self.layers.get(l + 1);
            let current = &qkv;
            x.par_chunks_mut(block * hidden)
                .zip(next_qkv.par_chunks_mut(block * width))
                .zip(buffers.par_iter_mut())
                .enumerate()
                .try_for_each(|(b, ((x, next_qkv), buffers))| {
                    let first_token = b * block;
                    let n = x.len() / hidden;
                    let spans = &spans[first_token..first_token + n];
                    self.layer(layer, current, first_token, spans, x, buffers, 1)?;
                    if let Some(next) = next {
                        next.qkv.run(x, n, next_qkv);
                    }
                    Ok::<(), Error>(())
                })?;
            std::mem::swap(&mut qkv, &mut next_qkv);
        }
        Ok(x)
    }

    /// The forward pass of a short input ([`SHORT_TOKENS`]), on the pool: every token goes
    /// through each layer together, and each product's features are split over `threads`
    /// tasks. Each token's result is the same bits as [`Bert::encode`]'s blocks give.
    fn encode_short(&self, ids: &[u32], lengths: &[usize], threads: usize) -> Result<Vec<f32>> {
        let (hidden, tokens) = (self.hidden, ids.len());
        let (positions, spans) = token_places(lengths);
        let mut x = vec![0f32; tokens * hidden];
        self.embed_tokens(ids, &positions, 0, &mut x);
        let width = 3 * hidden;
        let mut qkv = vec![0f32; tokens * width];
        let mut next_qkv = vec![0f32; tokens * width];
        if let Some(layer) = self.layers.first() {
            layer.qkv.split(&x, tokens, &mut qkv, threads);
        }
        let mut buffers = Buffers::default();
        for (l, layer) in self.layers.iter().enumerate() {
            self.layer(layer, &qkv, 0, &spans, &mut x, &mut buffers, threads)?;
            if let Some(next) = self.layers.get(l + 1) {
                next.qkv.split(&x, tokens, &mut next_qkv, threads);
                std::mem::swap(&mut qkv, &mut next_qkv);
            }
        }
        Ok(x)
    }

    /// The normalized input embeddings (word, position, token type) of the tokens
    /// `first..first + x.len() / hidden` into `x`.
    fn embed_tokens(&self, ids: &[u32], positions: &[usize], first: usize, x: &mut [f32]) {
        let hidden = self.hidden;
        for (i, row) in x.chunks_exact_mut(hidden).enumerate() {
            let t = first + i;
            let id = ids[t] as usize;
            let place = &self.position_embeddings[positions[t] * hidden..][..hidden];
            match &self.word_embeddings {
                Table::F32(table) => row.copy_from_slice(&table[id * hidden..][..hidden]),
                Table::F16(table) => {
                    for (o, w) in row.iter_mut().zip(&table[id * hidden..][..hidden]) {
                        *o = w.to_f32();
                    }
                }
            }
            for ((o, p), t) in row.iter_mut().zip(place).zip(&self.token_type) {
                *o = *o + p + t;
            }
        }
        self.embeddings_norm.apply(x);
    }

    /// One layer for the block of tokens `first..first + x.len() / hidden` (their texts'
    /// `spans`), whose hidden states `x` it updates; `qkv` holds every token's query, key and
    /// value. `parts` > 1 splits each product's features over the pool
    /// ([`kernels::linear_split`]).
    #[expect(
        clippy::too_many_arguments,
        reason = "the layer's inputs, outputs and buffers"
    )]
    fn layer(
        &self,
        layer: &Layer,
        qkv: &[f32],
        first: usize,
        spans: &[(usize, usize)],
        x: &mut [f32],
        b: &mut Buffers,
        parts: usize,
    ) -> Result<()> {
        let (hidden, n) = (self.hidden, spans.len());
        b.context.resize(n * hidden, 0.0);
        b.projected.resize(n * hidden, 0.0);
        b.up.resize(n * self.intermediate, 0.0);
        self.attend(qkv, first, spans, &mut b.context, &mut b.attention)?;
        layer
            .attention_out
            .split(&b.context, n, &mut b.projected, parts);
        layer.attention_norm.add_apply(x, &b.projected);
        layer.up.split(x, n, &mut b.up, parts);
        match self.hidden_act {
            HiddenAct::Gelu => kernels::gelu_erf(&mut b.up),
            HiddenAct::GeluApproximate => b.up.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
            HiddenAct::Relu => b.up.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
        layer.down.split(&b.up, n, &mut b.projected, parts);
        layer.output_norm.add_apply(x, &b.projected);
        Ok(())
    }

    /// Self-attention of the tokens `first..first + spans.len()` over the tokens of their own
    /// texts: `qkv` is `tokens × 3·hidden` (queries, keys, values) for every token, the result
    /// `spans.len() × hidden`. Per text and head, the scores and the weighted values are two
    /// small products on the packed kernel: the keys, then the values transposed, packed as
    /// weights.
    fn attend(
        &self,
        qkv: &[f32],
        first: usize,
        spans: &[(usize, usize)],
        out: &mut [f32],
        s: &mut Scratch,
    ) -> Result<()> {
        let (hidden, hs) = (self.hidden, self.head_size);
        let width = 3 * hidden;
        let scale = 1.0 / (hs as f32).sqrt();
        let mut i = 0;
        while let Some(&(start, len)) = spans.get(i) {
            // The block's queries from this text: rows `i..i + m`.
            let m = spans[i..]
                .iter()
                .take_while(|&&span| span == (start, len))
                .count();
            let rows = first + i..first + i + m;
            s.zeros.resize(len.max(hs), 0.0);
            s.q.resize(m * hs, 0.0);
            s.k.resize(len * hs, 0.0);
            s.vt.resize(hs * len, 0.0);
            s.scores.resize(m * len, 0.0);
            s.context.resize(m * hs, 0.0);
            for h in 0..self.heads() {
                let column =
                    |t: usize, part: usize| &qkv[t * width + part * hidden + h * hs..][..hs];
                for (q, t) in s.q.chunks_exact_mut(hs).zip(rows.clone()) {
                    for (q, &v) in q.iter_mut().zip(column(t, 0)) {
                        *q = v * scale;
                    }
                }
                for (j, k) in s.k.chunks_exact_mut(hs).enumerate() {
                    k.copy_from_slice(column(start + j, 1));
                    for (d, &v) in column(start + j, 2).iter().enumerate() {
                        s.vt[d * len + j] = v;
                    }
                }
                let misshapen = || Error::Msg("attention buffers are misshapen".into());
                s.keys
                    .repack(len, hs, &s.k, &s.zeros[..len])
                    .ok_or_else(misshapen)?;
                kernels::linear(&s.keys, &s.q, m, &mut s.scores);
                for row in s.scores.chunks_exact_mut(len) {
                    softmax(row);
                }
                s.values
                    .repack(hs, len, &s.vt, &s.zeros[..hs])
                    .ok_or_else(misshapen)?;
                kernels::linear(&s.values, &s.scores, m, &mut s.context);
                for (y, c) in out[i * hidden..(i + m) * hidden]
                    .chunks_exact_mut(hidden)
                    .zip(s.context.chunks_exact(hs))
                {
                    y[h * hs..(h + 1) * hs].copy_from_slice(c);
                }
            }
            i += m;
        }
        Ok(())
    }

    /// Attention heads.
    fn heads(&self) -> usize {
        self.hidden / self.head_size.max(1)
    }
}

impl Layer {
    fn load(vb: &VarBuilder<'_>, config: &Config, eps: f32, precision: Precision) -> Result<Layer> {
        let dense = |vb: &VarBuilder<'_>, inputs, outputs| linear(vb, inputs, outputs, precision);
        let hidden = config.hidden_size;
        let attention = vb.pp("attention");
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for name in ["query", "key", "value"] {
            let vb = attention.pp("self").pp(name);
            weights.extend(values(&vb, &[hidden, hidden], "weight")?);
            biases.extend(values(&vb, &[hidden], "bias")?);
        }
        Ok(Layer {
            qkv: pack(3 * hidden, hidden, &weights, &biases, precision)?,
            attention_out: dense(&attention.pp("output.dense"), hidden, hidden)?,
            attention_norm: Norm::load(&attention.pp("output.LayerNorm"), hidden, eps)?,
            up: dense(
                &vb.pp("intermediate.dense"),
                hidden,
                config.intermediate_size,
            )?,
            down: dense(&vb.pp("output.dense"), config.intermediate_size, hidden)?,
            output_norm: Norm::load(&vb.pp("output.LayerNorm"), hidden, eps)?,
        })
    }
}

impl Norm {
    fn load(vb: &VarBuilder<'_>, size: usize, eps: f32) -> Result<Norm> {
        Ok(Norm {
            weight: values(vb, &[size], "weight")?,
            bias: values(vb, &[size], "bias")?,
            eps,
        })
    }

    /// Normalizes each row of `x` in place.
    fn apply(&self, x: &mut [f32]) {
        kernels::layer_norm(x, &self.weight, &self.bias, self.eps);
    }

    /// Adds `y` to `x` (the residual connection), then normalizes each row of `x` in place.
    fn add_apply(&self, x: &mut [f32], y: &[f32]) {
        kernels::add_layer_norm(x, y, &self.weight, &self.bias, self.eps);
    }
}

/// Each token's position in its text, and its text as (first token, length), for texts of
/// `lengths` tokens back to back.
fn token_places(lengths: &[usize]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let tokens = lengths.iter().sum();
    let mut positions = Vec::with_capacity(tokens);
    let mut spans = Vec::with_capacity(tokens);
    let mut start = 0;
    for &len in lengths {
        positions.extend(0..len);
        spans.extend(std::iter::repeat_n((start, len), len));
        start += len;
    }
    (positions, spans)
}

/// The f32 values of a tensor of the given shape.
fn values(vb: &VarBuilder<'_>, shape: &[usize], name: &str) -> Result<Vec<f32>> {
    vb.get(shape, name)?.flatten_all()?.to_vec1::<f32>()
}

/// A linear layer `inputs → outputs` from its `weight` and `bias`.
fn linear(
    vb: &VarBuilder<'_>,
    inputs: usize,
    outputs: usize,
    precision: Precision,
) -> Result<Linear> {
    let weight = values(vb, &[outputs, inputs], "weight")?;
    let bias = values(vb, &[outputs], "bias")?;
    pack(outputs, inputs, &weight, &bias, precision)
}

fn pack(
    rows: usize,
    cols: usize,
    weight: &[f32],
    bias: &[f32],
    precision: Precision,
) -> Result<Linear> {
    match precision {
        Precision::F32 => PackedF32::new(rows, cols, weight, bias).map(Linear::F32),
        Precision::F16 => PackedF16::new(rows, cols, weight, bias).map(Linear::F16),
    }
    .ok_or_else(|| Error::Msg(format!("a {rows}×{cols} linear layer is misshapen")))
}

/// Softmax in place (vector `exp`).
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in x.iter_mut() {
        *v -= max;
    }
    kernels::exp_in_place(x);
    let inv = 1.0 / x.iter().sum::<f32>();
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// GELU's tanh approximation, as candle's `gelu`.
fn gelu_tanh(x: f32) -> f32 {
    let x3 = x * x * x;
    0.5 * x * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (x + 0.044_715 * x3)).tanh())
}
