//! The usable-value rules per channel: normalisation (lower-case email, E.164
//! phone, canonical LinkedIn URL) and the bar a value must pass before it may
//! stop the waterfall and be charged for. Also the country of a phone number
//! and its national format, for write-back ([`format_national`]).

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::value::{ValueCandidate, Verification};

/// What a workspace does with catch-all email addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchAllPolicy {
    /// Catch-all addresses are not usable; the waterfall goes on.
    #[default]
    Strict,
    /// Catch-all addresses count as usable (Clay's default behaviour).
    Accept,
}

/// The per-workspace inputs to the usability rules.
#[derive(Debug, Clone, Default)]
pub struct UsabilityPolicy {
    pub catch_all: CatchAllPolicy,
    /// A verifier is configured: unknown-status emails go to it instead of
    /// being rejected.
    pub has_verifier: bool,
    /// Region used to read national-format phone numbers when the lead has no
    /// recognisable country (ISO-3166 alpha-2).
    pub default_region: Option<String>,
}

/// Why a value did not pass the bar (kept in the attempt audit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("malformed email address: {0}")]
    MalformedEmail(String),
    #[error("email not verified by the provider and no verifier configured")]
    Unverified,
    #[error("catch-all address rejected by the workspace's strict catch-all policy")]
    CatchAll,
    #[error("marked invalid by the provider or verifier")]
    Invalid,
    #[error("not a valid phone number: {0}")]
    BadPhone(String),
    #[error("phone flagged do-not-call")]
    DoNotCall,
    #[error("not a LinkedIn profile URL: {0}")]
    BadLinkedin(String),
}

/// The verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    Usable {
        value: String,
        verification: Verification,
    },
    /// Well-formed email whose deliverability is unknown: ask the verifier.
    NeedsVerification {
        value: String,
    },
    Unusable(Unusable),
}

/// Applies the channel's rules to a provider's candidate.
pub fn assess(
    c: &ValueCandidate,
    policy: &UsabilityPolicy,
    lead_region: Option<&str>,
) -> Assessment {
    match c.channel {
        Channel::WorkEmail | Channel::PersonalEmail => {
            let value = match normalise_email(&c.value) {
                Ok(v) => v,
                Err(e) => return Assessment::Unusable(e),
            };
            assess_email_status(value, c.verification, policy)
        }
        Channel::Phone => {
            if c.do_not_call {
                return Assessment::Unusable(Unusable::DoNotCall);
            }
            if c.verification == Verification::Invalid {
                return Assessment::Unusable(Unusable::Invalid);
            }
            let region = lead_region.or(policy.default_region.as_deref());
            match normalise_phone(&c.value, region) {
                Ok(value) => Assessment::Usable {
                    value,
                    verification: c.verification,
                },
                Err(e) => Assessment::Unusable(e),
            }
        }
        Channel::LinkedinUrl => match canonical_linkedin(&c.value) {
            Ok(value) => Assessment::Usable {
                value,
                verification: Verification::Verified,
            },
            Err(e) => Assessment::Unusable(e),
        },
    }
}

/// The email bar for an already-normalised address and a status (from the
/// provider, or from a verifier's answer).
pub fn assess_email_status(
    value: String,
    verification: Verification,
    policy: &UsabilityPolicy,
) -> Assessment {
    match verification {
        Verification::Verified => Assessment::Usable {
            value,
            verification,
        },
        Verification::CatchAll => match policy.catch_all {
            CatchAllPolicy::Accept => Assessment::Usable {
                value,
                verification,
            },
            CatchAllPolicy::Strict => Assessment::Unusable(Unusable::CatchAll),
        },
        Verification::Unknown if policy.has_verifier => Assessment::NeedsVerification { value },
        Verification::Unknown => Assessment::Unusable(Unusable::Unverified),
        Verification::Invalid => Assessment::Unusable(Unusable::Invalid),
    }
}

/// Trims, drops a `mailto:` prefix, lower-cases and checks the address shape.
pub fn normalise_email(raw: &str) -> Result<String, Unusable> {
    let bad = || Unusable::MalformedEmail(raw.chars().take(100).collect());
    let s = raw.trim();
    let s = s
        .strip_prefix("mailto:")
        .or_else(|| s.strip_prefix("MAILTO:"))
        .unwrap_or(s)
        .to_lowercase();
    let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    if local_ok && domain_ok {
        Ok(s)
    } else {
        Err(bad())
    }
}

