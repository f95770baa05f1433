//! `enrichd check`: the configuration, connector and mapping files, and
//! every mapped field against the live CRM schema.
//!
//! Loading the settings validates the files (every problem at once, with
//! file, key and line). Then, per workspace with a CRM, the live schema is
//! read (HubSpot: `GET /crm/v3/properties/contacts`; Salesforce: `GET
//! /services/data/vXX.X/sobjects/<Object>/describe` per mapped object) when a connection is
//! stored, and the mapping is checked against it with the rules of
//! [`crate::crm::schema`]: every problem is printed with the mapping file,
//! the key, the field, the closest existing names and the fix, and the
//! fields the next sync will create are listed. Any problem, or a schema
//! that could not be read, exits non-zero. A workspace that is not connected
//! gets a note and does not fail; `--offline` skips the live check.
//!
//! `check` writes nothing: no property is created, and the store is only
//! read (it is not even opened when its SQLite file does not exist). The one
//! exception is HubSpot's own: an expired access token is refreshed and the
//! rotated refresh token persisted, as every command using the connection
//! must.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::clock::SystemClock;
use crate::config::crm::{
    CrmSettings, HubSpotAuth, HubSpotSettings, SalesforceAuth, SalesforceObject,
};
use crate::config::{EnvSecrets, Settings, Workspace};
use crate::core::mapping::CrmKind;
use crate::crm::hubspot::HubSpotError;
use crate::crm::hubspot::auth::CRM as HUBSPOT;
use crate::crm::hubspot::sync::HubSpot;
use crate::crm::salesforce::client::SalesforceClient;
use crate::crm::salesforce::{CRM as SALESFORCE, SalesforceError};
use crate::crm::schema::{CheckOptions, CrmSchema, SchemaProblem, check_mapping_with};
use crate::store::Store;
use crate::store::crm::ConnectionState;

use super::{CliError, Format};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Validate the files only: do not read the CRM schema.
    #[arg(long)]
    pub offline: bool,
    /// Only this workspace (default: every workspace with a CRM).
    #[arg(long, short)]
    pub workspace: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub(crate) async fn run(config: &Path, args: CheckArgs) -> Result<(), CliError> {
    let s = Settings::load(config, &EnvSecrets)?;
    if args.format == Format::Table {
        summary(config, &s);
    }
    let workspaces: Vec<Arc<Workspace>> = match &args.workspace {
        Some(id) => vec![super::pick_workspace(&s, Some(id))?],
        None => s.workspaces.clone(),
    };
    let mut store = StoreSlot::default();
    let mut reports = Vec::new();
    for w in &workspaces {
        // One arm per CRM: the Salesforce connector adds its own (describe →
        // `crm::schema::from_salesforce_describe`); the check is shared.
        match &w.crm {
            Some(CrmSettings::HubSpot(h)) => {
                reports.push(check_hubspot(&s, w, h, args.offline, &mut store).await);
            }
            Some(CrmSettings::Salesforce(sf)) => {
                for o in &sf.objects {
                    reports.push(check_salesforce(&s, w, o, args.offline, &mut store).await);
                }
            }
            None => {}
        }
    }
    match args.format {
        Format::Table => print_table(&reports),
        Format::Json => {
            let ok = reports.iter().all(WorkspaceCheck::ok);
            println!(
                "{}",
                serde_json::json!({
                    "config": config.display().to_string(),
                    "ok": ok,
                    "workspaces": reports,
                })
            );
        }
    }
    verdict(&reports)
}

/// What `check` found for one workspace's CRM.
#[derive(Debug, Clone, Serialize)]
struct WorkspaceCheck {
    workspace: String,
    crm: CrmKind,
    object: String,
    mapping: PathBuf,
    #[serde(flatten)]
    live: Live,
    /// Mapped fields checked against the live schema.
    checked: usize,
    problems: Vec<SchemaProblem>,
    /// Missing fields the next sync creates (HubSpot `create_properties`).
    to_create: Vec<String>,
}

impl WorkspaceCheck {
    fn ok(&self) -> bool {
        self.problems.is_empty() && !matches!(self.live, Live::Failed { .. })
    }
}

/// Whether the live schema was read.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Live {
    /// Read with `endpoint` and checked.
    Checked { endpoint: String },
    /// `--offline`.
    Offline,
    /// No usable stored connection: `note` says what to run.
    NotConnected { note: String },
    /// The schema could not be read.
    Failed { error: String },
}

/// The store, opened on first need (and only when it may hold a connection).
#[derive(Default)]
struct StoreSlot {
    store: Option<Arc<dyn Store>>,
}

