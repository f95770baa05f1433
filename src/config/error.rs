//! Configuration errors: each names the file, the key and what is wrong, and
//! says what to do. All problems found are reported together.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `workspaces[0].audiences[1].channels[2]`.
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            line: None,
            message: message.into(),
            hint: None,
        }
    }
    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
}

/// One or more problems in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn one(file: &Path, p: Problem) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![p],
        }
    }

    /// Whether any problem is about `key` (tests and callers use it).
    pub fn mentions(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        let n = self.problems.len();
        if n != 1 {
            writeln!(f, "{file}: {n} problems")?;
        }
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(l) => write!(f, "{file}:{l}: ")?,
                None => write!(f, "{file}: ")?,
            }
            if p.key.is_empty() {
                write!(f, "{}", p.message)?;
            } else {
                write!(f, "key `{}`: {}", p.key, p.message)?;
            }
            if let Some(h) = &p.hint {
                write!(f, "\n  hint: {h}")?;
            }
        }
        Ok(())
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

/// Deserialises TOML, turning any error into a [`Problem`] with the key path
/// and line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let mut p = Problem::new("", format!("not valid TOML: {}", e.message()));
        p.line = e.span().map(|s| line_of(text, s.start));
        ConfigError::one(file, p)
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let key = if key == "." { String::new() } else { key };
        let mut p = Problem::new(key, inner.message().to_string());
        p.line = inner.span().map(|s| line_of(text, s.start));
        if p.message.starts_with("unknown field") {
            p.hint = Some("check the spelling against the documented keys in config.toml".into());
        }
        ConfigError::one(file, p)
    })
}