/// Personal-mailbox domains: never a company's domain.
pub fn is_free_mail_domain(domain: &str) -> bool {
    const FREE: &[&str] = &[
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "ymail.com",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "outlook.com",
        "live.com",
        "msn.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "proton.me",
        "protonmail.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "t-online.de",
        "yandex.ru",
        "yandex.com",
        "mail.ru",
        "orange.fr",
        "free.fr",
        "laposte.net",
        "wanadoo.fr",
        "sfr.fr",
        "libero.it",
        "qq.com",
        "163.com",
        "126.com",
        "zoho.com",
        "fastmail.com",
        "hey.com",
        "tutanota.com",
    ];
    FREE.contains(&domain)
}

/// Canonical LinkedIn profile URL: `https://www.linkedin.com/in/<slug>` with a
/// lower-case slug; locale sub-domains, query strings, fragments, trailing
/// slashes and locale suffixes are dropped. Sales Navigator, Recruiter and
/// company URLs are not profile URLs.
pub fn canonical_linkedin(raw: &str) -> Result<String, Unusable> {
    let bad = |why: &str| {
        Unusable::BadLinkedin(format!(
            "{} ({why})",
            raw.chars().take(100).collect::<String>()
        ))
    };
    let s = raw.trim();
    let lower = s.to_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.split(':').next().unwrap_or(host);
    if host != "linkedin.com" && !host.ends_with(".linkedin.com") {
        return Err(bad("host is not linkedin.com"));
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    match parts.next() {
        Some("in") => {}
        Some("sales") | Some("talent") | Some("recruiter") => {
            return Err(bad(
                "Sales Navigator and Recruiter URLs are not public profile URLs",
            ));
        }
        Some("company") | Some("school") => return Err(bad("a company page, not a person")),
        _ => return Err(bad("path does not start with /in/")),
    }
    let slug = parts.next().ok_or_else(|| bad("no profile slug"))?;
    let slug_ok = (3..=100).contains(&slug.len())
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '%');
    if !slug_ok {
        return Err(bad("profile slug has unexpected characters"));
    }
    Ok(format!("https://www.linkedin.com/in/{slug}"))
}

/// Normalises a phone number to E.164 (`+` and 8 to 15 digits). A number
/// without an international prefix is read in `region` (ISO alpha-2); without
/// a region it cannot be placed and is rejected.
pub fn normalise_phone(raw: &str, region: Option<&str>) -> Result<String, Unusable> {
    let bad = |why: &str| {
        Unusable::BadPhone(format!(
            "{} ({why})",
            raw.chars().take(40).collect::<String>()
        ))
    };
    // Drop an extension: "ext. 12", "x12", "#12".
    let lower = raw.trim().to_ascii_lowercase();
    let cut = ["ext", "x", "#", ";"]
        .iter()
        .filter_map(|p| lower.find(p))
        .min()
        .unwrap_or(lower.len());
    let main = &lower[..cut];
    if main.chars().any(|c| c.is_ascii_alphabetic()) {
        return Err(bad("contains letters"));
    }
    let plus = main.trim_start().starts_with('+');
    let digits: String = main.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Err(bad("no digits"));
    }
    let region_info = region.and_then(region_by_iso);
    let international: String = if plus {
        digits
    } else if let Some(d) = digits.strip_prefix("00") {
        d.to_string()
    } else if let (Some(r), Some(d)) = (region_info, digits.strip_prefix("011")) {
        if r.code == "1" {
            d.to_string()
        } else {
            digits.clone()
        }
    } else if let Some(r) = region_info {
        let national = if r.code == "1" {
            match digits.strip_prefix('1') {
                Some(d) if digits.len() == 11 => d.to_string(),
                _ => digits.clone(),
            }
        } else {
            digits
                .strip_prefix('0')
                .map(str::to_string)
                .unwrap_or(digits.clone())
        };
        format!("{}{}", r.code, national)
    } else {
        return Err(bad("no country code and no region to read it in"));
    };
    if !(8..=15).contains(&international.len()) {
        return Err(bad("E.164 numbers have 8 to 15 digits"));
    }
    let (code, nsn) =
        split_calling_code(&international).ok_or_else(|| bad("unknown country calling code"))?;
    let (min, max) = nsn_length(code);
    if !(min..=max).contains(&nsn.len()) {
        return Err(bad("wrong length for its country"));
    }
    if code == "1" {
        // North American Numbering Plan: NXX-NXX-XXXX.
        let b = nsn.as_bytes();
        if b[0] < b'2' || b[3] < b'2' {
            return Err(bad("not a valid North American number"));
        }
    }
    if nsn.bytes().all(|b| b == nsn.as_bytes()[0]) {
        return Err(bad("placeholder number"));
    }
    Ok(format!("+{international}"))
}

