//! Fault injection, statistics, control endpoints, latency, determinism and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use enrichd_sim::*;
use serde_json::{Value, json};

const MS: fn(u64) -> Duration = Duration::from_millis;

async fn apollo(s: &SimServer, email: &str) -> Resp {
    send(
        client()
            .post(format!("{}/people/match", s.base_url()))
            .header("x-api-key", s.api_key())
            .query(&[("email", email)]),
    )
    .await
}

async fn pdl(s: &SimServer, profile: &str) -> Resp {
    send(
        client()
            .get(format!("{}/v5/person/enrich", s.base_url()))
            .query(&[("api_key", s.api_key()), ("profile", profile)]),
    )
    .await
}

#[tokio::test]
async fn status_malformed_delay_and_person_scope() {
    let pop = pop();
    let s = start(
        ProviderKind::Apollo,
        pop.clone(),
        SimOptions::defaults(ProviderKind::Apollo),
    )
    .await
    .unwrap();
    let (a, b) = (pop.person(10), pop.person(11));

    s.inject(Fault {
        kind: FaultKind::Status(503),
        scope: FaultScope::Next(1),
    });
    let r = apollo(&s, &a.work_email).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].is_string());
    assert_eq!(apollo(&s, &a.work_email).await.status, 200);

    s.inject(Fault {
        kind: FaultKind::MalformedBody,
        scope: FaultScope::Next(1),
    });
    let r = apollo(&s, &a.work_email).await;
    assert_eq!(r.status, 200);
    assert!(
        serde_json::from_str::<Value>(&r.text).is_err(),
        "{}",
        r.text
    );

    s.inject(Fault {
        kind: FaultKind::Delay(MS(300)),
        scope: FaultScope::Next(1),
    });
    let t = Instant::now();
    let r = apollo(&s, &a.work_email).await;
    assert!(t.elapsed() >= MS(300));
    assert_eq!(r.status, 200);

    s.inject(Fault {
        kind: FaultKind::Status(500),
        scope: FaultScope::Person(a.index),
    });
    assert_eq!(apollo(&s, &a.work_email).await.status, 500);
    assert_eq!(apollo(&s, &a.personal_email).await.status, 500);
    assert_eq!(apollo(&s, &b.work_email).await.status, 200);
    s.clear_faults();
    assert_eq!(apollo(&s, &a.work_email).await.status, 200);

    s.inject(Fault {
        kind: FaultKind::OutOfCredits,
        scope: FaultScope::Always,
    });
    assert_eq!(apollo(&s, &b.work_email).await.status, 422);
    assert_eq!(apollo(&s, &a.work_email).await.status, 422);
    s.clear_faults();

    s.inject(Fault {
        kind: FaultKind::RateLimited,
        scope: FaultScope::Next(1),
    });
    let r = apollo(&s, &b.work_email).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    let st = s.stats();
    assert_eq!(st.rate_limited, 1);
    assert_eq!(st.count("POST /people/match", 500), 2);
    assert_eq!(st.count("POST /people/match", 503), 1);
    assert!(st.calls_for(a.index) >= 8);
}

