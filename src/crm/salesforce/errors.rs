//! Salesforce error bodies and what to do about each (§6.1, §1.3).
//!
//! Shapes, all parsed without panicking ([`parse_error_body`]):
//! - REST: a JSON array `[{"message","errorCode","fields"?}]` (§6.1);
//! - per record (Collections, Composite): `{"statusCode","message","fields"}`
//!   (§3.3; the key is `statusCode`, not `errorCode`) — read by
//!   [`RecordError::from_json`];
//! - the token endpoint: `{"error","error_description"}` (§1.3);
//! - anything else (HTML from a proxy, an empty body) is kept as a short,
//!   redacted snippet.
//!
//! [`classify`] turns a status and body into an [`ErrorClass`], the retry
//! policy of §6.1; [`record_error_kind`] does the same for one record of a
//! write. [`ApiFailure`] is the message a person reads: what happened,
//! where (API, endpoint, record) and what to do. No message ever carries
//! a token: bodies are passed through [`redact`] and endpoints are
//! secret-free templates supplied by the caller.

use std::fmt;

use serde_json::Value;

/// One entry of a REST error array, or one record's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// `errorCode` (REST) or `statusCode` (per record); `UNKNOWN` when
    /// absent.
    pub code: String,
    pub message: String,
    /// Fields the error is about (field-specific errors only).
    pub fields: Vec<String>,
}

impl RecordError {
    /// Reads `{"errorCode"|"statusCode", "message", "fields"}`; `None` when
    /// `v` is not an object.
    pub fn from_json(v: &Value) -> Option<RecordError> {
        let o = v.as_object()?;
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::trim);
        let code = s("errorCode")
            .or_else(|| s("statusCode"))
            .filter(|c| !c.is_empty())
            .unwrap_or("UNKNOWN")
            .to_string();
        let message = redact(s("message").unwrap_or(""));
        let fields = o
            .get("fields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Some(RecordError {
            code,
            message,
            fields,
        })
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if !self.fields.is_empty() {
            write!(f, " (fields: {})", self.fields.join(", "))?;
        }
        Ok(())
    }
}

/// An error body as Salesforce (or something in front of it) sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorBody {
    /// The REST error array (§6.1).
    Rest(Vec<RecordError>),
    /// The token endpoint's `{"error","error_description"}` (§1.3).
    OAuth {
        error: String,
        description: Option<String>,
    },
    /// Not a known shape: at most 300 characters, redacted.
    Other(String),
    Empty,
}

impl ErrorBody {
    /// The first error code (REST) or the OAuth `error`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ErrorBody::Rest(v) => v.first().map(|e| e.code.as_str()),
            ErrorBody::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The first message (REST), the OAuth description, or the snippet.
    pub fn message(&self) -> String {
        match self {
            ErrorBody::Rest(v) => v
                .iter()
                .map(|e| e.message.as_str())
                .find(|m| !m.is_empty())
                .unwrap_or("")
                .to_string(),
            ErrorBody::OAuth { description, .. } => description.clone().unwrap_or_default(),
            ErrorBody::Other(s) => s.clone(),
            ErrorBody::Empty => String::new(),
        }
    }
}

const SNIPPET: usize = 300;

/// Parses an error body of any shape; never fails.
pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return ErrorBody::Empty;
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Array(items)) => {
            let errs: Vec<RecordError> = items.iter().filter_map(RecordError::from_json).collect();
            if errs.is_empty() {
                ErrorBody::Other(snippet(trimmed))
            } else {
                ErrorBody::Rest(errs)
            }
        }
        Ok(v @ Value::Object(_)) => {
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                ErrorBody::OAuth {
                    error: e.trim().to_string(),
                    description: v
                        .get("error_description")
                        .and_then(Value::as_str)
                        .map(|d| redact(d.trim())),
                }
            } else if v.get("errorCode").is_some() || v.get("statusCode").is_some() {
                RecordError::from_json(&v)
                    .map(|e| ErrorBody::Rest(vec![e]))
                    .unwrap_or_else(|| ErrorBody::Other(snippet(trimmed)))
            } else {
                ErrorBody::Other(snippet(trimmed))
            }
        }
        _ => ErrorBody::Other(snippet(trimmed)),
    }
}

