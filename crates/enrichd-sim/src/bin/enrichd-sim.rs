//! `enrichd-sim`: run a simulator in its own process (so a benchmark's RSS measures only the
//! client).
//!
//! ```text
//! enrichd-sim hubspot [--contacts N] [--seed S] [--latency-ms L] [--ten-secondly 110]
//!                     [--search-per-second 5] [--email-share 0.3] [--daily N]
//!                     [--token-ttl-secs 1800] [--search-index-delay-ms 0] [--rotate]
//!                     [--retry-after] [--webhook-url URL] [--subscribe TYPE[:PROP]]...
//!                     [--ignore-stdin]
//! ```
//!
//! Prints exactly one JSON line on stdout — `{"base_url":…,"client_id":…,"client_secret":…,
//! "private_app_token":…,"portal_id":…}` — then serves until stdin closes (unless
//! `--ignore-stdin`), SIGTERM or ctrl-c.
//!
//! ```text
//! enrichd-sim salesforce [--leads N] [--contacts N] [--seed S] [--latency-ms L]
//!                        [--daily-limit N] [--converted-share F] [--email-share F]
//!                        [--shared-modstamp N] [--deleted-leads N] [--session-timeout-secs N]
//!                        [--rotate] [--omit-field NAME]... [--jwt-public-key DER_FILE]
//!                        [--outbound Lead|Contact=URL]... [--long-running-ms T]
//!                        [--long-running-max N] [--bulk-delay-ms N] [--no-assignment-rule]
//!                        [--ignore-stdin]
//! ```
//!
//! Prints one JSON line — `{"login_url":…,"instance_url":…,"base_url":…,"client_id":…,
//! "client_secret":…,"username":…,"org_id":…,"api_version":…}` — and serves the same way.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enrichd_sim::Population;
use enrichd_sim::hubspot::{
    HubSpotData, HubSpotLimits, HubSpotOptions, Subscription, start_hubspot,
};
use enrichd_sim::salesforce::{
    OutboundConfig, SalesforceData, SalesforceOptions, SeedSpec, start_salesforce,
};

const USAGE: &str = "usage: enrichd-sim hubspot [--contacts N] [--seed S] [--latency-ms L] \
[--ten-secondly N] [--search-per-second N] [--email-share F] [--daily N] [--token-ttl-secs N] \
[--search-index-delay-ms N] [--rotate] [--retry-after] [--webhook-url URL] \
[--subscribe contact.creation|contact.propertyChange:PROP]... [--ignore-stdin]
       enrichd-sim salesforce [--leads N] [--contacts N] [--seed S] [--latency-ms L] \
[--daily-limit N] [--converted-share F] [--email-share F] [--shared-modstamp N] \
[--deleted-leads N] [--session-timeout-secs N] [--rotate] [--omit-field NAME]... \
[--jwt-public-key DER_FILE] [--outbound Lead|Contact=URL]... [--long-running-ms T] \
[--long-running-max N] [--bulk-delay-ms N] [--no-assignment-rule] [--ignore-stdin]";

struct SfArgs {
    spec: SeedSpec,
    seed: u64,
    opts: SalesforceOptions,
    ignore_stdin: bool,
}

fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: '{v}' is not a valid number"))
}

fn parse_salesforce(args: &[String]) -> Result<SfArgs, String> {
    let mut it = args.iter().skip(1);
    let mut a = SfArgs {
        spec: SeedSpec::new(10_000, 1_000),
        seed: 42,
        opts: SalesforceOptions::defaults(),
        ignore_stdin: false,
    };
    let mut lr_ms: Option<u64> = None;
    let mut lr_max: u32 = 25;
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--leads" => a.spec.leads = num(flag, val()?)?,
            "--contacts" => a.spec.contacts = num(flag, val()?)?,
            "--seed" => a.seed = num(flag, val()?)?,
            "--latency-ms" => a.opts.latency = Duration::from_millis(num(flag, val()?)?),
            "--daily-limit" => a.opts.daily_api_requests = num(flag, val()?)?,
            "--converted-share" => a.spec.converted_share = num(flag, val()?)?,
            "--email-share" => a.spec.email_share = num(flag, val()?)?,
            "--shared-modstamp" => a.spec.shared_modstamp = num(flag, val()?)?,
            "--deleted-leads" => a.spec.deleted_leads = num(flag, val()?)?,
            "--session-timeout-secs" => {
                a.opts.session_timeout = Duration::from_secs(num(flag, val()?)?)
            }
            "--rotate" => a.opts.rotate_refresh_tokens = true,
            "--omit-field" => a.opts.omit_fields.push(val()?),
            "--jwt-public-key" => {
                let path = val()?;
                let der = std::fs::read(&path).map_err(|e| format!("{flag} {path}: {e}"))?;
                a.opts.jwt_public_key = Some(der);
            }
            "--outbound" => {
                let v = val()?;
                let (obj, url) = v
                    .split_once('=')
                    .ok_or_else(|| format!("{flag}: expected Lead=URL or Contact=URL"))?;
                a.opts.outbound.push(OutboundConfig::new(obj, url));
            }
            "--long-running-ms" => lr_ms = Some(num(flag, val()?)?),
            "--long-running-max" => lr_max = num(flag, val()?)?,
            "--bulk-delay-ms" => {
                a.opts.bulk_processing_delay = Duration::from_millis(num(flag, val()?)?)
            }
            "--no-assignment-rule" => a.opts.assignment_rule_active = false,
            "--ignore-stdin" => a.ignore_stdin = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown flag '{other}'\n{USAGE}")),
        }
    }
    if let Some(ms) = lr_ms {
        a.opts = a.opts.with_long_running(Duration::from_millis(ms), lr_max);
    }
    Ok(a)
}

