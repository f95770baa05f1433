//! The simulated clock, Salesforce's datetime renderings and 18-character record ids.
//!
//! Everything time-dependent in the simulator (token sessions, the rolling 24 h API allocation,
//! query-locator expiry, Outbound Message retries, `SystemModstamp` of writes) reads
//! [`Clock::now_ms`]: the wall clock plus an offset that tests move forward with
//! `SalesforceSim::advance` (or `POST /_sim/clock/advance`). Latency and background work pace
//! themselves on the real clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::util::{civil_from_days, days_from_civil, digits};

/// Wall clock + a forward offset.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub(crate) fn now_ms(&self) -> i64 {
        wall_ms() + self.offset_ms.load(Ordering::SeqCst)
    }
    pub(crate) fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms.max(0), Ordering::SeqCst);
    }
    pub(crate) fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

/// Milliseconds since the Unix epoch on the real clock.
pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2024-05-01T12:34:56.000+0000`: how Salesforce renders datetimes in REST answers.
pub fn sf_datetime(ms: i64) -> String {
    let mut s = String::with_capacity(28);
    push_sf_datetime(&mut s, ms);
    s
}

/// Append [`sf_datetime`] to `out` (no allocation on the hot query path).
pub(crate) fn push_sf_datetime(out: &mut String, ms: i64) {
    use std::fmt::Write;
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
        rem / 3_600_000,
        (rem / 60_000) % 60,
        (rem / 1000) % 60,
        rem % 1000
    );
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
pub(crate) fn sf_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD` → days since the epoch.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = digits(&s[0..4])?;
    let m = u32::try_from(digits(&s[5..7])?).ok()?;
    let d = u32::try_from(digits(&s[8..10])?).ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Parse an ISO-8601 datetime as SOQL literals and REST writes accept it:
/// `2024-05-01T12:34:56Z`, `2024-05-01T12:34:56.000Z`, `2024-05-01T12:34:56+02:00`,
/// `2024-05-01T12:34:56.000+0000`. A zone is required (SOQL refuses a datetime without one).
pub(crate) fn parse_datetime(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let day = parse_date(date)?;
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else {
        let pos = time.rfind(['+', '-'])?;
        let (c, z) = time.split_at(pos);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let z = z[1..].replace(':', "");
        if z.len() != 4 || !z.is_ascii() {
            return None;
        }
        let hh = digits(&z[..2])?;
        let mm = digits(&z[2..])?;
        (c, sign * (hh * 3_600_000 + mm * 60_000))
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (clock, None),
    };
    let mut parts = hms.split(':');
    let hh = digits(parts.next()?)?;
    let mm = digits(parts.next()?)?;
    let ss = digits(parts.next()?)?;
    if parts.next().is_some() || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let ms = match frac {
        Some(f) => {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let mut d: String = f.chars().take(3).collect();
            while d.len() < 3 {
                d.push('0');
            }
            digits(&d)?
        }
        None => 0,
    };
    Some(day * 86_400_000 + hh * 3_600_000 + mm * 60_000 + ss * 1000 + ms - offset_ms)
}

/// Truncate to the second: Salesforce keeps audit fields (`CreatedDate`, `LastModifiedDate`,
/// `SystemModstamp`) at second precision, which is why they always render as `.000`.
pub(crate) fn to_second(ms: i64) -> i64 {
    ms - ms.rem_euclid(1000)
}

// ------------------------------------------------------------------------------- ids

/// Base-62 digits in ASCII order, so ids generated in sequence also sort in sequence.
const B62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SUFFIX: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The three-character case-safe suffix of a 15-character id.
pub(crate) fn id_suffix(id15: &[u8]) -> [u8; 3] {
    let mut out = [b'A'; 3];
    for (chunk, o) in id15.chunks(5).zip(out.iter_mut()) {
        let mut bits = 0usize;
        for (i, c) in chunk.iter().enumerate() {
            if c.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        *o = SUFFIX[bits & 31];
    }
    out
}

/// A record id: `prefix` (3 chars) + pod `5e` + `0` + 9 base-62 digits of `n`, plus the suffix.
pub(crate) fn make_id(prefix: &str, n: u64) -> String {
    let mut body = [b'0'; 9];
    let mut v = n;
    for slot in body.iter_mut().rev() {
        *slot = B62[(v % 62) as usize];
        v /= 62;
    }
    let mut s = String::with_capacity(18);
    s.push_str(prefix);
    s.push_str("5e0");
    for c in body {
        s.push(char::from(c));
    }
    let suf = id_suffix(&s.as_bytes()[..15]);
    for c in suf {
        s.push(char::from(c));
    }
    s
}

/// Why an id string is not a valid id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IdError {
    Malformed,
}

/// Normalise a 15- or 18-character id to 18 characters; a wrong length, a non-alphanumeric
/// character or a wrong 18-character suffix is malformed.
pub(crate) fn to_id18(s: &str) -> Result<String, IdError> {
    let b = s.as_bytes();
    if !(b.len() == 15 || b.len() == 18) || !b.iter().all(u8::is_ascii_alphanumeric) {
        return Err(IdError::Malformed);
    }
    let suf = id_suffix(&b[..15]);
    if b.len() == 18 && !b[15..].eq_ignore_ascii_case(&suf) {
        return Err(IdError::Malformed);
    }
    let mut out = String::with_capacity(18);
    out.push_str(&s[..15]);
    for c in suf {
        out.push(char::from(c));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        let ms = 1_714_566_896_000; // 2024-05-01T12:34:56Z
        assert_eq!(sf_datetime(ms), "2024-05-01T12:34:56.000+0000");
        assert_eq!(parse_datetime("2024-05-01T12:34:56Z"), Some(ms));
        assert_eq!(parse_datetime("2024-05-01T12:34:56.000+0000"), Some(ms));
        assert_eq!(parse_datetime("2024-05-01T14:34:56+02:00"), Some(ms));
        assert_eq!(parse_datetime("2024-05-01T12:34:56.250Z"), Some(ms + 250));
        assert_eq!(parse_datetime("2024-05-01T12:34:56"), None);
        assert_eq!(parse_datetime("2024-05-01T12:34:56.000 0000"), None);
        assert_eq!(sf_date(parse_date("2024-05-01").unwrap_or(0)), "2024-05-01");
    }

    #[test]
    fn ids() {
        // A real Salesforce pair: 001A0000006Vm9r → 001A0000006Vm9rIAC.
        assert_eq!(
            to_id18("001A0000006Vm9r").as_deref(),
            Ok("001A0000006Vm9rIAC")
        );
        assert_eq!(
            to_id18("001A0000006Vm9rIAC").as_deref(),
            Ok("001A0000006Vm9rIAC")
        );
        assert_eq!(to_id18("001A0000006Vm9rAAA"), Err(IdError::Malformed));
        assert_eq!(to_id18("abc"), Err(IdError::Malformed));
        let a = make_id("00Q", 61);
        let b = make_id("00Q", 62);
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 18);
        assert_eq!(to_id18(&a).as_deref(), Ok(a.as_str()));
    }
}