#[tokio::test]
async fn provider_specific_fault_bodies() {
    let pop = pop();
    let p = pop.person(3);
    let s = start(
        ProviderKind::Pdl,
        pop.clone(),
        SimOptions::defaults(ProviderKind::Pdl),
    )
    .await
    .unwrap();
    s.inject(Fault {
        kind: FaultKind::Status(503),
        scope: FaultScope::Next(1),
    });
    let r = pdl(&s, &p.linkedin_url).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], 503);
    assert!(r.json()["error"]["type"].is_string());
    assert!(r.header("x-ratelimit-remaining").is_some());
    s.inject(Fault {
        kind: FaultKind::OutOfCredits,
        scope: FaultScope::Next(1),
    });
    assert_eq!(
        pdl(&s, &p.linkedin_url).await.json()["error"]["type"],
        "payment_required"
    );
    s.inject(Fault {
        kind: FaultKind::AuthError,
        scope: FaultScope::Next(1),
    });
    assert_eq!(pdl(&s, &p.linkedin_url).await.status, 401);

    let h = start(
        ProviderKind::Hunter,
        pop.clone(),
        SimOptions::defaults(ProviderKind::Hunter),
    )
    .await
    .unwrap();
    h.inject(Fault {
        kind: FaultKind::RateLimited,
        scope: FaultScope::Next(1),
    });
    let r = send(
        client()
            .get(format!("{}/email-verifier", h.base_url()))
            .query(&[("api_key", h.api_key()), ("email", p.work_email.as_str())]),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errors"][0]["id"], "too_many_requests");
    assert_eq!(h.stats().rate_limited, 1);

    let z = start(
        ProviderKind::ZeroBounce,
        pop.clone(),
        SimOptions::defaults(ProviderKind::ZeroBounce),
    )
    .await
    .unwrap();
    z.inject(Fault {
        kind: FaultKind::Status(500),
        scope: FaultScope::Next(1),
    });
    let r = send(
        client()
            .get(format!("{}/validate", z.base_url()))
            .query(&[("api_key", z.api_key()), ("email", p.work_email.as_str())]),
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(r.json()["error"].is_string());

    let pr = start(
        ProviderKind::Prospeo,
        pop.clone(),
        SimOptions::defaults(ProviderKind::Prospeo),
    )
    .await
    .unwrap();
    pr.inject(Fault {
        kind: FaultKind::Status(502),
        scope: FaultScope::Next(1),
    });
    let r = send(json_body(
        client()
            .post(format!("{}/enrich-person", pr.base_url()))
            .header("X-KEY", pr.api_key()),
        &json!({"data": {"email": p.work_email}}),
    ))
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.json(),
        json!({"error": true, "error_code": "INTERNAL_ERROR"})
    );
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let pop = pop();
    let s = start(
        ProviderKind::Pdl,
        pop.clone(),
        SimOptions::defaults(ProviderKind::Pdl),
    )
    .await
    .unwrap();
    let root = format!("http://{}", s.addr());
    let fault = Fault {
        kind: FaultKind::Status(500),
        scope: FaultScope::Always,
    };
    let r = send(json_body(
        client().post(format!("{root}/_sim/faults")),
        &serde_json::to_value(&fault).unwrap(),
    ))
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(pdl(&s, &pop.person(1).linkedin_url).await.status, 500);
    let r = send(client().delete(format!("{root}/_sim/faults"))).await;
    assert_eq!(r.status, 204);
    assert_ne!(pdl(&s, &pop.person(1).linkedin_url).await.status, 500);
    let r = send(json_body(
        client().put(format!("{root}/_sim/credits")),
        &json!({"credits": 0}),
    ))
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(s.credits(), Some(0));
    let r = send(client().get(format!("{root}/_sim/stats"))).await;
    let st: Stats = serde_json::from_str(&r.text).unwrap();
    assert_eq!(st.requests, 2);
    assert_eq!(st.log.len(), 2);
    let r = send(json_body(
        client().post(format!("{root}/_sim/faults")),
        &json!({"nope": 1}),
    ))
    .await;
    assert_eq!(r.status, 400);
    s.reset_stats();
    assert_eq!(s.stats().requests, 0);
}