struct Args {
    contacts: usize,
    seed: u64,
    email_share: f64,
    opts: HubSpotOptions,
    ignore_stdin: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("hubspot") => {}
        Some("-h" | "--help") | None => return Err(USAGE.to_string()),
        Some(other) => return Err(format!("unknown simulator '{other}'\n{USAGE}")),
    }
    let mut a = Args {
        contacts: 10_000,
        seed: 42,
        email_share: 0.3,
        opts: HubSpotOptions::defaults(),
        ignore_stdin: false,
    };
    let mut limits = HubSpotLimits::oauth_default();
    let mut webhook_url: Option<String> = None;
    let mut subs: Vec<Subscription> = Vec::new();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--contacts" => a.contacts = num(flag, val()?)?,
            "--seed" => a.seed = num(flag, val()?)?,
            "--latency-ms" => a.opts.latency = Duration::from_millis(num(flag, val()?)?),
            "--ten-secondly" => limits.ten_secondly = num(flag, val()?)?,
            "--search-per-second" => limits.search_per_second = num(flag, val()?)?,
            "--daily" => limits.daily = Some(num(flag, val()?)?),
            "--email-share" => a.email_share = num(flag, val()?)?,
            "--token-ttl-secs" => a.opts.access_token_ttl = Duration::from_secs(num(flag, val()?)?),
            "--search-index-delay-ms" => {
                a.opts.search_index_delay = Duration::from_millis(num(flag, val()?)?)
            }
            "--rotate" => a.opts.rotate_refresh_tokens = true,
            "--retry-after" => a.opts.retry_after_on_429 = true,
            "--webhook-url" => webhook_url = Some(val()?),
            "--subscribe" => {
                let v = val()?;
                subs.push(match v.split_once(':') {
                    Some((t, p)) => Subscription {
                        event_type: t.to_string(),
                        property: Some(p.to_string()),
                    },
                    None => Subscription {
                        event_type: v,
                        property: None,
                    },
                });
            }
            "--ignore-stdin" => a.ignore_stdin = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown flag '{other}'\n{USAGE}")),
        }
    }
    a.opts.limits = limits;
    if let Some(url) = webhook_url {
        a.opts = a.opts.with_webhooks(url, subs);
    }
    Ok(a)
}

#[cfg(unix)]
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn terminated() {
    std::future::pending::<()>().await
}

/// Serve until stdin closes (unless `ignore_stdin`), SIGTERM or ctrl-c.
async fn wait_for_exit(ignore_stdin: bool) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    if !ignore_stdin {
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = tx.send(());
        });
    }
    let stdin_closed = async move {
        if ignore_stdin {
            std::future::pending::<()>().await;
        } else {
            let _ = rx.await;
        }
    };
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated() => {}
    }
}

async fn run_salesforce(args: &[String]) -> ExitCode {
    let a = match parse_salesforce(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let pop = Population::generate(a.seed, a.spec.leads + a.spec.contacts);
    let data = SalesforceData::from_population(&pop, now_ms, &a.spec);
    drop(pop);
    let sim = match start_salesforce(data, a.opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("enrichd-sim: cannot start the Salesforce simulator: {e}");
            return ExitCode::from(1);
        }
    };
    let o = sim.options();
    let line = serde_json::json!({
        "login_url": sim.login_url(),
        "instance_url": sim.instance_url(),
        "base_url": sim.base_url(),
        "client_id": o.client_id,
        "client_secret": o.client_secret,
        "username": o.username,
        "org_id": sim.org_id(),
        "api_version": sim.api_version(),
    });
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    wait_for_exit(a.ignore_stdin).await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("salesforce") {
        return run_salesforce(&args).await;
    }
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let pop = Population::generate(a.seed, a.contacts);
    let data = HubSpotData::from_population(&pop, now_ms, a.email_share);
    drop(pop);
    let sim = match start_hubspot(data, a.opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("enrichd-sim: cannot start the HubSpot simulator: {e}");
            return ExitCode::from(1);
        }
    };
    let o = sim.options();
    let line = serde_json::json!({
        "base_url": sim.base_url(),
        "client_id": o.client_id,
        "client_secret": o.client_secret,
        "private_app_token": o.private_app_token,
        "portal_id": sim.portal_id(),
    });
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    // stdin EOF is watched from a plain thread so a pending read never blocks shutdown.
    wait_for_exit(a.ignore_stdin).await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}
