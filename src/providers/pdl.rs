//! People Data Labs Person Enrichment (reference/providers.md §1.4):
//! `GET /v5/person/enrich` with the key in `X-Api-Key`; synchronous, one
//! person per request; billed per match (200), free on no match (404).
//!
//! Decisions where the reference is silent:
//! - **Inputs.** Everything the lead has is sent: `profile` (LinkedIn URL),
//!   `email`, `first_name` + `last_name` (else `name`), `company` (the domain
//!   when known, PDL matches domains best, else the company name). More data
//!   points raise PDL's likelihood.
//! - **`min_likelihood`** (option, integer 0..=10) defaults to **6**, the
//!   value PDL's own Salesforce integration uses, rather than the API's
//!   default of 2 (2 ≈ a 10–30% chance the profile is the right person).
//!   `titlecase=false` keeps values as stored.
//! - **Values.** `work_email`, `personal_emails[0]` → unknown verification
//!   (PDL gives no deliverability status; the engine sends them to the
//!   verifier); phone = `mobile_phone`, else `phone_numbers[0]`, unknown
//!   verification; `linkedin_url` is passed raw (`linkedin.com/in/x`, no
//!   scheme), the engine canonicalises it.
//! - **Free plans** answer `true`/`false` in place of contact fields: that is
//!   reported as an auth error (the key cannot do the job) with a detail
//!   saying so.
//! - **429** waits until `x-ratelimit-reset`: delta seconds, a Unix
//!   timestamp or a date (then measured against the answer's `date` header,
//!   adapters have no clock); a JSON object of per-window resets gives the
//!   soonest. Unparseable → no hint.
//! - **Cost.** PDL's answer carries no price, so `provider_cost` is `None`
//!   and the engine prices from the connector's `cost` (see pdl.toml).

use std::time::Duration;

use serde_json::Value;

use super::def::{Account, BuildError};
use super::util::{self, Query, classified, describe, describe_with, filled};
use super::{AdapterError, BatchOutcome, FindItem, Finder, HttpRequest, HttpResponse, Method};
use crate::core::channel::{Channel, ChannelSet};
use crate::core::lead::Identity;
use crate::core::outcome::{Classified, ProviderOutcome};
use crate::core::value::{ValueCandidate, Verification};
use crate::secret::Secret;

const PROVIDER: &str = "pdl";
const NEEDS: &str = "linkedin_url, or email, or a name with (domain or company_name)";
/// PDL's Salesforce integration default.
pub const DEFAULT_MIN_LIKELIHOOD: i64 = 6;
/// Contact fields that a free plan turns into booleans.
const CONTACT_FIELDS: &[&str] = &[
    "work_email",
    "personal_emails",
    "emails",
    "mobile_phone",
    "phone_numbers",
    "linkedin_url",
];

#[derive(Debug)]
pub struct Pdl {
    id: String,
    base_url: String,
    key: Secret,
    supplies: ChannelSet,
    min_likelihood: i64,
}

impl Pdl {
    pub fn new(account: &Account) -> Result<Self, BuildError> {
        util::check_base_url(account)?;
        util::check_option_keys(account, &["min_likelihood"])?;
        let supplies = util::check_supplies(account, ChannelSet::ALL, &|_| String::new())?;
        Ok(Pdl {
            id: account.connector.id.clone(),
            base_url: account.base_url.trim().to_string(),
            key: account.api_key.clone(),
            supplies,
            min_likelihood: util::int_option(account, "min_likelihood", 0..=10)?
                .unwrap_or(DEFAULT_MIN_LIKELIHOOD),
        })
    }

    fn c(&self, outcome: ProviderOutcome, detail: String) -> Classified {
        classified(outcome, detail, &self.key)
    }

