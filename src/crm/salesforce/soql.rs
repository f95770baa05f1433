//! SOQL for the pull (§2.1–§2.3, §2.5).
//!
//! **Incremental query.** One query shape serves the backfill and every
//! incremental pass:
//!
//! ```text
//! SELECT Id, SystemModstamp, IsConverted, <fields> FROM Lead
//! WHERE IsConverted = false
//!   AND SystemModstamp >= <watermark − lookback>      (absent on a backfill)
//!   AND SystemModstamp <= <sync start>
//!   AND (SystemModstamp > <t> OR (SystemModstamp = <t> AND Id > '<id>'))   (after a position)
//! ORDER BY SystemModstamp ASC, Id ASC
//! LIMIT <n>
//! ```
//!
//! - `SystemModstamp` is the cursor (§2.3: it also moves on system updates,
//!   is indexed, and is what peers use).
//! - The keyset `(SystemModstamp, Id)` (§2.3, supaglue#532) is a total
//!   order: restarting after the last record handled neither repeats nor
//!   skips a record, however many share one timestamp (5,000 on one
//!   SystemModstamp are read exactly once). The I/O layer may follow
//!   `nextRecordsUrl` within one query and restart with a [`Keyset`] when
//!   a cursor expires (15 min, §2.1), when `LIMIT` is reached, or after a
//!   crash.
//! - The lower bound is the watermark minus a lookback (commit-visibility
//!   lag; Airbyte's default is 10 minutes, §2.3), with `>=` (issue 6).
//! - The upper bound is the sync's start with `<=`. The reference is silent
//!   on an upper bound; it comes from ARCHITECTURE.md invariant 12 (the
//!   watermark never passes a sync's start). A record changed during the
//!   pass falls outside it and is read by the next pass, whose lower bound
//!   is this pass's upper bound minus the lookback. Both bounds are whole
//!   seconds (Salesforce keeps datetimes to the second), the upper one
//!   rounded down, and [`Window::next_watermark`] is that rounded bound.
//! - Leads: `IsConverted = false` (§2.3: a converted Lead cannot be
//!   updated, `CANNOT_UPDATE_CONVERTED_LEAD`).
//!
//! **Literals.** Datetimes unquoted ISO-8601 with `Z` (§2.1); strings in
//! single quotes with SOQL's backslash escapes ([`quote`]); field names are
//! checked against API-name syntax ([`is_field_name`]) so no input can
//! change a query's shape.

use serde_json::{Value, json};

use super::datetime::{floor_second, soql_literal};
use super::{SObject, data_path};
use crate::core::value::UnixMillis;

/// Records per query page Salesforce defaults to, and the most it allows
/// in `Sforce-Query-Options: batchSize` (§2.1).
pub const MAX_BATCH: u32 = 2000;
/// The least `batchSize` Salesforce accepts (§2.1).
pub const MIN_BATCH: u32 = 200;
/// `Id IN (…)` lists are kept short so a query URL stays far below the
/// 16,384-byte URI limit (§6.1, 414).
pub const MAX_IDS_PER_QUERY: usize = 200;
/// Airbyte's default lookback (`PT10M`, §2.3).
pub const DEFAULT_LOOKBACK_MS: i64 = 10 * 60 * 1000;

/// Why a query could not be built. Never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoqlError {
    #[error(
        "`{0}` is not a Salesforce field API name (letters, digits and underscores, starting with a letter; `Relationship.Field` for a parent's field)"
    )]
    BadFieldName(String),
    #[error("a SOQL string cannot hold the control character U+{0:04X}")]
    BadCharacter(u32),
    #[error("the instant {0} ms is outside what a SOQL datetime can express")]
    BadInstant(UnixMillis),
    #[error("`{0}` is not a Salesforce record Id (15 or 18 letters and digits)")]
    BadId(String),
    #[error("{0} Ids in one query; at most {MAX_IDS_PER_QUERY} (split the list)")]
    TooManyIds(usize),
    #[error("no Id to read")]
    NoIds,
}

/// A Salesforce field API name, or a parent relationship path
/// (`Account.Name`): segments of letters, digits and underscores, each
/// starting with a letter (§5: custom names end in `__c`, managed ones are
/// `ns__Field__c`).
pub fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|seg| {
            let mut b = seg.bytes();
            b.next().is_some_and(|c| c.is_ascii_alphabetic())
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        })
}

