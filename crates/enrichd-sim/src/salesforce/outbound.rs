//! Outbound Messages (§7.1): notifications queued by record changes that meet a configured
//! rule, POSTed as SOAP (up to 100 per message) by a background task, retried with
//! exponential backoff (sim time) until a SOAP `<Ack>true</Ack>` comes back, dropped after
//! 24 h.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Shared;
use super::schema::Obj;
use super::stats::OmDelivery;
use super::store::Store;
use super::time::{make_id, sf_datetime};

const MAX_PER_MESSAGE: usize = 100;
const MAX_BACKOFF_MS: i64 = 2 * 3600 * 1000;
const GIVE_UP_MS: i64 = 24 * 3600 * 1000;

/// One queued notification.
#[derive(Clone, Debug)]
pub(crate) struct Note {
    /// `04l…`: the same on every redelivery.
    pub id: String,
    pub config: usize,
    pub object: Obj,
    /// (field, value) as of the change, Id first; null values are omitted from the XML.
    pub fields: Vec<(String, Option<String>)>,
    pub first_ms: i64,
    pub next_ms: i64,
    pub attempts: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub pending: Vec<Note>,
    pub next: u64,
    in_flight: usize,
}

/// Notifications for a change to record `i` (called with the store locked, after the write).
pub(crate) fn on_change(
    sh: &Shared,
    st: &Store,
    obj: Obj,
    i: u32,
    created: bool,
    changed: &[super::store::FieldChange],
    user: usize,
) -> Vec<Note> {
    if sh.opts.outbound.is_empty() {
        return Vec::new();
    }
    let t = st.table(obj);
    let user_id = st.users.get(user).map(|u| u.id.as_str()).unwrap_or("");
    let now = sh.clock.now_ms();
    let mut out = Vec::new();
    for (k, cfg) in sh.opts.outbound.iter().enumerate() {
        if Obj::parse(&cfg.object) != Some(obj) {
            continue;
        }
        let r = &cfg.rule;
        let fires = if created {
            r.on_create
        } else {
            r.on_edit
                && (r.changed_fields.is_empty()
                    || changed.iter().any(|c| {
                        r.changed_fields
                            .iter()
                            .any(|f| f.eq_ignore_ascii_case(&c.field))
                    }))
        };
        let excluded = r.exclude_user_ids.iter().any(|u| {
            super::time::to_id18(u)
                .map(|u| u == user_id)
                .unwrap_or(false)
        });
        if !fires || excluded {
            continue;
        }
        let mut fields = vec![("Id".to_string(), Some(t.recs[i as usize].id.clone()))];
        for f in &cfg.fields {
            if let Some(fi) = t.schema.idx(f)
                && t.schema.def(fi).name != "Id"
            {
                fields.push((
                    t.schema.def(fi).name.to_string(),
                    t.recs[i as usize].vals[fi].to_plain(),
                ));
            }
        }
        out.push(Note {
            id: String::new(),
            config: k,
            object: obj,
            fields,
            first_ms: now,
            next_ms: now,
            attempts: 0,
        });
    }
    out
}

/// Queue notifications (ids assigned here) and wake the delivery task.
pub(crate) fn enqueue(sh: &Shared, notes: Vec<Note>) {
    if notes.is_empty() {
        return;
    }
    {
        let mut q = sh.outbox();
        for mut n in notes {
            q.next += 1;
            n.id = make_id("04l", q.next);
            q.pending.push(n);
        }
    }
    sh.outbound_wake();
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// The SOAP envelope for `notes` (all of one configuration).
pub(crate) fn envelope(sh: &Shared, cfg: usize, notes: &[Note], session: Option<&str>) -> String {
    let org15 = &sh.opts.org_id[..15.min(sh.opts.org_id.len())];
    let ver = &sh.opts.latest_api_version;
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n <soapenv:Body>\n  <notifications xmlns=\"http://soap.sforce.com/2005/09/outbound\">\n");
    x.push_str(&format!(
        "   <OrganizationId>{}</OrganizationId>\n",
        xml_escape(&sh.opts.org_id)
    ));
    x.push_str(&format!(
        "   <ActionId>{}</ActionId>\n",
        make_id("04k", cfg as u64 + 1)
    ));
    match session {
        Some(s) => x.push_str(&format!("   <SessionId>{}</SessionId>\n", xml_escape(s))),
        None => x.push_str("   <SessionId xsi:nil=\"true\"/>\n"),
    }
    x.push_str(&format!(
        "   <EnterpriseUrl>{}/services/Soap/c/{ver}/{org15}</EnterpriseUrl>\n",
        xml_escape(&sh.instance_url)
    ));
    x.push_str(&format!(
        "   <PartnerUrl>{}/services/Soap/u/{ver}/{org15}</PartnerUrl>\n",
        xml_escape(&sh.instance_url)
    ));
    for n in notes {
        x.push_str("   <Notification>\n");
        x.push_str(&format!("    <Id>{}</Id>\n", n.id));
        x.push_str(&format!(
            "    <sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n",
            n.object.name()
        ));
        for (k, v) in &n.fields {
            if let Some(v) = v {
                x.push_str(&format!("     <sf:{k}>{}</sf:{k}>\n", xml_escape(v)));
            }
        }
        x.push_str("    </sObject>\n   </Notification>\n");
    }
    x.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
    x
}

