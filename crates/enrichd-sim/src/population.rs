//! The simulated world: a deterministic population of people working at companies, with their
//! true contact channels (work email, personal email, mobile phone, LinkedIn URL).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::hash::H;
use crate::names::{
    C_SUITE_TITLES, COMPANY_SUFFIXES, COMPANY_WORDS_A, COMPANY_WORDS_B, COUNTRIES, DEPARTMENTS,
    FIRST_NAMES, LAST_NAMES, LEGAL_SUFFIXES, WEBMAIL_DOMAINS, country_tld,
};

/// A contact channel, as the simulators know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimChannel {
    WorkEmail,
    PersonalEmail,
    Phone,
    LinkedinUrl,
}

impl SimChannel {
    /// All channels, in a fixed order.
    pub const ALL: [SimChannel; 4] = [
        SimChannel::WorkEmail,
        SimChannel::PersonalEmail,
        SimChannel::Phone,
        SimChannel::LinkedinUrl,
    ];

    pub(crate) fn tag(self) -> &'static str {
        match self {
            SimChannel::WorkEmail => "work_email",
            SimChannel::PersonalEmail => "personal_email",
            SimChannel::Phone => "phone",
            SimChannel::LinkedinUrl => "linkedin_url",
        }
    }
}

/// What a mailbox check of an address would reveal (the ground truth ZeroBounce and Hunter's
/// verifier report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailTruth {
    /// The true work or personal email of someone in the population.
    Valid,
    /// Not a true address, but its domain is a catch-all company domain (accepts everything).
    CatchAll,
    /// Neither: the mailbox does not exist (or the domain is unknown).
    Invalid,
}

/// One simulated person.
#[derive(Clone, Debug, Serialize)]
pub struct Person {
    pub index: usize,
    pub first_name: String,
    pub last_name: String,
    pub company_name: String,
    pub domain: String,
    pub job_title: String,
    /// One of "c_suite", "vp", "director", "manager", "individual_contributor".
    pub seniority: String,
    /// ISO-3166 alpha-2.
    pub country: String,
    pub employees: u32,
    /// 0..=99.
    pub icp_score: u32,
    pub work_email: String,
    pub personal_email: String,
    /// E.164.
    pub phone: String,
    /// Canonical `https://www.linkedin.com/in/<slug>`.
    pub linkedin_url: String,
}

impl Person {
    /// The CRM record as HubSpot would hold it: string-valued properties, without the contact
    /// channels: firstname, lastname, company, company_domain, jobtitle, seniority, country,
    /// numemployees, icp_score.
    pub fn crm_fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), Value::String(v));
        };
        put("firstname", self.first_name.clone());
        put("lastname", self.last_name.clone());
        put("company", self.company_name.clone());
        put("company_domain", self.domain.clone());
        put("jobtitle", self.job_title.clone());
        put("seniority", self.seniority.clone());
        put("country", self.country.clone());
        put("numemployees", self.employees.to_string());
        put("icp_score", self.icp_score.to_string());
        m
    }

    /// The true value of a channel.
    pub fn truth(&self, ch: SimChannel) -> &str {
        match ch {
            SimChannel::WorkEmail => &self.work_email,
            SimChannel::PersonalEmail => &self.personal_email,
            SimChannel::Phone => &self.phone,
            SimChannel::LinkedinUrl => &self.linkedin_url,
        }
    }

    /// The LinkedIn slug (the part after `/in/`).
    pub fn linkedin_slug(&self) -> &str {
        self.linkedin_url
            .rsplit('/')
            .next()
            .unwrap_or(self.linkedin_url.as_str())
    }
}

#[derive(Clone, Debug)]
struct Company {
    name: String,
    domain: String,
    country: String,
    employees: u32,
    /// Index into the email pattern table.
    pattern: usize,
    catch_all: bool,
    /// `normalize_company(name)`.
    key: String,
}

