//! Salesforce authentication, the I/O half of [`super::oauth`] and
//! [`super::jwt`] (reference §1):
//!
//! - [`connect`]: the web-server flow with PKCE and state against the
//!   configured login host, the browser coming back to a loopback callback
//!   (§1.2); or, for `jwt` installs, one JWT bearer grant (§1.5). The token
//!   response's `instance_url` (validated by [`oauth::parse_token_response`])
//!   is where every data call goes; the identity URL gives the org and user,
//!   stored with the connection (the org id is the row's `account`).
//! - [`Tokens`]: hands the client a [`Session`] (access token and its
//!   instance URL). Salesforce answers carry no `expires_in` (§1.3): a
//!   session is used until an API call answers 401 `INVALID_SESSION_ID`; the
//!   client then asks for a new one naming the stale token. One refresh at a
//!   time per connection (a tokio mutex held across it); the row holding the
//!   new session and any rotated refresh token is saved **before** the new
//!   access token is handed out (§1.4). JWT installs mint a new assertion
//!   instead of refreshing. `invalid_grant` (and any unknown token error on
//!   refresh, §1.3) marks the connection `reconnect_required`; nothing
//!   retries until `enrichd connect salesforce`.
//! - [`revoke`]: `POST /services/oauth2/revoke` with the refresh token (which
//!   revokes every access token issued from it, §1.7), then the stored tokens
//!   are dropped and the connection marked `reconnect_required`.
//!
//! At rest (`crate::crypto`, AAD `oauth:salesforce:<workspace>:<org>:<kind>`):
//! `sealed_access` holds the whole session — access token, `instance_url`,
//! user id, identity URL, login host, `issued_at` — as one sealed JSON
//! document, so the host a token is sent to is authenticated together with
//! the token (a row edited to point elsewhere fails to open);
//! `sealed_refresh` holds the refresh token (none for JWT installs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::crm::{SalesforceAuth, SalesforceSettings};
use crate::core::lead::WorkspaceId;
use crate::core::value::UnixMillis;
use crate::crm::pkce::{NoRandomness, Pkce};
use crate::crypto::TokenCipher;
use crate::secret::Secret;
use crate::store::Store;
use crate::store::crm::{ConnectionRow, ConnectionState};

use super::errors::{self, ErrorBody, ErrorClass};
use super::oauth::{self, Identity, OAuthError, TokenResponse};
use super::{CRM, SalesforceError, jwt};

/// The endpoint labels of the OAuth calls (secret-free).
pub const TOKEN_ENDPOINT: &str = "POST /services/oauth2/token";
pub const REVOKE_ENDPOINT: &str = "POST /services/oauth2/revoke";
/// Largest token-endpoint answer read.
const MAX_TOKEN_BODY: usize = 256 * 1024;

/// An access token and where to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub access: Secret,
    /// `scheme://host[:port]`, validated: every data call goes there.
    pub instance_url: String,
    /// `00D…`.
    pub org_id: String,
    /// `005…`: the integration user.
    pub user_id: String,
    pub issued_at: Option<UnixMillis>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("access", &self.access)
            .field("instance_url", &self.instance_url)
            .field("org_id", &self.org_id)
            .field("user_id", &self.user_id)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// What `sealed_access` holds, sealed as one JSON document.
#[derive(Serialize, Deserialize)]
struct Envelope {
    access_token: String,
    instance_url: String,
    user_id: String,
    identity_url: String,
    /// The login host that issued the tokens (refreshes go there, §1.4).
    login_host: String,
    issued_at: Option<i64>,
}

fn aad(ws: &WorkspaceId, org: &str, kind: &str) -> String {
    format!("oauth:{CRM}:{ws}:{org}:{kind}")
}

fn no_key() -> SalesforceError {
    SalesforceError::Auth {
        message: "no master key to encrypt or decrypt the Salesforce tokens".into(),
        hint: "create one with `enrichd keygen` and export it in the variable named by security.master_key_env (ENRICHD_MASTER_KEY)".into(),
    }
}

