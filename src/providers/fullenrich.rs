//! FullEnrich (reference/providers.md §1.1): an asynchronous, batched
//! aggregator. A find request submits up to 100 contacts
//! (`POST /contact/enrich/bulk`) and is answered with an `enrichment_id`
//! ([`ProviderOutcome::Pending`]); results arrive by signed callback
//! (`X-Signature-SHA1`) or by polling `GET /contact/enrich/bulk/{id}`.
//!
//! Decisions where the reference is silent:
//! - **No `linkedin_url` supply.** FullEnrich returns
//!   `profile.social_profiles.professional_network.url` only when a LinkedIn
//!   URL was sent, i.e. when the lead already has one, so it can never fill a
//!   missing LinkedIn channel. A connector listing it is rejected.
//! - **Matching.** Every contact carries `custom.enrichd_key = <lead key>`;
//!   answers are matched on it, never on position. A submitted lead absent
//!   from a finished result is `NotFound`.
//! - **Provider cost.** `cost.credits` is the batch total. It is split over
//!   the leads with values in proportion to the connector's per-channel prices
//!   of the non-invalid values found (FullEnrich bills only for those), the
//!   rounding remainder going to the first such lead, so the parts add up to
//!   the total exactly. It is attached only to terminal answers (FINISHED,
//!   CREDITS_INSUFFICIENT, CANCELED); per-contact `IN_PROGRESS` events carry
//!   no cost, so the final batch event (which repeats every contact) is the
//!   one to settle spend on. A total with no lead to carry it is dropped
//!   (FullEnrich bills only found values, so this does not happen in practice).
//! - **CANCELED.** Leads that got values keep them (`Found`, they were
//!   billed); the others are `Transient`.
//! - **In-progress answers.** A poll answered `400 error.enrichment.in_progress`
//!   is `Pending { job_id: REPEAT_REQUEST }` (poll the same job again after the
//!   30 s the message asks for). A `200` whose status is `IN_PROGRESS`,
//!   `CREATED`, `RATE_LIMIT` or `UNKNOWN` (a per-contact `contact_finished`
//!   event, or a forced poll) is `BatchOutcome::All(Pending { job_id })` until
//!   it carries every submitted lead: a batch is settled once, from a complete
//!   answer (the final batch webhook repeats every contact anyway). Only the
//!   batch webhook (`webhook_url`) is subscribed; per-contact events are not.
//! - **Options** (`[providers.<id>.options]`): `name_prefix` (string, default
//!   `"enrichd"`): the enrichment name shown in FullEnrich's dashboard is
//!   `"<name_prefix> <first lead key> +<other leads>"`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha1::Sha1;

use super::def::{Account, BuildError, Cost};
use super::util::{self, classified, describe, describe_with, filled};
use super::{
    AdapterError, BatchOutcome, CallbackEnvelope, CallbackError, FindItem, Finder, HttpRequest,
    HttpResponse, Method, REPEAT_REQUEST,
};
use crate::core::channel::{Channel, ChannelSet};
use crate::core::lead::Identity;
use crate::core::outcome::{Classified, MilliCredits, ProviderOutcome};
use crate::core::value::{ValueCandidate, Verification};
use crate::secret::Secret;

const PROVIDER: &str = "fullenrich";
/// Contacts per bulk request (reference §1.1).
pub const MAX_BATCH: usize = 100;
/// FullEnrich's `custom` values are limited to 100 characters.
const MAX_CUSTOM_CHARS: usize = 100;
/// "Enrichment not ready, try again in 30 seconds".
const POLL_AFTER: Duration = Duration::from_secs(30);
/// "Too many requests. Try again in 1m" (no Retry-After header is sent).
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
pub const SIGNATURE_HEADER: &str = "X-Signature-SHA1";
const NEEDS: &str = "first_name + last_name + (domain or company_name), or linkedin_url";
const OPTIONS: &[&str] = &["name_prefix"];

#[derive(Debug)]
pub struct FullEnrich {
    id: String,
    base_url: String,
    key: Secret,
    supplies: ChannelSet,
    cost: Cost,
    name_prefix: String,
}

impl FullEnrich {
    pub fn new(account: &Account) -> Result<Self, BuildError> {
        util::check_base_url(account)?;
        util::check_option_keys(account, OPTIONS)?;
        let capable: ChannelSet = [Channel::WorkEmail, Channel::PersonalEmail, Channel::Phone]
            .into_iter()
            .collect();
        let supplies = util::check_supplies(account, capable, &|_| {
            "FullEnrich cannot find: it only echoes back a LinkedIn URL that was sent to it".into()
        })?;
        Ok(FullEnrich {
            id: account.connector.id.clone(),
            base_url: account.base_url.trim().to_string(),
            key: account.api_key.clone(),
            supplies,
            cost: account.connector.cost,
            name_prefix: util::string_option(account, "name_prefix")?
                .unwrap_or_else(|| "enrichd".to_string()),
        })
    }

    fn auth_headers(&self, method: Method) -> Vec<(String, String)> {
        util::json_headers(
            method,
            vec![(
                "authorization".to_string(),
                format!("Bearer {}", self.key.expose()),
            )],
        )
    }

    fn c(&self, outcome: ProviderOutcome, detail: String) -> Classified {
        classified(outcome, detail, &self.key)
    }

