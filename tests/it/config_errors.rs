//! Each kind of bad configuration names the file, the key and what is
//! wrong, and `enrichd check` exits non-zero.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use enrichd::config::{ConfigError, Settings};

const GOOD: &str = r#"
[storage]
url = "sqlite://x.db"

[providers.apollo]
api_key_env = "T_APOLLO_KEY"

[[workspaces]]
id = "acme"
providers = ["apollo"]

[[workspaces.audiences]]
name = "all"
channels = ["work_email"]
"#;

fn secrets() -> BTreeMap<String, String> {
    [("T_APOLLO_KEY".to_string(), "k".to_string())]
        .into_iter()
        .collect()
}

fn load(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_str(Path::new("/etc/enrichd/config.toml"), text, &secrets())
}

fn problem(text: &str) -> (String, ConfigError) {
    let e = load(text).expect_err("config must be refused");
    let msg = e.to_string();
    assert!(
        msg.contains("/etc/enrichd/config.toml"),
        "names the file: {msg}"
    );
    (msg, e)
}

#[test]
fn the_good_config_loads() {
    let s = load(GOOD).expect("valid");
    assert_eq!(
        s.workspaces[0].order_for(enrichd::core::channel::Channel::WorkEmail),
        ["apollo"]
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let (msg, e) = problem(&GOOD.replace("[storage]", "[storage]\nurll = \"x\""));
    assert!(e.mentions("storage.urll"), "{msg}");
    assert!(msg.contains("unknown field `urll`"), "{msg}");
    assert!(msg.contains("config.toml:3:"), "line of the bad key: {msg}");
}

#[test]
fn a_wrong_type_is_named() {
    let (msg, e) = problem(&format!("{GOOD}\n[engine]\nconcurrency = \"ten\"\n"));
    assert!(e.mentions("engine.concurrency"), "{msg}");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn a_missing_secret_variable_is_named() {
    let (msg, e) = problem(&GOOD.replace("T_APOLLO_KEY", "T_MISSING_KEY"));
    assert!(e.mentions("providers.apollo.api_key_env"), "{msg}");
    assert!(msg.contains("`T_MISSING_KEY` is not set"), "{msg}");
    assert!(
        msg.contains("export T_MISSING_KEY="),
        "says what to do: {msg}"
    );
}

#[test]
fn an_unknown_provider_is_named() {
    let (msg, e) = problem(&GOOD.replace(
        "providers = [\"apollo\"]",
        "providers = [\"apollo\", \"clearbit\"]",
    ));
    assert!(e.mentions("workspaces[0].providers[1]"), "{msg}");
    assert!(msg.contains("unknown provider `clearbit`"), "{msg}");
    let (msg, e) = problem(&GOOD.replace(
        "[providers.apollo]",
        "[providers.apollo]\nconnector = \"clearbit\"",
    ));
    assert!(e.mentions("providers.apollo.connector"), "{msg}");
    assert!(
        msg.contains("declarative"),
        "hints at a declarative connector: {msg}"
    );
}

#[test]
fn an_audience_asking_for_an_unknown_channel_is_named() {
    let (msg, e) = problem(&GOOD.replace(
        "channels = [\"work_email\"]",
        "channels = [\"work_email\", \"fax\"]",
    ));
    assert!(
        e.mentions("workspaces[0].audiences[0].channels[1]"),
        "{msg}"
    );
    assert!(msg.contains("unknown channel `fax`"), "{msg}");
}

#[test]
fn an_audience_channel_no_provider_supplies_is_named() {
    // Apollo does not supply phones.
    let (msg, e) = problem(&GOOD.replace("channels = [\"work_email\"]", "channels = [\"phone\"]"));
    assert!(e.mentions("workspaces[0].audiences[0].channels"), "{msg}");
    assert!(
        msg.contains("no provider of the workspace can supply it"),
        "{msg}"
    );
}

#[test]
fn bad_filters_are_named() {
    let (msg, e) = problem(&format!(
        "{GOOD}filter = [{{ field = \"country\", within = [\"US\"] }}]\n"
    ));
    assert!(e.mentions("workspaces[0].audiences[0].filter[0]"), "{msg}");
    assert!(msg.contains("unknown operator `within`"), "{msg}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let bad = GOOD.replace("T_APOLLO_KEY", "T_MISSING_KEY").replace(
        "providers = [\"apollo\"]",
        "providers = [\"apollo\", \"clearbit\"]",
    );
    let (_, e) = problem(&bad);
    assert!(e.problems.len() >= 2, "{e}");
}

#[test]
fn check_exits_non_zero_and_names_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        GOOD.replace("channels = [\"work_email\"]", "channels = [\"fax\"]"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(["--config", file.to_str().expect("utf-8"), "check"])
        .env("T_APOLLO_KEY", "k")
        .output()
        .expect("run enrichd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(file.to_str().expect("utf-8")), "{err}");
    assert!(
        err.contains("workspaces[0].audiences[0].channels[0]"),
        "{err}"
    );
    assert!(err.contains("unknown channel `fax`"), "{err}");

    // And the documented config.toml passes once its secrets are set.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_enrichd"));
    cmd.args(["--config", root.to_str().expect("utf-8"), "check"]);
    for var in [
        "APOLLO_API_KEY",
        "HUNTER_API_KEY",
        "PDL_API_KEY",
        "FULLENRICH_API_KEY",
        "PROSPEO_API_KEY",
        "ZEROBOUNCE_API_KEY",
        "HUBSPOT_CLIENT_ID",
        "HUBSPOT_CLIENT_SECRET",
    ] {
        cmd.env(var, "k");
    }
    let out = cmd.output().expect("run enrichd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
