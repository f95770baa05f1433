//! Enrichment status: how many of a lead's configured channels hold a usable
//! value.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::channel::ChannelSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrichmentStatus {
    /// Every configured channel present.
    Full,
    /// Some.
    Partial,
    /// None.
    Empty,
}

impl EnrichmentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            EnrichmentStatus::Full => "full",
            EnrichmentStatus::Partial => "partial",
            EnrichmentStatus::Empty => "empty",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "full" => EnrichmentStatus::Full,
            "partial" => EnrichmentStatus::Partial,
            "empty" => EnrichmentStatus::Empty,
            _ => return None,
        })
    }
}

impl fmt::Display for EnrichmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnrichmentStatus::Full => "Full",
            EnrichmentStatus::Partial => "Partial",
            EnrichmentStatus::Empty => "Empty",
        })
    }
}

/// The status of a lead with `configured` channels of which `present` hold
/// usable values. `None` for a lead in no audience (nothing configured): it
/// is not enriched and has no status.
pub fn status(configured: ChannelSet, present: ChannelSet) -> Option<EnrichmentStatus> {
    if configured.is_empty() {
        return None;
    }
    let have = configured.intersection(present);
    Some(if have == configured {
        EnrichmentStatus::Full
    } else if have.is_empty() {
        EnrichmentStatus::Empty
    } else {
        EnrichmentStatus::Partial
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::channel::Channel::*;

    #[test]
    fn full_partial_empty_and_none() {
        let cfg: ChannelSet = [WorkEmail, Phone].into_iter().collect();
        assert_eq!(status(cfg, cfg), Some(EnrichmentStatus::Full));
        assert_eq!(
            status(cfg, ChannelSet::single(Phone)),
            Some(EnrichmentStatus::Partial)
        );
        assert_eq!(
            status(cfg, ChannelSet::single(LinkedinUrl)),
            Some(EnrichmentStatus::Empty)
        );
        assert_eq!(
            status(cfg, ChannelSet::ALL),
            Some(EnrichmentStatus::Full),
            "extra values do not matter"
        );
        assert_eq!(status(ChannelSet::EMPTY, ChannelSet::ALL), None);
    }
}
