//! Process-wide metrics, exposed in the Prometheus text format (0.0.4) by
//! [`Metrics::render`] (the daemon serves it at `GET /metrics`).
//!
//! One registry per process ([`metrics()`]), reachable without plumbing:
//! the HTTP clients count every try where they send it, the engine counts
//! the credits it charges, the webhook handler counts deliveries, and the
//! daemon sets the gauges (queue depth, leads by status) on each refresh.
//!
//! Families (in the order they are rendered):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `enrichd_api_requests_total` | counter | `api`, `endpoint`, `status` |
//! | `enrichd_rate_limited_total` | counter | `api`, `policy` |
//! | `enrichd_limiter_wait_seconds_total` | counter | `api` |
//! | `enrichd_limiter_wait_seconds` | histogram | `api` |
//! | `enrichd_limiter_held_back_total` | counter | `api` |
//! | `enrichd_credits_charged_total` | counter | `workspace` |
//! | `enrichd_webhook_deliveries_total` | counter | `crm`, `outcome`, `reason` |
//! | `enrichd_webhook_events_total` | counter | `crm`, `outcome` |
//! | `enrichd_queue_depth` | gauge | `workspace`, `kind`, `state` |
//! | `enrichd_leads` | gauge | `workspace`, `status` |
//!
//! Labels never carry a secret: requests are named by their secret-free
//! endpoint label (a path template, never a URL), and every other label is
//! one of a few fixed words or a configured id. A label whose value is
//! empty is left out of the sample (Prometheus reads an empty label as an
//! absent one), e.g. `reason` on accepted webhook deliveries.
//!
//! Each family is one `Mutex` over a map from its label values to the
//! value; an increment takes it once and allocates one key string.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the limiter wait histogram's buckets.
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide registry.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Why a webhook delivery was refused (a low-cardinality label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Signature missing, malformed or not matching (`401`).
    Signature,
    /// Timestamp missing, unreadable, too old or in the future (`401`).
    Timestamp,
    /// No portal (so no secret) is configured (`401`).
    NoPortal,
    /// Authenticated, but the body is not an array of events (`400`).
    Malformed,
    /// The events could not be recorded (`503`, the CRM retries).
    Store,
    /// Salesforce: the URL token is missing or matches no workspace (`401`).
    Token,
    /// Salesforce: the message is from another organisation than the one
    /// connected (`403`).
    Organization,
    /// Salesforce: the workspace has no connected organisation yet (`503`).
    NotConnected,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Signature => "signature",
            Rejection::Timestamp => "timestamp",
            Rejection::NoPortal => "no_portal",
            Rejection::Malformed => "malformed",
            Rejection::Store => "store",
            Rejection::Token => "token",
            Rejection::Organization => "organization",
            Rejection::NotConnected => "not_connected",
        }
    }
}

/// The gauge families the daemon sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// `enrichd_queue_depth{workspace, kind, state}`.
    QueueDepth,
    /// `enrichd_leads{workspace, status}`.
    Leads,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

struct Desc {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
}

/// Label values → `T`, keyed by an unambiguous encoding of the values (so
/// a lookup allocates one string, not one per label).
struct Samples<T> {
    desc: Desc,
    map: Mutex<BTreeMap<String, (Vec<String>, T)>>,
}

