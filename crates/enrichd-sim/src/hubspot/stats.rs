//! What the HubSpot simulator observed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which quota a request draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Bucket {
    /// The rolling ten-secondly limit (and the daily one).
    General,
    /// CRM search: the per-second limit (and the daily one), exempt from the ten-secondly one.
    Search,
    /// v4 associations: exempt from the ten-secondly limit, counted against the daily one.
    Exempt,
    /// OAuth pages and token endpoints: no API quota.
    Token,
    /// `/_sim/*` control calls.
    Sim,
}

/// One request as the simulator saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HsCall {
    /// Arrival, since server start.
    pub at: Duration,
    /// `"POST /crm/v3/objects/contacts/batch/update"` (ids replaced by `{id}`, property names by
    /// `{name}`).
    pub endpoint: String,
    pub status: u16,
    pub bucket: Bucket,
    /// Inputs of a batch request (1 for a single-object write, else 0).
    pub inputs: usize,
}

/// Counters and the call log.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HubSpotStats {
    /// Every request received, `/_sim` control calls included.
    pub requests: u64,
    /// Requests per endpoint (see [`HsCall::endpoint`]), any status.
    pub by_endpoint: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// 429s per `policyName` (`TEN_SECONDLY_ROLLING`, `SECONDLY`, `DAILY`; token-endpoint 429s
    /// from [`HubSpotFault::TokenRateLimited`](super::HubSpotFault) count as `TOKEN_ENDPOINT`).
    pub rate_limited: BTreeMap<String, u64>,
    /// Successful token grants per `grant_type`.
    pub token_grants: BTreeMap<String, u64>,
    /// Contacts/companies successfully written by the API (batch update inputs that succeeded,
    /// single PATCHes), whether or not a value changed.
    pub records_updated: u64,
    /// Property values in those successful writes.
    pub properties_written: u64,
    /// Automatic webhook delivery attempts: (HTTP status, or 0 for a connection error /
    /// timeout; number of events in the POST). Retries are separate entries;
    /// [`HubSpotSim::deliver`](super::HubSpotSim::deliver) calls are not recorded.
    pub webhook_deliveries: Vec<(u16, usize)>,
    /// Requests that were API calls (not `/_sim` control, not OAuth); see [`Self::api_calls`].
    pub api_requests: u64,
    /// The call log (omitted by `GET /_sim/stats` unless `?log=true`).
    #[serde(default)]
    pub log: Vec<HsCall>,
}

impl HubSpotStats {
    /// Requests to `endpoint` (`"POST /oauth/v1/token"`), any status.
    pub fn count(&self, endpoint: &str) -> u64 {
        self.by_endpoint.get(endpoint).copied().unwrap_or(0)
    }

    /// Max number of accepted (non-429) requests of `bucket` that arrived within any sliding
    /// window of length `window`.
    pub fn max_in_window(&self, bucket: Bucket, window: Duration) -> u32 {
        let mut t: Vec<Duration> = self
            .log
            .iter()
            .filter(|c| c.bucket == bucket && c.status != 429)
            .map(|c| c.at)
            .collect();
        t.sort_unstable();
        let w = window.max(Duration::from_nanos(1));
        let mut best = 0usize;
        let mut j = 0usize;
        for i in 0..t.len() {
            j = j.max(i);
            while j < t.len() && t[j] < t[i] + w {
                j += 1;
            }
            best = best.max(j - i);
        }
        best as u32
    }

    /// API calls: every request except `/_sim` control calls and OAuth (token/authorize).
    pub fn api_calls(&self) -> u64 {
        self.api_requests
    }

    /// 429s answered for `policy` (`"TEN_SECONDLY_ROLLING"`).
    pub fn limited(&self, policy: &str) -> u64 {
        self.rate_limited.get(policy).copied().unwrap_or(0)
    }
}
