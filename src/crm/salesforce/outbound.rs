//! Outbound Messages (§7.1): `POST /webhooks/salesforce/<token>` with a
//! SOAP envelope, answered with the SOAP Ack.
//!
//! Order of work for a delivery (ARCHITECTURE.md invariant 14, product §3.8):
//! 1. [`check_token`]: the secret path segment, compared in constant time
//!    (over SHA-256 digests, so the length leaks nothing either). Outbound
//!    Messages carry **no signature** (§7.1): the token, HTTPS and the
//!    organisation check are what there is.
//! 2. [`parse`]: a small hand-written reader for this fixed shape (no XML
//!    crate): UTF-8 only, no DOCTYPE (so no entity tricks), depth and size
//!    bounded, the five predefined entities and numeric references decoded,
//!    CDATA kept, namespaces resolved whatever their prefixes. Malformed
//!    input is a typed [`OutboundError`], never a panic. A notification that
//!    cannot be read (an object other than Lead/Contact, no record Id) is
//!    set aside with a reason; the rest go on.
//! 3. [`check_org`]: `OrganizationId` must be the connection's org, compared
//!    on the case-sensitive first 15 characters (§7.1: payloads carry 18,
//!    docs show 15).
//! 4. [`to_crm_events`]: one [`CrmEvent`] per notification, with the dedupe
//!    key `om:<Notification Id>` (§7.1 "dedupe on Notification/Id"), so a
//!    redelivery (at-least-once, retried for 24 h) is recorded once. The
//!    `SessionId` (present when "Send Session ID" is ticked) is a live
//!    credential and is never copied into an event.
//! 5. Only after the events are recorded: [`ACK_BODY`] with HTTP 200. A
//!    missing or false Ack makes Salesforce retry (§7.1); a refusal may
//!    carry [`fault_body`], which Salesforce shows in the outbound-message
//!    queue as the delivery failure reason.
//!
//! **enrichd's own changes.** An Outbound Message carries only the fields
//! the admin chose, and no change origin: `Sforce-Call-Options: client=…`
//! is reported in CDC's `changeOrigin` (§3.1, §7.2), not in Outbound
//! Messages. What a message *can* carry is `LastModifiedById`. The rule
//! ([`OwnChangeRule`]): a notification whose `LastModifiedById` is the
//! integration user enrichd connected as (the user Id of the token
//! response's identity URL, §1.3) is enrichd's own write and triggers
//! nothing. The admin instructions therefore ask for `LastModifiedById` in
//! the message's fields (and, better still, a rule/flow criterion
//! `LastModifiedById != <integration user>` so no message is sent at all).
//! Caveat: other tools running as the same user are ignored too; the
//! scheduled SOQL pull still reads every change, so nothing is lost. A
//! notification without `LastModifiedById` is not assumed to be ours; the
//! event handler then re-reads the record and the mapping's decisions are
//! idempotent (writing what is already there writes nothing), so even then
//! there is no loop.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{SObject, is_record_id, same_id};
use crate::core::lead::{LeadId, WorkspaceId};
use crate::core::value::UnixMillis;
use crate::crm::CrmEvent;
use crate::secret::Secret;

/// The route prefix; the secret token is the next path segment.
pub const PATH: &str = "/webhooks/salesforce";
pub const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_ENV_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// At most 100 notifications per message (§7.1).
pub const MAX_NOTIFICATIONS: usize = 100;
/// Bodies larger than this are refused before parsing.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 100_000;
/// Attributes per element (the real shape has at most three).
const MAX_ATTRS: usize = 32;

/// The acknowledgement Salesforce requires (§7.1), exactly.
pub const ACK_BODY: &str = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
 <soapenv:Body>
  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse>
 </soapenv:Body>
</soapenv:Envelope>
"#;
/// The Ack's (and a fault's) content type (§7.1 request uses the same).
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// Why a delivery was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("the URL's secret token is missing or wrong")]
    BadToken,
    #[error("no secret token is configured for Salesforce Outbound Messages, so none is accepted")]
    NoToken,
    #[error("the body is {0} bytes; at most {MAX_BODY} are accepted")]
    TooLarge(usize),
    #[error("the body is not well-formed XML: {0}")]
    Xml(String),
    #[error("the body is not a Salesforce Outbound Message: {0}")]
    Shape(String),
    #[error("the message holds {0} notifications; Salesforce sends at most {MAX_NOTIFICATIONS}")]
    TooMany(usize),
    #[error(
        "the message comes from organisation {got}, not the connected organisation {expected}: check the Outbound Message's endpoint URL (each workspace has its own)"
    )]
    WrongOrg { got: String, expected: String },
}

