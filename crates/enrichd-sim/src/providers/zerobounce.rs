//! ZeroBounce v2 (`https://api.zerobounce.net/v2`): `GET /validate` and `GET /getcredits`.
//!
//! Simulated: statuses from the population truth (a true address => `valid`, catch-all domain
//! => `catch-all`, otherwise `invalid` + `mailbox_not_found`; an unknown domain => `invalid` +
//! `no_dns_entries`; bad syntax => `invalid` + `failed_syntax_check`), the owner's name for
//! valid addresses, 1 credit per check except `unknown` (never produced here), and the quirk
//! that a bad key **or** an empty balance answers **HTTP 200**
//! `{"error":"Invalid API key or your account ran out of credits"}` (partially documented:
//! SDK READMEs). Over the limit => 429 `{"error": ...}`.
//! Not simulated: the 1-minute block after exceeding the limit and the 1-hour blocks for bad
//! requests/keys, `spamtrap`/`abuse`/`do_not_mail`/`unknown` results, batch and file APIs,
//! IP geolocation (country/region/city/zipcode are null), `403 API Shield`.

use axum::http::Method;
use serde_json::{Value, json};

use crate::hash::H;
use crate::population::{EmailTruth, is_webmail_domain};
use crate::server::{Api, BoxFut, Ctx, KeyCheck, Reply, Req, Route, WindowInfo};
use crate::util::zb_timestamp;

pub(crate) struct ZeroBounce;

const VALIDATE: u8 = 1;
const CREDITS: u8 = 2;
const BAD_KEY: &str = "Invalid API key or your account ran out of credits";

fn err(status: u16, msg: &str) -> Reply {
    Reply::json(status, json!({ "error": msg }))
}

impl Api for ZeroBounce {
    fn route(&self, method: &Method, path: &str) -> Result<Route, Reply> {
        let r = match path {
            "/validate" => Route::new("GET /validate", VALIDATE),
            "/getcredits" => Route::new("GET /getcredits", CREDITS),
            _ => return Err(self.status_error(404)),
        };
        if method != Method::GET {
            return Err(self.status_error(405));
        }
        Ok(r)
    }

    fn key(&self, req: &Req) -> KeyCheck {
        req.q("api_key").map_or(KeyCheck::Missing, KeyCheck::Given)
    }

    /// HTTP 200 with an error body (ZeroBounce's quirk).
    fn auth_error(&self, _kc: &KeyCheck) -> Reply {
        err(200, BAD_KEY)
    }

    fn rate_limited(&self, _ctx: &Ctx, _w: &WindowInfo) -> Reply {
        err(
            429,
            "Rate limit exceeded. Please slow down and retry in one minute.",
        )
    }

    fn status_error(&self, status: u16) -> Reply {
        match status {
            400 => err(400, "Bad request"),
            403 => err(403, "Forbidden"),
            404 => err(404, "Not found"),
            405 => err(405, "Method not allowed"),
            429 => err(
                429,
                "Rate limit exceeded. Please slow down and retry in one minute.",
            ),
            s if s >= 500 => err(s, "Internal server error"),
            s => err(s, "Request failed"),
        }
    }

    /// Same quirk: HTTP 200.
    fn out_of_credits(&self) -> Reply {
        err(200, BAD_KEY)
    }

    fn malformed(&self) -> Reply {
        Reply::raw_json(200, r#"{"address":"jane.smith@northwind.com","status":"va"#)
    }

    fn serve<'a>(&'a self, ctx: &'a Ctx, req: &'a Req) -> BoxFut<'a> {
        Box::pin(async move {
            if ctx.route.id == CREDITS {
                if let Some(r) = ctx.gate(&[]).await {
                    return r;
                }
                let c = ctx.sh.credits().unwrap_or(999_999_999);
                return Reply::json(200, json!({ "Credits": c.max(0).to_string() }));
            }
            validate(ctx, req).await
        })
    }
}

fn mx_for(domain: &str, h: H) -> (&'static str, String) {
    match domain {
        "gmail.com" => ("google", "gmail-smtp-in.l.google.com".into()),
        "outlook.com" | "hotmail.com" => (
            "microsoft",
            format!("{}.olc.protection.outlook.com", domain.replace('.', "-")),
        ),
        "yahoo.com" => ("yahoo", "mta5.am0.yahoodns.net".into()),
        "icloud.com" => ("apple", "mx01.mail.icloud.com".into()),
        "proton.me" => ("proton", "mail.protonmail.ch".into()),
        "gmx.de" => ("gmx", "mx00.gmx.net".into()),
        _ => {
            if h.below(2) == 0 {
                ("google", "aspmx.l.google.com".into())
            } else {
                (
                    "microsoft",
                    format!("{}.mail.protection.outlook.com", domain.replace('.', "-")),
                )
            }
        }
    }
}

async fn validate(ctx: &Ctx, req: &Req) -> Reply {
    let pop = ctx.pop();
    let email = req.q("email");
    let owner = email.as_deref().and_then(|e| pop.find_by_email(e));
    let persons: Vec<usize> = owner.map(|p| p.index).into_iter().collect();
    if let Some(r) = ctx.gate(&persons).await {
        return r;
    }
    let Some(email) = email else {
        return err(400, "Missing parameter: email").about(persons, Vec::new());
    };
    let address = email.to_lowercase();
    let (account, domain) = match address.rsplit_once('@') {
        Some((a, d)) => (a.to_string(), d.to_string()),
        None => (address.clone(), String::new()),
    };
    let syntax_ok = !account.is_empty() && domain.contains('.') && !address.contains(' ');
    let known = syntax_ok && pop.is_known_domain(&domain);
    let (status, sub_status) = if !syntax_ok {
        ("invalid", "failed_syntax_check")
    } else if !known {
        ("invalid", "no_dns_entries")
    } else {
        match pop.email_truth(&address) {
            EmailTruth::Valid => ("valid", ""),
            EmailTruth::CatchAll => ("catch-all", ""),
            EmailTruth::Invalid => ("invalid", "mailbox_not_found"),
        }
    };
    // 1 credit per check except "unknown".
    if !ctx.sh.charge(1) {
        return ZeroBounce.out_of_credits().about(persons, Vec::new());
    }
    let h = H::new(pop.seed()).s("zerobounce-domain").s(&domain);
    let (smtp_provider, mx_record) = if known {
        let (p, m) = mx_for(&domain, h);
        (json!(p), json!(m))
    } else {
        (Value::Null, json!(""))
    };
    let named = owner.filter(|_| status == "valid");
    let body = json!({
        "address": address,
        "status": status,
        "sub_status": sub_status,
        "free_email": is_webmail_domain(&domain),
        "did_you_mean": Value::Null,
        "account": account,
        "domain": domain,
        "domain_age_days": if known { json!(h.range(400, 9000).to_string()) } else { Value::Null },
        "smtp_provider": smtp_provider,
        "mx_found": if known { "true" } else { "false" },
        "mx_record": mx_record,
        "firstname": named.map(|p| p.first_name.clone()),
        "lastname": named.map(|p| p.last_name.clone()),
        "gender": Value::Null,
        "country": Value::Null,
        "region": Value::Null,
        "city": Value::Null,
        "zipcode": Value::Null,
        "processed_at": zb_timestamp(std::time::SystemTime::now()),
    });
    let mut r = Reply::json(200, body).about(persons, Vec::new());
    r.charged = 1;
    r
}
