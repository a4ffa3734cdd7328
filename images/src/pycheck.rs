//! Build-time syntax check of the Python sources a `copy` step puts into an image.
//!
//! One `python3 -I -c` process per step `compile()`s every `.py` file (nothing is written next
//! to them); the first error fails the build with `path:line`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Reads paths (one per line) on stdin; prints one line per failing file:
/// `index<TAB>line<TAB>ErrorType: message`.
const CHECKER: &str = r#"
import sys
for i, raw in enumerate(sys.stdin):
    p = raw.rstrip("\n")
    try:
        with open(p, "rb") as f:
            src = f.read()
        compile(src, p, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        msg = (getattr(e, "msg", None) or str(e)).replace("\n", " ")
        print("%d\t%d\t%s: %s" % (i, getattr(e, "lineno", 0) or 0, type(e).__name__, msg))
    except OSError as e:
        print("%d\t0\tOSError: %s" % (i, e))
"#;

/// A Python source that does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyError {
    /// Context-relative path.
    pub path: String,
    pub line: usize,
    /// `SyntaxError: invalid syntax`
    pub message: String,
}

/// Compiles `files` ((context-relative path, host path)) with `python`.
///
/// `Err` when the interpreter cannot be run; `Ok(errors)` otherwise.
pub fn check(python: &str, files: &[(String, PathBuf)]) -> Result<Vec<PyError>, String> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = Command::new(python)
        .args(["-I", "-c", CHECKER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run Python interpreter {python:?}: {e}"))?;
    let mut input = Vec::new();
    for (_, host) in files {
        input.extend_from_slice(host.as_os_str().as_encoded_bytes());
        input.push(b'\n');
    }
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| "interpreter stdin is not piped".to_string())?;
    // Written from a thread so a large output cannot deadlock against our input.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("Python interpreter {python:?} failed: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "Python interpreter {python:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut errors = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(i), Some(l), Some(msg)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some((path, _)) = i.parse::<usize>().ok().and_then(|i| files.get(i)) else {
            continue;
        };
        errors.push(PyError {
            path: path.clone(),
            line: l.parse().unwrap_or(0),
            message: msg.to_string(),
        });
    }
    Ok(errors)
}
