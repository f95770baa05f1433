//! OAuth (reference §1): the authorize page, the token endpoints (code exchange with PKCE,
//! refresh, optional rotation), revoke / introspect, and API authentication.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use super::Shared;
use super::http::{H, Reply, Req, Route, error, error_with};
use super::time::{iso_ms, now_ms};

/// Authorization codes live 5 minutes.
const CODE_TTL: Duration = Duration::from_secs(300);
/// Length of an access token (HubSpot's are 300–512 characters).
const ACCESS_TOKEN_LEN: usize = 400;

pub(crate) struct AccessTok {
    pub scopes: Arc<Vec<String>>,
    pub expires_at: Instant,
    pub expires_wall_ms: i64,
}

pub(crate) struct RefreshTok {
    pub scopes: Arc<Vec<String>>,
}

pub(crate) struct Code {
    redirect_uri: String,
    scopes: Vec<String>,
    challenge: Option<String>,
    expires_at: Instant,
    used: bool,
}

#[derive(Default)]
pub(crate) struct AuthState {
    pub access: HashMap<String, AccessTok>,
    pub refresh: HashMap<String, RefreshTok>,
    codes: HashMap<String, Code>,
}

impl AuthState {
    /// Expire every access token now.
    pub(crate) fn expire_all(&mut self, now_wall: i64) {
        let now = Instant::now();
        for t in self.access.values_mut() {
            if t.expires_at > now {
                t.expires_at = now;
                t.expires_wall_ms = now_wall;
            }
        }
    }
}

/// Who made an API call.
pub(crate) struct Who {
    pub scopes: Arc<Vec<String>>,
    /// Private-app token (daily headers, never expires).
    pub private: bool,
}

impl Who {
    pub(crate) fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// 401 INVALID_AUTHENTICATION.
pub(crate) fn not_authenticated(sh: &Shared) -> Reply {
    error(
        sh,
        401,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
    )
}

/// Check `Authorization: Bearer …`.
pub(crate) fn authenticate(sh: &Shared, req: &Req) -> Result<Who, Reply> {
    let token = req
        .header("authorization")
        .map(str::trim)
        .and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(not_authenticated(sh));
    };
    if sh.opts.private_app_token.as_deref() == Some(token) {
        return Ok(Who {
            scopes: Arc::new(sh.opts.granted_scopes.clone()),
            private: true,
        });
    }
    let auth = sh.auth();
    let Some(t) = auth.access.get(token) else {
        drop(auth);
        return Err(not_authenticated(sh));
    };
    let now = Instant::now();
    if now >= t.expires_at {
        let ago = now.saturating_duration_since(t.expires_at).as_secs();
        let at = iso_ms(t.expires_wall_ms);
        drop(auth);
        return Err(error_with(
            sh,
            401,
            "EXPIRED_AUTHENTICATION",
            &format!("The OAuth token used to make this call expired {ago} second(s) ago."),
            vec![("context", json!({"expire time": [at]}))],
        ));
    }
    Ok(Who {
        scopes: t.scopes.clone(),
        private: false,
    })
}

fn html_error(msg: &str) -> Reply {
    let esc = msg
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Reply::html(
        400,
        format!(
            "<!DOCTYPE html><html><head><title>HubSpot - Authorization error</title></head>\
             <body><h1>Authorization failed</h1><p>{esc}</p></body></html>"
        ),
    )
}

fn redirect(uri: &url::Url) -> Reply {
    Reply::empty(302).header("Location", uri.as_str())
}

