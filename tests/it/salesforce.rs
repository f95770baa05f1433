//! The Salesforce connector's I/O layer over HTTP against the Salesforce
//! simulator: connect (web-server flow with PKCE and state; JWT bearer),
//! sealed tokens, data calls at the returned `instance_url`, transparent
//! session renewal, refresh-token rotation, `invalid_grant` → reconnect
//! required, the daily allocation's stop share and resume,
//! `REQUEST_LIMIT_EXCEEDED`, revocation, and `enrichd check` against the
//! live describe. No error text ever carries a token or a secret.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use enrichd::clock::{Clock, ManualClock, SystemClock};
use enrichd::crm::salesforce::SalesforceError;
use enrichd::crm::salesforce::client::{Request, SalesforceClient};
use enrichd::crm::salesforce::limits::PauseReason;
use enrichd::crm::salesforce::{CRM, SObject, same_id};
use enrichd::crypto::TokenCipher;
use enrichd::store::crm::ConnectionState;
use enrichd_sim::salesforce::{SalesforceFault, SalesforceOptions};
use enrichd_sim::{ProviderKind, SimOptions};

use crate::support::{FAST_LIMITS, Harness, HarnessBuilder, SalesforceSpec, TEST_MASTER_KEY};

const WORKSPACE: &str = r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "linkedin_url"]
"#;

async fn harness(spec: SalesforceSpec) -> Harness {
    HarnessBuilder::new(60)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .workspace(WORKSPACE)
        .salesforce(spec)
        .start()
        .await
}

fn cipher() -> TokenCipher {
    TokenCipher::from_key_text("TEST_MASTER_KEY", TEST_MASTER_KEY).expect("cipher")
}

/// The stored refresh token, opened (proves the AAD's shape too).
async fn stored_refresh(h: &Harness) -> Option<String> {
    let row = h
        .store
        .connection(&h.ws.id, CRM)
        .await
        .expect("read")
        .expect("row");
    let sealed = row.sealed_refresh?;
    let aad = format!("oauth:salesforce:{}:{}:refresh", h.ws.id, row.account);
    Some(
        cipher()
            .open(&sealed, &aad)
            .expect("open")
            .expose()
            .to_string(),
    )
}

/// Every token and secret the simulator knows of, and the app's secret.
fn secrets_of(h: &Harness) -> Vec<String> {
    let mut out = h.sf().issued_tokens();
    out.push(h.sf().options().client_secret.clone());
    out
}

/// `text` carries none of the simulator's tokens nor the client secret.
fn assert_no_secret(h: &Harness, text: &str, extra: &[String]) {
    for s in secrets_of(h).iter().chain(extra) {
        assert!(!s.is_empty());
        assert!(
            !text.contains(s.as_str()),
            "a token or secret leaked into: {text}"
        );
    }
    assert!(!text.contains("Bearer 00D"), "{text}");
}