fn snippet(s: &str) -> String {
    let r = redact(s);
    if r.chars().count() <= SNIPPET {
        return r;
    }
    let cut: String = r.chars().take(SNIPPET).collect();
    format!("{cut}…")
}

/// Removes what could be a credential from text shown to people: words
/// after `Bearer`, Salesforce access tokens (`00D…!…`, §1.3) and
/// `access_token=` / `refresh_token=` / `assertion=` / `client_secret=`
/// values. Conservative: it may hide a little more than needed.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut hide_next = false;
    for (i, word) in s.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if hide_next && !word.is_empty() {
            out.push_str("***");
            hide_next = false;
            continue;
        }
        if word.eq_ignore_ascii_case("bearer") {
            hide_next = true;
            out.push_str(word);
            continue;
        }
        out.push_str(&redact_word(word));
    }
    out
}

fn redact_word(w: &str) -> String {
    for key in [
        "access_token=",
        "refresh_token=",
        "assertion=",
        "client_secret=",
    ] {
        if let Some(p) = w.to_ascii_lowercase().find(key) {
            let end = p + key.len();
            let rest = &w[end..];
            let stop = rest.find(['&', '"', '\'', ',', ';']).unwrap_or(rest.len());
            return format!("{}***{}", &w[..end], &rest[stop..]);
        }
    }
    // An org-prefixed access token: 00D + 12 or 15 alphanumerics + `!`.
    if let Some(p) = w.find("00D") {
        let tail = &w[p..];
        if let Some(bang) = tail.find('!')
            && (15..=18).contains(&bang)
            && tail[..bang].bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return format!("{}***", &w[..p]);
        }
    }
    w.to_string()
}

/// What the caller does about a failed call (§6.1 retry policy, §1.3–1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 401 `INVALID_SESSION_ID`: refresh the access token once, retry the
    /// call once (§1.3, §1.8).
    InvalidSession,
    /// 403 `REQUEST_LIMIT_EXCEEDED` (daily allocation): pause the org
    /// (`limits::DailyBudget::request_limit_exceeded`), keep the work.
    RequestLimitExceeded,
    /// 403 `REQUEST_LIMIT_EXCEEDED` about concurrent requests: back off
    /// with jitter (`limits::concurrent_backoff_ms`), then retry.
    ConcurrentLimit,
    /// The grant is gone (`invalid_grant`, inactive user or org, an unknown
    /// error on refresh): mark the connection "reconnect required"; retry
    /// nothing until `enrichd connect salesforce` (§1.3, §1.4).
    ReconnectRequired,
    /// 429, 5xx, `SERVER_UNAVAILABLE`, `UNABLE_TO_LOCK_ROW`, the token
    /// endpoint's `rate_limit_exceeded`: retry with exponential back-off.
    Transient,
    /// `QUERY_TIMEOUT`: retry the query over a narrower window (§2.1,
    /// tap-salesforce halves its window).
    QueryTimeout,
    /// `INVALID_QUERY_LOCATOR`: the `nextRecordsUrl` cursor expired (15 min
    /// of inactivity, §2.1); restart the query after the last keyset.
    CursorExpired,
    /// A person must fix configuration or permissions: `INVALID_FIELD`,
    /// `MALFORMED_QUERY`, `API_DISABLED_FOR_ORG`, other 403s, 420 (no
    /// route to the host), wrong client id/secret, redirect URI mismatch.
    Config,
    /// Any other 4xx: permanent for this request; report it.
    Permanent,
}

impl ErrorClass {
    /// Whether the same request may succeed later without a person.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::InvalidSession
                | ErrorClass::RequestLimitExceeded
                | ErrorClass::ConcurrentLimit
                | ErrorClass::Transient
                | ErrorClass::QueryTimeout
                | ErrorClass::CursorExpired
        )
    }

    /// Whether nothing will work until a person acts.
    pub fn needs_a_person(self) -> bool {
        matches!(self, ErrorClass::ReconnectRequired | ErrorClass::Config)
    }
}