fn seal(
    cipher: &TokenCipher,
    ws: &WorkspaceId,
    org: &str,
    kind: &str,
    plain: &str,
) -> Result<String, SalesforceError> {
    cipher
        .seal(plain, &aad(ws, org, kind))
        .map_err(|e| SalesforceError::Auth {
            message: format!("cannot encrypt the Salesforce {kind} token: {e}"),
            hint: "check the master key (security.master_key_env)".into(),
        })
}

fn open(
    cipher: &TokenCipher,
    ws: &WorkspaceId,
    org: &str,
    kind: &str,
    sealed: &str,
) -> Result<Secret, SalesforceError> {
    cipher
        .open(sealed, &aad(ws, org, kind))
        .map_err(|e| SalesforceError::Auth {
            message: format!("cannot decrypt the stored Salesforce {kind} token: {e}"),
            hint: "use the master key the tokens were sealed with, or run `enrichd connect salesforce` again".into(),
        })
}

/// The stored session of a row, opened.
fn open_session(
    cipher: &TokenCipher,
    ws: &WorkspaceId,
    row: &ConnectionRow,
) -> Result<Option<(Session, Envelope)>, SalesforceError> {
    let Some(sealed) = row.sealed_access.as_deref() else {
        return Ok(None);
    };
    let plain = open(cipher, ws, &row.account, "access", sealed)?;
    let env: Envelope =
        serde_json::from_str(plain.expose()).map_err(|_| SalesforceError::Auth {
            message: "the stored Salesforce session is not readable".into(),
            hint: "run `enrichd connect salesforce` again".into(),
        })?;
    // Re-validated: only a validated host ever receives the token.
    let instance_url =
        oauth::validate_instance_url(&env.instance_url).map_err(|e| SalesforceError::Auth {
            message: format!("the stored session: {e}"),
            hint: "run `enrichd connect salesforce` again".into(),
        })?;
    let session = Session {
        access: Secret::new(env.access_token.clone()),
        instance_url,
        org_id: row.account.clone(),
        user_id: env.user_id.clone(),
        issued_at: env.issued_at,
    };
    Ok(Some((session, env)))
}

/// A new connection row from a token answer: the session sealed as one
/// document, the refresh token (a rotated one replaces the stored one; none
/// keeps it), the org id as `account`.
#[allow(clippy::too_many_arguments)]
fn sealed_row(
    cipher: &TokenCipher,
    ws: &WorkspaceId,
    settings: &SalesforceSettings,
    t: &TokenResponse,
    identity: &Identity,
    previous: Option<&ConnectionRow>,
    flow: &str,
    now: UnixMillis,
) -> Result<(ConnectionRow, Session), SalesforceError> {
    let org = identity.org_id.clone();
    let env = Envelope {
        access_token: t.access_token.expose().to_string(),
        instance_url: t.instance_url.clone(),
        user_id: identity.user_id.clone(),
        identity_url: identity.url.clone(),
        login_host: settings.login.base().to_string(),
        issued_at: t.issued_at,
    };
    let doc = serde_json::to_string(&env).map_err(|e| SalesforceError::Auth {
        message: format!("cannot encode the session: {e}"),
        hint: "this is a bug; please report it".into(),
    })?;
    let sealed_access = seal(cipher, ws, &org, "access", &doc)?;
    let same_org = previous.is_some_and(|p| p.account == org);
    let sealed_refresh = match &t.refresh_token {
        Some(r) => Some(seal(cipher, ws, &org, "refresh", r.expose())?),
        None if same_org && flow != "jwt" => previous.and_then(|p| p.sealed_refresh.clone()),
        None => None,
    };
    let scopes = if t.scopes.is_empty() {
        previous
            .filter(|_| same_org)
            .map(|p| p.scopes.clone())
            .unwrap_or_default()
    } else {
        t.scopes.clone()
    };
    let row = ConnectionRow {
        crm: CRM.into(),
        account: org.clone(),
        auth: flow.to_string(),
        sealed_access: Some(sealed_access),
        sealed_refresh,
        expires_at: None,
        scopes,
        state: ConnectionState::Connected,
        reason: String::new(),
        updated_at: now,
    };
    let session = Session {
        access: t.access_token.clone(),
        instance_url: t.instance_url.clone(),
        org_id: org,
        user_id: identity.user_id.clone(),
        issued_at: t.issued_at,
    };
    Ok((row, session))
}

