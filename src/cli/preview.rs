//! `enrichd preview`: per lead and field, what write-back would change and
//! why, and with `--estimate` which providers would be asked and what it
//! would cost. Reads only: no CRM write, no provider call, no ledger row.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;

use crate::clock::{Clock, SystemClock};
use crate::config::crm::CrmSettings;
use crate::config::{EnvSecrets, Settings, Workspace};
use crate::core::lead::{Lead, LeadId};
use crate::core::mapping::Mapping;
use crate::crm::hubspot::pull::Puller;
use crate::crm::hubspot::sync::HubSpot;
use crate::preview::run::{Filter, Options, PreviewError, Records, Scope, preview_stored};
use crate::preview::{Preview, render};

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct PreviewArgs {
    /// Workspace id (default: the first in the config).
    #[arg(long, short)]
    pub workspace: Option<String>,
    /// Only leads in this audience.
    #[arg(long)]
    pub audience: Option<String>,
    /// Only these leads (CRM record ids); repeat or separate with commas.
    #[arg(long = "lead", value_delimiter = ',')]
    pub leads: Vec<String>,
    /// At most this many leads.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value_t = PreviewFormat::Table)]
    pub format: PreviewFormat,
    /// Also show, for leads still missing channels, which providers would be
    /// asked and the credits it would cost.
    #[arg(long)]
    pub estimate: bool,
    /// Re-read the leads' current values from the CRM (free record reads)
    /// instead of using the values as last synced.
    #[arg(long)]
    pub live: bool,
    /// Preview with this mapping file instead of the workspace's (to try an
    /// edited copy before switching to it).
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// List only leads with something to write (the summary counts all).
    #[arg(long)]
    pub changes_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreviewFormat {
    Table,
    Json,
    Csv,
}

impl From<super::Format> for PreviewFormat {
    fn from(f: super::Format) -> Self {
        match f {
            super::Format::Table => PreviewFormat::Table,
            super::Format::Json => PreviewFormat::Json,
        }
    }
}

impl From<PreviewError> for CliError {
    fn from(e: PreviewError) -> Self {
        match e {
            PreviewError::Store(e) => CliError::Store(e),
            PreviewError::Crm(m) => CliError::Crm(m),
            PreviewError::Usage(m) => CliError::Usage(m),
        }
    }
}

pub(crate) fn print(p: &Preview, format: PreviewFormat) -> Result<(), CliError> {
    match format {
        PreviewFormat::Table => print!("{}", render::table(p)),
        PreviewFormat::Json => println!("{}", render::json(p)),
        PreviewFormat::Csv => print!(
            "{}",
            render::csv(p).map_err(|e| CliError::Io(std::io::Error::other(e)))?
        ),
    }
    Ok(())
}

/// The mapping a workspace writes with, and its file; `--mapping` replaces
/// it (its audience overrides must name the workspace's audiences).
pub(crate) fn mapping_of(
    ws: &Workspace,
    file: Option<&Path>,
) -> Result<(Arc<Mapping>, String), CliError> {
    if let Some(f) = file {
        let audiences: Vec<String> = ws.audiences.iter().map(|a| a.name.clone()).collect();
        let m = crate::config::mapping::load_mapping_for(f, &audiences)?;
        return Ok((Arc::new(m), f.display().to_string()));
    }
    match &ws.crm {
        Some(CrmSettings::HubSpot(h)) => {
            Ok((h.mapping.clone(), h.mapping_file.display().to_string()))
        }
        // The first configured object's mapping (Lead by default).
        Some(CrmSettings::Salesforce(s)) => s
            .objects
            .first()
            .map(|o| (o.mapping.clone(), o.mapping_file.display().to_string()))
            .ok_or_else(|| {
                CliError::Usage(format!("workspace {} maps no Salesforce object", ws.id))
            }),
        None => Err(CliError::Usage(format!(
            "workspace {} has no CRM, so nothing would be written back; add a \
             [workspaces.crm] section to the config, or pass --mapping <file> to preview \
             with a mapping",
            ws.id
        ))),
    }
}

/// Live records through the HubSpot batch read (100 ids per call).
struct HubSpotRecords(Puller);

impl Records for HubSpotRecords {
    fn read<'a>(
        &'a self,
        ids: &'a [LeadId],
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<Lead>, PreviewError>> + Send + 'a>,
    > {
        Box::pin(async move {
            self.0
                .by_ids(ids)
                .await
                .map_err(|e| PreviewError::Crm(e.to_string()))
        })
    }
}

/// Live records through SOQL `Id IN (…)` (200 ids per query).
struct SalesforceRecords(crate::crm::salesforce::pull::Puller);

impl Records for SalesforceRecords {
    fn read<'a>(
        &'a self,
        ids: &'a [LeadId],
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<Lead>, PreviewError>> + Send + 'a>,
    > {
        Box::pin(async move {
            self.0
                .by_ids(ids)
                .await
                .map_err(|e| PreviewError::Crm(e.to_string()))
        })
    }
}

pub(crate) async fn run(config: &Path, args: PreviewArgs) -> Result<(), CliError> {
    let settings = Arc::new(Settings::load(config, &EnvSecrets)?);
    let ws = super::pick_workspace(&settings, args.workspace.as_deref())?;
    let (mapping, mapping_file) = mapping_of(&ws, args.mapping.as_deref())?;
    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // A Salesforce workspace is previewed through its object's view (the
    // Salesforce identity field names), exactly as the sync enriches and
    // writes it, so the preview equals what a pass writes.
    let (ws, sf_object) = match &ws.crm {
        Some(CrmSettings::Salesforce(s)) => {
            let object = s
                .objects
                .first()
                .map_or(crate::crm::salesforce::SObject::Lead, |o| o.object);
            (
                crate::crm::salesforce::sync::object_workspace(&ws, s, object),
                Some(object),
            )
        }
        _ => (ws, None),
    };
    let live: Option<Box<dyn Records>> = if !args.live {
        None
    } else if let Some(object) = sf_object {
        let sf = crate::crm::salesforce::sync::SalesforceSync::open(
            &settings,
            &ws,
            store.clone(),
            clock.clone(),
        )
        .map_err(|e| CliError::Crm(e.to_string()))?
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--live re-reads records from the workspace's CRM, and workspace {} has none",
                ws.id
            ))
        })?;
        Some(Box::new(SalesforceRecords(sf.puller(object))))
    } else {
        let hs = HubSpot::open(&settings, &ws, store.clone(), clock.clone())
            .map_err(|e| CliError::Crm(e.to_string()))?
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--live re-reads records from the workspace's CRM, and workspace {} has none",
                    ws.id
                ))
            })?;
        Some(Box::new(HubSpotRecords(hs.puller())))
    };
    let opts = Options {
        filter: Filter {
            audience: args.audience.clone(),
            ids: args
                .leads
                .iter()
                .map(|s| LeadId(s.trim().to_string()))
                .collect(),
            limit: args.limit,
            only_changes: args.changes_only,
        },
        estimate: args.estimate,
    };
    let p = preview_stored(
        Scope {
            settings: &settings,
            ws: &ws,
            mapping: &mapping,
            mapping_file: &mapping_file,
            store: &*store,
            now: clock.now(),
        },
        &opts,
        live.as_deref(),
    )
    .await?;
    print(&p, args.format)
}