/// How numbers of one country are dialled from inside that country: what
/// the national format puts before the national significant number (NSN,
/// the digits after the calling code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NationalDialling {
    /// The North American Numbering Plan (+1): `(NPA) NXX-XXXX`; a leading
    /// `1` is the long-distance prefix.
    Nanp,
    /// A trunk prefix `0` before the NSN (e.g. GB `020 7946 0958`, FR `01
    /// 42 68 53 00`, DE `030123456`).
    TrunkZero,
    /// No trunk prefix: the national number is the NSN itself (IT keeps its
    /// leading `0` inside the NSN: +39 06… is `06…`).
    NoTrunk,
    /// Another convention (RU and KZ dial `8`, HU `06`, BR, AR and CO add
    /// carrier or area codes, CN mobiles take no `0`…) or one enrichd does
    /// not know: such numbers have no national format here.
    Unknown,
}

/// The country of a phone number, as far as enrichd's tables go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneCountry {
    /// The ITU calling code without `+`, e.g. `1`, `44`.
    pub calling_code: &'static str,
    /// The ISO-3166 alpha-2 region its national numbers are read in, when
    /// the calling code has one in enrichd's region table. A shared code
    /// gives its first region: every NANP number (+1) is `US` (CA, PR, DO
    /// and JM dial and format alike), +7 is `RU`.
    pub region: Option<&'static str>,
    pub dialling: NationalDialling,
}

/// The country of a phone number in international form (`+14155552671`,
/// `+1 (415) 555-2671`, `0044…`); `None` when it is not a valid number in
/// international form (a national number has no country of its own).
pub fn phone_country(phone: &str) -> Option<PhoneCountry> {
    let e164 = normalise_phone(phone, None).ok()?;
    let (code, _) = split_calling_code(e164.get(1..)?)?;
    country_of_code(code)
}

/// [`PhoneCountry`] of a calling code from [`CALLING_CODES`].
fn country_of_code(code: &str) -> Option<PhoneCountry> {
    let calling_code = *CALLING_CODES.iter().find(|c| **c == code)?;
    Some(PhoneCountry {
        calling_code,
        region: REGIONS.iter().find(|r| r.code == code).map(|r| r.iso),
        dialling: national_dialling(code),
    })
}

/// The national dialling convention per calling code. Deliberately small:
/// only countries whose convention is plain (`0` + NSN, or the NSN alone)
/// and well known; every other number is written in E.164 by
/// [`format_national`], which is always dialable.
fn national_dialling(code: &str) -> NationalDialling {
    match code {
        "1" => NationalDialling::Nanp,
        // GB, IE, FR, DE, NL, BE, CH, AT, SE, FI, SK, RO, BG, HR, SI, RS,
        // TR, IL, AE, SA, EG, ZA, NG, KE, IN, PK, JP, KR, TW, TH, MY, PH,
        // ID, VN, AU, NZ.
        "44" | "353" | "33" | "49" | "31" | "32" | "41" | "43" | "46" | "358" | "421" | "40"
        | "359" | "385" | "386" | "381" | "90" | "972" | "971" | "966" | "20" | "27" | "234"
        | "254" | "91" | "92" | "81" | "82" | "886" | "66" | "60" | "63" | "62" | "84" | "61"
        | "64" => NationalDialling::TrunkZero,
        // IT, ES, PT, DK, NO, GR, PL, CZ, LU, IS, EE, LV, MT, CY, SG, HK,
        // QA, MX (since 2019).
        "39" | "34" | "351" | "45" | "47" | "30" | "48" | "420" | "352" | "354" | "372" | "371"
        | "356" | "357" | "65" | "852" | "974" | "52" => NationalDialling::NoTrunk,
        _ => NationalDialling::Unknown,
    }
}

