//! # A stateful HubSpot simulator
//!
//! [`start_hubspot`] serves one simulated HubSpot portal on `127.0.0.1:0`: the OAuth pages and
//! token endpoints, CRM v3 contacts and companies (list, get, search, batch read, batch
//! update, PATCH, create), v4 contact↔company associations, the Properties API and webhooks.
//! Everything follows `shared/reference/hubspot.md` (§1–§6); where the reference is silent or
//! unverified, the choice made is stated below. Both the API host (`api.hubapi.com`) and the
//! authorize host (`app.hubspot.com`) are [`HubSpotSim::base_url`].
//!
//! ## Request pipeline
//! Every API request goes: route (unknown path → 404 in the standard error shape) → auth
//! (`Authorization: Bearer <OAuth access token | private-app token>`; missing or unknown →
//! 401 `INVALID_AUTHENTICATION`, expired → 401 `EXPIRED_AUTHENTICATION` with
//! `context["expire time"]`) → rate limiter → latency ([`HubSpotOptions::latency`], 429s are
//! delayed too) → injected [`HubSpotFault::Status`] → scope check (403 `MISSING_SCOPES` with
//! `requiredGranularScopes`) → the endpoint. The scope check comes after the limiter, so a
//! 403 uses quota like any other authenticated call.
//!
//! ## Rate limits (§4)
//! Per portal: a *rolling* 10-second window over accepted general requests
//! ([`HubSpotLimits::ten_secondly`]), a rolling 1-second window over accepted searches
//! ([`HubSpotLimits::search_per_second`]; search is exempt from the 10-second window) and an
//! optional daily count of all accepted API calls (reset at UTC midnight; the simulated
//! portal's time zone is UTC, see `GET /account-info/v3/details`). The daily limit is checked
//! first, then the bucket. **Rejected requests do not consume quota.** v4 association
//! endpoints are exempt from the 10-second window but count for the daily limit. OAuth
//! endpoints and `/_sim` calls are never limited. General responses (including their 429s)
//! carry `X-HubSpot-RateLimit-Interval-Milliseconds: 10000`, `-Max` and `-Remaining` (after
//! this request); private-app-token calls also carry `-Daily` / `-Daily-Remaining` when a daily
//! limit is set; search responses carry none, exempt (v4) responses only the daily pair. 429
//! bodies: `{"status":"error","message":"You have reached your ten_secondly_rolling
//! limit.","errorType":"RATE_LIMIT","correlationId":…,"policyName":"TEN_SECONDLY_ROLLING",
//! "requestId":…}` (search: `secondly` / `SECONDLY`; daily: `daily` / `DAILY`). `Retry-After`
//! (seconds until the window frees, rounded up) only with
//! [`HubSpotOptions::retry_after_on_429`]. [`HubSpotSim::set_limits`] (or `PUT /_sim/limits`)
//! applies at once; requests already in the windows stay there.
//!
//! ## OAuth (§1)
//! * `GET /oauth/authorize`: unknown `client_id`, missing `redirect_uri` / `scope`, an
//!   unparsable `redirect_uri`, or a `code_challenge` whose method is not `S256` → 400 (an HTML
//!   page, no redirect). Requested scopes not all granted → `302 {redirect_uri}?error=
//!   invalid_scope&error_description=…&state=…`. Otherwise consent is automatic: `302
//!   {redirect_uri}?code=…&state=…`; the code is single-use, valid 5 minutes, bound to the
//!   redirect URI, the scopes (requested, plus optional scopes that are granted) and the PKCE
//!   challenge. Any `redirect_uri` is accepted (the app's configured URI is not simulated).
//! * `POST /oauth/2026-03/token` and `/oauth/v3/token`: form body only (parameters in the query
//!   string → 400 `invalid_request`; another content type → 400 `invalid_request`). Errors use
//!   the standardized shape `{"error","error_description","status","message"}`: bad client →
//!   `invalid_client`/`BAD_CLIENT_ID`; bad, used, expired or foreign code, redirect mismatch or
//!   a wrong/missing PKCE verifier → `invalid_grant`/`BAD_AUTH_CODE`; unknown or revoked
//!   refresh token → `invalid_grant`/`BAD_REFRESH_TOKEN`; other grant types →
//!   `unsupported_grant_type`. A failed exchange does not consume the code. `client_credentials`
//!   is not offered by this app. Access tokens are ~400 random characters; refresh tokens are
//!   UUID-shaped. A refresh issues a new access token (older ones stay valid until they
//!   expire) and returns the same refresh token, or a new one with the old one revoked when
//!   [`HubSpotOptions::rotate_refresh_tokens`].
//! * Legacy `POST /oauth/v1/token` works (query parameters allowed, legacy `{status,message}`
//!   error bodies) and is counted as its own endpoint, so a test can assert it is never used.
//! * `POST /oauth/{2026-03,v3}/token/revoke` (form `client_id, client_secret, token`) revokes a
//!   refresh token (200, empty; unknown tokens too, as RFC 7009 says). `…/token/introspect`,
//!   `GET /oauth/v1/access-tokens/{token}`, `GET|DELETE /oauth/v1/refresh-tokens/{token}` are
//!   also served.
//! * [`HubSpotFault::TokenRateLimited`] answers token calls with 429 `{"status":"error",
//!   "message":"You have reached your rate limit."}` and `Retry-After: 1`.
//! * The private-app token has every granted scope and never expires.
//!
//! ## CRM objects (§2)
//! Contact ids are `101, 102, …` in creation order, company ids `9000001, …`. Datetime values
//! (`createdate`, `lastmodifieddate`, `hs_lastmodifieddate`, custom datetime properties) are
//! ISO-8601 with milliseconds on the wire (`createdAt`/`updatedAt` too); dates are
//! `YYYY-MM-DD`. Requested properties without a value come back as `null`; unknown requested
//! names are ignored; `hs_object_id`, `createdate` and the modified date are always included.
//! * List (`/crm/v3/objects/{contacts,companies}` and `/crm/objects/2026-03/…`): `limit`
//!   default 10, max 100 (50 with `propertiesWithHistory`), over → 400 `VALIDATION_ERROR`.
//!   `after` is HubSpot's opaque cursor: base64 of `"<next id>\n"` (e.g. `NTI1Cg==`);
//!   `paging.next.link` repeats the request's query with the new cursor; the last page has no
//!   `paging`. `associations=companies` (contacts) / `associations=contacts` (companies) adds
//!   `{"associations":{"companies":{"results":[{"id":"9000001","type":"contact_to_company"}]}}}`
//!   (omitted when there is none). `archived=true` lists nothing (nothing is archived).
//! * Search (`POST …/search`): body > 3,000 characters, > 5 filter groups, > 6 filters in a
//!   group, > 18 filters in total, > 1 sort, `limit` > 200, a non-integer `after`, or
//!   `after + limit > 10000` ("paging beyond 10,000") → 400 `VALIDATION_ERROR`. Operators `EQ,
//!   NEQ, LT, LTE, GT, GTE, BETWEEN, IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY, CONTAINS_TOKEN,
//!   NOT_CONTAINS_TOKEN` plus the `associations.company` pseudo-property. Number, date and
//!   datetime properties compare numerically (date values as epoch ms or ISO-8601; an
//!   unparsable value → 400); strings case-insensitively; enumerations case-sensitively;
//!   string `IN`/`NOT_IN` compare the lower-cased stored value with the values as given (the
//!   documented "values must be lowercase" quirk). `NEQ`/`NOT_IN`/`NOT_CONTAINS_TOKEN` match
//!   records without a value. Unknown filter properties behave as "no value". One sort
//!   (ties by id ascending, missing values lowest); no sort → id ascending. Results carry the
//!   requested properties plus `hs_object_id`, `createdate` and the modified date; without
//!   `properties` the documented defaults. `paging.next.after` (an offset) is present whenever
//!   more results exist, even past the 10,000 cap: clients must notice the cap themselves.
//!   Records changed less than [`HubSpotOptions::search_index_delay`] ago are invisible.
//! * Batch read: ≤ 100 inputs; `idProperty` supported; unknown ids → 207 with one
//!   `OBJECT_NOT_FOUND` error listing them in `context.ids`.
//! * Batch update: ≤ 100 inputs; duplicate ids → 400 "Duplicate IDs found in batch input";
//!   any unknown property (`PROPERTY_DOESNT_EXIST`), read-only property (`READ_ONLY_VALUE`),
//!   value outside an enumeration's options (`INVALID_OPTION`), non-numeric number
//!   (`INVALID_LONG`/`INVALID_FLOAT`) or bad date (`INVALID_DATE`) rejects the whole batch with
//!   400 `"Property values were not valid: [json]"` (each entry `isValid, message, error, name,
//!   localizedErrorMessage, portalId`; plus an `errors` array with `code` and
//!   `context.propertyName`, as real responses have). Unknown ids and
//!   [`HubSpotFault::FailRecords`] → 207 entries with `context.ids` and
//!   `context.objectWriteTraceId`. `""` clears a value; a `;`-prefixed value appends to a
//!   multi-checkbox. `lastmodifieddate` moves only when a value changed.
//! * Create (`POST /crm/v3/objects/contacts`) refuses a duplicate email with 409 `CONFLICT`
//!   "Contact already exists. Existing ID: …".
//! * Associations: `POST /crm/v4/associations/{contact,company}/{company,contact}/batch/read`
//!   (≤ 1,000 inputs: the limit is not in the reference; 1,000 matches HubSpot's v4 docs);
//!   contact→company types 279 (unlabeled) and 1 (Primary), company→contact 280 and 2. Inputs
//!   without an association (or unknown) are reported as 207 errors `{"category":
//!   "OBJECT_NOT_FOUND","subCategory":"crm.associations.NO_ASSOCIATIONS_FOUND","message":"No
//!   company is associated with contact 123.","context":{"fromObjectId":["123"],…}}`, the shape
//!   third-party clients handle. `GET /crm/v4/objects/contact/{id}/associations/company` too.
//!
//! ## Properties API (§3)
//! `GET|POST /crm/v3/properties/{contacts,companies}`, `GET|PATCH …/{name}`, `POST
//! …/batch/create` (201, or 207 with per-input errors), `GET|POST …/groups`, `GET
//! …/groups/{name}` (also under `/crm/properties/2026-03/`). Creation validates the required
//! fields, the name, the `type`/`fieldType` pairs of §3.2 and the group; an existing name →
//! 409 `OBJECT_ALREADY_EXISTS` `"Property named '<name>' already exists."` (groups alike).
//! Contacts start with `firstname, lastname, email, phone, mobilephone, company, jobtitle,
//! country, website, lifecyclestage` (enumeration/`radio`, as in HubSpot), the read-only
//! `hs_object_id, createdate, lastmodifieddate, associatedcompanyid` and the custom
//! `icp_score` (number), `seniority`, `linkedin_url` (string) in group `contactinformation`;
//! companies `name, domain, country, numberofemployees, hs_object_id, createdate,
//! hs_lastmodifieddate` in `companyinformation`.
//!
//! ## Webhooks (§5)
//! With [`HubSpotOptions::webhook_url`], writes queue events for the configured
//! [`Subscription`]s; a background task POSTs them as compact JSON arrays of ≤ 100 with
//! `X-HubSpot-Signature-v3` ([`sign_v3`] over `POST` + URL + body + timestamp, keyed with
//! [`HubSpotOptions::webhook_secret`] or the client secret) and `X-HubSpot-Request-Timestamp`
//! (ms), plus the legacy `X-HubSpot-Signature` ([`sign_v1`]) with `X-HubSpot-Signature-Version:
//! v1`, as CRM-object subscriptions send it. A delivery that fails (non-2xx, connection error, no answer within 5 s) is retried
//! twice, 200 ms apart, with `attemptNumber` incremented (HubSpot: up to 10 tries over 24 h).
//! Events carry `eventId` (increasing), `subscriptionId`, `portalId`, `appId`, `occurredAt`,
//! `subscriptionType`, `attemptNumber`, `objectId`, `changeSource` (`CRM_UI` for
//! [`HubSpotSim::human_edit`], `INTEGRATION` for API writes with `sourceId` = the app id,
//! `API` for [`HubSpotSim::create_contact`]), `changeFlag: "NEW"` on creation and
//! `propertyName`/`propertyValue` on property changes. A creation also fires propertyChange
//! events for the subscribed properties it sets. Only changed values fire.
//!
//! ## Errors (§6)
//! `{"status":"error","message":…,"correlationId":<uuid>,"category":…}` everywhere; malformed
//! JSON → 400 `VALIDATION_ERROR` "Invalid input JSON on line L, column C: …". Bodies of
//! [`HubSpotFault::Status`]: 400 `VALIDATION_ERROR`, 401 `INVALID_AUTHENTICATION`, 403
//! `MISSING_SCOPES`, 404 `OBJECT_NOT_FOUND`, 409 `CONFLICT`, 423 `LOCKED`, 429 the
//! ten-secondly body, 477 `MIGRATION_IN_PROGRESS` with `Retry-After`, 5xx
//! `INTERNAL_ERROR` (categories of 423/477/5xx are not in the reference).
//!
//! ## Control endpoints
//! `GET /_sim/stats` ([`HubSpotStats`] without the log; `?log=true` includes it), `POST
//! /_sim/stats/reset`, `GET|PUT /_sim/limits` ([`HubSpotLimits`] as JSON), `POST /_sim/faults`
//! ([`HubSpotFault`] as JSON), `DELETE /_sim/faults`, `POST /_sim/expire-access-tokens`,
//! `POST /_sim/revoke-refresh-tokens`, `GET /_sim/contacts/{id}` ([`ContactView`]), `POST
//! /_sim/contacts/{id}/human-edit` (`{"prop":"value"}`).

