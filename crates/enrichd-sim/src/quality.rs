//! The hidden quality model of each simulated provider: what it knows about whom, how often it
//! is right, and which status word it attaches to emails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::H;
use crate::population::{Person, Population, SimChannel};
use crate::server::ProviderKind;

/// Quality of one provider on one channel (optionally for one segment).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// P(provider holds a value for this person+channel).
    pub coverage: f64,
    /// P(that value is the true one); otherwise a plausible WRONG value (an email at the right
    /// domain with another pattern, which ZeroBounce calls invalid; a phone with other digits;
    /// another slug).
    pub accuracy: f64,
    /// For correct emails at non-catch-all domains: P(reported with the provider's
    /// "verified/deliverable" word); else its "unknown/probable" word. Catch-all domains => its
    /// catch-all word. Wrong emails => the "probable/unknown" word, except with probability
    /// `false_verified_share` the verified word. (For phones, where a provider has a verified
    /// word, e.g. Prospeo's mobile status, the same rule applies without the catch-all case.)
    pub verified_share: f64,
    pub false_verified_share: f64,
}

impl Quality {
    pub const fn new(
        coverage: f64,
        accuracy: f64,
        verified_share: f64,
        false_verified_share: f64,
    ) -> Quality {
        Quality {
            coverage,
            accuracy,
            verified_share,
            false_verified_share,
        }
    }
    /// Knows everyone, always right, always verified.
    pub const fn perfect() -> Quality {
        Quality::new(1.0, 1.0, 1.0, 0.0)
    }
    /// Knows nobody.
    pub const fn none() -> Quality {
        Quality::new(0.0, 0.0, 0.0, 0.0)
    }
}

/// Which person attribute a segment override matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentField {
    Country,
    Seniority,
}

/// Quality for one channel on a segment of the population (e.g. phones in DE).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SegmentOverride {
    pub field: SegmentField,
    pub value: String,
    pub channel: SimChannel,
    pub quality: Quality,
}

/// A provider's hidden ground truth.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProviderProfile {
    /// Absent channel = the provider never returns it.
    pub channels: BTreeMap<SimChannel, Quality>,
    /// First matching override wins (case-insensitive value comparison).
    pub segments: Vec<SegmentOverride>,
}

/// The status word a provider attaches to a value it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Word {
    /// "verified", "DELIVERABLE", "valid", "VERIFIED".
    Verified,
    /// "extrapolated", "HIGH_PROBABILITY", "unknown", "UNVERIFIED".
    Probable,
    /// "CATCH_ALL", "accept_all" (emails at catch-all domains).
    CatchAll,
}

/// What a provider holds for one person and channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knowledge {
    /// The value (canonical form: lower-case email, E.164 phone, canonical LinkedIn URL).
    pub value: String,
    /// Whether it is the person's true value.
    pub correct: bool,
    pub word: Word,
}

impl ProviderProfile {
    /// A provider that knows nothing.
    pub fn empty() -> ProviderProfile {
        ProviderProfile::default()
    }

    /// The same quality for every person on the listed channels.
    pub fn uniform(channels: &[(SimChannel, Quality)]) -> ProviderProfile {
        ProviderProfile {
            channels: channels.iter().copied().collect(),
            segments: Vec::new(),
        }
    }

    /// Knows everything on the listed channels, always right and verified.
    pub fn perfect(channels: &[SimChannel]) -> ProviderProfile {
        ProviderProfile::uniform(
            &channels
                .iter()
                .map(|c| (*c, Quality::perfect()))
                .collect::<Vec<_>>(),
        )
    }

    /// Add or replace a channel's quality.
    pub fn with_channel(mut self, channel: SimChannel, quality: Quality) -> ProviderProfile {
        self.channels.insert(channel, quality);
        self
    }

    /// Append a segment override (earlier overrides win).
    pub fn with_segment(
        mut self,
        field: SegmentField,
        value: &str,
        channel: SimChannel,
        quality: Quality,
    ) -> ProviderProfile {
        self.segments.push(SegmentOverride {
            field,
            value: value.to_string(),
            channel,
            quality,
        });
        self
    }

