//! Findings: one error, warning or note, naming the file, line, column and field it is about.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::locate::Mark;

/// How bad a finding is; any `Error` makes `check` exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Note,
}

/// One thing `check` (or loading) found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// A short stable identifier of the kind of finding, e.g. `port-clash`.
    pub code: &'static str,
    /// The file the finding is about (the system file, a script, a recipe).
    pub file: Option<PathBuf>,
    /// Line and column in `file`.
    pub at: Option<Mark>,
    /// Field path in the system file, e.g. `groups.audio-interface.agents[3].port`.
    pub field: Option<String>,
    pub message: String,
}

impl Finding {
    pub fn error(code: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            code,
            file: None,
            at: None,
            field: None,
            message: message.into(),
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(code, message)
        }
    }

    pub fn note(code: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Note,
            ..Finding::error(code, message)
        }
    }

    pub fn in_file(mut self, file: impl Into<PathBuf>, at: Option<Mark>) -> Finding {
        self.file = Some(file.into());
        self.at = at;
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Finding {
        self.field = Some(field.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Finding {
    /// `error: system.yaml:42:7: groups.g.agents[3].port: expected a port 1-65535, got 66000`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{label}: ")?;
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(at) = self.at {
                write!(f, "{at}:")?;
            }
            f.write_str(" ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{}: ", printable(field))?;
        }
        f.write_str(&printable(&self.message))
    }
}

/// `s` with control characters other than newline and tab escaped (`\0`, `\u{1b}`): a
/// key or value of the file must not write raw bytes to the terminal.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}
