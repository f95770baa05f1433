//! ZeroBounce single validation (reference/providers.md §1.12):
//! `GET /validate?api_key=…&email=…&ip_address=`, a [`Verifier`]. The key
//! travels in the query string: the URL is never logged, only the
//! `endpoint` label.
//!
//! Decisions where the reference is silent:
//! - **Statuses.** `valid` → verified; `catch-all` → catch-all; `invalid`,
//!   `spamtrap`, `abuse`, `do_not_mail` → invalid; `unknown` and any other
//!   word → unknown. `provider_status` is `status/sub_status`, or just
//!   `status` when `sub_status` is empty.
//! - **HTTP 200 + `{"error": "..."}`.** ZeroBounce's message, "Invalid API key
//!   or your account ran out of credits", does not say which: it is reported
//!   as an auth error (someone must look at the account either way) with the
//!   message as the detail. A message that mentions credits and not the key
//!   is reported as out of credits.
//! - **403 is "API Shield"** (too many bad requests), not an auth problem:
//!   rate limited. 429 waits `Retry-After`, else 60 s (ZeroBounce blocks for a
//!   minute when the per-10-second limit is exceeded).
//! - **Cost.** The answer has no price: `provider_cost` is `None`, the engine
//!   prices the check from the connector's `cost.check`.
//! - **No options.**

use std::time::Duration;

use serde_json::Value;

use super::def::{Account, BuildError};
use super::util::{self, Query, describe, describe_with};
use super::{AdapterError, HttpRequest, HttpResponse, Method, Verifier, VerifyOutcome};
use crate::core::outcome::ProviderOutcome;
use crate::core::value::Verification;
use crate::secret::Secret;

const PROVIDER: &str = "zerobounce";
/// ZeroBounce blocks for one minute after the per-10-second limit.
const BLOCK_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ZeroBounce {
    id: String,
    base_url: String,
    key: Secret,
}

impl ZeroBounce {
    pub fn new(account: &Account) -> Result<Self, BuildError> {
        util::check_base_url(account)?;
        util::check_option_keys(account, &[])?;
        if !account.connector.supplies.is_empty() {
            return Err(BuildError::new(
                account,
                "supplies must be empty: a verifier checks emails, it supplies no channel",
            ));
        }
        Ok(ZeroBounce {
            id: account.connector.id.clone(),
            base_url: account.base_url.trim().to_string(),
            key: account.api_key.clone(),
        })
    }

    fn failed(&self, outcome: ProviderOutcome, detail: String) -> VerifyOutcome {
        VerifyOutcome::Failed(util::classified(outcome, detail, &self.key))
    }
}

fn verification(status: &str) -> Verification {
    match status.to_ascii_lowercase().as_str() {
        "valid" => Verification::Verified,
        "catch-all" | "catch_all" => Verification::CatchAll,
        "invalid" | "spamtrap" | "abuse" | "do_not_mail" => Verification::Invalid,
        _ => Verification::Unknown,
    }
}

impl Verifier for ZeroBounce {
    fn id(&self) -> &str {
        &self.id
    }

    fn verify_request(&self, email: &str) -> Result<HttpRequest, AdapterError> {
        let email = email.trim();
        if email.is_empty() {
            return Err(AdapterError::MissingInput {
                provider: PROVIDER,
                needs: "an email address",
            });
        }
        let mut q = Query::new();
        q.set("api_key", self.key.expose())
            .set("email", email)
            .set("ip_address", "");
        Ok(HttpRequest {
            method: Method::Get,
            url: q.url(&self.base_url, "/validate"),
            headers: util::json_headers(Method::Get, Vec::new()),
            body: None,
            endpoint: "GET /validate",
        })
    }