impl<T: Clone> Samples<T> {
    fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
    ) -> Self {
        Samples {
            desc: Desc {
                name,
                help,
                kind,
                labels,
            },
            map: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (Vec<String>, T)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arity_ok(&self, n: usize) -> bool {
        let ok = n == self.desc.labels.len();
        debug_assert!(
            ok,
            "{}: {n} label values for {:?}",
            self.desc.name, self.desc.labels
        );
        ok
    }

    /// Applies `f` to the sample of `labels`, created with `init` if new.
    fn with<S: AsRef<str>>(&self, labels: &[S], init: impl FnOnce() -> T, f: impl FnOnce(&mut T)) {
        if !self.arity_ok(labels.len()) {
            return;
        }
        let k = key(labels);
        let mut map = self.lock();
        match map.get_mut(&k) {
            Some((_, v)) => f(v),
            None => {
                let mut v = init();
                f(&mut v);
                map.insert(k, (owned(labels), v));
            }
        }
    }

    fn get<S: AsRef<str>>(&self, labels: &[S]) -> Option<T> {
        self.lock().get(&key(labels)).map(|(_, v)| v.clone())
    }

    /// Every sample, sorted by label values.
    fn snapshot(&self) -> Vec<(Vec<String>, T)> {
        let mut rows: Vec<(Vec<String>, T)> = self.lock().values().cloned().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }
}

type Series = Samples<f64>;

impl Series {
    fn add<S: AsRef<str>>(&self, labels: &[S], by: f64) {
        // Counters only go up.
        if self.desc.kind == Kind::Counter && (by.is_nan() || by <= 0.0) {
            return;
        }
        self.with(labels, || 0.0, |v| *v += by);
    }

    fn set<S: AsRef<str>>(&self, labels: &[S], to: f64) {
        self.with(labels, || 0.0, |v| *v = to);
    }

    /// Replaces every sample: label sets not in `rows` disappear.
    fn replace<R, S>(&self, rows: impl IntoIterator<Item = (R, f64)>)
    where
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        let mut fresh = BTreeMap::new();
        for (labels, v) in rows {
            let labels = labels.as_ref();
            if self.arity_ok(labels.len()) {
                fresh.insert(key(labels), (owned(labels), v));
            }
        }
        *self.lock() = fresh;
    }

    /// Sum over the samples whose labels match every `(name, value)`.
    fn sum(&self, matching: &[(&str, &str)]) -> f64 {
        let idx: Option<Vec<(usize, &str)>> = matching
            .iter()
            .map(|(n, v)| {
                self.desc
                    .labels
                    .iter()
                    .position(|l| l == n)
                    .map(|i| (i, *v))
            })
            .collect();
        let Some(idx) = idx else {
            return 0.0;
        };
        self.lock()
            .values()
            .filter(|(labels, _)| idx.iter().all(|(i, v)| labels[*i] == *v))
            .map(|(_, v)| *v)
            .sum()
    }

    fn render(&self, out: &mut String) {
        header(out, &self.desc);
        for (labels, v) in self.snapshot() {
            out.push_str(self.desc.name);
            write_labels(out, self.desc.labels, &labels, None);
            out.push(' ');
            write_value(out, v);
            out.push('\n');
        }
    }
}

#[derive(Clone)]
struct Hist {
    /// Per bucket (not cumulative; cumulated when rendered).
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

struct Histogram {
    samples: Samples<Hist>,
    bounds: &'static [f64],
}

impl Histogram {
    fn observe<S: AsRef<str>>(&self, labels: &[S], x: f64) {
        let n = self.bounds.len();
        let slot = self.bounds.iter().position(|b| x <= *b).unwrap_or(n);
        self.samples.with(
            labels,
            || Hist {
                buckets: vec![0; n + 1],
                sum: 0.0,
                count: 0,
            },
            |h| {
                h.buckets[slot] += 1;
                h.sum += x;
                h.count += 1;
            },
        );
    }

