//! One enrichment run over a set of leads of one workspace.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::Workspace;
use crate::core::audience::membership;
use crate::core::channel::{Channel, ChannelSet};
use crate::core::lead::{Identity, Lead, LeadId};
use crate::core::ledger::{
    BudgetCandidate, available, charge_key, period_key, select_within_budget,
};
use crate::core::outcome::{Classified, MilliCredits, OutcomeKind, ProviderOutcome};
use crate::core::plan::{ProviderView, Waterfall};
use crate::core::status::{EnrichmentStatus, status};
use crate::core::usable::{
    Assessment, assess, assess_email_status, canonical_linkedin, is_free_mail_domain,
    normalise_email, normalise_phone,
};
use crate::core::value::{ChannelValue, DAY_MS, Source, UnixMillis, ValueCandidate, Verification};
use crate::providers::{BatchOutcome, FindItem, VerifyOutcome};
use crate::store::{
    Applied, AttemptRecord, Charge, LeadState, LeadStatusRow, SpendEntry, StoredLead, WriteOp,
};

mod resume;

use super::client::Exchange;
use super::report::{FilledValue, LeadReport, ProviderTotals, RunReport, Unfilled};
use super::{Engine, EngineError, random_token};

/// Leads loaded per store round trip.
const CHUNK: usize = 500;

/// Called as each lead finishes (progress bars).
pub type Progress = Arc<dyn Fn(&LeadReport) + Send + Sync>;

/// Options of one run.
#[derive(Clone, Default)]
pub struct RunOptions {
    pub progress: Option<Progress>,
}

/// Everything a lead task needs, computed before any provider call. Pure:
/// the preview computes the same thing to show what a run would do.
pub(crate) struct Prepared {
    pub lead: Lead,
    pub identity: Identity,
    pub audiences: Vec<String>,
    pub configured: ChannelSet,
    /// Usable and fresh values (stored, or on the CRM record).
    pub fresh: ChannelSet,
    /// Stored values past their freshness: re-check.
    pub stale: Vec<ChannelValue>,
    /// From the stored values and the values on the CRM record, before
    /// this run.
    pub status_before: Option<EnrichmentStatus>,
    pub stored: StoredLead,
}

impl Prepared {
    /// Channels to fill: configured, not fresh (stale ones included).
    pub(crate) fn needed(&self) -> ChannelSet {
        self.configured.difference(self.fresh)
    }
}

/// Shared by the lead tasks of a run.
struct RunCtx {
    ws: Arc<Workspace>,
    run_id: String,
    period: String,
    reservation: Option<i64>,
}