impl StoreSlot {
    /// The configured store when it exists; `None` when it cannot hold a
    /// connection (a SQLite file that does not exist, an in-memory
    /// database): opening would create it.
    async fn existing(&mut self, url: &str) -> Result<Option<Arc<dyn Store>>, CliError> {
        if let Some(s) = &self.store {
            return Ok(Some(s.clone()));
        }
        if !may_exist(url) {
            return Ok(None);
        }
        let s = crate::store::open(url).await?;
        self.store = Some(s.clone());
        Ok(Some(s))
    }
}

/// Whether the store at `url` may already exist (PostgreSQL: always).
fn may_exist(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return true;
    };
    if rest.contains(":memory:") || rest.contains("mode=memory") {
        return false;
    }
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    !path.is_empty() && Path::new(path).exists()
}

async fn check_hubspot(
    s: &Settings,
    w: &Arc<Workspace>,
    h: &Arc<HubSpotSettings>,
    offline: bool,
    store: &mut StoreSlot,
) -> WorkspaceCheck {
    let mut out = WorkspaceCheck {
        workspace: w.id.to_string(),
        crm: CrmKind::Hubspot,
        object: h.mapping.object.clone(),
        mapping: h.mapping_file.clone(),
        live: Live::Offline,
        checked: 0,
        problems: Vec::new(),
        to_create: Vec::new(),
    };
    if offline {
        return out;
    }
    let schema = match hubspot_schema(s, w, h, store).await {
        Ok(schema) => schema,
        Err(live) => {
            out.live = live;
            return out;
        }
    };
    let providers: BTreeSet<String> = w.order.values().flatten().cloned().collect();
    let opts = CheckOptions {
        can_create: h.create_properties,
        providers: providers.into_iter().collect(),
    };
    let c = check_mapping_with(&h.mapping, &h.mapping_file, &schema, &opts);
    out.live = Live::Checked {
        endpoint: schema.endpoint.clone(),
    };
    out.checked = c.checked.len();
    out.problems = c.problems;
    out.to_create = c.to_create;
    out
}

/// The workspace's HubSpot contact schema, or why it was not read.
async fn hubspot_schema(
    s: &Settings,
    w: &Arc<Workspace>,
    h: &HubSpotSettings,
    slot: &mut StoreSlot,
) -> Result<CrmSchema, Live> {
    let connect = format!("run `enrichd connect hubspot --workspace {}`", w.id);
    let private_app = matches!(h.auth, HubSpotAuth::PrivateApp { .. });
    let failed = |e: String| Live::Failed { error: e };
    let store = match slot.existing(&s.storage_url).await {
        Ok(Some(store)) => store,
        // A private app's token is in the configuration: no stored
        // connection is needed, and its tokens never touch the store.
        Ok(None) if private_app => crate::store::open("sqlite::memory:")
            .await
            .map_err(|e| failed(e.to_string()))?,
        Ok(None) => {
            return Err(Live::NotConnected {
                note: format!(
                    "not connected (no store at {} yet): {connect}",
                    super::redact_url(&s.storage_url)
                ),
            });
        }
        Err(e) => return Err(failed(e.to_string())),
    };
    if !private_app {
        match store.connection(&w.id, HUBSPOT).await {
            Ok(Some(row)) if row.state == ConnectionState::Connected => {}
            Ok(Some(row)) => {
                return Err(Live::NotConnected {
                    note: format!(
                        "the HubSpot connection needs reconnecting ({}): {connect}",
                        row.reason
                    ),
                });
            }
            Ok(None) => {
                return Err(Live::NotConnected {
                    note: format!("not connected: {connect}"),
                });
            }
            Err(e) => {
                return Err(Live::NotConnected {
                    note: format!(
                        "no connection could be read from the store ({e}): run `enrichd migrate`, then {connect}"
                    ),
                });
            }
        }
    }
    let hub = match HubSpot::open(s, w, store, Arc::new(SystemClock)) {
        Ok(Some(hub)) => hub,
        Ok(None) => return Err(failed("the workspace has no HubSpot CRM".into())),
        Err(e) => return Err(failed(e.to_string())),
    };
    crate::crm::hubspot::schema::live_schema(&hub.client)
        .await
        .map_err(|e| match e {
            HubSpotError::NotConnected { .. } | HubSpotError::ReconnectRequired { .. } => {
                Live::NotConnected {
                    note: e.to_string(),
                }
            }
            e => failed(e.to_string()),
        })
}

