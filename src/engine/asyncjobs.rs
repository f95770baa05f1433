//! Async providers (FullEnrich): leads heading to the same account within a
//! short window are submitted together (up to the provider's batch size),
//! the job is recorded durably with an unguessable callback token, and the
//! result arrives by signed callback or, as the fallback, by polling, until
//! the deadline. Each lead task gets its own item's outcome back, applies
//! it (values, charges, attempts) and acknowledges; the job is marked done
//! only once every lead acknowledged. A job still open when the process
//! stops (a crash, `kill -9`) is resumed by the next process
//! (`engine::run::resume`): its result is fetched (stored callback, or a
//! poll — not a new submission) and applied, so the provider is not asked
//! again for what it was already asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::core::channel::ChannelSet;
use crate::core::lead::{Identity, LeadId, WorkspaceId};
use crate::core::outcome::{Classified, ProviderOutcome};
use crate::store::{JobItem, JobState, ProviderJob, WriteOp};

use super::client::{Exchange, ProviderClient};
use super::writer::Writer;
use crate::providers::{BatchOutcome, FindItem, HttpResponse};

/// Results delivered by callbacks, waiting for the job's waiter.
#[derive(Default)]
pub struct CallbackHub {
    slots: Mutex<HashMap<(String, String), Slot>>,
}

#[derive(Default)]
struct Slot {
    body: Option<Vec<u8>>,
    notify: Arc<Notify>,
}

impl CallbackHub {
    fn slot(&self, account: &str, job_id: &str) -> Arc<Notify> {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.entry((account.to_string(), job_id.to_string()))
            .or_default()
            .notify
            .clone()
    }

    /// Hands a callback body to the job's waiter (kept if it is not waiting yet).
    pub fn deliver(&self, account: &str, job_id: &str, body: Vec<u8>) {
        let notify = {
            let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = s
                .entry((account.to_string(), job_id.to_string()))
                .or_default();
            slot.body = Some(body);
            slot.notify.clone()
        };
        notify.notify_one();
    }

    fn take(&self, account: &str, job_id: &str) -> Option<Vec<u8>> {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.get_mut(&(account.to_string(), job_id.to_string()))
            .and_then(|slot| slot.body.take())
    }

    fn forget(&self, account: &str, job_id: &str) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.remove(&(account.to_string(), job_id.to_string()));
    }
}

/// One lead's request to an async provider.
pub struct AsyncRequest {
    pub ws: WorkspaceId,
    pub run_id: String,
    pub lead: LeadId,
    pub identity: Identity,
    pub channels: ChannelSet,
    pub reply: oneshot::Sender<(Exchange<Classified>, Option<JobAck>)>,
}

/// Handed back with a job's outcome: the lead task calls [`JobAck::done`]
/// once the outcome is stored (values, charges, attempts). The job is
/// marked done when every lead of it did; until then a restart resumes it.
pub struct JobAck(oneshot::Sender<()>);

impl JobAck {
    pub fn done(self) {
        let _ = self.0.send(());
    }
}

pub struct AsyncSettings {
    pub window: Duration,
    pub timeout: Duration,
    pub poll_interval: Duration,
    /// Public base URL of the callback endpoint, if callbacks are served.
    pub callback_base: Option<String>,
}

/// Per async account: collects requests into batches and runs them.
#[derive(Clone)]
pub struct AsyncDispatcher {
    tx: mpsc::Sender<AsyncRequest>,
}

impl AsyncDispatcher {
    pub fn start(
        client: Arc<ProviderClient>,
        hub: Arc<CallbackHub>,
        writer: Writer,
        settings: Arc<AsyncSettings>,
        now: Arc<dyn crate::clock::Clock>,
    ) -> AsyncDispatcher {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(collect(rx, client, hub, writer, settings, now));
        AsyncDispatcher { tx }
    }

    /// Submits one lead and waits for its outcome; when the outcome came
    /// from a recorded job, also the acknowledgement to give once it is
    /// stored.
    pub async fn find(
        &self,
        ws: &WorkspaceId,
        run_id: &str,
        lead: &LeadId,
        identity: &Identity,
        channels: ChannelSet,
    ) -> (Exchange<Classified>, Option<JobAck>) {
        let (reply, rx) = oneshot::channel();
        let req = AsyncRequest {
            ws: ws.clone(),
            run_id: run_id.to_string(),
            lead: lead.clone(),
            identity: identity.clone(),
            channels,
            reply,
        };
        let lost = || Exchange {
            outcome: Classified::new(ProviderOutcome::Transient, "async dispatcher stopped"),
            tries: 0,
            http_status: None,
            latency: Duration::ZERO,
        };
        if self.tx.send(req).await.is_err() {
            return (lost(), None);
        }
        rx.await.unwrap_or_else(|_| (lost(), None))
    }
}

