//! Errors from loading and running the chat model.

/// Why loading the chat model or generating with it failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The prompt plus `max_tokens` does not fit in the model's context window.
    #[error(
        "prompt of {prompt_tokens} tokens plus `max_tokens` exceeds the context of {max} tokens: \
         shorten the messages or lower `max_tokens`"
    )]
    ContextLength {
        /// Tokens in the rendered prompt.
        prompt_tokens: usize,
        /// The model's context length.
        max: usize,
    },
    /// The prompt alone has more tokens than the context window; tokenizing stopped there.
    #[error("prompt has more tokens than the context of {max} tokens: shorten the messages")]
    PromptTooLong {
        /// The model's context length.
        max: usize,
    },
    /// The prompt encodes to no tokens at all.
    #[error("prompt is empty: send at least one message")]
    EmptyPrompt,
    /// The model could not run (a tensor operation failed); a bug or a corrupt model file.
    #[error("chat model inference failed: {0}")]
    Inference(#[source] candle_core::Error),
    /// Reading the model file failed.
    #[error("cannot read chat model file: {0}")]
    Io(#[from] std::io::Error),
    /// The GGUF metadata lacks a key or holds an unusable value.
    #[error(
        "chat model metadata `{key}` {reason}: use the SmolLM2 GGUF from `scripts/fetch-models`"
    )]
    Metadata {
        /// The GGUF metadata key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is not a readable GGUF model (bad header, missing or misshapen tensor).
    #[error("invalid chat model file: {0}")]
    Model(#[source] candle_core::Error),
}

impl ChatError {
    pub(crate) fn metadata(key: &str, reason: impl Into<String>) -> ChatError {
        ChatError::Metadata {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}
