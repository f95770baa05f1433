//! `enrichd connect`, `enrichd sync` and `enrichd keygen`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::crm::{CrmSettings, HubSpotAuth, SalesforceAuth, SalesforceSettings};
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
    Salesforce,
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
    /// Print what connecting would do (the app, scopes and the properties
    /// it would create) without opening a browser or storing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Salesforce: revoke the stored grant at Salesforce (the refresh token,
    /// and with it every session issued from it) and drop the stored tokens.
    #[arg(long, conflicts_with = "dry_run")]
    pub revoke: bool,
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
    /// Read the changes, but instead of storing, enriching and writing,
    /// print the preview of what this pass would write and what enriching
    /// would cost (the watermark does not move).
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// With --dry-run: the preview format (table, json or csv).
    #[arg(long, value_enum)]
    pub preview_format: Option<super::preview::PreviewFormat>,
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
    if args.crm == CrmName::Salesforce {
        let Some(CrmSettings::Salesforce(sf)) = &ws.crm else {
            return Err(CliError::Usage(format!(
                "workspace `{}` has no [workspaces.crm] with kind = \"salesforce\"",
                ws.id
            )));
        };
        return connect_salesforce(&settings, &ws, sf, &args).await;
    }
    if args.revoke {
        return Err(CliError::Usage(
            "--revoke is for Salesforce; a HubSpot app is uninstalled in HubSpot (Settings → Integrations → Connected apps)".into(),
        ));
    }
    let Some(CrmSettings::HubSpot(h)) = &ws.crm else {
        return Err(CliError::Usage(format!(
            "workspace `{}` has no [workspaces.crm] with kind = \"hubspot\"",
            ws.id
        )));
    };
    if args.dry_run {
        connect_plan(&ws.id, h);
        return Ok(());
    }
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

/// `enrichd connect salesforce`: the web-server flow in the browser (or the
/// JWT bearer grant), the sealed connection stored, then the mapped fields
/// checked against the live describe; `--revoke` revokes the stored grant.
async fn connect_salesforce(
    settings: &Settings,
    ws: &Arc<crate::config::Workspace>,
    sf: &Arc<SalesforceSettings>,
    args: &ConnectArgs,
) -> Result<(), CliError> {
    use crate::crm::salesforce::auth as sf_auth;
    use crate::crm::salesforce::client::SalesforceClient;
    if args.dry_run {
        salesforce_plan(&ws.id, sf);
        return Ok(());
    }
    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let cipher = match &settings.master_key {
        Some(k) => TokenCipher::from_key_text(&settings.master_key_env, k.expose())
            .map_err(|e| CliError::Usage(e.to_string()))?,
        None => {
            return Err(CliError::Usage(format!(
                "environment variable `{}` (security.master_key_env) is not set: Salesforce tokens are encrypted with it. Create one with `enrichd keygen`",
                settings.master_key_env
            )));
        }
    };
    let http = sf_auth::http_client(sf.timeout).map_err(sf_err)?;
    let cx = sf_auth::ConnectContext {
        ws: &ws.id,
        settings: sf,
        store: &store,
        cipher: Some(&cipher),
        clock: &SystemClock,
        http: &http,
        wait: Duration::from_secs(args.timeout_secs),
    };
    if args.revoke {
        let r = sf_auth::revoke(&cx).await.map_err(sf_err)?;
        println!(
            "revoked the Salesforce {} token of workspace {} (org {}){}; the stored tokens are deleted. Run `enrichd connect salesforce` to connect again.",
            r.token,
            ws.id,
            r.org_id,
            if r.already_invalid {
                " (Salesforce already considered it invalid)"
            } else {
                ""
            }
        );
        return Ok(());
    }
    let no_browser = args.no_browser;
    let c = sf_auth::connect(&cx, |url: String| async move {
        println!("Open this URL to approve enrichd in Salesforce:\n{url}");
        if !no_browser {
            open_browser(&url);
        }
    })
    .await
    .map_err(sf_err)?;
    println!(
        "connected workspace {} to Salesforce org {} as user {} ({}; instance {}; scopes: {}{})",
        ws.id,
        c.org_id,
        c.user_id,
        c.flow,
        c.instance_url,
        if c.scopes.is_empty() {
            "as configured in the connected app".to_string()
        } else {
            c.scopes.join(" ")
        },
        if c.flow == "web_server" && !c.refresh_token {
            "; WARNING: no refresh token was issued, the connection ends with this session"
        } else {
            ""
        }
    );
    let Some(client) =
        SalesforceClient::open(settings, ws, store, Arc::new(SystemClock)).map_err(sf_err)?
    else {
        return Ok(());
    };
    let providers: std::collections::BTreeSet<String> =
        ws.order.values().flatten().cloned().collect();
    let opts = crate::crm::schema::CheckOptions {
        can_create: false,
        providers: providers.into_iter().collect(),
    };
    for o in &sf.objects {
        let schema = client.describe(o.object).await.map_err(sf_err)?;
        let c = crate::crm::schema::check_mapping_with(&o.mapping, &o.mapping_file, &schema, &opts);
        if c.problems.is_empty() {
            println!(
                "{}: the {} mapped fields exist and can hold what enrichd writes",
                o.object,
                c.checked.len()
            );
        } else {
            println!(
                "{}: {} of the {} mapped fields need an admin (enrichd never creates Salesforce fields):",
                o.object,
                c.problems.len(),
                c.checked.len()
            );
            for p in &c.problems {
                println!("  ✗ {p}");
            }
            println!("  then run `enrichd check` again");
        }
    }
    Ok(())
}

