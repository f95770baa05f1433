//! Hunter.io Email Finder (reference/providers.md §1.3):
//! `GET /email-finder?domain=…&first_name=…&last_name=…&api_key=…`,
//! synchronous, one person per request. The key travels in the query string:
//! the URL is never logged, only the `endpoint` label.
//!
//! Decisions where the reference is silent:
//! - **Inputs.** `domain`, else `company`; `first_name` + `last_name`, else
//!   `full_name`. A lead with neither (name and company) but with a LinkedIn
//!   profile URL is asked by `linkedin_handle` (the `/in/<handle>` slug).
//! - **`linkedin_url`** can be supplied (Hunter returns `data.linkedin_url`
//!   next to a found email) when the connector lists it; the shipped
//!   connector does not, because the search is billed for the email.
//! - **Statuses.** `verification.status` `valid` → verified, `accept_all` →
//!   catch-all, `invalid` → invalid; no status but `data.accept_all: true` →
//!   catch-all; anything else → unknown.
//! - **202** ("still processing, retry the same call") →
//!   `Pending { job_id: REPEAT_REQUEST }`, `retry_after` from `Retry-After`
//!   else 10 s (Hunter's default `max_duration`): the engine re-issues the
//!   same find request; Hunter has nothing to poll (`poll_request` is `None`).
//! - **403 is a rate limit, 429 is the monthly quota** (out of credits), as
//!   Hunter documents; 451 → compliance blocked (the person asked Hunter to
//!   stop processing their data).
//! - **Options:** `max_duration` (integer 3..=20 seconds; Hunter's default
//!   10): how long Hunter may spend on a search before answering.

use std::time::Duration;

use serde_json::Value;

use super::def::{Account, BuildError};
use super::util::{self, Query, classified, describe, describe_with, filled};
use super::{
    AdapterError, BatchOutcome, FindItem, Finder, HttpRequest, HttpResponse, Method, REPEAT_REQUEST,
};
use crate::core::channel::{Channel, ChannelSet};
use crate::core::lead::Identity;
use crate::core::outcome::{Classified, ProviderOutcome};
use crate::core::value::{ValueCandidate, Verification};
use crate::secret::Secret;

const PROVIDER: &str = "hunter";
const NEEDS: &str =
    "a name (first + last, or full) with (domain or company_name), or a LinkedIn profile URL";
const RETRY_PENDING: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Hunter {
    id: String,
    base_url: String,
    key: Secret,
    supplies: ChannelSet,
    max_duration: Option<i64>,
}

/// `ada-lovelace` from `https://www.linkedin.com/in/ada-lovelace/`.
fn linkedin_handle(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("/in/")?;
    let handle = rest.split(['/', '?', '#']).next()?.trim();
    (!handle.is_empty()).then_some(handle)
}

fn name_and_company(id: &Identity) -> bool {
    let named = (filled(&id.first_name).is_some() && filled(&id.last_name).is_some())
        || filled(&id.full_name).is_some();
    named && (filled(&id.domain).is_some() || filled(&id.company_name).is_some())
}

impl Hunter {
    pub fn new(account: &Account) -> Result<Self, BuildError> {
        util::check_base_url(account)?;
        util::check_option_keys(account, &["max_duration"])?;
        let capable: ChannelSet = [Channel::WorkEmail, Channel::LinkedinUrl]
            .into_iter()
            .collect();
        let supplies = util::check_supplies(account, capable, &|_| {
            "the Hunter Email Finder does not return".into()
        })?;
        Ok(Hunter {
            id: account.connector.id.clone(),
            base_url: account.base_url.trim().to_string(),
            key: account.api_key.clone(),
            supplies,
            max_duration: util::int_option(account, "max_duration", 3..=20)?,
        })
    }

    fn c(&self, outcome: ProviderOutcome, detail: String) -> Classified {
        classified(outcome, detail, &self.key)
    }