    fn render(&self, out: &mut String) {
        let d = &self.samples.desc;
        header(out, d);
        for (labels, h) in self.samples.snapshot() {
            let mut cumulative = 0;
            let les = self
                .bounds
                .iter()
                .map(|b| fmt_value(*b))
                .chain(["+Inf".into()]);
            for (le, n) in les.zip(&h.buckets) {
                cumulative += n;
                let _ = write!(out, "{}_bucket", d.name);
                write_labels(out, d.labels, &labels, Some(&le));
                let _ = writeln!(out, " {cumulative}");
            }
            let _ = write!(out, "{}_sum", d.name);
            write_labels(out, d.labels, &labels, None);
            out.push(' ');
            write_value(out, h.sum);
            out.push('\n');
            let _ = write!(out, "{}_count", d.name);
            write_labels(out, d.labels, &labels, None);
            let _ = writeln!(out, " {}", h.count);
        }
    }
}

/// The registry. [`metrics()`] is the process's; [`Metrics::new`] makes a
/// private one (tests).
pub struct Metrics {
    api_requests: Series,
    rate_limited: Series,
    limiter_wait: Series,
    limiter_wait_hist: Histogram,
    limiter_held_back: Series,
    credits_charged: Series,
    webhook_deliveries: Series,
    webhook_events: Series,
    queue_depth: Series,
    leads: Series,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            api_requests: Series::new(
                "enrichd_api_requests_total",
                "HTTP requests sent to provider and CRM APIs, every try counted, by API (provider account or CRM), endpoint and HTTP status (\"error\": no answer).",
                Kind::Counter,
                &["api", "endpoint", "status"],
            ),
            rate_limited: Series::new(
                "enrichd_rate_limited_total",
                "Rate-limit answers (HTTP 429) received, by API and policy (HubSpot's policyName; \"429\" for providers).",
                Kind::Counter,
                &["api", "policy"],
            ),
            limiter_wait: Series::new(
                "enrichd_limiter_wait_seconds_total",
                "Time spent waiting on enrichd's own rate limiter before sending, by API.",
                Kind::Counter,
                &["api"],
            ),
            limiter_wait_hist: Histogram {
                samples: Samples::new(
                    "enrichd_limiter_wait_seconds",
                    "Wait on enrichd's own rate limiter per request try, by API.",
                    Kind::Histogram,
                    &["api"],
                ),
                bounds: WAIT_BUCKETS,
            },
            limiter_held_back: Series::new(
                "enrichd_limiter_held_back_total",
                "Requests not sent because enrichd's own limiter would have held them longer than max_retry_wait (the provider is skipped for now), by API.",
                Kind::Counter,
                &["api"],
            ),
            credits_charged: Series::new(
                "enrichd_credits_charged_total",
                "Credits charged for usable values stored, by workspace.",
                Kind::Counter,
                &["workspace"],
            ),
            webhook_deliveries: Series::new(
                "enrichd_webhook_deliveries_total",
                "Webhook deliveries received, by CRM, outcome (accepted, rejected) and reason for a rejection (signature, timestamp, no_portal, malformed, store).",
                Kind::Counter,
                &["crm", "outcome", "reason"],
            ),
            webhook_events: Series::new(
                "enrichd_webhook_events_total",
                "Events in accepted webhook deliveries, by CRM and outcome (recorded, duplicate, rejected).",
                Kind::Counter,
                &["crm", "outcome"],
            ),
            queue_depth: Series::new(
                "enrichd_queue_depth",
                "Jobs in the queue, by workspace, kind and state.",
                Kind::Gauge,
                &["workspace", "kind", "state"],
            ),
            leads: Series::new(
                "enrichd_leads",
                "Leads by workspace and enrichment status.",
                Kind::Gauge,
                &["workspace", "status"],
            ),
        }
    }

    // --- Hooks --------------------------------------------------------------

    /// One HTTP try: `status` is `None` when no answer came back (timeout,
    /// connection failure, answer cut off).
    pub fn api_request(&self, api: &str, endpoint: &str, status: Option<u16>) {
        let mut buf = [0u8; 5];
        let status = match status {
            Some(s) => status_text(s, &mut buf),
            None => "error",
        };
        self.api_requests.add(&[api, endpoint, status], 1.0);
    }

    /// A rate-limit answer from `api`, under the API's `policy` name.
    pub fn rate_limited(&self, api: &str, policy: &str) {
        self.rate_limited.add(&[api, policy], 1.0);
    }

    /// Time one try spent waiting on our own limiter (zero counts too: the
    /// histogram's count is the number of tries that took the limiter).
    pub fn limiter_waited(&self, api: &str, waited: Duration) {
        let s = waited.as_secs_f64();
        self.limiter_wait.add(&[api], s);
        self.limiter_wait_hist.observe(&[api], s);
    }

    /// A request our limiter would have held too long, so it was not sent.
    pub fn limiter_held_back(&self, api: &str) {
        self.limiter_held_back.add(&[api], 1.0);
    }

    /// Credits charged in `workspace` (a charge actually taken).
    pub fn credits_charged(&self, workspace: &str, credits: i64) {
        self.credits_charged.add(&[workspace], credits as f64);
    }

    /// A delivery acknowledged with 200 (its events recorded).
    pub fn webhook_accepted(&self, crm: &str) {
        self.webhook_deliveries.add(&[crm, "accepted", ""], 1.0);
    }

    /// A delivery refused, and why.
    pub fn webhook_rejected(&self, crm: &str, why: Rejection) {
        self.webhook_deliveries
            .add(&[crm, "rejected", why.as_str()], 1.0);
    }

    /// The events of an accepted delivery: newly recorded, already recorded
    /// (redelivery), and skipped (malformed, unknown or untrusted portal).
    pub fn webhook_events(&self, crm: &str, recorded: u64, duplicate: u64, rejected: u64) {
        for (outcome, n) in [
            ("recorded", recorded),
            ("duplicate", duplicate),
            ("rejected", rejected),
        ] {
            self.webhook_events.add(&[crm, outcome], n as f64);
        }
    }

    // --- Gauges -------------------------------------------------------------

    fn gauge(&self, family: Gauge) -> &Series {
        match family {
            Gauge::QueueDepth => &self.queue_depth,
            Gauge::Leads => &self.leads,
        }
    }

    /// Sets one sample of a gauge family; `labels` in the family's order.
    pub fn set_gauge(&self, family: Gauge, labels: &[&str], value: f64) {
        self.gauge(family).set(labels, value);
    }

    /// Replaces every sample of a gauge family: label sets absent from
    /// `rows` disappear from the output.
    pub fn replace_gauge<R, S>(&self, family: Gauge, rows: impl IntoIterator<Item = (R, f64)>)
    where
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        self.gauge(family).replace(rows);
    }

    pub fn set_queue_depth(&self, workspace: &str, kind: &str, state: &str, n: u64) {
        self.queue_depth.set(&[workspace, kind, state], n as f64);
    }

    /// The whole queue: `(workspace, kind, state, jobs)` rows.
    pub fn replace_queue_depth<W, K, S>(&self, rows: impl IntoIterator<Item = (W, K, S, u64)>)
    where
        W: AsRef<str>,
        K: AsRef<str>,
        S: AsRef<str>,
    {
        self.queue_depth
            .replace(rows.into_iter().map(|(w, k, s, n)| {
                (
                    [
                        w.as_ref().to_string(),
                        k.as_ref().to_string(),
                        s.as_ref().to_string(),
                    ],
                    n as f64,
                )
            }));
    }

    pub fn set_leads(&self, workspace: &str, status: &str, n: u64) {
        self.leads.set(&[workspace, status], n as f64);
    }

    /// Every workspace's leads: `(workspace, status, leads)` rows.
    pub fn replace_leads<W, S>(&self, rows: impl IntoIterator<Item = (W, S, u64)>)
    where
        W: AsRef<str>,
        S: AsRef<str>,
    {
        self.leads.replace(
            rows.into_iter()
                .map(|(w, s, n)| ([w.as_ref().to_string(), s.as_ref().to_string()], n as f64)),
        );
    }

    // --- Reading --------------------------------------------------------------

    fn series(&self) -> [&Series; 9] {
        [
            &self.api_requests,
            &self.rate_limited,
            &self.limiter_wait,
            &self.limiter_held_back,
            &self.credits_charged,
            &self.webhook_deliveries,
            &self.webhook_events,
            &self.queue_depth,
            &self.leads,
        ]
    }

    /// The value of one sample: `name` is a family name (or the histogram's
    /// `_count` / `_sum`), `labels` its label values in the family's order
    /// (`""` for a label left out). `None` when never set.
    pub fn value(&self, name: &str, labels: &[&str]) -> Option<f64> {
        if let Some(s) = self.series().into_iter().find(|s| s.desc.name == name) {
            return s.get(labels);
        }
        let h = &self.limiter_wait_hist.samples;
        let part = name.strip_prefix(h.desc.name)?;
        let hist = h.get(labels)?;
        match part {
            "_count" => Some(hist.count as f64),
            "_sum" => Some(hist.sum),
            _ => None,
        }
    }

    /// [`Metrics::value`], 0 when never set (counters start at zero).
    pub fn counter_value(&self, name: &str, labels: &[&str]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// The sum of a family's samples whose labels have the given values,
    /// e.g. `("enrichd_api_requests_total", &[("api", "apollo"), ("status",
    /// "200")])` over every endpoint. 0 for an unknown family or label.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.series()
            .into_iter()
            .find(|s| s.desc.name == name)
            .map_or(0.0, |s| s.sum(matching))
    }

    /// Every family in the text exposition format 0.0.4: `# HELP` and
    /// `# TYPE` lines, then the samples sorted by label values. Families
    /// always come in the same order, with their header even when empty.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.api_requests.render(&mut out);
        self.rate_limited.render(&mut out);
        self.limiter_wait.render(&mut out);
        self.limiter_wait_hist.render(&mut out);
        self.limiter_held_back.render(&mut out);
        self.credits_charged.render(&mut out);
        self.webhook_deliveries.render(&mut out);
        self.webhook_events.render(&mut out);
        self.queue_depth.render(&mut out);
        self.leads.render(&mut out);
        out
    }
}

