//! `enrichd demo`: the real engine against the provider simulators on
//! loopback, with the documented config.toml, a fresh SQLite file and a
//! deterministic population of people. Prints what happened and what it cost.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd_sim::{Population, ProviderKind, SimOptions, SimServer};

use crate::config::{Secrets, Settings};
use crate::core::lead::Lead;
use crate::providers::def::{Account, Limits};

use super::{CliError, Format, print_report, run_with_progress, start_engine};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many simulated leads to enrich.
    #[arg(long, default_value_t = 1000)]
    pub leads: usize,
    /// Seed of the simulated population (same seed, same people and answers).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Simulated accounts get this many times the documented rate limits so
    /// the demo finishes in seconds (1 = the real limits).
    #[arg(long, default_value_t = 10)]
    pub limit_scale: u32,
}

/// Every secret the config names resolves: the simulators' keys replace them.
struct DemoSecrets;

impl Secrets for DemoSecrets {
    fn get(&self, _name: &str) -> Option<String> {
        Some("demo".into())
    }
}

fn kind_of(connector: &str) -> Option<ProviderKind> {
    ProviderKind::ALL
        .into_iter()
        .find(|k| k.name() == connector)
}

fn limits_of(windows: &[(Duration, u32)]) -> Limits {
    let mut l = Limits::default();
    for (w, n) in windows {
        match w.as_secs() {
            1 => l.per_second = Some(*n),
            60 => l.per_minute = Some(*n),
            3600 => l.per_hour = Some(*n),
            86_400 => l.per_day = Some(*n),
            // ZeroBounce's 80,000 per 10 s.
            s => l.per_second = Some(n / u32::try_from(s.max(1)).unwrap_or(1)),
        }
    }
    l
}

pub async fn run(config: &Path, args: DemoArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let mut settings = Settings::load(config, &DemoSecrets)?;
    let ws = super::pick_workspace(&settings, None)?;
    let population = Arc::new(Population::generate(args.seed, args.leads.max(1)));

    // One simulator per configured provider account.
    let mut sims: BTreeMap<String, SimServer> = BTreeMap::new();
    let mut accounts = BTreeMap::new();
    for (id, account) in &settings.accounts {
        let kind = kind_of(&account.connector.id).ok_or_else(|| {
            CliError::Usage(format!(
                "the demo has no simulator for provider `{id}` (connector {}); remove it from the demo config",
                account.connector.id
            ))
        })?;
        let mut opts = SimOptions::defaults(kind)
            .with_latency(Duration::from_millis(20), Duration::from_millis(150));
        let scaled: Vec<(Duration, u32)> = opts
            .limits
            .iter()
            .map(|(w, n)| (*w, n.saturating_mul(args.limit_scale.max(1))))
            .collect();
        opts.limits = scaled.clone();
        let sim = enrichd_sim::start(kind, population.clone(), opts).await?;
        accounts.insert(
            id.clone(),
            Arc::new(Account {
                base_url: sim.base_url(),
                api_key: crate::secret::Secret::new(sim.api_key()),
                limits: limits_of(&scaled),
                ..Account::clone(account)
            }),
        );
        sims.insert(id.clone(), sim);
    }
    settings.accounts = accounts;
    let dir = config.parent().unwrap_or(Path::new(".")).join(".enrichd");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    settings.storage_url = format!("sqlite://{}", db.display());
    settings.listen = Some(([127, 0, 0, 1], 0).into());
    settings.public_url = None;
    let settings = Arc::new(settings);

    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let (engine, _server) = start_engine(settings.clone(), store.clone()).await?;
    let leads: Vec<Lead> = population
        .people()
        .iter()
        .map(|p| Lead {
            id: crate::core::lead::LeadId(format!("sim-{}", p.index)),
            fields: p.crm_fields().into_iter().collect(),
        })
        .collect();

    let show = args.format == Format::Table;
    if show {
        println!(
            "enrichd demo: {} simulated leads, workspace `{}`, providers {} on loopback ({}× documented limits), SQLite {}",
            leads.len(),
            ws.id,
            sims.keys().cloned().collect::<Vec<_>>().join(", "),
            args.limit_scale,
            db.display()
        );
    }
    let first = run_with_progress(&engine, &ws, leads.clone(), show).await?;
    print_report(&first, args.format);

    // Running the same leads again is a no-op: nothing is asked, nothing charged.
    let before: u64 = sims.values().map(|s| s.stats().requests).sum();
    let sample: Vec<Lead> = leads.into_iter().take(100).collect();
    let again = engine.enrich(&ws, sample, Default::default()).await?;
    let after: u64 = sims.values().map(|s| s.stats().requests).sum();
    if show {
        println!(
            "\nRe-running {} leads: {} provider requests, {} credits (already enriched leads cost nothing).",
            again.totals.leads,
            after - before,
            again.totals.credits_charged
        );
        println!("\nProvider API calls against their limits (simulator statistics):");
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header(vec![
            "provider",
            "requests",
            "429s",
            "busiest minute",
            "limit/min",
            "provider credits",
        ]);
        for (id, s) in &sims {
            let st = s.stats();
            let per_min = settings
                .accounts
                .get(id)
                .map(|a| a.limits)
                .and_then(|l| l.per_minute.or(l.per_second.map(|n| n * 60)));
            t.add_row(vec![
                id.clone(),
                st.requests.to_string(),
                st.rate_limited.to_string(),
                st.max_in_window(Duration::from_secs(60)).to_string(),
                per_min.map_or("-".into(), |n| n.to_string()),
                st.credits_charged.to_string(),
            ]);
        }
        println!("{t}");
        println!("Finished in {:.1} s.", started.elapsed().as_secs_f64());
    }
    for (_, s) in sims {
        s.shutdown().await;
    }
    Ok(())
}