/// The national format of a phone number in its own country, e.g.
/// `+14155552671` → `(415) 555-2671`, `+442079460958` → `020 7946 0958`,
/// `+33142685300` → `01 42 68 53 00`. Grouped for the NANP, GB and FR;
/// other countries get their trunk `0` and the NSN (`+4930123456` →
/// `030123456`), or the NSN alone where there is no trunk prefix
/// (`+390612345678` → `0612345678`, `+34912345678` → `912345678`); a
/// number of a country whose convention is [`NationalDialling::Unknown`]
/// is given in E.164. `None` when `phone` is not a valid number in
/// international form.
pub fn format_national(phone: &str) -> Option<String> {
    let e164 = normalise_phone(phone, None).ok()?;
    let (code, nsn) = split_calling_code(e164.get(1..)?)?;
    let group = |sizes: &[usize]| -> Option<String> {
        let mut out = Vec::new();
        let mut rest = nsn;
        for &n in sizes {
            let (head, tail) = rest.split_at_checked(n)?;
            out.push(head);
            rest = tail;
        }
        rest.is_empty().then(|| out.join(" "))
    };
    let national = match (code, nsn.len()) {
        // normalise_phone guarantees NXX-NXX-XXXX.
        ("1", 10) => format!("({}) {}-{}", &nsn[..3], &nsn[3..6], &nsn[6..]),
        // Ofcom's usual groupings: 020 7946 0958 (London and the other
        // 02x areas), 07700 900123 (mobiles), 0113 496 0000 and 0161 496
        // 0000 (011x and 01x1 areas), 01632 960000 (other 01 areas, a few
        // of which actually use 5+5 or 6+4), 0300 / 0800 / 0900 123 4567.
        ("44", 10) => {
            let b = nsn.as_bytes();
            let sizes: &[usize] = match b[0] {
                b'2' => &[2, 4, 4],
                b'7' => &[4, 6],
                b'1' if b[1] == b'1' || b[2] == b'1' => &[3, 3, 4],
                b'1' => &[4, 6],
                b'3' | b'8' | b'9' => &[3, 3, 4],
                _ => &[10],
            };
            format!("0{}", group(sizes)?)
        }
        ("33", 9) => format!("0{}", group(&[1, 2, 2, 2, 2])?),
        _ => match national_dialling(code) {
            NationalDialling::TrunkZero => format!("0{nsn}"),
            NationalDialling::NoTrunk => nsn.to_string(),
            NationalDialling::Nanp | NationalDialling::Unknown => e164.clone(),
        },
    };
    Some(national)
}

struct Region {
    iso: &'static str,
    code: &'static str,
}

/// ISO-3166 alpha-2 → ITU country calling code.
const REGIONS: &[Region] = &{
    macro_rules! r { ($($iso:literal $code:literal),* $(,)?) => { [$(Region { iso: $iso, code: $code }),*] } }
    r![
        "US" "1", "CA" "1", "PR" "1", "GB" "44", "IE" "353", "FR" "33", "DE" "49", "ES" "34",
        "IT" "39", "PT" "351", "NL" "31", "BE" "32", "LU" "352", "CH" "41", "AT" "43", "LI" "423",
        "SE" "46", "NO" "47", "DK" "45", "FI" "358", "IS" "354", "PL" "48", "CZ" "420", "SK" "421",
        "HU" "36", "RO" "40", "BG" "359", "GR" "30", "HR" "385", "SI" "386", "RS" "381", "BA" "387",
        "EE" "372", "LV" "371", "LT" "370", "UA" "380", "BY" "375", "MD" "373", "RU" "7", "KZ" "7",
        "TR" "90", "CY" "357", "MT" "356", "IL" "972", "AE" "971", "SA" "966", "QA" "974",
        "KW" "965", "BH" "973", "OM" "968", "JO" "962", "LB" "961", "EG" "20", "MA" "212",
        "TN" "216", "DZ" "213", "NG" "234", "KE" "254", "GH" "233", "ZA" "27", "ET" "251",
        "TZ" "255", "UG" "256", "SN" "221", "CI" "225", "CM" "237", "IN" "91", "PK" "92",
        "BD" "880", "LK" "94", "NP" "977", "CN" "86", "HK" "852", "MO" "853", "TW" "886",
        "JP" "81", "KR" "82", "SG" "65", "MY" "60", "TH" "66", "VN" "84", "PH" "63", "ID" "62",
        "AU" "61", "NZ" "64", "MX" "52", "BR" "55", "AR" "54", "CL" "56", "CO" "57", "PE" "51",
        "VE" "58", "EC" "593", "UY" "598", "PY" "595", "BO" "591", "CR" "506", "PA" "507",
        "GT" "502", "SV" "503", "HN" "504", "NI" "505", "DO" "1", "JM" "1", "CU" "53",
    ]
};