    fn classify_verify(&self, resp: &HttpResponse) -> VerifyOutcome {
        match resp.status {
            200..=299 => {
                let Some(v) = util::parse_json(&resp.body).filter(Value::is_object) else {
                    return self.failed(
                        ProviderOutcome::Transient,
                        format!("HTTP {}: malformed body", resp.status),
                    );
                };
                if let Some(msg) = util::str_at(&v, "/error") {
                    let lower = msg.to_ascii_lowercase();
                    let outcome = if lower.contains("credit") && !lower.contains("key") {
                        ProviderOutcome::OutOfCredits
                    } else {
                        ProviderOutcome::AuthError
                    };
                    return self.failed(
                        outcome,
                        format!(
                            "HTTP {}: \"{}\" (check the ZeroBounce API key and credit balance)",
                            resp.status,
                            util::truncate(msg, util::MAX_MESSAGE_CHARS)
                        ),
                    );
                }
                let Some(status) = util::str_at(&v, "/status") else {
                    return self.failed(
                        ProviderOutcome::Transient,
                        format!("HTTP {}: malformed body (no status)", resp.status),
                    );
                };
                let provider_status = match util::str_at(&v, "/sub_status") {
                    Some(sub) => format!("{status}/{sub}"),
                    None => status.to_string(),
                };
                VerifyOutcome::Checked {
                    verification: verification(status),
                    provider_status: util::truncate(&provider_status, 80),
                    provider_cost: None,
                }
            }
            400 | 422 => self.failed(ProviderOutcome::InvalidInput, describe(resp)),
            401 => self.failed(
                ProviderOutcome::AuthError,
                describe_with(resp, "check the ZeroBounce API key"),
            ),
            403 => self.failed(
                ProviderOutcome::RateLimited {
                    retry_after: util::retry_after(resp),
                },
                describe_with(
                    resp,
                    "blocked by ZeroBounce's API Shield (too many bad or fast requests)",
                ),
            ),
            429 => self.failed(
                ProviderOutcome::RateLimited {
                    retry_after: Some(util::retry_after(resp).unwrap_or(BLOCK_WAIT)),
                },
                describe(resp),
            ),
            500..=599 => self.failed(ProviderOutcome::Transient, describe(resp)),
            _ => self.failed(
                ProviderOutcome::Transient,
                describe_with(resp, "unexpected answer from ZeroBounce"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::outcome::Classified;
    use crate::providers::util::testing::*;

    const CONNECTOR: &str = include_str!("../../connectors/zerobounce.toml");
    const VALID: &str = include_str!("../../fixtures/providers/zerobounce/valid.json");
    const CATCH_ALL: &str = include_str!("../../fixtures/providers/zerobounce/catch_all.json");
    const INVALID: &str = include_str!("../../fixtures/providers/zerobounce/invalid.json");
    const DO_NOT_MAIL: &str = include_str!("../../fixtures/providers/zerobounce/do_not_mail.json");
    const SPAMTRAP: &str = include_str!("../../fixtures/providers/zerobounce/spamtrap.json");
    const UNKNOWN: &str = include_str!("../../fixtures/providers/zerobounce/unknown.json");
    const ERROR_200: &str = include_str!("../../fixtures/providers/zerobounce/error_200.json");
    const BAD_REQUEST: &str = include_str!("../../fixtures/providers/zerobounce/bad_request.json");
    const MALFORMED: &str = include_str!("../../fixtures/providers/zerobounce/malformed.json");

    fn zb() -> ZeroBounce {
        ZeroBounce::new(&account(CONNECTOR, "https://sim.test/v2")).unwrap()
    }

    fn checked(o: VerifyOutcome) -> (Verification, String) {
        match o {
            VerifyOutcome::Checked {
                verification,
                provider_status,
                provider_cost,
            } => {
                assert_eq!(provider_cost, None);
                (verification, provider_status)
            }
            other => panic!("{other:?}"),
        }
    }

    fn failed(o: VerifyOutcome) -> Classified {
        match o {
            VerifyOutcome::Failed(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request() {
        let req = zb().verify_request(" ada+test@analytical.io ").unwrap();
        assert_eq!(
            req.url,
            format!(
                "https://sim.test/v2/validate?api_key={KEY}&email=ada%2Btest%40analytical.io&ip_address="
            )
        );
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.endpoint, "GET /validate");
        assert!(!format!("{req:?} {:?}", zb()).contains(KEY));
        assert!(matches!(
            zb().verify_request("  "),
            Err(AdapterError::MissingInput { .. })
        ));
        let e = ZeroBounce::new(&with_option(
            account(CONNECTOR, "https://x.test"),
            "ip",
            "1".into(),
        ))
        .unwrap_err();
        assert!(e.message.contains("unknown option `ip`"), "{e}");
    }

    #[test]
    fn statuses() {
        let z = zb();
        assert_eq!(
            checked(z.classify_verify(&resp(200, VALID))),
            (Verification::Verified, "valid".into())
        );
        assert_eq!(
            checked(z.classify_verify(&resp(200, CATCH_ALL))),
            (Verification::CatchAll, "catch-all".into())
        );
        assert_eq!(
            checked(z.classify_verify(&resp(200, INVALID))),
            (Verification::Invalid, "invalid/mailbox_not_found".into())
        );
        assert_eq!(
            checked(z.classify_verify(&resp(200, DO_NOT_MAIL))),
            (Verification::Invalid, "do_not_mail/role_based".into())
        );
        assert_eq!(
            checked(z.classify_verify(&resp(200, SPAMTRAP))).0,
            Verification::Invalid
        );
        assert_eq!(
            checked(z.classify_verify(&resp(200, UNKNOWN))),
            (Verification::Unknown, "unknown/greylisted".into())
        );
        assert_eq!(
            checked(z.classify_verify(&resp(200, r#"{"status":"abuse","sub_status":""}"#))).0,
            Verification::Invalid
        );
    }

    #[test]
    fn errors() {
        let z = zb();
        let c = failed(z.classify_verify(&resp(200, ERROR_200)));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        assert!(c.detail.contains("ran out of credits"), "{}", c.detail);
        let c =
            failed(z.classify_verify(&resp(200, r#"{"error":"Your account ran out of credits"}"#)));
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        let c = failed(z.classify_verify(&resp(400, BAD_REQUEST)));
        assert_eq!(c.outcome, ProviderOutcome::InvalidInput);
        let c = failed(z.classify_verify(&resp(429, "")));
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(60))
            }
        );
        let c = failed(z.classify_verify(&resp_h(429, &[("retry-after", "3")], "")));
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let c = failed(z.classify_verify(&resp(403, "<html>API Shield</html>")));
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited { retry_after: None }
        );
        assert!(c.detail.contains("API Shield"));
        for s in [500, 520, 524] {
            let c = failed(z.classify_verify(&resp(s, "")));
            assert_eq!(c.outcome, ProviderOutcome::Transient);
        }
        let c = failed(z.classify_verify(&resp(200, MALFORMED)));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        let c = failed(z.classify_verify(&resp(200, "{}")));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
    }
}