/// Codes a retry may get past (§6.1; `ALL_OR_NONE_OPERATION_ROLLED_BACK`
/// only marks a record another one's failure rolled back).
const RETRYABLE_CODES: &[&str] = &[
    "UNABLE_TO_LOCK_ROW",
    "SERVER_UNAVAILABLE",
    "REQUEST_RUNNING_TOO_LONG",
    "UNKNOWN_EXCEPTION",
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "QUERY_TIMEOUT",
];

/// Whether a `REQUEST_LIMIT_EXCEEDED` message is about concurrent requests
/// ("ConcurrentRequests (Concurrent API Requests) Limit exceeded.", §6.1)
/// rather than the daily total ("TotalRequests Limit exceeded.").
pub fn is_concurrent_limit_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("concurrent")
}

/// Classifies a failed answer (status and parsed body).
pub fn classify(status: u16, body: &ErrorBody) -> ErrorClass {
    if let ErrorBody::OAuth { error, .. } = body {
        return classify_oauth(status, error);
    }
    let code = body.code().unwrap_or("");
    match code {
        "INVALID_SESSION_ID" => return ErrorClass::InvalidSession,
        "REQUEST_LIMIT_EXCEEDED" => {
            return if is_concurrent_limit_message(&body.message()) {
                ErrorClass::ConcurrentLimit
            } else {
                ErrorClass::RequestLimitExceeded
            };
        }
        "QUERY_TIMEOUT" => return ErrorClass::QueryTimeout,
        "INVALID_QUERY_LOCATOR" => return ErrorClass::CursorExpired,
        "INVALID_FIELD"
        | "MALFORMED_QUERY"
        | "INVALID_TYPE"
        | "API_DISABLED_FOR_ORG"
        | "API_CURRENTLY_DISABLED"
        | "INSUFFICIENT_ACCESS"
        | "FUNCTIONALITY_NOT_ENABLED"
        | "INVALID_FIELD_FOR_INSERT_UPDATE" => return ErrorClass::Config,
        c if RETRYABLE_CODES.contains(&c) => return ErrorClass::Transient,
        _ => {}
    }
    match status {
        401 => ErrorClass::InvalidSession,
        420 => ErrorClass::Config,
        403 => ErrorClass::Config,
        408 | 429 => ErrorClass::Transient,
        500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// The token endpoint's `error` (§1.3): unknown values on a refresh are
/// terminal (the reference's recommendation).
pub fn classify_oauth(status: u16, error: &str) -> ErrorClass {
    match error {
        "rate_limit_exceeded" | "temporarily_unavailable" | "server_error" => ErrorClass::Transient,
        "invalid_client_id"
        | "invalid_client_credentials"
        | "invalid_client"
        | "redirect_uri_mismatch"
        | "invalid_scope"
        | "unsupported_response_type"
        | "unsupported_grant_type"
        | "invalid_request" => ErrorClass::Config,
        _ if status >= 500 => ErrorClass::Transient,
        _ => ErrorClass::ReconnectRequired,
    }
}

/// What to do about one record's failure in a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// Send the record again later (`UNABLE_TO_LOCK_ROW`, …).
    Retryable,
    /// The named fields cannot take their values: drop them (with their
    /// Source or value partner) and send the rest again.
    FieldLevel,
    /// The record cannot be written: report it.
    Permanent,
}

/// Codes about the record as a whole: dropping fields cannot help.
const RECORD_LEVEL_CODES: &[&str] = &[
    "CANNOT_UPDATE_CONVERTED_LEAD",
    "ENTITY_IS_DELETED",
    "ENTITY_IS_LOCKED",
    "ENTITY_IS_ARCHIVED_OR_DELETED",
    "INVALID_CROSS_REFERENCE_KEY",
    "INVALID_ID_FIELD",
    "MALFORMED_ID",
    "NOT_FOUND",
    "INSUFFICIENT_ACCESS_OR_READONLY",
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
];

/// Field-level codes even when `fields` is empty (the field is then named
/// in the message, see [`field_in_message`]).
const FIELD_CODES: &[&str] = &[
    "STRING_TOO_LONG",
    "INVALID_FIELD",
    "INVALID_FIELD_FOR_INSERT_UPDATE",
    "INVALID_EMAIL_ADDRESS",
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    "INVALID_TYPE_ON_FIELD_IN_RECORD",
    "NUMBER_OUTSIDE_VALID_RANGE",
    "FIELD_INTEGRITY_EXCEPTION",
    "FIELD_FILTER_VALIDATION_EXCEPTION",
];

/// Classifies one record's error: retryable codes first; record-level
/// codes; then field-level when the error names fields (any code: a
/// validation rule or duplicate rule bound to a field included) or has a
/// field-level code; else permanent (`DUPLICATES_DETECTED` and
/// `FIELD_CUSTOM_VALIDATION_EXCEPTION` without fields end here).
pub fn record_error_kind(e: &RecordError) -> RecordErrorKind {
    let code = e.code.as_str();
    if RETRYABLE_CODES.contains(&code) || code == "REQUEST_LIMIT_EXCEEDED" {
        return RecordErrorKind::Retryable;
    }
    if RECORD_LEVEL_CODES.contains(&code) {
        return RecordErrorKind::Permanent;
    }
    if !e.fields.is_empty() || FIELD_CODES.contains(&code) {
        return RecordErrorKind::FieldLevel;
    }
    RecordErrorKind::Permanent
}

/// A field named in an error message: `No such column 'Foo__c' on entity
/// 'Lead'` / `… on sobject of type Lead` (§6.1 `INVALID_FIELD`), and
/// `Email: invalid email address: foo` (the `Field: message` form).
pub fn field_in_message(message: &str) -> Option<String> {
    let valid = |s: &str| super::soql::is_field_name(s).then(|| s.to_string());
    if let Some(p) = message.find("No such column '") {
        let rest = &message[p + "No such column '".len()..];
        return valid(rest.split('\'').next()?);
    }
    let (head, _) = message.split_once(": ")?;
    valid(head.trim())
}

/// Which API a failure came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Rest,
    Bulk,
    OAuth,
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Api::Rest => "REST API",
            Api::Bulk => "Bulk API 2.0",
            Api::OAuth => "OAuth token endpoint",
        })
    }
}

