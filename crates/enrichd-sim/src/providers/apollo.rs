//! Apollo.io (`https://api.apollo.io/api/v1`): synchronous `POST /people/match`.
//!
//! Simulated: `x-api-key` auth (401 text/plain), parameters as query params (a JSON object body
//! is also read; the query wins), matching by `linkedin_url`, `email`, or name (`first_name` +
//! `last_name` or `name`) with `domain` or `organization_name`; a name alone => `person: null`;
//! `email_status` verified / extrapolated / unavailable (emails at catch-all domains are
//! reported "extrapolated": Apollo has no catch-all word in match answers, unverified);
//! `personal_emails` only with `reveal_personal_emails=true` and withheld for GB/FR/DE/ES/NL;
//! 1 credit when an email is returned; 422 "Insufficient credits" (documented on other
//! endpoints, assumed here); 429 with `retry-after` and the legacy message.
//! Not simulated: asynchronous phone reveal and waterfall webhooks (`reveal_phone_number=true`
//! with a `webhook_url` is accepted but no phone is ever delivered), `people/bulk_match`,
//! `webhook_result` polling, hashed emails, OAuth bearer tokens, 403 API_INACCESSIBLE.

use axum::http::Method;
use serde_json::{Map, Value, json};

use crate::names::country_name;
use crate::population::SimChannel;
use crate::quality::Word;
use crate::server::{Api, BoxFut, Ctx, KeyCheck, Reply, Req, Route, WindowInfo};
use crate::util::{jstr, parse_bool};

use super::Identity;

pub(crate) struct Apollo;

const GDPR: &[&str] = &["GB", "FR", "DE", "ES", "NL"];

fn err(status: u16, msg: &str) -> Reply {
    Reply::json(status, json!({ "error": msg }))
}

/// Parameters from the query string, falling back to a JSON object body.
struct Params<'a> {
    req: &'a Req,
    body: Option<Value>,
}

impl Params<'_> {
    fn get(&self, k: &str) -> Option<String> {
        self.req
            .q(k)
            .or_else(|| self.body.as_ref().and_then(|b| jstr(b, k)))
    }
    fn flag(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| parse_bool(&v))
    }
}

fn hex_id(h: u64, h2: u64) -> String {
    format!("{:016x}{:08x}", h, h2 as u32)
}

impl Api for Apollo {
    fn route(&self, method: &Method, path: &str) -> Result<Route, Reply> {
        match path {
            "/people/match" if method == Method::POST => Ok(Route::new("POST /people/match", 1)),
            "/people/match" => Err(self.status_error(405)),
            _ => Err(self.status_error(404)),
        }
    }

    fn key(&self, req: &Req) -> KeyCheck {
        match req.header("x-api-key").map(str::trim) {
            None | Some("") => KeyCheck::Missing,
            Some(k) => KeyCheck::Given(k.to_string()),
        }
    }

    fn auth_error(&self, _kc: &KeyCheck) -> Reply {
        Reply::text(
            401,
            "Invalid API key. Please check your API key and try again.",
        )
    }

    fn rate_limited(&self, ctx: &Ctx, w: &WindowInfo) -> Reply {
        let unit = match w.dur.as_secs() {
            60 => "minute".to_string(),
            3600 => "hour".to_string(),
            86_400 => "day".to_string(),
            _ => format!("{} seconds", w.dur.as_secs_f64()),
        };
        Reply::json(
            429,
            json!({
                "message": format!(
                    "The maximum number of api calls allowed for api/v1/people/match is {} times per {}. Please upgrade your plan from https://app.apollo.io/#/settings/plans/upgrade.",
                    w.max, unit
                )
            }),
        )
        .header("retry-after", w.reset_secs(ctx.now))
    }

    fn status_error(&self, status: u16) -> Reply {
        match status {
            400 => err(400, "Invalid request"),
            401 => self.auth_error(&KeyCheck::Missing),
            403 => Reply::json(
                403,
                json!({ "error": "api/v1/people/match is not accessible with this api_key", "error_code": "API_INACCESSIBLE" }),
            ),
            404 => err(404, "Not Found"),
            405 => err(405, "Method Not Allowed"),
            422 => Reply::json(
                422,
                json!({ "error": "Unprocessable request", "error_code": "UNKNOWN_ERROR" }),
            ),
            429 => Reply::json(
                429,
                json!({ "message": "The maximum number of api calls allowed for api/v1/people/match has been reached. Please upgrade your plan." }),
            ),
            s if s >= 500 => err(s, "Something went wrong. Please try again later."),
            s => err(s, "Request failed"),
        }
    }

    fn out_of_credits(&self) -> Reply {
        err(422, "Insufficient credits. Please upgrade your plan.")
    }