/// Every assigned calling code (ITU-T E.164 list), including ones with no
/// entry in `REGIONS`.
const CALLING_CODES: &[&str] = &[
    "1", "7", "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45",
    "46", "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
    "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98", "211",
    "212", "213", "216", "218", "220", "221", "222", "223", "224", "225", "226", "227", "228",
    "229", "230", "231", "232", "233", "234", "235", "236", "237", "238", "239", "240", "241",
    "242", "243", "244", "245", "246", "248", "249", "250", "251", "252", "253", "254", "255",
    "256", "257", "258", "260", "261", "262", "263", "264", "265", "266", "267", "268", "269",
    "290", "291", "297", "298", "299", "350", "351", "352", "353", "354", "355", "356", "357",
    "358", "359", "370", "371", "372", "373", "374", "375", "376", "377", "378", "380", "381",
    "382", "383", "385", "386", "387", "389", "420", "421", "423", "500", "501", "502", "503",
    "504", "505", "506", "507", "508", "509", "590", "591", "592", "593", "594", "595", "596",
    "597", "598", "599", "670", "672", "673", "674", "675", "676", "677", "678", "679", "680",
    "681", "682", "683", "685", "686", "687", "688", "689", "690", "691", "692", "800", "808",
    "850", "852", "853", "855", "856", "870", "878", "880", "881", "882", "883", "886", "888",
    "960", "961", "962", "963", "964", "965", "966", "967", "968", "970", "971", "972", "973",
    "974", "975", "976", "977", "979", "992", "993", "994", "995", "996", "998",
];

fn region_by_iso(iso: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.iso.eq_ignore_ascii_case(iso))
}

fn split_calling_code(digits: &str) -> Option<(&str, &str)> {
    (1..=3)
        .filter(|n| digits.len() > *n)
        .map(|n| digits.split_at(n))
        .find(|(code, _)| CALLING_CODES.contains(code))
}

/// National significant number length bounds, where the numbering plan is
/// known; otherwise the E.164 general bounds.
fn nsn_length(code: &str) -> (usize, usize) {
    match code {
        "1" => (10, 10),
        "44" => (9, 10),
        "33" | "34" | "351" | "48" | "31" | "41" | "61" | "27" | "420" | "421" => (9, 9),
        "49" => (6, 13),
        "39" => (6, 11),
        "32" | "972" => (8, 9),
        "45" | "47" | "65" | "852" | "974" => (8, 8),
        "46" => (7, 13),
        "353" => (7, 9),
        "91" => (10, 10),
        "86" => (5, 12),
        "81" => (9, 10),
        "55" => (10, 11),
        "52" => (10, 10),
        "64" => (8, 10),
        "971" => (8, 9),
        _ => (4, 14),
    }
}

