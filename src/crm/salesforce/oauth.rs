//! The pure parts of Salesforce OAuth (§1): login hosts, the authorize URL
//! (web-server flow with PKCE and state, §1.2), the callback, token
//! responses (§1.3), and the token endpoint's form bodies (§1.2, §1.4,
//! §1.7). The HTTP exchange, sealing and single-flight refresh are the I/O
//! layer's.
//!
//! - **Login host** (§1.1, conventions): `login.salesforce.com`,
//!   `test.salesforce.com`, a My Domain (`*.my.salesforce.com`) or a
//!   sandbox My Domain (`*.sandbox.my.salesforce.com`), always HTTPS; or
//!   any loopback `http(s)://127.0.0.1|localhost|[::1]:port` for tests and
//!   the simulator (§1.8: scheme, host and port configurable). Experience
//!   Cloud and other custom login URLs, which §1.1 says also work, are not
//!   accepted yet: enrichd asks for one of the forms above.
//! - **Data host** = the token response's `instance_url`, never derived
//!   from the login host (§1.8); it must be HTTPS (or loopback HTTP) with
//!   no path, and not a `*.lightning.force.com` UI host (Nango refuses
//!   those, §9).
//! - **PKCE**: the verifier, S256 challenge and state are `crm::pkce::Pkce`,
//!   shared with HubSpot's connect flow. Salesforce takes `code_challenge` alone (S256 is its only
//!   method, §1.2), so no `code_challenge_method` is sent.
//! - **Token response** (§1.3): no `expires_in` (expiry is unknown: refresh
//!   on `INVALID_SESSION_ID`); `issued_at` is epoch ms as a string;
//!   `refresh_token` only with the `refresh_token` scope (and, with
//!   rotation, a new one on every refresh, §1.4); `id` names the org and
//!   the user (`…/id/<orgId>/<userId>`).

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use url::{Host, Url};

use super::is_record_id;
use crate::core::value::UnixMillis;
use crate::crm::pkce::Pkce;
use crate::secret::Secret;

pub const AUTHORIZE_PATH: &str = "/services/oauth2/authorize";
pub const TOKEN_PATH: &str = "/services/oauth2/token";
pub const REVOKE_PATH: &str = "/services/oauth2/revoke";
/// `api` for the REST API, `refresh_token` for a refresh token (§1.2).
pub const DEFAULT_SCOPES: &[&str] = &["api", "refresh_token"];

/// What is wrong, without ever echoing a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error(
        "Salesforce login host `{given}` is not accepted: {why}. Use https://login.salesforce.com (production), https://test.salesforce.com (sandbox), your My Domain (https://<name>.my.salesforce.com or https://<name>--<sandbox>.sandbox.my.salesforce.com), or a loopback URL for tests"
    )]
    BadLoginHost { given: String, why: String },
    #[error(
        "Salesforce returned an instance_url that is not usable ({why}); nothing is sent there"
    )]
    BadInstanceUrl { why: String },
    #[error(
        "redirect URI `{given}` is not accepted: {why} (it must be https, or http on a loopback address, and equal the connected app's Callback URL)"
    )]
    BadRedirectUri { given: String, why: String },
    #[error("Salesforce's token endpoint answered something unexpected: {0}")]
    Decode(String),
    #[error("the identity URL in the token response is not `…/id/<orgId>/<userId>`")]
    BadIdentity,
    #[error("Salesforce refused the authorization: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error(
        "the OAuth callback's state does not match this connect attempt (a stale browser tab, or a forged request); run `enrichd connect salesforce` again"
    )]
    StateMismatch,
    #[error("the OAuth callback carries no authorization code")]
    NoCode,
}

