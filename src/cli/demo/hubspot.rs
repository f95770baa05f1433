//! The demo with HubSpot: a simulated portal (contacts and companies,
//! webhook subscriptions to the daemon), the OAuth connect flow with the
//! mapped properties created, signed webhooks for the edit and the
//! creation, and HubSpot's API calls against its limits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd_sim::hubspot::{
    Bucket, HubSpotData, HubSpotLimits, HubSpotOptions, HubSpotSim, Subscription, start_hubspot,
};
use serde::Serialize;

use crate::config::Workspace;
use crate::config::crm::{CrmSettings, HubSpotSettings};
use crate::core::channel::Channel;
use crate::core::lead::{Lead, LeadId};
use crate::crm::hubspot::HubSpotError;
use crate::crm::hubspot::auth::{self, CRM};
use crate::crm::hubspot::client::HubSpotClient;
use crate::crm::hubspot::pull::OBJECT;
use crate::crm::hubspot::sync::HubSpot;

use super::derive::{CrmTarget, CrmVars, abs_in, table, text_of};
use super::report::{
    CreatedReport, CrmSection, DemoReport, EditReport, RecordView, group, kinds, record_values,
    written_values,
};
use super::{
    CRM_LATENCY, CliError, CrmDemo, Demo, FirstPass, Prepared, TYPED_EMAIL_SHARE,
    TYPED_PHONE_EVERY, Typed, browser, cipher, marker_field, person_name, tokens_sealed,
};

/// HubSpot's section of the report.
#[derive(Debug, Default, Serialize)]
pub(super) struct HubSpotReport {
    contacts: usize,
    connect: ConnectReport,
    first_pass: PassReport,
    hubspot_api: HubSpotApiReport,
}

#[derive(Debug, Default, Serialize)]
struct ConnectReport {
    auth: String,
    portal: String,
    scopes: Vec<String>,
    /// The connection as stored: tokens sealed at rest.
    tokens_sealed: bool,
    properties_checked: usize,
    properties_created: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct PassReport {
    /// Every lead the pass pulled from HubSpot is stored, and nothing is
    /// left to write.
    complete: bool,
    secs: f64,
    leads_pulled: usize,
    /// Contacts written back (batch update inputs that succeeded).
    contacts_written: u64,
    batch_updates: u64,
}

#[derive(Debug, Default, Serialize)]
struct HubSpotApiReport {
    /// API calls (OAuth and simulator control calls excluded).
    calls: u64,
    /// Calls by kind (batch update, batch read, search, associations, …).
    by_kind: BTreeMap<String, u64>,
    token_grants: u64,
    busiest_10s: u32,
    limit_10s: u32,
    busiest_search_second: u32,
    limit_search_per_second: u32,
    rate_limited: u64,
}

impl CrmSection for HubSpotReport {
    const CRM: &'static str = "HubSpot";
    const RECORD: &'static str = "contact";
    const NOTIFICATIONS: &'static str = "Webhooks (signed v3, verified before they are recorded)";