impl Engine {
    /// Enriches `leads` in workspace `ws`: stores them, fills their missing
    /// configured channels within the budget, and reports what happened.
    pub async fn enrich(
        self: &Arc<Self>,
        ws: &Arc<Workspace>,
        leads: Vec<Lead>,
        opts: RunOptions,
    ) -> Result<RunReport, EngineError> {
        let now = self.clock.now();
        let run_id = format!("run-{now}-{}", &random_token()[..8]);
        let wid = &ws.id;
        self.store.settle_expired(wid, now).await?;
        // Async jobs a stopped process left open are taken up first.
        self.resume_open_jobs(ws).await?;

        // Store the leads (deduplicated by id: the last row wins).
        let mut by_id: BTreeMap<LeadId, Lead> = BTreeMap::new();
        for l in leads {
            by_id.insert(l.id.clone(), l);
        }
        let leads: Vec<Lead> = by_id.into_values().collect();
        for chunk in leads.chunks(CHUNK) {
            let rows: Vec<(Lead, f64)> = chunk
                .iter()
                .map(|l| (l.clone(), l.number(&ws.fields.icp_score).unwrap_or(0.0)))
                .collect();
            self.store.upsert_leads(wid, &rows, now).await?;
        }

        // One run per lead at a time (see `leadlocks`): what is read below
        // is what any earlier run of the lead stored. `leads` is sorted by id.
        let mut guards: HashMap<LeadId, super::leadlocks::LeadGuard> =
            HashMap::with_capacity(leads.len());
        for l in &leads {
            guards.insert(l.id.clone(), self.leads.lock(wid, &l.id).await);
        }

        // What each lead has and needs.
        let mut prepared = Vec::with_capacity(leads.len());
        for chunk in leads.chunks(CHUNK) {
            let ids: Vec<LeadId> = chunk.iter().map(|l| l.id.clone()).collect();
            let mut stored = self.store.load_leads(wid, &ids).await?;
            for l in chunk {
                let s = stored.remove(&l.id).unwrap_or_default();
                prepared.push(prepare(ws, l.clone(), s, now));
            }
        }

        let period = ws
            .budget
            .map_or_else(|| "all".to_string(), |b| period_key(b.period, now));
        let mut reports: Vec<LeadReport> = Vec::with_capacity(prepared.len());
        let mut work: Vec<Prepared> = Vec::new();
        let mut repaired = Vec::new();
        for p in prepared {
            if p.needed().is_empty() {
                let mut r = idle_report(&p, "nothing to fill");
                if let Some(op) = filled_status(&p, now) {
                    repaired.push(op);
                    r.state = LeadState::Done;
                }
                reports.push(r);
            } else if !ws.enabled {
                reports.push(idle_report(
                    &p,
                    "enrichment is switched off for this workspace",
                ));
            } else {
                work.push(p);
            }
        }

        // Budget: highest ICP first within what is left, reserved up front.
        let limit = ws.budget.map(|b| b.credits);
        let counters = self.store.budget(wid, &period).await?;
        let avail = available(limit, counters.charged, counters.reserved);
        let candidates: Vec<BudgetCandidate> = work
            .iter()
            .map(|p| BudgetCandidate {
                lead: p.lead.id.clone(),
                icp_score: p.lead.number(&ws.fields.icp_score).unwrap_or(0.0),
                worst_case: ws.prices.worst_case(p.needed()),
            })
            .collect();
        let mut selection = select_within_budget(candidates, avail);
        let ttl = self.settings.engine.reservation_ttl.as_millis() as i64;
        let mut reservation = None;
        if selection.reserve > 0 {
            reservation = self
                .store
                .reserve(wid, &period, limit, selection.reserve, &run_id, now + ttl)
                .await?;
            if reservation.is_none() {
                // Another run took budget meanwhile: queue everything.
                selection.queued.splice(0..0, selection.selected.drain(..));
                selection.reserve = 0;
            }
        }
        let reserved = selection.reserve;
        let queued: std::collections::HashSet<LeadId> = selection.queued.into_iter().collect();
        let mut order: HashMap<LeadId, usize> = HashMap::new();
        for (i, id) in selection.selected.iter().enumerate() {
            order.insert(id.clone(), i);
        }
        let mut to_run: Vec<Prepared> = Vec::with_capacity(order.len());
        let mut queued_ops = repaired;
        for p in work {
            if queued.contains(&p.lead.id) {
                let reason = format!(
                    "queued: needs up to {} credits; {} left in budget period {period}",
                    ws.prices.worst_case(p.needed()),
                    avail.unwrap_or(0)
                );
                queued_ops.push(WriteOp::Status(LeadStatusRow {
                    lead_id: p.lead.id.clone(),
                    state: LeadState::Queued,
                    enrichment_status: p.status_before.map(|s| s.as_str().to_string()),
                    reason: reason.clone(),
                    retry_at: None,
                    updated_at: now,
                }));
                let mut r = idle_report(&p, &reason);
                r.state = LeadState::Queued;
                reports.push(r);
            } else {
                to_run.push(p);
            }
        }
        to_run.sort_by_key(|p| order.get(&p.lead.id).copied().unwrap_or(usize::MAX));
        self.writer.write(wid, queued_ops).await?;
        // Leads that do not run are free at once; the others when written.
        let running: std::collections::HashSet<&LeadId> =
            to_run.iter().map(|p| &p.lead.id).collect();
        guards.retain(|id, _| running.contains(id));

        // Run the waterfalls, `concurrency` leads at a time.
        let ctx = Arc::new(RunCtx {
            ws: ws.clone(),
            run_id: run_id.clone(),
            period: period.clone(),
            reservation,
        });
        let limit = self.settings.engine.concurrency;
        let mut set = JoinSet::new();
        let mut first_error = None;
        let mut collect = |res: Result<Result<LeadReport, EngineError>, tokio::task::JoinError>,
                           reports: &mut Vec<LeadReport>| match res {
            Ok(Ok(r)) => {
                if let Some(p) = &opts.progress {
                    p(&r);
                }
                reports.push(r);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "lead failed");
                first_error.get_or_insert(e);
            }
            Err(e) => {
                tracing::error!(error = %e, "lead task panicked");
            }
        };
        for p in to_run {
            while set.len() >= limit {
                if let Some(res) = set.join_next().await {
                    collect(res, &mut reports);
                }
            }
            let engine = self.clone();
            let ctx = ctx.clone();
            let guard = guards.remove(&p.lead.id);
            set.spawn(async move {
                let r = engine.run_lead(&ctx, p).await;
                drop(guard);
                r
            });
        }
        while let Some(res) = set.join_next().await {
            collect(res, &mut reports);
        }
        let settlement = match reservation {
            Some(id) => self.store.settle(wid, id).await?,
            None => None,
        };
        if let Some(e) = first_error {
            return Err(e);
        }