fn sf_err(e: crate::crm::salesforce::SalesforceError) -> CliError {
    CliError::Crm(e.to_string())
}

/// What `connect salesforce` would do, printed instead of doing it.
fn salesforce_plan(ws: &crate::core::lead::WorkspaceId, sf: &SalesforceSettings) {
    println!("Dry run: nothing is opened, stored or sent.");
    match &sf.auth {
        SalesforceAuth::WebServer {
            client_id,
            client_secret,
            redirect_uri,
            scopes,
        } => {
            println!(
                "workspace {ws} would be connected to Salesforce through the connected app {} at {} \
                 (web-server flow with PKCE and state, callback {redirect_uri}{})",
                short_key(client_id),
                sf.login.base(),
                if client_secret.is_some() {
                    ", consumer secret sent"
                } else {
                    ", no consumer secret"
                }
            );
            println!("scopes: {}", scopes.join(" "));
        }
        SalesforceAuth::Jwt {
            client_id,
            username,
            key_file,
            ..
        } => println!(
            "workspace {ws} would be connected to Salesforce as {username} with the JWT bearer flow \
             (connected app {}, key {}, audience {}) at {}",
            short_key(client_id),
            key_file.display(),
            sf.login.jwt_audience(),
            sf.login.base()
        ),
    }
    println!(
        "data calls go to the instance_url Salesforce returns (API {}); tokens are sealed with the master key",
        sf.api_version
    );
    for o in &sf.objects {
        println!(
            "then the {} mapped {} fields of {} would be checked against the live describe \
             (missing ones are reported with the admin steps, never created):",
            o.mapping.fields().len(),
            o.object,
            o.mapping_file.display()
        );
        for f in o.mapping.fields() {
            println!("  {f}");
        }
    }
}

/// A consumer key shortened for display (it is not a secret, but long).
fn short_key(k: &str) -> String {
    if k.chars().count() > 16 {
        format!("{}…", k.chars().take(12).collect::<String>())
    } else {
        k.to_string()
    }
}

/// What `connect` would do, printed instead of doing it.
fn connect_plan(ws: &crate::core::lead::WorkspaceId, h: &crate::config::crm::HubSpotSettings) {
    println!("Dry run: nothing is opened, stored or created.");
    match &h.auth {
        HubSpotAuth::OAuth {
            redirect_uri,
            scopes,
            optional_scopes,
            ..
        } => {
            println!(
                "workspace {ws} would be connected to HubSpot through the OAuth app at {} \
                 (authorization code with PKCE, callback {redirect_uri})",
                h.auth_url
            );
            println!("scopes: {}", scopes.join(" "));
            if !optional_scopes.is_empty() {
                println!("optional scopes: {}", optional_scopes.join(" "));
            }
        }
        HubSpotAuth::PrivateApp { .. } => println!(
            "workspace {ws} would be connected to HubSpot with the configured private-app token"
        ),
    }
    println!(
        "then the {} mapped contact properties of {} would be checked{}:",
        h.mapping.fields().len(),
        h.mapping_file.display(),
        if h.create_properties {
            ", and those missing created in the `enrichd` group"
        } else {
            " (create_properties = false: missing ones are reported, not created)"
        }
    );
    for f in h.mapping.fields() {
        println!("  {f}");
    }
}

