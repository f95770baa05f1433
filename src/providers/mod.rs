//! Provider adapters. Each provider lives in its own module with the same
//! shape: a struct built from its connector definition and account settings,
//! implementing [`Finder`] and/or [`Verifier`] with **pure** functions that
//! build requests and classify answers. No adapter performs I/O: the engine
//! (`crate::engine`) sends the requests under the limiter and retry policy,
//! which keeps every adapter testable on recorded payloads in `fixtures/`.

use std::fmt;
use std::sync::Arc;

use crate::core::channel::ChannelSet;
use crate::core::lead::Identity;
use crate::core::outcome::{Classified, MilliCredits};
use crate::core::value::Verification;

pub mod apollo;
pub mod declarative;
pub mod def;
pub mod fullenrich;
pub mod hunter;
pub mod pdl;
pub(crate) mod util;
pub mod zerobounce;

use def::{Account, AdapterKind, BuildError, Role};

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

/// The `job_id` of a [`ProviderOutcome::Pending`](crate::core::outcome::ProviderOutcome::Pending)
/// that names no job: **repeat the request that got this answer** after
/// `retry_after`. A synchronous provider's "still processing" (Hunter 202)
/// means re-issuing the same find request; an async provider's "not ready"
/// answer to a poll (FullEnrich `error.enrichment.in_progress`) means polling
/// the same job again. Any other `job_id` is a job to poll
/// ([`Finder::poll_request`]) or to match a callback with.
pub const REPEAT_REQUEST: &str = "";

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
    MissingInput {
        provider: &'static str,
        needs: &'static str,
    },
    #[error("{provider} accepts at most {max} records per request, got {got}")]
    BatchTooLarge {
        provider: &'static str,
        max: usize,
        got: usize,
    },
    #[error("{provider}: {message}")]
    Invalid {
        provider: &'static str,
        message: String,
    },
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
            format!(
                "{} does not support polling (HTTP {})",
                self.id(),
                resp.status
            ),
        ))
    }
    /// When an answer says the account's quota is used up (e.g. a remaining
    /// count of zero in the provider's own header format), how long until it
    /// resets: the engine then holds every request to this account.
    fn quota_pause(&self, _resp: &HttpResponse) -> Option<std::time::Duration> {
        None
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

/// Whether the adapter implements a finder or a verifier, checked against the
/// connector's `role`.
fn check_role(account: &Account) -> Result<Role, BuildError> {
    let adapter_role = match account.connector.adapter {
        AdapterKind::Zerobounce => Role::Verifier,
        AdapterKind::Fullenrich
        | AdapterKind::Apollo
        | AdapterKind::Hunter
        | AdapterKind::Pdl
        | AdapterKind::Declarative => Role::Finder,
    };
    let role = account.connector.role;
    if role != adapter_role {
        let (is, want) = match adapter_role {
            Role::Finder => ("a finder", "finder"),
            Role::Verifier => ("a verifier", "verifier"),
        };
        return Err(BuildError::new(
            account,
            format!("role does not match the adapter: it is {is}, set role = \"{want}\""),
        ));
    }
    Ok(role)
}

/// Builds the finder of an account; `None` when the connector is a verifier.
pub fn build_finder(account: &Account) -> Result<Option<Arc<dyn Finder>>, BuildError> {
    if check_role(account)? == Role::Verifier {
        return Ok(None);
    }
    let f: Arc<dyn Finder> = match account.connector.adapter {
        AdapterKind::Fullenrich => Arc::new(fullenrich::FullEnrich::new(account)?),
        AdapterKind::Apollo => Arc::new(apollo::Apollo::new(account)?),
        AdapterKind::Hunter => Arc::new(hunter::Hunter::new(account)?),
        AdapterKind::Pdl => Arc::new(pdl::Pdl::new(account)?),
        AdapterKind::Declarative => Arc::new(declarative::Declarative::new(account)?),
        AdapterKind::Zerobounce => {
            return Err(BuildError::new(
                account,
                "the zerobounce adapter is not a finder",
            ));
        }
    };
    Ok(Some(f))
}

/// Builds the verifier of an account; `None` when the connector is a finder.
pub fn build_verifier(account: &Account) -> Result<Option<Arc<dyn Verifier>>, BuildError> {
    if check_role(account)? == Role::Finder {
        return Ok(None);
    }
    let v: Arc<dyn Verifier> = match account.connector.adapter {
        AdapterKind::Zerobounce => Arc::new(zerobounce::ZeroBounce::new(account)?),
        other => {
            return Err(BuildError::new(
                account,
                format!(
                    "the {} adapter is not a verifier",
                    util::adapter_name(other)
                ),
            ));
        }
    };
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::def::ConnectorDef;
    use super::*;
    use crate::secret::Secret;

    fn dummy_account(def: ConnectorDef) -> Account {
        Account {
            id: def.id.clone(),
            base_url: def.base_url.clone(),
            limits: def.limits,
            connector: Arc::new(def),
            api_key: Secret::new("dummy-key-0000"),
            timeout: Duration::from_secs(30),
            max_retries: 3,
            options: BTreeMap::new(),
        }
    }

    /// Every connector file parses (deny_unknown_fields), is named after its
    /// id, cites its sources, and builds into exactly one of finder/verifier.
    #[test]
    fn every_connector_file_parses_and_builds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/connectors");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let def: ConnectorDef =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            assert_eq!(
                def.id,
                stem,
                "{}: id must match the file name",
                path.display()
            );
            assert!(
                def.base_url.starts_with("https://"),
                "{stem}: production base_url"
            );
            assert!(
                def.docs.as_deref().is_some_and(|d| !d.is_empty()),
                "{stem}: docs"
            );
            assert!(
                !def.limits.windows().is_empty(),
                "{stem}: documented limits"
            );
            let role = def.role;
            let account = dummy_account(def);
            let finder = build_finder(&account).unwrap_or_else(|e| panic!("{e}"));
            let verifier = build_verifier(&account).unwrap_or_else(|e| panic!("{e}"));
            match role {
                Role::Finder => {
                    let f = finder.expect("a finder");
                    assert!(verifier.is_none());
                    assert_eq!(f.id(), stem);
                    assert!(!f.supplies().is_empty());
                }
                Role::Verifier => {
                    let v = verifier.expect("a verifier");
                    assert!(finder.is_none());
                    assert_eq!(v.id(), stem);
                }
            }
            seen.push(stem);
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "apollo",
                "fullenrich",
                "hunter",
                "pdl",
                "prospeo",
                "zerobounce"
            ]
        );
    }

    /// No answer, however odd, makes an adapter panic.
    #[test]
    fn garbage_answers_never_panic() {
        use crate::core::channel::Channel;
        use crate::core::lead::Identity;
        let bodies: Vec<Vec<u8>> = vec![
            vec![],
            b"null".to_vec(),
            b"[]".to_vec(),
            b"{}".to_vec(),
            b"\"text\"".to_vec(),
            vec![0xff, 0xfe, 0x00, 0x80],
            br#"{"status":5,"data":[1,{"custom":{"enrichd_key":7}},{"custom":{"enrichd_key":"k"},"contact_info":{"most_probable_work_email":[],"most_probable_phone":3,"work_emails":{}}}],"person":{"email":[],"personal_emails":[null]},"error":{"type":[]},"errors":[]}"#.to_vec(),
            br#"{"id":"","status":"FINISHED","cost":{"credits":1e308},"data":[{"custom":{"enrichd_key":"k"},"contact_info":{"most_probable_work_email":{"email":"a@b.io","status":7}}}]}"#.to_vec(),
            br#"{"data":{"work_email":{},"mobile_phone":1,"phone_numbers":[[]]},"person":{"email":{"email":1}},"error_code":["NO_MATCH"]}"#.to_vec(),
            "é".repeat(500).into_bytes(),
        ];
        let statuses = [
            0u16, 100, 200, 202, 204, 302, 400, 401, 402, 403, 404, 422, 429, 451, 500, 520, 999,
        ];
        let id = Identity {
            first_name: Some("A".into()),
            last_name: Some("B".into()),
            domain: Some("b.io".into()),
            ..Identity::default()
        };
        let item = FindItem {
            key: "k",
            identity: &id,
            channels: Channel::ALL.into_iter().collect(),
        };
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/connectors");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let Ok(def) = toml::from_str::<ConnectorDef>(&std::fs::read_to_string(&path).unwrap())
            else {
                continue;
            };
            let account = dummy_account(def);
            let finder = build_finder(&account).unwrap();
            let verifier = build_verifier(&account).unwrap();
            for status in statuses {
                for body in &bodies {
                    let resp = HttpResponse {
                        status,
                        headers: vec![
                            ("retry-after".into(), "nonsense".into()),
                            ("x-ratelimit-reset".into(), "{\"a\":[]}".into()),
                        ],
                        body: body.clone(),
                    };
                    if let Some(f) = &finder {
                        let items = [FindItem {
                            channels: item.channels.intersection(f.supplies()),
                            ..item
                        }];
                        let _ = f.classify_find(&items, &resp);
                        let _ = f.classify_poll(&items, &resp);
                        let _ = f.classify_find(&[], &resp);
                        let _ = f.authenticate_callback(
                            &[("x-signature-sha1".into(), "00".into())],
                            body,
                        );
                    }
                    if let Some(v) = &verifier {
                        let _ = v.classify_verify(&resp);
                    }
                }
            }
        }
    }

    #[test]
    fn role_mismatch_is_a_build_error() {
        let text = include_str!("../../connectors/zerobounce.toml")
            .replace("role = \"verifier\"", "role = \"finder\"");
        let def: ConnectorDef = toml::from_str(&text).unwrap();
        let e = match build_finder(&dummy_account(def.clone())) {
            Err(e) => e,
            Ok(_) => panic!("zerobounce as a finder must not build"),
        };
        assert!(e.message.contains("set role = \"verifier\""), "{e}");
        assert!(build_verifier(&dummy_account(def)).is_err());

        let text = include_str!("../../connectors/hunter.toml")
            .replace("role = \"finder\"", "role = \"verifier\"");
        let def: ConnectorDef = toml::from_str(&text).unwrap();
        assert!(build_verifier(&dummy_account(def)).is_err());
    }

    #[test]
    fn connector_files_reject_unknown_keys() {
        let text = format!(
            "{}\nfoo = 1\n",
            include_str!("../../connectors/apollo.toml")
        );
        // `foo` lands in the last table ([cost]), which denies unknown fields.
        assert!(toml::from_str::<ConnectorDef>(&text).is_err());
    }
}
