//! Wall-clock helpers: epoch milliseconds, HubSpot's ISO-8601 rendering
//! (`2026-03-10T23:04:41.164Z`) and parsing of the date values HubSpot accepts (epoch ms, ISO-8601,
//! `YYYY-MM-DD`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::util::{civil_from_days, days_from_civil, digits};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-03-10T23:04:41.164Z` (always with milliseconds, as HubSpot renders datetimes).
pub(crate) fn iso_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss, mss) = (
        rem / 3_600_000,
        (rem / 60_000) % 60,
        (rem / 1000) % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{mss:03}Z")
}

/// `YYYY-MM-DD` of an epoch-ms instant (UTC).
pub(crate) fn ymd(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parse `YYYY-MM-DD` into epoch ms at midnight UTC.
pub(crate) fn parse_ymd(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let y = digits(it.next()?)?;
    let m = u32::try_from(digits(it.next()?)?).ok()?;
    let d = u32::try_from(digits(it.next()?)?).ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1000..=9999).contains(&y) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400_000)
}

/// Parse a datetime value as HubSpot accepts it: epoch milliseconds (`"1700000000000"`), ISO-8601
/// (`2026-03-10T23:04:41.164Z`, `2026-03-10T23:04:41Z`, `2026-03-10T23:04:41+02:00`) or a date
/// (`2026-03-10`, midnight UTC). Returns epoch ms.
pub(crate) fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('-') {
        return digits(rest).map(|v| -v);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let day_ms = parse_ymd(date)?;
    let Some(time) = time else {
        return Some(day_ms);
    };
    // Split off the zone: Z, +hh:mm, -hh:mm, +hhmm.
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else if let Some(pos) = time.rfind(['+', '-']) {
        let (c, z) = time.split_at(pos);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let z = z[1..].replace(':', "");
        if z.len() != 4 {
            return None;
        }
        let hh = digits(&z[..2])?;
        let mm = digits(&z[2..])?;
        (c, sign * (hh * 3_600_000 + mm * 60_000))
    } else {
        (time, 0)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (clock, None),
    };
    let mut parts = hms.split(':');
    let hh = digits(parts.next()?)?;
    let mm = digits(parts.next()?)?;
    let ss = match parts.next() {
        Some(p) => digits(p)?,
        None => 0,
    };
    if parts.next().is_some() || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms = match frac {
        Some(f) => {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let mut millis: String = f.chars().take(3).collect();
            while millis.len() < 3 {
                millis.push('0');
            }
            digits(&millis)?
        }
        None => 0,
    };
    Some(day_ms + hh * 3_600_000 + mm * 60_000 + ss * 1000 + ms - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_roundtrip() {
        let ms = 1_773_183_881_164;
        assert_eq!(iso_ms(ms), "2026-03-10T23:04:41.164Z");
        assert_eq!(parse_datetime("2026-03-10T23:04:41.164Z"), Some(ms));
        assert_eq!(parse_datetime("2026-03-10T23:04:41.164+00:00"), Some(ms));
        assert_eq!(parse_datetime("2026-03-11T01:04:41.164+02:00"), Some(ms));
        assert_eq!(parse_datetime("1773183881164"), Some(ms));
        assert_eq!(parse_datetime("2026-03-10"), Some(ms - (ms % 86_400_000)));
        assert_eq!(parse_datetime("yesterday"), None);
        assert_eq!(ymd(ms), "2026-03-10");
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
    }
}
