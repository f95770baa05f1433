//! The Salesforce simulator over real HTTP on loopback.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use enrichd_sim::Population;
use enrichd_sim::salesforce::*;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------------------- helpers

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn pop() -> Arc<Population> {
    static P: OnceLock<Arc<Population>> = OnceLock::new();
    P.get_or_init(|| Arc::new(Population::generate(7, 6_000)))
        .clone()
}

fn data(spec: &SeedSpec) -> SalesforceData {
    SalesforceData::from_population(&pop(), wall_ms() - 60_000, spec)
}

async fn sim_with(spec: SeedSpec, opts: SalesforceOptions) -> SalesforceSim {
    start_salesforce(data(&spec), opts).await.unwrap()
}

async fn sim() -> SalesforceSim {
    sim_with(SeedSpec::new(300, 50), SalesforceOptions::defaults()).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    fn header(&self, k: &str) -> Option<String> {
        self.headers.get(k).map(|v| v.to_str().unwrap().to_string())
    }
    /// `errorCode` of the first element of an error array.
    fn error_code(&self) -> String {
        self.json()[0]["errorCode"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = rb.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

const V: &str = "v62.0";
const REDIRECT: &str = "http://localhost:8765/oauth/callback";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn query_of(location: &str) -> BTreeMap<String, String> {
    let u = url::Url::parse(location).unwrap();
    u.query_pairs().into_owned().collect()
}

async fn authorize(s: &SalesforceSim, scope: &str, challenge: Option<&str>) -> Resp {
    let mut q = vec![
        ("response_type", "code".to_string()),
        ("client_id", s.options().client_id.clone()),
        ("redirect_uri", REDIRECT.to_string()),
        ("scope", scope.to_string()),
        ("state", "csrf-123".to_string()),
    ];
    if let Some(c) = challenge {
        q.push(("code_challenge", c.to_string()));
        q.push(("code_challenge_method", "S256".to_string()));
    }
    send(
        client()
            .get(format!("{}/services/oauth2/authorize", s.login_url()))
            .query(&q),
    )
    .await
}

async fn token_form(s: &SalesforceSim, params: &[(&str, &str)]) -> Resp {
    send(
        client()
            .post(format!("{}/services/oauth2/token", s.login_url()))
            .form(params),
    )
    .await
}

/// The whole web-server flow with PKCE; returns the token response.
async fn connect(s: &SalesforceSim) -> Value {
    let verifier = "v".repeat(43) + "erifier-0123456789";
    let r = authorize(s, "api refresh_token", Some(&challenge(&verifier))).await;
    assert_eq!(r.status, 302, "{}", r.text);
    let code = query_of(&r.header("location").unwrap())["code"].clone();
    let o = s.options();
    let t = token_form(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &o.client_id),
            ("client_secret", &o.client_secret),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(t.status, 200, "{}", t.text);
    t.json()
}

async fn access(s: &SalesforceSim) -> String {
    connect(s).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn get(s: &SalesforceSim, tok: &str, path: &str) -> Resp {
    send(
        client()
            .get(format!("{}{path}", s.instance_url()))
            .bearer_auth(tok),
    )
    .await
}

/// `GET /query?q=…` (properly encoded) with an optional batch size.
async fn soql(s: &SalesforceSim, tok: &str, q: &str, batch: Option<u32>) -> Resp {
    let mut rb = client()
        .get(format!("{}/services/data/{V}/query", s.instance_url()))
        .query(&[("q", q)])
        .bearer_auth(tok);
    if let Some(b) = batch {
        rb = rb.header("Sforce-Query-Options", format!("batchSize={b}"));
    }
    send(rb).await
}

async fn patch_json(
    s: &SalesforceSim,
    tok: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Resp {
    let mut rb = client()
        .patch(format!("{}{path}", s.instance_url()))
        .bearer_auth(tok)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    send(rb).await
}

async fn post_json(
    s: &SalesforceSim,
    tok: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Resp {
    let mut rb = client()
        .post(format!("{}{path}", s.instance_url()))
        .bearer_auth(tok)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    send(rb).await
}

const ENRICHD: [(&str, &str); 3] = [
    ("Sforce-Auto-Assign", "FALSE"),
    ("Sforce-Call-Options", "client=enrichd"),
    (
        "Sforce-Duplicate-Rule-Header",
        "allowSave=true, includeRecordDetails=true, runAsCurrentUser=true",
    ),
];

fn unconverted_live_leads(s: &SalesforceSim) -> Vec<String> {
    let conv: HashSet<String> = s.converted_lead_ids().into_iter().collect();
    s.lead_ids()
        .into_iter()
        .filter(|id| !conv.contains(id) && s.field(id, "IsDeleted") == Some(json!(false)))
        .collect()
}

// ------------------------------------------------------------------------------- OAuth

#[tokio::test]
async fn web_server_flow_with_pkce_and_state() {
    let s = sim().await;
    let o = s.options().clone();
    let verifier = "a".repeat(50);
    let r = authorize(&s, "api refresh_token", Some(&challenge(&verifier))).await;
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["state"], "csrf-123");
    let code = q["code"].clone();

    // Missing verifier → invalid_grant; wrong verifier → invalid_request (§1.2).
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", o.client_id.as_str()),
        ("client_secret", o.client_secret.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let r = token_form(&s, &base).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    let mut wrong = base.to_vec();
    wrong.push((
        "code_verifier",
        "b-wrong-verifier-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    ));
    let r = token_form(&s, &wrong).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
    // Wrong redirect_uri.
    let mut bad_uri = base.to_vec();
    bad_uri[4] = ("redirect_uri", "http://localhost:1/other");
    bad_uri.push(("code_verifier", verifier.as_str()));
    let r = token_form(&s, &bad_uri).await;
    assert_eq!(r.json()["error"], "redirect_uri_mismatch");
    // Wrong secret.
    let mut bad_secret = base.to_vec();
    bad_secret[3] = ("client_secret", "nope");
    bad_secret.push(("code_verifier", verifier.as_str()));
    let r = token_form(&s, &bad_secret).await;
    assert_eq!(r.json()["error"], "invalid_client");

    let mut good = base.to_vec();
    good.push(("code_verifier", verifier.as_str()));
    let r = token_form(&s, &good).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.json();
    let keys: HashSet<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    let want: HashSet<&str> = [
        "access_token",
        "refresh_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    ]
    .into();
    assert_eq!(keys, want, "exact §1.3 shape, no expires_in");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "api refresh_token");
    assert_eq!(t["instance_url"], s.instance_url());
    assert_ne!(s.instance_url(), s.login_url());
    assert!(t["issued_at"].is_string());
    let id = t["id"].as_str().unwrap();
    assert!(id.starts_with(&format!("{}/id/{}/005", s.login_url(), s.org_id())));
    let at = t["access_token"].as_str().unwrap();
    assert!(at.starts_with(&format!("{}!", &s.org_id()[..15])));
    // signature = Base64(HMAC-SHA256(secret, id + issued_at)).
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(o.client_secret.as_bytes()).unwrap();
    mac.update(id.as_bytes());
    mac.update(t["issued_at"].as_str().unwrap().as_bytes());
    assert_eq!(t["signature"], STANDARD.encode(mac.finalize().into_bytes()));

    // The code is single-use.
    let r = token_form(&s, &good).await;
    assert_eq!(r.json()["error"], "invalid_grant");

    // Data calls go to the instance host; the login host answers 404.
    let r = send(
        client()
            .get(format!("{}/services/data/{V}/limits", s.login_url()))
            .bearer_auth(at),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "NOT_FOUND");
    let r = get(&s, at, &format!("/services/data/{V}/limits")).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("sforce-limit-info")
            .unwrap()
            .starts_with("api-usage=")
    );
    // And the instance host does not serve OAuth.
    let r = send(
        client()
            .post(format!("{}/services/oauth2/token", s.instance_url()))
            .form(&[("grant_type", "refresh_token")]),
    )
    .await;
    assert_eq!(r.status, 404);

    // Authorize errors: unknown client → error page; bad scope → redirect with error + state.
    let r = send(client().get(format!(
        "{}/services/oauth2/authorize?response_type=code&client_id=nope&redirect_uri={REDIRECT}",
        s.login_url()
    )))
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("invalid_client_id"));
    let r = authorize(&s, "api full_access_nope", None).await;
    assert_eq!(r.status, 302);
    let q = query_of(&r.header("location").unwrap());
    assert_eq!(q["error"], "invalid_scope");
    assert_eq!(q["state"], "csrf-123");

    // Without refresh_token scope there is no refresh token.
    let r = authorize(&s, "api", None).await;
    let code = query_of(&r.header("location").unwrap())["code"].clone();
    let r = token_form(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &o.client_id),
            ("client_secret", &o.client_secret),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json().get("refresh_token").is_none());
    assert_eq!(s.stats().token_grants["authorization_code"], 2);
    s.shutdown().await;
}

#[tokio::test]
async fn refresh_without_and_with_rotation_and_revocation() {
    // No rotation: the answer has no refresh_token; the same one keeps working.
    let s = sim().await;
    let o = s.options().clone();
    let t = connect(&s).await;
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let r = token_form(
            &s,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", &o.client_id),
                ("client_secret", &o.client_secret),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.json().get("refresh_token").is_none());
        assert_eq!(r.json()["instance_url"], s.instance_url());
    }
    // Revoking the refresh token revokes the access tokens issued from it.
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(
        get(&s, at, &format!("/services/data/{V}/limits"))
            .await
            .status,
        200
    );
    let r = send(
        client()
            .post(format!("{}/services/oauth2/revoke", s.login_url()))
            .form(&[("token", rt.as_str())]),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, "");
    assert_eq!(
        get(&s, at, &format!("/services/data/{V}/limits"))
            .await
            .status,
        401
    );
    let r = token_form(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", &o.client_id),
            ("client_secret", &o.client_secret),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_grant", "error_description": "expired access/refresh token"})
    );
    let r = send(
        client()
            .post(format!("{}/services/oauth2/revoke", s.login_url()))
            .form(&[("token", "unknown")]),
    )
    .await;
    assert_eq!(r.status, 400);
    s.shutdown().await;

    // Rotation: each refresh returns a new refresh token; the old one is then invalid_grant.
    let s = sim_with(
        SeedSpec::new(20, 0),
        SalesforceOptions::defaults().with_rotation(true),
    )
    .await;
    let t = connect(&s).await;
    let rt1 = t["refresh_token"].as_str().unwrap().to_string();
    let refresh = |rt: String| {
        let s = &s;
        let o = o.clone();
        async move {
            token_form(
                s,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", &o.client_id),
                    ("client_secret", &o.client_secret),
                ],
            )
            .await
        }
    };
    let r = refresh(rt1.clone()).await;
    assert_eq!(r.status, 200);
    let rt2 = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    assert!(!s.refresh_token_valid(&rt1));
    assert!(s.refresh_token_valid(&rt2));
    let r = refresh(rt1).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    let new_at = refresh(rt2).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(&s, &new_at, &format!("/services/data/{V}/limits"))
            .await
            .status,
        200
    );
    assert_eq!(s.stats().token_grants["refresh_token"], 2);
    s.shutdown().await;
}

fn jwt(key_file: &str, claims: &Value) -> String {
    let der = std::fs::read(format!(
        "{}/tests/fixtures/{key_file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let kp = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let msg = format!("{h}.{p}");
    let mut sig = vec![0u8; kp.public_modulus_len()];
    kp.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        msg.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn jwt_bearer_flow() {
    let pubkey = std::fs::read(format!(
        "{}/tests/fixtures/sf_jwt_test_pub.spki.der",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let s = sim_with(
        SeedSpec::new(20, 0),
        SalesforceOptions::defaults().with_jwt_public_key(pubkey),
    )
    .await;
    let o = s.options().clone();
    let now = s.now_ms() / 1000;
    let claims =
        |exp: i64| json!({"iss": o.client_id, "sub": o.username, "aud": s.login_url(), "exp": exp});
    let grant = |a: String| {
        let s = &s;
        async move {
            token_form(
                s,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &a),
                ],
            )
            .await
        }
    };
    let r = grant(jwt("sf_jwt_test_key.pk8.der", &claims(now + 170))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.json();
    assert!(t.get("refresh_token").is_none(), "no refresh token for JWT");
    assert_eq!(t["instance_url"], s.instance_url());
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(
        get(&s, at, &format!("/services/data/{V}/limits"))
            .await
            .status,
        200
    );

    // Signed with another key.
    let r = grant(jwt("sf_jwt_other_key.pk8.der", &claims(now + 120))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    // Expired.
    let r = grant(jwt("sf_jwt_test_key.pk8.der", &claims(now - 5))).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // Too far in the future (beyond 3 min).
    let r = grant(jwt("sf_jwt_test_key.pk8.der", &claims(now + 3600))).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // Wrong audience, wrong issuer, unknown user.
    let mut c = claims(now + 100);
    c["aud"] = json!("https://login.salesforce.com");
    let r = grant(jwt("sf_jwt_test_key.pk8.der", &c)).await;
    assert_eq!(r.json()["error_description"], "audience is invalid");
    let mut c = claims(now + 100);
    c["iss"] = json!("someone-else");
    let r = grant(jwt("sf_jwt_test_key.pk8.der", &c)).await;
    assert_eq!(r.json()["error"], "invalid_client_id");
    let mut c = claims(now + 100);
    c["sub"] = json!("nobody@example.com");
    let r = grant(jwt("sf_jwt_test_key.pk8.der", &c)).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // Tampered payload with the original signature.
    let good = jwt("sf_jwt_test_key.pk8.der", &claims(now + 100));
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims(now + 100);
    c["sub"] = json!(s.users()[1].username);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    let r = grant(forged).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = grant("not.a.jwt".into()).await;
    assert_eq!(r.status, 400);
    s.shutdown().await;

    // The same key given as PEM (what a connected app's certificate holds).
    let der = std::fs::read(format!(
        "{}/tests/fixtures/sf_jwt_test_pub.spki.der",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let b64 = STANDARD.encode(der);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        b64.as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let s = sim_with(
        SeedSpec::new(5, 0),
        SalesforceOptions::defaults().with_jwt_public_key_pem(&pem),
    )
    .await;
    let o = s.options().clone();
    let c = json!({"iss": o.client_id, "sub": o.username, "aud": s.login_url(), "exp": s.now_ms() / 1000 + 60});
    let r = token_form(
        &s,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &jwt("sf_jwt_test_key.pk8.der", &c)),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.shutdown().await;
}

#[tokio::test]
async fn expired_session_answers_401_and_refresh_recovers() {
    let s = sim_with(
        SeedSpec::new(20, 0),
        SalesforceOptions::defaults().with_session_timeout(Duration::from_secs(600)),
    )
    .await;
    let t = connect(&s).await;
    let at = t["access_token"].as_str().unwrap().to_string();
    let path = format!("/services/data/{V}/sobjects/Lead/describe");
    assert_eq!(get(&s, &at, &path).await.status, 200);
    // Activity keeps the session alive (timeout counted from the last call).
    s.advance(Duration::from_secs(500));
    assert_eq!(get(&s, &at, &path).await.status, 200);
    s.advance(Duration::from_secs(500));
    assert_eq!(get(&s, &at, &path).await.status, 200);
    s.advance(Duration::from_secs(601));
    let r = get(&s, &at, &path).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    assert!(r.header("sforce-limit-info").is_none());
    // On demand.
    let o = s.options().clone();
    let rt = t["refresh_token"].as_str().unwrap();
    let r = token_form(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", &o.client_id),
            ("client_secret", &o.client_secret),
        ],
    )
    .await;
    let at2 = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&s, &at2, &path).await.status, 200);
    s.expire_sessions();
    assert_eq!(get(&s, &at2, &path).await.status, 401);
    // Also over /_sim.
    let at3 = access(&s).await;
    let r = send(client().post(format!("{}/_sim/sessions/expire", s.instance_url()))).await;
    assert_eq!(r.status, 204);
    assert_eq!(get(&s, &at3, &path).await.status, 401);
    assert_eq!(get(&s, "garbage", &path).await.status, 401);
    let st = s.stats();
    assert_eq!(st.unauthorized, 4);
    // 401s are not counted against the allocation.
    assert_eq!(st.api_calls, 4);
    s.shutdown().await;
}

// ------------------------------------------------------------------------------- query

#[tokio::test]
async fn query_paging_with_batch_size_and_locators() {
    let s = sim_with(SeedSpec::new(2_500, 10), SalesforceOptions::defaults()).await;
    let tok = access(&s).await;
    let r = soql(
        &s,
        &tok,
        "SELECT Id, Email, SystemModstamp FROM Lead ORDER BY SystemModstamp ASC, Id ASC",
        Some(500),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut page = r.json();
    assert_eq!(page["totalSize"], 2_500);
    assert_eq!(page["done"], false);
    let next = page["nextRecordsUrl"].as_str().unwrap().to_string();
    assert!(
        next.starts_with(&format!("/services/data/{V}/query/01g")),
        "{next}"
    );
    assert!(next.ends_with("-500"), "{next}");
    let rec = &page["records"][0];
    assert_eq!(rec["attributes"]["type"], "Lead");
    let id = rec["Id"].as_str().unwrap();
    assert_eq!(
        rec["attributes"]["url"],
        format!("/services/data/{V}/sobjects/Lead/{id}")
    );
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("00Q"));
    let ms = rec["SystemModstamp"].as_str().unwrap();
    assert_eq!(ms.len(), 28, "{ms}");
    assert!(ms.ends_with(".000+0000"), "{ms}");
    // Fields in SELECT order after `attributes` (checked on the raw text: Value sorts keys).
    let first = &r.text[r.text.find("\"records\":[").unwrap()..];
    let pos = |k: &str| first.find(&format!("\"{k}\":")).unwrap();
    assert!(pos("attributes") < pos("Id") && pos("Id") < pos("Email"));
    assert!(pos("Email") < pos("SystemModstamp"));
    let mut seen: Vec<String> = Vec::new();
    let mut calls = 1;
    loop {
        for r in page["records"].as_array().unwrap() {
            seen.push(r["Id"].as_str().unwrap().to_string());
        }
        if page["done"] == true {
            assert!(page.get("nextRecordsUrl").is_none());
            break;
        }
        assert_eq!(page["records"].as_array().unwrap().len(), 500);
        let next = page["nextRecordsUrl"].as_str().unwrap().to_string();
        let r = get(&s, &tok, &next).await;
        assert_eq!(r.status, 200, "{}", r.text);
        page = r.json();
        assert_eq!(page["totalSize"], 2_500);
        calls += 1;
    }
    assert_eq!(calls, 5);
    assert_eq!(seen.len(), 2_500);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2_500);

    // Below 200 → 200; above 2000 → 2000; default 2000.
    let r = soql(&s, &tok, "SELECT Id FROM Lead", Some(10)).await;
    assert_eq!(r.json()["records"].as_array().unwrap().len(), 200);
    let r = soql(&s, &tok, "SELECT Id FROM Lead", Some(5000)).await;
    assert_eq!(r.json()["records"].as_array().unwrap().len(), 2000);
    let r = soql(&s, &tok, "SELECT Id FROM Lead", None).await;
    let p = r.json();
    assert_eq!(p["records"].as_array().unwrap().len(), 2000);
    let next = p["nextRecordsUrl"].as_str().unwrap().to_string();
    // LIMIT and COUNT().
    let r = soql(&s, &tok, "SELECT Id FROM Lead LIMIT 7", None).await;
    assert_eq!(r.json()["totalSize"], 7);
    assert_eq!(r.json()["done"], true);
    let r = soql(
        &s,
        &tok,
        "SELECT COUNT() FROM Lead WHERE IsConverted = false",
        None,
    )
    .await;
    let n = r.json()["totalSize"].as_u64().unwrap() as usize;
    assert_eq!(n, unconverted_live_leads(&s).len());

    // Locators expire after 15 minutes of inactivity; unknown ones are refused.
    s.advance(Duration::from_secs(16 * 60));
    let tok = access(&s).await;
    let r = get(&s, &tok, &next).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "INVALID_QUERY_LOCATOR");
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/query/01g000000000000AAA-2000"),
    )
    .await;
    assert_eq!(r.error_code(), "INVALID_QUERY_LOCATOR");
    let st = s.stats();
    assert_eq!(st.query_more_calls, 4);
    assert!(st.rows_returned >= 2_500 + 200 + 2000 + 2000 + 7);
    s.shutdown().await;
}

#[tokio::test]
async fn keyset_over_equal_systemmodstamps_returns_every_lead_once() {
    let mut spec = SeedSpec::new(3_000, 0);
    spec.shared_modstamp = 600;
    spec.converted_share = 0.1;
    spec.deleted_leads = 25;
    let s = sim_with(spec, SalesforceOptions::defaults()).await;
    let tok = access(&s).await;
    // The tie group exists.
    let mut by_ms: BTreeMap<String, usize> = BTreeMap::new();
    for id in s.lead_ids() {
        let m = s.field(&id, "SystemModstamp").unwrap();
        *by_ms.entry(m.as_str().unwrap().to_string()).or_default() += 1;
    }
    assert!(by_ms.values().any(|n| *n >= 600), "a 600-lead tie group");

    // Keyset: (SystemModstamp > ts) OR (SystemModstamp = ts AND Id > id), LIMIT 200.
    let mut cursor: Option<(String, String)> = None;
    let mut got: Vec<String> = Vec::new();
    let mut calls = 0;
    loop {
        let cond = match &cursor {
            None => String::new(),
            Some((ts, id)) => {
                format!(" AND ((SystemModstamp > {ts}) OR (SystemModstamp = {ts} AND Id > '{id}'))")
            }
        };
        let q = format!(
            "SELECT Id, SystemModstamp FROM Lead WHERE IsConverted = false{cond} ORDER BY SystemModstamp ASC, Id ASC LIMIT 200"
        );
        let r = soql(&s, &tok, &q, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        calls += 1;
        let recs = r.json()["records"].as_array().unwrap().clone();
        if recs.is_empty() {
            break;
        }
        for w in recs.windows(2) {
            let a = (
                w[0]["SystemModstamp"].as_str().unwrap(),
                w[0]["Id"].as_str().unwrap(),
            );
            let b = (
                w[1]["SystemModstamp"].as_str().unwrap(),
                w[1]["Id"].as_str().unwrap(),
            );
            assert!(a < b, "ordered by (SystemModstamp, Id)");
        }
        let last = recs.last().unwrap();
        cursor = Some((
            last["SystemModstamp"].as_str().unwrap().to_string(),
            last["Id"].as_str().unwrap().to_string(),
        ));
        got.extend(recs.iter().map(|r| r["Id"].as_str().unwrap().to_string()));
    }
    let want: HashSet<String> = unconverted_live_leads(&s).into_iter().collect();
    assert_eq!(got.len(), want.len(), "no Lead repeated");
    assert_eq!(
        got.iter().cloned().collect::<HashSet<_>>(),
        want,
        "none missed"
    );
    assert!(calls >= want.len() / 200);

    // `>=` with paging through the locator also sees the whole tie group exactly once.
    let tie_ts = by_ms
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(k, _)| k.clone())
        .unwrap();
    let r = soql(
        &s,
        &tok,
        &format!(
            "SELECT Id FROM Lead WHERE SystemModstamp >= {tie_ts} AND SystemModstamp <= {tie_ts}"
        ),
        Some(200),
    )
    .await;
    let p = r.json();
    let tied_live = s
        .lead_ids()
        .iter()
        .filter(|id| {
            s.field(id, "SystemModstamp") == Some(json!(tie_ts))
                && s.field(id, "IsDeleted") == Some(json!(false))
        })
        .count();
    assert!(tied_live >= 590);
    assert_eq!(p["totalSize"], tied_live);
    assert_eq!(p["records"].as_array().unwrap().len(), 200);

    // queryAll sees the deleted Leads too.
    let r = send(
        client()
            .get(format!("{}/services/data/{V}/queryAll", s.instance_url()))
            .query(&[("q", "SELECT Id FROM Lead WHERE IsDeleted = true")])
            .bearer_auth(&tok),
    )
    .await;
    assert_eq!(r.json()["totalSize"], 25);
    let r = soql(&s, &tok, "SELECT Id FROM Lead WHERE IsDeleted = true", None).await;
    assert_eq!(r.json()["totalSize"], 0);

    // An unencoded '+' in the URL decodes to a space: MALFORMED_QUERY, as in Salesforce.
    let raw = format!(
        "{}/services/data/{V}/query?q=SELECT+Id+FROM+Lead+WHERE+SystemModstamp+>+2024-05-01T12:34:56.000+0000",
        s.instance_url()
    );
    let r = send(client().get(raw).bearer_auth(&tok)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "MALFORMED_QUERY");
    // Encoded, every datetime form works.
    for lit in [
        "2024-05-01T12:34:56Z",
        "2024-05-01T12:34:56.000+0000",
        "2024-05-01T14:34:56+02:00",
    ] {
        let r = soql(
            &s,
            &tok,
            &format!("SELECT Id FROM Lead WHERE SystemModstamp > {lit} LIMIT 1"),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{lit}: {}", r.text);
    }
    s.shutdown().await;
}

#[tokio::test]
async fn query_errors_and_describe() {
    let s = sim_with(
        SeedSpec::new(50, 5),
        SalesforceOptions::defaults().with_omitted_fields(&["LinkedIn_URL_Source__c"]),
    )
    .await;
    let tok = access(&s).await;
    let r = soql(&s, &tok, "SELECT Id, Foo__c FROM Lead", None).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e[0]["errorCode"], "INVALID_FIELD");
    let m = e[0]["message"].as_str().unwrap();
    assert!(m.contains("ERROR at Row:1:Column:12"), "{m}");
    assert!(
        m.contains("No such column 'Foo__c' on entity 'Lead'"),
        "{m}"
    );
    let r = soql(
        &s,
        &tok,
        "SELECT Id, LinkedIn_URL_Source__c FROM Lead",
        None,
    )
    .await;
    assert_eq!(r.error_code(), "INVALID_FIELD");
    let r = soql(&s, &tok, "SELECT Id FRM Lead", None).await;
    assert_eq!(r.error_code(), "MALFORMED_QUERY");
    let r = soql(
        &s,
        &tok,
        "SELECT Id FROM Lead WHERE SystemModstamp > '2024-01-01T00:00:00Z'",
        None,
    )
    .await;
    assert_eq!(r.error_code(), "INVALID_FIELD");
    assert!(
        r.text
            .contains("must be of type dateTime and should not be enclosed in quotes")
    );
    let r = soql(&s, &tok, "SELECT Id FROM Lead WHERE Id = 'nope'", None).await;
    assert_eq!(r.error_code(), "INVALID_QUERY_FILTER_OPERATOR");
    let r = soql(&s, &tok, "SELECT Id FROM Account", None).await;
    assert_eq!(r.error_code(), "INVALID_TYPE");
    let r = soql(&s, &tok, "SELECT Id, Owner.Name FROM Lead", None).await;
    assert_eq!(r.error_code(), "INVALID_FIELD");
    // Case-insensitive names, canonical case in the answer; IN, LIKE, strings.
    let leads = s.lead_ids();
    let q = format!(
        "select id, lastname from lead where Id IN ('{}', '{}') and LastName like '%' order by Id desc",
        leads[0],
        &leads[1][..15]
    );
    let r = soql(&s, &tok, &q, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let p = r.json();
    assert_eq!(p["totalSize"], 2);
    assert_eq!(p["records"][0]["Id"], leads[1]);
    assert!(p["records"][0].get("LastName").is_some());

    // Describe in the fixture's shape; the omitted field is absent.
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/describe"),
    )
    .await;
    assert_eq!(r.status, 200);
    let d = r.json();
    assert_eq!(d["name"], "Lead");
    assert_eq!(d["keyPrefix"], "00Q");
    assert_eq!(
        d["urls"]["describe"],
        format!("/services/data/{V}/sobjects/Lead/describe")
    );
    let fields = d["fields"].as_array().unwrap();
    let f = |n: &str| fields.iter().find(|f| f["name"] == n).cloned();
    assert!(f("LinkedIn_URL_Source__c").is_none());
    let we = f("Enrichment_Work_Email__c").unwrap();
    assert_eq!(we["type"], "email");
    assert_eq!(we["length"], 80);
    assert_eq!(we["updateable"], true);
    assert_eq!(we["custom"], true);
    assert_eq!(we["nillable"], true);
    let st = f("Enrichment_Status__c").unwrap();
    assert_eq!(st["type"], "picklist");
    assert_eq!(st["restrictedPicklist"], true);
    let vals: Vec<&str> = st["picklistValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert_eq!(vals, ["Full", "Partial", "Empty"]);
    assert_eq!(f("Enriched_At__c").unwrap()["type"], "datetime");
    assert_eq!(f("IsConverted").unwrap()["updateable"], false);
    // Same attribute set as the fixture enrichd's tests use.
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/salesforce/lead_describe.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let fx_keys: HashSet<&String> = fixture["fields"][0].as_object().unwrap().keys().collect();
    let keys: HashSet<&String> = fields[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, fx_keys);
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Contact/describe"),
    )
    .await;
    assert!(
        r.json()["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "Enrichment_Phone__c")
    );
    s.shutdown().await;
}

// ------------------------------------------------------------------------------- writes

#[tokio::test]
async fn collections_with_mixed_failures_and_owner_reassignment() {
    let s = sim_with(
        SeedSpec::new(100, 10),
        SalesforceOptions::defaults().with_omitted_fields(&["LinkedIn_URL_Source__c"]),
    )
    .await;
    let tok = access(&s).await;
    let conv: HashSet<String> = s.converted_lead_ids().into_iter().collect();
    let live: Vec<String> = unconverted_live_leads(&s);
    let converted = s.converted_lead_ids().first().cloned().unwrap_or_else(|| {
        let id = live[live.len() - 1].clone();
        s.convert_lead(&id).unwrap();
        id
    });
    assert!(conv.contains(&converted) || s.field(&converted, "IsConverted") == Some(json!(true)));
    let (a, b, c, d, e) = (&live[0], &live[1], &live[2], &live[3], &live[4]);
    let contact = &s.contact_ids()[0];
    let owner_before: Vec<Value> = [a, b, c]
        .iter()
        .map(|id| s.field(id, "OwnerId").unwrap())
        .collect();
    let body = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Lead"}, "id": a, "Enrichment_Work_Email__c": "jane@acme.com", "Work_Email_Source__c": "apollo"},
        {"attributes": {"type": "Lead"}, "id": b, "Secondary_Email__c": "a-very-long-address@example-company.com"},
        {"attributes": {"type": "Lead"}, "id": c, "LinkedIn_URL_Source__c": "pdl"},
        {"attributes": {"type": "Lead"}, "id": converted, "Enrichment_Phone__c": "+14155550100"},
        {"attributes": {"type": "Lead"}, "id": "00Qbogus", "Enrichment_Phone__c": "+1"},
        {"attributes": {"type": "Lead"}, "id": "00Q5e0000zzzzzz", "Phone": "+1"},
        {"attributes": {"type": "Lead"}, "id": d, "Enrichment_Status__c": "Complete"},
        {"attributes": {"type": "Lead"}, "id": e, "Enrichment_Work_Email__c": "not-an-email"},
        {"attributes": {"type": "Contact"}, "id": contact, "Enrichment_Phone__c": "+14155550101", "Phone_Source__c": "fullenrich"},
        {"attributes": {"type": "Lead"}, "id": contact, "Phone": "+1"},
    ]});
    let path = format!("/services/data/{V}/composite/sobjects");
    let r = patch_json(&s, &tok, &path, &body, &ENRICHD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let res = r.json();
    let res = res.as_array().unwrap();
    assert_eq!(res.len(), 10);
    let code = |i: usize| {
        res[i]["errors"][0]["statusCode"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(res[0], json!({"id": a, "success": true, "errors": []}));
    assert_eq!(code(1), "STRING_TOO_LONG");
    assert_eq!(res[1]["errors"][0]["fields"], json!(["Secondary_Email__c"]));
    assert!(res[1].get("id").is_none(), "failed results carry no id");
    assert_eq!(code(2), "INVALID_FIELD");
    assert_eq!(
        res[2]["errors"][0]["message"],
        "No such column 'LinkedIn_URL_Source__c' on sobject of type Lead"
    );
    assert_eq!(code(3), "CANNOT_UPDATE_CONVERTED_LEAD");
    assert_eq!(code(4), "MALFORMED_ID");
    assert_eq!(code(5), "INVALID_CROSS_REFERENCE_KEY");
    assert_eq!(code(6), "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    assert_eq!(code(7), "INVALID_EMAIL_ADDRESS");
    assert_eq!(res[8]["success"], true);
    assert_eq!(code(9), "MALFORMED_ID");
    // Successes applied, failures not; no owner change with Sforce-Auto-Assign: FALSE.
    assert_eq!(
        s.field(a, "Enrichment_Work_Email__c"),
        Some(json!("jane@acme.com"))
    );
    assert_eq!(s.field(a, "Work_Email_Source__c"), Some(json!("apollo")));
    assert_eq!(s.field(b, "Secondary_Email__c"), Some(Value::Null));
    assert_eq!(
        s.field(contact, "Phone_Source__c"),
        Some(json!("fullenrich"))
    );
    assert_eq!(s.field(a, "OwnerId").unwrap(), owner_before[0]);
    assert!(s.stats().owner_changes.is_empty());
    // The write is recognisable: history and stats carry client=enrichd.
    let h = s.history(a);
    let last = h.last().unwrap();
    assert_eq!(last.client.as_deref(), Some("enrichd"));
    assert_eq!(last.via, "collections");
    assert_eq!(last.user_id, s.users()[0].id);
    let changed: Vec<&str> = last.changed.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        changed,
        ["Enrichment_Work_Email__c", "Work_Email_Source__c"]
    );
    assert!(s.field(a, "SystemModstamp").unwrap().as_str().unwrap() > "2000");
    let st = s.stats();
    assert_eq!(st.call_options_clients["enrichd"], 1);
    assert_eq!(st.auto_assign_headers["FALSE"], 1);
    assert!(
        st.duplicate_rule_headers
            .keys()
            .any(|k| k.starts_with("allowSave=true"))
    );
    assert_eq!(st.collection_calls, 1);
    assert_eq!(st.collection_records, 10);
    assert_eq!(st.write_result("success"), 2);
    assert_eq!(st.write_result("STRING_TOO_LONG"), 1);

    // Without the header the assignment rule reassigns the Lead (not the Contact).
    let body = json!({"records": [
        {"attributes": {"type": "Lead"}, "id": c, "Enrichment_Phone__c": "+14155550102"},
        {"attributes": {"type": "Contact"}, "id": contact, "Enrichment_Phone__c": "+14155550103"},
    ]});
    let owner_contact = s.field(contact, "OwnerId");
    let r = patch_json(
        &s,
        &tok,
        &path,
        &body,
        &[("Sforce-Call-Options", "client=other-tool")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["success"] == true)
    );
    assert_ne!(s.field(c, "OwnerId").unwrap(), owner_before[2]);
    assert_eq!(s.field(contact, "OwnerId"), owner_contact);
    let oc = s.stats().owner_changes;
    assert_eq!(oc.len(), 1);
    assert_eq!(&oc[0].id, c);
    assert_eq!(oc[0].client.as_deref(), Some("other-tool"));
    assert_eq!(oc[0].old_owner, owner_before[2].as_str().unwrap());
    // TRUE also runs the rule.
    let r = patch_json(
        &s,
        &tok,
        &path,
        &json!({"records": [{"attributes": {"type": "Lead"}, "id": d, "Phone": "+1 415 555 0100"}]}),
        &[("Sforce-Auto-Assign", "TRUE")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.stats().owner_changes.len(), 2);

    // allOrNone: one failure rolls everything back.
    let body = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Lead"}, "id": e, "Enrichment_Work_Email__c": "ok@acme.com"},
        {"attributes": {"type": "Lead"}, "id": b, "Secondary_Email__c": "x".repeat(21)},
    ]});
    let r = patch_json(&s, &tok, &path, &body, &ENRICHD).await;
    let res = r.json();
    assert_eq!(
        res[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(res[1]["errors"][0]["statusCode"], "STRING_TOO_LONG");
    assert_eq!(s.field(e, "Enrichment_Work_Email__c"), Some(Value::Null));

    // More than 200 records: the whole request is refused.
    let recs: Vec<Value> = (0..201)
        .map(|k| json!({"attributes": {"type": "Lead"}, "id": live[k % live.len()], "Phone": "+1"}))
        .collect();
    let r = patch_json(&s, &tok, &path, &json!({"records": recs}), &ENRICHD).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "EXCEEDED_ID_LIMIT");
    let r = send(
        client()
            .patch(format!("{}{path}", s.instance_url()))
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "JSON_PARSER_ERROR");
    s.shutdown().await;
}

#[tokio::test]
async fn single_patch_create_and_get() {
    let s = sim().await;
    let tok = access(&s).await;
    let live = unconverted_live_leads(&s);
    let id = &live[0];
    let owner = s.field(id, "OwnerId");
    let r = patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/{id}"),
        &json!({"Enrichment_Phone__c": "+14155550100", "Phone_Source__c": "pdl", "Enriched_At__c": "2026-03-14T12:00:00.000Z"}),
        &ENRICHD,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.text, "");
    assert!(r.header("sforce-limit-info").is_some());
    assert_eq!(
        s.field(id, "Enriched_At__c"),
        Some(json!("2026-03-14T12:00:00.000+0000"))
    );
    assert_eq!(s.field(id, "OwnerId"), owner);
    // Without the header: reassigned.
    let r = patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/{}", &id[..15]),
        &json!({"Phone_Source__c": "hunter"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_ne!(s.field(id, "OwnerId"), owner);
    assert_eq!(s.history(id).last().unwrap().client, None);
    // Errors.
    let r = patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/{id}"),
        &json!({"Nope__c": 1}),
        &ENRICHD,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "INVALID_FIELD");
    let r = patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/{id}"),
        &json!({"Title": "x".repeat(129)}),
        &ENRICHD,
    )
    .await;
    assert_eq!(r.json()[0]["errorCode"], "STRING_TOO_LONG");
    assert_eq!(r.json()[0]["fields"], json!(["Title"]));
    let r = patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/00Q5e0000zzzzzz"),
        &json!({"Title": "x"}),
        &ENRICHD,
    )
    .await;
    assert_eq!(r.status, 404);
    let conv = s.converted_lead_ids();
    if let Some(c) = conv.first() {
        let r = patch_json(
            &s,
            &tok,
            &format!("/services/data/{V}/sobjects/Lead/{c}"),
            &json!({"Title": "x"}),
            &ENRICHD,
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.error_code(), "CANNOT_UPDATE_CONVERTED_LEAD");
    }
    // Create, then GET with fields.
    let r = post_json(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead"),
        &json!({"LastName": "Doe", "Company": "Acme", "Email": "jd@acme.com"}),
        &ENRICHD,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let new_id = r.json()["id"].as_str().unwrap().to_string();
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/{new_id}?fields=Email,Name,Email_Domain__c"),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["Name"], "Doe");
    assert_eq!(v["Email_Domain__c"], "acme.com");
    let r = post_json(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead"),
        &json!({"LastName": "Doe"}),
        &ENRICHD,
    )
    .await;
    assert_eq!(r.error_code(), "REQUIRED_FIELD_MISSING");
    s.shutdown().await;
}

// ------------------------------------------------------------------------------- Bulk 2.0

async fn wait_job(s: &SalesforceSim, tok: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let r = get(s, tok, &format!("/services/data/{V}/jobs/ingest/{id}")).await;
        let j = r.json();
        let state = j["state"].as_str().unwrap().to_string();
        if ["JobComplete", "Failed", "Aborted"].contains(&state.as_str()) {
            return j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "job stuck in {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bulk_ingest_end_to_end_with_failed_results() {
    let s = sim_with(SeedSpec::new(1_200, 0), SalesforceOptions::defaults()).await;
    let tok = access(&s).await;
    let live = unconverted_live_leads(&s);
    let conv = s.converted_lead_ids();
    assert!(!conv.is_empty());
    let owners: Vec<Value> = live
        .iter()
        .map(|id| s.field(id, "OwnerId").unwrap())
        .collect();
    // Create.
    let r = post_json(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest"),
        &json!({"object": "Lead", "operation": "update", "contentType": "CSV", "lineEnding": "LF", "columnDelimiter": "COMMA"}),
        &[("Sforce-Call-Options", "client=enrichd")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let job = r.json();
    assert_eq!(job["state"], "Open");
    assert_eq!(job["object"], "Lead");
    let id = job["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("750"));
    let content_url = job["contentUrl"].as_str().unwrap().to_string();
    assert_eq!(
        content_url,
        format!("services/data/{V}/jobs/ingest/{id}/batches")
    );
    // Upload.
    let mut csv =
        String::from("Id,Enrichment_Work_Email__c,Work_Email_Source__c,Secondary_Email__c\n");
    for (k, lid) in live.iter().enumerate() {
        let long = if k == 3 {
            "x".repeat(30)
        } else {
            String::new()
        };
        csv.push_str(&format!("{lid},p{k}@acme.com,apollo,{long}\n"));
    }
    csv.push_str(&format!("{},c@acme.com,apollo,\n", conv[0]));
    csv.push_str("00Q5e0000zzzzzz,z@acme.com,\"apollo\",\n");
    let r = send(
        client()
            .put(format!("{}/{content_url}", s.instance_url()))
            .bearer_auth(&tok)
            .header("content-type", "text/csv")
            .body(csv.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = send(
        client()
            .put(format!("{}/{content_url}", s.instance_url()))
            .bearer_auth(&tok)
            .header("content-type", "text/csv")
            .body(csv),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "BULK_API_ERROR");
    // Close.
    let r = patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id}"),
        &json!({"state": "UploadComplete"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "UploadComplete");
    let j = wait_job(&s, &tok, &id).await;
    assert_eq!(j["state"], "JobComplete", "{j}");
    let total = live.len() + 2;
    assert_eq!(j["numberRecordsProcessed"], total);
    assert_eq!(j["numberRecordsFailed"], 3);
    // Results.
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id}/successfulResults/"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(
        lines[0],
        "\"sf__Id\",\"sf__Created\",Id,Enrichment_Work_Email__c,Work_Email_Source__c,Secondary_Email__c"
    );
    assert_eq!(lines.len(), 1 + live.len() - 1);
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id}/failedResults/"),
    )
    .await;
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(
        lines[0],
        "\"sf__Id\",\"sf__Error\",Id,Enrichment_Work_Email__c,Work_Email_Source__c,Secondary_Email__c"
    );
    assert_eq!(lines.len(), 4);
    let body = r.text.clone();
    assert!(
        body.contains("STRING_TOO_LONG:Secondary Email: data value too large"),
        "{body}"
    );
    assert!(
        body.contains("CANNOT_UPDATE_CONVERTED_LEAD:cannot reference converted lead:"),
        "{body}"
    );
    assert!(body.contains("INVALID_CROSS_REFERENCE_KEY"), "{body}");
    // Applied, with the client recorded; Bulk runs no assignment rule without assignmentRuleId.
    assert_eq!(
        s.field(&live[0], "Enrichment_Work_Email__c"),
        Some(json!("p0@acme.com"))
    );
    assert_eq!(
        s.field(&live[3], "Enrichment_Work_Email__c"),
        Some(Value::Null)
    );
    for (k, lid) in live.iter().enumerate() {
        assert_eq!(s.field(lid, "OwnerId").unwrap(), owners[k]);
    }
    assert_eq!(s.history(&live[0]).last().unwrap().via, "bulk");
    assert_eq!(
        s.history(&live[0]).last().unwrap().client.as_deref(),
        Some("enrichd")
    );
    let st = s.stats();
    assert_eq!(st.bulk_jobs, 1);
    assert_eq!(st.bulk_records_processed, total as u64);
    assert_eq!(st.bulk_records_failed, 3);
    assert!(st.owner_changes.is_empty());
    let r = get(&s, &tok, &format!("/services/data/{V}/limits")).await;
    let l = r.json();
    assert_eq!(l["DailyBulkApiBatches"]["Remaining"], 15_000 - 1);

    // An unknown column fails the whole job.
    let r = post_json(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest"),
        &json!({"object": "Lead", "operation": "update"}),
        &[],
    )
    .await;
    let id2 = r.json()["id"].as_str().unwrap().to_string();
    let r = send(
        client()
            .put(format!(
                "{}/services/data/{V}/jobs/ingest/{id2}/batches",
                s.instance_url()
            ))
            .bearer_auth(&tok)
            .header("content-type", "text/csv")
            .body(format!("Id,Nope__c\n{},x\n", live[0])),
    )
    .await;
    assert_eq!(r.status, 201);
    patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id2}"),
        &json!({"state": "UploadComplete"}),
        &[],
    )
    .await;
    let j = wait_job(&s, &tok, &id2).await;
    assert_eq!(j["state"], "Failed");
    assert_eq!(
        j["errorMessage"],
        "InvalidBatch : Field name not found : Nope__c"
    );
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id2}/unprocessedrecords/"),
    )
    .await;
    assert_eq!(r.text.lines().count(), 2);
    // With assignmentRuleId the rule runs.
    let r = post_json(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest"),
        &json!({"object": "Lead", "operation": "update", "assignmentRuleId": "01Q5e000000AbCdEAF"}),
        &[],
    )
    .await;
    let id3 = r.json()["id"].as_str().unwrap().to_string();
    send(
        client()
            .put(format!(
                "{}/services/data/{V}/jobs/ingest/{id3}/batches",
                s.instance_url()
            ))
            .bearer_auth(&tok)
            .header("content-type", "text/csv")
            .body(format!("Id,Phone\n{},+1 415 555 0100\n", live[1])),
    )
    .await;
    patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id3}"),
        &json!({"state": "UploadComplete"}),
        &[],
    )
    .await;
    wait_job(&s, &tok, &id3).await;
    assert_ne!(s.field(&live[1], "OwnerId").unwrap(), owners[1]);
    assert_eq!(s.stats().owner_changes.len(), 1);
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/750000000000000AAA"),
    )
    .await;
    assert_eq!(r.status, 404);
    s.shutdown().await;
}

