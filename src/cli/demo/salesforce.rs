//! The demo with Salesforce: a simulated org (login and instance hosts)
//! whose Leads are the population (some with an Email or Phone a person
//! typed, some converted), an Outbound Message definition posting Lead
//! changes to the daemon, the web-server connect flow with PKCE and the
//! mapping checked against the org's describe, Outbound Messages for the
//! edit and the creation (enrichd's own writes come back too and are
//! ignored), and the org's API calls against its daily allocation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd_sim::salesforce::{
    OutboundConfig, SObject as SimObject, SalesforceData, SalesforceOptions, SalesforceSim,
    SeedSpec, start_salesforce,
};
use serde::Serialize;
use serde_json::Value;

use crate::config::Workspace;
use crate::config::crm::{CrmSettings, SalesforceSettings};
use crate::core::channel::Channel;
use crate::core::lead::Lead;
use crate::crm::salesforce::outbound::OwnChangeRule;
use crate::crm::salesforce::sync::SalesforceSync;
use crate::crm::salesforce::{CRM, SObject, SalesforceError, auth, same_id};
use crate::store::crm::StoredEvent;

use super::derive::{CrmTarget, CrmVars, abs_in, table, text_of};
use super::report::{
    CreatedReport, CrmSection, DemoReport, EditReport, RecordView, group, kinds, record_values,
    written_values,
};
use super::{
    CRM_LATENCY, CliError, CrmDemo, Demo, FirstPass, Prepared, TYPED_EMAIL_SHARE,
    TYPED_PHONE_EVERY, Typed, browser, cipher, marker_field, person_name, tokens_sealed,
};

/// Share of the seeded Leads that are converted (never written).
const CONVERTED_SHARE: f64 = 0.05;

/// Salesforce's section of the report.
#[derive(Debug, Default, Serialize)]
pub(super) struct SalesforceReport {
    /// Leads in the org at the start, converted ones included.
    leads: usize,
    /// Leads enrichd may write (not converted).
    live_leads: usize,
    converted_leads: ConvertedReport,
    /// What the derived config changed beyond hosts and paths (audience
    /// fields by Salesforce API name, …).
    config_notes: Vec<String>,
    connect: ConnectReport,
    first_pass: PassReport,
    salesforce_api: SalesforceApiReport,
}

#[derive(Debug, Default, Serialize)]
struct ConvertedReport {
    leads: usize,
    /// Converted Leads enrichd wrote to (always 0: Salesforce refuses it,
    /// and enrichd never pulls them).
    written: usize,
}

#[derive(Debug, Default, Serialize)]
struct ConnectReport {
    /// `oauth`.
    auth: String,
    /// `web_server` (authorization code with PKCE) or `jwt`.
    flow: String,
    org_id: String,
    user_id: String,
    instance_url: String,
    scopes: Vec<String>,
    refresh_token: bool,
    /// The connection as stored: tokens sealed at rest.
    tokens_sealed: bool,
    /// Mapped fields checked against the org's Lead describe, and the
    /// problems `enrichd check` would report (none in the simulated org).
    fields_checked: usize,
    fields_missing: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct PassReport {
    /// Every live Lead is stored, and nothing is left to write.
    complete: bool,
    secs: f64,
    leads_pulled: usize,
    /// Lead updates Salesforce applied (Collections records and Bulk rows).
    leads_written: u64,
    collection_calls: u64,
    bulk_jobs: u64,
}

#[derive(Debug, Default, Serialize)]
struct SalesforceApiReport {
    /// Calls counted against the daily allocation (OAuth and simulator
    /// control calls are not).
    calls: u64,
    /// Counted calls by kind (query, collections, bulk, describe, limits, …).
    by_kind: BTreeMap<String, u64>,
    query_calls: u64,
    query_more_calls: u64,
    rows_returned: u64,
    collection_calls: u64,
    collection_records: u64,
    bulk_jobs: u64,
    bulk_records: u64,
    token_grants: u64,
    /// `DailyApiRequests`: the org's rolling 24 h allocation, and the calls
    /// counted in it as the org reports them (`GET /limits` after the
    /// daemon stopped; the same figure `Sforce-Limit-Info` carries).
    daily_allocation: u64,
    used_in_24h: u64,
    /// `REQUEST_LIMIT_EXCEEDED` answers (daily and concurrent).
    limit_refusals: u64,
    /// Lead owners changed by the org's assignment rule (always 0: every
    /// write sends `Sforce-Auto-Assign: FALSE`).
    owner_changes: usize,
    /// Record writes by enrichd's integration user, and the records they
    /// touched: equal when nothing was written twice (no loop).
    record_writes: usize,
    records_written: usize,
    /// Write calls tagged `Sforce-Call-Options: client=enrichd`.
    tagged_writes: u64,
}

impl CrmSection for SalesforceReport {
    const CRM: &'static str = "Salesforce";
    const RECORD: &'static str = "Lead";
    const NOTIFICATIONS: &'static str =
        "Outbound Messages (secret URL token and org checked, recorded before the Ack)";