impl OutboundError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            OutboundError::BadToken | OutboundError::NoToken => 401,
            OutboundError::WrongOrg { .. } => 403,
            OutboundError::TooLarge(_) => 413,
            OutboundError::Xml(_) | OutboundError::Shape(_) | OutboundError::TooMany(_) => 400,
        }
    }
}

// ---------------------------------------------------------------------------
// A small XML reader
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Attr {
    ns: Option<String>,
    name: String,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Element {
    ns: Option<String>,
    name: String,
    attrs: Vec<Attr>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }
    fn attr(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name && a.ns.as_deref() == Some(ns))
            .map(|a| a.value.as_str())
    }
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    fn child_text(&self, name: &str) -> Option<String> {
        self.child(name)
            .map(|c| c.text.trim().to_string())
            .filter(|t| !t.is_empty())
    }
    fn is_nil(&self) -> bool {
        self.attr(XSI_NS, "nil")
            .is_some_and(|v| matches!(v.trim(), "true" | "1"))
    }
}

fn xml_err(msg: impl Into<String>) -> OutboundError {
    OutboundError::Xml(msg.into())
}

/// An element being read: its raw qualified name, its namespace scope.
struct Open {
    qname: String,
    el: Element,
    /// Prefix → namespace declared on this element ("" = default).
    scope: Vec<(String, String)>,
}

struct Reader<'a> {
    s: &'a str,
    pos: usize,
    stack: Vec<Open>,
    elements: usize,
    root: Option<Element>,
}

fn is_name_char(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, '/' | '>' | '=' | '<' | '\'' | '"' | '&' | '?' | '!'))
}

