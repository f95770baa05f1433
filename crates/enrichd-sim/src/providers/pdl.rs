//! People Data Labs (`https://api.peopledatalabs.com`): `GET|POST /v5/person/enrich`.
//!
//! Simulated: `X-Api-Key` header or `api_key` query, inputs `profile`, `email`, `phone`,
//! `name` / `first_name`+`last_name` with `company` (name or domain), `location` (country) or
//! `school`; the documented minimum (else 400 `invalid_request_error`); `min_likelihood`
//! (0..10, default 2; answers below it are 404); `required` (`a AND b OR c`, AND binds
//! tighter, no parentheses); `titlecase`; lower-case values as PDL stores them; likelihood
//! 7..10 when every returned value is right, 2..5 otherwise; 404 not found (not billed); 1
//! credit per 200, repeats billed again; 402 `payment_required`; 429 `rate_limit_error`;
//! headers `x-ratelimit-limit` / `x-ratelimit-remaining` (JSON per window, e.g.
//! `{"minute": 999}`, as in PDL's current docs), `x-ratelimit-reset` (RFC 3339 UTC),
//! `x-totallimit-remaining` (credits; 999999999 when unlimited), `x-call-credits-spent`,
//! `x-call-credits-type`; no Retry-After. Free plan: the four contact channels become
//! `true`/`false`.
//! Not simulated: `/v5/person/bulk`, `email_hash`, `lid`, `pdl_id`, `data_include`,
//! `include_if_matched`, schools (never match), the full person schema.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Map, Value, json};

use crate::hash::H;
use crate::names::country_name;
use crate::population::{SimChannel, normalize_domain};
use crate::server::{Api, BoxFut, Ctx, KeyCheck, Reply, Req, Route, WindowInfo};
use crate::util::{jstr, parse_bool, rfc3339};

use super::Identity;

pub(crate) struct Pdl;

fn err(status: u16, ty: &str, msg: &str) -> Reply {
    Reply::json(
        status,
        json!({ "status": status, "error": { "type": ty, "message": msg } }),
    )
}

fn not_found() -> Reply {
    err(
        404,
        "not_found",
        "No records were found matching your request",
    )
}

impl Api for Pdl {
    fn route(&self, method: &Method, path: &str) -> Result<Route, Reply> {
        if path != "/v5/person/enrich" {
            return Err(self.status_error(404));
        }
        match *method {
            Method::GET => Ok(Route::new("GET /v5/person/enrich", 1)),
            Method::POST => Ok(Route::new("POST /v5/person/enrich", 2)),
            _ => Err(self.status_error(405)),
        }
    }

    fn key(&self, req: &Req) -> KeyCheck {
        req.header("x-api-key")
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .or_else(|| req.q("api_key"))
            .or_else(|| req.json().and_then(|b| jstr(&b, "api_key")))
            .map_or(KeyCheck::Missing, KeyCheck::Given)
    }

    fn auth_error(&self, kc: &KeyCheck) -> Reply {
        let msg = match kc {
            KeyCheck::Missing => "No API key was provided",
            _ => "Invalid API key",
        };
        err(401, "authentication_error", msg)
    }

    fn rate_limited(&self, _ctx: &Ctx, w: &WindowInfo) -> Reply {
        err(
            429,
            "rate_limit_error",
            &format!(
                "You have hit your rate limit of {} requests per {}",
                w.max,
                w.label()
            ),
        )
    }

    fn status_error(&self, status: u16) -> Reply {
        match status {
            400 => err(
                400,
                "invalid_request_error",
                "Request object must contain valid parameters",
            ),
            401 => self.auth_error(&KeyCheck::Missing),
            402 => self.out_of_credits(),
            403 => err(
                403,
                "forbidden",
                "Your API key does not have access to this endpoint",
            ),
            404 => not_found(),
            405 => err(405, "invalid_request_error", "Method not allowed"),
            429 => err(429, "rate_limit_error", "You have hit your rate limit"),
            503 => err(
                503,
                "service_unavailable",
                "The service is temporarily unavailable, please retry",
            ),
            s if s >= 500 => err(s, "api_error", "An internal error occurred, please retry"),
            s => err(s, "invalid_request_error", "The request failed"),
        }
    }

    fn out_of_credits(&self) -> Reply {
        err(
            402,
            "payment_required",
            "You have hit your account maximum for person enrichment",
        )
    }

    fn malformed(&self) -> Reply {
        Reply::raw_json(
            200,
            r#"{"status":200,"likelihood":9,"data":{"full_name":"ja"#,
        )
    }

