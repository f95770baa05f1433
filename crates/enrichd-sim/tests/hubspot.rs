//! The HubSpot simulator over real HTTP.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use enrichd_sim::Population;
use enrichd_sim::hubspot::*;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::Digest;

// ------------------------------------------------------------------------------- helpers

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn pop(n: usize) -> Arc<Population> {
    static SMALL: OnceLock<Arc<Population>> = OnceLock::new();
    static BIG: OnceLock<Arc<Population>> = OnceLock::new();
    let cell = if n <= 600 { &SMALL } else { &BIG };
    cell.get_or_init(|| {
        Arc::new(Population::generate(
            11,
            if n <= 600 { 600 } else { 10_400 },
        ))
    })
    .clone()
}

fn data(n: usize) -> HubSpotData {
    HubSpotData::from_population(&pop(n), now_ms() - 60_000, 0.5)
}

fn unlimited() -> HubSpotOptions {
    HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited())
}

async fn sim(opts: HubSpotOptions) -> HubSpotSim {
    start_hubspot(data(600), opts).await.unwrap()
}

thread_local! {
    static CLIENT: reqwest::Client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
}

fn client() -> reqwest::Client {
    CLIENT.with(|c| c.clone())
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
}

async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = rb.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

fn pat(s: &HubSpotSim) -> String {
    s.options().private_app_token.clone().unwrap()
}

async fn get(s: &HubSpotSim, token: &str, path: &str) -> Resp {
    send(
        client()
            .get(format!("{}{path}", s.base_url()))
            .bearer_auth(token),
    )
    .await
}

async fn post(s: &HubSpotSim, token: &str, path: &str, body: &Value) -> Resp {
    send(
        client()
            .post(format!("{}{path}", s.base_url()))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap()),
    )
    .await
}

async fn form(s: &HubSpotSim, path: &str, params: &[(&str, &str)]) -> Resp {
    send(
        client()
            .post(format!("{}{path}", s.base_url()))
            .form(params),
    )
    .await
}

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

const REDIRECT: &str = "http://localhost:8765/oauth/callback";

/// Authorize (the "browser step") and return the code.
async fn authorize(s: &HubSpotSim, scope: &str, challenge: Option<&str>) -> Resp {
    let mut q = vec![
        ("client_id", s.options().client_id.clone()),
        ("redirect_uri", REDIRECT.to_string()),
        ("scope", scope.to_string()),
        (
            "optional_scope",
            "crm.schemas.contacts.write crm.objects.deals.read".into(),
        ),
        ("state", "st-1".to_string()),
    ];
    if let Some(c) = challenge {
        q.push(("code_challenge", c.to_string()));
        q.push(("code_challenge_method", "S256".into()));
    }
    send(
        client()
            .get(format!("{}/oauth/authorize", s.base_url()))
            .query(&q),
    )
    .await
}

fn location_params(r: &Resp) -> BTreeMap<String, String> {
    let loc = r.header("location").expect("a Location header");
    assert!(loc.starts_with(REDIRECT), "{loc}");
    url::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

const SCOPES: &str = "oauth crm.objects.contacts.read crm.objects.contacts.write";

async fn exchange(s: &HubSpotSim, code: &str, verifier: Option<&str>) -> Resp {
    let o = s.options();
    let mut p = vec![
        ("grant_type", "authorization_code"),
        ("client_id", o.client_id.as_str()),
        ("client_secret", o.client_secret.as_str()),
        ("redirect_uri", REDIRECT),
        ("code", code),
    ];
    if let Some(v) = verifier {
        p.push(("code_verifier", v));
    }
    form(s, "/oauth/2026-03/token", &p).await
}

async fn refresh(s: &HubSpotSim, rt: &str) -> Resp {
    let o = s.options();
    form(
        s,
        "/oauth/2026-03/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", o.client_id.as_str()),
            ("client_secret", o.client_secret.as_str()),
            ("refresh_token", rt),
        ],
    )
    .await
}

/// A full OAuth install: (access, refresh).
async fn install(s: &HubSpotSim) -> (String, String) {
    let r = authorize(s, SCOPES, None).await;
    let code = location_params(&r)["code"].clone();
    let t = exchange(s, &code, None).await.json();
    (
        t["access_token"].as_str().unwrap().to_string(),
        t["refresh_token"].as_str().unwrap().to_string(),
    )
}

