//! Async provider jobs a stopped process left open (a crash, `kill -9`, a
//! grace period that ran out). The provider has the job — it is processing
//! or has processed it, and bills for it — so asking it again would pay
//! twice and break "no provider asked again". The next process takes each
//! open job up before its first run reads any lead of the workspace: it
//! holds the job's leads (no run plans them meanwhile), gets the result (the
//! callback stored before the stop, a callback arriving now, or a poll —
//! never a new submission), applies it as the original run would have
//! (values with their charges, attempts), marks the job done, then runs the
//! leads' waterfalls on for what is still missing and their final status.
//!
//! Applying twice is harmless: a channel already filled, or already
//! answered by the provider since the job was submitted (the lead task
//! stored its outcome but the job was not marked done yet), is skipped, and
//! charges are keyed by value.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Workspace;
use crate::core::channel::ChannelSet;
use crate::core::lead::{Identity, Lead, LeadId};
use crate::core::ledger::period_key;
use crate::core::outcome::{Classified, ProviderOutcome};
use crate::core::plan::Waterfall;
use crate::providers::{BatchOutcome, FindItem, HttpResponse};
use crate::store::{JobState, ProviderJob, WriteOp};

use super::super::asyncjobs::{await_result, spread};
use super::super::client::Exchange;
use super::super::leadlocks::LeadGuard;
use super::super::{Engine, EngineError, random_token};
use super::{LeadRun, RunCtx, RunOptions, prepare};

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Engine {
    /// Once per process and workspace, before the first run reads a lead:
    /// takes up the async jobs the previous process left open.
    pub(super) async fn resume_open_jobs(
        self: &Arc<Self>,
        ws: &Arc<Workspace>,
    ) -> Result<(), EngineError> {
        let cell = {
            let mut m = self.resumed.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(ws.id.clone()).or_default().clone()
        };
        cell.get_or_try_init(|| self.take_up_jobs(ws)).await?;
        Ok(())
    }

    /// Holds the open jobs' leads and resumes the jobs in the background.
    async fn take_up_jobs(self: &Arc<Self>, ws: &Arc<Workspace>) -> Result<(), EngineError> {
        let jobs: Vec<ProviderJob> = self
            .store
            .open_jobs(&ws.id)
            .await?
            .into_iter()
            .filter(|j| {
                self.clients
                    .get(&j.account)
                    .is_some_and(|c| c.finder.is_some())
            })
            .collect();
        if jobs.is_empty() {
            return Ok(());
        }
        let ids: BTreeSet<LeadId> = jobs
            .iter()
            .flat_map(|j| j.items.iter().map(|i| i.lead_id.clone()))
            .collect();
        // In id order, like every run: no deadlock with runs starting now.
        let mut guards = Vec::with_capacity(ids.len());
        for id in &ids {
            guards.push(self.leads.lock(&ws.id, id).await);
        }
        tracing::info!(
            workspace = %ws.id,
            jobs = jobs.len(),
            leads = ids.len(),
            "resuming async provider jobs left open by the last process"
        );
        tokio::spawn(self.clone().resume(ws.clone(), jobs, guards));
        Ok(())
    }

    /// Resumes `jobs`, then runs their leads on. Boxed: it runs `enrich`,
    /// which may start it.
    fn resume(
        self: Arc<Self>,
        ws: Arc<Workspace>,
        jobs: Vec<ProviderJob>,
        guards: Vec<LeadGuard>,
    ) -> Boxed<()> {
        Box::pin(async move {
            let leads = match self.apply_open_jobs(&ws, &jobs).await {
                Ok(leads) => leads,
                Err(e) => {
                    tracing::error!(workspace = %ws.id, error = %e, "resuming async jobs failed; they stay open for the next start");
                    return;
                }
            };
            drop(guards);
            if leads.is_empty() {
                return;
            }
            let n = leads.len();
            match self.enrich(&ws, leads, RunOptions::default()).await {
                Ok(_) => {
                    tracing::info!(workspace = %ws.id, leads = n, "resumed async jobs applied")
                }
                Err(e) => {
                    tracing::warn!(workspace = %ws.id, error = %e, "leads of resumed async jobs could not be run on; they are retried by the next pass")
                }
            }
        })
    }

    /// Gets each job's result and applies it; returns the jobs' leads.
    async fn apply_open_jobs(
        &self,
        ws: &Arc<Workspace>,
        jobs: &[ProviderJob],
    ) -> Result<Vec<Lead>, EngineError> {
        let now = self.clock.now();
        let period = ws
            .budget
            .map_or_else(|| "all".to_string(), |b| period_key(b.period, now));
        let ctx = RunCtx {
            ws: ws.clone(),
            run_id: format!("resume-{now}-{}", &random_token()[..8]),
            period,
            reservation: None,
        };
        // Results are awaited side by side (each until its own deadline).
        let results =
            futures_util::future::join_all(jobs.iter().map(|j| self.apply_job(&ctx, j))).await;
        let mut leads: BTreeMap<LeadId, Lead> = BTreeMap::new();
        for r in results {
            for l in r? {
                leads.insert(l.id.clone(), l);
            }
        }
        Ok(leads.into_values().collect())
    }

    /// One job: its result, applied to each lead for the channels it still
    /// has to answer; the job then marked done (expired when no result came).
    async fn apply_job(&self, ctx: &RunCtx, job: &ProviderJob) -> Result<Vec<Lead>, EngineError> {
        let ws = &ctx.ws;
        let Some(client) = self.clients.get(&job.account).cloned() else {
            return Ok(Vec::new());
        };
        let ids: Vec<LeadId> = job.items.iter().map(|i| i.lead_id.clone()).collect();
        let mut leads: BTreeMap<LeadId, Lead> = BTreeMap::new();
        for id in &ids {
            if let Some(l) = self.store.get_lead(&ws.id, id).await? {
                leads.insert(id.clone(), l);
            }
        }
        let identities: Vec<Identity> = job
            .items
            .iter()
            .map(|i| {
                leads
                    .get(&i.lead_id)
                    .map(|l| Identity::from_lead(l, &ws.fields))
                    .unwrap_or_default()
            })
            .collect();
        let items: Vec<FindItem<'_>> = job
            .items
            .iter()
            .zip(&identities)
            .map(|(i, identity)| FindItem {
                key: i.lead_id.as_str(),
                identity,
                channels: i.channels,
            })
            .collect();

        // The callback stored before the stop, else a callback or a poll now.
        let stored = match (job.state, &job.result, client.finder.as_ref()) {
            (JobState::Received, Some(body), Some(f)) => {
                let resp = HttpResponse {
                    status: 200,
                    headers: Vec::new(),
                    body: body.clone(),
                };
                Some(f.classify_poll(&items, &resp)).filter(|o| !pending(o))
            }
            _ => None,
        };
        let (outcome, tries, http_status) = match stored {
            Some(o) => (Some(o), 0, None),
            None => {
                let left = Duration::from_millis((job.deadline - self.clock.now()).max(0) as u64);
                let a = await_result(
                    &client,
                    &self.hub,
                    &job.job_id,
                    &items,
                    tokio::time::Instant::now() + left,
                    self.settings.engine.poll_interval,
                    true,
                )
                .await;
                (a.outcome, a.tries, a.http_status)
            }
        };
        let Some(outcome) = outcome else {
            tracing::warn!(account = %job.account, job = %job.job_id, "no result for an async job left open by the last process; its leads are asked again");
            let op = WriteOp::JobState {
                account: job.account.clone(),
                job_id: job.job_id.clone(),
                state: JobState::Expired,
                result: None,
            };
            self.writer.write(&ws.id, vec![op]).await?;
            return Ok(leads.into_values().collect());
        };
        let outcomes: Vec<Classified> = spread(outcome, items.len());
        drop(items);

        let now = self.clock.now();
        let mut stored = self.store.load_leads(&ws.id, &ids).await?;
        for (item, classified) in job.items.iter().zip(outcomes) {
            let Some(lead) = leads.get(&item.lead_id).cloned() else {
                continue;
            };
            let s = stored.remove(&item.lead_id).unwrap_or_default();
            let p = prepare(ws, lead, s, now);
            // Answered already: the lead task stored the outcome before the
            // stop, but the job was not marked done.
            let answered: ChannelSet = p
                .stored
                .attempts
                .iter()
                .filter(|a| a.provider == job.provider && a.at >= job.submitted_at)
                .map(|a| a.channel)
                .collect();
            let channels = item.channels.intersection(p.needed()).difference(answered);
            if channels.is_empty() {
                continue;
            }
            let mut run = LeadRun {
                attempts: Vec::new(),
                filled: Vec::new(),
                calls: 0,
                credits: 0,
                fresh: p.fresh,
                invalidated: ChannelSet::EMPTY,
                spent: BTreeMap::new(),
                seq: 0,
            };
            let views = self.provider_views(ws, &p.identity);
            let mut wf = Waterfall::plan(channels, |c| ws.order_for(c), &views, &[], 0);
            let ex = Exchange {
                outcome: classified,
                tries,
                http_status,
                latency: Duration::ZERO,
            };
            self.apply_call(ctx, &p, &mut run, &mut wf, &job.account, channels, ex)
                .await?;
            self.writer.write(&ws.id, run.attempts).await?;
        }
        let op = WriteOp::JobState {
            account: job.account.clone(),
            job_id: job.job_id.clone(),
            state: JobState::Done,
            result: None,
        };
        self.writer.write(&ws.id, vec![op]).await?;
        tracing::info!(account = %job.account, job = %job.job_id, leads = job.items.len(), "async job resumed and applied");
        Ok(leads.into_values().collect())
    }
}

fn pending(o: &BatchOutcome) -> bool {
    matches!(
        o,
        BatchOutcome::All(Classified {
            outcome: ProviderOutcome::Pending { .. },
            ..
        })
    )
}