/// Which kind of login host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// `login.salesforce.com`.
    Production,
    /// `test.salesforce.com`.
    Sandbox,
    /// `<name>.my.salesforce.com`.
    MyDomain,
    /// `<name>--<sandbox>.sandbox.my.salesforce.com`.
    SandboxMyDomain,
    /// A loopback URL (tests, simulator).
    Loopback,
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// `scheme://host[:port]` of a URL with no path, query, fragment or user.
fn origin_only(u: &Url) -> Result<String, String> {
    if !u.username().is_empty() || u.password().is_some() {
        return Err("it carries a user name or password".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("it has a query or fragment".into());
    }
    if !matches!(u.path(), "" | "/") {
        return Err(format!("it has a path (`{}`)", u.path()));
    }
    let host = u.host_str().ok_or("it has no host")?;
    Ok(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

fn my_domain_label_ok(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 80
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A validated login (authorization) host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginHost {
    base: String,
    kind: HostKind,
}

impl LoginHost {
    /// Accepts a URL (`https://acme.my.salesforce.com`) or a bare host
    /// (`login.salesforce.com`, taken as HTTPS).
    pub fn parse(given: &str) -> Result<LoginHost, OAuthError> {
        let g = given.trim();
        let bad = |why: &str| OAuthError::BadLoginHost {
            given: g.to_string(),
            why: why.to_string(),
        };
        let text = if g.contains("://") {
            g.to_string()
        } else {
            format!("https://{g}")
        };
        let u = Url::parse(&text).map_err(|_| bad("it is not a URL"))?;
        let base = origin_only(&u).map_err(|w| bad(&w))?;
        let host = u.host().ok_or_else(|| bad("it has no host"))?;
        if is_loopback(&host) {
            if !matches!(u.scheme(), "http" | "https") {
                return Err(bad("only http or https"));
            }
            return Ok(LoginHost {
                base,
                kind: HostKind::Loopback,
            });
        }
        if u.scheme() != "https" {
            return Err(bad("Salesforce login hosts are HTTPS only"));
        }
        if u.port().is_some() {
            return Err(bad("a Salesforce login host has no port"));
        }
        let Host::Domain(d) = host else {
            return Err(bad("an IP address is not a Salesforce host"));
        };
        let d = d.to_ascii_lowercase();
        let kind = if d == "login.salesforce.com" {
            HostKind::Production
        } else if d == "test.salesforce.com" {
            HostKind::Sandbox
        } else if let Some(label) = d.strip_suffix(".sandbox.my.salesforce.com") {
            if !my_domain_label_ok(label) {
                return Err(bad("the My Domain name is not valid"));
            }
            HostKind::SandboxMyDomain
        } else if let Some(label) = d.strip_suffix(".my.salesforce.com") {
            if !my_domain_label_ok(label) {
                return Err(bad("the My Domain name is not valid"));
            }
            HostKind::MyDomain
        } else {
            return Err(bad("it is not a Salesforce login host"));
        };
        Ok(LoginHost {
            base: format!("https://{d}"),
            kind,
        })
    }

    pub fn kind(&self) -> HostKind {
        self.kind
    }

    /// `scheme://host[:port]`, no trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn is_sandbox(&self) -> bool {
        matches!(self.kind, HostKind::Sandbox | HostKind::SandboxMyDomain)
    }

    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base)
    }

    pub fn revoke_url(&self) -> String {
        format!("{}{REVOKE_PATH}", self.base)
    }

    /// The JWT `aud` for this host (§1.5): `https://test.salesforce.com`
    /// for sandboxes, `https://login.salesforce.com` otherwise, the
    /// loopback base itself for a simulator.
    pub fn jwt_audience(&self) -> String {
        match self.kind {
            HostKind::Sandbox | HostKind::SandboxMyDomain => "https://test.salesforce.com".into(),
            HostKind::Production | HostKind::MyDomain => "https://login.salesforce.com".into(),
            HostKind::Loopback => self.base.clone(),
        }
    }

    /// The browser URL of the web-server flow (§1.2): `response_type=code`,
    /// client id, exact redirect URI, scopes (`%20`-separated), state and
    /// the S256 `code_challenge`; `prompt` optional (`login consent`).
    pub fn authorize_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scopes: &[&str],
        pkce: &Pkce,
        prompt: Option<&str>,
    ) -> String {
        let base = format!("{}{AUTHORIZE_PATH}", self.base);
        let Ok(mut u) = Url::parse(&base) else {
            // `base` was built from a parsed URL.
            return base;
        };
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &scopes.join(" "))
                .append_pair("state", &pkce.state)
                .append_pair("code_challenge", &pkce.challenge);
            if let Some(p) = prompt {
                q.append_pair("prompt", p);
            }
        }
        // Spaces as %20 (§1.2 writes `api%20refresh_token`); a literal `+`
        // was already encoded as %2B.
        u.to_string().replace('+', "%20")
    }
}

