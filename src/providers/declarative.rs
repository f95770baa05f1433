//! Declarative connectors (`adapter = "declarative"`): a plain REST provider
//! described entirely in its `connectors/<id>.toml` (`auth`, `request`,
//! `response`, `requires`, `supplies`), with no provider code. Synchronous,
//! one lead per request.
//!
//! **Request.** `{placeholder}`s (the names of [`IdentityInput::as_str`]:
//! `{first_name}`, `{domain}`, ...) are replaced by the lead's values in
//! query values, header values and body strings. A query parameter (or an
//! extra header) whose placeholders are all empty for the lead is left out;
//! in the body, placeholders may only appear inside JSON strings and are
//! replaced by the JSON-escaped value (an empty string when the lead lacks
//! it). The path is static. The key goes where `auth` says (header, bearer
//! or query parameter, the latter appended last).
//!
//! **Answer.** `response.rules` first, in order, the first match deciding:
//! a rule holds when every condition it gives holds (HTTP status among
//! `status`; the value at `pointer` `equals` a text exactly, or `contains` a
//! text case-insensitively, or, with neither, exists and is not null). Then
//! the defaults: 2xx → found when an asked channel has a non-empty value at
//! its `value` pointer (strings, or numbers as text), else not found; a 2xx
//! body that is not JSON → transient "malformed body"; 401/403 → auth error;
//! 402 → out of credits; 404 → not found; 400/422 → invalid input; 429 →
//! rate limited (`Retry-After` seconds); 5xx and anything else → transient.
//! A rule saying `found` extracts values the same way (none → not found).
//! Verification comes from the channel's `status` pointer and word lists
//! (case-insensitive; any other word, or no status, is unknown); the
//! `do_not_call` pointer reads a boolean (or "true"). `response.cost` is the
//! provider's own charge, in its credits.
//!
//! **Validation.** [`Declarative::new`] rejects a definition that cannot work
//! and names the connector-file key at fault (`request.method`,
//! `response.channels.phone.value`, `response.rules[2]`, ...).
//!
//! `HttpRequest::endpoint` and `AdapterError` need `&'static str` labels:
//! they are interned once per distinct text (see `util::intern`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::def::{
    Account, AuthStyle, BuildError, DeclChannel, DeclRule, IdentityInput, Role, RuleOutcome,
};
use super::util::{self, classified, describe};
use super::{AdapterError, BatchOutcome, FindItem, Finder, HttpRequest, HttpResponse, Method};
use crate::core::channel::{Channel, ChannelSet};
use crate::core::lead::Identity;
use crate::core::outcome::{Classified, ProviderOutcome};
use crate::core::value::{ValueCandidate, Verification};
use crate::secret::Secret;

/// A text with `{placeholder}`s, parsed once.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Seg>);

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Ph(IdentityInput),
    /// `{asks.<channel>}`: whether this request asks for the channel
    /// (`true`/`false`; a JSON boolean when it is a whole body string).
    Asks(Channel),
}

/// What a template is rendered with.
#[derive(Clone, Copy)]
struct Vars<'a> {
    id: &'a Identity,
    asks: ChannelSet,
}

impl Template {
    /// Splits `s` on `{name}`; `name` of `[a-z0-9_]` that is not an identity
    /// input is an error; other braces (JSON, `{}`) are literal.
    fn parse(s: &str) -> Result<Template, String> {
        let mut segs = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            lit.push_str(rest.get(..open).unwrap_or(""));
            let after = rest.get(open + 1..).unwrap_or("");
            let name_len = after
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
                })
                .unwrap_or(after.len());
            let name = after.get(..name_len).unwrap_or("");
            if let Some(channel) = name.strip_prefix("asks.")
                && after.get(name_len..).is_some_and(|r| r.starts_with('}'))
            {
                let c = channel
                    .parse::<Channel>()
                    .map_err(|e| format!("placeholder {{{name}}}: {e}"))?;
                if !lit.is_empty() {
                    segs.push(Seg::Lit(std::mem::take(&mut lit)));
                }
                segs.push(Seg::Asks(c));
                rest = after.get(name_len + 1..).unwrap_or("");
            } else if !name.is_empty() && after.get(name_len..).is_some_and(|r| r.starts_with('}'))
            {
                let input = IdentityInput::ALL
                    .into_iter()
                    .find(|i| i.as_str() == name)
                    .ok_or_else(|| {
                        format!(
                            "unknown placeholder {{{name}}} (known: {}, {{asks.<channel>}})",
                            IdentityInput::ALL
                                .map(|i| format!("{{{}}}", i.as_str()))
                                .join(", ")
                        )
                    })?;
                if !lit.is_empty() {
                    segs.push(Seg::Lit(std::mem::take(&mut lit)));
                }
                segs.push(Seg::Ph(input));
                rest = after.get(name_len + 1..).unwrap_or("");
            } else {
                lit.push('{');
                rest = after;
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit));
        }
        Ok(Template(segs))
    }

    /// The rendered text, or `None` when it has placeholders and all of them
    /// are empty for this lead.
    fn render(&self, v: Vars<'_>) -> Option<String> {
        let mut out = String::new();
        let (mut placeholders, mut filled) = (0, 0);
        for seg in &self.0 {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                Seg::Ph(i) => {
                    placeholders += 1;
                    if let Some(x) = i.get(v.id).map(str::trim).filter(|x| !x.is_empty()) {
                        filled += 1;
                        out.push_str(x);
                    }
                }
                Seg::Asks(c) => {
                    placeholders += 1;
                    filled += 1;
                    out.push_str(if v.asks.contains(*c) { "true" } else { "false" });
                }
            }
        }
        (placeholders == 0 || filled > 0).then_some(out)
    }

    /// Rendered with empty placeholders kept as empty text.
    fn render_all(&self, v: Vars<'_>) -> String {
        self.0
            .iter()
            .map(|seg| match seg {
                Seg::Lit(s) => s.as_str(),
                Seg::Ph(i) => i.get(v.id).map(str::trim).unwrap_or(""),
                Seg::Asks(c) => {
                    if v.asks.contains(*c) {
                        "true"
                    } else {
                        "false"
                    }
                }
            })
            .collect()
    }
}

