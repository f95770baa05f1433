//! Synchronous providers over real HTTP: Apollo, Hunter, PDL, ZeroBounce, Prospeo.

mod common;

use std::time::Duration;

use common::*;
use enrichd_sim::*;
use serde_json::{Value, json};

const MS: fn(u64) -> Duration = Duration::from_millis;

async fn srv(kind: ProviderKind, f: impl FnOnce(SimOptions) -> SimOptions) -> SimServer {
    start(kind, pop(), f(SimOptions::defaults(kind)))
        .await
        .unwrap()
}

// ------------------------------------------------------------------------------------ Apollo

async fn apollo_match(s: &SimServer, q: &[(&str, &str)]) -> Resp {
    send(
        client()
            .post(format!("{}/people/match", s.base_url()))
            .header("x-api-key", s.api_key())
            .query(q),
    )
    .await
}

#[tokio::test]
async fn apollo_auth_found_not_found_and_credits() {
    let s = srv(ProviderKind::Apollo, |o| o.with_credits(Some(5))).await;
    assert!(s.base_url().ends_with("/api/v1"));
    let pop = pop();
    // Auth.
    let r = send(client().post(format!("{}/people/match", s.base_url()))).await;
    assert_eq!(r.status, 401);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(r.text.starts_with("Invalid API key"));
    let r = send(
        client()
            .post(format!("{}/people/match", s.base_url()))
            .header("x-api-key", "wrong"),
    )
    .await;
    assert_eq!(r.status, 401);

    // Found with a verified work email.
    let i = find(&pop, |p| {
        knows(&s, p.index, SimChannel::WorkEmail).is_some_and(|k| k.word == Word::Verified)
    });
    let p = pop.person(i);
    let r = apollo_match(
        &s,
        &[
            ("first_name", &p.first_name),
            ("last_name", &p.last_name),
            ("domain", &p.domain),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let k = knows(&s, i, SimChannel::WorkEmail).unwrap();
    assert_eq!(v["person"]["email"], json!(k.value));
    assert_eq!(v["person"]["email_status"], "verified");
    assert_eq!(
        v["person"]["organization"]["primary_domain"],
        json!(p.domain)
    );
    assert_eq!(v["person"]["first_name"], json!(p.first_name));
    assert!(v["person"].get("personal_emails").is_none());
    assert!(
        v["request_id"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_digit())
    );
    assert_eq!(s.credits(), Some(4));

    // Name without domain => person null, not billed.
    let r = apollo_match(
        &s,
        &[("first_name", &p.first_name), ("last_name", &p.last_name)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["person"].is_null());
    // Nobody matched.
    let r = apollo_match(
        &s,
        &[("name", "Nobody Atall"), ("domain", "nowhere.example")],
    )
    .await;
    assert!(r.json()["person"].is_null());

    // Known person without an email => email null, "unavailable", not billed.
    let j = find(&pop, |p| {
        knows(&s, p.index, SimChannel::WorkEmail).is_none()
            && knows(&s, p.index, SimChannel::LinkedinUrl).is_some()
    });
    let r = apollo_match(&s, &[("linkedin_url", &pop.person(j).linkedin_url)]).await;
    let v = r.json();
    assert!(v["person"]["email"].is_null(), "{v}");
    assert_eq!(v["person"]["email_status"], "unavailable");
    assert_eq!(s.credits(), Some(4));

    // Personal emails: revealed for a US person, withheld in GDPR countries.
    let us = find(&pop, |p| {
        p.country == "US" && knows(&s, p.index, SimChannel::PersonalEmail).is_some()
    });
    let r = apollo_match(
        &s,
        &[
            ("email", &pop.person(us).work_email),
            ("reveal_personal_emails", "true"),
        ],
    )
    .await;
    assert_eq!(
        r.json()["person"]["personal_emails"],
        json!([knows(&s, us, SimChannel::PersonalEmail).unwrap().value])
    );
    let gb = find(&pop, |p| {
        p.country == "GB" && knows(&s, p.index, SimChannel::PersonalEmail).is_some()
    });
    let r = apollo_match(
        &s,
        &[
            ("linkedin_url", &pop.person(gb).linkedin_url),
            ("reveal_personal_emails", "true"),
        ],
    )
    .await;
    assert_eq!(r.json()["person"]["personal_emails"], json!([]));

    // reveal_phone_number needs a webhook_url.
    let r = apollo_match(
        &s,
        &[
            ("linkedin_url", &p.linkedin_url),
            ("reveal_phone_number", "true"),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("webhook_url"));

    // Out of credits => 422, nothing billed; answers that bill nothing still work.
    s.set_credits(Some(0));
    let r = apollo_match(&s, &[("email", &p.work_email)]).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json(),
        json!({"error": "Insufficient credits. Please upgrade your plan."})
    );
    let r = apollo_match(&s, &[("linkedin_url", &pop.person(j).linkedin_url)]).await;
    assert_eq!(r.status, 200);
    let st = s.stats();
    assert_eq!(s.credits(), Some(0));
    assert_eq!(st.count("POST /people/match", 422), 1);
    assert_eq!(st.count("POST /people/match", 401), 2);
    assert!(st.calls_for(i) >= 3);
    assert_eq!(
        st.credits_charged,
        st.log.iter().map(|r| r.charged).sum::<i64>()
    );
    assert!(st.credits_charged >= 2);
    assert_eq!(st.requests, 11);
}

#[tokio::test]
async fn apollo_rate_limit_retry_after() {
    let s = srv(ProviderKind::Apollo, |o| {
        o.with_limits(vec![(Duration::from_secs(2), 3)])
    })
    .await;
    for _ in 0..3 {
        assert_eq!(apollo_match(&s, &[("name", "A B")]).await.status, 200);
    }
    let r = apollo_match(&s, &[("name", "A B")]).await;
    assert_eq!(r.status, 429);
    let ra: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&ra), "{ra}");
    assert!(r.json()["message"].as_str().unwrap().starts_with(
        "The maximum number of api calls allowed for api/v1/people/match is 3 times per"
    ));
    let st = s.stats();
    assert_eq!(st.rate_limited, 1);
    assert_eq!(st.max_in_window(Duration::from_secs(2)), 4);
    let free = SimOptions::apollo_free_plan();
    assert_eq!(free.limits.len(), 3);
}

// ------------------------------------------------------------------------------------ Hunter

async fn hunter_find(s: &SimServer, key: &str, q: &[(&str, &str)]) -> Resp {
    let mut all = vec![("api_key", key)];
    all.extend_from_slice(q);
    send(
        client()
            .get(format!("{}/email-finder", s.base_url()))
            .query(&all),
    )
    .await
}

#[tokio::test]
async fn hunter_finder_verifier_credits_and_errors() {
    let s = srv(ProviderKind::Hunter, |o| o.with_credits(Some(3))).await;
    assert!(s.base_url().ends_with("/v2"));
    let pop = pop();
    let key = s.api_key().to_string();
    let r = hunter_find(&s, "bad", &[("domain", "x.com")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"errors":[{"id":"authentication_failed","code":401,"details":"No user found for the API key supplied"}]})
    );
    let r = hunter_find(&s, &key, &[("first_name", "A"), ("last_name", "B")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"errors":[{"id":"wrong_params","code":400,"details":"You are missing the domain or company parameter"}]})
    );

    let i = find(&pop, |p| {
        knows(&s, p.index, SimChannel::WorkEmail).is_some()
    });
    let p = pop.person(i);
    let k = knows(&s, i, SimChannel::WorkEmail).unwrap();
    let q = [
        ("domain", p.domain.as_str()),
        ("first_name", p.first_name.as_str()),
        ("last_name", p.last_name.as_str()),
    ];
    let r = hunter_find(&s, &key, &q).await;
    assert_eq!(r.status, 200);
    let d = &r.json()["data"];
    assert_eq!(d["email"], json!(k.value));
    let expected = match k.word {
        Word::Verified => "valid",
        Word::CatchAll => "accept_all",
        Word::Probable => "unknown",
    };
    assert_eq!(d["verification"]["status"], expected);
    assert_eq!(d["accept_all"], json!(pop.is_catch_all_domain(&p.domain)));
    assert!(d["score"].as_u64().unwrap() <= 100);
    assert_eq!(d["verification"]["date"].as_str().unwrap().len(), 10);
    assert!(d["phone_number"].is_null());
    // Same email again: not recounted.
    let r = hunter_find(&s, &key, &q).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.credits(), Some(2));
    // X-API-KEY header and full_name + company also work.
    let r = send(
        client()
            .get(format!("{}/email-finder", s.base_url()))
            .header("X-API-KEY", &key)
            .query(&[
                ("company", p.company_name.as_str()),
                ("full_name", &format!("{} {}", p.first_name, p.last_name)),
            ]),
    )
    .await;
    assert_eq!(r.json()["data"]["email"], json!(k.value));

    // Not found: 200, email null, not billed.
    let j = find(&pop, |p| {
        knows(&s, p.index, SimChannel::WorkEmail).is_none()
    });
    let pj = pop.person(j);
    let r = hunter_find(
        &s,
        &key,
        &[
            ("domain", &pj.domain),
            ("first_name", &pj.first_name),
            ("last_name", &pj.last_name),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let d = &r.json()["data"];
    assert!(d["email"].is_null() && d["score"].is_null());
    assert_eq!(d["verification"], json!({"date": null, "status": null}));
    assert_eq!(s.credits(), Some(2));

    // Verifier: 1 credit each.
    let ver = |email: String| {
        let s = &s;
        let key = key.clone();
        async move {
            send(
                client()
                    .get(format!("{}/email-verifier", s.base_url()))
                    .query(&[("email", email.as_str()), ("api_key", key.as_str())]),
            )
            .await
        }
    };
    let r = ver(p.work_email.clone()).await;
    assert_eq!(r.json()["data"]["status"], "valid");
    let r = ver(p.personal_email.clone()).await;
    assert_eq!(r.json()["data"]["status"], "webmail");
    assert_eq!(s.credits(), Some(0));
    // Out of credits => 429 usage_exceeded.
    let r = ver("x@y.com".into()).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["errors"][0]["id"], "usage_exceeded");
    let st = s.stats();
    assert_eq!(st.rate_limited, 0, "429 is not a rate limit at Hunter");
    assert_eq!(st.credits_charged, 3);
    assert_eq!(st.count("GET /email-verifier", 200), 2);
}