mod http;
mod limits;
mod oauth;
mod objects;
mod options;
mod properties;
mod schema;
mod search;
mod seed;
mod stats;
mod store;
mod time;
mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

pub use options::{Delivery, HubSpotFault, HubSpotLimits, HubSpotOptions, Subscription};
pub use schema::{PropertyOption, PropertyView};
pub use seed::{HubSpotData, SeedCompany, SeedContact};
pub use stats::{Bucket, HsCall, HubSpotStats};
pub use store::{Change, CompanyView, ContactView};
pub use webhooks::{sign_v1, sign_v3};

use crate::hash::splitmix64;
use limits::Limiter;
use store::{Obj, Source, Store};
use time::{now_ms, parse_datetime};

/// Mutable control state: limiter, faults, statistics.
pub(crate) struct Ctl {
    pub limiter: Limiter,
    pub faults: Vec<HubSpotFault>,
    /// FailRecords: id → (attempts left to fail, transient).
    pub fail: HashMap<String, (u32, bool)>,
    pub stats: HubSpotStats,
}

/// State shared by the server, the webhook task and [`HubSpotSim`].
pub(crate) struct Shared {
    pub opts: HubSpotOptions,
    pub started: Instant,
    pub base_url: String,
    seed: u64,
    ctr: AtomicU64,
    event_id: AtomicU64,
    store: Mutex<Store>,
    auth: Mutex<oauth::AuthState>,
    ctl: Mutex<Ctl>,
    hooks: OnceLock<webhooks::Hooks>,
    pub http: reqwest::Client,
    tasks: Mutex<Vec<AbortHandle>>,
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn auth(&self) -> MutexGuard<'_, oauth::AuthState> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn ctl(&self) -> MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh unpredictable-enough 64-bit value (hash of start time and a counter).
    pub(crate) fn rand(&self) -> u64 {
        let n = self.ctr.fetch_add(1, Ordering::SeqCst);
        splitmix64(self.seed ^ splitmix64(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }

    /// `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
    pub(crate) fn uuid(&self) -> String {
        let (a, b) = (self.rand(), self.rand());
        let mut hex = String::with_capacity(32);
        for v in [a, b] {
            for k in (0..16).rev() {
                hex.push(char::from(HEX[((v >> (k * 4)) & 0xf) as usize]));
            }
        }
        let mut h: Vec<char> = hex.chars().collect();
        h[12] = '4';
        h[16] = ['8', '9', 'a', 'b'][(b & 3) as usize];
        let s: String = h.into_iter().collect();
        format!(
            "{}-{}-{}-{}-{}",
            &s[0..8],
            &s[8..12],
            &s[12..16],
            &s[16..20],
            &s[20..32]
        )
    }

    /// `n` random base64url characters.
    pub(crate) fn token_chars(&self, n: usize) -> String {
        let mut out = String::with_capacity(n);
        let mut v = 0u64;
        let mut bits = 0u32;
        while out.len() < n {
            if bits < 6 {
                v = self.rand();
                bits = 64;
            }
            out.push(char::from(B64URL[(v & 63) as usize]));
            v >>= 6;
            bits -= 6;
        }
        out
    }

    pub(crate) fn next_event_id(&self) -> u64 {
        self.event_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Queue webhook events (no-op without a webhook URL).
    pub(crate) fn emit(&self, events: Vec<Value>) {
        if events.is_empty() {
            return;
        }
        if let Some(h) = self.hooks.get() {
            h.push(events);
        }
    }

    fn track(&self, h: AbortHandle) {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|x| !x.is_finished());
        t.push(h);
    }

    fn abort_tasks(&self) {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for x in t.drain(..) {
            x.abort();
        }
    }

    /// Apply contact values as `source`, then queue the propertyChange events.
    pub(crate) fn write_contact(
        &self,
        idx: usize,
        values: &[(u16, String)],
        source: Source,
        now: i64,
    ) -> Option<u64> {
        let (id, changed) = {
            let mut st = self.store();
            let id = st.contacts.recs.get(idx)?.id;
            let changed = st.write(Obj::Contact, idx, values, source, now);
            let named: Vec<(String, String)> = changed
                .iter()
                .map(|(p, v)| (st.contacts.schema.def(*p).name.clone(), v.clone()))
                .collect();
            (id, named)
        };
        self.emit(webhooks::contact_events(
            self, id, false, &changed, source, now,
        ));
        Some(id)
    }

    /// Values as a UI user would set them (unknown / read-only properties ignored, dates
    /// normalised to epoch ms when parsable).
    pub(crate) fn ui_values(&self, props: &[(&str, &str)]) -> Vec<(u16, String)> {
        let st = self.store();
        let schema = &st.contacts.schema;
        props
            .iter()
            .filter_map(|(k, v)| {
                let p = schema.idx(k)?;
                let def = schema.def(p);
                if def.read_only_value {
                    return None;
                }
                let v = match def.kind {
                    schema::Kind::Datetime | schema::Kind::Date => parse_datetime(v)
                        .map(|ms| ms.to_string())
                        .unwrap_or_else(|| v.to_string()),
                    _ => v.to_string(),
                };
                Some((p, v))
            })
            .collect()
    }

    /// See [`HubSpotSim::human_edit`].
    pub(crate) fn human_edit(&self, id: &str, props: &[(&str, &str)]) {
        let values = self.ui_values(props);
        let idx = self.store().contacts.index_of(id);
        if let Some(idx) = idx {
            self.write_contact(idx, &values, Source::CrmUi, now_ms());
        }
    }

    /// Create a contact as `source`, queue creation (+ propertyChange) events.
    pub(crate) fn create_contact(
        &self,
        values: &[(u16, String)],
        company: Option<u32>,
        source: Source,
        now: i64,
    ) -> u64 {
        let (id, named) = {
            let mut st = self.store();
            let idx = st.create(Obj::Contact, values, company, source, now);
            let id = st.contacts.recs.get(idx).map(|r| r.id).unwrap_or_default();
            let named: Vec<(String, String)> = values
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(p, v)| (st.contacts.schema.def(*p).name.clone(), v.clone()))
                .collect();
            (id, named)
        };
        self.emit(webhooks::contact_events(
            self, id, true, &named, source, now,
        ));
        id
    }
}

/// Start a simulated portal holding `data`, bound to `127.0.0.1:0`.
pub async fn start_hubspot(data: HubSpotData, opts: HubSpotOptions) -> std::io::Result<HubSpotSim> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(webhooks::TIMEOUT)
        .build()
        .map_err(std::io::Error::other)?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(addr.port()) << 48);
    let store = Store::build(data, now_ms());
    let sh = Arc::new(Shared {
        started: Instant::now(),
        base_url: format!("http://{addr}"),
        seed: splitmix64(seed),
        ctr: AtomicU64::new(1),
        event_id: AtomicU64::new(1),
        store: Mutex::new(store),
        auth: Mutex::new(oauth::AuthState::default()),
        ctl: Mutex::new(Ctl {
            limiter: Limiter::new(opts.limits.clone()),
            faults: Vec::new(),
            fail: HashMap::new(),
            stats: HubSpotStats::default(),
        }),
        hooks: OnceLock::new(),
        http,
        tasks: Mutex::new(Vec::new()),
        opts,
    });
    if let Some((hooks, task)) = webhooks::start(&sh) {
        let _ = sh.hooks.set(hooks);
        sh.track(task.abort_handle());
    }
    let app = Router::new().fallback(http::entry).with_state(sh.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    tracing::debug!(%addr, "hubspot simulator started");
    Ok(HubSpotSim {
        sh,
        addr,
        shutdown: Some(tx),
        join: Some(join),
    })
}

