//! Small helpers shared by the adapters: URL building with a percent-encoder,
//! JSON pointer reads, human `detail` sentences, `Retry-After` parsing and
//! the checks every constructor runs on its [`Account`].
//!
//! Everything here is pure and total: no helper panics on bad input.

use std::time::Duration;

use serde_json::Value;

use super::def::{Account, BuildError};
use super::{AdapterError, FindItem, HttpResponse, Method};
use crate::core::channel::{Channel, ChannelSet};
use crate::core::lead::Identity;
use crate::core::outcome::{Classified, ProviderOutcome};
use crate::secret::Secret;

/// Longest provider message quoted in a `detail` sentence.
pub(crate) const MAX_MESSAGE_CHARS: usize = 200;

/// Longest wait we take from a provider's hint (header or message). Anything
/// longer is treated as "a day": a provider asking for more is effectively
/// out of service for this run, and a garbage header must not park work for
/// years.
pub(crate) const MAX_HINT: Duration = Duration::from_secs(86_400);

// ---------------------------------------------------------------------------
// URLs

/// Percent-encodes `s` for a query component or a path segment (RFC 3986):
/// every byte outside the unreserved set `A-Z a-z 0-9 - . _ ~` becomes `%XX`
/// (so a space is `%20`, `+` is `%2B`, `&` is `%26`, UTF-8 is byte-encoded).
pub(crate) fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// The minimum of person-match APIs such as Apollo and PDL: a LinkedIn URL,
/// an email, or a name (first and last, or full) with a company domain or
/// name.
pub(crate) fn profile_email_or_name_and_company(id: &Identity) -> bool {
    let name = (filled(&id.first_name).is_some() && filled(&id.last_name).is_some())
        || filled(&id.full_name).is_some();
    filled(&id.linkedin_url).is_some()
        || filled(&id.email).is_some()
        || (name && (filled(&id.domain).is_some() || filled(&id.company_name).is_some()))
}

/// The one item of a single-record API, checked against the provider's
/// minimum identity (`accepts`).
pub(crate) fn single_item<'i, 'a>(
    items: &'i [FindItem<'a>],
    provider: &'static str,
    needs: &'static str,
    accepts: impl Fn(&Identity) -> bool,
) -> Result<&'i FindItem<'a>, AdapterError> {
    let [item] = items else {
        return Err(AdapterError::BatchTooLarge {
            provider,
            max: 1,
            got: items.len(),
        });
    };
    if !accepts(item.identity) {
        return Err(AdapterError::MissingInput { provider, needs });
    }
    Ok(item)
}

/// `base` (trailing slashes dropped) + `path` + `?k=v&...` with every key and
/// value percent-encoded. Pairs are kept in the given order.
pub(crate) fn build_url<K: AsRef<str>, V: AsRef<str>>(
    base: &str,
    path: &str,
    query: &[(K, V)],
) -> String {
    let mut url = String::with_capacity(base.len() + path.len() + 16 * query.len());
    url.push_str(base.trim_end_matches('/'));
    if !path.is_empty() && !path.starts_with('/') {
        url.push('/');
    }
    url.push_str(path);
    for (i, (k, v)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&percent_encode(k.as_ref()));
        url.push('=');
        url.push_str(&percent_encode(v.as_ref()));
    }
    url
}

