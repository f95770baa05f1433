//! Snapshot tests of the rendered preview (table, JSON, CSV) on the
//! fixtures in `fixtures/preview/`: six leads covering a new lead, a value
//! a person typed, enrichd's own older value replaced, an audience
//! override, a lead with nothing to do, one in no audience, and an
//! estimate with a provider already answered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::estimate::Estimator;
use super::{Preview, Summary, preview_lead, render};
use crate::config::Settings;
use crate::core::lead::Lead;
use crate::core::value::ChannelValue;
use crate::engine::run::prepare;
use crate::store::crm::AttemptCount;
use crate::store::{PastAttempt, StoredLead};

/// 2026-03-14T12:00:00Z.
const NOW: i64 = 1_773_489_600_000;

#[derive(Deserialize)]
struct Case {
    lead: Lead,
    values: Vec<ChannelValue>,
    #[serde(default)]
    attempts: Vec<PastAttempt>,
    written: BTreeMap<String, String>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/preview")
        .join(name)
}

fn read<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn preview(estimate: bool) -> Preview {
    let path = fixture("config.toml");
    let text = std::fs::read_to_string(&path).expect("fixture config");
    let secrets: BTreeMap<String, String> = [("K_APOLLO", "a"), ("K_HUNTER", "h")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = Settings::from_str(&path, &text, &secrets).expect("fixture config loads");
    let ws = settings.workspace("acme").expect("workspace").clone();
    let mapping =
        crate::config::mapping::load_mapping(&fixture("mapping.toml")).expect("fixture mapping");
    let counts: Vec<AttemptCount> = read("attempts.json");
    let est = estimate.then(|| Estimator::new(&settings, &counts));
    let cases: Vec<Case> = read("leads.json");
    let mut leads = Vec::new();
    let mut summary = Summary::default();
    for c in cases {
        let stored = StoredLead {
            values: c.values,
            attempts: c.attempts,
            status: None,
        };
        let p = prepare(&ws, c.lead, stored, NOW);
        let lp = preview_lead(&ws, Some(&mapping), &p, &c.written, NOW, est.as_ref());
        summary.add(&lp);
        leads.push(lp);
    }
    Preview {
        workspace: "acme".into(),
        crm: "hubspot".into(),
        object: "contacts".into(),
        mapping_file: "fixtures/preview/mapping.toml".into(),
        records: "stored",
        generated_at: NOW,
        leads,
        summary,
    }
}

#[test]
fn table_preview() {
    insta::assert_snapshot!(render::table(&preview(false)));
}

#[test]
fn table_preview_with_estimate() {
    insta::assert_snapshot!(render::table(&preview(true)));
}

#[test]
fn json_preview_with_estimate() {
    insta::assert_snapshot!(render::json(&preview(true)));
}

#[test]
fn csv_preview() {
    insta::assert_snapshot!(render::csv(&preview(false)).expect("csv"));
}

#[test]
fn the_fixture_covers_every_decision_it_claims() {
    use crate::core::mapping::{Action, SkipReason};
    let p = preview(true);
    let by_id = |id: &str| {
        p.leads
            .iter()
            .find(|l| l.lead_id == id)
            .unwrap_or_else(|| panic!("lead {id}"))
    };
    let action = |id: &str, field: &str| {
        by_id(id)
            .fields
            .iter()
            .find(|d| d.field == field)
            .map(|d| d.action)
            .unwrap_or_else(|| panic!("{id} {field}"))
    };
    assert_eq!(by_id("101").writes(), 6, "values, Sources, status, time");
    assert_eq!(
        action("102", "enrichment_work_email"),
        Action::Skip(SkipReason::HumanValue)
    );
    assert_eq!(action("102", "enrichment_linkedin_url"), Action::Write);
    assert_eq!(
        action("103", "enrichment_work_email"),
        Action::Skip(SkipReason::PolicyNever),
        "the customers override"
    );
    assert_eq!(action("103", "enrichment_personal_email"), Action::Write);
    assert_eq!(by_id("104").writes(), 0);
    assert!(by_id("105").audiences.is_empty());
    assert_eq!(by_id("105").writes(), 0);
    let e = by_id("106").estimate.as_ref().expect("estimate");
    let work = e
        .channels
        .iter()
        .find(|c| c.channel == crate::core::channel::Channel::WorkEmail)
        .expect("work email");
    assert_eq!(work.asks.len(), 1, "hunter answered not_found already");
    assert_eq!(work.passed.len(), 1);
    // apollo: 60 found of 100 definitive answers → (60+1)/(100+2).
    assert!((work.asks[0].hit_rate - 61.0 / 102.0).abs() < 1e-9);
    assert_eq!(e.credits_max, 2, "work email 1 + LinkedIn 1");
}
