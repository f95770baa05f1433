//! OAuth 2.0 on the login host: authorize (web-server flow with PKCE), the token endpoint
//! (authorization_code, refresh_token with optional rotation, JWT bearer), revoke, introspect,
//! userinfo and the identity URL; and session checks for API calls on the instance host.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Shared;
use super::http::{Reply, Req, not_found};
use super::options::SalesforceFault;

pub(crate) const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Authorization codes are valid 15 minutes.
const CODE_TTL_MS: i64 = 15 * 60 * 1000;

/// The caller of an API request.
#[derive(Clone, Debug)]
pub(crate) struct Who {
    pub user: usize,
}

#[derive(Clone, Debug)]
struct Session {
    user: usize,
    scope: String,
    issued: i64,
    last_activity: i64,
    expired: bool,
    /// The refresh token this session descends from.
    family: Option<String>,
}

#[derive(Clone, Debug)]
struct Grant {
    user: usize,
    scope: String,
    issued: i64,
}

#[derive(Clone, Debug)]
struct Code {
    redirect_uri: String,
    challenge: Option<String>,
    scope: String,
    user: usize,
    expires: i64,
}

/// Issued tokens and codes.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    access: HashMap<String, Session>,
    refresh: HashMap<String, Grant>,
    codes: HashMap<String, Code>,
}

impl AuthState {
    pub(crate) fn expire_all(&mut self) {
        for s in self.access.values_mut() {
            s.expired = true;
        }
    }
    pub(crate) fn revoke_all_refresh(&mut self) {
        self.refresh.clear();
    }
    pub(crate) fn tokens(&self) -> Vec<String> {
        self.access
            .keys()
            .chain(self.refresh.keys())
            .cloned()
            .collect()
    }
    pub(crate) fn refresh_valid(&self, t: &str) -> bool {
        self.refresh.contains_key(t)
    }
    /// Any live access token of `user` (for Outbound Message session ids).
    pub(crate) fn session_of(
        &mut self,
        user: usize,
        now: i64,
        make: impl FnOnce() -> String,
    ) -> String {
        if let Some((t, _)) = self
            .access
            .iter()
            .find(|(_, s)| s.user == user && !s.expired)
        {
            return t.clone();
        }
        let t = make();
        self.access.insert(
            t.clone(),
            Session {
                user,
                scope: "api".into(),
                issued: now,
                last_activity: now,
                expired: false,
                family: None,
            },
        );
        t
    }
}

/// Check `Authorization: Bearer|OAuth <token>`; touches the session's last activity.
pub(crate) fn authenticate(sh: &Shared, req: &Req) -> Option<Who> {
    let h = req.header("authorization")?.trim();
    let (scheme, tok) = h.split_once(' ')?;
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth")) {
        return None;
    }
    let tok = tok.trim();
    let now = sh.clock.now_ms();
    let timeout = sh.opts.session_timeout.as_millis() as i64;
    let mut a = sh.auth();
    let s = a.access.get_mut(tok)?;
    if s.expired || now - s.last_activity > timeout {
        s.expired = true;
        return None;
    }
    s.last_activity = now;
    Some(Who { user: s.user })
}

/// Which login-host handler serves a request.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OH {
    Authorize,
    Token,
    Revoke,
    Introspect,
    UserInfo,
    Identity,
}

pub(crate) fn route(req: &Req) -> Option<(String, OH)> {
    let m = req.method.as_str();
    let p = req.path.trim_end_matches('/');
    let r = |e: &str, h| Some((format!("{m} {e}"), h));
    match (m, p) {
        ("GET", "/services/oauth2/authorize") => r(p, OH::Authorize),
        ("POST", "/services/oauth2/token") => r(p, OH::Token),
        ("POST" | "GET", "/services/oauth2/revoke") => r(p, OH::Revoke),
        ("POST", "/services/oauth2/introspect") => r(p, OH::Introspect),
        ("GET" | "POST", "/services/oauth2/userinfo") => r(p, OH::UserInfo),
        ("GET", p) if p.starts_with("/id/") => r("/id/{orgId}/{userId}", OH::Identity),
        _ => None,
    }
}