/// The body of a SOQL string literal: `\` `'` `"` and the escapable
/// control characters written as backslash escapes. Other control
/// characters have no escape in SOQL and are refused.
pub fn escape(s: &str) -> Result<String, SoqlError> {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => return Err(SoqlError::BadCharacter(c as u32)),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A quoted SOQL string literal.
pub fn quote(s: &str) -> Result<String, SoqlError> {
    Ok(format!("'{}'", escape(s)?))
}

/// A SOQL datetime literal (§2.1), or an error outside the expressible range.
pub fn datetime(t: UnixMillis) -> Result<String, SoqlError> {
    soql_literal(t).ok_or(SoqlError::BadInstant(t))
}

/// The fields always selected: the record Id and the cursor, plus
/// `IsConverted` on Leads so a converted Lead read by Id is recognised
/// (`records` skips it).
pub fn identity_columns(object: SObject) -> &'static [&'static str] {
    match object {
        SObject::Lead => &["Id", "SystemModstamp", "IsConverted"],
        SObject::Contact => &["Id", "SystemModstamp"],
    }
}

/// The SELECT list: [`identity_columns`] first, then `wanted` in order,
/// without repeats (compared case-insensitively, as Salesforce does; the
/// first spelling wins) or blanks. Every name must pass [`is_field_name`].
pub fn select_fields<'a>(
    object: SObject,
    wanted: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, SoqlError> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let always = identity_columns(object).iter().copied();
    for f in always
        .chain(wanted)
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        if !is_field_name(f) {
            return Err(SoqlError::BadFieldName(f.to_string()));
        }
        if seen.insert(f.to_ascii_lowercase()) {
            out.push(f.to_string());
        }
    }
    Ok(out)
}

/// The SystemModstamp range one pass reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `SystemModstamp >= from`; `None` on a backfill (everything).
    pub from: Option<UnixMillis>,
    /// `SystemModstamp <= to`: the sync's start, rounded down to a second.
    pub to: UnixMillis,
}

impl Window {
    /// The window of a pass starting at `sync_start`: from the stored
    /// `watermark` minus `lookback_ms` (a negative lookback counts as 0),
    /// or everything when there is no watermark yet. `from` never exceeds
    /// `to`, even with a watermark in the future (a clock set back).
    pub fn new(watermark: Option<UnixMillis>, lookback_ms: i64, sync_start: UnixMillis) -> Window {
        let to = floor_second(sync_start);
        let from = watermark.map(|w| floor_second(w.saturating_sub(lookback_ms.max(0))).min(to));
        Window { from, to }
    }

    /// The watermark to store once every page of the pass was stored,
    /// enriched and written (ARCHITECTURE.md invariant 12): the upper bound
    /// actually queried, never later than the sync's start.
    pub fn next_watermark(&self) -> UnixMillis {
        self.to
    }

    /// Whether `modstamp` falls inside the window (the same test the query
    /// makes): a record outside it in an answer is a server bug or a clock
    /// mismatch, which the caller may log.
    pub fn contains(&self, modstamp: UnixMillis) -> bool {
        self.from.is_none_or(|f| modstamp >= f) && modstamp <= self.to
    }
}

/// A position in `(SystemModstamp, Id)` order: the last record handled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Keyset {
    pub modstamp: UnixMillis,
    pub id: String,
}

impl Keyset {
    /// Whether a record at `(modstamp, id)` comes strictly after this
    /// position: what the keyset condition selects. Ids compare as strings
    /// (what `ORDER BY Id` / `Id >` do on Salesforce's case-sensitive Ids).
    pub fn is_before(&self, modstamp: UnixMillis, id: &str) -> bool {
        modstamp > self.modstamp || (modstamp == self.modstamp && id > self.id.as_str())
    }
}

/// One incremental (or backfill) query.
#[derive(Debug, Clone, PartialEq)]
pub struct IncrementalQuery {
    pub object: SObject,
    /// The SELECT list, from [`select_fields`].
    pub fields: Vec<String>,
    pub window: Window,
    /// Restart strictly after this position.
    pub after: Option<Keyset>,
    /// `LIMIT n`; `None` reads to the end (paged by `nextRecordsUrl`).
    pub limit: Option<u32>,
}

impl IncrementalQuery {
    fn conditions(&self) -> Result<Vec<String>, SoqlError> {
        let mut w = Vec::new();
        if self.object == SObject::Lead {
            w.push("IsConverted = false".to_string());
        }
        if let Some(from) = self.window.from {
            w.push(format!("SystemModstamp >= {}", datetime(from)?));
        }
        w.push(format!("SystemModstamp <= {}", datetime(self.window.to)?));
        if let Some(k) = &self.after {
            if !super::is_record_id(&k.id) {
                return Err(SoqlError::BadId(k.id.clone()));
            }
            let t = datetime(k.modstamp)?;
            w.push(format!(
                "(SystemModstamp > {t} OR (SystemModstamp = {t} AND Id > {}))",
                quote(&k.id)?
            ));
        }
        Ok(w)
    }

