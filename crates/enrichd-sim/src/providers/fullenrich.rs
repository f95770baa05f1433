//! FullEnrich v2 (`https://app.fullenrich.com/api/v2`): asynchronous bulk enrichment with
//! polling and signed webhooks.
//!
//! Simulated: `POST /contact/enrich/bulk` (validation, ≤ 100 contacts, custom ≤ 10 keys of
//! ≤ 100 chars), `GET /contact/enrich/bulk/{id}` (404 unknown id, 400 `in_progress`, 200
//! FINISHED, 402 CREDITS_INSUFFICIENT with the normal body, `forceResults=true` partial
//! results), contacts finishing one by one over `processing_delay`, batch and per-contact
//! webhooks signed with `X-Signature-SHA1` and retried every `callback_retry_interval` up to 5
//! times, credits (work email 1, personal email 3, phone 10, only when found; the same contact
//! with the same inputs is not billed again for the same channel, except inside one batch).
//! Not simulated: v1 endpoints, reverse email lookup, CANCELED, BYOK `verify`, phone line
//! statuses, `silentFail`, the 100-concurrent-enrichments queue, the 3-month expiry (never
//! reached in a simulation).
//!
//! The exact 400 `code` strings beyond `error.enrichment.in_progress`/`not_found` are not in
//! the reference: the `error.enrichment.<what>` names used here are plausible, not verified.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::http::Method;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};

use crate::population::{SimChannel, human_phone, normalize_company, normalize_domain};
use crate::quality::Word;
use crate::server::{Api, BoxFut, Ctx, KeyCheck, Reply, Req, Route, Shared, WindowInfo};
use crate::util::{jstr, parse_bool};

use super::Identity;

pub(crate) struct FullEnrich;

const SUBMIT: u8 = 1;
const RESULT: u8 = 2;
const MAX_CONTACTS: usize = 100;

#[derive(Default)]
pub(crate) struct FeState {
    batches: HashMap<String, Batch>,
    counter: u64,
}

struct Contact {
    input: Value,
    custom: Value,
    person: Option<usize>,
    fields: Vec<SimChannel>,
    linkedin_given: bool,
    fingerprint: String,
}

struct Batch {
    id: String,
    name: String,
    status: &'static str,
    cost: i64,
    contacts: Vec<Contact>,
    results: Vec<Option<Value>>,
    persons: Vec<usize>,
}

impl Batch {
    fn body(&self, force: bool) -> Value {
        let data: Vec<Value> = self
            .results
            .iter()
            .zip(&self.contacts)
            .filter_map(|(r, c)| match r {
                Some(v) => Some(v.clone()),
                None if force => None,
                None => Some(empty_result(c)),
            })
            .collect();
        json!({
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "cost": { "credits": self.cost },
            "data": data,
        })
    }
}

fn err(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!({ "code": code, "message": message }))
}

fn empty_result(c: &Contact) -> Value {
    json!({ "input": c.input, "custom": c.custom, "contact_info": {} })
}

fn status_word(w: Word) -> &'static str {
    match w {
        Word::Verified => "DELIVERABLE",
        Word::Probable => "HIGH_PROBABILITY",
        Word::CatchAll => "CATCH_ALL",
    }
}

fn field_channel(f: &str) -> Option<SimChannel> {
    match f {
        "contact.work_emails" => Some(SimChannel::WorkEmail),
        "contact.personal_emails" => Some(SimChannel::PersonalEmail),
        "contact.phones" => Some(SimChannel::Phone),
        _ => None,
    }
}

/// Lower-case hex HMAC-SHA1 of `body` keyed with `key` (the `X-Signature-SHA1` header).
pub fn signature(key: &str, body: &[u8]) -> String {
    match <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            mac.finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }
        Err(_) => String::new(),
    }
}

impl Api for FullEnrich {
    fn route(&self, method: &Method, path: &str) -> Result<Route, Reply> {
        if path == "/contact/enrich/bulk" {
            return if method == Method::POST {
                Ok(Route::new("POST /contact/enrich/bulk", SUBMIT))
            } else {
                Err(self.status_error(405))
            };
        }
        if let Some(id) = path.strip_prefix("/contact/enrich/bulk/")
            && !id.is_empty()
            && !id.contains('/')
        {
            return if method == Method::GET {
                let mut r = Route::new("GET /contact/enrich/bulk/{id}", RESULT);
                r.param = Some(id.to_string());
                Ok(r)
            } else {
                Err(self.status_error(405))
            };
        }
        Err(self.status_error(404))
    }