/// A failed call, worded for the person reading the log or the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub api: Api,
    /// A secret-free template, e.g. `PATCH /composite/sobjects`.
    pub endpoint: String,
    pub status: u16,
    pub class: ErrorClass,
    pub code: Option<String>,
    /// Redacted.
    pub message: String,
    /// The record concerned, when there is one.
    pub record: Option<String>,
}

impl ApiFailure {
    /// Builds the failure of a call from its status and raw body.
    pub fn new(api: Api, endpoint: &str, status: u16, body: &[u8]) -> ApiFailure {
        let parsed = parse_error_body(body);
        ApiFailure {
            api,
            endpoint: endpoint.to_string(),
            status,
            class: classify(status, &parsed),
            code: parsed.code().map(String::from),
            message: parsed.message(),
            record: None,
        }
    }

    pub fn with_record(mut self, id: &str) -> ApiFailure {
        self.record = Some(id.to_string());
        self
    }
}

/// What a person should do about a class (and code).
pub fn hint(class: ErrorClass, code: Option<&str>) -> &'static str {
    match (class, code) {
        (ErrorClass::InvalidSession, _) => {
            "enrichd refreshes the session and retries once; if this repeats, check the connected app's IP restrictions and session policy"
        }
        (ErrorClass::RequestLimitExceeded, _) => {
            "the org's daily API allocation is used up; enrichd pauses this org, keeps every pending lead and resumes as the rolling 24-hour window frees calls"
        }
        (ErrorClass::ConcurrentLimit, _) => {
            "too many long-running requests in the org at once; enrichd backs off and retries"
        }
        (ErrorClass::ReconnectRequired, _) => {
            "the authorization is no longer valid (revoked, expired, user or org inactive); run `enrichd connect salesforce` again"
        }
        (ErrorClass::Transient, _) => {
            "Salesforce is busy or unavailable; enrichd retries with back-off"
        }
        (ErrorClass::QueryTimeout, _) => {
            "the query took too long; enrichd retries it over a shorter time window"
        }
        (ErrorClass::CursorExpired, _) => {
            "the query cursor expired; enrichd restarts after the last record it handled"
        }
        (ErrorClass::Config, Some("INVALID_FIELD" | "INVALID_FIELD_FOR_INSERT_UPDATE")) => {
            "a mapped field does not exist or the integration user cannot see or edit it: create the field, grant Read and Edit in its field-level security, or fix the mapping (`enrichd check` lists the problems)"
        }
        (ErrorClass::Config, Some("API_DISABLED_FOR_ORG" | "API_CURRENTLY_DISABLED")) => {
            "API access is disabled for this org or user: the edition must include the API and the user's profile needs \"API Enabled\""
        }
        (
            ErrorClass::Config,
            Some("invalid_client_id" | "invalid_client_credentials" | "invalid_client"),
        ) => {
            "the consumer key or secret is wrong: check the connected app's credentials in config.toml's environment variables"
        }
        (ErrorClass::Config, Some("redirect_uri_mismatch")) => {
            "the redirect URI differs from the connected app's Callback URL: make them identical"
        }
        (ErrorClass::Config, _) => {
            "a configuration or permission problem: check the mapping, the connected app and the integration user's permissions"
        }
        (ErrorClass::Permanent, _) => {
            "Salesforce refused this request; it is reported and not retried"
        }
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Salesforce {} {} answered {}",
            self.api, self.endpoint, self.status
        )?;
        if let Some(c) = &self.code {
            write!(f, " {c}")?;
        }
        if let Some(r) = &self.record {
            write!(f, " for record {r}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        write!(f, ". {}", hint(self.class, self.code.as_deref()))
    }
}