/// A deterministic population of people (see the crate documentation).
#[derive(Clone, Debug)]
pub struct Population {
    seed: u64,
    people: Vec<Person>,
    companies: Vec<Company>,
    by_domain: HashMap<String, usize>,
    by_name_domain: HashMap<String, usize>,
    by_name_company: HashMap<String, usize>,
    by_name: HashMap<String, Vec<usize>>,
    by_slug: HashMap<String, usize>,
    by_email: HashMap<String, usize>,
    by_phone: HashMap<String, usize>,
}

/// Share of company domains that are catch-all.
pub const CATCH_ALL_SHARE: f64 = 0.10;

const PATTERNS: &[(usize, u32)] = &[
    (0, 40),
    (1, 20),
    (2, 6),
    (3, 5),
    (4, 7),
    (5, 9),
    (6, 5),
    (7, 8),
];

fn email_local(pattern: usize, first: &str, last: &str) -> String {
    let f = ascii_alnum(first);
    let l = ascii_alnum(last);
    let fi: String = f.chars().take(1).collect();
    let li: String = l.chars().take(1).collect();
    match pattern {
        0 => format!("{f}.{l}"),
        1 => format!("{fi}{l}"),
        2 => f,
        3 => format!("{f}{li}"),
        4 => format!("{f}_{l}"),
        5 => format!("{f}{l}"),
        6 => format!("{l}.{f}"),
        _ => format!("{fi}.{l}"),
    }
}