    fn render_api(&self, o: &mut String) {
        use std::fmt::Write;
        let a = &self.hubspot_api;
        let _ = writeln!(
            o,
            "\nHubSpot API: {} calls ({}) · busiest 10 s: {} of {} allowed · busiest search second: {} of {} · {} answered 429 · {} token grants",
            group(a.calls),
            kinds(&a.by_kind),
            a.busiest_10s,
            a.limit_10s,
            a.busiest_search_second,
            a.limit_search_per_second,
            a.rate_limited,
            a.token_grants
        );
    }
}

/// The mapping a workspace without a HubSpot `mapping` gets.
const SHIPPED_MAPPING: &str = "mappings/hubspot.toml";

fn hub_err(e: HubSpotError) -> CliError {
    CliError::Crm(e.to_string())
}

/// `[workspaces.crm]` on the simulated portal (`url`): an OAuth app, the
/// shipped mapping, one sync pass (webhooks do the rest). A workspace whose
/// CRM is not HubSpot gets a new table.
pub(super) fn crm_table(
    ws: &mut toml::Table,
    url: &str,
    config_dir: &Path,
) -> Result<CrmVars, CliError> {
    if ws
        .get("crm")
        .and_then(|c| c.get("kind"))
        .and_then(toml::Value::as_str)
        .is_some_and(|k| k != "hubspot")
    {
        ws.remove("crm");
    }
    let crm = table(ws, "crm")?;
    crm.insert("kind".into(), "hubspot".into());
    crm.insert("auth_url".into(), url.into());
    crm.insert("api_url".into(), url.into());
    crm.insert(
        "redirect_uri".into(),
        "http://127.0.0.1:0/oauth/callback".into(),
    );
    let mapping = text_of(crm, "mapping").unwrap_or_else(|| SHIPPED_MAPPING.into());
    crm.insert("mapping".into(), abs_in(config_dir, &mapping).into());
    crm.insert("sync_interval_secs".into(), 3600.into());
    for k in ["private_app_token_env", "portal_id", "webhook_secret_env"] {
        crm.remove(k);
    }
    let client_id = text_of(crm, "client_id_env").unwrap_or_else(|| "HUBSPOT_CLIENT_ID".into());
    let client_secret =
        text_of(crm, "client_secret_env").unwrap_or_else(|| "HUBSPOT_CLIENT_SECRET".into());
    crm.insert("client_id_env".into(), client_id.clone().into());
    crm.insert("client_secret_env".into(), client_secret.clone().into());
    Ok(CrmVars {
        client_id,
        client_secret,
        outbound_token: None,
    })
}

/// The contact properties whose change enrichd subscribes to: identity and
/// audience fields (what can change what enrichment finds).
fn input_properties(ws: &Workspace) -> BTreeSet<String> {
    let f = &ws.fields;
    let mut set: BTreeSet<String> = f
        .names()
        .filter(|n| *n != f.icp_score)
        .map(String::from)
        .collect();
    for a in &ws.audiences {
        for c in &a.conditions {
            set.insert(c.field.clone());
        }
    }
    set
}

/// Everything the HubSpot demo runs against.
pub(super) struct HubSpotDemo {
    d: Demo,
    hs: HubSpotSim,
    hub: HubSpot,
    contact_ids: Vec<String>,
    typed: Vec<Typed>,
    /// An output property HubSpot also notifies about (enrichd's own
    /// writes coming back, which must not loop).
    echo_field: Option<String>,
    h: Arc<HubSpotSettings>,
}

impl CrmDemo for HubSpotDemo {
    type Section = HubSpotReport;
    const NAME: &'static str = "hubspot";

    async fn start(
        config: &Path,
        p: Prepared,
        base_ws: &Workspace,
    ) -> Result<(Self, HubSpotReport), CliError> {
        let demo = HubSpotDemo::open(config, p, base_ws).await?;
        let section = HubSpotReport {
            contacts: demo.d.records,
            connect: demo.connect().await?,
            ..HubSpotReport::default()
        };
        Ok((demo, section))
    }

    fn demo(&self) -> &Demo {
        &self.d
    }

    fn expected(&self) -> usize {
        self.d.records
    }

    fn written_so_far(&self) -> u64 {
        self.hs.stats().records_updated
    }

    /// Every contact stored, the backfill done, nothing left to write.
    async fn first_pass_done(&self) -> Result<Option<Vec<Lead>>, CliError> {
        self.d
            .pass_over(CRM, OBJECT, self.d.records, |leads| async move {
                let pending = self.hub.plan_writes(leads).await.map_err(hub_err)?;
                Ok(pending.into_iter().map(|p| p.lead.id).collect())
            })
            .await
    }