/// Decodes `&amp; &lt; &gt; &quot; &apos; &#N; &#xH;`.
fn decode_entities(s: &str) -> Result<String, OutboundError> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let end = after
            .find(';')
            .filter(|e| *e <= 12)
            .ok_or_else(|| xml_err("an `&` that starts no entity"))?;
        let name = &after[..end];
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                .ok()
                .and_then(char::from_u32)
                .filter(|c| *c != '\0')
                .ok_or_else(|| xml_err(format!("bad character reference `&{n};`")))?,
            n if n.starts_with('#') => n[1..]
                .parse::<u32>()
                .ok()
                .and_then(char::from_u32)
                .filter(|c| *c != '\0')
                .ok_or_else(|| xml_err(format!("bad character reference `&{n};`")))?,
            n => return Err(xml_err(format!("unknown entity `&{n};`"))),
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn skip_past(&mut self, end: &str, what: &str) -> Result<&'a str, OutboundError> {
        let rest = self.rest();
        let p = rest
            .find(end)
            .ok_or_else(|| xml_err(format!("unterminated {what}")))?;
        self.pos += p + end.len();
        Ok(&rest[..p])
    }

    fn resolve(&self, own: &[(String, String)], prefix: &str) -> Option<String> {
        own.iter()
            .rev()
            .chain(self.stack.iter().rev().flat_map(|o| o.scope.iter().rev()))
            .find(|(p, _)| p == prefix)
            .map(|(_, ns)| ns.clone())
            .filter(|ns| !ns.is_empty())
    }

    fn text(&mut self, t: &str) -> Result<(), OutboundError> {
        match self.stack.last_mut() {
            Some(o) => {
                o.el.text.push_str(t);
                Ok(())
            }
            None if t.trim().is_empty() => Ok(()),
            None => Err(xml_err("text outside the root element")),
        }
    }

    fn run(mut self) -> Result<Element, OutboundError> {
        while self.pos < self.s.len() {
            let rest = self.rest();
            if rest.starts_with("<?") {
                self.skip_past("?>", "processing instruction")?;
            } else if rest.starts_with("<!--") {
                self.pos += 4;
                self.skip_past("-->", "comment")?;
            } else if rest.starts_with("<![CDATA[") {
                self.pos += 9;
                let t = self.skip_past("]]>", "CDATA section")?;
                self.text(t)?;
            } else if rest.starts_with("<!") {
                return Err(xml_err("DOCTYPE and other declarations are not accepted"));
            } else if rest.starts_with("</") {
                self.pos += 2;
                let name = self.skip_past(">", "end tag")?.trim_end();
                let open = self
                    .stack
                    .pop()
                    .ok_or_else(|| xml_err(format!("`</{name}>` closes nothing")))?;
                if open.qname != name {
                    return Err(xml_err(format!("`</{name}>` closes `<{}>`", open.qname)));
                }
                self.close(open.el)?;
            } else if rest.starts_with('<') {
                self.pos += 1;
                self.start_tag()?;
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let t = decode_entities(&rest[..end])?;
                self.pos += end;
                self.text(&t)?;
            }
        }
        if let Some(o) = self.stack.last() {
            return Err(xml_err(format!("`<{}>` is never closed", o.qname)));
        }
        self.root.ok_or_else(|| xml_err("no root element"))
    }

    fn close(&mut self, el: Element) -> Result<(), OutboundError> {
        match self.stack.last_mut() {
            Some(parent) => parent.el.children.push(el),
            None if self.root.is_none() => self.root = Some(el),
            None => return Err(xml_err("a second root element")),
        }
        Ok(())
    }

    fn start_tag(&mut self) -> Result<(), OutboundError> {
        let rest = self.rest();
        let name_end = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
        let qname = &rest[..name_end];
        if qname.is_empty() {
            return Err(xml_err("a `<` with no element name"));
        }
        self.pos += name_end;
        let mut raw_attrs: Vec<(&str, String)> = Vec::new();
        let self_closing;
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("/>") {
                self.pos += 2;
                self_closing = true;
                break;
            }
            if trimmed.starts_with('>') {
                self.pos += 1;
                self_closing = false;
                break;
            }
            if trimmed.is_empty() {
                return Err(xml_err(format!("unterminated tag `<{qname}`")));
            }
            let n_end = trimmed
                .find(|c: char| !is_name_char(c))
                .unwrap_or(trimmed.len());
            let an = &trimmed[..n_end];
            if an.is_empty() {
                return Err(xml_err(format!("bad attribute in `<{qname}>`")));
            }
            let after = trimmed[n_end..].trim_start();
            let after = after
                .strip_prefix('=')
                .ok_or_else(|| xml_err(format!("attribute `{an}` has no value")))?
                .trim_start();
            let quote = after
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .ok_or_else(|| xml_err(format!("attribute `{an}` is not quoted")))?;
            let body = &after[1..];
            let close = body
                .find(quote)
                .ok_or_else(|| xml_err(format!("attribute `{an}` is not terminated")))?;
            let raw = &body[..close];
            if raw.contains('<') {
                return Err(xml_err(format!("`<` inside attribute `{an}`")));
            }
            if raw_attrs.len() >= MAX_ATTRS {
                return Err(xml_err(format!("too many attributes in `<{qname}>`")));
            }
            if raw_attrs.iter().any(|(n, _)| *n == an) {
                return Err(xml_err(format!("attribute `{an}` given twice")));
            }
            raw_attrs.push((an, decode_entities(raw)?));
            let consumed = self.rest().len() - (body.len() - close - 1);
            self.pos += consumed;
        }
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(xml_err("too many elements"));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(xml_err("elements nested too deeply"));
        }
        let mut scope = Vec::new();
        for (n, v) in &raw_attrs {
            if *n == "xmlns" {
                scope.push((String::new(), v.clone()));
            } else if let Some(p) = n.strip_prefix("xmlns:") {
                scope.push((p.to_string(), v.clone()));
            }
        }
        let split = |q: &str| -> (String, String) {
            match q.split_once(':') {
                Some((p, l)) => (p.to_string(), l.to_string()),
                None => (String::new(), q.to_string()),
            }
        };
        let (prefix, local) = split(qname);
        let ns = self.resolve(&scope, &prefix);
        if !prefix.is_empty() && ns.is_none() {
            return Err(xml_err(format!("unbound namespace prefix `{prefix}`")));
        }
        let mut attrs = Vec::new();
        for (n, v) in raw_attrs {
            if n == "xmlns" || n.starts_with("xmlns:") {
                continue;
            }
            let (p, l) = split(n);
            // Unprefixed attributes have no namespace.
            let ans = if p.is_empty() {
                None
            } else {
                Some(
                    self.resolve(&scope, &p)
                        .ok_or_else(|| xml_err(format!("unbound namespace prefix `{p}`")))?,
                )
            };
            attrs.push(Attr {
                ns: ans,
                name: l,
                value: v,
            });
        }
        let el = Element {
            ns,
            name: local,
            attrs,
            children: Vec::new(),
            text: String::new(),
        };
        if self_closing {
            self.close(el)
        } else {
            self.stack.push(Open {
                qname: qname.to_string(),
                el,
                scope,
            });
            Ok(())
        }
    }
}

fn read_xml(body: &[u8]) -> Result<Element, OutboundError> {
    let s = std::str::from_utf8(body).map_err(|_| xml_err("not UTF-8"))?;
    let s = s.strip_prefix('\u{feff}').unwrap_or(s);
    Reader {
        s,
        pos: 0,
        stack: Vec::new(),
        elements: 0,
        root: None,
    }
    .run()
}

// ---------------------------------------------------------------------------
// The message
// ---------------------------------------------------------------------------