/// `{"error","error_description"}` with `status`.
fn oerr(status: u16, error: &str, desc: &str) -> Reply {
    Reply::json(status, json!({"error": error, "error_description": desc}))
}

/// The login-host answer for a `Status` fault.
pub(crate) fn fault_reply(f: &SalesforceFault) -> Reply {
    let SalesforceFault::Status {
        status,
        error_code,
        message,
        ..
    } = f
    else {
        return oerr(500, "server_error", "internal server error");
    };
    let (e, d) = match status {
        400 => ("invalid_grant", "expired access/refresh token"),
        429 | 503 => ("rate_limit_exceeded", "rate limit exceeded"),
        _ => ("server_error", "internal server error"),
    };
    oerr(
        *status,
        error_code.as_deref().unwrap_or(e),
        message.as_deref().unwrap_or(d),
    )
}

fn html(status: u16, title: &str, body: &str) -> Reply {
    Reply::text(
        status,
        "text/html;charset=UTF-8",
        format!("<html><head><title>{title}</title></head><body><p>{body}</p></body></html>"),
    )
}

fn redirect(uri: &str, params: &[(&str, &str)]) -> Reply {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    Reply::empty(302).header("Location", format!("{uri}{sep}{}", ser.finish()))
}

pub(crate) fn handle(sh: &Shared, h: OH, req: &Req) -> Reply {
    match h {
        OH::Authorize => authorize(sh, req),
        OH::Token => {
            let reply = token(sh, req);
            let grant = req
                .form()
                .into_iter()
                .find(|(k, _)| k == "grant_type")
                .map(|(_, v)| v)
                .unwrap_or_default();
            let mut c = sh.ctl();
            if reply.status == 200 {
                *c.stats.token_grants.entry(grant).or_default() += 1;
            } else if let super::http::RBody::Json(v) = &reply.body {
                let e = v["error"].as_str().unwrap_or("?").to_string();
                *c.stats.token_errors.entry(e).or_default() += 1;
            }
            reply
        }
        OH::Revoke => revoke(sh, req),
        OH::Introspect => introspect(sh, req),
        OH::UserInfo | OH::Identity => userinfo(sh, req, matches!(h, OH::Identity)),
    }
}