/// Creates an update job on Lead, uploads `csv` and closes it; returns the job id.
async fn start_job(s: &SalesforceSim, tok: &str, csv: String) -> String {
    let r = post_json(
        s,
        tok,
        &format!("/services/data/{V}/jobs/ingest"),
        &json!({"object": "Lead", "operation": "update", "contentType": "CSV", "lineEnding": "LF"}),
        &[("Sforce-Call-Options", "client=enrichd")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = send(
        client()
            .put(format!(
                "{}/services/data/{V}/jobs/ingest/{id}/batches",
                s.instance_url()
            ))
            .bearer_auth(tok)
            .header("content-type", "text/csv")
            .body(csv),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = patch_json(
        s,
        tok,
        &format!("/services/data/{V}/jobs/ingest/{id}"),
        &json!({"state": "UploadComplete"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    id
}

async fn job_state(s: &SalesforceSim, tok: &str, id: &str) -> String {
    let r = get(s, tok, &format!("/services/data/{V}/jobs/ingest/{id}")).await;
    r.json()["state"].as_str().unwrap().to_string()
}

fn bulk_writes(s: &SalesforceSim, id: &str) -> usize {
    s.history(id).iter().filter(|w| w.via == "bulk").count()
}

#[tokio::test]
async fn a_bulk_job_runs_for_bulk_job_duration_on_the_sim_clock_and_an_abort_writes_nothing() {
    let mut opts = SalesforceOptions::defaults();
    opts.bulk_job_duration = Duration::from_secs(3600);
    let s = sim_with(SeedSpec::new(60, 0), opts).await;
    let tok = access(&s).await;
    let live = unconverted_live_leads(&s);
    let csv = |title: &str| {
        let mut c = String::from("Id,Title\n");
        for id in &live[..3] {
            c.push_str(&format!("{id},{title}\n"));
        }
        c
    };
    // A job that would take an hour of sim time: InProgress, nothing written.
    let id = start_job(&s, &tok, csv("Aborted Title")).await;
    let start = Instant::now();
    while job_state(&s, &tok, &id).await != "InProgress" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never InProgress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(job_state(&s, &tok, &id).await, "InProgress");
    let r = patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id}"),
        &json!({"state": "Aborted"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "Aborted");
    // Even once the hour has passed, an aborted job writes nothing.
    s.advance(Duration::from_secs(2 * 3600));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // (The session timed out with the two hours.)
    let tok = access(&s).await;
    let j = get(&s, &tok, &format!("/services/data/{V}/jobs/ingest/{id}"))
        .await
        .json();
    assert_eq!(j["state"], "Aborted", "{j}");
    assert_eq!(j["numberRecordsProcessed"], 0);
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id}/unprocessedrecords/"),
    )
    .await;
    assert_eq!(r.text.lines().count(), 4, "{}", r.text);
    assert!(r.text.contains(&live[0]));
    for lid in &live[..3] {
        assert_ne!(s.field(lid, "Title"), Some(json!("Aborted Title")));
        assert_eq!(bulk_writes(&s, lid), 0);
    }
    let views = s.bulk_jobs();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].state, "Aborted");
    assert_eq!(
        (views[0].rows, views[0].successful, views[0].unprocessed),
        (3, 0, 3)
    );

    // The next job completes once the sim clock has moved an hour.
    let id = start_job(&s, &tok, csv("Done Title")).await;
    let start = Instant::now();
    while job_state(&s, &tok, &id).await != "InProgress" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never InProgress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(job_state(&s, &tok, &id).await, "InProgress");
    assert_eq!(bulk_writes(&s, &live[0]), 0);
    s.advance(Duration::from_secs(3601));
    let j = wait_job(&s, &tok, &id).await;
    assert_eq!(j["state"], "JobComplete", "{j}");
    assert_eq!(j["numberRecordsProcessed"], 3);
    for lid in &live[..3] {
        assert_eq!(s.field(lid, "Title"), Some(json!("Done Title")));
        assert_eq!(bulk_writes(&s, lid), 1);
    }
    assert_eq!(s.bulk_jobs()[1].state, "JobComplete");
    s.shutdown().await;
}

#[tokio::test]
async fn fail_bulk_jobs_fails_a_job_part_way_and_the_daily_bulk_batches_run_out() {
    let mut opts = SalesforceOptions::defaults();
    opts.daily_bulk_batches = 1;
    let s = sim_with(SeedSpec::new(60, 0), opts).await;
    let tok = access(&s).await;
    let live = unconverted_live_leads(&s);
    s.inject(SalesforceFault::FailBulkJobs {
        processed: 2,
        count: 1,
        error_message: None,
    });
    let mut csv = String::from("Id,Title\n");
    for lid in &live[..5] {
        csv.push_str(&format!("{lid},Part Way\n"));
    }
    let id = start_job(&s, &tok, csv.clone()).await;
    let j = wait_job(&s, &tok, &id).await;
    assert_eq!(j["state"], "Failed", "{j}");
    assert_eq!(j["numberRecordsProcessed"], 2);
    assert_eq!(j["numberRecordsFailed"], 0);
    assert_eq!(
        j["errorMessage"],
        "InternalServerError : the batch was retried too many times"
    );
    let ok = get(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id}/successfulResults/"),
    )
    .await;
    assert_eq!(ok.text.lines().count(), 3, "{}", ok.text);
    let left = get(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest/{id}/unprocessedrecords/"),
    )
    .await;
    assert_eq!(left.text.lines().count(), 4, "{}", left.text);
    for (k, lid) in live[..5].iter().enumerate() {
        let written = s.field(lid, "Title") == Some(json!("Part Way"));
        assert_eq!(written, k < 2, "{lid}");
        assert_eq!(ok.text.contains(lid.as_str()), k < 2);
        assert_eq!(left.text.contains(lid.as_str()), k >= 2);
    }
    let v = &s.bulk_jobs()[0];
    assert_eq!(
        (v.state.as_str(), v.rows, v.successful, v.unprocessed),
        ("Failed", 5, 2, 3)
    );

    // The job used the day's only batch: no new job until it ages out.
    let l = get(&s, &tok, &format!("/services/data/{V}/limits"))
        .await
        .json();
    assert_eq!(l["DailyBulkApiBatches"]["Remaining"], 0);
    let r = post_json(
        &s,
        &tok,
        &format!("/services/data/{V}/jobs/ingest"),
        &json!({"object": "Lead", "operation": "update"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "EXCEEDEDQUOTA");
    assert_eq!(s.bulk_jobs().len(), 1);
    s.advance(Duration::from_secs(24 * 3600 + 60));
    let tok = access(&s).await;
    let id = start_job(&s, &tok, csv).await;
    let j = wait_job(&s, &tok, &id).await;
    assert_eq!(j["state"], "JobComplete", "{j}");
    assert_eq!(j["numberRecordsProcessed"], 5);
    s.shutdown().await;
}

// ------------------------------------------------------------------------------- limits

#[tokio::test]
async fn daily_limit_refuses_then_frees_after_24h() {
    let s = sim_with(
        SeedSpec::new(20, 0),
        SalesforceOptions::defaults().with_daily_limit(5),
    )
    .await;
    let tok = access(&s).await;
    let path = format!("/services/data/{V}/limits");
    for k in 1..=5 {
        let r = get(&s, &tok, &path).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("sforce-limit-info").unwrap(),
            format!("api-usage={k}/5")
        );
        if k == 5 {
            let l = r.json();
            assert_eq!(l["DailyApiRequests"], json!({"Max": 5, "Remaining": 0}));
        }
    }
    let r = soql(&s, &tok, "SELECT Id FROM Lead", None).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(r.header("sforce-limit-info").unwrap(), "api-usage=5/5");
    // The rolling window: 23 h later still refused, 24 h after the calls free again.
    s.advance(Duration::from_secs(23 * 3600));
    let tok = access(&s).await;
    assert_eq!(get(&s, &tok, &path).await.status, 403);
    s.advance(Duration::from_secs(3600 + 1));
    let r = get(&s, &tok, &path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("sforce-limit-info").unwrap(), "api-usage=1/5");
    let st = s.stats();
    assert_eq!(st.limit_exceeded_daily, 2);
    assert_eq!(st.api_calls, 6);
    // The limit can be changed over /_sim.
    let r = send(
        client()
            .put(format!("{}/_sim/limits", s.instance_url()))
            .body(json!({"daily_api_requests": 1000}).to_string()),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = get(&s, &tok, &path).await;
    assert_eq!(r.header("sforce-limit-info").unwrap(), "api-usage=2/1000");
    s.shutdown().await;
}

#[tokio::test]
async fn concurrent_long_running_limit() {
    let s = sim_with(
        SeedSpec::new(20, 0),
        SalesforceOptions::defaults()
            .with_latency(Duration::from_millis(150))
            .with_long_running(Duration::from_millis(100), 2),
    )
    .await;
    let tok = access(&s).await;
    let path = format!("/services/data/{V}/limits");
    let mut hs = Vec::new();
    for _ in 0..5 {
        let url = format!("{}{path}", s.instance_url());
        let tok = tok.clone();
        hs.push(tokio::spawn(async move {
            send(client().get(url).bearer_auth(tok)).await
        }));
    }
    let mut statuses = Vec::new();
    let mut concurrent_msgs = 0;
    for h in hs {
        let r = h.await.unwrap();
        if r.status == 403 {
            assert_eq!(r.error_code(), "REQUEST_LIMIT_EXCEEDED");
            if r.text.contains("ConcurrentRequests") {
                concurrent_msgs += 1;
            }
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(concurrent_msgs, 3);
    let st = s.stats();
    assert_eq!(st.limit_exceeded_concurrent, 3);
    assert_eq!(st.max_long_running_in_flight, 2);
    s.shutdown().await;
}

// ------------------------------------------------------------------------------- Outbound Messages

#[derive(Default)]
struct Receiver {
    bodies: Vec<String>,
    /// Answer a non-ack this many times first.
    nack: usize,
}

async fn start_receiver(rx: Arc<Mutex<Receiver>>) -> String {
    use axum::Router;
    use axum::routing::post;
    let app = Router::new().route(
        "/webhooks/salesforce/secret",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let rx = rx.clone();
            async move {
                assert!(headers["content-type"].to_str().unwrap().starts_with("text/xml"));
                assert_eq!(headers["soapaction"], "\"\"");
                let mut r = rx.lock().unwrap();
                r.bodies.push(body);
                let ack = if r.nack > 0 {
                    r.nack -= 1;
                    "false"
                } else {
                    "true"
                };
                (
                    [("content-type", "text/xml")],
                    format!(
                        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body><notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\"><Ack>{ack}</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
                    ),
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}/webhooks/salesforce/secret")
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> Vec<&'a str> {
    s.split(a)
        .skip(1)
        .filter_map(|x| x.split(b).next())
        .collect()
}

#[tokio::test]
async fn outbound_messages_delivered_acked_and_redelivered_with_the_same_id() {
    let rx = Arc::new(Mutex::new(Receiver {
        nack: 1,
        ..Default::default()
    }));
    let url = start_receiver(rx.clone()).await;
    let s = sim_with(
        SeedSpec::new(50, 0),
        SalesforceOptions::defaults().with_outbound(OutboundConfig::new("Lead", url.clone())),
    )
    .await;
    let live = unconverted_live_leads(&s);
    s.human_edit(&live[0], &[("Email", "new.person@acme.com")], None)
        .unwrap();
    // The first delivery is refused (Ack false) and goes back to the queue.
    let start = Instant::now();
    while s.stats().outbound_deliveries.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = s.stats().outbound_deliveries;
    assert_eq!(d.len(), 1);
    assert!(!d[0].acked);
    assert_eq!(d[0].status, 200);
    assert_eq!(s.outbound_pending(), 1);
    // Not redelivered before the backoff (sim time) elapses…
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.stats().outbound_deliveries.len(), 1);
    // …then redelivered with the same notification id.
    s.advance(Duration::from_secs(16));
    let start = Instant::now();
    while s.stats().outbound_deliveries.len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = s.stats().outbound_deliveries;
    assert!(d[1].acked);
    assert_eq!(d[1].attempt, 2);
    assert_eq!(d[0].notification_ids, d[1].notification_ids);
    assert_eq!(s.outbound_pending(), 0);
    let bodies = rx.lock().unwrap().bodies.clone();
    assert_eq!(bodies.len(), 2);
    let b = &bodies[0];
    assert_eq!(between(b, "<OrganizationId>", "<"), [s.org_id()]);
    assert_eq!(between(b, "<Id>", "<"), between(&bodies[1], "<Id>", "<"));
    assert!(between(b, "<Id>", "<")[0].starts_with("04l"));
    assert!(between(b, "<ActionId>", "<")[0].starts_with("04k"));
    assert!(b.contains("<SessionId xsi:nil=\"true\"/>"));
    assert!(b.contains(&format!(
        "<EnterpriseUrl>{}/services/Soap/c/62.0/",
        s.instance_url()
    )));
    assert!(b.contains(
        "<sObject xsi:type=\"sf:Lead\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">"
    ));
    assert_eq!(between(b, "<sf:Id>", "<"), [live[0].as_str()]);
    assert_eq!(between(b, "<sf:Email>", "<"), ["new.person@acme.com"]);

    // An API write fires the rule too (workflow rules see the user, not the headers)…
    let tok = access(&s).await;
    let r = patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/{}", live[1]),
        &json!({"Enrichment_Phone__c": "+14155550100"}),
        &ENRICHD,
    )
    .await;
    assert_eq!(r.status, 204);
    // …and a UI create too; flush delivers everything now.
    let new_id = s
        .create_record(SObject::Lead, &[("LastName", "Roe"), ("Company", "Acme")])
        .unwrap();
    s.flush_outbound().await;
    assert_eq!(s.outbound_pending(), 0);
    let bodies = rx.lock().unwrap().bodies.clone();
    let ids: Vec<&str> = bodies
        .iter()
        .flat_map(|b| between(b, "<sf:Id>", "<"))
        .collect();
    assert!(ids.contains(&live[1].as_str()));
    assert!(ids.contains(&new_id.as_str()));
    assert!(s.stats().outbound_acked() >= 2);
    s.shutdown().await;

    // A rule that excludes the integration user does not fire on enrichd's writes; a redelivery
    // forced by flush keeps the id.
    let rx2 = Arc::new(Mutex::new(Receiver {
        nack: 1,
        ..Default::default()
    }));
    let url2 = start_receiver(rx2.clone()).await;
    let mut cfg = OutboundConfig::new("Lead", url2);
    let s2 = sim_with(SeedSpec::new(30, 0), SalesforceOptions::defaults()).await;
    cfg.rule.exclude_user_ids = vec![s2.users()[0].id.clone()];
    s2.shutdown().await;
    let s = sim_with(
        SeedSpec::new(30, 0),
        SalesforceOptions::defaults().with_outbound(cfg),
    )
    .await;
    let live = unconverted_live_leads(&s);
    let tok = access(&s).await;
    let r = patch_json(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/{}", live[2]),
        &json!({"Enrichment_Phone__c": "+14155550100"}),
        &ENRICHD,
    )
    .await;
    assert_eq!(r.status, 204);
    s.flush_outbound().await;
    assert!(
        rx2.lock().unwrap().bodies.is_empty(),
        "integration user excluded"
    );
    s.human_edit(&live[2], &[("Title", "CTO")], None).unwrap();
    s.flush_outbound().await; // delivered, not acked
    s.flush_outbound().await; // redelivered now, acked
    let b = rx2.lock().unwrap().bodies.clone();
    assert_eq!(b.len(), 2);
    assert_eq!(between(&b[0], "<Id>", "<"), between(&b[1], "<Id>", "<"));
    let r = send(client().post(format!("{}/_sim/outbound/flush", s.instance_url()))).await;
    assert_eq!(r.status, 204);
    s.shutdown().await;
}

// ------------------------------------------------------------------------------- stats, faults, /_sim

#[tokio::test]
async fn stats_faults_and_control_endpoints() {
    let s = sim().await;
    let tok = access(&s).await;
    let live = unconverted_live_leads(&s);
    soql(&s, &tok, "SELECT Id FROM Lead LIMIT 3", None).await;
    get(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Lead/describe"),
    )
    .await;
    // A status fault on the next query call.
    s.inject(SalesforceFault::Status {
        path_prefix: format!("/services/data/{V}/query"),
        status: 400,
        count: 1,
        error_code: None,
        message: None,
    });
    let r = soql(&s, &tok, "SELECT Id FROM Lead LIMIT 3", None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "QUERY_TIMEOUT");
    assert_eq!(
        soql(&s, &tok, "SELECT Id FROM Lead LIMIT 3", None)
            .await
            .status,
        200
    );
    // Over /_sim: a 503 fault.
    let r = send(
        client()
            .post(format!("{}/_sim/faults", s.instance_url()))
            .body(json!({"Status": {"path_prefix": "/services/data", "status": 503, "count": 1, "error_code": null, "message": null}}).to_string()),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = get(&s, &tok, &format!("/services/data/{V}/limits")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "SERVER_UNAVAILABLE");
    // A per-record fault.
    s.inject(SalesforceFault::FailRecords {
        ids: vec![live[0].clone()],
        status_code: "UNABLE_TO_LOCK_ROW".into(),
        times: 1,
    });
    let body = json!({"records": [
        {"attributes": {"type": "Lead"}, "id": live[0], "Phone": "+1"},
        {"attributes": {"type": "Lead"}, "id": live[1], "Phone": "+1"}]});
    let path = format!("/services/data/{V}/composite/sobjects");
    let r = patch_json(&s, &tok, &path, &body, &ENRICHD).await;
    assert_eq!(r.json()[0]["errors"][0]["statusCode"], "UNABLE_TO_LOCK_ROW");
    assert_eq!(r.json()[1]["success"], true);
    let r = patch_json(&s, &tok, &path, &body, &ENRICHD).await;
    assert_eq!(r.json()[0]["success"], true);
    // A token-endpoint fault.
    s.inject(SalesforceFault::Status {
        path_prefix: "/services/oauth2/token".into(),
        status: 400,
        count: 1,
        error_code: None,
        message: None,
    });
    let r = token_form(
        &s,
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant");

    let st = s.stats();
    assert_eq!(st.count("GET /services/data/vXX.X/query"), 3);
    assert_eq!(
        st.by_endpoint_status["GET /services/data/vXX.X/query 400"],
        1
    );
    assert_eq!(st.count("PATCH /services/data/vXX.X/composite/sobjects"), 2);
    assert_eq!(st.collection_records, 4);
    assert_eq!(st.write_result("UNABLE_TO_LOCK_ROW"), 1);
    assert_eq!(st.api_calls, 7);
    assert_eq!(st.query_calls, 2);
    // Over HTTP, then reset.
    let r = send(client().get(format!("{}/_sim/stats", s.login_url()))).await;
    let v = r.json();
    assert_eq!(v["api_calls"], 7);
    assert_eq!(v["log"], json!([]));
    let r = send(client().get(format!("{}/_sim/stats?log=true", s.instance_url()))).await;
    assert!(!r.json()["log"].as_array().unwrap().is_empty());
    send(client().post(format!("{}/_sim/stats/reset", s.instance_url()))).await;
    assert_eq!(s.stats().api_calls, 0);

    // Records and edits over /_sim.
    let r = send(
        client()
            .post(format!(
                "{}/_sim/records/{}/edit",
                s.instance_url(),
                live[2]
            ))
            .body(json!({"Title": "Head of Growth"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = send(client().get(format!("{}/_sim/records/{}", s.instance_url(), live[2]))).await;
    assert_eq!(r.json()["Title"], "Head of Growth");
    let r = send(client().get(format!(
        "{}/_sim/records/{}/history",
        s.instance_url(),
        live[2]
    )))
    .await;
    assert_eq!(r.json()[0]["via"], "ui");
    let r = send(
        client()
            .post(format!("{}/_sim/records/Lead", s.instance_url()))
            .body(json!({"LastName": "New", "Company": "Acme"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201);
    let nid = r.json()["id"].as_str().unwrap().to_string();
    assert!(s.record(&nid).is_some());
    let r = send(client().post(format!("{}/_sim/records/{nid}/convert", s.instance_url()))).await;
    assert_eq!(r.status, 204);
    assert_eq!(s.field(&nid, "IsConverted"), Some(json!(true)));
    let r = send(
        client()
            .post(format!("{}/_sim/clock/advance", s.instance_url()))
            .body(json!({"seconds": 3600}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(s.now_ms() >= wall_ms() + 3_590_000);

    // A message to forge or replay in a connector test.
    let (nid, xml) = s
        .outbound_envelope(&live[0], Some("00D000000000001AAA"))
        .unwrap();
    assert!(nid.starts_with("04l"));
    assert!(xml.contains("<OrganizationId>00D000000000001AAA</OrganizationId>"));
    assert!(xml.contains(&format!("<sf:Id>{}</sf:Id>", live[0])));

    // An injected 401 is not counted and carries no usage header.
    s.reset_stats();
    s.inject(SalesforceFault::Status {
        path_prefix: "/services/data".into(),
        status: 401,
        count: 1,
        error_code: None,
        message: None,
    });
    let r = get(&s, &tok, &format!("/services/data/{V}/limits")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "INVALID_SESSION_ID");
    assert!(r.header("sforce-limit-info").is_none());
    assert_eq!(s.stats().api_calls, 0);
    s.shutdown().await;
}

// ------------------------------------------------------------------------------- speed

#[tokio::test]
async fn reading_10000_leads_in_5_calls_is_fast() {
    let big = Population::generate(7, 10_000);
    let spec = SeedSpec {
        leads: 10_000,
        contacts: 0,
        email_share: 0.5,
        ..SeedSpec::default()
    };
    let s = start_salesforce(
        SalesforceData::from_population(&big, wall_ms() - 60_000, &spec),
        SalesforceOptions::defaults(),
    )
    .await
    .unwrap();
    let tok = access(&s).await;
    // Warm up, then time the 5 calls that read 10,000 Leads with a typical field list.
    let q = "SELECT Id, FirstName, LastName, Company, Title, Email, Phone, MobilePhone, Country, Status, IsConverted, SystemModstamp FROM Lead WHERE SystemModstamp >= 2000-01-01T00:00:00Z ORDER BY SystemModstamp ASC, Id ASC";
    soql(&s, &tok, q, None).await;
    let start = Instant::now();
    let mut rows = 0;
    let mut calls = 0;
    let mut next: Option<String> = None;
    while rows < 10_000 {
        let r = match &next {
            None => soql(&s, &tok, q, None).await,
            Some(n) => get(&s, &tok, n).await,
        };
        calls += 1;
        let p = r.json();
        rows += p["records"].as_array().unwrap().len();
        next = p["nextRecordsUrl"].as_str().map(str::to_string);
    }
    let took = start.elapsed();
    assert_eq!(rows, 10_000);
    assert_eq!(calls, 5);
    // tap-salesforce: 4.3 s; the simulator must leave plenty of room for a 4× faster client,
    // even in a debug build.
    assert!(took < Duration::from_millis(1_000), "took {took:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn duplicate_rules_alert_and_block() {
    for block in [false, true] {
        let mut o = SalesforceOptions::defaults();
        o.duplicate_rule = Some(DuplicateRule {
            object: "Lead".into(),
            field: "Email".into(),
            block,
        });
        let s = sim_with(SeedSpec::new(100, 0), o).await;
        let tok = access(&s).await;
        let live = unconverted_live_leads(&s);
        let taken = live
            .iter()
            .find_map(|id| {
                s.field(id, "Email")
                    .and_then(|v| v.as_str().map(str::to_string))
            })
            .unwrap();
        let target = live
            .iter()
            .find(|id| s.field(id, "Email") == Some(Value::Null))
            .unwrap();
        let body = json!({"records": [
            {"attributes": {"type": "Lead"}, "id": target, "Email": taken.to_uppercase()},
            {"attributes": {"type": "Lead"}, "id": target, "Email": "unique.person@nowhere-else.example"},
        ]});
        let path = format!("/services/data/{V}/composite/sobjects");
        // Without allowSave both rule kinds refuse the duplicate.
        let r = patch_json(&s, &tok, &path, &body, &[("Sforce-Auto-Assign", "FALSE")]).await;
        let res = r.json();
        assert_eq!(res[0]["errors"][0]["statusCode"], "DUPLICATES_DETECTED");
        assert_eq!(res[1]["success"], true);
        // With allowSave=true only the alert rule lets it through.
        let body = json!({"records": [
            {"attributes": {"type": "Lead"}, "id": target, "Email": taken},
        ]});
        let r = patch_json(&s, &tok, &path, &body, &ENRICHD).await;
        let res = r.json();
        if block {
            assert_eq!(res[0]["errors"][0]["statusCode"], "DUPLICATES_DETECTED");
        } else {
            assert_eq!(res[0]["success"], true, "{res}");
            assert_eq!(s.field(target, "Email"), Some(json!(taken)));
        }
        s.shutdown().await;
    }
}

// ------------------------------------------------------------------------------- Accounts

#[tokio::test]
async fn contacts_read_their_account_through_relationship_fields() {
    let (leads, contacts) = (20, 250);
    let s = sim_with(
        SeedSpec::new(leads, contacts),
        SalesforceOptions::defaults(),
    )
    .await;
    let tok = access(&s).await;

    // One Account per company of the Contacts; every Contact points at its company's.
    let accounts = s.account_ids();
    assert!(
        !accounts.is_empty() && accounts.len() < contacts,
        "{}",
        accounts.len()
    );
    assert!(
        accounts
            .iter()
            .all(|a| a.starts_with("001") && a.len() == 18)
    );
    let p = pop();
    let ids = s.contact_ids();
    for (k, c) in ids.iter().enumerate() {
        let person = p.person(leads + k);
        let a = s.field(c, "AccountId").unwrap();
        let a = a.as_str().unwrap();
        assert!(accounts.iter().any(|x| x == a), "{a}");
        assert_eq!(s.field(a, "Name"), Some(json!(person.company_name)));
        assert_eq!(
            s.field(a, "Website"),
            Some(json!(format!("https://www.{}", person.domain)))
        );
    }
    let acc = s.record(&accounts[0]).unwrap();
    assert_eq!(acc["attributes"]["type"], "Account");
    assert!(acc["BillingCountry"].is_string() && acc["NumberOfEmployees"].is_number());

    // The Contact describe carries the lookup.
    let r = get(
        &s,
        &tok,
        &format!("/services/data/{V}/sobjects/Contact/describe"),
    )
    .await;
    let d = r.json();
    let f = d["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "AccountId")
        .unwrap();
    assert_eq!(f["type"], "reference");
    assert_eq!(f["referenceTo"], json!(["Account"]));
    assert_eq!(f["relationshipName"], "Account");

    // Parent fields in the SELECT list: one nested object, where the first was selected,
    // canonical case, with its own attributes.
    let first = &ids[0];
    let a0 = s.field(first, "AccountId").unwrap();
    let a0 = a0.as_str().unwrap().to_string();
    let q = format!(
        "SELECT Id, account.name, Email, Account.Website, Account.NumberOfEmployees, AccountId FROM Contact WHERE Id = '{first}'"
    );
    let r = soql(&s, &tok, &q, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let want = format!(
        r#"{{"attributes":{{"type":"Contact","url":"/services/data/{V}/sobjects/Contact/{first}"}},"Id":"{first}","Account":{{"attributes":{{"type":"Account","url":"/services/data/{V}/sobjects/Account/{a0}"}},"Name":"#
    );
    assert!(r.text.contains(&want), "{}", r.text);
    let rec = &r.json()["records"][0];
    let person = p.person(leads);
    assert_eq!(rec["Account"]["Name"], json!(person.company_name));
    assert_eq!(
        rec["Account"]["Website"],
        json!(format!("https://www.{}", person.domain))
    );
    assert!(rec["Account"]["NumberOfEmployees"].is_number());
    assert_eq!(rec["AccountId"], json!(a0));
    let acct = rec["Account"].as_object().unwrap();
    assert_eq!(acct.len(), 4, "{acct:?}");

    // Paging renders the parent on every page (values read when the page is served).
    let r = soql(
        &s,
        &tok,
        "SELECT Id, Account.Name FROM Contact ORDER BY SystemModstamp, Id",
        Some(200),
    )
    .await;
    let p1 = r.json();
    assert_eq!(p1["totalSize"], contacts);
    let next = p1["nextRecordsUrl"].as_str().unwrap().to_string();
    let p2 = get(&s, &tok, &next).await.json();
    assert_eq!(p2["records"].as_array().unwrap().len(), contacts - 200);
    for rec in p1["records"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["records"].as_array().unwrap())
    {
        assert_eq!(rec["Account"]["attributes"]["type"], "Account");
        assert!(rec["Account"]["Name"].is_string(), "{rec}");
    }

    // A Contact without an Account: "Account": null. An AccountId naming no Account is
    // refused; a real one is followed.
    let path = format!("/services/data/{V}/sobjects/Contact/{first}");
    let r = patch_json(&s, &tok, &path, &json!({"AccountId": null}), &ENRICHD).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let one = format!("SELECT Id, Account.Name, Account.Website FROM Contact WHERE Id = '{first}'");
    let r = soql(&s, &tok, &one, None).await;
    assert!(r.text.contains(r#""Account":null"#), "{}", r.text);
    assert_eq!(r.json()["records"][0]["Account"], Value::Null);
    let bogus = json!({"AccountId": "001000000000999AAA"});
    let r = patch_json(&s, &tok, &path, &bogus, &ENRICHD).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "INVALID_CROSS_REFERENCE_KEY");
    let last = accounts.last().unwrap();
    let r = patch_json(
        &s,
        &tok,
        &path,
        &json!({"AccountId": &last[..15]}),
        &ENRICHD,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = soql(&s, &tok, &one, None).await;
    assert_eq!(
        r.json()["records"][0]["Account"]["Name"],
        s.field(last, "Name").unwrap()
    );

    // Lead.ConvertedAccountId is a relationship to Account too (null on seeded Leads).
    let r = soql(
        &s,
        &tok,
        "SELECT Id, ConvertedAccount.Name FROM Lead LIMIT 1",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["records"][0]["ConvertedAccount"], Value::Null);

    // Errors.
    let cases = [
        (
            "SELECT Id, Account.Foo__c FROM Contact",
            "INVALID_FIELD",
            "No such column 'Foo__c' on entity 'Account'",
        ),
        (
            "SELECT Id, Owner.Name FROM Contact",
            "INVALID_FIELD",
            "Didn't understand relationship 'Owner'",
        ),
        (
            "SELECT Id, Account.Name FROM Lead",
            "INVALID_FIELD",
            "Didn't understand relationship 'Account'",
        ),
        (
            "SELECT Id, Account.Owner.Name FROM Contact",
            "INVALID_FIELD",
            "Didn't understand relationship 'Owner'",
        ),
        (
            "SELECT Id, Account.Name, account.NAME FROM Contact",
            "MALFORMED_QUERY",
            "duplicate field selected: Account.Name",
        ),
        (
            "SELECT Id FROM Contact WHERE Account.Name = 'x'",
            "MALFORMED_QUERY",
            "simulator",
        ),
        (
            "SELECT Id FROM Contact ORDER BY Account.Name",
            "MALFORMED_QUERY",
            "simulator",
        ),
        (
            "SELECT Id FROM Account",
            "INVALID_TYPE",
            "sObject type 'Account' is not supported",
        ),
    ];
    for (q, code, msg) in cases {
        let r = soql(&s, &tok, q, None).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
        assert_eq!(r.error_code(), code, "{q}: {}", r.text);
        assert!(r.text.contains(msg), "{q}: {}", r.text);
    }
    s.shutdown().await;
}