    fn render_records(&self, o: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            o,
            "Converted Leads: {} in the org, {} written (Salesforce refuses updates to them; enrichd never pulls them).",
            group(self.converted_leads.leads as u64),
            self.converted_leads.written
        );
    }

    fn render_api(&self, o: &mut String) {
        use std::fmt::Write;
        let a = &self.salesforce_api;
        let _ = writeln!(
            o,
            "\nSalesforce API: {} calls ({}) · {} of the daily allocation of {} used ({:.2}%) · {} rows read by {} queries + {} locator pages · {} Leads in {} Collections calls, {} in {} Bulk jobs · {} REQUEST_LIMIT_EXCEEDED · {} owner changes · {} record writes on {} Leads · {} token grants",
            group(a.calls),
            kinds(&a.by_kind),
            group(a.used_in_24h),
            group(a.daily_allocation),
            if a.daily_allocation == 0 {
                0.0
            } else {
                a.used_in_24h as f64 * 100.0 / a.daily_allocation as f64
            },
            group(a.rows_returned),
            a.query_calls,
            a.query_more_calls,
            group(a.collection_records),
            a.collection_calls,
            group(a.bulk_records),
            a.bulk_jobs,
            a.limit_refusals,
            a.owner_changes,
            group(a.record_writes as u64),
            group(a.records_written as u64),
            a.token_grants
        );
    }
}

fn sf_err(e: SalesforceError) -> CliError {
    CliError::Crm(e.to_string())
}

/// HubSpot property names (the documented config's) → Salesforce Lead API
/// names; `None`: the Lead has no such field.
const LEAD_FIELDS: &[(&str, Option<&str>)] = &[
    ("firstname", Some("FirstName")),
    ("lastname", Some("LastName")),
    ("name", Some("Name")),
    ("company", Some("Company")),
    ("company_domain", Some("Website")),
    ("jobtitle", Some("Title")),
    ("country", Some("Country")),
    ("numemployees", Some("NumberOfEmployees")),
    ("icp_score", Some("ICP_Score__c")),
    ("email", Some("Email")),
    ("phone", Some("Phone")),
    ("seniority", None),
];

/// The Lead field for a configured field: a HubSpot name translated, any
/// other name as it is.
fn lead_field(name: &str) -> Option<&str> {
    match LEAD_FIELDS
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(name))
    {
        Some((_, sf)) => *sf,
        None => Some(name),
    }
}

