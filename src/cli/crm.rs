//! `enrichd connect`, `enrichd sync` and `enrichd keygen`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::crm::{CrmSettings, HubSpotAuth};
use crate::config::{EnvSecrets, Settings};
use crate::crm::hubspot::HubSpotError;
use crate::crm::hubspot::auth;
use crate::crm::hubspot::client::HubSpotClient;
use crate::crm::hubspot::schema;
use crate::crm::hubspot::sync::{HubSpot, SyncOptions};
use crate::crypto::TokenCipher;

use super::{CliError, Format, pick_workspace, start_engine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrmName {
    Hubspot,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The CRM to connect.
    #[arg(value_enum)]
    pub crm: CrmName,
    /// Workspace id (default: the first in the config).
    #[arg(long, short)]
    pub workspace: Option<String>,
    /// Print the authorization URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// How long to wait for the browser to come back.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// One pass, then exit (the daemon, `enrichd run`, syncs on a schedule).
    #[arg(long)]
    pub once: bool,
    /// Workspace id (default: the first in the config).
    #[arg(long, short)]
    pub workspace: Option<String>,
    /// Read every contact again instead of the changes since the last sync.
    #[arg(long)]
    pub full: bool,
    /// Only pull (and write back stored results); call no provider.
    #[arg(long)]
    pub no_enrich: bool,
    /// Do not write to the CRM.
    #[arg(long)]
    pub no_write: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

fn hub_err(e: HubSpotError) -> CliError {
    CliError::Crm(e.to_string())
}

pub fn keygen() -> Result<(), CliError> {
    let key = crate::crypto::generate_key().map_err(|e| CliError::Usage(e.to_string()))?;
    println!("{key}");
    eprintln!(
        "export ENRICHD_MASTER_KEY=<the line above> (keep it secret; tokens sealed with it need it)"
    );
    Ok(())
}

pub async fn connect(config: &Path, args: ConnectArgs) -> Result<(), CliError> {
    let settings = Arc::new(Settings::load(config, &EnvSecrets)?);
    let ws = pick_workspace(&settings, args.workspace.as_deref())?;
    let Some(CrmSettings::HubSpot(h)) = &ws.crm else {
        return Err(CliError::Usage(format!(
            "workspace `{}` has no [workspaces.crm] with kind = \"hubspot\"",
            ws.id
        )));
    };
    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let cipher = match &settings.master_key {
        Some(k) => Some(
            TokenCipher::from_key_text(&settings.master_key_env, k.expose())
                .map_err(|e| CliError::Usage(e.to_string()))?,
        ),
        None if matches!(h.auth, HubSpotAuth::OAuth { .. }) => {
            return Err(CliError::Usage(format!(
                "environment variable `{}` (security.master_key_env) is not set: tokens are encrypted with it. Create one with `enrichd keygen`",
                settings.master_key_env
            )));
        }
        None => None,
    };
    let http = HubSpotClient::http(h.timeout).map_err(hub_err)?;
    let no_browser = args.no_browser;
    let connected = auth::connect(
        &auth::ConnectContext {
            ws: &ws.id,
            settings: h,
            store: &store,
            cipher: cipher.as_ref(),
            clock: &SystemClock,
            http: &http,
            wait: Duration::from_secs(args.timeout_secs),
        },
        |url: String| async move {
            println!("Open this URL to approve enrichd in HubSpot:\n{url}");
            if !no_browser {
                open_browser(&url);
            }
        },
    )
    .await
    .map_err(hub_err)?;
    println!(
        "connected workspace {} to HubSpot portal {} ({}; scopes: {})",
        ws.id,
        if connected.portal.is_empty() {
            "?"
        } else {
            &connected.portal
        },
        connected.auth,
        if connected.scopes.is_empty() {
            "as configured in the app".to_string()
        } else {
            connected.scopes.join(" ")
        }
    );
    let Some(hub) = HubSpot::open(&settings, &ws, store, Arc::new(SystemClock)).map_err(hub_err)?
    else {
        return Ok(());
    };
    let r = schema::ensure(&hub.client, &h.mapping, h.create_properties)
        .await
        .map_err(hub_err)?;
    println!(
        "properties: {} checked, {} created{}",
        r.checked.len(),
        r.created.len(),
        if r.created.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.created.join(", "))
        }
    );
    Ok(())
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_err()
    {
        eprintln!("(could not start a browser; open the URL yourself)");
    }
}

pub async fn sync(config: &Path, args: SyncArgs) -> Result<(), CliError> {
    if !args.once {
        return Err(CliError::Usage(
            "`enrichd sync` runs one pass: pass --once (the daemon `enrichd run` syncs on a schedule)".into(),
        ));
    }
    let settings = Arc::new(Settings::load(config, &EnvSecrets)?);
    let ws = pick_workspace(&settings, args.workspace.as_deref())?;
    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let hub = HubSpot::open(&settings, &ws, store.clone(), clock)
        .map_err(hub_err)?
        .ok_or_else(|| CliError::Usage(format!("workspace `{}` has no CRM configured", ws.id)))?;
    let opts = SyncOptions {
        full: args.full,
        enrich: !args.no_enrich,
        write: !args.no_write,
    };
    if opts.write {
        schema::ensure(
            &hub.client,
            &hub.settings.mapping,
            hub.settings.create_properties,
        )
        .await
        .map_err(hub_err)?;
    }
    let engine = if opts.enrich {
        Some(start_engine(settings.clone(), store).await?.0)
    } else {
        None
    };
    let report = hub.sync(engine.as_ref(), opts).await.map_err(hub_err)?;
    let events = hub
        .process_events(engine.as_ref(), opts)
        .await
        .map_err(hub_err)?;
    match args.format {
        Format::Json => println!("{}", serde_json::json!({"sync": report, "events": events})),
        Format::Table => {
            let p = &report.pull;
            println!(
                "pulled {} contacts ({} list, {} search, {} pages, {} companies read, {} search restarts)",
                p.contacts,
                p.from_list,
                p.from_search,
                p.pages,
                p.companies_read,
                p.search_restarts
            );
            println!("enriched {} leads", report.enriched + events.enriched);
            let w = &report.write;
            println!(
                "wrote {} fields on {} contacts in {} batch calls; {} failed",
                w.fields_written, w.records_written, w.batches, w.records_failed
            );
            for (lead, why) in report.failures.iter().take(20) {
                println!("  contact {lead}: {why}");
            }
            println!(
                "webhook events: {} handled, {} ignored",
                events.events - events.ignored,
                events.ignored
            );
            println!(
                "HubSpot API calls: {} ({} answered 429)",
                report.api_calls, report.rate_limited
            );
        }
    }
    Ok(())
}