/// The redirect URI must be HTTPS, or HTTP on a loopback address (the
/// connect command's local callback).
pub fn validate_redirect_uri(given: &str) -> Result<(), OAuthError> {
    let bad = |why: &str| OAuthError::BadRedirectUri {
        given: given.to_string(),
        why: why.to_string(),
    };
    let u = Url::parse(given.trim()).map_err(|_| bad("it is not a URL"))?;
    let host = u.host().ok_or_else(|| bad("it has no host"))?;
    match u.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&host) => Ok(()),
        _ => Err(bad("plain http is only allowed on a loopback address")),
    }
}

/// Reads the callback's query string (§1.2: `code` and `state`, or `error`
/// and `error_description`) and checks the state.
pub fn parse_callback(query: &str, expected_state: &str) -> Result<String, OAuthError> {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Some(error) = get("error") {
        return Err(OAuthError::Denied {
            error,
            description: get("error_description"),
        });
    }
    let state = get("state").unwrap_or_default();
    if aws_lc_rs::constant_time::verify_slices_are_equal(
        state.as_bytes(),
        expected_state.as_bytes(),
    )
    .is_err()
        || expected_state.is_empty()
    {
        return Err(OAuthError::StateMismatch);
    }
    get("code")
        .filter(|c| !c.is_empty())
        .ok_or(OAuthError::NoCode)
}

/// Validates `instance_url` (§1.3, §1.8) and returns `scheme://host[:port]`.
pub fn validate_instance_url(given: &str) -> Result<String, OAuthError> {
    let bad = |why: String| OAuthError::BadInstanceUrl { why };
    let u = Url::parse(given.trim()).map_err(|_| bad("not a URL".into()))?;
    let base = origin_only(&u).map_err(bad)?;
    let host = u.host().ok_or_else(|| bad("no host".into()))?;
    match u.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        s => {
            return Err(bad(format!(
                "scheme `{s}`: only https (or http on loopback)"
            )));
        }
    }
    if let Host::Domain(d) = host
        && d.to_ascii_lowercase().ends_with(".lightning.force.com")
    {
        return Err(bad(
            "a Lightning UI host (*.lightning.force.com) is not an API host".into(),
        ));
    }
    Ok(base)
}

/// The org and user an identity URL names (`…/id/<orgId>/<userId>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `00D…`: compared with Outbound Messages' `OrganizationId`.
    pub org_id: String,
    /// `005…`: the integration user (own-change recognition).
    pub user_id: String,
    /// The URL itself (§1.3 `id`).
    pub url: String,
}

/// Parses the identity URL (§1.3): the last two path segments after `id`,
/// an org Id (`00D`) and a user Id (`005`).
pub fn parse_identity_url(id: &str) -> Result<Identity, OAuthError> {
    let u = Url::parse(id.trim()).map_err(|_| OAuthError::BadIdentity)?;
    let segs: Vec<&str> = u
        .path_segments()
        .ok_or(OAuthError::BadIdentity)?
        .filter(|s| !s.is_empty())
        .collect();
    let [.., marker, org, user] = segs.as_slice() else {
        return Err(OAuthError::BadIdentity);
    };
    if *marker != "id"
        || !is_record_id(org)
        || !is_record_id(user)
        || !org.starts_with("00D")
        || !user.starts_with("005")
    {
        return Err(OAuthError::BadIdentity);
    }
    Ok(Identity {
        org_id: (*org).to_string(),
        user_id: (*user).to_string(),
        url: id.trim().to_string(),
    })
}

/// A token-endpoint answer (§1.3), for every grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: Secret,
    /// Present on the code grant with the `refresh_token` scope, and on
    /// refreshes when rotation is on (§1.4): persist it before using the
    /// new access token.
    pub refresh_token: Option<Secret>,
    /// Validated `scheme://host[:port]`; every data call goes there.
    pub instance_url: String,
    /// From `id`; refresh answers normally carry it too.
    pub identity: Option<Identity>,
    pub issued_at: Option<UnixMillis>,
    /// `issued_at` as sent (for [`verify_signature`]).
    pub issued_at_raw: Option<String>,
    pub scopes: Vec<String>,
    pub signature: Option<String>,
}