    fn classify(&self, item: Option<&FindItem<'_>>, resp: &HttpResponse) -> Classified {
        match resp.status {
            200..=299 => match util::parse_json(&resp.body) {
                Some(v) if v.get("data").is_some_and(Value::is_object) => {
                    self.found(item, &v, resp.status)
                }
                _ => self.c(
                    ProviderOutcome::Transient,
                    format!("HTTP {}: malformed body", resp.status),
                ),
            },
            404 => self.c(ProviderOutcome::NotFound, describe(resp)),
            402 => self.c(
                ProviderOutcome::OutOfCredits,
                describe_with(resp, "the PDL account has no matches left"),
            ),
            429 => self.c(
                ProviderOutcome::RateLimited {
                    retry_after: util::retry_after(resp).or_else(|| reset_wait(resp)),
                },
                describe(resp),
            ),
            400 | 422 => self.c(ProviderOutcome::InvalidInput, describe(resp)),
            401 | 403 => self.c(
                ProviderOutcome::AuthError,
                describe_with(resp, "check the PDL API key"),
            ),
            500..=599 => self.c(ProviderOutcome::Transient, describe(resp)),
            _ => self.c(
                ProviderOutcome::Transient,
                describe_with(resp, "unexpected answer from People Data Labs"),
            ),
        }
    }

    fn found(&self, item: Option<&FindItem<'_>>, v: &Value, status: u16) -> Classified {
        let Some(data) = v.get("data") else {
            return self.c(
                ProviderOutcome::Transient,
                format!("HTTP {status}: malformed body"),
            );
        };
        if CONTACT_FIELDS
            .iter()
            .any(|f| data.get(*f).is_some_and(Value::is_boolean))
        {
            return self.c(
                ProviderOutcome::AuthError,
                format!(
                    "HTTP {status}: the PDL key is on a free plan, which returns true/false instead of contact values; use a paid key"
                ),
            );
        }
        let likelihood = v
            .get("likelihood")
            .and_then(Value::as_i64)
            .map_or_else(String::new, |l| format!(" (likelihood {l})"));
        let asked = item.map_or(self.supplies, |it| it.channels.intersection(self.supplies));
        let mut values = Vec::new();
        let mut push = |c: Channel, value: Option<&str>| {
            if asked.contains(c)
                && let Some(value) = value
            {
                values.push(ValueCandidate::new(c, value, Verification::Unknown));
            }
        };
        push(Channel::WorkEmail, util::str_at(data, "/work_email"));
        push(
            Channel::PersonalEmail,
            util::str_at(data, "/personal_emails/0"),
        );
        push(
            Channel::Phone,
            util::str_at(data, "/mobile_phone").or_else(|| util::str_at(data, "/phone_numbers/0")),
        );
        push(Channel::LinkedinUrl, util::str_at(data, "/linkedin_url"));
        if values.is_empty() {
            return self.c(
                ProviderOutcome::NotFound,
                format!("HTTP {status}: person matched{likelihood} but without {asked}"),
            );
        }
        let what = values
            .iter()
            .map(|c| c.channel.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        self.c(
            ProviderOutcome::Found {
                values,
                provider_cost: None,
            },
            format!("HTTP {status}: found {what}{likelihood}"),
        )
    }
}

/// The wait `x-ratelimit-reset` announces (see the module docs).
fn reset_wait(resp: &HttpResponse) -> Option<Duration> {
    let raw = resp.header("x-ratelimit-reset")?.trim();
    let now_ms = resp
        .header("date")
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d.trim()).ok())
        .map(|d| d.timestamp_millis());
    let parts: Vec<String> = match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(m)) => m.values().filter_map(util::scalar_text).collect(),
        _ => vec![raw.trim_matches('"').to_string()],
    };
    parts.iter().filter_map(|p| wait_until(p, now_ms)).min()
}