/// One Salesforce object: `GET /sobjects/<Object>/describe` (as the
/// integration user: fields hidden by field-level security are absent) and
/// the mapping checked against it. Salesforce fields are never created by
/// enrichd: a missing one is a problem whose fix is the admin step.
async fn check_salesforce(
    s: &Settings,
    w: &Arc<Workspace>,
    o: &SalesforceObject,
    offline: bool,
    slot: &mut StoreSlot,
) -> WorkspaceCheck {
    let mut out = WorkspaceCheck {
        workspace: w.id.to_string(),
        crm: CrmKind::Salesforce,
        object: o.object.to_string(),
        mapping: o.mapping_file.clone(),
        live: Live::Offline,
        checked: 0,
        problems: Vec::new(),
        to_create: Vec::new(),
    };
    if offline {
        return out;
    }
    let schema = match salesforce_schema(s, w, o, slot).await {
        Ok(schema) => schema,
        Err(live) => {
            out.live = live;
            return out;
        }
    };
    let providers: BTreeSet<String> = w.order.values().flatten().cloned().collect();
    let opts = CheckOptions {
        can_create: false,
        providers: providers.into_iter().collect(),
    };
    let c = check_mapping_with(&o.mapping, &o.mapping_file, &schema, &opts);
    out.live = Live::Checked {
        endpoint: schema.endpoint.clone(),
    };
    out.checked = c.checked.len();
    out.problems = c.problems;
    out
}

/// The describe of one object, or why it was not read.
async fn salesforce_schema(
    s: &Settings,
    w: &Arc<Workspace>,
    o: &SalesforceObject,
    slot: &mut StoreSlot,
) -> Result<CrmSchema, Live> {
    let connect = format!("run `enrichd connect salesforce --workspace {}`", w.id);
    let failed = |e: String| Live::Failed { error: e };
    let store = match slot.existing(&s.storage_url).await {
        Ok(Some(store)) => store,
        Ok(None) => {
            return Err(Live::NotConnected {
                note: format!(
                    "not connected (no store at {} yet): {connect}",
                    super::redact_url(&s.storage_url)
                ),
            });
        }
        Err(e) => return Err(failed(e.to_string())),
    };
    match store.connection(&w.id, SALESFORCE).await {
        Ok(Some(row)) if row.state == ConnectionState::Connected => {}
        Ok(Some(row)) => {
            return Err(Live::NotConnected {
                note: format!(
                    "the Salesforce connection needs reconnecting ({}): {connect}",
                    row.reason
                ),
            });
        }
        Ok(None) => {
            return Err(Live::NotConnected {
                note: format!("not connected: {connect}"),
            });
        }
        Err(e) => {
            return Err(Live::NotConnected {
                note: format!(
                    "no connection could be read from the store ({e}): run `enrichd migrate`, then {connect}"
                ),
            });
        }
    }
    let client = match SalesforceClient::open(s, w, store, Arc::new(SystemClock)) {
        Ok(Some(c)) => c,
        Ok(None) => return Err(failed("the workspace has no Salesforce CRM".into())),
        Err(e) => return Err(failed(e.to_string())),
    };
    client.describe(o.object).await.map_err(|e| match e {
        SalesforceError::NotConnected { .. } | SalesforceError::ReconnectRequired { .. } => {
            Live::NotConnected {
                note: e.to_string(),
            }
        }
        e => failed(e.to_string()),
    })
}

