//! Hunter.io v2 (`https://api.hunter.io/v2`): `GET /email-finder` and `GET /email-verifier`.
//!
//! Simulated: `api_key` query parameter (also `X-API-KEY` header or `Authorization: Bearer`),
//! the `{data, meta}` / `{errors:[{id,code,details}]}` envelopes, finder by `domain` or
//! `company` + `first_name`/`last_name` or `full_name` (or `linkedin_handle`), not found =
//! 200 with `email: null`, **403 = rate limit**, **429 = usage exhausted**, 202 via the
//! Processing fault, 1 credit per email found with repeats of the same email not recounted,
//! verifier statuses from the population truth (1 credit each).
//! Not simulated: separate Search/Verification credit pools (one balance here), the verifier's
//! own 10/s + 300/min limits (one limiter for both endpoints), 451, `max_duration`, sources.
//! The 202 body is not documented: an empty JSON object is sent.

use axum::http::Method;
use serde_json::{Value, json};

use crate::hash::H;
use crate::population::{EmailTruth, SimChannel, is_webmail_domain, normalize_domain};
use crate::quality::Word;
use crate::server::{Api, BoxFut, Charge, Ctx, KeyCheck, Reply, Req, Route, WindowInfo};
use crate::util::date_of_day;

use super::Identity;

pub(crate) struct Hunter;

const FINDER: u8 = 1;
const VERIFIER: u8 = 2;

fn errors(status: u16, id: &str, details: &str) -> Reply {
    Reply::json(
        status,
        json!({ "errors": [ { "id": id, "code": status, "details": details } ] }),
    )
}

impl Api for Hunter {
    fn route(&self, method: &Method, path: &str) -> Result<Route, Reply> {
        let id = match path {
            "/email-finder" => FINDER,
            "/email-verifier" => VERIFIER,
            _ => return Err(self.status_error(404)),
        };
        if method != Method::GET {
            return Err(self.status_error(405));
        }
        Ok(Route::new(
            if id == FINDER {
                "GET /email-finder"
            } else {
                "GET /email-verifier"
            },
            id,
        ))
    }

    fn key(&self, req: &Req) -> KeyCheck {
        if let Some(k) = req.q("api_key") {
            return KeyCheck::Given(k);
        }
        if let Some(k) = req
            .header("x-api-key")
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            return KeyCheck::Given(k.to_string());
        }
        let auth = req.header("authorization").map(str::trim).unwrap_or("");
        match (auth.get(..7), auth.get(7..)) {
            (Some(p), Some(k)) if p.eq_ignore_ascii_case("bearer ") && !k.trim().is_empty() => {
                KeyCheck::Given(k.trim().to_string())
            }
            _ => KeyCheck::Missing,
        }
    }

    fn auth_error(&self, _kc: &KeyCheck) -> Reply {
        errors(
            401,
            "authentication_failed",
            "No user found for the API key supplied",
        )
    }

    /// Hunter signals "slow down" with **403** (reference §1.3, partial).
    fn rate_limited(&self, _ctx: &Ctx, _w: &WindowInfo) -> Reply {
        errors(
            403,
            "too_many_requests",
            "You have reached the rate limit of requests. Please slow down.",
        )
    }

    fn status_error(&self, status: u16) -> Reply {
        match status {
            400 => errors(400, "wrong_params", "Invalid request parameters"),
            401 => self.auth_error(&KeyCheck::Missing),
            403 => errors(
                403,
                "too_many_requests",
                "You have reached the rate limit of requests. Please slow down.",
            ),
            404 => errors(404, "route_not_found", "The requested route does not exist"),
            405 => errors(
                405,
                "method_not_allowed",
                "This method is not allowed on this route",
            ),
            429 => self.out_of_credits(),
            451 => errors(
                451,
                "claimed_email",
                "This email address cannot be processed",
            ),
            503 => errors(
                503,
                "service_unavailable",
                "The service is temporarily unavailable. Please retry later.",
            ),
            s if s >= 500 => errors(
                s,
                "server_error",
                "Something went wrong on our side. Please retry later.",
            ),
            s => errors(s, "unknown_error", "The request failed"),
        }
    }

    /// Hunter signals exhausted monthly usage with **429** (reference §1.3, partial).
    fn out_of_credits(&self) -> Reply {
        errors(
            429,
            "usage_exceeded",
            "You have used all your requests for this month. Please upgrade your plan.",
        )
    }

    fn processing(&self, _ctx: &Ctx) -> Option<Reply> {
        Some(Reply::json(202, json!({})))
    }

    fn malformed(&self) -> Reply {
        Reply::raw_json(200, r#"{"data":{"first_name":"Ja","last_name":"Sm"#)
    }

    fn serve<'a>(&'a self, ctx: &'a Ctx, req: &'a Req) -> BoxFut<'a> {
        Box::pin(async move {
            if ctx.route.id == FINDER {
                finder(ctx, req).await
            } else {
                verifier(ctx, req).await
            }
        })
    }
}

/// A deterministic recent verification date.
fn verification_date(h: H) -> String {
    // 2025-01-01 is day 20089.
    date_of_day(20_089 + h.below(300) as i64)
}