fn wait_until(s: &str, now_ms: Option<i64>) -> Option<Duration> {
    let s = s.trim();
    let at_ms = if let Ok(n) = s.parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        if n >= 1.0e12 {
            n as i64
        } else if n >= 1.0e9 {
            (n * 1000.0) as i64
        } else {
            return util::secs_to_duration(n);
        }
    } else {
        parse_date_ms(s)?
    };
    let wait_ms = at_ms.checked_sub(now_ms?)?.max(0);
    util::secs_to_duration(wait_ms as f64 / 1000.0)
}

fn parse_date_ms(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDateTime};
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(s) {
        return Some(d.timestamp_millis());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(d) = DateTime::parse_from_str(s, f) {
            return Some(d.timestamp_millis());
        }
    }
    // Without an offset: the reference says the resets are UTC.
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(s, f) {
            return Some(d.and_utc().timestamp_millis());
        }
    }
    None
}

/// `x-ratelimit-remaining` at zero: a plain count, or PDL's JSON object of
/// per-window counts (`{"minute": 0}`) where any window at zero counts.
fn quota_exhausted(resp: &HttpResponse) -> bool {
    let Some(raw) = resp.header("x-ratelimit-remaining").map(str::trim) else {
        return false;
    };
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(m)) => m.values().any(|v| v.as_f64() == Some(0.0)),
        Ok(v) => v.as_f64() == Some(0.0),
        Err(_) => raw == "0",
    }
}

impl Finder for Pdl {
    fn id(&self) -> &str {
        &self.id
    }

    fn supplies(&self) -> ChannelSet {
        self.supplies
    }

    fn accepts(&self, id: &Identity) -> bool {
        util::profile_email_or_name_and_company(id)
    }