/// Length-prefixed label values: distinct value lists never share a key.
fn key<S: AsRef<str>>(labels: &[S]) -> String {
    let mut k = String::with_capacity(labels.iter().map(|l| l.as_ref().len() + 3).sum());
    for l in labels {
        let l = l.as_ref();
        let _ = write!(k, "{}:", l.len());
        k.push_str(l);
    }
    k
}

fn owned<S: AsRef<str>>(labels: &[S]) -> Vec<String> {
    labels.iter().map(|l| l.as_ref().to_string()).collect()
}

/// An HTTP status as text without allocating.
fn status_text(s: u16, buf: &mut [u8; 5]) -> &str {
    let mut n = s;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("error")
}

fn header(out: &mut String, d: &Desc) {
    let _ = writeln!(
        out,
        "# HELP {} {}\n# TYPE {} {}",
        d.name,
        escape_help(d.help),
        d.name,
        d.kind.as_str()
    );
}

/// `{a="x",b="y"}` (plus `le` for a histogram bucket); empty values are
/// left out, and nothing is written when no label remains.
fn write_labels(out: &mut String, names: &[&str], values: &[String], le: Option<&str>) {
    let mut first = true;
    let pairs = names
        .iter()
        .zip(values)
        .map(|(n, v)| (*n, v.as_str()))
        .chain(le.map(|l| ("le", l)))
        .filter(|(_, v)| !v.is_empty());
    for (n, v) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(n);
        out.push_str("=\"");
        escape_label_into(out, v);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help text escapes backslash and line feed.
fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn write_value(out: &mut String, v: f64) {
    out.push_str(&fmt_value(v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_registry_renders_every_family_header_in_order() {
        let m = Metrics::new();
        let text = m.render();
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(
            types,
            [
                "enrichd_api_requests_total counter",
                "enrichd_rate_limited_total counter",
                "enrichd_limiter_wait_seconds_total counter",
                "enrichd_limiter_wait_seconds histogram",
                "enrichd_limiter_held_back_total counter",
                "enrichd_credits_charged_total counter",
                "enrichd_webhook_deliveries_total counter",
                "enrichd_webhook_events_total counter",
                "enrichd_queue_depth gauge",
                "enrichd_leads gauge",
            ]
        );
        // Each TYPE right after its HELP.
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let help = pair[0].strip_prefix("# HELP ").expect("HELP line");
            let ty = pair[1].strip_prefix("# TYPE ").expect("TYPE line");
            assert_eq!(help.split(' ').next(), ty.split(' ').next());
        }
    }

    #[test]
    fn counters_add_up_and_render_sorted() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.api_request("pdl", "GET /v5/person/enrich", Some(200));
        }
        m.api_request("apollo", "POST /people/match", Some(429));
        m.api_request("apollo", "POST /people/match", Some(200));
        m.api_request("apollo", "POST /people/match", None);
        m.api_request("apollo", "POST /people/match", Some(200));
        m.credits_charged("w1", 10);
        m.credits_charged("w1", 1);
        m.credits_charged("w1", 0);
        m.credits_charged("w1", -5);
        assert_eq!(
            m.value(
                "enrichd_api_requests_total",
                &["apollo", "POST /people/match", "200"]
            ),
            Some(2.0)
        );
        assert_eq!(
            m.sum("enrichd_api_requests_total", &[("api", "apollo")]),
            4.0
        );
        assert_eq!(
            m.sum("enrichd_api_requests_total", &[("status", "200")]),
            5.0
        );
        assert_eq!(m.sum("enrichd_api_requests_total", &[("nope", "x")]), 0.0);
        assert_eq!(
            m.counter_value("enrichd_credits_charged_total", &["w1"]),
            11.0,
            "zero and negative amounts never move a counter"
        );
        assert_eq!(m.value("enrichd_credits_charged_total", &["w2"]), None);

        let text = m.render();
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("enrichd_api_requests_total"))
            .collect();
        assert_eq!(
            samples,
            [
                r#"enrichd_api_requests_total{api="apollo",endpoint="POST /people/match",status="200"} 2"#,
                r#"enrichd_api_requests_total{api="apollo",endpoint="POST /people/match",status="429"} 1"#,
                r#"enrichd_api_requests_total{api="apollo",endpoint="POST /people/match",status="error"} 1"#,
                r#"enrichd_api_requests_total{api="pdl",endpoint="GET /v5/person/enrich",status="200"} 3"#,
            ]
        );
        assert!(text.contains("\nenrichd_credits_charged_total{workspace=\"w1\"} 11\n"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let m = Metrics::new();
        m.set_leads("a\\b\"c\nd", "full", 2);
        let text = m.render();
        assert!(
            text.contains("enrichd_leads{workspace=\"a\\\\b\\\"c\\nd\",status=\"full\"} 2\n"),
            "{text}"
        );
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
        // Every sample stays on one line.
        assert!(
            text.lines()
                .all(|l| l.starts_with('#') || l.starts_with("enrichd_"))
        );
    }

    #[test]
    fn keys_are_unambiguous() {
        assert_ne!(key(&["a:b", "c"]), key(&["a", "b:c"]));
        assert_ne!(key(&["1:a", ""]), key(&["", "1:a"]));
        let m = Metrics::new();
        m.rate_limited("a:b", "c");
        m.rate_limited("a", "b:c");
        assert_eq!(
            m.value("enrichd_rate_limited_total", &["a:b", "c"]),
            Some(1.0)
        );
        assert_eq!(
            m.value("enrichd_rate_limited_total", &["a", "b:c"]),
            Some(1.0)
        );
    }

    #[test]
    fn replace_drops_vanished_label_sets() {
        let m = Metrics::new();
        m.set_queue_depth("w", "enrich", "ready", 5);
        m.replace_queue_depth([("w", "enrich", "running", 2), ("w", "sync", "ready", 1)]);
        assert_eq!(
            m.value("enrichd_queue_depth", &["w", "enrich", "ready"]),
            None
        );
        let text = m.render();
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("enrichd_queue_depth"))
            .collect();
        assert_eq!(
            samples,
            [
                r#"enrichd_queue_depth{workspace="w",kind="enrich",state="running"} 2"#,
                r#"enrichd_queue_depth{workspace="w",kind="sync",state="ready"} 1"#,
            ]
        );
        m.replace_queue_depth(Vec::<(String, String, String, u64)>::new());
        assert!(!m.render().contains("\nenrichd_queue_depth{"));

        // Gauges go down as well as up; the generic API is the same thing.
        m.set_leads("w", "full", 7);
        m.set_gauge(Gauge::Leads, &["w", "full"], 3.0);
        assert_eq!(m.value("enrichd_leads", &["w", "full"]), Some(3.0));
        m.replace_gauge(
            Gauge::Leads,
            [(vec!["w".to_string(), "partial".to_string()], 4.0)],
        );
        assert_eq!(m.value("enrichd_leads", &["w", "full"]), None);
        assert_eq!(m.value("enrichd_leads", &["w", "partial"]), Some(4.0));
        m.replace_leads([("w", "empty", 9)]);
        assert_eq!(m.value("enrichd_leads", &["w", "partial"]), None);
        assert_eq!(m.value("enrichd_leads", &["w", "empty"]), Some(9.0));
    }

    #[test]
    fn webhook_outcomes_leave_out_an_empty_reason() {
        let m = Metrics::new();
        m.webhook_accepted("hubspot");
        m.webhook_rejected("hubspot", Rejection::Signature);
        m.webhook_rejected("hubspot", Rejection::Signature);
        m.webhook_events("hubspot", 3, 1, 0);
        let text = m.render();
        assert!(text.contains(
            "\nenrichd_webhook_deliveries_total{crm=\"hubspot\",outcome=\"accepted\"} 1\n"
        ));
        assert!(text.contains(
            "\nenrichd_webhook_deliveries_total{crm=\"hubspot\",outcome=\"rejected\",reason=\"signature\"} 2\n"
        ));
        assert!(
            text.contains(
                "\nenrichd_webhook_events_total{crm=\"hubspot\",outcome=\"recorded\"} 3\n"
            )
        );
        assert!(
            !text.contains("outcome=\"rejected\"} 0"),
            "a zero increment creates no sample"
        );
        assert_eq!(
            m.counter_value(
                "enrichd_webhook_deliveries_total",
                &["hubspot", "accepted", ""]
            ),
            1.0
        );
    }

    #[test]
    fn limiter_wait_is_a_counter_and_a_histogram() {
        let m = Metrics::new();
        m.limiter_waited("hubspot", Duration::ZERO);
        m.limiter_waited("hubspot", Duration::from_millis(250));
        m.limiter_waited("hubspot", Duration::from_secs(120));
        m.limiter_held_back("hubspot");
        let total = m.counter_value("enrichd_limiter_wait_seconds_total", &["hubspot"]);
        assert!((total - 120.25).abs() < 1e-9, "{total}");
        assert_eq!(
            m.value("enrichd_limiter_wait_seconds_count", &["hubspot"]),
            Some(3.0)
        );
        let text = m.render();
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("enrichd_limiter_wait_seconds_bucket"))
            .collect();
        assert_eq!(buckets.len(), WAIT_BUCKETS.len() + 1);
        assert_eq!(
            buckets[0],
            r#"enrichd_limiter_wait_seconds_bucket{api="hubspot",le="0.001"} 1"#
        );
        assert!(
            buckets.contains(&r#"enrichd_limiter_wait_seconds_bucket{api="hubspot",le="0.25"} 2"#)
        );
        assert!(
            buckets.contains(&r#"enrichd_limiter_wait_seconds_bucket{api="hubspot",le="60"} 2"#)
        );
        assert_eq!(
            buckets[WAIT_BUCKETS.len()],
            r#"enrichd_limiter_wait_seconds_bucket{api="hubspot",le="+Inf"} 3"#
        );
        assert!(text.contains("\nenrichd_limiter_wait_seconds_sum{api=\"hubspot\"} 120.25\n"));
        assert!(text.contains("\nenrichd_limiter_wait_seconds_count{api=\"hubspot\"} 3\n"));
        assert!(text.contains("\nenrichd_limiter_held_back_total{api=\"hubspot\"} 1\n"));
    }

    #[test]
    fn values_and_statuses_format() {
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(0.5), "0.5");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        let mut b = [0u8; 5];
        assert_eq!(status_text(200, &mut b), "200");
        assert_eq!(status_text(0, &mut b), "0");
        assert_eq!(status_text(65535, &mut b), "65535");
    }

    #[test]
    fn every_line_parses_as_exposition_text() {
        let m = Metrics::new();
        m.api_request("x", "GET /a", Some(200));
        m.limiter_waited("x", Duration::from_millis(3));
        m.set_queue_depth("w", "k", "s", 1);
        for line in m.render().lines() {
            if line.starts_with('#') {
                continue;
            }
            // name{labels} value
            let (series, value) = line.rsplit_once(' ').expect("value");
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
            let name = series.split('{').next().expect("name");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')));
            }
        }
    }
}