    fn first_pass(&self, pass: &FirstPass, section: &mut HubSpotReport) {
        let st = self.hs.stats();
        section.first_pass = PassReport {
            complete: pass.complete,
            secs: pass.secs,
            leads_pulled: pass.leads.len(),
            contacts_written: st.records_updated,
            batch_updates: st.count("POST /crm/v3/objects/contacts/batch/update"),
        };
        if self.d.show {
            println!(
                "Sync      first pass of `enrichd run`: {} contacts pulled and enriched, {} written back in {} batch updates ({:.1} s)",
                group(pass.leads.len() as u64),
                group(st.records_updated),
                section.first_pass.batch_updates,
                pass.secs
            );
        }
    }

    fn view(&self) -> Arc<Workspace> {
        self.d.ws.clone()
    }

    async fn flush(&self) -> Result<(), CliError> {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.hs.flush_webhooks()).await;
        self.d.settle_events(CRM).await
    }

    async fn edit(&self, _view: &Workspace) -> Result<Option<EditReport>, CliError> {
        self.edit_complete_contact().await
    }

    async fn create(&self, _view: &Workspace) -> Result<CreatedReport, CliError> {
        self.create_contact().await
    }

    async fn tally(&self, report: &mut DemoReport<HubSpotReport>) -> Result<(), CliError> {
        self.tally_hubspot(report).await
    }

    async fn shutdown(self) -> Demo {
        self.hs.shutdown().await;
        self.d
    }
}

impl HubSpotDemo {
    /// The portal, the derived config and a fresh store.
    async fn open(
        config: &Path,
        p: Prepared,
        base_ws: &Workspace,
    ) -> Result<HubSpotDemo, CliError> {
        // The portal: one contact per person, with the employee count the
        // audiences filter on; some already carry an email or a phone a
        // person typed, which enrichd must neither search for nor overwrite.
        let population = p.population.clone();
        let mut data = HubSpotData::from_population(
            &population,
            p.clock.now() - 2 * 86_400_000,
            TYPED_EMAIL_SHARE,
        );
        data.contacts.truncate(p.records);
        for (i, c) in data.contacts.iter_mut().enumerate() {
            let person = population.person(i);
            c.properties
                .insert("numemployees".into(), person.employees.to_string());
            if i % TYPED_PHONE_EVERY == TYPED_PHONE_EVERY / 2 {
                c.properties
                    .insert("phone".into(), enrichd_sim::human_phone(&person.phone));
            }
        }
        // The app's webhook subscriptions: creations, changes of what
        // enrichment reads, and one property enrichd writes.
        let mut subs = vec![Subscription::creation()];
        subs.extend(
            input_properties(base_ws)
                .iter()
                .map(|p| Subscription::property_change(p)),
        );
        let mapping = match &base_ws.crm {
            Some(CrmSettings::HubSpot(h)) => Some(h.mapping.clone()),
            // A workspace configured for another CRM (or none) gets the
            // shipped mapping (see `crm_table`).
            Some(CrmSettings::Salesforce(_)) | None => {
                crate::config::mapping::load_mapping(&p.config_dir.join(SHIPPED_MAPPING))
                    .ok()
                    .map(Arc::new)
            }
        };
        let echo_field = mapping
            .as_ref()
            .and_then(|m| m.channels.get(&Channel::WorkEmail))
            .map(|r| r.value.field.clone());
        if let Some(f) = &echo_field {
            subs.push(Subscription::property_change(f));
        }
        let hook_url = format!(
            "http://127.0.0.1:{}{}",
            p.port,
            crate::crm::hubspot::webhook::PATH
        );
        let hs = start_hubspot(
            data,
            HubSpotOptions::defaults()
                .with_limits(HubSpotLimits::oauth_default())
                .with_latency(CRM_LATENCY)
                .with_webhooks(hook_url, subs),
        )
        .await?;
        let contact_ids = hs.contact_ids();
        let mut typed = Vec::new();
        for id in &contact_ids {
            let Some(c) = hs.contact(id) else { continue };
            for (property, channel) in [("email", Channel::WorkEmail), ("phone", Channel::Phone)] {
                if let Some(value) = c.get(property) {
                    typed.push(Typed {
                        id: id.clone(),
                        property: property.into(),
                        channel,
                        value: value.to_string(),
                    });
                }
            }
        }

        // config.toml with the simulators in place of the services.
        let derived = super::derive::derive_config(
            &std::fs::read_to_string(config)?,
            &p.targets(
                base_ws.id.as_str(),
                CrmTarget::HubSpot { url: hs.base_url() },
            ),
        )?;
        let secrets = [
            Some(hs.options().client_id.clone()),
            Some(hs.options().client_secret.clone()),
            None,
        ];
        let d = p
            .load(config, "HubSpot", derived, secrets, base_ws.id.as_str())
            .await?;
        let Some(CrmSettings::HubSpot(h)) = d.ws.crm.clone() else {
            return Err(CliError::Usage("the demo workspace lost its CRM".into()));
        };
        d.headline(&format!("{} HubSpot contacts", group(d.records as u64)));
        let hub = HubSpot::open(&d.settings, &d.ws, d.store.clone(), d.clock.clone())
            .map_err(hub_err)?
            .ok_or_else(|| CliError::Usage("the demo workspace has no HubSpot".into()))?;
        Ok(HubSpotDemo {
            d,
            hs,
            hub,
            contact_ids,
            typed,
            echo_field,
            h,
        })
    }