    fn find_request(
        &self,
        items: &[FindItem<'_>],
        _callback_url: Option<&str>,
    ) -> Result<HttpRequest, AdapterError> {
        let item = util::single_item(items, PROVIDER, NEEDS, |id| self.accepts(id))?;
        let id = item.identity;
        let mut q = Query::new();
        q.opt("profile", filled(&id.linkedin_url))
            .opt("email", filled(&id.email));
        if filled(&id.first_name).is_some() && filled(&id.last_name).is_some() {
            q.opt("first_name", filled(&id.first_name))
                .opt("last_name", filled(&id.last_name));
        } else {
            q.opt("name", filled(&id.full_name));
        }
        q.opt(
            "company",
            filled(&id.domain)
                .map(util::bare)
                .or_else(|| filled(&id.company_name)),
        )
        .set("min_likelihood", self.min_likelihood.to_string())
        .set("titlecase", "false");
        Ok(HttpRequest {
            method: Method::Get,
            url: q.url(&self.base_url, "/v5/person/enrich"),
            headers: util::json_headers(
                Method::Get,
                vec![("x-api-key".to_string(), self.key.expose().to_string())],
            ),
            body: None,
            endpoint: "GET /v5/person/enrich",
        })
    }

    fn classify_find(&self, items: &[FindItem<'_>], resp: &HttpResponse) -> BatchOutcome {
        BatchOutcome::All(self.classify(items.first(), resp))
    }

    fn quota_pause(&self, resp: &HttpResponse) -> Option<Duration> {
        quota_exhausted(resp).then(|| reset_wait(resp)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::util::testing::*;
    use Channel::*;

    const CONNECTOR: &str = include_str!("../../connectors/pdl.toml");
    const FOUND: &str = include_str!("../../fixtures/providers/pdl/enrich_found.json");
    const NO_MOBILE: &str =
        include_str!("../../fixtures/providers/pdl/enrich_found_no_mobile.json");
    const FREE: &str = include_str!("../../fixtures/providers/pdl/free_plan.json");
    const NOT_FOUND: &str = include_str!("../../fixtures/providers/pdl/not_found.json");
    const PAYMENT: &str = include_str!("../../fixtures/providers/pdl/payment_required.json");
    const RATE: &str = include_str!("../../fixtures/providers/pdl/rate_limited.json");
    const INVALID: &str = include_str!("../../fixtures/providers/pdl/invalid_request.json");
    const UNAUTH: &str = include_str!("../../fixtures/providers/pdl/unauthorized.json");
    const MALFORMED: &str = include_str!("../../fixtures/providers/pdl/malformed.json");

    fn pdl() -> Pdl {
        Pdl::new(&account(CONNECTOR, "https://sim.test")).unwrap()
    }

    fn one(p: &Pdl, cs: &[Channel], r: &HttpResponse) -> Classified {
        let id = ada();
        match p.classify_find(&[item("1", &id, cs)], r) {
            BatchOutcome::All(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request() {
        let mut id = ada();
        id.linkedin_url = Some("https://www.linkedin.com/in/ada-lovelace".into());
        id.email = Some("ada+crm@analytical.io".into());
        let req = pdl()
            .find_request(&[item("1", &id, &[Phone])], None)
            .unwrap();
        assert_eq!(
            req.url,
            "https://sim.test/v5/person/enrich?profile=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fada-lovelace\
             &email=ada%2Bcrm%40analytical.io&first_name=Ada&last_name=Lovelace&company=analytical.io\
             &min_likelihood=6&titlecase=false"
        );
        assert_eq!(req.endpoint, "GET /v5/person/enrich");
        assert_eq!(header(&req.headers, "x-api-key"), Some(KEY));
        assert!(!req.url.contains(KEY) && !format!("{req:?}{:?}", pdl()).contains(KEY));

        let p = Pdl::new(&with_option(
            account(CONNECTOR, "https://sim.test"),
            "min_likelihood",
            9.into(),
        ))
        .unwrap();
        let id = Identity {
            full_name: Some("Grace Hopper".into()),
            company_name: Some("US Navy".into()),
            ..Identity::default()
        };
        let req = p
            .find_request(&[item("1", &id, &[WorkEmail])], None)
            .unwrap();
        assert_eq!(
            req.url,
            "https://sim.test/v5/person/enrich?name=Grace%20Hopper&company=US%20Navy&min_likelihood=9&titlecase=false"
        );
        let nobody = Identity {
            full_name: Some("Grace Hopper".into()),
            ..Identity::default()
        };
        assert!(!p.accepts(&nobody));
        assert!(matches!(
            p.find_request(&[item("1", &nobody, &[WorkEmail])], None),
            Err(AdapterError::MissingInput { .. })
        ));
        for bad in [
            toml::Value::from(11),
            toml::Value::from(-1),
            toml::Value::from(6.5),
        ] {
            let e = Pdl::new(&with_option(
                account(CONNECTOR, "https://sim.test"),
                "min_likelihood",
                bad,
            ))
            .unwrap_err();
            assert!(
                e.message
                    .contains("`min_likelihood` must be an integer from 0 to 10"),
                "{e}"
            );
        }
    }

    #[test]
    fn found_values_are_unknown_and_raw() {
        let c = one(
            &pdl(),
            &[WorkEmail, PersonalEmail, Phone, LinkedinUrl],
            &resp(200, FOUND),
        );
        let ProviderOutcome::Found {
            values,
            provider_cost,
        } = c.outcome
        else {
            panic!("{}", c.detail)
        };
        assert_eq!(provider_cost, None);
        assert_eq!(
            values,
            vec![
                ValueCandidate::new(
                    WorkEmail,
                    "ada.lovelace@analytical.io",
                    Verification::Unknown
                ),
                ValueCandidate::new(PersonalEmail, "ada1815@gmail.com", Verification::Unknown),
                ValueCandidate::new(Phone, "+442079460958", Verification::Unknown),
                ValueCandidate::new(
                    LinkedinUrl,
                    "linkedin.com/in/ada-lovelace",
                    Verification::Unknown
                ),
            ]
        );
        assert!(c.detail.contains("likelihood 9"), "{}", c.detail);
        // Phone falls back to phone_numbers[0].
        let c = one(&pdl(), &[Phone], &resp(200, NO_MOBILE));
        let ProviderOutcome::Found { values, .. } = c.outcome else {
            panic!("{}", c.detail)
        };
        assert_eq!(
            values,
            vec![ValueCandidate::new(
                Phone,
                "+14155550123",
                Verification::Unknown
            )]
        );
        // A match without the asked channel.
        let c = one(&pdl(), &[PersonalEmail], &resp(200, NO_MOBILE));
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
    }

    #[test]
    fn free_plan_booleans_are_an_auth_error() {
        let c = one(&pdl(), &[WorkEmail], &resp(200, FREE));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        assert!(
            c.detail.contains("free plan") && c.detail.contains("true/false"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn errors() {
        let p = pdl();
        let c = one(&p, &[WorkEmail], &resp(404, NOT_FOUND));
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
        assert!(c.detail.starts_with("HTTP 404 not_found:"), "{}", c.detail);
        let c = one(&p, &[WorkEmail], &resp(402, PAYMENT));
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        assert!(c.detail.contains("payment_required"), "{}", c.detail);
        let c = one(&p, &[WorkEmail], &resp(400, INVALID));
        assert_eq!(c.outcome, ProviderOutcome::InvalidInput);
        let c = one(&p, &[WorkEmail], &resp(401, UNAUTH));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        let c = one(&p, &[WorkEmail], &resp(403, UNAUTH));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        let c = one(&p, &[WorkEmail], &resp(503, ""));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        let c = one(&p, &[WorkEmail], &resp(200, MALFORMED));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        assert_eq!(c.detail, "HTTP 200: malformed body");
    }

    #[test]
    fn rate_limit_reset_is_read_when_parseable() {
        let p = pdl();
        let rl = |headers: &[(&str, &str)]| match one(&p, &[WorkEmail], &resp_h(429, headers, RATE))
            .outcome
        {
            ProviderOutcome::RateLimited { retry_after } => retry_after,
            other => panic!("{other:?}"),
        };
        let date = ("date", "Tue, 13 Jun 2023 15:47:00 GMT");
        assert_eq!(rl(&[]), None);
        assert_eq!(
            rl(&[("x-ratelimit-reset", "12")]),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            rl(&[("x-ratelimit-reset", "1686671240"), date]),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            rl(&[("x-ratelimit-reset", "1686671240")]),
            None,
            "absolute reset without a date header"
        );
        assert_eq!(
            rl(&[("x-ratelimit-reset", "2023-06-13T15:47:30Z"), date]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            rl(&[("x-ratelimit-reset", "2023-06-13 15:47:45.5+00:00"), date]),
            Some(Duration::from_millis(45_500))
        );
        assert_eq!(
            rl(&[
                (
                    "x-ratelimit-reset",
                    r#"{"minute": "2023-06-13 15:48:00", "day": "2023-06-14 00:00:00"}"#
                ),
                date
            ]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            rl(&[("x-ratelimit-reset", "2023-06-13T15:46:00Z"), date]),
            Some(Duration::ZERO)
        );
        assert_eq!(rl(&[("x-ratelimit-reset", "soon"), date]), None);
        let p = pdl();
        let quota = |remaining: &str| {
            p.quota_pause(&resp_h(
                200,
                &[
                    ("x-ratelimit-remaining", remaining),
                    ("x-ratelimit-reset", "12"),
                ],
                "{}",
            ))
        };
        assert_eq!(quota(r#"{"minute":0}"#), Some(Duration::from_secs(12)));
        assert_eq!(quota("0"), Some(Duration::from_secs(12)));
        assert_eq!(quota(r#"{"minute":5}"#), None);
        assert_eq!(quota("garbage"), None);
        assert_eq!(
            rl(&[("x-ratelimit-reset", "3"), ("retry-after", "7")]),
            Some(Duration::from_secs(7))
        );
    }
}
