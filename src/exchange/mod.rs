//! One request's round trip below the HTTP layer: the client's request, already in the
//! dispatcher's hands, comes back as a reply in the client's dialect — OpenAI Chat
//! Completions, Anthropic Messages or OpenAI Responses — whatever dialect the target
//! answered in, streamed event by event as it arrives or translated whole, with its usage
//! read on the way and handed to the meter.
//!
//! `api/` parses and authorises, calls [`route`] then [`answer`] (embeddings: [`embed`] then
//! [`embeddings_reply`]), and writes the [`Reply`] it gets; the admin agent takes the same
//! two steps. Nothing here sees an HTTP framework.

mod answer;
mod count;
mod embed;
mod error;
mod metered;
mod passthrough;
mod pump;
mod responses;
mod responses_pass;
mod route;
mod translated;
mod worker;

pub use answer::{answer, Client};
pub use count::{count_tokens, Count, CountInput};
pub use embed::{embed, embeddings_reply};
pub use error::ExchangeError;
pub use route::route;

use crate::dispatch::Tier;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::convert::Infallible;

/// A whole (non-streamed) answer read back bigger than this is refused rather than held.
const MAX_WHOLE_ANSWER: usize = 32 * 1024 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body the client reads as it is made.
type ClientStream = BoxStream<'static, Result<Bytes, Infallible>>;

/// The reply to one request, in the client's dialect, metered: the meter settles the
/// request's usage row as the body passes (and finishes it before the body's last bytes).
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub sse: bool,
    /// Where the request went, which every routed reply names.
    pub tier: Tier,
    pub route: String,
    pub body: Body,
}

pub enum Body {
    Whole(Bytes),
    Stream(BoxStream<'static, Result<Bytes, BoxError>>),
}

/// A target's answer in the client's dialect, before metering: status, content type, body.
struct Outgoing {
    status: u16,
    content_type: String,
    body: BoxStream<'static, Result<Bytes, BoxError>>,
}

impl Outgoing {
    fn sse(body: ClientStream) -> Outgoing {
        Outgoing {
            status: 200,
            content_type: "text/event-stream".into(),
            body: body.map(|item| item.map_err(|never| match never {})).boxed(),
        }
    }

    fn json(status: u16, body: Bytes) -> Outgoing {
        Outgoing {
            status,
            content_type: "application/json".into(),
            body: futures_util::stream::once(async move { Ok::<Bytes, BoxError>(body) }).boxed(),
        }
    }

    fn is_sse(&self) -> bool {
        self.content_type.starts_with("text/event-stream")
    }
}

impl Body {
    /// The whole body, read as it comes (bounded): for answers that are translated whole.
    pub async fn whole(self) -> Result<Bytes, ExchangeError> {
        match self {
            Body::Whole(bytes) => Ok(bytes),
            Body::Stream(body) => whole_answer(body).await,
        }
    }
}

async fn whole_answer(body: BoxStream<'static, Result<Bytes, BoxError>>) -> Result<Bytes, ExchangeError> {
    crate::bounded::read_to_limit(body, MAX_WHOLE_ANSWER, 0)
        .await
        .map_err(|e| match e {
            crate::bounded::ReadError::TooLarge { .. } => ExchangeError::TooLarge,
            crate::bounded::ReadError::Broken(e) => ExchangeError::Unreadable(e.to_string()),
        })
}