fn ids_of(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// `Property values were not valid: [...]` → the entries.
fn property_errors(body: &Value) -> Vec<Value> {
    let msg = body["message"].as_str().unwrap();
    let rest = msg
        .strip_prefix("Property values were not valid: ")
        .unwrap_or_else(|| panic!("{msg}"));
    serde_json::from_str::<Vec<Value>>(rest).unwrap()
}

// --------------------------------------------------------------------------------- OAuth

#[tokio::test]
async fn authorize_and_code_exchange_with_pkce() {
    let s = sim(unlimited()).await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-sim-verifier";
    let r = authorize(&s, SCOPES, Some(&challenge(verifier))).await;
    assert_eq!(r.status, 302, "{}", r.text);
    let p = location_params(&r);
    assert_eq!(p["state"], "st-1");
    let code = p["code"].clone();

    // Wrong verifier.
    let bad = exchange(&s, &code, Some("not-the-verifier")).await;
    assert_eq!(bad.status, 400);
    let b = bad.json();
    assert_eq!(b["error"], "invalid_grant");
    assert_eq!(b["status"], "BAD_AUTH_CODE");
    assert!(b["error_description"].is_string() && b["message"].is_string());
    // Missing verifier.
    assert_eq!(
        exchange(&s, &code, None).await.json()["error"],
        "invalid_grant"
    );

    // Query parameters on the 2026-03 endpoint.
    let o = s.options().clone();
    let q = send(
        client()
            .post(format!("{}/oauth/2026-03/token", s.base_url()))
            .query(&[
                ("grant_type", "authorization_code"),
                ("client_id", o.client_id.as_str()),
                ("client_secret", o.client_secret.as_str()),
                ("redirect_uri", REDIRECT),
                ("code", code.as_str()),
                ("code_verifier", verifier),
            ]),
    )
    .await;
    assert_eq!(q.status, 400);
    assert_eq!(q.json()["error"], "invalid_request");

    // Right verifier.
    let ok = exchange(&s, &code, Some(verifier)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let t = ok.json();
    assert_eq!(t["token_type"], "bearer");
    assert_eq!(t["token_use"], "access_token");
    assert_eq!(t["expires_in"], 1800);
    assert_eq!(t["hub_id"], 62515);
    assert!(t["access_token"].as_str().unwrap().len() >= 300);
    let scopes: Vec<&str> = t["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Requested + the granted optional scope; the ungranted optional one is dropped.
    assert!(scopes.contains(&"crm.objects.contacts.write"));
    assert!(scopes.contains(&"crm.schemas.contacts.write"));
    assert!(!scopes.contains(&"crm.objects.deals.read"));
    // The token works.
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(get(&s, at, "/crm/v3/objects/contacts").await.status, 200);

    // Code reuse.
    let again = exchange(&s, &code, Some(verifier)).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"], "invalid_grant");

    // Bad client.
    let bc = form(
        &s,
        "/oauth/v3/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "nope"),
            ("client_secret", "x"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(bc.status, 400);
    assert_eq!(bc.json()["error"], "invalid_client");
    assert_eq!(bc.json()["status"], "BAD_CLIENT_ID");

    // Scope the account cannot grant → redirect with invalid_scope.
    let r = authorize(&s, "oauth crm.objects.deals.read", None).await;
    assert_eq!(r.status, 302);
    let p = location_params(&r);
    assert_eq!(p["error"], "invalid_scope");
    assert_eq!(p["state"], "st-1");
    assert!(!p.contains_key("code"));
    // Unknown client / missing redirect_uri / plain PKCE → 400, no redirect.
    for q in [
        vec![
            ("client_id", "nope"),
            ("redirect_uri", REDIRECT),
            ("scope", "oauth"),
        ],
        vec![("client_id", o.client_id.as_str()), ("scope", "oauth")],
        vec![
            ("client_id", o.client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", "oauth"),
            ("code_challenge", "abc"),
            ("code_challenge_method", "plain"),
        ],
    ] {
        let r = send(
            client()
                .get(format!("{}/oauth/authorize", s.base_url()))
                .query(&q),
        )
        .await;
        assert_eq!(r.status, 400, "{q:?}");
        assert!(r.header("location").is_none());
    }

    // The legacy v1 endpoint works but is counted separately.
    let (_, rt) = install(&s).await;
    let v1 = form(
        &s,
        "/oauth/v1/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", o.client_id.as_str()),
            ("client_secret", o.client_secret.as_str()),
            ("refresh_token", rt.as_str()),
        ],
    )
    .await;
    assert_eq!(v1.status, 200);
    let st = s.stats();
    assert_eq!(st.count("POST /oauth/v1/token"), 1);
    assert!(st.count("POST /oauth/2026-03/token") >= 5);
    assert_eq!(st.token_grants["authorization_code"], 2);
    assert_eq!(st.api_calls(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn refresh_rotation_and_revoke() {
    // No rotation: the same refresh token comes back; old access tokens stay valid.
    let s = sim(unlimited()).await;
    let (at1, rt) = install(&s).await;
    let r = refresh(&s, &rt).await;
    assert_eq!(r.status, 200);
    let t = r.json();
    assert_eq!(t["refresh_token"], rt.as_str());
    let at2 = t["access_token"].as_str().unwrap().to_string();
    assert_ne!(at1, at2);
    assert_eq!(get(&s, &at1, "/crm/v3/objects/contacts").await.status, 200);
    assert_eq!(get(&s, &at2, "/crm/v3/objects/contacts").await.status, 200);

    // Revoke → BAD_REFRESH_TOKEN with the documented body.
    let o = s.options().clone();
    let rv = form(
        &s,
        "/oauth/2026-03/token/revoke",
        &[
            ("client_id", o.client_id.as_str()),
            ("client_secret", o.client_secret.as_str()),
            ("token", rt.as_str()),
        ],
    )
    .await;
    assert_eq!(rv.status, 200);
    assert!(rv.text.is_empty());
    let r = refresh(&s, &rt).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error":"invalid_grant","error_description":"refresh token is invalid, expired or revoked",
               "status":"BAD_REFRESH_TOKEN","message":"refresh token is invalid, expired or revoked"})
    );
    // Access tokens survive the revoke.
    assert_eq!(get(&s, &at2, "/crm/v3/objects/contacts").await.status, 200);
    // revoke_refresh_tokens() too.
    let (_, rt2) = install(&s).await;
    s.revoke_refresh_tokens();
    assert_eq!(
        refresh(&s, &rt2).await.json()["status"],
        "BAD_REFRESH_TOKEN"
    );
    s.shutdown().await;

    // Rotation: a new refresh token each time, the old one revoked.
    let s = sim(unlimited().with_rotation(true)).await;
    let (_, rt) = install(&s).await;
    let t = refresh(&s, &rt).await.json();
    let rt2 = t["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt2, rt);
    assert_eq!(refresh(&s, &rt).await.json()["status"], "BAD_REFRESH_TOKEN");
    assert_eq!(refresh(&s, &rt2).await.status, 200);
    assert_eq!(s.stats().token_grants["refresh_token"], 2);

    // Token endpoint rate limit fault.
    s.inject(HubSpotFault::TokenRateLimited { count: 1 });
    let r = refresh(&s, &rt2).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.json()["message"], "You have reached your rate limit.");
    assert_eq!(
        refresh(&s, &rt2).await.status,
        400,
        "rotated away by the 200 above"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn api_auth_errors_and_scopes() {
    let s = sim(unlimited().with_token_ttl(Duration::from_secs(60))).await;
    // Missing / unknown token.
    let r = send(client().get(format!("{}/crm/v3/objects/contacts", s.base_url()))).await;
    assert_eq!(r.status, 401);
    let b = r.json();
    assert_eq!(b["category"], "INVALID_AUTHENTICATION");
    assert_eq!(b["status"], "error");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("Authentication credentials not found.")
    );
    assert!(b["correlationId"].as_str().unwrap().len() == 36);
    assert_eq!(
        get(&s, "garbage", "/crm/v3/objects/contacts").await.status,
        401
    );

    let (at, rt) = install(&s).await;
    // Granted scopes: contacts read/write only (OAuth install above). Companies → 403.
    let r = get(&s, &at, "/crm/v3/objects/companies").await;
    assert_eq!(r.status, 403);
    let b = r.json();
    assert_eq!(b["category"], "MISSING_SCOPES");
    assert_eq!(
        b["errors"][0]["context"]["requiredGranularScopes"],
        json!(["crm.objects.companies.read"])
    );
    assert_eq!(
        b["errors"][0]["message"],
        "One or more of the following scopes are required."
    );
    // The private-app token carries every granted scope.
    assert_eq!(
        get(&s, &pat(&s), "/crm/v3/objects/companies").await.status,
        200
    );

    // Expired access token.
    s.expire_access_tokens();
    let r = get(&s, &at, "/crm/v3/objects/contacts").await;
    assert_eq!(r.status, 401);
    let b = r.json();
    assert_eq!(b["category"], "EXPIRED_AUTHENTICATION");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("The OAuth token used to make this call expired ")
    );
    assert!(
        b["context"]["expire time"][0]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // The PAT never expires; a refresh gives a working token.
    assert_eq!(
        get(&s, &pat(&s), "/crm/v3/objects/contacts").await.status,
        200
    );
    let at2 = refresh(&s, &rt).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(&s, &at2, "/crm/v3/objects/contacts").await.status, 200);

    // Unknown path and malformed JSON: standard error shape.
    let r = get(&s, &pat(&s), "/crm/v3/nothing/here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["status"], "error");
    let r = send(
        client()
            .post(format!(
                "{}/crm/v3/objects/contacts/batch/update",
                s.base_url()
            ))
            .bearer_auth(pat(&s))
            .header("content-type", "application/json")
            .body("{\"inputs\": [ {\"id\": "),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["category"], "VALIDATION_ERROR");
    s.shutdown().await;
}

// ------------------------------------------------------------------------------- objects

#[tokio::test]
async fn list_pages_cover_every_contact_once() {
    let s = sim(unlimited()).await;
    let tok = pat(&s);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = vec![
            ("limit", "100".to_string()),
            ("properties", "email,company,nonexistent".to_string()),
            ("associations", "companies".to_string()),
        ];
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let r = send(
            client()
                .get(format!("{}/crm/v3/objects/contacts", s.base_url()))
                .bearer_auth(&tok)
                .query(&q),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let b = r.json();
        pages += 1;
        let first = &b["results"][0];
        let props = first["properties"].as_object().unwrap();
        assert!(props.contains_key("hs_object_id"));
        assert!(props.contains_key("createdate") && props.contains_key("lastmodifieddate"));
        assert!(props.contains_key("email") && !props.contains_key("nonexistent"));
        assert!(first["createdAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(first["archived"], false);
        assert_eq!(
            first["associations"]["companies"]["results"][0]["type"],
            "contact_to_company"
        );
        seen.extend(ids_of(&b));
        match b["paging"]["next"]["after"].as_str() {
            Some(a) => {
                assert!(a.parse::<u64>().is_err(), "cursor must be opaque: {a}");
                assert!(
                    b["paging"]["next"]["link"]
                        .as_str()
                        .unwrap()
                        .contains("after=")
                );
                after = Some(a.to_string());
            }
            None => break,
        }
    }
    assert_eq!(pages, 6);
    assert_eq!(seen, s.contact_ids());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 600);
    assert_eq!(seen[0], "101");

    // Over the max, and the default page size.
    let r = get(&s, &tok, "/crm/v3/objects/contacts?limit=101").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["category"], "VALIDATION_ERROR");
    let b = get(&s, &tok, "/crm/objects/2026-03/contacts").await.json();
    assert_eq!(b["results"].as_array().unwrap().len(), 10);
    let p = b["results"][0]["properties"].as_object().unwrap();
    assert!(p.contains_key("firstname") && p.contains_key("lastname") && p.contains_key("email"));
    // Companies list and single get.
    let b = get(
        &s,
        &tok,
        "/crm/v3/objects/companies?limit=2&associations=contacts",
    )
    .await
    .json();
    assert_eq!(b["results"][0]["id"], "9000001");
    assert!(b["results"][0]["properties"]["hs_lastmodifieddate"].is_string());
    assert!(
        !b["results"][0]["associations"]["contacts"]["results"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = get(&s, &tok, "/crm/v3/objects/contacts/102?properties=jobtitle").await;
    assert_eq!(
        r.json()["properties"]["jobtitle"],
        pop(600).person(1).job_title.as_str()
    );
    assert_eq!(
        get(&s, &tok, "/crm/v3/objects/contacts/99999").await.status,
        404
    );
    let st = s.stats();
    assert_eq!(st.count("GET /crm/v3/objects/contacts"), 7);
    assert_eq!(st.count("GET /crm/objects/2026-03/contacts"), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn from_population_shape() {
    let p = pop(600);
    let d = HubSpotData::from_population(&p, 1_800_000_000_000, 0.3);
    assert_eq!(d.contacts.len(), 600);
    assert_eq!(d.companies.len(), p.company_count());
    let with_email = d
        .contacts
        .iter()
        .filter(|c| c.properties.contains_key("email"))
        .count();
    assert!((120..=240).contains(&with_email), "{with_email}");
    let with_company = d
        .contacts
        .iter()
        .filter(|c| c.properties.contains_key("company"))
        .count();
    assert!((360..=480).contains(&with_company), "{with_company}");
    for (i, c) in d.contacts.iter().enumerate() {
        let person = p.person(i);
        assert_eq!(c.properties["firstname"], person.first_name);
        if let Some(e) = c.properties.get("email") {
            assert_eq!(*e, person.work_email);
        }
        let co = &d.companies[c.company.unwrap()];
        assert_eq!(co.domain, person.domain);
        assert!(c.created_at_ms >= 1_800_000_000_000 - 90 * 86_400_000);
        assert!(c.modified_at_ms >= c.created_at_ms && c.modified_at_ms <= 1_800_000_000_000);
    }
    // Deterministic.
    let d2 = HubSpotData::from_population(&p, 1_800_000_000_000, 0.3);
    assert_eq!(d2.contacts[17].properties, d.contacts[17].properties);
}

#[tokio::test]
async fn search_filters_sorts_paging_and_cap() {
    let s = start_hubspot(data(10_400), unlimited()).await.unwrap();
    let tok = pat(&s);
    let path = "/crm/v3/objects/contacts/search";
    let ids = s.contact_ids();
    // Give 10,100 records one shared timestamp (a month-end bulk update).
    let t0 = now_ms() - 3_600_000;
    s.set_modified_at(&ids[..10_100], t0);
    let body = |after: &str, limit: u64| {
        json!({"filterGroups":[{"filters":[
                {"propertyName":"lastmodifieddate","operator":"GTE","value": t0.to_string()},
                {"propertyName":"lastmodifieddate","operator":"LTE","value": t0.to_string()}]}],
               "sorts":[{"propertyName":"hs_object_id","direction":"ASCENDING"}],
               "properties":["email","icp_score"], "limit": limit, "after": after})
    };
    let r = post(&s, &tok, path, &body("0", 200)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("x-hubspot-ratelimit-max").is_none(),
        "no rate-limit headers on search"
    );
    let b = r.json();
    assert_eq!(b["total"], 10_100);
    assert_eq!(b["results"].as_array().unwrap().len(), 200);
    assert_eq!(b["results"][0]["id"], "101");
    assert_eq!(b["paging"]["next"]["after"], "200");
    let p = b["results"][0]["properties"].as_object().unwrap();
    for k in [
        "email",
        "icp_score",
        "hs_object_id",
        "createdate",
        "lastmodifieddate",
    ] {
        assert!(p.contains_key(k), "{k}");
    }
    // Paging right up to the cap works and still advertises a next page…
    let b = post(&s, &tok, path, &body("9800", 200)).await.json();
    assert_eq!(b["paging"]["next"]["after"], "10000");
    // …but paging beyond 10,000 is a 400.
    let r = post(&s, &tok, path, &body("10000", 200)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["category"], "VALIDATION_ERROR");
    // Loop-proof restart: hs_object_id > last id.
    let last = ids[9_999].clone();
    let b = post(
        &s,
        &tok,
        path,
        &json!({"filterGroups":[{"filters":[
            {"propertyName":"lastmodifieddate","operator":"GTE","value": t0.to_string()},
            {"propertyName":"lastmodifieddate","operator":"LTE","value": t0.to_string()},
            {"propertyName":"hs_object_id","operator":"GT","value": last}]}],
          "sorts":[{"propertyName":"hs_object_id","direction":"ASCENDING"}], "limit": 200}),
    )
    .await
    .json();
    assert_eq!(b["total"], 100);
    assert!(b.get("paging").is_none());
    // ISO dates are accepted too.
    let iso = {
        let r = get(&s, &tok, "/crm/v3/objects/contacts/101").await.json();
        r["properties"]["lastmodifieddate"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let b = post(
        &s,
        &tok,
        path,
        &json!({"filterGroups":[{"filters":[{"propertyName":"lastmodifieddate","operator":"EQ","value": iso}]}]}),
    )
    .await
    .json();
    assert_eq!(b["total"], 10_100);

    // Sort DESC by a number, ties by id.
    let b = post(
        &s,
        &tok,
        path,
        &json!({"filterGroups":[{"filters":[{"propertyName":"icp_score","operator":"GTE","value":"90"}]}],
                "sorts":[{"propertyName":"icp_score","direction":"DESCENDING"}],
                "properties":["icp_score"], "limit": 50}),
    )
    .await
    .json();
    let scores: Vec<i64> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["properties"]["icp_score"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| *s >= 90));
    // OR of groups; IN; HAS_PROPERTY; CONTAINS_TOKEN; case-insensitive EQ.
    let p0 = pop(10_400).person(0).clone();
    let b = post(
        &s,
        &tok,
        path,
        &json!({"filterGroups":[
            {"filters":[{"propertyName":"firstname","operator":"EQ","value": p0.first_name.to_uppercase()},
                        {"propertyName":"lastname","operator":"EQ","value": p0.last_name}]},
            {"filters":[{"propertyName":"hs_object_id","operator":"IN","values":["102","103"]}]}]}),
    )
    .await
    .json();
    let got = ids_of(&b);
    assert!(
        got.contains(&"101".to_string())
            && got.contains(&"102".to_string())
            && got.contains(&"103".to_string())
    );
    let domain = p0.domain.clone();
    let b = post(
        &s,
        &tok,
        path,
        &json!({"filterGroups":[{"filters":[{"propertyName":"email","operator":"CONTAINS_TOKEN","value": format!("*@{domain}")}]}], "limit": 100}),
    )
    .await
    .json();
    assert!(b["total"].as_u64().unwrap() >= 1);
    for r in b["results"].as_array().unwrap() {
        assert!(
            r["properties"]["email"]
                .as_str()
                .unwrap()
                .ends_with(&domain)
        );
    }
    let b = post(
        &s,
        &tok,
        path,
        &json!({"filterGroups":[{"filters":[{"propertyName":"email","operator":"NOT_HAS_PROPERTY"}]}], "limit": 1}),
    )
    .await
    .json();
    let no_email = b["total"].as_u64().unwrap();
    assert!(no_email > 3000 && no_email < 7400, "{no_email}");

    // Validation.
    let f = json!({"propertyName":"email","operator":"HAS_PROPERTY"});
    let bad = [
        json!({"filterGroups": vec![json!({"filters":[f.clone()]}); 6]}),
        json!({"filterGroups": [{"filters": vec![f.clone(); 7]}]}),
        json!({"filterGroups": vec![json!({"filters": vec![f.clone(); 4]}); 5]}),
        json!({"sorts": [{"propertyName":"email"}, {"propertyName":"firstname"}]}),
        json!({"limit": 201}),
        json!({"after": "abc"}),
        json!({"query": "x".repeat(3001)}),
        json!({"filterGroups":[{"filters":[{"propertyName":"lastmodifieddate","operator":"GT","value":"yesterday"}]}]}),
    ];
    for b in bad {
        let r = post(&s, &tok, path, &b).await;
        assert_eq!(r.status, 400, "{b}");
        assert_eq!(r.json()["category"], "VALIDATION_ERROR");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn search_index_delay_hides_fresh_changes() {
    let s = sim(unlimited().with_search_index_delay(Duration::from_millis(400))).await;
    let tok = pat(&s);
    let id = s.create_contact(
        &[("firstname", "Zelda"), ("email", "zelda@example.org")],
        None,
    );
    let q = json!({"filterGroups":[{"filters":[{"propertyName":"email","operator":"EQ","value":"zelda@example.org"}]}]});
    let path = "/crm/v3/objects/contacts/search";
    assert_eq!(post(&s, &tok, path, &q).await.json()["total"], 0);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let b = post(&s, &tok, path, &q).await.json();
    assert_eq!(b["total"], 1);
    assert_eq!(b["results"][0]["id"], id.as_str());
    s.human_edit(&id, &[("email", "zelda2@example.org")]);
    assert_eq!(post(&s, &tok, path, &q).await.json()["total"], 0);
    s.shutdown().await;
}

#[tokio::test]
async fn batch_read_reports_unknown_ids() {
    let s = sim(unlimited()).await;
    let tok = pat(&s);
    let r = post(
        &s,
        &tok,
        "/crm/v3/objects/contacts/batch/read",
        &json!({"inputs":[{"id":"101"},{"id":"102"},{"id":"999999"},{"id":"abc"}],
                "properties":["email","jobtitle"], "propertiesWithHistory": []}),
    )
    .await;
    assert_eq!(r.status, 207);
    let b = r.json();
    assert_eq!(b["status"], "COMPLETE");
    assert_eq!(b["numErrors"], 1);
    assert_eq!(b["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(b["errors"][0]["context"]["ids"], json!(["999999", "abc"]));
    assert_eq!(ids_of(&b), vec!["101", "102"]);
    assert!(b["startedAt"].is_string() && b["completedAt"].is_string());
    let r = post(
        &s,
        &tok,
        "/crm/v3/objects/contacts/batch/read",
        &json!({"inputs":[{"id":"101"}], "properties":["email"]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let inputs: Vec<Value> = (0..101)
        .map(|i| json!({"id": (101 + i).to_string()}))
        .collect();
    let r = post(
        &s,
        &tok,
        "/crm/v3/objects/contacts/batch/read",
        &json!({"inputs": inputs, "properties":[]}),
    )
    .await;
    assert_eq!(r.status, 400);

    // v4 associations.
    let cid = s.create_contact(&[("firstname", "Lonely")], None);
    let r = post(
        &s,
        &tok,
        "/crm/v4/associations/contact/company/batch/read",
        &json!({"inputs":[{"id":"101"},{"id": cid}]}),
    )
    .await;
    assert_eq!(r.status, 207);
    let b = r.json();
    assert_eq!(b["results"][0]["from"]["id"], "101");
    assert_eq!(b["results"][0]["to"][0]["toObjectId"], 9_000_001);
    let types = &b["results"][0]["to"][0]["associationTypes"];
    assert_eq!(types[0]["typeId"], 279);
    assert_eq!(types[1]["typeId"], 1);
    assert_eq!(types[1]["label"], "Primary");
    assert_eq!(
        b["errors"][0]["subCategory"],
        "crm.associations.NO_ASSOCIATIONS_FOUND"
    );
    assert!(
        r.header("x-hubspot-ratelimit-max").is_none(),
        "exempt from the ten-secondly window"
    );
    let st = s.stats();
    assert_eq!(
        st.log.iter().filter(|c| c.bucket == Bucket::Exempt).count(),
        1
    );
    s.shutdown().await;
}

#[tokio::test]
async fn batch_update_200_207_and_400() {
    let s = sim(unlimited()).await;
    let tok = pat(&s);
    let path = "/crm/v3/objects/contacts/batch/update";
    let before = s.contact("101").unwrap();
    let old_title = before.get("jobtitle").unwrap().to_string();

    // All good → 200, history, lastmodifieddate only on change.
    let r = post(
        &s,
        &tok,
        path,
        &json!({"inputs":[
            {"id":"101","objectWriteTraceId":"t-101","properties":{"linkedin_url":"https://www.linkedin.com/in/x","jobtitle": old_title}},
            {"id":"102","objectWriteTraceId":"t-102","properties":{"jobtitle": before.get("jobtitle").unwrap()}}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = r.json();
    assert_eq!(b["status"], "COMPLETE");
    assert_eq!(
        b["results"][0]["properties"]["linkedin_url"],
        "https://www.linkedin.com/in/x"
    );
    let c = s.contact("101").unwrap();
    let h = &c.history["linkedin_url"];
    assert_eq!(h.last().unwrap().source_type, "INTEGRATION");
    assert_eq!(h.last().unwrap().source_id.as_deref(), Some("54321"));
    assert_ne!(c.get("lastmodifieddate"), before.get("lastmodifieddate"));
    assert_eq!(
        c.history["jobtitle"].len(),
        1,
        "unchanged value: no new history entry"
    );
    let st = s.stats();
    assert_eq!(st.records_updated, 2);
    assert_eq!(st.properties_written, 3);
    assert_eq!(st.log.last().unwrap().inputs, 2);

    // Empty string clears.
    let r = post(
        &s,
        &tok,
        path,
        &json!({"inputs":[{"id":"101","properties":{"linkedin_url":""}}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(s.contact("101").unwrap().get("linkedin_url").is_none());

    // Unknown properties → whole batch 400, names parsable.
    let r = post(
        &s,
        &tok,
        path,
        &json!({"inputs":[
            {"id":"101","properties":{"enrichment_email":"a@b.c","firstname":"X"}},
            {"id":"102","properties":{"enrichment_phone":"+1","enrichment_email":"d@e.f"}}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    let b = r.json();
    assert_eq!(b["category"], "VALIDATION_ERROR");
    let entries = property_errors(&b);
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["enrichment_email", "enrichment_phone"]);
    assert!(
        entries
            .iter()
            .all(|e| e["error"] == "PROPERTY_DOESNT_EXIST" && e["isValid"] == false)
    );
    assert_eq!(b["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    assert_ne!(
        s.contact("101").unwrap().get("firstname"),
        Some("X"),
        "nothing written"
    );
    // Read-only and invalid option.
    let r = post(
        &s,
        &tok,
        path,
        &json!({"inputs":[{"id":"101","properties":{"createdate":"0","lifecyclestage":"wizard","icp_score":"high"}}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    let codes: Vec<String> = property_errors(&r.json())
        .iter()
        .map(|e| e["error"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        codes,
        vec!["READ_ONLY_VALUE", "INVALID_LONG", "INVALID_OPTION"]
    );
    // Duplicates.
    let r = post(
        &s,
        &tok,
        path,
        &json!({"inputs":[{"id":"101","properties":{}},{"id":"101","properties":{}}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Duplicate IDs found in batch input")
    );
    // > 100 inputs.
    let inputs: Vec<Value> = (0..101)
        .map(|i| json!({"id": (101 + i).to_string(), "properties": {"seniority": "vp"}}))
        .collect();
    let r = post(&s, &tok, path, &json!({"inputs": inputs})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["category"], "VALIDATION_ERROR");

    // FailRecords (transient, once) + an unknown id → 207 with trace ids.
    s.inject(HubSpotFault::FailRecords {
        ids: vec!["103".into()],
        times: 1,
        transient: true,
    });
    s.inject(HubSpotFault::FailRecords {
        ids: vec!["104".into()],
        times: u32::MAX,
        transient: false,
    });
    let body = json!({"inputs":[
        {"id":"103","objectWriteTraceId":"t-103","properties":{"seniority":"vp"}},
        {"id":"104","objectWriteTraceId":"t-104","properties":{"seniority":"vp"}},
        {"id":"105","objectWriteTraceId":"t-105","properties":{"seniority":"vp"}},
        {"id":"777777","objectWriteTraceId":"t-x","properties":{"seniority":"vp"}}]});
    let r = post(&s, &tok, path, &body).await;
    assert_eq!(r.status, 207);
    let b = r.json();
    assert_eq!(b["numErrors"], 3);
    assert_eq!(ids_of(&b), vec!["105"]);
    let by_trace: BTreeMap<String, Value> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["context"]["objectWriteTraceId"][0]
                    .as_str()
                    .unwrap()
                    .to_string(),
                e.clone(),
            )
        })
        .collect();
    assert_eq!(by_trace["t-103"]["category"], "RATE_LIMITS");
    assert_eq!(by_trace["t-103"]["context"]["ids"], json!(["103"]));
    assert_eq!(by_trace["t-104"]["category"], "VALIDATION_ERROR");
    assert_eq!(
        property_errors(&by_trace["t-104"])[0]["error"],
        "INVALID_EMAIL"
    );
    assert_eq!(by_trace["t-x"]["category"], "OBJECT_NOT_FOUND");
    // Retry: 103 succeeds now, 104 still fails.
    let r = post(
        &s,
        &tok,
        path,
        &json!({"inputs":[
        {"id":"103","objectWriteTraceId":"t-103b","properties":{"seniority":"vp"}},
        {"id":"104","objectWriteTraceId":"t-104b","properties":{"seniority":"vp"}}]}),
    )
    .await;
    assert_eq!(r.status, 207);
    assert_eq!(ids_of(&r.json()), vec!["103"]);
    assert_eq!(s.contact("103").unwrap().get("seniority"), Some("vp"));
    s.clear_faults();

    // PATCH.
    let r = send(
        client()
            .patch(format!("{}/crm/v3/objects/contacts/106", s.base_url()))
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body(r#"{"properties":{"phone":"+1 415 555 0100"}}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["properties"]["phone"], "+1 415 555 0100");
    // Create: 201, duplicate email → 409.
    let r = post(
        &s,
        &tok,
        "/crm/v3/objects/contacts",
        &json!({"properties":{"email":"new@x.org","firstname":"N"}}),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = post(
        &s,
        &tok,
        "/crm/v3/objects/contacts",
        &json!({"properties":{"email":"NEW@x.org"}}),
    )
    .await;
    assert_eq!(r.status, 409);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Contact already exists. Existing ID: ")
    );
    s.shutdown().await;
}

// --------------------------------------------------------------------------- rate limits

#[tokio::test]
async fn ten_secondly_limit_and_headers() {
    let s = sim(HubSpotOptions::defaults()).await;
    let tok = pat(&s);
    let mut futs = Vec::new();
    for _ in 0..111 {
        let (c, url, tok) = (
            client(),
            format!("{}/crm/v3/objects/contacts?limit=1", s.base_url()),
            tok.clone(),
        );
        futs.push(tokio::spawn(async move {
            send(c.get(url).bearer_auth(tok)).await
        }));
    }
    let mut ok = 0;
    let mut limited = Vec::new();
    let mut remaining = Vec::new();
    for f in futs {
        let r = f.await.unwrap();
        match r.status {
            200 => {
                ok += 1;
                assert_eq!(r.header("x-hubspot-ratelimit-max").as_deref(), Some("110"));
                assert_eq!(
                    r.header("x-hubspot-ratelimit-interval-milliseconds")
                        .as_deref(),
                    Some("10000")
                );
                remaining.push(
                    r.header("x-hubspot-ratelimit-remaining")
                        .unwrap()
                        .parse::<u32>()
                        .unwrap(),
                );
                assert!(r.header("x-hubspot-ratelimit-daily").is_none());
            }
            429 => limited.push(r),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 110);
    assert_eq!(limited.len(), 1);
    remaining.sort_unstable();
    assert_eq!(remaining, (0..110).collect::<Vec<u32>>());
    let b = limited[0].json();
    assert_eq!(b["status"], "error");
    assert_eq!(
        b["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert_eq!(b["errorType"], "RATE_LIMIT");
    assert_eq!(b["policyName"], "TEN_SECONDLY_ROLLING");
    assert!(b["correlationId"].is_string() && b["requestId"].is_string());
    assert!(limited[0].header("retry-after").is_none());
    let st = s.stats();
    assert_eq!(st.rate_limited["TEN_SECONDLY_ROLLING"], 1);
    assert_eq!(
        st.max_in_window(Bucket::General, Duration::from_secs(10)),
        110
    );
    // Search has its own bucket even now.
    let q = json!({"limit": 1});
    assert_eq!(
        post(&s, &tok, "/crm/v3/objects/contacts/search", &q)
            .await
            .status,
        200
    );
    s.shutdown().await;
}

#[tokio::test]
async fn search_secondly_limit_and_set_limits() {
    let s = sim(HubSpotOptions::defaults().with_retry_after(true)).await;
    let tok = pat(&s);
    let q = json!({"limit": 1});
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = post(&s, &tok, "/crm/v3/objects/contacts/search", &q).await;
        if r.status == 429 {
            let b = r.json();
            assert_eq!(b["message"], "You have reached your secondly limit.");
            assert_eq!(b["policyName"], "SECONDLY");
            assert_eq!(r.header("retry-after").as_deref(), Some("1"));
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429]);
    // Lower the general limit mid-run.
    s.set_limits(HubSpotLimits {
        ten_secondly: 3,
        search_per_second: 5,
        daily: None,
    });
    let mut st = Vec::new();
    for _ in 0..4 {
        let r = get(&s, &tok, "/crm/v3/objects/contacts?limit=1").await;
        if r.status == 200 {
            assert_eq!(r.header("x-hubspot-ratelimit-max").as_deref(), Some("3"));
        } else {
            let ra: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=10).contains(&ra));
        }
        st.push(r.status);
    }
    assert_eq!(st, vec![200, 200, 200, 429]);
    // Daily limit, with private-app daily headers.
    s.set_limits(HubSpotLimits {
        ten_secondly: 1000,
        search_per_second: 5,
        daily: Some(12),
    });
    let r = get(&s, &tok, "/crm/v3/objects/contacts?limit=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-hubspot-ratelimit-daily").as_deref(), Some("12"));
    let left: u64 = r
        .header("x-hubspot-ratelimit-daily-remaining")
        .unwrap()
        .parse()
        .unwrap();
    for _ in 0..left {
        assert_eq!(
            get(&s, &tok, "/crm/v3/objects/contacts?limit=1")
                .await
                .status,
            200
        );
    }
    let r = get(&s, &tok, "/crm/v3/objects/contacts?limit=1").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["policyName"], "DAILY");
    assert_eq!(r.json()["message"], "You have reached your daily limit.");
    // Cross-process control endpoint.
    let r = send(
        client()
            .put(format!("{}/_sim/limits", s.base_url()))
            .body(serde_json::to_vec(&HubSpotLimits::unlimited()).unwrap()),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        get(&s, &tok, "/crm/v3/objects/contacts?limit=1")
            .await
            .status,
        200
    );
    let stats: Value = send(client().get(format!("{}/_sim/stats", s.base_url())))
        .await
        .json();
    assert_eq!(stats["rate_limited"]["SECONDLY"], 1);
    assert_eq!(stats["rate_limited"]["DAILY"], 1);
    assert!(stats["log"].as_array().unwrap().is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn latency_and_status_faults() {
    let s = sim(unlimited().with_latency(Duration::from_millis(80))).await;
    let tok = pat(&s);
    let t = Instant::now();
    assert_eq!(
        get(&s, &tok, "/crm/v3/objects/contacts?limit=1")
            .await
            .status,
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(80));
    s.inject(HubSpotFault::Status {
        path_prefix: "/crm/v3/objects/contacts/batch".into(),
        status: 502,
        count: 2,
    });
    let b = json!({"inputs":[{"id":"101"}],"properties":[]});
    let p = "/crm/v3/objects/contacts/batch/read";
    assert_eq!(post(&s, &tok, p, &b).await.status, 502);
    assert_eq!(
        get(&s, &tok, "/crm/v3/objects/contacts?limit=1")
            .await
            .status,
        200
    );
    assert_eq!(post(&s, &tok, p, &b).await.status, 502);
    assert_eq!(post(&s, &tok, p, &b).await.status, 200);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------- properties

#[tokio::test]
async fn properties_api() {
    let s = sim(unlimited()).await;
    let tok = pat(&s);
    let b = get(&s, &tok, "/crm/v3/properties/contacts").await.json();
    let names: Vec<&str> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in [
        "firstname",
        "email",
        "lifecyclestage",
        "hs_object_id",
        "lastmodifieddate",
        "icp_score",
        "linkedin_url",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let lm = get(&s, &tok, "/crm/v3/properties/contacts/lastmodifieddate")
        .await
        .json();
    assert_eq!(lm["type"], "datetime");
    assert_eq!(lm["modificationMetadata"]["readOnlyValue"], true);
    assert_eq!(
        get(&s, &tok, "/crm/v3/properties/contacts/nope")
            .await
            .status,
        404
    );

    // Group, then a property in it.
    let g = json!({"name":"enrichment","label":"Enrichment","displayOrder":-1});
    let r = post(&s, &tok, "/crm/v3/properties/contacts/groups", &g).await;
    assert_eq!(r.status, 201);
    assert!(s.property_group_exists("enrichment"));
    assert_eq!(
        post(&s, &tok, "/crm/v3/properties/contacts/groups", &g)
            .await
            .status,
        409
    );
    let p = json!({"groupName":"enrichment","name":"enrichment_email_source","label":"Enrichment: work email source",
                   "type":"enumeration","fieldType":"select",
                   "options":[{"label":"Provider A","value":"provider_a","hidden":false,"displayOrder":0}],
                   "description":"Which provider supplied the work email","formField":false,"hasUniqueValue":false});
    let r = post(&s, &tok, "/crm/v3/properties/contacts", &p).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b = r.json();
    assert_eq!(b["name"], "enrichment_email_source");
    assert_eq!(b["modificationMetadata"]["readOnlyValue"], false);
    assert_eq!(b["options"][0]["value"], "provider_a");
    let v = s.property("enrichment_email_source").unwrap();
    assert_eq!(v.property_type, "enumeration");
    assert_eq!(v.group_name, "enrichment");
    // Duplicate → 409.
    let r = post(&s, &tok, "/crm/v3/properties/contacts", &p).await;
    assert_eq!(r.status, 409);
    let b = r.json();
    assert_eq!(
        b["message"],
        "Property named 'enrichment_email_source' already exists."
    );
    assert_eq!(b["category"], "OBJECT_ALREADY_EXISTS");
    // Bad type/fieldType, unknown group, missing field.
    for bad in [
        json!({"groupName":"enrichment","name":"e1","label":"E","type":"string","fieldType":"select"}),
        json!({"groupName":"nope","name":"e2","label":"E","type":"string","fieldType":"text"}),
        json!({"groupName":"enrichment","name":"e3","type":"string","fieldType":"text"}),
    ] {
        assert_eq!(
            post(&s, &tok, "/crm/v3/properties/contacts", &bad)
                .await
                .status,
            400,
            "{bad}"
        );
    }
    // Now writable; the option is enforced.
    let path = "/crm/v3/objects/contacts/batch/update";
    let r = post(
        &s,
        &tok,
        path,
        &json!({"inputs":[{"id":"101","properties":{"enrichment_email_source":"provider_a"}}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post(
        &s,
        &tok,
        path,
        &json!({"inputs":[{"id":"101","properties":{"enrichment_email_source":"provider_b"}}]}),
    )
    .await;
    assert_eq!(property_errors(&r.json())[0]["error"], "INVALID_OPTION");
    // Batch create: one new, one existing → 207.
    let r = post(
        &s,
        &tok,
        "/crm/v3/properties/contacts/batch/create",
        &json!({"inputs":[
            {"groupName":"enrichment","name":"enrichment_phone","label":"Phone","type":"string","fieldType":"phonenumber"},
            p]}),
    )
    .await;
    assert_eq!(r.status, 207);
    assert_eq!(r.json()["results"][0]["name"], "enrichment_phone");
    assert!(s.property("enrichment_phone").is_some());
    // Schema write scope is needed.
    let s2 = sim(unlimited().with_scopes(&[
        "oauth",
        "crm.objects.contacts.read",
        "crm.schemas.contacts.read",
    ]))
    .await;
    let r = post(&s2, &pat(&s2), "/crm/v3/properties/contacts", &p).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["errors"][0]["context"]["requiredGranularScopes"][0],
        "crm.schemas.contacts.write"
    );
    s2.shutdown().await;
    s.shutdown().await;
}

// ------------------------------------------------------------------------------ webhooks

type Got = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A tiny receiver that verifies v3 signatures (401 when invalid or stale).
async fn receiver(secret: String) -> (String, Got) {
    use axum::{Router, body::Bytes, extract::State, http::HeaderMap as AxHeaders, routing::post};
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/hooks/hubspot", listener.local_addr().unwrap());
    let state = (got.clone(), secret, url.clone());
    async fn hook(
        State((got, secret, url)): State<(Got, String, String)>,
        headers: AxHeaders,
        body: Bytes,
    ) -> axum::http::StatusCode {
        let ts = headers
            .get("x-hubspot-request-timestamp")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let sig = headers
            .get("x-hubspot-signature-v3")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let fresh = ts
            .parse::<i64>()
            .is_ok_and(|t| (now_ms() - t).abs() < 300_000);
        let mut h = HeaderMap::new();
        for (k, v) in headers.iter() {
            h.insert(k.clone(), v.clone());
        }
        got.lock().unwrap().push((h, body.to_vec()));
        if fresh && sig == sign_v3(&secret, "POST", &url, &body, &ts) {
            axum::http::StatusCode::NO_CONTENT
        } else {
            axum::http::StatusCode::UNAUTHORIZED
        }
    }
    let app = Router::new()
        .route("/hooks/hubspot", post(hook))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

fn events(got: &Got) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|(_, b)| serde_json::from_slice::<Vec<Value>>(b).unwrap())
        .collect()
}

#[tokio::test]
async fn webhooks_signed_and_fired() {
    let secret = HubSpotOptions::defaults().client_secret;
    let (url, got) = receiver(secret).await;
    let s = sim(unlimited().with_webhooks(
        url,
        vec![
            Subscription::creation(),
            Subscription::property_change("email"),
            Subscription::property_change("firstname"),
        ],
    ))
    .await;
    let tok = pat(&s);
    // Human edit on a subscribed property (and one not subscribed).
    s.human_edit(
        "101",
        &[("email", "new.mail@example.com"), ("jobtitle", "CEO")],
    );
    // Same value again: no event.
    s.human_edit("101", &[("email", "new.mail@example.com")]);
    s.flush_webhooks().await;
    let ev = events(&got);
    assert_eq!(ev.len(), 1, "{ev:?}");
    let e = &ev[0];
    assert_eq!(e["subscriptionType"], "contact.propertyChange");
    assert_eq!(e["propertyName"], "email");
    assert_eq!(e["propertyValue"], "new.mail@example.com");
    assert_eq!(e["changeSource"], "CRM_UI");
    assert_eq!(e["objectId"], 101);
    assert_eq!(e["portalId"], 62515);
    assert_eq!(e["appId"], 54321);
    assert_eq!(e["attemptNumber"], 0);
    assert!(e["eventId"].is_u64() && e["subscriptionId"].is_u64() && e["occurredAt"].is_i64());
    {
        let g = got.lock().unwrap();
        let (h, body) = &g[0];
        assert!(h.get("x-hubspot-signature-v3").is_some());
        assert_eq!(h.get("x-hubspot-signature-version").unwrap(), "v1");
        let v1 = sign_v1(&HubSpotOptions::defaults().client_secret, body);
        assert_eq!(h.get("x-hubspot-signature").unwrap().to_str().unwrap(), v1);
        assert_eq!(h.get("content-type").unwrap(), "application/json");
        assert!(!String::from_utf8_lossy(body).contains(' '), "compact JSON");
    }
    assert_eq!(s.stats().webhook_deliveries, vec![(204, 1)]);

    // API writes: changeSource INTEGRATION with the app id; creation events.
    let inputs: Vec<Value> = (0..100)
        .map(|i| json!({"id": (101 + i).to_string(), "properties": {"firstname": format!("F{i}")}}))
        .collect();
    let r = post(
        &s,
        &tok,
        "/crm/v3/objects/contacts/batch/update",
        &json!({"inputs": inputs}),
    )
    .await;
    assert_eq!(r.status, 200);
    let id = s.create_contact(
        &[("firstname", "Nia"), ("email", "nia@example.com")],
        Some("9000002"),
    );
    s.flush_webhooks().await;
    let ev = events(&got);
    let api: Vec<&Value> = ev
        .iter()
        .filter(|e| e["changeSource"] == "INTEGRATION")
        .collect();
    assert_eq!(api.len(), 100);
    assert!(
        api.iter()
            .all(|e| e["sourceId"] == "54321" && e["propertyName"] == "firstname")
    );
    let created: Vec<&Value> = ev
        .iter()
        .filter(|e| e["subscriptionType"] == "contact.creation")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["changeFlag"], "NEW");
    assert_eq!(created[0]["changeSource"], "API");
    assert_eq!(created[0]["objectId"].to_string(), id);
    let ids: Vec<u64> = ev.iter().map(|e| e["eventId"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let st = s.stats();
    assert!(
        st.webhook_deliveries
            .iter()
            .all(|(status, n)| *status == 204 && *n <= 100)
    );
    assert_eq!(s.company("9000002").unwrap().contact_ids.last(), Some(&id));

    // Manual deliveries.
    let sample = json!([{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000u64,
        "subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",
        "changeFlag":"NEW","appId":54321}]);
    assert_eq!(s.deliver(&sample, Delivery::default()).await, Ok(204));
    let tampered = Delivery {
        tamper_body: true,
        ..Delivery::default()
    };
    assert_eq!(s.deliver(&sample, tampered).await, Ok(401));
    let wrong = Delivery {
        secret: Some("other".into()),
        ..Delivery::default()
    };
    assert_eq!(s.deliver(&sample, wrong).await, Ok(401));
    let stale = Delivery {
        timestamp_ms: Some(now_ms() - 600_000),
        ..Delivery::default()
    };
    assert_eq!(s.deliver(&sample, stale).await, Ok(401));
    let unsigned = Delivery {
        omit_signature: true,
        ..Delivery::default()
    };
    assert_eq!(s.deliver(&sample, unsigned).await, Ok(401));
    s.shutdown().await;
}

#[tokio::test]
async fn webhook_retries_on_failure() {
    // A receiver that always rejects: 3 attempts, attemptNumber 0..2.
    let (url, got) = receiver("not-the-secret".into()).await;
    let s = sim(unlimited().with_webhooks(url, vec![Subscription::property_change("email")])).await;
    s.human_edit("102", &[("email", "x@y.z")]);
    s.flush_webhooks().await;
    assert_eq!(
        s.stats().webhook_deliveries,
        vec![(401, 1), (401, 1), (401, 1)]
    );
    let attempts: Vec<u64> = events(&got)
        .iter()
        .map(|e| e["attemptNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, vec![0, 1, 2]);
    s.shutdown().await;
}

#[test]
fn sign_v3_reference_vector() {
    assert_eq!(
        sign_v3(
            "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
            "POST",
            "https://www.example.com/webhook_uri",
            b"{'example_field':'example_value'}",
            "1693657560000",
        ),
        "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
    );
}

#[test]
fn sign_v1_reference_vectors() {
    let secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    let body = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    assert_eq!(
        sign_v1(secret, body.as_bytes()),
        "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    );
    assert_eq!(
        sign_v1(secret, b"{'example_field':'example_value'}"),
        "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
    );
}

// ------------------------------------------------------------------------- scale, binary

#[tokio::test]
async fn hundred_thousand_contacts_start_fast_and_search_fast() {
    let base = now_ms();
    let countries = ["US", "GB", "DE", "FR"];
    let data = HubSpotData {
        companies: (0..5000)
            .map(|i| SeedCompany {
                name: format!("Company {i}"),
                domain: format!("company{i}.example"),
                properties: BTreeMap::new(),
            })
            .collect(),
        contacts: (0..100_000)
            .map(|i: usize| {
                let mut p = BTreeMap::new();
                p.insert("firstname".to_string(), format!("First{}", i % 997));
                p.insert("lastname".to_string(), format!("Last{}", i % 1009));
                p.insert("country".to_string(), countries[i % 4].to_string());
                p.insert("icp_score".to_string(), (i % 100).to_string());
                if i.is_multiple_of(3) {
                    p.insert(
                        "email".to_string(),
                        format!("p{i}@company{}.example", i % 5000),
                    );
                }
                SeedContact {
                    properties: p,
                    company: Some(i % 5000),
                    created_at_ms: base - 90 * 86_400_000 + i as i64 * 1000,
                    modified_at_ms: base - 86_400_000 + (i as i64 % 5000) * 1000,
                }
            })
            .collect(),
    };
    let t = Instant::now();
    let s = start_hubspot(data, unlimited()).await.unwrap();
    let startup = t.elapsed();
    assert!(startup < Duration::from_secs(2), "start took {startup:?}");
    let tok = pat(&s);
    let q = json!({"filterGroups":[{"filters":[
            {"propertyName":"lastmodifieddate","operator":"GTE","value": (base - 86_400_000 + 4_000_000).to_string()},
            {"propertyName":"hs_object_id","operator":"GT","value":"50000"}]}],
        "sorts":[{"propertyName":"hs_object_id","direction":"ASCENDING"}], "limit": 200});
    // Warm up, then time a few.
    post(&s, &tok, "/crm/v3/objects/contacts/search", &q).await;
    let t = Instant::now();
    for _ in 0..3 {
        let b = post(&s, &tok, "/crm/v3/objects/contacts/search", &q)
            .await
            .json();
        assert!(b["total"].as_u64().unwrap() > 9000);
    }
    let per = t.elapsed() / 3;
    eprintln!("100k contacts: start_hubspot {startup:?}, search {per:?} per call");
    // Generous for unoptimised builds; a release build answers in a few ms.
    assert!(per < Duration::from_millis(400), "search took {per:?}");
    assert_eq!(s.contact_ids().len(), 100_000);
    s.shutdown().await;
}

#[tokio::test]
async fn binary_prints_one_line_and_exits_when_stdin_closes() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_enrichd-sim"))
        .args([
            "hubspot",
            "--contacts",
            "300",
            "--seed",
            "5",
            "--latency-ms",
            "0",
            "--ten-secondly",
            "110",
            "--search-per-second",
            "5",
            "--email-share",
            "0.3",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(info["portal_id"], 62515);
    let base = info["base_url"].as_str().unwrap().to_string();
    let tok = info["private_app_token"].as_str().unwrap().to_string();
    assert!(info["client_id"].is_string() && info["client_secret"].is_string());
    let r = send(
        client()
            .get(format!("{base}/crm/v3/objects/contacts?limit=100"))
            .bearer_auth(&tok),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 100);
    drop(child.stdin.take());
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success());
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
