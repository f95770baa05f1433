//! Salesforce datetimes as text ↔ [`UnixMillis`].
//!
//! - Responses write `2026-05-01T07:25:37.000+0000` (§2.1); other sources
//!   (Outbound Messages, CSV results, simulators) write `Z` or `+00:00`.
//!   [`parse`] takes all of them.
//! - SOQL literals are unquoted ISO-8601 with seconds and `Z`
//!   (`WHERE SystemModstamp > 2024-01-01T00:00:00Z`, §2.1). Salesforce
//!   keeps datetimes to the second (responses always carry `.000`), so
//!   [`soql_literal`] writes whole seconds; an instant with milliseconds
//!   (only from a source that keeps them) keeps them (`.123Z`), so a keyset
//!   equality on it still matches the record it came from.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

use crate::core::value::UnixMillis;

/// Parses a Salesforce datetime (`+0000`, `+00:00` or `Z` offsets, with or
/// without fractional seconds) or a bare date (midnight UTC). `None` for
/// anything else: never a panic.
pub fn parse(s: &str) -> Option<UnixMillis> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.timestamp_millis());
        }
    }
    // No offset at all: Salesforce datetimes are UTC.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

fn utc(t: UnixMillis) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(t)
}

/// A SOQL datetime literal: `2024-01-01T00:00:00Z` (milliseconds only when
/// `t` has some). `None` outside chrono's range (years beyond ±262,000).
pub fn soql_literal(t: UnixMillis) -> Option<String> {
    let d = utc(t)?;
    let secs = if t.rem_euclid(1000) == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Millis
    };
    Some(d.to_rfc3339_opts(secs, true))
}

/// The form Salesforce answers with: `2026-05-01T07:25:37.000+0000`.
pub fn response_format(t: UnixMillis) -> Option<String> {
    Some(utc(t)?.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string())
}

/// `t` rounded down to a whole second.
pub fn floor_second(t: UnixMillis) -> UnixMillis {
    t.saturating_sub(t.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: UnixMillis = 1_777_620_337_000; // 2026-05-01T07:25:37Z

    #[test]
    fn parses_every_form_salesforce_writes() {
        assert_eq!(parse("2026-05-01T07:25:37.000+0000"), Some(T));
        assert_eq!(parse("2026-05-01T07:25:37Z"), Some(T));
        assert_eq!(parse("2026-05-01T07:25:37.000Z"), Some(T));
        assert_eq!(parse("2026-05-01T07:25:37+00:00"), Some(T));
        assert_eq!(parse("2026-05-01T09:25:37.000+0200"), Some(T));
        assert_eq!(parse("2026-05-01T07:25:37"), Some(T));
        assert_eq!(parse(" 2026-05-01T07:25:37.250+0000 "), Some(T + 250));
        assert_eq!(
            parse("2026-05-01"),
            Some(T - (7 * 3600 + 25 * 60 + 37) * 1000)
        );
    }

    #[test]
    fn garbage_is_none() {
        for s in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-05-01T25:00:00Z",
            "2026-05-01T07:25:37.000+99999",
            "1777620337000",
            "2026-05-01T07:25:37.000+0000garbage",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
        assert_eq!(parse(&"9".repeat(10_000)), None);
    }

    #[test]
    fn soql_literals_are_unquoted_iso_with_z() {
        assert_eq!(soql_literal(T).as_deref(), Some("2026-05-01T07:25:37Z"));
        assert_eq!(
            soql_literal(T + 5).as_deref(),
            Some("2026-05-01T07:25:37.005Z")
        );
        assert_eq!(soql_literal(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(soql_literal(i64::MAX), None);
        assert_eq!(
            response_format(T).as_deref(),
            Some("2026-05-01T07:25:37.000+0000")
        );
        assert_eq!(floor_second(T + 999), T);
        assert_eq!(floor_second(-1), -1000);
    }

    #[test]
    fn round_trips() {
        for t in [0, T, T + 1, T + 999, -86_400_000] {
            assert_eq!(parse(&response_format(t).unwrap_or_default()), Some(t));
            assert_eq!(parse(&soql_literal(t).unwrap_or_default()), Some(t));
        }
    }
}
