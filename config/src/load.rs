//! Reading the system file: YAML syntax, types and unknown keys, each error with file:line:column.

use std::path::{Path, PathBuf};

use crate::locate::{Mark, SourceMap};
use crate::model::System;
use crate::report::{Finding, Severity};

/// A parsed system file with the source map needed to point at its fields.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub system: System,
    /// The system file as given.
    pub file: PathBuf,
    /// Its directory: relative paths in the file are relative to it.
    pub dir: PathBuf,
    pub source: SourceMap,
}

/// Why a system file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read system file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Finding>),
}

impl LoadError {
    /// The findings behind the error (a read error becomes one finding).
    pub fn findings(&self) -> Vec<Finding> {
        match self {
            LoadError::Read { path, source } => {
                vec![
                    Finding::error("read", format!("cannot read system file: {source}"))
                        .in_file(path.clone(), None),
                ]
            }
            LoadError::Invalid(f) => f.clone(),
        }
    }
}

/// Reads and parses a system file.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses system-file text; `path` is used in messages and to resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, LoadError> {
    let source = SourceMap::build(text).map_err(|e| {
        LoadError::Invalid(vec![Finding::error(
            "yaml",
            format!("invalid YAML: {}", e.message),
        )
        .in_file(path, Some(e.at))])
    })?;
    let mut findings: Vec<Finding> = source
        .duplicates
        .iter()
        .map(|d| {
            Finding::error(
                "duplicate-key",
                format!("duplicate key (first defined at line {})", d.first.line),
            )
            .in_file(path, Some(d.at))
            .field(d.path.clone())
        })
        .collect();
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let system = match serde_path_to_error::deserialize::<_, System>(de) {
        Ok(s) => Some(s),
        Err(e) => {
            findings.push(type_error(path, &source, &e));
            None
        }
    };
    match system {
        Some(system) if findings.is_empty() => {
            let dir = path
                .parent()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    }
                })
                .unwrap_or(Path::new("."))
                .to_path_buf();
            Ok(Loaded {
                system,
                file: path.to_path_buf(),
                dir,
                source,
            })
        }
        _ => Err(LoadError::Invalid(findings)),
    }
}

/// Turns a serde error into a finding naming file, line, column and field path.
fn type_error(
    path: &Path,
    source: &SourceMap,
    e: &serde_path_to_error::Error<serde_yaml_ng::Error>,
) -> Finding {
    let mut field = e.path().to_string();
    if field == "." {
        field.clear();
    }
    let inner = e.inner();
    let mut message = inner.to_string();
    // serde_yaml_ng appends " at line L column C"; we print the place ourselves.
    if let Some(cut) = message.rfind(" at line ") {
        message.truncate(cut);
    }
    // It may also prefix the path it knows; drop it so the path shows once.
    if let Some((prefix, rest)) = message.split_once(": ") {
        if !prefix.contains(' ') && field.starts_with(prefix) {
            message = rest.to_string();
        }
    }
    let mut at = inner.location().map(|l| Mark {
        line: l.line(),
        column: l.column(),
    });
    if let Some(name) = unknown_field(&message) {
        let last = field.rsplit(['.', ']']).next().unwrap_or_default();
        if last != name {
            field = crate::locate::join_key(&field, &name);
        }
        at = source.locate_key(&field).or(at);
    } else if at.is_none() {
        at = source.locate(&field);
    }
    let mut f = Finding {
        severity: Severity::Error,
        code: "type",
        file: Some(path.to_path_buf()),
        at,
        field: None,
        message,
    };
    if !field.is_empty() {
        f.field = Some(field);
    }
    f
}

/// The key named by an "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

impl Loaded {
    /// A finding about the field at `path` of this file.
    pub fn at(
        &self,
        severity: Severity,
        code: &'static str,
        path: &str,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            severity,
            code,
            file: Some(self.file.clone()),
            at: self.source.locate(path),
            field: Some(path.to_string()),
            message: message.into(),
        }
    }

    /// Resolves a path written in the system file against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}
