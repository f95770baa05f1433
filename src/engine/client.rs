//! Sends an adapter's requests for one provider account: limiter acquired for
//! every attempt, a timeout, bounded retries with backon on transient errors
//! and rate limits (honouring `Retry-After`), pauses learnt from the
//! provider's answers, and a breaker that stops calling an account that is
//! out of credits or refuses its key.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

use crate::core::outcome::{Classified, ProviderOutcome};
use crate::providers::def::Account;
use crate::providers::{
    AdapterError, BatchOutcome, FindItem, Finder, HttpRequest, HttpResponse, Method, Verifier,
    VerifyOutcome,
};

use super::limits::AccountLimiter;

/// Largest answer body read; a bigger one is treated as malformed.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// How long an account that ran out of credits or refused its key is left alone.
const BREAKER_COOLDOWN: Duration = Duration::from_secs(300);

/// Counters a run reports per account.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub transient: AtomicU64,
    pub limiter_wait_ms: AtomicU64,
}

/// The result of a call, with what it took.
#[derive(Debug, Clone)]
pub struct Exchange<T> {
    pub outcome: T,
    pub tries: u32,
    pub http_status: Option<u16>,
    pub latency: Duration,
}

pub struct ProviderClient {
    pub account: std::sync::Arc<Account>,
    pub finder: Option<std::sync::Arc<dyn Finder>>,
    pub verifier: Option<std::sync::Arc<dyn Verifier>>,
    pub limiter: AccountLimiter,
    pub stats: ClientStats,
    http: reqwest::Client,
    max_retry_wait: Duration,
    tripped: Mutex<Option<(Instant, Classified)>>,
}

/// Why no answer came back.
enum Sent {
    /// The request failed on the way (timeout, connection, oversized answer).
    Failed(String),
    /// The local limiter would hold it longer than we wait inline.
    NotNow(Duration),
}

/// The outcome of a request the limiter held back.
fn held_back(account: &str, wait: Duration) -> Classified {
    Classified::new(
        ProviderOutcome::RateLimited {
            retry_after: Some(wait),
        },
        format!(
            "not sent: {account}'s documented limit is used up for now (next slot in {} s)",
            wait.as_secs()
        ),
    )
}

/// Why an attempt should be retried.
struct RetryLater<T> {
    value: T,
    after: Option<Duration>,
}

impl ProviderClient {
    pub fn new(
        account: std::sync::Arc<Account>,
        http: reqwest::Client,
        headroom: f64,
        max_retry_wait: Duration,
    ) -> Result<Self, crate::providers::def::BuildError> {
        Ok(ProviderClient {
            finder: crate::providers::build_finder(&account)?,
            verifier: crate::providers::build_verifier(&account)?,
            limiter: AccountLimiter::new(&account.limits, headroom),
            stats: ClientStats::default(),
            http,
            max_retry_wait,
            tripped: Mutex::new(None),
            account,
        })
    }

    pub fn id(&self) -> &str {
        &self.account.id
    }