fn authorize(sh: &Shared, req: &Req) -> Reply {
    let o = &sh.opts;
    let client_id = req.q("client_id").unwrap_or("");
    if client_id != o.client_id {
        return html(
            400,
            "error",
            "error=invalid_client_id&amp;error_description=client%20identifier%20invalid",
        );
    }
    let Some(redirect_uri) = req.q("redirect_uri").filter(|u| !u.is_empty()) else {
        return html(400, "error", "error=redirect_uri_missing");
    };
    if url::Url::parse(redirect_uri).is_err()
        || (!o.callback_urls.is_empty() && !o.callback_urls.iter().any(|u| u == redirect_uri))
    {
        return html(
            400,
            "error",
            "error=redirect_uri_mismatch&amp;error_description=redirect_uri%20must%20match%20configuration",
        );
    }
    let state = req.q("state").unwrap_or("");
    let with_state = |mut p: Vec<(&'static str, String)>| {
        if !state.is_empty() {
            p.push(("state", state.to_string()));
        }
        p
    };
    let fail = |e: &str, d: &str| {
        let p = with_state(vec![
            ("error", e.to_string()),
            ("error_description", d.to_string()),
        ]);
        let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        redirect(redirect_uri, &refs)
    };
    if req.q("response_type") != Some("code") {
        return fail("unsupported_response_type", "response type not supported");
    }
    let challenge = req.q("code_challenge").filter(|c| !c.is_empty());
    if let Some(m) = req.q("code_challenge_method")
        && !m.eq_ignore_ascii_case("S256")
    {
        return fail("invalid_request", "invalid code_challenge_method");
    }
    if let Some(c) = challenge
        && (c.len() != 43 || URL_SAFE_NO_PAD.decode(c).is_err())
    {
        return fail("invalid_request", "invalid code_challenge");
    }
    let scope = match req.q("scope").map(str::trim).filter(|s| !s.is_empty()) {
        None => o.app_scopes.join(" "),
        Some(s) => {
            let req_scopes: Vec<&str> = s.split_whitespace().collect();
            if let Some(bad) = req_scopes
                .iter()
                .find(|x| !o.app_scopes.iter().any(|a| a == *x))
            {
                return fail(
                    "invalid_scope",
                    &format!("the requested scope is not allowed: {bad}"),
                );
            }
            req_scopes.join(" ")
        }
    };
    let user = req
        .q("login_hint")
        .and_then(|h| sh.store().users.iter().position(|u| u.username == h))
        .unwrap_or(0);
    let code = format!("aPrx{}==", sh.token_chars(64));
    sh.auth().codes.insert(
        code.clone(),
        Code {
            redirect_uri: redirect_uri.to_string(),
            challenge: challenge.map(str::to_string),
            scope,
            user,
            expires: sh.clock.now_ms() + CODE_TTL_MS,
        },
    );
    let p = with_state(vec![("code", code)]);
    let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    redirect(redirect_uri, &refs)
}

fn form_get<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
    f.iter()
        .find(|(a, _)| a == k)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Client authentication: form `client_id`/`client_secret` or HTTP Basic.
fn client_auth(
    sh: &Shared,
    req: &Req,
    f: &[(String, String)],
    secret_required: bool,
) -> Result<(), Reply> {
    let mut id = form_get(f, "client_id").map(str::to_string);
    let mut secret = form_get(f, "client_secret").map(str::to_string);
    if let Some(b) = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        && let Some((i, s)) = b.split_once(':')
    {
        id = Some(i.to_string());
        secret = Some(s.to_string());
    }
    if id.as_deref() != Some(sh.opts.client_id.as_str()) {
        return Err(oerr(400, "invalid_client_id", "client identifier invalid"));
    }
    match secret {
        Some(s) if s != sh.opts.client_secret => {
            Err(oerr(400, "invalid_client", "invalid client credentials"))
        }
        None if secret_required => Err(oerr(400, "invalid_client", "invalid client credentials")),
        _ => Ok(()),
    }
}

