//! Human tables and JSON for run reports.

use comfy_table::{Cell, Table, presets::UTF8_FULL_CONDENSED};

use crate::engine::report::RunReport;

/// Leads listed one by one in the table view; above this, totals only.
const MAX_LEAD_ROWS: usize = 40;

pub fn render_table(r: &RunReport) -> String {
    let mut out = String::new();
    let t = &r.totals;
    out.push_str(&format!(
        "Run {} · workspace {} · budget period {}\n",
        r.run_id, r.workspace, r.budget_period
    ));
    out.push_str(&format!(
        "{} leads · {} values found · {} credits charged",
        t.leads, t.values_found, t.credits_charged
    ));
    if let Some(s) = &r.settlement {
        out.push_str(&format!(
            " (reserved {} at worst case, {} used, {} released)",
            s.reserved, s.used, s.released
        ));
    }
    out.push('\n');

    let mut status = Table::new();
    status.load_style(UTF8_FULL_CONDENSED);
    status.set_header(vec!["status", "before", "after"]);
    for key in ["full", "partial", "empty", "none"] {
        let b = t.before.get(key).copied().unwrap_or(0);
        let a = t.after.get(key).copied().unwrap_or(0);
        if a + b > 0 {
            let label = if key == "none" { "in no audience" } else { key };
            status.add_row(vec![Cell::new(label), Cell::new(b), Cell::new(a)]);
        }
    }
    out.push_str(&format!("{status}\n"));

    if !t.states.is_empty() {
        let states: Vec<String> = t.states.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("Lead states: {}\n", states.join(" · ")));
    }

    let mut prov = Table::new();
    prov.load_style(UTF8_FULL_CONDENSED);
    prov.set_header(vec![
        "provider",
        "requests",
        "429s",
        "values stored",
        "provider spend",
        "limit/s",
    ]);
    for (acc, p) in &r.providers {
        let limit = if p.limit_per_second.is_finite() {
            format!("{:.2}", p.limit_per_second)
        } else {
            "-".into()
        };
        prov.add_row(vec![
            Cell::new(acc),
            Cell::new(p.requests),
            Cell::new(p.rate_limited),
            Cell::new(p.values_supplied),
            Cell::new(format!("{:.1}", p.spend_milli as f64 / 1000.0)),
            Cell::new(limit),
        ]);
    }
    out.push_str(&format!("{prov}\n"));

    if r.leads.len() <= MAX_LEAD_ROWS {
        let mut leads = Table::new();
        leads.load_style(UTF8_FULL_CONDENSED);
        leads.set_header(vec![
            "lead",
            "before → after",
            "values (Source)",
            "credits",
            "state",
        ]);
        for l in &r.leads {
            let st = |s: Option<crate::core::status::EnrichmentStatus>| {
                s.map_or("-".to_string(), |s| s.to_string())
            };
            let values: Vec<String> = l
                .filled
                .iter()
                .map(|f| format!("{} {} ({})", f.channel, f.value, f.source))
                .collect();
            leads.add_row(vec![
                Cell::new(&l.lead_id),
                Cell::new(format!("{} → {}", st(l.status_before), st(l.status_after))),
                Cell::new(values.join("\n")),
                Cell::new(l.credits),
                Cell::new(format!("{}: {}", l.state.as_str(), l.reason)),
            ]);
        }
        out.push_str(&format!("{leads}\n"));
    } else {
        out.push_str("(per-lead details: --format json)\n");
    }
    out
}

pub fn render_json(r: &RunReport) -> String {
    serde_json::to_string_pretty(r)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render report: {e}\"}}"))
}