async fn finder(ctx: &Ctx, req: &Req) -> Reply {
    let linkedin = req
        .q("linkedin_handle")
        .map(|h| format!("https://www.linkedin.com/in/{}", h.trim_matches('/')));
    let id = Identity {
        first: req.q("first_name"),
        last: req.q("last_name"),
        full_name: req.q("full_name"),
        domain: req.q("domain"),
        company: req.q("company"),
        linkedin,
        email: None,
    };
    let pop = ctx.pop();
    let person = id.resolve(pop);
    let persons: Vec<usize> = person.into_iter().collect();
    let channels = vec![SimChannel::WorkEmail];
    if let Some(r) = ctx.gate(&persons).await {
        return r;
    }
    if id.linkedin.is_none() {
        if id.domain.is_none() && id.company.is_none() {
            return errors(
                400,
                "wrong_params",
                "You are missing the domain or company parameter",
            )
            .about(persons, channels);
        }
        if id.names().is_none() {
            return errors(
                400,
                "wrong_params",
                "You are missing the first_name and last_name or the full_name parameter",
            )
            .about(persons, channels);
        }
    }
    let sh = &ctx.sh;
    let names = id.names().unwrap_or_default();
    let given_domain = id.domain.as_deref().map(normalize_domain);
    let meta = json!({ "params": {
        "first_name": id.first, "last_name": id.last, "full_name": id.full_name,
        "domain": id.domain, "company": id.company, "max_duration": req.q("max_duration"),
    }});
    let known = person.and_then(|i| {
        sh.profile()
            .knows(pop, sh.name(), i, SimChannel::WorkEmail)
            .map(|k| (i, k))
    });
    let Some((i, k)) = known else {
        let domain = given_domain.clone();
        let accept_all = domain
            .as_deref()
            .is_some_and(|d| pop.is_catch_all_domain(d));
        let data = json!({
            "first_name": names.0, "last_name": names.1, "email": Value::Null, "score": Value::Null,
            "domain": domain, "accept_all": accept_all, "position": Value::Null,
            "twitter": Value::Null, "linkedin_url": Value::Null, "phone_number": Value::Null,
            "company": person.map(|i| pop.person(i).company_name.clone()),
            "sources": [], "verification": { "date": Value::Null, "status": Value::Null },
        });
        return Reply::json(200, json!({ "data": data, "meta": meta })).about(persons, channels);
    };
    let charge = sh.charge_once(format!("hunter|{}|{}", sh.opts.api_key, k.value), 1);
    if charge == Charge::Insufficient {
        return Hunter.out_of_credits().about(persons, channels);
    }
    let per = pop.person(i);
    let h = H::new(pop.seed()).s(sh.name()).n(i as u64).s("finder");
    let (status, score) = match k.word {
        Word::Verified => ("valid", h.range(90, 99)),
        Word::CatchAll => ("accept_all", h.range(65, 85)),
        Word::Probable => ("unknown", h.range(40, 75)),
    };
    let data = json!({
        "first_name": per.first_name, "last_name": per.last_name, "email": k.value,
        "score": score, "domain": per.domain, "accept_all": pop.is_catch_all_domain(&per.domain),
        "position": per.job_title, "twitter": Value::Null, "linkedin_url": Value::Null,
        "phone_number": Value::Null, "company": per.company_name, "sources": [],
        "verification": { "date": verification_date(h), "status": status },
    });
    let mut r = Reply::json(200, json!({ "data": data, "meta": meta })).about(persons, channels);
    if let Charge::Billed(n) = charge {
        r.charged = n;
    }
    r
}

async fn verifier(ctx: &Ctx, req: &Req) -> Reply {
    let email = req.q("email");
    let pop = ctx.pop();
    let persons: Vec<usize> = email
        .as_deref()
        .and_then(|e| pop.find_by_email(e))
        .map(|p| p.index)
        .into_iter()
        .collect();
    if let Some(r) = ctx.gate(&persons).await {
        return r;
    }
    let Some(email) = email else {
        return errors(400, "wrong_params", "You are missing the email parameter")
            .about(persons, Vec::new());
    };
    let email = email.to_lowercase();
    let (local, domain) = email.rsplit_once('@').unwrap_or(("", ""));
    let syntax_ok = !local.is_empty() && domain.contains('.');
    if !ctx.sh.charge(1) {
        return Hunter.out_of_credits().about(persons, Vec::new());
    }
    let webmail = is_webmail_domain(domain);
    let known_domain = pop.is_known_domain(domain);
    let truth = pop.email_truth(&email);
    let (status, result, score) = match truth {
        _ if !syntax_ok => ("invalid", "undeliverable", 0),
        EmailTruth::Valid if webmail => ("webmail", "deliverable", 92),
        EmailTruth::Valid => ("valid", "deliverable", 96),
        EmailTruth::CatchAll => ("accept_all", "risky", 68),
        EmailTruth::Invalid => ("invalid", "undeliverable", 12),
    };
    let smtp = known_domain && syntax_ok;
    let data = json!({
        "status": status, "result": result, "score": score, "email": email,
        "regexp": syntax_ok, "gibberish": false, "disposable": false, "webmail": webmail,
        "mx_records": known_domain, "smtp_server": smtp, "smtp_check": smtp && truth == EmailTruth::Valid,
        "accept_all": truth == EmailTruth::CatchAll, "block": false, "sources": [],
    });
    let mut r = Reply::json(
        200,
        json!({ "data": data, "meta": { "params": { "email": email } } }),
    )
    .about(persons, Vec::new());
    r.charged = 1;
    r
}
