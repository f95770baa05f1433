//! Prospeo (`https://api.prospeo.io`): `POST /enrich-person`.
//!
//! Simulated: POST only, `X-KEY` auth, JSON body `{only_verified_email, enrich_mobile,
//! only_verified_mobile, data:{first_name, last_name, full_name, linkedin_url, email,
//! company_name, company_website, company_linkedin_url, person_id}}`; a match needs
//! `linkedin_url`, `email`, `person_id`, or a name with `company_name`/`company_website` (else
//! 400 `INVALID_DATAPOINTS`); not found => **400 `NO_MATCH`**; `only_verified_email=true` with
//! an unverified (or no) email => `NO_MATCH`; `only_verified_mobile=true` implies
//! `enrich_mobile` and requires a verified mobile; credits 1 per match, 10 with a revealed
//! mobile, 0 when nothing found, 0 for a record already enriched by the account (lifetime,
//! `free_enrichment: true`); 400 `INSUFFICIENT_CREDITS`, 401 `INVALID_API_KEY`, 429
//! `RATE_LIMITED`; headers `x-minute-request-left`, `x-daily-request-left`,
//! `x-second-rate-limit`, `x-minute-reset-seconds`, `x-daily-reset-seconds` on every answer.
//! The person object follows the documented example (`current_job_title`, not `job_title`).
//! Unverified details: the mobile object beyond `{status, revealed, mobile}` and the value
//! when no mobile is known (`null` here); when `enrich_mobile=false` and a mobile exists, the
//! answer carries `{"status":"VERIFIED","revealed":false,"mobile":null}`.
//! Not simulated: bulk endpoints, search, company enrichment, `ACCOUNT_RESTRICTED`, the rule
//! that failed requests do not count toward the limits (the generic limiter counts at
//! arrival), the rolling daily window (fixed here).

use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};

use crate::hash::H;
use crate::population::{SimChannel, human_phone, normalize_domain};
use crate::quality::Word;
use crate::server::{Api, BoxFut, Charge, Ctx, KeyCheck, Reply, Req, Route, WindowInfo};
use crate::util::{jbool, jstr};

use super::Identity;

pub(crate) struct Prospeo;

fn code(status: u16, c: &str) -> Reply {
    Reply::json(status, json!({ "error": true, "error_code": c }))
}

/// A 24-hex-digit id; the last 8 digits encode the index (masked) so it can be decoded.
fn person_id(seed: u64, i: usize) -> String {
    let h = H::new(seed).s("prospeo-person").n(i as u64);
    format!("{:016x}{:08x}", h.get(), (i as u32) ^ id_mask(seed))
}

fn id_mask(seed: u64) -> u32 {
    H::new(seed).s("prospeo-mask").get() as u32
}

fn decode_person_id(seed: u64, len: usize, pid: &str) -> Option<usize> {
    let tail = pid.trim().get(16..24)?;
    let i = (u32::from_str_radix(tail, 16).ok()? ^ id_mask(seed)) as usize;
    (i < len && person_id(seed, i) == pid.trim().to_lowercase()).then_some(i)
}

impl Api for Prospeo {
    fn route(&self, method: &Method, path: &str) -> Result<Route, Reply> {
        if path != "/enrich-person" {
            return Err(self.status_error(404));
        }
        if method != Method::POST {
            return Err(self.status_error(405));
        }
        Ok(Route::new("POST /enrich-person", 1))
    }

    fn key(&self, req: &Req) -> KeyCheck {
        match req.header("x-key").map(str::trim) {
            None | Some("") => KeyCheck::Missing,
            Some(k) => KeyCheck::Given(k.to_string()),
        }
    }

    fn auth_error(&self, _kc: &KeyCheck) -> Reply {
        code(401, "INVALID_API_KEY")
    }

    fn rate_limited(&self, _ctx: &Ctx, _w: &WindowInfo) -> Reply {
        code(429, "RATE_LIMITED")
    }

    fn status_error(&self, status: u16) -> Reply {
        match status {
            400 => code(400, "INVALID_REQUEST"),
            401 => code(401, "INVALID_API_KEY"),
            404 => code(404, "NOT_FOUND"),
            405 => code(405, "METHOD_NOT_ALLOWED"),
            429 => code(429, "RATE_LIMITED"),
            s => code(s, "INTERNAL_ERROR"),
        }
    }

    fn out_of_credits(&self) -> Reply {
        code(400, "INSUFFICIENT_CREDITS")
    }

    fn malformed(&self) -> Reply {
        Reply::raw_json(
            200,
            r#"{"error":false,"free_enrichment":false,"person":{"person_id":"aa"#,
        )
    }

    fn decorate(&self, ctx: &Ctx, reply: &mut Reply) {
        let now = ctx.now;
        if let Some(w) = ctx.limit.window_upto(Duration::from_secs(1)) {
            reply
                .headers
                .push(("x-second-rate-limit".into(), w.max.to_string()));
        }
        if let Some(w) = ctx.limit.window_upto(Duration::from_secs(60)) {
            reply
                .headers
                .push(("x-minute-request-left".into(), w.remaining().to_string()));
            reply.headers.push((
                "x-minute-reset-seconds".into(),
                w.reset_secs(now).to_string(),
            ));
        }
        if let Some(w) = ctx
            .limit
            .windows
            .iter()
            .filter(|w| w.dur > Duration::from_secs(60))
            .max_by_key(|w| w.dur)
        {
            reply
                .headers
                .push(("x-daily-request-left".into(), w.remaining().to_string()));
            reply.headers.push((
                "x-daily-reset-seconds".into(),
                w.reset_secs(now).to_string(),
            ));
        }
    }

