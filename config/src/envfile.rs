//! `env_file`s: `KEY=VALUE` lines (blank lines and `#` comments skipped, spaces around key
//! and value trimmed), and the rules every environment variable must follow.

use std::path::{Path, PathBuf};

/// Why an env file, or one of its lines, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot read env file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Line {
        path: PathBuf,
        /// 1-based line of the file.
        line: usize,
        /// 1-based column (in characters) where the problem starts.
        column: usize,
        message: String,
    },
}

/// Why a variable name cannot be passed to a program (`execve` takes `NAME=VALUE`
/// strings without NUL bytes), or `None` when it can.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("environment variable name is empty".into())
    } else if name.contains('\0') {
        Some(format!(
            "environment variable name {name:?} contains a NUL byte"
        ))
    } else if name.contains('=') {
        Some(format!(
            "environment variable name {name:?} contains `=` (the name ends at the first `=`)"
        ))
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(format!(
            "environment variable name {name:?} contains whitespace or a control character"
        ))
    } else {
        None
    }
}

/// Why a variable's value cannot be passed to a program, or `None` when it can.
pub fn value_problem(name: &str, value: &str) -> Option<String> {
    value
        .contains('\0')
        .then(|| format!("value of environment variable {name} contains a NUL byte"))
}

/// The most an env file may hold (a regular file; see [`crate::fsread`]).
pub const MAX_ENV_FILE: u64 = 1 << 20;

/// Reads and parses an env file; the first bad line is the error.
pub fn parse(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let read = |source| EnvFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = crate::fsread::read_regular(path, MAX_ENV_FILE).map_err(read)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        read(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not valid UTF-8",
        ))
    })?;
    parse_str(path, &text)
}

/// Parses env-file text; `path` names the file in errors. The first bad line is the error.
pub fn parse_str(path: &Path, text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let (vars, mut errors) = parse_all(path, text);
    if errors.is_empty() {
        Ok(vars)
    } else {
        Err(errors.remove(0))
    }
}

/// Parses env-file text, keeping every good line and every error.
pub fn parse_all(path: &Path, text: &str) -> (Vec<(String, String)>, Vec<EnvFileError>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let column = raw.chars().take_while(|c| c.is_whitespace()).count() + 1;
        let err = |message: String| EnvFileError::Line {
            path: path.to_path_buf(),
            line: n + 1,
            column,
            message,
        };
        let Some((k, v)) = line.split_once('=') else {
            // Not quoted: an env file holds secrets, and this line may be one.
            errors.push(err("expected KEY=VALUE: this line has no `=`".to_string()));
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if let Some(why) = name_problem(k).or_else(|| value_problem(k, v)) {
            errors.push(err(why));
            continue;
        }
        vars.push((k.to_string(), v.to_string()));
    }
    (vars, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_errors() {
        let p = Path::new("app.env");
        let vars = parse_str(p, "# c\n\nA=1\n B = two words \nC=x=y\n").unwrap();
        assert_eq!(
            vars,
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into())
            ]
        );
        let e = parse_str(p, "A=1\n  nonsense\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "app.env:2:3: expected KEY=VALUE: this line has no `=`"
        );
        let (_, errs) = parse_all(p, "=1\nexport X=1\nY=a\0b\n");
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            [
                "app.env:1:1: environment variable name is empty",
                "app.env:2:1: environment variable name \"export X\" contains whitespace or a control character",
                "app.env:3:1: value of environment variable Y contains a NUL byte",
            ]
        );
    }
}