impl std::error::Error for ApiFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_error_bodies() {
        let b = parse_error_body(
            br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
        );
        assert_eq!(b.code(), Some("INVALID_SESSION_ID"));
        assert_eq!(classify(401, &b), ErrorClass::InvalidSession);

        let b = parse_error_body(
            br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        );
        assert_eq!(classify(403, &b), ErrorClass::RequestLimitExceeded);
        let b = parse_error_body(
            br#"[{"message":"ConcurrentRequests (Concurrent API Requests) Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        );
        assert_eq!(classify(403, &b), ErrorClass::ConcurrentLimit);

        let b = parse_error_body(
            br#"[{"message":"No such column 'Foo__c' on entity 'Lead'...","errorCode":"INVALID_FIELD"}]"#,
        );
        assert_eq!(classify(400, &b), ErrorClass::Config);
        assert_eq!(field_in_message(&b.message()).as_deref(), Some("Foo__c"));

        let b = parse_error_body(
            br#"[{"message":"Email: invalid email address: foo","errorCode":"INVALID_EMAIL_ADDRESS","fields":["Email"]}]"#,
        );
        let ErrorBody::Rest(errs) = &b else {
            panic!("{b:?}")
        };
        assert_eq!(errs[0].fields, vec!["Email"]);
        assert_eq!(classify(400, &b), ErrorClass::Permanent);
        assert_eq!(record_error_kind(&errs[0]), RecordErrorKind::FieldLevel);
        assert_eq!(field_in_message(&errs[0].message).as_deref(), Some("Email"));

        let b = parse_error_body(
            br#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
        );
        assert_eq!(b.code(), Some("invalid_grant"));
        assert_eq!(b.message(), "expired access/refresh token");
        assert_eq!(classify(400, &b), ErrorClass::ReconnectRequired);
    }

