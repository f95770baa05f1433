//! Configuration of the HubSpot simulator: options, rate limits, webhook subscriptions, faults
//! and manual webhook deliveries.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-portal rate limits (reference §4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubSpotLimits {
    /// Accepted general-bucket requests per rolling 10 s (OAuth apps: 110).
    pub ten_secondly: u32,
    /// Accepted CRM search requests per rolling second (5).
    pub search_per_second: u32,
    /// Accepted API calls per UTC day, all buckets (None: no daily limit, as for OAuth apps).
    pub daily: Option<u64>,
}

impl HubSpotLimits {
    /// A public (OAuth) app: 110 / 10 s, search 5 / s, no daily limit.
    pub fn oauth_default() -> Self {
        HubSpotLimits {
            ten_secondly: 110,
            search_per_second: 5,
            daily: None,
        }
    }

    /// A private app on a Professional portal: 190 / 10 s, search 5 / s, 625,000 / day.
    pub fn private_app_professional() -> Self {
        HubSpotLimits {
            ten_secondly: 190,
            search_per_second: 5,
            daily: Some(625_000),
        }
    }

    /// Limits so high they never trigger (tests that are not about rate limits).
    pub fn unlimited() -> Self {
        HubSpotLimits {
            ten_secondly: u32::MAX / 2,
            search_per_second: u32::MAX / 2,
            daily: None,
        }
    }
}

impl Default for HubSpotLimits {
    fn default() -> Self {
        Self::oauth_default()
    }
}

/// One webhook subscription of the simulated app (reference §5.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// `"contact.creation"` or `"contact.propertyChange"` (others are accepted and never fire).
    pub event_type: String,
    /// The property of a `contact.propertyChange` subscription (required for that type; a
    /// propertyChange subscription without a property never fires, as in HubSpot).
    pub property: Option<String>,
}

impl Subscription {
    /// `contact.creation`.
    pub fn creation() -> Self {
        Subscription {
            event_type: "contact.creation".into(),
            property: None,
        }
    }

    /// `contact.propertyChange` for `property`.
    pub fn property_change(property: &str) -> Self {
        Subscription {
            event_type: "contact.propertyChange".into(),
            property: Some(property.to_string()),
        }
    }
}

/// How the simulated portal and app behave.
#[derive(Clone, Debug)]
pub struct HubSpotOptions {
    /// The portal (hub) id: `hub_id` in token responses, `portalId` in webhooks. Default 62515.
    pub portal_id: u64,
    /// The app id: `appId` in webhooks, `sourceId` of API writes. Default 54321.
    pub app_id: u64,
    pub client_id: String,
    pub client_secret: String,
    /// A private-app token (`pat-na1-…`) that carries every granted scope and never expires;
    /// None disables private-app auth.
    pub private_app_token: Option<String>,
    /// What the installing user grants (authorize refuses scopes outside this list).
    pub granted_scopes: Vec<String>,
    /// `expires_in` of access tokens (HubSpot: 1800 s).
    pub access_token_ttl: Duration,
    /// When true, every refresh returns a new refresh token and revokes the old one. HubSpot's
    /// behaviour is undocumented (reference §1.2); the default (false) returns the same one.
    pub rotate_refresh_tokens: bool,
    pub limits: HubSpotLimits,
    /// Slept before answering every API call (after the rate-limit decision), 429s included.
    pub latency: Duration,
    /// Records changed less than this ago are invisible to search (HubSpot's "a few moments").
    pub search_index_delay: Duration,
    /// Where webhook events are POSTed; None: no automatic deliveries.
    pub webhook_url: Option<String>,
    pub subscriptions: Vec<Subscription>,
    /// Key of the v3 signature; None: the client secret (as HubSpot does for public apps).
    pub webhook_secret: Option<String>,
    /// Send `Retry-After` (seconds until the window frees) on 429s. HubSpot does not always.
    pub retry_after_on_429: bool,
}