    /// What `enrichd connect hubspot` does, with an HTTP client as the
    /// browser: the simulated consent page approves at once and redirects
    /// to enrichd's loopback callback; the code is exchanged, the tokens
    /// sealed and stored, the mapped properties created.
    async fn connect(&self) -> Result<ConnectReport, CliError> {
        let d = &self.d;
        let cipher = cipher(&d.settings)?;
        let http = HubSpotClient::http(self.h.timeout).map_err(hub_err)?;
        let connected = auth::connect(
            &auth::ConnectContext {
                ws: &d.ws.id,
                settings: &self.h,
                store: &d.store,
                cipher: Some(&cipher),
                clock: &*d.clock,
                http: &http,
                wait: Duration::from_secs(20),
            },
            browser,
        )
        .await
        .map_err(hub_err)?;
        let schema = crate::crm::hubspot::schema::ensure(
            &self.hub.client,
            &self.h.mapping,
            self.h.create_properties,
        )
        .await
        .map_err(hub_err)?;
        let sealed = tokens_sealed(d, CRM).await?;
        if d.show {
            println!(
                "Connect   OAuth with PKCE, portal {}: authorize → loopback callback → code exchanged → tokens sealed{} · {} properties checked, {} created",
                connected.portal,
                if sealed { "" } else { " (NOT stored)" },
                schema.checked.len(),
                schema.created.len()
            );
        }
        Ok(ConnectReport {
            auth: connected.auth.to_string(),
            portal: connected.portal,
            scopes: connected.scopes,
            tokens_sealed: sealed,
            properties_checked: schema.checked.len(),
            properties_created: schema.created,
        })
    }

    /// A person changes the last name of a contact enrichd completed: the
    /// webhook arrives, the contact is read again, and nothing is bought.
    async fn edit_complete_contact(&self) -> Result<Option<EditReport>, CliError> {
        let last = self.d.ws.fields.last_name.clone();
        let edit = |id: &str, name: &str| {
            self.hs.human_edit(id, &[(last.as_str(), name)]);
            Ok(())
        };
        self.d
            .edit_complete(
                CRM,
                &self.contact_ids,
                |id| self.hs.contact(id),
                &self.h.mapping,
                &last,
                edit,
                |e| e.event.property.as_deref() == Some(last.as_str()),
            )
            .await
    }