    /// Statuses that mean the same for a submit and a poll.
    fn common_error(&self, resp: &HttpResponse) -> Classified {
        let d = describe(resp);
        match resp.status {
            401 | 403 => self.c(
                ProviderOutcome::AuthError,
                format!("{d}; check the FullEnrich API key"),
            ),
            402 => self.c(ProviderOutcome::OutOfCredits, d),
            429 => {
                let wait = util::retry_after(resp)
                    .or_else(|| message(resp).and_then(|m| util::wait_in_message(&m)))
                    .unwrap_or(RATE_LIMIT_WAIT);
                self.c(
                    ProviderOutcome::RateLimited {
                        retry_after: Some(wait),
                    },
                    d,
                )
            }
            500..=599 => self.c(ProviderOutcome::Transient, d),
            _ => self.c(
                ProviderOutcome::Transient,
                format!("{d}; unexpected answer from FullEnrich"),
            ),
        }
    }

    fn results(&self, items: &[FindItem<'_>], v: &Value, http: u16) -> BatchOutcome {
        let job = util::str_at(v, "/id").unwrap_or(REPEAT_REQUEST).to_string();
        let status = util::str_at(v, "/status").map(str::to_ascii_uppercase);
        let mode = match (http, status.as_deref()) {
            (402, _) | (_, Some("CREDITS_INSUFFICIENT")) => Mode::OutOfCredits,
            (_, Some("FINISHED")) => Mode::Finished,
            (_, Some("CANCELED")) => Mode::Canceled,
            (_, Some("IN_PROGRESS" | "CREATED" | "RATE_LIMIT" | "UNKNOWN")) => Mode::Partial,
            (_, other) => {
                return BatchOutcome::All(self.c(
                    ProviderOutcome::Transient,
                    format!(
                        "HTTP {http}: malformed body (enrichment status {})",
                        other.map_or("missing".to_string(), |s| format!(
                            "`{}`",
                            util::truncate(s, 40)
                        ))
                    ),
                ));
            }
        };
        let label = status.as_deref().unwrap_or("CREDITS_INSUFFICIENT");
        let rows = rows_by_key(v);

        // Candidates per item (only the channels asked).
        let found: Vec<Option<Vec<ValueCandidate>>> = items
            .iter()
            .map(|it| {
                rows.get(it.key)
                    .map(|row| candidates(row, it.channels.intersection(self.supplies)))
            })
            .collect();

        let costs = if mode == Mode::Partial {
            let done = found.iter().filter(|f| f.is_some()).count();
            if done < items.len() {
                return BatchOutcome::All(self.c(
                    ProviderOutcome::Pending {
                        job_id: job,
                        retry_after: Some(POLL_AFTER),
                    },
                    format!(
                        "HTTP {http} {label}: {done} of {} lead(s) finished",
                        items.len()
                    ),
                ));
            }
            // Complete but not terminal: no batch cost yet.
            vec![None; items.len()]
        } else {
            let total = util::number_at(v, "/cost/credits").and_then(util::credits_to_milli);
            split_cost(total, &found, &self.cost)
        };

        let outcomes = items
            .iter()
            .zip(found)
            .zip(costs)
            .map(|((_, cands), cost)| {
                let (outcome, detail) = match cands {
                    Some(values) if !values.is_empty() => {
                        let what = values
                            .iter()
                            .map(|c| match &c.provider_status {
                                Some(s) => format!("{} ({s})", c.channel),
                                None => c.channel.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        (
                            ProviderOutcome::Found {
                                values,
                                provider_cost: cost,
                            },
                            format!("HTTP {http} {label}: found {what}"),
                        )
                    }
                    present => {
                        let in_result = present.is_some();
                        match mode {
                            Mode::Finished => (
                                ProviderOutcome::NotFound,
                                if in_result {
                                    format!("HTTP {http} {label}: no contact info for the asked channels")
                                } else {
                                    format!("HTTP {http} {label}: lead missing from the result")
                                },
                            ),
                            Mode::Partial => (
                                ProviderOutcome::NotFound,
                                format!("HTTP {http} {label}: contact finished without contact info for the asked channels"),
                            ),
                            Mode::OutOfCredits => (
                                ProviderOutcome::OutOfCredits,
                                format!("HTTP {http} {label}: the FullEnrich workspace ran out of credits before this lead"),
                            ),
                            Mode::Canceled => (
                                ProviderOutcome::Transient,
                                format!("HTTP {http} {label}: the enrichment was canceled before this lead"),
                            ),
                        }
                    }
                };
                self.c(outcome, detail)
            })
            .collect();
        BatchOutcome::Each(outcomes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Finished,
    OutOfCredits,
    Canceled,
    Partial,
}

/// The `message` of an error body.
fn message(resp: &HttpResponse) -> Option<String> {
    let v = util::parse_json(&resp.body)?;
    util::code_and_message(&v).1
}

fn code(resp: &HttpResponse) -> Option<String> {
    let v = util::parse_json(&resp.body)?;
    util::code_and_message(&v).0
}

/// Result rows by `custom.enrichd_key` (first row wins on duplicates).
fn rows_by_key(v: &Value) -> HashMap<&str, &Value> {
    let mut map = HashMap::new();
    if let Some(rows) = v.get("data").and_then(Value::as_array) {
        for row in rows {
            if let Some(k) = row.pointer("/custom/enrichd_key").and_then(Value::as_str) {
                map.entry(k).or_insert(row);
            }
        }
    }
    map
}

fn email_verification(status: Option<&str>) -> Verification {
    match status.map(str::to_ascii_uppercase).as_deref() {
        Some("DELIVERABLE") => Verification::Verified,
        Some("CATCH_ALL") => Verification::CatchAll,
        Some("INVALID" | "INVALID_DOMAIN") => Verification::Invalid,
        // HIGH_PROBABILITY (catch-all with activity signals, ≈8% bounce),
        // UNVERIFIED (BYOK without verification), missing: not vouched for.
        _ => Verification::Unknown,
    }
}

/// `most_probable_<kind>` (object or bare string), else the first of `<list>`.
fn pick<'a>(ci: &'a Value, most_probable: &str, list: &str) -> Option<&'a Value> {
    ci.get(most_probable).filter(|v| !v.is_null()).or_else(|| {
        ci.get(list)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
    })
}

fn email_candidate(ci: &Value, channel: Channel, mp: &str, list: &str) -> Option<ValueCandidate> {
    let v = pick(ci, mp, list)?;
    let (email, status) = match v {
        Value::String(s) => (s.trim(), None),
        _ => (util::str_at(v, "/email")?, util::str_at(v, "/status")),
    };
    if email.is_empty() {
        return None;
    }
    let mut c = ValueCandidate::new(channel, email, email_verification(status));
    c.provider_status = status.map(str::to_string);
    Some(c)
}

fn candidates(row: &Value, asked: ChannelSet) -> Vec<ValueCandidate> {
    let Some(ci) = row.get("contact_info").filter(|v| v.is_object()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if asked.contains(Channel::WorkEmail)
        && let Some(c) = email_candidate(
            ci,
            Channel::WorkEmail,
            "most_probable_work_email",
            "work_emails",
        )
    {
        out.push(c);
    }
    if asked.contains(Channel::PersonalEmail)
        && let Some(c) = email_candidate(
            ci,
            Channel::PersonalEmail,
            "most_probable_personal_email",
            "personal_emails",
        )
    {
        out.push(c);
    }
    if asked.contains(Channel::Phone)
        && let Some(p) = pick(ci, "most_probable_phone", "phones")
    {
        // Human formatted ("+1 555-123-4567"): kept raw, the engine
        // normalises to E.164. FullEnrich returns mobiles only; no status.
        let number = match p {
            Value::String(s) => Some(s.trim()).filter(|s| !s.is_empty()),
            _ => util::str_at(p, "/number"),
        };
        if let Some(n) = number {
            out.push(ValueCandidate::new(
                Channel::Phone,
                n,
                Verification::Unknown,
            ));
        }
    }
    out
}

/// Splits `total` over the items with values (see the module docs).
fn split_cost(
    total: Option<MilliCredits>,
    found: &[Option<Vec<ValueCandidate>>],
    cost: &Cost,
) -> Vec<Option<MilliCredits>> {
    let mut out = vec![None; found.len()];
    let Some(total) = total else {
        return out;
    };
    let weights: Vec<Option<i128>> = found
        .iter()
        .map(|f| match f {
            Some(vs) if !vs.is_empty() => Some(
                vs.iter()
                    .filter(|c| c.verification != Verification::Invalid)
                    .map(|c| i128::from(cost.for_channel(c.channel).max(0)))
                    .sum(),
            ),
            _ => None,
        })
        .collect();
    let with_values = weights.iter().flatten().count();
    if with_values == 0 {
        return out;
    }
    let mut sum: i128 = weights.iter().flatten().sum();
    let weights: Vec<Option<i128>> = if sum == 0 {
        // No prices configured (or only invalid values): split evenly.
        sum = with_values as i128;
        weights.iter().map(|w| w.map(|_| 1)).collect()
    } else {
        weights
    };
    let total_i = i128::from(total);
    let mut shares: Vec<Option<i128>> = weights
        .iter()
        .map(|w| w.map(|w| total_i * w / sum))
        .collect();
    let assigned: i128 = shares.iter().flatten().sum();
    if let Some(first) = shares.iter_mut().flatten().next() {
        *first += total_i - assigned;
    }
    for (slot, share) in out.iter_mut().zip(shares) {
        *slot = share.and_then(|v| MilliCredits::try_from(v).ok());
    }
    out
}

fn accepts(id: &Identity) -> bool {
    let named = filled(&id.first_name).is_some() && filled(&id.last_name).is_some();
    let company = filled(&id.domain).is_some() || filled(&id.company_name).is_some();
    (named && company) || filled(&id.linkedin_url).is_some()
}

fn invalid(message: String) -> AdapterError {
    AdapterError::Invalid {
        provider: PROVIDER,
        message,
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => {
                let hi = char::from(*hi).to_digit(16)?;
                let lo = char::from(*lo).to_digit(16)?;
                u8::try_from(hi * 16 + lo).ok()
            }
            _ => None,
        })
        .collect()
}

impl Finder for FullEnrich {
    fn id(&self) -> &str {
        &self.id
    }

    fn supplies(&self) -> ChannelSet {
        self.supplies
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn is_async(&self) -> bool {
        true
    }

    fn accepts(&self, identity: &Identity) -> bool {
        accepts(identity)
    }

    fn find_request(
        &self,
        items: &[FindItem<'_>],
        callback_url: Option<&str>,
    ) -> Result<HttpRequest, AdapterError> {
        let Some(first) = items.first() else {
            return Err(invalid("a bulk request needs at least one lead".into()));
        };
        if items.len() > MAX_BATCH {
            return Err(AdapterError::BatchTooLarge {
                provider: PROVIDER,
                max: MAX_BATCH,
                got: items.len(),
            });
        }
        let mut seen = HashSet::new();
        let mut data = Vec::with_capacity(items.len());
        for it in items {
            let key = it.key.trim();
            if key.is_empty() || key.chars().count() > MAX_CUSTOM_CHARS {
                return Err(invalid(format!(
                    "lead key must be 1 to {MAX_CUSTOM_CHARS} characters to be echoed back in `custom`"
                )));
            }
            if !seen.insert(key) {
                return Err(invalid(format!(
                    "lead key `{key}` appears twice in one batch"
                )));
            }
            if !accepts(it.identity) {
                return Err(AdapterError::MissingInput {
                    provider: PROVIDER,
                    needs: NEEDS,
                });
            }
            let fields: Vec<&str> = it
                .channels
                .intersection(self.supplies)
                .iter()
                .filter_map(|c| match c {
                    Channel::WorkEmail => Some("contact.work_emails"),
                    Channel::PersonalEmail => Some("contact.personal_emails"),
                    Channel::Phone => Some("contact.phones"),
                    Channel::LinkedinUrl => None,
                })
                .collect();
            if fields.is_empty() {
                return Err(invalid(format!(
                    "lead `{key}` asks for no channel FullEnrich supplies ({})",
                    self.supplies
                )));
            }
            let id = it.identity;
            let mut row = Map::new();
            for (k, v) in [
                ("first_name", filled(&id.first_name)),
                ("last_name", filled(&id.last_name)),
                ("domain", filled(&id.domain).map(util::bare)),
                ("company_name", filled(&id.company_name)),
                ("linkedin_url", filled(&id.linkedin_url)),
            ] {
                if let Some(v) = v {
                    row.insert(k.to_string(), Value::from(v));
                }
            }
            row.insert("enrich_fields".to_string(), json!(fields));
            row.insert("custom".to_string(), json!({ "enrichd_key": key }));
            data.push(Value::Object(row));
        }

        let extra = if items.len() > 1 {
            format!(" +{}", items.len() - 1)
        } else {
            String::new()
        };
        let name = util::truncate(
            &format!("{} {}{extra}", self.name_prefix, first.key.trim()),
            100,
        );
        let mut body = Map::new();
        body.insert("name".to_string(), Value::from(name));
        if let Some(cb) = callback_url.map(str::trim).filter(|s| !s.is_empty()) {
            if !(cb.starts_with("https://") || cb.starts_with("http://")) {
                return Err(invalid(
                    "the callback URL must start with http:// or https://".into(),
                ));
            }
            body.insert("webhook_url".to_string(), Value::from(cb));
        }
        body.insert("data".to_string(), Value::Array(data));
        let body = serde_json::to_vec(&Value::Object(body))
            .map_err(|e| invalid(format!("cannot encode the request body: {e}")))?;

        Ok(HttpRequest {
            method: Method::Post,
            url: util::build_url::<&str, &str>(&self.base_url, "/contact/enrich/bulk", &[]),
            headers: self.auth_headers(Method::Post),
            body: Some(body),
            endpoint: "POST /contact/enrich/bulk",
        })
    }

    fn classify_find(&self, items: &[FindItem<'_>], resp: &HttpResponse) -> BatchOutcome {
        let c = match resp.status {
            200..=299 => match util::parse_json(&resp.body)
                .as_ref()
                .and_then(|v| util::str_at(v, "/enrichment_id").map(str::to_string))
            {
                Some(job_id) => {
                    let detail = format!(
                        "HTTP {}: enrichment {} accepted for {} lead(s)",
                        resp.status,
                        util::truncate(&job_id, 80),
                        items.len()
                    );
                    self.c(
                        ProviderOutcome::Pending {
                            job_id,
                            retry_after: Some(POLL_AFTER),
                        },
                        detail,
                    )
                }
                None => self.c(
                    ProviderOutcome::Transient,
                    format!("HTTP {}: malformed body (no enrichment_id)", resp.status),
                ),
            },
            400 | 422 => self.c(ProviderOutcome::InvalidInput, describe(resp)),
            404 => self.c(
                ProviderOutcome::Transient,
                describe_with(resp, "endpoint not found; check the FullEnrich base_url"),
            ),
            _ => self.common_error(resp),
        };
        BatchOutcome::All(c)
    }

    fn poll_request(&self, job_id: &str) -> Option<HttpRequest> {
        let job_id = job_id.trim();
        if job_id.is_empty() {
            return None;
        }
        let path = format!("/contact/enrich/bulk/{}", util::percent_encode(job_id));
        Some(HttpRequest {
            method: Method::Get,
            url: util::build_url::<&str, &str>(&self.base_url, &path, &[]),
            headers: self.auth_headers(Method::Get),
            body: None,
            endpoint: "GET /contact/enrich/bulk/{id}",
        })
    }

    fn classify_poll(&self, items: &[FindItem<'_>], resp: &HttpResponse) -> BatchOutcome {
        match resp.status {
            200 | 402 => match util::parse_json(&resp.body) {
                Some(v) if v.is_object() => self.results(items, &v, resp.status),
                _ if resp.status == 402 => {
                    BatchOutcome::All(self.c(ProviderOutcome::OutOfCredits, describe(resp)))
                }
                _ => BatchOutcome::All(self.c(
                    ProviderOutcome::Transient,
                    format!("HTTP {}: malformed body", resp.status),
                )),
            },
            400 if code(resp).as_deref() == Some("error.enrichment.in_progress") => {
                let wait = message(resp)
                    .and_then(|m| util::wait_in_message(&m))
                    .unwrap_or(POLL_AFTER);
                BatchOutcome::All(self.c(
                    ProviderOutcome::Pending {
                        job_id: REPEAT_REQUEST.to_string(),
                        retry_after: Some(wait),
                    },
                    describe(resp),
                ))
            }
            400 | 422 => BatchOutcome::All(self.c(
                ProviderOutcome::Transient,
                describe_with(resp, "FullEnrich rejected the poll request"),
            )),
            404 => BatchOutcome::All(self.c(
                ProviderOutcome::Transient,
                describe_with(
                    resp,
                    "FullEnrich does not know this enrichment id (job unknown or expired); resubmit the leads",
                ),
            )),
            _ => BatchOutcome::All(self.common_error(resp)),
        }
    }

    fn authenticate_callback(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<CallbackEnvelope, CallbackError> {
        let sig = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(SIGNATURE_HEADER))
            .map(|(_, v)| v.as_str())
            .ok_or(CallbackError::MissingSignature(SIGNATURE_HEADER))?;
        let sig = decode_hex(sig).ok_or(CallbackError::BadSignature)?;
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(self.key.expose().as_bytes())
            .map_err(|_| CallbackError::BadSignature)?;
        mac.update(body);
        mac.verify_slice(&sig)
            .map_err(|_| CallbackError::BadSignature)?;

        let v: Value = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Malformed(format!("not JSON: {e}")))?;
        let job_id = util::str_at(&v, "/id")
            .ok_or_else(|| CallbackError::Malformed("no enrichment `id`".into()))?
            .to_string();
        let status = util::str_at(&v, "/status")
            .ok_or_else(|| CallbackError::Malformed("no `status`".into()))?
            .to_ascii_uppercase();
        let finished = match status.as_str() {
            "FINISHED" | "CREDITS_INSUFFICIENT" | "CANCELED" => true,
            "IN_PROGRESS" | "CREATED" | "RATE_LIMIT" | "UNKNOWN" => false,
            other => {
                return Err(CallbackError::Malformed(format!(
                    "unknown status `{}`",
                    util::truncate(other, 40)
                )));
            }
        };
        Ok(CallbackEnvelope {
            job_id,
            body: body.to_vec(),
            finished,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::util::testing::*;
    use Channel::*;

    const CONNECTOR: &str = include_str!("../../connectors/fullenrich.toml");
    const SUBMIT_OK: &str = include_str!("../../fixtures/providers/fullenrich/submit_ok.json");
    const SUBMIT_BAD: &str =
        include_str!("../../fixtures/providers/fullenrich/submit_bad_request.json");
    const UNAUTHORIZED: &str =
        include_str!("../../fixtures/providers/fullenrich/unauthorized.json");
    const RATE_LIMITED: &str =
        include_str!("../../fixtures/providers/fullenrich/rate_limited.json");
    const IN_PROGRESS: &str = include_str!("../../fixtures/providers/fullenrich/in_progress.json");
    const JOB_NOT_FOUND: &str =
        include_str!("../../fixtures/providers/fullenrich/job_not_found.json");
    const FINISHED: &str = include_str!("../../fixtures/providers/fullenrich/finished.json");
    const CREDITS: &str =
        include_str!("../../fixtures/providers/fullenrich/credits_insufficient.json");
    const CANCELED: &str = include_str!("../../fixtures/providers/fullenrich/canceled.json");
    const CONTACT_FINISHED: &str =
        include_str!("../../fixtures/providers/fullenrich/contact_finished.json");
    const MALFORMED: &str = include_str!("../../fixtures/providers/fullenrich/malformed.json");

    fn fe() -> FullEnrich {
        FullEnrich::new(&account(CONNECTOR, "https://sim.test/api/v2/")).unwrap()
    }

    fn each(o: BatchOutcome) -> Vec<Classified> {
        match o {
            BatchOutcome::Each(v) => v,
            other => panic!("expected Each, got {other:?}"),
        }
    }

    fn all(o: BatchOutcome) -> Classified {
        match o {
            BatchOutcome::All(c) => c,
            other => panic!("expected All, got {other:?}"),
        }
    }

    fn values(c: &Classified) -> (&Vec<ValueCandidate>, Option<MilliCredits>) {
        match &c.outcome {
            ProviderOutcome::Found {
                values,
                provider_cost,
            } => (values, *provider_cost),
            other => panic!("expected Found, got {other:?} ({})", c.detail),
        }
    }

    #[test]
    fn submit_request_is_built_from_items() {
        let ada = ada();
        let grace = Identity {
            linkedin_url: Some("https://www.linkedin.com/in/grace-hopper".into()),
            ..Identity::default()
        };
        let items = [
            item("lead-1", &ada, &[WorkEmail, Phone]),
            item("lead-2", &grace, &[PersonalEmail]),
        ];
        let req = fe()
            .find_request(
                &items,
                Some("https://enrichd.test/callbacks/fullenrich?t=tok"),
            )
            .unwrap();
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.url, "https://sim.test/api/v2/contact/enrich/bulk");
        assert_eq!(req.endpoint, "POST /contact/enrich/bulk");
        assert_eq!(
            header(&req.headers, "authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(
            header(&req.headers, "content-type"),
            Some("application/json")
        );
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["name"], "enrichd lead-1 +1");
        assert_eq!(
            body["webhook_url"],
            "https://enrichd.test/callbacks/fullenrich?t=tok"
        );
        assert!(body.get("webhook_events").is_none());
        assert_eq!(
            body["data"][0],
            json!({
                "first_name": "Ada", "last_name": "Lovelace", "domain": "analytical.io",
                "company_name": "Analytical Engines & Co",
                "enrich_fields": ["contact.work_emails", "contact.phones"],
                "custom": {"enrichd_key": "lead-1"}
            })
        );
        assert_eq!(
            body["data"][1],
            json!({
                "linkedin_url": "https://www.linkedin.com/in/grace-hopper",
                "enrich_fields": ["contact.personal_emails"],
                "custom": {"enrichd_key": "lead-2"}
            })
        );
        let dbg = format!("{req:?} {:?}", fe());
        assert!(!dbg.contains(KEY) && !req.endpoint.contains(KEY), "{dbg}");
    }

    #[test]
    fn submit_options_and_refusals() {
        let a = with_option(
            account(CONNECTOR, "https://sim.test"),
            "name_prefix",
            "crm-sync".into(),
        );
        let f = FullEnrich::new(&a).unwrap();
        let ada = ada();
        let req = f
            .find_request(&[item("k", &ada, &[WorkEmail])], Some("https://cb.test/x"))
            .unwrap();
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["name"], "crm-sync k");
        assert_eq!(body["webhook_url"], "https://cb.test/x");
        assert!(body.get("webhook_events").is_none());

        // No callback: no webhook fields.
        let req = fe()
            .find_request(&[item("k", &ada, &[WorkEmail])], None)
            .unwrap();
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert!(body.get("webhook_url").is_none());

        let nobody = Identity {
            first_name: Some("Ada".into()),
            ..Identity::default()
        };
        assert!(!fe().accepts(&nobody));
        assert!(fe().accepts(&ada));
        assert!(matches!(
            fe().find_request(&[item("k", &nobody, &[WorkEmail])], None),
            Err(AdapterError::MissingInput { .. })
        ));
        assert!(matches!(
            fe().find_request(&[], None),
            Err(AdapterError::Invalid { .. })
        ));
        let keys: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
        let many: Vec<_> = keys.iter().map(|k| item(k, &ada, &[WorkEmail])).collect();
        assert_eq!(
            fe().find_request(&many, None),
            Err(AdapterError::BatchTooLarge {
                provider: "fullenrich",
                max: 100,
                got: 101
            })
        );
        assert!(fe().find_request(&many[..100], None).is_ok());
        let dup = [item("k", &ada, &[WorkEmail]), item("k", &ada, &[Phone])];
        assert!(matches!(
            fe().find_request(&dup, None),
            Err(AdapterError::Invalid { .. })
        ));
        assert!(matches!(
            fe().find_request(&[item("k", &ada, &[LinkedinUrl])], None),
            Err(AdapterError::Invalid { .. })
        ));
        assert!(matches!(
            fe().find_request(&[item("k", &ada, &[WorkEmail])], Some("ftp://x")),
            Err(AdapterError::Invalid { .. })
        ));
    }

    #[test]
    fn options_and_supplies_are_validated() {
        let a = with_option(account(CONNECTOR, "https://sim.test"), "name", "x".into());
        let e = FullEnrich::new(&a).unwrap_err();
        assert!(e.message.contains("unknown option `name`"), "{e}");
        let a = with_option(
            account(CONNECTOR, "https://sim.test"),
            "name_prefix",
            7.into(),
        );
        let e = FullEnrich::new(&a).unwrap_err();
        assert!(
            e.message
                .contains("`name_prefix` must be a non-empty string"),
            "{e}"
        );
        let linked = CONNECTOR.replace(
            "supplies = [\"work_email\", \"personal_email\", \"phone\"]",
            "supplies = [\"work_email\", \"linkedin_url\"]",
        );
        assert_ne!(linked, CONNECTOR);
        let e = FullEnrich::new(&account(&linked, "https://sim.test")).unwrap_err();
        assert!(e.message.contains("linkedin_url"), "{e}");
        let e = FullEnrich::new(&account(CONNECTOR, "sim.test")).unwrap_err();
        assert!(e.message.contains("base_url"), "{e}");
        assert_eq!(fe().max_batch(), 100);
        assert!(fe().is_async());
    }

    #[test]
    fn submit_answers_are_classified() {
        let ada = ada();
        let items = [item("lead-1", &ada, &[WorkEmail])];
        let f = fe();
        let c = all(f.classify_find(&items, &resp(200, SUBMIT_OK)));
        assert_eq!(
            c.outcome,
            ProviderOutcome::Pending {
                job_id: "2db5ea61-1752-42cf-8ea1-ab1da060cd0a".into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
        let c = all(f.classify_find(&items, &resp(400, SUBMIT_BAD)));
        assert_eq!(c.outcome, ProviderOutcome::InvalidInput);
        assert!(
            c.detail.contains("error.enrichment.enrich_fields.empty"),
            "{}",
            c.detail
        );
        let c = all(f.classify_find(&items, &resp(401, UNAUTHORIZED)));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        assert!(
            c.detail
                .starts_with("HTTP 401 error.api.key: \"Unknown api key\""),
            "{}",
            c.detail
        );
        let c = all(f.classify_find(&items, &resp(429, RATE_LIMITED)));
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(60))
            }
        );
        let c = all(f.classify_find(&items, &resp(402, UNAUTHORIZED)));
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        let c = all(f.classify_find(&items, &resp(503, "")));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        assert_eq!(c.detail, "HTTP 503: (empty body)");
        let c = all(f.classify_find(&items, &resp(200, MALFORMED)));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        assert!(c.detail.contains("malformed body"));
    }

    #[test]
    fn poll_request_and_error_answers() {
        let f = fe();
        let req = f.poll_request("2db5ea61/../x y").unwrap();
        assert_eq!(req.method, Method::Get);
        assert_eq!(
            req.url,
            "https://sim.test/api/v2/contact/enrich/bulk/2db5ea61%2F..%2Fx%20y"
        );
        assert_eq!(req.endpoint, "GET /contact/enrich/bulk/{id}");
        assert!(req.body.is_none());
        assert!(f.poll_request(" ").is_none());

        let ada = ada();
        let items = [item("lead-1", &ada, &[WorkEmail])];
        let c = all(f.classify_poll(&items, &resp(400, IN_PROGRESS)));
        assert_eq!(
            c.outcome,
            ProviderOutcome::Pending {
                job_id: REPEAT_REQUEST.into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
        let c = all(f.classify_poll(&items, &resp(404, JOB_NOT_FOUND)));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        assert!(
            c.detail.contains("error.enrichment.not_found") && c.detail.contains("job unknown")
        );
        let c = all(f.classify_poll(&items, &resp(429, RATE_LIMITED)));
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(60))
            }
        );
        let c = all(f.classify_poll(&items, &resp_h(429, &[("retry-after", "5")], RATE_LIMITED)));
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(5))
            }
        );
        let c = all(f.classify_poll(&items, &resp(401, UNAUTHORIZED)));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        let c = all(f.classify_poll(&items, &resp(200, MALFORMED)));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        let c = all(f.classify_poll(&items, &resp(402, MALFORMED)));
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        let c = all(f.classify_poll(&items, &resp(200, r#"{"id":"x","status":"EXPLODED"}"#)));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        let c = all(f.classify_poll(&items, &resp(520, "<html>cf</html>")));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
    }

    #[test]
    fn finished_results_are_matched_by_key_not_position() {
        let (a, b, c, d) = (ada(), ada(), ada(), ada());
        let items = [
            item("lead-1", &a, &[WorkEmail, PersonalEmail, Phone]),
            item("lead-2", &b, &[WorkEmail]),
            item("lead-3", &c, &[WorkEmail, Phone]),
            item("lead-4", &d, &[WorkEmail]),
        ];
        let out = each(fe().classify_poll(&items, &resp(200, FINISHED)));
        assert_eq!(out.len(), 4);

        let (v1, cost1) = values(&out[0]);
        assert_eq!(
            v1,
            &vec![
                ValueCandidate::new(
                    WorkEmail,
                    "ada.lovelace@analytical.io",
                    Verification::Verified
                )
                .status("DELIVERABLE"),
                ValueCandidate::new(PersonalEmail, "ada1815@gmail.com", Verification::Unknown)
                    .status("HIGH_PROBABILITY"),
                ValueCandidate::new(Phone, "+44 20 7946 0958", Verification::Unknown),
            ]
        );
        // lead-2: empty contact_info.
        assert_eq!(out[1].outcome, ProviderOutcome::NotFound);
        // lead-3: a catch-all work email; the phone was not found.
        let (v3, cost3) = values(&out[2]);
        assert_eq!(
            v3,
            &vec![
                ValueCandidate::new(WorkEmail, "ada@analytical.io", Verification::CatchAll)
                    .status("CATCH_ALL")
            ]
        );
        // lead-4 is missing from the data.
        assert_eq!(out[3].outcome, ProviderOutcome::NotFound);
        assert!(out[3].detail.contains("missing"), "{}", out[3].detail);
        // 15 credits: weights 1+3+10 = 14 and 1 → 14 and 1 exactly.
        assert_eq!(cost1, Some(14_000));
        assert_eq!(cost3, Some(1_000));
    }

    #[test]
    fn only_asked_channels_are_reported() {
        let a = ada();
        let items = [item("lead-1", &a, &[Phone])];
        let out = each(fe().classify_poll(&items, &resp(200, FINISHED)));
        let (v, cost) = values(&out[0]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].channel, Phone);
        assert_eq!(cost, Some(15_000));
    }

    #[test]
    fn invalid_statuses_map_to_invalid() {
        let body = r#"{"id":"j","status":"FINISHED","cost":{"credits":0},"data":[
            {"custom":{"enrichd_key":"k"},"contact_info":{"most_probable_work_email":{"email":"x@y.io","status":"INVALID_DOMAIN"}}}]}"#;
        let a = ada();
        let out = each(fe().classify_poll(&[item("k", &a, &[WorkEmail])], &resp(200, body)));
        let (v, cost) = values(&out[0]);
        assert_eq!(v[0].verification, Verification::Invalid);
        assert_eq!(cost, Some(0));
    }

    #[test]
    fn credits_insufficient_keeps_values_found() {
        let (a, b) = (ada(), ada());
        let items = [
            item("lead-1", &a, &[WorkEmail]),
            item("lead-2", &b, &[WorkEmail]),
        ];
        for status in [200, 402] {
            let out = each(fe().classify_poll(&items, &resp(status, CREDITS)));
            let (v, cost) = values(&out[0]);
            assert_eq!(v[0].value, "ada.lovelace@analytical.io");
            assert_eq!(cost, Some(1_000));
            assert_eq!(
                out[1].outcome,
                ProviderOutcome::OutOfCredits,
                "{}",
                out[1].detail
            );
        }
    }

    #[test]
    fn canceled_is_transient_for_leads_without_values() {
        let (a, b) = (ada(), ada());
        let items = [
            item("lead-1", &a, &[WorkEmail]),
            item("lead-2", &b, &[WorkEmail]),
        ];
        let out = each(fe().classify_poll(&items, &resp(200, CANCELED)));
        assert!(matches!(out[0].outcome, ProviderOutcome::Found { .. }));
        assert_eq!(out[1].outcome, ProviderOutcome::Transient);
        assert!(out[1].detail.contains("canceled"));
    }

    #[test]
    fn in_progress_answers_stay_pending_until_complete() {
        let (a, b) = (ada(), ada());
        let items = [
            item("lead-1", &a, &[WorkEmail]),
            item("lead-2", &b, &[WorkEmail]),
        ];
        // A per-contact event carrying lead-1 only: the batch is not settled.
        let c = all(fe().classify_poll(&items, &resp(200, CONTACT_FINISHED)));
        assert_eq!(
            c.outcome,
            ProviderOutcome::Pending {
                job_id: "2db5ea61-1752-42cf-8ea1-ab1da060cd0a".into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert!(c.detail.contains("1 of 2"), "{}", c.detail);
        // The same event settles a one-lead batch, without a batch cost.
        let out = each(fe().classify_poll(&items[..1], &resp(200, CONTACT_FINISHED)));
        let (v, cost) = values(&out[0]);
        assert_eq!(v[0].verification, Verification::Verified);
        assert_eq!(cost, None, "no cost on a non-terminal event");
        let empty = r#"{"id":"j","status":"IN_PROGRESS","data":[{"custom":{"enrichd_key":"lead-1"},"contact_info":{}}]}"#;
        let out = each(fe().classify_poll(&items[..1], &resp(200, empty)));
        assert_eq!(out[0].outcome, ProviderOutcome::NotFound);
    }

    /// HMAC-SHA1("sk_test_SECRET_9f8e7d", CONTACT_FINISHED fixture) computed
    /// independently (Python `hmac.new(key, body, sha1).hexdigest()`).
    const KNOWN_SIGNATURE: &str =
        include_str!("../../fixtures/providers/fullenrich/contact_finished.sha1");

    #[test]
    fn callback_signature_is_checked_before_anything() {
        let f = fe();
        let body = CONTACT_FINISHED.as_bytes();
        let sig = KNOWN_SIGNATURE.trim();
        // Our own computation agrees with the independent one.
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(KEY.as_bytes()).unwrap();
        mac.update(body);
        let ours: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(ours, sig);

        let h = |v: &str| vec![("x-signature-sha1".to_string(), v.to_string())];
        let env = f.authenticate_callback(&h(sig), body).unwrap();
        assert_eq!(env.job_id, "2db5ea61-1752-42cf-8ea1-ab1da060cd0a");
        assert!(!env.finished);
        assert_eq!(env.body, body);
        // Header name is case-insensitive.
        let hh = vec![("X-Signature-SHA1".to_string(), sig.to_string())];
        assert!(f.authenticate_callback(&hh, body).is_ok());

        assert_eq!(
            f.authenticate_callback(&[], body),
            Err(CallbackError::MissingSignature("X-Signature-SHA1"))
        );
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            f.authenticate_callback(&h(sig), &tampered),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            f.authenticate_callback(&h("zz"), body),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            f.authenticate_callback(&h(&sig[..38]), body),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            f.authenticate_callback(&h(""), body),
            Err(CallbackError::BadSignature)
        );
    }

    fn sign(body: &[u8]) -> Vec<(String, String)> {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(KEY.as_bytes()).unwrap();
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        vec![("x-signature-sha1".to_string(), hex)]
    }

    #[test]
    fn callback_status_tells_whether_the_job_is_finished() {
        let f = fe();
        for (body, finished) in [(FINISHED, true), (CREDITS, true), (CANCELED, true)] {
            let env = f
                .authenticate_callback(&sign(body.as_bytes()), body.as_bytes())
                .unwrap();
            assert_eq!(env.finished, finished);
        }
        for bad in [
            MALFORMED,
            r#"{"status":"FINISHED"}"#,
            r#"{"id":"x","status":"WEIRD"}"#,
            r#"{"id":"x"}"#,
        ] {
            assert!(matches!(
                f.authenticate_callback(&sign(bad.as_bytes()), bad.as_bytes()),
                Err(CallbackError::Malformed(_))
            ));
        }
    }

    #[test]
    fn cost_split_is_exact() {
        let cost = Cost {
            work_email: 1.0,
            personal_email: 3.0,
            phone: 10.0,
            ..Cost::default()
        };
        let v = |cs: &[Channel]| {
            Some(
                cs.iter()
                    .map(|c| ValueCandidate::new(*c, "x", Verification::Unknown))
                    .collect::<Vec<_>>(),
            )
        };
        let found = vec![v(&[WorkEmail]), None, v(&[WorkEmail]), v(&[WorkEmail])];
        let out = split_cost(Some(1_000), &found, &cost);
        assert_eq!(out, vec![Some(334), None, Some(333), Some(333)]);
        assert_eq!(split_cost(None, &found, &cost), vec![None; 4]);
        assert_eq!(
            split_cost(Some(5), &[None, Some(vec![])], &cost),
            vec![None, None]
        );
        let free = Cost::default();
        assert_eq!(
            split_cost(Some(2_000), &found, &free),
            vec![Some(668), None, Some(666), Some(666)]
        );
    }
}
