//! Contact channels and small sets of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One kind of contact value. The order of the variants is the order in which
/// the waterfall visits missing channels and in which reports list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    WorkEmail,
    PersonalEmail,
    Phone,
    LinkedinUrl,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::WorkEmail,
        Channel::PersonalEmail,
        Channel::Phone,
        Channel::LinkedinUrl,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::WorkEmail => "work_email",
            Channel::PersonalEmail => "personal_email",
            Channel::Phone => "phone",
            Channel::LinkedinUrl => "linkedin_url",
        }
    }

    pub const fn is_email(self) -> bool {
        matches!(self, Channel::WorkEmail | Channel::PersonalEmail)
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The accepted spellings, for error messages.
    pub fn expected() -> &'static str {
        "work_email, personal_email, phone, linkedin_url"
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel `{0}` (expected one of: work_email, personal_email, phone, linkedin_url)")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_string()))
    }
}

impl Serialize for Channel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of channels (a bit set; `Copy`, ordered iteration).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChannelSet(u8);

impl ChannelSet {
    pub const EMPTY: ChannelSet = ChannelSet(0);
    pub const ALL: ChannelSet = ChannelSet(0b1111);

    pub const fn single(c: Channel) -> Self {
        ChannelSet(c.bit())
    }
    pub fn contains(self, c: Channel) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn insert(&mut self, c: Channel) {
        self.0 |= c.bit();
    }
    pub fn remove(&mut self, c: Channel) {
        self.0 &= !c.bit();
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn union(self, o: ChannelSet) -> Self {
        ChannelSet(self.0 | o.0)
    }
    pub fn intersection(self, o: ChannelSet) -> Self {
        ChannelSet(self.0 & o.0)
    }
    pub fn difference(self, o: ChannelSet) -> Self {
        ChannelSet(self.0 & !o.0)
    }
    pub fn is_subset(self, o: ChannelSet) -> bool {
        self.0 & !o.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Channel> {
        Channel::ALL.into_iter().filter(move |c| self.contains(*c))
    }
    /// Comma-separated names, e.g. `work_email,phone` (the storage form).
    pub fn to_csv(self) -> String {
        self.iter()
            .map(Channel::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
    pub fn parse_csv(s: &str) -> Result<Self, UnknownChannel> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Channel::from_str)
            .collect()
    }
}

impl FromIterator<Channel> for ChannelSet {
    fn from_iter<I: IntoIterator<Item = Channel>>(iter: I) -> Self {
        let mut s = ChannelSet::EMPTY;
        for c in iter {
            s.insert(c);
        }
        s
    }
}

impl fmt::Debug for ChannelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for ChannelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_csv())
    }
}

impl Serialize for ChannelSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for ChannelSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Channel>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_and_csv_round_trip() {
        let s: ChannelSet = [Channel::Phone, Channel::WorkEmail].into_iter().collect();
        assert_eq!(s.to_csv(), "work_email,phone");
        assert_eq!(ChannelSet::parse_csv("phone, work_email").unwrap(), s);
        assert!(ChannelSet::parse_csv("work_email,fax").is_err());
        assert_eq!(s.difference(ChannelSet::single(Channel::Phone)).len(), 1);
        assert!(s.is_subset(ChannelSet::ALL));
        assert_eq!(ChannelSet::parse_csv("").unwrap(), ChannelSet::EMPTY);
    }

    #[test]
    fn unknown_channel_message_lists_the_choices() {
        let e = "fax".parse::<Channel>().unwrap_err().to_string();
        assert!(e.contains("`fax`") && e.contains("linkedin_url"), "{e}");
    }
}