fn token(sh: &Shared, req: &Req) -> Reply {
    let ctype = req.header("content-type").unwrap_or("");
    if !ctype
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
        && !req.body.is_empty()
    {
        return oerr(400, "invalid_request", "unsupported content type");
    }
    let f = req.form();
    match form_get(&f, "grant_type") {
        Some("authorization_code") => {
            if let Err(r) = client_auth(sh, req, &f, sh.opts.require_client_secret) {
                return r;
            }
            let Some(code) = form_get(&f, "code") else {
                return oerr(400, "invalid_grant", "invalid authorization code");
            };
            let now = sh.clock.now_ms();
            let c = {
                let a = sh.auth();
                match a.codes.get(code) {
                    Some(c) => c.clone(),
                    None => return oerr(400, "invalid_grant", "invalid authorization code"),
                }
            };
            if c.expires < now {
                sh.auth().codes.remove(code);
                return oerr(400, "invalid_grant", "expired authorization code");
            }
            if form_get(&f, "redirect_uri") != Some(c.redirect_uri.as_str()) {
                return oerr(
                    400,
                    "redirect_uri_mismatch",
                    "redirect_uri must match configuration",
                );
            }
            if let Some(ch) = &c.challenge {
                match form_get(&f, "code_verifier") {
                    None => return oerr(400, "invalid_grant", "invalid code verifier"),
                    Some(v) => {
                        let digest = URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
                        if &digest != ch {
                            return oerr(400, "invalid_request", "invalid code verifier");
                        }
                    }
                }
            }
            sh.auth().codes.remove(code);
            let with_refresh = c
                .scope
                .split_whitespace()
                .any(|s| s == "refresh_token" || s == "offline_access");
            issue(sh, c.user, &c.scope, with_refresh, None)
        }
        Some("refresh_token") => {
            if let Err(r) = client_auth(sh, req, &f, sh.opts.require_client_secret) {
                return r;
            }
            let Some(rt) = form_get(&f, "refresh_token") else {
                return oerr(400, "invalid_grant", "expired access/refresh token");
            };
            let g = match sh.auth().refresh.get(rt) {
                Some(g) => g.clone(),
                None => return oerr(400, "invalid_grant", "expired access/refresh token"),
            };
            if sh.opts.rotate_refresh_tokens {
                sh.auth().refresh.remove(rt);
                issue(sh, g.user, &g.scope, true, None)
            } else {
                issue(sh, g.user, &g.scope, false, Some(rt.to_string()))
            }
        }
        Some(JWT_GRANT) => jwt(sh, &f),
        Some("client_credentials") => {
            oerr(400, "invalid_grant", "no client credentials user enabled")
        }
        Some(_) => oerr(400, "unsupported_grant_type", "grant type not supported"),
        None => oerr(400, "invalid_request", "grant type not supported"),
    }
}

