//! `enrichd run` as a separate process against the simulators: the first
//! sync pass, a signed webhook that triggers an enrichment written back to
//! the CRM simulator, health, readiness and metrics, SIGTERM, and JSON logs
//! that never carry a token, secret or key.

use std::time::Duration;

use enrichd_sim::ProviderKind;
use enrichd_sim::SimOptions;
use enrichd_sim::hubspot::{HubSpotLimits, HubSpotOptions, Subscription};

use crate::support::{
    Daemon, FAST_LIMITS, Harness, HarnessBuilder, HubSpotSpec, eventually, free_port,
    http_get as get,
};

const WORKSPACE: &str = r#"
providers = ["apollo", "hunter"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
"#;

async fn harness(size: usize, port: u16) -> Harness {
    let url = format!("http://127.0.0.1:{port}/webhooks/hubspot");
    let subs = vec![
        Subscription::creation(),
        Subscription::property_change("firstname"),
        Subscription::property_change("enrichment_work_email"),
    ];
    HarnessBuilder::new(size)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .provider_with(
            "hunter",
            ProviderKind::Hunter,
            SimOptions::defaults(ProviderKind::Hunter).unlimited(),
            FAST_LIMITS,
        )
        .workspace(WORKSPACE)
        .server(&format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nshutdown_grace_secs = 10"
        ))
        .hubspot(HubSpotSpec {
            opts: HubSpotOptions::defaults()
                .with_limits(HubSpotLimits::unlimited())
                .with_webhooks(url, subs),
            email_share: 0.0,
            crm_extra: "sync_interval_secs = 3600\n".into(),
            mapping: None,
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn run_syncs_reacts_to_a_signed_webhook_and_stops_cleanly_on_sigterm() {
    let port = free_port();
    let h = harness(80, port).await;
    h.connect_hubspot().await;
    let mut d = Daemon::start(&h);

    // Up: health, then the first sync pass writes the backfilled contacts.
    let mut up = false;
    for _ in 0..100 {
        if let Some((200, _)) = get(port, "/healthz").await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "enrichd run did not come up:\n{}", d.logs());
    let synced = eventually(Duration::from_secs(30), || {
        h.hs().stats().records_updated >= 40
    })
    .await;
    assert!(synced, "first sync pass did not write back:\n{}", d.logs());
    let (status, body) = get(port, "/readyz").await.expect("readyz");
    assert_eq!(status, 200, "{body}");

    // A contact created in HubSpot reaches enrichd as a signed webhook and
    // comes back enriched, without a sync pass (the next is an hour away).
    let i = (0..80)
        .find(|&i| {
            h.usable_from("apollo", i, enrichd::core::channel::Channel::WorkEmail)
                .is_some()
        })
        .expect("someone Apollo knows");
    let p = h.population.person(i).crm_fields();
    let props: Vec<(&str, &str)> = ["firstname", "lastname", "company", "jobtitle", "country"]
        .iter()
        .filter_map(|k| p.get(*k).and_then(|v| v.as_str()).map(|v| (*k, v)))
        .collect();
    let company = h
        .hs()
        .contact(&h.hs().contact_ids()[i])
        .and_then(|c| c.company_id.clone());
    let new_id = h.hs().create_contact(&props, company.as_deref());
    h.hs().flush_webhooks().await;
    let written = eventually(Duration::from_secs(20), || {
        h.hs()
            .contact(&new_id)
            .is_some_and(|c| c.get("enrichment_work_email").is_some())
    })
    .await;
    assert!(written, "webhook did not lead to a write:\n{}", d.logs());
    let deliveries = h.hs().stats().webhook_deliveries;
    assert!(deliveries.iter().any(|(s, _)| *s == 200), "{deliveries:?}");

    let (status, metrics) = get(port, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("enrichd_api_requests_total"), "{metrics}");
    assert!(
        metrics.contains("enrichd_webhook_deliveries_total"),
        "{metrics}"
    );

    // SIGTERM: a clean exit within the grace period.
    let status = d.terminate(Duration::from_secs(15));
    let logs = d.logs();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}:\n{logs}"
    );
    assert!(get(port, "/healthz").await.is_none(), "still listening");

    // Logs: JSON, one event per line, and no secret anywhere in them.
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 3, "{logs}");
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
    }
    assert!(logs.contains("stopping"), "{logs}");
    if std::env::var_os("ENRICHD_SHOW_RUN_LOG").is_some() {
        eprintln!("{logs}");
    }
    let mut secrets: Vec<String> = h.secrets.values().cloned().collect();
    // The tokens HubSpot issued, as stored (sealed) and in clear.
    let conn = h
        .store
        .connection(&h.ws.id, "hubspot")
        .await
        .unwrap()
        .expect("connection");
    secrets.extend(conn.sealed_access.clone());
    secrets.extend(conn.sealed_refresh.clone());
    secrets.extend(h.hs().issued_tokens());
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(!logs.contains(s.as_str()), "a secret is in the logs");
    }
}