        let mut providers = BTreeMap::new();
        for acc in ws.accounts() {
            if let Some(c) = self.clients.get(&acc) {
                providers.insert(
                    acc.clone(),
                    ProviderTotals {
                        requests: c.stats.requests.load(Ordering::Relaxed),
                        rate_limited: c.stats.rate_limited.load(Ordering::Relaxed),
                        limit_per_second: c.limiter.rate(),
                        limiter_wait_ms: c.stats.limiter_wait_ms.load(Ordering::Relaxed),
                        ..ProviderTotals::default()
                    },
                );
            }
        }
        for (account, amount) in reports.iter().flat_map(|l| l.provider_spend_milli.iter()) {
            if let Some(t) = providers.get_mut(account) {
                t.spend_milli += amount;
            }
        }
        for f in reports.iter().flat_map(|l| l.filled.iter()) {
            let account = providers
                .keys()
                .find(|acc| {
                    self.clients
                        .get(*acc)
                        .is_some_and(|c| c.account.connector.id == f.source)
                })
                .cloned();
            if let Some(t) = account.and_then(|a| providers.get_mut(&a)) {
                t.values_supplied += 1;
            }
        }
        let mut report = RunReport {
            run_id,
            workspace: ws.id.to_string(),
            budget_period: period,
            reserved,
            settlement,
            totals: Default::default(),
            providers,
            leads: reports,
        };
        report.leads.sort_by(|a, b| a.lead_id.cmp(&b.lead_id));
        report.tally();
        Ok(report)
    }

    /// The waterfall of one lead.
    async fn run_lead(&self, ctx: &RunCtx, p: Prepared) -> Result<LeadReport, EngineError> {
        let ws = &ctx.ws;
        let now = self.clock.now();
        let mut lead = LeadRun {
            attempts: Vec::new(),
            filled: Vec::new(),
            calls: 0,
            credits: 0,
            fresh: p.fresh,
            invalidated: ChannelSet::EMPTY,
            spent: BTreeMap::new(),
            seq: 0,
        };

        // Stale emails are re-verified before anyone is asked to find them again.
        for v in &p.stale {
            if v.channel.is_email() && ws.verifier.is_some() {
                match self.verify(ctx, &p, &mut lead, v.channel, &v.value).await {
                    Verdict::Usable(verification) => {
                        let refreshed = ChannelValue {
                            verification,
                            verified_at: Some(now),
                            ..v.clone()
                        };
                        let op = WriteOp::Value {
                            lead_id: p.lead.id.clone(),
                            value: refreshed,
                            charge: None,
                        };
                        self.writer.write(&ws.id, vec![op]).await?;
                        lead.fresh.insert(v.channel);
                    }
                    Verdict::Unusable(_) => {
                        // No longer usable: keep it for the audit, marked invalid, and find another.
                        let op = WriteOp::Value {
                            lead_id: p.lead.id.clone(),
                            value: ChannelValue {
                                verification: Verification::Invalid,
                                verified_at: Some(now),
                                ..v.clone()
                            },
                            charge: None,
                        };
                        self.writer.write(&ws.id, vec![op]).await?;
                        lead.invalidated.insert(v.channel);
                    }
                    Verdict::Later(_, _) => {}
                }
            }
        }
        let needed = p.configured.difference(lead.fresh);

        let views = self.provider_views(ws, &p.identity);
        let since = now - i64::from(self.settings.engine.not_found_retry_days) * DAY_MS;
        let mut wf = Waterfall::plan(
            needed,
            |c| ws.order_for(c),
            &views,
            &p.stored.attempts,
            since,
        );

        while let Some(call) = wf.next_call() {
            let Some(client) = self.clients.get(&call.account).cloned() else {
                break;
            };
            // What earlier providers answered is stored before the next one
            // is asked: a stop while it answers must not lose their answers
            // (they would be asked again).
            if !lead.attempts.is_empty() {
                let attempts = std::mem::take(&mut lead.attempts);
                self.writer.write(&ws.id, attempts).await?;
            }
            lead.seq += 1;
            let mut ack = None;
            let ex: Exchange<Classified> = match self.dispatchers.get(&call.account) {
                Some(d) => {
                    let (ex, job_ack) = d
                        .find(&ws.id, &ctx.run_id, &p.lead.id, &p.identity, call.channels)
                        .await;
                    ack = job_ack;
                    ex
                }
                None => {
                    let items = [FindItem {
                        key: p.lead.id.as_str(),
                        identity: &p.identity,
                        channels: call.channels,
                    }];
                    let ex = client.find(&items, None).await;
                    Exchange {
                        outcome: match ex.outcome {
                            BatchOutcome::All(c) => c,
                            BatchOutcome::Each(mut cs) if !cs.is_empty() => cs.swap_remove(0),
                            BatchOutcome::Each(_) => {
                                Classified::new(ProviderOutcome::Transient, "empty answer")
                            }
                        },
                        tries: ex.tries,
                        http_status: ex.http_status,
                        latency: ex.latency,
                    }
                }
            };
            lead.calls += ex.tries;
            self.apply_call(
                ctx,
                &p,
                &mut lead,
                &mut wf,
                &call.account,
                call.channels,
                ex,
            )
            .await?;
            if let Some(ack) = ack {
                // An async job's outcome is stored, its attempts included
                // (a restart must not ask again for what it answered): the
                // job can be marked done.
                let attempts = std::mem::take(&mut lead.attempts);
                self.writer.write(&ws.id, attempts).await?;
                ack.done();
            }
        }

        // Where the lead stands now.
        let summary = wf.summary();
        let present = lead.fresh.union(summary.filled);
        let kept: ChannelSet = p.stale.iter().map(|v| v.channel).collect();
        let status_after = status(
            p.configured,
            present.union(kept.difference(lead.invalidated)),
        );
        let reasons = wf.reasons();
        let unfilled: Vec<Unfilled> = reasons
            .into_iter()
            .map(|(channel, tried)| Unfilled {
                retry: summary.deferred.contains(channel),
                channel,
                tried,
            })
            .collect();
        let (state, reason, retry_at) = if !summary.deferred.is_empty() {
            let pause = summary_pause(self, &unfilled);
            let at = now + (self.settings.engine.retry_after.as_millis() as i64).max(pause);
            (
                LeadState::Deferred,
                format!(
                    "some providers were skipped for now ({}); retry scheduled",
                    describe(&unfilled)
                ),
                Some(at),
            )
        } else if summary.no_identity {
            (
                LeadState::NoIdentity,
                "not enough identity for any provider (needs a name with a company domain or name, a LinkedIn URL or an email)".to_string(),
                None,
            )
        } else if unfilled.is_empty() {
            (
                LeadState::Done,
                "every configured channel is filled".to_string(),
                None,
            )
        } else {
            (
                LeadState::Done,
                format!(
                    "no usable value from any provider ({})",
                    describe(&unfilled)
                ),
                None,
            )
        };
        let mut ops = std::mem::take(&mut lead.attempts);
        ops.push(WriteOp::Status(LeadStatusRow {
            lead_id: p.lead.id.clone(),
            state,
            enrichment_status: status_after.map(|s| s.as_str().to_string()),
            reason: reason.clone(),
            retry_at,
            updated_at: self.clock.now(),
        }));
        self.writer.write(&ws.id, ops).await?;
        Ok(LeadReport {
            lead_id: p.lead.id.clone(),
            audiences: p.audiences.clone(),
            status_before: p.status_before,
            status_after,
            state,
            reason,
            filled: lead.filled,
            unfilled,
            provider_calls: lead.calls,
            credits: lead.credits,
            provider_spend_milli: lead.spent,
        })
    }

    /// The workspace's finders as the planner sees them for `identity`.
    fn provider_views(&self, ws: &Workspace, identity: &Identity) -> Vec<ProviderView> {
        ws.accounts()
            .into_iter()
            .filter_map(|acc| {
                let c = self.clients.get(&acc)?;
                let f = c.finder.as_ref()?;
                Some(ProviderView {
                    provider: c.account.connector.id.clone(),
                    supplies: f.supplies(),
                    accepts: f.accepts(identity),
                    account: acc,
                })
            })
            .collect()
    }

    /// Turns one provider answer into per-channel outcomes, stored values,
    /// charges, spend and audit rows.
    #[allow(clippy::too_many_arguments)]
    async fn apply_call(
        &self,
        ctx: &RunCtx,
        p: &Prepared,
        lead: &mut LeadRun,
        wf: &mut Waterfall,
        account: &str,
        channels: ChannelSet,
        ex: Exchange<Classified>,
    ) -> Result<(), EngineError> {
        let ws = &ctx.ws;
        let Some(client) = self.clients.get(account).cloned() else {
            return Ok(());
        };
        let provider = client.account.connector.id.clone();
        let now = self.clock.now();
        let base = AttemptBase {
            run_id: &ctx.run_id,
            lead: &p.lead.id,
            provider: &provider,
            account,
            http_status: ex.http_status,
            tries: ex.tries,
            latency_ms: ex.latency.as_millis().min(u128::from(u32::MAX)) as u32,
            at: now,
        };
        let detail = ex.outcome.detail.clone();
        match ex.outcome.outcome {
            ProviderOutcome::Found {
                values,
                provider_cost,
            } => {
                let cost = &client.account.connector.cost;
                let returned: ChannelSet = values
                    .iter()
                    .map(|v| v.channel)
                    .filter(|c| channels.contains(*c))
                    .collect();
                // What the provider billed: its own figure when it gives one,
                // else an estimate from the connector's cost table.
                let spend = provider_cost.unwrap_or_else(|| {
                    let matched = if values.is_empty() {
                        0
                    } else {
                        cost.per_match_milli()
                    };
                    cost.attempt_milli()
                        + matched
                        + returned
                            .iter()
                            .map(|c| cost.for_channel(c))
                            .sum::<MilliCredits>()
                });
                // Decide each channel.
                let mut decisions: Vec<(Channel, OutcomeKind, String, Option<ChannelValue>)> =
                    Vec::new();
                for c in channels.iter() {
                    let candidates: Vec<&ValueCandidate> =
                        values.iter().filter(|v| v.channel == c).collect();
                    if candidates.is_empty() {
                        decisions.push((
                            c,
                            OutcomeKind::NotFound,
                            format!("no {c} in the answer ({detail})"),
                            None,
                        ));
                        continue;
                    }
                    let (kind, why, value) =
                        self.judge(ctx, p, lead, &provider, c, &candidates).await;
                    decisions.push((c, kind, why, value));
                }
                // Values and their charges, atomically.
                let mut money = Vec::new();
                let mut charged_idx = Vec::new();
                for (c, _, _, value) in &decisions {
                    if let Some(v) = value {
                        let price = ws.prices.of(*c);
                        let charge = (price > 0).then(|| Charge {
                            key: charge_key(&p.lead.id, *c, &v.value),
                            credits: price,
                            period: ctx.period.clone(),
                            reservation: ctx.reservation,
                        });
                        charged_idx.push(money.len());
                        money.push(WriteOp::Value {
                            lead_id: p.lead.id.clone(),
                            value: v.clone(),
                            charge,
                        });
                    }
                }
                if spend != 0 {
                    money.push(lead.spend_op(
                        ctx,
                        p,
                        &provider,
                        account,
                        spend,
                        format!("find {channels}"),
                        now,
                    ));
                }
                let applied = self.writer.write(&ws.id, money).await?;
                let mut k = 0;
                for (c, kind, why, value) in decisions {
                    let mut credits = 0;
                    if let Some(v) = &value {
                        let charged = charged_idx
                            .get(k)
                            .and_then(|i| applied.get(*i))
                            .is_some_and(|a| matches!(a, Applied::Value { charged: true }));
                        k += 1;
                        if charged {
                            credits = ws.prices.of(c);
                            crate::metrics::metrics().credits_charged(ws.id.as_str(), credits);
                        }
                        lead.credits += credits;
                        lead.filled.push(FilledValue {
                            channel: c,
                            value: v.value.clone(),
                            source: provider.clone(),
                            credits,
                        });
                    }
                    let share = if returned.contains(c) {
                        spend / returned.len().max(1) as i64
                    } else {
                        0
                    };
                    lead.attempts.push(base.record(
                        c,
                        kind,
                        why,
                        value.map(|v| v.value),
                        share,
                        credits,
                    ));
                    wf.record(account, c, kind);
                }
            }
            other => {
                let kind = other.kind();
                if matches!(kind, OutcomeKind::OutOfCredits | OutcomeKind::AuthError) {
                    wf.skip_account(account, kind);
                }
                let attempt_cost = if kind == OutcomeKind::NotFound {
                    client.account.connector.cost.attempt_milli()
                } else {
                    0
                };
                if attempt_cost != 0 {
                    let detail = format!("find {channels}: {kind}");
                    let op = lead.spend_op(ctx, p, &provider, account, attempt_cost, detail, now);
                    self.writer.write(&ws.id, vec![op]).await?;
                }
                for c in channels.iter() {
                    let share = attempt_cost / channels.len().max(1) as i64;
                    lead.attempts
                        .push(base.record(c, kind, detail.clone(), None, share, 0));
                    wf.record(account, c, kind);
                }
            }
        }
        Ok(())
    }

    /// The verdict on a channel's candidates: the first usable one wins; a
    /// candidate of unknown deliverability goes to the verifier.
    async fn judge(
        &self,
        ctx: &RunCtx,
        p: &Prepared,
        lead: &mut LeadRun,
        provider: &str,
        c: Channel,
        candidates: &[&ValueCandidate],
    ) -> (OutcomeKind, String, Option<ChannelValue>) {
        let policy = ctx.ws.usability();
        let region = p.identity.country.as_deref();
        let now = self.clock.now();
        let mut first_problem: Option<String> = None;
        let mut to_verify: Option<String> = None;
        for cand in candidates {
            match assess(cand, &policy, region) {
                Assessment::Usable {
                    value,
                    verification,
                } => {
                    let verified_at = (verification == Verification::Verified).then_some(now);
                    let v = ChannelValue {
                        channel: c,
                        value,
                        source: Source::provider(provider),
                        verification,
                        found_at: now,
                        verified_at,
                    };
                    return (OutcomeKind::Found, status_word(cand), Some(v));
                }
                Assessment::NeedsVerification { value } => {
                    if to_verify.is_none() {
                        to_verify = Some(value);
                    }
                }
                Assessment::Unusable(why) => {
                    first_problem.get_or_insert_with(|| why.to_string());
                }
            }
        }
        if let Some(value) = to_verify {
            return match self.verify(ctx, p, lead, c, &value).await {
                Verdict::Usable(verification) => {
                    let v = ChannelValue {
                        channel: c,
                        value,
                        source: Source::provider(provider),
                        verification,
                        found_at: now,
                        verified_at: Some(now),
                    };
                    (
                        OutcomeKind::Found,
                        "verified by the workspace's verifier".to_string(),
                        Some(v),
                    )
                }
                Verdict::Unusable(why) => (OutcomeKind::Unusable, why, None),
                Verdict::Later(kind, why) => (kind, format!("verifier unavailable: {why}"), None),
            };
        }
        (
            OutcomeKind::Unusable,
            first_problem.unwrap_or_else(|| "no usable value".to_string()),
            None,
        )
    }

    /// Asks the workspace's verifier about an email; records the attempt.
    async fn verify(
        &self,
        ctx: &RunCtx,
        p: &Prepared,
        lead: &mut LeadRun,
        c: Channel,
        email: &str,
    ) -> Verdict {
        let Some(client) = ctx
            .ws
            .verifier
            .as_ref()
            .and_then(|v| self.clients.get(v))
            .cloned()
        else {
            return Verdict::Unusable("no verifier configured".into());
        };
        let ex = client.verify(email).await;
        lead.calls += ex.tries;
        let now = self.clock.now();
        let provider = client.account.connector.id.clone();
        let base = AttemptBase {
            run_id: &ctx.run_id,
            lead: &p.lead.id,
            provider: &provider,
            account: client.id(),
            http_status: ex.http_status,
            tries: ex.tries,
            latency_ms: ex.latency.as_millis().min(u128::from(u32::MAX)) as u32,
            at: now,
        };
        let (verdict, kind, detail, cost) = match ex.outcome {
            VerifyOutcome::Checked {
                verification,
                provider_status,
                provider_cost,
            } => {
                let cost =
                    provider_cost.unwrap_or_else(|| client.account.connector.cost.check_milli());
                match assess_email_status(
                    email.to_string(),
                    verification,
                    &ctx.ws.usability_without_verifier(),
                ) {
                    Assessment::Usable { verification, .. } => (
                        Verdict::Usable(verification),
                        OutcomeKind::Found,
                        format!("{provider}: {provider_status}"),
                        cost,
                    ),
                    Assessment::Unusable(why) => {
                        let d = format!("{provider}: {provider_status} ({why})");
                        (Verdict::Unusable(d.clone()), OutcomeKind::Unusable, d, cost)
                    }
                    Assessment::NeedsVerification { .. } => {
                        let d = format!("{provider}: {provider_status} (deliverability unknown)");
                        (Verdict::Unusable(d.clone()), OutcomeKind::Unusable, d, cost)
                    }
                }
            }
            VerifyOutcome::Failed(cl) => {
                let kind = cl.outcome.kind();
                (Verdict::Later(kind, cl.detail.clone()), kind, cl.detail, 0)
            }
        };
        lead.seq += 1;
        if cost != 0 {
            let op = lead.spend_op(
                ctx,
                p,
                &provider,
                client.id(),
                cost,
                format!("verify {c}"),
                now,
            );
            if let Err(e) = self.writer.write(&ctx.ws.id, vec![op]).await {
                tracing::error!(error = %e, "could not record verifier spend");
            }
        }
        lead.attempts
            .push(base.record(c, kind, detail, Some(email.to_string()), cost, 0));
        verdict
    }
}