/// One `<Notification>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The notification's Id: the dedupe key (§7.1).
    pub id: String,
    pub object: SObject,
    /// The record's Id (`sf:Id`).
    pub record_id: String,
    /// Every field sent, by API name; `None` for `xsi:nil="true"`.
    pub fields: BTreeMap<String, Option<String>>,
}

/// A notification set aside, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedNotification {
    /// Position in the message (0-based).
    pub index: usize,
    /// The notification Id, when it could be read.
    pub id: Option<String>,
    pub reason: String,
}

/// A parsed Outbound Message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub organization_id: String,
    /// The outbound-message definition (§7.1).
    pub action_id: Option<String>,
    /// Whether a session Id was sent (it is never kept).
    pub has_session_id: bool,
    pub notifications: Vec<Notification>,
    pub rejected: Vec<RejectedNotification>,
}

fn shape(msg: impl Into<String>) -> OutboundError {
    OutboundError::Shape(msg.into())
}

/// Parses an Outbound Message body (authenticate it with [`check_token`]
/// first).
pub fn parse(body: &[u8]) -> Result<OutboundMessage, OutboundError> {
    if body.len() > MAX_BODY {
        return Err(OutboundError::TooLarge(body.len()));
    }
    let root = read_xml(body)?;
    if !(root.is(SOAP_ENV_NS, "Envelope") || root.is(SOAP12_ENV_NS, "Envelope")) {
        return Err(shape(format!(
            "the root element is `{}`, not a SOAP Envelope",
            root.name
        )));
    }
    let env_ns = root.ns.clone().unwrap_or_default();
    let body_el = root
        .children
        .iter()
        .find(|c| c.is(&env_ns, "Body"))
        .ok_or_else(|| shape("no SOAP Body"))?;
    let n = body_el
        .children
        .iter()
        .find(|c| c.is(OUTBOUND_NS, "notifications"))
        .ok_or_else(|| {
            shape(format!(
                "no `notifications` element in namespace {OUTBOUND_NS}"
            ))
        })?;
    let organization_id = n
        .child_text("OrganizationId")
        .filter(|o| is_record_id(o))
        .ok_or_else(|| shape("no valid OrganizationId"))?;
    let items: Vec<&Element> = n
        .children
        .iter()
        .filter(|c| c.name == "Notification")
        .collect();
    if items.len() > MAX_NOTIFICATIONS {
        return Err(OutboundError::TooMany(items.len()));
    }
    let has_session_id = n
        .child("SessionId")
        .is_some_and(|s| !s.is_nil() && !s.text.trim().is_empty());
    let mut msg = OutboundMessage {
        organization_id,
        action_id: n.child_text("ActionId"),
        has_session_id,
        notifications: Vec::new(),
        rejected: Vec::new(),
    };
    for (index, item) in items.into_iter().enumerate() {
        match notification(item) {
            Ok(x) => msg.notifications.push(x),
            Err(reason) => msg.rejected.push(RejectedNotification {
                index,
                id: item.child_text("Id"),
                reason,
            }),
        }
    }
    Ok(msg)
}

fn notification(item: &Element) -> Result<Notification, String> {
    let id = item
        .child_text("Id")
        .filter(|i| is_record_id(i))
        .ok_or("no valid notification `Id`")?;
    let so = item.child("sObject").ok_or("no `sObject`")?;
    let mut fields = BTreeMap::new();
    for f in &so.children {
        if !f.children.is_empty() {
            return Err(format!("field `{}` has nested elements", f.name));
        }
        let v = (!f.is_nil()).then(|| f.text.clone());
        fields.insert(f.name.clone(), v);
    }
    let record_id = fields
        .get("Id")
        .cloned()
        .flatten()
        .map(|s| s.trim().to_string())
        .filter(|s| is_record_id(s))
        .ok_or("the sObject has no valid `Id`")?;
    let declared = so.attr(XSI_NS, "type").map(|t| {
        let t = t.trim();
        t.rsplit_once(':').map_or(t, |(_, l)| l).to_string()
    });
    let object = match &declared {
        Some(t) => SObject::parse(t)
            .ok_or_else(|| format!("sObject type `{t}` is not handled (only Lead and Contact)"))?,
        None => SObject::of_id(&record_id)
            .ok_or("the sObject has no xsi:type and its Id is neither a Lead's nor a Contact's")?,
    };
    Ok(Notification {
        id,
        object,
        record_id,
        fields,
    })
}

// ---------------------------------------------------------------------------
// Checks, events, answers
// ---------------------------------------------------------------------------

/// Compares the URL's token with the configured one in constant time (over
/// SHA-256 digests: neither content nor length leaks).
pub fn check_token(presented: &str, expected: Option<&Secret>) -> Result<(), OutboundError> {
    let Some(expected) = expected.filter(|e| !e.expose().is_empty()) else {
        return Err(OutboundError::NoToken);
    };
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(&a, &b).map_err(|_| OutboundError::BadToken)
}

