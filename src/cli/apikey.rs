//! `enrichd apikey create|list|revoke --workspace <id>`: the per-workspace
//! keys of the admin API (`/v1/...` under `enrichd run`). A key is printed
//! once, at creation; only its SHA-256 is stored.

use std::path::Path;

use crate::clock::{Clock, SystemClock};
use crate::config::{EnvSecrets, Settings};
use crate::store::keys::{ApiKeyRow, NewApiKey};

use super::{CliError, Format};

#[derive(Debug, clap::Args)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    pub command: ApiKeyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key for the workspace and print it (once: only its hash is kept).
    Create {
        /// Workspace id the key gives access to.
        #[arg(long, short)]
        workspace: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List the workspace's keys (ids and dates; never the keys).
    List {
        /// Workspace id.
        #[arg(long, short)]
        workspace: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revoke a key of the workspace: it no longer authenticates.
    Revoke {
        /// Workspace id the key belongs to.
        #[arg(long, short)]
        workspace: String,
        /// The key id (`enrichd apikey list` shows it), e.g. key_3f9a0c1d2e4b.
        key_id: String,
    },
}

pub(crate) async fn run(config: &Path, args: ApiKeyArgs) -> Result<(), CliError> {
    let settings = Settings::load(config, &EnvSecrets)?;
    let workspace = match &args.command {
        ApiKeyCommand::Create { workspace, .. }
        | ApiKeyCommand::List { workspace, .. }
        | ApiKeyCommand::Revoke { workspace, .. } => workspace.clone(),
    };
    let ws = super::pick_workspace(&settings, Some(&workspace))?;
    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let now = SystemClock.now();
    match args.command {
        ApiKeyCommand::Create { format, .. } => {
            let key = NewApiKey::generate().map_err(|e| CliError::Usage(e.to_string()))?;
            store
                .create_api_key(&ws.id, &key.key_id, &key.hash, now)
                .await?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({
                        "key_id": key.key_id,
                        "workspace": ws.id.as_str(),
                        "key": key.key,
                    })
                ),
                Format::Table => {
                    eprintln!(
                        "created API key {} for workspace {}. It is shown this once (only its hash is kept): \
                         store it now, and send it as `Authorization: Bearer <key>` to /v1/workspaces/{}/...",
                        key.key_id, ws.id, ws.id
                    );
                    println!("{}", key.key);
                }
            }
        }
        ApiKeyCommand::List { format, .. } => {
            let keys = store.api_keys(&ws.id).await?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&keys).unwrap_or_else(|_| "[]".into())
                ),
                Format::Table => print!("{}", table(&ws.id.to_string(), &keys)),
            }
        }
        ApiKeyCommand::Revoke { key_id, .. } => {
            if store.revoke_api_key(&ws.id, &key_id, now).await? {
                println!("revoked API key {key_id} of workspace {}", ws.id);
            } else {
                let known = store.api_keys(&ws.id).await?;
                let active: Vec<&str> = known
                    .iter()
                    .filter(|k| k.revoked_at.is_none())
                    .map(|k| k.key_id.as_str())
                    .collect();
                let why = if known.iter().any(|k| k.key_id == key_id) {
                    "it was revoked already".to_string()
                } else if active.is_empty() {
                    "the workspace has no active key".to_string()
                } else {
                    format!(
                        "no such key in this workspace (active: {})",
                        active.join(", ")
                    )
                };
                return Err(CliError::Usage(format!(
                    "cannot revoke API key `{key_id}` of workspace {}: {why}; see `enrichd apikey list --workspace {}`",
                    ws.id, ws.id
                )));
            }
        }
    }
    Ok(())
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn table(ws: &str, keys: &[ApiKeyRow]) -> String {
    if keys.is_empty() {
        return format!(
            "workspace {ws} has no API key: create one with `enrichd apikey create --workspace {ws}`\n"
        );
    }
    let mut t = comfy_table::Table::new();
    t.set_header(["key id", "created", "state"]);
    for k in keys {
        t.add_row([
            k.key_id.clone(),
            when(k.created_at),
            k.revoked_at
                .map_or_else(|| "active".to_string(), |r| format!("revoked {}", when(r))),
        ]);
    }
    format!("{t}\n")
}