/// Parses a token answer. Errors never include the body (it holds tokens).
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, OAuthError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| OAuthError::Decode("the body is not JSON".into()))?;
    if !v.is_object() {
        return Err(OAuthError::Decode("the body is not a JSON object".into()));
    }
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let access_token = s("access_token")
        .map(Secret::new)
        .ok_or_else(|| OAuthError::Decode("no access_token".into()))?;
    let instance_url = validate_instance_url(
        s("instance_url").ok_or_else(|| OAuthError::Decode("no instance_url".into()))?,
    )?;
    let identity = s("id").map(parse_identity_url).transpose()?;
    let issued_at_raw = match v.get("issued_at") {
        Some(Value::String(t)) => Some(t.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let issued_at = issued_at_raw.as_deref().and_then(|t| t.parse::<i64>().ok());
    if let Some(tt) = s("token_type")
        && !tt.eq_ignore_ascii_case("bearer")
    {
        return Err(OAuthError::Decode(format!(
            "token_type `{tt}` is not Bearer"
        )));
    }
    Ok(TokenResponse {
        access_token,
        refresh_token: s("refresh_token").map(Secret::new),
        instance_url,
        identity,
        issued_at,
        issued_at_raw,
        scopes: s("scope")
            .map(|sc| sc.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        signature: s("signature").map(String::from),
    })
}

/// Checks `signature` = Base64(HMAC-SHA256(consumer secret, id + issued_at))
/// (§1.3), in constant time. False when any part is missing.
pub fn verify_signature(resp: &TokenResponse, consumer_secret: &Secret) -> bool {
    use base64::Engine as _;
    let (Some(id), Some(at), Some(sig)) = (
        resp.identity.as_ref(),
        resp.issued_at_raw.as_deref(),
        resp.signature.as_deref(),
    ) else {
        return false;
    };
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
        return false;
    };
    let Ok(mut mac) =
        <Hmac<Sha256> as KeyInit>::new_from_slice(consumer_secret.expose().as_bytes())
    else {
        return false;
    };
    mac.update(id.url.as_bytes());
    mac.update(at.as_bytes());
    mac.verify_slice(&sig).is_ok()
}

/// Form fields of the code exchange (§1.2).
pub fn authorization_code_form(
    code: &str,
    client_id: &str,
    client_secret: Option<&Secret>,
    redirect_uri: &str,
    verifier: &Secret,
) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code.to_string()),
        ("client_id", client_id.to_string()),
    ];
    if let Some(s) = client_secret {
        f.push(("client_secret", s.expose().to_string()));
    }
    f.push(("redirect_uri", redirect_uri.to_string()));
    f.push(("code_verifier", verifier.expose().to_string()));
    f
}

/// Form fields of a refresh (§1.4; the secret is optional for PKCE apps).
pub fn refresh_form(
    refresh_token: &Secret,
    client_id: &str,
    client_secret: Option<&Secret>,
) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", refresh_token.expose().to_string()),
        ("client_id", client_id.to_string()),
    ];
    if let Some(s) = client_secret {
        f.push(("client_secret", s.expose().to_string()));
    }
    f
}