    fn classify(&self, item: Option<&FindItem<'_>>, resp: &HttpResponse) -> Classified {
        match resp.status {
            202 => self.c(
                ProviderOutcome::Pending {
                    job_id: REPEAT_REQUEST.to_string(),
                    retry_after: Some(util::retry_after(resp).unwrap_or(RETRY_PENDING)),
                },
                "HTTP 202: Hunter is still searching; the same request will be sent again"
                    .to_string(),
            ),
            200..=299 => match util::parse_json(&resp.body)
                .as_ref()
                .and_then(|v| v.get("data"))
                .filter(|d| d.is_object())
            {
                Some(data) => self.found(item, data, resp.status),
                None => self.c(
                    ProviderOutcome::Transient,
                    format!("HTTP {}: malformed body", resp.status),
                ),
            },
            401 => self.c(
                ProviderOutcome::AuthError,
                describe_with(resp, "check the Hunter API key"),
            ),
            403 => self.c(
                ProviderOutcome::RateLimited {
                    retry_after: util::retry_after(resp),
                },
                describe_with(resp, "Hunter's per-second/per-minute rate limit"),
            ),
            429 => self.c(
                ProviderOutcome::OutOfCredits,
                describe_with(resp, "the Hunter account's monthly quota is used up"),
            ),
            451 => self.c(
                ProviderOutcome::ComplianceBlocked,
                describe_with(resp, "Hunter may not process this person's data"),
            ),
            400 | 422 => self.c(ProviderOutcome::InvalidInput, describe(resp)),
            500..=599 => self.c(ProviderOutcome::Transient, describe(resp)),
            _ => self.c(
                ProviderOutcome::Transient,
                describe_with(resp, "unexpected answer from Hunter"),
            ),
        }
    }

    fn found(&self, item: Option<&FindItem<'_>>, data: &Value, status: u16) -> Classified {
        let asked = item.map_or(self.supplies, |it| it.channels.intersection(self.supplies));
        let mut values = Vec::new();
        let mut detail = Vec::new();
        if asked.contains(Channel::WorkEmail)
            && let Some(email) = util::str_at(data, "/email")
        {
            let st = util::str_at(data, "/verification/status");
            let accept_all = data.get("accept_all").and_then(Value::as_bool) == Some(true);
            let (verification, word) = match st.map(str::to_ascii_lowercase).as_deref() {
                Some("valid") => (Verification::Verified, st),
                Some("accept_all") => (Verification::CatchAll, st),
                Some("invalid") => (Verification::Invalid, st),
                None if accept_all => (Verification::CatchAll, Some("accept_all")),
                _ => (Verification::Unknown, st),
            };
            let mut c = ValueCandidate::new(Channel::WorkEmail, email, verification);
            c.provider_status = word.map(str::to_string);
            let score = data
                .get("score")
                .and_then(Value::as_i64)
                .map(|s| format!(", score {s}"))
                .unwrap_or_default();
            detail.push(format!(
                "work_email ({}{score})",
                word.unwrap_or("no status")
            ));
            values.push(c);
        }
        if asked.contains(Channel::LinkedinUrl)
            && let Some(url) = util::str_at(data, "/linkedin_url")
        {
            values.push(ValueCandidate::new(
                Channel::LinkedinUrl,
                url,
                Verification::Unknown,
            ));
            detail.push("linkedin_url".to_string());
        }
        if values.is_empty() {
            return self.c(
                ProviderOutcome::NotFound,
                format!("HTTP {status}: Hunter found no email for this person"),
            );
        }
        self.c(
            ProviderOutcome::Found {
                values,
                provider_cost: None,
            },
            format!("HTTP {status}: found {}", detail.join(", ")),
        )
    }
}

impl Finder for Hunter {
    fn id(&self) -> &str {
        &self.id
    }

    fn supplies(&self) -> ChannelSet {
        self.supplies
    }

    fn accepts(&self, id: &Identity) -> bool {
        name_and_company(id) || filled(&id.linkedin_url).and_then(linkedin_handle).is_some()
    }