    fn serve<'a>(&'a self, ctx: &'a Ctx, req: &'a Req) -> BoxFut<'a> {
        Box::pin(async move { enrich(ctx, req).await })
    }
}

async fn enrich(ctx: &Ctx, req: &Req) -> Reply {
    let body = req.json().filter(Value::is_object);
    let data = body
        .as_ref()
        .and_then(|b| b.get("data"))
        .filter(|d| d.is_object())
        .cloned();
    let pop = ctx.pop();
    let sh = &ctx.sh;
    let id = data.as_ref().map(|d| Identity {
        first: jstr(d, "first_name"),
        last: jstr(d, "last_name"),
        full_name: jstr(d, "full_name"),
        domain: jstr(d, "company_website"),
        company: jstr(d, "company_name"),
        linkedin: jstr(d, "linkedin_url"),
        email: jstr(d, "email"),
    });
    let by_pid = data
        .as_ref()
        .and_then(|d| jstr(d, "person_id"))
        .and_then(|pid| decode_person_id(pop.seed(), pop.len(), &pid));
    let person = by_pid.or_else(|| id.as_ref().and_then(|id| id.resolve(pop)));
    let persons: Vec<usize> = person.into_iter().collect();
    let flags = body.clone().unwrap_or(Value::Null);
    let only_verified_email = jbool(&flags, "only_verified_email");
    let only_verified_mobile = jbool(&flags, "only_verified_mobile");
    let enrich_mobile = jbool(&flags, "enrich_mobile") || only_verified_mobile;
    let mut channels = vec![SimChannel::WorkEmail, SimChannel::LinkedinUrl];
    if enrich_mobile {
        channels.push(SimChannel::Phone);
    }
    if let Some(r) = ctx.gate(&persons).await {
        return r;
    }
    let Some(id) = id else {
        return code(400, "INVALID_REQUEST").about(persons, channels);
    };
    let has_name = id.names().is_some();
    let has_company = id.company.is_some()
        || id.domain.is_some()
        || data
            .as_ref()
            .and_then(|d| jstr(d, "company_linkedin_url"))
            .is_some();
    let enough = id.linkedin.is_some()
        || id.email.is_some()
        || by_pid.is_some()
        || data.as_ref().and_then(|d| jstr(d, "person_id")).is_some()
        || (has_name && has_company);
    if !enough {
        return code(400, "INVALID_DATAPOINTS").about(persons, channels);
    }
    let no_match = || code(400, "NO_MATCH");
    let Some(i) = person.filter(|&i| sh.profile().has_record(pop, sh.name(), i)) else {
        return no_match().about(persons, channels);
    };
    let know = |ch| sh.profile().knows(pop, sh.name(), i, ch);
    let email = know(SimChannel::WorkEmail);
    let mobile = know(SimChannel::Phone);
    let linkedin = know(SimChannel::LinkedinUrl);
    let email_verified = email.as_ref().is_some_and(|k| k.word == Word::Verified);
    let mobile_verified = mobile.as_ref().is_some_and(|k| k.word == Word::Verified);
    if only_verified_email && !email_verified {
        return no_match().about(persons, channels);
    }
    if only_verified_mobile && !mobile_verified {
        return no_match().about(persons, channels);
    }
    let reveal = enrich_mobile && mobile.is_some();
    let cost = if reveal { 10 } else { 1 };
    let account = &sh.opts.api_key;
    let with_mobile_key = format!("prospeo|{account}|{i}|mobile");
    let charge = if sh.has_billed(&with_mobile_key) {
        Charge::Free
    } else if reveal {
        sh.charge_once(with_mobile_key, cost)
    } else {
        sh.charge_once(format!("prospeo|{account}|{i}|email"), cost)
    };
    if charge == Charge::Insufficient {
        return Prospeo.out_of_credits().about(persons, channels);
    }
    let per = pop.person(i);
    let email_v = email.as_ref().map_or(Value::Null, |k| {
        json!({
            "status": if k.word == Word::Verified { "VERIFIED" } else { "UNVERIFIED" },
            "revealed": true,
            "email": k.value,
        })
    });
    let mobile_v = match &mobile {
        None => Value::Null,
        Some(k) => {
            let status = if k.word == Word::Verified {
                "VERIFIED"
            } else {
                "UNVERIFIED"
            };
            if reveal {
                json!({
                    "status": status,
                    "revealed": true,
                    "mobile": human_phone(&k.value),
                    "mobile_international": human_phone(&k.value),
                    "mobile_country_code": per.country,
                })
            } else {
                json!({ "status": status, "revealed": false, "mobile": Value::Null })
            }
        }
    };
    let person = json!({
        "person_id": person_id(pop.seed(), i),
        "first_name": per.first_name,
        "last_name": per.last_name,
        "full_name": format!("{} {}", per.first_name, per.last_name),
        "linkedin_url": linkedin.as_ref().map(|k| k.value.clone()),
        "current_job_title": per.job_title,
        "headline": format!("{} at {}", per.job_title, per.company_name),
        "email": email_v,
        "mobile": mobile_v,
    });
    let company = json!({
        "name": per.company_name,
        "website": format!("https://{}", per.domain),
        "domain": normalize_domain(&per.domain),
        "employee_count": per.employees,
    });
    let mut r = Reply::json(
        200,
        json!({
            "error": false,
            "free_enrichment": charge == Charge::Free,
            "person": person,
            "company": company,
        }),
    )
    .about(persons, channels);
    if let Charge::Billed(n) = charge {
        r.charged = n;
    }
    r
}
