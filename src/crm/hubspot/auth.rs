//! HubSpot authentication (reference/hubspot.md §1): the authorization-code
//! flow with state and PKCE and a loopback callback, the token endpoint
//! (`/oauth/2026-03/token`, form body; v1 is deprecated), and the
//! [`Tokens`] a client asks for an access token before every call.
//!
//! Tokens are sealed at rest (`crate::crypto`), refreshed `refresh_margin`
//! before `expires_in` runs out with one refresh at a time per portal, and
//! the refresh token HubSpot returns is always persisted before the new
//! access token is used. `invalid_grant` / `BAD_REFRESH_TOKEN` puts the
//! connection in "reconnect required" instead of retrying.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::crm::{HubSpotAuth, HubSpotSettings};
use crate::core::lead::WorkspaceId;
use crate::core::value::UnixMillis;
use crate::crypto::TokenCipher;
use crate::secret::Secret;
use crate::store::Store;
use crate::store::crm::{ConnectionRow, ConnectionState};

use super::HubSpotError;

pub const CRM: &str = "hubspot";

pub use crate::crm::pkce::Pkce;

/// The URL the user's browser opens to approve enrichd.
pub fn authorize_url(
    s: &HubSpotSettings,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    optional: &[String],
    pkce: &Pkce,
) -> String {
    let mut u = match url::Url::parse(&format!("{}/oauth/authorize", s.auth_url)) {
        Ok(u) => u,
        // auth_url was validated as http(s) at load.
        Err(_) => return format!("{}/oauth/authorize", s.auth_url),
    };
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes.join(" "));
        if !optional.is_empty() {
            q.append_pair("optional_scope", &optional.join(" "));
        }
        q.append_pair("state", &pkce.state)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
    }
    // HubSpot documents scopes separated by %20 (not `+`).
    u.to_string().replace('+', "%20")
}

/// What the token endpoint answers (both grants).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    pub expires_in: i64,
    #[serde(default)]
    pub hub_id: Option<u64>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// A token-endpoint failure, by what the caller should do.
#[derive(Debug)]
pub enum TokenFailure {
    /// invalid_grant / BAD_REFRESH_TOKEN / BAD_AUTH_CODE: never retried.
    InvalidGrant(String),
    /// Wrong client id or secret: a configuration problem.
    InvalidClient(String),
    /// 429 or 5xx or a network failure: retried.
    Transient(String, Option<Duration>),
    Other(String),
}