    fn select(&self) -> Result<String, SoqlError> {
        let fields = select_fields(self.object, self.fields.iter().map(String::as_str))?;
        Ok(format!(
            "SELECT {} FROM {}",
            fields.join(", "),
            self.object.as_str()
        ))
    }

    /// The SOQL text for the REST query resource.
    pub fn soql(&self) -> Result<String, SoqlError> {
        let mut q = format!(
            "{} WHERE {} ORDER BY SystemModstamp ASC, Id ASC",
            self.select()?,
            self.conditions()?.join(" AND ")
        );
        if let Some(n) = self.limit {
            q.push_str(&format!(" LIMIT {}", n.max(1)));
        }
        Ok(q)
    }

    /// The same records for a Bulk API 2.0 query job (§2.5): no ORDER BY or
    /// LIMIT (a bulk job returns every row, in chunks the caller pages by
    /// `Sforce-Locator`; the order is not relied upon).
    pub fn bulk_soql(&self) -> Result<String, SoqlError> {
        Ok(format!(
            "{} WHERE {}",
            self.select()?,
            self.conditions()?.join(" AND ")
        ))
    }
}

/// `SELECT <fields> FROM <object> WHERE Id IN (…)`: records re-read by Id
/// (an Outbound Message's record, §7.1 "re-read the record by Id"). At most
/// [`MAX_IDS_PER_QUERY`] Ids.
pub fn by_ids(object: SObject, fields: &[String], ids: &[&str]) -> Result<String, SoqlError> {
    if ids.is_empty() {
        return Err(SoqlError::NoIds);
    }
    if ids.len() > MAX_IDS_PER_QUERY {
        return Err(SoqlError::TooManyIds(ids.len()));
    }
    let mut quoted = Vec::with_capacity(ids.len());
    for id in ids {
        if !super::is_record_id(id) {
            return Err(SoqlError::BadId((*id).to_string()));
        }
        quoted.push(quote(id)?);
    }
    let fields = select_fields(object, fields.iter().map(String::as_str))?;
    Ok(format!(
        "SELECT {} FROM {} WHERE Id IN ({})",
        fields.join(", "),
        object.as_str(),
        quoted.join(", ")
    ))
}

/// The path (and query string) of the REST query resource for `soql`
/// (§2.1). `query_all` reads deleted and merged rows too (§2.2).
pub fn query_path(soql: &str, query_all: bool) -> String {
    let q: String = url::form_urlencoded::byte_serialize(soql.as_bytes()).collect();
    let resource = if query_all { "queryAll" } else { "query" };
    format!("{}?q={q}", data_path(resource))
}

/// `Sforce-Query-Options: batchSize=N`, clamped to 200..=2000 (§2.1;
/// Salesforce may still return fewer, e.g. 200 with long-text fields).
pub fn query_options_header(batch: u32) -> (&'static str, String) {
    (
        "Sforce-Query-Options",
        format!("batchSize={}", batch.clamp(MIN_BATCH, MAX_BATCH)),
    )
}

/// Bulk API 2.0 query job body (`POST …/jobs/query`, §2.5).
pub fn bulk_query_job(soql: &str, query_all: bool) -> Value {
    json!({
        "operation": if query_all { "queryAll" } else { "query" },
        "query": soql,
    })
}

/// `GET …/jobs/query/{id}/results?maxRecords=N[&locator=L]` (§2.5). The
/// locator comes from the previous answer's `Sforce-Locator` header; the
/// literal `null` there means there is no next chunk ([`next_locator`]).
pub fn bulk_query_results_path(job_id: &str, max_records: u32, locator: Option<&str>) -> String {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let mut p = format!(
        "{}?maxRecords={}",
        data_path(&format!("jobs/query/{}/results", enc(job_id))),
        max_records.max(1)
    );
    if let Some(l) = locator {
        p.push_str("&locator=");
        p.push_str(&enc(l));
    }
    p
}