/// One workspace's Outbound Message endpoint: its URL token and org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRoute {
    pub workspace: WorkspaceId,
    pub token: Secret,
    /// The connected org (`00D…`), from the token response's identity URL.
    pub org_id: String,
}

/// The route whose token is `presented`. Every configured token is
/// compared (in constant time, no early exit), so timing tells nothing
/// about which or how many exist.
pub fn find_route<'a>(
    presented: &str,
    routes: &'a [TokenRoute],
) -> Result<&'a TokenRoute, OutboundError> {
    let mut found = None;
    let mut any = false;
    for r in routes {
        if r.token.expose().is_empty() {
            continue;
        }
        any = true;
        if check_token(presented, Some(&r.token)).is_ok() && found.is_none() {
            found = Some(r);
        }
    }
    match found {
        Some(r) => Ok(r),
        None if any => Err(OutboundError::BadToken),
        None => Err(OutboundError::NoToken),
    }
}

/// The message must come from the connected org (§7.1).
pub fn check_org(msg: &OutboundMessage, expected_org: &str) -> Result<(), OutboundError> {
    if same_id(&msg.organization_id, expected_org) {
        Ok(())
    } else {
        Err(OutboundError::WrongOrg {
            got: msg.organization_id.clone(),
            expected: expected_org.trim().to_string(),
        })
    }
}

/// Token, parse, org: everything before recording.
pub fn verify(
    body: &[u8],
    presented_token: &str,
    expected_token: Option<&Secret>,
    expected_org: &str,
) -> Result<OutboundMessage, OutboundError> {
    check_token(presented_token, expected_token)?;
    let msg = parse(body)?;
    check_org(&msg, expected_org)?;
    Ok(msg)
}

/// The dedupe key of a notification.
pub fn dedupe_key(n: &Notification) -> String {
    format!("om:{}", n.id)
}

/// `lead.outbound_message` / `contact.outbound_message`.
pub fn event_kind(object: SObject) -> String {
    format!("{}.outbound_message", object.as_str().to_ascii_lowercase())
}

/// One event per notification (repeats inside the message collapsed).
/// `occurred_at` is the record's `SystemModstamp` or `LastModifiedDate`
/// when sent, else `received_at`.
pub fn to_crm_events(
    workspace: &WorkspaceId,
    msg: &OutboundMessage,
    received_at: UnixMillis,
) -> Vec<CrmEvent> {
    let mut seen = std::collections::HashSet::new();
    msg.notifications
        .iter()
        .filter(|n| seen.insert(n.id.clone()))
        .map(|n| {
            let occurred_at = ["SystemModstamp", "LastModifiedDate"]
                .iter()
                .find_map(|f| n.fields.get(*f).cloned().flatten())
                .and_then(|t| super::datetime::parse(&t))
                .unwrap_or(received_at);
            let fields: Map<String, Value> = n
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
                .collect();
            CrmEvent {
                workspace: workspace.clone(),
                crm: super::CRM.into(),
                dedupe_key: dedupe_key(n),
                lead_id: LeadId(n.record_id.clone()),
                kind: event_kind(n.object),
                property: None,
                value: None,
                occurred_at,
                payload: json!({
                    "organizationId": msg.organization_id,
                    "actionId": msg.action_id,
                    "notificationId": n.id,
                    "sObject": n.object.as_str(),
                    "id": n.record_id,
                    "fields": fields,
                }),
            }
        })
        .collect()
}

/// How enrichd recognises its own changes in Outbound Messages (see the
/// module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnChangeRule {
    /// The integration user's Id (from the identity URL, §1.3).
    pub integration_user_id: Option<String>,
}

impl OwnChangeRule {
    /// Why a notification's fields show enrichd's own change, if they do.
    pub fn own_change(&self, fields: &BTreeMap<String, Option<String>>) -> Option<String> {
        let user = self.integration_user_id.as_deref()?;
        let by = fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("LastModifiedById"))
            .and_then(|(_, v)| v.as_deref())?;
        same_id(by, user).then(|| {
            format!(
                "last modified by enrichd's integration user {user} (enrichd's own write; no loop)"
            )
        })
    }

    /// The same for a recorded event (its payload's `fields`).
    pub fn own_change_event(&self, e: &CrmEvent) -> Option<String> {
        let fields: BTreeMap<String, Option<String>> = e
            .payload
            .get("fields")
            .and_then(Value::as_object)?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(String::from)))
            .collect();
        self.own_change(&fields)
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\n' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