#[tokio::test]
async fn latency_in_flight_and_windows() {
    let pop = pop();
    let o = SimOptions::defaults(ProviderKind::Pdl).with_latency(MS(150), MS(200));
    let s = start(ProviderKind::Pdl, pop.clone(), o).await.unwrap();
    let t = Instant::now();
    let futs: Vec<_> = (0..6)
        .map(|i| {
            let s = &s;
            let url = pop.person(i).linkedin_url.clone();
            async move { pdl(s, &url).await }
        })
        .collect();
    let rs = futures_join(futs).await;
    assert!(rs.iter().all(|r| r.status == 200 || r.status == 404));
    assert!(t.elapsed() >= MS(150));
    assert!(
        t.elapsed() < MS(1000),
        "requests were not concurrent: {:?}",
        t.elapsed()
    );
    let st = s.stats();
    assert_eq!(st.max_in_flight, 6);
    assert_eq!(st.max_in_window(MS(100)), 6);

    // Synthetic log.
    let mut st = Stats::default();
    for at in [0u64, 100, 200, 999, 1000, 1500, 1999, 3000] {
        st.log.push(CallRecord {
            at_ms: at,
            endpoint: "GET /x".into(),
            status: 200,
            persons: vec![],
            channels: vec![],
            charged: 0,
        });
    }
    assert_eq!(st.max_in_window(Duration::from_secs(1)), 4);
    assert_eq!(st.max_in_window(MS(1)), 1);
    assert_eq!(st.max_in_window(Duration::from_secs(10)), 8);
}

async fn futures_join(futs: Vec<impl std::future::Future<Output = Resp>>) -> Vec<Resp> {
    let mut set = Vec::new();
    for f in futs {
        set.push(f);
    }
    let mut out = Vec::new();
    // Drive them concurrently without extra dependencies.
    let mut pinned: Vec<_> = set.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<Resp>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => done[i] = Some(r),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for d in done {
        out.push(d.unwrap());
    }
    out
}