/// One POST to the token endpoint.
pub async fn post_token(
    http: &reqwest::Client,
    token_url: &str,
    form: &[(&str, &str)],
) -> Result<TokenResponse, TokenFailure> {
    let resp = http
        .post(token_url)
        .form(form)
        .send()
        .await
        .map_err(|e| TokenFailure::Transient(format!("POST {token_url}: {e}"), None))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp
        .bytes()
        .await
        .map_err(|e| TokenFailure::Transient(format!("POST {token_url}: {e}"), None))?;
    if status == 200 {
        return serde_json::from_slice(&body).map_err(|e| {
            TokenFailure::Other(format!(
                "POST {token_url} answered 200 with an unexpected body: {e}"
            ))
        });
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let (error, status_word) = (text("error"), text("status"));
    let message = [text("error_description"), text("message")]
        .into_iter()
        .find(|m| !m.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    let what = format!("POST {token_url} → {status} {error} {status_word}: {message}");
    Err(match status {
        429 | 500..=599 => TokenFailure::Transient(what, retry_after),
        _ if error == "invalid_grant"
            || matches!(status_word.as_str(), "BAD_REFRESH_TOKEN" | "BAD_AUTH_CODE") =>
        {
            TokenFailure::InvalidGrant(what)
        }
        _ if error == "invalid_client" || status_word == "BAD_CLIENT_ID" => {
            TokenFailure::InvalidClient(what)
        }
        _ => TokenFailure::Other(what),
    })
}

/// Retries transient token failures (HubSpot rate-limits the token endpoint
/// itself), honouring `Retry-After`.
pub async fn post_token_retrying(
    http: &reqwest::Client,
    token_url: &str,
    form: &[(&str, &str)],
    max_retries: u32,
) -> Result<TokenResponse, TokenFailure> {
    let mut attempt = 0u32;
    loop {
        match post_token(http, token_url, form).await {
            Err(TokenFailure::Transient(what, after)) if attempt < max_retries => {
                let backoff = Duration::from_millis(250 * 2u64.pow(attempt.min(6)));
                let wait = after.unwrap_or(backoff).min(Duration::from_secs(60));
                tracing::warn!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "{what}; retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn aad(ws: &WorkspaceId, account: &str, kind: &str) -> String {
    format!("oauth:{CRM}:{ws}:{account}:{kind}")
}

/// Opens a sealed token of the row (`kind`: access or refresh).
fn open_token(
    cipher: &TokenCipher,
    ws: &WorkspaceId,
    account: &str,
    sealed: &str,
    kind: &str,
) -> Result<Secret, HubSpotError> {
    cipher
        .open(sealed, &aad(ws, account, kind))
        .map_err(|e| HubSpotError::Auth {
            message: format!("cannot decrypt the stored HubSpot {kind} token: {e}"),
            hint: "use the master key the tokens were sealed with, or run `enrichd connect hubspot` again".into(),
        })
}

/// Seals a token response into a connection row (the returned refresh token
/// replaces the stored one; when HubSpot returns none, the old one stays).
pub fn sealed_row(
    cipher: &TokenCipher,
    ws: &WorkspaceId,
    t: &TokenResponse,
    previous: Option<&ConnectionRow>,
    now: UnixMillis,
) -> Result<ConnectionRow, HubSpotError> {
    let account = t
        .hub_id
        .map(|h| h.to_string())
        .or_else(|| previous.map(|p| p.account.clone()))
        .unwrap_or_default();
    let seal = |plain: &str, kind: &str| {
        cipher
            .seal(plain, &aad(ws, &account, kind))
            .map_err(|e| HubSpotError::Auth {
                message: format!("cannot encrypt the HubSpot token: {e}"),
                hint: "check the master key (security.master_key_env)".into(),
            })
    };
    let sealed_refresh = match &t.refresh_token {
        Some(r) => Some(seal(r, "refresh")?),
        None => previous.and_then(|p| p.sealed_refresh.clone()),
    };
    Ok(ConnectionRow {
        crm: CRM.into(),
        account: account.clone(),
        auth: "oauth".into(),
        sealed_access: Some(seal(&t.access_token, "access")?),
        sealed_refresh,
        expires_at: Some(now + t.expires_in.max(0) * 1000),
        scopes: t
            .scopes
            .clone()
            .or_else(|| previous.map(|p| p.scopes.clone()))
            .unwrap_or_default(),
        state: ConnectionState::Connected,
        reason: String::new(),
        updated_at: now,
    })
}

struct Cached {
    access: Secret,
    expires_at: UnixMillis,
}

/// Hands out a valid access token for one workspace's HubSpot connection.
pub struct Tokens {
    ws: WorkspaceId,
    settings: Arc<HubSpotSettings>,
    store: Arc<dyn Store>,
    cipher: Option<Arc<TokenCipher>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// Held across a refresh: one refresh at a time per portal.
    cached: Mutex<Option<Cached>>,
    refreshes: std::sync::atomic::AtomicU64,
}

impl Tokens {
    pub fn new(
        ws: WorkspaceId,
        settings: Arc<HubSpotSettings>,
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
            refreshes: Default::default(),
        }
    }

    /// Refreshes done by this process.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cipher(&self) -> Result<&TokenCipher, HubSpotError> {
        self.cipher.as_deref().ok_or_else(|| HubSpotError::Auth {
            message: "no master key to decrypt the stored HubSpot tokens".into(),
            hint: "set the environment variable named by security.master_key_env (create a key with `enrichd keygen`)".into(),
        })
    }

    /// A valid access token: the cached one, the stored one, or a fresh one.
    /// `stale` names a token the API refused as expired: it is not handed
    /// out again.
    pub async fn access(&self, stale: Option<&Secret>) -> Result<Secret, HubSpotError> {
        if let HubSpotAuth::PrivateApp { token } = &self.settings.auth {
            return Ok(token.clone());
        }
        let margin = self.settings.refresh_margin.as_millis() as i64;
        let mut cached = self.cached.lock().await;
        let now = self.clock.now();
        if let Some(c) = cached.as_ref()
            && c.expires_at - margin > now
            && stale != Some(&c.access)
        {
            return Ok(c.access.clone());
        }
        let row = self
            .store
            .connection(&self.ws, CRM)
            .await
            .map_err(HubSpotError::Store)?
            .ok_or_else(|| HubSpotError::NotConnected {
                workspace: self.ws.clone(),
            })?;
        if row.state == ConnectionState::ReconnectRequired {
            return Err(HubSpotError::ReconnectRequired {
                workspace: self.ws.clone(),
                reason: row.reason,
            });
        }
        let cipher = self.cipher()?;
        if let (Some(sealed), Some(exp)) = (&row.sealed_access, row.expires_at)
            && exp - margin > now
        {
            let access = open_token(cipher, &self.ws, &row.account, sealed, "access")?;
            if stale != Some(&access) {
                *cached = Some(Cached {
                    access: access.clone(),
                    expires_at: exp,
                });
                return Ok(access);
            }
        }
        let fresh = self.refresh(&row, cipher).await?;
        let access = fresh.access.clone();
        *cached = Some(fresh);
        Ok(access)
    }

    async fn refresh(
        &self,
        row: &ConnectionRow,
        cipher: &TokenCipher,
    ) -> Result<Cached, HubSpotError> {
        let HubSpotAuth::OAuth {
            client_id,
            client_secret,
            redirect_uri,
            ..
        } = &self.settings.auth
        else {
            return Err(HubSpotError::Auth {
                message: "a private-app connection has no refresh token".into(),
                hint: "check [workspaces.crm]".into(),
            });
        };
        let sealed =
            row.sealed_refresh
                .as_deref()
                .ok_or_else(|| HubSpotError::ReconnectRequired {
                    workspace: self.ws.clone(),
                    reason: "no refresh token is stored".into(),
                })?;
        let refresh = open_token(cipher, &self.ws, &row.account, sealed, "refresh")?;
        let url = self.settings.token_url();
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.expose()),
            ("redirect_uri", redirect_uri.as_str()),
        ];
        let answer = post_token_retrying(&self.http, &url, &form, self.settings.max_retries).await;
        let now = self.clock.now();
        match answer {
            Ok(t) => {
                self.refreshes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let new_row = sealed_row(cipher, &self.ws, &t, Some(row), now)?;
                // Persisted before the new access token is used.
                self.store
                    .save_connection(&self.ws, &new_row)
                    .await
                    .map_err(HubSpotError::Store)?;
                tracing::info!(workspace = %self.ws, "HubSpot access token refreshed");
                Ok(Cached {
                    access: Secret::new(t.access_token),
                    expires_at: now + t.expires_in.max(0) * 1000,
                })
            }
            Err(TokenFailure::InvalidGrant(what)) => {
                let reason = format!(
                    "HubSpot refused the refresh token ({what}); the app was uninstalled or the grant revoked"
                );
                self.store
                    .set_connection_state(
                        &self.ws,
                        CRM,
                        ConnectionState::ReconnectRequired,
                        &reason,
                        now,
                    )
                    .await
                    .map_err(HubSpotError::Store)?;
                tracing::error!(workspace = %self.ws, "HubSpot connection needs reconnecting");
                Err(HubSpotError::ReconnectRequired {
                    workspace: self.ws.clone(),
                    reason,
                })
            }
            Err(TokenFailure::InvalidClient(what)) => Err(HubSpotError::Auth {
                message: format!("HubSpot refused the app's client id or secret: {what}"),
                hint: "check client_id_env and client_secret_env in [workspaces.crm]".into(),
            }),
            Err(TokenFailure::Transient(what, _)) | Err(TokenFailure::Other(what)) => {
                Err(HubSpotError::Transport {
                    endpoint: "POST /oauth/2026-03/token".into(),
                    message: what,
                })
            }
        }
    }
}

/// The loopback end of the authorization-code flow: waits for the browser
/// to come back with `code` and `state`.
pub struct Loopback {
    pub redirect_uri: String,
    rx: tokio::sync::oneshot::Receiver<Result<String, String>>,
    server: tokio::task::JoinHandle<()>,
}

impl Loopback {
    /// Listens where `redirect_uri` points (its port 0 picks a free port and
    /// rewrites the URI).
    pub async fn bind(redirect_uri: &str, state: String) -> Result<Loopback, HubSpotError> {
        let bad = |m: String| HubSpotError::Auth {
            message: m,
            hint:
                "redirect_uri must be a loopback URL such as http://localhost:8788/oauth/callback"
                    .into(),
        };
        let mut u = url::Url::parse(redirect_uri)
            .map_err(|e| bad(format!("redirect_uri `{redirect_uri}`: {e}")))?;
        let host = u.host_str().unwrap_or("localhost").to_string();
        let port = u.port_or_known_default().unwrap_or(80);
        let bind_host = if host == "localhost" {
            "127.0.0.1"
        } else {
            host.as_str()
        };
        let listener = tokio::net::TcpListener::bind((bind_host, port))
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
            axum::routing::get(
                move |axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| {
                    let tx = tx.clone();
                    let state = state.clone();
                    async move {
                        let result = if q.get("state") != Some(&state) {
                            // Not our request (CSRF or a stale tab): keep waiting.
                            return (
                                axum::http::StatusCode::BAD_REQUEST,
                                axum::response::Html("enrichd: this sign-in link is not the one enrichd started (state mismatch). Run `enrichd connect hubspot` again.".to_string()),
                            );
                        } else if let Some(err) = q.get("error") {
                            Err(format!(
                                "HubSpot did not grant access: {err} {}",
                                q.get("error_description").map(String::as_str).unwrap_or("")
                            ))
                        } else if let Some(code) = q.get("code") {
                            Ok(code.clone())
                        } else {
                            Err("HubSpot came back without a code".to_string())
                        };
                        let ok = result.is_ok();
                        if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                            let _ = tx.send(result);
                        }
                        let page = if ok {
                            "enrichd is connected to HubSpot. You can close this window."
                        } else {
                            "enrichd could not connect to HubSpot; see the terminal for why."
                        };
                        (axum::http::StatusCode::OK, axum::response::Html(page.to_string()))
                    }
                },
            ),
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
    pub async fn code(self, timeout: Duration) -> Result<String, HubSpotError> {
        let r = tokio::time::timeout(timeout, self.rx).await;
        self.server.abort();
        match r {
            Ok(Ok(Ok(code))) => Ok(code),
            Ok(Ok(Err(m))) => Err(HubSpotError::Auth {
                message: m,
                hint: "approve the app in the browser, with an account that may install it".into(),
            }),
            Ok(Err(_)) | Err(_) => Err(HubSpotError::Auth {
                message: format!("no answer from the browser within {} s", timeout.as_secs()),
                hint: "open the printed URL in a browser and approve the app".into(),
            }),
        }
    }
}

/// What `enrichd connect hubspot` established.
#[derive(Debug, Clone)]
pub struct Connected {
    pub portal: String,
    pub scopes: Vec<String>,
    pub auth: &'static str,
}

/// What the connect flow works with.
pub struct ConnectContext<'a> {
    pub ws: &'a WorkspaceId,
    pub settings: &'a HubSpotSettings,
    pub store: &'a Arc<dyn Store>,
    /// Required for OAuth apps (tokens are sealed with it).
    pub cipher: Option<&'a TokenCipher>,
    pub clock: &'a dyn Clock,
    pub http: &'a reqwest::Client,
    /// How long the browser has to come back.
    pub wait: Duration,
}

