//! The OpenAI wire format as Enclave reads and writes it.
//!
//! - **Requests** ([`ChatRequest`], [`EmbeddingsRequest`]) are parsed strictly from a body's
//!   bytes into a typed, normalized view: duplicate JSON keys at any depth, wrong types and
//!   missing fields are refused with the field's path (`messages[2].content[0].type`), and
//!   content Enclave cannot inspect (images, audio, files, token arrays) is refused unless a
//!   [`ContentPolicy`] allows it. Each request also carries every string it holds as paragraphs
//!   of text (`text`) for the marking scanner, and its exact bytes (`raw`) for backends that
//!   speak this format, so unknown fields pass through.
//! - **Answers** ([`Completion`], [`Chunk`], [`Embeddings`]) are typed views that keep a
//!   backend's exact bytes when they were read from one, and render the OpenAI shapes when
//!   Enclave made them.
//! - **Streams**: [`SseParser`] reads server-sent events incrementally, whatever the framing.
//!
//! This crate is pure: no I/O, no async, no HTTP types. It knows nothing of labels or policy.
//!
//! ```
//! use enclave_api::{ChatRequest, ContentPolicy};
//! let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}"#;
//! let req = ChatRequest::parse(bytes::Bytes::from_static(body), &ContentPolicy::default())?;
//! assert_eq!(req.messages[0].text(), "Hello");
//!
//! let dup = br#"{"model":"a","model":"b","messages":[]}"#;
//! let err = ChatRequest::parse(bytes::Bytes::from_static(dup), &ContentPolicy::default());
//! assert_eq!(err.unwrap_err().kind.code(), "invalid_json");
//! # Ok::<(), enclave_api::RequestError>(())
//! ```

#![deny(clippy::indexing_slicing)]

mod answer;
mod chat;
mod embeddings;
mod error;
pub mod json;
mod moderation;
mod policy;
mod read;
mod responses;
pub mod sse;

pub use answer::{
    AnswerError, AnswerToolCall, Choice, Chunk, Completion, DONE_EVENT, Delta, Embeddings,
    ErrorBody, FinishReason, ToolCallDelta, Usage,
};
pub use chat::{ChatRequest, Message, Part, Role, Tool, ToolCall};
pub use embeddings::{EmbeddingsRequest, MAX_INPUTS};
pub use error::{RequestError, RequestErrorKind};
pub use moderation::{MAX_MODERATION_INPUTS, ModerationRequest};
pub use policy::{ContentPolicy, PartKind};
pub use responses::{ContentPart, ConversationUpdate, Item, ItemsRequest, ResponsesRequest};
pub use sse::{SseError, SseEvent, SseParser};