/// Whether a SOAP answer acknowledges: an `Ack` element (any prefix) whose text is `true`.
pub(crate) fn is_ack(body: &str) -> bool {
    let mut rest = body;
    while let Some(p) = rest.find("Ack>") {
        let before = &rest[..p];
        let after = &rest[p + 4..];
        // An opening tag: `<Ack>` or `<ns:Ack>`.
        let opening = before
            .rfind('<')
            .map(|lt| {
                let tag = &before[lt + 1..];
                !tag.starts_with('/') && (tag.is_empty() || tag.ends_with(':'))
            })
            .unwrap_or(false);
        if opening {
            let text = after.split('<').next().unwrap_or("").trim();
            return text == "true";
        }
        rest = after;
    }
    false
}

fn backoff_ms(base: Duration, attempts: u32) -> i64 {
    let b = base.as_millis().max(1) as i64;
    let shift = attempts.saturating_sub(1).min(20);
    (b.saturating_mul(1i64 << shift)).min(MAX_BACKOFF_MS)
}

/// Deliver every due notification once (grouped per configuration, ≤ 100 per message).
pub(crate) async fn deliver_due(sh: &Arc<Shared>) {
    let now = sh.clock.now_ms();
    let due: Vec<Note> = {
        let mut q = sh.outbox();
        let (due, keep): (Vec<Note>, Vec<Note>) =
            q.pending.drain(..).partition(|n| n.next_ms <= now);
        q.pending = keep;
        q.in_flight += due.len();
        due
    };
    if due.is_empty() {
        return;
    }
    let mut by_cfg: Vec<Vec<Note>> = vec![Vec::new(); sh.opts.outbound.len()];
    for n in due {
        if let Some(v) = by_cfg.get_mut(n.config) {
            v.push(n);
        }
    }
    for (cfg, notes) in by_cfg.into_iter().enumerate() {
        for chunk in notes.chunks(MAX_PER_MESSAGE) {
            let chunk = chunk.to_vec();
            let n = chunk.len();
            send(sh, cfg, chunk).await;
            sh.outbox().in_flight -= n;
        }
    }
}

async fn send(sh: &Arc<Shared>, cfg: usize, mut notes: Vec<Note>) {
    let Some(c) = sh.opts.outbound.get(cfg) else {
        return;
    };
    let session = if c.send_session_id {
        let now = sh.clock.now_ms();
        let org15 = sh.opts.org_id[..15.min(sh.opts.org_id.len())].to_string();
        let tok = format!("{org15}!AQ4AQ{}", sh.token_chars(96));
        Some(sh.auth().session_of(0, now, || tok))
    } else {
        None
    };
    let body = envelope(sh, cfg, &notes, session.as_deref());
    let res = sh
        .http
        .post(&c.endpoint_url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", "\"\"")
        .header("User-Agent", "Salesforce - OutboundMessage")
        .timeout(sh.opts.outbound_timeout)
        .body(body)
        .send()
        .await;
    let (status, acked) = match res {
        Ok(r) => {
            let st = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (st, st == 200 && is_ack(&text))
        }
        Err(_) => (0, false),
    };
    let attempt = notes.iter().map(|n| n.attempts + 1).max().unwrap_or(1);
    sh.ctl().stats.outbound_deliveries.push(OmDelivery {
        endpoint_url: c.endpoint_url.clone(),
        notification_ids: notes.iter().map(|n| n.id.clone()).collect(),
        status,
        acked,
        attempt,
    });
    if acked {
        return;
    }
    let now = sh.clock.now_ms();
    let base = sh.opts.outbound_retry_base;
    let mut q = sh.outbox();
    for n in notes.iter_mut() {
        n.attempts += 1;
        if now - n.first_ms >= GIVE_UP_MS {
            continue;
        }
        n.next_ms = now + backoff_ms(base, n.attempts);
        q.pending.push(n.clone());
    }
}

/// Make every pending notification due now and deliver them (waits for deliveries the
/// background task has in flight).
pub(crate) async fn flush(sh: &Arc<Shared>) {
    let now = sh.clock.now_ms();
    {
        let mut q = sh.outbox();
        for n in q.pending.iter_mut() {
            n.next_ms = n.next_ms.min(now);
        }
    }
    deliver_due(sh).await;
    for _ in 0..2000 {
        if sh.outbox().in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The background delivery loop.
pub(crate) async fn run(sh: Arc<Shared>) {
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(50), sh.outbound_notified()).await;
        deliver_due(&sh).await;
    }
}

pub(crate) fn pending_json(sh: &Shared) -> Value {
    let q = sh.outbox();
    Value::Array(
        q.pending
            .iter()
            .map(|n| {
                json!({"id": n.id, "object": n.object.name(),
                       "record_id": n.fields.first().and_then(|f| f.1.clone()),
                       "attempts": n.attempts, "next_attempt": sf_datetime(n.next_ms)})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_detection() {
        assert!(is_ack(
            "<soapenv:Envelope><soapenv:Body><notificationsResponse xmlns=\"x\"><Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
        ));
        assert!(is_ack("<ns1:Ack> true </ns1:Ack>"));
        assert!(!is_ack("<Ack>false</Ack>"));
        assert!(!is_ack("<NoAck>true</NoAck>"));
        assert!(!is_ack("ok"));
    }

    #[test]
    fn backoff_caps() {
        let b = Duration::from_secs(15);
        assert_eq!(backoff_ms(b, 1), 15_000);
        assert_eq!(backoff_ms(b, 2), 30_000);
        assert_eq!(backoff_ms(b, 30), MAX_BACKOFF_MS);
    }
}
