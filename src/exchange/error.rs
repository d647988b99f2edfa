//! What can go wrong between the target's answer and the client's reply.

/// A target answered, but not in a form the client can be given.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The answer's body could not be read whole (broken, or too large).
    #[error("cannot read the upstream's answer: {0}")]
    Unreadable(String),
    #[error("cannot translate the upstream's answer: {0}")]
    Untranslatable(String),
    #[error("the upstream's answer is larger than auxot translates")]
    TooLarge,
    /// The dispatcher answered in a dialect this client never asks for: a bug.
    #[error("{0}")]
    WrongDialect(&'static str),
}

impl ExchangeError {
    pub fn status(&self) -> u16 {
        match self {
            ExchangeError::Unreadable(_) | ExchangeError::Untranslatable(_) | ExchangeError::TooLarge => 502,
            ExchangeError::WrongDialect(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ExchangeError::Unreadable(_) | ExchangeError::Untranslatable(_) | ExchangeError::TooLarge => {
                "upstream_error"
            }
            ExchangeError::WrongDialect(_) => "internal_error",
        }
    }
}