/// The whole connect flow. `browser` is handed the authorize URL (the CLI
/// prints it and opens a browser; tests follow the redirect).
pub async fn connect<F, Fut>(cx: &ConnectContext<'_>, browser: F) -> Result<Connected, HubSpotError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ConnectContext {
        ws,
        settings,
        store,
        cipher,
        clock,
        http,
        wait,
    } = *cx;
    let (client_id, client_secret, redirect_uri, scopes, optional) = match &settings.auth {
        HubSpotAuth::PrivateApp { .. } => {
            let row = ConnectionRow {
                crm: CRM.into(),
                account: settings
                    .portal_id
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                auth: "private_app".into(),
                sealed_access: None,
                sealed_refresh: None,
                expires_at: None,
                scopes: Vec::new(),
                state: ConnectionState::Connected,
                reason: String::new(),
                updated_at: clock.now(),
            };
            store
                .save_connection(ws, &row)
                .await
                .map_err(HubSpotError::Store)?;
            return Ok(Connected {
                portal: row.account,
                scopes: Vec::new(),
                auth: "private_app",
            });
        }
        HubSpotAuth::OAuth {
            client_id,
            client_secret,
            redirect_uri,
            scopes,
            optional_scopes,
        } => (
            client_id,
            client_secret,
            redirect_uri,
            scopes,
            optional_scopes,
        ),
    };
    let cipher = cipher.ok_or_else(|| HubSpotError::Auth {
        message: "no master key to encrypt HubSpot tokens with".into(),
        hint: "create one with `enrichd keygen` and export it in the variable named by security.master_key_env (ENRICHD_MASTER_KEY)".into(),
    })?;
    let pkce = Pkce::new().map_err(|e| HubSpotError::Auth {
        message: e.to_string(),
        hint: crate::crm::pkce::NoRandomness::HINT.into(),
    })?;
    let loopback = Loopback::bind(redirect_uri, pkce.state.clone()).await?;
    let url = authorize_url(
        settings,
        client_id,
        &loopback.redirect_uri,
        scopes,
        optional,
        &pkce,
    );
    let redirect = loopback.redirect_uri.clone();
    browser(url).await;
    let code = loopback.code(wait).await?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("client_id", client_id.as_str()),
        ("client_secret", client_secret.expose()),
        ("code_verifier", pkce.verifier.expose()),
    ];
    let token_url = settings.token_url();
    let t = post_token_retrying(http, &token_url, &form, settings.max_retries)
        .await
        .map_err(|f| match f {
            TokenFailure::InvalidClient(w) => HubSpotError::Auth {
                message: format!("HubSpot refused the app's client id or secret: {w}"),
                hint: "check client_id_env and client_secret_env in [workspaces.crm]".into(),
            },
            TokenFailure::InvalidGrant(w) => HubSpotError::Auth {
                message: format!("HubSpot refused the authorization code: {w}"),
                hint: "run `enrichd connect hubspot` again (codes are single-use and short-lived)"
                    .into(),
            },
            TokenFailure::Transient(w, _) | TokenFailure::Other(w) => HubSpotError::Transport {
                endpoint: "POST /oauth/2026-03/token".into(),
                message: w,
            },
        })?;
    let previous = store
        .connection(ws, CRM)
        .await
        .map_err(HubSpotError::Store)?;
    let row = sealed_row(cipher, ws, &t, previous.as_ref(), clock.now())?;
    store
        .save_connection(ws, &row)
        .await
        .map_err(HubSpotError::Store)?;
    Ok(Connected {
        portal: row.account,
        scopes: row.scopes,
        auth: "oauth",
    })
}
