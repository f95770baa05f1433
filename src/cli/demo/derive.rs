//! The demo's config: the documented config.toml with the simulators in
//! place of the real services, written to `.enrichd/demo.toml`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::providers::def::Limits;

use super::{CliError, hubspot, salesforce};

/// `key` of `t` as a table (created when missing).
pub(super) fn table<'a>(
    t: &'a mut toml::Table,
    key: &str,
) -> Result<&'a mut toml::Table, CliError> {
    t.entry(key.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| CliError::Usage(format!("`{key}` in the config is not a table")))
}

pub(super) fn text_of(t: &toml::Table, key: &str) -> Option<String> {
    t.get(key).and_then(toml::Value::as_str).map(String::from)
}

pub(super) fn abs_in(dir: &Path, p: &str) -> String {
    dir.join(p).display().to_string()
}

/// The simulated CRM the derived config points at.
pub(super) enum CrmTarget {
    /// The portal's base URL (authorize page, API and token endpoint).
    HubSpot { url: String },
    /// The org's login host (data calls go to the `instance_url` its token
    /// endpoint returns).
    Salesforce { login_url: String },
}

/// What the derived config points at.
pub(super) struct DemoTargets<'a> {
    pub(super) config_dir: &'a Path,
    pub(super) db: &'a Path,
    pub(super) port: u16,
    pub(super) workspace: &'a str,
    pub(super) crm: CrmTarget,
    /// Account → simulator URL and limits.
    pub(super) providers: BTreeMap<String, (String, Limits)>,
}

/// Where the derived config reads the CRM's secrets.
pub(super) struct CrmVars {
    pub(super) client_id: String,
    pub(super) client_secret: String,
    /// Salesforce: the Outbound Message URL token.
    pub(super) outbound_token: Option<String>,
}

/// config.toml pointed at the simulators, and where it reads its secrets.
pub(super) struct DerivedConfig {
    pub(super) text: String,
    /// Provider account → the variable holding its key.
    pub(super) key_vars: BTreeMap<String, String>,
    pub(super) crm_vars: CrmVars,
    pub(super) master_key_var: String,
    /// What the derivation changed beyond hosts and paths (shown in the
    /// file's header and the report).
    pub(super) notes: Vec<String>,
}