#[tokio::test]
async fn hunter_rate_limit_is_403_and_processing_is_202() {
    let s = srv(ProviderKind::Hunter, |o| {
        o.with_limits(vec![(Duration::from_secs(2), 2)])
    })
    .await;
    let key = s.api_key().to_string();
    s.inject(Fault {
        kind: FaultKind::Processing,
        scope: FaultScope::Next(1),
    });
    let q = [("domain", "x.com"), ("full_name", "A B")];
    assert_eq!(hunter_find(&s, &key, &q).await.status, 202);
    assert_eq!(hunter_find(&s, &key, &q).await.status, 200);
    let r = hunter_find(&s, &key, &q).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errors"][0]["id"], "too_many_requests");
    assert!(r.header("retry-after").is_none());
    assert_eq!(s.stats().rate_limited, 1);
    assert_eq!(SimOptions::defaults(ProviderKind::Hunter).limits.len(), 2);
}

// --------------------------------------------------------------------------------------- PDL

async fn pdl_get(s: &SimServer, q: &[(&str, &str)]) -> Resp {
    send(
        client()
            .get(format!("{}/v5/person/enrich", s.base_url()))
            .header("X-Api-Key", s.api_key())
            .query(q),
    )
    .await
}

#[tokio::test]
async fn pdl_found_not_found_credits_and_headers() {
    let s = srv(ProviderKind::Pdl, |o| o.with_credits(Some(2))).await;
    assert_eq!(s.base_url(), format!("http://{}", s.addr()));
    let pop = pop();
    let r = send(client().get(format!("{}/v5/person/enrich?profile=x", s.base_url()))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(r.json()["status"], 401);
    let r = pdl_get(&s, &[("first_name", "Jane"), ("last_name", "Doe")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let i = find(&pop, |p| {
        let all_right = SimChannel::ALL
            .iter()
            .all(|c| knows(&s, p.index, *c).is_none_or(|k| k.correct));
        all_right
            && knows(&s, p.index, SimChannel::Phone).is_some()
            && knows(&s, p.index, SimChannel::LinkedinUrl).is_some()
    });
    let p = pop.person(i);
    let r = pdl_get(&s, &[("profile", &p.linkedin_url)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], 200);
    let lk = v["likelihood"].as_i64().unwrap();
    assert!((7..=10).contains(&lk));
    let slug = p.linkedin_url.rsplit('/').next().unwrap();
    assert_eq!(
        v["data"]["linkedin_url"],
        json!(format!("linkedin.com/in/{slug}"))
    );
    assert_eq!(v["data"]["mobile_phone"], json!(p.phone));
    assert_eq!(v["data"]["phone_numbers"], json!([p.phone]));
    assert_eq!(v["data"]["first_name"], json!(p.first_name.to_lowercase()));
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-totallimit-remaining",
    ] {
        assert!(r.header(h).is_some(), "{h}");
    }
    assert_eq!(r.header("x-ratelimit-limit").unwrap(), r#"{"minute":1000}"#);
    // The 400 above passed auth and counted; the 401 did not.
    assert_eq!(
        r.header("x-ratelimit-remaining").unwrap(),
        r#"{"minute":998}"#
    );
    assert!(r.header("x-ratelimit-reset").unwrap().ends_with('Z'));
    assert_eq!(r.header("x-totallimit-remaining").unwrap(), "1");
    assert!(r.header("retry-after").is_none());

    // POST JSON works too and repeats are billed again.
    let r = send(json_body(
        client()
            .post(format!("{}/v5/person/enrich", s.base_url()))
            .header("X-Api-Key", s.api_key()),
        &json!({ "email": p.work_email }),
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.credits(), Some(0));

    // Not found: 404, not billed (even at zero balance).
    let r = pdl_get(
        &s,
        &[("name", "Nobody Atall"), ("company", "nowhere.example")],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"status":404,"error":{"type":"not_found","message":"No records were found matching your request"}})
    );
    // Out of credits => 402.
    let r = pdl_get(&s, &[("profile", &p.linkedin_url)]).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["error"]["type"], "payment_required");
    assert_eq!(s.stats().credits_charged, 2);
}

#[tokio::test]
async fn pdl_likelihood_required_free_plan_and_rate_limit() {
    let s = srv(ProviderKind::Pdl, |o| o).await;
    let pop = pop();
    let wrong = find(&pop, |p| {
        knows(&s, p.index, SimChannel::LinkedinUrl).is_some_and(|k| k.correct)
            && SimChannel::ALL
                .iter()
                .any(|c| knows(&s, p.index, *c).is_some_and(|k| !k.correct))
    });
    let pw = pop.person(wrong);
    let r = pdl_get(&s, &[("profile", &pw.linkedin_url)]).await;
    let lk = r.json()["likelihood"].as_i64().unwrap();
    assert!((2..=5).contains(&lk));
    let r = pdl_get(
        &s,
        &[("profile", &pw.linkedin_url), ("min_likelihood", "6")],
    )
    .await;
    assert_eq!(r.status, 404);
    let r = pdl_get(
        &s,
        &[("profile", &pw.linkedin_url), ("min_likelihood", "11")],
    )
    .await;
    assert_eq!(r.status, 400);
    let no_phone = find(&pop, |p| {
        knows(&s, p.index, SimChannel::Phone).is_none()
            && knows(&s, p.index, SimChannel::LinkedinUrl).is_some()
    });
    let r = pdl_get(
        &s,
        &[
            ("profile", &pop.person(no_phone).linkedin_url),
            ("required", "mobile_phone"),
        ],
    )
    .await;
    assert_eq!(r.status, 404);
    // name + company (name) and name + location also match.
    let r = pdl_get(
        &s,
        &[
            ("first_name", &pw.first_name),
            ("last_name", &pw.last_name),
            ("company", &pw.company_name),
        ],
    )
    .await;
    assert_eq!(r.status, 200);

    let free = start(
        ProviderKind::Pdl,
        pop.clone(),
        SimOptions::pdl_free().with_limits(vec![(Duration::from_secs(2), 2)]),
    )
    .await
    .unwrap();
    let r = pdl_get(&free, &[("profile", &pw.linkedin_url)]).await;
    let d = &r.json()["data"];
    for f in [
        "work_email",
        "personal_emails",
        "mobile_phone",
        "linkedin_url",
    ] {
        assert!(d[f].is_boolean(), "{f}: {}", d[f]);
    }
    pdl_get(&free, &[("profile", &pw.linkedin_url)]).await;
    let r = pdl_get(&free, &[("profile", &pw.linkedin_url)]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(
        r.header("x-ratelimit-remaining").unwrap(),
        r#"{"2000ms":0}"#
    );
    assert!(r.header("x-ratelimit-reset").is_some());
    assert!(r.header("retry-after").is_none());
    assert_eq!(free.stats().rate_limited, 1);
}

// -------------------------------------------------------------------------------- ZeroBounce

async fn zb(s: &SimServer, key: &str, email: &str) -> Resp {
    send(client().get(format!("{}/validate", s.base_url())).query(&[
        ("api_key", key),
        ("email", email),
        ("ip_address", ""),
    ]))
    .await
}

#[tokio::test]
async fn zerobounce_statuses_credits_and_quirks() {
    let s = srv(ProviderKind::ZeroBounce, |o| o.with_credits(Some(4))).await;
    assert!(s.base_url().ends_with("/v2"));
    let pop = pop();
    let key = s.api_key().to_string();
    let r = zb(&s, "bad", "a@b.com").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"error": "Invalid API key or your account ran out of credits"})
    );

    let p = pop.person(find(&pop, |p| !pop.is_catch_all_domain(&p.domain)));
    let v = zb(&s, &key, &p.work_email).await.json();
    assert_eq!(v["status"], "valid");
    assert_eq!(v["sub_status"], "");
    assert_eq!(v["free_email"], false);
    assert_eq!(v["mx_found"], "true");
    assert_eq!(v["firstname"], json!(p.first_name));
    assert_eq!(v["address"], json!(p.work_email));
    assert_eq!(v["processed_at"].as_str().unwrap().len(), 23);
    let v = zb(&s, &key, &format!("zz.nobody@{}", p.domain))
        .await
        .json();
    assert_eq!(
        (v["status"].as_str(), v["sub_status"].as_str()),
        (Some("invalid"), Some("mailbox_not_found"))
    );
    let c = pop.person(find(&pop, |p| pop.is_catch_all_domain(&p.domain)));
    let v = zb(&s, &key, &format!("zz.nobody@{}", c.domain))
        .await
        .json();
    assert_eq!(v["status"], "catch-all");
    let v = zb(&s, &key, "someone@unknown-domain.example").await.json();
    assert_eq!(
        (v["status"].as_str(), v["sub_status"].as_str()),
        (Some("invalid"), Some("no_dns_entries"))
    );
    assert_eq!(s.credits(), Some(0));
    // No credits left: same HTTP 200 quirk.
    let r = zb(&s, &key, &p.work_email).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["error"],
        "Invalid API key or your account ran out of credits"
    );
    let r = send(client().get(format!("{}/getcredits?api_key={key}", s.base_url()))).await;
    assert_eq!(r.json(), json!({"Credits": "0"}));
    assert_eq!(s.stats().credits_charged, 4);

    let lim = srv(ProviderKind::ZeroBounce, |o| {
        o.with_limits(vec![(Duration::from_secs(2), 1)])
    })
    .await;
    let key = lim.api_key().to_string();
    assert_eq!(zb(&lim, &key, &p.work_email).await.status, 200);
    let r = zb(&lim, &key, &p.work_email).await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"].is_string());
}