/// Form fields of a revocation (§1.7): revoking the refresh token revokes
/// every access token issued from it.
pub fn revoke_form(token: &Secret) -> Vec<(&'static str, String)> {
    vec![("token", token.expose().to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn pkce() -> Pkce {
        Pkce {
            verifier: Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            state: "st8+/=".into(),
        }
    }

    #[test]
    fn login_hosts() {
        for (g, kind, base) in [
            (
                "login.salesforce.com",
                HostKind::Production,
                "https://login.salesforce.com",
            ),
            (
                "https://TEST.salesforce.com/",
                HostKind::Sandbox,
                "https://test.salesforce.com",
            ),
            (
                "https://acme.my.salesforce.com",
                HostKind::MyDomain,
                "https://acme.my.salesforce.com",
            ),
            (
                "https://acme--uat.sandbox.my.salesforce.com",
                HostKind::SandboxMyDomain,
                "https://acme--uat.sandbox.my.salesforce.com",
            ),
            (
                "http://127.0.0.1:8443",
                HostKind::Loopback,
                "http://127.0.0.1:8443",
            ),
            (
                "http://localhost:9000/",
                HostKind::Loopback,
                "http://localhost:9000",
            ),
            ("http://[::1]:9000", HostKind::Loopback, "http://[::1]:9000"),
        ] {
            let h = LoginHost::parse(g).unwrap_or_else(|e| panic!("{g}: {e}"));
            assert_eq!(h.kind(), kind, "{g}");
            assert_eq!(h.base(), base, "{g}");
        }
        for bad in [
            "http://login.salesforce.com",
            "https://login.salesforce.com:444",
            "https://evil.com",
            "https://login.salesforce.com.evil.com",
            "https://my.salesforce.com",
            "https://-x.my.salesforce.com",
            "https://acme.lightning.force.com",
            "https://login.salesforce.com/services",
            "https://u:p@login.salesforce.com",
            "https://login.salesforce.com?x=1",
            "https://10.0.0.1",
            "ftp://127.0.0.1",
            "",
            "not a url at all",
        ] {
            assert!(LoginHost::parse(bad).is_err(), "{bad}");
        }
        let h = LoginHost::parse("login.salesforce.com").unwrap();
        assert_eq!(
            h.token_url(),
            "https://login.salesforce.com/services/oauth2/token"
        );
        assert_eq!(
            h.revoke_url(),
            "https://login.salesforce.com/services/oauth2/revoke"
        );
        assert_eq!(h.jwt_audience(), "https://login.salesforce.com");
        assert!(!h.is_sandbox());
        let s = LoginHost::parse("acme--uat.sandbox.my.salesforce.com").unwrap();
        assert!(s.is_sandbox());
        assert_eq!(s.jwt_audience(), "https://test.salesforce.com");
        assert_eq!(
            LoginHost::parse("http://127.0.0.1:7000")
                .unwrap()
                .jwt_audience(),
            "http://127.0.0.1:7000"
        );
    }

    #[test]
    fn authorize_url() {
        let h = LoginHost::parse("https://acme.my.salesforce.com").unwrap();
        let u = h.authorize_url(
            "3MVG9consumer",
            "http://127.0.0.1:8765/callback",
            DEFAULT_SCOPES,
            &pkce(),
            None,
        );
        assert_eq!(
            u,
            "https://acme.my.salesforce.com/services/oauth2/authorize?response_type=code&client_id=3MVG9consumer\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&scope=api%20refresh_token\
             &state=st8%2B%2F%3D&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let u = h.authorize_url(
            "c",
            "https://x.example/cb",
            &["api"],
            &pkce(),
            Some("login consent"),
        );
        assert!(u.ends_with("&prompt=login%20consent"), "{u}");
        // The challenge the shared helper makes is S256 of its verifier.
        let p = Pkce::new().unwrap();
        use sha2::Digest as _;
        let want = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(p.verifier.expose().as_bytes()));
        assert_eq!(p.challenge, want);
    }

    #[test]
    fn redirect_uris_and_callbacks() {
        assert!(validate_redirect_uri("http://127.0.0.1:8765/callback").is_ok());
        assert!(validate_redirect_uri("https://enrichd.example.com/cb").is_ok());
        assert!(validate_redirect_uri("http://enrichd.example.com/cb").is_err());
        assert!(validate_redirect_uri("nope").is_err());
        assert_eq!(
            parse_callback("?code=aPrx.A%3D%3D&state=st", "st").unwrap(),
            "aPrx.A=="
        );
        assert_eq!(
            parse_callback("code=c&state=other", "st"),
            Err(OAuthError::StateMismatch)
        );
        assert_eq!(
            parse_callback("code=c", "st"),
            Err(OAuthError::StateMismatch)
        );
        assert_eq!(
            parse_callback("code=c&state=", ""),
            Err(OAuthError::StateMismatch)
        );
        assert_eq!(parse_callback("state=st", "st"), Err(OAuthError::NoCode));
        let e = parse_callback(
            "error=access_denied&error_description=end-user+denied+authorization&state=st",
            "st",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("access_denied (end-user denied authorization)"),
            "{e}"
        );
    }

    const RESPONSE: &str = r#"{ "access_token": "00Dxx0000001gPL!AQ0AQHsecret",
  "refresh_token": "5Aep861secret",
  "signature": "CMJ4l+CCaPQiKjoOEwEig9H4wqhpuLSk4J2urAe+fVg=",
  "scope": "refresh_token api id",
  "id_token": "eyJ...",
  "instance_url": "https://yourInstance.my.salesforce.com",
  "id": "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS",
  "token_type": "Bearer",
  "issued_at": "1278448384422" }"#;

    #[test]
    fn token_response_from_the_reference() {
        let t = parse_token_response(RESPONSE.as_bytes()).unwrap();
        assert_eq!(t.access_token.expose(), "00Dxx0000001gPL!AQ0AQHsecret");
        assert_eq!(
            t.refresh_token.as_ref().map(Secret::expose),
            Some("5Aep861secret")
        );
        assert_eq!(
            t.instance_url,
            "https://yourInstance.my.salesforce.com".to_ascii_lowercase()
        );
        let id = t.identity.as_ref().unwrap();
        assert_eq!(id.org_id, "00Dxx0000001gPLEAY");
        assert_eq!(id.user_id, "005xx000001SwiUAAS");
        assert_eq!(t.issued_at, Some(1_278_448_384_422));
        assert_eq!(t.scopes, vec!["refresh_token", "api", "id"]);
        // Debug never shows a token.
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("AQ0AQHsecret") && !dbg.contains("5Aep861secret"),
            "{dbg}"
        );
    }

    #[test]
    fn token_response_variants_and_errors() {
        // A refresh answer: no refresh token, issued_at as a number, no id.
        let t = parse_token_response(
            br#"{"access_token":"x","instance_url":"http://127.0.0.1:9000/","issued_at":5}"#,
        )
        .unwrap();
        assert!(t.refresh_token.is_none() && t.identity.is_none());
        assert_eq!(t.instance_url, "http://127.0.0.1:9000");
        assert_eq!(t.issued_at, Some(5));
        for (body, want) in [
            (&br#"{"instance_url":"https://a.my.salesforce.com"}"#[..], "access_token"),
            (br#"{"access_token":"tok-secret"}"#, "instance_url"),
            (br#"["tok-secret"]"#, "object"),
            (b"tok-secret", "JSON"),
            (br#"{"access_token":"tok-secret","instance_url":"https://a.my.salesforce.com","token_type":"mac"}"#, "Bearer"),
        ] {
            let e = parse_token_response(body).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert!(!e.to_string().contains("tok-secret"), "{e}");
        }
        for bad in [
            "http://evil.example.com",
            "https://acme.lightning.force.com",
            "https://a.my.salesforce.com/services/data",
            "javascript:alert(1)",
        ] {
            let body = format!(r#"{{"access_token":"x","instance_url":"{bad}"}}"#);
            assert!(
                matches!(
                    parse_token_response(body.as_bytes()),
                    Err(OAuthError::BadInstanceUrl { .. })
                ),
                "{bad}"
            );
        }
        let body = r#"{"access_token":"x","instance_url":"https://a.my.salesforce.com","id":"https://login.salesforce.com/id/nope"}"#;
        assert_eq!(
            parse_token_response(body.as_bytes()),
            Err(OAuthError::BadIdentity)
        );
    }

    #[test]
    fn identity_urls() {
        let i =
            parse_identity_url("https://test.salesforce.com/id/00Dxx0000001gPL/005xx000001SwiU")
                .unwrap();
        assert_eq!(
            (i.org_id.as_str(), i.user_id.as_str()),
            ("00Dxx0000001gPL", "005xx000001SwiU")
        );
        for bad in [
            "https://login.salesforce.com/id/00Dxx0000001gPLEAY",
            "https://login.salesforce.com/x/00Dxx0000001gPLEAY/005xx000001SwiUAAS",
            "https://login.salesforce.com/id/005xx000001SwiUAAS/00Dxx0000001gPLEAY",
            "not a url",
        ] {
            assert_eq!(
                parse_identity_url(bad),
                Err(OAuthError::BadIdentity),
                "{bad}"
            );
        }
    }

    #[test]
    fn signature_check() {
        let secret = Secret::new("consumer-secret");
        let mut t = parse_token_response(RESPONSE.as_bytes()).unwrap();
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"consumer-secret").unwrap();
        mac.update(
            b"https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS1278448384422",
        );
        t.signature =
            Some(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
        assert!(verify_signature(&t, &secret));
        assert!(!verify_signature(&t, &Secret::new("other")));
        t.signature = Some("not base64!".into());
        assert!(!verify_signature(&t, &secret));
        t.signature = None;
        assert!(!verify_signature(&t, &secret));
    }

    #[test]
    fn forms() {
        let f = authorization_code_form(
            "code1",
            "cid",
            Some(&Secret::new("sec")),
            "http://127.0.0.1:1/cb",
            &Secret::new("ver"),
        );
        assert_eq!(
            f,
            vec![
                ("grant_type", "authorization_code".to_string()),
                ("code", "code1".into()),
                ("client_id", "cid".into()),
                ("client_secret", "sec".into()),
                ("redirect_uri", "http://127.0.0.1:1/cb".into()),
                ("code_verifier", "ver".into()),
            ]
        );
        let f = refresh_form(&Secret::new("rt"), "cid", None);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0], ("grant_type", "refresh_token".to_string()));
        assert_eq!(
            revoke_form(&Secret::new("rt")),
            vec![("token", "rt".to_string())]
        );
    }
}