impl LeadRun {
    /// A provider-spend row for the lead's current call in this run (the
    /// key makes it idempotent if the same write is applied twice), counted
    /// in the lead's spend per account.
    #[allow(clippy::too_many_arguments)]
    fn spend_op(
        &mut self,
        ctx: &RunCtx,
        p: &Prepared,
        provider: &str,
        account: &str,
        amount: MilliCredits,
        detail: String,
        at: UnixMillis,
    ) -> WriteOp {
        *self.spent.entry(account.to_string()).or_default() += amount;
        WriteOp::Spend(SpendEntry {
            key: format!("{}:{}:{}:{}", ctx.run_id, account, p.lead.id, self.seq),
            provider: provider.to_string(),
            account: account.to_string(),
            lead_id: Some(p.lead.id.clone()),
            amount,
            detail,
            at,
        })
    }
}

enum Verdict {
    Usable(Verification),
    Unusable(String),
    /// The verifier could not answer now.
    Later(OutcomeKind, String),
}

struct LeadRun {
    attempts: Vec<WriteOp>,
    filled: Vec<FilledValue>,
    calls: u32,
    credits: i64,
    fresh: ChannelSet,
    /// Stale values the verifier now rejects.
    invalidated: ChannelSet,
    /// Provider spend per account, milli-credits.
    spent: BTreeMap<String, MilliCredits>,
    /// Provider calls made so far (spend keys).
    seq: u32,
}