/// Mint an access token (and a refresh token when `new_refresh`), answer §1.3's shape.
/// `family`: the refresh token a non-rotating refresh came from.
fn issue(
    sh: &Shared,
    user: usize,
    scope: &str,
    new_refresh: bool,
    family: Option<String>,
) -> Reply {
    let now = sh.clock.now_ms();
    let org15 = &sh.opts.org_id[..15.min(sh.opts.org_id.len())];
    let access = format!("{org15}!AQ4AQ{}", sh.token_chars(96));
    let refresh = new_refresh.then(|| format!("5Aep861{}", sh.token_chars(80)));
    let user_id = sh
        .store()
        .users
        .get(user)
        .map(|u| u.id.clone())
        .unwrap_or_default();
    let id = format!("{}/id/{}/{}", sh.login_url, sh.opts.org_id, user_id);
    let issued_at = now.to_string();
    let signature = {
        let mut mac =
            match <Hmac<Sha256> as KeyInit>::new_from_slice(sh.opts.client_secret.as_bytes()) {
                Ok(m) => m,
                Err(_) => return oerr(500, "server_error", "internal server error"),
            };
        mac.update(id.as_bytes());
        mac.update(issued_at.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    };
    {
        let mut a = sh.auth();
        a.access.insert(
            access.clone(),
            Session {
                user,
                scope: scope.to_string(),
                issued: now,
                last_activity: now,
                expired: false,
                family: refresh.clone().or(family),
            },
        );
        if let Some(r) = &refresh {
            a.refresh.insert(
                r.clone(),
                Grant {
                    user,
                    scope: scope.to_string(),
                    issued: now,
                },
            );
        }
    }
    let mut m = serde_json::Map::new();
    m.insert("access_token".into(), json!(access));
    if let Some(r) = refresh {
        m.insert("refresh_token".into(), json!(r));
    }
    m.insert("signature".into(), json!(signature));
    m.insert("scope".into(), json!(scope));
    if scope.split_whitespace().any(|s| s == "openid") {
        let header = URL_SAFE_NO_PAD.encode(br#"{"kid":"sim","typ":"JWT","alg":"RS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(
            json!({"iss": sh.login_url, "sub": id, "aud": sh.opts.client_id,
                   "iat": now / 1000, "exp": now / 1000 + 300})
            .to_string(),
        );
        m.insert(
            "id_token".into(),
            json!(format!("{header}.{payload}.{}", sh.token_chars(342))),
        );
    }
    m.insert("instance_url".into(), json!(sh.instance_url));
    m.insert("id".into(), json!(id));
    m.insert("token_type".into(), json!("Bearer"));
    m.insert("issued_at".into(), json!(issued_at));
    Reply::json(200, Value::Object(m))
}

/// The JWT bearer grant (§1.5).
fn jwt(sh: &Shared, f: &[(String, String)]) -> Reply {
    let bad = || oerr(400, "invalid_grant", "invalid assertion");
    let Some(assertion) = form_get(f, "assertion") else {
        return oerr(400, "invalid_request", "assertion required");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let [h64, p64, s64] = parts.as_slice() else {
        return bad();
    };
    let (Ok(hb), Ok(pb), Ok(sig)) = (
        URL_SAFE_NO_PAD.decode(h64.trim_end_matches('=')),
        URL_SAFE_NO_PAD.decode(p64.trim_end_matches('=')),
        URL_SAFE_NO_PAD.decode(s64.trim_end_matches('=')),
    ) else {
        return bad();
    };
    let (Ok(header), Ok(claims)) = (
        serde_json::from_slice::<Value>(&hb),
        serde_json::from_slice::<Value>(&pb),
    ) else {
        return bad();
    };
    if header["alg"].as_str() != Some("RS256") {
        return bad();
    }
    if claims["iss"].as_str() != Some(sh.opts.client_id.as_str()) {
        return oerr(400, "invalid_client_id", "client identifier invalid");
    }
    let Some(key) = sh.opts.jwt_public_key.as_ref() else {
        return oerr(
            400,
            "invalid_client",
            "invalid client credentials: no certificate uploaded to the connected app",
        );
    };
    let signed = format!("{h64}.{p64}");
    let pk = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        key.as_slice(),
    );
    if pk.verify(signed.as_bytes(), &sig).is_err() {
        return bad();
    }
    let aud_ok = {
        let want = sh
            .opts
            .jwt_audience
            .clone()
            .unwrap_or_else(|| sh.login_url.clone());
        let want = want.trim_end_matches('/');
        match &claims["aud"] {
            Value::String(a) => a.trim_end_matches('/') == want,
            Value::Array(v) => v
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.trim_end_matches('/') == want)),
            _ => false,
        }
    };
    if !aud_ok {
        return oerr(400, "invalid_grant", "audience is invalid");
    }
    let now = sh.clock.now_ms();
    let Some(exp) = claims["exp"].as_i64() else {
        return bad();
    };
    let max = now + sh.opts.jwt_max_lifetime.as_millis() as i64 + 30_000;
    if exp * 1000 <= now {
        return oerr(400, "invalid_grant", "expired assertion");
    }
    if exp * 1000 > max {
        return oerr(
            400,
            "invalid_grant",
            "invalid assertion: exp too far in the future",
        );
    }
    let sub = claims["sub"].as_str().unwrap_or("");
    let user = sh.store().users.iter().position(|u| u.username == sub);
    let Some(user) = user else {
        return oerr(400, "invalid_grant", "user hasn't approved this consumer");
    };
    let scope: Vec<&str> = sh
        .opts
        .app_scopes
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "refresh_token" && *s != "offline_access")
        .collect();
    issue(sh, user, &scope.join(" "), false, None)
}

fn revoke(sh: &Shared, req: &Req) -> Reply {
    let f = req.form();
    let Some(tok) = form_get(&f, "token") else {
        return oerr(400, "invalid_request", "token required");
    };
    let mut a = sh.auth();
    let mut n = 0;
    if a.access.remove(tok).is_some() {
        n += 1;
    } else if a.refresh.remove(tok).is_some() {
        n += 1;
        let before = a.access.len();
        a.access.retain(|_, s| s.family.as_deref() != Some(tok));
        n += before - a.access.len();
    } else {
        return oerr(400, "invalid_token", "invalid token");
    }
    drop(a);
    sh.ctl().stats.tokens_revoked += n as u64;
    Reply::empty(200)
}