/// The body template: JSON whose strings are templates.
#[derive(Debug, Clone, PartialEq)]
enum BodyTpl {
    Obj(Vec<(String, BodyTpl)>),
    Arr(Vec<BodyTpl>),
    Str(Template),
    Other(Value),
}

impl BodyTpl {
    fn from_value(v: Value) -> Result<BodyTpl, String> {
        Ok(match v {
            Value::Object(m) => BodyTpl::Obj(
                m.into_iter()
                    .map(|(k, v)| Ok((k, BodyTpl::from_value(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            Value::Array(a) => BodyTpl::Arr(
                a.into_iter()
                    .map(BodyTpl::from_value)
                    .collect::<Result<_, String>>()?,
            ),
            Value::String(s) => BodyTpl::Str(Template::parse(&s)?),
            other => BodyTpl::Other(other),
        })
    }

    fn render(&self, vars: Vars<'_>) -> Value {
        match self {
            BodyTpl::Obj(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.render(vars)))
                    .collect::<Map<_, _>>(),
            ),
            BodyTpl::Arr(a) => Value::Array(a.iter().map(|v| v.render(vars)).collect()),
            BodyTpl::Str(Template(segs)) if matches!(segs.as_slice(), [Seg::Asks(_)]) => {
                let asked = matches!(segs.as_slice(), [Seg::Asks(c)] if vars.asks.contains(*c));
                Value::Bool(asked)
            }
            BodyTpl::Str(t) => Value::String(t.render_all(vars)),
            BodyTpl::Other(v) => v.clone(),
        }
    }
}

#[derive(Debug)]
pub struct Declarative {
    id: String,
    provider: &'static str,
    base_url: String,
    key: Secret,
    supplies: ChannelSet,
    requires: Vec<Vec<IdentityInput>>,
    needs: &'static str,
    auth: AuthStyle,
    method: Method,
    path: String,
    query: Vec<(String, Template)>,
    headers: Vec<(String, Template)>,
    body: Option<BodyTpl>,
    channels: BTreeMap<Channel, DeclChannel>,
    cost: Option<String>,
    rules: Vec<DeclRule>,
    endpoint: &'static str,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_pointer(account: &Account, key: &str, p: &str) -> Result<(), BuildError> {
    if p.starts_with('/') {
        Ok(())
    } else {
        Err(BuildError::new(
            account,
            format!(
                "{key}: a JSON pointer must start with '/', got `{}`",
                util::truncate(p, 60)
            ),
        ))
    }
}

impl Declarative {
    pub fn new(account: &Account) -> Result<Self, BuildError> {
        let def = &account.connector;
        let err = |m: String| BuildError::new(account, m);
        if def.role != Role::Finder {
            return Err(err("role: declarative connectors are finders".into()));
        }
        util::check_base_url(account)?;
        util::check_option_keys(account, &[])?;

        // auth
        let auth = def.auth.clone().ok_or_else(|| {
            err("auth: missing (add an [auth] table with style = \"header\", \"bearer\" or \"query\")".into())
        })?;
        match &auth {
            AuthStyle::Header { name } if !is_token(name) => {
                return Err(err(format!(
                    "auth.name: `{}` is not a valid header name",
                    util::truncate(name, 60)
                )));
            }
            AuthStyle::Query { param } if param.trim().is_empty() => {
                return Err(err("auth.param: must not be empty".into()));
            }
            _ => {}
        }

        // request
        let req = def.request.as_ref().ok_or_else(|| {
            err("request: missing (add a [request] table with method and path)".into())
        })?;
        let method = match req.method.trim().to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            _ => {
                return Err(err(format!(
                    "request.method: must be \"GET\" or \"POST\", got `{}`",
                    util::truncate(&req.method, 20)
                )));
            }
        };
        let path = req.path.trim().to_string();
        if !path.starts_with('/')
            || path.contains(['{', '}', '?', '#'])
            || path.contains(char::is_whitespace)
        {
            return Err(err(format!(
                "request.path: must start with '/' and hold no placeholder, query string or space, got `{}`",
                util::truncate(&path, 60)
            )));
        }
        let mut query = Vec::new();
        for (k, v) in &req.query {
            if k.trim().is_empty() {
                return Err(err("request.query: a parameter name is empty".into()));
            }
            let t = Template::parse(v).map_err(|e| err(format!("request.query.{k}: {e}")))?;
            query.push((k.clone(), t));
        }
        let mut headers = Vec::new();
        for (k, v) in &req.headers {
            if !is_token(k) {
                return Err(err(format!(
                    "request.headers: `{}` is not a valid header name",
                    util::truncate(k, 60)
                )));
            }
            let t = Template::parse(v).map_err(|e| err(format!("request.headers.{k}: {e}")))?;
            headers.push((k.clone(), t));
        }
        let body = match &req.body {
            None => None,
            Some(_) if method == Method::Get => {
                return Err(err("request.body: a GET request cannot have a body".into()));
            }
            Some(text) => {
                let emptied = IdentityInput::ALL.iter().fold(text.clone(), |acc, i| {
                    acc.replace(&format!("{{{}}}", i.as_str()), "")
                });
                serde_json::from_str::<Value>(&emptied).map_err(|e| {
                    err(format!(
                        "request.body: not valid JSON once placeholders are replaced by \"\": {e}"
                    ))
                })?;
                let v = serde_json::from_str::<Value>(text).map_err(|e| {
                    err(format!(
                        "request.body: placeholders must be inside JSON strings ({e})"
                    ))
                })?;
                Some(BodyTpl::from_value(v).map_err(|e| err(format!("request.body: {e}")))?)
            }
        };

        // response
        let supplies = util::check_supplies(account, ChannelSet::ALL, &|_| String::new())?;
        let resp = def.response.as_ref().ok_or_else(|| {
            err("response: missing (add [response.channels.<channel>] tables)".into())
        })?;
        for c in supplies.iter() {
            if !resp.channels.contains_key(&c) {
                return Err(err(format!(
                    "response.channels.{c}: missing (every channel in supplies needs one, with a `value` pointer)"
                )));
            }
        }
        for (c, ch) in &resp.channels {
            check_pointer(account, &format!("response.channels.{c}.value"), &ch.value)?;
            if let Some(p) = &ch.status {
                check_pointer(account, &format!("response.channels.{c}.status"), p)?;
            } else if !(ch.verified.is_empty() && ch.catch_all.is_empty() && ch.invalid.is_empty())
            {
                return Err(err(format!(
                    "response.channels.{c}: verified/catch_all/invalid words need a `status` pointer"
                )));
            }
            if let Some(p) = &ch.do_not_call {
                check_pointer(account, &format!("response.channels.{c}.do_not_call"), p)?;
            }
        }
        if let Some(p) = &resp.cost {
            check_pointer(account, "response.cost", p)?;
        }
        for (i, r) in resp.rules.iter().enumerate() {
            let key = format!("response.rules[{i}]");
            if r.status.is_empty()
                && r.pointer.is_none()
                && r.equals.is_none()
                && r.contains.is_none()
            {
                return Err(err(format!(
                    "{key}: has no condition (give status, pointer, equals or contains)"
                )));
            }
            if let Some(s) = r.status.iter().find(|s| !(100..=599).contains(*s)) {
                return Err(err(format!("{key}.status: {s} is not an HTTP status")));
            }
            match &r.pointer {
                Some(p) => check_pointer(account, &format!("{key}.pointer"), p)?,
                None if r.equals.is_some() || r.contains.is_some() => {
                    return Err(err(format!("{key}: equals/contains need a `pointer`")));
                }
                None => {}
            }
        }

        let needs = if def.requires.is_empty() {
            "nothing".to_string()
        } else {
            def.requires
                .iter()
                .map(|alt| {
                    alt.iter()
                        .map(|i| i.as_str())
                        .collect::<Vec<_>>()
                        .join(" + ")
                })
                .collect::<Vec<_>>()
                .join(", or ")
        };

        Ok(Declarative {
            id: def.id.clone(),
            provider: util::intern(&def.id),
            base_url: account.base_url.trim().to_string(),
            key: account.api_key.clone(),
            supplies,
            requires: def.requires.clone(),
            needs: util::intern(&needs),
            auth,
            method,
            endpoint: util::intern(&format!("{} {path}", method.as_str())),
            path,
            query,
            headers,
            body,
            channels: resp.channels.clone(),
            cost: resp.cost.clone(),
            rules: resp.rules.clone(),
        })
    }

    fn c(&self, outcome: ProviderOutcome, detail: String) -> Classified {
        classified(outcome, detail, &self.key)
    }

    fn rule_matches(rule: &DeclRule, status: u16, json: Option<&Value>) -> bool {
        if !rule.status.is_empty() && !rule.status.contains(&status) {
            return false;
        }
        let Some(p) = &rule.pointer else {
            return true;
        };
        let Some(v) = json.and_then(|j| j.pointer(p)) else {
            return false;
        };
        let text = match v {
            Value::Null => "null".to_string(),
            Value::String(s) => s.clone(),
            other => util::scalar_text(other).unwrap_or_else(|| other.to_string()),
        };
        if let Some(e) = &rule.equals
            && text.trim() != e.as_str()
        {
            return false;
        }
        if let Some(c) = &rule.contains
            && !text.to_lowercase().contains(&c.to_lowercase())
        {
            return false;
        }
        if rule.equals.is_none() && rule.contains.is_none() {
            return !v.is_null();
        }
        true
    }

    /// Values for the asked channels, with the detail words.
    fn extract(&self, asked: ChannelSet, json: &Value) -> Vec<ValueCandidate> {
        let mut out = Vec::new();
        for c in asked.intersection(self.supplies).iter() {
            let Some(ch) = self.channels.get(&c) else {
                continue;
            };
            let Some(value) = json.pointer(&ch.value).and_then(|v| match v {
                Value::Number(_) => util::scalar_text(v),
                Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
                _ => None,
            }) else {
                continue;
            };
            let word = ch
                .status
                .as_deref()
                .and_then(|p| json.pointer(p))
                .and_then(util::scalar_text);
            let is = |list: &[String]| {
                word.as_deref()
                    .is_some_and(|w| list.iter().any(|x| x.trim().eq_ignore_ascii_case(w)))
            };
            let verification = if is(&ch.verified) {
                Verification::Verified
            } else if is(&ch.catch_all) {
                Verification::CatchAll
            } else if is(&ch.invalid) {
                Verification::Invalid
            } else {
                Verification::Unknown
            };
            let mut cand = ValueCandidate::new(c, value, verification);
            cand.provider_status = word.map(|w| util::truncate(&w, 80));
            cand.do_not_call = ch
                .do_not_call
                .as_deref()
                .and_then(|p| json.pointer(p))
                .is_some_and(|v| match v {
                    Value::Bool(b) => *b,
                    Value::String(s) => s.trim().eq_ignore_ascii_case("true"),
                    _ => false,
                });
            out.push(cand);
        }
        out
    }

    fn found_or_not(&self, asked: ChannelSet, json: &Value, status: u16, why: &str) -> Classified {
        let values = self.extract(asked, json);
        if values.is_empty() {
            return self.c(
                ProviderOutcome::NotFound,
                format!("HTTP {status}: no value for {asked}{why}"),
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
        let provider_cost = self
            .cost
            .as_deref()
            .and_then(|p| util::number_at(json, p))
            .and_then(util::credits_to_milli);
        self.c(
            ProviderOutcome::Found {
                values,
                provider_cost,
            },
            format!("HTTP {status}: found {what}{why}"),
        )
    }

    fn classify(&self, item: Option<&FindItem<'_>>, resp: &HttpResponse) -> Classified {
        let asked = item.map_or(self.supplies, |it| it.channels.intersection(self.supplies));
        let json = util::parse_json(&resp.body);
        let status = resp.status;

        if let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| Self::rule_matches(r, status, json.as_ref()))
        {
            let why = format!(" (rule {})", i + 1);
            let d = format!("{}{why}", describe(resp));
            return match rule.outcome {
                RuleOutcome::Found => match &json {
                    Some(j) => self.found_or_not(asked, j, status, &why),
                    None => self.c(ProviderOutcome::NotFound, d),
                },
                RuleOutcome::NotFound => self.c(ProviderOutcome::NotFound, d),
                RuleOutcome::OutOfCredits => self.c(ProviderOutcome::OutOfCredits, d),
                RuleOutcome::RateLimited => self.c(
                    ProviderOutcome::RateLimited {
                        retry_after: util::retry_after(resp),
                    },
                    d,
                ),
                RuleOutcome::ComplianceBlocked => self.c(ProviderOutcome::ComplianceBlocked, d),
                RuleOutcome::AuthError => self.c(ProviderOutcome::AuthError, d),
                RuleOutcome::InvalidInput => self.c(ProviderOutcome::InvalidInput, d),
                RuleOutcome::Transient => self.c(ProviderOutcome::Transient, d),
            };
        }

        match status {
            200..=299 => match &json {
                Some(j) => self.found_or_not(asked, j, status, ""),
                None => self.c(
                    ProviderOutcome::Transient,
                    format!("HTTP {status}: malformed body"),
                ),
            },
            401 | 403 => self.c(ProviderOutcome::AuthError, describe(resp)),
            402 => self.c(ProviderOutcome::OutOfCredits, describe(resp)),
            404 => self.c(ProviderOutcome::NotFound, describe(resp)),
            400 | 422 => self.c(ProviderOutcome::InvalidInput, describe(resp)),
            429 => self.c(
                ProviderOutcome::RateLimited {
                    retry_after: util::retry_after(resp),
                },
                describe(resp),
            ),
            _ => self.c(ProviderOutcome::Transient, describe(resp)),
        }
    }
}

/// Header values must not carry line breaks or other control characters.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

impl Finder for Declarative {
    fn id(&self) -> &str {
        &self.id
    }

    fn supplies(&self) -> ChannelSet {
        self.supplies
    }

    fn accepts(&self, id: &Identity) -> bool {
        self.requires.is_empty()
            || self.requires.iter().any(|alt| {
                alt.iter()
                    .all(|i| i.get(id).is_some_and(|v| !v.trim().is_empty()))
            })
    }

    fn find_request(
        &self,
        items: &[FindItem<'_>],
        _callback_url: Option<&str>,
    ) -> Result<HttpRequest, AdapterError> {
        let item = util::single_item(items, self.provider, self.needs, |id| self.accepts(id))?;
        let id = item.identity;
        let vars = Vars {
            id,
            asks: item.channels,
        };
        let mut query: Vec<(String, String)> = self
            .query
            .iter()
            .filter_map(|(k, t)| t.render(vars).map(|v| (k.clone(), v)))
            .collect();
        let mut headers = vec![("accept".to_string(), "application/json".to_string())];
        match &self.auth {
            AuthStyle::Header { name } => {
                headers.push((name.to_ascii_lowercase(), self.key.expose().to_string()));
            }
            AuthStyle::Bearer => headers.push((
                "authorization".to_string(),
                format!("Bearer {}", self.key.expose()),
            )),
            AuthStyle::Query { param } => {
                query.push((param.clone(), self.key.expose().to_string()));
            }
        }
        for (k, t) in &self.headers {
            if let Some(v) = t.render(vars) {
                headers.push((k.to_ascii_lowercase(), header_safe(&v)));
            }
        }
        let body = match &self.body {
            Some(b) => {
                headers.push(("content-type".to_string(), "application/json".to_string()));
                Some(
                    serde_json::to_vec(&b.render(vars)).map_err(|e| AdapterError::Invalid {
                        provider: self.provider,
                        message: format!("cannot encode the request body: {e}"),
                    })?,
                )
            }
            None => None,
        };
        Ok(HttpRequest {
            method: self.method,
            url: util::build_url(&self.base_url, &self.path, &query),
            headers,
            body,
            endpoint: self.endpoint,
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

    const PROSPEO: &str = include_str!("../../connectors/prospeo.toml");
    const FOUND: &str = include_str!("../../fixtures/providers/prospeo/found.json");
    const FOUND_EMAIL_ONLY: &str =
        include_str!("../../fixtures/providers/prospeo/found_email_only.json");
    const NO_MATCH: &str = include_str!("../../fixtures/providers/prospeo/no_match.json");
    const NO_CREDITS: &str =
        include_str!("../../fixtures/providers/prospeo/insufficient_credits.json");
    const INVALID_DATAPOINTS: &str =
        include_str!("../../fixtures/providers/prospeo/invalid_datapoints.json");
    const RATE_LIMITED: &str = include_str!("../../fixtures/providers/prospeo/rate_limited.json");
    const BAD_KEY: &str = include_str!("../../fixtures/providers/prospeo/invalid_api_key.json");
    const RESTRICTED: &str =
        include_str!("../../fixtures/providers/prospeo/account_restricted.json");
    const INTERNAL: &str = include_str!("../../fixtures/providers/prospeo/internal_error.json");
    const MALFORMED: &str = include_str!("../../fixtures/providers/prospeo/malformed.json");

    fn prospeo() -> Declarative {
        Declarative::new(&account(PROSPEO, "https://sim.test/")).unwrap()
    }

    fn one(d: &Declarative, cs: &[Channel], r: &HttpResponse) -> Classified {
        let id = ada();
        match d.classify_find(&[item("1", &id, cs)], r) {
            BatchOutcome::All(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prospeo_request_from_the_template() {
        let mut id = ada();
        id.first_name = Some("Ada \"The Countess\"\n".into());
        let req = prospeo()
            .find_request(&[item("1", &id, &[WorkEmail, Phone])], None)
            .unwrap();
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.url, "https://sim.test/enrich-person");
        assert_eq!(req.endpoint, "POST /enrich-person");
        assert_eq!(header(&req.headers, "x-key"), Some(KEY));
        assert_eq!(
            header(&req.headers, "content-type"),
            Some("application/json")
        );
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "only_verified_email": true,
                "enrich_mobile": true,
                "data": {
                    "first_name": "Ada \"The Countess\"",
                    "last_name": "Lovelace",
                    "company_website": "analytical.io",
                    "linkedin_url": ""
                }
            })
        );
        assert!(!format!("{req:?} {:?}", prospeo()).contains(KEY));

        let p = prospeo();
        assert!(p.accepts(&ada()));
        let li = Identity {
            linkedin_url: Some("https://www.linkedin.com/in/x".into()),
            ..Identity::default()
        };
        assert!(p.accepts(&li));
        let nobody = Identity {
            first_name: Some("Ada".into()),
            last_name: Some(" ".into()),
            domain: Some("a.io".into()),
            ..Identity::default()
        };
        assert!(!p.accepts(&nobody));
        assert_eq!(
            p.find_request(&[item("1", &nobody, &[WorkEmail])], None),
            Err(AdapterError::MissingInput {
                provider: "prospeo",
                needs: "first_name + last_name + domain, or linkedin_url"
            })
        );
        let a = ada();
        assert!(matches!(
            p.find_request(
                &[item("1", &a, &[WorkEmail]), item("2", &a, &[WorkEmail])],
                None
            ),
            Err(AdapterError::BatchTooLarge {
                provider: "prospeo",
                max: 1,
                got: 2
            })
        ));
    }

    #[test]
    fn prospeo_answers() {
        let p = prospeo();
        let c = one(&p, &[WorkEmail, Phone], &resp(200, FOUND));
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
                .status("VERIFIED"),
                ValueCandidate::new(Phone, "+44 20 7946 0958", Verification::Verified)
                    .status("VERIFIED"),
            ]
        );
        let c = one(&p, &[Phone], &resp(200, FOUND_EMAIL_ONLY));
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
        let c = one(&p, &[WorkEmail], &resp(400, NO_MATCH));
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
        assert_eq!(c.detail, "HTTP 400 NO_MATCH (rule 1)");
        let c = one(&p, &[WorkEmail], &resp(400, NO_CREDITS));
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        let c = one(&p, &[WorkEmail], &resp(400, INVALID_DATAPOINTS));
        assert_eq!(c.outcome, ProviderOutcome::InvalidInput);
        let c = one(
            &p,
            &[WorkEmail],
            &resp_h(429, &[("retry-after", "2")], RATE_LIMITED),
        );
        assert_eq!(
            c.outcome,
            ProviderOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        let c = one(&p, &[WorkEmail], &resp(401, BAD_KEY));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        let c = one(&p, &[WorkEmail], &resp(400, RESTRICTED));
        assert_eq!(c.outcome, ProviderOutcome::AuthError);
        let c = one(&p, &[WorkEmail], &resp(500, INTERNAL));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        let c = one(&p, &[WorkEmail], &resp(200, MALFORMED));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        assert_eq!(c.detail, "HTTP 200: malformed body");
        // Defaults when no rule matches.
        for (s, o) in [
            (401, ProviderOutcome::AuthError),
            (403, ProviderOutcome::AuthError),
            (402, ProviderOutcome::OutOfCredits),
            (404, ProviderOutcome::NotFound),
            (400, ProviderOutcome::InvalidInput),
            (422, ProviderOutcome::InvalidInput),
            (429, ProviderOutcome::RateLimited { retry_after: None }),
            (503, ProviderOutcome::Transient),
            (302, ProviderOutcome::Transient),
        ] {
            assert_eq!(one(&p, &[WorkEmail], &resp(s, "{}")).outcome, o, "HTTP {s}");
        }
    }

    const GENERIC: &str = r#"
id = "acme"
name = "Acme Lookup"
adapter = "declarative"
base_url = "https://api.acme.test/v1"
supplies = ["work_email", "phone"]
requires = [["email"], ["full_name", "company_name"]]
docs = "test"

[auth]
style = "query"
param = "token"

[request]
method = "get"
path = "/person"
query = { email = "{email}", name = "{full_name}", company = "{company_name} ({domain})", kind = "person", empty = "{country}" }
headers = { "X-Lead-Name" = "{full_name}", "X-Region" = "{country}" }

[response]
cost = "/meta/credits_used"

[response.channels.work_email]
value = "/result/email"
status = "/result/email_grade"
verified = ["a", "A+"]
catch_all = ["accept_all"]
invalid = ["f"]

[response.channels.phone]
value = "/result/phone"
do_not_call = "/result/dnc"

[[response.rules]]
status = [200]
pointer = "/result/quota_left"
equals = "0"
outcome = "out_of_credits"

[[response.rules]]
pointer = "/message"
contains = "gdpr"
outcome = "compliance_blocked"

[[response.rules]]
status = [202]
outcome = "transient"

[[response.rules]]
status = [200]
pointer = "/partial"
outcome = "found"
"#;

    fn generic() -> Declarative {
        Declarative::new(&account(GENERIC, "https://sim.test/v1")).unwrap()
    }

    #[test]
    fn generic_request_query_headers_and_auth() {
        let id = Identity {
            full_name: Some("Grace Hopper\r\nX-Evil: 1".into()),
            company_name: Some("US Navy & Co".into()),
            ..Identity::default()
        };
        let req = generic()
            .find_request(&[item("1", &id, &[WorkEmail])], None)
            .unwrap();
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.endpoint, "GET /person");
        assert!(req.body.is_none());
        assert_eq!(
            req.url,
            format!(
                "https://sim.test/v1/person?company=US%20Navy%20%26%20Co%20%28%29&kind=person\
                 &name=Grace%20Hopper%0D%0AX-Evil%3A%201&token={KEY}"
            )
        );
        assert_eq!(
            header(&req.headers, "x-lead-name"),
            Some("Grace Hopper  X-Evil: 1")
        );
        assert_eq!(header(&req.headers, "x-region"), None);
        assert_eq!(header(&req.headers, "content-type"), None);
        assert!(!req.endpoint.contains(KEY));
        let nobody = Identity {
            full_name: Some("x".into()),
            ..Identity::default()
        };
        assert!(!generic().accepts(&nobody));
    }

    #[test]
    fn generic_classification() {
        let g = generic();
        let body = r#"{"result":{"email":"g@navy.mil","email_grade":"A+","phone":4155550123,"dnc":true},"meta":{"credits_used":1.5}}"#;
        let c = one(&g, &[WorkEmail, Phone], &resp(200, body));
        let ProviderOutcome::Found {
            values,
            provider_cost,
        } = c.outcome
        else {
            panic!("{}", c.detail)
        };
        assert_eq!(provider_cost, Some(1_500));
        assert_eq!(values[0].verification, Verification::Verified);
        assert_eq!(values[0].provider_status.as_deref(), Some("A+"));
        assert_eq!(values[1].value, "4155550123");
        assert!(values[1].do_not_call);
        assert_eq!(values[1].verification, Verification::Unknown);

        let grade = |g_: &str| {
            let b = format!(r#"{{"result":{{"email":"g@navy.mil","email_grade":"{g_}"}}}}"#);
            match one(&g, &[WorkEmail], &resp(200, &b)).outcome {
                ProviderOutcome::Found { values, .. } => values[0].verification,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(grade("ACCEPT_ALL"), Verification::CatchAll);
        assert_eq!(grade("F"), Verification::Invalid);
        assert_eq!(grade("b"), Verification::Unknown);

        // Only asked channels; empty strings are no value.
        let c = one(
            &g,
            &[Phone],
            &resp(200, r#"{"result":{"email":"g@navy.mil","phone":"  "}}"#),
        );
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
        // Rules: equals on a number, contains case-insensitively, status only.
        let c = one(
            &g,
            &[WorkEmail],
            &resp(200, r#"{"result":{"email":"g@navy.mil","quota_left":0}}"#),
        );
        assert_eq!(c.outcome, ProviderOutcome::OutOfCredits);
        assert!(c.detail.ends_with("(rule 1)"), "{}", c.detail);
        let c = one(
            &g,
            &[WorkEmail],
            &resp(451, r#"{"message":"Blocked under GDPR art. 21"}"#),
        );
        assert_eq!(c.outcome, ProviderOutcome::ComplianceBlocked);
        let c = one(&g, &[WorkEmail], &resp(202, ""));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        // A `found` rule with nothing to extract is not found.
        let c = one(
            &g,
            &[WorkEmail],
            &resp(200, r#"{"partial":true,"result":{}}"#),
        );
        assert_eq!(c.outcome, ProviderOutcome::NotFound);
        assert!(c.detail.contains("(rule 4)"), "{}", c.detail);
        // Pointer rules never match a non-JSON body.
        let c = one(&g, &[WorkEmail], &resp(200, "not json"));
        assert_eq!(c.outcome, ProviderOutcome::Transient);
        // Negative or silly costs are dropped.
        let c = one(
            &g,
            &[WorkEmail],
            &resp(
                200,
                r#"{"result":{"email":"g@navy.mil"},"meta":{"credits_used":-4}}"#,
            ),
        );
        let ProviderOutcome::Found { provider_cost, .. } = c.outcome else {
            panic!()
        };
        assert_eq!(provider_cost, None);
    }

    fn build_err(toml_text: &str) -> String {
        Declarative::new(&account(toml_text, "https://sim.test"))
            .err()
            .map(|e| e.message)
            .unwrap_or_else(|| panic!("expected a build error"))
    }

    #[test]
    fn definitions_are_validated_with_the_key_at_fault() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[auth]\nstyle = \"query\"\nparam = \"token\"\n",
                "",
                "auth: missing",
            ),
            ("method = \"get\"", "method = \"PUT\"", "request.method"),
            ("path = \"/person\"", "path = \"person\"", "request.path"),
            (
                "path = \"/person\"",
                "path = \"/person/{email}\"",
                "request.path",
            ),
            (
                "{email}\", name",
                "{emial}\", name",
                "request.query.email: unknown placeholder {emial}",
            ),
            (
                "\"X-Region\" = \"{country}\"",
                "\"X Region\" = \"{country}\"",
                "request.headers",
            ),
            (
                "method = \"get\"",
                "method = \"get\"\nbody = '{\"a\": 1}'",
                "request.body: a GET request",
            ),
            (
                "value = \"/result/phone\"",
                "value = \"result/phone\"",
                "response.channels.phone.value",
            ),
            (
                "cost = \"/meta/credits_used\"",
                "cost = \"meta\"",
                "response.cost",
            ),
            (
                "pointer = \"/partial\"",
                "pointer = \"partial\"",
                "response.rules[3].pointer",
            ),
            (
                "status = [202]\n",
                "",
                "response.rules[2]: has no condition",
            ),
            (
                "status = [202]",
                "status = [99]",
                "response.rules[2].status",
            ),
            (
                "supplies = [\"work_email\", \"phone\"]",
                "supplies = [\"work_email\", \"linkedin_url\"]",
                "response.channels.linkedin_url: missing",
            ),
            (
                "supplies = [\"work_email\", \"phone\"]",
                "supplies = []",
                "supplies is empty",
            ),
            (
                "style = \"query\"\nparam = \"token\"",
                "style = \"header\"\nname = \"X Key\"",
                "auth.name",
            ),
            (
                "status = \"/result/email_grade\"\n",
                "",
                "response.channels.work_email: verified/catch_all/invalid words need a `status` pointer",
            ),
        ];
        for (from, to, want) in cases {
            let text = GENERIC.replacen(from, to, 1);
            assert_ne!(text, GENERIC, "case {want}: replacement did not apply");
            let msg = build_err(&text);
            assert!(msg.contains(want), "want `{want}`, got `{msg}`");
        }
        // Body validity, on a POST.
        let post = GENERIC.replacen(
            "method = \"get\"",
            "method = \"POST\"\nbody = '{\"a\": {full_name}}'",
            1,
        );
        assert!(
            build_err(&post).contains("request.body: not valid JSON"),
            "{}",
            build_err(&post)
        );
        let post = GENERIC.replacen(
            "method = \"get\"",
            "method = \"POST\"\nbody = '{\"a\": \"{nope}\"}'",
            1,
        );
        assert!(build_err(&post).contains("request.body: unknown placeholder {nope}"));
        let post = GENERIC.replacen(
            "method = \"get\"",
            "method = \"POST\"\nbody = '{\"a\": 1{email}}'",
            1,
        );
        assert!(
            build_err(&post).contains("inside JSON strings"),
            "{}",
            build_err(&post)
        );
        let opt = with_option(account(GENERIC, "https://sim.test"), "x", 1.into());
        assert!(
            Declarative::new(&opt)
                .unwrap_err()
                .message
                .contains("takes no options")
        );
        let verifier = GENERIC.replacen(
            "adapter = \"declarative\"",
            "adapter = \"declarative\"\nrole = \"verifier\"",
            1,
        );
        assert!(build_err(&verifier).contains("role"));
    }

    #[test]
    fn templates_parse_braces_and_placeholders() {
        assert_eq!(
            Template::parse("{}{first_name}{ x }{").unwrap(),
            Template(vec![
                Seg::Lit("{}".into()),
                Seg::Ph(IdentityInput::FirstName),
                Seg::Lit("{ x }{".into())
            ])
        );
        assert!(Template::parse("{zzz}").is_err());
        let none = Identity::default();
        let vars = Vars {
            id: &none,
            asks: ChannelSet::single(Channel::Phone),
        };
        let t = Template::parse("{first_name} {last_name}").unwrap();
        assert_eq!(t.render(vars), None);
        assert_eq!(t.render_all(vars), " ");
        assert_eq!(
            Template::parse("static").unwrap().render(vars).as_deref(),
            Some("static")
        );
        assert!(Template::parse("{asks.fax}").is_err());
        let asks = Template::parse("{asks.phone},{asks.work_email}").unwrap();
        assert_eq!(asks.render(vars).as_deref(), Some("true,false"));
        // A whole body string becomes a JSON boolean.
        let body =
            BodyTpl::from_value(serde_json::json!({"m": "{asks.phone}", "e": "{asks.work_email}"}))
                .unwrap();
        assert_eq!(
            body.render(vars),
            serde_json::json!({"m": true, "e": false})
        );
    }
}