    /// The outcome every call gets while the breaker is open.
    fn breaker(&self) -> Option<Classified> {
        let t = self.tripped.lock().unwrap_or_else(|e| e.into_inner());
        t.as_ref()
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, c)| c.clone())
    }

    fn trip_on(&self, c: &Classified) {
        if matches!(
            c.outcome,
            ProviderOutcome::OutOfCredits | ProviderOutcome::AuthError
        ) {
            let mut t = self.tripped.lock().unwrap_or_else(|e| e.into_inner());
            let note = Classified::new(
                c.outcome.clone(),
                format!(
                    "{} (not called again for {} s)",
                    c.detail,
                    BREAKER_COOLDOWN.as_secs()
                ),
            );
            *t = Some((Instant::now() + BREAKER_COOLDOWN, note));
        }
    }

    /// One HTTP exchange under the limiter.
    async fn send(&self, req: &HttpRequest) -> Result<HttpResponse, Sent> {
        let waited = Instant::now();
        let permit = self.limiter.acquire(self.max_retry_wait).await;
        let metrics = crate::metrics::metrics();
        metrics.limiter_waited(&self.account.id, waited.elapsed());
        let _permit = permit.map_err(|wait| {
            metrics.limiter_held_back(&self.account.id);
            Sent::NotNow(wait)
        })?;
        self.stats
            .limiter_wait_ms
            .fetch_add(waited.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut rb = match req.method {
            Method::Get => self.http.get(&req.url),
            Method::Post => self.http.post(&req.url),
        }
        .timeout(self.account.timeout);
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| Sent::Failed(transport_error(&e, self.account.timeout)))?;
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let mut resp = resp;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(Sent::Failed(format!(
                            "answer larger than {} MB",
                            MAX_BODY / 1024 / 1024
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(Sent::Failed(transport_error(&e, self.account.timeout))),
            }
        }
        let resp = HttpResponse {
            status,
            headers,
            body,
        };
        self.learn_from_headers(&resp);
        Ok(resp)
    }

    /// An answer saying the quota is used up (in the provider's own header
    /// format, read by its adapter) pauses the account until the reset.
    fn learn_from_headers(&self, resp: &HttpResponse) {
        if let Some(wait) = self.finder.as_ref().and_then(|f| f.quota_pause(resp)) {
            self.limiter
                .pause_until(Instant::now() + wait.min(Duration::from_secs(3600)));
        }
    }

    /// Sends `req` with retries; `classify` turns an answer into `T`, and
    /// `retry` says whether (and after how long) `T` deserves another try.
    async fn execute<T: Clone>(
        &self,
        req: &HttpRequest,
        classify: impl Fn(&HttpResponse) -> T,
        transport: impl Fn(Sent) -> T,
        retry: impl Fn(&T) -> Option<Option<Duration>>,
    ) -> Exchange<T> {
        let started = Instant::now();
        let tries = AtomicU64::new(0);
        let status = Mutex::new(None);
        let attempt = || async {
            let value = match self.send(req).await {
                Ok(resp) => {
                    tries.fetch_add(1, Ordering::Relaxed);
                    self.count_try(req.endpoint, Some(resp.status));
                    *status.lock().unwrap_or_else(|e| e.into_inner()) = Some(resp.status);
                    classify(&resp)
                }
                Err(e) => {
                    if matches!(e, Sent::Failed(_)) {
                        tries.fetch_add(1, Ordering::Relaxed);
                        self.count_try(req.endpoint, None);
                    }
                    transport(e)
                }
            };
            match retry(&value) {
                Some(after) => Err(RetryLater { value, after }),
                None => Ok(value),
            }
        };
        let max_wait = self.max_retry_wait;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(20))
            .with_jitter()
            .with_max_times(self.account.max_retries as usize);
        let result = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &RetryLater<T>| e.after.is_none_or(|a| a <= max_wait))
            // Never re-arm a finished backoff (backon's `.adjust` gotcha):
            // only stretch a delay backon still intends to wait.
            .adjust(|e: &RetryLater<T>, next| next.map(|d| e.after.map_or(d, |a| d.max(a))))
            .notify(|e: &RetryLater<T>, d| {
                tracing::debug!(account = %self.account.id, endpoint = req.endpoint, retry_in_ms = d.as_millis() as u64, after = ?e.after, "retrying provider request");
            })
            .await;
        let outcome = match result {
            Ok(v) => v,
            Err(e) => e.value,
        };
        Exchange {
            outcome,
            tries: tries.load(Ordering::Relaxed) as u32,
            http_status: *status.lock().unwrap_or_else(|e| e.into_inner()),
            latency: started.elapsed(),
        }
    }

    /// Metrics of one HTTP try (`None`: no answer came back).
    fn count_try(&self, endpoint: &str, status: Option<u16>) {
        let metrics = crate::metrics::metrics();
        metrics.api_request(&self.account.id, endpoint, status);
        if status == Some(429) {
            metrics.rate_limited(&self.account.id, "429");
        }
    }

    fn unsent(&self, e: Sent) -> Classified {
        match e {
            Sent::Failed(msg) => Classified::new(ProviderOutcome::Transient, msg),
            Sent::NotNow(wait) => held_back(&self.account.id, wait),
        }
    }

    /// Records what an outcome teaches about the account (pauses, breaker).
    fn observe(&self, c: &Classified) {
        match &c.outcome {
            ProviderOutcome::RateLimited { retry_after } => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                let pause = retry_after.unwrap_or(Duration::from_secs(1));
                self.limiter
                    .pause_until(Instant::now() + pause.min(Duration::from_secs(86_400)));
            }
            ProviderOutcome::Transient => {
                self.stats.transient.fetch_add(1, Ordering::Relaxed);
            }
            ProviderOutcome::OutOfCredits | ProviderOutcome::AuthError => self.trip_on(c),
            _ => {}
        }
    }

    /// Asks a finder for `items` (one request; async providers answer `Pending`).
    pub async fn find(
        &self,
        items: &[FindItem<'_>],
        callback_url: Option<&str>,
    ) -> Exchange<BatchOutcome> {
        let Some(finder) = &self.finder else {
            return not_sent(Classified::new(
                ProviderOutcome::InvalidInput,
                format!("`{}` is not a finder", self.account.id),
            ));
        };
        if let Some(c) = self.breaker() {
            return not_sent(c);
        }
        let req = match finder.find_request(items, callback_url) {
            Ok(r) => r,
            Err(e) => return not_sent(adapter_error(e)),
        };
        let sync_pending = !finder.is_async();
        let ex = self
            .execute(
                &req,
                |resp| finder.classify_find(items, resp),
                |e| BatchOutcome::All(self.unsent(e)),
                |o| retry_hint(o, sync_pending),
            )
            .await;
        self.observe_batch(&ex.outcome);
        ex
    }

    /// Polls an async job.
    pub async fn poll(&self, job_id: &str, items: &[FindItem<'_>]) -> Exchange<BatchOutcome> {
        let Some((finder, req)) = self
            .finder
            .as_ref()
            .and_then(|f| Some((f, f.poll_request(job_id)?)))
        else {
            return not_sent(Classified::new(
                ProviderOutcome::Transient,
                format!("`{}` cannot be polled", self.account.id),
            ));
        };
        let ex = self
            .execute(
                &req,
                |resp| finder.classify_poll(items, resp),
                |e| BatchOutcome::All(self.unsent(e)),
                |o| retry_hint(o, false),
            )
            .await;
        self.observe_batch(&ex.outcome);
        ex
    }

    fn observe_batch(&self, o: &BatchOutcome) {
        match o {
            BatchOutcome::All(c) => self.observe(c),
            BatchOutcome::Each(cs) => cs.iter().for_each(|c| self.observe(c)),
        }
    }

    /// Asks a verifier about an email.
    pub async fn verify(&self, email: &str) -> Exchange<VerifyOutcome> {
        let Some(verifier) = &self.verifier else {
            return not_sent_verify(Classified::new(
                ProviderOutcome::InvalidInput,
                format!("`{}` is not a verifier", self.account.id),
            ));
        };
        if let Some(c) = self.breaker() {
            return not_sent_verify(c);
        }
        let req = match verifier.verify_request(email) {
            Ok(r) => r,
            Err(e) => return not_sent_verify(adapter_error(e)),
        };
        let ex = self
            .execute(
                &req,
                |resp| verifier.classify_verify(resp),
                |e| VerifyOutcome::Failed(self.unsent(e)),
                |o| match o {
                    VerifyOutcome::Failed(c) => retry_after_of(c, false),
                    VerifyOutcome::Checked { .. } => None,
                },
            )
            .await;
        if let VerifyOutcome::Failed(c) = &ex.outcome {
            self.observe(c);
        }
        ex
    }
}

fn not_sent(c: Classified) -> Exchange<BatchOutcome> {
    Exchange {
        outcome: BatchOutcome::All(c),
        tries: 0,
        http_status: None,
        latency: Duration::ZERO,
    }
}

fn not_sent_verify(c: Classified) -> Exchange<VerifyOutcome> {
    Exchange {
        outcome: VerifyOutcome::Failed(c),
        tries: 0,
        http_status: None,
        latency: Duration::ZERO,
    }
}

fn adapter_error(e: AdapterError) -> Classified {
    Classified::new(
        ProviderOutcome::InvalidInput,
        format!("request not sent: {e}"),
    )
}

fn retry_hint(o: &BatchOutcome, sync_pending: bool) -> Option<Option<Duration>> {
    match o {
        BatchOutcome::All(c) => retry_after_of(c, sync_pending),
        BatchOutcome::Each(_) => None,
    }
}

/// `Some(after)` when the outcome deserves another try: rate limits,
/// transient failures, and "still processing" from a synchronous API (Hunter
/// 202), which is answered by asking again.
fn retry_after_of(c: &Classified, sync_pending: bool) -> Option<Option<Duration>> {
    match &c.outcome {
        ProviderOutcome::RateLimited { retry_after } => Some(*retry_after),
        ProviderOutcome::Transient => Some(None),
        ProviderOutcome::Pending { retry_after, .. } if sync_pending => {
            Some(Some(retry_after.unwrap_or(Duration::from_secs(2))))
        }
        _ => None,
    }
}

fn transport_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {} s (timeout)", timeout.as_secs_f64())
    } else if e.is_connect() {
        "connection failed (provider unreachable)".to_string()
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the answer".to_string()
    } else {
        // reqwest's Display includes the URL, which may carry an API key.
        "request failed before an answer arrived".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_retried() {
        let c = |o| Classified::new(o, "");
        assert_eq!(
            retry_after_of(&c(ProviderOutcome::Transient), false),
            Some(None)
        );
        assert_eq!(
            retry_after_of(
                &c(ProviderOutcome::RateLimited {
                    retry_after: Some(Duration::from_secs(3))
                }),
                false
            ),
            Some(Some(Duration::from_secs(3)))
        );
        assert_eq!(retry_after_of(&c(ProviderOutcome::NotFound), false), None);
        assert_eq!(
            retry_after_of(&c(ProviderOutcome::OutOfCredits), false),
            None
        );
        let pending = c(ProviderOutcome::Pending {
            job_id: String::new(),
            retry_after: None,
        });
        assert_eq!(
            retry_after_of(&pending, false),
            None,
            "async jobs are polled, not retried"
        );
        assert!(
            retry_after_of(&pending, true).is_some(),
            "a sync API's 202 is asked again"
        );
    }
}
