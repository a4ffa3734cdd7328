//! Reading the system file: YAML syntax, types and unknown keys, each error with file:line:column.

use std::path::{Path, PathBuf};

use crate::locate::{Mark, SourceMap};
use crate::model::System;
use crate::recover;
use crate::report::{Finding, Severity};
use crate::tree::{Kind, Tree};

/// A parsed system file with the source map needed to point at its fields.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub system: System,
    /// The system file as given.
    pub file: PathBuf,
    /// Its directory: relative paths in the file are relative to it.
    pub dir: PathBuf,
    pub source: SourceMap,
    /// Field paths that could not be read (a type error, a stand-in value): findings about
    /// them or below them are consequences of the error already reported, so `check`
    /// leaves them out.
    pub hidden: Vec<String>,
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

/// Reads and parses a system file; any error finding makes it an `Err`.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = read(path)?;
    parse(path, &text)
}

/// Parses system-file text; `path` is used in messages and to resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, LoadError> {
    match parse_all(path, text) {
        (Some(l), findings) if !findings.iter().any(Finding::is_error) => Ok(l),
        (_, findings) => Err(LoadError::Invalid(findings)),
    }
}

/// Reads a system file and parses as much of it as can be read: every finding of the
/// file (syntax, types, unknown and duplicate keys, tags), and the system made of the parts
/// that parsed (`None` when nothing could be), for the static checks to go on with.
pub fn load_all(path: &Path) -> (Option<Loaded>, Vec<Finding>) {
    match read(path) {
        Ok(text) => parse_all(path, &text),
        Err(e) => (None, e.findings()),
    }
}

/// A system file larger than this is refused (the seed's is 20 KiB; 2,000 agents are 300 KiB).
pub const MAX_SYSTEM_FILE: u64 = 16 << 20;

fn read(path: &Path) -> Result<String, LoadError> {
    let fail = |source: std::io::Error| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    // A FIFO would block the read until a writer comes, a device could never end.
    let bytes = crate::fsread::read_regular(path, MAX_SYSTEM_FILE).map_err(fail)?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        LoadError::Invalid(vec![Finding::error(
            "encoding",
            "the system file is not valid UTF-8 (save it as UTF-8)",
        )
        .in_file(path, Some(Mark { line, column }))])
    })
}