    fn key(&self, req: &Req) -> KeyCheck {
        match req.header("authorization") {
            None => KeyCheck::Missing,
            Some(h) => {
                let h = h.trim();
                match h.get(..7) {
                    Some(p) if p.eq_ignore_ascii_case("bearer ") => {
                        KeyCheck::Given(h[7..].trim().to_string())
                    }
                    _ if h.is_empty() => KeyCheck::Missing,
                    _ => KeyCheck::Malformed,
                }
            }
        }
    }

    fn auth_error(&self, kc: &KeyCheck) -> Reply {
        match kc {
            KeyCheck::Missing => err(
                401,
                "error.authorization.not_set",
                "Authorization header is not set",
            ),
            KeyCheck::Malformed => err(
                401,
                "error.authorization.not_bearer",
                "Authorization header must be of the form 'Bearer <API_KEY>'",
            ),
            KeyCheck::Given(_) => err(401, "error.api.key", "Invalid API key"),
        }
    }

    /// No rate-limit headers and no Retry-After (reference §1.1).
    fn rate_limited(&self, _ctx: &Ctx, _w: &WindowInfo) -> Reply {
        err(
            429,
            "error.rate.limit",
            "Too many requests. Try again in 1m",
        )
    }

    fn status_error(&self, status: u16) -> Reply {
        match status {
            400 => err(400, "error.enrichment.invalid", "Invalid request"),
            401 => err(401, "error.api.key", "Invalid API key"),
            402 => self.out_of_credits(),
            404 => err(404, "error.not_found", "Not found"),
            405 => err(405, "error.method.not_allowed", "Method not allowed"),
            413 => err(413, "error.payload.too_large", "Payload too large"),
            429 => err(
                429,
                "error.rate.limit",
                "Too many requests. Try again in 1m",
            ),
            503 => err(
                503,
                "error.service.unavailable",
                "Service temporarily unavailable",
            ),
            s if s >= 500 => err(s, "error.internal", "Internal server error"),
            s => err(s, "error.unknown", "Request failed"),
        }
    }

    /// Plausible shape (unverified): the documented signal is the batch status
    /// CREDITS_INSUFFICIENT + 402 on GET, produced by the real credit path.
    fn out_of_credits(&self) -> Reply {
        err(402, "error.credits.insufficient", "Not enough credits")
    }

    fn processing(&self, ctx: &Ctx) -> Option<Reply> {
        (ctx.route.id == RESULT).then(in_progress)
    }

    fn malformed(&self) -> Reply {
        Reply::raw_json(
            200,
            r#"{"id":"5b0c2d4e-8f1a-4c3b-9d2e-7a6f5e4d3c2b","name":"enrichd","status":"FINISHED","cost":{"credits":1},"data":[{"input":{"first_name":"Ja"#,
        )
    }

    fn serve<'a>(&'a self, ctx: &'a Ctx, req: &'a Req) -> BoxFut<'a> {
        Box::pin(async move {
            match ctx.route.id {
                SUBMIT => submit(ctx, req).await,
                _ => result(ctx, req).await,
            }
        })
    }
}

fn in_progress() -> Reply {
    err(
        400,
        "error.enrichment.in_progress",
        "Enrichment not ready, try again in 30 seconds",
    )
}

fn identity_of(item: &Value) -> Identity {
    Identity {
        first: jstr(item, "first_name"),
        last: jstr(item, "last_name"),
        full_name: None,
        domain: jstr(item, "domain"),
        company: jstr(item, "company_name"),
        linkedin: jstr(item, "linkedin_url"),
        email: None,
    }
}