/// A SOAP 1.1 Fault carrying `reason` (shown by Salesforce as the delivery
/// failure). `client` faults are the sender's problem (token, org, body).
pub fn fault_body(reason: &str, client: bool) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\">\n <soapenv:Body>\n  <soapenv:Fault><faultcode>soapenv:{}</faultcode><faultstring>{}</faultstring></soapenv:Fault>\n </soapenv:Body>\n</soapenv:Envelope>\n",
        if client { "Client" } else { "Server" },
        xml_escape(reason)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's example (§7.1), with an 18-character org Id.
    const EXAMPLE: &str = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00Dxx0000001gPLEAY</OrganizationId>
   <ActionId>04kxx0000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/60.0/00Dxx0000001gPL</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/60.0/00Dxx0000001gPL</PartnerUrl>
   <Notification>
    <Id>04lxx0000000001AAA</Id>
    <sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>00Qxx0000001abcEAA</sf:Id><sf:Email>jane@acme.com</sf:Email>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#;

    fn token() -> Secret {
        Secret::new("s3cr3t-path-token")
    }

    #[test]
    fn parses_the_reference_example() {
        let m = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(m.organization_id, "00Dxx0000001gPLEAY");
        assert_eq!(m.action_id.as_deref(), Some("04kxx0000000001AAA"));
        assert!(!m.has_session_id);
        assert!(m.rejected.is_empty());
        assert_eq!(m.notifications.len(), 1);
        let n = &m.notifications[0];
        assert_eq!(n.id, "04lxx0000000001AAA");
        assert_eq!(n.object, SObject::Lead);
        assert_eq!(n.record_id, "00Qxx0000001abcEAA");
        assert_eq!(
            n.fields.get("Email"),
            Some(&Some("jane@acme.com".to_string()))
        );
        // The docs' 15-character org Id matches.
        assert!(check_org(&m, "00Dxx0000001gPL").is_ok());
        assert!(matches!(
            check_org(&m, "00Dxx0000001gPM"),
            Err(OutboundError::WrongOrg { .. })
        ));
    }

    #[test]
    fn other_prefixes_entities_cdata_nil_and_several_notifications() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<S:Envelope xmlns:S='http://schemas.xmlsoap.org/soap/envelope/'>