fn introspect(sh: &Shared, req: &Req) -> Reply {
    let f = req.form();
    if let Err(r) = client_auth(sh, req, &f, true) {
        return r;
    }
    let Some(tok) = form_get(&f, "token") else {
        return oerr(400, "invalid_request", "token required");
    };
    let now = sh.clock.now_ms();
    let timeout = sh.opts.session_timeout.as_millis() as i64;
    let a = sh.auth();
    let users = sh.store().users.clone();
    let uname = |u: usize| users.get(u).map(|x| x.username.clone()).unwrap_or_default();
    let uid = |u: usize| users.get(u).map(|x| x.id.clone()).unwrap_or_default();
    if let Some(s) = a.access.get(tok)
        && !s.expired
        && now - s.last_activity <= timeout
    {
        return Reply::json(
            200,
            json!({"active": true, "scope": s.scope, "client_id": sh.opts.client_id,
                   "username": uname(s.user), "sub": format!("{}/id/{}/{}", sh.login_url, sh.opts.org_id, uid(s.user)),
                   "token_type": "access_token", "exp": (s.last_activity + timeout) / 1000,
                   "iat": s.issued / 1000, "nbf": s.issued / 1000}),
        );
    }
    if let Some(g) = a.refresh.get(tok) {
        return Reply::json(
            200,
            json!({"active": true, "scope": g.scope, "client_id": sh.opts.client_id,
                   "username": uname(g.user), "token_type": "refresh_token",
                   "iat": g.issued / 1000, "nbf": g.issued / 1000}),
        );
    }
    Reply::json(200, json!({"active": false}))
}

fn userinfo(sh: &Shared, req: &Req, identity: bool) -> Reply {
    let Some(who) = authenticate(sh, req) else {
        return if identity {
            Reply::text(403, "text/plain", "Bad_OAuth_Token".into())
        } else {
            super::http::sf_error(403, "Bad_OAuth_Token", "Bad_OAuth_Token")
        };
    };
    let users = sh.store().users.clone();
    let Some(u) = users.get(who.user) else {
        return not_found();
    };
    let id = format!("{}/id/{}/{}", sh.login_url, sh.opts.org_id, u.id);
    let v = format!("v{}", sh.opts.latest_api_version);
    let urls = json!({
        "enterprise": format!("{}/services/Soap/c/{}/{}", sh.instance_url, sh.opts.latest_api_version, &sh.opts.org_id[..15.min(sh.opts.org_id.len())]),
        "partner": format!("{}/services/Soap/u/{}/{}", sh.instance_url, sh.opts.latest_api_version, &sh.opts.org_id[..15.min(sh.opts.org_id.len())]),
        "rest": format!("{}/services/data/{v}/", sh.instance_url),
        "sobjects": format!("{}/services/data/{v}/sobjects/", sh.instance_url),
        "query": format!("{}/services/data/{v}/query/", sh.instance_url),
        "limits": format!("{}/services/data/{v}/limits", sh.instance_url),
        "custom_domain": sh.instance_url,
    });
    if identity {
        Reply::json(
            200,
            json!({"id": id, "asserted_user": true, "user_id": u.id, "organization_id": sh.opts.org_id,
                   "username": u.username, "nick_name": u.username.split('@').next().unwrap_or(""),
                   "display_name": u.name, "email": u.username, "active": true, "user_type": "STANDARD",
                   "language": "en_US", "locale": "en_US", "utcOffset": 0, "urls": urls}),
        )
    } else {
        Reply::json(
            200,
            json!({"sub": id, "user_id": u.id, "organization_id": sh.opts.org_id,
                   "preferred_username": u.username, "name": u.name, "email": u.username,
                   "email_verified": true, "active": true, "user_type": "STANDARD", "urls": urls}),
        )
    }
}
