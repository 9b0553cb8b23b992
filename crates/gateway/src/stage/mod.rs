//! The stages of the request pipeline, in the order they run (see `crate::pipeline`):
//!
//! | stage | module | decides |
//! | --- | --- | --- |
//! | authenticate | [`authenticate`] | who is calling (API key, OIDC JWT, client certificate); rate limit |
//! | label | [`label`] | the session label within the clearance; the content label from the markings in the request; spillage; the joined label within the clearance |
//! | authorize | [`authorize`] | whether this caller may use this route with this content (uninspectable parts, roles) |
//! | screen input | [`screen`] | the safety stack over the request's text (a seam until the safety stack lands) |
//! | recall | [`recall`] | memories joined into the request (a seam until the stateful runtime lands) |
//! | route | [`routing`] | the backends accredited for the request's label that serve its model |
//! | generate | [`generate`] | the answer, from the first candidate that gives one |
//! | screen output | [`screen`] | the safety stack over the answer, chunk by chunk |
//! | remember | [`remember`] | what is stored of the turn (a seam until the stateful runtime lands) |
//! | audit | [`audit`] | the request's entry in the tamper-evident log, on every exit; the answer waits until it is durable |
//!
//! Each stage is a function over the `RequestCtx` that returns
//! `Result<_, ApiError>`; the pipeline runs them in order and the first error ends the request
//! through the one exit, `crate::pipeline::finish`.

pub mod audit;
pub mod authenticate;
pub mod authorize;
pub mod generate;
pub mod label;
pub mod recall;
pub mod remember;
pub mod routing;
pub mod screen;