    fn find_request(
        &self,
        items: &[FindItem<'_>],
        _callback_url: Option<&str>,
    ) -> Result<HttpRequest, AdapterError> {
        let item = util::single_item(items, PROVIDER, NEEDS, |id| self.accepts(id))?;
        let id = item.identity;
        let mut q = Query::new();
        if name_and_company(id) {
            match filled(&id.domain) {
                Some(d) => q.set("domain", util::bare(d)),
                None => q.opt("company", filled(&id.company_name)),
            };
            match (filled(&id.first_name), filled(&id.last_name)) {
                (Some(f), Some(l)) => q.set("first_name", f).set("last_name", l),
                _ => q.opt("full_name", filled(&id.full_name)),
            };
        } else if let Some(h) = filled(&id.linkedin_url).and_then(linkedin_handle) {
            q.set("linkedin_handle", h);
        } else {
            return Err(AdapterError::MissingInput {
                provider: PROVIDER,
                needs: NEEDS,
            });
        }
        if let Some(d) = self.max_duration {
            q.set("max_duration", d.to_string());
        }
        q.set("api_key", self.key.expose());
        Ok(HttpRequest {
            method: Method::Get,
            url: q.url(&self.base_url, "/email-finder"),
            headers: util::json_headers(Method::Get, Vec::new()),
            body: None,
            endpoint: "GET /email-finder",
        })
    }

    fn classify_find(&self, items: &[FindItem<'_>], resp: &HttpResponse) -> BatchOutcome {
        BatchOutcome::All(self.classify(items.first(), resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::util::testing::*;
    use Channel::*;

    const CONNECTOR: &str = include_str!("../../connectors/hunter.toml");
    const FOUND: &str = include_str!("../../fixtures/providers/hunter/finder_found.json");
    const ACCEPT_ALL: &str = include_str!("../../fixtures/providers/hunter/finder_accept_all.json");
    const NOT_FOUND: &str = include_str!("../../fixtures/providers/hunter/finder_not_found.json");
    const UNAUTHORIZED: &str = include_str!("../../fixtures/providers/hunter/unauthorized.json");
    const RATE_LIMITED: &str =
        include_str!("../../fixtures/providers/hunter/rate_limited_403.json");
    const QUOTA: &str = include_str!("../../fixtures/providers/hunter/usage_exceeded_429.json");
    const LEGAL: &str = include_str!("../../fixtures/providers/hunter/claimed_email_451.json");
    const WRONG_PARAMS: &str = include_str!("../../fixtures/providers/hunter/wrong_params.json");
    const MALFORMED: &str = include_str!("../../fixtures/providers/hunter/malformed.json");

    fn hunter() -> Hunter {
        Hunter::new(&account(CONNECTOR, "https://sim.test/v2")).unwrap()
    }

    fn with_linkedin() -> Hunter {
        let c = CONNECTOR.replace(
            "supplies = [\"work_email\"]",
            "supplies = [\"work_email\", \"linkedin_url\"]",
        );
        assert_ne!(c, CONNECTOR);
        Hunter::new(&account(&c, "https://sim.test/v2")).unwrap()
    }

    fn one(h: &Hunter, cs: &[Channel], r: &HttpResponse) -> Classified {
        let id = ada();
        match h.classify_find(&[item("1", &id, cs)], r) {
            BatchOutcome::All(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_query_is_encoded_and_key_stays_out_of_labels() {
        let mut id = ada();
        id.first_name = Some("José María".into());
        let h = Hunter::new(&with_option(
            account(CONNECTOR, "https://sim.test/v2/"),
            "max_duration",
            15.into(),
        ))
        .unwrap();
        let req = h
            .find_request(&[item("1", &id, &[WorkEmail])], None)
            .unwrap();
        assert_eq!(
            req.url,
            format!(
                "https://sim.test/v2/email-finder?domain=analytical.io&first_name=Jos%C3%A9%20Mar%C3%ADa\
                 &last_name=Lovelace&max_duration=15&api_key={KEY}"
            )
        );
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.endpoint, "GET /email-finder");
        assert!(!req.endpoint.contains(KEY));
        assert!(!format!("{req:?} {h:?}").contains(KEY));

        // company= without a domain; full_name without parts.
        let id = Identity {
            full_name: Some("Grace Hopper".into()),
            company_name: Some("US Navy".into()),
            ..Identity::default()
        };
        let req = hunter()
            .find_request(&[item("1", &id, &[WorkEmail])], None)
            .unwrap();
        assert_eq!(
            req.url,
            format!(
                "https://sim.test/v2/email-finder?company=US%20Navy&full_name=Grace%20Hopper&api_key={KEY}"
            )
        );
        // LinkedIn handle only.
        let id = Identity {
            linkedin_url: Some("https://www.linkedin.com/in/grace-hopper".into()),
            ..Identity::default()
        };
        assert!(hunter().accepts(&id));
        let req = hunter()
            .find_request(&[item("1", &id, &[WorkEmail])], None)
            .unwrap();
        assert_eq!(
            req.url,
            format!("https://sim.test/v2/email-finder?linkedin_handle=grace-hopper&api_key={KEY}")
        );
        let nobody = Identity {
            first_name: Some("A".into()),
            ..Identity::default()
        };
        assert!(!hunter().accepts(&nobody));
        assert!(matches!(
            hunter().find_request(&[item("1", &nobody, &[WorkEmail])], None),
            Err(AdapterError::MissingInput { .. })
        ));
    }

    #[test]
    fn options_are_validated() {
        for bad in [
            toml::Value::from(2),
            toml::Value::from(21),
            toml::Value::from("10"),
        ] {
            let e = Hunter::new(&with_option(
                account(CONNECTOR, "https://x.test"),
                "max_duration",
                bad,
            ))
            .unwrap_err();
            assert!(
                e.message
                    .contains("`max_duration` must be an integer from 3 to 20"),
                "{e}"
            );
        }
        let e = Hunter::new(&with_option(
            account(CONNECTOR, "https://x.test"),
            "timeout",
            1.into(),
        ))
        .unwrap_err();
        assert!(e.message.contains("accepts: max_duration"), "{e}");
        let phone = CONNECTOR.replace("supplies = [\"work_email\"]", "supplies = [\"phone\"]");
        assert!(Hunter::new(&account(&phone, "https://x.test")).is_err());
    }

    #[test]
    fn found_and_statuses() {
        let c = one(&hunter(), &[WorkEmail], &resp(200, FOUND));
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
                ValueCandidate::new(WorkEmail, "patrick@stripe.com", Verification::Verified)
                    .status("valid")
            ]
        );
        assert!(c.detail.contains("score 97"), "{}", c.detail);

        let c = one(&hunter(), &[WorkEmail], &resp(200, ACCEPT_ALL));
        let ProviderOutcome::Found { values, .. } = c.outcome else {
            panic!()
        };
        assert_eq!(values[0].verification, Verification::CatchAll);

        let c = one(
            &hunter(),
            &[WorkEmail],
            &resp(
                200,
                r#"{"data":{"email":"a@b.io","accept_all":true,"verification":{"status":null}}}"#,
            ),
        );
        let ProviderOutcome::Found { values, .. } = c.outcome else {
            panic!()
        };
        assert_eq!(values[0].verification, Verification::CatchAll);
        let c = one(
            &hunter(),
            &[WorkEmail],
            &resp(
                200,
                r#"{"data":{"email":"a@b.io","verification":{"status":"unknown"}}}"#,
            ),
        );
        let ProviderOutcome::Found { values, .. } = c.outcome else {
            panic!()
        };
        assert_eq!(values[0].verification, Verification::Unknown);

        // LinkedIn only when supplied and asked.
        let c = one(
            &with_linkedin(),
            &[WorkEmail, LinkedinUrl],
            &resp(200, FOUND),
        );
        let ProviderOutcome::Found { values, .. } = c.outcome else {
            panic!()
        };
        assert_eq!(
            values[1],
            ValueCandidate::new(
                LinkedinUrl,
                "https://www.linkedin.com/in/patrickcollison",
                Verification::Unknown
            )
        );

        let c = one(&hunter(), &[WorkEmail], &resp(200, NOT_FOUND));
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
    }

    #[test]
    fn forbidden_is_a_rate_limit_and_too_many_is_the_quota() {
        let h = hunter();
        let c = one(&h, &[WorkEmail], &resp(403, RATE_LIMITED));
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited { retry_after: None }
        );
        assert!(
            c.detail.starts_with("HTTP 403 too_many_requests"),
            "{}",
            c.detail
        );
        let c = one(
            &h,
            &[WorkEmail],
            &resp_h(403, &[("retry-after", "1")], RATE_LIMITED),
        );
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(1))
            }
        );
        let c = one(&h, &[WorkEmail], &resp(429, QUOTA));
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        assert!(c.detail.contains("usage_exceeded"), "{}", c.detail);
    }

    #[test]
    fn other_answers() {
        let h = hunter();
        let c = one(&h, &[WorkEmail], &resp(202, ""));
        assert_eq!(
            c.outcome,
            ProviderOutcome::Pending {
                job_id: REPEAT_REQUEST.into(),
                retry_after: Some(Duration::from_secs(10))
            }
        );
        assert!(h.poll_request(REPEAT_REQUEST).is_none());
        let c = one(&h, &[WorkEmail], &resp(401, UNAUTHORIZED));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        let c = one(&h, &[WorkEmail], &resp(451, LEGAL));
        assert_eq!(c.outcome, ProviderOutcome::ComplianceBlocked);
        let c = one(&h, &[WorkEmail], &resp(400, WRONG_PARAMS));
        assert_eq!(c.outcome, ProviderOutcome::InvalidInput);
        assert!(c.detail.contains("wrong_params"));
        let c = one(&h, &[WorkEmail], &resp(422, WRONG_PARAMS));
        assert_eq!(c.outcome, ProviderOutcome::InvalidInput);
        let c = one(&h, &[WorkEmail], &resp(500, ""));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        let c = one(&h, &[WorkEmail], &resp(200, MALFORMED));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        assert!(c.detail.contains("malformed body"));
        // A key echoed by the provider never reaches the detail.
        let c = one(
            &h,
            &[WorkEmail],
            &resp(
                401,
                &format!(
                    r#"{{"errors":[{{"id":"authentication_failed","code":401,"details":"bad key {KEY}"}}]}}"#
                ),
            ),
        );
        assert!(!c.detail.contains(KEY), "{}", c.detail);
    }
}