    /// Every answer after auth carries the rate-limit and credit headers.
    fn decorate(&self, ctx: &Ctx, reply: &mut Reply) {
        let mut limit = Map::new();
        let mut remaining = Map::new();
        for w in &ctx.limit.windows {
            limit.insert(w.label(), json!(w.max));
            remaining.insert(w.label(), json!(w.remaining()));
        }
        reply
            .headers
            .push(("x-ratelimit-limit".into(), Value::Object(limit).to_string()));
        reply.headers.push((
            "x-ratelimit-remaining".into(),
            Value::Object(remaining).to_string(),
        ));
        let reset = ctx
            .limit
            .window_upto(Duration::from_secs(60))
            .or(ctx.limit.windows.first())
            .map(|w| w.reset_wall(ctx.now));
        if let Some(t) = reset {
            reply.headers.push(("x-ratelimit-reset".into(), rfc3339(t)));
        }
        // Unlimited balance (None) is shown as 999999999 so that every answer carries it.
        let credits = ctx.sh.credits().unwrap_or(999_999_999).max(0);
        reply
            .headers
            .push(("x-totallimit-remaining".into(), credits.to_string()));
        reply
            .headers
            .push(("x-call-credits-spent".into(), reply.charged.to_string()));
        reply
            .headers
            .push(("x-call-credits-type".into(), "enrich".into()));
    }

    fn serve<'a>(&'a self, ctx: &'a Ctx, req: &'a Req) -> BoxFut<'a> {
        Box::pin(async move { enrich(ctx, req).await })
    }
}

/// Parameter access over the query string (GET) or the JSON body (POST).
struct Params {
    query: Vec<(String, String)>,
    body: Option<Value>,
}

impl Params {
    fn get(&self, k: &str) -> Option<String> {
        let from_query = self
            .query
            .iter()
            .filter(|(qk, _)| qk == k)
            .map(|(_, v)| v.trim())
            .find(|v| !v.is_empty())
            .map(str::to_string);
        from_query.or_else(|| {
            let b = self.body.as_ref()?;
            match b.get(k)? {
                Value::Array(a) => a.iter().find_map(|v| v.as_str().map(str::to_string)),
                _ => jstr(b, k),
            }
        })
    }
}

/// `required`: OR of AND-groups over returned field names.
fn required_ok(expr: &str, present: &dyn Fn(&str) -> bool) -> bool {
    expr.split(" OR ")
        .flat_map(|g| g.split(" or "))
        .any(|group| {
            group
                .split(" AND ")
                .flat_map(|t| t.split(" and "))
                .map(|t| t.trim().trim_matches(|c| c == '(' || c == ')'))
                .filter(|t| !t.is_empty())
                .all(present)
        })
}

fn case(s: &str, titlecase: bool) -> String {
    if titlecase {
        s.to_string()
    } else {
        s.to_lowercase()
    }
}