async fn collect(
    mut rx: mpsc::Receiver<AsyncRequest>,
    client: Arc<ProviderClient>,
    hub: Arc<CallbackHub>,
    writer: Writer,
    settings: Arc<AsyncSettings>,
    clock: Arc<dyn crate::clock::Clock>,
) {
    let max = client.finder.as_ref().map_or(1, |f| f.max_batch().max(1));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = Instant::now() + settings.window;
        while batch.len() < max {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(r) => batch.push(r),
                    None => break,
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        // Batches are per workspace: a job row belongs to one.
        let mut by_ws: Vec<Vec<AsyncRequest>> = Vec::new();
        for r in batch {
            match by_ws.iter_mut().find(|g| g[0].ws == r.ws) {
                Some(g) => g.push(r),
                None => by_ws.push(vec![r]),
            }
        }
        for group in by_ws {
            tokio::spawn(run_batch(
                group,
                client.clone(),
                hub.clone(),
                writer.clone(),
                settings.clone(),
                clock.clone(),
            ));
        }
    }
}

async fn run_batch(
    batch: Vec<AsyncRequest>,
    client: Arc<ProviderClient>,
    hub: Arc<CallbackHub>,
    writer: Writer,
    settings: Arc<AsyncSettings>,
    clock: Arc<dyn crate::clock::Clock>,
) {
    let started = Instant::now();
    let items: Vec<FindItem<'_>> = batch
        .iter()
        .map(|r| FindItem {
            key: r.lead.as_str(),
            identity: &r.identity,
            channels: r.channels,
        })
        .collect();
    let token = crate::engine::random_token();
    let account = client.id().to_string();
    let callback = settings
        .callback_base
        .as_ref()
        .map(|b| format!("{b}/callbacks/{account}/{token}"));
    let submit = client.find(&items, callback.as_deref()).await;
    let mut tries = submit.tries;
    let mut status = submit.http_status;
    let (job, outcomes): (Option<String>, Vec<Classified>) = match submit.outcome {
        BatchOutcome::All(Classified {
            outcome: ProviderOutcome::Pending { job_id, .. },
            ..
        }) => {
            let now = clock.now();
            let job = ProviderJob {
                account: account.clone(),
                provider: client.account.connector.id.clone(),
                job_id: job_id.clone(),
                token,
                items: batch
                    .iter()
                    .map(|r| JobItem {
                        lead_id: r.lead.clone(),
                        channels: r.channels,
                    })
                    .collect(),
                run_id: batch[0].run_id.clone(),
                submitted_at: now,
                deadline: now + settings.timeout.as_millis() as i64,
                state: JobState::Pending,
                result: None,
            };
            if let Err(e) = writer.write(&batch[0].ws, vec![WriteOp::Job(job)]).await {
                tracing::error!(account = %account, error = %e, "could not record an async job; the callback will be refused and polling used");
            }
            let awaited = await_result(
                &client,
                &hub,
                &job_id,
                &items,
                started + settings.timeout,
                settings.poll_interval,
                false,
            )
            .await;
            tries += awaited.tries;
            status = awaited.http_status.or(status);
            let result = awaited.outcome;
            let (state, outcomes) = match result {
                Some(o) => (JobState::Done, spread(o, items.len())),
                None => (
                    JobState::Expired,
                    spread(
                        BatchOutcome::All(Classified::new(
                            ProviderOutcome::Transient,
                            format!(
                                "no result from {} within {} s (job {job_id}); the lead will be retried",
                                account,
                                settings.timeout.as_secs()
                            ),
                        )),
                        items.len(),
                    ),
                ),
            };
            if state == JobState::Done {
                (Some(job_id), outcomes)
            } else {
                // Nothing to apply: the leads are deferred and retried.
                let op = WriteOp::JobState {
                    account: account.clone(),
                    job_id,
                    state,
                    result: None,
                };
                if let Err(e) = writer.write(&batch[0].ws, vec![op]).await {
                    tracing::warn!(account = %account, error = %e, "could not update an async job's state");
                }
                (None, outcomes)
            }
        }
        other => (None, spread(other, items.len())),
    };
    let latency = started.elapsed();
    drop(items);
    let ws = batch[0].ws.clone();
    let mut acks = Vec::new();
    for (r, outcome) in batch.into_iter().zip(outcomes) {
        let ack = job.as_ref().map(|_| {
            let (tx, rx) = oneshot::channel();
            acks.push(rx);
            JobAck(tx)
        });
        let ex = Exchange {
            outcome,
            tries,
            http_status: status,
            latency,
        };
        let _ = r.reply.send((ex, ack));
    }
    // The job is done once every lead stored its outcome; a lead that could
    // not (its task failed or stopped) leaves the job open for the next start.
    let Some(job_id) = job else {
        return;
    };
    let mut all = true;
    for rx in acks {
        all &= rx.await.is_ok();
    }
    if !all {
        tracing::warn!(account = %account, job = %job_id, "an async result was not applied to every lead; the job stays open and is resumed on the next start");
        return;
    }
    let op = WriteOp::JobState {
        account: account.clone(),
        job_id,
        state: JobState::Done,
        result: None,
    };
    if let Err(e) = writer.write(&ws, vec![op]).await {
        tracing::warn!(account = %account, error = %e, "could not update an async job's state");
    }
}