/// A workspace written for HubSpot, read through Salesforce Lead fields:
/// audience conditions by API name (a condition on a field Leads lack is
/// left out), a persona's title read from `Title`, and no
/// `[workspaces.fields]` (the connector reads a Lead's identity by its API
/// names). What changed goes to `notes`.
fn leads_view(ws: &mut toml::Table, notes: &mut Vec<String>) {
    if ws.remove("fields").is_some() {
        notes.push(
            "[workspaces.fields] left out: the Salesforce connector reads a Lead's identity by its API names (FirstName, LastName, Company, Website, Title, Country, Email, Phone)".into(),
        );
    }
    let mut dropped = Vec::new();
    let mut renamed = std::collections::BTreeSet::new();
    let audiences = ws
        .get_mut("audiences")
        .and_then(toml::Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table_mut);
    for a in audiences {
        let name = text_of(a, "name").unwrap_or_default();
        if let Some(filter) = a.get_mut("filter").and_then(toml::Value::as_array_mut) {
            filter.retain_mut(|c| {
                let Some(c) = c.as_table_mut() else {
                    return true;
                };
                let Some(field) = text_of(c, "field") else {
                    return true;
                };
                match lead_field(&field) {
                    Some(sf) => {
                        if sf != field {
                            renamed.insert(format!("{field} → {sf}"));
                        }
                        c.insert("field".into(), sf.into());
                        true
                    }
                    None => {
                        dropped.push(format!("{name}: {field}"));
                        false
                    }
                }
            });
        }
        if let Some(p) = a.get_mut("persona").and_then(toml::Value::as_table_mut) {
            if let Some(f) =
                text_of(p, "title_field").and_then(|f| lead_field(&f).map(String::from))
            {
                p.insert("title_field".into(), f.into());
            }
            if p.remove("seniorities").is_some() {
                dropped.push(format!("{name}: persona seniorities"));
            }
        }
    }
    if !renamed.is_empty() {
        notes.push(format!(
            "Audience conditions by Lead API name: {}",
            renamed.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if !dropped.is_empty() {
        notes.push(format!(
            "Left out (the simulated org's Leads have no seniority field): {}",
            dropped.join("; ")
        ));
    }
}

/// `[workspaces.crm]` replaced by a Salesforce one on the simulated org
/// (`login_url`): the web-server flow of a connected app, the shipped Lead
/// mapping, an Outbound Message token, one sync pass (Outbound Messages do
/// the rest). A workspace configured for HubSpot is also read through
/// Salesforce Lead fields ([`leads_view`]).
pub(super) fn crm_table(
    ws: &mut toml::Table,
    login_url: &str,
    config_dir: &Path,
    notes: &mut Vec<String>,
) -> Result<CrmVars, CliError> {
    let was_salesforce = ws
        .get("crm")
        .and_then(|c| c.get("kind"))
        .and_then(toml::Value::as_str)
        == Some("salesforce");
    if !was_salesforce {
        ws.remove("crm");
        leads_view(ws, notes);
    }
    let crm = table(ws, "crm")?;
    crm.insert("kind".into(), "salesforce".into());
    crm.insert("login_url".into(), login_url.into());
    let client_id = text_of(crm, "client_id_env").unwrap_or_else(|| "SALESFORCE_CLIENT_ID".into());
    let client_secret =
        text_of(crm, "client_secret_env").unwrap_or_else(|| "SALESFORCE_CLIENT_SECRET".into());
    let outbound_token =
        text_of(crm, "outbound_token_env").unwrap_or_else(|| "SALESFORCE_OUTBOUND_TOKEN".into());
    crm.insert("client_id_env".into(), client_id.clone().into());
    crm.insert("client_secret_env".into(), client_secret.clone().into());
    crm.insert("outbound_token_env".into(), outbound_token.clone().into());
    crm.insert(
        "redirect_uri".into(),
        "http://127.0.0.1:0/oauth/callback".into(),
    );
    crm.insert(
        "scopes".into(),
        toml::Value::Array(vec!["api".into(), "refresh_token".into()]),
    );
    let mapping = text_of(crm, "mapping").unwrap_or_else(|| "mappings/salesforce.toml".into());
    crm.insert("mapping".into(), abs_in(config_dir, &mapping).into());
    crm.insert("sync_interval_secs".into(), 3600.into());
    crm.remove("jwt");
    if crm.remove("contact_mapping").is_some() {
        notes.push("contact_mapping left out: the demo's org holds Leads".into());
    }
    Ok(CrmVars {
        client_id,
        client_secret,
        outbound_token: Some(outbound_token),
    })
}

/// A random URL token for Outbound Messages (32 hex characters).
fn outbound_token() -> Result<String, CliError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| {
        CliError::Usage(format!(
            "no randomness for the demo's Outbound Message token: {e}"
        ))
    })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A person as a Lead created in the Salesforce UI: name, company, title,
/// country and the company's website, size and ICP score.
fn lead_fields(p: &enrichd_sim::Person) -> Vec<(String, String)> {
    let mut f = vec![
        ("FirstName".to_string(), p.first_name.clone()),
        ("LastName".to_string(), p.last_name.clone()),
        ("Company".to_string(), p.company_name.clone()),
        ("Title".to_string(), p.job_title.clone()),
        ("Country".to_string(), p.country.clone()),
    ];
    f.extend(SalesforceData::lead_firmographics(p));
    f
}

/// Everything the Salesforce demo runs against.
pub(super) struct SalesforceDemo {
    d: Demo,
    sf: SalesforceSim,
    sync: SalesforceSync,
    sfs: Arc<SalesforceSettings>,
    /// Leads at the start: all, and those not converted.
    lead_ids: Vec<String>,
    live: Vec<String>,
    converted: Vec<String>,
    typed: Vec<Typed>,
    /// The integration user enrichd connected as.
    user_id: String,
}

impl CrmDemo for SalesforceDemo {
    type Section = SalesforceReport;
    const NAME: &'static str = "salesforce";

    async fn start(
        config: &Path,
        p: Prepared,
        base_ws: &Workspace,
    ) -> Result<(Self, SalesforceReport), CliError> {
        let mut demo = SalesforceDemo::open(config, p, base_ws).await?;
        let connect = demo.connect().await?;
        demo.user_id = connect.user_id.clone();
        let section = SalesforceReport {
            leads: demo.lead_ids.len(),
            live_leads: demo.live.len(),
            config_notes: demo.d.notes.clone(),
            connect,
            ..SalesforceReport::default()
        };
        Ok((demo, section))
    }

    fn demo(&self) -> &Demo {
        &self.d
    }

    fn expected(&self) -> usize {
        self.live.len()
    }

    fn written_so_far(&self) -> u64 {
        self.sf.stats().write_result("success")
    }

    /// Every live Lead stored, the backfill done, nothing left to write.
    async fn first_pass_done(&self) -> Result<Option<Vec<Lead>>, CliError> {
        self.d
            .pass_over(
                CRM,
                SObject::Lead.as_str(),
                self.live.len(),
                |leads| async move {
                    let pending = self
                        .sync
                        .plan_writes(SObject::Lead, leads)
                        .await
                        .map_err(sf_err)?;
                    Ok(pending.into_iter().map(|p| p.lead.id).collect())
                },
            )
            .await
    }

    fn first_pass(&self, pass: &FirstPass, section: &mut SalesforceReport) {
        let st = self.sf.stats();
        section.first_pass = PassReport {
            complete: pass.complete,
            secs: pass.secs,
            leads_pulled: pass.leads.len(),
            leads_written: st.write_result("success"),
            collection_calls: st.collection_calls,
            bulk_jobs: st.bulk_jobs,
        };
        if self.d.show {
            println!(
                "Sync      first pass of `enrichd run`: {} Leads pulled ({} query calls) and enriched, {} written back in {} Collections calls and {} Bulk jobs ({:.1} s)",
                group(pass.leads.len() as u64),
                st.query_calls + st.query_more_calls,
                group(st.write_result("success")),
                st.collection_calls,
                st.bulk_jobs,
                pass.secs
            );
        }
    }

    /// The workspace as the connector reads Leads (API names).
    fn view(&self) -> Arc<Workspace> {
        self.sync.view(SObject::Lead)
    }

    /// Delivers every pending Outbound Message now, then waits until the
    /// daemon has handled what it recorded.
    async fn flush(&self) -> Result<(), CliError> {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.sf.flush_outbound()).await;
        self.d.settle_events(CRM).await
    }

    async fn edit(&self, view: &Workspace) -> Result<Option<EditReport>, CliError> {
        self.edit_complete_lead(view).await
    }

    async fn create(&self, view: &Workspace) -> Result<CreatedReport, CliError> {
        self.create_lead(view).await
    }

    async fn tally(&self, report: &mut DemoReport<SalesforceReport>) -> Result<(), CliError> {
        self.tally_salesforce(report).await
    }

    async fn shutdown(self) -> Demo {
        self.sf.shutdown().await;
        self.d
    }
}

impl SalesforceDemo {
    /// The org, the derived config and a fresh store.
    async fn open(
        config: &Path,
        p: Prepared,
        base_ws: &Workspace,
    ) -> Result<SalesforceDemo, CliError> {
        // The org: one Lead per person with the company's website and size;
        // some already carry an Email or a Phone a person typed (enrichd
        // must neither search for nor overwrite them), some are converted
        // (enrichd must never write them).
        let spec = SeedSpec {
            leads: p.records,
            contacts: 0,
            converted_share: CONVERTED_SHARE,
            email_share: TYPED_EMAIL_SHARE,
            phone_share: 1.0 / TYPED_PHONE_EVERY as f64,
            lead_firmographics: true,
            ..SeedSpec::default()
        };
        let data =
            SalesforceData::from_population(&p.population, p.clock.now() - 2 * 86_400_000, &spec);
        // An Outbound Message on every Lead creation and edit, to the
        // daemon's route, carrying LastModifiedById (how enrichd recognises
        // its own writes coming back).
        let token = outbound_token()?;
        let mut om = OutboundConfig::new(
            "Lead",
            format!(
                "http://127.0.0.1:{}{}/{token}",
                p.port,
                crate::crm::salesforce::outbound::PATH
            ),
        );
        om.fields.push("LastModifiedById".into());
        let sf = start_salesforce(
            data,
            SalesforceOptions::defaults()
                .with_latency(CRM_LATENCY)
                .with_outbound(om),
        )
        .await?;
        let lead_ids = sf.lead_ids();
        let converted = sf.converted_lead_ids();
        let live: Vec<String> = lead_ids
            .iter()
            .filter(|id| !converted.contains(id))
            .cloned()
            .collect();
        let mut typed = Vec::new();
        for id in &live {
            let Some(r) = sf.record(id) else { continue };
            for (property, channel) in [("Email", Channel::WorkEmail), ("Phone", Channel::Phone)] {
                if let Some(value) = r.text(property) {
                    typed.push(Typed {
                        id: id.clone(),
                        property: property.into(),
                        channel,
                        value,
                    });
                }
            }
        }

        // config.toml with the simulators in place of the services.
        let derived = super::derive::derive_config(
            &std::fs::read_to_string(config)?,
            &p.targets(
                base_ws.id.as_str(),
                CrmTarget::Salesforce {
                    login_url: sf.login_url(),
                },
            ),
        )?;
        let secrets = [
            Some(sf.options().client_id.clone()),
            Some(sf.options().client_secret.clone()),
            Some(token),
        ];
        let d = p
            .load(config, "Salesforce", derived, secrets, base_ws.id.as_str())
            .await?;
        let Some(CrmSettings::Salesforce(sfs)) = d.ws.crm.clone() else {
            return Err(CliError::Usage("the demo workspace lost its CRM".into()));
        };
        d.headline(&format!(
            "Salesforce org {} · {} Leads ({} converted)",
            sf.org_id(),
            group(lead_ids.len() as u64),
            converted.len()
        ));
        let sync = SalesforceSync::open(&d.settings, &d.ws, d.store.clone(), d.clock.clone())
            .map_err(sf_err)?
            .ok_or_else(|| CliError::Usage("the demo workspace has no Salesforce".into()))?;
        Ok(SalesforceDemo {
            d,
            sf,
            sync,
            sfs,
            lead_ids,
            live,
            converted,
            typed,
            user_id: String::new(),
        })
    }

    /// What `enrichd connect salesforce` does, with an HTTP client as the
    /// browser: authorize (PKCE challenge and state) on the login host, the
    /// simulated consent approves at once and redirects to enrichd's
    /// loopback callback; the code is exchanged with the verifier, the
    /// tokens (and the instance URL) sealed and stored; then the mapping
    /// is checked against the org's Lead describe, as `enrichd check` does.
    async fn connect(&self) -> Result<ConnectReport, CliError> {
        let d = &self.d;
        let cipher = cipher(&d.settings)?;
        let http = auth::http_client(self.sfs.timeout).map_err(sf_err)?;
        let c = auth::connect(
            &auth::ConnectContext {
                ws: &d.ws.id,
                settings: &self.sfs,
                store: &d.store,
                cipher: Some(&cipher),
                clock: &*d.clock,
                http: &http,
                wait: Duration::from_secs(20),
            },
            browser,
        )
        .await
        .map_err(sf_err)?;
        let sealed = tokens_sealed(d, CRM).await?;
        let mut checked = 0;
        let mut missing = Vec::new();
        let opts = crate::crm::schema::CheckOptions {
            can_create: false,
            providers: d
                .ws
                .order
                .values()
                .flatten()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        for o in &self.sfs.objects {
            let schema = self.sync.client.describe(o.object).await.map_err(sf_err)?;
            let check =
                crate::crm::schema::check_mapping_with(&o.mapping, &o.mapping_file, &schema, &opts);
            checked += check.checked.len();
            missing.extend(check.problems.iter().map(|p| format!("{}: {p}", o.object)));
        }
        if d.show {
            println!(
                "Connect   OAuth web-server flow with PKCE, org {} as user {}: authorize on the login host → loopback callback → code exchanged → tokens sealed{} · instance {} · {} mapped fields checked against the Lead describe{}",
                c.org_id,
                c.user_id,
                if sealed { "" } else { " (NOT stored)" },
                c.instance_url,
                checked,
                if missing.is_empty() {
                    ", all present".to_string()
                } else {
                    format!(
                        ", {} need an admin (enrichd never creates Salesforce fields):\n  ✗ {}",
                        missing.len(),
                        missing.join("\n  ✗ ")
                    )
                }
            );
        }
        Ok(ConnectReport {
            auth: "oauth".into(),
            flow: c.flow.to_string(),
            org_id: c.org_id,
            user_id: c.user_id,
            instance_url: c.instance_url,
            scopes: c.scopes,
            refresh_token: c.refresh_token,
            tokens_sealed: sealed,
            fields_checked: checked,
            fields_missing: missing,
        })
    }

    /// Whether an event is about enrichd's own write (last modified by the
    /// integration user).
    fn own(&self, e: &StoredEvent) -> bool {
        OwnChangeRule {
            integration_user_id: Some(self.user_id.clone()),
        }
        .own_change_event(&e.event)
        .is_some()
    }

    /// Writes enrichd's integration user made to record `id` since `from_ms`
    /// (sim time).
    fn enrichd_writes(&self, id: &str, from_ms: i64) -> usize {
        self.sf
            .history(id)
            .iter()
            .filter(|w| w.at_ms >= from_ms && same_id(&w.user_id, &self.user_id))
            .count()
    }

    /// A sales rep changes the last name of a Lead enrichd completed: the
    /// Outbound Message arrives, the Lead is read again, nothing is bought
    /// and nothing written.
    async fn edit_complete_lead(&self, view: &Workspace) -> Result<Option<EditReport>, CliError> {
        let Some(obj) = self.sfs.object(SObject::Lead) else {
            return Ok(None);
        };
        let from_ms = self.sf.now_ms();
        let edit = |id: &str, name: &str| {
            self.sf
                .human_edit(id, &[(view.fields.last_name.as_str(), name)], None)
                .map_err(|e| CliError::Crm(format!("the simulated edit of Lead {id}: {e}")))
        };
        let r = self
            .d
            .edit_complete(
                CRM,
                &self.live,
                |id| self.sf.record(id),
                &obj.mapping,
                &view.fields.last_name,
                edit,
                |e| !self.own(e),
            )
            .await?;
        Ok(r.map(|mut r| {
            r.enrichd_writes = Some(self.enrichd_writes(&r.record_id, from_ms));
            r
        }))
    }

    /// A Lead created in Salesforce: the Outbound Message brings it to
    /// enrichd, which reads it by Id, enriches it and writes it back; the
    /// echo of that write is ignored.
    async fn create_lead(&self, view: &Workspace) -> Result<CreatedReport, CliError> {
        let d = &self.d;
        let Some(obj) = self.sfs.object(SObject::Lead) else {
            return Err(CliError::Usage(
                "the demo workspace has no Lead mapping".into(),
            ));
        };
        let credits_before = d.charged().await?.0;
        let pop = d.population.clone();
        let person = pop.person(d.newcomer(view, |i| {
            let mut lead = Lead::new(format!("new-{i}"));
            for (k, v) in lead_fields(pop.person(i)) {
                lead.fields.insert(k, Value::String(v));
            }
            lead
        }));
        let fields = lead_fields(person);
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let marker = marker_field(&obj.mapping);
        let from_ms = self.sf.now_ms();
        let t0 = Instant::now();
        let id = self
            .sf
            .create_record(SimObject::Lead, &fields)
            .map_err(|e| CliError::Crm(format!("the simulated Lead creation: {e}")))?;
        let (written, latency) = d
            .await_write(t0, || {
                self.sf
                    .record(&id)
                    .is_some_and(|r| r.text(&marker).is_some())
            })
            .await;
        let (values, status) = record_values(self.sf.record(&id).as_ref(), &obj.mapping);
        Ok(CreatedReport {
            name: person_name(person),
            latency_ms: latency.as_millis() as u64,
            written,
            status,
            values,
            credits: d.charged().await?.0 - credits_before,
            enrichd_writes: Some(self.enrichd_writes(&id, from_ms)),
            record_id: id,
        })
    }

    /// What Salesforce, the store and the simulators hold at the end.
    async fn tally_salesforce(
        &self,
        report: &mut DemoReport<SalesforceReport>,
    ) -> Result<(), CliError> {
        self.d
            .tally(
                report,
                CRM,
                &self.typed,
                |t| self.sf.record(&t.id).and_then(|r| r.text(&t.property)),
                |e| self.own(e),
            )
            .await?;
        if let Some(obj) = self.sfs.object(SObject::Lead) {
            report.written = written_values(
                self.sf
                    .lead_ids()
                    .iter()
                    .filter_map(|id| self.sf.record(id)),
                &obj.mapping,
            );
        }
        // The allocation as the org reports it (one more counted call),
        // then the simulator's figures (that call included).
        let usage = self.sync.client.limits().await.map_err(sf_err)?;
        let st = self.sf.stats();
        report.webhooks.deliveries = st.outbound_deliveries.len();
        report.webhooks.rejected = st.outbound_deliveries.iter().filter(|d| !d.acked).count();
        let r = &mut report.crm_report;
        r.converted_leads = ConvertedReport {
            leads: self.converted.len(),
            written: self
                .converted
                .iter()
                .filter(|id| self.enrichd_writes(id, i64::MIN) > 0)
                .count(),
        };
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for c in st.log.iter().filter(|c| c.counted) {
            *by_kind.entry(call_kind(&c.endpoint).into()).or_default() += 1;
        }
        let (mut record_writes, mut records_written) = (0, 0);
        for id in self.sf.lead_ids() {
            let n = self.enrichd_writes(&id, i64::MIN);
            record_writes += n;
            records_written += usize::from(n > 0);
        }
        r.salesforce_api = SalesforceApiReport {
            calls: st.api_calls,
            by_kind,
            query_calls: st.query_calls,
            query_more_calls: st.query_more_calls,
            rows_returned: st.rows_returned,
            collection_calls: st.collection_calls,
            collection_records: st.collection_records,
            bulk_jobs: st.bulk_jobs,
            bulk_records: st.bulk_records_processed,
            token_grants: st.token_grants.values().sum(),
            daily_allocation: usage.max,
            used_in_24h: usage.used,
            limit_refusals: st.limit_exceeded_daily + st.limit_exceeded_concurrent,
            owner_changes: st.owner_changes.len(),
            record_writes,
            records_written,
            tagged_writes: st.call_options_clients.get("enrichd").copied().unwrap_or(0),
        };
        Ok(())
    }
}

/// The kind of a counted call, from its endpoint label.
fn call_kind(endpoint: &str) -> &'static str {
    if endpoint.contains("/composite/sobjects") {
        "collections"
    } else if endpoint.contains("/jobs/ingest") {
        "bulk"
    } else if endpoint.contains("/query") {
        "query"
    } else if endpoint.ends_with("/describe") {
        "describe"
    } else if endpoint.ends_with("/limits") {
        "limits"
    } else if endpoint.contains("/sobjects/") {
        "sobject"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspot_names_become_lead_fields() {
        assert_eq!(lead_field("numemployees"), Some("NumberOfEmployees"));
        assert_eq!(lead_field("Country"), Some("Country"));
        assert_eq!(lead_field("Industry"), Some("Industry"));
        assert_eq!(lead_field("seniority"), None);
    }

    #[test]
    fn calls_are_grouped_by_kind() {
        assert_eq!(
            call_kind("PATCH /services/data/vXX.X/composite/sobjects"),
            "collections"
        );
        assert_eq!(call_kind("GET /services/data/vXX.X/query"), "query");
        assert_eq!(
            call_kind("GET /services/data/vXX.X/sobjects/Lead/describe"),
            "describe"
        );
    }
}