#[tokio::test]
async fn same_seed_same_answers() {
    let mk = || async {
        let pop = std::sync::Arc::new(Population::generate(99, 1500));
        let a = start(
            ProviderKind::Apollo,
            pop.clone(),
            SimOptions::defaults(ProviderKind::Apollo),
        )
        .await
        .unwrap();
        let p = start(
            ProviderKind::Pdl,
            pop.clone(),
            SimOptions::defaults(ProviderKind::Pdl),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        for i in (0..1500).step_by(50) {
            let per = pop.person(i);
            out.push(apollo(&a, &per.work_email).await.text);
            out.push(pdl(&p, &per.linkedin_url).await.text);
        }
        out
    };
    let x = mk().await;
    let y = mk().await;
    assert_eq!(x, y);
    // And a differently named provider knows different things.
    let pop = std::sync::Arc::new(Population::generate(99, 1500));
    let other = start(
        ProviderKind::Pdl,
        pop.clone(),
        SimOptions::defaults(ProviderKind::Pdl).with_name("pdl-2"),
    )
    .await
    .unwrap();
    let mut differ = 0;
    for (k, i) in (0..1500).step_by(50).enumerate() {
        if pdl(&other, &pop.person(i).linkedin_url).await.text != x[2 * k + 1] {
            differ += 1;
        }
    }
    assert!(differ > 0);
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let s = start(
        ProviderKind::Hunter,
        pop(),
        SimOptions::defaults(ProviderKind::Hunter),
    )
    .await
    .unwrap();
    let addr = s.addr();
    assert_eq!(s.kind(), ProviderKind::Hunter);
    assert_eq!(s.api_key(), "sim-hunter-key");
    s.shutdown().await;
    tokio::time::sleep(MS(50)).await;
    let r = client()
        .get(format!("http://{addr}/v2/email-finder"))
        .send()
        .await;
    assert!(r.is_err());
    // Drop also stops the server.
    let s = start(
        ProviderKind::Hunter,
        pop(),
        SimOptions::defaults(ProviderKind::Hunter),
    )
    .await
    .unwrap();
    let addr = s.addr();
    drop(s);
    tokio::time::sleep(MS(50)).await;
    assert!(
        client()
            .get(format!("http://{addr}/v2/email-finder"))
            .send()
            .await
            .is_err()
    );
}

/// A request about `p` for any provider.
fn about(kind: ProviderKind, s: &SimServer, p: &Person) -> reqwest::RequestBuilder {
    let c = client();
    let base = s.base_url();
    let key = s.api_key();
    match kind {
        ProviderKind::FullEnrich => json_body(
            c.post(format!("{base}/contact/enrich/bulk"))
                .bearer_auth(key),
            &json!({"name": "f", "data": [{"linkedin_url": p.linkedin_url, "enrich_fields": ["contact.work_emails"]}]}),
        ),
        ProviderKind::Apollo => c
            .post(format!("{base}/people/match"))
            .header("x-api-key", key)
            .query(&[("linkedin_url", p.linkedin_url.as_str())]),
        ProviderKind::Hunter => c.get(format!("{base}/email-finder")).query(&[
            ("api_key", key),
            ("domain", p.domain.as_str()),
            ("first_name", p.first_name.as_str()),
            ("last_name", p.last_name.as_str()),
        ]),
        ProviderKind::Pdl => c
            .get(format!("{base}/v5/person/enrich"))
            .header("X-Api-Key", key)
            .query(&[("profile", p.linkedin_url.as_str())]),
        ProviderKind::ZeroBounce => c
            .get(format!("{base}/validate"))
            .query(&[("api_key", key), ("email", p.work_email.as_str())]),
        ProviderKind::Prospeo => json_body(
            c.post(format!("{base}/enrich-person")).header("X-KEY", key),
            &json!({"data": {"linkedin_url": p.linkedin_url}}),
        ),
    }
}

#[tokio::test]
async fn every_provider_honours_every_fault() {
    let pop = pop();
    let (x, y) = (pop.person(20), pop.person(21));
    for kind in ProviderKind::ALL {
        let s = start(kind, pop.clone(), SimOptions::defaults(kind))
            .await
            .unwrap();
        let normal = send(about(kind, &s, x)).await;
        assert!(normal.status < 500, "{kind:?}: {}", normal.text);

        s.inject(Fault {
            kind: FaultKind::Status(503),
            scope: FaultScope::Next(1),
        });
        let r = send(about(kind, &s, x)).await;
        assert_eq!(r.status, 503, "{kind:?}");
        let _ = r.json(); // the provider's JSON error body
        assert_eq!(
            send(about(kind, &s, x)).await.status,
            normal.status,
            "{kind:?}"
        );

        s.inject(Fault {
            kind: FaultKind::MalformedBody,
            scope: FaultScope::Next(1),
        });
        let r = send(about(kind, &s, x)).await;
        assert_eq!(r.status, 200, "{kind:?}");
        assert!(serde_json::from_str::<Value>(&r.text).is_err(), "{kind:?}");

        s.inject(Fault {
            kind: FaultKind::Delay(MS(200)),
            scope: FaultScope::Next(1),
        });
        let t = Instant::now();
        let r = send(about(kind, &s, x)).await;
        assert!(t.elapsed() >= MS(200), "{kind:?}");
        assert_eq!(r.status, normal.status, "{kind:?}");

        s.inject(Fault {
            kind: FaultKind::Status(500),
            scope: FaultScope::Person(x.index),
        });
        assert_eq!(send(about(kind, &s, x)).await.status, 500, "{kind:?}");
        assert_ne!(send(about(kind, &s, y)).await.status, 500, "{kind:?}");
        s.clear_faults();
        assert_eq!(
            send(about(kind, &s, x)).await.status,
            normal.status,
            "{kind:?}"
        );

        s.inject(Fault {
            kind: FaultKind::RateLimited,
            scope: FaultScope::Next(1),
        });
        let r = send(about(kind, &s, x)).await;
        let expected = if kind == ProviderKind::Hunter {
            403
        } else {
            429
        };
        assert_eq!(r.status, expected, "{kind:?}");
        assert_eq!(s.stats().rate_limited, 1, "{kind:?}");
        s.shutdown().await;
    }
}