    #[test]
    fn oauth_errors() {
        for (e, c) in [
            ("invalid_grant", ErrorClass::ReconnectRequired),
            ("inactive_user", ErrorClass::ReconnectRequired),
            ("inactive_org", ErrorClass::ReconnectRequired),
            ("something_new", ErrorClass::ReconnectRequired),
            ("invalid_client_id", ErrorClass::Config),
            ("invalid_client_credentials", ErrorClass::Config),
            ("redirect_uri_mismatch", ErrorClass::Config),
            ("rate_limit_exceeded", ErrorClass::Transient),
        ] {
            assert_eq!(classify_oauth(400, e), c, "{e}");
        }
        assert_eq!(classify_oauth(503, "unknown"), ErrorClass::Transient);
    }

    #[test]
    fn statuses_without_a_known_code() {
        let other = parse_error_body(b"<html>Bad Gateway</html>");
        assert!(matches!(other, ErrorBody::Other(_)));
        assert_eq!(classify(502, &other), ErrorClass::Transient);
        assert_eq!(classify(503, &ErrorBody::Empty), ErrorClass::Transient);
        assert_eq!(classify(429, &ErrorBody::Empty), ErrorClass::Transient);
        assert_eq!(classify(420, &ErrorBody::Empty), ErrorClass::Config);
        assert_eq!(classify(401, &ErrorBody::Empty), ErrorClass::InvalidSession);
        assert_eq!(classify(403, &ErrorBody::Empty), ErrorClass::Config);
        assert_eq!(classify(404, &ErrorBody::Empty), ErrorClass::Permanent);
        let b = parse_error_body(br#"[{"message":"x","errorCode":"UNABLE_TO_LOCK_ROW"}]"#);
        assert_eq!(classify(400, &b), ErrorClass::Transient);
        let b = parse_error_body(br#"[{"message":"x","errorCode":"QUERY_TIMEOUT"}]"#);
        assert_eq!(classify(400, &b), ErrorClass::QueryTimeout);
        let b = parse_error_body(br#"[{"message":"x","errorCode":"INVALID_QUERY_LOCATOR"}]"#);
        assert_eq!(classify(400, &b), ErrorClass::CursorExpired);
        let b = parse_error_body(br#"[{"message":"x","errorCode":"MALFORMED_QUERY"}]"#);
        assert_eq!(classify(400, &b), ErrorClass::Config);
        assert!(ErrorClass::Transient.is_retryable() && !ErrorClass::Config.is_retryable());
        assert!(ErrorClass::ReconnectRequired.needs_a_person());
    }

    #[test]
    fn malformed_bodies_never_panic() {
        for b in [
            &b""[..],
            b"   ",
            b"[",
            b"[]",
            b"[1,2]",
            b"{}",
            b"null",
            b"\xff\xfe",
            br#"[{"errorCode":5}]"#,
            br#"{"error":5}"#,
            br#"[{"message":null,"errorCode":"X","fields":"Email"}]"#,
        ] {
            let p = parse_error_body(b);
            let _ = classify(400, &p);
            let _ = p.message();
        }
        let p = parse_error_body(br#"[{"errorCode":5}]"#);
        assert_eq!(p.code(), Some("UNKNOWN"));
        let long = "x".repeat(5_000);
        let ErrorBody::Other(s) = parse_error_body(long.as_bytes()) else {
            panic!()
        };
        assert!(s.chars().count() <= SNIPPET + 1);
    }

    #[test]
    fn record_error_kinds() {
        let e = |code: &str, fields: &[&str]| RecordError {
            code: code.into(),
            message: String::new(),
            fields: fields.iter().map(|s| s.to_string()).collect(),
        };
        use RecordErrorKind::*;
        assert_eq!(record_error_kind(&e("UNABLE_TO_LOCK_ROW", &[])), Retryable);
        assert_eq!(
            record_error_kind(&e("CANNOT_UPDATE_CONVERTED_LEAD", &[])),
            Permanent
        );
        assert_eq!(
            record_error_kind(&e("ENTITY_IS_DELETED", &["Email"])),
            Permanent
        );
        assert_eq!(
            record_error_kind(&e("STRING_TOO_LONG", &["Phone_Source__c"])),
            FieldLevel
        );
        assert_eq!(record_error_kind(&e("STRING_TOO_LONG", &[])), FieldLevel);
        assert_eq!(record_error_kind(&e("INVALID_FIELD", &[])), FieldLevel);
        assert_eq!(
            record_error_kind(&e(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                &["Enrichment_Status__c"]
            )),
            FieldLevel
        );
        assert_eq!(
            record_error_kind(&e("FIELD_CUSTOM_VALIDATION_EXCEPTION", &["Email"])),
            FieldLevel
        );
        assert_eq!(
            record_error_kind(&e("FIELD_CUSTOM_VALIDATION_EXCEPTION", &[])),
            Permanent
        );
        assert_eq!(record_error_kind(&e("DUPLICATES_DETECTED", &[])), Permanent);
        assert_eq!(record_error_kind(&e("SOMETHING_ELSE", &[])), Permanent);
        let j = serde_json::json!({"statusCode":"STRING_TOO_LONG","message":"Phone: data value too large","fields":["Phone"]});
        let r = RecordError::from_json(&j).unwrap();
        assert_eq!(r.code, "STRING_TOO_LONG");
        assert_eq!(
            r.to_string(),
            "STRING_TOO_LONG: Phone: data value too large (fields: Phone)"
        );
        assert_eq!(RecordError::from_json(&serde_json::json!([1])), None);
    }

    #[test]
    fn field_names_in_messages() {
        assert_eq!(
            field_in_message("No such column 'LinkedIn_URL__c' on sobject of type Lead").as_deref(),
            Some("LinkedIn_URL__c")
        );
        assert_eq!(field_in_message("No such column '' on x"), None);
        assert_eq!(field_in_message("invalid cross reference id"), None);
        assert_eq!(field_in_message("Bad thing: happened"), None);
    }

    #[test]
    fn messages_say_what_where_and_what_to_do_without_tokens() {
        let f = ApiFailure::new(
            Api::Rest,
            "PATCH /composite/sobjects",
            400,
            br#"[{"message":"No such column 'Foo__c' on entity 'Lead'","errorCode":"INVALID_FIELD"}]"#,
        )
        .with_record("00Qxx0000001abcEAA");
        let s = f.to_string();
        assert!(
            s.contains("REST API PATCH /composite/sobjects answered 400 INVALID_FIELD"),
            "{s}"
        );
        assert!(s.contains("for record 00Qxx0000001abcEAA"), "{s}");
        assert!(s.contains("field-level security"), "{s}");

        let f = ApiFailure::new(
            Api::OAuth,
            "POST /services/oauth2/token",
            400,
            br#"{"error":"invalid_grant","error_description":"token 00Dxx0000001gPL!AQ0AQHtoken-value is bad; Bearer abc.def refresh_token=5Aep861xyz&x=1"}"#,
        );
        let s = f.to_string();
        assert!(!s.contains("AQ0AQHtoken"), "{s}");
        assert!(!s.contains("abc.def"), "{s}");
        assert!(!s.contains("5Aep861xyz"), "{s}");
        assert!(s.contains("enrichd connect salesforce"), "{s}");
        assert_eq!(f.class, ErrorClass::ReconnectRequired);
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("Bearer 00Dabc!xyz"), "Bearer ***");
        assert_eq!(redact("x 00Dxx0000001gPLEAY!AQ0A y"), "x *** y");
        assert_eq!(
            redact("id 00Dxx0000001gPLEAY ok"),
            "id 00Dxx0000001gPLEAY ok"
        );
        assert_eq!(redact("access_token=abc&b=1"), "access_token=***&b=1");
        assert_eq!(redact("plain message"), "plain message");
        assert_eq!(redact("ünïcode 00D"), "ünïcode 00D");
    }
}