    fn malformed(&self) -> Reply {
        Reply::raw_json(
            200,
            r#"{"person":{"id":"64f1c2a9e8b7d6c5a4f3e2d1","first_name":"Ja"#,
        )
    }

    fn serve<'a>(&'a self, ctx: &'a Ctx, req: &'a Req) -> BoxFut<'a> {
        Box::pin(async move { people_match(ctx, req).await })
    }
}

async fn people_match(ctx: &Ctx, req: &Req) -> Reply {
    let p = Params {
        req,
        body: req.json().filter(Value::is_object),
    };
    let id = Identity {
        first: p.get("first_name"),
        last: p.get("last_name"),
        full_name: p.get("name"),
        domain: p.get("domain"),
        company: p.get("organization_name"),
        linkedin: p.get("linkedin_url"),
        email: p.get("email"),
    };
    let pop = ctx.pop();
    let person = id.resolve(pop);
    let persons: Vec<usize> = person.into_iter().collect();
    let reveal_personal = p.flag("reveal_personal_emails");
    let reveal_phone = p.flag("reveal_phone_number");
    let mut channels = vec![SimChannel::WorkEmail, SimChannel::LinkedinUrl];
    if reveal_personal {
        channels.push(SimChannel::PersonalEmail);
    }
    if reveal_phone {
        channels.push(SimChannel::Phone);
    }
    if let Some(r) = ctx.gate(&persons).await {
        return r;
    }
    if reveal_phone && p.get("webhook_url").is_none() {
        // Plausible shape (the reference only says a webhook_url is required).
        return err(
            400,
            "Please add a valid 'webhook_url' parameter when using 'reveal_phone_number'",
        )
        .about(persons, channels);
    }
    let request_id = format!(
        "{}",
        1_000_000_000_000_000_000u64 + ctx.h().s("request_id").below(8_000_000_000_000_000_000)
    );
    let sh = &ctx.sh;
    let found = person.filter(|&i| sh.profile().has_record(pop, sh.name(), i));
    let Some(i) = found else {
        return Reply::json(
            200,
            json!({ "person": Value::Null, "request_id": request_id }),
        )
        .about(persons, channels);
    };
    let per = pop.person(i);
    let know = |ch| sh.profile().knows(pop, sh.name(), i, ch);
    let work = know(SimChannel::WorkEmail);
    let (email, status, confidence) = match &work {
        Some(k) => {
            let (s, c) = match k.word {
                Word::Verified => ("verified", Value::Null),
                Word::Probable | Word::CatchAll => ("extrapolated", json!(0.6)),
            };
            (json!(k.value), s, c)
        }
        None => (Value::Null, "unavailable", Value::Null),
    };
    let personal: Vec<String> = if reveal_personal && !GDPR.contains(&per.country.as_str()) {
        know(SimChannel::PersonalEmail)
            .map(|k| vec![k.value])
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let linkedin = know(SimChannel::LinkedinUrl)
        .map(|k| json!(k.value.replace("https://www.", "http://www.")))
        .unwrap_or(Value::Null);
    let cost = i64::from(work.is_some() || !personal.is_empty());
    if cost > 0 && !sh.charge(cost) {
        return Apollo.out_of_credits().about(persons, channels);
    }
    let hp = crate::hash::H::new(pop.seed()).s(sh.name()).n(i as u64);
    let mut org = Map::new();
    org.insert(
        "id".into(),
        json!(hex_id(hp.s("org").get(), hp.s("org2").get())),
    );
    org.insert("name".into(), json!(per.company_name));
    org.insert(
        "website_url".into(),
        json!(format!("http://www.{}", per.domain)),
    );
    org.insert("primary_domain".into(), json!(per.domain));
    org.insert("estimated_num_employees".into(), json!(per.employees));
    let mut person = json!({
        "id": hex_id(hp.s("id").get(), hp.s("id2").get()),
        "first_name": per.first_name,
        "last_name": per.last_name,
        "name": format!("{} {}", per.first_name, per.last_name),
        "linkedin_url": linkedin,
        "title": per.job_title,
        "email_status": status,
        "photo_url": Value::Null,
        "headline": format!("{} at {}", per.job_title, per.company_name),
        "email": email,
        "organization_id": org.get("id").cloned().unwrap_or(Value::Null),
        "seniority": per.seniority.replace("individual_contributor", "entry"),
        "country": country_name(&per.country),
        "extrapolated_email_confidence": confidence,
        "organization": Value::Object(org),
    });
    if reveal_personal {
        person["personal_emails"] = json!(personal);
    }
    let mut r = Reply::json(200, json!({ "person": person, "request_id": request_id }))
        .about(persons, channels);
    r.charged = cost;
    r
}