/// An accumulating query string, skipping absent or blank values.
#[derive(Default)]
pub(crate) struct Query(pub(crate) Vec<(&'static str, String)>);

impl Query {
    pub(crate) fn new() -> Self {
        Query(Vec::new())
    }
    /// Adds `k=v` when `v` is present and not blank (trimmed).
    pub(crate) fn opt(&mut self, k: &'static str, v: Option<&str>) -> &mut Self {
        if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
            self.0.push((k, v.to_string()));
        }
        self
    }
    /// Adds `k=v` unconditionally (an empty `v` gives `k=`).
    pub(crate) fn set(&mut self, k: &'static str, v: impl Into<String>) -> &mut Self {
        self.0.push((k, v.into()));
        self
    }
    pub(crate) fn url(&self, base: &str, path: &str) -> String {
        build_url(base, path, &self.0)
    }
}

/// The common JSON headers; `Content-Type` only when there is a body.
pub(crate) fn json_headers(method: Method, extra: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut h = vec![("accept".to_string(), "application/json".to_string())];
    if method == Method::Post {
        h.push(("content-type".to_string(), "application/json".to_string()));
    }
    h.extend(extra);
    h
}

/// `value` with leading `www.` removed (Apollo and Hunter want a bare domain;
/// `Identity::domain` is already bare, this is belt and braces).
pub(crate) fn bare(domain: &str) -> &str {
    let d = domain.trim();
    d.strip_prefix("www.").unwrap_or(d)
}

/// Present and not blank.
pub(crate) fn filled(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------
// JSON

/// The body as JSON, `None` when it is not JSON.
pub(crate) fn parse_json(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

/// The trimmed, non-empty string at `pointer`.
pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A scalar at `pointer` as text: strings (trimmed, non-empty), numbers and
/// booleans. Objects, arrays and null give `None`.
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_string())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A number at `pointer`, also from a numeric string.
pub(crate) fn number_at(v: &Value, pointer: &str) -> Option<f64> {
    match v.pointer(pointer)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite())
}

/// Provider credits (a JSON number) → milli-credits; negative or absurd
/// figures are ignored.
pub(crate) fn credits_to_milli(credits: f64) -> Option<i64> {
    (credits.is_finite() && (0.0..=1.0e12).contains(&credits)).then(|| super::def::milli(credits))
}

// ---------------------------------------------------------------------------
// Details

/// At most `max` characters of `s`, with an ellipsis when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut it = s.chars();
    let head: String = it.by_ref().take(max).collect();
    if it.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// Whitespace runs collapsed to one space, control characters dropped.
fn collapse(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

const CODE_POINTERS: &[&str] = &[
    "/error_code",
    "/code",
    "/error/code",
    "/error/type",
    "/errors/0/id",
    "/errors/0/code",
];
const MESSAGE_POINTERS: &[&str] = &[
    "/message",
    "/error/message",
    "/error_message",
    "/errors/0/details",
    "/errors/0/message",
    "/error",
    "/detail",
    "/details",
    "/reason",
];

/// The provider's own error code and message, when the body has them in one
/// of the usual places (`code`/`message`, `error_code`, `error.type` +
/// `error.message`, `errors[0].id` + `errors[0].details`, `error` as a string).
pub(crate) fn code_and_message(v: &Value) -> (Option<String>, Option<String>) {
    let code = CODE_POINTERS
        .iter()
        .find_map(|p| str_at(v, p))
        .map(|s| truncate(&collapse(s), 80));
    let message = MESSAGE_POINTERS
        .iter()
        .find_map(|p| str_at(v, p))
        .map(|s| truncate(&collapse(s), MAX_MESSAGE_CHARS));
    (code, message)
}

/// A short description of a body that carries no recognisable code/message.
fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.is_empty() {
        return "(empty body)".to_string();
    }
    if t.starts_with('<') {
        return "(HTML error page)".to_string();
    }
    format!("\"{}\"", truncate(&collapse(t), MAX_MESSAGE_CHARS))
}

/// `HTTP 429 error.rate.limit: "Too many requests. Try again in 1m"`: the
/// status plus the provider's own code and message (or a body snippet).
pub(crate) fn describe(resp: &HttpResponse) -> String {
    let status = resp.status;
    match parse_json(&resp.body) {
        Some(v) => match code_and_message(&v) {
            (Some(c), Some(m)) if c != m => format!("HTTP {status} {c}: \"{m}\""),
            (Some(c), _) => format!("HTTP {status} {c}"),
            (None, Some(m)) => format!("HTTP {status}: \"{m}\""),
            (None, None) => format!("HTTP {status}: {}", body_snippet(&resp.body)),
        },
        None => format!("HTTP {status}: {}", body_snippet(&resp.body)),
    }
}

/// `describe(resp)` followed by an explanation.
pub(crate) fn describe_with(resp: &HttpResponse, why: &str) -> String {
    format!("{}; {why}", describe(resp))
}

/// Replaces every occurrence of the API key in `s` by `***`. A provider may
/// echo the key it was given (query-string keys especially); a detail
/// sentence is stored and shown, so it must never carry it.
pub(crate) fn redact(s: String, key: &Secret) -> String {
    // `expose` here compares, it does not put the key anywhere.
    let k = key.expose();
    if k.len() >= 4 && s.contains(k) {
        s.replace(k, "***")
    } else {
        s
    }
}

/// A [`Classified`] whose detail is redacted.
pub(crate) fn classified(outcome: ProviderOutcome, detail: String, key: &Secret) -> Classified {
    Classified::new(outcome, redact(detail, key))
}

// ---------------------------------------------------------------------------
// Retry hints

/// `Retry-After` as delta-seconds (integer or decimal). HTTP-dates are not
/// read: the adapters have no clock (the `date` header is used where a
/// provider documents absolute resets, see PDL).
pub(crate) fn retry_after(resp: &HttpResponse) -> Option<Duration> {
    let v = resp.header("retry-after")?.trim();
    let secs = v.parse::<f64>().ok()?;
    secs_to_duration(secs)
}

/// Non-negative finite seconds → a duration capped at [`MAX_HINT`].
pub(crate) fn secs_to_duration(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs.min(MAX_HINT.as_secs_f64())))
}

