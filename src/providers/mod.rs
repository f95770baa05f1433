//! Provider adapters. Each provider lives in its own module with the same
//! shape: a struct built from its connector definition and account settings,
//! implementing [`Finder`] and/or [`Verifier`] with **pure** functions that
//! build requests and classify answers. No adapter performs I/O: the engine
//! (`crate::engine`) sends the requests under the limiter and retry policy,
//! which keeps every adapter testable on recorded payloads in `fixtures/`.

use std::fmt;

use crate::core::channel::ChannelSet;
use crate::core::lead::Identity;
use crate::core::outcome::{Classified, MilliCredits};
use crate::core::value::Verification;

pub mod apollo;
pub mod def;
pub mod declarative;
pub mod fullenrich;
pub mod hunter;
pub mod pdl;
pub mod zerobounce;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A request as an adapter wants it sent. `url` may carry a secret in its
/// query string (Hunter, ZeroBounce): log `endpoint`, never `url`.
#[derive(Clone, PartialEq)]
pub struct HttpRequest {
    pub method: Method,
    /// Full URL including the query string.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Secret-free label for logs, metrics and the audit, e.g. `POST /people/match`.
    pub endpoint: &'static str,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URL, headers and body may hold API keys or personal data.
        f.debug_struct("HttpRequest")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// An answer as received. Header names are lower-case.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One lead in a find request. `key` (the lead id) is echoed back by batch
/// and async providers so answers can be matched to leads.
#[derive(Debug, Clone, Copy)]
pub struct FindItem<'a> {
    pub key: &'a str,
    pub identity: &'a Identity,
    /// The channels to ask this provider for (never empty, always a subset of
    /// what it supplies).
    pub channels: ChannelSet,
}

/// The classification of an answer to a (possibly batched) request.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    /// One outcome per item, in the order of the items.
    Each(Vec<Classified>),
    /// One outcome for the whole request: an error envelope, a rate limit, or
    /// an async job accepted (`Pending` with the job id to poll).
    All(Classified),
}

/// Building a request failed: the inputs cannot be expressed for this API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    #[error("{provider} needs {needs}")]
    MissingInput { provider: &'static str, needs: &'static str },
    #[error("{provider} accepts at most {max} records per request, got {got}")]
    BatchTooLarge { provider: &'static str, max: usize, got: usize },
    #[error("{provider}: {message}")]
    Invalid { provider: &'static str, message: String },
}

/// An authenticated async callback: which job it belongs to and the body to
/// classify with [`Finder::classify_poll`].
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackEnvelope {
    pub job_id: String,
    /// The callback body, shaped like a poll answer.
    pub body: Vec<u8>,
    /// Whether the job is complete (a per-contact callback may not be).
    pub finished: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("this provider does not send callbacks")]
    Unsupported,
    #[error("missing signature header {0}")]
    MissingSignature(&'static str),
    #[error("signature does not match the body")]
    BadSignature,
    #[error("malformed callback body: {0}")]
    Malformed(String),
}

/// A provider that finds contact values.
pub trait Finder: Send + Sync + 'static {
    /// The connector id, recorded as the Source of the values it supplies.
    fn id(&self) -> &str;
    /// The channels this provider can supply.
    fn supplies(&self) -> ChannelSet;
    /// Largest number of leads one request may carry (1 = single-record API).
    fn max_batch(&self) -> usize {
        1
    }
    /// Async providers answer a find request with `Pending` and deliver the
    /// result by callback or polling.
    fn is_async(&self) -> bool {
        false
    }
    /// Whether the identity has the minimum inputs this provider accepts.
    fn accepts(&self, identity: &Identity) -> bool;
    /// Builds the request asking for `items`. `callback_url` is where an async
    /// provider should deliver results (it carries an unguessable token).
    fn find_request(
        &self,
        items: &[FindItem<'_>],
        callback_url: Option<&str>,
    ) -> Result<HttpRequest, AdapterError>;
    /// Classifies the answer to [`Finder::find_request`].
    fn classify_find(&self, items: &[FindItem<'_>], resp: &HttpResponse) -> BatchOutcome;
    /// Request for the result of an async job.
    fn poll_request(&self, _job_id: &str) -> Option<HttpRequest> {
        None
    }
    /// Classifies a poll answer (or a callback body wrapped as a 200 answer).
    fn classify_poll(&self, _items: &[FindItem<'_>], resp: &HttpResponse) -> BatchOutcome {
        BatchOutcome::All(Classified::new(
            crate::core::outcome::ProviderOutcome::Transient,
            format!("{} does not support polling (HTTP {})", self.id(), resp.status),
        ))
    }
    /// Authenticates a callback delivery (signature over the raw body) and
    /// says which job it belongs to. Nothing may be trusted before this passes.
    fn authenticate_callback(
        &self,
        _headers: &[(String, String)],
        _body: &[u8],
    ) -> Result<CallbackEnvelope, CallbackError> {
        Err(CallbackError::Unsupported)
    }
}

/// The answer of an email verifier.
#[derive(Debug, Clone, PartialEq)]
pub enum VerifyOutcome {
    Checked {
        verification: Verification,
        /// The verifier's own words, e.g. `valid`, `catch-all/unknown`.
        provider_status: String,
        provider_cost: Option<MilliCredits>,
    },
    /// The check did not happen (rate limited, auth, down, out of credits...).
    Failed(Classified),
}

/// A provider that verifies email deliverability.
pub trait Verifier: Send + Sync + 'static {
    fn id(&self) -> &str;
    fn verify_request(&self, email: &str) -> Result<HttpRequest, AdapterError>;
    fn classify_verify(&self, resp: &HttpResponse) -> VerifyOutcome;
}