// ----------------------------------------------------------------------------------- Prospeo

async fn prospeo(s: &SimServer, key: &str, body: Value) -> Resp {
    send(json_body(
        client()
            .post(format!("{}/enrich-person", s.base_url()))
            .header("X-KEY", key),
        &body,
    ))
    .await
}

#[tokio::test]
async fn prospeo_match_credits_and_error_codes() {
    let s = srv(ProviderKind::Prospeo, |o| o.with_credits(Some(12))).await;
    let pop = pop();
    let key = s.api_key().to_string();
    let r = prospeo(&s, "bad", json!({"data": {}})).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": true, "error_code": "INVALID_API_KEY"})
    );
    let r = prospeo(&s, &key, json!({"data": {"first_name": "Jane"}})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": true, "error_code": "INVALID_DATAPOINTS"})
    );
    let r = prospeo(
        &s,
        &key,
        json!({"data": {"full_name": "Nobody Atall", "company_website": "nowhere.example"}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": true, "error_code": "NO_MATCH"}));
    assert!(r.header("x-minute-request-left").is_some());
    assert!(r.header("x-daily-request-left").is_some());

    let i = find(&pop, |p| {
        knows(&s, p.index, SimChannel::WorkEmail).is_some_and(|k| k.word == Word::Verified)
            && knows(&s, p.index, SimChannel::Phone).is_some()
    });
    let p = pop.person(i);
    let data = json!({"first_name": p.first_name, "last_name": p.last_name, "company_website": format!("https://{}", p.domain)});
    let r = prospeo(
        &s,
        &key,
        json!({"only_verified_email": true, "enrich_mobile": true, "data": data}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], false);
    assert_eq!(v["free_enrichment"], false);
    assert_eq!(
        v["person"]["email"]["email"],
        json!(knows(&s, i, SimChannel::WorkEmail).unwrap().value)
    );
    assert_eq!(v["person"]["email"]["status"], "VERIFIED");
    assert_eq!(v["person"]["mobile"]["revealed"], true);
    assert_eq!(
        v["person"]["mobile"]["mobile"],
        json!(human_phone(&knows(&s, i, SimChannel::Phone).unwrap().value))
    );
    assert_eq!(s.credits(), Some(2));
    // The returned person_id identifies the record.
    let pid = v["person"]["person_id"].as_str().unwrap().to_string();
    assert_eq!(pid.len(), 24);
    let r = prospeo(&s, &key, json!({"data": {"person_id": pid}})).await;
    assert_eq!(r.json()["person"]["person_id"], json!(pid));
    assert_eq!(r.json()["free_enrichment"], true);
    // Same record again: free for the lifetime of the account.
    let r = prospeo(
        &s,
        &key,
        json!({"enrich_mobile": true, "data": {"linkedin_url": p.linkedin_url}}),
    )
    .await;
    assert_eq!(r.json()["free_enrichment"], true);
    assert_eq!(s.credits(), Some(2));

    // only_verified_email with an unverified email => NO_MATCH, not billed.
    let u = find(&pop, |p| {
        knows(&s, p.index, SimChannel::WorkEmail).is_some_and(|k| k.word != Word::Verified)
    });
    let r = prospeo(
        &s,
        &key,
        json!({"only_verified_email": true, "data": {"email": pop.person(u).work_email}}),
    )
    .await;
    assert_eq!(r.json()["error_code"], "NO_MATCH");
    // A mobile costs 10: not affordable => INSUFFICIENT_CREDITS (HTTP 400).
    let m = find(&pop, |p| {
        p.index != i && knows(&s, p.index, SimChannel::Phone).is_some()
    });
    let r = prospeo(
        &s,
        &key,
        json!({"enrich_mobile": true, "data": {"linkedin_url": pop.person(m).linkedin_url}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": true, "error_code": "INSUFFICIENT_CREDITS"})
    );
    // Without the mobile it costs 1.
    let r = prospeo(
        &s,
        &key,
        json!({"data": {"linkedin_url": pop.person(m).linkedin_url}}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["person"]["mobile"]["mobile"].is_null());
    assert_eq!(r.json()["person"]["mobile"]["revealed"], false);
    assert_eq!(s.credits(), Some(1));
    assert_eq!(s.stats().credits_charged, 11);
    // GET is not allowed.
    let r = send(
        client()
            .get(format!("{}/enrich-person", s.base_url()))
            .header("X-KEY", &key),
    )
    .await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn prospeo_rate_limit_headers() {
    let s = srv(ProviderKind::Prospeo, |o| {
        o.with_limits(vec![
            (MS(1000), 2),
            (Duration::from_secs(60), 100),
            (Duration::from_secs(86_400), 1000),
        ])
    })
    .await;
    let key = s.api_key().to_string();
    let body = json!({"data": {"linkedin_url": "https://www.linkedin.com/in/nobody-x"}});
    let r = prospeo(&s, &key, body.clone()).await;
    assert_eq!(r.header("x-minute-request-left").unwrap(), "99");
    assert_eq!(r.header("x-daily-request-left").unwrap(), "999");
    assert_eq!(r.header("x-second-rate-limit").unwrap(), "2");
    prospeo(&s, &key, body.clone()).await;
    let r = prospeo(&s, &key, body.clone()).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        json!({"error": true, "error_code": "RATE_LIMITED"})
    );
    tokio::time::sleep(MS(1050)).await;
    assert_eq!(prospeo(&s, &key, body).await.status, 400);
    let st = s.stats();
    assert_eq!(st.rate_limited, 1);
    assert_eq!(st.max_in_window(MS(1000)), 3);
}