/// A token-endpoint failure, by what the caller does.
#[derive(Debug)]
pub enum TokenFailure {
    /// The grant is gone (`invalid_grant`, inactive user/org, unknown
    /// errors): reconnect; never retried.
    Reconnect(String),
    /// Client id/secret, redirect URI, scopes: a configuration problem.
    Config { what: String, code: String },
    /// 429/5xx/`rate_limit_exceeded`/network: retried.
    Transient(String, Option<Duration>),
    /// An answer that is not a token response.
    Decode(String),
}

impl TokenFailure {
    fn what(&self) -> &str {
        match self {
            TokenFailure::Reconnect(w)
            | TokenFailure::Config { what: w, .. }
            | TokenFailure::Transient(w, _)
            | TokenFailure::Decode(w) => w,
        }
    }
}

/// The HTTP client for Salesforce calls: no redirects (an API or token
/// answer never legitimately redirects, and following one could carry a
/// token elsewhere), a timeout.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, SalesforceError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(32)
        .build()
        .map_err(|e| SalesforceError::Transport {
            endpoint: "client".into(),
            message: format!("cannot build the HTTP client: {e}"),
        })
}

/// reqwest errors print their URL: left out.
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "");
    }
    errors::redact(s.trim().trim_end_matches(['(', ')']).trim())
}

async fn read_limited(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut resp = resp;
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > max {
                    return Err(format!("answer larger than {max} bytes"));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(format!("answer cut off: {}", without_url(&e))),
        }
    }
}