pub(super) fn open_browser(url: &str) {
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

/// A dry run's page sink: each page the puller reads goes to the preview
/// (for either CRM's puller; only the error type differs).
struct PreviewSink<'a>(tokio::sync::Mutex<crate::preview::run::Previewer<'a>>);

type PageFuture<'a, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), E>> + Send + 'a>>;

impl PreviewSink<'_> {
    async fn add(&self, leads: Vec<crate::core::lead::Lead>) -> Result<(), String> {
        let mut pv = self.0.lock().await;
        pv.add(leads).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

impl crate::crm::hubspot::pull::PageSink for PreviewSink<'_> {
    fn page(&self, leads: Vec<crate::core::lead::Lead>) -> PageFuture<'_, HubSpotError> {
        Box::pin(async move {
            self.add(leads)
                .await
                .map_err(|message| HubSpotError::Transport {
                    endpoint: "preview".into(),
                    message,
                })
        })
    }
}

impl crate::crm::salesforce::pull::PageSink for PreviewSink<'_> {
    fn page(
        &self,
        leads: Vec<crate::core::lead::Lead>,
    ) -> PageFuture<'_, crate::crm::salesforce::SalesforceError> {
        Box::pin(async move {
            self.add(leads).await.map_err(|message| {
                crate::crm::salesforce::SalesforceError::Transport {
                    endpoint: "preview".into(),
                    message,
                }
            })
        })
    }
}

/// The preview of one sync pass: the changed contacts are read (the
/// watermark stays where it is) and, instead of being stored, enriched and
/// written, go through the preview with the stored values.
async fn dry_run(
    settings: &Settings,
    ws: &Arc<crate::config::Workspace>,
    hub: &HubSpot,
    store: &dyn crate::store::Store,
    opts: SyncOptions,
) -> Result<crate::preview::Preview, CliError> {
    use crate::preview::run::{Options, Previewer};

    let popts = Options {
        estimate: opts.enrich,
        ..Options::default()
    };
    let mapping = &hub.settings.mapping;
    let file = hub.settings.mapping_file.display().to_string();
    let mapping = opts.write.then_some((&**mapping, file.as_str()));
    let pv = Previewer::new(settings, ws, mapping, store, &popts, SystemClock.now()).await?;
    let sink = PreviewSink(tokio::sync::Mutex::new(pv));
    let puller = hub.dry_run_puller();
    let state = puller.state().await.map_err(hub_err)?;
    if opts.full || !state.backfill_done {
        puller.backfill(&sink).await.map_err(hub_err)?;
    } else {
        puller.incremental(&sink).await.map_err(hub_err)?;
    }
    let mut p = sink.0.into_inner().finish();
    p.records = "live";
    Ok(p)
}