/// What waiting for a job's result gave.
pub(crate) struct Awaited {
    /// The result (`None`: nothing final before the deadline).
    pub outcome: Option<BatchOutcome>,
    pub tries: u32,
    pub http_status: Option<u16>,
}

/// Waits for a submitted job's result: a callback handed over by `hub`, or
/// a poll every `poll_interval` (the first one at once when `poll_first`),
/// until `deadline`. With `poll_first`, at least one poll is made even past
/// the deadline (a job resumed after a restart may have finished long ago).
pub(crate) async fn await_result(
    client: &ProviderClient,
    hub: &CallbackHub,
    job_id: &str,
    items: &[FindItem<'_>],
    deadline: Instant,
    poll_interval: Duration,
    poll_first: bool,
) -> Awaited {
    let account = client.id().to_string();
    let notify = hub.slot(&account, job_id);
    let mut tries = 0;
    let mut status = None;
    let mut result = None;
    let mut poll_now = poll_first;
    loop {
        if let Some(body) = hub.take(&account, job_id) {
            let resp = HttpResponse {
                status: 200,
                headers: Vec::new(),
                body,
            };
            let classified = client
                .finder
                .as_ref()
                .map(|f| f.classify_poll(items, &resp));
            if let Some(o) = classified.filter(|o| !is_pending(o)) {
                result = Some(o);
                break;
            }
        }
        if !poll_now {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let next_poll = (now + poll_interval).min(deadline);
            tokio::select! {
                _ = notify.notified() => continue,
                _ = tokio::time::sleep_until(next_poll) => {}
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        poll_now = false;
        let polled = client.poll(job_id, items).await;
        tries += polled.tries;
        status = polled.http_status.or(status);
        if !is_pending(&polled.outcome) && !is_transient(&polled.outcome) {
            result = Some(polled.outcome);
            break;
        }
    }
    hub.forget(&account, job_id);
    Awaited {
        outcome: result,
        tries,
        http_status: status,
    }
}

fn is_pending(o: &BatchOutcome) -> bool {
    matches!(
        o,
        BatchOutcome::All(Classified {
            outcome: ProviderOutcome::Pending { .. },
            ..
        })
    )
}

fn is_transient(o: &BatchOutcome) -> bool {
    matches!(
        o,
        BatchOutcome::All(Classified {
            outcome: ProviderOutcome::Transient | ProviderOutcome::RateLimited { .. },
            ..
        })
    )
}

/// One outcome per item.
pub(crate) fn spread(o: BatchOutcome, n: usize) -> Vec<Classified> {
    match o {
        BatchOutcome::All(c) => vec![c; n],
        BatchOutcome::Each(mut cs) => {
            cs.resize_with(n, || {
                Classified::new(
                    ProviderOutcome::Transient,
                    "the provider's answer had no entry for this lead",
                )
            });
            cs
        }
    }
}
