//! A preview as a table (people), JSON or CSV (scripts, spreadsheets).
//! Pure: the same preview always renders to the same text.

use std::fmt::Write as _;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

use super::{LeadPreview, Preview};
use crate::core::mapping::{Action, FieldDecision};

const EMPTY: &str = "—";

fn or_dash(s: Option<&str>) -> &str {
    s.unwrap_or(EMPTY)
}

/// Long values are cut in the table (JSON and CSV carry them whole).
fn cell(s: Option<&str>) -> String {
    let s = or_dash(s);
    if s.chars().count() > 40 {
        let mut t: String = s.chars().take(39).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

fn status(s: Option<crate::core::status::EnrichmentStatus>) -> String {
    s.map_or_else(|| "none".to_string(), |s| s.to_string())
}

/// The decision as a word, and the reason of a skip.
fn decision(d: &FieldDecision) -> (String, String) {
    match d.action {
        Action::Write => ("write".into(), String::new()),
        Action::Skip(r) => ("skip".into(), r.to_string()),
    }
}

fn lead_table(lp: &LeadPreview) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Disabled);
    t.set_header([
        "field", "current", "proposed", "source", "policy", "decision", "reason",
    ]);
    for d in &lp.fields {
        let (what, why) = decision(d);
        let policy = match &d.audience {
            Some(a) => format!("{} ({a})", d.policy),
            None => d.policy.to_string(),
        };
        t.add_row([
            d.field.clone(),
            cell(d.current.as_deref()),
            cell(d.proposed.as_deref()),
            cell(d.source.as_deref()),
            policy,
            what,
            why,
        ]);
    }
    t
}

/// Per lead: a heading and its fields; then the estimate and the summary.
pub fn table(p: &Preview) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Preview of {} {} in workspace {} · mapping {} · records {}",
        p.crm, p.object, p.workspace, p.mapping_file, p.records
    );
    let _ = writeln!(
        out,
        "Nothing is written, no provider is called, no credit is charged.\n"
    );
    for lp in &p.leads {
        let audiences = if lp.audiences.is_empty() {
            "no audience".to_string()
        } else {
            lp.audiences.join(", ")
        };
        let _ = writeln!(
            out,
            "lead {} · {} · status {} → {} · {} to write",
            lp.lead_id,
            audiences,
            status(lp.status_before),
            status(lp.status_after),
            lp.writes()
        );
        let _ = writeln!(out, "{}", lead_table(lp));
        if let Some(e) = &lp.estimate
            && !e.missing.is_empty()
        {
            let missing: Vec<String> = e.missing.iter().map(|c| c.to_string()).collect();
            let _ = writeln!(out, "  missing: {}", missing.join(", "));
            if let Some(b) = &e.blocked {
                let _ = writeln!(out, "  would ask nobody: {b}");
            }
            for ce in &e.channels {
                let asks: Vec<String> = ce
                    .asks
                    .iter()
                    .map(|a| {
                        format!(
                            "{} (asked {:.0}%, hits {:.0}%{})",
                            a.account,
                            a.probability * 100.0,
                            a.hit_rate * 100.0,
                            match a.basis {
                                super::estimate::Basis::Stats => "",
                                super::estimate::Basis::Prior => " assumed: no history yet",
                            }
                        )
                    })
                    .collect();
                let mut line = format!(
                    "  {}: {} · filled {:.0}% · {} credits at most, {:.2} expected",
                    ce.channel,
                    if asks.is_empty() {
                        "no provider to ask".to_string()
                    } else {
                        asks.join(" → ")
                    },
                    ce.fill_probability * 100.0,
                    ce.credits_max,
                    ce.credits_expected
                );
                for passed in &ce.passed {
                    let _ = write!(line, " · not {}: {}", passed.account, passed.reason);
                }
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out);
        }
    }
    out.push_str(&summary(p));
    out
}

fn two_columns(header: [&str; 2], rows: impl Iterator<Item = (String, String)>) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(header);
    for (a, b) in rows {
        t.add_row([a, b]);
    }
    t
}

fn summary(p: &Preview) -> String {
    let s = &p.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Summary: {} leads · {} with changes · {} field writes · {} credits to write stored values",
        s.leads, s.leads_with_writes, s.writes, s.credits_to_write
    );
    let _ = writeln!(
        out,
        "{}",
        two_columns(
            ["status before → after", "leads"],
            s.status.iter().map(|(k, n)| (k.clone(), n.to_string())),
        )
    );
    if !s.writes_per_field.is_empty() {
        let rows = s
            .writes_per_field
            .iter()
            .map(|(k, n)| (k.clone(), n.to_string()));
        let _ = writeln!(out, "{}", two_columns(["field", "writes"], rows));
    }
    if !s.skips.is_empty() {
        // The summary keys are the reasons' stable names; people read their
        // sentences.
        let rows = s.skips.iter().map(|(k, n)| {
            let why = serde_json::from_value::<crate::core::mapping::SkipReason>(
                serde_json::Value::String(k.clone()),
            )
            .map_or_else(|_| k.clone(), |r| r.to_string());
            (why, n.to_string())
        });
        let _ = writeln!(
            out,
            "{}",
            two_columns(["left alone because", "fields"], rows)
        );
    }
    if let Some(e) = &s.estimate {
        let _ = writeln!(
            out,
            "Estimate: {} leads miss a channel, {} would be sent to providers · credits {:.1} expected, {} at most{}",
            e.leads_missing,
            e.leads_to_ask,
            e.credits_expected,
            e.credits_max,
            match e.budget_available {
                Some(b) => format!(" · {b} left in the budget"),
                None => String::new(),
            }
        );
        let rows = e.calls.iter().map(|(k, n)| (k.clone(), format!("{n:.1}")));
        let _ = writeln!(
            out,
            "{}",
            two_columns(["provider account", "expected calls"], rows)
        );
        let _ = writeln!(
            out,
            "Expected provider spend: {:.2} provider credits",
            e.provider_spend_expected
        );
    }
    out
}

/// The whole preview as pretty JSON.
pub fn json(p: &Preview) -> String {
    serde_json::to_string_pretty(p).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// One row per lead and field.
pub fn csv(p: &Preview) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "lead_id",
        "audiences",
        "status_before",
        "status_after",
        "field",
        "role",
        "channel",
        "policy",
        "audience_override",
        "current",
        "proposed",
        "source",
        "decision",
        "reason",
    ])?;
    for lp in &p.leads {
        for d in &lp.fields {
            let (what, why) = decision(d);
            w.write_record([
                lp.lead_id.as_str(),
                &lp.audiences.join(";"),
                &status(lp.status_before),
                &status(lp.status_after),
                &d.field,
                d.role.as_str(),
                &d.channel.map(|c| c.to_string()).unwrap_or_default(),
                d.policy.as_str(),
                d.audience.as_deref().unwrap_or_default(),
                d.current.as_deref().unwrap_or_default(),
                d.proposed.as_deref().unwrap_or_default(),
                d.source.as_deref().unwrap_or_default(),
                &what,
                &why,
            ])?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