struct AttemptBase<'a> {
    run_id: &'a str,
    lead: &'a LeadId,
    provider: &'a str,
    account: &'a str,
    http_status: Option<u16>,
    tries: u32,
    latency_ms: u32,
    at: UnixMillis,
}

impl AttemptBase<'_> {
    fn record(
        &self,
        channel: Channel,
        outcome: OutcomeKind,
        detail: String,
        value: Option<String>,
        cost: MilliCredits,
        credits: i64,
    ) -> WriteOp {
        WriteOp::Attempt(AttemptRecord {
            run_id: self.run_id.to_string(),
            lead_id: self.lead.clone(),
            channel,
            provider: self.provider.to_string(),
            account: self.account.to_string(),
            outcome,
            detail,
            value,
            provider_cost: cost,
            credits,
            http_status: self.http_status,
            tries: self.tries,
            latency_ms: self.latency_ms,
            at: self.at,
        })
    }
}

fn status_word(c: &ValueCandidate) -> String {
    match &c.provider_status {
        Some(s) => format!("usable ({s})"),
        None => "usable".to_string(),
    }
}

/// The longest provider pause among skipped providers, in ms from now.
fn summary_pause(engine: &Engine, unfilled: &[Unfilled]) -> i64 {
    unfilled
        .iter()
        .flat_map(|u| u.tried.iter())
        .filter_map(|(acc, _)| engine.clients.get(acc)?.limiter.paused())
        .map(|until| until.saturating_duration_since(tokio::time::Instant::now()))
        .max()
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

fn describe(unfilled: &[Unfilled]) -> String {
    unfilled
        .iter()
        .map(|u| {
            let tried: Vec<String> = u.tried.iter().map(|(a, o)| format!("{a}: {o}")).collect();
            if tried.is_empty() {
                format!("{}: no provider supplies it", u.channel)
            } else {
                format!("{}: {}", u.channel, tried.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The final status of a lead whose configured channels are all filled
/// by values enrichd stored, when its stored status does not say so: the
/// run that stored the last value was cut off (a crash) before it wrote the
/// lead's status. `None` when there is nothing to record.
fn filled_status(p: &Prepared, now: UnixMillis) -> Option<WriteOp> {
    let ours = p
        .stored
        .values
        .iter()
        .any(|v| p.configured.contains(v.channel) && v.verification != Verification::Invalid);
    let recorded = p
        .stored
        .status
        .as_ref()
        .is_some_and(|s| s.state == LeadState::Done);
    if p.configured.is_empty() || !ours || recorded {
        return None;
    }
    Some(WriteOp::Status(LeadStatusRow {
        lead_id: p.lead.id.clone(),
        state: LeadState::Done,
        enrichment_status: p.status_before.map(|s| s.as_str().to_string()),
        reason: "every configured channel is filled".to_string(),
        retry_at: None,
        updated_at: now,
    }))
}

fn idle_report(p: &Prepared, reason: &str) -> LeadReport {
    LeadReport {
        lead_id: p.lead.id.clone(),
        audiences: p.audiences.clone(),
        status_before: p.status_before,
        status_after: p.status_before,
        state: p
            .stored
            .status
            .as_ref()
            .map_or(LeadState::Done, |s| s.state),
        reason: reason.to_string(),
        filled: Vec::new(),
        unfilled: Vec::new(),
        provider_calls: 0,
        credits: 0,
        provider_spend_milli: BTreeMap::new(),
    }
}

/// Audiences, present values and what is missing, for one lead.
pub(crate) fn prepare(ws: &Workspace, lead: Lead, stored: StoredLead, now: UnixMillis) -> Prepared {
    let identity = Identity::from_lead(&lead, &ws.fields);
    let m = membership(&lead, &ws.audiences);
    let audiences = m
        .audiences
        .iter()
        .map(|i| ws.audiences[*i].name.clone())
        .collect();
    let mut fresh = ChannelSet::EMPTY;
    let mut any = ChannelSet::EMPTY;
    let mut stale = Vec::new();
    for v in stored
        .values
        .iter()
        .filter(|v| v.verification != Verification::Invalid)
    {
        any.insert(v.channel);
        if v.is_fresh(now, ws.freshness(v.channel)) {
            fresh.insert(v.channel);
        } else if m.channels.contains(v.channel) {
            stale.push(v.clone());
        }
    }
    // Values a human (or another tool) already put on the CRM record count as
    // present: enrichd never pays to find what the record has.
    let region = identity.country.as_deref().or(ws.default_region.as_deref());
    for c in crm_channels(&lead, ws, region).iter() {
        if !any.contains(c) {
            fresh.insert(c);
            any.insert(c);
        }
    }
    Prepared {
        status_before: status(m.channels, any),
        identity,
        audiences,
        configured: m.channels,
        fresh,
        stale,
        lead,
        stored,
    }
}

/// Channels the CRM record already holds a well-formed value for.
fn crm_channels(lead: &Lead, ws: &Workspace, region: Option<&str>) -> ChannelSet {
    let f = &ws.fields;
    let mut s = ChannelSet::EMPTY;
    if let Some(e) = lead.text(&f.email).and_then(|e| normalise_email(&e).ok()) {
        let domain = e.rsplit_once('@').map_or("", |(_, d)| d);
        s.insert(if is_free_mail_domain(domain) {
            Channel::PersonalEmail
        } else {
            Channel::WorkEmail
        });
    }
    if lead
        .text(&f.phone)
        .is_some_and(|ph| normalise_phone(&ph, region).is_ok())
    {
        s.insert(Channel::Phone);
    }
    if lead
        .text(&f.linkedin_url)
        .is_some_and(|u| canonical_linkedin(&u).is_ok())
    {
        s.insert(Channel::LinkedinUrl);
    }
    s
}
