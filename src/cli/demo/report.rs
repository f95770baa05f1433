//! The demo's report: the parts every CRM's demo has (statuses, values
//! written with their Source, typed values left alone, credits, change
//! notifications, provider calls), each CRM's own section (connect, first
//! pass, API calls against its limits), and the table rendering.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::core::mapping::Mapping;

/// What a demo reports. `crm_report` (the CRM's own section) is flattened
/// into the top level: `contacts`, `connect`, `first_pass`, `hubspot_api`
/// for HubSpot; `leads`, `connect`, `first_pass`, `salesforce_api`, … for
/// Salesforce.
#[derive(Debug, Default, Serialize)]
pub(super) struct DemoReport<C> {
    pub workspace: String,
    /// `hubspot` or `salesforce`.
    pub crm: &'static str,
    pub providers: Vec<String>,
    pub limit_scale: u32,
    pub database: String,
    pub config: String,
    #[serde(flatten)]
    pub crm_report: C,
    /// Leads per status (full, partial, empty, none = in no audience):
    /// before (only what the records held) and after the first pass.
    pub statuses: BTreeMap<String, BeforeAfter>,
    pub written: WrittenReport,
    pub human_typed: HumanReport,
    pub credits: CreditsReport,
    /// HubSpot webhooks or Salesforce Outbound Messages.
    pub webhooks: WebhookReport,
    pub provider_api: BTreeMap<String, ProviderLine>,
    pub elapsed_secs: f64,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct BeforeAfter {
    pub before: usize,
    pub after: usize,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct WrittenReport {
    /// Records holding at least one value enrichd wrote.
    pub contacts: usize,
    /// Channel values written, with their Source.
    pub values: usize,
    /// Channel values in the CRM without their Source (always 0).
    pub values_without_source: usize,
    /// Channel → Source → values.
    pub by_channel: BTreeMap<String, BTreeMap<String, usize>>,
    /// Status field value → records.
    pub status: BTreeMap<String, usize>,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct HumanReport {
    /// Records that already had an email / a phone a person typed.
    pub emails: usize,
    pub phones: usize,
    /// Of those values, how many the CRM still holds unchanged at the end.
    pub unchanged: usize,
    /// Of those channels, how many were charged for anyway (always 0: a
    /// value on the record is never searched for).
    pub charged: usize,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct CreditsReport {
    /// The budget counter of the period.
    pub charged: i64,
    /// The customer-credit ledger: one row per value charged.
    pub ledger_entries: usize,
    pub ledger_sum: i64,
    pub by_channel: BTreeMap<String, i64>,
    pub period: String,
    pub budget: Option<i64>,
    /// What providers billed (the spend ledger), per account, in their credits.
    pub provider_spend: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct WebhookReport {
    /// A record created in the CRM, enriched and written back.
    pub created: Option<CreatedReport>,
    /// An edit of a complete record: handled, nothing to buy.
    pub edit: Option<EditReport>,
    /// Notifications about enrichd's own writes, recognised and ignored
    /// (no loop).
    pub own_writes_ignored: usize,
    /// Events recorded, by state (done, ignored, pending).
    pub events: BTreeMap<String, usize>,
    /// Deliveries the CRM made, and those the daemon refused.
    pub deliveries: usize,
    pub rejected: usize,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct CreatedReport {
    pub record_id: String,
    pub name: String,
    /// From the creation in the CRM to the write seen there.
    pub latency_ms: u64,
    pub written: bool,
    pub status: Option<String>,
    /// Channel → (value, Source) as the CRM holds them.
    pub values: BTreeMap<String, (String, String)>,
    pub credits: i64,
    /// Writes enrichd made to the record by the end (Salesforce: 1, its
    /// echo did not cause another).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrichd_writes: Option<usize>,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct EditReport {
    pub record_id: String,
    pub property: String,
    pub handled: bool,
    pub latency_ms: u64,
    pub provider_calls: u64,
    pub credits: i64,
    /// Writes enrichd made to the record after the edit (Salesforce: 0,
    /// nothing changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrichd_writes: Option<usize>,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct ProviderLine {
    pub requests: u64,
    pub rate_limited: u64,
    pub busiest_minute: u32,
    pub limit_per_minute: Option<u32>,
    /// Values charged with this Source.
    pub values: usize,
    /// Spend recorded by enrichd (the spend ledger).
    pub spend: f64,
    /// What the simulator charged.
    pub provider_credits: i64,
}

/// A CRM record's fields as text, whatever the simulator's shape.
pub(super) trait RecordView {
    fn text(&self, field: &str) -> Option<String>;
}

impl RecordView for enrichd_sim::hubspot::ContactView {
    fn text(&self, field: &str) -> Option<String> {
        self.get(field).map(String::from)
    }
}

/// A Salesforce record as REST renders it (API names matched whatever
/// their case, as Salesforce does).
impl RecordView for Map<String, Value> {
    fn text(&self, field: &str) -> Option<String> {
        let v = self.get(field).or_else(|| {
            self.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(field))
                .map(|(_, v)| v)
        })?;
        match v {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// Values enrichd wrote, as the CRM holds them.
pub(super) fn written_values<R: RecordView>(
    records: impl IntoIterator<Item = R>,
    mapping: &Mapping,
) -> WrittenReport {
    let mut w = WrittenReport::default();
    let status = mapping.status.as_ref().map(|r| r.field.as_str());
    for c in records {
        let mut any = false;
        for (ch, rule) in &mapping.channels {
            if c.text(&rule.value.field).is_none() {
                continue;
            }
            any = true;
            w.values += 1;
            match rule.source.as_ref().and_then(|s| c.text(&s.field)) {
                Some(src) => {
                    *w.by_channel
                        .entry(ch.as_str().to_string())
                        .or_default()
                        .entry(src)
                        .or_default() += 1;
                }
                None => w.values_without_source += 1,
            }
        }
        if any {
            w.contacts += 1;
        }
        if let Some(s) = status.and_then(|f| c.text(f)) {
            *w.status.entry(s).or_default() += 1;
        }
    }
    w
}

/// Channel → (value, Source) and the status of one record.
pub(super) fn record_values(
    view: Option<&impl RecordView>,
    mapping: &Mapping,
) -> (BTreeMap<String, (String, String)>, Option<String>) {
    let mut values = BTreeMap::new();
    let Some(view) = view else {
        return (values, None);
    };
    for (c, rule) in &mapping.channels {
        if let Some(value) = view.text(&rule.value.field) {
            let source = rule
                .source
                .as_ref()
                .and_then(|s| view.text(&s.field))
                .unwrap_or_else(|| "-".into());
            values.insert(c.as_str().to_string(), (value, source));
        }
    }
    let status = mapping.status.as_ref().and_then(|r| view.text(&r.field));
    (values, status)
}

// ---------------------------------------------------------------- rendering

/// What a CRM's section brings to the rendering.
pub(super) trait CrmSection: Serialize {
    /// `HubSpot`, `Salesforce`.
    const CRM: &'static str;
    /// `contact`, `Lead`.
    const RECORD: &'static str;
    /// How change notifications reach enrichd.
    const NOTIFICATIONS: &'static str;
    /// Lines after the credits (e.g. converted Leads).
    fn render_records(&self, _o: &mut String) {}
    /// The CRM's API calls against its limits.
    fn render_api(&self, o: &mut String);
}

/// `12345` → `12,345`.
pub(super) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub(super) fn signed(n: i64) -> String {
    if n < 0 {
        format!("-{}", group(n.unsigned_abs()))
    } else {
        group(n.unsigned_abs())
    }
}

/// A path relative to the config's directory when it is inside it.
pub(super) fn shown_path(p: &Path, base: &Path) -> String {
    p.strip_prefix(base)
        .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
}

fn new_table(header: Vec<&str>) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(header);
    t
}

fn right(t: &mut Table, from: usize) {
    let n = t.column_count();
    for i in from..n {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

pub(super) fn provider_table(lines: &BTreeMap<String, ProviderLine>) -> Table {
    let mut t = new_table(vec![
        "provider",
        "calls",
        "429s",
        "busiest minute",
        "limit/min",
        "values",
        "spend",
        "billed",
    ]);
    for (id, p) in lines {
        t.add_row(vec![
            Cell::new(id),
            Cell::new(group(p.requests)),
            Cell::new(p.rate_limited),
            Cell::new(group(u64::from(p.busiest_minute))),
            Cell::new(
                p.limit_per_minute
                    .map_or("-".into(), |n| group(u64::from(n))),
            ),
            Cell::new(group(p.values as u64)),
            Cell::new(format!("{:.1}", p.spend)),
            Cell::new(p.provider_credits),
        ]);
    }
    right(&mut t, 1);
    t
}

/// `a 1, b 2` from a map of counts.
pub(super) fn kinds(by: &BTreeMap<String, u64>) -> String {
    by.iter()
        .map(|(k, v)| format!("{k} {}", group(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn render<C: CrmSection>(r: &DemoReport<C>, base: &Path) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o);

    let mut st = new_table(vec!["status", "before", "after"]);
    for key in ["full", "partial", "empty", "none"] {
        if let Some(ba) = r.statuses.get(key) {
            let label = if key == "none" { "in no audience" } else { key };
            st.add_row(vec![
                Cell::new(label),
                Cell::new(group(ba.before as u64)),
                Cell::new(group(ba.after as u64)),
            ]);
        }
    }
    right(&mut st, 1);
    let _ = writeln!(o, "Leads by status, before → after the first pass:\n{st}");

    let w = &r.written;
    let mut sources: BTreeSet<&str> = BTreeSet::new();
    for by in w.by_channel.values() {
        sources.extend(by.keys().map(String::as_str));
    }
    let title = format!("written to {}", C::CRM);
    let mut header = vec![title.as_str()];
    header.extend(sources.iter().copied());
    header.push("total");
    let mut vt = new_table(header);
    for (ch, by) in &w.by_channel {
        let mut row = vec![Cell::new(ch)];
        for s in &sources {
            row.push(Cell::new(
                by.get(*s).map_or("·".into(), |n| group(*n as u64)),
            ));
        }
        row.push(Cell::new(group(by.values().sum::<usize>() as u64)));
        vt.add_row(row);
    }
    right(&mut vt, 1);
    let _ = writeln!(
        o,
        "Values written by Source: {} values on {} {}s, each with its Source ({} without){}",
        group(w.values as u64),
        group(w.contacts as u64),
        C::RECORD,
        w.values_without_source,
        if w.by_channel.is_empty() {
            String::new()
        } else {
            format!("\n{vt}")
        }
    );
    let h = &r.human_typed;
    let _ = writeln!(
        o,
        "Typed by people: {} emails and {} phones were on {}s before enrichd: not searched, {}, {} of {} unchanged.",
        group(h.emails as u64),
        group(h.phones as u64),
        C::RECORD,
        if h.charged == 0 {
            "not charged".to_string()
        } else {
            format!("{} CHARGED", h.charged)
        },
        group(h.unchanged as u64),
        group((h.emails + h.phones) as u64)
    );
    r.crm_report.render_records(&mut o);

    let c = &r.credits;
    let by: Vec<String> = c
        .by_channel
        .iter()
        .map(|(k, v)| format!("{k} {}", signed(*v)))
        .collect();
    let _ = writeln!(
        o,
        "Credits: {} charged for {} values ({}){}; ledger sum {}.",
        signed(c.charged),
        group(c.ledger_entries as u64),
        by.join(" · "),
        c.budget.map_or(String::new(), |b| format!(
            ", budget {} for {}",
            signed(b),
            c.period
        )),
        signed(c.ledger_sum)
    );
    let spend: f64 = c.provider_spend.values().sum();
    let _ = writeln!(
        o,
        "Provider spend: {spend:.1} provider credits ({}).",
        c.provider_spend
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect::<Vec<_>>()
            .join(" · ")
    );

    let wh = &r.webhooks;
    let _ = writeln!(o, "\n{}:", C::NOTIFICATIONS);
    let writes =
        |n: Option<usize>, what: &str| n.map_or(String::new(), |n| format!(" · {n} {what}"));
    if let Some(e) = &wh.edit {
        let _ = writeln!(
            o,
            "  {} of complete {} {} edited in {} → {} in {} ms: {} provider calls, {} credits (nothing missing, nothing bought){}",
            e.property,
            C::RECORD,
            e.record_id,
            C::CRM,
            if e.handled { "handled" } else { "NOT handled" },
            group(e.latency_ms),
            e.provider_calls,
            e.credits,
            writes(e.enrichd_writes, "writes by enrichd")
        );
    }
    if let Some(c) = &wh.created {
        let vals: Vec<String> = c
            .values
            .iter()
            .map(|(ch, (_, src))| format!("{ch} from {src}"))
            .collect();
        let _ = writeln!(
            o,
            "  {} {} created in {} ({}) → {} in {} ms: {}{}, {} credits{}",
            C::RECORD,
            c.record_id,
            C::CRM,
            c.name,
            if c.written {
                "enriched and written back"
            } else {
                "NOT written back"
            },
            group(c.latency_ms),
            if vals.is_empty() {
                "no value found".to_string()
            } else {
                vals.join(", ")
            },
            c.status
                .as_deref()
                .map_or(String::new(), |s| format!(", status {s}")),
            c.credits,
            writes(c.enrichd_writes, "write(s) by enrichd in all")
        );
    }
    let _ = writeln!(
        o,
        "  {} notifications about enrichd's own writes came back and were ignored (no loop) · {} deliveries, {} refused",
        group(wh.own_writes_ignored as u64),
        group(wh.deliveries as u64),
        wh.rejected
    );

    r.crm_report.render_api(&mut o);
    let _ = writeln!(
        o,
        "Provider API calls against their limits ({}× the documented limits):\n{}",
        r.limit_scale,
        provider_table(&r.provider_api)
    );
    let _ = writeln!(
        o,
        "Config used: {} · finished in {:.1} s.",
        shown_path(Path::new(&r.config), base),
        r.elapsed_secs
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(signed(-1200), "-1,200");
    }

    #[test]
    fn salesforce_fields_read_whatever_their_case() {
        let mut m = Map::new();
        m.insert("Enrichment_Status__c".into(), Value::String("Full".into()));
        m.insert("NumberOfEmployees".into(), Value::from(120));
        m.insert("Phone".into(), Value::Null);
        assert_eq!(m.text("enrichment_status__c").as_deref(), Some("Full"));
        assert_eq!(m.text("NumberOfEmployees").as_deref(), Some("120"));
        assert_eq!(m.text("Phone"), None);
    }
}