impl HubSpotOptions {
    pub fn defaults() -> Self {
        HubSpotOptions {
            portal_id: 62515,
            app_id: 54321,
            client_id: "6a2f41a3-c54c-4c8e-a1d2-0324e1c3e7f0".into(),
            client_secret: "b7e0c9d4-51f3-4a9e-8d2c-3f6a1e5b9c70".into(),
            private_app_token: Some("pat-na1-5e1d7c3a-9b2f-4e6d-8a10-c4f2b7d9e315".into()),
            granted_scopes: [
                "oauth",
                "crm.objects.contacts.read",
                "crm.objects.contacts.write",
                "crm.objects.companies.read",
                "crm.schemas.contacts.read",
                "crm.schemas.contacts.write",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            access_token_ttl: Duration::from_secs(1800),
            rotate_refresh_tokens: false,
            limits: HubSpotLimits::oauth_default(),
            latency: Duration::ZERO,
            search_index_delay: Duration::ZERO,
            webhook_url: None,
            subscriptions: Vec::new(),
            webhook_secret: None,
            retry_after_on_429: false,
        }
    }

    pub fn with_limits(mut self, limits: HubSpotLimits) -> Self {
        self.limits = limits;
        self
    }
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
    /// Replace the granted scopes.
    pub fn with_scopes(mut self, scopes: &[&str]) -> Self {
        self.granted_scopes = scopes.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.access_token_ttl = ttl;
        self
    }
    pub fn with_rotation(mut self, rotate: bool) -> Self {
        self.rotate_refresh_tokens = rotate;
        self
    }
    pub fn with_webhooks(
        mut self,
        url: impl Into<String>,
        subscriptions: Vec<Subscription>,
    ) -> Self {
        self.webhook_url = Some(url.into());
        self.subscriptions = subscriptions;
        self
    }
    pub fn with_webhook_secret(mut self, secret: Option<String>) -> Self {
        self.webhook_secret = secret;
        self
    }
    pub fn with_search_index_delay(mut self, delay: Duration) -> Self {
        self.search_index_delay = delay;
        self
    }
    pub fn with_private_app_token(mut self, token: Option<String>) -> Self {
        self.private_app_token = token;
        self
    }
    pub fn with_retry_after(mut self, on: bool) -> Self {
        self.retry_after_on_429 = on;
        self
    }

    /// The webhook signing key in effect.
    pub fn effective_webhook_secret(&self) -> &str {
        self.webhook_secret
            .as_deref()
            .unwrap_or(&self.client_secret)
    }
}

impl Default for HubSpotOptions {
    fn default() -> Self {
        Self::defaults()
    }
}

/// A fault to inject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HubSpotFault {
    /// `batch/update` inputs for these contact ids fail inside a 207 (the
    /// error carries `context.objectWriteTraceId` = that input's trace id, and `context.ids`);
    /// `times` = how many attempts of each id fail before it succeeds (`u32::MAX` = always).
    /// `transient`: a retryable per-record error (category `RATE_LIMITS`, a lock message)
    /// instead of a permanent `VALIDATION_ERROR` (`INVALID_EMAIL`).
    FailRecords {
        ids: Vec<String>,
        times: u32,
        transient: bool,
    },
    /// The next `count` token-endpoint calls answer `429 {"status":"error","message":"You have
    /// reached your rate limit."}` with `Retry-After: 1`.
    TokenRateLimited { count: u32 },
    /// The next `count` calls whose path starts with `path_prefix` answer `status` with a
    /// HubSpot error body (API calls: after auth and the rate limiter, so they use quota).
    Status {
        path_prefix: String,
        status: u16,
        count: u32,
    },
}

/// How [`HubSpotSim::deliver`](super::HubSpotSim::deliver) signs a manual webhook POST.
/// `Delivery::default()` signs correctly with the current time.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    /// Sign with this secret instead of the configured one.
    pub secret: Option<String>,
    /// Use this `X-HubSpot-Request-Timestamp` (ms) instead of now (e.g. 10 minutes ago).
    pub timestamp_ms: Option<i64>,
    /// Sign the body, then send a different (still valid JSON) body.
    pub tamper_body: bool,
    /// Send no signature headers (neither `X-HubSpot-Signature-v3` nor the legacy v1 pair).
    pub omit_signature: bool,
}