/// The documented config with the simulators in place of the real
/// services: the database, `[server]` on the daemon's port, each
/// provider's `base_url` and (scaled) limits, and the workspace's
/// `[workspaces.crm]` on the simulated CRM with an OAuth app, the shipped
/// mapping and one sync pass (change notifications do the rest). Paths
/// become absolute (the file is written under `.enrichd/`).
pub(super) fn derive_config(text: &str, to: &DemoTargets<'_>) -> Result<DerivedConfig, CliError> {
    let bad = |e: toml::de::Error| CliError::Usage(format!("config: {e}"));
    let mut t: toml::Table = text.parse().map_err(bad)?;
    let storage = table(&mut t, "storage")?;
    storage.clear();
    storage.insert("url".into(), format!("sqlite://{}", to.db.display()).into());
    let server = table(&mut t, "server")?;
    server.insert("listen".into(), format!("127.0.0.1:{}", to.port).into());
    server.insert(
        "public_url".into(),
        format!("http://127.0.0.1:{}", to.port).into(),
    );
    server.insert("shutdown_grace_secs".into(), 10.into());
    let engine = table(&mut t, "engine")?;
    let connectors = text_of(engine, "connectors_dir").unwrap_or_else(|| "connectors".into());
    engine.insert(
        "connectors_dir".into(),
        abs_in(to.config_dir, &connectors).into(),
    );
    let mut key_vars = BTreeMap::new();
    let providers = table(&mut t, "providers")?;
    for (id, (url, limits)) in &to.providers {
        let p = table(providers, id)?;
        p.insert("base_url".into(), url.clone().into());
        let mut l = toml::Table::new();
        for (k, v) in [
            ("per_second", limits.per_second),
            ("per_minute", limits.per_minute),
            ("per_hour", limits.per_hour),
            ("per_day", limits.per_day),
        ] {
            if let Some(v) = v {
                l.insert(k.into(), i64::from(v).into());
            }
        }
        if let Some(c) = p.get("limits").and_then(|x| x.get("concurrency")).cloned() {
            l.insert("concurrency".into(), c);
        }
        p.insert("limits".into(), toml::Value::Table(l));
        if let Some(var) = text_of(p, "api_key_env") {
            key_vars.insert(id.clone(), var);
        }
    }
    let security = table(&mut t, "security")?;
    let master_key_var =
        text_of(security, "master_key_env").unwrap_or_else(|| "ENRICHD_MASTER_KEY".into());
    security.insert("master_key_env".into(), master_key_var.clone().into());

    // Only the demo's workspace, its CRM on the simulator.
    let workspaces = t
        .get_mut("workspaces")
        .and_then(toml::Value::as_array_mut)
        .ok_or_else(|| CliError::Usage("the config has no [[workspaces]]".into()))?;
    workspaces.retain(|w| w.get("id").and_then(toml::Value::as_str) == Some(to.workspace));
    let ws = workspaces
        .first_mut()
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| CliError::Usage(format!("workspace `{}` not found", to.workspace)))?;
    let mut notes = Vec::new();
    let crm_vars = match &to.crm {
        CrmTarget::HubSpot { url } => hubspot::crm_table(ws, url, to.config_dir)?,
        CrmTarget::Salesforce { login_url } => {
            salesforce::crm_table(ws, login_url, to.config_dir, &mut notes)?
        }
    };

    Ok(DerivedConfig {
        text: toml::to_string(&t).map_err(|e| CliError::Usage(format!("config: {e}")))?,
        key_vars,
        crm_vars,
        master_key_var,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::def::Limits;

    fn targets(dir: &Path, crm: CrmTarget) -> DemoTargets<'_> {
        let mut providers = BTreeMap::new();
        providers.insert(
            "apollo".to_string(),
            (
                "http://127.0.0.1:1".to_string(),
                Limits {
                    per_minute: Some(10_000),
                    ..Limits::default()
                },
            ),
        );
        DemoTargets {
            config_dir: dir,
            db: Path::new("/somewhere/.enrichd/demo.db"),
            port: 4242,
            workspace: "acme",
            crm,
            providers,
        }
    }

    #[test]
    fn the_documented_config_is_pointed_at_the_simulators() {
        let text = include_str!("../../../config.toml");
        let dir = Path::new("/somewhere");
        let to = targets(
            dir,
            CrmTarget::HubSpot {
                url: "http://127.0.0.1:2".into(),
            },
        );
        let d = derive_config(text, &to).expect("derive");
        let t: toml::Table = d.text.parse().expect("parses");
        assert_eq!(t["server"]["listen"].as_str(), Some("127.0.0.1:4242"));
        assert_eq!(
            t["storage"]["url"].as_str(),
            Some("sqlite:///somewhere/.enrichd/demo.db")
        );
        assert_eq!(
            t["providers"]["apollo"]["base_url"].as_str(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            t["providers"]["apollo"]["limits"]["per_minute"].as_integer(),
            Some(10_000)
        );
        let crm = &t["workspaces"][0]["crm"];
        assert_eq!(crm["api_url"].as_str(), Some("http://127.0.0.1:2"));
        assert_eq!(
            crm["mapping"].as_str(),
            Some("/somewhere/mappings/hubspot.toml")
        );
        assert_eq!(
            d.key_vars.get("apollo").map(String::as_str),
            Some("APOLLO_API_KEY")
        );
        assert_eq!(
            (
                d.crm_vars.client_id.as_str(),
                d.crm_vars.client_secret.as_str(),
                d.master_key_var.as_str()
            ),
            (
                "HUBSPOT_CLIENT_ID",
                "HUBSPOT_CLIENT_SECRET",
                "ENRICHD_MASTER_KEY"
            )
        );
        assert!(d.crm_vars.outbound_token.is_none());
    }

    #[test]
    fn the_documented_config_gets_a_salesforce_crm_and_salesforce_field_names() {
        let text = include_str!("../../../config.toml");
        let dir = Path::new("/somewhere");
        let to = targets(
            dir,
            CrmTarget::Salesforce {
                login_url: "http://127.0.0.1:3".into(),
            },
        );
        let d = derive_config(text, &to).expect("derive");
        let t: toml::Table = d.text.parse().expect("parses");
        let ws = &t["workspaces"][0];
        let crm = &ws["crm"];
        assert_eq!(crm["kind"].as_str(), Some("salesforce"));
        assert_eq!(crm["login_url"].as_str(), Some("http://127.0.0.1:3"));
        assert_eq!(
            crm["mapping"].as_str(),
            Some("/somewhere/mappings/salesforce.toml")
        );
        for k in ["api_url", "auth_url", "limits", "create_properties"] {
            assert!(crm.get(k).is_none(), "HubSpot key {k} left in");
        }
        assert!(
            ws.get("fields").is_none(),
            "HubSpot identity fields left in"
        );
        let fields: Vec<&str> = ws["audiences"]
            .as_array()
            .expect("audiences")
            .iter()
            .flat_map(|a| {
                a.get("filter")
                    .and_then(toml::Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|c| c.get("field").and_then(toml::Value::as_str))
            .collect();
        assert!(fields.contains(&"NumberOfEmployees"), "{fields:?}");
        assert!(fields.contains(&"Country"), "{fields:?}");
        assert!(!fields.contains(&"seniority"), "{fields:?}");
        assert!(
            d.notes.iter().any(|n| n.contains("seniority")),
            "{:?}",
            d.notes
        );
        assert_eq!(
            (
                d.crm_vars.client_id.as_str(),
                d.crm_vars.client_secret.as_str(),
                d.crm_vars.outbound_token.as_deref()
            ),
            (
                "SALESFORCE_CLIENT_ID",
                "SALESFORCE_CLIENT_SECRET",
                Some("SALESFORCE_OUTBOUND_TOKEN")
            )
        );
    }
}