pub async fn sync(config: &Path, args: SyncArgs) -> Result<(), CliError> {
    if !args.once {
        return Err(CliError::Usage(
            "`enrichd sync` runs one pass: pass --once (the daemon `enrichd run` syncs on a schedule)".into(),
        ));
    }
    let settings = Arc::new(Settings::load(config, &EnvSecrets)?);
    let ws = pick_workspace(&settings, args.workspace.as_deref())?;
    if matches!(ws.crm, Some(CrmSettings::Salesforce(_))) {
        return sync_salesforce(&settings, &ws, &args).await;
    }
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
    if args.dry_run {
        let format = args.preview_format.unwrap_or_else(|| args.format.into());
        let p = dry_run(&settings, &ws, &hub, &*store, opts).await?;
        return super::preview::print(&p, format);
    }
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

fn sf_sync_err(e: crate::crm::salesforce::SalesforceError) -> CliError {
    CliError::Crm(e.to_string())
}

/// `enrichd sync --once` for a Salesforce workspace: one pass over every
/// configured object, then the recorded Outbound-Message events; with
/// `--dry-run`, the preview of what the pass would write (per object, the
/// watermark held).
async fn sync_salesforce(
    settings: &Arc<Settings>,
    ws: &Arc<crate::config::Workspace>,
    args: &SyncArgs,
) -> Result<(), CliError> {
    use crate::crm::salesforce::sync::{SalesforceSync, SyncOptions as SfOptions};
    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sf = SalesforceSync::open(settings, ws, store.clone(), clock)
        .map_err(sf_sync_err)?
        .ok_or_else(|| CliError::Usage(format!("workspace `{}` has no CRM configured", ws.id)))?;
    let opts = SfOptions {
        full: args.full,
        enrich: !args.no_enrich,
        write: !args.no_write,
    };
    if args.dry_run {
        let format = args.preview_format.unwrap_or_else(|| args.format.into());
        for object in sf.objects() {
            let p = salesforce_dry_run(settings, &sf, object, &*store, opts).await?;
            super::preview::print(&p, format)?;
        }
        return Ok(());
    }
    let engine = if opts.enrich {
        Some(start_engine(settings.clone(), store).await?.0)
    } else {
        None
    };
    let report = sf.sync(engine.as_ref(), opts).await.map_err(sf_sync_err)?;
    let events = sf
        .process_events(engine.as_ref(), opts)
        .await
        .map_err(sf_sync_err)?;
    match args.format {
        Format::Json => println!("{}", serde_json::json!({"sync": report, "events": events})),
        Format::Table => {
            for o in &report.objects {
                let p = &o.pull;
                println!(
                    "{}: read {} records ({} handed on, {} already handled within the lookback, {} converted left out, {} malformed) in {} query calls / {} pages{}",
                    p.object.map_or("?", |o| o.as_str()),
                    p.records,
                    p.leads,
                    p.repeats,
                    p.converted,
                    p.skipped,
                    p.queries,
                    p.pages,
                    if p.backfill { " (backfill)" } else { "" }
                );
            }
            println!("enriched {} leads", report.enriched + events.enriched);
            let w = &report.write;
            println!(
                "wrote {} fields on {} records ({} Collections calls, {} Bulk jobs for {} records); {} failed",
                w.summary.fields_written,
                w.summary.records_written,
                w.collection_calls,
                w.bulk_jobs,
                w.records_via_bulk,
                w.summary.records_failed
            );
            for (id, why) in report.failures.iter().take(20) {
                println!("  {id}: {why}");
            }
            println!(
                "Outbound Message events: {} handled, {} ignored",
                events.events - events.ignored,
                events.ignored
            );
            println!(
                "Salesforce API calls: {} ({} REQUEST_LIMIT_EXCEEDED)",
                report.api_calls, report.limit_exceeded
            );
        }
    }
    Ok(())
}

/// The preview of one Salesforce object's pass: its changed records are
/// read (the watermark held) and previewed with the stored values.
async fn salesforce_dry_run(
    settings: &Settings,
    sf: &crate::crm::salesforce::sync::SalesforceSync,
    object: crate::crm::salesforce::SObject,
    store: &dyn crate::store::Store,
    opts: crate::crm::salesforce::sync::SyncOptions,
) -> Result<crate::preview::Preview, CliError> {
    use crate::preview::run::{Options, Previewer};

    let popts = Options {
        estimate: opts.enrich,
        ..Options::default()
    };
    let Some(obj) = sf.settings.object(object) else {
        return Err(CliError::Usage(format!("{object} is not synced")));
    };
    let file = obj.mapping_file.display().to_string();
    let mapping = opts.write.then_some((&*obj.mapping, file.as_str()));
    let view = sf.view(object);
    let pv = Previewer::new(settings, &view, mapping, store, &popts, SystemClock.now()).await?;
    let sink = PreviewSink(tokio::sync::Mutex::new(pv));
    let puller = sf.dry_run_puller(object);
    let pulled = puller
        .pull_uncommitted(&sink, opts.full)
        .await
        .map_err(sf_sync_err)?;
    // A dry run never saves the sync state (commit is a no-op here).
    puller.commit(pulled).await.map_err(sf_sync_err)?;
    let mut p = sink.0.into_inner().finish();
    p.records = "live";
    Ok(p)
}