    /// Sensible, distinct defaults per provider (see the crate documentation for the table).
    pub fn default_for(kind: ProviderKind) -> ProviderProfile {
        use SimChannel::*;
        match kind {
            // Aggregator: high coverage everywhere; phones weaker in the EU.
            ProviderKind::FullEnrich => ProviderProfile::uniform(&[
                (WorkEmail, Quality::new(0.88, 0.96, 0.75, 0.03)),
                (PersonalEmail, Quality::new(0.55, 0.92, 0.65, 0.05)),
                (Phone, Quality::new(0.65, 0.92, 0.8, 0.05)),
            ])
            .with_segment(
                SegmentField::Country,
                "DE",
                Phone,
                Quality::new(0.35, 0.9, 0.8, 0.05),
            )
            .with_segment(
                SegmentField::Country,
                "FR",
                Phone,
                Quality::new(0.4, 0.9, 0.8, 0.05),
            ),
            // Strong work email + LinkedIn; personal emails on request (phones are async, not
            // simulated).
            ProviderKind::Apollo => ProviderProfile::uniform(&[
                (WorkEmail, Quality::new(0.8, 0.9, 0.65, 0.08)),
                (PersonalEmail, Quality::new(0.3, 0.85, 0.5, 0.05)),
                (LinkedinUrl, Quality::new(0.92, 0.97, 1.0, 0.0)),
            ]),
            // Work email only.
            ProviderKind::Hunter => {
                ProviderProfile::uniform(&[(WorkEmail, Quality::new(0.7, 0.92, 0.6, 0.05))])
            }
            // LinkedIn + phones + personal emails; some work emails; no email statuses.
            ProviderKind::Pdl => ProviderProfile::uniform(&[
                (LinkedinUrl, Quality::new(0.95, 0.97, 1.0, 0.0)),
                (Phone, Quality::new(0.55, 0.8, 0.5, 0.1)),
                (PersonalEmail, Quality::new(0.6, 0.85, 0.5, 0.1)),
                (WorkEmail, Quality::new(0.45, 0.8, 0.5, 0.1)),
            ])
            .with_segment(
                SegmentField::Seniority,
                "c_suite",
                Phone,
                Quality::new(0.75, 0.85, 0.5, 0.1),
            ),
            // A verifier: knows no contact data.
            ProviderKind::ZeroBounce => ProviderProfile::empty(),
            // Work email + mobile (+ the LinkedIn URL of its record).
            ProviderKind::Prospeo => ProviderProfile::uniform(&[
                (WorkEmail, Quality::new(0.8, 0.93, 0.75, 0.04)),
                (Phone, Quality::new(0.45, 0.9, 0.85, 0.05)),
                (LinkedinUrl, Quality::new(0.85, 0.97, 1.0, 0.0)),
            ]),
        }
    }

    /// The quality that applies to this person on this channel (segment overrides first).
    pub fn quality_for(&self, person: &Person, channel: SimChannel) -> Option<Quality> {
        for s in &self.segments {
            if s.channel != channel {
                continue;
            }
            let v = match s.field {
                SegmentField::Country => &person.country,
                SegmentField::Seniority => &person.seniority,
            };
            if v.eq_ignore_ascii_case(&s.value) {
                return Some(s.quality);
            }
        }
        self.channels.get(&channel).copied()
    }

    /// What the provider named `provider` holds for person `index` on `channel` (None = no
    /// value). Hash-based on (population seed, provider name, person, channel, purpose): fixed
    /// and independent across providers.
    pub fn knows(
        &self,
        pop: &Population,
        provider: &str,
        index: usize,
        channel: SimChannel,
    ) -> Option<Knowledge> {
        let person = pop.people().get(index)?;
        let q = self.quality_for(person, channel)?;
        let h = H::new(pop.seed())
            .s(provider)
            .n(index as u64)
            .s(channel.tag());
        if h.s("coverage").unit() >= q.coverage {
            return None;
        }
        let correct = h.s("accuracy").unit() < q.accuracy;
        let value = if correct {
            person.truth(channel).to_string()
        } else {
            let hw = h.s("wrong");
            match channel {
                SimChannel::WorkEmail => pop.wrong_work_email(index, hw),
                SimChannel::PersonalEmail => pop.wrong_personal_email(index, hw),
                SimChannel::Phone => pop.wrong_phone(index, hw),
                SimChannel::LinkedinUrl => pop.wrong_linkedin(index, hw),
            }
        };
        let catch_all = matches!(channel, SimChannel::WorkEmail | SimChannel::PersonalEmail)
            && value
                .rsplit_once('@')
                .is_some_and(|(_, d)| pop.is_catch_all_domain(d));
        let word = if catch_all {
            Word::CatchAll
        } else if correct {
            if h.s("verified").unit() < q.verified_share {
                Word::Verified
            } else {
                Word::Probable
            }
        } else if h.s("false_verified").unit() < q.false_verified_share {
            Word::Verified
        } else {
            Word::Probable
        };
        Some(Knowledge {
            value,
            correct,
            word,
        })
    }

    /// True when the provider holds a value for at least one of its channels for this person
    /// (the simulators treat that as "has a record for this person").
    pub fn has_record(&self, pop: &Population, provider: &str, index: usize) -> bool {
        SimChannel::ALL
            .iter()
            .any(|c| self.knows(pop, provider, index, *c).is_some())
    }
}