fn ascii_alnum(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn slug_base(first: &str, last: &str) -> String {
    let mut out = String::new();
    for c in format!("{first} {last}").chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if c != '\'' && !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn name_key(first: &str, last: &str) -> String {
    format!("{}\u{1}{}", norm_name(first), norm_name(last))
}

fn norm_name(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Normalise a domain or website: lower-case, without scheme, `www.`, port, path, query.
pub fn normalize_domain(input: &str) -> String {
    let mut s = input.trim().to_lowercase();
    for scheme in ["https://", "http://", "//"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest.to_string();
        }
    }
    let end = s.find(['/', '?', '#', ':']).unwrap_or(s.len());
    s.truncate(end);
    let s = s.trim_end_matches('.');
    s.strip_prefix("www.").unwrap_or(s).to_string()
}

/// Normalise a company name for comparison: lower-case words, punctuation and legal suffixes
/// (Inc, Ltd, GmbH, ...) removed.
pub fn normalize_company(input: &str) -> String {
    let cleaned: String = input
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    while words.len() > 1 && words.last().is_some_and(|w| LEGAL_SUFFIXES.contains(w)) {
        words.pop();
    }
    words.join(" ")
}

/// Extract the lower-case member slug from a LinkedIn profile URL, tolerating a missing scheme,
/// `www.`/country subdomains, a trailing slash, a query string or fragment and any case.
/// Returns `None` for anything that is not a `/in/<slug>` URL.
pub fn linkedin_slug(url: &str) -> Option<String> {
    let s = url.trim().to_lowercase();
    let pos = s.find("linkedin.com/")?;
    let rest = &s[pos + "linkedin.com/".len()..];
    let rest = rest.strip_prefix("in/")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let slug = &rest[..end];
    if slug.is_empty() {
        None
    } else {
        Some(slug.to_string())
    }
}

/// Digits of a phone number, with the country code (`+1 (415) 555-2671` -> `14155552671`).
pub(crate) fn phone_digits(p: &str) -> String {
    p.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// Human formatting of an E.164 number as FullEnrich / Prospeo show it (`+1 415-555-2671`,
/// `+44 7911 123456`, `+33 6 12 34 56 78`, ...). Unknown shapes are returned unchanged.
pub fn human_phone(e164: &str) -> String {
    let d = phone_digits(e164);
    let nsn = |cc: &str| d.strip_prefix(cc).map(str::to_string);
    let spaced = |cc: &str, groups: &[usize], n: &str| -> Option<String> {
        let mut out = format!("+{cc}");
        let mut i = 0;
        for g in groups {
            let part = n.get(i..i + g)?;
            out.push(' ');
            out.push_str(part);
            i += g;
        }
        if i < n.len() {
            out.push_str(n.get(i..)?);
        }
        Some(out)
    };
    let r = if let Some(n) = nsn("1").filter(|n| n.len() == 10) {
        Some(format!("+1 {}-{}-{}", &n[0..3], &n[3..6], &n[6..10]))
    } else if let Some(n) = nsn("44") {
        spaced("44", &[4, 6], &n)
    } else if let Some(n) = nsn("33") {
        spaced("33", &[1, 2, 2, 2, 2], &n)
    } else if let Some(n) = nsn("49") {
        spaced("49", &[3, n.len().saturating_sub(3)], &n)
    } else if let Some(n) = nsn("34") {
        spaced("34", &[3, 2, 2, 2], &n)
    } else if let Some(n) = nsn("31") {
        spaced("31", &[1, 8], &n)
    } else if let Some(n) = nsn("61") {
        spaced("61", &[3, 3, 3], &n)
    } else {
        None
    };
    r.unwrap_or_else(|| e164.to_string())
}

/// Generate a mobile number (E.164) for a country from a hash stream.
pub(crate) fn gen_phone(country: &str, h: H) -> String {
    let digit = |k: u64, lo: u64, hi: u64| char::from(b'0' + h.n(k).range(lo, hi) as u8);
    let digits = |from: u64, n: u64| (0..n).map(|k| digit(from + k, 0, 9)).collect::<String>();
    match country {
        "US" | "CA" => {
            // NXX-NXX-XXXX, N = 2..9, avoiding N11 codes.
            let mut area = format!("{}{}", digit(1, 2, 9), digits(2, 2));
            if area.ends_with("11") {
                area.replace_range(2..3, "0");
            }
            let mut exch = format!("{}{}", digit(10, 2, 9), digits(11, 2));
            if exch.ends_with("11") {
                exch.replace_range(2..3, "2");
            }
            format!("+1{area}{exch}{}", digits(20, 4))
        }
        "GB" => format!("+447{}{}", digit(1, 4, 9), digits(2, 8)),
        "FR" => format!("+33{}{}", digit(1, 6, 7), digits(2, 8)),
        "DE" => {
            let prefixes = [
                "151", "152", "157", "159", "160", "162", "163", "170", "171", "172", "173", "174",
                "175", "176", "177", "178", "179",
            ];
            let p = h.s("prefix").pick(&prefixes);
            // 10 or 11 digit national significant number.
            let rest = if h.n(99).below(2) == 0 { 7 } else { 8 };
            format!("+49{p}{}", digits(2, rest))
        }
        "ES" => format!("+346{}", digits(1, 8)),
        "NL" => format!("+316{}", digits(1, 8)),
        "AU" => format!("+614{}", digits(1, 8)),
        _ => format!("+1{}{}{}", digit(1, 2, 9), digits(2, 2), digits(4, 7)),
    }
}

/// True when a phone's national part is made of one repeated digit.
fn all_same_digits(e164: &str) -> bool {
    let d = phone_digits(e164);
    let cc_len = if d.starts_with('1') { 1 } else { 2 };
    let nsn = d.get(cc_len..).unwrap_or("");
    let mut it = nsn.chars();
    match it.next() {
        Some(c) => it.all(|x| x == c),
        None => true,
    }
}

impl Population {
    /// Generate `size` people deterministically from `seed` (about `size / 20` companies).
    pub fn generate(seed: u64, size: usize) -> Population {
        let root = H::new(seed);
        let n_companies = (size / 20).max(1);
        let mut companies = Vec::with_capacity(n_companies);
        let mut company_keys: HashSet<String> = HashSet::new();
        let mut by_domain = HashMap::new();
        for c in 0..n_companies {
            let hc = root.s("company").n(c as u64);
            let country = hc.s("country").weighted(COUNTRIES).to_string();
            let mut attempt = 0u64;
            let (name, domain) = loop {
                let ha = hc.n(attempt);
                let a = ha.s("a").pick(COMPANY_WORDS_A);
                let b = ha.s("b").pick(COMPANY_WORDS_B);
                let mut base = if ha.s("shape").below(4) == 0 {
                    format!("{a}{}", b.to_lowercase())
                } else {
                    format!("{a} {b}")
                };
                if attempt >= 8 {
                    base = format!("{base} {}", attempt);
                }
                let key = normalize_company(&base);
                let domain = format!("{}{}", ascii_alnum(&base), country_tld(&country));
                if !company_keys.contains(&key) && !by_domain.contains_key(&domain) {
                    company_keys.insert(key);
                    let suffixes: Vec<&str> = COMPANY_SUFFIXES
                        .iter()
                        .filter(|(cc, _)| *cc == country)
                        .map(|(_, s)| *s)
                        .collect();
                    let name = if ha.s("suffix").below(3) == 0 || suffixes.is_empty() {
                        base
                    } else {
                        format!("{base} {}", ha.s("sfx").pick(&suffixes))
                    };
                    break (name, domain);
                }
                attempt += 1;
            };
            let employees = 10f64.powf(1.0 + 3.7 * hc.s("employees").unit()).round() as u32;
            let pattern = *hc.s("pattern").weighted(PATTERNS);
            let catch_all = root.s("catch_all").s(&domain).unit() < CATCH_ALL_SHARE;
            let key = normalize_company(&name);
            by_domain.insert(domain.clone(), c);
            companies.push(Company {
                name,
                domain,
                country,
                employees,
                pattern,
                catch_all,
                key,
            });
        }

        let mut pop = Population {
            seed,
            people: Vec::with_capacity(size),
            companies,
            by_domain,
            by_name_domain: HashMap::with_capacity(size),
            by_name_company: HashMap::with_capacity(size),
            by_name: HashMap::with_capacity(size),
            by_slug: HashMap::with_capacity(size),
            by_email: HashMap::with_capacity(size * 2),
            by_phone: HashMap::with_capacity(size),
        };

        for i in 0..size {
            let hp = root.s("person").n(i as u64);
            // Skewed company choice so company sizes vary.
            let u = hp.s("company").unit();
            let ci = ((u * u) * n_companies as f64) as usize % n_companies;
            let company = pop.companies[ci].clone();
            let mut attempt = 0u64;
            let (first, last) = loop {
                let ha = hp.n(attempt);
                let first = ha.s("first").pick(FIRST_NAMES).to_string();
                let last = ha.s("last").pick(LAST_NAMES).to_string();
                let key = format!("{}\u{1}{}", name_key(&first, &last), company.domain);
                if !pop.by_name_domain.contains_key(&key) {
                    break (first, last);
                }
                attempt += 1;
            };
            let seniority = hp
                .s("seniority")
                .weighted(&[
                    ("c_suite", 6),
                    ("vp", 10),
                    ("director", 18),
                    ("manager", 26),
                    ("individual_contributor", 40),
                ])
                .to_string();
            let job_title = job_title(&seniority, hp.s("title"));
            let icp_score = hp.s("icp").below(100) as u32;

            // Work email: the company's pattern, falling back to first.last and digits.
            let mut work_email = String::new();
            for k in 0..50u64 {
                let local = match k {
                    0 => email_local(company.pattern, &first, &last),
                    1 => email_local(0, &first, &last),
                    _ => format!("{}{}", email_local(0, &first, &last), k),
                };
                let candidate = format!("{local}@{}", company.domain);
                if !pop.by_email.contains_key(&candidate) {
                    work_email = candidate;
                    break;
                }
            }
            let personal_email = pop.fresh_personal_email(&first, &last, hp.s("personal"));
            let phone = pop.fresh_phone(&company.country, hp.s("phone"));
            let linkedin_url = pop.fresh_linkedin(&first, &last, hp.s("linkedin"));

            let person = Person {
                index: i,
                first_name: first,
                last_name: last,
                company_name: company.name.clone(),
                domain: company.domain.clone(),
                job_title,
                seniority,
                country: company.country.clone(),
                employees: company.employees,
                icp_score,
                work_email,
                personal_email,
                phone,
                linkedin_url,
            };
            pop.index_person(person, ci);
        }
        pop
    }

    fn fresh_personal_email(&self, first: &str, last: &str, h: H) -> String {
        let f = ascii_alnum(first);
        let l = ascii_alnum(last);
        let fi: String = f.chars().take(1).collect();
        for attempt in 0..100u64 {
            let ha = h.n(attempt);
            let domain = ha.s("domain").weighted(WEBMAIL_DOMAINS);
            let num = ha.s("num").range(1, 99);
            let year = ha.s("year").range(1965, 2002);
            let local = match ha.s("shape").below(6) {
                0 if attempt == 0 => format!("{f}.{l}"),
                1 if attempt == 0 => format!("{f}{l}"),
                2 => format!("{f}.{l}{num}"),
                3 => format!("{fi}{l}{year}"),
                4 => format!("{f}_{l}{num}"),
                _ => format!("{f}{l}{year}"),
            };
            let candidate = format!("{local}@{domain}");
            if !self.by_email.contains_key(&candidate) {
                return candidate;
            }
        }
        format!("{f}.{l}.{}@gmail.com", h.get() % 1_000_000)
    }

    fn fresh_phone(&self, country: &str, h: H) -> String {
        let mut attempt = 0u64;
        loop {
            let p = gen_phone(country, h.n(attempt));
            if !all_same_digits(&p) && !self.by_phone.contains_key(&phone_digits(&p)) {
                return p;
            }
            attempt += 1;
        }
    }

    fn fresh_linkedin(&self, first: &str, last: &str, h: H) -> String {
        let base = slug_base(first, last);
        let mut attempt = 0u64;
        loop {
            let ha = h.n(attempt);
            let slug = if attempt == 0 && ha.s("plain").below(10) < 3 {
                base.clone()
            } else {
                format!("{base}-{:08x}", ha.s("suffix").get() as u32)
            };
            if !self.by_slug.contains_key(&slug) {
                return format!("https://www.linkedin.com/in/{slug}");
            }
            attempt += 1;
        }
    }

    fn index_person(&mut self, p: Person, ci: usize) {
        let i = p.index;
        let nk = name_key(&p.first_name, &p.last_name);
        self.by_name_domain
            .insert(format!("{nk}\u{1}{}", p.domain), i);
        self.by_name_company
            .insert(format!("{nk}\u{1}{}", self.companies[ci].key), i);
        self.by_name.entry(nk).or_default().push(i);
        self.by_slug.insert(p.linkedin_slug().to_string(), i);
        self.by_email.insert(p.work_email.clone(), i);
        self.by_email.insert(p.personal_email.clone(), i);
        self.by_phone.insert(phone_digits(&p.phone), i);
        self.people.push(p);
    }

    pub fn len(&self) -> usize {
        self.people.len()
    }

    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }

    /// Panics when `i >= len()` (like slice indexing).
    pub fn person(&self, i: usize) -> &Person {
        &self.people[i]
    }

    pub fn people(&self) -> &[Person] {
        &self.people
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of distinct companies.
    pub fn company_count(&self) -> usize {
        self.companies.len()
    }

    /// Case-insensitive; `domain` may carry a scheme, `www.` or a path.
    pub fn find_by_name_domain(&self, first: &str, last: &str, domain: &str) -> Option<&Person> {
        let key = format!("{}\u{1}{}", name_key(first, last), normalize_domain(domain));
        self.by_name_domain.get(&key).map(|&i| &self.people[i])
    }

    /// Case-insensitive; legal suffixes and punctuation of the company name are ignored.
    pub fn find_by_name_company(&self, first: &str, last: &str, company: &str) -> Option<&Person> {
        let key = format!(
            "{}\u{1}{}",
            name_key(first, last),
            normalize_company(company)
        );
        self.by_name_company.get(&key).map(|&i| &self.people[i])
    }

    /// Everyone with that first and last name (case-insensitive).
    pub fn find_by_name(&self, first: &str, last: &str) -> Vec<&Person> {
        self.by_name
            .get(&name_key(first, last))
            .map(|v| v.iter().map(|&i| &self.people[i]).collect())
            .unwrap_or_default()
    }

    /// Tolerant of scheme, `www.`, trailing slash, query string and case.
    pub fn find_by_linkedin(&self, url: &str) -> Option<&Person> {
        let slug = linkedin_slug(url)?;
        self.by_slug.get(&slug).map(|&i| &self.people[i])
    }

    /// Matches a work or a personal email (case-insensitive).
    pub fn find_by_email(&self, email: &str) -> Option<&Person> {
        self.by_email
            .get(&email.trim().to_lowercase())
            .map(|&i| &self.people[i])
    }

    /// Matches a phone in any formatting, with its country code (a 10-digit number is also tried
    /// as a North American one).
    pub fn find_by_phone(&self, phone: &str) -> Option<&Person> {
        let d = phone_digits(phone);
        let hit = self
            .by_phone
            .get(&d)
            .or_else(|| {
                if d.len() == 10 {
                    self.by_phone.get(&format!("1{d}"))
                } else {
                    None
                }
            })
            .copied();
        hit.map(|i| &self.people[i])
    }

    /// True for the (about 10%) company domains that accept any address. Unknown domains and
    /// webmail domains are never catch-all.
    pub fn is_catch_all_domain(&self, domain: &str) -> bool {
        self.by_domain
            .get(&normalize_domain(domain))
            .is_some_and(|&c| self.companies[c].catch_all)
    }

    /// A company domain of the population or a webmail domain.
    pub fn is_known_domain(&self, domain: &str) -> bool {
        let d = normalize_domain(domain);
        self.by_domain.contains_key(&d) || is_webmail_domain(&d)
    }

    /// The ground truth of an address.
    pub fn email_truth(&self, email: &str) -> EmailTruth {
        if self.find_by_email(email).is_some() {
            return EmailTruth::Valid;
        }
        match email.trim().rsplit_once('@') {
            Some((_, domain)) if self.is_catch_all_domain(domain) => EmailTruth::CatchAll,
            _ => EmailTruth::Invalid,
        }
    }

    /// A plausible but wrong work email for person `i`: another pattern at the right domain,
    /// guaranteed not to be anyone's true address.
    pub(crate) fn wrong_work_email(&self, i: usize, h: H) -> String {
        let p = &self.people[i];
        let start = h.below(PATTERNS.len() as u64) as usize;
        for k in 0..PATTERNS.len() {
            let pat = (start + k) % PATTERNS.len();
            let candidate = format!(
                "{}@{}",
                email_local(pat, &p.first_name, &p.last_name),
                p.domain
            );
            if candidate != p.work_email && !self.by_email.contains_key(&candidate) {
                return candidate;
            }
        }
        let mut n = 2 + h.below(7);
        loop {
            let candidate = format!(
                "{}{n}@{}",
                email_local(0, &p.first_name, &p.last_name),
                p.domain
            );
            if !self.by_email.contains_key(&candidate) {
                return candidate;
            }
            n += 1;
        }
    }

    /// A wrong personal email (another address at a webmail domain, nobody's).
    pub(crate) fn wrong_personal_email(&self, i: usize, h: H) -> String {
        let p = &self.people[i];
        let mut attempt = 0u64;
        loop {
            let c = self.fresh_personal_email(&p.first_name, &p.last_name, h.n(attempt));
            if c != p.personal_email {
                return c;
            }
            attempt += 1;
        }
    }

    /// A wrong mobile (same country format, other digits, nobody's).
    pub(crate) fn wrong_phone(&self, i: usize, h: H) -> String {
        let p = &self.people[i];
        self.fresh_phone(&p.country, h.s("wrong"))
    }

    /// Another LinkedIn URL with a similar slug, nobody's.
    pub(crate) fn wrong_linkedin(&self, i: usize, h: H) -> String {
        let p = &self.people[i];
        let mut attempt = 0u64;
        loop {
            let c = self.fresh_linkedin(&p.first_name, &p.last_name, h.s("wrong").n(attempt));
            if c != p.linkedin_url {
                return c;
            }
            attempt += 1;
        }
    }
}

/// gmail.com, outlook.com, yahoo.com, hotmail.com, icloud.com, proton.me, gmx.de.
pub fn is_webmail_domain(domain: &str) -> bool {
    let d = normalize_domain(domain);
    WEBMAIL_DOMAINS.iter().any(|(w, _)| *w == d)
}

fn job_title(seniority: &str, h: H) -> String {
    let dept = *h.s("dept").pick(DEPARTMENTS);
    match seniority {
        "c_suite" => h.s("c").pick(C_SUITE_TITLES).to_string(),
        "vp" => {
            if h.s("v").below(2) == 0 {
                format!("VP of {dept}")
            } else {
                format!("Vice President, {dept}")
            }
        }
        "director" => {
            if h.s("d").below(3) == 0 {
                format!("Head of {dept}")
            } else {
                format!("Director of {dept}")
            }
        }
        "manager" => {
            if h.s("m").below(3) == 0 {
                format!("Senior {dept} Manager")
            } else {
                format!("{dept} Manager")
            }
        }
        _ => {
            let role = match dept {
                "Engineering" => "Software Engineer",
                "Sales" => "Account Executive",
                "Data" => "Data Analyst",
                "Finance" => "Financial Analyst",
                "Marketing" => "Marketing Specialist",
                "Customer Success" => "Customer Success Specialist",
                "Legal" => "Legal Counsel",
                "IT" => "Systems Administrator",
                "Product" => "Product Designer",
                "People" => "Recruiter",
                "Revenue" => "Revenue Operations Analyst",
                _ => "Operations Specialist",
            };
            if h.s("sr").below(3) == 0 {
                format!("Senior {role}")
            } else {
                role.to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizers() {
        assert_eq!(
            normalize_domain("HTTPS://www.Acme.com/about?x=1"),
            "acme.com"
        );
        assert_eq!(normalize_domain("acme.co.uk:443"), "acme.co.uk");
        assert_eq!(
            normalize_company("Northwind Analytics, Inc."),
            "northwind analytics"
        );
        assert_eq!(normalize_company("Blue Labs GmbH"), "blue labs");
        assert_eq!(
            linkedin_slug("linkedin.com/in/John-Smith-1a2b/?trk=x").as_deref(),
            Some("john-smith-1a2b")
        );
        assert_eq!(linkedin_slug("https://www.linkedin.com/company/acme"), None);
        assert_eq!(human_phone("+14155552671"), "+1 415-555-2671");
        assert_eq!(human_phone("+447911123456"), "+44 7911 123456");
        assert_eq!(human_phone("+33612345678"), "+33 6 12 34 56 78");
        assert_eq!(human_phone("+4915123456789"), "+49 151 23456789");
        assert_eq!(human_phone("+34612345678"), "+34 612 34 56 78");
        assert_eq!(human_phone("+31612345678"), "+31 6 12345678");
        assert_eq!(human_phone("+61412345678"), "+61 412 345 678");
        assert_eq!(slug_base("Anne-Marie", "O'Brien"), "anne-marie-obrien");
        assert_eq!(slug_base("Daan", "de Jong"), "daan-de-jong");
    }
}
