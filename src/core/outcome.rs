//! The normalised outcome of a provider call. Every adapter maps the HTTP
//! status *and* the body to one of these (reference/providers.md §2): a 200
//! can mean "out of credits" (Findymail) and a 404 can mean "not found" (PDL)
//! or "still processing" (Apollo).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::value::ValueCandidate;

/// Provider spend in thousandths of the provider's own credit unit, so that
/// fractional prices add up exactly.
pub type MilliCredits = i64;

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderOutcome {
    /// The provider answered with values (possibly unusable ones; the
    /// usability rules decide). `provider_cost` is what the provider says it
    /// billed, when it says so.
    Found {
        values: Vec<ValueCandidate>,
        provider_cost: Option<MilliCredits>,
    },
    NotFound,
    /// Accepted but not finished (async providers, Hunter 202, Apollo
    /// `result_pending`). `job_id` is what to poll or match a callback with.
    Pending {
        job_id: String,
        retry_after: Option<Duration>,
    },
    OutOfCredits,
    RateLimited {
        retry_after: Option<Duration>,
    },
    ComplianceBlocked,
    AuthError,
    InvalidInput,
    /// 5xx, timeouts, connection errors, malformed bodies: may work later.
    Transient,
}

impl ProviderOutcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            ProviderOutcome::Found { .. } => OutcomeKind::Found,
            ProviderOutcome::NotFound => OutcomeKind::NotFound,
            ProviderOutcome::Pending { .. } => OutcomeKind::Pending,
            ProviderOutcome::OutOfCredits => OutcomeKind::OutOfCredits,
            ProviderOutcome::RateLimited { .. } => OutcomeKind::RateLimited,
            ProviderOutcome::ComplianceBlocked => OutcomeKind::ComplianceBlocked,
            ProviderOutcome::AuthError => OutcomeKind::AuthError,
            ProviderOutcome::InvalidInput => OutcomeKind::InvalidInput,
            ProviderOutcome::Transient => OutcomeKind::Transient,
        }
    }
}

/// An outcome with the human reason behind it (kept in the attempt audit and
/// shown to users), e.g. `HTTP 402 payment_required: "You have hit your
/// account maximum"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub outcome: ProviderOutcome,
    pub detail: String,
}

impl Classified {
    pub fn new(outcome: ProviderOutcome, detail: impl Into<String>) -> Self {
        Classified {
            outcome,
            detail: detail.into(),
        }
    }
}

/// The outcome of one provider attempt for one channel, as stored in the
/// audit. Extends the provider outcome kinds with the engine's verdicts on
/// values (`unusable`) and with attempts that were never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A usable value was found (and stored).
    Found,
    /// A value came back but failed the channel's bar (unverified, catch-all
    /// under the strict policy, invalid, do-not-call, malformed...).
    Unusable,
    NotFound,
    Pending,
    OutOfCredits,
    RateLimited,
    ComplianceBlocked,
    AuthError,
    InvalidInput,
    Transient,
    /// Not sent: the lead lacks the identity this provider needs.
    InsufficientIdentity,
}

impl OutcomeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Found => "found",
            OutcomeKind::Unusable => "unusable",
            OutcomeKind::NotFound => "not_found",
            OutcomeKind::Pending => "pending",
            OutcomeKind::OutOfCredits => "out_of_credits",
            OutcomeKind::RateLimited => "rate_limited",
            OutcomeKind::ComplianceBlocked => "compliance_blocked",
            OutcomeKind::AuthError => "auth_error",
            OutcomeKind::InvalidInput => "invalid_input",
            OutcomeKind::Transient => "transient",
            OutcomeKind::InsufficientIdentity => "insufficient_identity",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        use OutcomeKind::*;
        [
            Found,
            Unusable,
            NotFound,
            Pending,
            OutOfCredits,
            RateLimited,
            ComplianceBlocked,
            AuthError,
            InvalidInput,
            Transient,
            InsufficientIdentity,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Definitive answers about this (lead, channel, provider): asking again
    /// soon would give the same answer, so the waterfall moves on for good.
    /// The others (rate limited, out of credits, down, auth) mean "skip for
    /// now, retry the lead later".
    pub const fn is_definitive(self) -> bool {
        matches!(
            self,
            OutcomeKind::Found
                | OutcomeKind::Unusable
                | OutcomeKind::NotFound
                | OutcomeKind::ComplianceBlocked
                | OutcomeKind::InvalidInput
                | OutcomeKind::InsufficientIdentity
        )
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_split_into_definitive_and_temporary() {
        for k in [
            OutcomeKind::Found,
            OutcomeKind::Unusable,
            OutcomeKind::NotFound,
            OutcomeKind::Pending,
            OutcomeKind::OutOfCredits,
            OutcomeKind::RateLimited,
            OutcomeKind::ComplianceBlocked,
            OutcomeKind::AuthError,
            OutcomeKind::InvalidInput,
            OutcomeKind::Transient,
            OutcomeKind::InsufficientIdentity,
        ] {
            assert_eq!(OutcomeKind::parse(k.as_str()), Some(k));
        }
        assert!(!OutcomeKind::RateLimited.is_definitive());
        assert!(!OutcomeKind::OutOfCredits.is_definitive());
        assert!(!OutcomeKind::Transient.is_definitive());
        assert!(OutcomeKind::NotFound.is_definitive());
    }
}
