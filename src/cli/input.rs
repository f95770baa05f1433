//! Leads from a file: CSV (a header row, one lead per row), a JSON array of
//! objects, or JSON Lines. Each lead needs an id (`id`, `lead_id`,
//! `hs_object_id` or `Id`); a bad row is reported and skipped, the rest go on.

use std::path::Path;

use serde_json::{Map, Value};

use crate::core::lead::{Lead, LeadId};

const ID_COLUMNS: [&str; 4] = ["id", "lead_id", "hs_object_id", "Id"];

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Format { file: String, message: String },
}

/// Leads read, and the rows that could not be used (with their reason).
#[derive(Debug, Default)]
pub struct Loaded {
    pub leads: Vec<Lead>,
    pub problems: Vec<String>,
}

pub fn read_leads(path: &Path) -> Result<Loaded, InputError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        file: file.clone(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    match ext {
        "csv" => Ok(from_csv(&text)),
        "json" => from_json(&file, &text),
        "jsonl" | "ndjson" => Ok(from_json_lines(&text)),
        _ => Err(InputError::Format {
            file,
            message: "unknown file type: use .csv, .json (an array of objects) or .jsonl".into(),
        }),
    }
}

pub fn from_csv(text: &str) -> Loaded {
    let mut out = Loaded::default();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.problems.push(format!("header row: {e}"));
            return out;
        }
    };
    let Some(id_col) = ID_COLUMNS
        .iter()
        .find_map(|c| headers.iter().position(|h| h == *c))
    else {
        out.problems.push(format!(
            "no id column (expected one of: {})",
            ID_COLUMNS.join(", ")
        ));
        return out;
    };
    for (i, rec) in rdr.records().enumerate() {
        let row = i + 2; // 1-based, after the header
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                out.problems.push(format!("row {row}: {e}"));
                continue;
            }
        };
        let id = rec.get(id_col).unwrap_or_default().trim();
        if id.is_empty() {
            out.problems.push(format!("row {row}: empty id"));
            continue;
        }
        let mut lead = Lead::new(id);
        for (h, v) in headers.iter().zip(rec.iter()) {
            if !v.trim().is_empty() {
                lead.fields
                    .insert(h.to_string(), Value::String(v.to_string()));
            }
        }
        out.leads.push(lead);
    }
    out
}

fn from_json(file: &str, text: &str) -> Result<Loaded, InputError> {
    let v: Value = serde_json::from_str(text).map_err(|e| InputError::Format {
        file: file.to_string(),
        message: format!("not valid JSON: {e}"),
    })?;
    let Value::Array(items) = v else {
        return Err(InputError::Format {
            file: file.to_string(),
            message: "expected an array of lead objects".into(),
        });
    };
    let mut out = Loaded::default();
    for (i, item) in items.into_iter().enumerate() {
        match lead_from_value(item) {
            Ok(l) => out.leads.push(l),
            Err(why) => out.problems.push(format!("item {i}: {why}")),
        }
    }
    Ok(out)
}

fn from_json_lines(text: &str) -> Loaded {
    let mut out = Loaded::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => match lead_from_value(v) {
                Ok(l) => out.leads.push(l),
                Err(why) => out.problems.push(format!("line {}: {why}", i + 1)),
            },
            Err(e) => out
                .problems
                .push(format!("line {}: not valid JSON: {e}", i + 1)),
        }
    }
    out
}

/// `{"id": .., "fields": {..}}` or a flat object with an id key.
pub fn lead_from_value(v: Value) -> Result<Lead, String> {
    let Value::Object(mut obj) = v else {
        return Err("not an object".into());
    };
    let id = ID_COLUMNS
        .iter()
        .find_map(|k| obj.get(*k))
        .and_then(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .ok_or_else(|| format!("no id (expected one of: {})", ID_COLUMNS.join(", ")))?;
    let fields: Map<String, Value> = match obj.remove("fields") {
        Some(Value::Object(f)) => f,
        Some(_) => return Err("`fields` is not an object".into()),
        None => obj,
    };
    Ok(Lead {
        id: LeadId(id),
        fields: fields.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_with_problems_are_skipped_not_fatal() {
        let l = from_csv("id,firstname,lastname\n1,Ada,Lovelace\n,No,Id\n3,Grace\n4,Alan,Turing\n");
        let ids: Vec<&str> = l.leads.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["1", "4"]);
        assert_eq!(l.problems.len(), 2, "{:?}", l.problems);
        assert!(l.problems[0].contains("row 3"));
        assert_eq!(l.leads[0].text("firstname").as_deref(), Some("Ada"));
    }

    #[test]
    fn csv_without_an_id_column() {
        let l = from_csv("name\nx\n");
        assert!(l.leads.is_empty());
        assert!(l.problems[0].contains("no id column"));
    }

    #[test]
    fn json_shapes() {
        let nested =
            lead_from_value(serde_json::json!({"id": 7, "fields": {"firstname": "Ada"}})).unwrap();
        assert_eq!(nested.id.as_str(), "7");
        assert_eq!(nested.text("firstname").as_deref(), Some("Ada"));
        let flat =
            lead_from_value(serde_json::json!({"hs_object_id": "9", "lastname": "L"})).unwrap();
        assert_eq!(flat.text("lastname").as_deref(), Some("L"));
        assert!(lead_from_value(serde_json::json!({"firstname": "x"})).is_err());
        assert!(lead_from_value(serde_json::json!([1])).is_err());
        let lines = from_json_lines("{\"id\":\"1\"}\nnot json\n\n{\"x\":1}\n");
        assert_eq!(lines.leads.len(), 1);
        assert_eq!(lines.problems.len(), 2);
    }
}
