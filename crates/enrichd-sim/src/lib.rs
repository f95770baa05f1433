//! # enrichd-sim: faithful simulators of the contact-data providers enrichd calls
//!
//! This crate simulates the outside world for enrichd's tests, benchmarks and demo: a
//! deterministic population of people ([`Population`]) and HTTP servers on loopback that
//! imitate the public APIs of FullEnrich, Apollo, Hunter, People Data Labs, ZeroBounce and
//! Prospeo ([`start`]). It deliberately does not depend on the `enrichd` crate: a client is
//! tested against the simulator exactly as it would be against the real provider, with the
//! base URL swapped ([`SimServer::base_url`]).
//!
//! Fidelity to the documented APIs is the point ("a simulator that is not faithful to
//! reference proves less"). Shapes, status codes, headers and bodies follow
//! `shared/reference/providers.md` (§1.1 FullEnrich, §1.2 Apollo, §1.3 Hunter, §1.4 PDL, §1.8
//! Prospeo, §1.12 ZeroBounce, §2). Where the reference is silent or unverified, each provider
//! module says which shape was chosen. Provider quirks are kept on purpose: Hunter answers 403
//! for a rate limit and 429 for exhausted credits; Prospeo answers "not found" with HTTP 400
//! `NO_MATCH`; ZeroBounce answers a bad key or an empty balance with HTTP 200; FullEnrich is
//! asynchronous (submit, poll or webhook) and signs webhooks with HMAC-SHA1; PDL returns
//! LinkedIn URLs without a scheme and lower-case values; Apollo returns `http://` LinkedIn URLs.
//!
//! ## The population
//! [`Population::generate`]`(seed, size)` builds `size` people at about `size / 20` companies
//! (US about half, then GB, DE, FR, CA, ES, NL, AU), each with a unique
//! (first, last, domain), a unique work email following the company's email pattern, a unique
//! personal webmail address, a valid E.164 mobile for their country and a unique canonical
//! LinkedIn URL. About 10% of company domains are catch-all. [`Population::email_truth`] is
//! what a mailbox check would reveal. The same seed always yields the same population.
//!
//! ## The quality model
//! Each simulator has a hidden [`ProviderProfile`]: per channel (and optionally per segment,
//! country or seniority) a [`Quality`] with
//! * `coverage`: P(the provider holds a value for this person and channel);
//! * `accuracy`: P(that value is the true one), otherwise a plausible wrong value (another
//!   email pattern at the right domain, which ZeroBounce calls invalid; another phone of the
//!   same country; another slug), never someone else's true value;
//! * `verified_share` / `false_verified_share`: which status word the provider attaches
//!   (verified/deliverable vs probable/unknown; catch-all domains always get the catch-all
//!   word).
//!
//! Every decision is a hash of (population seed, provider name, person, channel, purpose), so
//! a provider's knowledge is fixed and independent of other providers and of call order:
//! [`ProviderProfile::knows`] tells a test exactly what a simulator will answer. A provider
//! "has a record" for a person when it holds at least one channel; otherwise it answers its
//! not-found shape. Defaults ([`ProviderProfile::default_for`]):
//!
//! | provider | work email | personal email | phone | LinkedIn |
//! |---|---|---|---|---|
//! | FullEnrich | 0.88 / 0.96 | 0.55 / 0.92 | 0.65 / 0.92 (DE 0.35, FR 0.40) | echo of the input |
//! | Apollo | 0.80 / 0.90 | 0.30 / 0.85 (on request, not GDPR countries) | async, not simulated | 0.92 / 0.97 |
//! | Hunter | 0.70 / 0.92 | – | – | – |
//! | PDL | 0.45 / 0.80 (no status) | 0.60 / 0.85 | 0.55 / 0.80 (c-suite 0.75) | 0.95 / 0.97 |
//! | Prospeo | 0.80 / 0.93 | – | 0.45 / 0.90 | 0.85 / 0.97 |
//! | ZeroBounce | verifier only | | | |
//!
//! (coverage / accuracy.)
//!
//! ## The servers
//! [`start`] binds `127.0.0.1:0`. Every API request goes through the same pipeline: route,
//! auth (the provider's own 401 shape), a fixed-window rate limiter per (API key, window)
//! counting at arrival ([`SimOptions::limits`], default = the documented limits), latency
//! (deterministic jitter), injected faults ([`Fault`]: a status with the provider's body, a
//! truncated body, a delay, the rate-limit / out-of-credits / auth answers, Hunter's 202),
//! then the provider logic with credits ([`SimOptions::credits`]; when the balance cannot
//! cover a charge the provider's out-of-credits answer is sent and nothing is billed).
//! [`Stats`] records everything (per endpoint and status, credits, rate-limited answers, max
//! in flight, webhook deliveries, a call log with the persons and channels each call was
//! about). Each server also answers `GET /_sim/stats`, `POST /_sim/stats/reset`,
//! `POST /_sim/faults` (a [`Fault`] as JSON), `DELETE /_sim/faults`, and `GET|PUT
//! /_sim/credits` (`{"credits": n|null}`) outside the API prefix, for cross-process tests.
//!
//! ## HubSpot
//! [`hubspot::start_hubspot`] serves a stateful simulated HubSpot portal (OAuth with PKCE and
//! refresh, CRM v3 contacts/companies list, search, batch read/update, v4 associations, the
//! Properties API, rolling rate limits, signed webhooks) over
//! [`hubspot::HubSpotData::from_population`]; see the [`hubspot`] module. The `enrichd-sim`
//! binary (`enrichd-sim hubspot --contacts N …`) runs it in its own process.
//!
//! ## Salesforce
//! [`salesforce::start_salesforce`] serves a stateful simulated Salesforce org on two hosts, a
//! login host (OAuth web-server flow with PKCE, refresh with optional rotation, JWT bearer
//! verified with RS256, revoke) and an instance host (SOQL query/queryAll with query locators
//! over a (SystemModstamp, Id) index, describe, single PATCH, sObject Collections, Bulk API 2.0
//! ingest, `Sforce-Limit-Info` and a rolling daily allocation, Lead assignment rules), with
//! Outbound Messages (SOAP, acknowledged or redelivered) and a simulated clock, over
//! [`salesforce::SalesforceData::from_population`]; see the [`salesforce`] module. The binary
//! runs it with `enrichd-sim salesforce --leads N …`.
//!
//! ## How tests use it
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use enrichd_sim::*;
//! let pop = Arc::new(Population::generate(42, 1_000));
//! let opts = SimOptions::defaults(ProviderKind::Hunter).with_credits(Some(100));
//! let hunter = start(ProviderKind::Hunter, pop.clone(), opts).await?;
//! // point the client at hunter.base_url() with hunter.api_key(), run the code under test,
//! // then compare what it stored with pop.person(i).truth(SimChannel::WorkEmail) and
//! // with what the provider knew:
//! let p = pop.person(0);
//! let _known = hunter.options().profile.knows(&pop, hunter.name(), p.index, SimChannel::WorkEmail);
//! let stats = hunter.stats();
//! assert!(stats.max_in_window(std::time::Duration::from_secs(1)) <= 15);
//! hunter.shutdown().await;
//! # Ok(()) }
//! ```

mod hash;
pub mod hubspot;
mod names;
mod population;
mod providers;
mod quality;
pub mod salesforce;
mod server;
mod util;

pub use population::{
    CATCH_ALL_SHARE, EmailTruth, Person, Population, SimChannel, human_phone, is_webmail_domain,
    linkedin_slug, normalize_company, normalize_domain,
};
pub use providers::fullenrich::signature as fullenrich_signature;
pub use quality::{Knowledge, ProviderProfile, Quality, SegmentField, SegmentOverride, Word};
pub use server::{
    CallRecord, Fault, FaultKind, FaultScope, ProviderKind, SimOptions, SimServer, Stats, start,
};