fn print_table(reports: &[WorkspaceCheck]) {
    for r in reports {
        let crm = match r.crm {
            CrmKind::Hubspot => "HubSpot",
            CrmKind::Salesforce => "Salesforce",
        };
        let head = format!(
            "workspace {}: {crm} {} · mapping {}",
            r.workspace,
            r.object,
            r.mapping.display()
        );
        match &r.live {
            Live::Offline => println!("{head}: live schema not checked (--offline)"),
            Live::NotConnected { note } => {
                println!("{head}: {note} (live schema not checked)")
            }
            Live::Failed { error } => {
                println!("{head}: the live schema could not be read: {error}")
            }
            Live::Checked { endpoint } => {
                println!(
                    "{head}: {} mapped field{} checked against {endpoint}",
                    r.checked,
                    plural(r.checked)
                );
                if r.problems.is_empty() && r.to_create.is_empty() {
                    println!("  ok: every mapped field exists and can hold what enrichd writes");
                } else if r.problems.is_empty() {
                    println!(
                        "  ok: no problem; the fields that exist can hold what enrichd writes, the others are created by the next sync"
                    );
                } else {
                    println!(
                        "  {} problem{}:",
                        r.problems.len(),
                        plural(r.problems.len())
                    );
                    for p in &r.problems {
                        println!("  ✗ {p}");
                    }
                }
                if !r.to_create.is_empty() {
                    println!(
                        "  the next sync creates {} propert{} (create_properties = true): {}",
                        r.to_create.len(),
                        if r.to_create.len() == 1 { "y" } else { "ies" },
                        r.to_create.join(", ")
                    );
                }
            }
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Exit status: an error when any mapping problem was found or a schema
/// could not be read.
fn verdict(reports: &[WorkspaceCheck]) -> Result<(), CliError> {
    let problems: usize = reports.iter().map(|r| r.problems.len()).sum();
    let with_problems: Vec<&str> = reports
        .iter()
        .filter(|r| !r.problems.is_empty())
        .map(|r| r.workspace.as_str())
        .collect();
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| matches!(r.live, Live::Failed { .. }))
        .map(|r| r.workspace.as_str())
        .collect();
    let mut parts = Vec::new();
    if problems > 0 {
        parts.push(format!(
            "{problems} mapping problem{} in workspace{} {}: fix each as its line says, then run `enrichd check` again",
            plural(problems),
            plural(with_problems.len()),
            with_problems.join(", ")
        ));
    }
    if !failed.is_empty() {
        parts.push(format!(
            "the CRM schema of workspace{} {} could not be read (see above)",
            plural(failed.len()),
            failed.join(", ")
        ));
    }
    if parts.is_empty() {
        Ok(())
    } else {
        Err(CliError::Crm(parts.join("; ")))
    }
}

/// The configuration as loaded (what `check` printed before the live check).
fn summary(config: &Path, s: &Settings) {
    println!("{}: ok", config.display());
    println!("storage: {}", super::redact_url(&s.storage_url));
    for (id, a) in &s.accounts {
        let limits: Vec<String> = a
            .limits
            .windows()
            .iter()
            .map(|(w, n)| format!("{n}/{}s", w.as_secs()))
            .collect();
        println!(
            "provider {id}: {} ({:?}) at {} · limits {}",
            a.connector.name,
            a.connector.role,
            a.base_url,
            if limits.is_empty() {
                "none".into()
            } else {
                limits.join(", ")
            }
        );
    }
    for w in &s.workspaces {
        println!(
            "workspace {} ({}){}",
            w.id,
            w.name,
            if w.enabled { "" } else { " · enrichment OFF" }
        );
        for (c, order) in &w.order {
            if !order.is_empty() {
                println!("  {c}: {}", order.join(" → "));
            }
        }
        if let Some(v) = &w.verifier {
            println!("  verifier: {v} · catch-all: {:?}", w.catch_all);
        }
        for a in &w.audiences {
            println!(
                "  audience {}: {} ({} conditions)",
                a.name,
                a.channels,
                a.conditions.len()
            );
        }
        match w.budget {
            Some(b) => println!("  budget: {} credits per {:?}", b.credits, b.period),
            None => println!("  budget: unlimited"),
        }
        if let Some(CrmSettings::HubSpot(h)) = &w.crm {
            println!(
                "  crm: hubspot at {} ({}) · limits {}/10s, {} searches/s · mapping {} ({} properties)",
                h.api_url,
                match h.auth {
                    HubSpotAuth::OAuth { .. } => "OAuth app",
                    HubSpotAuth::PrivateApp { .. } => "private app",
                },
                h.limits.ten_secondly,
                h.limits.search_per_second,
                h.mapping_file.display(),
                h.mapping.fields().len()
            );
        }
        if let Some(CrmSettings::Salesforce(sf)) = &w.crm {
            let objects: Vec<String> = sf
                .objects
                .iter()
                .map(|o| {
                    format!(
                        "{} (mapping {}, {} fields)",
                        o.object,
                        o.mapping_file.display(),
                        o.mapping.fields().len()
                    )
                })
                .collect();
            println!(
                "  crm: salesforce via {} ({}, API {}) · stop at {:.0}% of the daily allocation · {}",
                sf.login.base(),
                match sf.auth {
                    SalesforceAuth::WebServer { .. } => "web-server flow",
                    SalesforceAuth::Jwt { .. } => "JWT bearer flow",
                },
                sf.api_version,
                sf.budget.stop_share * 100.0,
                objects.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_file_that_does_not_exist_is_not_opened() {
        assert!(!may_exist("sqlite:///no/such/dir/enrichd.db"));
        assert!(!may_exist("sqlite://no/such/enrichd.db?mode=rwc"));
        assert!(!may_exist("sqlite::memory:"));
        assert!(may_exist("postgres://u:p@localhost/enrichd"));
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("e.db");
        std::fs::write(&f, b"").expect("file");
        assert!(may_exist(&format!("sqlite://{}", f.display())));
        assert!(may_exist(&format!("sqlite:{}?mode=rwc", f.display())));
    }
}