/// A wait written in a message: "try again in 30 seconds", "Try again in 1m",
/// "retry after 2 minutes", "in 1h". The first number following "in " or
/// "after " with a unit (s, sec, second(s), m, min, minute(s), h, hour(s)).
pub(crate) fn wait_in_message(msg: &str) -> Option<Duration> {
    let lower = msg.to_ascii_lowercase();
    for marker in ["in ", "after "] {
        let mut from = 0;
        while let Some(pos) = lower.get(from..).and_then(|s| s.find(marker)) {
            let start = from + pos + marker.len();
            let rest = lower.get(start..).unwrap_or("");
            if let Some(d) = leading_duration(rest) {
                return Some(d);
            }
            from = start;
        }
    }
    None
}

fn leading_duration(s: &str) -> Option<Duration> {
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let rest = s.get(digits.len()..)?.trim_start();
    let unit: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let mult = match unit.as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        _ => return None,
    };
    secs_to_duration((n * mult) as f64)
}

// ---------------------------------------------------------------------------
// Constructor checks

/// The base URL must be an absolute http(s) URL.
pub(crate) fn check_base_url(account: &Account) -> Result<(), BuildError> {
    let b = account.base_url.trim();
    let ok = (b.starts_with("https://") || b.starts_with("http://"))
        && b.len() > "https://".len()
        && !b.contains(char::is_whitespace)
        && !b.contains(['?', '#']);
    if ok {
        Ok(())
    } else {
        Err(BuildError::new(
            account,
            format!(
                "base_url `{}` must be an absolute http:// or https:// URL without a query string",
                truncate(b, 100)
            ),
        ))
    }
}

/// The connector's `supplies`, checked against what the adapter can supply.
pub(crate) fn check_supplies(
    account: &Account,
    capable: ChannelSet,
    why_not: &dyn Fn(Channel) -> String,
) -> Result<ChannelSet, BuildError> {
    let s = account.connector.supplies;
    if s.is_empty() {
        return Err(BuildError::new(
            account,
            format!(
                "supplies is empty: list the channels this provider should be asked for (it can supply: {})",
                capable.to_csv()
            ),
        ));
    }
    if let Some(c) = s.difference(capable).iter().next() {
        return Err(BuildError::new(
            account,
            format!("supplies lists `{c}`, which {}", why_not(c)),
        ));
    }
    Ok(s)
}

/// Rejects option keys the adapter does not know.
pub(crate) fn check_option_keys(account: &Account, known: &[&str]) -> Result<(), BuildError> {
    for key in account.options.keys() {
        if !known.contains(&key.as_str()) {
            let accepted = if known.is_empty() {
                "it takes no options".to_string()
            } else {
                format!("it accepts: {}", known.join(", "))
            };
            return Err(BuildError::new(
                account,
                format!(
                    "unknown option `{key}` for the {} adapter ({accepted})",
                    adapter_name(account.connector.adapter)
                ),
            ));
        }
    }
    Ok(())
}

