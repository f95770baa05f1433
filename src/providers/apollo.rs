//! Apollo.io people enrichment (reference/providers.md §1.2):
//! `POST /people/match` with every parameter in the query string and the key
//! in the `x-api-key` header; synchronous, one person per request.
//!
//! Decisions where the reference is silent:
//! - **Phones are not supplied.** Apollo reveals phones asynchronously
//!   (`reveal_phone_number=true` needs a `webhook_url`, delivered minutes
//!   later, unsigned). That needs a callback flow for a sync provider; it is
//!   left for later and a connector listing `phone` is rejected.
//! - **Inputs.** Everything the lead has is sent (first/last name, else the
//!   full name as `name`; bare domain; organization name; LinkedIn URL; a
//!   known email): more inputs, better matches. `reveal_personal_emails=true`
//!   only when the personal email is asked (it may cost more).
//! - **Statuses.** `email_status` `verified` → verified; `extrapolated`,
//!   `unverified`, other words or none → unknown (the verifier decides);
//!   `unavailable` or no email → no work-email candidate. The search
//!   placeholder `email_not_unlocked@…` is never a candidate. Personal emails
//!   carry no status → unknown. LinkedIn URLs are reported raw.
//! - **Errors.** 401 (text/plain) → auth; 403 `API_INACCESSIBLE` (or any 403
//!   not about credits) → auth, the detail saying it is the key's scope or the
//!   plan; 422/403 mentioning credits → out of credits; other 400/422 →
//!   invalid input; 429 → rate limited with `retry-after`; 5xx → transient;
//!   a 200 that is not JSON → transient "malformed body".
//! - **No options** (`[providers.<id>.options]` must be empty).

use serde_json::Value;

use super::def::{Account, BuildError};
use super::util::{self, Query, classified, describe, describe_with, filled};
use super::{AdapterError, BatchOutcome, FindItem, Finder, HttpRequest, HttpResponse, Method};
use crate::core::channel::{Channel, ChannelSet};
use crate::core::lead::Identity;
use crate::core::outcome::{Classified, ProviderOutcome};
use crate::core::value::{ValueCandidate, Verification};
use crate::secret::Secret;

const PROVIDER: &str = "apollo";
const NEEDS: &str = "linkedin_url, or email, or a name with (domain or company_name)";

#[derive(Debug)]
pub struct Apollo {
    id: String,
    base_url: String,
    key: Secret,
    supplies: ChannelSet,
}

impl Apollo {
    pub fn new(account: &Account) -> Result<Self, BuildError> {
        util::check_base_url(account)?;
        util::check_option_keys(account, &[])?;
        let capable: ChannelSet = [
            Channel::WorkEmail,
            Channel::PersonalEmail,
            Channel::LinkedinUrl,
        ]
        .into_iter()
        .collect();
        let supplies = util::check_supplies(account, capable, &|c| {
            match c {
            Channel::Phone => "Apollo reveals phones asynchronously by webhook, which this adapter does not support yet".into(),
            _ => "the Apollo adapter cannot supply".into(),
        }
        })?;
        Ok(Apollo {
            id: account.connector.id.clone(),
            base_url: account.base_url.trim().to_string(),
            key: account.api_key.clone(),
            supplies,
        })
    }

    fn c(&self, outcome: ProviderOutcome, detail: String) -> Classified {
        classified(outcome, detail, &self.key)
    }

    fn classify(&self, item: Option<&FindItem<'_>>, resp: &HttpResponse) -> Classified {
        let body_text = String::from_utf8_lossy(&resp.body).to_ascii_lowercase();
        let mentions_credits = body_text.contains("credit");
        match resp.status {
            200..=299 => {
                let Some(v) = util::parse_json(&resp.body).filter(Value::is_object) else {
                    return self.c(
                        ProviderOutcome::Transient,
                        format!("HTTP {}: malformed body", resp.status),
                    );
                };
                self.found(item, &v, resp.status)
            }
            401 => self.c(
                ProviderOutcome::AuthError,
                describe_with(resp, "the Apollo API key is invalid"),
            ),
            403 | 422 if mentions_credits => self.c(
                ProviderOutcome::OutOfCredits,
                describe_with(resp, "the Apollo account is out of credits"),
            ),
            403 => self.c(
                ProviderOutcome::AuthError,
                describe_with(
                    resp,
                    "the API key's scope or the Apollo plan does not include people/match (use a master key or a plan with API access)",
                ),
            ),
            400 | 422 => self.c(ProviderOutcome::InvalidInput, describe(resp)),
            429 => self.c(
                ProviderOutcome::RateLimited {
                    retry_after: util::retry_after(resp),
                },
                describe(resp),
            ),
            500..=599 => self.c(ProviderOutcome::Transient, describe(resp)),
            _ => self.c(
                ProviderOutcome::Transient,
                describe_with(resp, "unexpected answer from Apollo"),
            ),
        }
    }