/// One POST to the token endpoint (any grant). Messages carry the endpoint
/// label, status and Salesforce's `error`/`error_description` (redacted),
/// never the form or the answer's tokens.
pub async fn post_token(
    http: &reqwest::Client,
    token_url: &str,
    form: &[(&'static str, String)],
) -> Result<TokenResponse, TokenFailure> {
    let resp = http.post(token_url).form(form).send().await.map_err(|e| {
        TokenFailure::Transient(format!("{TOKEN_ENDPOINT}: {}", without_url(&e)), None)
    })?;
    let status = resp.status().as_u16();
    crate::metrics::metrics().api_request("salesforce", TOKEN_ENDPOINT, Some(status));
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = read_limited(resp, MAX_TOKEN_BODY)
        .await
        .map_err(|m| TokenFailure::Transient(format!("{TOKEN_ENDPOINT}: {m}"), None))?;
    if status == 200 {
        return oauth::parse_token_response(&body)
            .map_err(|e| TokenFailure::Decode(format!("{TOKEN_ENDPOINT} answered 200: {e}")));
    }
    let parsed = errors::parse_error_body(&body);
    let class = match &parsed {
        ErrorBody::OAuth { error, .. } => errors::classify_oauth(status, error),
        _ if status == 429 || status >= 500 => ErrorClass::Transient,
        // Not the token endpoint's shape (a proxy page, a 404): nothing a
        // retry or a reconnect fixes by itself.
        _ => ErrorClass::Config,
    };
    let code = parsed.code().unwrap_or("").to_string();
    let message = parsed.message();
    let what = format!(
        "{TOKEN_ENDPOINT} answered {status}{}{}",
        if code.is_empty() {
            String::new()
        } else {
            format!(" {code}")
        },
        if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        }
    );
    Err(match class {
        ErrorClass::Transient => TokenFailure::Transient(what, retry_after),
        ErrorClass::ReconnectRequired => TokenFailure::Reconnect(what),
        _ => TokenFailure::Config { what, code },
    })
}

/// [`post_token`], retrying transient failures with exponential back-off
/// (honouring `Retry-After`, at most a minute per wait).
pub async fn post_token_retrying(
    http: &reqwest::Client,
    token_url: &str,
    form: &[(&'static str, String)],
    max_retries: u32,
) -> Result<TokenResponse, TokenFailure> {
    use backon::BackoffBuilder as _;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(max_retries as usize)
        .with_jitter()
        .build();
    loop {
        match post_token(http, token_url, form).await {
            Err(TokenFailure::Transient(what, after)) => match delays.next() {
                Some(d) => {
                    let wait = after.unwrap_or(d).min(Duration::from_secs(60));
                    tracing::warn!(wait_ms = wait.as_millis() as u64, "{what}; retrying");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(TokenFailure::Transient(what, after)),
            },
            other => return other,
        }
    }
}

fn config_failure(what: &str, code: &str) -> SalesforceError {
    SalesforceError::Auth {
        message: what.to_string(),
        hint: errors::hint(ErrorClass::Config, Some(code)).to_string(),
    }
}

/// Hands out a valid session for one workspace's Salesforce connection.
pub struct Tokens {
    ws: WorkspaceId,
    settings: Arc<SalesforceSettings>,
    store: Arc<dyn Store>,
    cipher: Option<Arc<TokenCipher>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// Held across a refresh: one refresh at a time per connection.
    cached: Mutex<Option<Session>>,
    refreshes: AtomicU64,
}

impl Tokens {
    pub fn new(
        ws: WorkspaceId,
        settings: Arc<SalesforceSettings>,
        store: Arc<dyn Store>,
        cipher: Option<Arc<TokenCipher>>,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Tokens {
        Tokens {
            ws,
            settings,
            store,
            cipher,
            clock,
            http,
            cached: Mutex::new(None),
            refreshes: AtomicU64::new(0),
        }
    }

    pub fn workspace(&self) -> &WorkspaceId {
        &self.ws
    }

    /// Sessions obtained by this process after connect (refresh grants, or
    /// new JWT assertions).
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// A session to call with: the cached one, the stored one, or a new one.
    /// `stale` names an access token Salesforce refused (401
    /// `INVALID_SESSION_ID`): it is never handed out again; when another
    /// caller already replaced it, its replacement is returned without a
    /// second refresh.
    pub async fn session(&self, stale: Option<&Secret>) -> Result<Session, SalesforceError> {
        let mut cached = self.cached.lock().await;
        if let Some(s) = cached.as_ref()
            && stale != Some(&s.access)
        {
            return Ok(s.clone());
        }
        let row = self.store.connection(&self.ws, CRM).await?.ok_or_else(|| {
            SalesforceError::NotConnected {
                workspace: self.ws.clone(),
            }
        })?;
        if row.state == ConnectionState::ReconnectRequired {
            return Err(SalesforceError::ReconnectRequired {
                workspace: self.ws.clone(),
                reason: row.reason,
            });
        }
        let cipher = self.cipher.as_deref().ok_or_else(no_key)?;
        let stored = open_session(cipher, &self.ws, &row)?;
        if let Some((s, _)) = &stored
            && stale != Some(&s.access)
        {
            // Another process (or an earlier run) stored a newer session.
            *cached = Some(s.clone());
            return Ok(s.clone());
        }
        match self
            .renew(&row, stored.as_ref().map(|(_, e)| e), cipher)
            .await
        {
            Ok(fresh) => {
                *cached = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => {
                *cached = None;
                Err(e)
            }
        }
    }

    /// A new session: a refresh grant, or a new JWT assertion. The row is
    /// saved before the session is returned.
    async fn renew(
        &self,
        row: &ConnectionRow,
        stored: Option<&Envelope>,
        cipher: &TokenCipher,
    ) -> Result<Session, SalesforceError> {
        let s = &*self.settings;
        if let Some(env) = stored
            && env.login_host != s.login.base()
        {
            return Err(SalesforceError::Auth {
                message: format!(
                    "the connection was made through {} but login_url is now {}; a refresh token only works at the host that issued it",
                    env.login_host,
                    s.login.base()
                ),
                hint: "run `enrichd connect salesforce` again (or restore login_url)".into(),
            });
        }
        let form = match &s.auth {
            SalesforceAuth::WebServer {
                client_id,
                client_secret,
                ..
            } => {
                let sealed = row.sealed_refresh.as_deref().ok_or_else(|| {
                    SalesforceError::ReconnectRequired {
                        workspace: self.ws.clone(),
                        reason: "the session expired and no refresh token is stored (the connected app did not grant the refresh_token scope)".into(),
                    }
                })?;
                let refresh = open(cipher, &self.ws, &row.account, "refresh", sealed)?;
                oauth::refresh_form(&refresh, client_id, client_secret.as_ref())
            }
            SalesforceAuth::Jwt { .. } => jwt_form(s, self.clock.now())?,
        };
        let answer =
            post_token_retrying(&self.http, &s.login.token_url(), &form, s.max_retries).await;
        let now = self.clock.now();
        match answer {
            Ok(t) => {
                let identity = match (&t.identity, stored) {
                    (Some(i), _) => i.clone(),
                    (None, Some(env)) => Identity {
                        org_id: row.account.clone(),
                        user_id: env.user_id.clone(),
                        url: env.identity_url.clone(),
                    },
                    (None, None) => {
                        return Err(SalesforceError::Decode {
                            endpoint: TOKEN_ENDPOINT.into(),
                            message: "the answer names no org (`id`) and none is stored".into(),
                        });
                    }
                };
                if !super::same_id(&identity.org_id, &row.account) {
                    return Err(SalesforceError::Auth {
                        message: format!(
                            "the new session belongs to org {}, but the workspace is connected to org {}",
                            identity.org_id, row.account
                        ),
                        hint: "run `enrichd connect salesforce` to connect this workspace to the org you mean".into(),
                    });
                }
                let identity = Identity {
                    org_id: row.account.clone(),
                    ..identity
                };
                let (new_row, session) = sealed_row(
                    cipher,
                    &self.ws,
                    s,
                    &t,
                    &identity,
                    Some(row),
                    s.auth.flow(),
                    now,
                )?;
                // Persisted before the new access token is used: with
                // rotation the old refresh token is already dead.
                self.store.save_connection(&self.ws, &new_row).await?;
                self.refreshes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    workspace = %self.ws,
                    flow = s.auth.flow(),
                    rotated = t.refresh_token.is_some(),
                    "Salesforce session renewed"
                );
                Ok(session)
            }
            Err(TokenFailure::Reconnect(what)) => {
                let reason = match &s.auth {
                    SalesforceAuth::Jwt { .. } => format!(
                        "Salesforce refused the JWT assertion ({what}); check that the user is pre-authorized for the connected app and its certificate matches the key"
                    ),
                    SalesforceAuth::WebServer { .. } => format!(
                        "Salesforce refused the refresh token ({what}); it was revoked, expired under the connected app's refresh-token policy, or the user or org is inactive"
                    ),
                };
                self.store
                    .set_connection_state(
                        &self.ws,
                        CRM,
                        ConnectionState::ReconnectRequired,
                        &reason,
                        now,
                    )
                    .await?;
                tracing::error!(workspace = %self.ws, "Salesforce connection needs reconnecting");
                Err(SalesforceError::ReconnectRequired {
                    workspace: self.ws.clone(),
                    reason,
                })
            }
            Err(TokenFailure::Config { what, code }) => Err(config_failure(&what, &code)),
            Err(f @ (TokenFailure::Transient(..) | TokenFailure::Decode(_))) => {
                Err(SalesforceError::Transport {
                    endpoint: TOKEN_ENDPOINT.into(),
                    message: f.what().to_string(),
                })
            }
        }
    }
}

/// The token request of the JWT bearer flow (§1.5), signed now.
fn jwt_form(
    s: &SalesforceSettings,
    now: UnixMillis,
) -> Result<Vec<(&'static str, String)>, SalesforceError> {
    let SalesforceAuth::Jwt {
        client_id,
        username,
        signer,
        ..
    } = &s.auth
    else {
        return Err(SalesforceError::Auth {
            message: "not a JWT install".into(),
            hint: "set `jwt` in [workspaces.crm]".into(),
        });
    };
    let claims = jwt::Claims::new(client_id, username, &s.login.jwt_audience(), now);
    let assertion = signer
        .assertion(&claims)
        .map_err(|e| SalesforceError::Auth {
            message: e.to_string(),
            hint: "check jwt.key_file in [workspaces.crm]".into(),
        })?;
    Ok(jwt::token_form(&assertion))
}

/// The loopback end of the web-server flow: waits for the browser to come
/// back with `code` and `state` (checked in constant time by
/// [`oauth::parse_callback`]).
pub struct Loopback {
    pub redirect_uri: String,
    rx: tokio::sync::oneshot::Receiver<Result<String, OAuthError>>,
    server: tokio::task::JoinHandle<()>,
}

impl Loopback {
    /// Listens where `redirect_uri` points (port 0 picks a free port and
    /// rewrites the URI).
    pub async fn bind(redirect_uri: &str, state: String) -> Result<Loopback, SalesforceError> {
        let bad = |m: String| {
            SalesforceError::Auth {
            message: m,
            hint: "redirect_uri must be a loopback URL such as http://localhost:8788/oauth/callback, equal to the connected app's Callback URL".into(),
        }
        };
        let mut u = url::Url::parse(redirect_uri)
            .map_err(|e| bad(format!("redirect_uri `{redirect_uri}`: {e}")))?;
        let host = u.host_str().unwrap_or("localhost").to_string();
        let port = u.port_or_known_default().unwrap_or(80);
        let bind_host = match host.as_str() {
            "localhost" => "127.0.0.1".to_string(),
            h => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        };
        let listener = tokio::net::TcpListener::bind((bind_host.as_str(), port))
            .await
            .map_err(|e| {
                bad(format!(
                    "cannot listen on {bind_host}:{port} for the OAuth callback: {e}"
                ))
            })?;
        let actual = listener
            .local_addr()
            .map_err(|e| bad(format!("loopback address: {e}")))?;
        if port == 0 {
            let _ = u.set_port(Some(actual.port()));
        }
        let path = u.path().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
        let app = axum::Router::new().route(
            &path,
            axum::routing::get(move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
                let tx = tx.clone();
                let state = state.clone();
                async move {
                    let result = oauth::parse_callback(q.as_deref().unwrap_or(""), &state);
                    if matches!(result, Err(OAuthError::StateMismatch)) {
                        // Not our request (CSRF or a stale tab): keep waiting.
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            axum::response::Html(
                                "enrichd: this sign-in link is not the one enrichd started (state mismatch). Run `enrichd connect salesforce` again."
                                    .to_string(),
                            ),
                        );
                    }
                    let ok = result.is_ok();
                    if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        let _ = tx.send(result);
                    }
                    let page = if ok {
                        "enrichd is connected to Salesforce. You can close this window."
                    } else {
                        "enrichd could not connect to Salesforce; see the terminal for why."
                    };
                    (
                        axum::http::StatusCode::OK,
                        axum::response::Html(page.to_string()),
                    )
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Loopback {
            redirect_uri: u.to_string(),
            rx,
            server,
        })
    }

    /// The authorization code, once the browser came back.
    pub async fn code(self, timeout: Duration) -> Result<String, SalesforceError> {
        let r = tokio::time::timeout(timeout, self.rx).await;
        self.server.abort();
        match r {
            Ok(Ok(Ok(code))) => Ok(code),
            Ok(Ok(Err(e))) => Err(SalesforceError::Auth {
                message: e.to_string(),
                hint: "approve the connected app in the browser, as a user allowed to use it"
                    .into(),
            }),
            Ok(Err(_)) | Err(_) => Err(SalesforceError::Auth {
                message: format!("no answer from the browser within {} s", timeout.as_secs()),
                hint: "open the printed URL in a browser and approve the connected app".into(),
            }),
        }
    }
}

/// What `enrichd connect salesforce` established.
#[derive(Debug, Clone)]
pub struct Connected {
    pub org_id: String,
    pub user_id: String,
    pub instance_url: String,
    pub scopes: Vec<String>,
    /// `web_server` or `jwt`.
    pub flow: &'static str,
    /// A refresh token was issued (web-server flow).
    pub refresh_token: bool,
}

/// What the connect flow works with.
pub struct ConnectContext<'a> {
    pub ws: &'a WorkspaceId,
    pub settings: &'a SalesforceSettings,
    pub store: &'a Arc<dyn Store>,
    /// Required: tokens are sealed with it.
    pub cipher: Option<&'a TokenCipher>,
    pub clock: &'a dyn Clock,
    pub http: &'a reqwest::Client,
    /// How long the browser has to come back.
    pub wait: Duration,
}

fn token_error(f: TokenFailure, what_grant: &str) -> SalesforceError {
    match f {
        TokenFailure::Config { what, code } => config_failure(&what, &code),
        TokenFailure::Reconnect(what) => SalesforceError::Auth {
            message: format!("Salesforce refused the {what_grant}: {what}"),
            hint: match what_grant {
                "JWT assertion" => "the user in jwt.username must be pre-authorized for the connected app (admin-approved, with a profile or permission set), the app must hold the certificate of jwt.key_file, and login_url must match the org (login vs test)",
                _ => "run `enrichd connect salesforce` again (authorization codes are single-use and short-lived)",
            }
            .into(),
        },
        TokenFailure::Transient(what, _) | TokenFailure::Decode(what) => {
            SalesforceError::Transport {
                endpoint: TOKEN_ENDPOINT.into(),
                message: what,
            }
        }
    }
}

/// The whole connect flow: the web-server flow (`browser` is handed the
/// authorize URL; the CLI prints it and opens a browser, tests follow the
/// redirect) or, for a `jwt` install, one JWT bearer grant (`browser` is
/// not called). The connection is stored sealed; a previous one (another
/// org included) is replaced.
pub async fn connect<F, Fut>(
    cx: &ConnectContext<'_>,
    browser: F,
) -> Result<Connected, SalesforceError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ConnectContext {
        ws,
        settings: s,
        store,
        cipher,
        clock,
        http,
        wait,
    } = *cx;
    let cipher = cipher.ok_or_else(no_key)?;
    let t = match &s.auth {
        SalesforceAuth::Jwt { .. } => {
            let form = jwt_form(s, clock.now())?;
            post_token_retrying(http, &s.login.token_url(), &form, s.max_retries)
                .await
                .map_err(|f| token_error(f, "JWT assertion"))?
        }
        SalesforceAuth::WebServer {
            client_id,
            client_secret,
            redirect_uri,
            scopes,
        } => {
            let pkce = Pkce::new().map_err(|e| SalesforceError::Auth {
                message: e.to_string(),
                hint: NoRandomness::HINT.into(),
            })?;
            let loopback = Loopback::bind(redirect_uri, pkce.state.clone()).await?;
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let url =
                s.login
                    .authorize_url(client_id, &loopback.redirect_uri, &scopes, &pkce, None);
            let redirect = loopback.redirect_uri.clone();
            browser(url).await;
            let code = loopback.code(wait).await?;
            let form = oauth::authorization_code_form(
                &code,
                client_id,
                client_secret.as_ref(),
                &redirect,
                &pkce.verifier,
            );
            let t = post_token_retrying(http, &s.login.token_url(), &form, s.max_retries)
                .await
                .map_err(|f| token_error(f, "authorization code"))?;
            if let Some(secret) = client_secret
                && t.signature.is_some()
                && !oauth::verify_signature(&t, secret)
            {
                return Err(SalesforceError::Auth {
                    message: "the token response's signature does not match the consumer secret (id + issued_at)".into(),
                    hint: "check client_secret_env: it must be the connected app's consumer secret; if it is, the answer did not come from Salesforce".into(),
                });
            }
            t
        }
    };
    let identity = t.identity.clone().ok_or_else(|| SalesforceError::Decode {
        endpoint: TOKEN_ENDPOINT.into(),
        message: "the token response has no `id` (identity URL): the org cannot be recorded".into(),
    })?;
    // A new grant replaces whatever was stored: nothing is carried over.
    let (row, session) = sealed_row(
        cipher,
        ws,
        s,
        &t,
        &identity,
        None,
        s.auth.flow(),
        clock.now(),
    )?;
    let refresh_token = row.sealed_refresh.is_some();
    store.save_connection(ws, &row).await?;
    Ok(Connected {
        org_id: session.org_id,
        user_id: session.user_id,
        instance_url: session.instance_url,
        scopes: row.scopes,
        flow: s.auth.flow(),
        refresh_token,
    })
}

/// What `enrichd connect salesforce --revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub org_id: String,
    /// `refresh` or `access`: the token sent to the revoke endpoint.
    pub token: &'static str,
    /// Salesforce already considered the token invalid.
    pub already_invalid: bool,
}

/// Revokes the stored grant (§1.7): the refresh token when there is one
/// (every access token issued from it goes with it), else the access token.
/// Then the tokens are dropped from the store and the connection marked
/// `reconnect_required`.
pub async fn revoke(cx: &ConnectContext<'_>) -> Result<Revoked, SalesforceError> {
    let ConnectContext {
        ws,
        settings: s,
        store,
        cipher,
        clock,
        http,
        ..
    } = *cx;
    let row = store
        .connection(ws, CRM)
        .await?
        .ok_or_else(|| SalesforceError::NotConnected {
            workspace: ws.clone(),
        })?;
    let cipher = cipher.ok_or_else(no_key)?;
    let (token, kind) = match (&row.sealed_refresh, &row.sealed_access) {
        (Some(r), _) => (open(cipher, ws, &row.account, "refresh", r)?, "refresh"),
        (None, Some(_)) => match open_session(cipher, ws, &row)? {
            Some((session, _)) => (session.access, "access"),
            None => {
                return Err(SalesforceError::NotConnected {
                    workspace: ws.clone(),
                });
            }
        },
        (None, None) => {
            return Err(SalesforceError::Auth {
                message: "no token is stored for this workspace (already revoked?)".into(),
                hint: "nothing to revoke; run `enrichd connect salesforce` to connect again".into(),
            });
        }
    };
    let form = oauth::revoke_form(&token);
    let resp = http
        .post(s.login.revoke_url())
        .form(&form)
        .send()
        .await
        .map_err(|e| SalesforceError::Transport {
            endpoint: REVOKE_ENDPOINT.into(),
            message: without_url(&e),
        })?;
    let status = resp.status().as_u16();
    crate::metrics::metrics().api_request("salesforce", REVOKE_ENDPOINT, Some(status));
    let body = read_limited(resp, MAX_TOKEN_BODY).await.unwrap_or_default();
    let already_invalid = match status {
        200..=299 => false,
        400 => match errors::parse_error_body(&body) {
            ErrorBody::OAuth { error, .. }
                if error == "invalid_token" || error == "unsupported_token_type" =>
            {
                true
            }
            other => {
                return Err(SalesforceError::Transport {
                    endpoint: REVOKE_ENDPOINT.into(),
                    message: format!(
                        "answered 400 {} {}",
                        other.code().unwrap_or(""),
                        other.message()
                    ),
                });
            }
        },
        _ => {
            let b = errors::parse_error_body(&body);
            return Err(SalesforceError::Transport {
                endpoint: REVOKE_ENDPOINT.into(),
                message: format!(
                    "answered {status} {} {}; the grant may still be valid: revoke it in Setup → Connected Apps OAuth Usage",
                    b.code().unwrap_or(""),
                    b.message()
                ),
            });
        }
    };
    let now = clock.now();
    let cleared = ConnectionRow {
        sealed_access: None,
        sealed_refresh: None,
        state: ConnectionState::ReconnectRequired,
        reason: "the grant was revoked with `enrichd connect salesforce --revoke`".into(),
        updated_at: now,
        ..row.clone()
    };
    store.save_connection(ws, &cleared).await?;
    Ok(Revoked {
        org_id: row.account,
        token: kind,
        already_invalid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_binds_workspace_org_and_kind() {
        let ws = WorkspaceId("acme".into());
        assert_eq!(
            aad(&ws, "00Dxx0000001gPLEAY", "refresh"),
            "oauth:salesforce:acme:00Dxx0000001gPLEAY:refresh"
        );
    }

    #[test]
    fn a_session_never_prints_its_token() {
        let s = Session {
            access: Secret::new("00Dxx0000001gPL!AQ0secret"),
            instance_url: "https://x.my.salesforce.com".into(),
            org_id: "00Dxx0000001gPLEAY".into(),
            user_id: "005xx000001SwiUAAS".into(),
            issued_at: None,
        };
        let d = format!("{s:?}");
        assert!(!d.contains("AQ0secret"), "{d}");
    }
}