<S:Body><o:notifications xmlns:o="http://soap.sforce.com/2005/09/outbound" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
<o:OrganizationId>00Dxx0000001gPLEAY</o:OrganizationId>
<o:SessionId>00Dxx0000001gPL!AQ0Asecret</o:SessionId>
<o:Notification><o:Id>04lxx0000000001AAA</o:Id>
<o:sObject i:type="x:Contact" xmlns:x="urn:sobject.enterprise.soap.sforce.com">
<x:Id>003xx000004TmiQAAS</x:Id>
<x:LastName>O&apos;Brien &amp; Sons &lt;&#233;&#xE9;&gt; &quot;q&quot;</x:LastName>
<x:Title><![CDATA[<VP> & Head]]></x:Title>
<x:Phone i:nil="true"/>
<x:SystemModstamp>2026-05-01T07:25:37.000Z</x:SystemModstamp>
</o:sObject></o:Notification>
<o:Notification><o:Id>04lxx0000000002AAA</o:Id>
<o:sObject xmlns:x="urn:sobject.enterprise.soap.sforce.com"><x:Id>00Qxx0000001abcEAA</x:Id></o:sObject></o:Notification>
<o:Notification><o:Id>04lxx0000000003AAA</o:Id>
<o:sObject i:type="x:Account" xmlns:x="urn:sobject.enterprise.soap.sforce.com"><x:Id>001xx000003DGb2AAG</x:Id></o:sObject></o:Notification>
<o:Notification><o:Id>04lxx0000000004AAA</o:Id><o:sObject/></o:Notification>
</o:notifications></S:Body></S:Envelope>"#;
        let m = parse(body.as_bytes()).unwrap();
        assert!(m.has_session_id);
        assert_eq!(m.notifications.len(), 2);
        let c = &m.notifications[0];
        assert_eq!(c.object, SObject::Contact);
        assert_eq!(
            c.fields["LastName"].as_deref(),
            Some("O'Brien & Sons <éé> \"q\"")
        );
        assert_eq!(c.fields["Title"].as_deref(), Some("<VP> & Head"));
        assert_eq!(c.fields["Phone"], None);
        // No xsi:type: the type comes from the Id's prefix.
        assert_eq!(m.notifications[1].object, SObject::Lead);
        assert_eq!(m.rejected.len(), 2);
        assert!(m.rejected[0].reason.contains("Account"), "{:?}", m.rejected);
        assert_eq!(m.rejected[1].id.as_deref(), Some("04lxx0000000004AAA"));

        // Events: dedupe key from the notification, no session id anywhere.
        let ws = WorkspaceId("acme".into());
        let events = to_crm_events(&ws, &m, 42);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].dedupe_key, "om:04lxx0000000001AAA");
        assert_eq!(events[0].crm, "salesforce");
        assert_eq!(events[0].kind, "contact.outbound_message");
        assert_eq!(events[0].lead_id.as_str(), "003xx000004TmiQAAS");
        assert_eq!(events[0].occurred_at, 1_777_620_337_000);
        assert_eq!(events[1].occurred_at, 42);
        assert_eq!(events[0].payload["fields"]["Phone"], Value::Null);
        let all = serde_json::to_string(&events).unwrap();
        assert!(!all.contains("AQ0Asecret"), "{all}");
    }

    #[test]
    fn a_redelivery_has_the_same_keys_and_repeats_collapse() {
        let ws = WorkspaceId("acme".into());
        let a = to_crm_events(&ws, &parse(EXAMPLE.as_bytes()).unwrap(), 1);
        let b = to_crm_events(&ws, &parse(EXAMPLE.as_bytes()).unwrap(), 999);
        assert_eq!(
            a.iter().map(|e| &e.dedupe_key).collect::<Vec<_>>(),
            b.iter().map(|e| &e.dedupe_key).collect::<Vec<_>>()
        );
        let twice = EXAMPLE.replace(
            "</Notification>",
            "</Notification><Notification><Id>04lxx0000000001AAA</Id><sObject><Id>00Qxx0000001abcEAA</Id></sObject></Notification>",
        );
        let m = parse(twice.as_bytes()).unwrap();
        assert_eq!(m.notifications.len(), 2);
        assert_eq!(to_crm_events(&ws, &m, 0).len(), 1);
    }

    #[test]
    fn token_and_org_checks() {
        let t = token();
        assert!(
            verify(
                EXAMPLE.as_bytes(),
                "s3cr3t-path-token",
                Some(&t),
                "00Dxx0000001gPLEAY"
            )
            .is_ok()
        );
        assert_eq!(
            verify(EXAMPLE.as_bytes(), "wrong", Some(&t), "00Dxx0000001gPLEAY"),
            Err(OutboundError::BadToken)
        );
        assert_eq!(check_token("", Some(&t)), Err(OutboundError::BadToken));
        assert_eq!(
            check_token("s3cr3t-path-token-", Some(&t)),
            Err(OutboundError::BadToken)
        );
        assert_eq!(check_token("x", None), Err(OutboundError::NoToken));
        assert_eq!(
            check_token("", Some(&Secret::new(""))),
            Err(OutboundError::NoToken)
        );
        // The token is checked before the body is even parsed.
        assert_eq!(
            verify(b"garbage", "wrong", Some(&t), "x"),
            Err(OutboundError::BadToken)
        );
        let e = verify(
            EXAMPLE.as_bytes(),
            "s3cr3t-path-token",
            Some(&t),
            "00Dyy0000001gPLEAY",
        )
        .unwrap_err();
        assert_eq!(e.status(), 403);
        assert!(!e.to_string().contains("s3cr3t"));
        assert_eq!(OutboundError::BadToken.status(), 401);
    }

    #[test]
    fn routing_by_token() {
        let routes = vec![
            TokenRoute {
                workspace: WorkspaceId("a".into()),
                token: Secret::new("token-a"),
                org_id: "00Dxx0000001gPLEAY".into(),
            },
            TokenRoute {
                workspace: WorkspaceId("b".into()),
                token: Secret::new("token-b"),
                org_id: "00Dyy0000001gPLEAY".into(),
            },
        ];
        assert_eq!(
            find_route("token-b", &routes).unwrap().workspace.as_str(),
            "b"
        );
        assert_eq!(find_route("token-c", &routes), Err(OutboundError::BadToken));
        assert_eq!(find_route("token-a", &[]), Err(OutboundError::NoToken));
        let r = find_route("token-a", &routes).unwrap();
        let m = parse(EXAMPLE.as_bytes()).unwrap();
        assert!(check_org(&m, &r.org_id).is_ok());
        assert!(check_org(&m, &routes[1].org_id).is_err());
        let wide = format!(
            "<a {}/>",
            (0..40)
                .map(|i| format!("x{i}='1'"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(matches!(parse(wide.as_bytes()), Err(OutboundError::Xml(_))));
    }

    #[test]
    fn own_changes() {
        let rule = OwnChangeRule {
            integration_user_id: Some("005xx000001SwiUAAS".into()),
        };
        let mut f = BTreeMap::new();
        assert_eq!(rule.own_change(&f), None);
        f.insert(
            "LastModifiedById".to_string(),
            Some("005xx000001SwiU".to_string()),
        );
        assert!(rule.own_change(&f).unwrap().contains("no loop"));
        f.insert(
            "LastModifiedById".to_string(),
            Some("005xx000009ZZZZAAA".to_string()),
        );
        assert_eq!(rule.own_change(&f), None);
        assert_eq!(OwnChangeRule::default().own_change(&f), None);
        let body = EXAMPLE.replace(
            "<sf:Email>",
            "<sf:LastModifiedById>005xx000001SwiUAAS</sf:LastModifiedById><sf:Email>",
        );
        let events = to_crm_events(
            &WorkspaceId("w".into()),
            &parse(body.as_bytes()).unwrap(),
            0,
        );
        assert!(rule.own_change_event(&events[0]).is_some());
    }

    #[test]
    fn shape_errors() {
        let cases: &[(&str, &str)] = &[
            ("<a/>", "not a SOAP Envelope"),
            (
                r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"/>"#,
                "no SOAP Body",
            ),
            (
                r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><notifications/></e:Body></e:Envelope>"#,
                "no `notifications`",
            ),
            (
                r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>bad id</OrganizationId></notifications></e:Body></e:Envelope>"#,
                "OrganizationId",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body.as_bytes()).unwrap_err();
            assert!(matches!(e, OutboundError::Shape(_)), "{body}: {e}");
            assert!(e.to_string().contains(want), "{body}: {e}");
        }
        let one = "<Notification><Id>04lxx0000000001AAA</Id><sObject/></Notification>";
        let body = EXAMPLE.replace(
            "<EnterpriseUrl>",
            &format!("{}<EnterpriseUrl>", one.repeat(101)),
        );
        assert_eq!(parse(body.as_bytes()), Err(OutboundError::TooMany(102)));
        assert!(matches!(
            parse(&vec![b' '; MAX_BODY + 1]),
            Err(OutboundError::TooLarge(_))
        ));
    }

    #[test]
    fn xml_errors() {
        for bad in [
            "",
            "   ",
            "<",
            "<>",
            "<a>",
            "<a></b>",
            "</a>",
            "<a/><b/>",
            "text<a/>",
            "<a x=1/>",
            "<a x/>",
            "<a x='1' x='2'/>",
            "<a x=\"<\"/>",
            "<a>&unknown;</a>",
            "<a>&#0;</a>",
            "<a>&#xD800;</a>",
            "<a>&#99999999999;</a>",
            "<a>& </a>",
            "<p:a/>",
            "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            "<a><!-- unterminated </a>",
            "<a><![CDATA[ x </a>",
            "<?xml version='1.0'",
        ] {
            let e = parse(bad.as_bytes()).unwrap_err();
            assert!(matches!(e, OutboundError::Xml(_)), "{bad:?}: {e:?}");
        }
        assert!(matches!(parse(b"\xff\xfe<a/>"), Err(OutboundError::Xml(_))));
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(matches!(parse(deep.as_bytes()), Err(OutboundError::Xml(_))));
    }

    /// Every prefix of the example, and the example with bytes flipped,
    /// dropped or repeated: an error or a message, never a panic.
    #[test]
    fn truncated_and_garbled_inputs_never_panic() {
        let b = EXAMPLE.as_bytes();
        for i in 0..b.len() {
            let _ = parse(&b[..i]);
            let mut dropped = b.to_vec();
            dropped.remove(i);
            let _ = parse(&dropped);
        }
        // A cheap deterministic generator (no proptest here).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"<>/=\"' &;#x:![]?-abcAZ09\n";
        for _ in 0..3000 {
            let mut v = b.to_vec();
            for _ in 0..(next() % 8 + 1) {
                let i = (next() as usize) % v.len();
                match next() % 3 {
                    0 => v[i] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        v.remove(i);
                    }
                    _ => v.insert(i, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let _ = parse(&v);
        }
        for _ in 0..500 {
            let len = (next() % 200) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() as usize) % alphabet.len()])
                .collect();
            let _ = parse(&v);
        }
    }

    #[test]
    fn ack_and_fault() {
        assert!(ACK_BODY.contains("<notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\"><Ack>true</Ack></notificationsResponse>"));
        assert!(ACK_BODY.starts_with(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">"
        ));
        // Our own reader reads both.
        assert!(read_xml(ACK_BODY.as_bytes()).is_ok());
        let f = fault_body("org <x> & \"y\"", true);
        assert!(
            f.contains("<faultstring>org &lt;x&gt; &amp; &quot;y&quot;</faultstring>"),
            "{f}"
        );
        assert!(f.contains("soapenv:Client"));
        let root = read_xml(f.as_bytes()).unwrap();
        assert_eq!(root.children[0].children[0].name, "Fault");
    }
}