    fn found(&self, item: Option<&FindItem<'_>>, v: &Value, status: u16) -> Classified {
        let person = v.get("person").filter(|p| p.is_object());
        let Some(person) = person else {
            // A 200 carrying an error instead of a person.
            let (code, msg) = util::code_and_message(v);
            if code.is_some() || msg.is_some() {
                let text = format!(
                    "{} {}",
                    code.as_deref().unwrap_or(""),
                    msg.as_deref().unwrap_or("")
                );
                let outcome = if text.to_ascii_lowercase().contains("credit") {
                    ProviderOutcome::OutOfCredits
                } else {
                    ProviderOutcome::Transient
                };
                return self.c(outcome, format!("HTTP {status}: {}", text.trim()));
            }
            return self.c(
                ProviderOutcome::NotFound,
                format!("HTTP {status}: no person matched"),
            );
        };
        let asked = item.map_or(self.supplies, |it| it.channels.intersection(self.supplies));
        let mut values = Vec::new();

        if asked.contains(Channel::WorkEmail)
            && let Some(email) = util::str_at(person, "/email")
            && !email
                .to_ascii_lowercase()
                .starts_with("email_not_unlocked@")
        {
            let st = util::str_at(person, "/email_status");
            let verification = match st.map(str::to_ascii_lowercase).as_deref() {
                Some("verified") => Some(Verification::Verified),
                Some("unavailable") => None,
                _ => Some(Verification::Unknown),
            };
            if let Some(verification) = verification {
                let mut c = ValueCandidate::new(Channel::WorkEmail, email, verification);
                c.provider_status = st.map(str::to_string);
                values.push(c);
            }
        }
        if asked.contains(Channel::PersonalEmail)
            && let Some(email) = util::str_at(person, "/personal_emails/0")
        {
            values.push(ValueCandidate::new(
                Channel::PersonalEmail,
                email,
                Verification::Unknown,
            ));
        }
        if asked.contains(Channel::LinkedinUrl)
            && let Some(url) = util::str_at(person, "/linkedin_url")
        {
            values.push(ValueCandidate::new(
                Channel::LinkedinUrl,
                url,
                Verification::Unknown,
            ));
        }
        if values.is_empty() {
            let email_status = util::str_at(person, "/email_status").unwrap_or("none");
            return self.c(
                ProviderOutcome::NotFound,
                format!(
                    "HTTP {status}: person matched but no value for {} (email_status {email_status})",
                    asked
                ),
            );
        }
        let what = values
            .iter()
            .map(|c| match &c.provider_status {
                Some(s) => format!("{} ({s})", c.channel),
                None => c.channel.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        self.c(
            ProviderOutcome::Found {
                values,
                provider_cost: None,
            },
            format!("HTTP {status}: found {what}"),
        )
    }
}

impl Finder for Apollo {
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
        if filled(&id.first_name).is_some() && filled(&id.last_name).is_some() {
            q.opt("first_name", filled(&id.first_name))
                .opt("last_name", filled(&id.last_name));
        } else {
            q.opt("name", filled(&id.full_name));
        }
        q.opt("domain", filled(&id.domain).map(util::bare))
            .opt("organization_name", filled(&id.company_name))
            .opt("linkedin_url", filled(&id.linkedin_url))
            .opt("email", filled(&id.email));
        if item.channels.contains(Channel::PersonalEmail)
            && self.supplies.contains(Channel::PersonalEmail)
        {
            q.set("reveal_personal_emails", "true");
        }
        Ok(HttpRequest {
            method: Method::Post,
            url: q.url(&self.base_url, "/people/match"),
            headers: util::json_headers(
                Method::Post,
                vec![
                    ("x-api-key".to_string(), self.key.expose().to_string()),
                    ("cache-control".to_string(), "no-cache".to_string()),
                ],
            ),
            body: None,
            endpoint: "POST /people/match",
        })
    }

    fn classify_find(&self, items: &[FindItem<'_>], resp: &HttpResponse) -> BatchOutcome {
        BatchOutcome::All(self.classify(items.first(), resp))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::providers::util::testing::*;
    use Channel::*;

    const CONNECTOR: &str = include_str!("../../connectors/apollo.toml");
    const FOUND: &str = include_str!("../../fixtures/providers/apollo/match_found.json");
    const EXTRAPOLATED: &str =
        include_str!("../../fixtures/providers/apollo/match_extrapolated.json");
    const UNAVAILABLE: &str =
        include_str!("../../fixtures/providers/apollo/match_unavailable.json");
    const NO_PERSON: &str = include_str!("../../fixtures/providers/apollo/match_not_found.json");
    const UNAUTHORIZED: &str = include_str!("../../fixtures/providers/apollo/unauthorized.txt");
    const INACCESSIBLE: &str =
        include_str!("../../fixtures/providers/apollo/api_inaccessible.json");
    const NO_CREDITS: &str =
        include_str!("../../fixtures/providers/apollo/insufficient_credits.json");
    const UNPROCESSABLE: &str = include_str!("../../fixtures/providers/apollo/unprocessable.json");
    const RATE_LIMITED: &str = include_str!("../../fixtures/providers/apollo/rate_limited.json");
    const MALFORMED: &str = include_str!("../../fixtures/providers/apollo/malformed.json");

    fn apollo() -> Apollo {
        Apollo::new(&account(CONNECTOR, "https://sim.test/api/v1")).unwrap()
    }

    fn one(a: &Apollo, cs: &[Channel], r: &HttpResponse) -> Classified {
        let id = ada();
        match a.classify_find(&[item("7", &id, cs)], r) {
            BatchOutcome::All(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_puts_parameters_in_the_query() {
        let mut id = ada();
        id.domain = Some("www.analytical.io".into());
        id.linkedin_url = Some("https://www.linkedin.com/in/ada-lovelace".into());
        let req = apollo()
            .find_request(&[item("7", &id, &[WorkEmail, PersonalEmail])], None)
            .unwrap();
        assert_eq!(req.method, Method::Post);
        assert_eq!(
            req.url,
            "https://sim.test/api/v1/people/match?first_name=Ada&last_name=Lovelace&domain=analytical.io\
             &organization_name=Analytical%20Engines%20%26%20Co\
             &linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fada-lovelace&reveal_personal_emails=true"
        );
        assert_eq!(req.endpoint, "POST /people/match");
        assert_eq!(header(&req.headers, "x-api-key"), Some(KEY));
        assert!(req.body.is_none());
        assert!(!format!("{req:?} {:?}", apollo()).contains(KEY));
        assert!(!req.url.contains(KEY));

        // Personal email not asked: no reveal flag. Only a full name: `name`.
        let id = Identity {
            full_name: Some("Grace Hopper".into()),
            company_name: Some("Navy".into()),
            ..Identity::default()
        };
        let req = apollo()
            .find_request(&[item("8", &id, &[WorkEmail])], None)
            .unwrap();
        assert_eq!(
            req.url,
            "https://sim.test/api/v1/people/match?name=Grace%20Hopper&organization_name=Navy"
        );
    }

    #[test]
    fn accepts_and_refusals() {
        let a = apollo();
        assert!(a.accepts(&ada()));
        assert!(a.accepts(&Identity {
            email: Some("a@b.io".into()),
            ..Identity::default()
        }));
        assert!(a.accepts(&Identity {
            linkedin_url: Some("https://www.linkedin.com/in/x".into()),
            ..Identity::default()
        }));
        let name_only = Identity {
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            ..Identity::default()
        };
        assert!(!a.accepts(&name_only));
        assert!(matches!(
            a.find_request(&[item("1", &name_only, &[WorkEmail])], None),
            Err(AdapterError::MissingInput { .. })
        ));
        let id = ada();
        assert!(matches!(
            a.find_request(
                &[item("1", &id, &[WorkEmail]), item("2", &id, &[WorkEmail])],
                None
            ),
            Err(AdapterError::BatchTooLarge { max: 1, got: 2, .. })
        ));
        let e = Apollo::new(&with_option(
            account(CONNECTOR, "https://x.test"),
            "waterfall",
            true.into(),
        ))
        .unwrap_err();
        assert!(
            e.message.contains("unknown option `waterfall`") && e.message.contains("no options"),
            "{e}"
        );
        let phone = CONNECTOR.replace(
            "supplies = [\"work_email\"",
            "supplies = [\"phone\", \"work_email\"",
        );
        let e = Apollo::new(&account(&phone, "https://x.test")).unwrap_err();
        assert!(e.message.contains("asynchronously"), "{e}");
    }

    #[test]
    fn found_person_gives_asked_channels() {
        let c = one(
            &apollo(),
            &[WorkEmail, PersonalEmail, LinkedinUrl],
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
                    Verification::Verified
                )
                .status("verified"),
                ValueCandidate::new(PersonalEmail, "ada1815@gmail.com", Verification::Unknown),
                ValueCandidate::new(
                    LinkedinUrl,
                    "http://www.linkedin.com/in/ada-lovelace",
                    Verification::Unknown
                ),
            ]
        );
        // Only what was asked.
        let c = one(&apollo(), &[LinkedinUrl], &resp(200, FOUND));
        let ProviderOutcome::Found { values, .. } = c.outcome else {
            panic!()
        };
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].channel, LinkedinUrl);
    }

    #[test]
    fn email_statuses() {
        let c = one(&apollo(), &[WorkEmail], &resp(200, EXTRAPOLATED));
        let ProviderOutcome::Found { values, .. } = c.outcome else {
            panic!()
        };
        assert_eq!(values[0].verification, Verification::Unknown);
        assert_eq!(values[0].provider_status.as_deref(), Some("extrapolated"));

        let c = one(&apollo(), &[WorkEmail], &resp(200, UNAVAILABLE));
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
        assert!(c.detail.contains("unavailable"), "{}", c.detail);
        // ...but its LinkedIn URL is still there.
        let c = one(
            &apollo(),
            &[WorkEmail, LinkedinUrl],
            &resp(200, UNAVAILABLE),
        );
        let ProviderOutcome::Found { values, .. } = c.outcome else {
            panic!()
        };
        assert_eq!(
            values.iter().map(|v| v.channel).collect::<Vec<_>>(),
            vec![LinkedinUrl]
        );
        let c = one(
            &apollo(),
            &[WorkEmail],
            &resp(
                200,
                r#"{"person":{"email":"email_not_unlocked@domain.com","email_status":"verified"}}"#,
            ),
        );
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
    }

    #[test]
    fn error_shapes() {
        let a = apollo();
        let c = one(&a, &[WorkEmail], &resp(200, NO_PERSON));
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
        let c = one(
            &a,
            &[WorkEmail],
            &resp_h(401, &[("content-type", "text/plain")], UNAUTHORIZED),
        );
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        assert!(
            c.detail
                .starts_with("HTTP 401: \"Invalid access credentials."),
            "{}",
            c.detail
        );
        let c = one(&a, &[WorkEmail], &resp(403, INACCESSIBLE));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        assert!(
            c.detail.contains("API_INACCESSIBLE") && c.detail.contains("plan"),
            "{}",
            c.detail
        );
        let c = one(&a, &[WorkEmail], &resp(422, NO_CREDITS));
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        let c = one(
            &a,
            &[WorkEmail],
            &resp(403, r#"{"error":"You have run out of export credits"}"#),
        );
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        let c = one(&a, &[WorkEmail], &resp(422, UNPROCESSABLE));
        assert_eq!(c.outcome, ProviderOutcome::InvalidInput);
        let c = one(&a, &[WorkEmail], &resp(400, UNPROCESSABLE));
        assert_eq!(c.outcome, ProviderOutcome::InvalidInput);
        let c = one(
            &a,
            &[WorkEmail],
            &resp_h(429, &[("retry-after", "42")], RATE_LIMITED),
        );
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(42))
            }
        );
        assert!(c.detail.contains("600 times per hour"), "{}", c.detail);
        let c = one(&a, &[WorkEmail], &resp(429, RATE_LIMITED));
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited { retry_after: None }
        );
        let c = one(&a, &[WorkEmail], &resp(502, "<html>bad gateway</html>"));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        let c = one(&a, &[WorkEmail], &resp(200, MALFORMED));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        assert_eq!(c.detail, "HTTP 200: malformed body");
        let c = one(
            &a,
            &[WorkEmail],
            &resp(
                200,
                r#"{"error":"Insufficient credits. Please upgrade your plan."}"#,
            ),
        );
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        // Garbage never panics.
        let _ = one(
            &a,
            &[WorkEmail],
            &resp(
                200,
                r#"{"person":{"email":5,"personal_emails":"x","linkedin_url":[]}}"#,
            ),
        );
        let _ = one(&a, &[WorkEmail], &resp(200, "[]"));
    }
}