/// [`load_all`] on text.
pub fn parse_all(path: &Path, text: &str) -> (Option<Loaded>, Vec<Finding>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let syntax = |at: Mark, message: &str| {
        Finding::error("yaml", format!("invalid YAML: {message}")).in_file(path, Some(at))
    };
    let mut tree = match Tree::parse(text) {
        Ok(t) => t,
        Err(e) => return (None, vec![syntax(e.at, &e.message)]),
    };
    let source = match SourceMap::build(text) {
        Ok(s) => s,
        Err(e) => return (None, vec![syntax(e.at, &e.message)]),
    };
    let mut findings: Vec<Finding> = source
        .duplicates
        .iter()
        .map(|d| {
            Finding::error(
                "duplicate-key",
                format!(
                    "duplicate key `{}` (first defined at line {}); only the first is read",
                    d.path.rsplit('.').next().unwrap_or_default(),
                    d.first.line
                ),
            )
            .in_file(path, Some(d.at))
            .field(d.path.clone())
        })
        .collect();
    let mut hidden: Vec<String> = Vec::new();
    for i in &tree.issues {
        let mut f = Finding::error("yaml", i.message.clone()).in_file(path, Some(i.at));
        if !i.path.is_empty() {
            f = f.field(i.path.clone());
            hidden.push(i.path.clone());
        }
        findings.push(f);
    }
    let root_kind = tree.root.as_ref().map(|r| match &r.kind {
        Kind::Map(_) => None,
        Kind::Seq(_) => Some("a list"),
        Kind::Scalar { text, .. } if text.trim().is_empty() => Some("nothing"),
        Kind::Scalar { .. } => Some("a single value"),
    });
    match root_kind {
        None | Some(Some("nothing")) => {
            findings.push(
                Finding::error(
                    "empty",
                    "the system file is empty; it needs at least a `hosts:` section",
                )
                .in_file(path, Some(Mark { line: 1, column: 1 })),
            );
            return (None, findings);
        }
        Some(Some(what)) => {
            let at = tree.root.as_ref().map(|r| r.mark);
            findings.push(
                Finding::error(
                    "type",
                    format!("the system file must be a mapping (hosts:, images:, groups:, ...), not {what}"),
                )
                .in_file(path, at),
            );
            return (None, findings);
        }
        Some(None) => {}
    }
    let system = recover::deserialize(&mut tree, path, &mut hidden, &mut findings);
    let Some(system) = system else {
        return (None, findings);
    };
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
    let loaded = Loaded {
        system,
        file: path.to_path_buf(),
        dir,
        source,
        hidden,
    };
    (Some(loaded), findings)
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

    /// Whether a part of the value at `path` could not be read.
    pub fn hidden_below(&self, path: &str) -> bool {
        self.hidden.iter().any(|h| covered(&[path.to_string()], h))
    }

    /// Whether `f` is about a part of the file that could not be read (see `hidden`).
    pub fn hides(&self, f: &Finding) -> bool {
        if f.field.as_deref().is_some_and(|p| covered(&self.hidden, p)) {
            return true;
        }
        // A stand-in's text where an item of a list could not be read: a reference to it,
        // or a script by that name, is no finding of its own (a clash with it still is).
        let quotes_stand_in = |s: &str| s.contains(crate::recover::UNREADABLE);
        if !self.hidden.is_empty()
            && (f.field.as_deref().is_some_and(quotes_stand_in)
                || (quotes_stand_in(&f.message)
                    && (f.code.starts_with("unknown-")
                        || matches!(f.code, "missing-script" | "interpreter" | "syntax"))))
        {
            return true;
        }
        // A reference to something whose definition could not be read.
        let named = |section: &str| {
            self.hidden.iter().any(|h| {
                h.strip_prefix(section)
                    .filter(|name| !name.contains(['.', '[']))
                    .is_some_and(|name| f.message.contains(&format!("{name:?}")))
            })
        };
        match f.code {
            "unknown-host" => named("hosts."),
            "unknown-group" => named("groups."),
            "unknown-image" => named("images."),
            "unknown-agent" => self.hidden.iter().any(|h| {
                h.starts_with("groups.")
                    && (h.ends_with(".name") || h.ends_with(']') || !h[7..].contains(['.', '[']))
            }),
            _ => false,
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

/// Whether `path` is one of `hidden` or lies below one.
pub(crate) fn covered(hidden: &[String], path: &str) -> bool {
    hidden.iter().any(|h| {
        !h.is_empty()
            && (path == h
                || path
                    .strip_prefix(h.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('[')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_are_all_reported_and_the_rest_is_read() {
        let text = "\u{feff}hosts:\n  h1: {address: 10.0.0.1, role: boss}\ngroups:\n  g:\n    host: h1\n    agents:\n      - name: a\n        command: x\n        port: 0\n      - name: b\n        command: {}\n        port: 80\n";
        let (l, f) = parse_all(Path::new("s.yaml"), text);
        let shown: Vec<String> = f.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            shown,
            [
                "error: s.yaml:2:33: hosts.h1.role: unknown variant `boss`, expected `primary` or `secondary`",
                "error: s.yaml:9:15: groups.g.agents[0].port: expected a port 1-65535, got 0",
                "error: s.yaml:11:18: groups.g.agents[1].command: expected a command: a list of arguments or a string, got a mapping",
            ]
        );
        let l = l.expect("the rest of the file is read");
        assert_eq!(l.system.groups["g"].agents.len(), 2);
        assert_eq!(l.system.groups["g"].agents[1].all_ports()[0].0, 80);
        assert!(l.hidden.contains(&"groups.g.agents[1].command".to_string()));
    }
}