async fn submit(ctx: &Ctx, req: &Req) -> Reply {
    let body = req.json();
    let items: Vec<Value> = body
        .as_ref()
        .and_then(|b| b.get("data"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let persons: Vec<usize> = items
        .iter()
        .filter_map(|it| identity_of(it).resolve(ctx.pop()))
        .collect();
    if let Some(r) = ctx.gate(&persons).await {
        return r;
    }
    let Some(body) = body.filter(Value::is_object) else {
        return err(
            400,
            "error.enrichment.invalid_body",
            "The request body must be a JSON object",
        );
    };
    let Some(name) = jstr(&body, "name") else {
        return err(400, "error.enrichment.name_empty", "name must not be empty");
    };
    let webhook_url = match body.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if valid_url(u) => Some(u.trim().to_string()),
        Some(_) => {
            return err(
                400,
                "error.enrichment.webhook_url_invalid",
                "webhook_url must be a valid http(s) URL",
            );
        }
    };
    let contact_url = match body
        .get("webhook_events")
        .and_then(|e| e.get("contact_finished"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if valid_url(u) => Some(u.trim().to_string()),
        Some(_) => {
            return err(
                400,
                "error.enrichment.webhook_url_invalid",
                "webhook_events.contact_finished must be a valid http(s) URL",
            );
        }
    };
    if items.is_empty() {
        return err(400, "error.enrichment.data_empty", "data must not be empty");
    }
    if items.len() > MAX_CONTACTS {
        return err(
            400,
            "error.enrichment.data_too_large",
            "data must contain at most 100 contacts",
        );
    }
    let mut contacts = Vec::with_capacity(items.len());
    let mut asked: Vec<SimChannel> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() {
            return err(
                400,
                "error.enrichment.contact_invalid",
                &format!("data[{i}] must be an object"),
            );
        }
        let fields = match item.get("enrich_fields").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a,
            _ => {
                return err(
                    400,
                    "error.enrichment.enrich_fields_empty",
                    &format!("data[{i}].enrich_fields must not be empty"),
                );
            }
        };
        let mut chans = Vec::new();
        for f in fields {
            match f.as_str().and_then(field_channel) {
                Some(c) => {
                    if !chans.contains(&c) {
                        chans.push(c);
                    }
                }
                None => {
                    return err(
                        400,
                        "error.enrichment.enrich_fields_invalid",
                        &format!(
                            "data[{i}].enrich_fields accepts contact.work_emails, contact.personal_emails, contact.phones"
                        ),
                    );
                }
            }
        }
        let id = identity_of(item);
        let has_name = id.first.is_some() && id.last.is_some();
        let has_company = id.domain.is_some() || id.company.is_some();
        if !(id.linkedin.is_some() || (has_name && has_company)) {
            return err(
                400,
                "error.enrichment.contact_invalid",
                &format!(
                    "data[{i}] needs first_name, last_name and domain or company_name, or linkedin_url"
                ),
            );
        }
        let custom = match item.get("custom") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(m)) => {
                let ok = m.len() <= 10
                    && m.values()
                        .all(|v| v.as_str().is_some_and(|s| s.chars().count() <= 100));
                if !ok {
                    return err(
                        400,
                        "error.enrichment.custom_too_large",
                        "custom is too large (max: 10 keys, 100 chars per string value)",
                    );
                }
                Value::Object(m.clone())
            }
            Some(_) => {
                return err(
                    400,
                    "error.enrichment.custom_invalid",
                    "custom must be an object of strings",
                );
            }
        };
        let mut input = Map::new();
        for k in [
            "first_name",
            "last_name",
            "domain",
            "company_name",
            "linkedin_url",
        ] {
            if let Some(v) = jstr(item, k) {
                input.insert(k.to_string(), Value::String(v));
            }
        }
        if let Some(u) = &id.linkedin {
            input.insert("professional_network_url".into(), Value::String(u.clone()));
        }
        let fingerprint = format!(
            "{}|{}|{}|{}|{}",
            id.first.as_deref().unwrap_or("").to_lowercase(),
            id.last.as_deref().unwrap_or("").to_lowercase(),
            id.domain
                .as_deref()
                .map(normalize_domain)
                .unwrap_or_default(),
            id.company
                .as_deref()
                .map(normalize_company)
                .unwrap_or_default(),
            id.linkedin.as_deref().unwrap_or("").to_lowercase(),
        );
        for c in &chans {
            if !asked.contains(c) {
                asked.push(*c);
            }
        }
        contacts.push(Contact {
            input: Value::Object(input),
            custom,
            person: id.resolve(ctx.pop()),
            fields: chans,
            linkedin_given: id.linkedin.is_some(),
            fingerprint,
        });
    }
    let sh = &ctx.sh;
    let id = {
        let mut st = sh.lock();
        st.fullenrich.counter += 1;
        let h = ctx.h().s("enrichment").n(st.fullenrich.counter);
        let (a, b) = (h.get(), h.s("b").get());
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a as u16 & 0x0fff,
            ((b >> 48) as u16 & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        );
        let n = contacts.len();
        st.fullenrich.batches.insert(
            id.clone(),
            Batch {
                id: id.clone(),
                name,
                status: "IN_PROGRESS",
                cost: 0,
                results: vec![None; n],
                persons: contacts.iter().filter_map(|c| c.person).collect(),
                contacts,
            },
        );
        id
    };
    let task_sh = sh.clone();
    let task_id = id.clone();
    let key = ctx.sh.opts.api_key.clone();
    let started = ctx.now;
    sh.spawn(async move {
        process(task_sh, task_id, key, started, webhook_url, contact_url).await;
    });
    Reply::json(200, json!({ "enrichment_id": id })).about(persons, asked)
}