/// Reads a country field: an ISO alpha-2 code or a common English name.
pub fn country_code(raw: &str) -> Option<&'static str> {
    let s = raw.trim();
    if s.len() == 2
        && let Some(r) = region_by_iso(s)
    {
        return Some(r.iso);
    }
    let lower = s.to_ascii_lowercase();
    let iso = match lower.as_str() {
        "usa" | "united states" | "united states of america" | "u.s." | "u.s.a." => "US",
        "uk" | "united kingdom" | "great britain" | "england" | "scotland" | "wales" => "GB",
        "canada" => "CA",
        "ireland" => "IE",
        "france" => "FR",
        "germany" | "deutschland" => "DE",
        "spain" | "españa" => "ES",
        "italy" | "italia" => "IT",
        "portugal" => "PT",
        "netherlands" | "the netherlands" | "holland" => "NL",
        "belgium" => "BE",
        "switzerland" => "CH",
        "austria" => "AT",
        "sweden" => "SE",
        "norway" => "NO",
        "denmark" => "DK",
        "finland" => "FI",
        "poland" => "PL",
        "australia" => "AU",
        "new zealand" => "NZ",
        "india" => "IN",
        "china" => "CN",
        "japan" => "JP",
        "singapore" => "SG",
        "brazil" | "brasil" => "BR",
        "mexico" | "méxico" => "MX",
        "israel" => "IL",
        "south africa" => "ZA",
        "united arab emirates" | "uae" => "AE",
        _ => return None,
    };
    Some(iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> UsabilityPolicy {
        UsabilityPolicy::default()
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            normalise_email(" Ada.Lovelace@Analytical.IO ").unwrap(),
            "ada.lovelace@analytical.io"
        );
        assert_eq!(normalise_email("mailto:a@b.co").unwrap(), "a@b.co");
        for bad in [
            "",
            "a",
            "a@b",
            "a@@b.co",
            ".a@b.co",
            "a..b@c.co",
            "a@-b.co",
            "a b@c.co",
            "a@b.c0",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn email_bar_follows_status_and_catch_all_policy() {
        let c = |v| ValueCandidate::new(Channel::WorkEmail, "a@b.co", v);
        assert!(matches!(
            assess(&c(Verification::Verified), &strict(), None),
            Assessment::Usable { .. }
        ));
        assert_eq!(
            assess(&c(Verification::CatchAll), &strict(), None),
            Assessment::Unusable(Unusable::CatchAll)
        );
        let accept = UsabilityPolicy {
            catch_all: CatchAllPolicy::Accept,
            ..strict()
        };
        assert!(matches!(
            assess(&c(Verification::CatchAll), &accept, None),
            Assessment::Usable { .. }
        ));
        assert_eq!(
            assess(&c(Verification::Unknown), &strict(), None),
            Assessment::Unusable(Unusable::Unverified)
        );
        let verifier = UsabilityPolicy {
            has_verifier: true,
            ..strict()
        };
        assert_eq!(
            assess(&c(Verification::Unknown), &verifier, None),
            Assessment::NeedsVerification {
                value: "a@b.co".into()
            }
        );
        assert_eq!(
            assess(&c(Verification::Invalid), &verifier, None),
            Assessment::Unusable(Unusable::Invalid)
        );
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(
            normalise_phone("+1 (415) 555-2671", None).unwrap(),
            "+14155552671"
        );
        assert_eq!(
            normalise_phone("(415) 555-2671", Some("US")).unwrap(),
            "+14155552671"
        );
        assert_eq!(
            normalise_phone("1-415-555-2671", Some("us")).unwrap(),
            "+14155552671"
        );
        assert_eq!(
            normalise_phone("011 44 20 7946 0958", Some("US")).unwrap(),
            "+442079460958"
        );
        assert_eq!(
            normalise_phone("020 7946 0958", Some("GB")).unwrap(),
            "+442079460958"
        );
        assert_eq!(
            normalise_phone("0044 20 7946 0958", None).unwrap(),
            "+442079460958"
        );
        assert_eq!(
            normalise_phone("06 12 34 56 78", Some("FR")).unwrap(),
            "+33612345678"
        );
        assert_eq!(
            normalise_phone("+33 6 12 34 56 78 ext. 12", None).unwrap(),
            "+33612345678"
        );
        assert_eq!(
            normalise_phone("+49 30 123456", None).unwrap(),
            "+4930123456"
        );
    }

    #[test]
    fn bad_phones_are_rejected_with_a_reason() {
        for (raw, region) in [
            ("555-2671", None),          // no region
            ("+1 (115) 555-2671", None), // NANP area code cannot start with 1
            ("+1 415 555 267", None),    // too short
            ("+999 1234 5678", None),    // unassigned code
            ("+1 222 222 2222", None),   // placeholder
            ("call me maybe", Some("US")),
            ("+33 6 12 34 56 78 99", None), // too long for France
        ] {
            assert!(normalise_phone(raw, region).is_err(), "{raw}");
        }
    }

    #[test]
    fn do_not_call_and_invalid_phones_are_unusable() {
        let mut c = ValueCandidate::new(Channel::Phone, "+14155552671", Verification::Verified);
        assert!(matches!(
            assess(&c, &strict(), None),
            Assessment::Usable { .. }
        ));
        c.do_not_call = true;
        assert_eq!(
            assess(&c, &strict(), None),
            Assessment::Unusable(Unusable::DoNotCall)
        );
        let national = ValueCandidate::new(Channel::Phone, "(415) 555-2671", Verification::Unknown);
        assert!(matches!(
            assess(&national, &strict(), Some("US")),
            Assessment::Usable { .. }
        ));
        let policy = UsabilityPolicy {
            default_region: Some("US".into()),
            ..strict()
        };
        assert!(matches!(
            assess(&national, &policy, None),
            Assessment::Usable { .. }
        ));
    }

    #[test]
    fn linkedin_urls_are_canonical() {
        for raw in [
            "https://www.linkedin.com/in/Ada-Lovelace/",
            "http://uk.linkedin.com/in/ada-lovelace?trk=abc",
            "linkedin.com/in/ada-lovelace/en",
            "www.linkedin.com/in/ada-lovelace#about",
        ] {
            assert_eq!(
                canonical_linkedin(raw).unwrap(),
                "https://www.linkedin.com/in/ada-lovelace",
                "{raw}"
            );
        }
        for raw in [
            "https://www.linkedin.com/sales/lead/ACwAAA,NAME",
            "https://www.linkedin.com/company/acme",
            "https://evil.com/in/ada",
            "https://www.linkedin.com/in/",
            "https://notlinkedin.com/in/ada-lovelace",
        ] {
            assert!(canonical_linkedin(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn national_format_of_the_numbers_own_country() {
        for (e164, national) in [
            ("+14155552671", "(415) 555-2671"),
            ("+1 (416) 555-0123", "(416) 555-0123"), // Canada: same plan
            ("+442079460958", "020 7946 0958"),
            ("+447700900123", "07700 900123"),
            ("+441134960000", "0113 496 0000"),
            ("+441614960000", "0161 496 0000"),
            ("+441632960000", "01632 960000"),
            ("+443001234567", "0300 123 4567"),
            ("+33142685300", "01 42 68 53 00"),
            ("+33612345678", "06 12 34 56 78"),
            ("+4930123456", "030123456"),         // trunk 0, not grouped
            ("+61291234567", "0291234567"),       // AU
            ("+81312345678", "0312345678"),       // JP
            ("+390612345678", "0612345678"),      // IT: the 0 is in the NSN
            ("+34912345678", "912345678"),        // ES: no trunk prefix
            ("+4722123456", "22123456"),          // NO
            ("+74951234567", "+74951234567"),     // RU dials 8: E.164
            ("+5511912345678", "+5511912345678"), // BR: carrier codes
            ("+3612345678", "+3612345678"),       // HU dials 06
        ] {
            assert_eq!(format_national(e164).as_deref(), Some(national), "{e164}");
        }
        for bad in ["(415) 555-2671", "call me", "", "+999 1234 5678"] {
            assert_eq!(format_national(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_national_format_reads_back_as_the_same_number_in_its_region() {
        for e164 in [
            "+14155552671",
            "+442079460958",
            "+447700900123",
            "+33142685300",
            "+4930123456",
            "+61291234567",
        ] {
            let country = phone_country(e164).unwrap();
            let national = format_national(e164).unwrap();
            assert_eq!(
                normalise_phone(&national, country.region).as_deref(),
                Ok(e164),
                "{national}"
            );
        }
    }

    #[test]
    fn the_country_of_a_number() {
        let c = |p| phone_country(p).map(|c| (c.calling_code, c.region, c.dialling));
        assert_eq!(
            c("+14155552671"),
            Some(("1", Some("US"), NationalDialling::Nanp))
        );
        assert_eq!(
            c("+1 416 555 0123"),
            Some(("1", Some("US"), NationalDialling::Nanp)),
            "NANP numbers are read as US"
        );
        assert_eq!(
            c("0044 20 7946 0958"),
            Some(("44", Some("GB"), NationalDialling::TrunkZero))
        );
        assert_eq!(
            c("+390612345678"),
            Some(("39", Some("IT"), NationalDialling::NoTrunk))
        );
        assert_eq!(
            c("+74951234567"),
            Some(("7", Some("RU"), NationalDialling::Unknown))
        );
        // A calling code with no region in the table.
        assert_eq!(
            c("+93701234567"),
            Some(("93", None, NationalDialling::Unknown))
        );
        assert_eq!(c("(415) 555-2671"), None, "national: no country");
        assert_eq!(c("call me"), None);
    }

    #[test]
    fn countries_by_code_or_name() {
        assert_eq!(country_code("us"), Some("US"));
        assert_eq!(country_code("United Kingdom"), Some("GB"));
        assert_eq!(country_code("Atlantis"), None);
    }
}
