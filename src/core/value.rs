//! Channel values: what a provider offered (a candidate) and what enrichd
//! keeps (a stored value with its Source).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::channel::Channel;

/// Milliseconds since the Unix epoch. Every stored time uses this, on both
/// databases, so the core never depends on a clock or a date library.
pub type UnixMillis = i64;

pub const DAY_MS: i64 = 86_400_000;

/// Who supplied a value: a provider id (`apollo`, `fullenrich`, ...) or `crm`
/// for a value that was already on the CRM record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Source(pub String);

impl Source {
    pub const CRM: &'static str = "crm";

    pub fn crm() -> Self {
        Source(Self::CRM.to_string())
    }
    pub fn provider(id: &str) -> Self {
        Source(id.to_string())
    }
    pub fn is_crm(&self) -> bool {
        self.0 == Self::CRM
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is known about a value's deliverability (emails) or validity (phones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// The provider or a verifier vouches for it (email deliverable, phone valid).
    Verified,
    /// The mail server accepts every address: deliverability unknown.
    CatchAll,
    /// No status given (e.g. PDL emails, Apollo `extrapolated`, a CRM value).
    Unknown,
    /// Known bad.
    Invalid,
}

impl Verification {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verification::Verified => "verified",
            Verification::CatchAll => "catch_all",
            Verification::Unknown => "unknown",
            Verification::Invalid => "invalid",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "verified" => Verification::Verified,
            "catch_all" => Verification::CatchAll,
            "unknown" => Verification::Unknown,
            "invalid" => Verification::Invalid,
            _ => return None,
        })
    }
}

/// A value as a provider returned it, before the usability rules ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueCandidate {
    pub channel: Channel,
    /// Raw text as returned (normalised later by the usability rules).
    pub value: String,
    pub verification: Verification,
    /// Phones: flagged do-not-call by the provider.
    #[serde(default)]
    pub do_not_call: bool,
    /// The provider's own status word, kept for the audit (`DELIVERABLE`,
    /// `verified`, `accept_all`, ...).
    #[serde(default)]
    pub provider_status: Option<String>,
}

impl ValueCandidate {
    pub fn new(channel: Channel, value: impl Into<String>, verification: Verification) -> Self {
        ValueCandidate {
            channel,
            value: value.into(),
            verification,
            do_not_call: false,
            provider_status: None,
        }
    }
    pub fn status(mut self, s: impl Into<String>) -> Self {
        self.provider_status = Some(s.into());
        self
    }
}

/// A usable value enrichd keeps for a lead's channel, with its Source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelValue {
    pub channel: Channel,
    /// Normalised: lower-case email, E.164 phone, canonical LinkedIn URL.
    pub value: String,
    pub source: Source,
    pub verification: Verification,
    pub found_at: UnixMillis,
    /// When a verifier (or the provider) last confirmed it.
    pub verified_at: Option<UnixMillis>,
}

impl ChannelValue {
    /// Time the freshness rule measures from: the last verification, else the find.
    pub fn checked_at(&self) -> UnixMillis {
        self.verified_at.unwrap_or(self.found_at).max(self.found_at)
    }

    /// Fresh when checked within `max_age_days` (`None` = never goes stale).
    pub fn is_fresh(&self, now: UnixMillis, max_age_days: Option<u32>) -> bool {
        match max_age_days {
            None => true,
            Some(d) => now.saturating_sub(self.checked_at()) <= i64::from(d) * DAY_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_measures_from_last_verification() {
        let v = ChannelValue {
            channel: Channel::WorkEmail,
            value: "a@b.co".into(),
            source: Source::provider("hunter"),
            verification: Verification::Verified,
            found_at: 0,
            verified_at: Some(10 * DAY_MS),
        };
        assert!(v.is_fresh(100 * DAY_MS, Some(90)));
        assert!(!v.is_fresh(101 * DAY_MS, Some(90)));
        assert!(v.is_fresh(i64::MAX, None));
    }

    #[test]
    fn verification_round_trips_through_its_storage_form() {
        for v in [
            Verification::Verified,
            Verification::CatchAll,
            Verification::Unknown,
            Verification::Invalid,
        ] {
            assert_eq!(Verification::parse(v.as_str()), Some(v));
        }
    }
}
