//! The embedded models behind a `kind = "local"` backend: a dedicated worker thread per model
//! (inference never runs on the async runtime), bounded queues that refuse work instead of
//! letting it pile up, cancellation when the caller goes away, and batching of concurrent
//! requests: embedding texts run as one batch, and up to eight chat generations advance
//! together, one pass over the weights per step.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use enclave_local::chat::{ChatModel, Generation, GenerationParams, Message, Sequence};
use enclave_local::embed::Embedder;
use enclave_local::weights::ModelsDir;
use tokio::sync::{mpsc, oneshot};

/// The chat model's name in the API.
pub const CHAT_MODEL: &str = "smollm2-135m";
/// The embedding model's name in the API.
pub const EMBED_MODEL: &str = "all-minilm-l6-v2";
/// Texts embedded in one forward pass, at most.
const EMBED_BATCH: usize = 32;

/// Why the local backend refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalError {
    /// The queue is full: retry later (503 `overloaded`).
    Overloaded,
    /// The prompt and `max_tokens` do not fit the context window (400).
    ContextLength {
        /// Tokens in the rendered prompt.
        prompt_tokens: usize,
        /// Tokens requested for the answer.
        max_tokens: usize,
        /// The model's context window.
        context: usize,
    },
    /// This backend does not serve that model.
    NotServed(String),
    /// The model failed (logged; 500).
    Failed(String),
}

impl std::fmt::Display for LocalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalError::Overloaded => f.write_str("the local model's queue is full"),
            LocalError::ContextLength {
                prompt_tokens,
                max_tokens,
                context,
            } => write!(
                f,
                "the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}, more than the model's context of {context} tokens"
            ),
            LocalError::NotServed(m) => write!(f, "the local backend does not serve {m:?}"),
            LocalError::Failed(e) => write!(f, "the local model failed: {e}"),
        }
    }
}

/// What a streaming generation reports, in order: pieces, then one `Done` or `Failed`.
#[derive(Debug)]
pub enum ChatEvent {
    /// A piece of the answer's text.
    Piece(String),
    /// The end, with token counts and the finish reason.
    Done(Generation),
    /// The model failed.
    Failed(String),
}

struct ChatJob {
    prompt: String,
    params: GenerationParams,
    events: mpsc::Sender<ChatEvent>,
}

struct EmbedJob {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// The embedded models, loaded and running.
pub struct LocalEngine {
    chat: Option<(Arc<ChatModel>, SyncSender<ChatJob>)>,
    embed: Option<(Arc<Embedder>, SyncSender<EmbedJob>)>,
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine")
            .field("chat", &self.chat.is_some())
            .field("embed", &self.embed.is_some())
            .finish()
    }
}

impl LocalEngine {
    /// Verifies and loads the models named in `models` (of [`CHAT_MODEL`], [`EMBED_MODEL`]) from
    /// `dir`, and starts one worker thread per model with a queue of `queue` waiting requests.
    ///
    /// # Errors
    ///
    /// A message that says which file is missing or altered and how to fetch the right one.
    pub fn start(dir: &ModelsDir, models: &[String], queue: usize) -> Result<LocalEngine, String> {
        let mut engine = LocalEngine {
            chat: None,
            embed: None,
        };
        for m in models {
            match m.as_str() {
                CHAT_MODEL => {
                    let path = dir.smollm2_gguf().map_err(|e| e.to_string())?;
                    let model = Arc::new(ChatModel::load(&path).map_err(|e| e.to_string())?);
                    let (tx, rx) = sync_channel::<ChatJob>(queue.max(1));
                    let worker = Arc::clone(&model);
                    std::thread::Builder::new()
                        .name("enclave-chat".into())
                        .spawn(move || chat_worker(&worker, &rx))
                        .map_err(|e| format!("starting the chat worker: {e}"))?;
                    engine.chat = Some((model, tx));
                }
                EMBED_MODEL => {
                    let files = dir.minilm().map_err(|e| e.to_string())?;
                    let model = Arc::new(Embedder::load(&files).map_err(|e| e.to_string())?);
                    let (tx, rx) = sync_channel::<EmbedJob>(queue.max(1));
                    let worker = Arc::clone(&model);
                    std::thread::Builder::new()
                        .name("enclave-embed".into())
                        .spawn(move || embed_worker(&worker, &rx))
                        .map_err(|e| format!("starting the embedding worker: {e}"))?;
                    engine.embed = Some((model, tx));
                }
                other => {
                    return Err(format!(
                        "the local backend serves {CHAT_MODEL:?} and {EMBED_MODEL:?}, not {other:?}"
                    ));
                }
            }
        }
        Ok(engine)
    }

    /// The chat model's context window, if chat is served.
    pub fn context_length(&self) -> Option<usize> {
        self.chat.as_ref().map(|(m, _)| m.context_length())
    }

    /// Renders `messages` with the chat template and counts the prompt's tokens.
    ///
    /// # Errors
    ///
    /// [`LocalError::NotServed`] when chat is not loaded.
    pub fn prompt(&self, messages: &[Message]) -> Result<(String, usize), LocalError> {
        let (model, _) = self
            .chat
            .as_ref()
            .ok_or_else(|| LocalError::NotServed(CHAT_MODEL.into()))?;
        let prompt = model.prompt(messages);
        let n = model.tokenizer().encode(&prompt).len();
        Ok((prompt, n))
    }

