//! The screen stages: the safety stack over a request's input and its answer.
//!
//! Seams until the safety stack lands (issue 18): `input` sees every string the request
//! carries before anything is sent; `OutputScreen` sees every chunk of a streamed answer (it
//! may change a chunk, hold text back across chunk boundaries and release it at the end, or
//! stop the stream with an error) and every whole answer.

use enclave_api::{Chunk, Completion};

use crate::ctx::RequestCtx;
use crate::error::ApiError;

/// Screens the request's text (every string it carries, as paragraphs).
///
/// # Errors
///
/// A `policy_violation` or `pending_review` refusal, once the safety stack exists.
pub(crate) fn input(_ctx: &mut RequestCtx, _text: &str) -> Result<(), ApiError> {
    Ok(())
}

/// Screens one answer as it goes.
#[derive(Debug, Default)]
pub(crate) struct OutputScreen;

impl OutputScreen {
    /// A screen for the answer to `ctx`'s request.
    pub(crate) fn new(_ctx: &RequestCtx) -> OutputScreen {
        OutputScreen
    }

    /// Screens a streamed chunk, which it may change.
    ///
    /// # Errors
    ///
    /// A refusal that ends the stream with an error event.
    pub(crate) fn chunk(&mut self, _chunk: &mut Chunk) -> Result<(), ApiError> {
        Ok(())
    }

    /// The end of a stream: chunks held back, released.
    ///
    /// # Errors
    ///
    /// A refusal that ends the stream with an error event.
    pub(crate) fn end(&mut self) -> Result<Vec<Chunk>, ApiError> {
        Ok(Vec::new())
    }

    /// Screens a whole answer, which it may change.
    ///
    /// # Errors
    ///
    /// A refusal sent instead of the answer.
    pub(crate) fn whole(&mut self, _answer: &mut Completion) -> Result<(), ApiError> {
        Ok(())
    }
}