/// An integer option within `range`; `None` when not set.
pub(crate) fn int_option(
    account: &Account,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, BuildError> {
    let Some(v) = account.options.get(key) else {
        return Ok(None);
    };
    match v.as_integer() {
        Some(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(BuildError::new(
            account,
            format!(
                "option `{key}` must be an integer from {} to {}, got {}",
                range.start(),
                range.end(),
                truncate(&v.to_string(), 60)
            ),
        )),
    }
}

/// A non-empty string option; `None` when not set.
pub(crate) fn string_option(account: &Account, key: &str) -> Result<Option<String>, BuildError> {
    let Some(v) = account.options.get(key) else {
        return Ok(None);
    };
    match v.as_str().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(Some(s.to_string())),
        _ => Err(BuildError::new(
            account,
            format!(
                "option `{key}` must be a non-empty string, got {}",
                truncate(&v.to_string(), 60)
            ),
        )),
    }
}

/// The adapter's name as written in connector files (`fullenrich`, ...).
pub(crate) fn adapter_name(kind: super::def::AdapterKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{kind:?}").to_ascii_lowercase())
}

// ---------------------------------------------------------------------------
// Interning

/// A `'static` copy of `s`, for labels built from connector files
/// (`HttpRequest::endpoint`, `AdapterError` fields are `&'static str`). Each
/// distinct string is leaked once and reused, so rebuilding connectors on a
/// config reload does not grow memory.
pub(crate) fn intern(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static POOL: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let pool = POOL.get_or_init(|| Mutex::new(HashSet::new()));
    let mut set = match pool.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(existing) = set.get(s) {
        return existing;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

// ---------------------------------------------------------------------------
// Test support

#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::core::channel::{Channel, ChannelSet};
    use crate::core::lead::Identity;
    use crate::providers::def::{Account, ConnectorDef};
    use crate::providers::{FindItem, HttpResponse};
    use crate::secret::Secret;

    pub const KEY: &str = "sk_test_SECRET_9f8e7d";

    /// An account for a connector file, pointed at a simulator base URL.
    pub fn account(connector_toml: &str, base_url: &str) -> Account {
        let def: ConnectorDef = toml::from_str(connector_toml).unwrap();
        Account {
            id: def.id.clone(),
            connector: Arc::new(def),
            base_url: base_url.to_string(),
            api_key: Secret::new(KEY),
            limits: Default::default(),
            timeout: Duration::from_secs(30),
            max_retries: 3,
            options: BTreeMap::new(),
        }
    }

    pub fn with_option(mut a: Account, k: &str, v: toml::Value) -> Account {
        a.options.insert(k.to_string(), v);
        a
    }

    pub fn ada() -> Identity {
        Identity {
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            full_name: Some("Ada Lovelace".into()),
            domain: Some("analytical.io".into()),
            company_name: Some("Analytical Engines & Co".into()),
            ..Identity::default()
        }
    }

    pub fn channels(cs: &[Channel]) -> ChannelSet {
        cs.iter().copied().collect()
    }

    pub fn item<'a>(key: &'a str, id: &'a Identity, cs: &[Channel]) -> FindItem<'a> {
        FindItem {
            key,
            identity: id,
            channels: channels(cs),
        }
    }

    pub fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn resp_h(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_follows_rfc3986_unreserved() {
        assert_eq!(percent_encode("abc-._~XYZ09"), "abc-._~XYZ09");
        assert_eq!(
            percent_encode("a b+c&d=e/f?g#h"),
            "a%20b%2Bc%26d%3De%2Ff%3Fg%23h"
        );
        assert_eq!(percent_encode("Zoë"), "Zo%C3%AB");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn urls_join_base_path_and_encoded_query() {
        assert_eq!(
            build_url("https://h.test/v2/", "/x", &[("a b", "c&d"), ("e", "")]),
            "https://h.test/v2/x?a%20b=c%26d&e="
        );
        assert_eq!(
            build_url::<&str, &str>("https://h.test", "/x", &[]),
            "https://h.test/x"
        );
    }

    #[test]
    fn waits_are_read_from_messages() {
        assert_eq!(
            wait_in_message("Too many requests. Try again in 1m"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            wait_in_message("Enrichment not ready, try again in 30 seconds"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait_in_message("retry after 2 hours"),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(wait_in_message("in a minute, in 5 apples"), None);
        assert_eq!(wait_in_message("in 99999999999999999999 s"), None);
        assert_eq!(wait_in_message(""), None);
    }

    #[test]
    fn details_quote_code_and_message_and_survive_garbage() {
        let r = |status, body: &str| HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            describe(&r(
                429,
                r#"{"code":"error.rate.limit","message":"Too many requests. Try again in 1m"}"#
            )),
            "HTTP 429 error.rate.limit: \"Too many requests. Try again in 1m\""
        );
        assert_eq!(describe(&r(503, "")), "HTTP 503: (empty body)");
        assert_eq!(
            describe(&r(502, "<html><body>Bad gateway</body></html>")),
            "HTTP 502: (HTML error page)"
        );
        assert_eq!(
            describe(&r(401, "Invalid API key\n")),
            "HTTP 401: \"Invalid API key\""
        );
        let long = "x".repeat(500);
        assert!(describe(&r(400, &long)).chars().count() < 230);
        assert!(!describe(&r(400, "\u{0}\u{1}\u{ff}")).is_empty());
    }

    #[test]
    fn redaction_hides_the_key() {
        let k = Secret::new("abcd1234");
        assert_eq!(redact("bad key abcd1234!".into(), &k), "bad key ***!");
        assert_eq!(redact("nothing".into(), &Secret::new("")), "nothing");
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let r = |v: &str| HttpResponse {
            status: 429,
            headers: vec![("retry-after".into(), v.into())],
            body: vec![],
        };
        assert_eq!(retry_after(&r("17")), Some(Duration::from_secs(17)));
        assert_eq!(retry_after(&r("1.5")), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after(&r("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&r("-3")), None);
        assert_eq!(retry_after(&r("1e308")), Some(MAX_HINT));
    }
}