fn client(h: &Harness) -> SalesforceClient {
    h.salesforce_client(Arc::new(SystemClock))
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_end_to_end_seals_tokens_and_calls_the_instance_url() {
    let h = harness(SalesforceSpec::new(SalesforceOptions::defaults())).await;
    let c = h.connect_salesforce().await;
    assert!(same_id(&c.org_id, h.sf().org_id()), "{c:?}");
    assert_eq!(c.flow, "web_server");
    assert!(c.refresh_token);
    assert_eq!(c.instance_url, h.sf().instance_url());
    assert_ne!(h.sf().instance_url(), h.sf().login_url());
    assert!(c.user_id.starts_with("005"), "{c:?}");
    assert_eq!(
        h.sf().stats().token_grants.get("authorization_code"),
        Some(&1)
    );

    // Stored sealed: the org as the account, nothing in clear.
    let row = h
        .store
        .connection(&h.ws.id, CRM)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.account, c.org_id);
    assert_eq!(row.auth, "web_server");
    assert_eq!(row.state, ConnectionState::Connected);
    let stored = format!("{row:?}");
    assert_no_secret(&h, &stored, &[]);
    assert!(
        !stored.contains(&h.sf().instance_url()),
        "the instance URL is sealed with the token: {stored}"
    );
    // Sealed under the row's AAD: another org's AAD does not open it.
    let sealed = row.sealed_refresh.clone().expect("refresh token stored");
    assert!(
        cipher()
            .open(
                &sealed,
                &format!("oauth:salesforce:t:{}:access", row.account)
            )
            .is_err()
    );
    let rt = stored_refresh(&h).await.expect("refresh token");
    assert!(h.sf().refresh_token_valid(&rt));

    // Data calls go to the instance (the login host answers 404 to them).
    let client = client(&h);
    let schema = client.describe(SObject::Lead).await.expect("describe");
    assert!(schema.get("Enrichment_Work_Email__c").is_some());
    assert!(
        schema.endpoint.contains("/sobjects/Lead/describe"),
        "{}",
        schema.endpoint
    );
    let a = client
        .call(Request::get(client.data_path("limits")))
        .await
        .expect("limits");
    assert!(a.usage.is_some(), "Sforce-Limit-Info observed");
    let st = h.sf().stats();
    assert_eq!(st.by_status.get(&404), None, "{:?}", st.by_status);
    assert_eq!(st.api_calls, 2);
    assert_eq!(client.tokens.refreshes(), 0);
    // Every call is counted under a secret-free template.
    let endpoints = client.stats.by_endpoint();
    assert!(
        endpoints.contains_key("GET /services/data/v62.0/sobjects/Lead/describe"),
        "{endpoints:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_session_is_renewed_once_and_the_call_succeeds() {
    let h = harness(SalesforceSpec::new(SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    let client = client(&h);
    client.describe(SObject::Lead).await.expect("describe");

    h.sf().expire_sessions();
    let schema = client
        .describe(SObject::Contact)
        .await
        .expect("after expiry");
    assert_eq!(schema.object, "Contact");
    assert_eq!(client.tokens.refreshes(), 1);
    assert_eq!(
        client
            .stats
            .session_renewals
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(h.sf().stats().unauthorized, 1);
    assert_eq!(h.sf().stats().token_grants.get("refresh_token"), Some(&1));

    // Many callers hit the expiry at once: still one refresh (single flight).
    h.sf().expire_sessions();
    let calls = (0..8).map(|_| client.describe(SObject::Lead));
    for r in futures_util::future::join_all(calls).await {
        r.expect("describe after the second expiry");
    }
    assert_eq!(client.tokens.refreshes(), 2);
    assert_eq!(h.sf().stats().token_grants.get("refresh_token"), Some(&2));

    // A new process reads the stored (renewed) session: no refresh.
    let other = self::client(&h);
    other.describe(SObject::Lead).await.expect("fresh client");
    assert_eq!(other.tokens.refreshes(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_rotation_the_old_refresh_token_dies_and_the_connection_keeps_running() {
    let h = harness(SalesforceSpec::new(
        SalesforceOptions::defaults().with_rotation(true),
    ))
    .await;
    h.connect_salesforce().await;
    let client = client(&h);
    let mut seen = Vec::new();
    for round in 1..=4u64 {
        let before = stored_refresh(&h).await.expect("refresh token");
        h.sf().expire_sessions();
        client
            .describe(SObject::Lead)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(client.tokens.refreshes(), round);
        let after = stored_refresh(&h).await.expect("rotated refresh token");
        assert_ne!(before, after, "round {round}: rotated token persisted");
        assert!(!h.sf().refresh_token_valid(&before), "old one revoked");
        assert!(h.sf().refresh_token_valid(&after));
        seen.push(before);
    }
    // A restart (a new client on the same store) keeps working too.
    h.sf().expire_sessions();
    let restarted = self::client(&h);
    restarted
        .describe(SObject::Lead)
        .await
        .expect("after restart");
    assert_eq!(restarted.tokens.refreshes(), 1);
    let row = h
        .store
        .connection(&h.ws.id, CRM)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.state, ConnectionState::Connected);
    assert_no_secret(&h, &format!("{row:?}"), &seen);
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_bearer_connects_and_mints_a_new_assertion_after_expiry() {
    let mut spec = SalesforceSpec::new(SalesforceOptions::defaults());
    spec.jwt = true;
    let h = harness(spec).await;
    let c = h.connect_salesforce().await;
    assert_eq!(c.flow, "jwt");
    assert!(!c.refresh_token);
    let row = h
        .store
        .connection(&h.ws.id, CRM)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.auth, "jwt");
    assert!(row.sealed_refresh.is_none());
    let jwt = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    assert_eq!(h.sf().stats().token_grants.get(jwt), Some(&1));

    let client = client(&h);
    client.describe(SObject::Lead).await.expect("describe");
    h.sf().expire_sessions();
    client.describe(SObject::Lead).await.expect("after expiry");
    assert_eq!(client.tokens.refreshes(), 1);
    assert_eq!(h.sf().stats().token_grants.get(jwt), Some(&2));
    assert_eq!(h.sf().stats().token_grants.get("refresh_token"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_marks_the_connection_reconnect_required_and_nothing_retries() {
    let h = harness(SalesforceSpec::new(SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    let rt = stored_refresh(&h).await.expect("refresh token");
    let client = client(&h);
    client.describe(SObject::Lead).await.expect("describe");

    h.sf().revoke_refresh_tokens();
    h.sf().expire_sessions();
    let e = client
        .describe(SObject::Lead)
        .await
        .expect_err("the grant is gone");
    assert!(
        matches!(e, SalesforceError::ReconnectRequired { .. }),
        "{e:?}"
    );
    assert!(e.needs_a_person());
    let msg = e.to_string();
    assert!(
        msg.contains("Run `enrichd connect salesforce --workspace t`"),
        "{msg}"
    );
    assert!(msg.contains("invalid_grant"), "{msg}");
    assert_no_secret(&h, &msg, std::slice::from_ref(&rt));
    let row = h
        .store
        .connection(&h.ws.id, CRM)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.state, ConnectionState::ReconnectRequired);
    assert!(
        row.reason.contains("refused the refresh token"),
        "{}",
        row.reason
    );

    // Nothing retries: neither this client nor a new process asks again.
    let grants = h.sf().stats().token_errors.values().sum::<u64>();
    let requests = h.sf().stats().requests;
    for c in [&client, &self::client(&h)] {
        let e = c.describe(SObject::Lead).await.expect_err("still refused");
        assert!(
            matches!(e, SalesforceError::ReconnectRequired { .. }),
            "{e:?}"
        );
    }
    assert_eq!(h.sf().stats().token_errors.values().sum::<u64>(), grants);
    assert_eq!(h.sf().stats().requests, requests, "no request was sent");

    // Connecting again restores it.
    h.connect_salesforce().await;
    client.describe(SObject::Lead).await.expect("reconnected");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daily_share_stops_the_org_and_it_resumes_when_the_window_frees_calls() {
    let mut spec = SalesforceSpec::new(SalesforceOptions::defaults().with_daily_limit(40));
    spec.crm_extra = "limits = { daily_stop_share = 0.5, recheck_minutes = 1 }\n".into();
    let h = harness(spec).await;
    h.connect_salesforce().await;
    let clock = ManualClock::new(SystemClock.now());
    let client = h.salesforce_client(Arc::new(clock.clone()));
    let mut ok = 0;
    let paused = loop {
        match client.describe(SObject::Lead).await {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok <= 40, "never stopped");
    };
    // 20 of 40 is the stop share: the 20th answer stopped the org.
    assert_eq!(ok, 20, "{paused}");
    assert_eq!(h.sf().api_usage(), 20);
    let SalesforceError::Paused { until, reason, .. } = &paused else {
        panic!("expected a pause, got {paused:?}");
    };
    assert_eq!(*until, clock.now() + 60_000);
    assert!(
        matches!(reason, PauseReason::ShareReached { usage, .. } if usage.used == 20 && usage.max == 40),
        "{reason:?}"
    );
    assert!(paused.to_string().contains("paused until"), "{paused}");
    assert!(!paused.needs_a_person());
    assert_eq!(paused.paused_until(), Some(*until));
    // Still paused: nothing is sent.
    assert!(client.describe(SObject::Lead).await.is_err());
    assert_eq!(h.sf().api_usage(), 20);

    // A minute later one probe goes; the org still holds 20 of 40 calls
    // in its rolling window, so it stays paused (and the probe's work is done).
    clock.advance(61_000);
    client
        .describe(SObject::Lead)
        .await
        .expect("the probe is answered");
    assert_eq!(h.sf().api_usage(), 21);
    assert!(matches!(
        client.describe(SObject::Lead).await,
        Err(SalesforceError::Paused { .. })
    ));

    // A day later the window has freed the calls: the probe resumes the org.
    h.sf().advance(Duration::from_secs(24 * 3600 + 1));
    clock.advance(61_000);
    client
        .describe(SObject::Lead)
        .await
        .expect("probe after a day");
    assert!(client.paused().is_none());
    for _ in 0..5 {
        client.describe(SObject::Lead).await.expect("resumed");
    }
    assert_eq!(h.sf().api_usage(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_limit_exceeded_pauses_the_org_without_losing_the_call() {
    let h = harness(SalesforceSpec::new(SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    let clock = ManualClock::new(SystemClock.now());
    let client = h.salesforce_client(Arc::new(clock.clone()));
    client.describe(SObject::Lead).await.expect("describe");
    h.sf().inject(SalesforceFault::Status {
        path_prefix: "/services/data/v62.0/sobjects".into(),
        status: 403,
        count: 1,
        error_code: None,
        message: Some("TotalRequests Limit exceeded.".into()),
    });
    let e = client
        .describe(SObject::Lead)
        .await
        .expect_err("limit exceeded");
    let Some(until) = e.paused_until() else {
        panic!("expected a typed pause: {e:?}");
    };
    assert_eq!(until, clock.now() + 30 * 60_000);
    assert!(
        matches!(
            &e,
            SalesforceError::Paused {
                reason: PauseReason::RequestLimitExceeded,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("REQUEST_LIMIT_EXCEEDED"), "{e}");
    // No call goes out while paused; the caller still holds its work.
    let requests = h.sf().stats().requests;
    assert!(client.describe(SObject::Lead).await.is_err());
    assert_eq!(h.sf().stats().requests, requests);
    // After the pause, the probe succeeds and the org is resumed.
    clock.advance(30 * 60_000);
    client
        .describe(SObject::Lead)
        .await
        .expect("after the pause");
    client.describe(SObject::Lead).await.expect("resumed");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_errors_and_revocation_carry_no_secret() {
    let h = harness(SalesforceSpec::new(SalesforceOptions::defaults())).await;
    // A connect refused for the app's credentials: a config error, no secret.
    h.sf().inject(SalesforceFault::Status {
        path_prefix: "/services/oauth2/token".into(),
        status: 400,
        count: 1,
        error_code: Some("invalid_client".into()),
        message: Some("invalid client credentials".into()),
    });
    let e = h.try_connect_salesforce().await.expect_err("refused");
    let msg = e.to_string();
    assert!(msg.contains("invalid_client"), "{msg}");
    assert!(msg.contains("consumer key or secret"), "{msg}");
    assert_no_secret(&h, &msg, &[]);

    // Connected, then revoked: Salesforce forgets the grant, the store
    // drops the tokens, and the next call asks for a reconnect.
    h.connect_salesforce().await;
    let rt = stored_refresh(&h).await.expect("refresh token");
    let client = client(&h);
    client.describe(SObject::Lead).await.expect("describe");
    let s = h.sf_settings();
    let http = enrichd::crm::salesforce::auth::http_client(Duration::from_secs(5)).expect("http");
    let c = cipher();
    let r =
        enrichd::crm::salesforce::auth::revoke(&enrichd::crm::salesforce::auth::ConnectContext {
            ws: &h.ws.id,
            settings: &s,
            store: &h.store,
            cipher: Some(&c),
            clock: &SystemClock,
            http: &http,
            wait: Duration::from_secs(1),
        })
        .await
        .expect("revoke");
    assert_eq!(r.token, "refresh");
    assert!(!r.already_invalid);
    assert!(!h.sf().refresh_token_valid(&rt));
    assert!(
        h.sf().stats().tokens_revoked >= 2,
        "refresh and its access token"
    );
    let row = h
        .store
        .connection(&h.ws.id, CRM)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.state, ConnectionState::ReconnectRequired);
    assert!(row.sealed_access.is_none() && row.sealed_refresh.is_none());
    let fresh = self::client(&h);
    let e = fresh.describe(SObject::Lead).await.expect_err("revoked");
    assert!(e.to_string().contains("--revoke"), "{e}");
    assert_no_secret(&h, &e.to_string(), std::slice::from_ref(&rt));
}

/// Runs `enrichd <args>` with the harness's config and secrets.
async fn enrichd(h: &Harness, args: &[&str]) -> (Output, String) {
    let config = h.config_path.to_str().expect("utf-8 temp path");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(["--config", config])
        .args(args)
        .envs(&h.secrets)
        .output()
        .await
        .expect("run enrichd");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_a_missing_custom_field_with_the_admin_step() {
    let h = harness(SalesforceSpec::new(
        SalesforceOptions::defaults().with_omitted_fields(&["Enrichment_LinkedIn_URL__c"]),
    ))
    .await;
    // Not connected yet: a note, not a failure.
    let (out, text) = enrichd(&h, &["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("enrichd connect salesforce"), "{text}");

    h.connect_salesforce().await;
    let before = h.sf().stats();
    let (out, text) = enrichd(&h, &["check"]).await;
    assert_eq!(out.status.code(), Some(1), "{text}");
    let file = h
        .config_path
        .parent()
        .expect("config dir")
        .join("mappings/salesforce.toml");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(
        text.contains("key `channels.linkedin_url.field` = \"Enrichment_LinkedIn_URL__c\""),
        "{text}"
    );
    assert!(text.contains("Setup → Object Manager → Lead"), "{text}");
    assert!(text.contains("field-level security"), "{text}");
    assert!(
        text.contains("no standard LinkedIn or personal-email field"),
        "{text}"
    );
    assert!(text.contains("/sobjects/Lead/describe"), "{text}");
    assert!(text.contains("1 mapping problem"), "{text}");
    assert_no_secret(&h, &text, &[]);
    // Read only: one describe, no write.
    let after = h.sf().stats();
    assert_eq!(after.api_calls - before.api_calls, 1);
    assert!(after.write_results.is_empty() && after.collection_calls == 0);

    // JSON output names the field too.
    let (out, text) = enrichd(&h, &["check", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("\"field\":\"Enrichment_LinkedIn_URL__c\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_on_a_complete_org_and_connect_dry_run_stores_nothing() {
    let h = harness(SalesforceSpec::new(SalesforceOptions::defaults())).await;
    let (out, text) = enrichd(&h, &["connect", "salesforce", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("web-server flow with PKCE"), "{text}");
    assert!(text.contains("scopes: api refresh_token"), "{text}");
    assert!(text.contains("Enrichment_Work_Email__c"), "{text}");
    assert_no_secret(&h, &text, &[]);
    assert!(
        h.store
            .connection(&h.ws.id, CRM)
            .await
            .expect("read")
            .is_none(),
        "a dry run stores nothing"
    );
    assert_eq!(h.sf().stats().token_grants.len(), 0);

    h.connect_salesforce().await;
    let (out, text) = enrichd(&h, &["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("every mapped field exists"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_names_enrichd_and_writes_carry_the_write_headers() {
    use enrichd::crm::salesforce::client::Method;
    use enrichd::crm::salesforce::write::{DuplicateRulePolicy, write_headers};
    let h = harness(SalesforceSpec::new(SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    let client = client(&h);
    let ids = h.sf().lead_ids();
    let unconverted: Vec<&String> = ids
        .iter()
        .filter(|id| !h.sf().converted_lead_ids().contains(id))
        .collect();
    let (a, b) = (unconverted[0], unconverted[1]);
    let owner = |id: &str| h.sf().field(id, "OwnerId");
    let (owner_a, owner_b) = (owner(a), owner(b));

    // A write as phase 2 sends it: the pure builders' path (v62.0) and headers.
    let r = client
        .call(
            Request::json(
                Method::Patch,
                enrichd::crm::salesforce::data_path(&format!("sobjects/Lead/{a}")),
                serde_json::json!({"Enrichment_Work_Email__c": "jane@acme.example"}),
            )
            .headers(write_headers(DuplicateRulePolicy::AllowSave)),
        )
        .await
        .expect("patch");
    assert_eq!(r.status, 204);
    assert_eq!(
        h.sf().field(a, "Enrichment_Work_Email__c"),
        Some(serde_json::json!("jane@acme.example"))
    );
    assert_eq!(
        owner(a),
        owner_a,
        "Sforce-Auto-Assign: FALSE kept the owner"
    );
    // Without the write headers the call still names enrichd (the default
    // Sforce-Call-Options), and the simulated assignment rule moves the Lead.
    client
        .call(Request::json(
            Method::Patch,
            client.data_path(&format!("sobjects/Lead/{b}")),
            serde_json::json!({"Enrichment_Work_Email__c": "joe@acme.example"}),
        ))
        .await
        .expect("patch");
    assert_ne!(owner(b), owner_b);
    let st = h.sf().stats();
    assert_eq!(st.call_options_clients.get("enrichd"), Some(&2), "{st:?}");
    assert_eq!(st.auto_assign_headers.get("FALSE"), Some(&1));
    // A refused write is a classified failure with the field and the fix.
    let e = client
        .call(Request::json(
            Method::Patch,
            client.data_path(&format!("sobjects/Lead/{a}")),
            serde_json::json!({"No_Such_Field__c": "x"}),
        ))
        .await
        .expect_err("unknown field");
    let f = e.failure().expect("an API failure");
    assert_eq!(f.code.as_deref(), Some("INVALID_FIELD"));
    assert!(e.needs_a_person());
    assert!(e.to_string().contains("field-level security"), "{e}");
    assert_no_secret(&h, &e.to_string(), &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connect_command_runs_the_browser_flow_and_revokes() {
    use tokio::io::AsyncBufReadExt;
    let h = harness(SalesforceSpec::new(SalesforceOptions::defaults())).await;
    let config = h.config_path.to_str().expect("utf-8 temp path").to_string();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args([
            "--config",
            &config,
            "connect",
            "salesforce",
            "--no-browser",
            "--timeout-secs",
            "20",
        ])
        .envs(&h.secrets)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start enrichd connect");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the authorize URL in time")
            .expect("read")
            .unwrap_or_else(|| panic!("no URL printed: {printed:?}"));
        printed.push(line.clone());
        if line.starts_with("http") {
            break line;
        }
    };
    assert!(url.starts_with(&h.sf().login_url()), "{url}");
    assert!(url.contains("code_challenge="), "{url}");
    assert!(url.contains("state="), "{url}");
    // The "browser": Salesforce redirects to the command's loopback.
    let page = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .expect("browser");
    assert!(page.status().is_success(), "{}", page.status());
    let mut rest = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        rest.push_str(&l);
        rest.push('\n');
    }
    let status = child.wait().await.expect("exit");
    assert!(status.success(), "{printed:?}\n{rest}");
    assert!(
        rest.contains("connected workspace t to Salesforce org"),
        "{rest}"
    );
    assert!(rest.contains("mapped fields exist"), "{rest}");
    assert_no_secret(&h, &rest, &[]);
    let rt = stored_refresh(&h).await.expect("stored by the command");

    let (out, text) = enrichd(&h, &["connect", "salesforce", "--revoke"]).await;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("revoked the Salesforce refresh token"),
        "{text}"
    );
    assert!(!h.sf().refresh_token_valid(&rt));
    assert_no_secret(&h, &text, std::slice::from_ref(&rt));
    let (out, text) = enrichd(&h, &["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("needs reconnecting"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_and_the_concurrent_limit_are_retried() {
    use std::sync::atomic::Ordering::Relaxed;
    let h = harness(SalesforceSpec::new(SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    let client = client(&h);
    let fault = |status: u16, count: u32, message: Option<&str>| SalesforceFault::Status {
        path_prefix: "/services/data/v62.0/sobjects".into(),
        status,
        count,
        error_code: None,
        message: message.map(str::to_string),
    };
    h.sf().inject(fault(503, 2, None));
    client
        .describe(SObject::Lead)
        .await
        .expect("after two 503s");
    assert_eq!(client.stats.retries.load(Relaxed), 2);
    h.sf().inject(fault(
        403,
        1,
        Some("ConcurrentRequests (Concurrent API Requests) Limit exceeded."),
    ));
    client
        .describe(SObject::Lead)
        .await
        .expect("after a concurrent-limit refusal");
    assert_eq!(client.stats.retries.load(Relaxed), 3);
    assert!(
        client.paused().is_none(),
        "the concurrent limit is no pause"
    );
    // More 5xx than max_retries (3): the classified failure.
    h.sf().inject(fault(500, 10, None));
    let e = client.describe(SObject::Lead).await.expect_err("gives up");
    let f = e.failure().expect("an API failure");
    assert_eq!(f.status, 500);
    assert!(!e.needs_a_person());
    h.sf().clear_faults();
}