/// A running simulated portal.
pub struct HubSpotSim {
    sh: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl HubSpotSim {
    /// `http://127.0.0.1:PORT`: both the API host and the authorize host.
    pub fn base_url(&self) -> String {
        self.sh.base_url.clone()
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The options the portal started with (limits changed by [`Self::set_limits`] are not
    /// reflected here; see [`Self::limits`]).
    pub fn options(&self) -> &HubSpotOptions {
        &self.sh.opts
    }
    pub fn portal_id(&self) -> u64 {
        self.sh.opts.portal_id
    }
    pub fn stats(&self) -> HubSpotStats {
        self.sh.ctl().stats.clone()
    }
    pub fn reset_stats(&self) {
        self.sh.ctl().stats = HubSpotStats::default();
    }
    /// Change the rate limits; applies to the next request.
    pub fn set_limits(&self, l: HubSpotLimits) {
        self.sh.ctl().limiter.limits = l;
    }
    /// The limits in effect.
    pub fn limits(&self) -> HubSpotLimits {
        self.sh.ctl().limiter.limits.clone()
    }

    /// A contact by id.
    pub fn contact(&self, id: &str) -> Option<ContactView> {
        let st = self.sh.store();
        let idx = st.contacts.index_of(id)?;
        st.contact_view(idx, self.sh.opts.app_id)
    }
    /// Every contact id, ascending.
    pub fn contact_ids(&self) -> Vec<String> {
        self.sh
            .store()
            .contacts
            .recs
            .iter()
            .map(|r| r.id.to_string())
            .collect()
    }
    pub fn contact_count(&self) -> usize {
        self.sh.store().contacts.recs.len()
    }
    /// A company by id.
    pub fn company(&self, id: &str) -> Option<CompanyView> {
        let st = self.sh.store();
        let idx = st.companies.index_of(id)?;
        st.company_view(idx)
    }
    /// Every company id, ascending.
    pub fn company_ids(&self) -> Vec<String> {
        self.sh
            .store()
            .companies
            .recs
            .iter()
            .map(|r| r.id.to_string())
            .collect()
    }

    /// Edit a contact as a user in the HubSpot UI: sets the values (unknown and read-only
    /// properties are ignored, `""` clears), moves `lastmodifieddate` to now when something
    /// changed and fires `contact.propertyChange` (`changeSource: "CRM_UI"`) for subscribed
    /// properties whose value changed.
    pub fn human_edit(&self, id: &str, props: &[(&str, &str)]) {
        self.sh.human_edit(id, props);
    }

    /// Create a contact (as an API/import would: `changeSource: "API"`), optionally associated
    /// with a company id; fires `contact.creation`. Returns the new id.
    pub fn create_contact(&self, props: &[(&str, &str)], company: Option<&str>) -> String {
        let values = self.sh.ui_values(props);
        let company = company.and_then(|c| self.sh.store().companies.index_of(c).map(|i| i as u32));
        self.sh
            .create_contact(&values, company, Source::Api, now_ms())
            .to_string()
    }

    /// Set `lastmodifieddate` of these contacts to `ms` (no history, no webhook, search
    /// visibility unchanged).
    pub fn set_modified_at(&self, ids: &[String], ms: i64) {
        let mut st = self.sh.store();
        for id in ids {
            if let Some(i) = st.contacts.index_of(id) {
                st.contacts.recs[i].modified_ms = ms;
            }
        }
    }

    /// `lastmodifieddate = now` for these contacts (as a background HubSpot process would; no
    /// webhook). Counts as a change for [`HubSpotOptions::search_index_delay`].
    pub fn touch(&self, ids: &[String]) {
        let now = now_ms();
        let mut st = self.sh.store();
        for id in ids {
            if let Some(i) = st.contacts.index_of(id) {
                st.contacts.recs[i].modified_ms = now;
                st.contacts.recs[i].changed_wall_ms = now;
            }
        }
    }

    /// Make every access token issued so far expired (refresh tokens stay valid).
    pub fn expire_access_tokens(&self) {
        self.sh.auth().expire_all(now_ms());
    }

    /// Every access and refresh token issued and still known (tests check
    /// that none reaches a log).
    pub fn issued_tokens(&self) -> Vec<String> {
        let auth = self.sh.auth();
        auth.access
            .keys()
            .chain(auth.refresh.keys())
            .cloned()
            .collect()
    }

    /// Revoke every refresh token (access tokens stay valid until they expire).
    pub fn revoke_refresh_tokens(&self) {
        self.sh.auth().refresh.clear();
    }

    pub fn inject(&self, f: HubSpotFault) {
        http::inject(&self.sh, f);
    }

    pub fn clear_faults(&self) {
        let mut c = self.sh.ctl();
        c.faults.clear();
        c.fail.clear();
    }

    /// A contact property definition.
    pub fn property(&self, name: &str) -> Option<PropertyView> {
        self.sh.store().contacts.schema.get(name).map(|d| d.view())
    }

    /// A company property definition.
    pub fn company_property(&self, name: &str) -> Option<PropertyView> {
        self.sh.store().companies.schema.get(name).map(|d| d.view())
    }

    /// Whether a contact property group exists.
    pub fn property_group_exists(&self, name: &str) -> bool {
        self.sh.store().contacts.schema.group_exists(name)
    }

    /// Sign (v3) and POST `events` (sent as given, compact JSON) to the webhook URL, as HubSpot
    /// would, unless `how` says otherwise. Returns the receiver's HTTP status. Not recorded in
    /// [`HubSpotStats::webhook_deliveries`].
    pub async fn deliver(&self, events: &Value, how: Delivery) -> Result<u16, String> {
        let url = self
            .sh
            .opts
            .webhook_url
            .clone()
            .ok_or_else(|| "no webhook_url configured".to_string())?;
        let body = serde_json::to_vec(events).map_err(|e| e.to_string())?;
        let secret = how
            .secret
            .clone()
            .unwrap_or_else(|| self.sh.opts.effective_webhook_secret().to_string());
        let sent = if how.tamper_body {
            let mut t = Vec::with_capacity(body.len() + 1);
            match body.split_first() {
                Some((first, rest)) => {
                    t.push(*first);
                    t.push(b' ');
                    t.extend_from_slice(rest);
                }
                None => t.push(b' '),
            }
            t
        } else {
            body.clone()
        };
        webhooks::post(
            &self.sh.http,
            &url,
            &secret,
            &body,
            sent,
            how.timestamp_ms.unwrap_or_else(now_ms),
            how.omit_signature,
        )
        .await
    }

    /// Wait until every queued automatic webhook delivery has finished (delivered or given
    /// up after its retries).
    pub async fn flush_webhooks(&self) {
        let Some(h) = self.sh.hooks.get() else {
            return;
        };
        while h.pending.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Graceful shutdown (at most ~2 s); the webhook task is aborted.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(j) = self.join.take() {
            let abort = j.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), j)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.sh.abort_tasks();
    }
}

impl Drop for HubSpotSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(j) = self.join.take() {
            j.abort();
        }
        self.sh.abort_tasks();
    }
}