async fn enrich(ctx: &Ctx, req: &Req) -> Reply {
    let p = Params {
        query: req.query.clone(),
        body: if req.method == Method::POST {
            req.json().filter(Value::is_object)
        } else {
            None
        },
    };
    let pop = ctx.pop();
    let company = p.get("company");
    let (domain, company_name) = match &company {
        Some(c) if normalize_domain(c).contains('.') && !c.trim().contains(' ') => {
            (Some(c.clone()), None)
        }
        Some(c) => (None, Some(c.clone())),
        None => (None, None),
    };
    let id = Identity {
        first: p.get("first_name"),
        last: p.get("last_name"),
        full_name: p.get("name"),
        domain,
        company: company_name,
        linkedin: p.get("profile"),
        email: p.get("email"),
    };
    let phone = p.get("phone");
    let location = p.get("location");
    let school = p.get("school");
    let mut person = id.resolve(pop).or_else(|| {
        phone
            .as_deref()
            .and_then(|ph| pop.find_by_phone(ph))
            .map(|x| x.index)
    });
    if person.is_none()
        && let (Some((f, l)), Some(loc)) = (id.names(), location.as_deref())
    {
        let loc = loc.to_lowercase();
        let hits: Vec<usize> = pop
            .find_by_name(&f, &l)
            .into_iter()
            .filter(|x| {
                loc.contains(&x.country.to_lowercase())
                    || loc.contains(&country_name(&x.country).to_lowercase())
            })
            .map(|x| x.index)
            .collect();
        if hits.len() == 1 {
            person = hits.first().copied();
        }
    }
    let persons: Vec<usize> = person.into_iter().collect();
    let channels = SimChannel::ALL.to_vec();
    if let Some(r) = ctx.gate(&persons).await {
        return r;
    }
    let has_name = id.names().is_some();
    let enough = id.linkedin.is_some()
        || id.email.is_some()
        || phone.is_some()
        || (has_name && (company.is_some() || school.is_some() || location.is_some()));
    if !enough {
        return err(
            400,
            "invalid_request_error",
            "Request object must contain at least one of: profile, email, phone, email_hash, lid, pdl_id, or name (or first_name and last_name) with one of company, school or location",
        )
        .about(persons, channels);
    }
    let min_likelihood = match p.get("min_likelihood") {
        None => 2,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (0..=10).contains(&n) => n,
            _ => {
                return err(
                    400,
                    "invalid_request_error",
                    "min_likelihood must be an integer between 0 and 10",
                )
                .about(persons, channels);
            }
        },
    };
    let titlecase = p.get("titlecase").is_some_and(|v| parse_bool(&v));
    let sh = &ctx.sh;
    let Some(i) = person.filter(|&i| sh.profile().has_record(pop, sh.name(), i)) else {
        return not_found().about(persons, channels);
    };
    let per = pop.person(i);
    let know = |ch| sh.profile().knows(pop, sh.name(), i, ch);
    let work = know(SimChannel::WorkEmail);
    let personal = know(SimChannel::PersonalEmail);
    let mobile = know(SimChannel::Phone);
    let linkedin = know(SimChannel::LinkedinUrl);
    let all_right = [&work, &personal, &mobile, &linkedin]
        .iter()
        .all(|k| k.as_ref().is_none_or(|k| k.correct));
    let h = H::new(pop.seed()).s(sh.name()).n(i as u64).s("likelihood");
    let likelihood = if all_right {
        h.range(7, 10)
    } else {
        h.range(2, 5)
    } as i64;
    if likelihood < min_likelihood {
        return not_found().about(persons, channels);
    }
    if let Some(expr) = p.get("required") {
        let present = |f: &str| match f {
            "work_email" => work.is_some(),
            "personal_emails" => personal.is_some(),
            "emails" => work.is_some() || personal.is_some(),
            "mobile_phone" | "phone_numbers" => mobile.is_some(),
            "linkedin_url" | "profiles" => linkedin.is_some(),
            "full_name"
            | "first_name"
            | "last_name"
            | "job_title"
            | "job_company_name"
            | "job_company_website"
            | "location_country" => true,
            _ => false,
        };
        if !required_ok(&expr, &present) {
            return not_found().about(persons, channels);
        }
    }
    if !sh.charge(1) {
        return Pdl.out_of_credits().about(persons, channels);
    }
    let free = sh.opts.pdl_free_plan;
    let flag = |b: bool| Value::Bool(b);
    let (work_v, personal_v, mobile_v, phones_v, emails_v, linkedin_v, username_v) = if free {
        (
            flag(work.is_some()),
            flag(personal.is_some()),
            flag(mobile.is_some()),
            flag(mobile.is_some()),
            flag(work.is_some() || personal.is_some()),
            flag(linkedin.is_some()),
            flag(linkedin.is_some()),
        )
    } else {
        let mut emails = Vec::new();
        if let Some(k) = &work {
            emails.push(json!({ "address": k.value, "type": "current_professional" }));
        }
        if let Some(k) = &personal {
            emails.push(json!({ "address": k.value, "type": "personal" }));
        }
        let slug = linkedin
            .as_ref()
            .and_then(|k| crate::population::linkedin_slug(&k.value));
        (
            work.as_ref().map_or(Value::Null, |k| json!(k.value)),
            json!(personal.iter().map(|k| k.value.clone()).collect::<Vec<_>>()),
            mobile.as_ref().map_or(Value::Null, |k| json!(k.value)),
            json!(mobile.iter().map(|k| k.value.clone()).collect::<Vec<_>>()),
            json!(emails),
            slug.as_ref()
                .map_or(Value::Null, |s| json!(format!("linkedin.com/in/{s}"))),
            slug.map_or(Value::Null, |s| json!(s)),
        )
    };
    let data = json!({
        "full_name": case(&format!("{} {}", per.first_name, per.last_name), titlecase),
        "first_name": case(&per.first_name, titlecase),
        "last_name": case(&per.last_name, titlecase),
        "work_email": work_v,
        "personal_emails": personal_v,
        "emails": emails_v,
        "mobile_phone": mobile_v,
        "phone_numbers": phones_v,
        "linkedin_url": linkedin_v,
        "linkedin_username": username_v,
        "job_title": case(&per.job_title, titlecase),
        "job_company_name": case(&per.company_name, titlecase),
        "job_company_website": per.domain,
        "location_country": case(country_name(&per.country), titlecase),
    });
    let mut r = Reply::json(
        200,
        json!({ "status": 200, "likelihood": likelihood, "data": data }),
    )
    .about(persons, channels);
    r.charged = 1;
    r
}