    /// Queues a generation; its events arrive on the returned receiver. Dropping the receiver
    /// cancels the generation at the next token.
    ///
    /// # Errors
    ///
    /// [`LocalError::ContextLength`] when the prompt and `max_tokens` do not fit;
    /// [`LocalError::Overloaded`] when the queue is full.
    pub fn chat(
        &self,
        prompt: String,
        prompt_tokens: usize,
        params: GenerationParams,
    ) -> Result<mpsc::Receiver<ChatEvent>, LocalError> {
        let (model, tx) = self
            .chat
            .as_ref()
            .ok_or_else(|| LocalError::NotServed(CHAT_MODEL.into()))?;
        let context = model.context_length();
        if prompt_tokens + params.max_tokens > context {
            return Err(LocalError::ContextLength {
                prompt_tokens,
                max_tokens: params.max_tokens,
                context,
            });
        }
        let (events, rx) = mpsc::channel(64);
        match tx.try_send(ChatJob {
            prompt,
            params,
            events,
        }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(LocalError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                Err(LocalError::Failed("the chat worker stopped".into()))
            }
        }
    }

    /// Embeds `texts` (batched with other concurrent requests) and counts their tokens.
    ///
    /// # Errors
    ///
    /// [`LocalError::Overloaded`] when the queue is full; [`LocalError::Failed`] on model errors.
    pub async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize), LocalError> {
        let (model, tx) = self
            .embed
            .as_ref()
            .ok_or_else(|| LocalError::NotServed(EMBED_MODEL.into()))?;
        let tokens = texts.iter().map(|t| model.count_tokens(t)).sum();
        let (reply, rx) = oneshot::channel();
        match tx.try_send(EmbedJob { texts, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(LocalError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                return Err(LocalError::Failed("the embedding worker stopped".into()));
            }
        }
        match rx.await {
            Ok(Ok(v)) => Ok((v, tokens)),
            Ok(Err(e)) => Err(LocalError::Failed(e)),
            Err(_) => Err(LocalError::Failed(
                "the embedding worker dropped the request".into(),
            )),
        }
    }

    /// Embeds directly on the calling thread, for the memory and safety crates (no HTTP, no
    /// queue). Blocks: call it from a blocking context.
    ///
    /// # Errors
    ///
    /// [`LocalError::NotServed`] or [`LocalError::Failed`].
    pub fn embed_blocking(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, LocalError> {
        let (model, _) = self
            .embed
            .as_ref()
            .ok_or_else(|| LocalError::NotServed(EMBED_MODEL.into()))?;
        model
            .embed(texts)
            .map_err(|e| LocalError::Failed(e.to_string()))
    }
}

/// Most chat generations stepped together: each step then costs one pass over the weights for
/// all of them (see `enclave_local::chat::ChatModel::step`).
const CHAT_BATCH: usize = 8;

/// A generation on the chat worker and where its events go.
struct ActiveChat {
    seq: Sequence,
    events: mpsc::Sender<ChatEvent>,
}

/// Runs chat generations, up to [`CHAT_BATCH`] at once: new requests start (their prompt runs
/// alone) between steps, and every step advances all running generations by one token in one
/// pass over the weights. A generation's text does not depend on what else runs with it.
fn chat_worker(model: &ChatModel, jobs: &Receiver<ChatJob>) {
    let mut active: Vec<ActiveChat> = Vec::new();
    loop {
        while active.len() < CHAT_BATCH {
            let job = if active.is_empty() {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return, // the engine is gone
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            if job.events.is_closed() {
                continue; // the caller left while queued
            }
            match model.begin(&job.prompt, &job.params) {
                Ok(seq) => active.push(ActiveChat {
                    seq,
                    events: job.events,
                }),
                Err(e) => {
                    let _ = job.events.blocking_send(ChatEvent::Failed(e.to_string()));
                }
            }
        }
        // Hand out the text of the last step; finished or abandoned generations leave.
        let mut running = Vec::with_capacity(active.len());
        for mut chat in active.drain(..) {
            let text = chat.seq.take_text();
            if chat.events.is_closed()
                || (!text.is_empty() && chat.events.blocking_send(ChatEvent::Piece(text)).is_err())
            {
                continue; // the client went away: stop spending steps on it
            }
            if chat.seq.is_finished() {
                let _ = chat
                    .events
                    .blocking_send(ChatEvent::Done(chat.seq.into_generation()));
            } else {
                running.push(chat);
            }
        }
        active = running;
        if active.is_empty() {
            continue;
        }
        let mut seqs: Vec<&mut Sequence> = active.iter_mut().map(|c| &mut c.seq).collect();
        if let Err(e) = model.step(&mut seqs) {
            for chat in active.drain(..) {
                let _ = chat.events.blocking_send(ChatEvent::Failed(e.to_string()));
            }
        }
    }
}

fn embed_worker(model: &Embedder, jobs: &Receiver<EmbedJob>) {
    while let Ok(first) = jobs.recv() {
        // Batch every request already waiting, up to EMBED_BATCH texts.
        let mut batch = vec![first];
        let mut count = batch[0].texts.len();
        while count < EMBED_BATCH {
            match jobs.recv_timeout(Duration::ZERO) {
                Ok(j) => {
                    count += j.texts.len();
                    batch.push(j);
                }
                Err(_) => break,
            }
        }
        let live: Vec<EmbedJob> = batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
        let texts: Vec<&str> = live
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        match model.embed(&texts) {
            Ok(mut vectors) => {
                for job in live {
                    let rest = vectors.split_off(job.texts.len().min(vectors.len()));
                    let mine = std::mem::replace(&mut vectors, rest);
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for job in live {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