    /// A contact created in HubSpot: the webhook brings it to enrichd,
    /// which enriches it and writes it back.
    async fn create_contact(&self) -> Result<CreatedReport, CliError> {
        let d = &self.d;
        let credits_before = d.charged().await?.0;
        let pop = d.population.clone();
        let person = pop.person(d.newcomer(&d.ws, |i| Lead {
            id: LeadId(format!("new-{i}")),
            fields: pop.person(i).crm_fields().into_iter().collect(),
        }));
        let company = self.hs.company_ids().into_iter().find(|id| {
            self.hs
                .company(id)
                .is_some_and(|c| c.properties.get("domain") == Some(&person.domain))
        });
        let fields = person.crm_fields();
        let props: Vec<(&str, &str)> = [
            "firstname",
            "lastname",
            "company",
            "jobtitle",
            "seniority",
            "country",
            "numemployees",
            "icp_score",
        ]
        .iter()
        .filter_map(|k| fields.get(*k).and_then(|v| v.as_str()).map(|v| (*k, v)))
        .collect();
        // The status property is written with the values, in one update.
        let marker = marker_field(&self.h.mapping);
        let t0 = Instant::now();
        let id = self.hs.create_contact(&props, company.as_deref());
        let (written, latency) = d
            .await_write(t0, || {
                self.hs
                    .contact(&id)
                    .is_some_and(|c| c.get(&marker).is_some())
            })
            .await;
        let (values, status) = record_values(self.hs.contact(&id).as_ref(), &self.h.mapping);
        Ok(CreatedReport {
            record_id: id,
            name: person_name(person),
            latency_ms: latency.as_millis() as u64,
            written,
            status,
            values,
            credits: d.charged().await?.0 - credits_before,
            enrichd_writes: None,
        })
    }

    /// What HubSpot, the store and the simulators hold at the end.
    async fn tally_hubspot(&self, report: &mut DemoReport<HubSpotReport>) -> Result<(), CliError> {
        self.d
            .tally(
                report,
                CRM,
                &self.typed,
                |t| self.hs.contact(&t.id).and_then(|c| c.text(&t.property)),
                |e| e.event.property.is_some() && e.event.property == self.echo_field,
            )
            .await?;
        report.written = written_values(
            self.hs
                .contact_ids()
                .iter()
                .filter_map(|id| self.hs.contact(id)),
            &self.h.mapping,
        );
        let st = self.hs.stats();
        report.webhooks.deliveries = st.webhook_deliveries.len();
        report.webhooks.rejected = st
            .webhook_deliveries
            .iter()
            .filter(|(s, _)| !(200..300).contains(s))
            .count();
        report.crm_report.hubspot_api = hubspot_api(&self.hs);
        Ok(())
    }
}

fn hubspot_api(hs: &HubSpotSim) -> HubSpotApiReport {
    let st = hs.stats();
    let limits = hs.limits();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for c in &st.log {
        if matches!(c.bucket, Bucket::Token | Bucket::Sim) {
            continue;
        }
        let e = &c.endpoint;
        let kind = if e.ends_with("/batch/update") {
            "batch update"
        } else if e.contains("/v4/") {
            "associations (v4)"
        } else if e.ends_with("/batch/read") {
            "batch read"
        } else if e.ends_with("/search") {
            "search"
        } else if e.contains("/properties/") {
            "properties"
        } else if e.contains("/objects/") {
            "list / get"
        } else {
            "other"
        };
        *by_kind.entry(kind.to_string()).or_default() += 1;
    }
    HubSpotApiReport {
        calls: st.api_calls(),
        by_kind,
        token_grants: st.token_grants.values().sum(),
        busiest_10s: st.max_in_window(Bucket::General, Duration::from_secs(10)),
        limit_10s: limits.ten_secondly,
        busiest_search_second: st.max_in_window(Bucket::Search, Duration::from_secs(1)),
        limit_search_per_second: limits.search_per_second,
        rate_limited: st.rate_limited.values().sum(),
    }
}