fn valid_url(u: &str) -> bool {
    let u = u.trim();
    (u.starts_with("http://") || u.starts_with("https://")) && u.len() > "https://".len()
}

/// Process the contacts one by one, spread over `processing_delay`.
async fn process(
    sh: Arc<Shared>,
    id: String,
    key: String,
    started: Instant,
    webhook_url: Option<String>,
    contact_url: Option<String>,
) {
    let n = {
        let st = sh.lock();
        st.fullenrich
            .batches
            .get(&id)
            .map_or(0, |b| b.contacts.len())
    };
    let delay = sh.opts.processing_delay;
    for k in 0..n {
        let due = started + delay.mul_f64((k + 1) as f64 / n as f64);
        tokio::time::sleep_until(due.into()).await;
        let (per_contact, stop) = finish_contact(&sh, &id, &key, k);
        if let (Some(url), Some(body)) = (&contact_url, per_contact) {
            deliver(&sh, url.clone(), body);
        }
        if stop {
            break;
        }
    }
    let final_body = {
        let mut st = sh.lock();
        let Some(b) = st.fullenrich.batches.get_mut(&id) else {
            return;
        };
        if b.status == "IN_PROGRESS" {
            b.status = "FINISHED";
        }
        b.body(false)
    };
    if let Some(url) = webhook_url {
        deliver(
            &sh,
            url,
            serde_json::to_vec(&final_body).unwrap_or_default(),
        );
    }
}