/// The next chunk's locator from a `Sforce-Locator` header value: `None`
/// when absent, empty or `null` (the last chunk).
pub fn next_locator(header: Option<&str>) -> Option<String> {
    let h = header?.trim();
    (!h.is_empty() && !h.eq_ignore_ascii_case("null")).then(|| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: UnixMillis = 1_777_620_337_000; // 2026-05-01T07:25:37Z

    fn lead_query(after: Option<Keyset>, limit: Option<u32>) -> IncrementalQuery {
        IncrementalQuery {
            object: SObject::Lead,
            fields: vec!["Email".into(), "FirstName".into(), "email".into()],
            window: Window::new(Some(T), DEFAULT_LOOKBACK_MS, T + 3_600_000 + 999),
            after,
            limit,
        }
    }

    #[test]
    fn incremental_query_text() {
        let q = lead_query(None, Some(2000)).soql().unwrap();
        assert_eq!(
            q,
            "SELECT Id, SystemModstamp, IsConverted, Email, FirstName FROM Lead \
             WHERE IsConverted = false AND SystemModstamp >= 2026-05-01T07:15:37Z \
             AND SystemModstamp <= 2026-05-01T08:25:37Z \
             ORDER BY SystemModstamp ASC, Id ASC LIMIT 2000"
        );
    }

    #[test]
    fn keyset_restart_text() {
        let k = Keyset {
            modstamp: T,
            id: "00Qxx0000001abcEAA".into(),
        };
        let q = lead_query(Some(k), None).soql().unwrap();
        assert!(
            q.contains(
                "AND (SystemModstamp > 2026-05-01T07:25:37Z OR (SystemModstamp = 2026-05-01T07:25:37Z AND Id > '00Qxx0000001abcEAA')) ORDER BY"
            ),
            "{q}"
        );
        assert!(!q.contains("LIMIT"));
    }

    #[test]
    fn contacts_have_no_converted_filter_and_backfills_no_lower_bound() {
        let q = IncrementalQuery {
            object: SObject::Contact,
            fields: vec!["Account.Name".into()],
            window: Window::new(None, DEFAULT_LOOKBACK_MS, T),
            after: None,
            limit: None,
        };
        assert_eq!(
            q.soql().unwrap(),
            "SELECT Id, SystemModstamp, Account.Name FROM Contact \
             WHERE SystemModstamp <= 2026-05-01T07:25:37Z ORDER BY SystemModstamp ASC, Id ASC"
        );
        assert_eq!(
            q.bulk_soql().unwrap(),
            "SELECT Id, SystemModstamp, Account.Name FROM Contact WHERE SystemModstamp <= 2026-05-01T07:25:37Z"
        );
    }

    #[test]
    fn window_bounds() {
        let w = Window::new(Some(T), 600_000, T + 10_500);
        assert_eq!(w.from, Some(T - 600_000));
        assert_eq!(w.to, T + 10_000);
        assert_eq!(w.next_watermark(), T + 10_000);
        assert!(w.next_watermark() <= T + 10_500);
        assert!(w.contains(T - 600_000) && w.contains(T + 10_000));
        assert!(!w.contains(T - 600_001) && !w.contains(T + 10_001));
        // A watermark after the start (clock set back) never inverts the window.
        let w = Window::new(Some(T + 3_600_000), 0, T);
        assert_eq!(w.from, Some(T));
        // A negative lookback is none; a huge one saturates.
        assert_eq!(Window::new(Some(T), -5, T + 1000).from, Some(T));
        assert!(Window::new(Some(i64::MIN + 1), i64::MAX, T).from.is_some());
    }

    /// Simulates paging with LIMIT through a population where 5,000 records
    /// share one SystemModstamp: every record is read exactly once.
    #[test]
    fn keyset_paging_reads_ties_exactly_once() {
        let mut rows: Vec<(UnixMillis, String)> = Vec::new();
        for i in 0..5_000 {
            rows.push((T, format!("00Q{:015}", i * 7 % 5_000)));
        }
        for i in 0..700 {
            rows.push((T - 1000 * (i % 5), format!("00Q{:015}", 10_000 + i)));
            rows.push((T + 1000 * (i % 3 + 1), format!("00Q{:015}", 20_000 + i)));
        }
        let w = Window::new(None, 0, T + 10_000);
        let mut seen = std::collections::BTreeSet::new();
        let mut after: Option<Keyset> = None;
        let mut pages = 0;
        loop {
            // What Salesforce would answer to the query.
            let mut page: Vec<&(UnixMillis, String)> = rows
                .iter()
                .filter(|(t, id)| {
                    w.contains(*t) && after.as_ref().is_none_or(|k| k.is_before(*t, id))
                })
                .collect();
            page.sort();
            page.truncate(MAX_BATCH as usize);
            if page.is_empty() {
                break;
            }
            pages += 1;
            for (t, id) in &page {
                assert!(seen.insert(id.clone()), "{id} read twice");
                let _ = t;
            }
            let (t, id) = page[page.len() - 1];
            after = Some(Keyset {
                modstamp: *t,
                id: id.clone(),
            });
        }
        assert_eq!(seen.len(), rows.len());
        assert_eq!(pages, rows.len().div_ceil(MAX_BATCH as usize));
    }

    #[test]
    fn string_literals_are_escaped() {
        assert_eq!(quote("O'Brien").unwrap(), r"'O\'Brien'");
        assert_eq!(quote(r"a\b").unwrap(), r"'a\\b'");
        assert_eq!(quote("x\"y\n\r\t").unwrap(), r#"'x\"y\n\r\t'"#);
        assert_eq!(quote("\u{8}\u{c}").unwrap(), r"'\b\f'");
        assert_eq!(quote("é ü 日本").unwrap(), "'é ü 日本'");
        assert_eq!(quote("a\u{0}b"), Err(SoqlError::BadCharacter(0)));
        // An injection attempt stays inside the literal.
        assert_eq!(quote("x' OR Id != '").unwrap(), r"'x\' OR Id != \''");
    }

    #[test]
    fn field_names_are_checked() {
        for ok in [
            "Email",
            "LinkedIn_URL__c",
            "ns__Field__c",
            "Account.Name",
            "a1",
        ] {
            assert!(is_field_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1Email",
            "Email,Phone",
            "Email FROM Lead",
            "a..b",
            ".a",
            "a.",
            "Em-ail",
            "_x",
        ] {
            assert!(!is_field_name(bad), "{bad}");
        }
        assert_eq!(
            select_fields(SObject::Lead, ["Email", "Id", "x y"]),
            Err(SoqlError::BadFieldName("x y".into()))
        );
        assert_eq!(
            select_fields(SObject::Lead, ["email", " ", "Phone", "ISCONVERTED"]).unwrap(),
            vec!["Id", "SystemModstamp", "IsConverted", "email", "Phone"]
        );
    }

    #[test]
    fn by_ids_query() {
        let q = by_ids(
            SObject::Contact,
            &["Email".into()],
            &["003xx000004TmiQAAS", "003xx000004TmiRAAS"],
        )
        .unwrap();
        assert_eq!(
            q,
            "SELECT Id, SystemModstamp, Email FROM Contact WHERE Id IN ('003xx000004TmiQAAS', '003xx000004TmiRAAS')"
        );
        assert_eq!(by_ids(SObject::Lead, &[], &[]), Err(SoqlError::NoIds));
        assert!(matches!(
            by_ids(SObject::Lead, &[], &["x' OR '1'='1"]),
            Err(SoqlError::BadId(_))
        ));
        let many: Vec<&str> = (0..201).map(|_| "00Qxx0000001abcEAA").collect();
        assert_eq!(
            by_ids(SObject::Lead, &[], &many),
            Err(SoqlError::TooManyIds(201))
        );
    }

    #[test]
    fn bad_keyset_id_and_instant_are_errors() {
        let k = Keyset {
            modstamp: T,
            id: "x') OR (Id != '".into(),
        };
        assert!(matches!(
            lead_query(Some(k), None).soql(),
            Err(SoqlError::BadId(_))
        ));
        let mut q = lead_query(None, None);
        q.window.to = i64::MAX;
        assert_eq!(q.soql(), Err(SoqlError::BadInstant(i64::MAX)));
    }

    #[test]
    fn paths_and_headers() {
        assert_eq!(
            query_path(
                "SELECT Id FROM Lead WHERE SystemModstamp > 2024-01-01T00:00:00Z",
                false
            ),
            "/services/data/v62.0/query?q=SELECT+Id+FROM+Lead+WHERE+SystemModstamp+%3E+2024-01-01T00%3A00%3A00Z"
        );
        assert!(
            query_path("SELECT Id FROM Lead", true).starts_with("/services/data/v62.0/queryAll?q=")
        );
        assert_eq!(query_options_header(5000).1, "batchSize=2000");
        assert_eq!(query_options_header(10).1, "batchSize=200");
        assert_eq!(query_options_header(500).1, "batchSize=500");
        assert_eq!(
            bulk_query_job("SELECT Id FROM Lead", false),
            json!({"operation":"query","query":"SELECT Id FROM Lead"})
        );
        assert_eq!(bulk_query_job("q", true)["operation"], "queryAll");
        assert_eq!(
            bulk_query_results_path("750xx", 50000, Some("MTAwMDA")),
            "/services/data/v62.0/jobs/query/750xx/results?maxRecords=50000&locator=MTAwMDA"
        );
        assert_eq!(next_locator(Some("null")), None);
        assert_eq!(next_locator(Some("")), None);
        assert_eq!(next_locator(None), None);
        assert_eq!(next_locator(Some(" MTAw ")).as_deref(), Some("MTAw"));
    }
}