/// `GET /oauth/authorize`: automatic consent.
fn authorize(sh: &Shared, req: &Req) -> Reply {
    let client_id = req.q("client_id").unwrap_or("");
    if client_id != sh.opts.client_id {
        return html_error("Unknown or missing client_id.");
    }
    let Some(redirect_uri) = req.q("redirect_uri") else {
        return html_error("Missing redirect_uri.");
    };
    let Ok(mut target) = url::Url::parse(redirect_uri) else {
        return html_error("redirect_uri is not a valid URL.");
    };
    let Some(scope) = req.q("scope") else {
        return html_error("Missing scope.");
    };
    let challenge = req.q("code_challenge").map(str::to_string);
    if challenge.is_some() && req.q("code_challenge_method") != Some("S256") {
        return html_error("Unsupported code_challenge_method: only S256 is supported.");
    }
    let state = req.q("state");
    let granted = &sh.opts.granted_scopes;
    let requested: Vec<String> = scope.split_whitespace().map(str::to_string).collect();
    let refused: Vec<&String> = requested.iter().filter(|s| !granted.contains(s)).collect();
    if !refused.is_empty() {
        {
            let mut q = target.query_pairs_mut();
            q.append_pair("error", "invalid_scope");
            q.append_pair(
                "error_description",
                &format!(
                    "The app requested scopes that the account cannot grant: {}",
                    refused
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            );
            if let Some(s) = state {
                q.append_pair("state", s);
            }
        }
        return redirect(&target);
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in requested.into_iter().chain(
        req.q("optional_scope")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .filter(|s| granted.contains(s)),
    ) {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let code = sh.uuid();
    sh.auth().codes.insert(
        code.clone(),
        Code {
            redirect_uri: redirect_uri.to_string(),
            scopes,
            challenge,
            expires_at: Instant::now() + CODE_TTL,
            used: false,
        },
    );
    {
        let mut q = target.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(s) = state {
            q.append_pair("state", s);
        }
    }
    redirect(&target)
}

/// An OAuth error in the version's shape (v1: legacy `{status, message}`).
fn oauth_error(legacy: bool, status: u16, error: &str, code: &str, message: &str) -> Reply {
    if legacy {
        Reply::json(status, json!({"status": code, "message": message}))
    } else {
        Reply::json(
            status,
            json!({"error": error, "error_description": message, "status": code,
                   "message": message}),
        )
    }
}

fn bad_code(legacy: bool, message: &str) -> Reply {
    oauth_error(legacy, 400, "invalid_grant", "BAD_AUTH_CODE", message)
}

fn bad_refresh(legacy: bool) -> Reply {
    oauth_error(
        legacy,
        400,
        "invalid_grant",
        "BAD_REFRESH_TOKEN",
        "refresh token is invalid, expired or revoked",
    )
}

const TOKEN_FIELDS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "code",
    "refresh_token",
    "redirect_uri",
    "code_verifier",
    "token",
];

/// Parse a form body (v1: query parameters too). Err: the reply.
fn form(req: &Req, legacy: bool) -> Result<HashMap<String, String>, Reply> {
    let ctype = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !legacy
        && req
            .query
            .iter()
            .any(|(k, _)| TOKEN_FIELDS.contains(&k.as_str()))
    {
        return Err(oauth_error(
            false,
            400,
            "invalid_request",
            "BAD_REQUEST",
            "Each of the v3 endpoints require that parameters are included in the request body, not the query string.",
        ));
    }
    let mut out: HashMap<String, String> = HashMap::new();
    if legacy {
        for (k, v) in &req.query {
            out.insert(k.clone(), v.clone());
        }
    }
    if !req.body.is_empty() || !legacy {
        if !ctype.starts_with("application/x-www-form-urlencoded") {
            return Err(oauth_error(
                legacy,
                400,
                "invalid_request",
                "BAD_REQUEST",
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
        for (k, v) in url::form_urlencoded::parse(&req.body) {
            out.insert(k.into_owned(), v.into_owned());
        }
    }
    Ok(out)
}

fn check_client(sh: &Shared, f: &HashMap<String, String>, legacy: bool) -> Result<(), Reply> {
    if f.get("client_id").map(String::as_str) != Some(sh.opts.client_id.as_str()) {
        return Err(oauth_error(
            legacy,
            400,
            "invalid_client",
            "BAD_CLIENT_ID",
            "missing or unknown client id",
        ));
    }
    if f.get("client_secret").map(String::as_str) != Some(sh.opts.client_secret.as_str()) {
        return Err(oauth_error(
            legacy,
            400,
            "invalid_client",
            "BAD_CLIENT_ID",
            "client secret does not match the client id",
        ));
    }
    Ok(())
}

/// base64url-nopad(SHA-256(verifier)).
fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn issue(sh: &Shared, scopes: Arc<Vec<String>>, refresh: String) -> Value {
    let ttl = sh.opts.access_token_ttl;
    let access = format!("C{}", sh.token_chars(ACCESS_TOKEN_LEN - 1));
    sh.auth().access.insert(
        access.clone(),
        AccessTok {
            scopes: scopes.clone(),
            expires_at: Instant::now() + ttl,
            expires_wall_ms: now_ms() + ttl.as_millis() as i64,
        },
    );
    json!({"token_type": "bearer", "refresh_token": refresh, "access_token": access,
           "expires_in": ttl.as_secs(), "token_use": "access_token",
           "hub_id": sh.opts.portal_id, "user_id": 1, "scopes": *scopes})
}

fn grant(sh: &Shared, kind: &str) {
    *sh.ctl()
        .stats
        .token_grants
        .entry(kind.to_string())
        .or_default() += 1;
}

fn token(sh: &Shared, req: &Req, ver: &str) -> Reply {
    let legacy = ver == "v1";
    let f = match form(req, legacy) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let get = |k: &str| f.get(k).map(String::as_str).filter(|s| !s.is_empty());
    match get("grant_type") {
        Some("authorization_code") => {
            if let Err(r) = check_client(sh, &f, legacy) {
                return r;
            }
            let Some(code) = get("code") else {
                return bad_code(legacy, "missing or unknown auth code");
            };
            let mut auth = sh.auth();
            let Some(c) = auth.codes.get_mut(code) else {
                return bad_code(legacy, "missing or unknown auth code");
            };
            if c.used {
                return bad_code(legacy, "auth code has already been used");
            }
            if Instant::now() >= c.expires_at {
                return bad_code(legacy, "auth code is expired");
            }
            if get("redirect_uri") != Some(c.redirect_uri.as_str()) {
                return bad_code(
                    legacy,
                    "redirect_uri does not match the redirect_uri of the authorization request",
                );
            }
            if let Some(ch) = &c.challenge {
                match get("code_verifier") {
                    None => return bad_code(legacy, "missing code_verifier"),
                    Some(v) if s256(v) != *ch => {
                        return bad_code(legacy, "code_verifier does not match the code_challenge");
                    }
                    Some(_) => {}
                }
            }
            c.used = true;
            let scopes = Arc::new(c.scopes.clone());
            let refresh = sh.uuid();
            auth.refresh.insert(
                refresh.clone(),
                RefreshTok {
                    scopes: scopes.clone(),
                },
            );
            drop(auth);
            grant(sh, "authorization_code");
            Reply::json(200, issue(sh, scopes, refresh))
        }
        Some("refresh_token") => {
            if let Err(r) = check_client(sh, &f, legacy) {
                return r;
            }
            let Some(rt) = get("refresh_token") else {
                return bad_refresh(legacy);
            };
            let mut auth = sh.auth();
            let Some(scopes) = auth.refresh.get(rt).map(|t| t.scopes.clone()) else {
                return bad_refresh(legacy);
            };
            let refresh = if sh.opts.rotate_refresh_tokens {
                auth.refresh.remove(rt);
                let n = sh.uuid();
                auth.refresh.insert(
                    n.clone(),
                    RefreshTok {
                        scopes: scopes.clone(),
                    },
                );
                n
            } else {
                rt.to_string()
            };
            drop(auth);
            grant(sh, "refresh_token");
            Reply::json(200, issue(sh, scopes, refresh))
        }
        Some(other) => oauth_error(
            legacy,
            400,
            "unsupported_grant_type",
            "BAD_GRANT_TYPE",
            &format!("grant_type {other} is not supported for this app"),
        ),
        None => oauth_error(
            legacy,
            400,
            "invalid_request",
            "BAD_GRANT_TYPE",
            "missing grant_type",
        ),
    }
}

fn revoke(sh: &Shared, req: &Req) -> Reply {
    let f = match form(req, false) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = check_client(sh, &f, false) {
        return r;
    }
    if let Some(t) = f.get("token") {
        let mut a = sh.auth();
        a.refresh.remove(t.as_str());
    }
    Reply::empty(200)
}

fn introspect(sh: &Shared, req: &Req) -> Reply {
    let f = match form(req, false) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = check_client(sh, &f, false) {
        return r;
    }
    let t = f.get("token").cloned().unwrap_or_default();
    Reply::json(
        200,
        token_info(sh, &t, false).unwrap_or(json!({"active": false})),
    )
}

/// Introspection / legacy token info for an access or refresh token.
fn token_info(sh: &Shared, t: &str, legacy: bool) -> Option<Value> {
    let a = sh.auth();
    let now = Instant::now();
    if let Some(at) = a.access.get(t) {
        let left = at.expires_at.saturating_duration_since(now).as_secs();
        if legacy && left == 0 {
            return None;
        }
        return Some(json!({"active": left > 0, "app_id": sh.opts.app_id,
            "client_id": sh.opts.client_id, "expires_in": left, "hub_id": sh.opts.portal_id,
            "hub_domain": "sim.hubspot.com", "is_private_distribution": false,
            "scopes": *at.scopes, "signed_access_token": {}, "token": t,
            "token_type": "access", "token_use": "access_token", "user": "sim-user@example.com",
            "user_id": 1}));
    }
    a.refresh.get(t).map(|rt| {
        json!({"active": true, "app_id": sh.opts.app_id, "client_id": sh.opts.client_id,
            "hub_id": sh.opts.portal_id, "hub_domain": "sim.hubspot.com", "scopes": *rt.scopes,
            "token": t, "token_type": "refresh", "token_use": "refresh_token",
            "user": "sim-user@example.com", "user_id": 1})
    })
}

/// Serve an OAuth route.
pub(crate) fn handle(sh: &Arc<Shared>, r: &Route, req: &Req) -> Reply {
    match &r.h {
        H::Authorize => authorize(sh, req),
        H::Token(ver) => token(sh, req, ver),
        H::Revoke => revoke(sh, req),
        H::Introspect => introspect(sh, req),
        H::V1AccessToken(t) => match token_info(sh, t, true) {
            Some(v) => Reply::json(200, v),
            None => Reply::json(
                404,
                json!({"status": "error", "message": "access token not found or expired"}),
            ),
        },
        H::V1RefreshGet(t) => {
            let known = sh.auth().refresh.contains_key(t.as_str());
            match known {
                true => Reply::json(200, token_info(sh, t, true).unwrap_or_default()),
                false => Reply::json(
                    404,
                    json!({"status": "error", "message": "refresh token not found"}),
                ),
            }
        }
        H::V1RefreshDelete(t) => {
            sh.auth().refresh.remove(t.as_str());
            Reply::empty(204)
        }
        _ => error(sh, 404, "OBJECT_NOT_FOUND", "Unknown endpoint"),
    }
}