/// Compute, bill and store contact `k`. Returns the per-contact webhook body and whether the
/// batch stopped for lack of credits.
fn finish_contact(sh: &Arc<Shared>, id: &str, key: &str, k: usize) -> (Option<Vec<u8>>, bool) {
    let pop = &sh.pop;
    let mut st = sh.lock();
    let st = &mut *st;
    let Some(b) = st.fullenrich.batches.get_mut(id) else {
        return (None, true);
    };
    let Some(c) = b.contacts.get(k) else {
        return (None, true);
    };
    let mut info = Map::new();
    let mut cost = 0i64;
    let mut dedupe_keys = Vec::new();
    let mut profile = None;
    if let Some(p) = c.person {
        for ch in &c.fields {
            let Some(kn) = sh.profile().knows(pop, sh.name(), p, *ch) else {
                continue;
            };
            let price = match ch {
                SimChannel::WorkEmail => 1,
                SimChannel::PersonalEmail => 3,
                _ => 10,
            };
            let dk = format!("fe|{key}|{p}|{}|{}", ch.tag(), c.fingerprint);
            let billed_elsewhere = st.billed.get(&dk).is_some_and(|bid| bid != id);
            if !billed_elsewhere {
                cost += price;
                dedupe_keys.push(dk);
            }
            match ch {
                SimChannel::WorkEmail | SimChannel::PersonalEmail => {
                    let e = json!({ "email": kn.value, "status": status_word(kn.word) });
                    let (one, many) = if *ch == SimChannel::WorkEmail {
                        ("most_probable_work_email", "work_emails")
                    } else {
                        ("most_probable_personal_email", "personal_emails")
                    };
                    info.insert(one.into(), e.clone());
                    info.insert(many.into(), json!([e]));
                }
                _ => {
                    let ph = json!({ "number": human_phone(&kn.value), "region": pop.person(p).country });
                    info.insert("most_probable_phone".into(), ph.clone());
                    info.insert("phones".into(), json!([ph]));
                }
            }
        }
        if c.linkedin_given {
            let url = pop.person(p).linkedin_url.clone();
            profile =
                Some(json!({ "social_profiles": { "professional_network": { "url": url } } }));
        }
    }
    let affordable = match st.credits {
        Some(bal) => bal >= cost,
        None => true,
    };
    let mut result = json!({ "input": c.input, "custom": c.custom, "contact_info": {} });
    let stop = if affordable {
        if let Some(bal) = st.credits.as_mut() {
            *bal -= cost;
        }
        st.stats.credits_charged += cost;
        b.cost += cost;
        for dk in dedupe_keys {
            st.billed.insert(dk, id.to_string());
        }
        result["contact_info"] = Value::Object(info);
        if let Some(p) = profile {
            result["profile"] = p;
        }
        false
    } else {
        b.status = "CREDITS_INSUFFICIENT";
        true
    };
    b.results[k] = Some(result.clone());
    if stop {
        for r in b.results.iter_mut().skip(k + 1) {
            *r = None;
        }
        let rest: Vec<Value> = b.contacts.iter().skip(k + 1).map(empty_result).collect();
        for (j, v) in rest.into_iter().enumerate() {
            b.results[k + 1 + j] = Some(v);
        }
    }
    let per_contact = json!({
        "id": b.id,
        "name": b.name,
        "status": "IN_PROGRESS",
        "cost": { "credits": b.cost },
        "data": [result],
    });
    (
        Some(serde_json::to_vec(&per_contact).unwrap_or_default()),
        stop,
    )
}

/// POST a signed webhook, retrying every `callback_retry_interval` up to 5 times.
fn deliver(sh: &Arc<Shared>, url: String, body: Vec<u8>) {
    let sig = signature(&sh.opts.api_key, &body);
    let task_sh = sh.clone();
    sh.spawn(async move {
        for attempt in 0..=5u32 {
            let res = task_sh
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header("X-Signature-SHA1", &sig)
                .body(body.clone())
                .send()
                .await;
            let ok = matches!(&res, Ok(r) if r.status().is_success());
            {
                let mut st = task_sh.lock();
                st.stats.callbacks_sent += 1;
                if !ok {
                    st.stats.callbacks_failed += 1;
                }
            }
            if ok {
                return;
            }
            tracing::debug!(%url, attempt, "fullenrich sim: webhook delivery failed");
            if attempt < 5 {
                tokio::time::sleep(task_sh.opts.callback_retry_interval).await;
            }
        }
    });
}

async fn result(ctx: &Ctx, req: &Req) -> Reply {
    let id = ctx.route.param.clone().unwrap_or_default();
    let persons = {
        let st = ctx.sh.lock();
        st.fullenrich
            .batches
            .get(&id)
            .map(|b| b.persons.clone())
            .unwrap_or_default()
    };
    if let Some(r) = ctx.gate(&persons).await {
        return r;
    }
    let force = req.q("forceResults").is_some_and(|v| parse_bool(&v));
    let st = ctx.sh.lock();
    let Some(b) = st.fullenrich.batches.get(&id) else {
        return err(404, "error.enrichment.not_found", "Enrichment not found");
    };
    let reply = match b.status {
        "IN_PROGRESS" if !force => in_progress(),
        "IN_PROGRESS" => Reply::json(200, b.body(true)),
        "CREDITS_INSUFFICIENT" => Reply::json(402, b.body(false)),
        _ => Reply::json(200, b.body(false)),
    };
    reply.about(persons, Vec::new())
}
